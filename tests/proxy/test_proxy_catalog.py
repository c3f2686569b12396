"""ollama-proxy keeps the fleet's catalog built (issue 18, item 12): the
union behind /api/tags and /v1/models (and /v1/models/M) is made once per
change of the fleet's models, not per request, and a GET sends the kept
text. Each time it is made the proxy logs "catalog: the union made again",
which is what these tests count. A change is seen: a backend's list that
differs, a backend that leaves service or comes back; a refresh that
brings the same list is none. A client still reading an old answer when
the union is replaced gets it whole. (The CPU per GET at 80,000 models is
in tests/bench/bench_catalog.py.)"""
import json
import socket
import time

from fakebackend import FakeBackend
from harness import Proxy, eq, get, http, ok, run, wait_until, SLOW

MADE = "catalog: the union made again"
FAST = "models = { refresh_s = 0.2; };\nhealth = { interval_s = 0.2; };"


def names(px, path="/api/tags"):
    r = get(px.url + path)
    eq(r.status, 200, r.text())
    j = r.json()
    return sorted(m["name"] for m in j["models"]) if path == "/api/tags" else \
        sorted(m["id"] for m in (j["data"] or []))


def made(px):
    return px.proc.output().count(MADE)


def models_known(px, n):
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]) and
               len(px.status()["backends"]) == n, timeout=10, what="models known")


def test_union_made_once_per_change():
    a = FakeBackend(models=["m%04d:latest" % i for i in range(0, 1500)])
    b = FakeBackend(models=["m%04d:latest" % i for i in range(1000, 2500)])
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)], extra=FAST)
    models_known(px, 2)
    eq(made(px), 0, "nothing is made before it is asked")
    first = get(px.url + "/api/tags").body
    for _ in range(15):
        eq(get(px.url + "/api/tags").body, first)
        eq(get(px.url + "/v1/models").status, 200)
        eq(get(px.url + "/v1/models/m0042").json()["id"], "m0042")
        eq(get(px.url + "/v1/models/nope").status, 404)
    eq(len(json.loads(first)["models"]), 2500)
    eq(names(px, "/v1/models"), ["m%04d:latest" % i for i in range(2500)])
    eq(made(px), 1, "one union for 60 GETs")
    polls = a.polls.get("/api/tags", 0)
    wait_until(lambda: a.polls.get("/api/tags", 0) >= polls + 3, timeout=10,
               what="three refreshes")
    eq(get(px.url + "/api/tags").body, first)
    eq(made(px), 1, "a refresh with the same list changes nothing")

    a.models = a.models + ["new-one:latest"]
    wait_until(lambda: "new-one:latest" in names(px), timeout=10, what="the new model listed")
    ok("new-one:latest" in [m["id"] for m in get(px.url + "/v1/models").json()["data"]])
    eq(get(px.url + "/v1/models/new-one").status, 200)
    eq(made(px), 2, "one union for the change")

    eq(http("POST", px.url + "/proxy/backends/b/disable").status, 200)
    eq(names(px), ["m%04d:latest" % i for i in range(1500)] + ["new-one:latest"])
    eq(get(px.url + "/v1/models/m2000").status, 404)
    eq(http("POST", px.url + "/proxy/backends/b/enable").status, 200)
    eq(len(names(px)), 2501)
    eq(made(px), 4, "one union for each change of service")


def test_old_answer_whole_while_the_union_changes():
    """A client reads the first bytes of a 9 MB /api/tags (36,000 models of
    4 backends; more than the kernel's socket buffers hold), stops; the
    backends' lists change and the union is made again (another client sees
    the new list); the first client then reads the rest: the old answer,
    whole and valid."""
    fbs = [FakeBackend(models=["m%05d:latest" % i for i in range(k * 9000, (k + 1) * 9000)])
           for k in range(4)]
    px = Proxy([("g%d" % k, fb.url, 4) for k, fb in enumerate(fbs)], extra=FAST)
    models_known(px, 4)
    s = socket.create_connection(("127.0.0.1", px.port), timeout=30 * SLOW)
    s.sendall(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = s.recv(1024)
    ok(head.startswith(b"HTTP/1.1 200"), head[:100])
    for fb in fbs:
        fb.models = ["only:latest"]
    wait_until(lambda: names(px) == ["only:latest"], timeout=10 * SLOW, what="the new union")
    ok(made(px) >= 2)
    data = bytearray(head)
    while data.find(b"\r\n\r\n") < 0:
        data += s.recv(65536)
    head_end = data.find(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in bytes(data[:head_end]).split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    ok(length > 8 << 20, "an answer larger than the socket buffers: %d" % length)
    while len(data) < head_end + 4 + length:
        chunk = s.recv(1 << 20)
        ok(chunk, "the proxy closed before the whole answer")
        data += chunk
    s.close()
    body = json.loads(bytes(data[head_end + 4:head_end + 4 + length]))
    eq(len(body["models"]), 36000, "the old answer, whole")


if __name__ == "__main__":
    run(globals())
