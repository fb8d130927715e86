#!/usr/bin/env python3
"""Idle event streams on one instance: what 100,000 waiting visitors with an
open `/__anteroom/events` stream cost anteroom in memory and CPU.

One anteroom (memory store, h2c on its plain listener) with a full room of
one; the client (`idle-streams`, benches/load/idle_streams.rs) lines up
COUNT visitors, then opens one stream per ticket over CONNECTIONS HTTP/2
connections (100 streams each: Pingora's default per connection; the
container's limit of open files rules out one HTTP/1.1 connection per
stream) and keeps them idle for HOLD seconds. Measured on anteroom's process:
resident memory with the line alone (the baseline of the same run) and with
every stream open, the difference per stream; CPU per second while idle
(each stream's heartbeat every `poll_interval`).

  benches/load/events.py --bin-dir target/release [--count 100000] [--hold 30]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import cpu_seconds, free_port, rss_kb, wait_port  # noqa: E402


def metric(admin, name):
    out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}/metrics"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--hold", type=int, default=30)
    ap.add_argument("--poll-interval", default="30s")
    args = ap.parse_args()
    connections = (args.count + 99) // 100
    anteroom = os.path.join(args.bin_dir, "anteroom")
    client = os.path.join(args.bin_dir, "examples", "idle-streams")
    tmp = tempfile.mkdtemp()
    port, admin = free_port(), free_port()
    subprocess.run([anteroom, "keygen", "--out", tmp, "--force"], check=True, capture_output=True)
    conf = f"{tmp}/ant.toml"
    with open(conf, "w") as f:
        f.write(f"""
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
h2c = true
grace_period = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[log]
level = "warn"
[tokens]
signing_key = "{tmp}/anteroom.key.pem"
[store]
backend = "memory"
[[upstream]]
name = "app"
address = "127.0.0.1:9"
[[room]]
name = "web"
mode = "sessions"
capacity = 1
session_ttl = "1h"
poll_interval = "{args.poll_interval}"
claim_window = "{args.poll_interval}"
[room.limits]
polls_per_minute = 0
[[route]]
path_prefix = "/"
upstream = "app"
room = "web"
""")
    proc = subprocess.Popen([anteroom, "run", "--config", conf], stdout=subprocess.DEVNULL,
                            stderr=open(f"{tmp}/anteroom.log", "w"), start_new_session=True)
    try:
        wait_port(port)
        time.sleep(1)
        start_kb = rss_kb(proc.pid)
        started = subprocess.Popen([client, f"http://127.0.0.1:{port}", str(args.count), str(connections), str(args.hold)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        arrived = started.stdout.readline().split()
        # The line alone: the baseline of this run.
        time.sleep(2)
        line_kb = rss_kb(proc.pid)
        started.stdin.write("go\n")
        started.stdin.flush()
        opened = started.stdout.readline().split()
        time.sleep(3)
        open_kb = rss_kb(proc.pid)
        streams = metric(admin, "anteroom_event_streams")
        cpu0, t0 = cpu_seconds(proc.pid), time.time()
        time.sleep(max(1, args.hold - 8))
        cpu1, t1 = cpu_seconds(proc.pid), time.time()
        idle_kb = rss_kb(proc.pid)
        still = started.stdout.readline().split()
        started.wait(timeout=120)
        n = int(opened[1])
        per_stream = (max(open_kb, idle_kb) - line_kb) * 1024 / max(n, 1)
        cpu_share = (cpu1 - cpu0) / (t1 - t0)
        print(f"# Idle event streams on one instance ({time.strftime('%Y-%m-%d')})\n")
        print(f"visitors lined up: {arrived[1]}; streams open: {n} over {connections} HTTP/2 connections "
              f"(anteroom_event_streams {streams:.0f}); still open after {args.hold} s: {still[-1]}\n")
        print("| measure | value |")
        print("|---|---|")
        print(f"| RSS at start | {start_kb / 1024:.1f} MiB |")
        print(f"| RSS with the line alone (baseline) | {line_kb / 1024:.1f} MiB |")
        print(f"| RSS with every stream open | {open_kb / 1024:.1f} MiB (after {args.hold} s idle: {idle_kb / 1024:.1f} MiB) |")
        print(f"| RSS per open stream | {per_stream:,.0f} bytes |")
        print(f"| CPU while idle (heartbeat every {args.poll_interval}) | {cpu_share * 100:.1f}% of one core "
              f"= {cpu_share / max(n, 1) * 1e6:.2f} µs per stream per second |")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
