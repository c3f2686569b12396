"""ollama-sim: HEAD/POST /api/blobs/sha256:D and POST /api/create with
files - the upload digested as it arrives (never held whole), Ollama's early
200 for a blob it has, and a model made of blobs."""
import hashlib
import os
import time

from simlib import get, post, http, raw_send, silent_for, recv_all, ndjson, Sim
from harness import SLOW, eq, ok, run

S = Sim("--ttft-ms", "1", "--tokens", "4", "--tokens-per-s", "0")
U = S.url
GGUF = b"GGUF" + bytes(range(256)) * 40


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(data, d=None, headers=None):
    return http("POST", U + "/api/blobs/" + (d or digest(data)), data, headers=headers)


def head(d):
    return http("HEAD", U + "/api/blobs/" + d)


def test_upload_then_head():
    data = GGUF + b"one"
    d = digest(data)
    eq(head(d).status, 404)
    r = upload(data)
    eq((r.status, r.body), (201, b""))
    eq(head(d).status, 200)
    eq(head(d.replace(":", "-", 1)).status, 200, "sha256-HEX is the same blob")
    r = upload(data)
    eq((r.status, r.body), (200, b""), "a blob it has: 200")


def test_digest_errors():
    data = GGUF + b"two"
    wrong = "sha256:" + "0" * 64
    r = upload(data, wrong)
    eq(r.status, 400)
    eq(r.json(), {"error": 'digest mismatch, expected "%s", got "%s"' % (wrong, digest(data))})
    eq(head(digest(data)).status, 200, "kept under the digest it has, as Ollama does")
    eq(head(wrong).status, 404)
    for bad in ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64]:
        r = upload(data, bad)
        eq((r.status, r.json()), (400, {"error": "invalid digest format"}), bad)
        eq(head(bad).status, 400)
    upper = "sha256:" + hashlib.sha256(b"GGUFcase").hexdigest().upper()
    eq(upload(b"GGUFcase", upper).status, 400, "Ollama compares the digest strings")
    eq(http("GET", U + "/api/blobs/" + digest(data)).status, 405)


def test_big_upload_not_held_in_memory():
    """80 MB (past evhttp's 64 MB body limit) streamed in: 201, and the
    sim's peak memory grows by far less than the body. (Under ASan, a sim
    with no quarantine: freed buffers would otherwise stay resident.)"""
    env = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:quarantine_size_mb=0"
    try:
        sim = Sim("--ttft-ms", "1")
    finally:
        if env is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = env
    chunk = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
    n = 80
    h = hashlib.sha256()
    for _ in range(n):
        h.update(chunk)
    d = "sha256:" + h.hexdigest()

    def hwm():
        with open("/proc/%d/status" % sim.proc.pid) as f:
            return int(next(ln for ln in f if ln.startswith("VmHWM")).split()[1])
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": "warm up", "stream": False})
    before = hwm()
    s = raw_send(sim.url, "POST", "/api/blobs/" + d, b"",
                 headers={"Content-Length": str(n * len(chunk))})
    for _ in range(n):
        s.sendall(chunk)
    data = recv_all(s, timeout=30)
    s.close()
    ok(data.startswith(b"HTTP/1.1 201"), data[:200])
    grew = hwm() - before
    ok(grew < 24 * 1024, "peak memory grew by %d KiB for an 80 MiB upload" % grew)
    eq(http("HEAD", sim.url + "/api/blobs/" + d).status, 200)
    eq(sim.stop(), 0)


def test_existing_blob_answered_before_body():
    data = GGUF + b"three"
    d = digest(data)
    eq(upload(data).status, 201)
    # a large body: 200 at once, Connection: close, the body never read
    s = raw_send(U, "POST", "/api/blobs/" + d, b"", headers={"Content-Length": str(10 << 20)})
    s.settimeout(5 * SLOW)
    got = s.recv(4096)
    ok(got.startswith(b"HTTP/1.1 200") and b"Connection: close" in got, got)
    ok(b"Content-Length: 0" in got, got)
    s.sendall(b"x" * 65536)  # the client may still send; it is dropped
    ok(recv_all(s, timeout=5) == b"", "then the connection ends")
    s.close()
    # Expect: 100-continue: no 100, the answer
    s = raw_send(U, "POST", "/api/blobs/" + d, b"",
                 headers={"Content-Length": str(len(data)), "Expect": "100-continue"})
    got = recv_all(s, timeout=5)
    ok(got.startswith(b"HTTP/1.1 200") and b"100 Continue" not in got, got)
    s.close()
    # a small body is read first (Go reads up to 256 KiB) and the connection kept
    s = raw_send(U, "POST", "/api/blobs/" + d, b"", headers={"Content-Length": str(len(data))})
    ok(silent_for(s, 0.3), "nothing before the small body is in")
    s.sendall(data)
    s.settimeout(5 * SLOW)
    got = s.recv(4096)
    ok(got.startswith(b"HTTP/1.1 200") and b"Connection: close" not in got, got)
    s.sendall(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    ok(b'"version"' in s.recv(4096), "the connection is kept")
    s.close()


def test_expect_continue_and_chunked():
    data = GGUF + b"four" * 1000
    d = digest(data)
    s = raw_send(U, "POST", "/api/blobs/" + d, b"",
                 headers={"Content-Length": str(len(data)), "Expect": "100-continue"})
    s.settimeout(5 * SLOW)
    eq(s.recv(4096), b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(data)
    got = recv_all(s, timeout=5)
    ok(got.startswith(b"HTTP/1.1 201"), got)
    s.close()
    data = GGUF + b"five" * 5000
    body = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 7000]), data[i:i + 7000])
                    for i in range(0, len(data), 7000)) + b"0\r\n\r\n"
    s = raw_send(U, "POST", "/api/blobs/" + digest(data), b"",
                 headers={"Transfer-Encoding": "chunked", "Content-Length": None})
    s.sendall(body)
    got = recv_all(s, timeout=5)
    ok(got.startswith(b"HTTP/1.1 201"), got)
    s.close()
    eq(head(digest(data)).status, 200)
    # keep-alive through a chunked upload: the next request on the socket
    s = raw_send(U, "POST", "/api/blobs/" + digest(data), b"",
                 headers={"Transfer-Encoding": "chunked", "Content-Length": None})
    s.sendall(b"3\r\nabc\r\n0\r\n\r\nGET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.2)
    got = recv_all(s, timeout=2)
    ok(got.startswith(b"HTTP/1.1 200") and b'"version"' in got, got)
    s.close()


def test_bare_lf_framing():
    """evhttp takes LF for CRLF: so does the framing under it."""
    data = GGUF + b"lf"
    s = raw_send(U, "GET", "/api/version", None)  # one ordinary request first
    recv_all(s, timeout=2)
    s.sendall(b"POST /api/blobs/" + digest(data).encode() + b" HTTP/1.1\nHost: 127.0.0.1\n"
              b"Transfer-Encoding: chunked\n\n%x\n" % len(data) + data + b"\n0\n\n")
    s.settimeout(5 * SLOW)
    got = s.recv(4096)
    ok(got.startswith(b"HTTP/1.1 201"), got)
    s.sendall(b"GET /api/version HTTP/1.1\nHost: 127.0.0.1\n\n")
    ok(b'"version"' in s.recv(4096), "the next request on the connection")
    s.close()
    eq(head(digest(data)).status, 200)


# ---- /api/create ----

def create(body):
    return post(U + "/api/create", body)


def test_create_from_files():
    data = GGUF + b"model"
    d = digest(data)
    eq(upload(data).status, 201)
    r = create({"model": "mine:v1", "files": {"mine.gguf": d}, "system": "be kind"})
    eq(r.status, 200)
    eq(r.headers["content-type"], "application/x-ndjson")
    st = [o["status"] for o in ndjson(r.body)]
    eq(st[0], "parsing GGUF")
    eq(st[1], "using existing layer " + d)
    ok(st[2].startswith("creating new layer sha256:"), st)
    eq(st[-2:], ["writing manifest", "success"])
    tags = {m["name"]: m for m in get(U + "/api/tags").json()["models"]}
    ok("mine:v1" in tags, tags.keys())
    eq(tags["mine:v1"]["size"], len(data))
    o = post(U + "/api/chat", {"model": "mine:v1", "stream": False,
                               "messages": [{"role": "user", "content": "hi"}]})
    eq(o.status, 200)
    r = create({"model": "mine:v2", "files": {"mine.gguf": d}, "stream": False})
    eq((r.status, r.json()), (200, {"status": "success"}))
    r = create({"model": "mine:v3", "from": "mine:v1", "stream": False})
    eq((r.status, r.json()), (200, {"status": "success"}))
    ok("mine:v3" in [m["name"] for m in get(U + "/api/tags").json()["models"]], "from")


def test_create_errors():
    missing = "sha256:" + "1" * 64
    path = "/.ollama/models/blobs/sha256-" + "1" * 64 + ": no such file or directory"
    r = create({"model": "x:1", "files": {"m.gguf": missing}, "stream": False})
    eq(r.status, 500)
    ok(r.json()["error"].startswith("open ") and r.json()["error"].endswith(path), r.body)
    r = create({"model": "x:1", "files": {"m.gguf": missing}})
    eq(r.status, 200, "streamed: progress, then the error in-band")
    lines = ndjson(r.body)
    eq(lines[0], {"status": "parsing GGUF"})
    ok(lines[-1]["error"].endswith(path), lines)
    not_gguf = b"PK\x03\x04 a zip"
    eq(upload(not_gguf).status, 201)
    r = create({"model": "x:1", "files": {"m.gguf": digest(not_gguf)}, "stream": False})
    eq((r.status, r.json()), (400, {"error": "supplied file was not in GGUF format"}))
    r = create({"model": "x:1", "files": {"weights": missing}})
    eq((r.status, r.json()), (400, {"error": "unknown type"}), "typed by a blob it lacks")
    for body, msg in [({"model": "x:1", "files": {"/abs.gguf": missing}},
                       "file path must be relative"),
                      ({"model": "x:1", "files": {"m.gguf": ""}}, "invalid digest format"),
                      ({"model": "x:1"}, "neither 'from' or 'files' was specified"),
                      ({"model": "bad name!", "files": {}}, "invalid model name")]:
        r = create(body)
        eq((r.status, r.json()), (400, {"error": msg}), body)
    eq((create(b"").status, create(b"").json()), (400, {"error": "missing request body"}))
    ok("x:1" not in [m["name"] for m in get(U + "/api/tags").json()["models"]], "not made")


def test_clean_exit():
    eq(S.stop(), 0)


run(globals())
