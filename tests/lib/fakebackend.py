"""fakebackend.py - a programmable, misbehaving HTTP/1.1 backend for fault
tests of the proxy (standard library only).

It listens on 127.0.0.1 on a free port and serves each connection in a
thread. The proxy's own polls (GET /api/tags, /api/ps, /api/version, /,
and its POST /api/show, which carries no X-Forwarded-For, unlike a client's)
get a valid Ollama answer listing MODELS, unless TAGS says otherwise; any
other request gets the current behaviour:

    fb = FakeBackend()
    fb.set("half_head")                 # every request from now on
    fb.script("garbage", ("ok", {}))    # the next two requests, then the default

A behaviour is a name from BEHAVIOURS with keyword parameters (see each
b_* function). Every request is recorded (fb.requests: Req objects, with
the raw request line), and so is how its connection ended: `ended` is the
time the behaviour stopped, `peer_closed` whether it stopped because the
proxy hung up, `sent` the response bytes written. fb.halt() makes every
endless behaviour stop and close, so that a test that failed does not leave
a backend pumping bytes into the proxy.
"""
import json
import socket
import struct
import threading
import time

MODEL_ENTRY = {
    "modified_at": "2026-01-01T00:00:00Z", "size": 4356641620,
    "digest": "48e837aed47f6d54279e5760702eef50d41ebe2bbb6e3d334606b659680475f3",
    "details": {"parent_model": "", "format": "gguf", "family": "llama",
                "families": ["llama"], "parameter_size": "8.0B",
                "quantization_level": "Q4_K_M"},
}
BUSY = b'{"error":"server busy, please try again.  maximum pending requests exceeded"}'


class PeerClosed(Exception):
    """The proxy hung up on us."""


class Req:
    def __init__(self, line, method, target, headers, body, behaviour):
        self.line = line          # the raw request line, e.g. "POST /api/generate HTTP/1.1"
        self.method = method
        self.target = target
        self.headers = headers    # [(name, value)] as received
        self.body = body
        self.behaviour = behaviour
        self.t = time.monotonic()
        self.t_bad = None         # when a behaviour sent its fault
        self.sent = 0
        self.ended = None
        self.peer_closed = False

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Req %s %s>" % (self.line, self.behaviour)


class FakeBackend:
    def __init__(self, behaviour="ok", models=("llama3:latest",), tags="ok", ps="ok",
                 **params):
        """MODELS: what /api/tags lists and "ok" serves (None: serve any
        model). TAGS: "ok", "huge" (about 10 MB of valid JSON) or "endless"
        (a chunked answer that never ends). PS: "ok", or "stall" (/api/ps
        is never answered: the connection is held until halt())."""
        self.models = list(models) if models is not None else None
        self.tags = tags
        self.ps = ps
        self.default = (behaviour, params)
        self.queue = []
        self.requests = []
        self.polls = {}
        self.lock = threading.Lock()
        self.halted = threading.Event()
        self.socks = set()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(512)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    # ---- the test's controls ----

    def set(self, behaviour, **params):
        """The behaviour of every request from now on (the script first)."""
        with self.lock:
            self.default = (behaviour, params)
            self.halted.clear()

    def script(self, *steps):
        """The behaviours of the next requests, one each: names or (name, params)."""
        with self.lock:
            self.queue = [s if isinstance(s, tuple) else (s, {}) for s in steps]
            self.halted.clear()

    def take(self):
        """The requests recorded so far, forgetting them."""
        with self.lock:
            r, self.requests = self.requests, []
        return r

    def halt(self):
        """Stop every endless behaviour now (they close their connections)."""
        self.halted.set()

    def stop(self):
        self.halt()
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- serving ----

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                self.socks.add(c)
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        buf = b""
        try:
            while True:
                req, buf = self._read_request(c, buf)
                if req is None:
                    return
                if not self._serve(c, req):
                    return
        except (OSError, PeerClosed, ValueError):
            return
        finally:
            with self.lock:
                self.socks.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def _read_request(self, c, buf):
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None, b""
            buf += d
            if len(buf) > (1 << 20):
                raise ValueError("request head too long")
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = []
        for h in lines[1:]:
            k, _, v = h.partition(":")
            headers.append((k.strip(), v.strip()))
        n = 0
        for k, v in headers:
            if k.lower() == "content-length":
                n = int(v)
        while len(rest) < n:
            d = c.recv(65536)
            if not d:
                return None, b""
            rest += d
        return (lines[0], method, target, headers, rest[:n]), rest[n:]

    def _serve(self, c, r):
        line, method, target, headers, body = r
        path = target.split("?")[0]
        own = not any(k.lower() == "x-forwarded-for" for k, _ in headers)
        if method == "GET" and path in ("/api/tags", "/api/ps", "/api/version", "/") or \
                (method == "POST" and path == "/api/show" and own):
            with self.lock:
                self.polls[path] = self.polls.get(path, 0) + 1
            return self._poll(c, path, body)
        with self.lock:
            name, params = self.queue.pop(0) if self.queue else self.default
            req = Req(line, method, target, headers, body, name)
            self.requests.append(req)
        try:
            return BEHAVIOURS[name](self, c, req, **params)
        except (OSError, PeerClosed):
            req.peer_closed = True
            return False
        finally:
            if req.ended is None:
                req.ended = time.monotonic()

    # ---- the polls ----

    def _poll(self, c, path, body=b""):
        if path == "/api/tags" and self.tags == "huge":
            return self._reply(c, 200, _huge_tags())
        if path == "/api/tags" and self.tags == "endless":
            self._endless_tags(c)
            return False
        if path == "/api/ps" and self.ps == "stall":
            self.halted.wait(120)
            return False
        if path == "/api/tags":
            body = tags_body(self.models or ["llama3:latest"])
        elif path == "/api/ps":
            body = b'{"models":[]}'
        elif path == "/api/version":
            body = b'{"version":"0.12.6"}'
        elif path == "/api/show":  # what a model can do: an embedding model by its name
            try:
                model = json.loads(body).get("model", "")
            except ValueError:
                model = ""
            body = json.dumps({"capabilities": ["embedding" if "embed" in model else
                                                "completion"]}).encode()
        else:
            return self._reply(c, 200, b"Ollama is running", "text/plain; charset=utf-8")
        return self._reply(c, 200, body)

    def _endless_tags(self, c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        entry = json.dumps(dict(MODEL_ENTRY, name="m", model="m")).encode() + b","
        chunk = _chunk(entry * (32768 // len(entry)))
        c.sendall(_chunk(b'{"models":['))
        while not self.halted.is_set():
            c.sendall(chunk)

    # ---- helpers for behaviours ----

    def _reply(self, c, status, body, ctype="application/json; charset=utf-8", extra=b""):
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "X")
        c.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n%s" %
                  (status, reason.encode(), ctype.encode(), extra, len(body), body))
        return True

    def hold(self, c, req, seconds=60.0):
        """Keep the connection open, sending nothing, until the proxy hangs
        up (then PeerClosed), SECONDS pass or halt()."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.halted.is_set():
            c.settimeout(0.1)
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            finally:
                c.settimeout(None)
            if not d:
                raise PeerClosed()
        return False

    def send(self, c, req, data):
        c.sendall(data)
        req.sent += len(data)


def _reset(c):
    """Close with a TCP RST instead of a FIN."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def tags_body(names):
    """An /api/tags answer listing NAMES."""
    return json.dumps({"models": [dict(MODEL_ENTRY, name=n, model=n) for n in names]},
                      separators=(",", ":")).encode()


_HUGE = []


def _huge_tags():
    """About 10 MB of valid /api/tags: 40,000 models."""
    if not _HUGE:
        _HUGE.append(tags_body(["m%05d:latest" % i for i in range(40000)]))
    return _HUGE[0]


def ndjson_line(i, model="llama3"):
    return json.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                       "response": "tok%d " % i, "done": False}).encode() + b"\n"


def _chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


NDJSON_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")

# ---- behaviours: (fb, c, req, **params) -> True to keep the connection ----


def b_ok(fb, c, req, delay=0.0):
    """What Ollama does: 404 for a model it lacks, else a short answer,
    NDJSON unless "stream": false."""
    try:
        j = req.json()
    except ValueError:
        j = {}
    model = j.get("model") if isinstance(j, dict) else None
    if delay:
        time.sleep(delay)
    if req.target.split("?")[0] not in ("/api/generate", "/api/chat", "/v1/chat/completions"):
        return fb._reply(c, 404, b"404 page not found", "text/plain")
    if fb.models is not None and model is not None and \
            model not in fb.models and model + ":latest" not in fb.models:
        return fb._reply(c, 404, json.dumps({"error": "model '%s' not found" % model}).encode())
    if j.get("stream") is False:
        return fb._reply(c, 200, json.dumps({"model": model, "response": "hi",
                                             "done": True}).encode())
    c.sendall(NDJSON_HEAD + _chunk(ndjson_line(0, model)) +
              _chunk(json.dumps({"model": model, "done": True}).encode() + b"\n") + b"0\r\n\r\n")
    return True


def b_slow_pull(fb, c, req, lines=5, gap=0.2, status=200, head_delay=0.0):
    """A pull (push, create) that takes time: HEAD_DELAY seconds of silence,
    then LINES progress lines GAP seconds apart, then {"status":"success"};
    with STATUS not 200, that status and Ollama's error at once."""
    if status != 200:
        return fb._reply(c, status, json.dumps({"error": "pull failed here"}).encode())
    if head_delay and fb.halted.wait(head_delay):
        return False
    c.sendall(NDJSON_HEAD)
    for i in range(lines):
        c.sendall(_chunk(json.dumps({"status": "pulling abc", "digest": "sha256:abc",
                                     "total": lines, "completed": i + 1}).encode() + b"\n"))
        if fb.halted.wait(gap):
            return False
    c.sendall(_chunk(b'{"status":"success"}\n') + b"0\r\n\r\n")
    return True


def b_answer(fb, c, req, status=200, body=b"{}", delay=0.0):
    """STATUS and BODY after DELAY seconds, the connection kept (a backend
    that refuses or fails, with the time it takes)."""
    if delay and fb.halted.wait(delay):
        return False
    return fb._reply(c, status, body)


def b_flood_pull(fb, c, req, size=200):
    """A pull whose progress never ends: SIZE-byte lines as fast as the
    proxy takes them, until halted."""
    c.sendall(NDJSON_HEAD)
    line = json.dumps({"status": "pulling " + "x" * size, "completed": 1}).encode() + b"\n"
    chunk = _chunk(line * 64)
    while not fb.halted.is_set():
        c.sendall(chunk)
    return False


def b_garbage(fb, c, req, line=b"SSH-2.0-OpenSSH_9.6 what is this\r\n\r\n"):
    """Something that is not an HTTP status line, then close."""
    fb.send(c, req, line)
    time.sleep(0.05)
    return False


def b_half_head(fb, c, req):
    """A status line and two headers, no blank line, then close."""
    fb.send(c, req, b"HTTP/1.1 200 OK\r\nSet-Cookie: bad=1\r\nContent-Type: text/x-bad\r\n")
    time.sleep(0.05)
    return False


def b_endless_headers(fb, c, req, size=1024):
    """200 OK, then SIZE-byte header lines as fast as the proxy takes them."""
    fb.send(c, req, b"HTTP/1.1 200 OK\r\nSet-Cookie: endless=1\r\n")
    block = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"a" * (size - 20)) for i in range(64))
    while not fb.halted.is_set():
        fb.send(c, req, block)
    return False


def b_trickle_headers(fb, c, req, interval=1.0, count=20):
    """One header line every INTERVAL seconds, COUNT of them, then a
    complete 200 (if the proxy is still listening)."""
    fb.send(c, req, b"HTTP/1.1 200 OK\r\nSet-Cookie: trickle=1\r\n")
    for i in range(count):
        fb.hold(c, req, interval)
        if fb.halted.is_set():
            return False
        fb.send(c, req, b"X-Trickle-%d: %s\r\n" % (i, b"t" * 40))
    fb.send(c, req, b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
            b'{"done":true}')
    return False


def b_short_body(fb, c, req, length=1000, send=100):
    """Content-Length LENGTH, only SEND bytes of body, then close."""
    fb.send(c, req, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: short=1"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (length, b'{"response":"' + b"x" * send))
    req.t_bad = time.monotonic()
    time.sleep(0.05)
    return False


def b_bad_chunk(fb, c, req, lines=2, bad=b"zz\r\n", after=b"", hold=30.0):
    """A chunked NDJSON stream: LINES good lines, then BAD (a bad chunk
    size line) and AFTER, then silence until the proxy hangs up."""
    fb.send(c, req, NDJSON_HEAD)
    for i in range(lines):
        fb.send(c, req, _chunk(ndjson_line(i)))
        time.sleep(0.02)
    req.t_bad = time.monotonic()
    fb.send(c, req, bad + after)
    return fb.hold(c, req, hold)


def b_reset_mid_stream(fb, c, req, lines=3, gap=0.05, partial=b""):
    """A chunked NDJSON stream of LINES lines (and PARTIAL, the start of
    one more), then a TCP reset."""
    fb.send(c, req, NDJSON_HEAD)
    for i in range(lines):
        fb.send(c, req, _chunk(ndjson_line(i)))
        time.sleep(gap)
    if partial:
        fb.send(c, req, _chunk(partial))
        time.sleep(gap)
    req.t_bad = time.monotonic()
    _reset(c)
    return False


def b_busy(fb, c, req, close=False):
    """Ollama's busy 503 (with a cookie that must not reach the client)."""
    fb._reply(c, 503, BUSY, extra=b"Set-Cookie: busy=1\r\nRetry-After: 99\r\n" +
              (b"Connection: close\r\n" if close else b""))
    return not close


def b_silent(fb, c, req, hold=60.0):
    """Read the request, answer nothing until the proxy hangs up."""
    return fb.hold(c, req, hold)


def b_stall(fb, c, req, hold=60.0):
    """A chunked NDJSON head and one line, then nothing."""
    fb.send(c, req, NDJSON_HEAD + _chunk(ndjson_line(0)))
    req.t_bad = time.monotonic()
    return fb.hold(c, req, hold)


def b_huge(fb, c, req, size=1 << 30, chunked=False):
    """SIZE bytes of body as fast as the proxy takes them, Content-Length
    framed, or chunked (64 KiB chunks)."""
    block = (b'{"response":"' + b"z" * 65500 + b'"}\n')[:65536]
    if chunked:
        fb.send(c, req, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        block = _chunk(block)
    else:
        fb.send(c, req, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % size)
    left = size
    while left > 0 and not fb.halted.is_set():
        fb.send(c, req, block if chunked or left >= len(block) else block[:left])
        left -= 65536
    if chunked and left <= 0:
        fb.send(c, req, b"0\r\n\r\n")
    return False


def b_raw(fb, c, req, data=b""):
    """DATA as it is (a whole response of the test's making), then close."""
    fb.send(c, req, data)
    time.sleep(0.05)
    return False


def b_endless_trailers(fb, c, req, size=100):
    """A chunked NDJSON stream of one line, its last chunk, then trailer
    lines of SIZE bytes for ever (each one restarts an idle timer)."""
    fb.send(c, req, NDJSON_HEAD + _chunk(ndjson_line(0)) + b"0\r\n")
    req.t_bad = time.monotonic()
    line = b"X-Trailer: " + b"t" * (size - 13) + b"\r\n"
    while not fb.halted.is_set():
        fb.send(c, req, line * 16)
        time.sleep(0.01)
    return False


BEHAVIOURS = {name[2:]: fn for name, fn in globals().items() if name.startswith("b_")}
