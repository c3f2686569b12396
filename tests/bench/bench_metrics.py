#!/usr/bin/env python3
"""bench_metrics.py - what GET /metrics and the access log cost.

Usage: bench_metrics.py [cpu|cpufleet|callgrind|callgrindfleet|scrape ...]
                        [--base BINARY] [--build DIR] [--extra NAME=BINARY ...]
                        [--cpu-rounds N] [--requests N] [--scrapes N]
                        [--scrape-callgrind] [--top N] [--quick] [--json FILE]

Two proxies at least: base, the proxy before metrics and the fuller access
log (commit dacc60a; build it aside: git worktree add /tmp/mb-base dacc60a,
then cmake -S /tmp/mb-base -B /tmp/mb-base/build -DCMAKE_BUILD_TYPE=Release
and build ollama-proxy), and head, BUILD/ollama-proxy (default build dir
build-mbench). --extra NAME=BINARY adds more. With no benchmark named: cpu
and scrape (~5 min; --quick ~15 s).

cpu: tests/bench/bench_proxy.py's short-JSON c50 case (wrk -t1 -c50 x 5 s,
  "stream":false, zero-delay sim, max_concurrent 64) with the access log on
  (the default: stderr, here to a file opened for appending and emptied
  between rounds) and GET /metrics scraped once a second during each run, as
  Prometheus would (base has no /metrics: it gets the sim's 404 through the
  proxy, a request like any other). Proxy CPU per request from
  /proc/PID/stat (and its user part alone, utime), ratio to base per round,
  rounds interleaved (order reversed every other round), medians. Goal:
  within 5 % of base.
cpufleet (only when named): the same against the scrape case's fleet (100
  backends on 10 sims, no failures, every model loaded everywhere before
  the proxies start), each request naming one of the 50 models at random.
callgrind, callgrindfleet (only when named; need valgrind): the same loads
  and scrapes with each proxy under callgrind, counted after a warm-up:
  user-space instructions per request (also without metrics_render: under
  valgrind a scrape falls on ~30x fewer requests), the functions whose self
  cost per request differs most from base's, and the inclusive cost per
  request of the per-request work (HOOKS).
scrape: a proxy with 100 backends (10 ollama-sim processes, each listing
  50 models, each behind 10 backend rows) after N requests (default 5,000)
  spread at random over the 50 models (2 % to a model no backend lists,
  1 % with a body that is not JSON; the sims fail 5 % with a 500), so that
  requests_total and generated_tokens_total hold rows for thousands of
  (backend, model, code). Then 200 GET /metrics one after another on one
  keep-alive connection, in batches of 20 interleaved between the proxies
  (every proxy but base): wall time per scrape p50/p99 (sent to last byte
  read), proxy CPU per scrape, the answer's bytes, lines and series per
  family, and `promtool check metrics` on it (Debian's prometheus package).
  --scrape-callgrind adds 20 scrapes of each under callgrind: instructions
  per scrape and the top functions.

Placement as in ../shared/BASELINE.md: this driver (scraper and clients),
wrk and the sims on core 0, the proxies on core 1 (taskset). Every process
is started and stopped by its PID; all traffic is on 127.0.0.1; logs,
configs, callgrind profiles and the scraped text in /tmp/bench-proxy-*/.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_proxy as bp  # noqa: E402

ARGS = None
NMODELS, NSIMS, ROWS_PER_SIM = 50, 10, 10
MODELS = ["model%02d:7b" % i for i in range(NMODELS)]
# Per-request functions whose inclusive cost callgrind reports: the access
# line (access_log before, accesslog_write now), the counters
# (metrics_request: model_label's name_key/name_display, row()), the token
# count read from the reply (tokscan_feed), and the session around them.
HOOKS = ["session_close", "access_log", "accesslog_write", "metrics_request", "name_key",
         "name_display", "row", "tokscan_feed", "metrics_observe", "ui_request_ended",
         "on_request", "session_start", "on_head", "on_body", "evbuffer_invoke_callbacks_",
         "on_conn_input", "metrics_render"]


class Proxy(bp.Proc):
    """An ollama-proxy whose stderr (the access log) goes to a file opened
    for appending, so that it can be emptied between rounds."""

    def __init__(self, name, binary, backends, extra="", wrap=()):
        conf = os.path.join(bp.TMP, "%s-%d.conf" % (name, len(bp._procs)))
        rows = ",\n".join('  { name = "%s"; url = "http://127.0.0.1:%d"; max_concurrent = %d; }'
                          % b for b in backends)
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n'
                    'queue = { max_length = 100000; };\n%s\n' % (rows, extra))
        self.name = name
        self.log = os.path.join(bp.TMP, "%s-%d.log" % (name, len(bp._procs)))
        self.logf = open(self.log, "ab")
        argv = ["taskset", "-c", bp.PROXY_CORE] + list(wrap) + [binary, "-c", conf]
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.p.pid
        bp._procs.append(self)
        self.port = self._wait_log(r"listening on \S*:(\d+)")

    def empty_log(self):
        os.truncate(self.log, 0)


class Scraper(threading.Thread):
    """GET /metrics on self.port once a second (0: paused), each on a new
    connection; counts the scrapes and their status codes."""

    def __init__(self):
        super().__init__(daemon=True)
        self.port, self.stop_, self.codes = 0, threading.Event(), {}

    def run(self):
        while not self.stop_.wait(1.0):
            port = self.port
            if not port:
                continue
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/metrics")
                r = c.getresponse()
                r.read()
                code = r.status
                c.close()
            except OSError as e:
                code = type(e).__name__
            self.codes[code] = self.codes.get(code, 0) + 1

    def take(self):
        codes, self.codes = self.codes, {}
        return codes


class Background(bp.Background):
    """bench_proxy's noisy-neighbour meter, with this process counted as
    ours: the scraper and the clients of scrape run in it."""

    def _ours(self):
        import resource
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return super()._ours() + ru.ru_utime + ru.ru_stime


def user_cpu(proc):
    """PROC's user time alone (utime), in seconds: what callgrind counts;
    the rest of its CPU time is the kernel's (the sockets)."""
    with open("/proc/%d/stat" % proc.pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[11]) / bp.TICK


def zero_sim(*extra):
    """A zero-delay ollama-sim on the load core (bench_proxy's overhead case)."""
    flags = ["--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "24", "--parallel", "256"]
    if not extra:
        return bp.sim(*flags)  # llama3, loaded by a first request
    return bp.Proc("ollama-sim", [os.path.join(bp.BUILD, "ollama-sim"), "--port", "0"] + flags +
                   [str(f) for f in extra], core=bp.LOAD_CORE)


# ---------------------------------------------------------------- cpu

def fleet_script():
    """A wrk script: each request names one of the 50 models at random."""
    path = os.path.join(bp.TMP, "fleet.lua")
    with open(path, "w") as f:
        f.write('local models = {%s}\nmath.randomseed(7)\nrequest = function()\n'
                '  local m = models[math.random(#models)]\n'
                '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},\n'
                '    \'{"model":"\' .. m .. \'","prompt":"Classify: the weather is nice",'
                '"stream":false}\')\nend\n' % ",".join('"%s"' % m for m in MODELS))
    return path


def wrk(port, conns, dur, script=None):
    """bench_proxy's wrk run, with another Lua script if SCRIPT."""
    if not script:
        return bp.wrk(port, conns, dur)
    saved, bp.lua_script = bp.lua_script, lambda: script
    try:
        return bp.wrk(port, conns, dur)
    finally:
        bp.lua_script = saved


def load_setup(fleet):
    """(sims, backend rows, wrk script) of the c50 case: one zero-delay sim
    and llama3, or with FLEET the scrape case's 100 backends on 10 sims (no
    failures) and the 50 models at random."""
    if not fleet:
        sims = [zero_sim()]
        return sims, [("a", sims[0].port, 64)], None
    sims = [zero_sim("--models", ",".join(MODELS), "--max-loaded", NMODELS)
            for _ in range(NSIMS)]
    preload(sims)
    backends = [("gpu%02d" % i, sims[i % NSIMS].port, 8) for i in range(NSIMS * ROWS_PER_SIM)]
    return sims, backends, fleet_script()


def preload(sims):
    """Load every model on every sim before a proxy starts, so that each
    proxy's first /api/ps poll sees all 50 loaded everywhere: the loaded
    lists that backend_pick() scans are then the same for every proxy, in
    every round (the next poll is 30 s later)."""
    for s in sims:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        for m in MODELS:
            for _ in range(20):  # the scrape case's sims fail 5 %
                st, _ = get(c, "POST", "/api/generate",
                            '{"model":"%s","prompt":"hi","stream":false}' % m)
                if st == 200:
                    break
            else:
                sys.exit("sim %d: loading %s answered %s" % (s.port, m, st))
        c.close()


def warm_up(px, fleet, script, secs):
    if fleet:
        wait_models(px.port, NMODELS, secs=120)
    wrk(px.port, 50, secs, script)  # and the sims' model loads


def bench_cpufleet(targets):
    bench_cpu(targets, fleet=True)


def bench_callgrindfleet(targets):
    bench_callgrind(targets, fleet=True)


def bench_cpu(targets, fleet=False):
    dur = 2 if ARGS.quick else 5
    sims, backends, script = load_setup(fleet)
    pxs = [(name, Proxy(name, path, backends)) for name, path in targets]
    for _, px in pxs:
        warm_up(px, fleet, script, 3 if fleet else 1)
    sc = Scraper()
    sc.start()
    res = {}
    for rnd in range(ARGS.cpu_rounds):
        order = pxs if rnd % 2 == 0 else pxs[::-1]
        for name, px in order:
            px.empty_log()
            bg = Background(sims + [p for _, p in pxs])
            u0, c0, s0 = user_cpu(px), px.cpu(), sum(x.cpu() for x in sims)
            sc.take()
            sc.port = px.port
            r = wrk(px.port, 50, dur, script)
            sc.port = 0
            n = max(r["requests"], 1)
            r["cpu_us"] = (px.cpu() - c0) / n * 1e6
            r["user_us"] = (user_cpu(px) - u0) / n * 1e6
            r["sim_us"] = (sum(x.cpu() for x in sims) - s0) / n * 1e6
            r["bg"] = bg.pct()
            r["scrapes"] = sc.take()
            res.setdefault(name, []).append(r)
            print("  round %d %-8s %6.0f req/s  %5.1f us/req (user %4.1f)  sim %5.1f  bg %3.0f%%  "
                  "scrapes %s" % (rnd + 1, name, r["rps"], r["cpu_us"], r["user_us"], r["sim_us"],
                                  r["bg"], r["scrapes"]))
            sys.stdout.flush()
    sc.stop_.set()
    base = targets[0][0]
    rows = []
    for name, _ in pxs:
        rs, b = res[name], res[base]
        ratios = [r["cpu_us"] / x["cpu_us"] for r, x in zip(rs, b)]
        m = {"cpu_us": bp.med([r["cpu_us"] for r in rs]), "cpu_ratio": bp.med(ratios),
             "user_us": bp.med([r["user_us"] for r in rs]),
             "user_ratio": bp.med([r["user_us"] / x["user_us"] for r, x in zip(rs, b)]),
             "ratio_min": min(ratios), "ratio_max": max(ratios),
             "rps": bp.med([r["rps"] for r in rs]),
             "rps_ratio": bp.med([r["rps"] / x["rps"] for r, x in zip(rs, b)]),
             "sim_us": bp.med([r["sim_us"] for r in rs]), "bg": bp.med([r["bg"] for r in rs]),
             "bg_max": max(r["bg"] for r in rs),
             "per_round": [round(r["cpu_us"], 2) for r in rs],
             "scrapes": sum(sum(r["scrapes"].values()) for r in rs)}
        bp.RESULTS["cpu%s_%s" % ("fleet" if fleet else "", name)] = m
        rows.append([name, "%.0f" % m["rps"], "%.3f" % m["rps_ratio"], "%.1f" % m["cpu_us"],
                     "%.3f" % m["cpu_ratio"], "%.3f-%.3f" % (m["ratio_min"], m["ratio_max"]),
                     "%.1f" % m["user_us"], "%.3f" % m["user_ratio"],
                     " ".join("%.1f" % x for x in m["per_round"]), "%.1f" % m["sim_us"],
                     "%.0f%% (max %.0f)" % (m["bg"], m["bg_max"]), m["scrapes"],
                     sum(r["non2xx"] + r["sockerr"] for r in rs)])
    what = ("100 backends on 10 zero-delay sims, max_concurrent 8, 50 models at random" if fleet
            else "zero-delay sim, max_concurrent 64")
    bp.table("cpu%s: short JSON, wrk -t1 -c50 x %ds, %s, access log to a file, /metrics every "
             "1 s; %d round(s), medians; ratios per round against %s"
             % ("fleet" if fleet else "", dur, what, ARGS.cpu_rounds, base),
             ["proxy", "req/s", "x rps", "CPU us/req", "x CPU", "x range", "user us/req", "x user",
              "per round",
              "sim us/req", "bg cpu", "scrapes", "errors"], rows)
    for name, _ in pxs[1:]:
        m = bp.RESULTS["cpu%s_%s" % ("fleet" if fleet else "", name)]
        print("goal: %s CPU per request within 5%% of %s: %.3fx %s" % (
            name, base, m["cpu_ratio"], bp.goal(m["cpu_ratio"] <= 1.05)))
    for _, px in pxs:
        px.stop()
    for x in sims:
        x.stop()


# ---------------------------------------------------------------- callgrind

def annotate(path):
    """(PROGRAM TOTALS, {function: self Ir}) of a callgrind output file;
    functions by name alone, so that two source trees compare."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out)
    total = int(m.group(1).replace(",", "")) if m else None
    fns = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(\S+) \[(\S+)\]", line) or \
            re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(\S+)$", line)
        if not m or "PROGRAM" in line:
            continue
        if total and int(m.group(1).replace(",", "")) > total // 2:
            continue  # main, event_base_dispatch...: the zeroed counters' callers
        fn = m.group(2).rsplit(":", 1)[-1]
        fns[fn] = fns.get(fn, 0) + int(m.group(1).replace(",", ""))
    return total, fns


def bench_callgrind(targets, fleet=False):
    dur = 3 if ARGS.quick else 8
    sims, backends, script = load_setup(fleet)
    rows, per = [], {}
    sc = Scraper()
    sc.start()
    for name, path in targets:
        out = os.path.join(bp.TMP, "callgrind%s-%s.out" % ("fleet" if fleet else "", name))
        px = Proxy("cg-" + name, path, backends,
                   wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
        warm_up(px, fleet, script, 2)  # then count from zero
        subprocess.run(["callgrind_control", "-z", str(px.pid)], capture_output=True, timeout=30)
        sc.take()
        sc.port = px.port
        r = wrk(px.port, 50, dur, script)
        sc.port = 0
        scrapes = sc.take()
        subprocess.run(["callgrind_control", "-d", str(px.pid)], capture_output=True, timeout=30)
        px.stop()
        total, fns = annotate(out + ".1")
        n = max(r["requests"], 1)
        per[name] = {"ir": total / n if total else float("nan"),
                     "fns": {f: v / n for f, v in fns.items()},
                     "incl": {f: v / n for f, v in inclusive(out + ".1").items()}}
        # Under valgrind a scrape is spread over ~30x fewer requests than
        # at full speed: also counted without metrics_render.
        per[name]["ir_noscrape"] = per[name]["ir"] - per[name]["incl"].get("metrics_render", 0)
        rows.append([name, r["requests"], "%.0f" % per[name]["ir"],
                     "%.3f" % (per[name]["ir"] / per[targets[0][0]]["ir"]),
                     "%.0f" % per[name]["ir_noscrape"],
                     "%.3f" % (per[name]["ir_noscrape"] / per[targets[0][0]]["ir_noscrape"]),
                     sum(scrapes.values()), r["non2xx"] + r["sockerr"], out + ".1"])
        bp.RESULTS["callgrind%s_%s" % ("fleet" if fleet else "", name)] = {
            "ir": per[name]["ir"], "ir_noscrape": per[name]["ir_noscrape"],
            "hooks": {f: round(per[name]["incl"].get(f, 0)) for f in HOOKS}}
    sc.stop_.set()
    for x in sims:
        x.stop()
    base = targets[0][0]
    bp.table("callgrind%s: instructions per request, wrk -t1 -c50 x %ds under valgrind, %s, "
             "/metrics every 1 s, counted after a warm-up"
             % ("fleet" if fleet else "", dur,
                "100 backends, 50 models at random" if fleet else "one sim"),
             ["proxy", "requests", "Ir/request", "x %s" % base, "without metrics_render",
              "x %s" % base, "scrapes", "errors", "profile"],
             rows)
    for name, _ in targets[1:]:
        a, b = per[base]["fns"], per[name]["fns"]
        diff = sorted(((b.get(f, 0) - a.get(f, 0), f) for f in set(a) | set(b)),
                      key=lambda x: -abs(x[0]))[:ARGS.top]
        bp.RESULTS["callgrind%s_diff_%s" % ("fleet" if fleet else "", name)] = {
            f: round(d, 1) for d, f in diff}
        bp.table("callgrind: self instructions per request, %s against %s: the %d largest "
                 "differences" % (name, base, len(diff)),
                 ["function", base, name, "difference"],
                 [[f, "%.0f" % a.get(f, 0), "%.0f" % b.get(f, 0), "%+.0f" % d] for d, f in diff])
    hooks = [f for f in HOOKS if any(f in per[t]["incl"] for t, _ in targets)]
    bp.table("callgrind: inclusive instructions per request of the per-request work (what "
             "metrics and the access log added, and what they replaced)",
             ["function"] + [t for t, _ in targets],
             [[f] + ["%.0f" % per[t]["incl"].get(f, 0) for t, _ in targets] for f in hooks])


# ---------------------------------------------------------------- scrape

def fleet():
    """10 zero-delay sims listing the 50 models, all loadable at once, 5 %
    of inference answered 500; the proxy's 100 backend rows on them."""
    sims = [zero_sim("--models", ",".join(MODELS), "--max-loaded", NMODELS, "--fail-rate",
                     "0.05", "--seed", i + 1) for i in range(NSIMS)]
    preload(sims)
    rows = [("gpu%02d" % i, sims[i % NSIMS].port, 8) for i in range(NSIMS * ROWS_PER_SIM)]
    return sims, rows


def get(conn, method, path, body=None):
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"}
                 if body is not None else {})
    r = conn.getresponse()
    return r.status, r.read()


def wait_models(port, want, secs=30):
    """Until the proxy's /api/tags lists WANT models (discovery done)."""
    deadline = time.time() + secs
    n = -1
    while time.time() < deadline:
        try:
            n = len(bp.http_json(port, "GET", "/api/tags").get("models", []))
            if n >= want:
                return n
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the proxy lists %d models, not %d, after %d s" % (n, want, secs))


def traffic(port, n, threads=8, seed=9):
    """N requests from THREADS keep-alive connections; returns {code: count}."""
    codes, lock = {}, threading.Lock()
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        x = rng.random()
        if x < 0.02:
            bodies.append('{"model":"nosuch%d","prompt":"hi","stream":false}' % (i % 7))
        elif x < 0.03:
            bodies.append('{"model":')
        else:
            bodies.append('{"model":"%s","prompt":"hi","stream":false}' % rng.choice(MODELS))

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for b in bodies[k::threads]:
            try:
                st, _ = get(c, "POST", "/api/generate", b)
            except (OSError, http.client.HTTPException) as e:
                st = type(e).__name__
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                codes[st] = codes.get(st, 0) + 1
        c.close()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes


def families(text):
    """Series per metric family (histograms: per base name)."""
    fam = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            name = re.sub(r"_(bucket|sum|count)$", "", name) if "_seconds" in name else name
            fam[name] = fam.get(name, 0) + 1
    return fam


def promtool(path):
    exe = shutil.which("promtool")
    if not exe:
        return None, "promtool not found (apt-get install prometheus)"
    with open(path, "rb") as f:
        p = subprocess.run([exe, "check", "metrics"], stdin=f, capture_output=True, text=True,
                           timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


def bench_scrape(targets):
    """Every proxy with /metrics gets the same traffic first; then the
    scrapes go in batches of 20, the proxies interleaved (order reversed
    every other batch), so that the machine's noise falls on all alike."""
    n_req = ARGS.requests or (1000 if ARGS.quick else 5000)
    n_scr = ARGS.scrapes or (60 if ARGS.quick else 200)
    batch = 20
    sims, rows = fleet()
    st = {}
    for name, path in targets[1:]:  # base has no /metrics
        px = Proxy("scrape-" + name, path, rows)
        wait_models(px.port, NMODELS)
        t0 = time.time()
        codes = traffic(px.port, n_req)
        st[name] = {"px": px, "codes": codes, "traffic_s": time.time() - t0, "walls": [],
                    "cpu": 0.0, "body": None}
    time.sleep(0.3)  # the last responses' ends
    for name, x in st.items():
        x["conn"] = http.client.HTTPConnection("127.0.0.1", x["px"].port, timeout=30)
        get(x["conn"], "GET", "/metrics")  # warm: the connection and the proxy's buffers
    names = list(st)
    bg = Background(sims + [x["px"] for x in st.values()])
    for k in range((n_scr + batch - 1) // batch):
        for name in (names if k % 2 == 0 else names[::-1]):
            x = st[name]
            c0 = x["px"].cpu()
            for _ in range(min(batch, n_scr - k * batch)):
                t = time.perf_counter()
                code, body = get(x["conn"], "GET", "/metrics")
                x["walls"].append((time.perf_counter() - t) * 1000)
                if code != 200:
                    sys.exit("%s: GET /metrics answered %s" % (name, code))
                x["body"] = body
            x["cpu"] += x["px"].cpu() - c0
    bgp = bg.pct()
    for name in names:
        x = st[name]
        x["conn"].close()
        x["px"].stop()
        walls, body = sorted(x["walls"]), x["body"]
        text = body.decode()
        out = os.path.join(bp.TMP, "metrics-%s.txt" % name)
        with open(out, "w") as f:
            f.write(text)
        rc, msg = promtool(out)
        fam = families(text)
        m = {"requests": n_req, "codes": x["codes"], "traffic_s": x["traffic_s"],
             "scrapes": len(walls), "p50_ms": statistics.median(walls),
             "p99_ms": walls[int(0.99 * (len(walls) - 1))], "max_ms": walls[-1],
             "cpu_ms": x["cpu"] / len(walls) * 1000, "bytes": len(body),
             "lines": text.count("\n"), "series": sum(fam.values()), "families": fam,
             "promtool_rc": rc, "promtool": msg, "bg": bgp, "file": out}
        bp.RESULTS["scrape_%s" % name] = m
        print("\n== scrape: %s, %d backends (%d sims x %d rows), %d models, after %d requests "
              "in %.1f s (%s)" % (name, len(rows), NSIMS, ROWS_PER_SIM, NMODELS, n_req,
                                  x["traffic_s"], ", ".join(
                                      "%s: %d" % kv for kv in sorted(x["codes"].items(),
                                                                     key=str))))
        print("%d scrapes on one keep-alive connection (batches of %d, proxies interleaved): "
              "wall p50 %.2f ms, p99 %.2f ms, max %.2f; proxy CPU %.2f ms per scrape; bg %.0f%%"
              % (len(walls), batch, m["p50_ms"], m["p99_ms"], m["max_ms"], m["cpu_ms"], bgp))
        print("answer: %d bytes, %d lines, %d series: %s" % (
            m["bytes"], m["lines"], m["series"],
            ", ".join("%s %d" % (k.replace("ollama_proxy_", ""), v) for k, v in fam.items())))
        print("promtool check metrics: %s%s (text in %s)" % (
            "rc %s" % rc if rc is not None else "not run",
            (": " + msg[:500]) if msg else ", clean", out))
        sys.stdout.flush()
    if ARGS.scrape_callgrind:
        for name, path in targets[1:]:
            scrape_callgrind(name, path, rows, n_req)
    for s in sims:
        s.stop()


def inclusive(path):
    """{function: inclusive Ir} of a callgrind output file."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    fns = {}
    for m in re.finditer(r"^\s*([\d,]+) \([\s\d.]+%\)\s+\S*?:?([A-Za-z_]\w*) \[", out, re.M):
        fns.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return fns


def scrape_callgrind(name, path, rows, n_req, n_scr=20):
    """The scrape case's proxy under callgrind: instructions per scrape and
    where they go (the proxy's own polls of the backends count too)."""
    out = os.path.join(bp.TMP, "callgrind-scrape-%s.out" % name)
    px = Proxy("cgs-" + name, path, rows,
               wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
    wait_models(px.port, NMODELS, secs=120)
    traffic(px.port, n_req)
    time.sleep(1)
    c = http.client.HTTPConnection("127.0.0.1", px.port, timeout=60)
    get(c, "GET", "/metrics")
    subprocess.run(["callgrind_control", "-z", str(px.pid)], capture_output=True, timeout=30)
    for _ in range(n_scr):
        get(c, "GET", "/metrics")
    subprocess.run(["callgrind_control", "-d", str(px.pid)], capture_output=True, timeout=30)
    c.close()
    px.stop()
    total, fns = annotate(out + ".1")
    render = inclusive(out + ".1").get("metrics_render")
    m = {"ir_per_scrape": total / n_scr, "render_per_scrape": (render or 0) / n_scr,
         "top": {f: round(v / n_scr)
                 for f, v in sorted(fns.items(), key=lambda x: -x[1])[:ARGS.top]}}
    bp.RESULTS["scrape_callgrind_%s" % name] = m
    bp.table("scrape under callgrind, %s: %d scrapes, %.0f Ir per scrape (metrics_render %.0f); "
             "self Ir per scrape, the top %d" % (name, n_scr, m["ir_per_scrape"],
                                                 m["render_per_scrape"], ARGS.top),
             ["function", "Ir/scrape", "share"],
             [[f, v, "%.1f%%" % (100.0 * v / m["ir_per_scrape"])] for f, v in m["top"].items()])


BENCHES = {"cpu": bench_cpu, "cpufleet": bench_cpufleet, "callgrind": bench_callgrind,
           "callgrindfleet": bench_callgrindfleet, "scrape": bench_scrape}


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", nargs="*", help="|".join(BENCHES) + " (default: cpu scrape)")
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(bp.SRC, "build-mbench")))
    ap.add_argument("--base", default=os.environ.get("OP_BASE_PROXY",
                                                     "/tmp/mb-base/build/ollama-proxy"),
                    help="the proxy before metrics (commit dacc60a)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=BINARY",
                    help="another proxy to measure beside them")
    ap.add_argument("--cpu-rounds", type=int, help="rounds of cpu (default 7, quick 2)")
    ap.add_argument("--requests", type=int, help="requests before the scrapes (default 5000)")
    ap.add_argument("--scrapes", type=int, help="scrapes timed (default 200)")
    ap.add_argument("--scrape-callgrind", action="store_true",
                    help="scrape: also count the scrapes' instructions under callgrind")
    ap.add_argument("--top", type=int, default=15, help="functions listed by callgrind")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the figures to this file")
    ARGS = ap.parse_args()
    for b in ARGS.bench:
        if b not in BENCHES:
            ap.error("unknown benchmark %r (choose from %s)" % (b, ", ".join(BENCHES)))
    ARGS.cpu_rounds = ARGS.cpu_rounds or (2 if ARGS.quick else 7)
    bp.BUILD = os.path.abspath(ARGS.build)
    targets = [("base", os.path.abspath(ARGS.base)),
               ("head", os.path.join(bp.BUILD, "ollama-proxy"))]
    for x in ARGS.extra:
        name, _, path = x.partition("=")
        if not name or not path:
            ap.error("--extra wants NAME=BINARY")
        targets.append((name, os.path.abspath(path)))
    for name, path in targets + [("sim", os.path.join(bp.BUILD, "ollama-sim"))]:
        if not os.access(path, os.X_OK):
            sys.exit("%s: %s not found (see --help for how to build the base one)" % (name, path))
    os.sched_setaffinity(0, {int(bp.LOAD_CORE)})  # the scraper and clients beside the sims
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("bench_metrics: %s, %d CPUs, %s; logs in %s" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(),
        ", ".join("%s=%s" % t for t in targets), bp.TMP))
    t0 = time.time()
    for name in ARGS.bench or ["cpu", "scrape"]:
        t1 = time.time()
        BENCHES[name](targets)
        print("(%s: %.0f s)" % (name, time.time() - t1))
    print("\ntotal %.0f s" % (time.time() - t0))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(bp.RESULTS, f, indent=1, default=str)


if __name__ == "__main__":
    main()
