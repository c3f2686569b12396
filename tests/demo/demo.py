#!/usr/bin/env python3
"""demo.py - the README's demo, driven by tests/demo.sh once the programs are
built: the job of 1,525 items on a box with two simulated GPUs, in seven rows
that separate what the GPU's batching gives from what the proxy gives.
Standard library only.

  row  client              route             Ollama parallel per GPU (proxy cap)
   1   -j 5                straight to gpu0  1, Ollama's default: the job today
   2   -j 200              straight to gpu0  1
   3   -j 200              straight to gpu0  16
   4   -j 5                via the proxy     16 (caps 16)
   5   -j 200              via the proxy     16 (caps 16)
   6   -j 200              via the proxy     16 (adaptive, ceiling 64: not told 16)
   7   -j 5 beside -j 200  via the proxy     16 (adaptive; two clients by their keys)

Then a second scene, "agents on the fleet" (agents.py): coding agents on the
same two GPUs, each turn sending its whole conversation, with the proxy's
affinity off and on; a chart of time to first token per turn.

Rows 1-2 run against gpu0 started with --parallel 1; then both sims are
started again with --parallel 16 (new ports) for rows 3-7. Row 6 is the job
run twice on a freshly started adaptive proxy: 6a is the first job after the
start (it pays for the climb from a cap of 1), 6 the same job again, with the
caps the proxy found. Row 7 runs the -j 200 batch (key batch) and, once it
holds every slot with more waiting, the -j 5 client (key legacy) on the same
proxy; its rows are measured while both ran.

The simulated GPU: both curves of the ollama-sim preset PRESET (llama.cpp's
published llama-batched-bench run, tests/sim/README.md), up to 16 sequences;
the generation curve divided by GEN_DIV so that row 1 gives the job's 0.7
items/s. Why, and what it stands for: the README's demo section.

Every rate and duration printed is simulated real time (wall time x the time
scale). The sims run SCALE (DEMO_TIME_SCALE, default 10) times faster than
real time; not more, because the adaptive controller measures windows of at
least 0.5 s of wall time, which at 100x would be 50 s of simulated time.

Writes into build/demo/ (or $DEMO_DIR): each row's results, every program's
log, samples.dat (every SAMPLE_S: each sim's /_sim/stats and the proxy's
/proxy/status backends[]) and throughput.png (gnuplot: items/s per backend,
slots busy, waiting inside Ollama and the proxy's effective cap over time),
shares.dat and shares.png (row 7: each client's slots and items/s), and
summary.json. --quick runs fewer items and asserts the demo's properties
with wide margins (the ctest demo_quick). Everything it starts it stops, by
PID, also on Ctrl-C, SIGTERM and errors.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import agents
import charts

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("OP_BUILD_DIR") or os.environ.get("BUILD_DIR") or os.path.join(SRC, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(SRC, BUILD)
QUICK = "--quick" in sys.argv[1:]
OUT = os.environ.get("DEMO_DIR") or os.path.join(BUILD, "demo-quick" if QUICK else "demo")
ITEMS = os.path.join(SRC, "tests", "data", "items.jsonl")
LABELS = os.path.join(SRC, "tests", "data", "labels.txt")
MODEL = "llama3"

# The GPU: a dense 7-8B model (like the job's llama3 8B) on a published
# batching curve, with the points up to 16 sequences (no row runs more).
PRESET = "gb10-qwen2.5-coder-7b"
MAX_B = 16
# The sim answers a classification in about 5 tokens ({"label":"billing"},
# 4 characters a token): 3.8 generated after the first on average. The job's
# items take 1.43 s each on one slot, so each generated token of the sim
# stands for GEN_DIV tokens of the published curve (~40 a reply). Measured:
# row 1 at 0.70 items/s on the 2-core development machine.
GEN_DIV = 10.25
SCALE = float(os.environ.get("DEMO_TIME_SCALE", "10"))
DEFAULT_PARALLEL = 1  # Ollama's OLLAMA_NUM_PARALLEL default since v0.10
PARALLEL = 16
CEILING = 64
N_GPUS = 2
JOB_ITEMS = 1525
JOB_RATE = 0.7  # the job's items/s today

# Items per row: fewer than 1,525 where a row is slow (rates are per item,
# and the table's minutes are scaled to 1,525). Row 7: (legacy, batch).
PLAN = {1: 40, 2: 40, 3: 400, 4: 150, 5: 800, "6a": 1525, 6: 800, 7: (100, 800)}
if QUICK:
    PLAN = {1: 16, 2: 16, 3: 200, 4: 60, 5: 400, "6a": 1525, 6: 400, 7: (40, 400)}

SAMPLE_S = 0.2
# The proxy's keys (auth.keys): one per client of row 7, and an admin key
# for /proxy/status. Rows 4-6 use the legacy and batch keys too.
KEYS = [("legacy", "demo-legacy-key", False), ("batch", "demo-batch-key", False),
        ("agents", "demo-agents-key", False), ("demo", "demo-admin-key", True)]
KEY = {name: key for name, key, admin in KEYS}
ADMIN_KEY = KEY["demo"]

procs = []  # (name, Popen, logfile) of everything we started


def log(msg=""):
    print(msg, flush=True)


# ---- processes ----

def start(name, argv):
    """Start a program of ours in its own session (Ctrl-C reaches only us;
    we stop it in order), output to OUT/NAME.log."""
    path = os.path.join(OUT, name + ".log")
    f = open(path, "wb")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    procs.append((name, p, f))
    return p, path


def wait_listen(name, p, path, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path, "rb") as f:
            m = re.search(rb"listening on \S*:(\d+)", f.read())
        if m:
            return int(m.group(1))
        if p.poll() is not None:
            break
        time.sleep(0.02)
    with open(path, "rb") as f:
        tail = f.read().decode("utf-8", "replace")[-2000:]
    raise RuntimeError("%s did not start (log %s):\n%s" % (name, path, tail))


def stop(p, grace=10.0):
    """SIGTERM P, SIGKILL after GRACE seconds; forget it."""
    for i, (name, q, f) in enumerate(procs):
        if q is p:
            break
    else:
        return
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    f.close()
    del procs[i]


def stop_all():
    """Every process we started, newest first (the proxy lets its requests
    finish); SIGKILL whatever is left after 10 s."""
    for name, p, f in reversed(procs):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for name, p, f in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        f.close()
    procs.clear()


caught = [signal.SIGINT]


def on_signal(signum, frame):
    caught[0] = signum
    raise KeyboardInterrupt


def get_json(url, timeout=2.0, key=None):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


# ---- the simulated GPU ----

def preset_curves(name):
    """The generation and prompt curves of preset NAME, from `ollama-sim
    --gpu list` (the sim is the one source of the published figures)."""
    out = subprocess.run([os.path.join(BUILD, "ollama-sim"), "--gpu", "list"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
    m = re.search(r"^  %s\s+(.*)\n\s+generation (\S+)\n\s+prompts\s+(\S+)" % re.escape(name),
                  out, re.M)
    if not m:
        raise RuntimeError("ollama-sim --gpu list has no preset %s:\n%s" % (name, out))

    def parse(s):
        return [(int(b), float(t)) for b, t in (p.split(":") for p in s.split(","))]
    return m.group(1).strip(), parse(m.group(2)), parse(m.group(3))


def curve_arg(points):
    return ",".join("%d:%.3f" % (b, t) for b, t in points)


def answer_steps(label):
    """Generated tokens of the sim's answer {"label":"LABEL"} after its first
    (the sim cuts structured answers into 4-character tokens, and the first
    token comes with the end of the prompt)."""
    return math.ceil(len(json.dumps({"label": label}, separators=(",", ":"))) / 4) - 1


class Sim:
    """One ollama-sim "GPU"."""

    def __init__(self, name, parallel, gen, prompt, tag, extra=()):
        self.name, self.parallel = name, parallel
        argv = [os.path.join(BUILD, "ollama-sim"), "--host", "127.0.0.1", "--port", "0",
                "--parallel", str(parallel), "--curve", curve_arg(gen),
                "--prompt-curve", curve_arg(prompt), "--time-scale", "%g" % SCALE,
                "--models", MODEL + ":latest"] + list(extra)
        self.p, path = start("sim-%s-%s" % (name, tag), argv)
        self.url = "http://127.0.0.1:%d" % wait_listen(name, self.p, path)
        self.epoch = self.p.pid  # counters start again with each process

    def stop(self):
        stop(self.p)


class Proxy:
    """ollama-proxy in front of SIMS, caps PARALLEL fixed or adaptive with
    ceiling CEILING, with the demo's keys."""

    def __init__(self, tag, sims, adaptive, routing=None, state=None):
        conf = os.path.join(OUT, "ollama-proxy-%s.conf" % tag)
        cap = ("max_concurrent = %d; adaptive = true;" % CEILING if adaptive
               else "max_concurrent = %d;" % sims[0].parallel)
        with open(conf, "w") as f:
            f.write('# written by tests/demo/demo.py: the proxy in front of the two sims; one key\n'
                    '# per client (the queue is shared fairly between them), "demo" for '
                    '/proxy/status\nlisten = "127.0.0.1:0";\nbackends = (\n%s\n);\n'
                    'auth = { keys = (\n%s\n); };\n' % (
                        ",\n".join('  { name = "%s"; url = "%s"; %s }' % (s.name, s.url, cap)
                                   for s in sims),
                        ",\n".join('  { name = "%s"; key = "%s"; admin = %s; }' %
                                   (n, k, "true" if a else "false") for n, k, a in KEYS)))
            if routing:
                f.write("routing = { %s };\n" % routing)
            if state:
                f.write('state_file = "%s";\n' % state)
        self.p, path = start("proxy-" + tag, [os.path.join(BUILD, "ollama-proxy"), "-c", conf])
        self.url = "http://127.0.0.1:%d" % wait_listen("ollama-proxy", self.p, path)
        self.adaptive = adaptive
        self.wait_ready(len(sims))

    def wait_ready(self, n, timeout=10.0):
        """Until every backend is up with its models known."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                st = get_json(self.url + "/proxy/status", key=ADMIN_KEY)
                if sum(1 for b in st["backends"] if b.get("healthy") and b.get("models")) == n:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the proxy's backends did not come up (%s)" % self.url)

    def stop(self):
        stop(self.p)


# ---- sampling ----

class Sampler(threading.Thread):
    """Every SAMPLE_S seconds: each sim's /_sim/stats (served, slots busy,
    waiting inside) and, while a proxy is in use, its /proxy/status
    (backends' effective cap and in flight, clients)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.sims = []     # [Sim]
        self.proxy = None  # Proxy
        self.row = ""      # the row running now
        # (t, row, {sim: (epoch, served, busy, queued)},
        #  {backend: (cap, in_flight, adaptive reason)} or None, {client: (in_flight, waiting, served)})
        self.rows = []
        self.halt = threading.Event()
        self.t0 = time.time()

    def use(self, sims=None, proxy=None):
        with self.lock:
            if sims is not None:
                self.sims = list(sims)
            self.proxy = proxy

    def sample(self):
        with self.lock:
            sims, proxy, row = list(self.sims), self.proxy, self.row
        st = {}
        for s in sims:
            j = get_json(s.url + "/_sim/stats")
            st[s.name] = (s.epoch, j["served"], j["in_flight"], j["queued"])
        backends, clients = None, {}
        if proxy:
            ps = get_json(proxy.url + "/proxy/status", key=ADMIN_KEY)
            backends = {b["name"]: (b.get("effective_cap", b["max_concurrent"]), b["in_flight"],
                                    (b.get("adaptive") or {}).get("reason"))
                        for b in ps["backends"]}
            clients = {c["name"]: (c["in_flight"], c["waiting"], c["served"])
                       for c in ps["clients"]}
        r = (time.time() - self.t0, row, st, backends, clients)
        self.rows.append(r)
        return r

    def run(self):
        while not self.halt.is_set():
            try:
                self.sample()
            except OSError:
                pass
            self.halt.wait(SAMPLE_S)


def served_of(snap, sims):
    return [snap[2][s.name][1] if s.name in snap[2] else 0 for s in sims]


# ---- items and runs ----

def read_items():
    with open(ITEMS, "rb") as f:
        return [line for line in f if line.strip()]


def subset(items, n):
    """N of ITEMS spread evenly over the file (its label mix), as a file."""
    if n >= len(items):
        return ITEMS, len(items)
    path = os.path.join(OUT, "items-%d.jsonl" % n)
    with open(path, "wb") as f:
        f.writelines(items[int(i * len(items) / n)] for i in range(n))
    return path, n


class Classify:
    """One ollama-classify run into OUT/TAG.jsonl (fresh, not a resume). A
    thread notes the moment it exits, and runs on_exit() right then."""

    def __init__(self, tag, jobs, url, key, items, n_items):
        self.tag, self.jobs, self.n_items = tag, jobs, n_items
        self.res = os.path.join(OUT, "row%s.jsonl" % tag)
        self.argv = [os.path.join(BUILD, "ollama-classify"), "-i", items, "-o", self.res,
                     "-m", MODEL, "-l", "@" + LABELS, "-j", str(jobs), "--url", url]
        if key:
            self.argv += ["--api-key", KEY[key]]
        self.exited = threading.Event()
        self.on_exit = None
        self.exit_snap = None

    def command(self):
        return (" ".join(["ollama-classify"] + self.argv[1:])
                .replace(OUT + "/", "").replace(SRC + "/", ""))

    def start(self):
        if os.path.exists(self.res):
            os.unlink(self.res)
        self.t0 = time.time()
        self.p, self.log = start("classify-row" + self.tag, self.argv)
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self):
        self.p.wait()
        self.t1 = time.time()
        if self.on_exit:
            try:
                self.exit_snap = self.on_exit()
            except OSError:
                pass
        self.exited.set()

    def check(self, what):
        """Raises unless every item was labelled; the mean generated tokens
        per item (after the first) of the sim's answers."""
        labels = []
        with open(self.res) as f:
            for line in f:
                if line.strip():
                    lab = json.loads(line).get("label")
                    if lab is not None:
                        labels.append(lab)
        if self.p.returncode != 0 or len(labels) != self.n_items:
            with open(self.log, "rb") as f:
                tail = f.read().decode("utf-8", "replace")[-1500:]
            raise RuntimeError("%s: ollama-classify exited %s with %d of %d items labelled "
                               "(log %s):\n%s" % (what, self.p.returncode, len(labels),
                                                  self.n_items, self.log, tail))
        self.wall = self.t1 - self.t0
        return sum(answer_steps(x) for x in labels) / len(labels)


def progress(done_fn, until, t0):
    tty = sys.stdout.isatty()
    last = time.time()
    while not until():
        time.sleep(0.25)
        msg = done_fn()
        if tty:
            sys.stdout.write("\r       %s, %.0f s " % (msg, time.time() - t0))
            sys.stdout.flush()
        elif time.time() - last >= 5:
            log("       %s, %.0f s" % (msg, time.time() - t0))
            last = time.time()
    if tty:
        sys.stdout.write("\r" + " " * 72 + "\r")


def single(row, jobs, target, key, items, n, sampler, sims, route, parallel, cap, what):
    """One row: one ollama-classify run of N items at TARGET."""
    path, n = subset(items, n)
    c = Classify(str(row), jobs, target.url, key, path, n)
    log("row %s: %s" % (row, what))
    log("       %s" % c.command())
    sampler.row = str(row)
    before = sampler.sample()
    c.start()
    progress(lambda: "%d/%d items" % (sum(served_of(sampler.rows[-1], sims)) -
                                      sum(served_of(before, sims)), n),
             c.exited.is_set, c.t0)
    after = sampler.sample()
    sampler.row = ""
    steps = c.check("row %s" % row)
    per_backend = [a - b for a, b in zip(served_of(after, sims), served_of(before, sims))]
    r = {"row": str(row), "jobs": jobs, "route": route, "parallel": parallel, "cap": cap,
         "items": n, "wall": c.wall, "rate": n / (c.wall * SCALE), "steps": steps,
         "per_backend": per_backend, "t0": c.t0 - sampler.t0, "t1": c.t1 - sampler.t0}
    log("       done: %d items in %.1f s (%.2f items/s), per backend %s" %
        (n, c.wall, r["rate"], " ".join("%s %d" % (s.name, k)
                                        for s, k in zip(sims, per_backend))))
    return r


def run_both(row, proxy, items, n_legacy, n_batch, sampler, sims):
    """Row 7: the -j 200 batch (key batch) on N_BATCH items; once it holds
    every slot (the effective caps) with more waiting, the -j 5 client (key
    legacy) on N_LEGACY. The rows are measured over the legacy client's run,
    which lies inside the batch's."""
    bpath, n_batch = subset(items, n_batch)
    lpath, n_legacy = subset(items, n_legacy)
    batch = Classify("%d-batch" % row, 200, proxy.url, "batch", bpath, n_batch)
    legacy = Classify("%d-legacy" % row, 5, proxy.url, "legacy", lpath, n_legacy)
    log("row %d: both at once through the proxy, two clients by their keys" % row)
    log("       batch:  %s" % batch.command())
    log("       legacy: %s" % legacy.command())
    log("       (the legacy client starts once the batch holds every slot and has more waiting)")

    def snap():  # (t, each sim's served, each client's served at the proxy)
        s = sampler.sample()
        return time.time(), served_of(s, sims), {n: v[2] for n, v in s[4].items()}

    sampler.row = str(row)
    s0 = snap()
    batch.start()
    deadline = time.time() + 20
    while True:
        s = sampler.sample()
        c = s[4].get("batch")
        slots = sum(v[0] for v in s[3].values())
        if c and c[0] >= slots and c[1] > 0:
            fill = (c, slots)
            break
        if batch.exited.is_set() or time.time() > deadline:
            batch.exited.wait(2)
            batch.check("row %d (batch)" % row)
            raise RuntimeError("row %d: the batch did not fill the fleet (%s)" % (row, c))
        time.sleep(0.02)
    legacy.on_exit = snap
    w0 = snap()
    legacy.start()

    def done():
        cl = sampler.rows[-1][4]
        got = {n: cl[n][2] - s0[2].get(n, 0) if n in cl else 0 for n in ("legacy", "batch")}
        return "legacy %d/%d, batch %d/%d items" % (got["legacy"], n_legacy, got["batch"], n_batch)
    progress(done, lambda: batch.exited.is_set() and legacy.exited.is_set() or
             legacy.exited.is_set() and legacy.p.returncode != 0, batch.t0)
    legacy.exited.wait(5)
    lsteps = legacy.check("row %d (legacy)" % row)
    batch.exited.wait()
    bsteps = batch.check("row %d (batch)" % row)
    s1 = snap()
    sampler.row = ""
    w1 = legacy.exit_snap
    if not w1:
        raise RuntimeError("row %d: /proxy/status did not answer when the legacy client ended" %
                           row)
    window = w1[0] - w0[0]
    in_window = [b - a for a, b in zip(w0[1], w1[1])]
    per_client = {n: w1[2].get(n, 0) - w0[2].get(n, 0) for n in ("legacy", "batch")}
    per_backend = [b - a for a, b in zip(s0[1], s1[1])]
    log("       done: legacy %d items in %.1f s; batch %d items in %.1f s, %d of them while "
        "the legacy client ran; per backend %s" %
        (n_legacy, legacy.wall, n_batch, batch.wall, per_client["batch"],
         " ".join("%s %d" % (s.name, k) for s, k in zip(sims, per_backend))))
    steps = (lsteps * n_legacy + bsteps * n_batch) / (n_legacy + n_batch)
    lrate = n_legacy / (legacy.wall * SCALE)
    return {"row": str(row), "both": True, "steps": steps,
            "t0": batch.t0 - sampler.t0, "t1": batch.t1 - sampler.t0,
            "legacy": {"jobs": 5, "items": n_legacy, "wall": legacy.wall, "rate": lrate,
                       "t0": legacy.t0 - sampler.t0, "t1": legacy.t1 - sampler.t0,
                       "served_at_proxy": per_client["legacy"]},
            "batch": {"jobs": 200, "items": n_batch, "wall": batch.wall,
                      "rate_while_both": per_client["batch"] / (window * SCALE),
                      "items_while_both": per_client["batch"]},
            "window": {"wall": window, "per_backend": in_window,
                       "rate": sum(in_window) / (window * SCALE),
                       "batch_waiting_at_start": fill[0][1], "slots_at_start": fill[1]}}


# ---- the table ----

def wrap(text, width=96, indent="  "):
    """TEXT in lines of at most WIDTH, the lines after the first indented."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = line + " " + word if line else word
    return "\n".join(lines + [line])


def minutes(rate):
    return "%.1f" % (JOB_ITEMS / rate / 60) if rate >= 1.5 else "%.0f" % (JOB_ITEMS / rate / 60)


def capacity(rate, steps, gen_max):
    """Share of the box's generation capacity: both GPUs at the curve's
    maximum, in the sim's tokens."""
    return rate * steps / (N_GPUS * gen_max)


def table(rows, gen_max, md=False):
    head = ("row", "client", "route", "Ollama parallel", "proxy cap", "items", "items/s",
            "min for 1,525", "vs row 1", "GPU capacity used", "gpu0/gpu1 served")
    out = [head]
    r1 = rows[0]["rate"]

    def line(row, client, route, par, cap, items, rate, steps, served, mins=True):
        out.append((row, client, route, par, cap, items, "%.2f" % rate,
                    minutes(rate) if mins else "-", "%.1fx" % (rate / r1),
                    "%.0f%%" % (100 * capacity(rate, steps, gen_max)), served))

    for r in rows:
        if r.get("both"):
            L, B, W = r["legacy"], r["batch"], r["window"]
            line("7", "-j 5 (legacy)", "via proxy, beside -j 200", "16", "adaptive", "%d *" %
                 L["items"], L["rate"], r["steps"], "-")
            line("7", "-j 200 (batch)", "via proxy, beside -j 5", "16", "adaptive",
                 "%d *" % B["items_while_both"], B["rate_while_both"], r["steps"], "-",
                 mins=False)
            line("7", "both", "while both ran", "16", "adaptive", "%d *" % sum(W["per_backend"]),
                 W["rate"], r["steps"], "/".join(str(k) for k in W["per_backend"]), mins=False)
            continue
        line(r["row"], "-j %d" % r["jobs"], r["route"], r["parallel"], r["cap"],
             "%d" % r["items"], r["rate"], r["steps"],
             "/".join(str(k) for k in r["per_backend"]) if len(r["per_backend"]) > 1 else
             "%d/-" % r["per_backend"][0])
    if md:
        lines = ["| " + " | ".join(out[0]) + " |", "|" + "---|" * len(out[0])]
        lines += ["| " + " | ".join(c.replace("-j", "`-j").replace(" (", "` (")
                                    if c.startswith("-j") and "(" in c else
                                    ("`%s`" % c if c.startswith("-j") else c)
                                    for c in row) + " |" for row in out[1:]]
        return "\n".join(lines)
    w = [max(len(row[i]) for row in out) for i in range(len(out[0]))]
    lines = []
    for k, row in enumerate(out):
        cells = [c.ljust(w[i]) if i in (1, 2, 3, 4) else c.rjust(w[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


# ---- charts ----

# ---- the story ----

def settle(sampler, run, names):
    """How row 6a's caps climbed: each backend's median cap over the run's
    second half, and when every backend first came within a slot of it
    (simulated seconds since the run started; None if never)."""
    rs = [r for r in sampler.rows if r[3] and run["t0"] <= r[0] <= run["t1"]]
    rs.sort(key=lambda r: r[0])
    med = {}
    for n in names:
        caps = sorted(r[3][n][0] for r in rs[len(rs) // 2:] if n in r[3])
        med[n] = caps[len(caps) // 2] if caps else 0
    for r in rs:
        if all(n in r[3] and r[3][n][0] >= med[n] - 1 for n in names):
            return (r[0] - run["t0"]) * SCALE, med
    return None, med


def cap_changes(sampler, t0, names):
    """Each backend's adaptive cap changes after T0 (wall seconds): [(simulated
    seconds since T0, the reason /proxy/status gave)]."""
    out = {n: [] for n in names}
    for r in sorted(sampler.rows, key=lambda r: r[0]):
        if r[0] < t0 or not r[3]:
            continue
        for n in names:
            why = r[3].get(n, (0, 0, None))[2]
            if why and (not out[n] or out[n][-1][1] != why):
                out[n].append(((r[0] - t0) * SCALE, why))
    return out


def check_goals(R):
    """The issue's goals [(what, met)], and the properties demo_quick asserts
    [(what, holds)]: the order of the rows, with wide margins, because the
    ctest runs beside others on 2 cores, under ASan too. The adaptive rows
    are held only to beating one GPU: today's controller, misled by noisy
    windows, has settled a backend as low as 7 of 16 in a quick run."""
    r1, r2, r3, r4, r5, r6 = (R[k]["rate"] for k in ("1", "2", "3", "4", "5", "6"))
    r6a, r6r = R["6a"]["rate"], R["6r"]["rate"]
    r7 = R["7"]
    lg, both = r7["legacy"]["rate"], r7["window"]["rate"]
    goals = [("row 5 >= 10x row 1 (%.1fx)" % (r5 / r1), r5 >= 10 * r1),
             ("row 6 >= 95%% of row 5 (%.0f%%)" % (100 * r6 / r5), r6 >= 0.95 * r5),
             ("row 4 >= 3x row 1 (%.1fx)" % (r4 / r1), r4 >= 3 * r1)]
    props = [
        ("row 1 near the job's 0.7 items/s (%.2f)" % r1, 0.45 <= r1 <= 0.8),
        ("row 2 within 25%% of row 1: 200 in flight don't help at parallel 1 (%.2fx)" %
         (r2 / r1), 0.75 <= r2 / r1 <= 1.25),
        ("row 3 >= 5x row 1: the GPU's batching (%.1fx)" % (r3 / r1), r3 >= 5 * r1),
        ("row 5 >= 1.5x row 3: the second GPU (%.2fx)" % (r5 / r3), r5 >= 1.5 * r3),
        ("row 5 >= 7x row 1 (%.1fx)" % (r5 / r1), r5 >= 7 * r1),
        ("row 4 >= 2x row 1 (%.1fx)" % (r4 / r1), r4 >= 2 * r1),
        ("row 6 >= 1.2x row 3: adaptive caps use both GPUs (%.2fx)" % (r6 / r3), r6 >= 1.2 * r3),
        ("row 7: the legacy client beside the batch >= 2x row 1 (%.1fx)" % (lg / r1),
         lg >= 2 * r1),
        ("row 7: both together >= 1.2x row 3 (%.2fx)" % (both / r3), both >= 1.2 * r3),
        ("row 6r: the first job after a restart (state_file) >= 1.2x row 3 and not below row "
         "6a, the first job after a start (%.2fx row 3, %.2fx row 6a)" % (r6r / r3, r6r / r6a),
         r6r >= 1.2 * r3 and r6r >= 0.95 * r6a),
    ]
    return goals, props


def main():
    os.makedirs(OUT, exist_ok=True)
    for prog in ("ollama-sim", "ollama-proxy", "ollama-classify"):
        if not os.access(os.path.join(BUILD, prog), os.X_OK):
            sys.exit("demo: %s/%s is missing: run bash tests/demo.sh (it builds)" % (BUILD, prog))
    items = read_items()
    t_start = time.time()
    gpu, gen_pub, prompt_pub = preset_curves(PRESET)
    gen = [(b, t / GEN_DIV) for b, t in gen_pub if b <= MAX_B]
    prompt = [(b, t) for b, t in prompt_pub if b <= MAX_B]
    gen_max = max(t for b, t in gen)
    log("GPU:      %s (ollama-sim preset %s, points up to %d sequences)" % (gpu, PRESET, MAX_B))
    log("          generation tokens/s / %g: --curve %s" % (GEN_DIV, curve_arg(gen)))
    log("          prompt tokens/s as published: --prompt-curve %s" % curve_arg(prompt))
    log("          the sims run %gx faster than real time; every figure is simulated time" %
        SCALE)
    log("items:    from tests/data/items.jsonl (%d), labels from tests/data/labels.txt" %
        len(items))
    log()

    sampler = Sampler()
    R = {}
    order = []

    def add(r):
        R[r["row"]] = r
        order.append(r)

    # Rows 1-2: gpu0 as Ollama starts by default, one request at a time.
    g0 = Sim("gpu0", DEFAULT_PARALLEL, gen, prompt, "parallel1")
    sampler.use([g0])
    sampler.start()
    log("gpu0:     %s, --parallel %d (Ollama's default)" % (g0.url, DEFAULT_PARALLEL))
    add(single(1, 5, g0, None, items, PLAN[1], sampler, [g0], "straight to gpu0", "1", "-",
               "the job today: 5 in flight, one GPU, Ollama's default parallel 1"))
    add(single(2, 200, g0, None, items, PLAN[2], sampler, [g0], "straight to gpu0", "1", "-",
               "200 in flight to the same Ollama (all %d items at once)" % PLAN[2]))
    sampler.use([])
    g0.stop()

    # Rows 3-7: both GPUs with 16 slots each (OLLAMA_NUM_PARALLEL=16).
    sims = [Sim("gpu%d" % i, PARALLEL, gen, prompt, "parallel%d" % PARALLEL)
            for i in range(N_GPUS)]
    sampler.use(sims)
    log("gpu0/1:   %s and %s, --parallel %d" % (sims[0].url, sims[1].url, PARALLEL))
    add(single(3, 200, sims[0], None, items, PLAN[3], sampler, sims, "straight to gpu0", "16",
               "-", "the same, with OLLAMA_NUM_PARALLEL=16 on gpu0"))
    fixed = Proxy("fixed", sims, adaptive=False)
    sampler.use(proxy=fixed)
    log("proxy:    %s (max_concurrent %d per backend)" % (fixed.url, PARALLEL))
    add(single(4, 5, fixed, "legacy", items, PLAN[4], sampler, sims, "via proxy", "16", "16",
               "the job's client unchanged, through the proxy"))
    add(single(5, 200, fixed, "batch", items, PLAN[5], sampler, sims, "via proxy", "16", "16",
               "200 in flight through the proxy"))
    sampler.use(proxy=None)
    fixed.stop()
    state = os.path.join(OUT, "ollama-proxy-state.json")
    if os.path.exists(state):
        os.unlink(state)
    adaptive = Proxy("adaptive", sims, adaptive=True, state=state)
    sampler.use(proxy=adaptive)
    log("proxy:    %s (adaptive = true, max_concurrent %d per backend: a ceiling; started "
        "now, caps from 1)" % (adaptive.url, CEILING))
    add(single("6a", 200, adaptive, "batch", items, PLAN["6a"], sampler, sims,
               "via proxy, just started", "16", "adaptive",
               "200 in flight, the adaptive proxy just started: it climbs from a cap of 1"))
    add(single(6, 200, adaptive, "batch", items, PLAN[6], sampler, sims, "via proxy", "16",
               "adaptive", "the same client again, with the caps the proxy found"))
    add(run_both(7, adaptive, items, PLAN[7][0], PLAN[7][1], sampler, sims))
    # Row 6r: the proxy restarted (SIGTERM, then a new process on the same
    # state_file): the first job after it, against 6a's climb from 1.
    sampler.use(proxy=None)
    adaptive.stop()
    adaptive = Proxy("restarted", sims, adaptive=True, state=state)
    sampler.use(proxy=adaptive)
    log("proxy:    %s (the adaptive proxy restarted: its caps resume at the knees in %s)" %
        (adaptive.url, os.path.relpath(state)))
    add(single("6r", 200, adaptive, "batch", items, PLAN["6a"], sampler, sims,
               "via proxy, restarted", "16", "adaptive",
               "row 6a's job, the adaptive proxy just restarted with its state_file"))
    time.sleep(0.5)
    sampler.halt.set()
    sampler.join()

    names = [s.name for s in sims]
    t_settle, med = settle(sampler, R["6a"], names)
    shown = order
    log()
    log(table(shown, gen_max))
    log()
    r1 = R["1"]["rate"]
    notes = [
        "items/s are simulated real time (the sims run %gx faster); min for 1,525 = 1,525 / "
        "items/s. Rows with fewer items are spread evenly over the file." % SCALE,
        "GPU capacity used = generated tokens/s / both GPUs at the curve's maximum (%d slots "
        "busy: %.1f tokens/s each in the sim's tokens, %.1f published)." %
        (MAX_B, gen_max, gen_max * GEN_DIV),
        "Row 6a is the first job after the adaptive proxy started: its caps climb from 1 "
        "(doubling: 1, 2, 4, 8, 16, then closing in), and %s (median over 6a's second half: %s). Row 6 is the next job, "
        "with the caps the proxy found." % (
            "came within a slot of their answer after %.0f s of simulated time" % t_settle
            if t_settle is not None else "had not settled by its end",
            "/".join(str(med[n]) for n in names)),
        "Row 7 (* measured while both ran, %.0f s): the -j 200 batch starts first; once it "
        "holds all %d slots with %d more waiting, the -j 5 client runs %d items beside it. Each "
        "freed slot goes to the waiting client with the fewest in flight." % (
            R["7"]["window"]["wall"] * SCALE, R["7"]["window"]["slots_at_start"],
            R["7"]["window"]["batch_waiting_at_start"], R["7"]["legacy"]["items"]),
    ]
    for n in notes:
        log(wrap(n))
    changes = cap_changes(sampler, R["6a"]["t0"], names)
    for n in names:
        steps = [c for c in changes[n] if "probing up" not in c[1] and "added" in c[1] or
                 "doubled" in c[1]]
        log(wrap("%s: %d cap changes from the start of row 6a; the last steps down: %s" % (
            n, len(changes[n]), "; ".join("at %.0f s %s" % c for c in steps[-3:]) or "none")))
    log()
    log("Where the speed-up comes from (items/s, x row 1):")
    for a, b, why in (("1", "2", "200 in flight instead of 5, Ollama still at parallel 1"),
                      ("1", "3", "the GPU's batching: OLLAMA_NUM_PARALLEL=16 on one GPU"),
                      ("3", "5", "the proxy: the second GPU and late binding"),
                      ("1", "4", "the proxy for the unchanged -j 5 client (both GPUs, 16 slots)"),
                      ("5", "6", "adaptive caps, not told 16"),
                      ("6a", "6r", "the first job after a restart: the knees kept (state_file)")):
        log("  row %s -> %s: %5.2fx  %s" % (a, b, R[b]["rate"] / R[a]["rate"], why))
    log()
    goals, props = check_goals(R)
    log("The issue's goals:")
    for what, ok in goals:
        log("  %s %s" % ("met   " if ok else "MISSED", what))
    if QUICK:
        log("The properties demo_quick checks:")
        for what, ok in props:
            log("  %s %s" % ("ok  " if ok else "FAIL", what))
    png = charts.write_chart(OUT, SCALE, PRESET, PARALLEL, sampler, order, names, r1)
    shares = charts.write_shares(OUT, SCALE, SAMPLE_S, N_GPUS * PARALLEL, sampler, R["7"])
    # The second scene: agents on the fleet, the published curves as they are
    # (an agent's answer is short: its time is the prompt).
    log()
    gen16 = [(b, t) for b, t in gen_pub if b <= MAX_B]
    scene = agents.scene(
        log, lambda name, par: Sim(name, par, gen16, prompt, "agents", ("--tokens", "16")),
        lambda tag, ss, routing: Proxy(tag, ss, adaptive=False, routing=routing), OUT, SCALE,
        QUICK, KEY["agents"])
    props += agents.properties(scene)
    if QUICK:
        for what, ok in agents.properties(scene):
            log("  %s %s" % ("ok  " if ok else "FAIL", what))
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump({"time_scale": SCALE, "preset": PRESET, "gen_div": GEN_DIV,
                   "curve": gen, "prompt_curve": prompt, "rows": order,
                   "row6a_settle_sim_s": t_settle, "row6a_caps_median": med,
                   "cap_changes": changes,
                   "goals": goals, "properties": props, "agents": scene}, f, indent=1)
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(table(shown, gen_max, md=True) + "\n")
    log()
    log("results, logs and data: %s/" % os.path.relpath(OUT))
    if png:
        log("chart: %s (throughput, slots and caps per backend)" % os.path.relpath(png))
    if shares:
        log("chart: %s (row 7: each client's slots and items/s)" % os.path.relpath(shares))
    log("demo took %.0f s" % (time.time() - t_start))
    if QUICK and not all(ok for what, ok in props):
        raise RuntimeError("some of the demo's properties do not hold (above)")


if __name__ == "__main__":
    # Ctrl-C, SIGTERM, SIGHUP: stop what we started (also when the shell
    # that started us ignored SIGINT, as background jobs get).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        main()
    except KeyboardInterrupt:
        print("\ndemo: interrupted, stopping what it started", file=sys.stderr)
        code = 128 + caught[0]
    except (RuntimeError, OSError) as e:
        print("demo: %s" % e, file=sys.stderr)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        stop_all()
    sys.exit(code)
