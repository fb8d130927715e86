#!/usr/bin/env python3
"""Checks an anteroom launch draw with nothing of anteroom's: Python's
standard library only. The algorithm is docs/adr/0015's:

    commitment = SHA-256(seed)                          (published before the pre-queue)
    key        = SHA-256(b"anteroom-draw-v1" + seed + public)
    rank(e)    = SHA-256(key + e)                       (e: an entrant's 32-byte digest)
    line       = the entrants sorted by (rank(e), e)

An entrant's digest is SHA-256(b"anteroom-entrant-v1" + b"\\0" + event +
b"\\0" + ticket id); a visitor's receipt names theirs.

    verify_draw.py DRAW.json [ENTRANT_HEX ...]

Exit 0 when the seed matches the commitment, the line is exactly that
order, and every given entrant is in it (its position is printed);
otherwise 1, with the reason.
"""

import hashlib
import json
import sys


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def check(draw, entrants):
    if draw.get("version") != "anteroom-draw-v1":
        return f"unknown version {draw.get('version')!r}"
    seed = bytes.fromhex(draw["seed"])
    if len(seed) != 32:
        return "the seed is not 32 bytes"
    if sha256(seed).hex() != draw["commitment"].lower():
        return "the seed does not match the commitment"
    public = bytes.fromhex(draw.get("public", ""))
    line = [bytes.fromhex(e) for e in draw["line"]]
    if len(set(line)) != len(line):
        return "an entrant appears more than once"
    key = sha256(b"anteroom-draw-v1", seed, public)
    expected = sorted(line, key=lambda e: (sha256(key, e), e))
    for position, (want, got) in enumerate(zip(expected, line), start=1):
        if want != got:
            return f"position {position}: the seed puts {want.hex()} there, the line has {got.hex()}"
    positions = {e.hex(): i for i, e in enumerate(line, start=1)}
    for e in entrants:
        if e.lower() not in positions:
            return f"entrant {e} has a receipt but is not in the line"
        print(f"entrant {e}: position {positions[e.lower()]}")
    return None


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        draw = json.load(f)
    problem = check(draw, sys.argv[2:])
    if problem:
        print(f"the draw does not check out: {problem}", file=sys.stderr)
        return 1
    print(f"the draw of {draw['event']!r} checks out: {len(draw['line'])} entrants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
