"""ollama-proxy: retries before the first byte (busy 503, reset, refused
connect) and a backend killed in the middle of a run."""
import socket
import threading
import time

import aclient
from harness import Proxy, Sim, eq, ok, post, run, wait_until, SLOW

GEN = {"model": "llama3", "prompt": "hello", "stream": False}


def test_backend_killed_mid_run():
    a = Sim("--parallel", "4", "--ttft-ms", "100", "--tokens", "2", "--tokens-per-s", "50")
    b = Sim("--parallel", "4", "--ttft-ms", "100", "--tokens", "2", "--tokens-per-s", "50")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)])
    n = 200
    reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=120)] * n

    def killer():
        time.sleep(1.0)
        a.kill()
    t = threading.Thread(target=killer)
    t.start()
    res = aclient.run(aclient.many(px.port, reqs, 16))
    t.join()
    bad = [(r.status, r.error, r.body[:80]) for r in res if r.status != 200]
    ok(not bad, "%d failed after the kill: %r" % (len(bad), bad[:5]))
    st = px.status()
    sa = [x for x in st["backends"] if x["name"] == "a"][0]
    ok(sa["failed"] >= 1 and not sa["healthy"], "a counted down: %r" % sa)
    ok(b.stats()["served"] > n / 2, "b took over")
    px.stop()


def test_retry_on_busy_503():
    # a refuses with Ollama's busy 503 once 1 request waits; b has room.
    a = Sim("--parallel", "1", "--max-waiting", "1", "--ttft-ms", "300", "--tokens", "1")
    b = Sim("--parallel", "8", "--ttft-ms", "300", "--tokens", "1")
    # The proxy's cap on a (3) is above what a takes (1 running, 1
    # waiting): its 503s must be retried on b, never reach the client.
    px = Proxy([("a", a.url, 3), ("b", b.url, 4)])
    reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=60)] * 24
    res = aclient.run(aclient.many(px.port, reqs, 6))
    eq(sorted(set(r.status for r in res)), [200], "every request answered 200")
    ok(a.stats()["rejected"] >= 1, "a did answer 503s: %r" % a.stats()["rejected"])
    px.stop()


def test_retry_on_reset_and_refused():
    a = Sim("--reset-rate", "1.0", "--ttft-ms", "0", "--tokens", "1")
    b = Sim("--parallel", "4", "--ttft-ms", "0", "--tokens", "1")
    dead = "http://127.0.0.1:1"  # nothing listens on port 1
    px = Proxy([("reset", a.url, 2), ("dead", dead, 2), ("good", b.url, 2)])
    # Both live backends known to have the model first: a request before
    # "reset" answered its discovery went to "good", which then had the
    # model loaded and took every request after it (stop 27's CI).
    wait_until(lambda: all(x["models"] for x in px.status()["backends"] if x["name"] != "dead"),
               what="discovery")
    for i in range(10):
        r = post(px.url + "/api/generate", GEN)
        eq(r.status, 200, "request %d" % i)
        eq(r.headers["x-backend"], "good", "served by the good one")
    st = {x["name"]: x for x in px.status()["backends"]}
    ok(st["dead"]["failed"] >= 1 and st["reset"]["failed"] >= 1, "failures counted: %r" % st)
    px.stop()


def test_all_backends_down_wait_then_503():
    # Connect failures mark the backend down (the request's tries are not
    # spent on them); with no backend up the request waits in the queue,
    # as in a rolling restart, until queue.timeout_s: 503, not 502.
    px = Proxy([("dead", "http://127.0.0.1:1", 2)],
               extra="health = { interval_s = 0.3; };\nqueue = { timeout_s = 1; };")
    t0 = time.time()
    r = post(px.url + "/api/generate", GEN)
    eq(r.status, 503, "waited for a backend: %r" % r)
    ok("timed out" in r.json()["error"], r.body)
    ok(time.time() - t0 >= 0.9, "answered before queue.timeout_s")
    ok(int(r.headers["retry-after"]) >= 1, r.headers)
    b = px.backend("dead")
    eq(b["healthy"], False, "marked down")
    eq(b["state"], "down", "state")
    ok("connect" in b["down_reason"], "why: %r" % b)
    px.stop()


def test_first_byte_timeout_504():
    sim = Sim("--ttft-ms", "3000", "--tokens", "1")
    px = Proxy([("slow", sim.url, 1)], extra="timeouts = { first_byte_s = 0.5; };")
    t0 = time.time()
    r = post(px.url + "/api/generate", GEN)
    eq(r.status, 504, "first byte timeout")
    ok(time.time() - t0 < 2.5 * SLOW, "answered at the timeout")
    wait_until(lambda: sim.stats()["cancelled"] == 1, what="the upstream was aborted")
    px.stop()


def test_never_retried_after_first_byte():
    # The sim fails every stream halfway with Ollama's in-band error line.
    a = Sim("--stream-fail-rate", "1.0", "--ttft-ms", "0", "--tokens", "20",
            "--tokens-per-s", "200")
    b = Sim("--ttft-ms", "0", "--tokens", "20", "--tokens-per-s", "200")
    px = Proxy([("a", a.url, 1), ("b", b.url, 1)])
    body = {"model": "llama3", "prompt": "hi"}
    # Both known to have the model (else the one that answered discovery
    # first takes it: a loaded host, ctest -j2), both idle: the tie goes to
    # the first, a.
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]), what="discovery")
    r = aclient.run(aclient.request(px.port, "POST", "/api/generate", body=body))
    eq(r.status, 200, "stream started")
    eq(r.headers["x-backend"], "a", "first try on a")
    lines = r.lines()
    ok("error" in lines[-1], "the in-band error reached the client: %r" % lines[-1])
    eq(b.stats()["requests"], 0, "not retried elsewhere once bytes were sent")
    px.stop()


def test_backend_dies_mid_stream():
    a = Sim("--ttft-ms", "0", "--tokens", "200", "--tokens-per-s", "20")
    px = Proxy([("a", a.url, 1)])
    body = {"model": "llama3", "prompt": "hi"}

    def killer():
        time.sleep(0.5)
        a.kill()
    t = threading.Thread(target=killer)
    t.start()
    r = aclient.run(aclient.request(px.port, "POST", "/api/generate", body=body, timeout=30))
    t.join()
    eq(r.status, 200, "stream had started")
    ok(r.error is None, "the stream was ended properly, not cut: %r" % r.error)
    lines = r.lines()
    ok(len(lines) >= 2 and "error" in lines[-1], "ends with an in-band error: %r" % lines[-1:])
    ok(not lines[-1].get("done"), "no done line")
    eq(px.status()["backends"][0]["in_flight"], 0, "slot freed")
    px.stop()


class OneShotServer:
    """A backend that answers the first request of each connection, keeps
    the connection open, and closes it without a word when a second request
    arrives on it: the keep-alive race, every time."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.answered = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return c.close()
            buf += d
        head, _, body = buf.partition(b"\r\n\r\n")
        cl = head.lower().split(b"content-length:")  # none on the health check's GET
        n = int(cl[1].split(b"\r\n")[0]) if len(cl) > 1 else 0
        while len(body) < n:
            body += c.recv(4096)
        reply = b'{"done":true}'
        with self.lock:  # counted before the reply: the test reads it once it has the reply
            self.answered += head.startswith(b"POST")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply))
        c.recv(4096)  # the next request on this connection: hang up on it
        c.close()


def test_keepalive_race_is_not_a_failure():
    srv = OneShotServer()
    px = Proxy([("oneshot", srv.url, 1)])
    for i in range(6):
        r = post(px.url + "/api/generate", GEN, timeout=10)
        eq(r.status, 200, "request %d" % i)
    b = px.backend("oneshot")
    eq(b["failed"], 0, "a stale pooled connection is not the backend's failure")
    ok(b["healthy"], "still healthy")
    eq(srv.answered, 6, "each answered once")
    px.stop()


run(globals())
