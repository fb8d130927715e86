#!/usr/bin/env python3
"""The shared store against the memory store, same build, same run: one
anteroom (one worker thread) on the memory store and one on a local
redis-server, driven in alternating rounds by the same wrk (-t1 -c64).

Scenarios: a `requests` room with free slots (on Redis: requests served from
the instance's leased allowance), a waiting visitor's status poll, an
arrival at a full room (a newcomer who joins the line), and an admitted
visitor's request with `touch_interval = "1ms"`, so that each one slides the
session in the store (normally once per 5 s per visitor: this measures the
step, not the common case). For each: requests
per second, CPU per request (anteroom, plus redis-server for the Redis
store), and Redis scripts per request; and, per script, what Redis does:
commands run inside it, bytes in and out, and redis-server CPU (INFO
commandstats and stats: what docs/scaling.md sizes a shard by).

  benches/load/shared_store.py --bin-dir target/release [--rounds 3] [--duration 5]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Procs, Wrk, anteroom_conf, cpu_seconds, free_port, http, median,  # noqa: E402
                     nginx_conf, set_cookie, wait_port)


def redis_counts(port):
    """(scripts run, commands run inside them and outside, bytes in, bytes out) so far."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "all"], capture_output=True, text=True).stdout
    scripts = commands = 0
    stats = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls = int(rest.split("calls=")[1].split(",")[0])
            if name in ("evalsha", "eval"):
                scripts += calls
            elif name != "info":
                commands += calls
        elif ":" in line:
            k, v = line.split(":", 1)
            stats[k] = v
    return scripts, commands, int(stats.get("total_net_input_bytes", 0)), int(stats.get("total_net_output_bytes", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    anteroom = os.path.join(args.bin_dir, "anteroom")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = tempfile.mkdtemp(prefix="anteroom-shared-")
    procs = Procs(pin)
    wrk = Wrk(args, pin, open(os.path.join(tmp, "raw.txt"), "w"))
    results = {}
    try:
        ports = {k: free_port() for k in ["up", "mem", "mem_admin", "red", "red_admin", "redis"]}
        nginx_conf(f"{tmp}/up.conf", tmp, ports["up"], 1, cpu_affinity="10" if pin else None)
        procs.start("upstream", [nginx, "-c", f"{tmp}/up.conf", "-g", "daemon off;"])
        redis = procs.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]),
                                      "--save", "", "--appendonly", "no"], cpu="1")
        wait_port(ports["redis"])
        subprocess.run([anteroom, "keygen", "--out", tmp], check=True, capture_output=True)
        key = f"{tmp}/anteroom.key.pem"
        stores = {
            "memory": '[store]\nbackend = "memory"\ntouch_interval = "1ms"',
            "redis": f'[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:{ports["redis"]}/0"\ntouch_interval = "1ms"\ntimeout = "2s"',
        }
        pids = {}
        for name, prefix in (("memory", "mem"), ("redis", "red")):
            anteroom_conf(f"{tmp}/{prefix}.toml", ports[prefix], ports[f"{prefix}_admin"], ports["up"], 1, key, "warn",
                          stores[name], anteroom)
            pids[name] = procs.start(name, [anteroom, "run", "--config", f"{tmp}/{prefix}.toml"], cpu="0").pid
        for p in ports.values():
            wait_port(p)
        time.sleep(0.5)

        def url(port, path):
            return f"http://127.0.0.1:{port}{path}"

        tickets, passes = {}, {}
        for name, prefix in (("memory", "mem"), ("redis", "red")):
            port = ports[prefix]
            _, h, _ = http("GET", url(port, "/web/x"), {"Accept": "application/json"})
            passes[name] = set_cookie(h, "anteroom_pass")
            status, _, _ = http("GET", url(port, "/full/x"), {"Accept": "application/json"})
            assert status == 200, status
            status, _, body = http("GET", url(port, "/full/x"), {"Accept": "application/json"})
            assert status == 503, status
            tickets[name] = json.loads(body)["ticket"]
            http("GET", url(port, "/__anteroom/status?room=full"),
                 {"Accept": "application/json", "X-Anteroom-Ticket": tickets[name]})

        scenarios = [
            ("requests room, free slots", "/req/x", lambda name: []),
            ("status poll", "/__anteroom/status?room=full", lambda name: [f"X-Anteroom-Ticket: {tickets[name]}"]),
            ("arrival (joins the line)", "/full/x", lambda name: ["Accept: application/json"]),
            ("admitted, each request a touch", "/web/x", lambda name: [f"X-Anteroom-Pass: {passes[name]}"]),
        ]
        for r in range(1, args.rounds + 1):
            for scenario, path, headers in scenarios:
                for name, prefix in (("memory", "mem"), ("redis", "red")):
                    c0, r0 = cpu_seconds(pids[name]), cpu_seconds(redis.pid)
                    k0 = redis_counts(ports["redis"])
                    out = wrk.run(f"round {r}: {name} {scenario}", url(ports[prefix], path), headers(name))
                    used = cpu_seconds(pids[name]) - c0
                    redis_cpu = cpu_seconds(redis.pid) - r0
                    k1 = redis_counts(ports["redis"])
                    scripts = k1[0] - k0[0]
                    n = max(out["requests"], 1)
                    row = {"rps": out["rps"], "cpu": (used + (redis_cpu if name == "redis" else 0)) / n * 1e6,
                           "scripts": scripts / n, "non2xx": out["non2xx"]}
                    if name == "redis" and scripts:
                        row.update({"commands": (k1[1] - k0[1]) / scripts, "in": (k1[2] - k0[2]) / scripts,
                                    "out": (k1[3] - k0[3]) / scripts, "redis_us": redis_cpu / scripts * 1e6})
                    results.setdefault((scenario, name), []).append(row)
        print(f"# The shared store against the memory store ({time.strftime('%Y-%m-%d')})\n")
        print(f"{args.rounds} rounds of {args.duration} s, alternating; one worker thread each; wrk -t1 -c{args.connections}.")
        print("Medians of the rounds. CPU per request: anteroom's, plus redis-server's for Redis.\n")
        print("| scenario | store | req/s | CPU µs/request | Redis scripts/request | ratio of req/s to memory |")
        print("|---|---|---|---|---|---|")
        for scenario, _, _ in scenarios:
            base = median([x["rps"] for x in results[(scenario, "memory")]])
            for name in ("memory", "redis"):
                rows = results[(scenario, name)]
                rps = median([x["rps"] for x in rows])
                scripts = f"{median([x['scripts'] for x in rows]):.4f}" if name == "redis" else "none"
                print(f"| {scenario} | {name} | {rps:,.0f} | {median([x['cpu'] for x in rows]):.1f} | "
                      f"{scripts} | {rps / base:.2f} |")
        print("\nWhat Redis does per script (the Redis store's rows above):\n")
        print("| scenario | commands inside | bytes in | bytes out | redis-server CPU µs |")
        print("|---|---|---|---|---|")
        for scenario, _, _ in scenarios:
            # Only where the scenario's own scripts dominate the background ones.
            rows = [x for x in results[(scenario, "redis")] if "commands" in x and x["scripts"] > 0.5]
            if rows:
                print(f"| {scenario} | {median([x['commands'] for x in rows]):.1f} | {median([x['in'] for x in rows]):.0f} | "
                      f"{median([x['out'] for x in rows]):.0f} | {median([x['redis_us'] for x in rows]):.1f} |")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
