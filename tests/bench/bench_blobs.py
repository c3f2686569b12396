#!/usr/bin/env python3
"""bench_blobs.py - a blob upload (what `ollama create` sends first)
through ollama-proxy to 1 and 3 backends, against the same upload sent
directly to one backend, in the same run: MB/s, and the proxy's memory
(peak RSS over its RSS before the upload, sampled every 10 ms, and its
VmHWM).

Usage: bench_blobs.py [--mib N] [--rounds N] [--build DIR] [--chunked]

The body is N MiB (default 1024) of a repeated 1 MiB block, generated as it
is sent (the client holds 1 MiB), with a Content-Length (or chunked, as
the ollama CLI sends it, with --chunked). Each backend is an ollama-sim,
which digests the upload as it arrives (SHA-256) and keeps nothing: the
backends' hashing is part of the figure, as the disk is for Ollama. Every
process is started and stopped by its PID; all traffic is on 127.0.0.1.
"""
import argparse
import hashlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
TMP = tempfile.mkdtemp(prefix="bench-blobs-")
BLOCK = 1 << 20
_procs = []


class Proc:
    def __init__(self, name, argv):
        self.log = os.path.join(TMP, "%s-%d.log" % (name, len(_procs)))
        self.logf = open(self.log, "wb")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.p.pid
        _procs.append(self)
        deadline = time.time() + 10
        while time.time() < deadline:
            m = re.search(rb"listening on \S*:(\d+)", open(self.log, "rb").read())
            if m:
                self.port = int(m.group(1))
                return
            time.sleep(0.02)
        sys.exit("%s did not start: see %s" % (name, self.log))

    def cpu(self):
        """utime + stime, seconds."""
        with open("/proc/%d/stat" % self.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")

    def status(self, key):
        with open("/proc/%d/status" % self.pid) as f:
            return int(next(l for l in f if l.startswith(key)).split()[1])

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()


def cleanup():
    for p in _procs:
        if p.p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)


def block(i, seed):
    """The I-th 1 MiB block of the body (the first starts with GGUF)."""
    b = hashlib.sha256(b"%s-%d" % (seed, i % 7)).digest() * (BLOCK // 32)
    return b"GGUF" + b[4:] if i == 0 else b


def digest(mib, seed):
    h = hashlib.sha256()
    for i in range(mib):
        h.update(block(i, seed))
    return "sha256:" + h.hexdigest()


def upload(port, d, mib, seed, chunked):
    """Send the body; returns (seconds, status line)."""
    s = socket.create_connection(("127.0.0.1", port))
    head = "POST /api/blobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % d
    head += ("Transfer-Encoding: chunked\r\n" if chunked else
             "Content-Length: %d\r\n" % (mib * BLOCK))
    t0 = time.monotonic()
    s.sendall(head.encode() + b"\r\n")
    for i in range(mib):
        b = block(i, seed)
        s.sendall(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
    if chunked:
        s.sendall(b"0\r\n\r\n")
    s.settimeout(600)
    answer = s.recv(4096)
    dt = time.monotonic() - t0
    s.close()
    return dt, answer.split(b"\r\n")[0].decode()


class Sampler(threading.Thread):
    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop_ = proc, 0, False

    def run(self):
        while not self.stop_:
            self.peak = max(self.peak, self.proc.status("VmRSS"))
            time.sleep(0.01)


def sim(build):
    return Proc("ollama-sim", [os.path.join(build, "ollama-sim"), "--port", "0"])


def proxy(build, sims):
    conf = os.path.join(TMP, "proxy-%d.conf" % len(_procs))
    rows = ",\n".join('  { name = "s%d"; url = "http://127.0.0.1:%d"; max_concurrent = 4; }' %
                      (i, s.port) for i, s in enumerate(sims))
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n%s\n);\n' % rows)
    return Proc("ollama-proxy", [os.path.join(build, "ollama-proxy"), "-c", conf])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunked", action="store_true")
    ap.add_argument("--build", default=os.environ.get("OP_BUILD_DIR",
                                                      os.path.join(SRC, "build-bench")))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    try:
        run(args, build)
    finally:
        cleanup()


def run(args, build):
    print("bench_blobs: %s, %d CPUs, build %s, %d MiB%s, %d round(s); logs in %s" % (
        time.strftime("%Y-%m-%d %H:%M"), os.cpu_count(), build, args.mib,
        " chunked" if args.chunked else "", args.rounds, TMP))
    res = {}
    for rnd in range(args.rounds):
        for target in ("direct", "proxy-1", "proxy-3"):
            sims = [sim(build) for _ in range(1 if target != "proxy-3" else 3)]
            px = proxy(build, sims) if target != "direct" else None
            time.sleep(0.3)  # discovery
            seed = b"%s-%d" % (target.encode(), rnd)
            d = digest(args.mib, seed)
            port = px.port if px else sims[0].port
            base = px.status("VmRSS") if px else 0
            c0 = px.cpu() if px else 0
            sm = Sampler(px) if px else None
            if sm:
                sm.start()
            dt, st = upload(port, d, args.mib, seed, args.chunked)
            if sm:
                sm.stop_ = True
                sm.join()
            if not st.startswith("HTTP/1.1 201"):
                sys.exit("%s: %s (logs in %s)" % (target, st, TMP))
            r = {"mb_s": args.mib * BLOCK / dt / 1e6, "s": dt}
            if px:
                r.update(base=base, peak=sm.peak, hwm=px.status("VmHWM"),
                         cpu_s_gib=(px.cpu() - c0) / (args.mib / 1024))
            res.setdefault(target, []).append(r)
            print("  round %d %-8s %7.1f MB/s%s" % (
                rnd + 1, target, r["mb_s"],
                "  RSS %d -> peak %d KiB (HWM %d), proxy CPU %.2f s/GiB" % (
                    r["base"], r["peak"], r["hwm"], r["cpu_s_gib"]) if px else ""))
            for p in ([px] if px else []) + sims:
                p.stop()
    med = statistics.median
    print("\n== %d MiB blob upload%s, median of %d rounds" % (
        args.mib, " (chunked)" if args.chunked else "", args.rounds))
    print("target    MB/s    x direct  proxy RSS growth  proxy VmHWM  proxy CPU s/GiB")
    d = med([r["mb_s"] for r in res["direct"]])
    for t in ("direct", "proxy-1", "proxy-3"):
        rs = res[t]
        mb = med([r["mb_s"] for r in rs])
        mem = ("%6.1f MiB" % (med([r["peak"] - r["base"] for r in rs]) / 1024),
               "%6.1f MiB" % (med([r["hwm"] for r in rs]) / 1024),
               "%.2f" % med([r["cpu_s_gib"] for r in rs])) if t != "direct" else ("", "", "")
        print("%-8s  %6.1f  %5.2f     %-16s  %-11s  %s" % (t, mb, mb / d, *mem))
    print("proxy-N: through the proxy to N backends at once (each byte sent N times); the "
          "backends hash what they get on the same 2 cores")


if __name__ == "__main__":
    main()
