#!/usr/bin/env python3
"""bench_fair.py - fair sharing against one FIFO queue, and what it costs.

Usage: bench_fair.py [fair|cpu|callgrind ...] [--fifo BINARY] [--build DIR]
                     [--extra NAME=BINARY ...] [--rounds N] [--quick] [--json FILE]

Two benchmarks, each run against two ollama-proxy binaries in the same run,
rounds interleaved (order reversed every other round), medians reported:
  fifo  the proxy before the scheduler, one FIFO queue (commit dacc60a;
        build it aside: git worktree add /tmp/fifo dacc60a, then cmake -S
        /tmp/fifo -B /tmp/fifo/build -DCMAKE_BUILD_TYPE=Release and build);
  fair  BUILD/ollama-proxy (default build dir build-bench), the scheduler.
--extra NAME=BINARY adds more proxies (e.g. another commit) to both.

fair: two ollama-sim backends `--parallel 4 --ttft-ms 100 --tokens 1
  --tokens-per-s 0` behind the proxy with caps 4+4 (80 req/s). A legacy
  client keeps 5 requests in flight from 127.0.0.1 (one connection per
  request, as tests/proxy/test_proxy_fair.py), first alone, then beside a
  batch client keeping 200 in flight from 127.0.0.2 (another source
  address: another client). Legacy latency p50/p99 alone and beside, the
  ratios beside/alone (per round, then the median), and how busy the fleet
  was while both ran. Each legacy phase ends after N requests or T seconds
  (the requests then in flight are awaited and counted).
cpu: tests/bench/bench_proxy.py's short-JSON c50 case (wrk -t1 -c50,
  `"stream":false`, zero-delay sim, max_concurrent 64): proxy CPU per
  request from /proc/PID/stat, and the ratio of each proxy's to fifo's per
  round. The goal: fair within 5 % of fifo.
callgrind (only when named; needs valgrind): the same load with each proxy
  under callgrind: instructions per request, counted after a warm-up. Not
  the kernel's share, but free of the noise of CPU time on shared cores.

Placement as in ../shared/BASELINE.md: this driver (the asyncio clients),
wrk and the sims on core 0, the proxies on core 1 (taskset). Every process
is started and stopped by its PID; all traffic is on 127.0.0.1; logs and
configs in /tmp/bench-proxy-*/.
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import aclient  # noqa: E402
import bench_proxy as bp  # noqa: E402

LEGACY, BATCH = "127.0.0.1", "127.0.0.2"
GEN = {"model": "llama3", "prompt": "hello", "stream": False}
ARGS = None


def proxy(name, binary, backends, extra=""):
    """An ollama-proxy BINARY on the proxy core; BACKENDS: [(name, port, cap)]."""
    conf = os.path.join(bp.TMP, "%s-%d.conf" % (name, len(bp._procs)))
    rows = ",\n".join('  { name = "%s"; url = "http://127.0.0.1:%d"; max_concurrent = %d; }' % b
                      for b in backends)
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n%s\n' % (rows, extra))
    return bp.Proc(name, [binary, "-c", conf], core=bp.PROXY_CORE)


class Background(bp.Background):
    """bench_proxy's noisy-neighbour meter, with this process counted as
    ours: the asyncio clients run in it, not in a child."""

    def _ours(self):
        import resource
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return super()._ours() + ru.ru_utime + ru.ru_stime


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))] if xs else float("nan")


def served(sims):
    return sum(bp.http_json(s.port, "GET", "/_sim/stats")["served"] for s in sims)


# ---------------------------------------------------------------- fair

async def legacy(port, n, secs):
    """5 in flight from LEGACY until N requests were sent or SECS passed;
    returns (latencies in ms of the 200s, other outcomes)."""
    lat, bad = [], []
    left = [n]
    deadline = time.monotonic() + secs

    async def worker():
        while left[0] > 0 and time.monotonic() < deadline:
            left[0] -= 1
            r = await aclient.request(port, "POST", "/api/generate", body=GEN, local=LEGACY,
                                      timeout=120)
            if r.status == 200:
                lat.append((r.t_end - r.t_start) * 1000)
            else:
                bad.append(r.status or r.error)
    await asyncio.gather(*(worker() for _ in range(5)))
    return lat, bad


async def batch(port, stop, counts):
    """200 in flight from BATCH until STOP is set."""
    async def worker():
        while not stop.is_set():
            r = await aclient.request(port, "POST", "/api/generate", body=GEN, local=BATCH,
                                      timeout=120)
            counts[r.status == 200] += 1
            if r.status != 200:
                await asyncio.sleep(0.01)
    await asyncio.gather(*(worker() for _ in range(200)))


async def beside(port, sims, n, secs):
    """The legacy client beside the batch: (latencies, bad, fleet busy share,
    batch 200s, batch others, queue length seen before the legacy started)."""
    stop = asyncio.Event()
    counts = [0, 0]
    b = asyncio.ensure_future(batch(port, stop, counts))
    await asyncio.sleep(1.5)  # the batch fills the queue first
    qlen = await asyncio.get_running_loop().run_in_executor(None, queue_length, port)
    s0, t0 = served(sims), time.monotonic()
    lat, bad = await legacy(port, n, secs)
    s1, t1 = served(sims), time.monotonic()
    stop.set()
    await b
    return lat, bad, (s1 - s0) / (t1 - t0) / (len(sims) * 4 / 0.1), counts[1], counts[0], qlen


def queue_length(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/proxy/status" % port, timeout=5) as r:
            return json.loads(r.read())["queue"]["length"]
    except Exception:
        return None


def bench_fair(targets):
    n_alone, n_beside, secs = (60, 60, 8) if ARGS.quick else (200, 200, 15)
    sims = [bp.sim("--parallel", 4, "--ttft-ms", 100, "--tokens", 1, "--tokens-per-s", 0)
            for _ in range(2)]
    bk = [("gpu%d" % i, s.port, 4) for i, s in enumerate(sims)]
    pxs = [(name, proxy(name, path, bk, "queue = { max_length = 1024; };"))
           for name, path in targets]
    res = {}
    for rnd in range(ARGS.rounds):
        order = pxs if rnd % 2 == 0 else pxs[::-1]
        for name, px in order:
            bg = Background(sims + [px])
            alone, bad_a = aclient.run(legacy(px.port, n_alone, secs))
            lat, bad_b, busy, b_ok, b_bad, qlen = aclient.run(beside(px.port, sims, n_beside,
                                                                     secs))
            r = {"alone_p50": statistics.median(alone), "alone_p99": pct(alone, 99),
                 "beside_p50": statistics.median(lat), "beside_p99": pct(lat, 99),
                 "n_alone": len(alone), "n_beside": len(lat), "bad": len(bad_a) + len(bad_b),
                 "busy": busy, "batch_ok": b_ok, "batch_bad": b_bad, "queue": qlen,
                 "bg": bg.pct()}
            r["x50"] = r["beside_p50"] / r["alone_p50"]
            r["x99"] = r["beside_p99"] / r["alone_p99"]
            res.setdefault(name, []).append(r)
            print("  round %d %-6s alone %.0f/%.0f ms (n %d), beside %.0f/%.0f ms (n %d, queue %s),"
                  " fleet %.0f%% busy, bg %.0f%%" % (
                      rnd + 1, name, r["alone_p50"], r["alone_p99"], r["n_alone"],
                      r["beside_p50"], r["beside_p99"], r["n_beside"], qlen, 100 * busy,
                      r["bg"]))
            sys.stdout.flush()
    rows = []
    for name, _ in pxs:
        rs = res[name]
        m = {k: bp.med([r[k] for r in rs]) for k in rs[0]}
        bp.RESULTS["fair_%s" % name] = m
        rows.append([name, "%.0f / %.0f" % (m["alone_p50"], m["alone_p99"]),
                     "%.0f / %.0f" % (m["beside_p50"], m["beside_p99"]),
                     "%.2f / %.2f" % (m["x50"], m["x99"]), "%.0f%%" % (100 * m["busy"]),
                     "%d" % m["queue"] if m["queue"] == m["queue"] else "-",
                     sum(r["bad"] for r in rs), sum(r["batch_bad"] for r in rs)])
    bp.table("fair: legacy 5 in flight (127.0.0.1) alone, then beside a batch of 200 in flight "
             "(127.0.0.2); 2 sims x 4 slots, 100 ms, caps 4+4; %d round(s), medians; ms p50 / p99"
             % ARGS.rounds,
             ["proxy", "legacy alone", "legacy beside batch", "x alone", "fleet busy",
              "queue", "legacy errors", "batch non-200"], rows)
    for _, px in pxs:
        px.stop()
    for s in sims:
        s.stop()


# ---------------------------------------------------------------- cpu

def bench_cpu(targets):
    dur = 2 if ARGS.quick else 5
    s = bp.sim("--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "24", "--parallel", "256")
    pxs = [(name, proxy(name, path, [("a", s.port, 64)], "queue = { max_length = 100000; };"))
           for name, path in targets]
    for _, px in pxs:
        bp.wrk(px.port, 50, 1)  # warm-up
    res = {}
    for rnd in range(ARGS.cpu_rounds):
        order = pxs if rnd % 2 == 0 else pxs[::-1]
        for name, px in order:
            bg = Background([s] + [p for _, p in pxs])
            c0, s0 = px.cpu(), s.cpu()
            r = bp.wrk(px.port, 50, dur)
            n = max(r["requests"], 1)
            r["cpu_us"] = (px.cpu() - c0) / n * 1e6
            r["sim_us"] = (s.cpu() - s0) / n * 1e6
            r["bg"] = bg.pct()
            res.setdefault(name, []).append(r)
    base = targets[0][0]
    rows = []
    for name, _ in pxs:
        rs, b = res[name], res[base]
        m = {"cpu_us": bp.med([r["cpu_us"] for r in rs]),
             "cpu_ratio": bp.med([r["cpu_us"] / x["cpu_us"] for r, x in zip(rs, b)]),
             "rps": bp.med([r["rps"] for r in rs]),
             "rps_ratio": bp.med([r["rps"] / x["rps"] for r, x in zip(rs, b)]),
             "sim_us": bp.med([r["sim_us"] for r in rs]), "bg": bp.med([r["bg"] for r in rs]),
             "per_round": [round(r["cpu_us"], 2) for r in rs]}
        bp.RESULTS["cpu_%s" % name] = m
        rows.append([name, "%.0f" % m["rps"], "%.3f" % m["rps_ratio"], "%.1f" % m["cpu_us"],
                     "%.3f" % m["cpu_ratio"], " ".join("%.1f" % x for x in m["per_round"]),
                     "%.1f" % m["sim_us"], "%.0f%%" % m["bg"],
                     sum(r["non2xx"] + r["sockerr"] for r in rs)])
    bp.table("cpu: short JSON, wrk -t1 -c50 x %ds, zero-delay sim, max_concurrent 64; %d round(s), "
             "medians; ratios per round against %s" % (dur, ARGS.cpu_rounds, base),
             ["proxy", "req/s", "x rps", "CPU us/req", "x CPU", "per round", "sim us/req",
              "bg cpu", "errors"], rows)
    for name, _ in pxs[1:]:
        m = bp.RESULTS["cpu_%s" % name]
        print("goal: %s CPU per request within 5%% of %s: %.3fx %s" % (
            name, base, m["cpu_ratio"], bp.goal(m["cpu_ratio"] <= 1.05)))
    for _, px in pxs:
        px.stop()
    s.stop()


def callgrind_ir(path):
    """PROGRAM TOTALS of a callgrind output file."""
    out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out)
    return int(m.group(1).replace(",", "")) if m else None


def bench_callgrind(targets):
    """Instructions per request (user space: the proxy, libevent, libc) under
    callgrind, same load as cpu: deterministic where CPU time is noisy, and
    the output files (kept in the log directory) show where they go
    (callgrind_annotate --inclusive=no FILE)."""
    dur = 3 if ARGS.quick else 8
    s = bp.sim("--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "24", "--parallel", "256")
    rows, res = [], {}
    for name, path in targets:
        conf = os.path.join(bp.TMP, "cg-%s.conf" % name)
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:0";\nbackends = (\n  { name = "a"; url = '
                    '"http://127.0.0.1:%d"; max_concurrent = 64; }\n);\n'
                    'queue = { max_length = 100000; };\n' % s.port)
        out = os.path.join(bp.TMP, "callgrind-%s.out" % name)
        px = bp.Proc("cg-" + name, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                    path, "-c", conf], core=bp.PROXY_CORE)
        bp.wrk(px.port, 50, 2)  # warm-up, then count from zero
        subprocess.run(["callgrind_control", "-z", str(px.pid)], capture_output=True, timeout=30)
        r = bp.wrk(px.port, 50, dur)
        subprocess.run(["callgrind_control", "-d", str(px.pid)], capture_output=True, timeout=30)
        px.stop()
        ir = callgrind_ir(out + ".1")
        res[name] = ir / max(r["requests"], 1) if ir else float("nan")
        rows.append([name, r["requests"], "%.0f" % res[name], "%.3f" % (res[name] / res[targets[0][0]]),
                     r["non2xx"] + r["sockerr"], out + ".1"])
        bp.RESULTS["callgrind_%s" % name] = res[name]
    s.stop()
    bp.table("callgrind: instructions per request, wrk -t1 -c50 x %ds under valgrind, counted after "
             "a warm-up" % dur, ["proxy", "requests", "Ir/request", "x %s" % targets[0][0], "errors",
                                "profile"], rows)


BENCHES = {"fair": bench_fair, "cpu": bench_cpu, "callgrind": bench_callgrind}


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", nargs="*", help="|".join(BENCHES) + " (default: fair cpu)")
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(bp.SRC, "build-bench")))
    ap.add_argument("--fifo", default=os.environ.get("OP_FIFO_PROXY",
                                                     "/tmp/fifo/build/ollama-proxy"),
                    help="the FIFO proxy binary (commit dacc60a)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=BINARY",
                    help="another proxy to measure beside them")
    ap.add_argument("--rounds", type=int, help="rounds of fair (default 3, quick 1)")
    ap.add_argument("--cpu-rounds", type=int, help="rounds of cpu (default 5, quick 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    ARGS = ap.parse_args()
    for b in ARGS.bench:
        if b not in BENCHES:
            ap.error("unknown benchmark %r (choose from %s)" % (b, ", ".join(BENCHES)))
    ARGS.rounds = ARGS.rounds or (1 if ARGS.quick else 3)
    ARGS.cpu_rounds = ARGS.cpu_rounds or (2 if ARGS.quick else 5)
    bp.BUILD = os.path.abspath(ARGS.build)
    targets = [("fifo", os.path.abspath(ARGS.fifo)),
               ("fair", os.path.join(bp.BUILD, "ollama-proxy"))]
    for x in ARGS.extra:
        name, _, path = x.partition("=")
        if not name or not path:
            ap.error("--extra wants NAME=BINARY")
        targets.append((name, os.path.abspath(path)))
    for name, path in targets + [("sim", os.path.join(bp.BUILD, "ollama-sim"))]:
        if not os.access(path, os.X_OK):
            sys.exit("%s: %s not found (see --help for how to build the FIFO one)" % (name, path))
    os.sched_setaffinity(0, {int(bp.LOAD_CORE)})  # the asyncio clients beside the sims
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("bench_fair: %s, %d CPUs, %s; logs in %s" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(),
        ", ".join("%s=%s" % t for t in targets), bp.TMP))
    t0 = time.time()
    for name in ARGS.bench or ["fair", "cpu"]:
        t1 = time.time()
        BENCHES[name](targets)
        print("(%s: %.0f s)" % (name, time.time() - t1))
    print("\ntotal %.0f s" % (time.time() - t0))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(bp.RESULTS, f, indent=1, default=str)


if __name__ == "__main__":
    main()
