#!/usr/bin/env python3
"""User-space instructions per request of anteroom and plain Pingora, counted
by callgrind: exact and repeatable whatever else the machine is doing, so a
before/after comparison of two builds is not lost in the load benchmark's
noise.

For each scenario the proxy runs under `valgrind --tool=callgrind` with one
worker thread, one keep-alive connection sends N requests, and the count is
(instructions at 6,000 requests - instructions at 1,000) / 5,000: start-up
and shutdown cancel out.

  benches/load/instructions.py --bin-dir target/release [--bin-dir other/build ...]

With `--sinks`, each build is also measured with two event sinks (a JSON
lines file and a Redis stream on a redis-server this script starts): what
the events cost each request, delivery tasks included.

Needs valgrind and nginx (the upstream); benches/load/run.sh installs nginx.
"""

import argparse
import glob
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import anteroom_conf, free_port, http, nginx_conf, set_cookie, two_sinks, wait_port  # noqa: E402

SCENARIOS = {
    "forward, no room": ("/", []),
    "admitted: requests room": ("/req/x", []),
    # The same with `rate`, `tokens_per_minute`, `adaptive` and `fair_by`
    # (never limiting).
    "admitted: LLM room (rate, tokens, adaptive, fair_by)": ("/llm/x", []),
    "admitted: sessions room, valid pass": ("/web/x", ["pass"]),
    "queued: status poll": ("/__anteroom/status?room=full", ["ticket"]),
    # Every request a new visitor without cookies at a full room: a fresh ticket.
    "arrival at a full room: new ticket": ("/full/x", ["full room"]),
}


def tokens(port):
    """A pass for the room "web" and a ticket in the line of "full" (capacity 1)."""
    _, h, _ = http("GET", f"http://127.0.0.1:{port}/web/x", {"Accept": "application/json"})
    pass_ = set_cookie(h, "anteroom_pass")
    http("GET", f"http://127.0.0.1:{port}/full/x", {"Accept": "application/json"})
    _, _, body = http("GET", f"http://127.0.0.1:{port}/full/x", {"Accept": "application/json"})
    return {"pass": pass_, "ticket": json.loads(body)["ticket"]}


def count(cmd, port, path, needs, n, tmp):
    """Instructions of one run: start-up, the tokens it needs, n requests, shutdown."""
    out = f"{tmp}/callgrind.{n}.out"
    for f in glob.glob(f"{out}*"):
        os.remove(f)
    # Each run starts from nothing, with or without state_dir.
    shutil.rmtree(f"{tmp}/state", ignore_errors=True)
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, timeout=120)
        got = tokens(port) if needs else {}
        headers = {}
        if "pass" in needs:
            headers["X-Anteroom-Pass"] = got["pass"]
        if "ticket" in needs:
            headers["X-Anteroom-Ticket"] = got["ticket"]
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(n):
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            # What each answer was: a scenario must measure the state it names.
            state = ""
            if resp.getheader("Content-Type", "").startswith("application/json"):
                try:
                    state = json.loads(body).get("state", "") or ""
                except ValueError:
                    state = "?"
            key = f"{resp.status} {state}".strip()
            STATUSES[key] = STATUSES.get(key, 0) + 1
        conn.close()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
    total = 0
    for f in glob.glob(f"{out}*"):
        with open(f) as fh:
            for line in fh:
                m = re.match(r"(?:summary|totals): (\d+)", line)
                if m:
                    total = max(total, int(m.group(1)))
    return total


# The answers of the runs of one scenario, by status (and `state` in JSON).
STATUSES = {}

# What each scenario's answers must be.
EXPECTED = {
    "forward, no room": "200",
    "admitted: requests room": "200",
    "admitted: LLM room (rate, tokens, adaptive, fair_by)": "200",
    "admitted: sessions room, valid pass": "200",
    "queued: status poll": "200 queued",
    "arrival at a full room: new ticket": "503 queued",
}


def per_request(cmd, port, path, needs, tmp):
    STATUSES.clear()
    low = count(cmd, port, path, needs, 1000, tmp)
    high = count(cmd, port, path, needs, 6000, tmp)
    return (high - low) / 5000


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin-dir", action="append", required=True, help="a build to measure (repeatable)")
    ap.add_argument("--state", action="store_true", help="also measure each build with [store] state_dir (snapshots every 1 s)")
    ap.add_argument("--only", help="measure only the scenarios whose name contains this")
    ap.add_argument("--sinks", action="store_true", help="also measure each build with two event sinks (file + Redis stream)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="anteroom-instructions-")
    scenarios = {k: v for k, v in SCENARIOS.items() if not args.only or args.only in k}
    nginx = "nginx" if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0 else "/usr/sbin/nginx"
    up = free_port()
    nginx_conf(f"{tmp}/up.conf", tmp, up, 1)
    upstream = subprocess.Popen([nginx, "-c", f"{tmp}/up.conf", "-g", "daemon off;"], start_new_session=True)
    redis = None
    if args.sinks:
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, start_new_session=True)
        wait_port(redis_port)
    results = {}
    try:
        wait_port(up)
        for bin_dir in args.bin_dir:
            anteroom = os.path.join(bin_dir, "anteroom")
            plain = os.path.join(bin_dir, "examples", "plain-pingora")
            subprocess.run([anteroom, "keygen", "--out", tmp, "--force"], check=True, capture_output=True)
            pport = free_port()
            plain_count = per_request([plain, f"127.0.0.1:{pport}", f"127.0.0.1:{up}", "1"], pport, "/", [], tmp)
            stores = [("", '[store]\nbackend = "memory"')]
            if args.state:
                stores.append((" + state_dir", f'[store]\nbackend = "memory"\nstate_dir = "{tmp}/state"\nsnapshot_interval = "1s"'))
            if args.sinks:
                stores.append((" + two sinks", '[store]\nbackend = "memory"\n' + two_sinks(tmp, redis_port)))
            for suffix, store in stores:
                port, admin = free_port(), free_port()
                anteroom_conf(f"{tmp}/ant.toml", port, admin, up, 1, f"{tmp}/anteroom.key.pem", "warn", store, anteroom)
                if subprocess.run([anteroom, "check", "--config", f"{tmp}/ant.toml"], capture_output=True).returncode != 0:
                    print(f"{bin_dir}{suffix}: not supported by this build, skipped", file=sys.stderr)
                    continue
                cmd = [anteroom, "run", "--config", f"{tmp}/ant.toml"]
                row = {"plain pingora, forward": plain_count}
                for name, (path, needs) in scenarios.items():
                    row[name] = per_request(cmd, port, path, needs, tmp)
                    answers = ", ".join(f"{k}: {v}" for k, v in sorted(STATUSES.items()))
                    wrong = sum(v for k, v in STATUSES.items() if k != EXPECTED[name])
                    flag = f"  ** {wrong} answers not '{EXPECTED[name]}' **" if wrong else ""
                    print(f"{bin_dir}{suffix}: {name}: {row[name]:,.0f} ({answers}){flag}", file=sys.stderr)
                    if wrong:
                        row[name + " (errors)"] = wrong
                results[bin_dir + suffix] = row
    finally:
        for p in (upstream, redis):
            if p:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    names = ["plain pingora, forward"] + list(scenarios)
    print("| scenario | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = []
        for b in results:
            wrong = results[b].get(name + " (errors)")
            cells.append(f"{results[b][name]:,.0f}" + (f" ({wrong} wrong answers)" if wrong else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
