"""ollama-proxy: every client's wire format (CONTRACT.md, "Every wire
format"), over raw HTTP against ollama-sim: /v1/messages, /v1/responses and
/v1/audio/transcriptions routed by their model like /api/chat; each path's
own error shapes, before the head and inside a stream that has started;
prompt and generated tokens of the four formats in /metrics, the access
log and the status page's history; keys in every spelling, none forwarded;
Origin never forwarded, CORS answered from cors_origins.

Two backends: model alpha is only on "a", llama3 on both."""
import base64
import json
import socket
import threading
import time

from fakebackend import FakeBackend
from harness import Proxy, Sim, eq, get, http, ok, post, run, wait_until, SLOW

MSG = [{"role": "user", "content": "Tell me about Lisbon"}]
ANTHROPIC = {"model": "alpha", "max_tokens": 64, "messages": MSG}
RESPONSES = {"model": "alpha", "input": "Tell me about Lisbon"}
CHAT = {"model": "alpha", "messages": MSG}


def _fleet(extra="", **sim):
    a = Sim("--ttft-ms", "5", "--tokens", "6", "--tokens-per-s", "0", "--parallel", "4",
            models="alpha:latest,llama3:latest")
    b = Sim("--ttft-ms", "5", "--tokens", "6", "--tokens-per-s", "0", "--parallel", "4",
            models="llama3:latest")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)], extra=extra)
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]), what="discovery")
    return a, b, px


def _sse(body):
    """[(event or None, data)] of an SSE body."""
    out = []
    for block in body.decode().split("\n\n"):
        ev, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            d = "\n".join(data)
            out.append((ev, d if d == "[DONE]" else json.loads(d)))
    return out


def test_routed_by_model():
    """Each path with model alpha reaches "a", the only backend listing it,
    streamed and not: on main /v1/messages and /v1/responses went to the
    least loaded backend, and "b" answered 404."""
    a, b, px = _fleet()
    cases = [("/v1/messages", ANTHROPIC), ("/v1/responses", RESPONSES),
             ("/v1/chat/completions", CHAT), ("/api/chat", CHAT)]
    for path, body in cases:
        for stream in (False, True):
            for _ in range(4):
                r = post(px.url + path, dict(body, stream=stream))
                eq(r.status, 200, "%s stream=%s: %r" % (path, stream, r))
                eq(r.headers.get("x-backend"), "a", path + ": the backend with the model")
    paths = b.stats().get("paths", {})
    ok("/v1/messages" not in paths and "/v1/responses" not in paths,
       "b never saw alpha: %r" % paths)
    eq(a.stats()["paths"]["/v1/messages"], 8, "every message went to a")
    eq(a.stats()["paths"]["/v1/responses"], 8, "every response went to a")
    px.stop()


def test_new_rows_read_as_ollama_reads_them():
    """The hardening of issue 18 holds for the new rows: /v1/messages and
    /v1/responses found on the percent-decoded path, their model read as
    Go's encoding/json reads it (a member name in any case, the last
    duplicate winning), and a target the proxy refuses answered in the
    path's own shape (Anthropic's on /v1/messages: on the merge it was
    OpenAI's)."""
    a, b, px = _fleet()
    before = a.stats()["paths"]
    for path in ("/v1/%6Dessages", "/v1/m%65ssages", "/v1/%72esponses"):
        body = ANTHROPIC if "ssages" in path else RESPONSES
        for _ in range(4):
            r = post(px.url + path, body)
            eq((r.status, r.headers.get("x-backend")), (200, "a"), path + ": %r" % r)
    # A member named in another case, and a duplicate whose last value
    # wins: Ollama runs alpha, so the proxy routes to "a" (the only one
    # with it). ollama-sim reads names exactly, so what it answers is not
    # the point: the backend is.
    spellings = [b'{"Model":"alpha","max_tokens":8,"messages":%s}',
                 b'{"MODEL":"alpha","max_tokens":8,"messages":%s}',
                 b'{"model":"llama3","model":"alpha","max_tokens":8,"messages":%s}']
    for raw in spellings:
        for path in ("/v1/messages", "/v1/responses"):
            body = raw % json.dumps(MSG).encode()
            if path == "/v1/responses":
                body = body.replace(b'"max_tokens":8,"messages"', b'"input"')
            for _ in range(3):
                r = http("POST", px.url + path, body,
                         headers={"Content-Type": "application/json"})
                eq(r.headers.get("x-backend"), "a", "%s %s: %r" % (path, body, r))
    after = a.stats()["paths"]
    eq(after["/v1/messages"] - before.get("/v1/messages", 0), 8 + 9, "messages on a")
    eq(after["/v1/responses"] - before.get("/v1/responses", 0), 4 + 9, "responses on a")
    ok("/v1/messages" not in b.stats().get("paths", {}), "b never asked")
    # Targets refused before routing (an encoded '/', a NUL): 400 in the
    # path's shape.
    for target in ("/v1/messages%2Fx", "/v1/messages%00"):
        m = _anthropic_error(post(px.url + target, ANTHROPIC), 400, "invalid_request_error",
                             target)
        ok(m.startswith("bad request target"), m)
    _openai_error(post(px.url + "/v1/responses%2Fx", RESPONSES), 400, "invalid_request_error",
                  "/v1/responses%2Fx")
    px.stop()


def _form(fields, boundary="----proxytest"):
    parts = []
    for name, value, filename in fields:
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        parts.append(b"--%s\r\nContent-Disposition: %s\r\n%s\r\n%s\r\n" % (
            boundary.encode(), disp.encode(),
            b"Content-Type: audio/wav\r\n" if filename else b"", value))
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return body, {"Content-Type": "multipart/form-data; boundary=%s" % boundary}


def test_transcriptions_routed_by_the_form_model():
    """The model is a field of the multipart form, after the audio here:
    the proxy finds it there (not in JSON) and routes by it."""
    a, b, px = _fleet()
    audio = bytes(range(256)) * 400
    body, h = _form([("file", audio, "a.wav"), ("model", b"alpha", None)])
    for _ in range(3):
        r = http("POST", px.url + "/v1/audio/transcriptions", body, headers=h)
        eq(r.status, 200, "transcription: %r" % r)
        eq(r.headers.get("x-backend"), "a", "routed by the form's model")
        ok(isinstance(r.json()["text"], str) and r.json()["text"], r.body)
    # No model field: Ollama's 400, in OpenAI's shape, from the proxy.
    body, h = _form([("file", audio, "a.wav")])
    r = http("POST", px.url + "/v1/audio/transcriptions", body, headers=h)
    eq(r.status, 400, "no model")
    eq(r.json()["error"]["message"], "model is required")
    eq(r.json()["error"]["type"], "invalid_request_error")
    # Not a form at all.
    r = post(px.url + "/v1/audio/transcriptions", {"model": "alpha"})
    eq(r.status, 400, "JSON is not a form")
    eq(r.json()["error"]["message"],
       "failed to parse multipart form: request Content-Type isn't multipart/form-data")
    # A model nobody lists: 404 in OpenAI's shape, no backend asked.
    body, h = _form([("model", b"nope", None), ("file", audio, "a.wav")])
    r = http("POST", px.url + "/v1/audio/transcriptions", body, headers=h)
    eq((r.status, r.json()["error"]["type"]), (404, "not_found_error"), r.body)
    eq(a.stats()["paths"].get("/v1/audio/transcriptions"), 3, "only the routed ones reached a")
    px.stop()


def _anthropic_error(r, status, etype, what):
    eq(r.status, status, what + ": %r" % r)
    j = r.json()
    eq(j.get("type"), "error", what + ": Anthropic's shape: %r" % j)
    eq(j["error"]["type"], etype, what)
    ok(isinstance(j["error"]["message"], str) and j["error"]["message"], what)
    return j["error"]["message"]


def _openai_error(r, status, etype, what):
    eq(r.status, status, what + ": %r" % r)
    j = r.json()
    ok(isinstance(j.get("error"), dict), what + ": OpenAI's shape: %r" % j)
    eq(j["error"]["type"], etype, what)
    return j["error"]["message"]


def test_error_shapes_before_the_head():
    """400, 401, 403 (an origin refused), 404, 503 queue full and queue
    timeout: Anthropic's shape on /v1/messages, OpenAI's on /v1/responses,
    Ollama's on /api/chat."""
    sim = Sim("--ttft-ms", "1500", "--tokens", "1", "--parallel", "8",
              models="alpha:latest")
    px = Proxy([("a", sim.url, 1)],
               extra='queue = { max_length = 1; timeout_s = 0.4; };\n'
                     'auth = { keys = ( { name = "k"; key = "s3cret"; admin = true; } ); };')
    wait_until(lambda: px.status(headers={"Authorization": "Bearer s3cret"})["backends"][0]
               ["models"], what="discovery")
    key = {"x-api-key": "s3cret"}
    m = _anthropic_error(post(px.url + "/v1/messages", {"max_tokens": 5, "messages": MSG},
                              headers=key), 400, "invalid_request_error", "no model")
    eq(m, "model is required")
    _anthropic_error(post(px.url + "/v1/messages", ANTHROPIC), 401, "authentication_error",
                     "no key")
    _anthropic_error(post(px.url + "/v1/messages", ANTHROPIC, headers={"x-api-key": "wrong"}),
                     401, "authentication_error", "wrong key")
    _anthropic_error(post(px.url + "/v1/messages", ANTHROPIC,
                          headers=dict(key, Origin="https://evil.example")),
                     403, "permission_error", "foreign origin")
    m = _anthropic_error(post(px.url + "/v1/messages", dict(ANTHROPIC, model="nope"),
                              headers=key), 404, "not_found_error", "unknown model")
    eq(m, "model 'nope' not found")
    _openai_error(post(px.url + "/v1/responses", dict(RESPONSES, model="nope"), headers=key),
                  404, "not_found_error", "responses: unknown model")
    _openai_error(post(px.url + "/v1/responses", {"input": "x"}, headers=key), 400,
                  "invalid_request_error", "responses: no model")

    # One in flight (cap 1), one waiting (max_length 1): the third is
    # refused at once, queue full; the waiting one times out (0.4 s).
    out = {}

    def send(name, path, body):
        out[name] = post(px.url + path, body, headers=key, timeout=30)
    t1 = threading.Thread(target=send, args=("first", "/v1/messages", ANTHROPIC))
    t1.start()
    wait_until(lambda: sim.stats()["in_flight"] == 1, what="the first in flight")
    t2 = threading.Thread(target=send, args=("waiting", "/v1/messages", ANTHROPIC))
    t2.start()
    wait_until(lambda: px.status(headers={"Authorization": "Bearer s3cret"})["queue"]["length"]
               == 1, what="one waiting")
    full = post(px.url + "/v1/messages", ANTHROPIC, headers=key)
    t2.join()
    t1.join()
    m = _anthropic_error(full, 503, "overloaded_error", "queue full")
    ok("queue full" in m and int(full.headers["retry-after"]) >= 1, full.headers)
    m = _anthropic_error(out["waiting"], 503, "overloaded_error", "queue timeout")
    ok("timed out" in m and "retry-after" in out["waiting"].headers, m)
    eq(out["first"].status, 200, "the first served")
    px.stop()


def _stalled_stream(px, path, body):
    """A stream that the backend stalls after its first events: the proxy
    ends it after timeouts.idle_s with an error in the path's format."""
    r = post(px.url + path, dict(body, stream=True), timeout=30)
    eq(r.status, 200, path)
    return r


def test_in_band_errors_per_format():
    """A stream cut after its head ends with an error the client's library
    understands: NDJSON's {"error"} line, OpenAI's data: error object,
    Responses' response.failed (the next sequence number), Anthropic's
    event: error. On main every SSE path got OpenAI's form."""
    sim = Sim("--ttft-ms", "0", "--tokens", "50", "--tokens-per-s", "1", "--parallel", "8",
              models="alpha:latest")
    px = Proxy([("a", sim.url, 8)],
               extra="timeouts = { idle_s = 0.5; };\nhealth = { fail_after = 100; };")
    wait_until(lambda: px.status()["backends"][0]["models"], what="discovery")

    r = _stalled_stream(px, "/api/chat", CHAT)
    lines = [json.loads(l) for l in r.body.decode().splitlines()]
    ok(lines[0].get("message"), "a token came first: %r" % lines[0])
    eq(lines[-1], {"error": "response stalled longer than timeouts.idle_s"}, "NDJSON")

    ev = _sse(_stalled_stream(px, "/v1/chat/completions", CHAT).body)
    ok(ev[0][1]["choices"], "a chunk came first")
    eq(ev[-1][0], None, "OpenAI: a data: line")
    eq(ev[-1][1]["error"]["message"], "response stalled longer than timeouts.idle_s")
    eq(ev[-1][1]["error"]["type"], "api_error")

    ev = _sse(_stalled_stream(px, "/v1/messages", ANTHROPIC).body)
    eq(ev[0][0], "message_start", "the stream had started")
    eq(ev[-1][0], "error", "Anthropic: event: error")
    eq(ev[-1][1], {"type": "error", "error": {
        "type": "api_error", "message": "response stalled longer than timeouts.idle_s"}})

    ev = _sse(_stalled_stream(px, "/v1/responses", RESPONSES).body)
    eq(ev[-1][0], "response.failed", "Responses: response.failed")
    last = ev[-2][1]["sequence_number"]
    f = ev[-1][1]
    eq((f["type"], f["sequence_number"]), ("response.failed", last + 1), "the next number")
    eq(f["response"]["status"], "failed")
    eq(f["response"]["model"], "alpha")
    eq(f["response"]["error"], {"code": "server_error",
                                "message": "response stalled longer than timeouts.idle_s"})
    px.stop()


def _metrics(px):
    out = {}
    for line in get(px.url + "/metrics").text().splitlines():
        if line.startswith("ollama_proxy_") and "tokens_total" in line:
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def test_tokens_of_every_format():
    """Generated and prompt tokens, from each format's own usage fields,
    add up in /metrics as the sim reported them; the access log has
    prompt_tokens; an OpenAI stream without include_usage is counted from
    its deltas and marked estimated; the status page's history has the
    prompt tokens too."""
    a, b, px = _fleet()
    want_gen = want_prompt = 0
    # Each answer's own counts, as the client sees them.
    for stream in (False, True):
        r = post(px.url + "/v1/messages", dict(ANTHROPIC, stream=stream))
        u = r.json()["usage"] if not stream else _sse(r.body)[-2][1]["usage"]
        want_gen += u["output_tokens"]
        want_prompt += u["input_tokens"]
        u_prompt_last = u["input_tokens"]
        r = post(px.url + "/v1/responses", dict(RESPONSES, stream=stream))
        u = r.json()["usage"] if not stream else _sse(r.body)[-1][1]["response"]["usage"]
        want_gen += u["output_tokens"]
        want_prompt += u["input_tokens"]
        r = post(px.url + "/v1/chat/completions",
                 dict(CHAT, stream=stream, stream_options={"include_usage": True}))
        u = r.json()["usage"] if not stream else _sse(r.body)[-2][1]["usage"]
        want_gen += u["completion_tokens"]
        want_prompt += u["prompt_tokens"]
        r = post(px.url + "/api/chat", dict(CHAT, stream=stream))
        u = r.json() if not stream else json.loads(r.body.decode().splitlines()[-1])
        want_gen += u["eval_count"]
        want_prompt += u["prompt_eval_count"]
    ok(want_gen >= 8 * 6 and want_prompt > 8, "counts %d %d" % (want_gen, want_prompt))
    m = _metrics(px)
    label = '{backend="a",model="alpha:latest"}'
    eq(m["ollama_proxy_generated_tokens_total" + label], want_gen, "generated")
    eq(m["ollama_proxy_prompt_tokens_total" + label], want_prompt, "prompt")
    ok(not any("estimated" in k for k in m), "nothing estimated yet: %r" % m)

    # The SDKs' default: a stream without usage. 6 content deltas.
    r = post(px.url + "/v1/chat/completions", dict(CHAT, stream=True))
    deltas = sum(1 for e, d in _sse(r.body) if d != "[DONE]" and d["choices"] and
                 d["choices"][0]["delta"].get("content"))
    eq(deltas, 6, "the sim's 6 tokens")
    m = _metrics(px)
    eq(m["ollama_proxy_generated_tokens_total" + label], want_gen + 6, "deltas counted")
    eq(m["ollama_proxy_estimated_tokens_total" + label], 6, "and marked estimated")
    lines = wait_until(lambda: [l for l in px.proc.output().splitlines()
                                if "POST /v1/chat/completions" in l and "tokens=~" in l],
                       what="the access line")
    ok(" tokens=~6 prompt_tokens=- " in lines[-1], lines[-1])
    line = [l for l in px.proc.output().splitlines() if "POST /v1/messages" in l][-1]
    ok(" tokens=6 prompt_tokens=%d " % u_prompt_last in line, line)
    h = wait_until(lambda: [x for x in get(px.url + "/proxy/history").json()["backends"]
                            if x["name"] == "a" and sum(x["prompt_tokens"]) == want_prompt],
                   timeout=3, what="the history's prompt tokens")
    eq(sum(h[0]["tokens"]), want_gen + 6, "history tokens")
    px.stop()


def test_413_in_the_paths_dialect():
    """A body over limits.max_body_mb (with a Content-Length) gets 413 in
    its path's shape, read and dropped so that the connection serves the
    next request; behind Expect: 100-continue, 413 at once and the body
    never asked for. On main: libevent's HTML page."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)], extra="limits = { max_body_mb = 1; };")
    big = json.dumps(dict(ANTHROPIC, system="x" * (2 << 20))).encode()
    s = socket.create_connection(("127.0.0.1", px.port))
    s.settimeout(10 * SLOW)
    f = s.makefile("rb")
    for path, check in (("/v1/messages", lambda j: j["error"]["type"] == "request_too_large"
                         and j["type"] == "error"),
                        ("/v1/chat/completions", lambda j: j["error"]["type"] ==
                         "invalid_request_error"),
                        ("/api/chat", lambda j: isinstance(j["error"], str))):
        s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" %
                  (path.encode(), len(big)) + big)
        status = f.readline()
        ok(status.startswith(b"HTTP/1.1 413"), "%s: %r" % (path, status))
        hdrs = _headers(f)
        j = json.loads(f.read(int(hdrs["content-length"])))
        ok(check(j), "%s: its shape: %r" % (path, j))
        ok("max_body_mb" in json.dumps(j), j)
        ok(hdrs.get("connection") != "close", "the connection lives on")
    s.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    ok(f.readline().startswith(b"HTTP/1.1 200"), "the next request on the same connection")
    s.close()
    st, h = _raw(px.port, "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                 "Expect: 100-continue\r\n\r\n" % len(big))
    eq(st, 413, "Expect: answered at once, not 100")
    eq(h.get("connection"), "close", "and closed: the body is not read")
    eq(sim.stats()["requests"], 0, "nothing reached the backend")
    px.stop()



def _headers(f):
    """The header lines read from F up to the blank one, {lowercase name: value}."""
    hdrs = {}
    while True:
        line = f.readline().strip()
        if not line:
            break
        k, _, v = line.decode().partition(":")
        hdrs[k.lower()] = v.strip()
    return hdrs


def _answer(f):
    """(status, headers, body) of one answer read from F (Content-Length bodies)."""
    status = f.readline()
    ok(status.startswith(b"HTTP/1.1 "), "an answer: %r" % status)
    hdrs = _headers(f)
    return int(status.split()[1]), hdrs, f.read(int(hdrs.get("content-length", 0)))


def _chunked(data, piece=1 << 16):
    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + piece]), data[i:i + piece])
                   for i in range(0, len(data), piece))
    return out + b"0\r\n\r\n"


def test_413_in_the_paths_dialect_chunked_and_in_pieces():
    """A chunked body over limits.max_body_mb, and a head that arrives in
    pieces, get 413 in the path's shape too. A chunked body is counted as
    it comes: once over, 413 at once (its end may never come) and the
    connection closes after it, lingering so that a client still sending
    reads the 413; a head in pieces with a Content-Length over: the body
    read and dropped, the connection serving the next request. A chunked
    body within the limit, sent in pieces or behind Expect: 100-continue,
    still reaches the backend. On d04e842: libevent's HTML 413 for these."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)], extra="limits = { max_body_mb = 1; };")
    big = json.dumps(dict(ANTHROPIC, system="x" * (2 << 20))).encode()
    shapes = (("/v1/messages", lambda j: j["type"] == "error" and
               j["error"]["type"] == "request_too_large"),
              ("/v1/chat/completions", lambda j: j["error"]["type"] == "invalid_request_error"
               and "message" in j["error"]),
              ("/api/chat", lambda j: isinstance(j["error"], str)),
              ("/api/delete", lambda j: isinstance(j["error"], str)))  # DELETE has a body too

    def connect():
        c = socket.create_connection(("127.0.0.1", px.port))
        c.settimeout(10 * SLOW)
        return c, c.makefile("rb")

    def expect_413(f, what, path, check, closes):
        st, h, body = _answer(f)
        eq(st, 413, "%s %s" % (what, path))
        ok(h.get("content-type", "").startswith("application/json"), "%s: JSON: %r" % (what, h))
        j = json.loads(body)
        ok(check(j), "%s %s: its shape: %r" % (what, path, j))
        ok("max_body_mb" in body.decode(), j)
        eq(h.get("connection") == "close", closes, "%s: closes after: %r" % (what, h))

    def send_in_pieces(c, pieces):
        for p in pieces:
            c.sendall(p)
            time.sleep(0.02)

    for path, check in shapes:
        method = b"DELETE" if path == "/api/delete" else b"POST"
        head = b"%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path.encode())
        # chunked, the head and the whole body in one go
        c, f = connect()
        c.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(big))
        expect_413(f, "chunked", path, check, True)
        eq(f.read(), b"", "then the end, not a reset")
        c.close()
        # chunked, its head in pieces, its end never sent
        c, f = connect()
        whole = head + b"Transfer-Encoding: chunked\r\n\r\n"
        send_in_pieces(c, [whole[:3], whole[3:20], whole[20:] + _chunked(big, 1000)[:-5]])
        expect_413(f, "head in pieces, chunked, no end", path, check, True)
        c.close()
        # a head in pieces, a Content-Length over the limit: read, dropped, and on
        c, f = connect()
        whole = head + b"Content-Length: %d\r\n\r\n" % len(big)
        send_in_pieces(c, [whole[i:i + 7] for i in range(0, len(whole), 7)])
        c.sendall(big)
        expect_413(f, "head in pieces", path, check, False)
        c.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        eq(_answer(f)[0], 200, "the next request on the same connection")
        c.close()
    # Within the limit, chunked and its head in pieces: served.
    small = json.dumps(dict(CHAT, stream=False)).encode()
    c, f = connect()
    whole = b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    send_in_pieces(c, [whole[:9], whole[9:], _chunked(small, 10)])
    st, h, body = _answer(f)
    eq(st, 200, "chunked within the limit: %r" % body)
    ok(json.loads(body)["message"]["content"], body)
    c.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    eq(_answer(f)[0], 200, "the next request on the same connection")
    c.close()
    # Chunked behind Expect: 100-continue (curl's way): 100, then the size
    # is known as the body comes: 413 in the shape; within it, served.
    for data, want in ((big, 413), (json.dumps(ANTHROPIC).encode(), 200)):
        c, f = connect()
        c.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        eq(f.readline(), b"HTTP/1.1 100 Continue\r\n", "100 first")
        eq(f.readline(), b"\r\n")
        c.sendall(_chunked(data))
        st, h, body = _answer(f)
        eq(st, want, "Expect, chunked: %r" % body[:200])
        j = json.loads(body)
        ok(j["error"]["type"] == "request_too_large" if want == 413 else j["type"] == "message", j)
        c.close()
    eq(sim.stats()["paths"].get("/v1/messages"), 1, "only the one within the limit reached it")
    # The proxy serves others after.
    r = post(px.url + "/v1/messages", ANTHROPIC)
    eq(r.status, 200, r)
    px.stop()

def test_keys_in_every_spelling_none_forwarded():
    """Bearer, x-api-key and HTTP Basic's password are each a key; none of
    them, nor Origin, reaches the backend."""
    fb = FakeBackend(models=("alpha:latest",))
    px = Proxy([("fb", "http://127.0.0.1:%d" % fb.port, 4)],
               extra='auth = { keys = ( { name = "k"; key = "s3cret"; } ); };\n'
                     'cors_origins = ( "https://chat.example.com" );')
    import base64
    basic = "Basic " + base64.b64encode(b"user:s3cret").decode()
    for h in ({"Authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"},
              {"Authorization": basic}, {"X-Api-Key": " s3cret "}):
        h = dict(h, Origin="https://chat.example.com")
        r = post(px.url + "/api/chat", dict(CHAT, stream=False), headers=h)
        eq(r.status, 200, "key as %r: %r" % (h, r))
        eq(r.headers.get("access-control-allow-origin"), "https://chat.example.com",
           "CORS header for an allowed origin")
    for h in ({"Authorization": "Basic " + base64.b64encode(b"s3cret:nope").decode()},
              {"Authorization": "Basic !!!"}, {"x-api-key": "s3cre"}):
        r = post(px.url + "/api/chat", dict(CHAT, stream=False), headers=h)
        eq(r.status, 401, "not a key: %r" % h)
    reqs = [q for q in fb.requests if q.target == "/api/chat"]
    eq(len(reqs), 4, "the four with a key reached the backend")
    for q in reqs:
        for name in ("authorization", "x-api-key", "origin"):
            eq(q.header(name), None, "%s forwarded" % name)
    # None logged: the access log (whole once the proxy has exited) names
    # the key ("k"), in no spelling its value (nor the wrong ones sent).
    px.stop()
    out = px.proc.output()
    eq(out.count("client=k "), 4, "the log names the key")
    for secret in ("s3cre", base64.b64encode(b"user:s3cret").decode()):
        ok(secret not in out, "a key in the log: %r" % secret)
    fb.stop()


def _raw(port, text):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(text.encode())
    s.settimeout(10 * SLOW)
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head = data.split(b"\r\n\r\n")[0].decode()
    lines = head.split("\r\n")
    return int(lines[0].split()[1]), {l.split(":")[0].lower(): l.split(":", 1)[1].strip()
                                      for l in lines[1:]}


def test_cors():
    """Preflights are the proxy's: 204 with the SDKs' headers for an
    allowed origin (no key needed), 403 without CORS headers for another;
    a request from another origin gets 403 (as Ollama), one from the
    proxy's own origin (the status page) is served, and no Origin reaches
    a backend."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)],
               extra='cors_origins = ( "https://chat.example.com", "http://localhost:*" );\n'
                     'auth = { keys = ( { name = "k"; key = "s3cret"; admin = true; } ); };')
    pre = ("OPTIONS /v1/messages HTTP/1.1\r\nHost: localhost\r\nOrigin: %s\r\n"
           "Access-Control-Request-Method: POST\r\n"
           "Access-Control-Request-Headers: x-api-key, anthropic-version, content-type, "
           "x-stainless-os, x-stainless-lang, openai-beta, x-not-allowed\r\n\r\n")
    for origin in ("https://chat.example.com", "http://localhost:5173"):
        st, h = _raw(px.port, pre % origin)
        eq(st, 204, "allowed preflight " + origin)
        eq(h.get("access-control-allow-origin"), origin)
        allow = [x.strip().lower() for x in h["access-control-allow-headers"].split(",")]
        for want in ("x-api-key", "anthropic-version", "content-type", "x-stainless-os",
                     "x-stainless-lang", "openai-beta"):
            ok(want in allow, "%s allowed: %r" % (want, allow))
        ok("x-not-allowed" not in allow, allow)
        ok("POST" in h["access-control-allow-methods"], h)
    st, h = _raw(px.port, pre % "https://evil.example")
    eq(st, 403, "refused preflight")
    ok(not [k for k in h if k.startswith("access-control-")], "no CORS headers: %r" % h)
    r = post(px.url + "/v1/messages", ANTHROPIC,
             headers={"Origin": "https://evil.example", "x-api-key": "s3cret"})
    eq(r.status, 403, "a foreign origin's request")
    ok(not [k for k in r.headers if k.startswith("access-control-")], r.headers)
    r = get(px.url + "/proxy/status", headers={"Origin": "http://127.0.0.1:%d" % px.port,
                                              "Host": "127.0.0.1:%d" % px.port,
                                              "Authorization": "Bearer s3cret"})
    eq(r.status, 200, "the proxy's own origin (the status page)")
    r = post(px.url + "/v1/messages", ANTHROPIC,
             headers={"Origin": "https://chat.example.com", "x-api-key": "s3cret"})
    eq(r.status, 200, "allowed origin")
    eq(r.headers.get("access-control-allow-origin"), "https://chat.example.com")
    ok("x-backend" in r.headers.get("access-control-expose-headers", "").lower(), r.headers)
    eq(sim.stats()["paths"].get("/v1/messages"), 1, "only the allowed one reached the sim")
    px.stop()


def test_dns_rebinding_refused_on_loopback():
    """A page whose name was rebound to 127.0.0.1 sends its own name as Host
    (and as Origin, same-origin): on a loopback listener the proxy answers
    it 403 in the path's shape, whatever the path, as Ollama does
    (allowedHostsMiddleware), and nothing reaches a backend: no model
    deleted, no backend drained. Every local name is served: localhost,
    loopback and private addresses, .local, .internal, .localhost, this
    machine's hostname, no Host at all. A listener on 0.0.0.0 checks no
    Host (as Ollama: it is reached by other names)."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest,other:latest")
    px = Proxy([("a", sim.url, 2)])
    wait_until(lambda: px.status()["backends"][0]["models"], what="models known")
    evil = "rebind.evil.test:%d" % px.port
    req = "%s %s HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\nContent-Type: text/plain\r\n" \
          "Content-Length: %d\r\nConnection: close\r\n\r\n%s"
    body = json.dumps({"model": "other"})
    for host in (evil, "8.8.8.8", "127.0.0.1.evil.test", "evil.test.", "[2001:db8::1]:80"):
        st, h = _raw(px.port, req % ("DELETE", "/api/delete", host, host, len(body), body))
        eq(st, 403, "DELETE /api/delete with Host %s" % host)
    for method, path in (("POST", "/proxy/backends/a/drain"), ("GET", "/proxy/status"),
                         ("GET", "/api/tags"), ("GET", "/")):
        st, h = _raw(px.port, req % (method, path, evil, evil, 0, ""))
        eq(st, 403, "%s %s with Host %s" % (method, path, evil))
    r = post(px.url + "/v1/messages", ANTHROPIC, headers={"Host": evil})
    eq(r.status, 403)
    eq(r.json()["type"], "error", "Anthropic's shape: %r" % r.body)
    ok("not a name of this machine" in r.json()["error"]["message"], r.body)
    r = post(px.url + "/api/chat", {"model": "alpha", "messages": []}, headers={"Host": evil})
    eq(r.status, 403)
    ok("not a name of this machine" in r.json()["error"], r.body)
    eq(sorted(m["name"] for m in get(sim.url + "/api/tags").json()["models"]),
       ["alpha:latest", "other:latest"], "no model deleted")
    eq(px.status()["backends"][0].get("admin", "ready"), "ready", "not drained")
    ok("/api/chat" not in sim.stats()["paths"], "nothing reached the sim")
    for host in ("localhost:%d" % px.port, "127.0.0.1", "[::1]:%d" % px.port, "10.1.2.3",
                 "192.168.0.9:80", "foo.local", "x.internal", "a.localhost", "LOCALHOST",
                 socket.gethostname(), ""):
        r = post(px.url + "/api/chat", {"model": "alpha", "messages": [], "stream": False},
                 headers={"Host": host})
        eq(r.status, 200, "Host %r" % host)
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10 * SLOW)
    s.sendall(b"GET /api/tags HTTP/1.0\r\n\r\n")  # no Host at all
    eq(s.recv(64).split(b"\r\n")[0].split()[1], b"200", "HTTP/1.0 without Host")
    s.close()
    px.stop()
    wide = Proxy([("a", sim.url, 2)], listen="0.0.0.0:0")
    st, h = _raw(wide.port, req % ("GET", "/api/tags", "gpu-box.example.com", "gpu-box.example.com", 0, ""))
    eq(st, 200, "a listener on 0.0.0.0 is reached by other names")
    wide.stop()
    sim.stop()


def test_refused_on_the_head_body_never_read():
    """With keys, a request whose head refuses it (no key, a wrong one, a
    user's key on an admin endpoint) is answered 401 or 403, in its path's
    shape, as soon as its head has come: its body is not waited for, held
    or asked for (no 100 Continue), the connection closes after the answer.
    On 7e4806c the proxy read the whole body first (up to max_body_mb, 64
    MiB a connection, for anyone who can connect) and answered a keyless
    "Expect: 100-continue" with 100 Continue. A refused request that came
    whole keeps its connection; a good key's body is read as before."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)],
               extra='auth = { keys = ( { name = "ops"; key = "adm1n"; admin = true; },\n'
                     '                  { name = "u"; key = "us3r"; } ); };')
    big = 50 << 20

    def head_only(path, headers, length=big, chunked=False, first=b'{"model": "alpha"',
                  method=b"POST"):
        """A head and the FIRST bytes of its body (LENGTH, or chunked)."""
        c = socket.create_connection(("127.0.0.1", px.port))
        c.settimeout(10 * SLOW)
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else \
            b"Content-Length: %d\r\n" % length
        c.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s\r\n%s" %
                  (method, path.encode(), headers, framing, first))
        return c, c.makefile("rb")

    cases = ((b"", "/api/generate", 401, lambda j: "key is required" in j["error"]),
             (b"Authorization: Bearer wrong\r\n", "/v1/chat/completions", 401,
              lambda j: "unknown key" in j["error"]["message"]),
             (b"x-api-key: wrong\r\n", "/v1/messages", 401,
              lambda j: j["type"] == "error" and "unknown key" in j["error"]["message"]),
             (b"Expect: 100-continue\r\n", "/api/chat", 401, lambda j: "error" in j),
             (b"Expect: 100-continue\r\nContent-Type: application/json\r\n", "/api/generate", 401,
              lambda j: "error" in j),
             (b"Authorization: Bearer us3r\r\n", "/api/pull", 403,
              lambda j: "admin key" in j["error"]),
             (b"Authorization:  Basic %s\r\n" % base64.b64encode(b"me:wrong"), "/api/embed", 401,
              lambda j: "unknown key" in j["error"]))
    for hdr, path, want, check in cases:
        c, f = head_only(path, hdr, first=b"" if b"Expect" in hdr else b'{"model": "alpha"')
        st, h, body = _answer(f)  # before any more of the body is sent
        eq(st, want, "%s %r" % (path, hdr))
        ok(check(json.loads(body)), "%s: its shape: %r" % (path, body))
        eq(h.get("connection"), "close", "the body is not read: the connection closes")
        c.close()
    c, f = head_only("/api/chat", b"", chunked=True)
    eq(_answer(f)[0], 401, "chunked, keyless")
    c.close()
    c = socket.create_connection(("127.0.0.1", px.port))  # bare LF lines: the same
    c.settimeout(10 * SLOW)
    f = c.makefile("rb")
    c.sendall(b"POST /api/generate HTTP/1.1\nHost: localhost\nContent-Length: %d\n\n{" % big)
    eq(_answer(f)[0], 401, "LF lines, keyless")
    c.close()
    c, f = head_only("/api/tags", b"", method=b"GET")  # a GET may carry a body, for evhttp
    eq(_answer(f)[0], 401, "GET with a body, keyless")
    c.close()
    # A body still coming after the answer is dropped, not held, and the
    # client reads the whole answer (the close lingers).
    c, f = head_only("/api/generate", b"")
    st, h, body = _answer(f)
    eq(st, 401)
    sent = 0
    try:
        while sent < 8 << 20:
            c.sendall(b"x" * 65536)
            sent += 65536
    except OSError:
        pass
    c.close()
    # Whole within one read, a keyless request keeps its connection.
    c = socket.create_connection(("127.0.0.1", px.port))
    c.settimeout(10 * SLOW)
    f = c.makefile("rb")
    small = b'{"model":"alpha","prompt":"x","stream":false}'
    c.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
              b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer us3r\r\n\r\n"
              % (len(small), small))
    eq(_answer(f)[0], 401)
    eq(_answer(f)[0], 200, "the next request on the connection")
    c.close()
    # A good key behind Expect: 100-continue is asked for its body, and served.
    c, f = head_only("/api/generate", b"Authorization: Bearer us3r\r\nExpect: 100-continue\r\n",
                     length=len(small), first=b"")
    eq(f.readline(), b"HTTP/1.1 100 Continue\r\n")
    f.readline()
    c.sendall(small)
    st, h, body = _answer(f)
    eq(st, 200, "a good key's body: %r" % body)
    ok(json.loads(body)["done"], body)
    c.close()
    eq(sim.stats()["paths"].get("/api/generate"), 1, "only the good key's request reached the sim")
    px.stop()


def test_heads_at_fault_answered_in_the_paths_shape():
    """A head evhttp would answer itself (an HTML page) or read otherwise
    than a proxy in front may (two lengths: evhttp takes the first, the
    rest a request smuggled in) is answered by the proxy in its path's
    shape and the connection closed: nothing after it is read as a
    request. Ollama's Go server answers these alike (400, 501, 505). A head
    of bare LF lines is a head like any other (judged, served). On
    79ba805: HTML pages, and "Content-Length: 3" then a second length let a
    GET through behind the body."""
    sim = Sim("--ttft-ms", "0", "--tokens", "2", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)], extra="limits = { max_body_mb = 1; };")
    body = b'{"model":"alpha","prompt":"x","stream":false}'
    emb = b'{"model":"alpha","input":"x"}'
    smuggled = b"POST /api/embed HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (
        len(emb), emb)
    ollama = lambda j: isinstance(j["error"], str)
    openai = lambda j: j["error"]["type"] and "message" in j["error"]
    cases = (
        (b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(body + smuggled), body + smuggled), 400, ollama),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
         b"Content-Length: 3\r\n\r\n%s" % (len(body), body + smuggled), 400, openai),
        (b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: +%d\r\n\r\n%s"
         % (len(body), body), 400, ollama),
        (b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n"
         b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), 501, ollama),
        (b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Length: 3\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), 400, ollama),
        (b"TRACE /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\r\n", 501, openai),
        (b"GET /api/tags HTTP/2.0\r\nHost: localhost\r\n\r\n", 505, ollama),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, ollama),
        (b"hello\r\n\r\n", 400, ollama),
        (b"HEAD /api/tags HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" %
         (len(smuggled), smuggled), 400, None),
        (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Trace: a\x00b\r\n\r\n", 400, ollama),
        (b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: %s\r\n\r\n" % (b"a" * 70000),
         431, openai),
        (b"GET /api/tags?q=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (b"a" * 70000), 414, ollama),
        )
    for raw, want, check in cases:
        c = socket.create_connection(("127.0.0.1", px.port))
        c.settimeout(10 * SLOW)
        try:
            c.sendall(raw + smuggled)
        except OSError:
            pass  # the proxy may answer, and close, before all is sent
        f = c.makefile("rb")
        st, h, got = _answer(f)
        eq(st, want, "%r" % raw[:60])
        if check:  # (no body answers a HEAD)
            ok(h.get("content-type", "").startswith("application/json"), "JSON: %r" % h)
            ok(check(json.loads(got)), "%r: its shape: %r" % (raw[:40], got))
        eq(h.get("connection"), "close", "%r" % raw[:40])
        eq(f.read(), b"", "nothing more answered on the connection: %r" % raw[:40])
        c.close()
    eq(sim.stats()["paths"].get("/api/embed"), None, "no smuggled request reached the sim")
    eq(sim.stats()["paths"].get("/api/generate"), None, "nor a request at fault")
    # A GET may carry a body, as evhttp reads it: over the limit, 413 in
    # JSON (evhttp's HTML before), read and dropped, the connection kept.
    c = socket.create_connection(("127.0.0.1", px.port))
    c.settimeout(10 * SLOW)
    f = c.makefile("rb")
    c.sendall(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s%s" %
              (2 << 20, b"x" * (2 << 20), smuggled))
    st, h, got = _answer(f)
    eq(st, 413, "a GET's body over the limit")
    ok(ollama(json.loads(got)), got)
    eq(_answer(f)[0], 200, "the next request on the connection")
    c.close()
    # Bare LF lines: served, kept alive, the next request too.
    c = socket.create_connection(("127.0.0.1", px.port))
    c.settimeout(10 * SLOW)
    f = c.makefile("rb")
    c.sendall(b"POST /api/generate HTTP/1.1\nHost: localhost\nContent-Length: %d\n\n%s"
              b"GET /api/version HTTP/1.1\nHost: localhost\n\n" % (len(body), body))
    st, h, got = _answer(f)
    eq(st, 200, "LF lines: %r" % got)
    eq(_answer(f)[0], 200, "the next request")
    c.close()
    px.stop()


def test_account_routes_need_an_admin_key():
    """Ollama's routes of the box's ollama.com account (who it is, signing
    it out, deleting its key) are admin, as pull and delete are: a user's
    key gets 403 and no backend hears of it; an admin's is forwarded."""
    sim = Sim("--ttft-ms", "0", models="alpha:latest")
    px = Proxy([("a", sim.url, 2)],
               extra='auth = { keys = ( { name = "ops"; key = "adm1n"; admin = true; },\n'
                     '                  { name = "u"; key = "us3r"; } ); };')
    for method, path in (("POST", "/api/me"), ("POST", "/api/signout"),
                         ("DELETE", "/api/user/keys/c3NoLWVkMjU1MTk")):
        r = http(method, px.url + path, {}, headers={"Authorization": "Bearer us3r"})
        eq(r.status, 403, "%s %s with a user's key: %r" % (method, path, r.body))
        ok("admin key" in r.json()["error"], r.body)
        ok(path not in sim.stats()["paths"], "%s reached the sim" % path)
        r = http(method, px.url + path, {}, headers={"Authorization": "Bearer adm1n"})
        eq(r.headers.get("x-backend"), "a", "%s %s with an admin key: forwarded" % (method, path))
    px.stop()


run(globals())
