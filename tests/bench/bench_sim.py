#!/usr/bin/env python3
"""bench_sim.py - how fast is ollama-sim?

1. Short non-streamed POST /api/generate requests per second, the sim pinned
   to core 1 and wrk to core 0 (--ttft-ms 0 --tokens-per-s 0: instant).
   Also the sim's CPU time per request, from /proc/PID/stat.
2. N concurrent NDJSON streams held at once (default 2000): every stream
   must complete with its final done:true line; max_in_flight must be N.

Usage: bench_sim.py [--build DIR] [--duration S] [--conns C] [--streams N]
Standard library only; needs /usr/bin/wrk and taskset.
"""
import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import cpu_s  # noqa: E402


def start_sim(build, args, core):
    log = tempfile.NamedTemporaryFile(prefix="bench-sim-", suffix=".log", delete=False)
    cmd = ["taskset", "-c", str(core), os.path.join(build, "ollama-sim"), "--port", "0"] + args
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        m = re.search(r"listening on \S*:(\d+)", open(log.name).read())
        if m:
            return p, int(m.group(1)), log.name
        if p.poll() is not None:
            break
        time.sleep(0.02)
    p.kill()
    sys.exit("ollama-sim did not start:\n" + open(log.name).read())


def stop_sim(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def http_json(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def bench_requests(build, duration, conns):
    p, port, _ = start_sim(build, ["--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "24"], 1)
    try:
        http_json(port, "POST", "/api/generate", {"model": "llama3"})  # load
        lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        lua.write('wrk.method = "POST"\n'
                  'wrk.body = \'{"model":"llama3","prompt":"Classify: the weather is nice",'
                  '"stream":false}\'\n'
                  'wrk.headers["Content-Type"] = "application/json"\n')
        lua.close()
        url = "http://127.0.0.1:%d/api/generate" % port
        subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c%d" % conns, "-d1s", "-s",
                        lua.name, url], capture_output=True)  # warm-up
        http_json(port, "POST", "/_sim/reset", {})
        c0 = cpu_s(p.pid)
        out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c%d" % conns,
                              "-d%ds" % duration, "--latency", "-s", lua.name, url],
                             capture_output=True, text=True).stdout
        cpu = cpu_s(p.pid) - c0
        os.unlink(lua.name)
        stats = http_json(port, "GET", "/_sim/stats")
    finally:
        stop_sim(p)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    served = stats["served"]
    print("requests: %.0f req/s (wrk -t1 -c%d %ds), latency p50 %s p99 %s, "
          "sim CPU %.1f us/request, served %d, non-2xx %s" %
          (rps, conns, duration, p50, p99, cpu / max(served, 1) * 1e6, served,
           non2xx.group(1) if non2xx else 0))
    return rps


async def one_stream(port, body, result):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" %
                  (port, len(body))).encode() + body)
    await writer.drain()
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    writer.close()
    ok = data.startswith(b"HTTP/1.1 200") and b'"done":true' in data
    result.append(ok)


async def run_streams(port, n, body):
    result = []
    await asyncio.gather(*(one_stream(port, body, result) for _ in range(n)))
    return result


def bench_streams(build, n, tokens, tps):
    args = ["--parallel", str(n), "--ttft-ms", "200", "--tokens", str(tokens),
            "--tokens-per-s", str(tps), "--slowdown", "0"]
    p, port, _ = start_sim(build, args, 1)
    try:
        http_json(port, "POST", "/api/generate", {"model": "llama3"})
        body = json.dumps({"model": "llama3", "prompt": "tell me a story"}).encode()
        c0 = cpu_s(p.pid)
        t0 = time.time()
        res = asyncio.run(run_streams(port, n, body))
        dt = time.time() - t0
        cpu = cpu_s(p.pid) - c0
        stats = http_json(port, "GET", "/_sim/stats")
    finally:
        stop_sim(p)
    good = sum(res)
    expect = 0.2 + (tokens - 1) / tps
    print("streams: %d/%d complete, max_in_flight %d, %.2fs wall (ideal %.2fs), "
          "%d tokens/stream, sim CPU %.2fs (%.1f us/token)" %
          (good, n, stats["max_in_flight"], dt, expect, tokens, cpu,
           cpu / (n * tokens) * 1e6))
    return good == n and stats["max_in_flight"] == n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR", os.path.join(SRC, "build")))
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--stream-tokens", type=int, default=40)
    ap.add_argument("--stream-tps", type=float, default=20)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rps = bench_requests(a.build, a.duration, a.conns)
    ok = bench_streams(a.build, a.streams, a.stream_tokens, a.stream_tps)
    goal = rps >= 10000 and ok
    print("goal (>= 10000 req/s, %d streams held): %s" % (a.streams, "MET" if goal else "MISSED"))
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
