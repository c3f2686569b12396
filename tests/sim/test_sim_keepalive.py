"""ollama-sim: one connection, many requests - HTTP/1.1 keep-alive after
streamed (chunked NDJSON and SSE) and whole replies, pipelined requests
(sent before the previous reply ended), request bodies of every framing on
a kept connection, and a reply to "Connection: close" that reaches a slow
reader whole before the connection ends.

The connection filter under evhttp (sim_conn.c) decides when a reply
counts as written; evhttp reads the next request, or closes, at that
moment."""
import hashlib
import json
import re
import socket
import time

from simlib import ndjson, sse, Sim
from harness import SLOW, Resp, eq, ok, run

# 6 tokens at 40/s: a streamed reply lasts ~150 ms, long enough to send the
# next request while it is still going
S = Sim("--ttft-ms", "1", "--tokens", "6", "--tokens-per-s", "40", "--parallel", "2")
HOST = "127.0.0.1:%d" % S.port
MSGS = [{"role": "user", "content": "hi"}]


class Conn:
    """One raw connection: requests are written as given, replies parsed
    from the byte stream in order (so pipelining is under the test's
    control, which http.client does not allow)."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5 * SLOW)  # a reply that never comes fails fast
        self.sock.connect(("127.0.0.1", port))
        self.f = self.sock.makefile("rb")

    def send(self, *reqs):
        self.sock.sendall(b"".join(reqs))

    def head(self):
        """A reply's status and headers."""
        line = self.f.readline()
        ok(line.startswith(b"HTTP/1.1 "), "status line: %r" % line)
        headers = {}
        while True:
            h = self.f.readline()
            ok(h.endswith(b"\r\n"), "head line: %r" % h)
            if h == b"\r\n":
                break
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(line.split()[1]), headers

    def chunk(self):
        """One chunk of a chunked body; b"" for the last (and its end)."""
        size = int(self.f.readline().split(b";")[0], 16)
        data = self.f.read(size)
        eq(self.f.readline(), b"\r\n", "chunk end")
        return data

    def body(self, headers, first=b""):
        if headers.get("transfer-encoding") != "chunked":
            n = int(headers.get("content-length", "0"))
            body = self.f.read(n)
            eq(len(body), n, "a whole body of Content-Length %d" % n)
            return body
        body = first
        while True:
            data = self.chunk()
            if not data:
                return body
            body += data

    def reply(self):
        status, headers = self.head()
        return Resp(status, headers, self.body(headers))

    def still_open(self):
        """True when the server has not closed (nothing more is sent)."""
        self.sock.settimeout(0.2)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(5 * SLOW)

    def close(self):
        self.f.close()
        self.sock.close()


def req(method, path, body=None, headers=None):
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": HOST}
    if body is not None:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n%s\r\n" % (
        method, path, "".join("%s: %s\r\n" % kv for kv in h.items() if kv[1] is not None))
    return head.encode() + (body or b"")


def chat(stream):
    return req("POST", "/api/chat", {"model": "llama3", "messages": MSGS, "stream": stream})


def generate(stream):
    return req("POST", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": stream})


def v1_chat(stream):
    return req("POST", "/v1/chat/completions",
               {"model": "llama3", "messages": MSGS, "stream": stream})


def messages(stream):
    return req("POST", "/v1/messages", {"model": "llama3", "max_tokens": 50,
                                        "messages": MSGS, "stream": stream})


# What each request's reply must be: (request, check(resp)).

def ndjson_chat(r):
    eq(r.status, 200, r)
    eq(r.headers.get("transfer-encoding"), "chunked")
    lines = ndjson(r.body)
    ok(len(lines) >= 2 and lines[-1]["done"] is True, lines)
    ok("message" in lines[0], lines[0])


def ndjson_generate(r):
    eq(r.status, 200, r)
    eq(r.headers.get("transfer-encoding"), "chunked")
    lines = ndjson(r.body)
    ok(len(lines) >= 2 and lines[-1]["done"] is True and "response" in lines[0], lines)


def whole_chat(r):
    eq(r.status, 200, r)
    o = r.json()
    ok(o["done"] is True and o["message"]["content"], o)


def whole_generate(r):
    eq(r.status, 200, r)
    ok(r.json()["done"] is True and r.json()["response"], r)


def sse_chat(r):
    eq(r.status, 200, r)
    ok(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
    data = sse(r.body)
    eq(data[-1], "[DONE]")
    eq(json.loads(data[0])["object"], "chat.completion.chunk")


def whole_v1_chat(r):
    eq(r.status, 200, r)
    eq(r.json()["object"], "chat.completion")


def sse_messages(r):
    eq(r.status, 200, r)
    ok(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
    names = re.findall(rb"^event: ([a-z_]+)$", r.body, re.M)
    eq((names[0], names[-1]), (b"message_start", b"message_stop"), r.body[:200])
    ok(r.body.endswith(b"\n\n"), r.body[-40:])


def whole_messages(r):
    eq(r.status, 200, r)
    eq(r.json()["type"], "message")


def version(r):
    eq(r.status, 200, r)
    ok(r.json()["version"], r)


def tags(r):
    eq(r.status, 200, r)
    ok("llama3:latest" in [m["name"] for m in r.json()["models"]], r)


SEQUENCE = [
    (chat(True), ndjson_chat),
    (chat(True), ndjson_chat),
    (chat(False), whole_chat),
    (v1_chat(True), sse_chat),
    (v1_chat(True), sse_chat),
    (req("GET", "/api/tags"), tags),
    (messages(True), sse_messages),
    (generate(True), ndjson_generate),
    (v1_chat(False), whole_v1_chat),
    (messages(False), whole_messages),
    (generate(False), whole_generate),
    (chat(True), ndjson_chat),
]


def test_one_by_one():
    """Each request after the previous reply ended, on one connection:
    streamed NDJSON, SSE (OpenAI and Anthropic) and whole replies in a
    mixed order, twice a streamed reply after a streamed one."""
    c = Conn(S.port)
    for i, (r, check) in enumerate(SEQUENCE):
        c.send(r)
        try:
            check(c.reply())
        except Exception as e:
            raise AssertionError("request %d of one connection (%s): %s" %
                                 (i + 1, r.split(b" ", 2)[1].decode(), e))
    ok(c.still_open(), "kept open after the last reply")
    c.close()


def test_pipelined_at_once():
    """Every request written before the first reply: the replies come in
    order, each whole."""
    c = Conn(S.port)
    c.send(*[r for r, _ in SEQUENCE])
    for i, (r, check) in enumerate(SEQUENCE):
        try:
            check(c.reply())
        except Exception as e:
            raise AssertionError("pipelined request %d (%s): %s" %
                                 (i + 1, r.split(b" ", 2)[1].decode(), e))
    ok(c.still_open(), "kept open after the last reply")
    c.close()


def test_pipelined_mid_stream():
    """The next request written while a streamed reply is coming (its head
    and first chunk read, its end not yet sent)."""
    c = Conn(S.port)
    for first, first_check, nxt, check in [
            (chat(True), ndjson_chat, chat(True), ndjson_chat),
            (v1_chat(True), sse_chat, v1_chat(True), sse_chat),
            (generate(True), ndjson_generate, chat(False), whole_chat),
            (messages(True), sse_messages, req("GET", "/api/version"), version)]:
        c.send(first)
        status, headers = c.head()
        eq((status, headers.get("transfer-encoding")), (200, "chunked"))
        data = c.chunk()
        ok(data, "a first chunk")
        c.send(nxt)  # the stream is still going: its end comes ~150 ms later
        first_check(Resp(status, headers, c.body(headers, data)))
        check(c.reply())
    ok(c.still_open(), "kept open")
    c.close()


def test_request_bodies_on_one_connection():
    """The filter follows request framing; each framing leaves the
    connection ready for the next request: a chunked request body, a
    small blob upload (digested by the filter, the connection kept, as in
    Ollama), a HEAD, a body sent along with "Expect: 100-continue"."""
    blob = b"GGUF" + bytes(range(256)) * 8
    d = "sha256:" + hashlib.sha256(blob).hexdigest()
    body = json.dumps({"model": "llama3", "messages": MSGS, "stream": True}).encode()
    chunked = (req("POST", "/api/chat", None, {"Transfer-Encoding": "chunked"}) +
               b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
    c = Conn(S.port)
    c.send(chunked)
    ndjson_chat(c.reply())
    c.send(req("POST", "/api/blobs/" + d, blob))
    r = c.reply()
    eq((r.status, r.body), (201, b""))
    c.send(req("HEAD", "/api/blobs/" + d))
    line = c.f.readline()
    ok(line.startswith(b"HTTP/1.1 200"), line)
    while c.f.readline() != b"\r\n":
        pass
    c.send(chunked)
    ndjson_chat(c.reply())
    c.send(req("POST", "/api/blobs/" + d, blob))
    r = c.reply()
    eq((r.status, r.body), (200, b""), "a blob it has, body under 256 KiB: read, kept")
    c.send(req("POST", "/v1/chat/completions",
               {"model": "llama3", "messages": MSGS, "stream": True},
               {"Expect": "100-continue"}))
    r = c.reply()
    if r.status == 100:
        r = c.reply()
    sse_chat(r)
    c.send(chat(False))
    whole_chat(c.reply())
    ok(c.still_open(), "kept open")
    c.close()


def test_expect_continue_on_kept_connection():
    """A request whose body waits for "100 Continue", after other replies
    on the connection: evhttp writes the interim answer and must hear that
    it was written (its callback then is not the last reply's end)."""
    body = json.dumps({"model": "llama3", "messages": MSGS, "stream": True}).encode()
    c = Conn(S.port)
    for prev, check in [(chat(False), whole_chat), (chat(True), ndjson_chat)]:
        c.send(prev)
        check(c.reply())
        c.send(req("POST", "/api/chat", None,
                   {"Content-Length": str(len(body)), "Expect": "100-continue"}))
        eq(c.f.readline(), b"HTTP/1.1 100 Continue\r\n")
        eq(c.f.readline(), b"\r\n")
        c.send(body)
        ndjson_chat(c.reply())
    c.send(v1_chat(True))
    sse_chat(c.reply())
    ok(c.still_open(), "kept open")
    c.close()


def test_close_after_big_reply_to_slow_reader():
    """A 13 MB whole reply with "Connection: close" to a client that reads
    late and slowly (small receive buffer): every byte arrives before the
    connection ends, far more than the kernel's buffers hold."""
    big = Sim("--ttft-ms", "1", "--tokens", "1000000", "--tokens-per-s", "0")
    try:
        c = Conn(big.port, rcvbuf=4096)
        c.sock.settimeout(60 * SLOW)
        c.send(req("POST", "/api/generate", {"model": "llama3", "prompt": "hi",
                                             "stream": False},
                   {"Host": "127.0.0.1:%d" % big.port, "Connection": "close"}))
        time.sleep(1.0)
        r = c.reply()
        eq(r.status, 200)
        ok(len(r.body) > 8_000_000, "big: %d bytes" % len(r.body))
        eq(r.json()["eval_count"], 1000000)
        eq(c.f.read(1), b"", "then the connection ends")
        c.close()
    finally:
        big.stop()


def test_clean_exit():
    eq(S.stop(), 0)


run(globals())
