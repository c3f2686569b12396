#!/usr/bin/env python3
"""bench_catalog.py - what GET /api/tags and /v1/models cost at 80,000 models.

Usage: bench_catalog.py --base BINARY [--head BINARY] [--rounds N] [--gets N]
                        [--backends N] [--models N]

Two proxies in front of the same fleet: base, the proxy before the catalog
was kept built (commit 6f42c8b; build it aside: git archive 6f42c8b | tar -x
-C /tmp/cat-base, cmake -S /tmp/cat-base -B /tmp/cat-base/build
-DCMAKE_BUILD_TYPE=Release, build ollama-proxy), and head (default
build-bench/ollama-proxy, Release). The fleet: --backends fake backends
(tests/lib/fakebackend.py, default 8) each listing --models distinct
models (default 10,000, the proxy's limit for one answer): 80,000 in the
union, about 20 MB of /api/tags. Each round, for each proxy (order
reversed every other round), --gets GETs of /api/tags then of /v1/models
on one keep-alive connection, each answer read whole; the proxy's CPU
(utime + stime from /proc/PID/stat) and the wall time per GET; the ratio
head / base per round; medians over --rounds (default 5). Memory: each
proxy's VmRSS after the warm-up GETs and at the end. All traffic on
127.0.0.1; every process started and stopped by its PID."""
import argparse
import http.client
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
os.environ.setdefault("OP_SOURCE_DIR", os.path.join(HERE, "..", ".."))

from fakebackend import FakeBackend  # noqa: E402
import harness  # noqa: E402


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Target:
    def __init__(self, name, binary, backends):
        self.name = name
        conf = os.path.join(harness.tmpdir(), "catalog-%s.conf" % name)
        harness.write_proxy_conf(conf, [("g%d" % k, fb.url, 4) for k, fb in enumerate(backends)],
                                 "models = { refresh_s = 3600; };")
        self.proc = harness.Proc([binary, "-c", conf], name="ollama-proxy-" + name)
        self.port = self.proc.wait_listen()
        self.pid = self.proc.pid
        self.conn = None

    def get(self, path):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit("%s %s: %d %r" % (self.name, path, r.status, body[:200]))
        return body

    def run(self, path, n):
        """N GETs of PATH: (CPU s per GET, wall s per GET, bytes)."""
        c0, t0 = harness.cpu_s(self.pid), time.perf_counter()
        for _ in range(n):
            size = len(self.get(path))
        return (harness.cpu_s(self.pid) - c0) / n, (time.perf_counter() - t0) / n, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--head", default=os.path.join(HERE, "..", "..", "build-bench",
                                                   "ollama-proxy"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gets", type=int, default=10)
    ap.add_argument("--backends", type=int, default=8)
    ap.add_argument("--models", type=int, default=10000)
    a = ap.parse_args()
    n = a.models
    fleet = [FakeBackend(models=["m%06d:latest" % i for i in range(k * n, (k + 1) * n)])
             for k in range(a.backends)]
    targets = [Target("base", a.base, fleet), Target("head", a.head, fleet)]
    want = a.backends * n
    for t in targets:  # every backend's models known, and one warm-up GET
        deadline = time.time() + 120
        while True:
            body = t.get("/api/tags")
            if body.count(b'"name"') >= want or time.time() > deadline:
                break
            time.sleep(0.5)
        if body.count(b'"name"') < want:
            raise SystemExit("%s: the union never reached %d models" % (t.name, want))
        t.get("/v1/models")
    rss0 = {t.name: rss_mib(t.pid) for t in targets}
    res = {(t.name, p): [] for t in targets for p in ("/api/tags", "/v1/models")}
    for r in range(a.rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for t in order:
            for p in ("/api/tags", "/v1/models"):
                res[(t.name, p)].append(t.run(p, a.gets))
    print("catalog: %d backends x %d models = %d in the union; %d rounds x %d GETs, medians"
          % (a.backends, n, want, a.rounds, a.gets))
    print("%-11s %-5s %12s %12s %10s %14s" % ("path", "proxy", "CPU ms/GET", "wall ms/GET",
                                               "MB", "CPU head/base"))
    for p in ("/api/tags", "/v1/models"):
        ratios = [h[0] / b[0] if b[0] else float("nan")
                  for h, b in zip(res[("head", p)], res[("base", p)])]
        for t in targets:
            v = res[(t.name, p)]
            print("%-11s %-5s %12.2f %12.2f %10.1f %14s" % (
                p, t.name, 1000 * statistics.median(x[0] for x in v),
                1000 * statistics.median(x[1] for x in v), v[-1][2] / 1e6,
                "%.4f" % statistics.median(ratios) if t.name == "head" else ""))
    for t in targets:
        print("RSS %-5s after warm-up %.1f MiB, at the end %.1f MiB" % (
            t.name, rss0[t.name], rss_mib(t.pid)))
    for t in targets:
        t.proc.stop()
    for fb in fleet:
        fb.stop()


if __name__ == "__main__":
    main()
