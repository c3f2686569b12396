"""ollama-proxy: active health checks, an outage that waits instead of
failing, and the runtime control of backends (drain, disable, enable, cap)."""
import asyncio
import signal
import time

import aclient
from harness import (Proc, Proxy, Sim, binary, eq, get, ok, post, run, wait_until,
                     write_proxy_conf, SLOW)

GEN = {"model": "llama3", "prompt": "hello", "stream": False}
FAST = ("--ttft-ms", "0", "--tokens", "1")


def sim_on(port, *args):
    """An ollama-sim on a given port (a backend that comes back where it was)."""
    p = Proc([binary("ollama-sim"), "--port", str(port), "--models", "llama3:latest"] +
             [str(a) for a in args], name="ollama-sim")
    p.wait_listen()
    return p


def state(px, name):
    return px.backend(name)["state"]


def test_idle_backend_down_and_back():
    interval, timeout, fail_after, recover_after = 0.3, 0.5, 2, 2
    sim = Sim(*FAST)
    px = Proxy([("gpu0", sim.url, 2)],
               extra="health = { interval_s = %g; timeout_s = %g; fail_after = %d; "
                     "recover_after = %d; };" % (interval, timeout, fail_after, recover_after))
    eq(post(px.url + "/api/generate", GEN).status, 200, "served")
    port = sim.port
    sim.kill()  # idle: no request will notice
    t0 = time.time()
    wait_until(lambda: state(px, "gpu0") == "down", timeout=fail_after * interval + timeout + 1,
               what="the idle dead backend marked down")
    down_after = time.time() - t0
    b = px.backend("gpu0")
    ok(b["down_reason"].startswith("health check"), "why: %r" % b)
    ok(b["down_since"].endswith("Z"), "since: %r" % b)
    back = sim_on(port, *FAST)
    t1 = time.time()
    wait_until(lambda: state(px, "gpu0") == "up", timeout=recover_after * interval + 1,
               what="the restarted backend healthy again")
    up_after = time.time() - t1
    eq(post(px.url + "/api/generate", GEN).status, 200, "served again")
    print("down after %.2fs (bound %.2fs), up after %.2fs (bound %.2fs)" %
          (down_after, fail_after * interval + timeout, up_after, recover_after * interval + 1))
    back.stop()
    px.stop()


def test_outage_waits_then_completes():
    sims = [Sim("--parallel", "4", "--ttft-ms", "300", "--tokens", "1", "--tokens-per-s", "0")
            for _ in range(2)]
    ports = [s.port for s in sims]
    px = Proxy([("gpu0", sims[0].url, 2), ("gpu1", sims[1].url, 2)],
               extra="health = { interval_s = 0.2; timeout_s = 0.5; };\n"
                     "queue = { timeout_s = 60; };")

    async def scenario():
        first = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                       body=GEN, timeout=120))
                 for _ in range(54)]
        await asyncio.sleep(0.15 * SLOW)
        st = px.status()
        ok(st["queue"]["length"] >= 45, "about 50 queued: %r" % st["queue"])
        for s in sims:
            s.kill()
        await asyncio.sleep(1.0)
        st = px.status()
        ok(all(b["state"] == "down" for b in st["backends"]), "all down: %r" % st["backends"])
        late = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                                     timeout=120))
        await asyncio.sleep(0.5)
        back = [sim_on(p, "--parallel", "4", "--ttft-ms", "50", "--tokens", "1",
                       "--tokens-per-s", "0") for p in ports]
        res = await asyncio.gather(*first)
        res.append(await late)
        return res, back
    res, back = aclient.run(scenario())
    codes = [r.status for r in res]
    # Those in flight when the backends died may fail (their request was
    # sent); everything that was waiting, and the late one, completes.
    ok(502 not in codes[4:] and 503 not in codes, "statuses: %r" % codes)
    ok(codes.count(200) >= 50, "the queued and the late one completed: %r" % codes)
    eq(res[-1].status, 200, "the one that arrived during the outage")
    for b in back:
        b.stop()
    px.stop()


def test_outage_without_return_503_at_timeout():
    sim = Sim(*FAST)
    px = Proxy([("gpu0", sim.url, 2)],
               extra="health = { interval_s = 0.2; timeout_s = 0.5; };\n"
                     "queue = { timeout_s = 1.5; };")
    sim.kill()
    wait_until(lambda: state(px, "gpu0") == "down", what="down")
    t0 = time.time()
    r = post(px.url + "/api/generate", GEN)
    eq(r.status, 503, "waited for a backend: %r" % r)
    ok(1.4 <= time.time() - t0 <= 1.5 + 2 * SLOW, "at queue.timeout_s: %.2fs" % (time.time() - t0))
    ok("retry-after" in r.headers, r.headers)
    px.stop()


def test_model_load_longer_than_check_timeout_stays_healthy():
    sim = Sim("--load-ms", "2500", "--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 1)],
               extra="health = { interval_s = 0.2; timeout_s = 0.3; fail_after = 1; };")

    async def scenario():
        t = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                                  timeout=60))
        seen = []
        for _ in range(10):
            await asyncio.sleep(0.2)
            seen.append(state(px, "gpu0"))
        return await t, seen
    r, seen = aclient.run(scenario())
    eq(r.status, 200, "the request that waited for the load")
    eq(set(seen), {"up"}, "healthy while the model loads (longer than health.timeout_s)")
    px.stop()


def test_runtime_drain_disable_enable_cap():
    a = Sim("--parallel", "16", "--ttft-ms", "100", "--tokens", "1", "--tokens-per-s", "0")
    b = Sim("--parallel", "16", "--ttft-ms", "100", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)])

    def ctl(name, verb, body=None):
        r = post(px.url + "/proxy/backends/%s/%s" % (name, verb), body if body else {})
        eq(r.status, 200, "%s %s: %r" % (verb, name, r))
        return r.json()

    async def load(n):
        reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=60)] * n
        return await aclient.many(px.port, reqs, 20)

    async def scenario():
        go = asyncio.ensure_future(load(200))
        await asyncio.sleep(0.5)
        ok(ctl("a", "drain")["state"] in ("draining", "drained"), "draining")
        a0 = a.stats()["requests"]
        await asyncio.sleep(0.5)
        eq(state(px, "a"), "drained", "in flight finished, none new")
        a1 = a.stats()["requests"]
        await asyncio.sleep(0.3)
        eq(a.stats()["requests"], a1, "a drained backend takes nothing new")
        ok(a1 - a0 <= 4, "only what was in flight finished there")
        ctl("a", "enable")
        ctl("b", "cap", {"max_concurrent": 8})
        await asyncio.sleep(0.5)
        ctl("b", "disable")
        eq(state(px, "b"), "disabled", "disabled")
        await asyncio.sleep(0.4)
        ctl("b", "enable")
        return await go
    res = aclient.run(scenario())
    ok(all(r.status == 200 for r in res), "no request lost: %r" %
       sorted(set(r.status for r in res)))
    ok(a.stats()["max_in_flight"] <= 4, "a's cap held")
    eq(b.stats()["max_in_flight"], 8, "b at its runtime cap")
    eq(px.backend("b")["config_max_concurrent"], 4, "the file's cap shown")
    # A reload keeps the runtime cap unless the file changed that backend.
    ctl("a", "drain")
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: px.proc.output().count("reloaded") == 1, what="reload 1")
    eq(px.backend("b")["max_concurrent"], 8, "the runtime cap survives an unchanged file")
    eq(state(px, "a"), "drained", "the drain too")
    write_proxy_conf(px.conf, [("a", a.url, 4), ("b", b.url, 3)])
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: px.proc.output().count("reloaded") == 2, what="reload 2")
    eq(px.backend("b")["max_concurrent"], 3, "the file changed b: its cap wins")
    ok("config_max_concurrent" not in px.backend("b"), "no override left")
    eq(state(px, "a"), "drained", "a's row did not change: still drained")
    # Errors of the control.
    eq(post(px.url + "/proxy/backends/zz/drain", {}).status, 404, "unknown backend")
    eq(post(px.url + "/proxy/backends/a/cap", {"max_concurrent": 0}).status, 400, "bad cap")
    eq(get(px.url + "/proxy/backends/a/drain").status, 405, "GET")
    px.stop()


run(globals())
