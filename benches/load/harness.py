#!/usr/bin/env python3
"""Side-by-side load benchmark: anteroom, plain Pingora and nginx in front of
the same upstream, driven by the same wrk, alternating targets in rounds.

Run it through benches/load/run.sh, which installs what is missing and builds
the binaries. Everything runs on loopback; each proxy gets the same number of
worker threads; where there are at least two cores, the proxies are pinned to
core 0 and wrk, the upstream and Redis to core 1.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def http(method, url, headers=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=600) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Procs:
    """Child processes, all stopped at the end."""

    def __init__(self, pin):
        self.pin = pin
        self.children = []

    def start(self, name, cmd, cpu=None, log=None):
        if cpu is not None and self.pin:
            cmd = ["taskset", "-c", cpu] + cmd
        out = open(log, "wb") if log else subprocess.DEVNULL
        # A session of its own: stopping the group also stops nginx's workers.
        p = subprocess.Popen(cmd, stdout=out, stderr=out if log else subprocess.DEVNULL, start_new_session=True)
        self.children.append((name, p))
        return p

    def stop_all(self):
        for _, p in reversed(self.children):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def cpu_seconds(pid):
    """User and system CPU a process has used, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_latency(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


class Wrk:
    def __init__(self, args, pin, raw):
        self.args = args
        self.pin = pin
        self.raw = raw

    def run(self, label, url, headers=(), connections=None):
        cmd = ["wrk", "-t1", f"-c{connections or self.args.connections}", f"-d{self.args.duration}s", "--latency"]
        for h in headers:
            cmd += ["-H", h]
        cmd.append(url)
        if self.pin:
            cmd = ["taskset", "-c", "1"] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.duration + 60).stdout
        self.raw.write(f"### {label}\n$ {' '.join(cmd)}\n{out}\n")
        self.raw.flush()
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {
            "rps": float(rps.group(1)) if rps else 0.0,
            "requests": int(total.group(1)) if total else 0,
            "p50": parse_latency(lat.get("50", "")),
            "p99": parse_latency(lat.get("99", "")),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
        }


def nginx_conf(path, tmp, listen, workers, upstream=None, cpu_affinity=None):
    affinity = f"worker_cpu_affinity {cpu_affinity};" if cpu_affinity else ""
    if upstream:
        server = f"""
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
    else:
        server = f"""
  server {{
    listen 127.0.0.1:{listen};
    location / {{ return 200 "ok\\n"; }}
  }}"""
    with open(path, "w") as f:
        f.write(f"""worker_processes {workers};
{affinity}
pid {tmp}/nginx-{listen}.pid;
error_log {tmp}/nginx-{listen}.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body-{listen};
  proxy_temp_path {tmp}/proxy-{listen};
  fastcgi_temp_path {tmp}/fcgi-{listen};
  uwsgi_temp_path {tmp}/uwsgi-{listen};
  scgi_temp_path {tmp}/scgi-{listen};
{server}
}}
""")


def anteroom_conf(path, listen, admin, upstream, threads, key, level, store, anteroom=None):
    """Writes a config for the benchmarks. The status-poll scenarios poll one
    ticket as fast as wrk can, so the room "full" lifts `polls_per_minute`
    (the limiter still runs); a binary from before `[room.limits]` (given as
    `anteroom`, when comparing builds) gets the config without it. The room
    "llm" (a `requests` room with `rate`, `tokens_per_minute`, `adaptive`
    and `fair_by` set far above what the benchmark sends, so the accounting
    runs but never limits) is left out for builds from before them."""
    limits = '[room.limits]\npolls_per_minute = 10000000\n'
    for llm in (True, False):
        write_conf(path, listen, admin, upstream, threads, key, level, store, limits, llm)
        if not anteroom or subprocess.run([anteroom, "check", "--config", path], capture_output=True).returncode == 0:
            return
    write_conf(path, listen, admin, upstream, threads, key, level, store, "", False)


LLM_ROOM = """
[[room]]
name = "llm"
mode = "requests"
capacity = 100000
rate = "1000000/s"
tokens_per_minute = 100000000
token_estimate = 1
adaptive = true
fair_by = "client"

[[route]]
path_prefix = "/llm/"
upstream = "app"
room = "llm"
retry_429 = true
"""


def write_conf(path, listen, admin, upstream, threads, key, level, store, limits, llm=False):
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = ["127.0.0.1:{listen}"]
threads = {threads}
grace_period = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[log]
format = "json"
level = "{level}"

[tokens]
signing_key = "{key}"
cache_size = 100000

{store}

[[upstream]]
name = "app"
address = "127.0.0.1:{upstream}"

[[room]]
name = "req"
mode = "requests"
capacity = 100000

[[room]]
name = "web"
mode = "sessions"
capacity = 10000000
session_ttl = "1h"
cookie_path = "/web/"

[[room]]
name = "full"
mode = "sessions"
capacity = 1
session_ttl = "1h"
poll_interval = "5s"
heartbeat_timeout = "2h"
rejoin_grace = "3h"
claim_window = "10s"
cookie_path = "/full/"
{limits}
{LLM_ROOM if llm else ""}
[[route]]
path_prefix = "/req/"
upstream = "app"
room = "req"

[[route]]
path_prefix = "/web/"
upstream = "app"
room = "web"

[[route]]
path_prefix = "/full/"
upstream = "app"
room = "full"

[[route]]
path_prefix = "/"
upstream = "app"
""")


def set_cookie(headers, name):
    for value in headers.get_all("Set-Cookie") or []:
        k, _, rest = value.partition("=")
        if k == name:
            return rest.split(";")[0]
    return None


def openssl_rsa2048(seconds, pin):
    cmd = ["openssl", "speed", "-seconds", str(seconds), "rsa2048"]
    if pin:
        cmd = ["taskset", "-c", "0"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"rsa\s+2048 bits\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0, out


def redis_calls(port, prefix):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True).stdout
    return sum(int(m) for m in re.findall(rf"cmdstat_{prefix}[^:]*:calls=(\d+)", out))


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def snapshot_stats(metrics_url):
    """(seconds spent writing state, writes, bytes of the last, visitors queued) from /metrics."""
    _, _, body = http("GET", metrics_url, {})
    text = body.decode() if isinstance(body, bytes) else body
    def value(prefix):
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
    queued = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                 if l.startswith("anteroom_room_queue_length{") and 'room="full"' in l)
    return (value("anteroom_state_snapshot_seconds_sum"), value("anteroom_state_snapshot_seconds_count"),
            value("anteroom_state_snapshot_bytes"), queued)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--out", default="benches/load/out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--levels", default="1000,100000,1000000", help="queue lengths for status polls")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s, small queues: proves the harness works")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.levels = 1, 1, "1000"
    levels = [int(x) for x in args.levels.split(",")]
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="anteroom-load-")
    raw = open(os.path.join(args.out, "raw.txt"), "w")
    wrk = Wrk(args, pin, raw)
    procs = Procs(pin)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    anteroom = os.path.join(args.bin_dir, "anteroom")
    plain = os.path.join(args.bin_dir, "examples", "plain-pingora")
    use_redis = not args.no_redis and shutil.which("redis-server") is not None
    results = {}  # (scenario, target) -> list of per-round dicts
    extra = {}

    def record(scenario, target, r):
        results.setdefault((scenario, target), []).append(r)

    try:
        ports = {k: free_port() for k in ["up", "nginx", "plain", "ant", "ant_admin", "log", "log_admin", "red", "red_admin", "redis", "st", "st_admin"]}
        t = args.threads
        # The upstream: nginx returning a small body, on the load core.
        nginx_conf(f"{tmp}/up.conf", tmp, ports["up"], 1, cpu_affinity="10" if pin else None)
        procs.start("upstream", [nginx, "-c", f"{tmp}/up.conf", "-g", "daemon off;"])
        nginx_conf(f"{tmp}/proxy.conf", tmp, ports["nginx"], t, upstream=ports["up"], cpu_affinity=" ".join(["01"] * t) if pin else None)
        procs.start("nginx", [nginx, "-c", f"{tmp}/proxy.conf", "-g", "daemon off;"])
        procs.start("plain", [plain, f"127.0.0.1:{ports['plain']}", f"127.0.0.1:{ports['up']}", str(t)], cpu="0")
        subprocess.run([anteroom, "keygen", "--out", tmp], check=True, capture_output=True)
        key = f"{tmp}/anteroom.key.pem"
        memory_store = '[store]\nbackend = "memory"'
        anteroom_conf(f"{tmp}/ant.toml", ports["ant"], ports["ant_admin"], ports["up"], t, key, "warn", memory_store, anteroom)
        anteroom_conf(f"{tmp}/log.toml", ports["log"], ports["log_admin"], ports["up"], t, key, "info", memory_store, anteroom)
        ant = procs.start("anteroom", [anteroom, "run", "--config", f"{tmp}/ant.toml"], cpu="0")
        procs.start("anteroom-logs", [anteroom, "run", "--config", f"{tmp}/log.toml"], cpu="0", log=f"{tmp}/access.log")
        # The memory store keeping its state on disk (builds without
        # state_dir skip it).
        state_store = memory_store + f'\nstate_dir = "{tmp}/state"\nsnapshot_interval = "1s"'
        anteroom_conf(f"{tmp}/st.toml", ports["st"], ports["st_admin"], ports["up"], t, key, "warn", state_store, anteroom)
        use_state = subprocess.run([anteroom, "check", "--config", f"{tmp}/st.toml"], capture_output=True).returncode == 0
        if use_state:
            procs.start("anteroom-state", [anteroom, "run", "--config", f"{tmp}/st.toml"], cpu="0")
        if use_redis:
            procs.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(ports["redis"]), "--save", "", "--appendonly", "no"], cpu="1")
            wait_port(ports["redis"])
            redis_store = f'[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:{ports["redis"]}/0"\ntouch_interval = "5s"\ntimeout = "2s"'
            anteroom_conf(f"{tmp}/red.toml", ports["red"], ports["red_admin"], ports["up"], t, key, "warn", redis_store, anteroom)
            procs.start("anteroom-redis", [anteroom, "run", "--config", f"{tmp}/red.toml"], cpu="0")
        for name in ["up", "nginx", "plain", "ant", "ant_admin", "log"] + (["red", "red_admin"] if use_redis else []) + (["st", "st_admin"] if use_state else []):
            wait_port(ports[name])
        time.sleep(0.5)
        rss_start = rss_kb(ant.pid)

        def url(port, path):
            return f"http://127.0.0.1:{port}{path}"

        # Tokens: a pass for the room "web", and a ticket at the back of the
        # line of the room "full" (admitted: one visitor).
        def setup_tokens(port, admin, fill):
            _, h, _ = http("GET", url(port, "/web/x"), {"Accept": "application/json"})
            pass_ = set_cookie(h, "anteroom_pass")
            status, _, _ = http("GET", url(port, "/full/x"), {"Accept": "application/json"})
            assert status == 200, status
            if fill > 1:
                http("POST", url(admin, "/admin/rooms/full/visitors"), {"Content-Type": "application/json"}, {"count": fill - 1})
            status, _, body = http("GET", url(port, "/full/x"), {"Accept": "application/json"})
            assert status == 503, status
            ticket = json.loads(body)["ticket"]
            # Come back with both at once, as a client that keeps its tokens
            # does: a place nobody comes back for lapses after confirm_window.
            status, _, _ = http("GET", url(port, "/web/x"), {"X-Anteroom-Pass": pass_})
            assert status == 200, status
            _, _, body = http("GET", url(port, "/__anteroom/status?room=full"),
                              {"Accept": "application/json", "X-Anteroom-Ticket": ticket})
            assert json.loads(body)["state"] == "queued", body
            return pass_, ticket

        pass_mem, ticket_mem = setup_tokens(ports["ant"], ports["ant_admin"], levels[0])
        if use_state:
            pass_st, ticket_st = setup_tokens(ports["st"], ports["st_admin"], levels[0])
        if use_redis:
            pass_red, ticket_red = setup_tokens(ports["red"], ports["red_admin"], levels[0])

        def proxy_round(r):
            for target, port in [("upstream direct", ports["up"]), ("nginx", ports["nginx"]), ("plain pingora", ports["plain"]),
                                 ("anteroom", ports["ant"]), ("anteroom, access log on", ports["log"])]:
                record("forward, no room", target, wrk.run(f"round {r}: {target}", url(port, "/")))
            # The pass scenario's request is ~650 bytes larger: the same bytes through the floor.
            record(SAME_AS_PASS, "plain pingora", wrk.run(f"round {r}: plain pingora, {SAME_AS_PASS}", url(ports["plain"], "/"), [f"X-Anteroom-Pass: {pass_mem}"]))

        def anteroom_round(r, level):
            memory = [("memory", ports["ant"], pass_mem, ticket_mem)]
            if use_state:
                memory.append(("memory, state_dir", ports["st"], pass_st, ticket_st))
            stores = memory + ([("redis", ports["red"], pass_red, ticket_red)] if use_redis else [])
            for store, port, pass_, ticket in stores:
                record("admitted: requests room, free slots", f"anteroom ({store})", wrk.run(f"round {r}: {store} requests room", url(port, "/req/x")))
                record(LLM, f"anteroom ({store})", wrk.run(f"round {r}: {store} llm room", url(port, "/llm/x")))
                record("admitted: sessions room, valid pass", f"anteroom ({store})",
                       wrk.run(f"round {r}: {store} pass", url(port, "/web/x"), [f"X-Anteroom-Pass: {pass_}"]))
                record("queued: 503 QUEUE_REQUIRED JSON", f"anteroom ({store})",
                       wrk.run(f"round {r}: {store} queued json", url(port, "/full/x"), [f"X-Anteroom-Ticket: {ticket}", "Accept: application/json"]))
                record("queued: waiting page", f"anteroom ({store})",
                       wrk.run(f"round {r}: {store} queued page", url(port, "/full/x"), [f"X-Anteroom-Ticket: {ticket}", "Accept: text/html"]))
                before = redis_calls(ports["redis"], "evalsha") if store == "redis" else 0
                poll = wrk.run(f"round {r}: {store} status poll at {level}", url(port, "/__anteroom/status?room=full"), [f"X-Anteroom-Ticket: {ticket}"])
                record(f"status poll, {level} queued", f"anteroom ({store})", poll)
                if store == "redis" and poll["requests"]:
                    extra.setdefault("redis round trips per poll", []).append((redis_calls(ports["redis"], "evalsha") - before) / poll["requests"])

        # Added latency: one connection, one request at a time, so nothing
        # queues and the latency is each proxy's own per-request time.
        def latency_round(r):
            for target, port, path, headers in [
                ("nginx", ports["nginx"], "/", []),
                ("plain pingora", ports["plain"], "/", []),
                ("plain pingora, " + SAME_AS_PASS, ports["plain"], "/", [f"X-Anteroom-Pass: {pass_mem}"]),
                ("anteroom, no room", ports["ant"], "/", []),
                ("anteroom, requests room", ports["ant"], "/req/x", []),
                ("anteroom, sessions room with pass", ports["ant"], "/web/x", [f"X-Anteroom-Pass: {pass_mem}"]),
            ]:
                record(LATENCY, target, wrk.run(f"round {r}: {target}, 1 connection", url(port, path), headers, connections=1))

        for r in range(1, args.rounds + 1):
            proxy_round(r)
            anteroom_round(r, levels[0])
            latency_round(r)

        # Longer lines: status polls and memory.
        rss = {0: rss_start}
        current = levels[0]
        rss[current] = rss_kb(ant.pid)
        for level in levels[1:]:
            for port, admin in [(ports["ant"], ports["ant_admin"])] + ([(ports["red"], ports["red_admin"])] if use_redis else []):
                http("POST", url(admin, "/admin/rooms/full/visitors"), {"Content-Type": "application/json"}, {"count": level - current})
            current = level
            time.sleep(1)
            rss[level] = rss_kb(ant.pid)
            for r in range(1, args.rounds + 1):
                record(f"status poll, {level} queued", "anteroom (memory)",
                       wrk.run(f"round {r}: memory status poll at {level}", url(ports["ant"], "/__anteroom/status?room=full"), [f"X-Anteroom-Ticket: {ticket_mem}"]))
                if use_redis:
                    record(f"status poll, {level} queued", "anteroom (redis)",
                           wrk.run(f"round {r}: redis status poll at {level}", url(ports["red"], "/__anteroom/status?room=full"), [f"X-Anteroom-Ticket: {ticket_red}"]))
                record("forward, no room", "plain pingora", wrk.run(f"round {r}: plain pingora (reference)", url(ports["plain"], "/")))
        extra["rss_kb"] = rss

        # Arrival flood: new visitors at a full room, each signed a ticket.
        for r in range(1, args.rounds + 1):
            record("arrival flood: new visitor, signed ticket", "anteroom (memory)",
                   wrk.run(f"round {r}: arrival flood", url(ports["ant"], "/full/x"), ["Accept: application/json"]))
            if use_state:
                record("arrival flood: new visitor, signed ticket", "anteroom (memory, state_dir)",
                       wrk.run(f"round {r}: arrival flood, state_dir", url(ports["st"], "/full/x"), ["Accept: application/json"]))
        if use_state and not args.smoke:
            # What one snapshot costs with the longest line: the average
            # write over a few seconds, and its size.
            http("POST", url(ports["st_admin"], "/admin/rooms/full/visitors"), {"Content-Type": "application/json"}, {"count": levels[-1]})
            time.sleep(2)
            before = snapshot_stats(url(ports["st_admin"], "/metrics"))
            time.sleep(5)
            after = snapshot_stats(url(ports["st_admin"], "/metrics"))
            writes = after[1] - before[1]
            if writes > 0:
                extra["snapshot"] = ((after[0] - before[0]) / writes, after[2], int(after[3]))
        signs, speed_out = openssl_rsa2048(1 if args.smoke else 3, pin)
        raw.write(f"### openssl speed rsa2048\n{speed_out}\n")
        extra["openssl rsa2048 sign/s (one core)"] = signs
    finally:
        procs.stop_all()
        raw.close()

    report(args, results, extra, pin, use_redis)


LATENCY = "latency, 1 connection"
LLM = "admitted: LLM room (rate, tokens, adaptive, fair_by), free slots"
SAME_AS_PASS = "forward, the pass scenario's request"


def report(args, results, extra, pin, use_redis):
    plain = [r["rps"] for r in results.get(("forward, no room", "plain pingora"), [])]
    nginx = [r["rps"] for r in results.get(("forward, no room", "nginx"), [])]
    plain_med, nginx_med = median(plain), median(nginx)
    lines = [
        f"rounds: {args.rounds} x {args.duration}s, wrk -t1 -c{args.connections}, proxy threads: {args.threads}, "
        f"pinning: {'proxies on core 0, wrk/upstream/redis on core 1' if pin else 'none (one core)'}",
        "",
        "| scenario | target | requests/s (median) | p50 ms | p99 ms | vs plain Pingora | vs nginx |",
        "|---|---|---|---|---|---|---|",
    ]
    for (scenario, target), runs in results.items():
        if scenario == LATENCY:
            continue
        rps = median([r["rps"] for r in runs])
        lines.append(
            f"| {scenario} | {target} | {rps:,.0f} | {median([r['p50'] for r in runs]):.3f} | "
            f"{median([r['p99'] for r in runs]):.3f} | {rps / plain_med:.2f} | {rps / nginx_med:.2f} |"
        )
    latency = {target: runs for (scenario, target), runs in results.items() if scenario == LATENCY}
    if latency:
        base = median([r["p99"] for r in latency.get("plain pingora", [])])
        base_pass = median([r["p99"] for r in latency.get("plain pingora, " + SAME_AS_PASS, [])])
        lines += [
            "",
            f"{LATENCY} (wrk -t1 -c1: no queueing, each proxy's own time per request):",
            "",
            "| target | requests/s | p50 µs | p99 µs | p99 vs plain Pingora (same request), µs |",
            "|---|---|---|---|---|",
        ]
        for target, runs in latency.items():
            p99 = median([r["p99"] for r in runs])
            lines.append(
                f"| {target} | {median([r['rps'] for r in runs]):,.0f} | {median([r['p50'] for r in runs]) * 1000:.0f} | "
                f"{p99 * 1000:.0f} | {(p99 - (base_pass if 'pass' in target else base)) * 1000:+.0f} |"
            )
    same = median([r["rps"] for r in results.get((SAME_AS_PASS, "plain pingora"), [])])
    passes = median([r["rps"] for r in results.get(("admitted: sessions room, valid pass", "anteroom (memory)"), [])])
    lines.append("")
    if same:
        lines.append(f"- admitted with a pass vs plain Pingora forwarding the same request: {passes / same:.2f} (memory store)")
    rss = extra.get("rss_kb", {})
    for level, kb in sorted(rss.items()):
        lines.append(f"- resident memory with {level:,} queued: {kb / 1024:.1f} MiB")
    levels = sorted(rss)
    if len(levels) >= 2 and levels[-1] > 0:
        per = (rss[levels[-1]] - rss[0]) * 1024 / levels[-1]
        lines.append(f"- bytes of resident memory per queued visitor ({levels[-1]:,} queued): {per:.0f}")
    flood = median([r["rps"] for r in results.get(("arrival flood: new visitor, signed ticket", "anteroom (memory)"), [])])
    signs = extra.get("openssl rsa2048 sign/s (one core)", 0)
    if signs:
        lines.append(f"- arrival flood: {flood:,.0f} tickets/s; openssl rsa2048 on one core: {signs:,.0f} sign/s; ratio per core in use ({args.threads}): {flood / (signs * args.threads):.2f}")
    for store in ["memory", "redis"]:
        llm = median([r["rps"] for r in results.get((LLM, f"anteroom ({store})"), [])])
        plain_room = median([r["rps"] for r in results.get(("admitted: requests room, free slots", f"anteroom ({store})"), [])])
        if llm and plain_room:
            lines.append(f"- LLM room vs plain requests room ({store}): {llm:,.0f} vs {plain_room:,.0f} req/s: {llm / plain_room:.2f}")
    first_poll = next((sc for sc, t in results if sc.startswith("status poll") and t == "anteroom (memory, state_dir)"), "")
    for scenario in ["admitted: requests room, free slots", "admitted: sessions room, valid pass",
                     first_poll, "arrival flood: new visitor, signed ticket"]:
        kept = median([r["rps"] for r in results.get((scenario, "anteroom (memory, state_dir)"), [])])
        plain_mem = median([r["rps"] for r in results.get((scenario, "anteroom (memory)"), [])])
        if kept and plain_mem:
            lines.append(f"- persistence ({scenario}): with state_dir {kept:,.0f} req/s vs without {plain_mem:,.0f}: {kept / plain_mem:.2f}")
    if "snapshot" in extra:
        secs, size, queued = extra["snapshot"]
        lines.append(f"- one state snapshot with {queued:,} queued: {secs * 1000:.0f} ms to write, {size / 1e6:.1f} MB ({size / max(queued, 1):.0f} bytes per queued visitor)")
    polls = {lvl: median([r["rps"] for r in results.get((f"status poll, {lvl} queued", "anteroom (memory)"), [])]) for lvl in levels if lvl}
    if len(polls) >= 2:
        lo, hi = min(polls), max(polls)
        lines.append(f"- status poll cost at {hi:,} queued vs {lo:,}: {polls[lo] / polls[hi]:.2f}x (memory store)")
    if use_redis and extra.get("redis round trips per poll"):
        lines.append(f"- Redis round trips per status poll: {median(extra['redis round trips per poll']):.2f}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())


def two_sinks(tmp, redis_port):
    """The `[events]` of the sink benchmarks: a JSON lines file and a Redis
    stream on the redis-server at `redis_port`."""
    return f"""
[events]
dead_letter_dir = "{tmp}/dead"
[[events.sink]]
kind = "file"
path = "{tmp}/events.jsonl"
[[events.sink]]
kind = "redis"
url = "redis://127.0.0.1:{redis_port}/0"
stream = "anteroom:events"
maxlen = 100000
"""
