"""ollama-proxy: blobs and create on every GPU (CONTRACT.md, "Blobs and
create on the whole fleet"). HEAD /api/blobs/D answers for the fleet; POST
streams the body to every healthy backend as it arrives (past
limits.max_body_mb, Content-Length or chunked as the ollama CLI sends it,
with Expect: 100-continue as curl does), 201 when all stored it, 200 when
all had it (Ollama answers those before reading the body), an error naming
each backend that failed and what it said; a client that leaves mid-upload
leaves no blob; the slowest backend's pace is the client's and memory
stays bounded; then /api/create with files makes the model on every
backend."""
import hashlib
import os
import signal
import socket
import struct
import threading
import time

import harness
from fakebackend import FakeBackend
from harness import Proxy, Sim, eq, get, http, ok, post, rss_kib, run, wait_until, SLOW

GGUF = b"GGUF"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(mb, seed=b""):
    """MB MiB of GGUF-looking bytes, different per SEED."""
    block = hashlib.sha256(seed).digest() * 32768
    return GGUF + block * mb


def _fleet(n=3, extra="limits = { max_body_mb = 1; };", key=None, **kw):
    sims = [Sim("--ttft-ms", "1", "--tokens", "3", "--tokens-per-s", "0") for _ in range(n)]
    px = Proxy([("s%d" % i, s.url, 2) for i, s in enumerate(sims)], extra=extra, **kw)
    h = {"Authorization": "Bearer " + key} if key else None
    wait_until(lambda: all(x["models"] for x in px.status(headers=h)["backends"]),
               what="discovery")
    return sims, px


def _fds(px):
    """A function counting the proxy's descriptors, and their count now:
    the fewest over a moment, for the discovery check's connection may
    still be closing (a base one too high waited 5 s for a descriptor
    more)."""
    fds = lambda: len(os.listdir("/proc/%d/fd" % px.proc.pid))
    counts = []
    for _ in range(6):
        counts.append(fds())
        time.sleep(0.05)
    return fds, min(counts)


def has(sim, d):
    return http("HEAD", sim.url + "/api/blobs/" + d).status == 200


def _raw_upload(port, d, body, chunked=False, expect=False, piece=1 << 16, then=b"", extra=""):
    """An upload as the ollama CLI (chunked) or curl (Expect) sends it, on a
    raw socket; THEN is sent after it on the same connection (pipelined).
    Returns the raw answer bytes up to the close or a short quiet."""
    s = socket.create_connection(("127.0.0.1", port))
    head = "POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\n" % d
    head += "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %d\r\n" % len(body)
    if expect:
        head += "Expect: 100-continue\r\n"
    s.sendall(head.encode() + extra.encode() + b"\r\n")
    got = b""
    s.settimeout(10 * SLOW)
    if expect:
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        ok(got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), "100 Continue first: %r" % got)
        got = b""
    try:
        for i in range(0, len(body), piece):
            p = body[i:i + piece]
            s.sendall(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        s.sendall(then)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered (and closed) before the whole body: read the answer
    s.settimeout(10 * SLOW)
    want = 2 if then else 1
    try:
        while _answers(got) < want:
            d_ = s.recv(65536)
            if not d_:
                break
            got += d_
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return got


def _answers(data):
    """How many whole answers (heads with their Content-Length bodies) DATA holds."""
    n = 0
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        cl = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
              if l.lower().startswith(b"content-length:")]
        if not cl or len(rest) < cl[0]:
            break
        data, n = rest[cl[0]:], n + 1
    return n


def test_upload_reaches_every_backend():
    """8 MiB blobs (past max_body_mb = 1) to three backends: with a
    Content-Length, chunked (the ollama CLI's way), behind Expect:
    100-continue (curl's). On main the proxy refused them with 413, or sent
    a small one to one backend."""
    sims, px = _fleet()
    for how in ("length", "chunked", "expect"):
        data = blob(8, how.encode())
        d = digest(data)
        eq(http("HEAD", px.url + "/api/blobs/" + d).status, 404, "not there yet")
        if how == "length":
            r = http("POST", px.url + "/api/blobs/" + d, data, timeout=60)
            eq((r.status, r.body), (201, b""), how)
            # Empty, as Ollama's: not said to be JSON (fuzz_proxy's finding).
            ok("json" not in (r.headers.get("content-type") or ""), r.headers)
        else:
            got = _raw_upload(px.port, d, data, chunked=how == "chunked", expect=how == "expect")
            ok(got.startswith(b"HTTP/1.1 201 Created\r\n"), "%s: %r" % (how, got[:200]))
        for s in sims:
            ok(has(s, d), "%s: every backend has it" % how)
        eq(http("HEAD", px.url + "/api/blobs/" + d).status, 200, "the fleet has it")
    # One backend lacking a blob: the fleet lacks it.
    small = blob(0, b"one")
    eq(http("POST", sims[0].url + "/api/blobs/" + digest(small), small).status, 201)
    eq(http("HEAD", px.url + "/api/blobs/" + digest(small)).status, 404, "two lack it")
    px.stop()


def test_blob_there_already_and_keep_alive():
    """A backend that has the blob answers 200 at once, before the body
    (Ollama): that backend is done, the others get the whole body: 201.
    When every backend has it, the proxy answers 200 as Ollama does. A
    stored upload keeps its connection: a request pipelined behind it is
    answered on it."""
    sims, px = _fleet()
    data = blob(4, b"early")
    d = digest(data)
    eq(http("POST", sims[1].url + "/api/blobs/" + d, data).status, 201, "s1 has it")
    before = [s.stats()["paths"].get("/api/blobs/{digest}", 0) for s in sims]
    got = _raw_upload(px.port, d, data, then=b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    ok(got.startswith(b"HTTP/1.1 201 Created\r\n"), "201: the others stored it: %r" % got[:300])
    ok(b'"version"' in got, "the pipelined request answered on the same connection: %r" % got)
    after = [s.stats()["paths"].get("/api/blobs/{digest}", 0) for s in sims]
    eq([a - b for a, b in zip(after, before)], [1, 1, 1], "one upload to each")
    for s in sims:
        ok(has(s, d), "every backend has it")
    # Every backend has it: 200 at once, the rest of the body unread and
    # the connection closed after the answer, so the client may meet a
    # closed socket before it has sent everything (EPIPE under ASan, where
    # the answer comes sooner than the body goes): read the answer anyway.
    got = _raw_upload(px.port, d, data)
    ok(got.startswith(b"HTTP/1.1 200 OK\r\n") and _answers(got) == 1,
       "all had it: 200, as Ollama: %r" % got[:300])
    ok(got.endswith(b"\r\n\r\n") or b"Content-Length: 0\r\n" in got, "no body: %r" % got)
    px.stop()



def test_all_had_it_lingering_close():
    """Every backend has the blob: 200 before the body has all come, and
    then a lingering close (as Go's server): the proxy reads and drops what
    the client still sends, so a client that goes on sending its body
    finishes it and reads the answer and a clean end, not a reset. On
    d04e842 the socket was closed with the body unread: the client's send
    met a reset (EPIPE / ECONNRESET)."""
    sims, px = _fleet()
    data = blob(1, b"linger")
    d = digest(data)
    for s_ in sims:
        eq(http("POST", s_.url + "/api/blobs/" + d, data).status, 201)
    rest = 16 << 20  # past what the kernel's buffers hold unread
    s = socket.create_connection(("127.0.0.1", px.port))
    s.settimeout(10 * SLOW)
    s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
              % (d.encode(), len(data) + rest) + data[:1 << 16])
    got = b""
    while b"\r\n\r\n" not in got:
        d_ = s.recv(4096)
        ok(d_, "an answer before the body's end")
        got += d_
    ok(got.startswith(b"HTTP/1.1 200 OK\r\n"), "all had it: 200: %r" % got)
    try:
        s.sendall(data[1 << 16:])
        s.sendall(b"\0" * rest)  # a client still sending (not the blob: nobody reads it)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError as e:
        ok(False, "the client met %r instead of a clean end" % e)
    s.close()
    # The proxy serves on; the blob is untouched.
    eq(http("HEAD", px.url + "/api/blobs/" + d).status, 200)
    px.stop()

def test_failures_named():
    """A digest that does not match: 400 with each backend's words; a
    backend that is gone: 502 naming it, the others still stored it."""
    sims, px = _fleet(extra="limits = { max_body_mb = 1; };\n"
                            "health = { interval_s = 60; fail_after = 100; };")
    data = blob(2, b"bad")
    wrong = "sha256:" + "0" * 64
    r = http("POST", px.url + "/api/blobs/" + wrong, data, timeout=60)
    eq(r.status, 400, "the client's digest is wrong: %r" % r)
    msg = r.json()["error"]
    for name in ("s0", "s1", "s2"):
        ok("%s (digest mismatch, expected" % name in msg, msg)
    sims[2].stop()
    data = blob(2, b"down")
    r = http("POST", px.url + "/api/blobs/" + digest(data), data, timeout=60)
    eq(r.status, 502, "a backend failed: %r" % r)
    msg = r.json()["error"]
    ok(msg.startswith("upload failed on s2 (") and "s0" not in msg and "s1" not in msg, msg)
    ok(has(sims[0], digest(data)) and has(sims[1], digest(data)), "the others stored it")
    px.stop()


def test_client_leaves_mid_upload():
    """The client hangs up halfway: every upload is aborted (no backend
    keeps a blob), the proxy is idle again and serves on."""
    sims, px = _fleet()
    data = blob(16, b"gone")
    d = digest(data)
    fds, base = _fds(px)
    s = socket.create_connection(("127.0.0.1", px.port))
    s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" %
              (d.encode(), len(data)))
    s.sendall(data[:len(data) // 2])
    wait_until(lambda: fds() >= base + 4, what="the client's and three uploads' sockets")
    s.close()
    wait_until(lambda: [l for l in px.proc.output().splitlines()
                        if "POST /api/blobs/" in l and "client-gone" in l and "status=499" in l],
               what="the proxy saw the client go")
    wait_until(lambda: fds() <= base, timeout=3, what="every upload's socket closed")
    for x in sims:
        ok(not has(x, d), "no backend kept a partial blob")
    wait_until(lambda: px.status()["connections"] == 1, timeout=3,
               what="the client's connection closed, only the status request's open")
    small = blob(0, b"after")
    eq(http("POST", px.url + "/api/blobs/" + digest(small), small).status, 201, "serves on")
    px.stop()


def test_client_falls_silent_mid_upload():
    """A client that stops sending for timeouts.idle_s is dropped like one
    that left: every upload aborted, the proxy idle again."""
    sims, px = _fleet(n=2, extra="limits = { max_body_mb = 1; };\ntimeouts = { idle_s = 0.5; };")
    data = blob(8, b"silent")
    d = digest(data)
    fds = lambda: len(os.listdir("/proc/%d/fd" % px.proc.pid))
    base = fds()
    s = socket.create_connection(("127.0.0.1", px.port))
    s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" %
              (d.encode(), len(data)))
    s.sendall(data[:3 << 20])
    t0 = time.monotonic()
    s.settimeout(10 * SLOW)
    eq(s.recv(100), b"", "the proxy closed the silent client's connection")
    ok(time.monotonic() - t0 >= 0.4, "after idle_s, not before")
    s.close()
    wait_until(lambda: [l for l in px.proc.output().splitlines()
                        if "POST /api/blobs/" in l and "status=499" in l], what="logged")
    wait_until(lambda: fds() <= base, timeout=3, what="every upload's socket closed")
    for x in sims:
        ok(not has(x, d), "no backend kept a partial blob")
    px.stop()


def _reset(s):
    """Close S with a TCP RST instead of a FIN (SO_LINGER {1, 0})."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _gone_lines(px):
    return [l for l in px.proc.output().splitlines()
            if "POST /api/blobs/" in l and "status=499" in l and "client-gone" in l]


def test_client_leaves_while_the_backends_are_slow():
    """A client that leaves an upload while nobody reads its connection is
    noticed at once, every upload aborted, client-gone (499) logged: when
    its body has all come and the backends have still to answer (a FIN, or
    a reset), and when the body waits for a backend that stopped reading
    (the slowest backend's pace is the client's: the proxy reads no more
    of the body meanwhile). Before, evhttp saw none of these until every
    backend had answered, or read on."""
    fbs = [FakeBackend("silent", hold=120) for _ in range(2)]
    px = Proxy([("a", fbs[0].url, 2), ("b", fbs[1].url, 2)],
               extra="timeouts = { first_byte_s = 60; idle_s = 60; };")
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    data = blob(1, b"answer")
    for n, (how, leave) in enumerate((("a FIN", socket.socket.close), ("a reset", _reset))):
        for fb in fbs:
            fb.take()
        s = socket.create_connection(("127.0.0.1", px.port))
        s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                  % (digest(data).encode(), len(data)) + data)
        wait_until(lambda: all(len(fb.requests) == 1 for fb in fbs),
                   what="%s: the whole body at both backends" % how)
        time.sleep(0.1)
        leave(s)
        wait_until(lambda: all(fb.requests[0].ended for fb in fbs), timeout=2,
                   what="%s: both uploads ended" % how)
        ok(all(fb.requests[0].peer_closed for fb in fbs), "%s: the proxy hung up on both" % how)
        wait_until(lambda: len(_gone_lines(px)) == n + 1, timeout=1,
                   what="%s: an access line ... status=499 client-gone:\n%s" %
                   (how, px.proc.tail(3)))
    eq(px.stop(), 0, "a clean exit (under ASan: nothing leaked)")
    for fb in fbs:
        fb.stop()

    # A backend that stopped reading (SIGSTOP): the body waits, unread.
    sims, px = _fleet(n=2, extra="limits = { max_body_mb = 1; };\n"
                                 "health = { interval_s = 60; fail_after = 100; };")
    fds, base = _fds(px)
    data = blob(64, b"stopped")
    d = digest(data)
    sims[1].proc.signal(signal.SIGSTOP)
    try:
        s = socket.create_connection(("127.0.0.1", px.port))
        s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                  % (d.encode(), len(data)))
        s.settimeout(1.0 * SLOW)
        sent = 0
        try:
            while sent < len(data):
                sent += s.send(data[sent:sent + (1 << 16)])
        except socket.timeout:
            pass  # the proxy reads no more: the stopped backend's pace
        ok(sent < len(data), "the body waits for the stopped backend (%d bytes sent)" % sent)
        _reset(s)
        wait_until(lambda: len(_gone_lines(px)) == 1, timeout=2,
                   what="the proxy saw the client go, its backend still stopped:\n%s" %
                   px.proc.tail(3))
        wait_until(lambda: fds() <= base, timeout=2, what="every upload's socket closed")
    finally:
        sims[1].proc.signal(signal.SIGCONT)
    for x in sims:
        ok(not has(x, d), "no backend kept a partial blob")
    small = blob(0, b"after")
    eq(http("POST", px.url + "/api/blobs/" + digest(small), small).status, 201, "serves on")
    eq(px.stop(), 0, "a clean exit (under ASan: nothing leaked)")


def test_keys_admin_only():
    """With keys, uploads need an admin key: a non-admin key gets 403 in
    Ollama's shape at once, without the body being read."""
    sims, px = _fleet(n=1, extra='auth = { keys = ( { name = "u"; key = "user"; },'
                                 ' { name = "ops"; key = "root"; admin = true; } ); };',
                      key="root")
    data = blob(8, b"keys")
    got = _raw_upload(px.port, digest(data), data[:1 << 16])  # a little of it
    ok(got.startswith(b"HTTP/1.1 401 "), got[:100])
    got = _raw_upload(px.port, digest(data), data, extra="Authorization: Bearer user\r\n")
    ok(got.startswith(b"HTTP/1.1 403 "), "non-admin: %r" % got[:100])
    ok(b"admin key" in got and b"Connection: close" in got, got)
    eq(sims[0].stats()["paths"].get("/api/blobs/{digest}"), None, "nothing reached the sim")
    r = http("POST", px.url + "/api/blobs/" + digest(data), data, timeout=60,
             headers={"Authorization": "Bearer root"})
    eq(r.status, 201, "admin")
    px.stop()


class SlowBackend:
    """A backend that reads an upload at RATE bytes/s and answers 201: its
    pace must become the client's."""

    def __init__(self, rate):
        self.rate, self.got = rate, 0
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        line = head.split(b"\r\n")[0]
        if line.startswith(b"GET /api/tags"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"models\":[]}")
        elif line.startswith(b"GET"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        else:
            n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                     if l.lower().startswith(b"content-length")][0])
            got, t0 = len(rest), time.monotonic()
            while got < n:
                d = c.recv(min(65536, n - got))
                if not d:
                    return
                got += len(d)
                self.got += len(d)
                ahead = got / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            c.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        c.close()


def test_slowest_backend_sets_the_pace():
    """64 MiB to a fast backend and one that reads 16 MiB/s: the client
    can only send as fast as the slow one reads (plus the window and the
    kernels' buffers), and the proxy's memory stays far below the body."""
    fast = Sim("--ttft-ms", "1")
    slow = SlowBackend(16 << 20)
    px = Proxy([("fast", fast.url, 2), ("slow", "http://127.0.0.1:%d" % slow.port, 2)],
               extra="health = { interval_s = 60; };", env=harness.SMALL_QUARANTINE)
    data = blob(64, b"pace")
    d = digest(data)
    base = rss_kib(px.proc.pid)
    sent, lead, peak = [0], [0], [base]
    s = socket.create_connection(("127.0.0.1", px.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    s.sendall(b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" %
              (d.encode(), len(data)))

    def watch():
        while sent[0] < len(data):
            lead[0] = max(lead[0], sent[0] - slow.got)
            peak[0] = max(peak[0], rss_kib(px.proc.pid))
            time.sleep(0.02)
    w = threading.Thread(target=watch)
    w.start()
    for i in range(0, len(data), 1 << 16):
        s.sendall(data[i:i + (1 << 16)])
        sent[0] = i + (1 << 16)
    w.join()
    s.settimeout(30 * SLOW)
    answer = s.recv(4096)
    s.close()
    ok(answer.startswith(b"HTTP/1.1 201"), answer)
    print("client ahead of the slow backend by at most %.1f MiB; proxy RSS %d -> %d KiB" %
          (lead[0] / 2**20, base, peak[0]))
    ok(lead[0] < 24 << 20, "the client ran %.1f MiB ahead of the slowest backend" %
       (lead[0] / 2**20))
    ok(peak[0] - base < 16 << 10, "RSS grew %d KiB for a 64 MiB body" % (peak[0] - base))
    ok(has(fast, d), "the fast backend has it")
    px.stop()


def test_create_with_files_on_every_backend():
    """`ollama create` through the proxy: the blob uploaded (HEAD, then
    POST), then /api/create with files: the model is on every backend and
    answers from each. On main the blob reached one backend and create
    failed on the others."""
    sims, px = _fleet()
    data = blob(3, b"model")
    d = digest(data)
    eq(http("HEAD", px.url + "/api/blobs/" + d).status, 404)
    eq(http("POST", px.url + "/api/blobs/" + d, data, timeout=60).status, 201)
    r = post(px.url + "/api/create", {"model": "mine", "files": {"model.gguf": d},
                                      "stream": False}, timeout=60)
    eq((r.status, r.json()), (200, {"status": "success"}), "created on all")
    for s in sims:
        names = [m["name"] for m in get(s.url + "/api/tags").json()["models"]]
        ok("mine:latest" in names, "on every backend: %r" % names)
    seen = set()
    for _ in range(12):
        r = post(px.url + "/api/generate", {"model": "mine", "prompt": "hi", "stream": False})
        eq(r.status, 200, "the new model answers")
        seen.add(r.headers["x-backend"])
    eq(seen, {"s0", "s1", "s2"}, "from every backend")
    px.stop()


run(globals())
