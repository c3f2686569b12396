#!/usr/bin/env python3
"""bench_classify.py - how fast is ollama-classify, and how much of a fleet
does it keep busy.

  python3 tests/bench/bench_classify.py [--build DIR] [--items N] [ceiling|fleet ...]
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


def run_classifier(harness, url, items, out, jobs, core=0):
    """Run to the end; returns (seconds, CPU seconds (user+sys, from wait4:
    the counters of /proc/PID/stat), max RSS MiB, exit code)."""
    if os.path.exists(out):
        os.unlink(out)
    argv = ["taskset", "-c", str(core), harness.binary("ollama-classify"), "-i", items, "-o",
            out, "-m", "llama3", "-l", "@" + LABELS, "--url", url, "-j", str(jobs)]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="*", default=["ceiling", "fleet"])
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(SRC, "build")))
    ap.add_argument("--items", type=int, default=50000, help="items for the ceiling runs")
    ap.add_argument("--fleet-items", type=int, default=1500, help="items for the fleet runs")
    ap.add_argument("--url", help="fleet: an existing endpoint (e.g. the proxy)")
    ap.add_argument("--slots", type=int, default=8, help="fleet: parallel slots behind --url")
    args = ap.parse_args()
    os.environ["OP_BUILD_DIR"] = os.path.abspath(args.build)
    import harness
    tmp = tempfile.mkdtemp(prefix="bench-classify-")
    try:
        if "ceiling" in args.what:
            ceiling(harness, args, tmp)
        if "fleet" in args.what:
            fleet(harness, args, tmp)
    finally:
        harness._cleanup()


if __name__ == "__main__":
    main()
