#!/usr/bin/env python3
"""bench_classify.py - how fast is ollama-classify, and how much of a fleet
does it keep busy.

  python3 tests/bench/bench_classify.py [--build DIR] [--items N] [ceiling|fleet|trust ...]
  python3 tests/bench/bench_classify.py fleet --url http://127.0.0.1:11434 --slots 8

ceiling: against a zero-delay ollama-sim (--ttft-ms 0 --tokens-per-s 0
  --parallel 4096), the classifier on core 0 and the sim on core 1 (taskset),
  N generated items (default 50,000) at -j 200 and -j 2000: items/s, CPU per
  item (user+sys of the classifier from wait4, the same counters as
  /proc/PID/stat utime+stime) and max RSS.
fleet: ollama-proxy in front of two sims with realistic timing, scaled
  (--parallel 4 --ttft-ms 200 --tokens 10 --tokens-per-s 40 --time-scale 20;
  proxy max_concurrent 4 each: 8 slots), or against --url with --slots
  parallel slots behind it.
  The service time S at saturation is the mean request time at -j SLOTS;
  capacity = SLOTS / S; then items/s at -j 5 and -j 200 as a share of it.
trust: the cost of issue 24's options on the bundled 1,525 items
  (tests/data/items.jsonl) at -j 64: items/s plain, with --examples (12
  examples, 2 a label, taken from generated items beyond the bundled ones),
  with --confidence (logprobs: top_logprobs 11) and with both, as ratios to
  plain in the same round; rounds interleaved (order reversed every other
  round), medians. Two sims: "gpu" (--gpu default, the gpt-oss-20b curves,
  --parallel 8, --time-scale 10: prompt tokens cost time, a slot's kept
  prompt is re-used) and "zero" (no delay: the client's and the wire's cost
  alone). Then one --min-confidence 0.8 run with gold: the share marked for
  review and the accuracy of the marked and unmarked parts.
Standard library only; starts and stops its own processes by pid.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
sys.path.insert(0, os.path.join(SRC, "tests", "data"))

LABELS = os.path.join(SRC, "tests", "data", "labels.txt")


def make_input(path, n):
    import gen_items
    with open(path, "w", encoding="utf-8") as f:
        for it in gen_items.make_items(n):
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def start_sim(harness, core, *args):
    argv = ["taskset", "-c", str(core), harness.binary("ollama-sim"), "--port", "0",
            "--models", "llama3:latest"] + [str(a) for a in args]
    p = harness.Proc(argv, name="ollama-sim")
    p.wait_listen()
    return p, "http://127.0.0.1:%d" % p.port


def run_classifier(harness, url, items, out, jobs, core=0, extra=()):
    """Run to the end; returns (seconds, CPU seconds (user+sys, from wait4:
    the counters of /proc/PID/stat), max RSS MiB, exit code)."""
    if os.path.exists(out):
        os.unlink(out)
    argv = ["taskset", "-c", str(core), harness.binary("ollama-classify"), "-i", items, "-o",
            out, "-m", "llama3", "-l", "@" + LABELS, "--url", url, "-j", str(jobs)] + \
        [str(a) for a in extra]
    errf = open(out + ".stderr", "wb")
    t0 = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf)
    hwm = 0.0
    while True:
        # VmHWM of the exec'd image (ru_maxrss would include the forked
        # Python's pages from before the exec).
        hwm = max(hwm, vm_hwm_mib(p.pid))
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    errf.close()
    with open(out + ".stderr", "rb") as f:
        err = f.read()
    secs = time.time() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(err.decode("utf-8", "replace")[-2000:])
    return secs, ru.ru_utime + ru.ru_stime, hwm, p.returncode


def vm_hwm_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def count_items(path):
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def ceiling(harness, args, tmp):
    items = os.path.join(tmp, "big.jsonl")
    make_input(items, args.items)
    sim, url = start_sim(harness, 1, "--ttft-ms", 0, "--tokens-per-s", 0, "--parallel", 4096)
    print("client ceiling: %d items, zero-delay sim on core 1, classifier on core 0" % args.items)
    print("  %-7s %10s %12s %12s %10s" % ("-j", "items/s", "CPU us/item", "CPU share", "RSS MiB"))
    for jobs in (200, 2000):
        secs, cpu, rss, rc = run_classifier(harness, url, items, os.path.join(tmp, "out.jsonl"),
                                            jobs)
        print("  %-7d %10.0f %12.1f %11.0f%% %10.1f%s" % (
            jobs, args.items / secs, cpu / args.items * 1e6, 100 * cpu / secs, rss,
            "" if rc == 0 else "  (exit %d)" % rc))
    sim.stop()


def mean_ms(path):
    """Mean request time of a run (the ms of each line are whole ms: the
    mean of many keeps the fraction a median would lose)."""
    with open(path) as f:
        return statistics.mean(json.loads(l)["ms"] for l in f if '"label":"' in l)


def fleet(harness, args, tmp):
    items = os.path.join(tmp, "fleet.jsonl")
    make_input(items, args.fleet_items)
    procs = []
    url, slots = args.url, args.slots
    if not url:
        # Two "GPUs" of 4 slots, and ollama-proxy in front of them.
        rows = []
        for i in range(2):
            sim, surl = start_sim(harness, 1, "--parallel", 4, "--ttft-ms", 200, "--tokens", 10,
                                  "--tokens-per-s", 40, "--time-scale", 20)
            procs.append(sim)
            rows.append('{ name = "gpu%d"; url = "%s"; max_concurrent = 4; }' % (i, surl))
        conf = os.path.join(tmp, "proxy.conf")
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:0";\nbackends = ( %s );\n' % ", ".join(rows))
        px = harness.Proc(["taskset", "-c", "1", harness.binary("ollama-proxy"), "-c", conf],
                          name="ollama-proxy")
        px.wait_listen()
        procs.append(px)
        url, slots = "http://127.0.0.1:%d" % px.port, 8
    out = os.path.join(tmp, "fleet-out.jsonl")
    # Service time at saturation: every slot busy, nothing queued.
    run_classifier(harness, url, items, out, slots)
    service = mean_ms(out) / 1000.0
    capacity = slots / service
    print("fleet use: %s, %d slots, service time at saturation %.1f ms, capacity %.1f items/s"
          % (url, slots, service * 1000, capacity))
    print("  %-7s %10s %10s" % ("-j", "items/s", "share"))
    for jobs in (5, 200):
        secs, _, _, rc = run_classifier(harness, url, items, out, jobs)
        rate = args.fleet_items / secs
        print("  %-7d %10.1f %9.1f%%%s" % (jobs, rate, 100 * rate / capacity,
                                          "" if rc == 0 else "  (exit %d)" % rc))
    for p in procs:
        p.stop()


ITEMS = os.path.join(SRC, "tests", "data", "items.jsonl")


def make_examples(path, per_label=2):
    """PER_LABEL examples of each label from generated items that are not
    among the bundled ones (gen_items continues the same sequence)."""
    import gen_items
    bundled = count_items(ITEMS)
    taken = {}
    with open(path, "w", encoding="utf-8") as f:
        for it in gen_items.make_items(bundled + 200)[bundled:]:
            if taken.get(it["gold"], 0) < per_label:
                taken[it["gold"]] = taken.get(it["gold"], 0) + 1
                f.write(json.dumps({"text": it["text"], "label": it["gold"]}) + "\n")


def review_figures(out, threshold):
    """Share marked for review and the accuracy of each part, from a
    results file written with --keep-fields gold."""
    with open(out) as f:
        rows = [json.loads(l) for l in f]
    marked = [r for r in rows if r.get("confidence", 1) < threshold]
    rest = [r for r in rows if r.get("confidence", 1) >= threshold]
    acc = lambda xs: 100.0 * sum(r["label"] == r["gold"] for r in xs) / max(1, len(xs))  # noqa
    return len(rows), len(marked), acc(marked), acc(rest), acc(rows)


def trust(harness, args, tmp):
    examples = os.path.join(tmp, "examples.jsonl")
    make_examples(examples)
    n = count_items(ITEMS)
    configs = [("plain", []), ("examples", ["--examples", examples]),
               ("logprobs", ["--confidence"]),
               ("examples+logprobs", ["--examples", examples, "--confidence"])]
    sims = [("gpu", ["--gpu", "default", "--parallel", 8, "--time-scale", 10]),
            ("zero", ["--ttft-ms", 0, "--tokens-per-s", 0, "--parallel", 4096])]
    out = os.path.join(tmp, "trust-out.jsonl")
    print("issue 24's options: the bundled %d items, -j 64, %d rounds (median items/s; "
          "ratio to plain in the same round)" % (n, args.rounds))
    for sim_name, sim_args in sims:
        sim, url = start_sim(harness, 1, *sim_args)
        rates = {c[0]: [] for c in configs}
        ratios = {c[0]: [] for c in configs}
        cpus = {c[0]: [] for c in configs}
        for rnd in range(args.rounds):
            order = configs if rnd % 2 == 0 else configs[::-1]
            got = {}
            for name, extra in order:
                secs, cpu, _, rc = run_classifier(harness, url, ITEMS, out, 64, extra=extra)
                if rc != 0:
                    print("  %s %s: exit %d" % (sim_name, name, rc))
                got[name] = n / secs
                cpus[name].append(cpu / n * 1e6)
            for name, _ in configs:
                rates[name].append(got[name])
                ratios[name].append(got[name] / got["plain"])
        print("  sim %s (%s)" % (sim_name, " ".join(str(a) for a in sim_args)))
        print("    %-20s %10s %8s %22s" % ("", "items/s", "ratio", "classifier CPU us/item"))
        for name, _ in configs:
            print("    %-20s %10.1f %8.3f %22.1f" % (name, statistics.median(rates[name]),
                                                      statistics.median(ratios[name]),
                                                      statistics.median(cpus[name])))
        sim.stop()
    sim, url = start_sim(harness, 1, *sims[0][1])
    run_classifier(harness, url, ITEMS, out, 64,
                   extra=["--min-confidence", 0.8, "--keep-fields", "gold"])
    sim.stop()
    total, marked, acc_marked, acc_rest, acc_all = review_figures(out, 0.8)
    print("  --min-confidence 0.8: %d of %d marked for review (%.1f%%); accuracy against gold: "
          "marked %.1f%%, not marked %.1f%%, all %.1f%%"
          % (marked, total, 100.0 * marked / total, acc_marked, acc_rest, acc_all))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="*", default=["ceiling", "fleet", "trust"])
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(SRC, "build")))
    ap.add_argument("--items", type=int, default=50000, help="items for the ceiling runs")
    ap.add_argument("--fleet-items", type=int, default=1500, help="items for the fleet runs")
    ap.add_argument("--url", help="fleet: an existing endpoint (e.g. the proxy)")
    ap.add_argument("--slots", type=int, default=8, help="fleet: parallel slots behind --url")
    ap.add_argument("--rounds", type=int, default=3, help="trust: rounds of the four runs")
    args = ap.parse_args()
    os.environ["OP_BUILD_DIR"] = os.path.abspath(args.build)
    import harness
    tmp = tempfile.mkdtemp(prefix="bench-classify-")
    try:
        if "ceiling" in args.what:
            ceiling(harness, args, tmp)
        if "fleet" in args.what:
            fleet(harness, args, tmp)
        if "trust" in args.what:
            trust(harness, args, tmp)
    finally:
        harness._cleanup()


if __name__ == "__main__":
    main()
