"""ollama-proxy against backends that misbehave (tests/lib/fakebackend.py)
and clients that do: after every fault the client has an honest status or
an in-band error line, no header of a failed try reaches it, the slot and
the queue are free, the proxy's RSS stays under RSS_MAX_KIB, and the next
normal request is served by a good backend (an ollama-sim).

Most cases share one proxy in front of a fake backend listing llama3 and a
sim listing "good" only: model-aware routing sends llama3 to the fake
alone and "good" to the sim alone, and health.fail_after is high so that
the fake, failing on purpose, stays eligible. Cases that grow memory or
need their own config start their own proxy.
"""
import json
import os
import re
import selectors
import signal
import socket
import struct
import threading
import time

from fakebackend import FakeBackend, ndjson_line
from harness import (Proxy, Sim, cpu_s, eq, get, ok, post, raw_post, rss_kib, run, wait_until,
                     SANITIZE, SLOW)

# ASan keeps freed memory in quarantine (256 MiB by default), which would
# make RSS meaningless: keep it small. Set before any process starts.
if SANITIZE:
    os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS") or
                                  "detect_leaks=1:abort_on_error=0") + ":quarantine_size_mb=16"

# The proxy's RSS bound: 64 MiB plain, 4x under the sanitizers (shadow
# memory, redzones, a 16 MiB quarantine).
RSS_MAX_KIB = 64 * 1024 * (4 if SANITIZE else 1)
# A proxy past this (or a case past RUNAWAY_S) is a runaway: the fake stops
# feeding it and the case fails, instead of the machine swapping.
RUNAWAY_KIB = 2 * 1024 * 1024
RUNAWAY_S = 20.0

GEN = {"model": "llama3", "prompt": "hi", "stream": False}
GEN_STREAM = {"model": "llama3", "prompt": "hi"}
GOOD = {"model": "good", "prompt": "hi", "stream": False}
HEALTH = "health = { fail_after = 1000; };"
FIRST_BYTE_S = 2.0
IDLE_S = 2.0
SHARED_CONF = "timeouts = { first_byte_s = %g; idle_s = %g; };\n%s" % (FIRST_BYTE_S, IDLE_S,
                                                                       HEALTH)

# ---- a raw client: every header as sent, chunk arrival times ----


class RawResp:
    def __init__(self):
        self.status = 0
        self.headers = []   # [(lowercased name, value)] in order, duplicates kept
        self.body = b""
        self.chunks = []    # (monotonic time, bytes)
        self.complete = False
        self.error = None
        self.t0 = time.monotonic()
        self.t_head = self.t_end = None

    def all(self, name):
        return [v for k, v in self.headers if k == name]

    def one(self, name):
        v = self.all(name)
        return v[0] if v else None

    def elapsed(self):
        return (self.t_end or time.monotonic()) - self.t0

    def lines(self):
        out = []
        for l in self.body.split(b"\n"):
            if l.strip():
                try:
                    out.append(json.loads(l))
                except ValueError:
                    raise AssertionError("not an NDJSON line: %r in %r" % (l[:100],
                                                                           self.body[-300:]))
        return out

    def __repr__(self):
        return "<%d %r error=%s>" % (self.status, self.body[:200], self.error)


def _readline(f, limit):
    line = f.readline(limit + 1)
    if len(line) > limit:
        raise ValueError("line over %d bytes" % limit)
    if not line:
        raise ConnectionError("closed")
    return line


def raw(port, target, body=None, method=None, headers=None, timeout=30.0, max_head=1 << 20):
    """One request on a fresh connection, TARGET sent as is (so that an
    absolute-form URI can be sent). A head over MAX_HEAD bytes is an error."""
    r = RawResp()
    method = method or ("POST" if body is not None else "GET")
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (method, target,
                                                                              port)
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    if body is not None:
        head += "Content-Length: %d\r\n" % len(body)
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    f = s.makefile("rb")
    try:
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        line = _readline(f, 8192).decode("latin-1")
        r.status = int(line.split(" ")[1])
        size = len(line)
        while True:
            h = _readline(f, max_head)
            size += len(h)
            if size > max_head:
                raise ValueError("response head over %d bytes" % max_head)
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            r.headers.append((k.strip().lower(), v.strip()))
        r.t_head = time.monotonic()
        if method == "HEAD":
            r.complete = True
        elif "chunked" in (r.one("transfer-encoding") or ""):
            while True:
                n = int(_readline(f, 1024).split(b";")[0], 16)
                if n == 0:
                    _readline(f, 1024)
                    r.complete = True
                    break
                d = f.read(n)
                if len(d) < n:
                    raise ConnectionError("closed in a chunk")
                r.chunks.append((time.monotonic(), d))
                r.body += d
                _readline(f, 16)
        elif r.one("content-length") is not None:
            d = f.read(int(r.one("content-length")))
            r.chunks.append((time.monotonic(), d))
            r.body = d
            r.complete = len(d) == int(r.one("content-length"))
        else:
            r.body = f.read()
            r.complete = True
    except Exception as e:  # judged by the test
        r.error = repr(e)
    finally:
        r.t_end = time.monotonic()
        f.close()
        s.close()
    return r


# ---- the proxy's memory ----


class RssWatch:
    """Samples a process's RSS every 20 ms while the with-block runs; PEAK
    is the highest seen. Past RUNAWAY_KIB, or after RUNAWAY_S, it calls
    ON_RUNAWAY once (stop feeding the proxy)."""

    def __init__(self, pid, on_runaway=None, runaway_kib=RUNAWAY_KIB, runaway_s=RUNAWAY_S):
        self.pid, self.on_runaway = pid, on_runaway
        self.runaway_kib, self.runaway_s = runaway_kib, runaway_s
        self.peak = 0
        self.ran_away = None
        self.done = threading.Event()

    def _loop(self):
        t0 = time.monotonic()
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, IndexError):
                return
            if self.ran_away is None and (self.peak > self.runaway_kib or
                                          time.monotonic() - t0 > self.runaway_s):
                self.ran_away = "RSS %d KiB after %.1fs" % (self.peak, time.monotonic() - t0)
                if self.on_runaway:
                    self.on_runaway()
            time.sleep(0.02)

    def __enter__(self):
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.t.join()


# ---- shared processes ----

_good = []
_shared = {}


def good_sim():
    """An ollama-sim that serves the model "good" only."""
    if not _good:
        _good.append(Sim("--ttft-ms", "0", "--tokens", "2", models="good:latest"))
    return _good[0]


def wait_known(px):
    """Until every backend's /api/tags has been read."""
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), timeout=10,
               what="discovery of every backend's models")


def shared():
    """The fake (llama3) and the good sim behind one proxy; a proxy that
    died in an earlier case is replaced (that case has failed already)."""
    if "fb" not in _shared:
        _shared["fb"] = FakeBackend()
    fb = _shared["fb"]
    px = _shared.get("px")
    if px is None or not px.proc.alive():
        px = Proxy([("fake", fb.url, 4), ("good", good_sim().url, 4)], extra=SHARED_CONF)
        wait_known(px)
        _shared["px"] = px
    fb.set("ok")
    fb.take()
    return fb, px


def own_proxy(backends, extra=HEALTH):
    px = Proxy(backends, extra=extra)
    wait_known(px)
    return px


def stop_clean(px, case):
    """SIGTERM: exit 0, and no sanitizer report (a leak makes ASan exit 1)."""
    rc = px.stop()
    bad = [l for l in px.proc.output().splitlines() if "Sanitizer" in l or "runtime error" in l]
    eq(bad, [], "%s: sanitizer reports" % case)
    eq(rc, 0, "%s: exit status of the proxy" % case)


# ---- what every case checks ----


def idle(px):
    st = px.status()
    return st["queue"]["length"] == 0 and all(b["in_flight"] == 0 for b in st["backends"])


def settled(px, case, req=GOOD, backend="good"):
    """After a fault: the proxy lives, its slots and queue are free, its
    RSS is under the bound, and a normal request is served by BACKEND."""
    ok(px.proc.alive(), "%s: the proxy died:\n%s" % (case, px.proc.tail()))
    wait_until(lambda: idle(px), timeout=5, what="%s: every in_flight 0 and queue empty "
               "(status %r)" % (case, px.status()))
    rss = rss_kib(px.proc.pid)
    ok(rss < RSS_MAX_KIB, "%s: proxy RSS %d KiB over %d KiB" % (case, rss, RSS_MAX_KIB))
    r = post(px.url + "/api/generate", req, timeout=15)
    eq(r.status, 200, "%s: the next normal request (%r)" % (case, r))
    eq(r.headers.get("x-backend"), backend, "%s: served by the good backend" % case)


def no_leaked_headers(r, case):
    """Nothing of a failed try: no cookie, no text/x-bad, no filler."""
    eq(r.all("set-cookie"), [], "%s: Set-Cookie of a failed try reached the client" % case)
    bad = [(k, v) for k, v in r.headers
           if "x-bad" in v or k.startswith("x-filler") or k.startswith("x-trickle")]
    eq(bad, [], "%s: headers of a failed try reached the client" % case)


def proxy_error(r, status, case, v1=False):
    """R is the proxy's own error STATUS: one JSON Content-Type, an
    Ollama-shaped (or OpenAI-shaped) body, nothing of the failed tries."""
    ok(r.error is None, "%s: the reply was cut: %s (%r)" % (case, r.error, r))
    eq(r.status, status, "%s: status (%r)" % (case, r))
    cts = r.all("content-type")
    eq(len(cts), 1, "%s: exactly one Content-Type, got %r" % (case, cts))
    ok(cts[0].startswith("application/json"), "%s: Content-Type %r" % (case, cts[0]))
    no_leaked_headers(r, case)
    j = json.loads(r.body)
    if v1:
        ok(isinstance(j.get("error"), dict) and isinstance(j["error"].get("message"), str) and
           isinstance(j["error"].get("type"), str), "%s: OpenAI-shaped error %r" % (case, j))
    else:
        ok(isinstance(j.get("error"), str), "%s: Ollama-shaped error %r" % (case, j))
    return j


def in_band_error(r, case, min_good=1):
    """R is a stream that started (200) and ended properly with one
    {"error": ...} line after MIN_GOOD good lines; returns the time the
    error line arrived."""
    eq(r.status, 200, "%s: the stream started (%r)" % (case, r))
    ok(r.error is None and r.complete, "%s: the stream was cut, not ended: %s" % (case, r.error))
    lines = r.lines()
    ok(len(lines) >= min_good + 1, "%s: lines %r" % (case, lines))
    ok(isinstance(lines[-1].get("error"), str) and len(lines[-1]) == 1,
       "%s: ends with an in-band error line: %r" % (case, lines[-1]))
    ok(all("error" not in l for l in lines[:-1]) and not any(l.get("done") for l in lines),
       "%s: one error, last, no done line: %r" % (case, lines))
    return [t for t, d in r.chunks if b'"error"' in d][-1]


def fake_hung_up(fb, case):
    """Every request the fake got was closed (by the proxy, or by itself)."""
    wait_until(lambda: all(q.ended for q in fb.requests), timeout=5,
               what="%s: the fake's connections closed (%r)" % (case, fb.requests))


# ---- a-l: the backend misbehaves ----


def test_a_garbage_status_line_502():
    fb, px = shared()
    for line in (b"SSH-2.0-OpenSSH_9.6 what is this\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n",
                 b"HTTP/1.1 99999 OK\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        fb.set("garbage", line=line)
        r = raw(px.port, "/api/generate", GEN)
        proxy_error(r, 502, "a %r" % line)
        settled(px, "a %r" % line)


def test_b_half_head_retried():
    fb, px = shared()
    fb.set("half_head")
    r = raw(px.port, "/api/generate", GEN)
    proxy_error(r, 502, "b alone")
    ok(len(fb.take()) >= 2, "b alone: retried on the (only) backend")
    settled(px, "b alone")
    # With a good second backend that also serves llama3: every request
    # ends there, whichever the proxy tried first.
    fb2 = FakeBackend("half_head")
    sim = Sim("--ttft-ms", "0", "--tokens", "2")
    px2 = own_proxy([("fake", fb2.url, 2), ("good", sim.url, 2)])
    for i in range(6):
        r = raw(px2.port, "/api/generate", GEN)
        ok(r.error is None, "b with good, %d: %s" % (i, r.error))
        eq(r.status, 200, "b with good, %d (%r)" % (i, r))
        eq(r.one("x-backend"), "good", "b with good, %d: served by the good one" % i)
        eq(len(r.all("content-type")), 1, "b with good, %d: one Content-Type %r" % (i, r.headers))
        no_leaked_headers(r, "b with good, %d" % i)
    ok(len(fb2.requests) >= 1, "the half head was tried at all: %r" % fb2.requests)
    settled(px2, "b with good", req=GEN)
    stop_clean(px2, "b")
    sim.stop()
    fb2.stop()


def test_c_endless_headers():
    fb = FakeBackend("endless_headers")
    px = own_proxy([("fake", fb.url, 2), ("good", good_sim().url, 2)])
    with RssWatch(px.proc.pid, on_runaway=fb.halt) as w:
        r = raw(px.port, "/api/generate", GEN, timeout=RUNAWAY_S + 10)
    fb.halt()
    print("c: endless headers: %r after %.2fs, peak proxy RSS %d KiB%s" %
          (r, r.elapsed(), w.peak, " (runaway: %s)" % w.ran_away if w.ran_away else ""))
    ok(not w.ran_away, "c: runaway: %s" % w.ran_away)
    proxy_error(r, 502, "c")
    ok(r.elapsed() < 3 * SLOW, "c: 502 quickly, not after %.1fs" % r.elapsed())
    ok(w.peak < RSS_MAX_KIB, "c: peak RSS %d KiB over %d KiB" % (w.peak, RSS_MAX_KIB))
    fake_hung_up(fb, "c")
    settled(px, "c")
    stop_clean(px, "c")
    fb.stop()


def test_d_trickled_headers_504():
    fb, px = shared()
    fb.set("trickle_headers", interval=1.0, count=20)
    r = raw(px.port, "/api/generate", GEN, timeout=40)
    fb.halt()
    proxy_error(r, 504, "d")
    ok(FIRST_BYTE_S * 0.75 <= r.elapsed() <= FIRST_BYTE_S + 1.5 * SLOW,
       "d: 504 at first_byte_s=%g, not after %.1fs" % (FIRST_BYTE_S, r.elapsed()))
    fake_hung_up(fb, "d")
    settled(px, "d")


def test_e_short_body_502():
    fb, px = shared()
    fb.set("short_body", length=1000, send=100)
    r = raw(px.port, "/api/generate", GEN)
    proxy_error(r, 502, "e")
    settled(px, "e")


def test_f_bad_chunk_size_in_band():
    fb, px = shared()
    variants = [("zz", b"zz\r\n", b""), ("negative", b"-5\r\n", b""),
                ("overflow 2^64", b"10000000000000000\r\n", ndjson_line(99)),
                ("junk after the size", b"1f zz\r\n", ndjson_line(99))]
    failures = []
    for name, bad, after in variants:  # each is tried, the failures told together
        try:
            _bad_chunk_case(fb, px, "f %s" % name, bad, after)
        except AssertionError as e:
            failures.append(str(e))
    ok(not failures, "\n".join(failures))


def _bad_chunk_case(fb, px, case, bad, after):
    fb.set("bad_chunk", lines=2, bad=bad, after=after)
    r = raw(px.port, "/api/generate", GEN_STREAM)
    eq(r.status, 200, "%s: the stream started (%r)" % (case, r))
    eq(r.one("content-type"), "application/x-ndjson", "%s: NDJSON passed" % case)
    ok(r.error is None and r.complete, "%s: the stream was cut, not ended: %s" % (case, r.error))
    good = ndjson_line(0) + ndjson_line(1)
    ok(r.body.startswith(good), "%s: the good lines: %r" % (case, r.body[:300]))
    rest = r.body[len(good):]
    ok(rest.count(b"\n") == 1 and rest.endswith(b"\n"),
       "%s: bytes after the bad size reached the client: %r" % (case, rest))
    try:
        j = json.loads(rest)
    except ValueError:
        raise AssertionError("%s: bytes after the bad size reached the client, glued to the "
                             "error line: %r" % (case, rest))
    ok(list(j) == ["error"] and isinstance(j["error"], str), "%s: in-band error %r" % (case, j))
    t_err = r.chunks[-1][0]
    q = fb.take()[-1]
    # Well before idle_s: the bad size itself ended it, not the stall.
    ok(t_err - q.t_bad < 0.75 * IDLE_S,
       "%s: error %.2fs after the bad size (idle_s %g)" % (case, t_err - q.t_bad, IDLE_S))
    wait_until(lambda: q.ended, timeout=5, what="%s: the upstream closed" % case)
    settled(px, case)


def test_g_reset_mid_stream_in_band():
    fb, px = shared()
    fb.set("reset_mid_stream", lines=3, gap=0.05)
    r = raw(px.port, "/api/generate", GEN_STREAM)
    in_band_error(r, "g", min_good=3)
    settled(px, "g")
    # Reset in the middle of a line: that line is lost, but the error must
    # still be a line of its own, or a line-by-line reader never sees it.
    fb.set("reset_mid_stream", lines=3, gap=0.05, partial=b'{"model":"llama3","resp')
    r = raw(px.port, "/api/generate", GEN_STREAM)
    eq(r.status, 200, "g mid-line: the stream started (%r)" % r)
    ok(r.error is None and r.complete, "g mid-line: the stream was cut, not ended: %s" % r.error)
    last = r.body.rstrip(b"\n").split(b"\n")[-1]
    try:
        j = json.loads(last)
    except ValueError:
        raise AssertionError("g mid-line: the error line is glued to the partial line: %r" %
                             r.body[-120:])
    ok(isinstance(j.get("error"), str), "g mid-line: ends with an in-band error: %r" % j)
    settled(px, "g mid-line")


def test_h_busy_503_everywhere():
    fb, px = shared()
    fb.set("busy")
    r = raw(px.port, "/api/generate", GEN)
    proxy_error(r, 503, "h")
    ra = r.all("retry-after")
    eq(len(ra), 1, "h: one Retry-After: %r" % r.headers)
    ok(ra[0].isdigit() and int(ra[0]) >= 1, "h: Retry-After %r" % ra[0])
    ok(len(fb.take()) >= 2, "h: the proxy retried before answering 503")
    settled(px, "h")


def test_i_silent_backend_504():
    fb, px = shared()
    fb.set("silent")
    r = raw(px.port, "/api/generate", GEN, timeout=30)
    proxy_error(r, 504, "i")
    ok(FIRST_BYTE_S * 0.75 <= r.elapsed() <= FIRST_BYTE_S + 1.5 * SLOW,
       "i: 504 at first_byte_s=%g, not after %.1fs" % (FIRST_BYTE_S, r.elapsed()))
    fake_hung_up(fb, "i")
    ok(all(q.peer_closed for q in fb.requests), "i: the proxy hung up on the backend")
    settled(px, "i")


def test_j_stall_mid_stream_in_band():
    fb, px = shared()
    fb.set("stall")
    r = raw(px.port, "/api/generate", GEN_STREAM, timeout=30)
    t_err = in_band_error(r, "j", min_good=1)
    gap = t_err - r.chunks[0][0]
    ok(IDLE_S * 0.75 <= gap <= IDLE_S + 1.5 * SLOW,
       "j: error line %.2fs after the last line (idle_s %g)" % (gap, IDLE_S))
    fake_hung_up(fb, "j")
    ok(all(q.peer_closed for q in fb.requests), "j: the proxy hung up on the backend")
    settled(px, "j")


def _slow_read(port, rss, seconds):
    """Ask for the fake's huge body and read 64 KiB every 50 ms for
    SECONDS, then leave. Returns (head bytes, body bytes read)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", port))
    body = json.dumps(GEN).encode()
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" %
              (len(body), body))
    s.settimeout(10 * SLOW)
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        if not d:
            break
        got += d
    head, _, rest = got.partition(b"\r\n\r\n")
    n = len(rest)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and not rss.ran_away:
        d = s.recv(65536)
        if not d:
            break
        n += len(d)
        time.sleep(0.05)
    s.close()
    return head, n


def test_k_huge_body_slow_reader():
    fb = FakeBackend("huge")
    px = own_proxy([("fake", fb.url, 2), ("good", good_sim().url, 2)])
    for chunked in (False, True):
        case = "k %s" % ("chunked" if chunked else "content-length")
        fb.set("huge", size=1 << 30, chunked=chunked)
        with RssWatch(px.proc.pid, on_runaway=fb.halt) as w:
            head, n = _slow_read(px.port, w, 3.0)
        print("%s: read %d bytes in 3 s, peak proxy RSS %d KiB" % (case, n, w.peak))
        ok(not w.ran_away, "%s: runaway: %s" % (case, w.ran_away))
        ok(head.startswith(b"HTTP/1.1 200"), "%s: head %r" % (case, head[:100]))
        ok(n > 1 << 20, "%s: the body flowed: %d bytes" % (case, n))
        ok(w.peak < RSS_MAX_KIB, "%s: peak RSS %d KiB over %d KiB: no back pressure" %
           (case, w.peak, RSS_MAX_KIB))
        fake_hung_up(fb, case)
        q = fb.take()[-1]
        ok(q.peer_closed and q.sent < 1 << 30,
           "%s: the backend's connection was closed after %d bytes" % (case, q.sent))
        settled(px, case)
    stop_clean(px, "k")
    fb.stop()


def test_l_discovery_huge_and_endless_tags():
    big = FakeBackend(models=None, tags="huge")
    endless = FakeBackend(models=None, tags="endless")
    px = Proxy([("big", big.url, 2), ("endless", endless.url, 2),
                ("good", good_sim().url, 2)], extra="models = { refresh_s = 0.5; };\n" + HEALTH)
    with RssWatch(px.proc.pid, on_runaway=lambda: (big.halt(), endless.halt())) as w:
        for name in ("big", "endless"):
            wait_until(lambda: re.search(r"backend %s\b.*/api/tags.*(ignored|too large|refused)"
                                         % name, px.proc.output()), timeout=10,
                       what="l: a log line saying %s's /api/tags was ignored" % name)
        time.sleep(1.5)  # a few more polls of each
    print("l: peak proxy RSS %d KiB over the polls" % w.peak)
    ok(not w.ran_away, "l: runaway: %s" % w.ran_away)
    ok(w.peak < RSS_MAX_KIB, "l: peak RSS %d KiB over %d KiB" % (w.peak, RSS_MAX_KIB))
    st = {b["name"]: b for b in px.status()["backends"]}
    ok(len(st["big"]["models"]) < 100 and st["endless"]["models"] == [],
       "l: the answers were not taken: %d, %d models" % (len(st["big"]["models"]),
                                                          len(st["endless"]["models"])))
    tags = get(px.url + "/api/tags")
    eq(tags.status, 200, "l: the fleet's /api/tags")
    ok(len(tags.json()["models"]) < 100, "l: the fleet's /api/tags is small")
    for i in range(4):  # any backend may take "good": the fakes' tags are unknown
        r = post(px.url + "/api/generate", GOOD, timeout=15)
        eq(r.status, 200, "l: served meanwhile (%r)" % r)
    ok(px.proc.alive(), "l: the proxy lives")
    wait_until(lambda: idle(px), timeout=5, what="l: slots free")
    big.halt()
    endless.halt()
    stop_clean(px, "l")
    big.stop()
    endless.stop()


# ---- m-p: the client misbehaves ----


def _alive_after(px, case):
    time.sleep(0.05)
    ok(px.proc.alive(), "%s: the proxy died:\n%s" % (case, px.proc.tail()))
    eq(get(px.url + "/").status, 200, "%s: the proxy answers" % case)


def test_m_invalid_utf8_model_names():
    fb, px = shared()
    cases = [
        ("/api/generate", b'{"model":"llama3\xff","prompt":"hi"}', False, True),
        ("/v1/chat/completions",
         b'{"model":"llama3\xff","messages":[{"role":"user","content":"hi"}]}', True, True),
        ("/api/generate", json.dumps({"model": "x@" + "a" * 189 + "\u00e9\u00e9\u00e9",
                                      "prompt": "hi"}, ensure_ascii=False).encode(), False, False),
    ]
    for path, body, v1, invalid in cases:
        case = "m %s %r" % (path, body[:24])
        fb.set("ok")
        r = raw(px.port, path, body)
        _alive_after(px, case)
        ok(r.error is None, "%s: %s" % (case, r.error))
        ok(400 <= r.status < 500, "%s: status %d" % (case, r.status))
        if invalid:
            eq(r.status, 404, "%s: unknown model" % case)
        try:
            j = json.loads(r.body)
        except ValueError as e:
            raise AssertionError("%s: the body is not valid JSON (%s): %r" % (case, e, r.body))
        msg = j["error"]["message"] if v1 else j["error"]
        ok(isinstance(msg, str) and "not found" in msg or r.status == 400,
           "%s: error %r" % (case, j))
        if invalid:
            ok("\ufffd" in msg, "%s: the invalid byte became U+FFFD: %r" % (case, msg))
        if v1:
            ok(isinstance(j["error"].get("type"), str), "%s: OpenAI shape %r" % (case, j))
    settled(px, "m")


def _slowloris(port, n, request_s):
    """N connections each sending one byte of a never-ending request head
    per second. Returns [(t_first_byte, t_closed or None)]."""
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 10000
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        c = {"s": s, "sent": 0, "t_first": None, "t_closed": None, "next": 0.0}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    deadline = time.monotonic() + (2 * (request_s + 1 * SLOW) + 4)
    while time.monotonic() < deadline and any(c["t_closed"] is None for c in conns):
        now = time.monotonic()
        for c in conns:
            if c["t_closed"] is None and now >= c["next"]:
                try:
                    c["s"].send(head[c["sent"]:c["sent"] + 1])
                except OSError:
                    pass  # closed: the read side will tell
                if c["t_first"] is None:
                    c["t_first"] = now
                c["sent"] += 1
                c["next"] = now + 1.0
        for key, _ in sel.select(0.05):
            c = key.data
            try:
                d = c["s"].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:  # a 408 first is fine: only the close counts
                c["t_closed"] = time.monotonic()
                sel.unregister(c["s"])
                c["s"].close()
    for c in conns:
        if c["t_closed"] is None:
            c["s"].close()
    return [(c["t_first"], c["t_closed"]) for c in conns]


def test_n_slowloris():
    request_s, n, maxc = 2.0, 120, 100
    px = Proxy([("good", good_sim().url, 4)],
               extra="timeouts = { request_s = %g; idle_s = 6; };\n"
                     "limits = { max_connections = %d; };" % (request_s, maxc))
    normal = {}

    def normal_client():
        time.sleep(0.5)  # behind the slowloris connections in the backlog
        t0 = time.monotonic()
        try:
            r = get(px.url + "/", timeout=30)
            normal["status"] = r.status
        except Exception as e:
            normal["error"] = repr(e)
        normal["t"] = time.monotonic() - t0
    t = threading.Thread(target=normal_client)
    t.start()
    res = _slowloris(px.port, n, request_s)
    t.join()
    open_ = [r for r in res if r[1] is None]
    d = sorted(c - f for f, c in res if c is not None)
    print("n: %d of %d closed; after first byte: min %.2fs, median %.2fs, max %.2fs; "
          "normal client answered after %s" % (len(d), n, d[0] if d else -1,
                                                d[len(d) // 2] if d else -1,
                                                d[-1] if d else -1, normal.get("t")))
    eq(len(open_), 0, "n: slowloris connections never closed by the proxy")
    # The first max_connections are read at once: closed about request_s
    # after their first byte. The rest wait in the kernel's backlog, where
    # the proxy cannot see their bytes; their clock starts when accepted.
    first = sum(1 for x in d if x <= request_s + 1 * SLOW + 0.5)
    ok(first >= maxc - 10, "n: only %d closed within request_s+1 of their first byte" % first)
    ok(d[-1] <= 2 * (request_s + 1 * SLOW) + 1,
       "n: the last closed %.1fs after its first byte" % d[-1])
    eq(normal.get("status"), 200, "n: the normal client (%r)" % normal)
    ok(normal["t"] < request_s + 3 * SLOW, "n: answered after %.1fs" % normal["t"])
    ok(px.proc.alive(), "n: the proxy lives")
    stop_clean(px, "n")


def test_o_access_log_injection():
    fb, px = shared()
    forged = "2026-01-01T00:00:00.000Z ollama-proxy info: POST /api/pull model=y status=200"
    names = [("x\n" + forged,
              r"model=x\x0a2026-01-01T00:00:00.000Z\x20ollama-proxy\x20info:\x20POST\x20"
              r"/api/pull\x20model=y\x20status=200 "),
             ('q"\\\u00e9\x7f\t', r"model=q\x22\x5c\xc3\xa9\x7f\x09 ")]
    for name, want in names:
        r = raw(px.port, "/api/generate", {"model": name, "prompt": "hi"})
        ok(400 <= r.status < 500, "o: an unknown model: %r" % r)
        json.loads(r.body)
    _alive_after(px, "o")
    for name, want in names:
        wait_until(lambda: want.lower() in px.proc.output().lower(), timeout=5,
                   what="o: the access line with the name escaped, %r; log:\n%s" %
                   (want, px.proc.tail(6)))
    forged_lines = [l for l in px.proc.output().splitlines() if l.startswith(forged[:24])]
    eq(forged_lines, [], "o: a forged log line")
    settled(px, "o")


def test_p_absolute_form_uris():
    fb, px = shared()
    r = raw(px.port, "http://whatever/proxy/status")
    eq(r.status, 200, "p: GET http://whatever/proxy/status (%r)" % r)
    j = json.loads(r.body)
    ok(isinstance(j.get("backends"), list), "p: the proxy's own status: %r" % r.body[:200])
    r = raw(px.port, "http://whatever/api/generate", {"model": "nosuch", "prompt": "hi"})
    j = proxy_error(r, 404, "p: unknown model in absolute form")
    eq(r.one("x-backend"), None, "p: the proxy's own 404, not a backend's")
    eq(j["error"], "model 'nosuch' not found", "p: the proxy's 404 text")
    fb.take()
    r = raw(px.port, "http://whatever:8080/api/generate?x=1", GEN)
    eq(r.status, 200, "p: proxied absolute form (%r)" % r)
    eq(r.one("x-backend"), "fake", "p: routed by its model")
    q = fb.take()
    eq([x.line for x in q], ["POST /api/generate?x=1 HTTP/1.1"], "p: origin form upstream")
    eq(q[0].header("host"), "127.0.0.1:%d" % fb.port, "p: Host rewritten")
    settled(px, "p")


def test_q_framing_and_forged_headers():
    fb, px = shared()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    # A Content-Length strtoll would overflow, and two that differ: the
    # framing is unknowable, the response malformed (502), not a body cut
    # at LLONG_MAX or the wrong one of two.
    for case, extra in (("q overflow", b"Content-Length: 99999999999999999999\r\n"),
                        ("q two lengths", b"Content-Length: 2\r\nContent-Length: 7\r\n")):
        fb.set("raw", data=head + extra + b"\r\n{}12345")
        r = raw(px.port, "/api/generate", GEN)
        proxy_error(r, 502, case)
        settled(px, case)
    # The backend cannot set the proxy's own X-Backend.
    body = b'{"done":true}'
    fb.set("raw", data=head + b"X-Backend: evil\r\nX-Backend: evil2\r\nContent-Length: %d"
           b"\r\n\r\n%s" % (len(body), body))
    r = raw(px.port, "/api/generate", GEN)
    eq(r.status, 200, "q forged X-Backend: %r" % r)
    eq([v for k, v in r.headers if k.lower() == "x-backend"], ["fake"], "q X-Backend headers")
    settled(px, "q forged")


def test_r_endless_trailers():
    fb, px = shared()
    fb.set("endless_trailers")
    t0 = time.monotonic()
    r = raw(px.port, "/api/generate", GEN, timeout=20)
    took = time.monotonic() - t0
    fb.halt()
    in_band_error(r, "r")
    ok(took < 5 * SLOW, "r: the stream ended after %.1fs, not when the client gave up" % took)
    settled(px, "r")


# ---- s-u: the client leaves before the reply starts ----
#
# Each case has its own proxy: the fake with one slot and a first_byte_s
# far away, so that only the client's leaving can end a request.

GONE_CONF = "timeouts = { first_byte_s = 60; idle_s = 60; };\n" + HEALTH
# A proxy that spins on a socket uses about a core; an idle one next to
# nothing. Under this share of the wall time it did not spin, even on a
# machine so busy that a spinning proxy got only half a core.
SPIN_SHARE = 0.25


def gone_proxy():
    fb = FakeBackend("silent", hold=120)
    px = own_proxy([("fake", fb.url, 1), ("good", good_sim().url, 2)], extra=GONE_CONF)
    return fb, px


def reset(s):
    """Close S with a TCP RST instead of a FIN (SO_LINGER {1, 0})."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def gone_lines(px, tries):
    """The access lines of llama3 requests ended as client-gone (499)
    after TRIES tries."""
    return re.findall(r"POST /api/generate .*model=llama3 .*status=499 .* tries=%d client-gone"
                      % tries, px.proc.output())


def cpu_over(px, seconds):
    """(CPU seconds the proxy used, wall seconds) over SECONDS of leaving
    it alone."""
    c0, t0 = cpu_s(px.proc.pid), time.monotonic()
    time.sleep(seconds)
    return cpu_s(px.proc.pid) - c0, time.monotonic() - t0


def fake_in_flight(px):
    return px.backend("fake")["in_flight"]


def test_s_client_reset_at_the_backend():
    """A client resets its connection while the backend is silent (a model
    loading, a long prompt): the upstream request is aborted at once, the
    slot freed, nothing retried for it, no busy loop; the access log says
    client-gone (499) as for a FIN. Then the same with bytes of a next
    request sent ahead of the reset (a pipelining client), which the proxy
    does not read before the reply."""
    fb, px = gone_proxy()
    body = json.dumps(GEN).encode()
    for case, extra in (("s", b""), ("s pipelined", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")):
        fb.take()
        s = raw_post(px.port, "/api/generate", body)
        wait_until(lambda: len(fb.requests) == 1, what="%s: the request at the fake" % case)
        s.sendall(extra)  # the proxy reads it after the reply: it waits in the socket
        time.sleep(0.1)  # the proxy has settled on waiting
        reset(s)
        cpu, wall = cpu_over(px, 2.0)
        print("%s: the proxy used %.2f s of CPU in the %.2f s after the reset" % (case, cpu, wall))
        wait_until(lambda: fb.requests[0].ended, timeout=1,
                   what="%s: the fake's request ended (%r)" % (case, fb.requests))
        ok(fb.requests[0].peer_closed, "%s: the proxy hung up on the backend" % case)
        eq(fake_in_flight(px), 0, "%s: the fake's slot is free" % case)
        wait_until(lambda: len(gone_lines(px, 1)) == (2 if extra else 1), timeout=1,
                   what="%s: an access line ... status=499 ... tries=1 client-gone:\n%s"
                   % (case, px.proc.tail(4)))
        eq(len(fb.take()), 1, "%s: requests the fake got (none retried)" % case)
        ok(cpu < SPIN_SHARE * wall, "%s: the proxy used %.2f s of CPU in the %.2f s after the "
                                   "reset: a busy loop" % (case, cpu, wall))
    settled(px, "s")
    stop_clean(px, "s")
    fb.stop()


def test_t_client_reset_while_queued():
    """A queued request whose client resets leaves the queue at once and
    never reaches a backend, even when the slot it waited for frees."""
    fb, px = gone_proxy()
    body = json.dumps(GEN).encode()
    a = raw_post(px.port, "/api/generate", body)  # takes the fake's one slot
    wait_until(lambda: len(fb.requests) == 1, what="t: the first request at the fake")
    b = raw_post(px.port, "/api/generate", body)
    wait_until(lambda: px.status()["queue"]["length"] == 1, what="t: the second one queued")
    time.sleep(0.1)
    reset(b)
    cpu, wall = cpu_over(px, 2.0)
    print("t: the proxy used %.2f s of CPU in the %.2f s after the reset" % (cpu, wall))
    st = px.status()
    eq(st["queue"]["length"], 0, "t: the reset client's request left the queue (%r)" % st)
    eq(sum(c["waiting"] for c in st["clients"]), 0, "t: nobody waiting (%r)" % st["clients"])
    wait_until(lambda: len(gone_lines(px, 0)) == 1, timeout=1,
               what="t: an access line ... status=499 ... tries=0 client-gone:\n%s" %
               px.proc.tail(4))
    ok(cpu < SPIN_SHARE * wall, "t: the proxy used %.2f s of CPU in the %.2f s after the reset: "
                               "a busy loop" % (cpu, wall))
    a.close()  # its slot frees: nobody may take it for the reset client
    wait_until(lambda: fb.requests[0].ended, what="t: the first request aborted (its FIN)")
    time.sleep(0.5)
    eq(len(fb.take()), 1, "t: requests the fake got (the reset client's must not reach it)")
    eq(fake_in_flight(px), 0, "t: the fake's slot is free")
    # All at once: the one at the fake and three queued reset while the
    # proxy is stopped, so that it learns of all four in one turn of its
    # loop, the slot's first: the slot frees while the queued ones' resets
    # wait unhandled, and none of them may take it.
    socks = [raw_post(px.port, "/api/generate", body)]
    wait_until(lambda: len(fb.requests) == 1, what="t all: the first request at the fake")
    socks += [raw_post(px.port, "/api/generate", body) for _ in range(3)]
    wait_until(lambda: px.status()["queue"]["length"] == 3, what="t all: three queued")
    time.sleep(0.1)
    px.proc.signal(signal.SIGSTOP)
    try:
        for s in socks:
            reset(s)
        time.sleep(0.1)
    finally:
        px.proc.signal(signal.SIGCONT)
    wait_until(lambda: idle(px), timeout=2, what="t all: slot and queue free (%r)" % px.status())
    time.sleep(0.5)
    eq(len(fb.take()), 1, "t all: requests the fake got (the queued ones must not reach it)")
    wait_until(lambda: len(gone_lines(px, 0) + gone_lines(px, 1)) == 6, timeout=1,
               what="t all: four more access lines ... client-gone:\n%s" % px.proc.tail(6))
    eq(len(gone_lines(px, 1)), 2, "t all: client-gone after a try (only the two that held the "
                                  "slot; a queued one of a client gone was tried):\n%s" %
       px.proc.tail(6))
    settled(px, "t")
    stop_clean(px, "t")
    fb.stop()


def _half_close(port, body, timeout):
    """Send BODY to /api/generate, then shutdown(SHUT_WR): the client has
    said all it will say. Returns what it read until the proxy closed."""
    s = raw_post(port, "/api/generate", body)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(timeout)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return got


def test_u_half_closed_client_leaves_whatever_the_latency():
    """A client's FIN before its reply starts is its leaving (as for Ollama,
    whose Go server cancels a request at the client's EOF, and nginx): the
    request is cancelled, whether the backend answers in 8 ms or in 400.
    Before, a reply that started within 20 ms still went to the client."""
    fb, px = gone_proxy()
    body = json.dumps(GEN).encode()
    for n, delay in enumerate((0.008, 0.4, 0.008)):
        case = "u, a backend answering in %g s" % delay
        fb.set("ok", delay=delay)
        fb.take()
        got = _half_close(px.port, body, 10 * SLOW)
        eq(got, b"", "%s: the half-closed client got no reply" % case)
        wait_until(lambda: fake_in_flight(px) == 0, timeout=2, what="%s: the slot freed" % case)
        wait_until(lambda: len(gone_lines(px, 1)) + len(gone_lines(px, 0)) == n + 1, timeout=1,
                   what="%s: an access line ... status=499 ... client-gone:\n%s" %
                   (case, px.proc.tail(4)))
    # Not closed: answered, however fast the backend.
    fb.set("ok", delay=0.008)
    r = raw(px.port, "/api/generate", GEN)
    eq(r.status, 200, "u: a client that did not half-close (%r)" % r)
    settled(px, "u")
    stop_clean(px, "u")
    fb.stop()


def test_z_shared_proxy_exits_cleanly():
    """Last: everything the shared proxy went through left nothing behind."""
    fb, px = shared()
    settled(px, "z")
    stop_clean(px, "z")
    _shared.pop("px")


run(globals())
