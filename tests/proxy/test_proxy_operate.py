"""Operating a fleet that changes (issue 20): a backend that joins or comes
back is asked for its models before it gets a request for one; a backend's
404 for a model others list is tried elsewhere; with no backend in service
the catalog answers at once and requests get a quick 503; metadata takes
no GPU slot."""
import asyncio
import signal
import time

import aclient
from fakebackend import FakeBackend
from harness import (Proxy, Sim, eq, get, http, ok, post, run, wait_until, write_proxy_conf,
                     SLOW)

CHAT = {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}],
        "stream": False}


def burst(port, n, body, path="/api/chat"):
    async def go():
        return await asyncio.gather(*[aclient.request(port, "POST", path, body=body)
                                      for _ in range(n)])
    return aclient.run(go())


def statuses(rs):
    return sorted(r.status for r in rs)


def test_added_backend_gets_no_request_before_its_models():
    """A GPU added by SIGHUP that lacks the model: 12 chats sent at once
    right after the reload all succeed, and none reaches it."""
    old = Sim("--parallel", "4", "--ttft-ms", "300", "--tokens", "2",
              models="qwen2.5:7b,llama3:latest")
    new = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "1",
              models="phi3:mini,llama3:latest")
    px = Proxy([("gpu0", old.url, 4)], extra="models = { refresh_s = 600; };")
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")
    write_proxy_conf(px.conf, [("gpu0", old.url, 4), ("gpu1", new.url, 8)],
                     "models = { refresh_s = 600; };")
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in px.proc.output(), what="the reload")
    rs = burst(px.port, 12, CHAT)
    eq(statuses(rs), [200] * 12, "every chat answered: %r" % [r for r in rs if r.status != 200])
    eq(sum(1 for r in rs if r.headers.get("x-backend") == "gpu1"), 0, "none served by gpu1")
    # It serves what it has.
    r = post(px.url + "/api/generate", {"model": "phi3:mini", "prompt": "x", "stream": False})
    eq((r.status, r.headers.get("x-backend")), (200, "gpu1"), "phi3 on the new GPU")
    px.stop()


def test_backend_up_later_is_asked_first():
    """A backend down when the proxy starts, up later with other models:
    asked at once when it comes up, and given nothing it lacks."""
    a = Sim("--parallel", "2", "--ttft-ms", "300", "--tokens", "2", models="qwen2.5:7b")
    late = Sim(models="phi3:mini")
    port = late.port
    late.stop()
    px = Proxy([("gpu0", a.url, 2), ("late", "http://127.0.0.1:%d" % port, 8)],
               extra="models = { refresh_s = 600; };\n"
                     "health = { interval_s = 0.2; fail_after = 1; };")
    wait_until(lambda: px.backend("late")["state"] == "down", what="late marked down")
    late = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "1", models="phi3:mini",
               port=port)
    wait_until(lambda: px.backend("late")["state"] == "up", what="late up")
    rs = burst(px.port, 8, CHAT)
    eq(statuses(rs), [200] * 8, "every chat answered: %r" % [r for r in rs if r.status != 200])
    eq(sum(1 for r in rs if r.headers.get("x-backend") == "late"), 0, "none served by late")
    px.stop()


def test_backend_answering_after_start_is_asked_at_once():
    """A backend not yet listening when the proxy starts (containers started
    together) and never marked down: its models are asked as soon as a
    health check passes, not at the next models.refresh_s (here 600 s)."""
    late = Sim(models="phi3:mini")
    port = late.port
    late.stop()
    px = Proxy([("late", "http://127.0.0.1:%d" % port, 4)],
               extra="models = { refresh_s = 600; };\n"
                     "health = { interval_s = 0.2; fail_after = 1000; };")
    eq(get(px.url + "/api/tags", timeout=5).status, 503, "catalog never known yet")
    late = Sim(models="phi3:mini", port=port)
    wait_until(lambda: px.backend("late")["models"] == ["phi3:mini"], timeout=10,
               what="its models, asked once it answers")
    r = get(px.url + "/api/tags", timeout=5)
    eq(r.status, 200, "catalog")
    eq([m["name"] for m in r.json()["models"]], ["phi3:mini"], "its models")
    px.stop()


def test_404_from_a_backend_is_tried_elsewhere():
    """A model deleted behind the proxy's back: the backend's 404 is never
    the client's answer while another backend has the model."""
    a = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "1",
            models="qwen2.5:7b,llama3:latest")
    b = Sim("--parallel", "1", "--ttft-ms", "0", "--tokens", "1", models="qwen2.5:7b")
    px = Proxy([("a", a.url, 8), ("b", b.url, 1)], extra="models = { refresh_s = 600; };")
    wait_until(lambda: "qwen2.5:7b" in px.backend("a")["models"] and
               "qwen2.5:7b" in px.backend("b")["models"], what="discovery")
    eq(http("DELETE", a.url + "/api/delete", {"model": "qwen2.5:7b"}).status, 200, "deleted on a")
    rs = [post(px.url + "/api/chat", CHAT) for _ in range(6)]
    eq(statuses(rs), [200] * 6, "all served: %r" % [r for r in rs if r.status != 200])
    ok(all(r.headers.get("x-backend") == "b" for r in rs), "by b")
    wait_until(lambda: "qwen2.5:7b" not in px.backend("a")["models"],
               what="a's list without qwen")
    # Where nobody else has it, the backend's 404 is the answer.
    eq(http("DELETE", b.url + "/api/delete", {"model": "qwen2.5:7b"}).status, 200, "deleted on b")
    r = post(px.url + "/api/chat", CHAT)
    eq(r.status, 404, "nobody has it: %r" % r)
    px.stop()


def test_a_page_not_found_is_no_missing_model():
    """A 404 that is not Ollama's "model not found" (a router's "404 page
    not found": a path the server behind that URL lacks) says nothing of the
    backend's models: the client gets it as it is, and the backend keeps
    its list (a proxy behind this one, asked for /api/show with a client's
    X-Forwarded-For, once lost its model this way and answered 404)."""
    fb = FakeBackend("answer", models=("qwen2.5:7b",), status=404,
                     body=b"404 page not found")
    sim = Sim("--parallel", "1", "--ttft-ms", "400", "--tokens", "1", models="qwen2.5:7b")
    px = Proxy([("fb", fb.url, 8), ("sim", sim.url, 1)],
               extra="models = { refresh_s = 600; };")
    wait_until(lambda: "qwen2.5:7b" in px.backend("fb")["models"] and
               "qwen2.5:7b" in px.backend("sim")["models"], what="discovery")
    fb.take()
    # The sim takes one (400 ms) and holds its only slot: the rest go to fb.
    rs = burst(px.port, 4, CHAT)
    k = len([r for r in fb.take() if r.target == "/api/chat"])
    ok(k >= 1, "fb got none of the 4")
    eq(statuses(rs), [200] * (4 - k) + [404] * k, "fb's %d answers passed through: %r" % (k, rs))
    for r in rs:
        if r.status == 404:
            eq(r.body, b"404 page not found", "the backend's own page")
    eq(px.backend("fb")["models"], ["qwen2.5:7b"], "fb keeps its list")
    px.stop()
    sim.stop()


def test_no_backend_in_service():
    """Every backend down: the catalog answers at once from what it last
    knew (marked stale), a request waits queue.no_backend_s then gets 503
    with Retry-After; a model only a drained backend has, the same."""
    a = Sim(models="qwen2.5:7b")
    b = Sim(models="llama3:latest")
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)],
               extra="queue = { no_backend_s = 1; timeout_s = 120; };\n"
                     "health = { interval_s = 0.2; fail_after = 1; };")
    wait_until(lambda: px.backend("b")["models"], what="discovery")
    # Drained: its model is not listed, and a request for it gets 503.
    eq(post(px.url + "/proxy/backends/b/drain", {}).status, 200, "drain b")
    names = [m["name"] for m in get(px.url + "/api/tags").json()["models"]]
    eq(names, ["qwen2.5:7b"], "the drained backend's model is not offered")
    t0 = time.time()
    r = post(px.url + "/api/generate", {"model": "llama3", "prompt": "x"}, timeout=20)
    took = time.time() - t0
    eq(r.status, 503, "only a drained backend has it: %r" % r)
    ok("retry-after" in r.headers, "Retry-After")
    ok(0.8 < took < 1 + 2 * SLOW, "503 after no_backend_s (1 s), took %.2f s" % took)
    a.stop()
    b.stop()
    wait_until(lambda: all(x["state"] in ("down", "drained") for x in px.status()["backends"]),
               what="both out of service")
    for path in ("/api/tags", "/v1/models", "/api/version"):
        t0 = time.time()
        r = get(px.url + path, timeout=5)
        eq(r.status, 200, path)
        ok(time.time() - t0 < 1 * SLOW, path + " at once")
        ok("x-proxy-stale" in r.headers, path + " marked stale")
    ok("qwen2.5:7b" in get(px.url + "/api/tags").text(), "what it last knew")
    eq(get(px.url + "/api/ps").json(), {"models": []}, "nothing runs")
    t0 = time.time()
    r = post(px.url + "/api/chat", CHAT, timeout=20)
    eq(r.status, 503, "a request with no backend: %r" % r)
    ok(0.8 < time.time() - t0 < 1 + 2 * SLOW, "after no_backend_s")
    ok("down, drained or disabled" in r.json()["error"], r.body)
    r = post(px.url + "/api/show", {"model": "qwen2.5:7b"}, timeout=20)
    eq(r.status, 503, "show with no backend")
    px.stop()


def test_no_backend_fail_fast_and_never_known():
    """no_backend_s = 0: 503 at once. A proxy that never heard a backend:
    the catalog is a 503 at once, not a wait."""
    gone = Sim()
    port = gone.port
    gone.stop()
    px = Proxy([("a", "http://127.0.0.1:%d" % port, 2)],
               extra="queue = { no_backend_s = 0; };\n"
                     "health = { interval_s = 0.2; fail_after = 1; };")
    wait_until(lambda: px.backend("a")["state"] == "down", what="down")
    for path in ("/api/tags", "/v1/models", "/api/version"):
        t0 = time.time()
        r = get(px.url + path, timeout=5)
        eq(r.status, 503, path + " never known")
        ok(time.time() - t0 < 1 * SLOW, path + " at once")
    t0 = time.time()
    r = post(px.url + "/api/chat", CHAT, timeout=10)
    eq(r.status, 503, "fail fast")
    ok(time.time() - t0 < 1 * SLOW, "at once")
    px.stop()


def test_metadata_takes_no_slot():
    """/api/show and GET requests do not wait behind inference: with the
    only slot busy for seconds, they are answered at once."""
    sim = Sim("--parallel", "4", "--ttft-ms", "3000", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 1)])
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")

    async def scenario():
        gen = asyncio.ensure_future(aclient.request(
            px.port, "POST", "/api/generate",
            body={"model": "llama3", "prompt": "x", "stream": False}))
        await asyncio.sleep(0.3)
        t0 = time.time()
        show = await aclient.request(px.port, "POST", "/api/show", body={"model": "llama3"})
        took = time.time() - t0
        return await gen, show, took
    gen, show, took = aclient.run(scenario())
    eq(gen.status, 200, "the generation")
    eq(show.status, 200, "show")
    ok(took < 1.5 * SLOW, "show did not wait for the slot (%.2f s)" % took)
    px.stop()


if __name__ == "__main__":
    run(globals())
