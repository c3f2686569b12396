#!/usr/bin/env python3
"""demo.py - the README's demo, driven by tests/demo.sh once the programs are
built: two simulated GPUs, the proxy in front of them, the bundled 1,525
items classified three ways, then two clients at once through the proxy.
Standard library only.

  run 1  ollama-classify -j 5    straight to gpu0       (the seed's setup)
  run 2  ollama-classify -j 5    through the proxy
  run 3  ollama-classify -j 200  through the proxy
  run 4  both at once through the proxy, as two clients (keys "batch" and
         "legacy"): the -j 200 batch on all 1,525 items and, once it holds
         every slot with more waiting, the -j 5 client on the first 500
         (it ends well before the batch, so all of it ran beside the batch)

The proxy shares its queue fairly between clients (each freed slot goes to
the waiting client with the fewest in flight), so in run 4 the legacy client
should keep 4 slots, as many as it had alone on gpu0 in run 1, and the batch
get the other 4; /proxy/status (with the admin key "demo") is sampled every
STATUS_S seconds for the chart of the two clients' shares.

The two ollama-sim backends stand for two GPUs, each with OLLAMA_NUM_PARALLEL=4
(--parallel 4, and max_concurrent = 4 in the proxy), calibrated so that 5
requests in flight against one of them give the seed's 0.7 items/s (1,525
items in 36 minutes), and run --time-scale times faster than real time so the
whole demo takes a little over a minute. Every rate and duration printed is in
simulated real time (measured wall time x the time scale).

Writes into build/demo/ (or $DEMO_DIR): the results of each run, every
program's log, throughput.dat (a sample of each sim's /_sim/stats every 0.5 s)
and throughput.png (gnuplot), shares.dat (run 4's clients[] of /proxy/status)
and shares.png. Everything it starts it stops, by PID, also on
Ctrl-C, SIGTERM and errors.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR") or os.path.join(SRC, "build")
OUT = os.environ.get("DEMO_DIR") or os.path.join(BUILD, "demo")
ITEMS = os.path.join(SRC, "tests", "data", "items.jsonl")
LABELS = os.path.join(SRC, "tests", "data", "labels.txt")
MODEL = "llama3"

# The simulated GPU. One request = prompt processing (TTFT) + the answer's
# tokens ({"label":"billing"} is 5 tokens) at TOKENS_PER_S per slot, each slot
# slowed to TOKENS_PER_S / (1 + SLOWDOWN * (busy - 1)) when several are busy.
# With 4 slots busy that is 4.2 s + 4 x 1.45 / 6 s = 5.2 s a request, plus
# about 0.5 s (5 ms of wall time at scale 100: HTTP, timers, the client),
# measured: 5.7 s, so 4 / 5.7 = 0.7 items/s. Calibrated on 2 cores; a much
# slower machine shows a little less, and the table says what it measured.
SCALE = float(os.environ.get("DEMO_TIME_SCALE", "100"))
PARALLEL = 4
TTFT_MS = 4200
TOKENS_PER_S = 6
SLOWDOWN = 0.15
SIM_FLAGS = ["--parallel", str(PARALLEL), "--ttft-ms", str(TTFT_MS),
             "--tokens-per-s", str(TOKENS_PER_S), "--slowdown", str(SLOWDOWN),
             "--time-scale", "%g" % SCALE, "--models", MODEL + ":latest"]
SAMPLE_S = 0.5
STATUS_S = 0.15  # /proxy/status sampling in run 4 (15 s of simulated time)
# The proxy's keys (auth.keys): one per client of run 4, and an admin key
# for /proxy/status. Runs 2 and 3 use the legacy and batch keys too.
KEYS = [("legacy", "demo-legacy-key", False), ("batch", "demo-batch-key", False),
        ("demo", "demo-admin-key", True)]
KEY = {name: key for name, key, admin in KEYS}
ADMIN_KEY = KEY["demo"]
LEGACY_ITEMS = 500  # run 4's legacy client: the first 500 items

procs = []  # (name, Popen, logfile) of everything we started


def log(msg=""):
    print(msg, flush=True)


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


def stop_all():
    """SIGTERM every process we started, newest first (the proxy lets its
    requests finish), then SIGKILL whatever is left after 10 s."""
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


class Sampler(threading.Thread):
    """Every SAMPLE_S seconds: each sim's served and in_flight counters."""

    def __init__(self, sims):
        super().__init__(daemon=True)
        self.sims = sims  # [(name, url)]
        self.rows = []    # (t, run, [served...], [in_flight...])
        self.run_no = 0
        self.halt = threading.Event()
        self.t0 = time.time()

    def sample(self):
        served, inflight = [], []
        for name, url in self.sims:
            s = get_json(url + "/_sim/stats")
            served.append(s["served"])
            inflight.append(s["in_flight"])
        row = (time.time() - self.t0, self.run_no, served, inflight)
        self.rows.append(row)
        return row

    def run(self):
        while not self.halt.is_set():
            try:
                self.sample()
            except OSError:
                pass
            self.halt.wait(SAMPLE_S)


class StatusSampler(threading.Thread):
    """Every STATUS_S seconds: the proxy's clients[] (in_flight, waiting,
    served per client), with the admin key."""

    def __init__(self, proxy, t0):
        super().__init__(daemon=True)
        self.url = proxy + "/proxy/status"
        self.rows = []  # (t, {name: (in_flight, waiting, served)})
        self.halt = threading.Event()
        self.t0 = t0

    def sample(self):
        st = get_json(self.url, key=ADMIN_KEY)
        row = (time.time() - self.t0,
               {c["name"]: (c["in_flight"], c["waiting"], c["served"]) for c in st["clients"]})
        self.rows.append(row)
        return row

    def run(self):
        while not self.halt.is_set():
            try:
                self.sample()
            except OSError:
                pass
            self.halt.wait(STATUS_S)


def count_items(path=ITEMS):
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


class Classify:
    """One ollama-classify run into OUT/TAG.jsonl (fresh, not a resume). A
    thread notes the moment it exits, and runs on_exit() right then."""

    def __init__(self, tag, jobs, url, key, items, n_items):
        self.tag, self.jobs, self.n_items = tag, jobs, n_items
        self.res = os.path.join(OUT, tag + ".jsonl")
        self.argv = [os.path.join(BUILD, "ollama-classify"), "-i", items, "-o", self.res,
                     "-m", MODEL, "-l", "@" + LABELS, "-j", str(jobs), "--url", url]
        if key:
            self.argv += ["--api-key", KEY[key]]
        self.exited = threading.Event()
        self.on_exit = None
        self.exit_snap = None

    def command(self):
        return " ".join(["ollama-classify"] + self.argv[1:]).replace(SRC + "/", "")

    def start(self):
        if os.path.exists(self.res):
            os.unlink(self.res)
        self.t0 = time.time()
        self.p, self.log = start("classify-" + self.tag, self.argv)
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
        """The run's wall time; raises unless every item was labelled."""
        labelled = 0
        with open(self.res) as f:
            for line in f:
                if line.strip() and json.loads(line).get("label") is not None:
                    labelled += 1
        if self.p.returncode != 0 or labelled != self.n_items:
            with open(self.log, "rb") as f:
                tail = f.read().decode("utf-8", "replace")[-1500:]
            raise RuntimeError("%s: ollama-classify exited %s with %d of %d items labelled "
                               "(log %s):\n%s" % (what, self.p.returncode, labelled,
                                                  self.n_items, self.log, tail))
        self.wall = self.t1 - self.t0
        return labelled


def classify(no, jobs, url, key, n_items, sampler, what):
    c = Classify("run%d" % no, jobs, url, key, ITEMS, n_items)
    log("run %d: %s" % (no, what))
    log("       %s" % c.command())
    sampler.run_no = no
    before = sampler.sample()[2]
    c.start()
    tty = sys.stdout.isatty()
    last_print = c.t0
    while not c.exited.wait(0.25):
        if sampler.rows:
            done = sum(sampler.rows[-1][2]) - sum(before)
            now = time.time()
            if tty:
                sys.stdout.write("\r       %d/%d items, %.0f s " % (done, n_items, now - c.t0))
                sys.stdout.flush()
            elif now - last_print >= 5:
                log("       %d/%d items, %.0f s" % (done, n_items, now - c.t0))
                last_print = now
    if tty:
        sys.stdout.write("\r" + " " * 60 + "\r")
    after = sampler.sample()[2]
    sampler.run_no = 0
    labelled = c.check("run %d" % no)
    per_backend = [a - b for a, b in zip(after, before)]
    log("       done: %d items in %.1f s, per backend %s" %
        (labelled, c.wall, " ".join("%s %d" % (s[0], n) for s, n in zip(sampler.sims, per_backend))))
    return {"no": no, "jobs": jobs, "what": what, "wall": c.wall, "items": labelled,
            "per_backend": per_backend, "t0": c.t0 - sampler.t0, "t1": c.t1 - sampler.t0}


def run_both(no, proxy, n_items, sampler, slots):
    """Run 4: the -j 200 batch (key batch) on every item; once it holds all
    SLOTS with more waiting, the -j 5 client (key legacy) on the first
    LEGACY_ITEMS. The legacy client's rows are measured over its own run,
    which lies inside the batch's."""
    sub = os.path.join(OUT, "items-first%d.jsonl" % LEGACY_ITEMS)
    with open(ITEMS, "rb") as f, open(sub, "wb") as g:
        g.writelines([line for line in f if line.strip()][:LEGACY_ITEMS])
    batch = Classify("run%d-batch" % no, 200, proxy, "batch", ITEMS, n_items)
    legacy = Classify("run%d-legacy" % no, 5, proxy, "legacy", sub, LEGACY_ITEMS)
    log("run %d: both at once through the proxy, two clients by their keys" % no)
    log("       batch:  %s" % batch.command())
    log("       legacy: %s" % legacy.command())
    log("       (the legacy client starts once the batch holds all %d slots and has more "
        "waiting)" % slots)
    fill = None
    status = StatusSampler(proxy, sampler.t0)

    def snap():  # (t, each sim's served, each client's served at the proxy)
        served = {n: v[2] for n, v in status.sample()[1].items()}
        return time.time(), sampler.sample()[2], served

    sampler.run_no = no
    s0 = snap()
    status.start()
    batch.start()
    deadline = time.time() + 10
    while True:
        c = status.sample()[1].get("batch")
        if c and c[0] >= slots and c[1] > 0:
            fill = c
            break
        if batch.exited.is_set() or time.time() > deadline:
            batch.exited.wait(2)
            batch.check("run %d (batch)" % no)
            raise RuntimeError("run %d: the batch did not fill the fleet (%s)" % (no, c))
        time.sleep(0.02)
    legacy.on_exit = snap
    w0 = snap()
    legacy.start()
    tty = sys.stdout.isatty()
    last_print = time.time()
    while not (batch.exited.is_set() and legacy.exited.is_set()):
        time.sleep(0.25)
        if legacy.exited.is_set() and legacy.p.returncode != 0:
            break  # reported by check() below
        row = status.rows[-1][1] if status.rows else {}
        got = {n: row[n][2] - s0[2].get(n, 0) if n in row else 0 for n in ("legacy", "batch")}
        msg = "legacy %d/%d, batch %d/%d items, %.0f s" % (
            got["legacy"], LEGACY_ITEMS, got["batch"], n_items, time.time() - batch.t0)
        if tty:
            sys.stdout.write("\r       %s " % msg)
            sys.stdout.flush()
        elif time.time() - last_print >= 5:
            log("       " + msg)
            last_print = time.time()
    if tty:
        sys.stdout.write("\r" + " " * 70 + "\r")
    legacy.exited.wait(5)
    legacy.check("run %d (legacy)" % no)
    batch.exited.wait()
    batch.check("run %d (batch)" % no)
    s1 = snap()
    status.halt.set()
    status.join()
    sampler.run_no = 0
    w1 = legacy.exit_snap
    if not w1:
        raise RuntimeError("run %d: /proxy/status did not answer when the legacy client ended" % no)
    window = w1[0] - w0[0]
    in_window = [b - a for a, b in zip(w0[1], w1[1])]
    per_client = {n: w1[2].get(n, 0) - w0[2].get(n, 0) for n in ("legacy", "batch")}
    per_backend = [b - a for a, b in zip(s0[1], s1[1])]
    log("       done: legacy %d items in %.1f s; batch %d items in %.1f s, %d of them while "
        "the legacy client ran; per backend %s" %
        (LEGACY_ITEMS, legacy.wall, n_items, batch.wall, per_client["batch"],
         " ".join("%s %d" % (s[0], n) for s, n in zip(sampler.sims, per_backend))))
    return {"no": no, "both": True, "status": status.rows,
            "t0": batch.t0 - sampler.t0, "t1": batch.t1 - sampler.t0,
            "legacy": {"jobs": 5, "items": LEGACY_ITEMS, "wall": legacy.wall,
                       "t0": legacy.t0 - sampler.t0, "t1": legacy.t1 - sampler.t0,
                       "served_at_proxy": per_client["legacy"]},
            "batch": {"jobs": 200, "items": n_items, "wall": batch.wall,
                      "items_while_both": per_client["batch"]},
            "window": {"wall": window, "per_backend": in_window,
                       "batch_waiting_at_start": fill[1]}}


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


def real_time(sim_s):
    if sim_s >= 5400:
        return "%.1f h" % (sim_s / 3600)
    if sim_s >= 90:
        return "%.0f min" % (sim_s / 60)
    return "%.0f s" % sim_s


def table(runs, capacity):
    rows = [("run", "client", "route", "items/s", "wall", "real time", "capacity used",
             "gpu0/gpu1 served")]
    for r in runs:
        if r.get("both"):
            L, B, W = r["legacy"], r["batch"], r["window"]
            lrate = L["items"] / (L["wall"] * SCALE)
            brate = B["items_while_both"] / (W["wall"] * SCALE)
            trate = sum(W["per_backend"]) / (W["wall"] * SCALE)
            no = "%d" % r["no"]
            rows.append((no, "-j 5", "via proxy, beside -j 200", "%.2f" % lrate,
                         "%.1f s" % L["wall"], real_time(runs[0]["items"] / lrate) + " *",
                         "%.0f%%" % (100 * lrate / capacity), "-"))
            rows.append((no, "-j 200", "via proxy, beside -j 5", "%.2f" % brate,
                         "%.1f s" % W["wall"], "-", "%.0f%%" % (100 * brate / capacity), "-"))
            rows.append((no, "both", "while both ran", "%.2f" % trate,
                         "%.1f s" % W["wall"], "-", "%.0f%%" % (100 * trate / capacity),
                         "/".join(str(n) for n in W["per_backend"])))
            continue
        rate = r["items"] / (r["wall"] * SCALE)
        rows.append(("%d" % r["no"], "-j %d" % r["jobs"], r["route"], "%.2f" % rate,
                     "%.1f s" % r["wall"], real_time(r["wall"] * SCALE),
                     "%.0f%%" % (100 * rate / capacity),
                     "/".join(str(n) for n in r["per_backend"])))
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w[i]) if i in (1, 2) else c.rjust(w[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


COLORS = ["#4477aa", "#ee7733", "#228833", "#aa3377"]


def gnuplot(name, script):
    gp = os.path.join(OUT, name + ".gp")
    with open(gp, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", gp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        log("gnuplot failed on %s:\n%s" % (gp, r.stdout.decode("utf-8", "replace")))
        return None
    return os.path.join(OUT, name + ".png")


def write_chart(sampler, runs, capacity, per_sim):
    """throughput.dat: time (simulated min), then per backend items/s
    (simulated) over the last SMOOTH samples, then their sum; throughput.png."""
    dat = os.path.join(OUT, "throughput.dat")
    rows = sampler.rows
    smooth = 4  # 2 s of samples: less jitter from the 0.5 s sampling
    with open(dat, "w") as f:
        f.write("# sim_minutes run " + " ".join(n for n, u in sampler.sims) + " total"
                "   (items/s in simulated time, from /_sim/stats served)\n")
        for i in range(smooth, len(rows)):
            t0, _, s0, _ = rows[i - smooth]
            t1, run, s1, _ = rows[i]
            dt = (t1 - t0) * SCALE
            rates = [(b - a) / dt for a, b in zip(s0, s1)]
            tm = (t1 + rows[i - smooth][0]) / 2 * SCALE / 60
            f.write("%.3f %d %s %.4f\n" % (tm, run, " ".join("%.4f" % x for x in rates),
                                           sum(rates)))
    if not shutil.which("gnuplot"):
        log("gnuplot not found (.ci/install-deps demo installs it): no chart, data in " + dat)
        return None
    labels = ""
    for r in runs:
        a, b = r["t0"] * SCALE / 60, r["t1"] * SCALE / 60
        labels += ('set object rect from %.3f, graph 0 to %.3f, graph 1 fc rgb "%s" '
                   'fs solid 0.12 noborder behind\n' % (a, b, COLORS[(r["no"] - 1) % 4]))
        text = ("run %d: -j 5 + -j 200\\nvia proxy" % r["no"] if r.get("both") else
                "run %d: -j %d\\n%s" % (r["no"], r["jobs"], r["route"]))
        labels += ('set label "%s" at %.3f, graph 0.97 center front font ",10"\n' %
                   (text, (a + b) / 2))
    script = """
set terminal pngcairo size 1100,520 font "DejaVu Sans,11"
set output "{png}"
set title "Throughput per backend: the demo's four runs (2 simulated GPUs, 4 slots each)"
set xlabel "time (simulated minutes; the demo runs {scale:g}x faster)"
set ylabel "items/s (simulated time)"
set yrange [0:{ymax:.2f}]
set xrange [0:*]
set autoscale xfixmax
set key outside right top
set grid ytics
{labels}
set arrow from graph 0, first {cap:.4f} to graph 1, first {cap:.4f} nohead dt 2 lc rgb "#555555"
set label "fleet capacity {cap:.2f}/s" at graph 0.01, first {cap:.4f} offset 0,0.6 font ",9"
set arrow from graph 0, first {one:.4f} to graph 1, first {one:.4f} nohead dt 3 lc rgb "#999999"
set label "one GPU {one:.2f}/s" at graph 0.01, first {one:.4f} offset 0,0.6 font ",9"
plot "{dat}" using 1:3 with lines lw 2 lc rgb "#cc3311" title "gpu0", \\
     "{dat}" using 1:4 with lines lw 2 lc rgb "#0077bb" title "gpu1", \\
     "{dat}" using 1:5 with lines lw 1 dt 1 lc rgb "#333333" title "total"
""".format(png=os.path.join(OUT, "throughput.png"), scale=SCALE, ymax=capacity * 1.35,
           labels=labels, cap=capacity, one=per_sim, dat=dat)
    return gnuplot("throughput", script)


def write_shares(run, capacity, per_sim, slots):
    """shares.dat: run 4's /proxy/status samples: time (simulated minutes
    since the batch started), each client's in flight and waiting, and its
    items/s (simulated) from its served count over about 1 s of wall time
    around the sample; shares.png: in flight (stacked) above, items/s below."""
    dat = os.path.join(OUT, "shares.dat")
    rows = sorted((r for r in run["status"] if r[0] >= run["t0"] - 0.05), key=lambda r: r[0])
    names = ("legacy", "batch")
    half = max(1, int(round(0.5 / STATUS_S)))

    def get(row, n, k):
        return row[1][n][k] if n in row[1] else 0

    with open(dat, "w") as f:
        f.write("# sim_minutes legacy_in_flight legacy_waiting batch_in_flight batch_waiting "
                "legacy_items_s batch_items_s   (from /proxy/status clients[], every %g s "
                "wall; items/s in simulated time)\n" % STATUS_S)
        for i, row in enumerate(rows):
            a, b = rows[max(0, i - half)], rows[min(len(rows) - 1, i + half)]
            dt = (b[0] - a[0]) * SCALE
            rates = [(get(b, n, 2) - get(a, n, 2)) / dt if dt > 0 else 0 for n in names]
            f.write("%.3f %d %d %d %d %.4f %.4f\n" % (
                (row[0] - run["t0"]) * SCALE / 60, get(row, "legacy", 0), get(row, "legacy", 1),
                get(row, "batch", 0), get(row, "batch", 1), rates[0], rates[1]))
    if not shutil.which("gnuplot"):
        return None
    L = run["legacy"]
    a, b = (L["t0"] - run["t0"]) * SCALE / 60, (L["t1"] - run["t0"]) * SCALE / 60
    xmax = (run["t1"] - run["t0"]) * SCALE / 60
    script = """
set terminal pngcairo size 1100,760 font "DejaVu Sans,11"
set output "{png}"
set multiplot layout 2,1 title "Run 4: ollama-classify -j 5 (key legacy) beside -j 200 (key batch), through the proxy" font ",12"
set lmargin at screen 0.07
set rmargin at screen 0.73
set xrange [0:{xmax:.3f}]
set grid ytics
set key outside right top
set object 1 rect from {a:.3f}, graph 0 to {b:.3f}, graph 1 fc rgb "#ee7733" fs solid 0.08 noborder behind
set label 1 "the legacy client runs ({nl} items)" at {mid:.3f}, graph 0.94 center front font ",9"

set title "slots in flight per client (stacked), and requests waiting in the proxy" font ",11"
set ylabel "slots in flight"
set yrange [0:{slots_top:.1f}]
set ytics 0,1,{slots} nomirror
set y2label "requests waiting"
set y2range [0:{wmax}]
set y2tics
set arrow 1 from graph 0, first {slots} to graph 1, first {slots} nohead dt 2 lc rgb "#555555" front
set label 2 "fleet: {slots} slots" at graph 0.99, first {slots} right offset 0,0.6 front font ",9"
set arrow 2 from graph 0, first {half_slots} to graph 1, first {half_slots} nohead dt 3 lc rgb "#999999" front
set label 3 "one GPU: {half_slots} slots" at graph 0.99, first {half_slots} right offset 0,0.6 front font ",9"
plot "{dat}" using 1:(0):2 with filledcurves fc rgb "#ee7733" fs solid 0.55 noborder title "legacy in flight", \\
     "{dat}" using 1:2:($2+$4) with filledcurves fc rgb "#228833" fs solid 0.45 noborder title "batch in flight", \\
     "{dat}" using 1:5 axes x1y2 with lines lw 1.5 dt 2 lc rgb "#1b5e20" title "batch waiting (right)", \\
     "{dat}" using 1:3 axes x1y2 with lines lw 1.5 dt 2 lc rgb "#bf360c" title "legacy waiting (right)"

unset arrow 1
unset arrow 2
unset label 2
unset label 3
unset y2label
unset y2tics
set ytics auto mirror
set title "items/s per client (simulated time, from its served count at the proxy)" font ",11"
set xlabel "time since run 4 started (simulated minutes; the demo runs {scale:g}x faster)"
set ylabel "items/s"
set yrange [0:{ymax:.3f}]
set arrow 3 from graph 0, first {cap:.4f} to graph 1, first {cap:.4f} nohead dt 2 lc rgb "#555555"
set label 4 "fleet capacity {cap:.2f}/s" at graph 0.99, first {cap:.4f} right offset 0,0.6 font ",9"
set arrow 4 from graph 0, first {one:.4f} to graph 1, first {one:.4f} nohead dt 3 lc rgb "#999999"
set label 5 "run 1: -j 5 alone on gpu0, {one:.2f}/s" at graph 0.99, first {one:.4f} right offset 0,0.6 font ",9"
plot "{dat}" using 1:6 with lines lw 2.5 lc rgb "#ee7733" title "legacy", \\
     "{dat}" using 1:7 with lines lw 2.5 lc rgb "#228833" title "batch", \\
     "{dat}" using 1:($6+$7) with lines lw 1 lc rgb "#333333" title "both"
unset multiplot
""".format(png=os.path.join(OUT, "shares.png"), nl=L["items"], nb=run["batch"]["items"],
           xmax=xmax, a=a, b=b, mid=(a + b) / 2, slots=slots, slots_top=slots * 1.5,
           half_slots=slots // 2, wmax=240, dat=dat, scale=SCALE, ymax=capacity * 1.45,
           cap=capacity, one=per_sim)
    return gnuplot("shares", script)


def main():
    os.makedirs(OUT, exist_ok=True)
    for prog in ("ollama-sim", "ollama-proxy", "ollama-classify"):
        if not os.access(os.path.join(BUILD, prog), os.X_OK):
            sys.exit("demo: %s/%s is missing: run bash tests/demo.sh (it builds)" % (BUILD, prog))
    n_items = count_items()
    t_start = time.time()

    sims = []
    for i in range(2):
        name = "gpu%d" % i
        p, path = start("sim-" + name, [os.path.join(BUILD, "ollama-sim"), "--host", "127.0.0.1",
                                        "--port", "0"] + SIM_FLAGS)
        sims.append((name, "http://127.0.0.1:%d" % wait_listen(name, p, path)))
    conf = os.path.join(OUT, "ollama-proxy.conf")
    with open(conf, "w") as f:
        f.write('# written by tests/demo/demo.py: the proxy in front of the two sims; one key\n'
                '# per client (the queue is shared fairly between them), "demo" for /proxy/status\n'
                'listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n'
                'auth = { keys = (\n%s\n); };\n' % (
                    ",\n".join('  { name = "%s"; url = "%s"; max_concurrent = %d; }' %
                               (n, u, PARALLEL) for n, u in sims),
                    ",\n".join('  { name = "%s"; key = "%s"; admin = %s; }' %
                               (n, k, "true" if a else "false") for n, k, a in KEYS)))
    p, path = start("proxy", [os.path.join(BUILD, "ollama-proxy"), "-c", conf])
    proxy = "http://127.0.0.1:%d" % wait_listen("ollama-proxy", p, path)
    slots = len(sims) * PARALLEL
    log("backends: %s and %s: ollama-sim --parallel %d --ttft-ms %d --tokens-per-s %g "
        "--time-scale %g" % (sims[0][1], sims[1][1], PARALLEL, TTFT_MS, TOKENS_PER_S, SCALE))
    log("proxy:    %s (max_concurrent %d per backend; keys %s, the queue shared fairly "
        "between them)" % (proxy, PARALLEL, ", ".join(n for n, k, a in KEYS if not a)))
    log("items:    %d from tests/data/items.jsonl, labels from tests/data/labels.txt" % n_items)
    log()

    sampler = Sampler(sims)
    sampler.start()
    plan = [(5, sims[0][1], None, "straight to gpu0", "the seed's setup: 5 in flight, one GPU"),
            (5, proxy, "legacy", "via proxy", "the same client through the proxy"),
            (200, proxy, "batch", "via proxy", "200 in flight through the proxy")]
    runs = []
    for no, (jobs, url, key, route, what) in enumerate(plan, 1):
        r = classify(no, jobs, url, key, n_items, sampler, what)
        r["route"] = route
        runs.append(r)
        time.sleep(1.0)  # a gap in the chart between runs
    runs.append(run_both(len(plan) + 1, proxy, n_items, sampler, slots))
    time.sleep(1.0)
    sampler.halt.set()
    sampler.join()

    # Capacity of one backend = its rate with all 4 slots busy. Run 1 is that
    # measurement: 5 in flight on one sim keep its 4 slots busy all the time
    # (the 5th request waits for the next free slot), and the sampler checks it.
    busy = [row[3][0] for row in sampler.rows if row[1] == 1]
    mid = busy[len(busy) // 10: len(busy) - len(busy) // 10] or busy
    per_sim = runs[0]["items"] / (runs[0]["wall"] * SCALE)
    capacity = len(sims) * per_sim

    r4 = runs[-1]
    L, B, W = r4["legacy"], r4["batch"], r4["window"]
    # How the slots were shared while both ran: the mean of the samples.
    inside = [row[1] for row in r4["status"] if L["t0"] + 0.3 <= row[0] <= L["t1"] - 0.1]
    mean = {n: sum(c[n][0] for c in inside if n in c) / max(1, len(inside))
            for n in ("legacy", "batch")}
    waiting = [c["batch"][1] for c in inside if "batch" in c]
    log()
    log(table(runs, capacity))
    log()
    log("items/s and real time are simulated real time: the sims run %gx faster, so a wall "
        "second is %g s." % (SCALE, SCALE))
    log("capacity used = items/s / fleet capacity; fleet capacity = %d backends x %.2f items/s "
        "= %.2f items/s," % (len(sims), per_sim, capacity))
    log("  where %.2f items/s is one sim with its %d slots busy, measured by run 1 "
        "(gpu0 had %d in flight in %d%% of the samples)." %
        (per_sim, PARALLEL, PARALLEL,
         round(100 * sum(1 for b in mid if b >= PARALLEL) / max(1, len(mid)))))
    at4 = sum(1 for c in inside if c.get("legacy", (0,))[0] >= PARALLEL)
    lrate = L["items"] / (L["wall"] * SCALE)
    notes = (
        "run 4: two clients through the proxy at once, told apart by their keys (legacy and batch, "
        "the same priority and weight). The batch (-j 200, all {n:,} items) starts first; once it "
        "holds all {slots} slots with {w0} more waiting, the -j 5 client of runs 1-2 classifies the "
        "first {nl} items and ends long before the batch, so every one of its requests met a full "
        "queue. Run 4's rows are measured over the legacy client's {lw:.1f} s; * = {n:,} items at "
        "its rate ({pct:.0f}% of run 1's {r1:.2f} items/s). It held {par} slots in {at4:.0f}% of "
        "the samples of /proxy/status ({lm:.2f} on average, the batch {bm:.2f} with {wmin}-{wmax} "
        "waiting){why}. The batch's whole run: {n:,} items in {bw:.1f} s ({brt}; run 3 alone "
        "{r3}), the slots the legacy client left while it ran, then the whole fleet.").format(
            n=n_items, slots=slots, w0=W["batch_waiting_at_start"], nl=L["items"], lw=L["wall"],
            pct=100 * lrate / per_sim, r1=per_sim, par=PARALLEL,
            at4=100 * at4 / max(1, len(inside)), lm=mean["legacy"], bm=mean["batch"],
            wmin=min(waiting or [0]), wmax=max(waiting or [0]),
            why=(": when two of its requests end together, the slot the second frees goes to "
                 "the batch (its next request has not reached the proxy yet, and no slot is "
                 "kept idle while requests wait) and it gets one back when a batch request ends"
                 if mean["legacy"] < PARALLEL - 0.01 else ""),
            bw=B["wall"], brt=real_time(B["wall"] * SCALE),
            r3=real_time(runs[2]["wall"] * SCALE))
    log(wrap(notes))
    png = write_chart(sampler, runs, capacity, per_sim)
    shares = write_shares(r4, capacity, per_sim, slots)
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump({"time_scale": SCALE, "per_backend_capacity": per_sim,
                   "fleet_capacity": capacity,
                   "runs": [{k: v for k, v in r.items() if k != "status"} for r in runs],
                   "run4_mean_in_flight": mean}, f, indent=1)
    log()
    log("results, logs and data: %s/" % os.path.relpath(OUT))
    if png:
        log("chart: %s (throughput per backend)" % os.path.relpath(png))
    if shares:
        log("chart: %s (run 4: each client's slots and items/s)" % os.path.relpath(shares))
    log("demo took %.0f s" % (time.time() - t_start))


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
