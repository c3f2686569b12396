"""ollama-proxy: fair sharing between clients, keys and priorities.

The case that motivated it: two 4-slot GPUs, ~100 ms a request, caps 4+4. A
legacy client keeping 5 requests in flight sees ~105 ms alone; beside a
batch client keeping 200 in flight, one FIFO queue put its requests behind
~190 of the batch's (25x slower). With fair sharing each freed slot goes to
the client with the fewest in flight, so the legacy client waits at most
about one slot's turn."""
import asyncio
import json
import os
import re
import signal
import statistics
import time

import aclient
from fakebackend import FakeBackend
from harness import (Proxy, Sim, eq, get, http, ok, post, run, wait_until, write_proxy_conf,
                     SLOW)

GEN = {"model": "llama3", "prompt": "hello", "stream": False}
LEGACY, BATCH = "127.0.0.1", "127.0.0.2"  # two source addresses: two clients


def fleet(n=2, ttft=100):
    """N sims of 4 slots, about TTFT ms a request, and a proxy capping 4 each."""
    sims = [Sim("--parallel", "4", "--ttft-ms", str(ttft), "--tokens", "1",
                "--tokens-per-s", "0") for _ in range(n)]
    return sims


async def closed_loop(port, n_inflight, stop, lat, local=None, headers=None, body=GEN,
                      statuses=None):
    """N_INFLIGHT workers sending one request after another until STOP is
    set; latencies of the 200s go to LAT, every status to STATUSES."""
    async def worker():
        while not stop.is_set():
            r = await aclient.request(port, "POST", "/api/generate", body=body, local=local,
                                      headers=headers, timeout=120)
            if statuses is not None:
                statuses.append(r.status)
            if r.status == 200:
                lat.append(r.t_end - r.t_start)
            elif r.status == 0:
                await asyncio.sleep(0.01)
    await asyncio.gather(*(worker() for _ in range(n_inflight)))


async def legacy_run(port, n_requests, local=LEGACY, headers=None):
    """The legacy client: 5 in flight, N_REQUESTS in all; returns latencies."""
    lat = []
    left = [n_requests]

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            r = await aclient.request(port, "POST", "/api/generate", body=GEN, local=local,
                                      headers=headers, timeout=120)
            ok(r.status == 200, "legacy request: %r %r" % (r.status, r.error or r.body[:200]))
            lat.append(r.t_end - r.t_start)
    await asyncio.gather(*(worker() for _ in range(5)))
    return lat


def p50(xs):
    return statistics.median(xs)


def served(sims):
    return sum(s.stats()["served"] for s in sims)


def legacy_beside_batch(px, sims, legacy_headers=None, batch_headers=None,
                        legacy_local=LEGACY, batch_local=BATCH, admin=None):
    """Legacy alone, then beside a 200-in-flight batch: (alone p50, beside
    p50, fleet busy share while both ran)."""
    alone = aclient.run(legacy_run(px.port, 20, legacy_local, legacy_headers))

    async def both():
        stop = asyncio.Event()
        blat = []
        batch = asyncio.ensure_future(closed_loop(px.port, 200, stop, blat, batch_local,
                                                  batch_headers))
        # Let the batch fill the queue first.
        await asyncio.sleep(1.0 * SLOW)
        st = px.status(headers=admin)
        ok(st["queue"]["length"] > 150, "the batch keeps the queue full: %r" % st["queue"])
        s0, t0 = served(sims), time.monotonic()
        lat = await legacy_run(px.port, 40, legacy_local, legacy_headers)
        s1, t1 = served(sims), time.monotonic()
        stop.set()
        await batch
        return lat, (s1 - s0) / (t1 - t0), blat
    lat, rate, blat = aclient.run(both())
    ok(len(blat) > 0, "the batch was served too")
    return alone, lat, rate


def capacity(sims, ttft_s=0.1):
    return len(sims) * 4 / ttft_s


def check_fair(alone, beside, rate, cap, what):
    a, b = p50(alone), p50(beside)
    print("%s: legacy p50 alone %.0f ms, beside the batch %.0f ms (%.2fx); fleet %.0f%% busy"
          % (what, a * 1000, b * 1000, b / a, 100 * rate / cap))
    ok(b <= 2.5 * a, "%s: legacy p50 beside the batch %.0f ms > 2.5 x alone (%.0f ms)" %
       (what, b * 1000, a * 1000))
    ok(rate >= 0.85 * cap / SLOW ** 0.5,
       "%s: the fleet was %.0f%% busy while both ran" % (what, 100 * rate / cap))


def test_legacy_beside_batch_by_address():
    sims = fleet()
    px = Proxy([("gpu0", sims[0].url, 4), ("gpu1", sims[1].url, 4)],
               extra="queue = { max_length = 1024; };")
    alone, beside, rate = legacy_beside_batch(px, sims)
    check_fair(alone, beside, rate, capacity(sims), "by address")
    st = px.status()
    names = {c["name"] for c in st["clients"]}
    eq(sum(b["in_flight"] for b in st["backends"]), 0, "no slot leaked")
    eq(st["queue"]["length"], 0, "queue empty")
    ok(all(c["in_flight"] == 0 and c["waiting"] == 0 for c in st["clients"]),
       "clients idle after: %r" % st["clients"])
    ok(names <= {LEGACY, BATCH}, "clients are the addresses: %r" % names)
    px.stop()


KEYS = """auth = { keys = (
  { name = "legacy"; key = "k-legacy"; },
  { name = "batch"; key = "k-batch"; },
  { name = "ops"; key = "k-ops"; admin = true; },
  { name = "vip"; key = "k-vip"; priority = "high"; },
  { name = "bulk"; key = "k-bulk"; priority = "low"; },
  { name = "six"; key = "k-six"; max_concurrent = 6; },
  { name = "few"; key = "k-few"; max_queued = 3; }
); };
"""


def bearer(k):
    return {"Authorization": "Bearer " + k}


def test_legacy_beside_batch_by_key():
    sims = fleet()
    px = Proxy([("gpu0", sims[0].url, 4), ("gpu1", sims[1].url, 4)], extra=KEYS)
    # Both from one address: only the keys tell them apart.
    alone, beside, rate = legacy_beside_batch(px, sims, bearer("k-legacy"), bearer("k-batch"),
                                              LEGACY, LEGACY, bearer("k-ops"))
    check_fair(alone, beside, rate, capacity(sims), "by key")
    clients = {c["name"]: c for c in px.status(headers=bearer("k-ops"))["clients"]}
    ok(clients["legacy"]["served"] >= 60 and clients["batch"]["served"] > 0,
       "served counted per key: %r" % clients)
    ok(LEGACY not in clients, "with keys, no client is an address: %r" % list(clients))
    px.stop()


def test_high_priority_beside_normal_flood():
    sims = fleet(1, ttft=200)
    px = Proxy([("gpu0", sims[0].url, 4)], extra=KEYS)

    async def scenario():
        stop = asyncio.Event()
        lat = []
        flood = asyncio.ensure_future(closed_loop(px.port, 100, stop, lat, LEGACY,
                                                  bearer("k-batch")))
        await asyncio.sleep(1.0 * SLOW)
        waits = []
        for _ in range(5):
            r = await aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                      headers=bearer("k-vip"), timeout=60)
            eq(r.status, 200, "high request")
            waits.append(r.t_end - r.t_start)
        # A low request beside the same flood waits for every normal one:
        # it is served only once the flood stops.
        low = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                                    headers=bearer("k-bulk"), timeout=120))
        await asyncio.sleep(1.0 * SLOW)
        ok(not low.done(), "a low request overtook a normal flood")
        t_stop = time.monotonic()
        stop.set()
        await flood
        low = await low
        return waits, low, t_stop
    waits, low, t_stop = aclient.run(scenario())
    print("high beside a normal flood of 100: %s ms; low: %.0f ms" %
          ([round(w * 1000) for w in waits], (low.t_end - low.t_start) * 1000))
    # One service time (0.2 s) for the slot to free, one to be served.
    ok(p50(waits) <= 0.2 * 2 + 0.15 * SLOW, "high waited %.0f ms (p50)" % (p50(waits) * 1000))
    eq(low.status, 200, "low request")
    ok(low.t_end >= t_stop, "the low request waited for the flood")
    px.stop()


def test_key_max_concurrent_and_max_queued():
    sim = Sim("--parallel", "16", "--ttft-ms", "150", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 16)], extra=KEYS)
    reqs = [dict(method="POST", path="/api/generate", body=GEN, headers=bearer("k-six"),
                 timeout=120)] * 40
    seen = []

    async def scenario():
        async def watch():
            for _ in range(40):
                st = get(px.url + "/proxy/status", headers=bearer("k-ops")).json()
                c = [c for c in st["clients"] if c["name"] == "six"]
                if c:
                    seen.append(c[0]["in_flight"])
                await asyncio.sleep(0.05)
        w = asyncio.ensure_future(watch())
        res = await aclient.many(px.port, reqs, 40)
        await w
        return res
    res = aclient.run(scenario())
    ok(all(r.status == 200 for r in res), "all 200: %r" % [r.status for r in res])
    eq(sim.stats()["max_in_flight"], 6, "the key's cap held at the backend (16 free slots)")
    ok(max(seen) <= 6 and 6 in seen, "in flight per /proxy/status: %r" % seen)
    # max_queued = 3: with the one slot full... use a 1-slot proxy.
    px.stop()
    sim1 = Sim("--parallel", "1", "--ttft-ms", "500", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim1.url, 1)], extra=KEYS)
    # Once the backend's models are known, the first request takes the slot
    # at once (before, all six would wait and three be refused: a slow host).
    wait_until(lambda: px.status(headers=bearer("k-ops"))["backends"][0]["models"],
               what="discovery")
    reqs = [dict(method="POST", path="/api/generate", body=GEN, headers=bearer("k-few"),
                 timeout=120)] * 6
    res = aclient.run(aclient.many(px.port, reqs, 6))
    codes = sorted(r.status for r in res)
    eq(codes, [200, 200, 200, 200, 503, 503], "1 in flight, 3 queued, 2 refused")
    for r in res:
        if r.status == 503:
            ok("max_queued" in r.json()["error"], r.body)
            ok(int(r.headers["retry-after"]) >= 1, r.headers)
    px.stop()


def test_queue_full_refuses_the_flooder():
    sim = Sim("--parallel", "2", "--ttft-ms", "300", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 2)], extra="queue = { max_length = 20; };")

    async def scenario():
        stop = asyncio.Event()
        lat, flood_codes = [], []
        flood = asyncio.ensure_future(closed_loop(px.port, 60, stop, lat, BATCH,
                                                  statuses=flood_codes))
        await asyncio.sleep(1.0 * SLOW)
        eq(px.status()["queue"]["length"], 20, "the flooder fills the queue")
        mine = await asyncio.gather(*(aclient.request(px.port, "POST", "/api/generate",
                                                      body=GEN, local=LEGACY, timeout=120)
                                      for _ in range(5)))
        stop.set()
        await flood
        return mine, flood_codes
    mine, flood_codes = aclient.run(scenario())
    eq([r.status for r in mine], [200] * 5, "the other client is never refused")
    ok(flood_codes.count(503) > 10, "the flooder gets the 503s: %d" % flood_codes.count(503))
    log = px.proc.output()
    refused = [l for l in log.splitlines() if "status=503" in l]
    ok(refused and all("client=%s " % BATCH in l for l in refused),
       "every 503 went to the flooder")
    px.stop()


def test_queue_full_flood_from_many_addresses():
    """Issue 18, item 8: without keys, a flood spread over 40 addresses,
    each with one request waiting at a full queue. Each address is a client
    of its own, so the small client gets its share of 41, not more; but
    once its request is in the queue it is never pushed out by a newer one
    (age counts at a tie), and it is served. And the many addresses of one
    network count as one client when auth.ipv4_prefix groups them."""
    sim = Sim("--parallel", "1", "--ttft-ms", "100", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 8; timeout_s = 60; };")
    flood_addrs = ["127.0.1.%d" % i for i in range(1, 41)]

    async def scenario():
        stop = asyncio.Event()
        lat, codes = [], []
        floods = [asyncio.ensure_future(closed_loop(px.port, 1, stop, lat, a, statuses=codes))
                  for a in flood_addrs]
        await asyncio.sleep(1.0 * SLOW)
        mine = []
        t0 = time.time()
        while time.time() - t0 < 8 * SLOW:  # one request after another
            r = await aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                      local="127.0.0.9", timeout=120)
            mine.append((r.status, r.t_end - r.t_start))
            if r.status != 200:
                await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*floods)
        return mine, codes
    mine, codes = aclient.run(scenario())
    served = [t for st, t in mine if st == 200]
    refused = [t for st, t in mine if st == 503]
    print("small client: %d answers, %d refused (the slowest refusal %.3f s); flood: %d "
          "refused" % (len(served), len(refused), max(refused or [0]), codes.count(503)))
    ok(codes.count(503) > 20, "the queue was full: the flood got 503s (%d)" % codes.count(503))
    ok(len(served) >= 1, "the small client is served: %r" % mine[:20])
    mine_out = [l for l in px.proc.output().splitlines()
                if "addr=127.0.0.9 " in l and l.endswith(" pushed-out")]
    eq(mine_out, [], "the small client's waiting request is never pushed out by a newer one")
    px.stop()
    # Grouped by /24, the flood is one client: the small one is never refused.
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 8; timeout_s = 60; };\n"
                                              "auth = { ipv4_prefix = 24; };")

    async def grouped():
        stop = asyncio.Event()
        lat, codes = [], []
        floods = [asyncio.ensure_future(closed_loop(px.port, 1, stop, lat, a, statuses=codes))
                  for a in flood_addrs]
        await asyncio.sleep(1.0 * SLOW)
        mine = [(await aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                       local="127.0.0.9", timeout=120)).status
                for _ in range(5)]
        names = [c["name"] for c in px.status()["clients"]]
        stop.set()
        await asyncio.gather(*floods)
        return mine, names
    mine, names = aclient.run(grouped())
    eq(mine, [200] * 5, "never refused beside one grouped flooder")
    ok("127.0.1.0/24" in names, "the flood is one client: %r" % names)
    px.stop()


def test_retry_after_from_drain_rate():
    # 1 slot, 0.5 s a request: 2 per second drain. With 8 waiting, a
    # refused request should come back in about 4 s, not a constant 1.
    sim = Sim("--parallel", "1", "--ttft-ms", "500", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 8; };")

    async def scenario():
        stop = asyncio.Event()
        codes, ras = [], []

        async def flooder():
            while not stop.is_set():
                r = await aclient.request(px.port, "POST", "/api/generate", body=GEN,
                                          timeout=120)
                codes.append(r.status)
                if r.status == 503:
                    ras.append(int(r.headers["retry-after"]))
                    await asyncio.sleep(0.05)
        fs = [asyncio.ensure_future(flooder()) for _ in range(12)]
        await asyncio.sleep(6.0)
        stop.set()
        await asyncio.gather(*fs)
        return codes, ras
    codes, ras = aclient.run(scenario())
    ok(ras, "some refused: %r" % codes[:20])
    late = ras[len(ras) // 2:]  # once the rate is measured
    print("Retry-After given: %r" % sorted(set(ras)))
    ok(2 <= statistics.median(late) <= 12, "Retry-After from the drain rate: %r" % late)
    px.stop()


ADMIN = [("POST", "/api/pull", {"model": "llama3"}), ("POST", "/api/push", {"model": "llama3"}),
         ("DELETE", "/api/delete", {"model": "llama3"}),
         ("POST", "/api/copy", {"source": "llama3", "destination": "x"}),
         ("POST", "/api/create", {"model": "x", "from": "llama3"}),
         ("GET", "/proxy/status", None)]


def test_keys_401_403():
    sim = Sim("--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 2)], extra=KEYS)
    eq(get(px.url + "/").status, 200, "GET / needs no key")
    eq(http("HEAD", px.url + "/").status, 200, "HEAD / needs no key")
    for method, path, body in ADMIN + [("POST", "/api/generate", GEN),
                                      ("GET", "/api/tags", None), ("GET", "/api/version", None)]:
        for hdr, why in ((None, "no key"), (bearer("wrong"), "unknown key"),
                         ({"Authorization": "Basic a2V5"}, "not a bearer key")):
            r = http(method, px.url + path, body, headers=hdr)
            eq(r.status, 401, "%s %s with %s" % (method, path, why))
            ok("error" in r.json() and isinstance(r.json()["error"], str), r.body)
            eq(r.headers.get("www-authenticate"), "Bearer", "WWW-Authenticate")
    for method, path, body in ADMIN:
        r = http(method, px.url + path, body, headers=bearer("k-legacy"))
        eq(r.status, 403, "%s %s with a non-admin key" % (method, path))
        ok("admin" in r.json()["error"], r.body)
    for path, body in (("/v1/chat/completions", {"model": "llama3", "messages": []}),
                       ("/v1/models", None), ("/v1/embeddings", {"model": "llama3",
                                                                 "input": "x"})):
        r = http("POST" if body else "GET", px.url + path, body, headers=bearer("nope"))
        eq(r.status, 401, path)
        err = r.json()["error"]
        ok(isinstance(err, dict) and err["message"] and err["type"], "OpenAI shape: %r" % err)
    eq(sim.stats()["requests"], 0, "nothing refused reached the backend")
    # The right keys work; an admin key reaches admin endpoints.
    eq(post(px.url + "/api/generate", GEN, headers=bearer("k-legacy")).status, 200, "a key")
    eq(post(px.url + "/v1/chat/completions",
            {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer("k-legacy")).status, 200, "a key on /v1")
    eq(get(px.url + "/proxy/status", headers=bearer("k-ops")).status, 200, "admin status")
    r = post(px.url + "/api/pull", {"model": "llama3", "stream": False}, headers=bearer("k-ops"))
    eq(r.status, 200, "admin pull: %r" % r)
    # The key never reaches the backend nor the log; the log names the key.
    h = {k.lower(): v for k, v in sim.stats()["last_headers"].items()}
    ok("authorization" not in h, "Authorization forwarded: %r" % h)
    wait_until(lambda: "client=ops" in px.proc.output(), what="client=ops in the log")
    log = px.proc.output()
    for secret in ("k-legacy", "k-ops", "k-batch"):
        ok(secret not in log, "a key in the log: %s" % secret)
    ok("client=legacy" in log, "the log names the key")
    px.stop()


def test_refused_at_once_and_reload_while_waiting():
    # Two ways the scheduler once used freed memory (seen under ASan):
    # a request refused at submit (queue.max_length = 0) from a client with
    # nothing else, and a reload while requests wait.
    sim = Sim("--parallel", "1", "--ttft-ms", "400", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 0; };")
    # The first request must find the backend's models known and take the
    # slot; before discovery it would wait, and with no room to wait be
    # refused (seen on a loaded host: 503 then 200).
    wait_until(lambda: px.status()["backends"][0]["models"], what="discovery")

    async def refused():
        first = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                      body=GEN, local=LEGACY))
        await asyncio.sleep(0.1)
        other = await aclient.request(px.port, "POST", "/api/generate", body=GEN, local=BATCH)
        return await first, other
    first, other = aclient.run(refused())
    eq((first.status, other.status), (200, 503), "one in flight, none may wait")
    write_proxy_conf(px.conf, [("gpu0", sim.url, 1)], "queue = { max_length = 10; };")
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in px.proc.output(), what="reload 1")

    async def reload_while_waiting():
        reqs = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                      body=GEN)) for _ in range(6)]
        await asyncio.sleep(0.2)
        eq(px.status()["queue"]["length"], 5, "five wait")
        write_proxy_conf(px.conf, [("gpu0", sim.url, 2)], "queue = { max_length = 10; };")
        px.proc.signal(signal.SIGHUP)
        return await asyncio.gather(*reqs)
    res = aclient.run(reload_while_waiting())
    eq([r.status for r in res], [200] * 6, "all served across the reload")
    eq(px.stop(), 0, "clean exit")


def test_keys_reloaded():
    sim = Sim("--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 2)],
               extra='auth = { keys = ( { name = "a"; key = "ka"; } ); };')
    eq(post(px.url + "/api/generate", GEN, headers=bearer("ka")).status, 200, "key a")
    eq(post(px.url + "/api/generate", GEN, headers=bearer("kb")).status, 401, "no key b yet")
    write_proxy_conf(px.conf, [("gpu0", sim.url, 2)],
                     'auth = { keys = ( { name = "b"; key = "kb"; admin = true; } ); };')
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in px.proc.output(), what="the reload")
    eq(post(px.url + "/api/generate", GEN, headers=bearer("kb")).status, 200, "key b after")
    eq(post(px.url + "/api/generate", GEN, headers=bearer("ka")).status, 401, "key a dropped")
    cl = {c["name"]: c for c in px.status(headers=bearer("kb"))["clients"]}
    ok("b" in cl and "a" not in cl, "clients after the reload: %r" % list(cl))
    eq(px.stop(), 0, "clean exit")


def test_trusted_client_header():
    sim = Sim("--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 2)], extra='auth = { client_header = "X-Client"; };')
    eq(post(px.url + "/api/generate", GEN, headers={"X-Client": "alice"}).status, 200, "alice")
    eq(post(px.url + "/api/generate", GEN).status, 200, "no header")
    wait_until(lambda: "client=alice" in px.proc.output(), what="client=alice")
    ok(re.search(r"client=127\.0\.0\.1 ", px.proc.output()), "the address without the header")
    px.stop()


def test_status_clients_while_waiting():
    sim = Sim("--parallel", "1", "--ttft-ms", "2500", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 1)], extra=KEYS)

    async def scenario():
        tasks = [asyncio.ensure_future(aclient.request(
            px.port, "POST", "/api/generate", body=GEN, headers=bearer(k), timeout=60))
            for k in ("k-batch", "k-batch", "k-batch", "k-vip", "k-bulk")]
        await asyncio.sleep(0.5)  # all five in, the first still running (2.5 s)
        st = get(px.url + "/proxy/status", headers=bearer("k-ops")).json()
        await asyncio.gather(*tasks)
        return st
    st = aclient.run(scenario())
    cl = {c["name"]: c for c in st["clients"]}
    eq(cl["batch"]["priority"], "normal", "priority shown")
    eq(cl["vip"]["priority"], "high", "high shown")
    eq(sum(c["in_flight"] for c in cl.values()), 1, "one in flight: %r" % cl)
    eq(sum(c["waiting"] for c in cl.values()), 4, "four waiting: %r" % cl)
    eq(st["queue"]["length"], 4, "queue length")
    px.stop()


# Metadata (/api/show, and every GET or HEAD the proxy forwards) takes no
# GPU slot: at most 4 at once per backend, the rest in a queue of its own.
# That queue is the clients' too: what waits there is counted to its client
# (max_queued, the push-out rule, /proxy/status), and each metadata place
# that frees goes to the client with the fewest metadata requests in flight.
META_KEYS = """queue = { max_length = %d; timeout_s = 60; };
auth = { keys = (
  { name = "a"; key = "k-a"; max_concurrent = 1; %s },
  { name = "b"; key = "k-b"; },
  { name = "ops"; key = "k-ops"; admin = true; }
); };"""
SHOW = {"model": "llama3"}


def meta_proxy(delay, max_length, a_extra=""):
    """A backend answering every request after DELAY s, a proxy before it."""
    fb = FakeBackend("answer", delay=delay)
    px = Proxy([("gpu0", fb.url, 4)], extra=META_KEYS % (max_length, a_extra))
    wait_until(lambda: px.status(headers=bearer("k-ops"))["backends"][0]["models"],
               what="discovery")
    return fb, px


def client_row(px, name):
    st = px.status(headers=bearer("k-ops"))
    return st, [c for c in st["clients"] if c["name"] == name][0]


async def flood_then_b(px, n, method, path, body=None):
    """Key a sends N metadata requests, then (the status read) key b one
    /api/show: (status, a's row, b's answer, a's answers)."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.ensure_future(aclient.request(
            px.port, method, path, body=body, headers=bearer("k-a"), timeout=60)))
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)
    st, a = client_row(px, "a")
    b = await aclient.request(px.port, "POST", "/api/show", body=SHOW, headers=bearer("k-b"),
                              timeout=60)
    return st, a, b, await asyncio.gather(*tasks)


def test_metadata_max_queued():
    """Audit: key a (max_queued 2) sent 20 /api/show at a backend taking
    2 s each; 4 ran, 10 waited and /proxy/status showed nobody waiting.
    Metadata waiting is its key's: 2 wait, the rest get 503 at once. The
    key's max_concurrent (1) caps its GPU slots, not its metadata: those
    take none, and counting them would hold a key's /api/show behind its
    own generations."""
    fb, px = meta_proxy(2.0, 10, "max_queued = 2;")
    st, a, b, res = aclient.run(flood_then_b(px, 12, "POST", "/api/show", SHOW))
    codes = [r.status for r in res]
    eq(sorted(codes), [200] * 6 + [503] * 6, "4 ran, 2 waited, 6 refused: %r" % codes)
    for r in res:
        if r.status == 503:
            ok("max_queued" in r.json()["error"], r.body)
            ok(r.t_end - r.t_start < 1.0, "refused at once: %.2f s" % (r.t_end - r.t_start))
    eq((a["in_flight"], a["waiting"]), (4, 2), "a's metadata in /proxy/status: %r" % a)
    eq(st["queue"]["length"], 2, "what waits is a's: %r" % st["queue"])
    eq(b.status, 200, "b's /api/show beside a's: %r" % b.body[:200])
    px.stop()
    fb.stop()


def test_metadata_flood_full_queue():
    """Audit: one key's flood of GETs filled queue.max_length and another
    key's single /api/show got 503 "queue full". The flooder's newest is
    pushed out instead, and the newcomer goes before the flood (it has no
    metadata in flight, the flooder 4): served in about one service time
    (1 s), where the flood's FIFO order would hold it 8 rounds (8 s)."""
    fb, px = meta_proxy(1.0, 32)
    st, a, b, res = aclient.run(flood_then_b(px, 36, "GET", "/api/status"))  # 4 run, 32 wait
    codes = [r.status for r in res]
    print("b's /api/show beside a flood of 32: %.2f s" % (b.t_end - b.t_start))
    eq((a["in_flight"], a["waiting"]), (4, 32), "a's flood in /proxy/status: %r" % a)
    eq(st["queue"]["length"], 32, "the queue is full: %r" % st["queue"])
    eq(b.status, 200, "b is not refused: %r" % b.body[:200])
    ok(b.t_end - b.t_start < 4.5, "b waited %.1f s beside a flood of 32" % (b.t_end - b.t_start))
    eq(sorted(codes), [200] * 35 + [503], "one of a's pushed out for b: %r" % codes)
    pushed = [l for l in px.proc.output().splitlines() if l.endswith(" pushed-out")]
    ok(len(pushed) == 1 and "client=a " in pushed[0], "a's newest was pushed out: %r" % pushed)
    px.stop()
    fb.stop()


TIE_KEYS = """auth = { keys = (
  { name = "n1"; key = "k-n1"; }, { name = "n2"; key = "k-n2"; },
  { name = "ops"; key = "k-ops"; admin = true; }
); };"""
EMBED = {"model": "nomic-embed-text", "input": "x"}


def test_single_request_beside_backlog_on_cap_1_runner():
    """Audit: an embedding model has 1 slot (the sim's, and the proxy's cap
    for its runner by default) on a backend of 4. Key n1 queues 6
    embeddings, key n2 sends one: n2 was served last, after all 6. When
    n1's request ends, n1 has none in flight, as n2: a tie, which went to
    the older request, n1's, every time. A tie now goes to the client
    granted least recently, so n2 is next: served about two service times
    after the flood began (one for n1's first to end, one for its own),
    never behind the backlog."""
    sim = Sim("--parallel", "4", "--ttft-ms", "1600",  # an embedding: 0.4 s
              models="llama3,nomic-embed-text")
    px = Proxy([("gpu0", sim.url, 4)], extra=TIE_KEYS)
    wait_until(lambda: px.status(headers=bearer("k-ops"))["backends"][0]["models"],
               what="discovery")

    def n1():
        rows = [c for c in px.status(headers=bearer("k-ops"))["clients"] if c["name"] == "n1"]
        return rows and (rows[0]["in_flight"], rows[0]["waiting"])

    async def scenario():
        flood = [asyncio.ensure_future(aclient.request(
            px.port, "POST", "/api/embed", body=EMBED, headers=bearer("k-n1"), timeout=120))
            for _ in range(6)]
        deadline = time.monotonic() + 10 * SLOW
        while n1() != (1, 5):  # one runs, five wait: then the light client comes
            ok(time.monotonic() < deadline, "n1's backlog never queued: %r" % (n1(),))
            await asyncio.sleep(0.02)
        light = await aclient.request(px.port, "POST", "/api/embed", body=EMBED,
                                      headers=bearer("k-n2"), timeout=120)
        return light, await asyncio.gather(*flood)
    light, flood = aclient.run(scenario())
    eq([r.status for r in flood + [light]], [200] * 7, "all served")
    t0 = min(r.t_start for r in flood)
    ends = sorted(r.t_end for r in flood + [light])
    service = (ends[-1] - ends[0]) / 6  # seven served one after another
    before = sum(r.t_end < light.t_end for r in flood)
    print("n2's embedding beside n1's 6: done %.2f s after the flood began (%.1f service "
          "times of %.2f s), after %d of n1's" % (light.t_end - t0, (light.t_end - t0) / service,
                                                   service, before))
    eq(sim.stats()["max_in_flight"], 1, "one embedding at a time (the runner's cap)")
    ok(before <= 2, "n2 waited for %d of n1's 6 embeddings" % before)
    ok(light.t_end - t0 <= 3.5 * service,
       "n2 done %.2f s after the flood began: more than 3.5 service times (%.2f s)"
       % (light.t_end - t0, service))
    px.stop()


run(globals())
