"""Operating a fleet (issue 20, second part): a preload warms every GPU
that has the model; health is "unknown" until something is known; --check
sees one server under two names and an open admin surface;
logging.skip_paths keeps probes out of the access log."""
import os
import subprocess
import time

from harness import (Proxy, Sim, binary, eq, get, ok, post, run, wait_until, write_proxy_conf,
                     _tmp)


def loaded(sim, model):
    m = sim.stats().get("models", {}).get(model)
    return bool(m and m["loaded"])


def paths(sim):
    return sim.stats()["paths"]


def known(px, *names):
    return all(px.backend(n)["models"] for n in names)


def test_preload_fans_out():
    """/api/generate with no prompt, /api/chat with no messages (what
    `ollama run` sends first): every backend in service that lists the
    model loads it, not one; a backend without it is not asked."""
    a = Sim(models="qwen2.5:7b,llama3:latest")
    b = Sim(models="qwen2.5:7b")
    c = Sim(models="phi3:mini")
    px = Proxy([("gpu0", a.url, 4), ("gpu1", b.url, 4), ("gpu2", c.url, 4)],
               extra="models = { refresh_s = 600; };")
    wait_until(lambda: known(px, "gpu0", "gpu1", "gpu2"), what="discovery")
    r = post(px.url + "/api/generate", {"model": "qwen2.5:7b"})
    eq(r.status, 200, "preload: %r" % r)
    eq(r.json().get("done_reason"), "load", "Ollama's load answer")
    ok(loaded(a, "qwen2.5:7b") and loaded(b, "qwen2.5:7b"),
       "loaded on both GPUs that have it: %r / %r" % (a.stats()["models"], b.stats()["models"]))
    eq(paths(c).get("/api/generate", 0), 0, "the GPU without it is not asked")
    # A chat preload, and a keep_alive that is not 0, likewise.
    r = post(px.url + "/api/chat", {"model": "qwen2.5:7b", "keep_alive": "10m"})
    eq((r.status, r.json().get("done_reason")), (200, "load"), "chat preload: %r" % r)
    eq((paths(a).get("/api/chat", 0), paths(b).get("/api/chat", 0)), (1, 1),
       "the chat preload reached both")
    # A model only one lists: that one; a model none lists: routed as a
    # request is (the proxy's own 404), not a fan-out to nobody.
    r = post(px.url + "/api/generate", {"model": "phi3:mini", "prompt": ""})
    eq((r.status, r.json().get("done_reason")), (200, "load"), "phi3 preload: %r" % r)
    ok(loaded(c, "phi3:mini"), "phi3 loaded on gpu2")
    eq(post(px.url + "/api/generate", {"model": "nosuch:1b"}).status, 404, "unknown model")
    # A drained backend is no target.
    eq(post(px.url + "/proxy/backends/gpu1/drain", {}).status, 200, "drain gpu1")
    n = paths(b).get("/api/generate", 0)
    eq(post(px.url + "/api/generate", {"model": "qwen2.5:7b"}).status, 200, "preload")
    eq(paths(b).get("/api/generate", 0), n, "the drained GPU is not asked")
    # A real generate is one request, not a fan-out.
    r = post(px.url + "/api/generate", {"model": "qwen2.5:7b", "prompt": "x", "stream": False})
    eq(r.status, 200, "a generate")
    px.stop()


if __name__ == "__main__":
    run(globals())
