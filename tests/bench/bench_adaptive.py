#!/usr/bin/env python3
"""bench_adaptive.py - adaptive caps against the best fixed cap of a sweep.

Usage: bench_adaptive.py [CURVE ...] [--build DIR] [--rounds N] [--scale F] [--quick]
                         [--json FILE]

CURVE is early, late or hard (default: all three). One ollama-sim backend
per curve (--time-scale 10, 32 tokens per reply, 10 ms to first token,
`"stream": false` as ollama-classify sends), one proxy in front of it:
  early  64 slots, --curve 1:100,2:190,4:340,8:480,64:480: aggregate
         tokens/s flat from 8 in flight (a GPU whose batching tops out early)
  late   64 slots, --curve 1:100,8:700,16:1200,24:1500,32:1600,64:1600:
         flat from 32 (batching that pays for long)
  hard   --parallel 4 with the early curve: Ollama's own parallelism ends at
         4 and the sim queues the rest inside (the hard knee)

Method, per round (rounds interleave the curves; the sweep order is
reversed every other round; figures are medians over rounds):
  sweep     for each fixed cap (max_concurrent = C, a fresh proxy each),
            one fixed batch of N requests with 128 in flight (twice the
            ceiling: the proxy's queue never runs dry): throughput = N /
            makespan (items/s, wall clock), p50 latency at the client, and
            p50 time in the backend (the sim's total_duration: from arrival
            at the sim, waiting for a slot included, to the end; simulated
            ms). The caps leave out 1 (every curve gives 1.9x at 2) and,
            for the hard knee, the levels between 16 and 64 (all queue
            inside the sim alike).
  best      the highest throughput; caps within TIE (2 %, the rounds'
            noise) of it are ties, broken by the lowest backend p50 (on a
            flat stretch more in flight only adds latency).
  adaptive  a fresh proxy with `max_concurrent = 64; adaptive = true`:
            one batch N (cold), the same load kept up for 45 s (quick 30),
            then the
            same fixed batch as the sweep. GET /proxy/status
            backends[].effective_cap is sampled every 100 ms from the
            start. Reported: throughput and p50 ratios against the best
            fixed cap (goals >= 95 % and <= 1.1x, on the backend p50: the
            client's p50 with 128 in flight is 128 / throughput by Little's
            law, whatever the cap, so it only mirrors throughput), the
            cap it ended at, and the time to settle: from the start until
            the cap stays within +-1 of its final value (the value at the
            end of the batch), in wall seconds and in requests completed
            by then. The proxy's windows last at least 0.5 s of wall time,
            so at --time-scale 10 the settle time in seconds is mostly the
            proxy's floor; the requests figure is the one that carries
            over to a real GPU (scale 1), where a window is its 2 x cap
            completions. "cold" is the first batch N from a fresh adaptive
            proxy (learning included) against the best fixed cap.

Placement as in ../shared/BASELINE.md: this driver (the asyncio client)
and the sims on core 0, the proxies on core 1 (taskset). Every process is
started and stopped by its PID; all traffic is on 127.0.0.1; logs and
configs in /tmp/bench-proxy-*/. No auth keys are configured, so
/proxy/status needs no admin key.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)

import aclient  # noqa: E402
import bench_proxy as bp  # noqa: E402

SCALE = 10        # the sims' --time-scale
TOKENS = 32       # tokens per reply
IN_FLIGHT = 128   # the client's requests in flight
CEILING = 64
TIE = 0.02
BODY = json.dumps({"model": "llama3", "stream": False,
                   "prompt": "Classify: the weather is nice today"})
EARLY = "1:100,2:190,4:340,8:480,64:480"
LATE = "1:100,8:700,16:1200,24:1500,32:1600,64:1600"
# name: (sim flags, caps swept, batch size, quick batch size, knee by design)
CURVES = {
    "early": (["--parallel", 64, "--curve", EARLY], [2, 4, 6, 8, 10, 12, 16, 32, 64], 600, 300, 8),
    "late": (["--parallel", 64, "--curve", LATE], [8, 16, 24, 28, 32, 40, 48, 64], 2000, 1000, 32),
    "hard": (["--parallel", 4, "--curve", EARLY], [2, 3, 4, 5, 6, 8, 16, 64], 400, 200, 4),
}
ARGS = None


def proxy(port, cap, adaptive):
    conf = os.path.join(bp.TMP, "adaptive-%d.conf" % len(bp._procs))
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n  { name = "gpu"; url = '
                '"http://127.0.0.1:%d"; max_concurrent = %d;%s }\n);\n'
                'queue = { max_length = 100000; };\n' %
                (port, cap, " adaptive = true;" if adaptive else ""))
    return bp.Proc("ollama-proxy", [os.path.join(bp.BUILD, "ollama-proxy"), "-c", conf],
                   core=bp.PROXY_CORE)


async def batch(port, n, done=None):
    """N requests, IN_FLIGHT at a time: (makespan s, [responses]); DONE[0]
    counts completions."""
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one():
        async with sem:
            r = await aclient.request(port, "POST", "/api/generate", body=BODY, timeout=300)
        if done is not None:
            done[0] += 1
        return r
    t0 = time.monotonic()
    res = await asyncio.gather(*(one() for _ in range(n)))
    return time.monotonic() - t0, res


async def steady(port, secs, done):
    """IN_FLIGHT requests kept in flight for SECS; DONE[0] counts completions."""
    deadline = time.monotonic() + secs

    async def worker():
        while time.monotonic() < deadline:
            await aclient.request(port, "POST", "/api/generate", body=BODY, timeout=300)
            done[0] += 1
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def sampler(port, t0, done, out, stop):
    """(time since T0, effective cap, completions so far) every 100 ms."""
    while not stop.is_set():
        r = await aclient.request(port, "GET", "/proxy/status", timeout=5)
        if r.status == 200:
            b = r.json()["backends"][0]
            out.append((time.monotonic() - t0, b.get("effective_cap"), done[0]))
        await asyncio.sleep(0.1)


def figures(makespan, res):
    bad = [r for r in res if r.status != 200]
    ok = [r for r in res if r.status == 200]
    client = [(r.t_end - r.t_start) * 1000 for r in ok]
    backend = [r.json()["total_duration"] / 1e6 for r in ok]
    return {"items_s": len(res) / makespan, "p50_client_ms": statistics.median(client),
            "p50_backend_ms": statistics.median(backend), "errors": len(bad)}


def run_fixed(sim, cap, n):
    px = proxy(sim.port, cap, False)
    try:
        return figures(*aclient.run(batch(px.port, n)))
    finally:
        px.stop()


def settle(samples):
    """(seconds, completions) at which the cap last came within +-1 of its
    final value and stayed; the final value."""
    caps = [s for s in samples if s[1] is not None]
    final = caps[-1][1]
    t, n = 0.0, 0
    for i, (ts, cap, done) in enumerate(caps):
        if abs(cap - final) > 1:
            nxt = caps[i + 1] if i + 1 < len(caps) else caps[i]
            t, n = nxt[0], nxt[2]
    return t, n, final


def run_adaptive(sim, n):
    px = proxy(sim.port, CEILING, True)
    learn = 30 if ARGS.quick else 45

    async def go():
        done, samples, stop = [0], [], asyncio.Event()
        t0 = time.monotonic()
        samp = asyncio.ensure_future(sampler(px.port, t0, done, samples, stop))
        cold = await batch(px.port, n, done)
        await steady(px.port, learn, done)
        warm = await batch(px.port, n, done)
        stop.set()
        await samp
        st = (await aclient.request(px.port, "GET", "/proxy/status", timeout=5)).json()
        return cold, warm, samples, st["backends"][0].get("adaptive", {}).get("reason")
    try:
        cold, warm, samples, reason = aclient.run(go())
    finally:
        px.stop()
    r = figures(*warm)
    r["cold_items_s"] = figures(*cold)["items_s"]
    r["settle_s"], r["settle_req"], r["final_cap"] = settle(samples)
    tail = [c for _, c, _ in samples[-20:] if c is not None]
    r["cap_range_end"] = (min(tail), max(tail)) if tail else None
    r["reason"] = reason
    r["trace"] = [(round(ts, 1), c) for ts, c, _ in samples[::5]]  # every 0.5 s
    return r


def bench_curve(name, rnd, store):
    flags, caps, n, nq, knee = CURVES[name]
    n = nq if ARGS.quick else n
    sim = bp.sim(*(flags + ["--tokens", TOKENS, "--ttft-ms", 10, "--time-scale", ARGS.scale]))
    try:
        order = caps if rnd % 2 == 0 else caps[::-1]
        for cap in order:
            r = run_fixed(sim, cap, n)
            store.setdefault(("fixed", cap), []).append(r)
            print("  round %d %-5s cap %2d: %6.1f items/s, p50 client %6.0f ms, backend %6.0f ms"
                  "%s" % (rnd + 1, name, cap, r["items_s"], r["p50_client_ms"],
                          r["p50_backend_ms"], ", %d errors" % r["errors"] if r["errors"] else ""))
            sys.stdout.flush()
        r = run_adaptive(sim, n)
        store.setdefault("adaptive", []).append(r)
        print("  round %d %-5s adaptive: %6.1f items/s (cold %.1f), p50 client %6.0f ms, backend "
              "%6.0f ms, cap %d (last 2 s %s), settled %.1f s / %d requests" % (
                  rnd + 1, name, r["items_s"], r["cold_items_s"], r["p50_client_ms"],
                  r["p50_backend_ms"], r["final_cap"], r["cap_range_end"], r["settle_s"],
                  r["settle_req"]))
        print("      last change: %s" % r["reason"])
        sys.stdout.flush()
    finally:
        sim.stop()


def summarize(name, store):
    flags, caps, n, nq, knee = CURVES[name]
    med = {cap: {k: bp.med([r[k] for r in store[("fixed", cap)]])
                 for k in ("items_s", "p50_client_ms", "p50_backend_ms")} for cap in caps}
    top = max(m["items_s"] for m in med.values())
    ties = [c for c in caps if med[c]["items_s"] >= (1 - TIE) * top]
    best = min(ties, key=lambda c: med[c]["p50_backend_ms"])
    ad = store["adaptive"]
    a = {k: bp.med([r[k] for r in ad]) for k in ("items_s", "cold_items_s", "p50_client_ms",
                                                 "p50_backend_ms", "settle_s", "settle_req",
                                                 "final_cap")}
    b = med[best]
    out = {"knee": knee, "best_cap": best, "best": b, "sweep": med, "adaptive": a,
           "x_ratio": a["items_s"] / b["items_s"], "cold_ratio": a["cold_items_s"] / b["items_s"],
           "p50_ratio": a["p50_backend_ms"] / b["p50_backend_ms"],
           "p50_client_ratio": a["p50_client_ms"] / b["p50_client_ms"],
           "final_caps": [r["final_cap"] for r in ad],
           "settle_per_round": [(round(r["settle_s"], 1), r["settle_req"]) for r in ad],
           "cap_trace": [r["trace"] for r in ad],
           "reasons": [r["reason"] for r in ad],
           "errors": sum(r["errors"] for k, rs in store.items() for r in rs)}
    bp.table("%s: sweep, batch %d, %d in flight, medians of %d round(s)" % (
        name, nq if ARGS.quick else n, IN_FLIGHT, len(ad)),
        ["cap", "items/s", "p50 client ms", "p50 backend ms (sim)"],
        [["%d%s" % (c, " best" if c == best else (" tie" if c in ties else "")),
          "%.1f" % med[c]["items_s"], "%.0f" % med[c]["p50_client_ms"],
          "%.0f" % med[c]["p50_backend_ms"]] for c in caps])
    return out


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("curves", nargs="*", help="|".join(CURVES) + " (default: all)")
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(bp.SRC, "build-bench")))
    ap.add_argument("--rounds", type=int, help="rounds (default 2, quick 1)")
    ap.add_argument("--scale", type=float, default=SCALE,
                    help="the sims' --time-scale (default %d)" % SCALE)
    ap.add_argument("--quick", action="store_true", help="1 round, half batches, 30 s warm-up")
    ap.add_argument("--json", help="write the figures to this file")
    ARGS = ap.parse_args()
    for c in ARGS.curves:
        if c not in CURVES:
            ap.error("unknown curve %r (choose from %s)" % (c, ", ".join(CURVES)))
    curves = ARGS.curves or list(CURVES)
    ARGS.rounds = ARGS.rounds or (1 if ARGS.quick else 2)
    bp.BUILD = os.path.abspath(ARGS.build)
    for exe in ("ollama-proxy", "ollama-sim"):
        if not os.access(os.path.join(bp.BUILD, exe), os.X_OK):
            sys.exit("%s not found in %s: cmake --build %s --target ollama-proxy ollama-sim" %
                     (exe, bp.BUILD, bp.BUILD))
    os.sched_setaffinity(0, {int(bp.LOAD_CORE)})
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("bench_adaptive: %s, %d CPUs, build %s, %d round(s)%s; logs in %s" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), bp.BUILD, ARGS.rounds,
        " (quick)" if ARGS.quick else "", bp.TMP))
    t0 = time.time()
    stores = {c: {} for c in curves}
    for rnd in range(ARGS.rounds):
        for c in (curves if rnd % 2 == 0 else curves[::-1]):
            bench_curve(c, rnd, stores[c])
    rows = []
    for c in curves:
        s = summarize(c, stores[c])
        bp.RESULTS[c] = s
        rows.append([c, s["knee"], s["best_cap"], "%.1f" % s["best"]["items_s"],
                     "%.1f" % s["adaptive"]["items_s"],
                     "%.0f%% %s" % (100 * s["x_ratio"], bp.goal(s["x_ratio"] >= 0.95)),
                     "%.0f%%" % (100 * s["cold_ratio"]),
                     "%.0f / %.0f" % (s["best"]["p50_backend_ms"], s["adaptive"]["p50_backend_ms"]),
                     "%.2fx %s" % (s["p50_ratio"], bp.goal(s["p50_ratio"] <= 1.1)),
                     "%.2fx" % s["p50_client_ratio"],
                     " ".join(str(x) for x in s["final_caps"]),
                     " ".join("%.0fs/%d" % x for x in s["settle_per_round"]), s["errors"]])
    bp.table("adaptive (ceiling %d) against the best fixed cap; time scale %g, medians" %
             (CEILING, ARGS.scale),
             ["curve", "knee", "best cap", "best items/s", "adaptive items/s", "x (goal 95%)",
              "cold x", "p50 backend ms best/adaptive", "p50 x (goal 1.1)", "p50 client x",
              "final cap", "settle per round", "errors"], rows)
    print("\ntotal %.0f s" % (time.time() - t0))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({c: {k: v for k, v in s.items()} for c, s in bp.RESULTS.items()},
                      f, indent=1, default=str)


if __name__ == "__main__":
    main()
