"""harness.py - start the project's real programs on ephemeral ports and talk
to them over real sockets. Standard library only.

Every server program logs a line containing "listening on HOST:PORT" once it
accepts connections; started with port 0 it picks a free port itself, so
tests never race each other for ports under `ctest -j`.

A test script defines functions named test_* and ends with run(globals()).

A test that cannot run here (a tool it needs is absent: chromium, docker,
promtool...) calls skip("why") or need_tool(...): it is reported SKIP, not
PASS. When every test of a script skipped, or the script called
skip_all("why"), the script exits SKIP_RC (77), which ctest shows as
skipped (op_py_test sets SKIP_RETURN_CODE 77); a failure still exits 1.
"""
import atexit
import http.client as httpclient
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SRC = os.environ.get("OP_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("OP_BUILD_DIR") or os.path.join(SRC, "build")
SANITIZE = os.environ.get("OP_SANITIZE", "").upper() in ("1", "ON", "TRUE", "YES")
# Everything runs several times slower under the sanitizers: wall-clock
# limits in tests are multiplied by SLOW, never tightened.
# ASan keeps freed memory in a quarantine (256 MiB by default): a test that
# judges a process's RSS gives it a small one (SMALL_QUARANTINE).
SLOW = 4.0 if SANITIZE else 1.0
DATA = os.path.join(SRC, "tests", "data")
SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"}

_procs = []
_tmp = tempfile.mkdtemp(prefix="optest-")


def tmpdir():
    """A directory for this test run's files (removed by nobody: logs stay
    for a post-mortem under /tmp)."""
    return _tmp


def binary(name):
    return os.path.join(BUILD, name)


class Proc:
    """A program of ours, started in its own process group, logs to a file."""

    def __init__(self, args, name=None, env=None, stdin=None, cwd=None):
        self.name = name or os.path.basename(args[0])
        self.log = os.path.join(_tmp, "%s-%d.log" % (self.name, len(_procs)))
        self.logf = open(self.log, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            e.update(env)
        self.p = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  env=e, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid
        self.port = None
        _procs.append(self)

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_listen(self, timeout=10.0):
        """Wait for the "listening on HOST:PORT" line; returns the port."""
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            m = re.search(r"listening on \S*:(\d+)", self.output())
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.p.poll() is not None:
                raise AssertionError("%s exited %s before listening:\n%s" %
                                     (self.name, self.p.returncode, self.tail()))
            time.sleep(0.02)
        raise AssertionError("%s did not listen within %.0fs:\n%s" %
                             (self.name, timeout * SLOW, self.tail()))

    def tail(self, n=40):
        return "\n".join(self.output().splitlines()[-n:])

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=10.0):
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
        self.logf.close()
        return self.p.returncode

    def kill(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait()
        self.logf.close()


def _cleanup():
    for p in _procs:
        try:
            p.kill()
        except Exception:
            pass


atexit.register(_cleanup)


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lowercased names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def http(method, url, body=None, headers=None, timeout=30.0):
    """One request on a fresh connection. URL is http://host:port/path.
    BODY may be bytes, str or a JSON-able object."""
    m = re.match(r"http://([^/:]+):(\d+)(/.*)?$", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3) or "/"
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    c = httpclient.HTTPConnection(host, port, timeout=timeout * SLOW)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def post(url, obj, **kw):
    return http("POST", url, obj, **kw)


def get(url, **kw):
    return http("GET", url, **kw)


class Sim:
    """An ollama-sim process. ARGS are extra flags, e.g. "--parallel", "2".
    PORT: 0 for a free one; a port a stopped Sim had, to restart "the same
    backend" with other flags."""

    def __init__(self, *args, models="llama3:latest", port=0):
        argv = [binary("ollama-sim"), "--port", str(port)]
        if models and "--models" not in args:
            argv += ["--models", models]
        argv += [str(a) for a in args]
        self.proc = Proc(argv, name="ollama-sim")
        self.port = self.proc.wait_listen()
        self.url = "http://127.0.0.1:%d" % self.port

    def stats(self):
        return get(self.url + "/_sim/stats").json()

    def reset(self):
        return post(self.url + "/_sim/reset", {})

    def stop(self):
        return self.proc.stop()

    def kill(self):
        self.proc.kill()


def write_proxy_conf(path, backends, extra="", listen="127.0.0.1:0"):
    """Write a proxy config: BACKENDS is a list of (name, url, max_concurrent)
    or (name, url, max_concurrent, more settings of that backend, e.g.
    "adaptive = true;"), EXTRA more config text. Written aside and renamed,
    so that a proxy reloading it never reads half a file."""
    rows = ",\n".join('  { name = "%s"; url = "%s"; max_concurrent = %d; %s}' %
                      (tuple(b[:3]) + ((b[3] + " ") if len(b) > 3 else "",))
                      for b in backends)
    with open(path + ".tmp", "w") as f:
        f.write('listen = "%s";\nbackends = (\n%s\n);\n%s\n' % (listen, rows, extra))
    os.rename(path + ".tmp", path)


class Proxy:
    """An ollama-proxy process in front of BACKENDS (as write_proxy_conf's).
    EXTRA is more config text, ENV more environment (ASAN_OPTIONS...)."""

    def __init__(self, backends, extra="", listen="127.0.0.1:0", env=None):
        self.conf = os.path.join(_tmp, "proxy-%d.conf" % len(_procs))
        write_proxy_conf(self.conf, backends, extra, listen)
        self.proc = Proc([binary("ollama-proxy"), "-c", self.conf], name="ollama-proxy",
                         env=env)
        self.port = self.proc.wait_listen()
        self.url = "http://127.0.0.1:%d" % self.port

    def status(self, headers=None):
        return get(self.url + "/proxy/status", headers=headers).json()

    def backend(self, name):
        return [b for b in self.status()["backends"] if b["name"] == name][0]

    def stop(self):
        return self.proc.stop()


def raw_post(port, path, body, headers=b"", rcvbuf=None):
    """A socket on which POST PATH with BODY (bytes) and HEADERS (lines, each
    ending CRLF) went to 127.0.0.1:PORT, its answer not read: for a client
    that leaves mid-stream or stops reading. RCVBUF: the socket's receive
    buffer, set once connected, so that the kernel cannot hide a stream."""
    s = socket.create_connection(("127.0.0.1", port))
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Length: %d\r\n\r\n%s" %
              (path.encode(), headers, len(body), body))
    return s


def strace_calls(pid, fn, only=None):
    """Run FN() while strace -c counts the system calls of PID, every
    thread; ONLY (a call's name) counts that call alone. Returns
    ({name: calls}, FN's result)."""
    out = os.path.join(_tmp, "strace-%d-%d.txt" % (pid, time.monotonic_ns()))
    args = [need_tool("strace"), "-c", "-f", "-o", out, "-p", str(pid)]
    if only:
        args += ["-e", "trace=" + only]
    st = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: os.path.exists(out) or st.poll() is not None, what="strace attached")
    time.sleep(0.3)  # attached to every thread
    if st.poll() is not None:
        raise AssertionError("strace could not attach: %r" % st.stderr.read())
    res = fn()
    st.send_signal(signal.SIGINT)
    st.wait(10)
    calls = {}
    for line in open(out):  # % time, seconds, usecs/call, calls, [errors,] syscall
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return calls, res


def cpu_s(pid):
    """User and system CPU seconds PID has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def wait_until(pred, timeout=5.0, interval=0.01, what="condition"):
    """Poll PRED until true; the timeout is multiplied by SLOW."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%s: expected %r, got %r" % (msg or "eq", b, a))


def ok(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


SKIP_RC = 77  # the exit code of a script whose every test skipped (ctest SKIP_RETURN_CODE)


class Skip(Exception):
    """A test cannot run here; the message says why. Raised by skip()."""


class SkipAll(Skip):
    """No test of this script can run here. Raised by skip_all() in a test."""


_in_test = False


def skip(why):
    """End the running test as SKIPPED (not passed), for WHY, e.g. "chromium
    not found". Outside a test (at the top of a script) it skips them all."""
    if not _in_test:
        skip_all(why)
    raise Skip(why)


def skip_all(why):
    """Skip this test and every test after it; the script exits SKIP_RC
    unless a test failed. At the top of a script, before run(): print
    "SKIP all: WHY" and exit SKIP_RC at once."""
    if _in_test:
        raise SkipAll(why)
    print("SKIP all: %s" % why, flush=True)
    _cleanup()
    sys.exit(SKIP_RC)


def need_tool(*names):
    """The path of the first of the commands NAMES on the PATH; if none is
    there, skip the test: "NAME not found"."""
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    skip("%s not found" % " or ".join(names))


def run(ns):
    """Run every test_* function of namespace NS in definition order (only
    those named on the command line, if any); print the closing line ctest
    logs show. Exit 1 on any failure; SKIP_RC when no test failed or passed
    but some skipped, or one called skip_all(); else 0."""
    global _in_test
    only = sys.argv[1:]
    tests = [(k, v) for k, v in ns.items() if k.startswith("test_") and callable(v)]
    unknown = [n for n in only if n not in [k for k, _ in tests]]
    if unknown:
        print("no such test: %s" % " ".join(unknown))
        sys.exit(1)
    passed = failed = skipped = 0
    skip_rest = None  # the reason of a skip_all(), once called
    for name, fn in tests:
        if only and name not in only:
            continue
        if skip_rest is not None:
            skipped += 1
            print("SKIP %s: %s" % (name, skip_rest), flush=True)
            continue
        t0 = time.time()
        _in_test = True
        try:
            fn()
            passed += 1
            print("PASS %s (%.2fs)" % (name, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s" % (name, e), flush=True)
            if isinstance(e, SkipAll):
                skip_rest = str(e)
        except Exception:
            failed += 1
            print("FAIL %s (%.2fs)" % (name, time.time() - t0), flush=True)
            traceback.print_exc()
            for p in _procs:
                print("--- log of %s (pid %d):\n%s" % (p.name, p.pid, p.tail(25)))
        finally:
            _in_test = False
    _cleanup()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if failed:
        sys.exit(1)
    if skipped and (passed == 0 or skip_rest is not None):
        sys.exit(SKIP_RC)
    sys.exit(0)
