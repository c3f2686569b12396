"""ollama-proxy finds loops (issue 18, item 10). Every request it sends to
a backend carries a Via element "1.1 ollama-proxy-<id>" (an id drawn per
process) after the client's own; a request that arrives naming this
process's id has come back around and is answered 508 in the path's
dialect, before the key check, without a slot; a backend that is this
proxy itself (its health check comes back with our Via) is down with the
reason "it is this proxy". Chained proxies (A -> B -> sim) still work."""
import http.client
import json
import re
import signal
import socket
import time

from fakebackend import FakeBackend
from harness import (Proxy, Sim, eq, get, ok, post, run, wait_until, write_proxy_conf,
                     SLOW)

GEN = {"model": "llama3", "prompt": "hi", "stream": False}
CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
ID = re.compile(r"^1\.1 (ollama-proxy-[0-9a-f]{16})$")
ID2 = re.compile(r"^1\.1 (ollama-proxy-[0-9a-f]{16}), 1\.1 (ollama-proxy-[0-9a-f]{16})$")
KEY = "k-ops-8812"
KEYS = 'auth = { keys = ( { name = "ops"; key = "%s"; admin = true; } ); };' % KEY
FAST = "health = { interval_s = 0.2; timeout_s = 2; fail_after = 2; recover_after = 1; };"


class Answer:
    def __init__(self, r, data):
        self.status, self.reason, self.body = r.status, r.reason, data

    def text(self):
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)


def ask(method, url, body=None, headers=()):
    """One request with HEADERS as a list of (name, value): a name may come twice."""
    m = re.match(r"http://([^/:]+):(\d+)(/.*)$", url)
    data = json.dumps(body).encode() if body is not None else b""
    c = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=30 * SLOW)
    try:
        c.putrequest(method, m.group(3), skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Type", "application/json")
            c.putheader("Content-Length", str(len(data)))
        c.endheaders(data if body is not None else None)
        r = c.getresponse()
        return Answer(r, r.read())
    finally:
        c.close()


def models_known(px):
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), timeout=10,
               what="every backend's models known")


def own_name(px, fb):
    """The proxy's Via name, as its backend FB receives it."""
    fb.take()
    eq(ask("POST", px.url + "/api/generate", GEN).status, 200)
    via = fb.take()[-1].header("Via")
    m = ID.match(via or "")
    ok(m, "the backend got Via %r, not one element 1.1 ollama-proxy-<16 hex>" % via)
    return m.group(1)


def test_via_is_added_after_the_clients():
    """The backend sees the client's Via elements, in order, then the
    proxy's; the proxy's id is the same on every request of one process and
    differs between two processes."""
    fb = FakeBackend()
    px = Proxy([("gpu", fb.url, 4)])
    models_known(px)
    me = own_name(px, fb)
    eq(own_name(px, fb), me, "one process, one id")
    r = ask("POST", px.url + "/api/generate", GEN,
             headers=[("Via", "1.0 corp-squid (squid/6.1)"), ("Via", "1.1 edge")])
    eq(r.status, 200, r.text())
    eq(fb.take()[-1].header("Via"), "1.0 corp-squid (squid/6.1), 1.1 edge, 1.1 " + me)
    px2 = Proxy([("gpu", fb.url, 4)])
    models_known(px2)
    ok(own_name(px2, fb) != me, "two processes drew the same id")


def test_own_via_is_a_loop_508():
    """A request naming this proxy in Via gets 508 Loop Detected, in Ollama's
    shape on /api/*, OpenAI's on /v1/*, also on the proxy's own answers and
    before the key check; nothing reaches the backend. Another proxy's name,
    or ours as a prefix of a longer one, passes."""
    fb = FakeBackend()
    px = Proxy([("gpu", fb.url, 4)], extra=KEYS)
    auth = [("Authorization", "Bearer " + KEY)]
    wait_until(lambda: get(px.url + "/proxy/status", headers=dict(auth)).json()["backends"][0]
               ["models"], timeout=10, what="models known")
    me = own_name_keyed(px, fb, auth)
    loop = [("Via", "1.1 ollama-proxy-00000000000000aa, 1.1 %s" % me)]
    fb.take()
    r = ask("POST", px.url + "/api/generate", GEN, headers=auth + loop)
    eq(r.status, 508, r.text())
    eq(r.reason, "Loop Detected")
    ok(me in r.json()["error"] and "loop" in r.json()["error"], r.text())
    r = ask("POST", px.url + "/v1/chat/completions", CHAT, headers=auth + loop)
    eq(r.status, 508, r.text())
    ok(me in r.json()["error"]["message"], r.text())
    r = ask("POST", px.url + "/api/chat", CHAT, headers=loop)  # no key: still a loop
    eq(r.status, 508, r.text())
    # The head alone first (a key's refusal is made on the head, its body
    # unread): a loop is still a loop before it is a missing key.
    body = json.dumps(CHAT).encode()
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10 * SLOW)
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nVia: %s\r\n"
              b"Content-Length: %d\r\n\r\n" % (loop[0][1].encode(), len(body)))
    time.sleep(0.2)
    try:
        s.sendall(body)
    except OSError:
        pass
    eq(s.recv(64).split(b"\r\n")[0], b"HTTP/1.1 508 Loop Detected", "a loop, its body sent later")
    s.close()
    eq(ask("GET", px.url + "/api/version", headers=[("via", "1.1 " + me)]).status, 508)
    eq(ask("GET", px.url + "/api/tags", headers=[("Via", "1.0 %s (ollama-proxy)" % me)]).status,
       508)
    eq(fb.take(), [], "a loop reached the backend")
    for other in ("1.1 %sx" % me, "1.1 x%s" % me, "1.1 ollama-proxy-00000000000000aa"):
        r = ask("POST", px.url + "/api/generate", GEN, headers=auth + [("Via", other)])
        eq(r.status, 200, "%s: %s" % (other, r.text()))


def own_name_keyed(px, fb, auth):
    fb.take()
    eq(ask("POST", px.url + "/api/generate", GEN, headers=auth).status, 200)
    m = ID.match(fb.take()[-1].header("Via") or "")
    ok(m, "no Via element of the proxy")
    return m.group(1)


def test_backend_that_is_this_proxy_is_down():
    """A reload adds the proxy's own address as a backend, without keys and
    with (where its check would otherwise meet 401): it is down with the
    reason "it is this proxy" and stays down; every request is served by
    the real GPU."""
    for keys in ("", KEYS):
        sim = Sim("--parallel", "4", "--ttft-ms", "0", "--tokens", "2")
        px = Proxy([("gpu", sim.url, 4)], extra=keys + FAST)
        auth = [("Authorization", "Bearer " + KEY)] if keys else []

        def me():
            bs = ask("GET", px.url + "/proxy/status", headers=auth).json()["backends"]
            return [b for b in bs if b["name"] == "me"]

        write_proxy_conf(px.conf, [("gpu", sim.url, 4), ("me", px.url, 4)], keys + FAST)
        px.proc.signal(signal.SIGHUP)
        wait_until(lambda: me() and not me()[0]["healthy"], timeout=10, what="'me' down")
        eq(me()[0]["down_reason"], "it is this proxy")
        served = sim.stats()["requests"]
        for _ in range(8):
            eq(ask("POST", px.url + "/api/generate", GEN, headers=auth).status, 200)
        b = me()[0]
        ok(not b["healthy"] and b["down_reason"] == "it is this proxy", repr(b))
        eq(sim.stats()["requests"] - served, 8, "the GPU served every request")
        px.stop()
        sim.stop()


def test_chain_of_two_proxies_works():
    """A -> B -> GPU: neither sees its own name, so requests, streams and
    the catalog pass through both, both backends stay up, and the GPU sees
    A's element then B's."""
    fb = FakeBackend()
    b = Proxy([("gpu", fb.url, 4)], extra=FAST)
    a = Proxy([("proxy-b", b.url, 4)], extra=FAST)
    models_known(b)
    models_known(a)
    fb.take()
    for _ in range(5):
        r = post(a.url + "/api/generate", GEN)
        eq(r.status, 200, r.text())
    r = post(a.url + "/api/chat", dict(CHAT, stream=True))
    eq(r.status, 200, r.text())
    ok('"done": true' in r.text().strip().splitlines()[-1], r.text())
    ok("llama3:latest" in [m["name"] for m in get(a.url + "/api/tags").json()["models"]])
    # B's own health checks and discovery reach the GPU too (with B's Via
    # only) whenever their interval comes round: the requests are what
    # went through both.
    seen = [q for q in fb.take() if q.target in ("/api/generate", "/api/chat")]
    eq(len(seen), 6, "the 5 generations and the chat")
    vias = set(q.header("Via") for q in seen)
    eq(len(vias), 1, "one path, one Via: %r" % vias)
    names = ID2.match(vias.pop() or "")
    ok(names and names.group(1) != names.group(2), "the GPU sees A's element then B's")
    eq([x["healthy"] for x in a.status()["backends"]], [True])
    eq([x["healthy"] for x in b.status()["backends"]], [True])


if __name__ == "__main__":
    run(globals())
