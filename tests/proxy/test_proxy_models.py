"""ollama-proxy: model discovery (/api/tags, /api/ps) and model-aware
routing: a request goes only where its model is installed, preferably where
it is loaded; a model no backend lists gets 404 without queueing; the queue
binds late per model."""
import asyncio
import time

import aclient
from harness import Proxy, Sim, eq, get, ok, post, run, wait_until

FAST = ("--ttft-ms", "0", "--tokens", "1")


def _known(px, n):
    st = px.status()
    return st if sum(1 for b in st["backends"] if b["models"]) == n else None


def gen(model, **kw):
    return dict({"model": model, "prompt": "hi", "stream": False}, **kw)


def test_routes_by_installed_model():
    a = Sim(*FAST, "--parallel", "4", models="alpha:latest,shared:7b")
    b = Sim(*FAST, "--parallel", "4", models="beta:latest,shared:7b")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)], extra="models = { refresh_s = 0.2; };")
    st = wait_until(lambda: _known(px, 2), what="both backends' tags")
    names = {x["name"]: sorted(x["models"]) for x in st["backends"]}
    eq(names, {"a": ["alpha:latest", "shared:7b"], "b": ["beta:latest", "shared:7b"]}, "models")
    for model, where in (("alpha", "a"), ("alpha:latest", "a"), ("BETA", "b"),
                         ("library/beta:latest", "b")):
        for _ in range(3):
            r = post(px.url + "/api/generate", gen(model))
            eq(r.status, 200, "model %s" % model)
            eq(r.headers["x-backend"], where, "model %s goes to %s" % (model, where))
    shared = {post(px.url + "/api/generate", gen("shared:7b")).headers["x-backend"]
              for _ in range(6)}
    eq(shared, {"a", "b"}, "a model on both is spread")
    before = a.stats()["requests"] + b.stats()["requests"]
    r = post(px.url + "/api/generate", gen("gamma"))
    eq(r.status, 404, "a model nobody lists")
    eq(r.json()["error"], "model 'gamma' not found", "Ollama's text")
    r = post(px.url + "/v1/chat/completions", {"model": "gamma", "messages": []})
    eq(r.status, 404, "on /v1 too")
    eq(r.json()["error"]["type"], "not_found_error", "OpenAI shape")
    eq(px.status()["queue"]["length"], 0, "never queued")
    eq(a.stats()["requests"] + b.stats()["requests"], before, "no backend asked")
    px.stop()


def test_late_binding_per_model():
    # a serves alpha only, b beta only; a is busy with slow alpha requests.
    a = Sim("--parallel", "4", "--ttft-ms", "800", "--tokens", "1", models="alpha:latest")
    b = Sim(*FAST, "--parallel", "4", models="beta:latest")
    px = Proxy([("a", a.url, 1), ("b", b.url, 1)], extra="models = { refresh_s = 0.2; };")
    wait_until(lambda: _known(px, 2), what="tags")

    async def scenario():
        slow = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                      body=gen("alpha"))) for _ in range(3)]
        await asyncio.sleep(0.2)
        eq(px.status()["queue"]["length"], 2, "two alpha requests wait for a")
        t0 = time.monotonic()
        r = await aclient.request(px.port, "POST", "/api/generate", body=gen("beta"))
        beta_wait = time.monotonic() - t0
        return r, beta_wait, await asyncio.gather(*slow)
    r, beta_wait, slow = aclient.run(scenario())
    eq(r.status, 200, "beta")
    eq(r.headers["x-backend"], "b", "beta on b")
    ok(beta_wait < 0.5, "beta did not wait behind alpha: %.2fs" % beta_wait)
    eq([x.headers.get("x-backend") for x in slow], ["a", "a", "a"], "alpha only on a")
    eq(b.stats()["requests"], 1, "b never got alpha")
    px.stop()


def test_prefers_loaded_backend():
    # Both have both models; each has loaded a different one.
    a = Sim(*FAST, "--parallel", "4", "--load-ms", "300", models="m1:latest,m2:latest")
    b = Sim(*FAST, "--parallel", "4", "--load-ms", "300", models="m1:latest,m2:latest")
    eq(post(a.url + "/api/generate", gen("m1")).status, 200, "load m1 on a")
    eq(post(b.url + "/api/generate", gen("m2")).status, 200, "load m2 on b")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)], extra="models = { refresh_s = 0.2; };")
    st = wait_until(lambda: (lambda s: s if all(x["loaded"] for x in s["backends"]) else None)(
        px.status()), what="/api/ps of both")
    eq({x["name"]: x["loaded"] for x in st["backends"]}, {"a": ["m1:latest"], "b": ["m2:latest"]},
       "loaded models in /proxy/status")
    for _ in range(4):  # one at a time: both idle, a tie every time
        eq(post(px.url + "/api/generate", gen("m1")).headers["x-backend"], "a", "m1 where loaded")
        eq(post(px.url + "/api/generate", gen("m2")).headers["x-backend"], "b", "m2 where loaded")
    eq(a.stats()["loads"] + b.stats()["loads"], 2, "no load caused by the proxy")
    px.stop()


def test_unknown_tags_serve_anything():
    # A backend that never answered /api/tags is eligible for anything: a
    # model only it might have is tried there, never refused up front, and
    # never sent to a backend that said it does not have it.
    a = Sim(*FAST, models="alpha:latest")
    px = Proxy([("a", a.url, 2), ("dead", "http://127.0.0.1:1", 2)],
               extra="models = { refresh_s = 0.2; };\nhealth = { interval_s = 30; };\n"
               "queue = { timeout_s = 1; };")  # one check at start: 1 failure of 2
    wait_until(lambda: _known(px, 1), what="a's tags")
    r = post(px.url + "/api/generate", gen("beta"))
    # Tried on the unknown backend, which is down: it waits for it (a
    # rolling restart loses nothing), then 503 at queue.timeout_s.
    eq(r.status, 503, "waited for the unknown backend, which is down: %r" % r)
    eq(a.stats()["requests"], 0, "never sent where it is not installed")
    ok(px.backend("dead")["failed"] >= 1, "tried there")
    eq(post(px.url + "/api/generate", gen("alpha")).headers["x-backend"], "a", "alpha still fine")
    px.stop()


def test_fleet_listing_endpoints():
    a = Sim(*FAST, "--parallel", "2", models="alpha:latest,shared:7b")
    b = Sim(*FAST, "--parallel", "2", models="beta:latest,shared:7b")
    eq(post(a.url + "/api/generate", gen("shared:7b")).status, 200, "load shared on a")
    eq(post(b.url + "/api/generate", gen("shared:7b")).status, 200, "load shared on b")
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)], extra="models = { refresh_s = 0.2; };")
    wait_until(lambda: (lambda s: s if all(x["loaded"] for x in s["backends"]) else None)(
        px.status()), what="discovery")
    r = get(px.url + "/api/tags")
    eq(r.status, 200, "tags")
    ok("x-backend" not in r.headers, "answered by the proxy itself")
    names = [m["name"] for m in r.json()["models"]]
    eq(sorted(names), ["alpha:latest", "beta:latest", "shared:7b"], "the union, once each")
    m = r.json()["models"][0]
    for k in ("model", "modified_at", "size", "digest", "details"):
        ok(k in m, "entry kept whole: %r" % m)
    stamps = [m["modified_at"] for m in r.json()["models"]]
    eq(stamps, sorted(stamps, reverse=True), "newest first")
    r = get(px.url + "/api/ps")
    ps = sorted((m["name"], m["backend"]) for m in r.json()["models"])
    eq(ps, [("shared:7b", "a"), ("shared:7b", "b")], "one entry per (model, backend)")
    ok("expires_at" in r.json()["models"][0], "entry kept whole")
    r = get(px.url + "/v1/models")
    eq(r.json()["object"], "list", "OpenAI shape")
    eq(sorted(d["id"] for d in r.json()["data"]), sorted(names), "same union")
    d = r.json()["data"][0]
    eq((d["object"], d["owned_by"]), ("model", "library"), "OpenAI entry")
    ok(d["created"] > 1600000000, "created from modified_at: %r" % d)
    px.stop()


run(globals())
