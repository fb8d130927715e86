#!/usr/bin/env python3
"""What event sinks cost the request path: CPU per request of one anteroom
(one worker thread, memory store) with no `[[events.sink]]` (the baseline of
the same run) and with two (a JSON lines file and a Redis stream on a local
redis-server), both running the whole time and taking turns under the
same wrk in short runs (ABBA order).

Scenarios: arrivals at a full sessions room (each request a newcomer who
joins the line: two events, `arrived` and `queued`), as an API client (the
503 JSON) and as a browser (the waiting page), and the admitted path (a
visitor with a pass; no event per request). CPU is anteroom's own
(user + system, /proc), its delivery tasks included, divided by the
requests wrk completed.

  benches/load/events_cost.py --bin-dir target/release [--rounds 8] [--duration 3] [--rate N]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import cpu_seconds, free_port, http, median, nginx_conf, two_sinks, wait_port  # noqa: E402


def pinned(core, cmd):
    """`cmd` on one core when taskset is there: anteroom (worker and delivery
    threads) on core 0, wrk and redis-server on core 1, so the load and the
    measured process do not take turns on a core (runs vary less)."""
    return ["taskset", "-c", str(core)] + cmd if shutil.which("taskset") else cmd


def wrk(url, seconds, headers=()):
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", url]
    for h in headers:
        cmd[1:1] = ["-H", h]
    cmd = pinned(1, cmd)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    total = re.search(r"(\d+) requests in", out)
    return int(total.group(1)) if total else 0


def paced(client, url, rate, seconds, headers=()):
    """`rate` requests a second whatever the server's pace (the same load
    on both sides of a pair); returns how many were answered."""
    cmd = pinned(1, [client, url, str(rate), str(seconds), "32", *headers])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    found = re.search(r"requests (\d+) seconds ([\d.]+)", out)
    if not found:
        return 0
    if float(found.group(2)) > seconds * 1.05:
        print(f"warning: {seconds} s of requests took {found.group(2)} s: the rate was not held", file=sys.stderr)
    return int(found.group(1))


def config(path, port, admin, upstream, key, sinks):
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
grace_period = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[log]
level = "warn"
[tokens]
signing_key = "{key}"
[store]
backend = "memory"
{sinks}
[[upstream]]
name = "app"
address = "127.0.0.1:{upstream}"
[[room]]
name = "web"
mode = "sessions"
capacity = 1
[room.limits]
polls_per_minute = 0
[[route]]
path_prefix = "/"
upstream = "app"
room = "web"
""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rate", type=int, default=0,
                    help="requests a second from benches/load/paced.rs (cargo build --release --example paced) instead of wrk's as many as answered")
    args = ap.parse_args()
    anteroom = os.path.join(args.bin_dir, "anteroom")
    client = os.path.join(args.bin_dir, "examples", "paced")
    tmp = tempfile.mkdtemp()
    nginx = "nginx" if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0 else "/usr/sbin/nginx"
    up, redis_port = free_port(), free_port()
    nginx_conf(f"{tmp}/up.conf", tmp, up, 1)
    procs = [
        subprocess.Popen([nginx, "-c", f"{tmp}/up.conf", "-g", "daemon off;"], start_new_session=True),
        subprocess.Popen(pinned(1, ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]),
                         stdout=subprocess.DEVNULL, start_new_session=True),
    ]
    subprocess.run([anteroom, "keygen", "--out", tmp, "--force"], check=True, capture_output=True)
    sinks = two_sinks(tmp, redis_port)
    results, busy = {}, {}
    running = {}
    # Events the two-sink process made: the first visitor's two, then two
    # per arrival (the admitted path makes none).
    arrivals = 1
    try:
        wait_port(up)
        wait_port(redis_port)
        # Both anteroom processes run the whole time, on the same core, and
        # take turns under wrk in short runs (ABBA): a machine that drifts
        # faster or slower (shared hosts do, by tens of percent over
        # minutes) moves both sides of a pair alike.
        for name, extra in (("no sinks", ""), ("two sinks", sinks)):
            port, admin = free_port(), free_port()
            conf = f"{tmp}/{name.replace(' ', '-')}.toml"
            config(conf, port, admin, up, f"{tmp}/anteroom.key.pem", extra)
            p = subprocess.Popen(pinned(0, [anteroom, "run", "--config", conf]), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            running[name] = (p, port)
        passes = {}
        for name, (p, port) in running.items():
            wait_port(port)
            # The one let in: its pass drives the admitted path.
            _, headers, _ = http("GET", f"http://127.0.0.1:{port}/", {"Accept": "application/json"})
            passes[name] = re.search(r"anteroom_pass=([^;]+)", headers.get("Set-Cookie", "")).group(1)
        # The admitted path first: it has no events of its own, and the
        # arrivals' are then delivered within their own measures.
        for scenario, path, accept in (
            ("admitted (pass)", "/x", None),
            ("arrival (joins the line)", "/", "application/json"),
            ("browser arrival (the waiting page)", "/", "text/html"),
        ):
            for r in range(args.rounds):
                order = ("no sinks", "two sinks") if r % 2 == 0 else ("two sinks", "no sinks")
                for name in order:
                    p, port = running[name]
                    hdrs = [f"Accept: {accept}"] if accept else [f"X-Anteroom-Pass: {passes[name]}"]
                    c0 = cpu_seconds(p.pid)
                    target = f"http://127.0.0.1:{port}{path}"
                    if args.rate:
                        n = paced(client, target, args.rate, args.duration, hdrs)
                    else:
                        n = wrk(target, args.duration, hdrs)
                    # The delivery tasks catch up (flush_interval 500ms); their CPU counts too.
                    time.sleep(1.5)
                    used = cpu_seconds(p.pid) - c0
                    results.setdefault((scenario, name), []).append(used / max(n, 1) * 1e6)
                    busy.setdefault((scenario, name), []).append(used / (args.duration + 1.5))
                    if name == "two sinks" and scenario != "admitted (pass)":
                        arrivals += n
        print(f"# Event sinks' cost on the request path ({time.strftime('%Y-%m-%d')})\n")
        load = f"{args.rate} requests a second (paced.rs)" if args.rate else "wrk -c32, as fast as answered"
        print(f"Load: {load}.")
        print(f"{args.rounds} rounds of {args.duration} s per side, both processes running, taking turns (ABBA);")
        print("CPU µs per request (median of rounds). Paired: each round's two runs, one against the other;")
        print("the median of those ratios is the least moved by a round the machine was busy.\n")
        print("| scenario | no sinks | two sinks (file + Redis stream) | ratio of medians | median of paired ratios |")
        print("|---|---|---|---|---|")
        for scenario in ("arrival (joins the line)", "browser arrival (the waiting page)", "admitted (pass)"):
            runs, with_runs = results[(scenario, "no sinks")], results[(scenario, "two sinks")]
            base, with_sinks = median(runs), median(with_runs)
            paired = median([w / b for b, w in zip(runs, with_runs)])
            print(f"| {scenario} | {base:.1f} | {with_sinks:.1f} | {with_sinks / base:.3f} | {paired:.3f} |")
        print("\nEach round (no sinks / two sinks, CPU µs per request):\n")
        for scenario in ("arrival (joins the line)", "browser arrival (the waiting page)", "admitted (pass)"):
            pairs = zip(results[(scenario, "no sinks")], results[(scenario, "two sinks")])
            print(f"- {scenario}: " + ", ".join(f"{b:.1f} / {w:.1f}" for b, w in pairs))
        print("\nBusy (CPU seconds per second of a run and its pause; 1.0 is a whole core):\n")
        for scenario in ("arrival (joins the line)", "browser arrival (the waiting page)", "admitted (pass)"):
            print(f"- {scenario}: " + ", ".join(
                f"{name} {median(busy[(scenario, name)]):.2f}" for name in ("no sinks", "two sinks")))
        streamed = subprocess.run(["redis-cli", "-p", str(redis_port), "XLEN", "anteroom:events"],
                                  capture_output=True, text=True).stdout.strip()
        with open(f"{tmp}/events.jsonl", "rb") as f:
            in_file = sum(1 for _ in f)
        # wrk does not count the requests in flight when it stops (up to 32
        # a run), which made events too: the file may hold a few more.
        verdict = "none lost" if in_file >= 2 * arrivals else "EVENTS LOST"
        print(f"\nEvents made by the requests counted: {2 * arrivals}; in the file: {in_file} ({verdict}); "
              f"in the Redis stream (MAXLEN ~100000): {streamed}")
    finally:
        for p in procs + [p for p, _ in running.values()]:
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
