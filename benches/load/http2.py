#!/usr/bin/env python3
"""The admitted path over HTTP/2 against HTTP/1.1: one anteroom (one worker
thread, h2c on its plain listener) in front of nginx, driven by the same
client (h2load) in the same run, alternating protocols in rounds. HTTP/1.1
runs 64 connections with one request each in flight; HTTP/2 runs 8
connections with 8 streams each: 64 requests in flight either way.

  benches/load/http2.py --bin-dir target/release [--rounds 3] [--requests 100000]

Needs h2load (Debian: nghttp2-client) and nginx.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import anteroom_conf, free_port, median, nginx_conf, wait_port  # noqa: E402

SCENARIOS = [("forward, no room", "/"), ("admitted: requests room", "/req/x")]
PROTOCOLS = {"HTTP/1.1": ["--h1", "-c", "64", "-m", "1"], "HTTP/2": ["-c", "8", "-m", "8"]}


def h2load(url, flags, n):
    out = subprocess.run(["h2load", "-n", str(n)] + flags + [url], capture_output=True, text=True, timeout=600).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not rate or not done or int(done.group(2)):
        raise RuntimeError(f"h2load failed on {url}:\n{out}")
    return float(rate.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000)
    args = ap.parse_args()
    anteroom = os.path.join(args.bin_dir, "anteroom")
    tmp = tempfile.mkdtemp()
    nginx = "nginx" if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0 else "/usr/sbin/nginx"
    up, port, admin = free_port(), free_port(), free_port()
    nginx_conf(f"{tmp}/up.conf", tmp, up, 1)
    procs = [subprocess.Popen([nginx, "-c", f"{tmp}/up.conf", "-g", "daemon off;"], start_new_session=True)]
    try:
        subprocess.run([anteroom, "keygen", "--out", tmp, "--force"], check=True, capture_output=True)
        conf = f"{tmp}/ant.toml"
        anteroom_conf(conf, port, admin, up, 1, f"{tmp}/anteroom.key.pem", "warn", '[store]\nbackend = "memory"', anteroom)
        with open(conf) as f:
            text = f.read().replace('grace_period = "1s"', 'grace_period = "1s"\nh2c = true', 1)
        with open(conf, "w") as f:
            f.write(text)
        procs.append(subprocess.Popen([anteroom, "run", "--config", conf], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        wait_port(up)
        wait_port(port)
        results = {}
        for r in range(args.rounds):
            for name, path in SCENARIOS:
                for protocol, flags in PROTOCOLS.items():
                    rps = h2load(f"http://127.0.0.1:{port}{path}", flags, args.requests)
                    print(f"round {r}: {name}, {protocol}: {rps:,.0f} req/s", file=sys.stderr)
                    results.setdefault((name, protocol), []).append(rps)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    print(f"rounds: {args.rounds} x {args.requests:,} requests, h2load, 64 in flight, one proxy thread\n")
    print("| scenario | HTTP/1.1 req/s (median) | HTTP/2 req/s (median) | HTTP/2 vs HTTP/1.1 |")
    print("|---|---|---|---|")
    for name, _ in SCENARIOS:
        h1, h2 = median(results[(name, "HTTP/1.1")]), median(results[(name, "HTTP/2")])
        print(f"| {name} | {h1:,.0f} | {h2:,.0f} | {h2 / h1:.2f} |")


if __name__ == "__main__":
    main()
