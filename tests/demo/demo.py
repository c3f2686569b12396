#!/usr/bin/env python3
"""demo.py - the README's demo, driven by tests/demo.sh once the programs are
built: two simulated GPUs, the proxy in front of them, and the bundled 1,525
items classified three ways. Standard library only.

  run 1  ollama-classify -j 5    straight to gpu0       (the seed's setup)
  run 2  ollama-classify -j 5    through the proxy
  run 3  ollama-classify -j 200  through the proxy

The two ollama-sim backends stand for two GPUs, each with OLLAMA_NUM_PARALLEL=4
(--parallel 4, and max_concurrent = 4 in the proxy), calibrated so that 5
requests in flight against one of them give the seed's 0.7 items/s (1,525
items in 36 minutes), and run --time-scale times faster than real time so the
whole demo takes about a minute. Every rate and duration printed is in
simulated real time (measured wall time x the time scale).

Writes into build/demo/ (or $DEMO_DIR): the results of each run, every
program's log, throughput.dat (a sample of each sim's /_sim/stats every 0.5 s)
and throughput.png (gnuplot). Everything it starts it stops, by PID, also on
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


def get_json(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
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


def count_items():
    with open(ITEMS, "rb") as f:
        return sum(1 for line in f if line.strip())


def classify(no, jobs, url, n_items, sampler, what):
    res = os.path.join(OUT, "run%d.jsonl" % no)
    if os.path.exists(res):
        os.unlink(res)  # a fresh run, not a resume
    argv = [os.path.join(BUILD, "ollama-classify"), "-i", ITEMS, "-o", res, "-m", MODEL,
            "-l", "@" + LABELS, "-j", str(jobs), "--url", url]
    log("run %d: %s" % (no, what))
    log("       %s" % " ".join(["ollama-classify"] + argv[1:]).replace(SRC + "/", ""))
    sampler.run_no = no
    before = sampler.sample()[2]
    t0 = time.time()
    p, path = start("classify-run%d" % no, argv)
    tty = sys.stdout.isatty()
    last_print = t0
    while p.poll() is None:
        time.sleep(0.25)
        if sampler.rows:
            done = sum(sampler.rows[-1][2]) - sum(before)
            now = time.time()
            if tty:
                sys.stdout.write("\r       %d/%d items, %.0f s " % (done, n_items, now - t0))
                sys.stdout.flush()
            elif now - last_print >= 5:
                log("       %d/%d items, %.0f s" % (done, n_items, now - t0))
                last_print = now
    wall = time.time() - t0
    if tty:
        sys.stdout.write("\r" + " " * 60 + "\r")
    after = sampler.sample()[2]
    sampler.run_no = 0
    labelled = 0
    with open(res) as f:
        for line in f:
            if line.strip() and json.loads(line).get("label") is not None:
                labelled += 1
    if p.returncode != 0 or labelled != n_items:
        with open(path, "rb") as f:
            tail = f.read().decode("utf-8", "replace")[-1500:]
        raise RuntimeError("run %d: ollama-classify exited %s with %d of %d items labelled "
                           "(log %s):\n%s" % (no, p.returncode, labelled, n_items, path, tail))
    per_backend = [a - b for a, b in zip(after, before)]
    log("       done: %d items in %.1f s, per backend %s" %
        (labelled, wall, " ".join("%s %d" % (s[0], n) for s, n in zip(sampler.sims, per_backend))))
    return {"no": no, "jobs": jobs, "what": what, "wall": wall, "items": labelled,
            "per_backend": per_backend, "t0": t0 - sampler.t0, "t1": t0 - sampler.t0 + wall}


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
        rate = r["items"] / (r["wall"] * SCALE)
        rows.append(("%d" % r["no"], "-j %d" % r["jobs"], r["route"], "%.2f" % rate,
                     "%.1f s" % r["wall"], real_time(r["wall"] * SCALE),
                     "%.0f%%" % (100 * rate / capacity),
                     "/".join(str(n) for n in r["per_backend"])))
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w[i]) if i in (1, 2) else c.rjust(w[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


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
    png = os.path.join(OUT, "throughput.png")
    if not shutil.which("gnuplot"):
        log("gnuplot not found (.ci/install-deps demo installs it): no chart, data in " + dat)
        return None
    labels = ""
    for r in runs:
        a, b = r["t0"] * SCALE / 60, r["t1"] * SCALE / 60
        labels += ('set object rect from %.3f, graph 0 to %.3f, graph 1 fc rgb "%s" '
                   'fs solid 0.12 noborder behind\n' %
                   (a, b, ["#4477aa", "#ee7733", "#228833"][(r["no"] - 1) % 3]))
        labels += ('set label "run %d: -j %d\\n%s" at %.3f, graph 0.97 center front '
                   'font ",10"\n' % (r["no"], r["jobs"], r["route"], (a + b) / 2))
    script = """
set terminal pngcairo size 1100,520 font "DejaVu Sans,11"
set output "{png}"
set title "Throughput per backend: 1,525 items three ways (2 simulated GPUs, 4 slots each)"
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
""".format(png=png, scale=SCALE, ymax=capacity * 1.35, labels=labels, cap=capacity,
           one=per_sim, dat=dat)
    with open(os.path.join(OUT, "throughput.gp"), "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", os.path.join(OUT, "throughput.gp")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        log("gnuplot failed:\n" + r.stdout.decode("utf-8", "replace"))
        return None
    return png


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
        f.write('# written by tests/demo/demo.py: the proxy in front of the two sims\n'
                'listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n' % ",\n".join(
                    '  { name = "%s"; url = "%s"; max_concurrent = %d; }' % (n, u, PARALLEL)
                    for n, u in sims))
    p, path = start("proxy", [os.path.join(BUILD, "ollama-proxy"), "-c", conf])
    proxy = "http://127.0.0.1:%d" % wait_listen("ollama-proxy", p, path)
    log("backends: %s and %s: ollama-sim --parallel %d --ttft-ms %d --tokens-per-s %g "
        "--time-scale %g" % (sims[0][1], sims[1][1], PARALLEL, TTFT_MS, TOKENS_PER_S, SCALE))
    log("proxy:    %s (max_concurrent %d per backend)" % (proxy, PARALLEL))
    log("items:    %d from tests/data/items.jsonl, labels from tests/data/labels.txt" % n_items)
    log()

    sampler = Sampler(sims)
    sampler.start()
    plan = [(5, sims[0][1], "straight to gpu0", "the seed's setup: 5 in flight, one GPU"),
            (5, proxy, "via proxy", "the same client through the proxy"),
            (200, proxy, "via proxy", "200 in flight through the proxy")]
    runs = []
    for no, (jobs, url, route, what) in enumerate(plan, 1):
        r = classify(no, jobs, url, n_items, sampler, what)
        r["route"] = route
        runs.append(r)
        time.sleep(1.0)  # a gap in the chart between runs
    sampler.halt.set()
    sampler.join()

    # Capacity of one backend = its rate with all 4 slots busy. Run 1 is that
    # measurement: 5 in flight on one sim keep its 4 slots busy all the time
    # (the 5th request waits for the next free slot), and the sampler checks it.
    busy = [row[3][0] for row in sampler.rows if row[1] == 1]
    mid = busy[len(busy) // 10: len(busy) - len(busy) // 10] or busy
    per_sim = runs[0]["items"] / (runs[0]["wall"] * SCALE)
    capacity = len(sims) * per_sim

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
    png = write_chart(sampler, runs, capacity, per_sim)
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump({"time_scale": SCALE, "per_backend_capacity": per_sim,
                   "fleet_capacity": capacity, "runs": runs}, f, indent=1)
    log()
    log("results, logs and data: %s/" % os.path.relpath(OUT))
    if png:
        log("chart: %s" % os.path.relpath(png))
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
