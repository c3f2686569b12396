#!/usr/bin/env python3
"""bench_affinity.py - conversations stay warm: session and prefix affinity
against least-loaded routing and HAProxy's consistent hash, on an agent
trace (issue 22, CONTRACT.md "Conversations stay warm").

Usage: bench_affinity.py [agents|ctx|embed ...] [--build DIR] [--fleets 2,4]
                         [--rounds N] [--time-scale F] [--quick] [--alone]
                         [--arms A,B] [--trace steady|grow] [--runner-slots N]
                         [--batch-priority low|normal] [--cache-ram TOKENS]
                         [--baseline BINARY] [--json FILE]

agents: an agent trace on 2 and 4 ollama-sim backends with a published
  prompt curve (--gpu gb10-gpt-oss-20b: llama.cpp's DGX Spark runs, 1312
  prompt tokens/s for one prompt, 4000 for several), 8 slots each (a slot
  per conversation, as llama-server needs to keep one conversation's cache
  in each), the proxy capped at 8 per backend. 8 sessions per backend (16,
  32), each 10-20 turns: a shared system prompt (3,000 tokens), then per
  turn a tool result or user message of 2,000-3,500 tokens and a short
  answer (32 tokens), so contexts grow to 30-60k tokens; 1-4 s of tool time
  between turns; starts spread over the first 10 s. Half the sessions send
  x-claude-code-session-id (Claude Code's header), half send none. Every
  turn is streamed; its time to first token is measured at the client.
  Arms, each on fresh sims (empty caches), rounds interleaved:
    least    ollama-proxy, routing.affinity = "off" (least loaded: today)
    session  ollama-proxy, affinity "session" (the header's half is keyed)
    prefix   ollama-proxy, affinity "prefix" (the others by their start)
    hold     prefix set for agents (proxy/README.md): no bounded load
             (balance_factor = 0) and a hold of 20 s (affinity_wait_ms), about
             what a miss costs at these contexts (a cold prefill of 20-60k
             tokens at 1,300-4,000 tokens/s): a turn waits for its GPU
    haproxy  Debian's HAProxy: balance hdr(x-claude-code-session-id),
             hash-type consistent, hash-balance-factor 150, maxconn 8 per
             server (it binds at arrival and queues per server; a request
             without the header goes round robin)
  The proxy's hold (affinity_wait_ms) is scaled with the sims' time: 1 s
  (hold: 20 s). --cache-ram gives the sims llama-server's host-memory
  prompt cache (tests/sim/README.md).
  Figures, in simulated seconds: time to first token p50 and p99 (all
  turns, and turns after the first), the share of turns after the first
  whose cache held (the sim processed no more than about the turn's new
  part: its X-Sim-Prompt-Processed header), turns per second, prompt tokens the
  sims processed (against the trace's ideal: each turn's new part only;
  with the batch beside, its prompts are counted too), the proxy's
  affinity hits and misses; then the same trace with `ollama-classify -j 200` running
  beside it (through the same front; its items under another key: fair
  share): how busy the fleet was (slots in use / slots, sampled every
  100 ms), the agents' TTFT against alone, and whether any backend ever had
  a request waiting inside it (a cap exceeded).
ctx: two clients on two backends loaded with num_ctx 4096, one sending 4096
  and one 8192, 4 at a time, 60 requests after a warm-up of 4: reloads
  (the sims' count) with num_ctx = "pass", pinned (4096) and "strip"
  (and "before" with --baseline: num_ctx forwarded, least loaded).
embed: 16 embedding requests at once (bge-m3, an embedding model by
  /api/show only) beside 8 chat requests, 2 backends capped at 8: the most
  embedding requests inside one backend's runner at once (sampled from
  the sims: in a slot plus waiting), with the caps per runner and with
  model_caps raising bge-m3 to 8.
--baseline BINARY adds an arm "before" to ctx and embed: an ollama-proxy
  built from before this issue (least loaded, num_ctx as sent, caps per
  backend only), e.g. git archive 3acb13d | tar -x -C /tmp/before, then
  cmake -S /tmp/before -B /tmp/before/build and build its ollama-proxy.

Every process is started and stopped by its PID; all traffic is on
127.0.0.1; logs and configs in /tmp/bench-proxy-*/.
"""
import argparse
import asyncio
import json
import os
import random
import signal
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

ARGS = None
RUNS = 0
HEADER = "x-claude-code-session-id"
SLOTS = 8
SYSTEM = ("You are a coding agent. You read files, run commands and edit code. " * 170)[:12000]
KEYS = ('auth = { keys = ( { name = "agents"; key = "ka"; }, { name = "batch"; key = "kb"; %s},\n'
        '                 { name = "bench"; key = "kadm"; admin = true; } ); };')
ADMIN = {"Authorization": "Bearer kadm"}


def status(port):
    """GET /proxy/status with the admin key (refused without one once keys exist)."""
    req = urllib.request.Request("http://127.0.0.1:%d/proxy/status" % port, headers=ADMIN)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def affinity_counts(port):
    """The proxy's ollama_proxy_affinity_total, summed: {"hit": n, "miss": n}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
        text = r.read().decode()
    out = {"hit": 0, "miss": 0}
    for line in text.splitlines():
        if line.startswith("ollama_proxy_affinity_total{"):
            for k in out:
                if 'result="%s"' % k in line:
                    out[k] += int(float(line.rsplit(" ", 1)[1]))
    return out


def ideal_tokens(sessions_):
    """Prompt tokens a perfect cache processes: each turn's new part only
    (the sim counts about characters / 4 + 8 a prompt)."""
    return int(sum(len(SYSTEM) / 4 + 8 + sum(len(text) / 4 + 40 for text, _ in turns)
                   for _, _, turns in sessions_))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))] if xs else float("nan")


# ---------------------------------------------------------------- fronts

def sims(n, *flags):
    out = []
    for _ in range(n):
        out.append(bp.Proc("ollama-sim", [os.path.join(bp.BUILD, "ollama-sim"), "--port", "0",
                                          "--models", "llama3,bge-m3=embed"] +
                           [str(f) for f in flags], core=bp.LOAD_CORE))
    return out


def gpu_sims(n):
    return sims(n, "--gpu", "gb10-gpt-oss-20b", "--parallel", ARGS.runner_slots or SLOTS,
                "--tokens", 32, "--cache-ram", ARGS.cache_ram,
                "--time-scale", ARGS.time_scale, "--keep-alive", -1)


def proxy(backends, routing, extra="", binary=None):
    """An ollama-proxy in front of BACKENDS [(name, port, cap[, row extra])];
    ROUTING None: no routing group (a proxy from before it)."""
    conf = os.path.join(bp.TMP, "affinity-%d.conf" % len(bp._procs))
    rows = ",\n".join('  { name = "%s"; url = "http://127.0.0.1:%d"; max_concurrent = %d; %s}' %
                      (b[0], b[1], b[2], b[3] if len(b) > 3 else "") for b in backends)
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n'
                'queue = { max_length = 100000; };\nlogging = { access = "off"; };\n%s\n%s\n' %
                (rows, "routing = { %s };" % routing if routing is not None else "", extra))
    p = bp.Proc("ollama-proxy", [binary or os.path.join(bp.BUILD, "ollama-proxy"), "-c", conf],
                core=bp.PROXY_CORE)
    deadline = time.time() + 10  # every backend's models known, as late binding wants
    while time.time() < deadline:
        st = status(p.port)
        if all(b["models"] for b in st["backends"]):
            break
        time.sleep(0.05)
    return p


def haproxy_hash(backends):
    port = bp.free_port()
    servers = "\n".join("    server %s 127.0.0.1:%d maxconn %d" % b for b in backends)
    cfg = """global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout queue 600s
frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    balance hdr(%s)
    hash-type consistent
    hash-balance-factor 150
%s
""" % (port, HEADER, servers)
    path = os.path.join(bp.TMP, "haproxy-affinity-%d.cfg" % len(bp._procs))
    with open(path, "w") as f:
        f.write(cfg)
    return bp.Proc("haproxy", ["haproxy", "-db", "-f", path], core=bp.PROXY_CORE, wait_re=None,
                   port=port)


def front(arm, sim_procs):
    backends = [("gpu%d" % i, s.port, SLOTS) for i, s in enumerate(sim_procs)]
    if arm == "haproxy":
        return haproxy_hash(backends)
    routing = {"least": 'affinity = "off";', "session": 'affinity = "session";',
               "prefix": 'affinity = "prefix";',
               "hold": 'affinity = "prefix"; balance_factor = 0;'}[arm]
    # The sims run time_scale times faster than real time: the hold, in real
    # ms, is scaled with them (the default 1 s would hold a turn 10 s of the
    # sims' time at --time-scale 10).
    hold_s = 20 if arm == "hold" else 1
    routing += " affinity_wait_ms = %d;" % max(1, round(hold_s * 1000 / ARGS.time_scale))
    return proxy(backends, routing, KEYS % (
        'priority = "%s"; ' % ARGS.batch_priority if ARGS.batch_priority else ""))


# ---------------------------------------------------------------- the agent trace

def trace(nsessions, seed):
    """The sessions: [(key or None, start_s, [(user text, think_s)])]."""
    rnd = random.Random(seed)
    out = []
    for s in range(nsessions):
        turns = []
        for t in range(rnd.randint(10, 20)):
            if ARGS.trace == "steady":
                n = rnd.randint(8000, 14000)  # 2,000-3,500 tokens
            elif t == 0:  # what the agent reads first: 18-24k tokens
                n = rnd.randint(72000, 96000)
            else:  # then a few hundred to 2,500 tokens a turn
                n = rnd.randint(1200, 10000)
            line = "session %d turn %d: tool output line. " % (s, t)
            turns.append(((line * (n // len(line) + 1))[:n], rnd.uniform(1, 4)))
        out.append(("sess-%d-%d" % (seed, s) if s % 2 == 0 else None, rnd.uniform(0, 10), turns))
    return out


async def session(port, key, start, turns, ts, out):
    await asyncio.sleep(start / ts)
    msgs = [{"role": "system", "content": SYSTEM}]
    hdr = {"Authorization": "Bearer ka"}
    if key:
        hdr[HEADER] = key
    for i, (text, think) in enumerate(turns):
        msgs.append({"role": "user", "content": text})
        r = await aclient.request(port, "POST", "/api/chat", headers=hdr, timeout=600,
                                  body={"model": "llama3", "messages": msgs, "stream": True})
        if r.status != 200 or r.error or r.t_first is None:
            out.append(("error", r.status, r.error))
            return
        lines = r.lines()
        answer = "".join(l.get("message", {}).get("content", "") for l in lines)
        # a cache hit: the sim processed about this turn's new part only
        # (its reply says how much; a miss processes the context's rest)
        done = int(r.headers.get("x-sim-prompt-processed", -1))
        out.append(("turn", i, (r.t_first - r.t_start) * ts, r.t_end,
                    0 <= done <= 1.5 * (len(text) / 4 + 40) + 100))
        msgs.append({"role": "assistant", "content": answer})
        await asyncio.sleep(think / ts)


async def sample_sims(sim_procs, stop, samples):
    """Every 100 ms: slots in use and requests waiting inside each sim."""
    while not stop.is_set():
        row = []
        for s in sim_procs:
            r = await aclient.request(s.port, "GET", "/_sim/stats", timeout=10)
            if r.status == 200:
                m = r.json()["models"]["llama3:latest"]
                row.append((m["in_flight"], m["queued"]))
        samples.append(row)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def drive(port, sessions_, sim_procs):
    out, samples, stop = [], [], asyncio.Event()
    sampler = asyncio.ensure_future(sample_sims(sim_procs, stop, samples))
    t0 = time.monotonic()
    await asyncio.gather(*(session(port, k, st, tu, ARGS.time_scale, out)
                           for k, st, tu in sessions_))
    wall = time.monotonic() - t0
    stop.set()
    await sampler
    return out, wall, samples


def classify_start(port, arm, n_items=150000):
    items = os.path.join(bp.TMP, "items.txt")
    if not os.path.exists(items):
        rnd = random.Random(5)
        with open(items, "w") as f:
            for i in range(n_items):
                f.write("ticket %d: %s\n" % (i, " ".join(rnd.choice(
                    ["refund", "login", "crash", "slow", "invoice", "password", "error", "please"])
                    for _ in range(rnd.randint(20, 60)))))
    global RUNS
    RUNS += 1  # a results file of its own: one left by an earlier arm would be resumed
    res = os.path.join(bp.TMP, "results-%d.jsonl" % RUNS)
    argv = [os.path.join(bp.BUILD, "ollama-classify"), "-i", items, "-o", res, "-m", "llama3",
            "-l", "billing,account,bug,other", "-j", "200", "--url", "http://127.0.0.1:%d" % port,
            "--api-key", "" if arm == "haproxy" else "kb"]
    log = open(os.path.join(bp.TMP, "classify-%d.log" % RUNS), "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    return p, log, res


def classify_stop(c):
    p, log, res = c
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    log.close()
    with open(res) as f:
        return sum(1 for _ in f)


def run_arm(arm, nb, seed, beside):
    sp = gpu_sims(nb)
    fr = front(arm, sp)
    batch = None
    if beside:
        batch = classify_start(fr.port, arm)
        time.sleep(3)  # the batch fills the fleet first
    sessions_ = trace(SLOTS * nb, seed)
    out, wall, samples = asyncio.run(drive(fr.port, sessions_, sp))
    batch_done = batch is not None and batch[0].poll() is not None  # ran out: not beside to the end
    labelled = classify_stop(batch) if batch else 0
    stats = [bp.http_json(s.port, "GET", "/_sim/stats") for s in sp]
    aff = affinity_counts(fr.port) if arm != "haproxy" else {"hit": 0, "miss": 0}
    fr.stop()
    for s in sp:
        s.stop()
    errors = [o for o in out if o[0] == "error"]
    turns = [o for o in out if o[0] == "turn"]
    ttft = [o[2] for o in turns]
    warm = [o[2] for o in turns if o[1] > 0]
    cached = [o[4] for o in turns if o[1] > 0]
    busy = [sum(x[0] for x in row) / (SLOTS * nb) for row in samples if len(row) == nb]
    return {"arm": arm, "backends": nb, "beside": beside, "errors": len(errors),
            "turns": len(turns), "wall_s": wall,
            "turns_per_s": len(turns) / (wall * ARGS.time_scale),
            "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "warm_p50": pct(warm, 50), "warm_p99": pct(warm, 99),
            "cached": sum(cached) / len(cached) if cached else float("nan"),
            "processed": sum(s["prompt_processed"] for s in stats),
            "reused": sum(s["prompt_reused"] for s in stats),
            "busy": statistics.mean(busy) if busy else float("nan"),
            "max_waiting_inside": max((max(x[1] for x in row) for row in samples if row),
                                      default=0),
            "ideal": ideal_tokens(sessions_), "affinity_hits": aff["hit"],
            "affinity_misses": aff["miss"], "labelled": labelled, "batch_ran_out": batch_done}


def bench_agents(store):
    arms = ARGS.arms.split(",")
    for nb in ARGS.fleets:
        for beside in (False,) if ARGS.alone else (False, True):
            for rnd in range(ARGS.rounds):
                order = arms if rnd % 2 == 0 else arms[::-1]
                for arm in order:
                    r = run_arm(arm, nb, 100 + rnd, beside)
                    r["round"] = rnd
                    store.setdefault("agents", []).append(r)
                    print("  %-8s %d backends %-7s round %d: TTFT p50 %6.2f s p99 %6.2f s, warm "
                          "p50 %6.2f, %.0f%% cached, %.3f turns/s, %d tokens processed (%.1fx "
                          "ideal), busy %.0f%%, waiting inside %d, affinity hit/miss %d/%d, "
                          "labelled %d%s, errors %d" %
                          (arm, nb, "+batch" if beside else "alone", rnd, r["ttft_p50"],
                           r["ttft_p99"], r["warm_p50"], 100 * r["cached"], r["turns_per_s"],
                           r["processed"],
                           r["processed"] / r["ideal"], 100 * r["busy"], r["max_waiting_inside"],
                           r["affinity_hits"], r["affinity_misses"], r["labelled"],
                           " (batch ran out)" if r["batch_ran_out"] else "", r["errors"]),
                          flush=True)


# ---------------------------------------------------------------- num_ctx

async def gen_ctx(port, num_ctx, i):
    body = {"model": "llama3", "prompt": "request %d" % i, "stream": False,
            "options": {"num_ctx": num_ctx}}
    r = await aclient.request(port, "POST", "/api/generate", body=body, timeout=120)
    return r.status


async def mixed(port, n, conc=4):
    sem = asyncio.Semaphore(conc)

    async def one(i):
        async with sem:
            return await gen_ctx(port, 4096 if i % 2 else 8192, i)
    return await asyncio.gather(*(one(i) for i in range(n)))


def bench_ctx(store):
    modes = [("pass", 'num_ctx = "pass";', None), ("pinned 4096", "num_ctx = 4096;", None),
             ("strip", 'num_ctx = "strip";', None)]
    if ARGS.baseline:  # before this issue: least loaded, num_ctx forwarded as sent
        modes.insert(0, ("before", None, ARGS.baseline))
    for name, routing, binary in modes:
        sp = sims(2, "--parallel", 2, "--ttft-ms", 30, "--tokens", 8, "--tokens-per-s", 100,
                  "--load-ms", 300)
        for s in sp:
            bp.http_json(s.port, "POST", "/api/generate",
                         {"model": "llama3", "stream": False, "options": {"num_ctx": 4096}})
        p = proxy([("a", sp[0].port, 2), ("b", sp[1].port, 2)], routing, binary=binary)
        time.sleep(0.3)  # /api/ps read: the runners' num_ctx known
        asyncio.run(mixed(p.port, 4))  # warm-up
        before = [bp.http_json(s.port, "GET", "/_sim/stats")["reloads"] for s in sp]
        codes = asyncio.run(mixed(p.port, 60))
        after = [bp.http_json(s.port, "GET", "/_sim/stats")["reloads"] for s in sp]
        p.stop()
        for s in sp:
            s.stop()
        r = {"mode": name, "reloads": [a - b for a, b in zip(after, before)],
             "warmup_reloads": before, "errors": sum(c != 200 for c in codes)}
        store.setdefault("ctx", []).append(r)
        print("  num_ctx %-13s reloads after warm-up %r (in the warm-up %r), errors %d" %
              (name, r["reloads"], before, r["errors"]), flush=True)


# ---------------------------------------------------------------- embeddings

async def embed_burst(port, sim_procs):
    peak, stop = [0] * len(sim_procs), asyncio.Event()

    async def sample():
        while not stop.is_set():
            for i, s in enumerate(sim_procs):
                r = await aclient.request(s.port, "GET", "/_sim/stats", timeout=10)
                m = r.json()["models"]["bge-m3:latest"]
                peak[i] = max(peak[i], m["in_flight"] + m["queued"])
            await asyncio.sleep(0.005)
    t = asyncio.ensure_future(sample())
    reqs = [aclient.request(port, "POST", "/api/embed", body={"model": "bge-m3",
                                                               "input": "text %d" % i})
            for i in range(16)]
    reqs += [aclient.request(port, "POST", "/api/generate",
                             body={"model": "llama3", "prompt": "p%d" % i, "stream": False})
             for i in range(8)]
    res = await asyncio.gather(*reqs)
    stop.set()
    await t
    return peak, sum(r.status != 200 for r in res)


def bench_embed(store):
    modes = [("caps per runner", "", 'affinity = "off";', None),
             ("model_caps 8", 'model_caps = ( { model = "bge-m3"; max_concurrent = 8; } );',
              'affinity = "off";', None)]
    if ARGS.baseline:
        modes.append(("before", "", None, ARGS.baseline))
    for name, row, routing, binary in modes:
        sp = sims(2, "--parallel", 8, "--ttft-ms", 400, "--tokens", 4, "--tokens-per-s", 40)
        p = proxy([("a", sp[0].port, 8, row), ("b", sp[1].port, 8, row)], routing, binary=binary)
        time.sleep(0.5)  # /api/show answered
        peak, errors = asyncio.run(embed_burst(p.port, sp))
        p.stop()
        for s in sp:
            s.stop()
        store.setdefault("embed", []).append({"mode": name, "peak": peak, "errors": errors})
        print("  embeddings, %-18s most inside a runner at once: %r, errors %d" %
              (name, peak, errors), flush=True)


# ---------------------------------------------------------------- report

def summary(store):
    rows = store.get("agents", [])
    if not rows:
        return
    print("\nmedians over rounds (simulated seconds); ratios against least-loaded of the same run")
    print("| backends | beside | arm | TTFT p50 | p99 | after turn 1 p50 | p99 | cached | "
          "turns/s | prompt tokens processed | fleet busy | p50 vs least | p50 vs alone |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    med = {}
    for r in rows:
        med.setdefault((r["backends"], r["beside"], r["arm"]), []).append(r)
    order = ["least", "session", "prefix", "hold", "haproxy"]
    for (nb, beside, arm), rs in sorted(med.items(),
                                        key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))):
        m = {k: statistics.median(r[k] for r in rs) for k in
             ("ttft_p50", "ttft_p99", "warm_p50", "warm_p99", "cached", "turns_per_s", "processed",
              "busy")}
        least = statistics.median(r["ttft_p50"] for r in med[(nb, beside, "least")]) \
            if (nb, beside, "least") in med else float("nan")
        alone = med.get((nb, False, arm))
        vs_alone = m["ttft_p50"] / statistics.median(r["ttft_p50"] for r in alone) if beside and \
            alone else float("nan")
        print("| %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.3f | %d | %.0f%% | %.1fx "
              "| %s |" %
              (nb, "batch" if beside else "-", arm, m["ttft_p50"], m["ttft_p99"], m["warm_p50"],
               m["warm_p99"], 100 * m["cached"], m["turns_per_s"], m["processed"], 100 * m["busy"],
               least / m["ttft_p50"], "%.2fx" % vs_alone if beside else "-"))


def main():
    global ARGS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # atexit stops our processes
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", nargs="*", help="agents|ctx|embed (default: all)")
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(HERE, "..", "..", "build-bench")))
    ap.add_argument("--fleets", default="2,4", help="backends per run (default 2,4)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--time-scale", type=float, default=10)
    ap.add_argument("--quick", action="store_true", help="2 backends, 1 round")
    ap.add_argument("--alone", action="store_true",
                    help="agents: the trace alone, without the batch beside it")
    ap.add_argument("--runner-slots", type=int, default=0,
                    help="agents: the sims' slots (--parallel), default the cap (8)")
    ap.add_argument("--cache-ram", type=int, default=0,
                    help="agents: the sims' host-memory prompt cache in tokens, as "
                         "llama-server's --cache-ram (8 GiB there: 349525 tokens of "
                         "gpt-oss 20B's 24 KiB each; default 0: slots only)")
    ap.add_argument("--trace", choices=("steady", "grow"), default="steady",
                    help="agents: steady (2,000-3,500 tokens a turn) or grow (a first turn "
                         "of 18-24k tokens, then 300-2,500 a turn)")
    ap.add_argument("--batch-priority", choices=("low", "normal"),
                    help="agents: the batch key's priority (default: none set, normal)")
    ap.add_argument("--arms", default="least,session,prefix,haproxy", help="agents: the arms")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--baseline", help="an ollama-proxy from before this issue (ctx, embed)")
    ARGS = ap.parse_args()
    for a in ARGS.arms.split(","):
        if a not in ("least", "session", "prefix", "hold", "haproxy"):
            ap.error("unknown arm %r (least, session, prefix, hold, haproxy)" % a)
    ARGS.fleets = [2] if ARGS.quick else [int(x) for x in ARGS.fleets.split(",")]
    if ARGS.quick:
        ARGS.rounds = 1
    bp.BUILD = os.path.abspath(ARGS.build)
    bp.ARGS = ARGS
    store = {"time_scale": ARGS.time_scale}
    for b in ARGS.bench or ["agents", "ctx", "embed"]:
        print("== %s" % b, flush=True)
        {"agents": bench_agents, "ctx": bench_ctx, "embed": bench_embed}[b](store)
    summary(store)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(store, f, indent=1)


if __name__ == "__main__":
    main()
