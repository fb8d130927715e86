#!/usr/bin/env python3
"""What event sinks cost the request path: CPU per request of one anteroom
(one worker thread, memory store) with no `[[events.sink]]` (the baseline of
the same run) and with two (a JSON lines file and a Redis stream on a local
redis-server), alternating in rounds, both driven by the same wrk.

Scenarios: arrivals at a full sessions room (each request a newcomer who
joins the line: two events, `arrived` and `queued`), as an API client (the
503 JSON) and as a browser (the waiting page), and the admitted path (a
visitor with a pass; no event per request). CPU is anteroom's own
(user + system, /proc), its delivery tasks included, divided by the
requests wrk completed.

  benches/load/events_cost.py --bin-dir target/release [--rounds 3] [--duration 5]
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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    anteroom = os.path.join(args.bin_dir, "anteroom")
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
    results = {}
    try:
        wait_port(up)
        wait_port(redis_port)
        for r in range(args.rounds):
            for name, extra in (("no sinks", ""), ("two sinks", sinks)):
                port, admin = free_port(), free_port()
                conf = f"{tmp}/{r}-{name.replace(' ', '-')}.toml"
                config(conf, port, admin, up, f"{tmp}/anteroom.key.pem", extra)
                p = subprocess.Popen(pinned(0, [anteroom, "run", "--config", conf]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    wait_port(port)
                    # The one let in: its pass drives the admitted path.
                    _, headers, body = http("GET", f"http://127.0.0.1:{port}/", {"Accept": "application/json"})
                    cookie = headers.get("Set-Cookie", "")
                    pass_ = re.search(r"anteroom_pass=([^;]+)", cookie).group(1)
                    # The admitted path first: the arrivals' events are then
                    # delivered within their own measure (the pause after it).
                    for scenario, url, hdrs in (
                        ("admitted (pass)", f"http://127.0.0.1:{port}/x", [f"X-Anteroom-Pass: {pass_}"]),
                        ("arrival (joins the line)", f"http://127.0.0.1:{port}/", ["Accept: application/json"]),
                        ("browser arrival (the waiting page)", f"http://127.0.0.1:{port}/", ["Accept: text/html"]),
                    ):
                        c0 = cpu_seconds(p.pid)
                        n = wrk(url, args.duration, hdrs)
                        time.sleep(2)  # the delivery tasks catch up; their CPU counts too
                        used = cpu_seconds(p.pid) - c0
                        results.setdefault((scenario, name), []).append(used / max(n, 1) * 1e6)
                finally:
                    p.terminate()
                    p.wait(timeout=10)
        print(f"# Event sinks' cost on the request path ({time.strftime('%Y-%m-%d')})\n")
        print(f"{args.rounds} rounds of {args.duration} s, alternating; CPU µs per request (median of rounds).\n")
        print("Paired: each round's two-sink run against the run without sinks just before it;")
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
        delivered = subprocess.run(["redis-cli", "-p", str(redis_port), "XLEN", "anteroom:events"],
                                   capture_output=True, text=True).stdout.strip()
        print(f"\nEvents in the Redis stream at the end (MAXLEN ~100000): {delivered}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
