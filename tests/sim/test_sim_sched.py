"""ollama-sim: scheduling - silence until the first token, slots, the busy
503s, loads, eviction, keep-alive, time scale."""
import threading
import time

import simlib
from simlib import get, post, raw_send, silent_for, recv_all, wait_stat, stat, Sim
from harness import SLOW, eq, ok, run


def gen(url, model="llama3", prompt="x", stream=False, **kw):
    body = {"model": model, "prompt": prompt, "stream": stream}
    body.update(kw)
    return post(url + "/api/generate", body)


def parallel(n, fn):
    out = [None] * n

    def one(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller's checks
            out[i] = e
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_no_headers_until_first_token():
    sim = Sim("--ttft-ms", "600", "--tokens", "3", "--tokens-per-s", "100")
    gen(sim.url, prompt="")  # load the model first
    for stream in (True, False):
        s = raw_send(sim.url, "POST", "/api/generate",
                     {"model": "llama3", "prompt": "hi", "stream": stream})
        ok(silent_for(s, 0.4), "no byte before the first token (stream=%s)" % stream)
        data = recv_all(s, timeout=5)
        s.close()
        ok(data.startswith(b"HTTP/1.1 200"), data[:100])
        if stream:
            ok(b"Transfer-Encoding: chunked" in data, data[:300])
            ok(b"application/x-ndjson" in data, data[:300])
    sim.stop()


def test_slot_limit_under_oversubscription():
    sim = Sim("--parallel", "2", "--ttft-ms", "5", "--tokens", "5", "--tokens-per-s", "200")
    res = parallel(20, lambda i: gen(sim.url, prompt="p%d" % i))
    eq([r.status for r in res], [200] * 20)
    s = sim.stats()
    eq(s["max_in_flight"], 2, "never more than --parallel in flight")
    eq(s["served"], 20)
    eq(s["in_flight"], 0)
    eq(s["queued"], 0)
    eq(s["models"]["llama3:latest"]["max_in_flight"], 2)
    sim.stop()


def test_embedding_models_run_one_at_a_time():
    sim = Sim("--parallel", "4", "--ttft-ms", "40", models="llama3:latest,all-minilm-embed")
    res = parallel(6, lambda i: post(sim.url + "/api/embed", {"model": "all-minilm-embed",
                                                               "input": "t%d" % i}))
    eq([r.status for r in res], [200] * 6)
    eq(sim.stats()["models"]["all-minilm-embed:latest"]["max_in_flight"], 1)
    sim.stop()


BUSY = "server busy, please try again.  maximum pending requests exceeded"


def test_busy_max_queue_during_load():
    sim = Sim("--load-ms", "1500", "--max-queue", "2", "--ttft-ms", "1", "--tokens", "2",
              "--tokens-per-s", "0")
    out = []
    t = threading.Thread(target=lambda: out.append(gen(sim.url)))
    t.start()
    wait_stat(sim, "queued", 1)  # the load is under way
    res = []
    ts = [threading.Thread(target=lambda: res.append(gen(sim.url))) for _ in range(2)]
    for th in ts:
        th.start()
    wait_stat(sim, "queued", 3)
    t0 = time.time()
    r = gen(sim.url)
    ok(time.time() - t0 < 1.0 * SLOW, "503 comes at once")
    eq(r.status, 503)
    eq(r.json(), {"error": BUSY})
    r = post(sim.url + "/v1/chat/completions", {"model": "llama3", "messages": [
        {"role": "user", "content": "x"}]})
    eq(r.status, 503)
    eq(r.json()["error"]["type"], "api_error")
    t.join()
    for th in ts:
        th.join()
    eq([x.status for x in out + res], [200, 200, 200])
    s = sim.stats()
    eq((s["rejected"], s["served"], s["loads"]), (2, 3, 1))
    sim.stop()


def test_busy_max_waiting():
    sim = Sim("--parallel", "1", "--max-waiting", "1", "--ttft-ms", "400", "--tokens", "1",
              "--tokens-per-s", "0")
    gen(sim.url, prompt="")
    res = []
    ts = [threading.Thread(target=lambda: res.append(gen(sim.url)))]
    ts[0].start()
    wait_stat(sim, "in_flight", 1)
    ts.append(threading.Thread(target=lambda: res.append(gen(sim.url))))
    ts[1].start()
    wait_stat(sim, "queued", 1)
    r = gen(sim.url)
    eq((r.status, r.json()), (503, {"error": BUSY}))
    for th in ts:
        th.join()
    eq(sorted(x.status for x in res), [200, 200])
    eq(stat(sim, "rejected"), 1)
    sim.stop()


def ps_names(sim):
    return [m["name"] for m in get(sim.url + "/api/ps").json()["models"]]


def test_load_and_eviction():
    sim = Sim("--max-loaded", "1", "--load-ms", "100", "--ttft-ms", "1", "--tokens-per-s", "0",
              models="alpha:latest,beta:latest")
    eq(ps_names(sim), [])
    eq(gen(sim.url, "alpha").status, 200)
    eq(ps_names(sim), ["alpha:latest"])
    eq(gen(sim.url, "alpha").status, 200)
    eq(stat(sim, "loads"), 1, "a loaded model is not reloaded")
    eq(gen(sim.url, "beta").status, 200)
    eq(ps_names(sim), ["beta:latest"], "idle alpha evicted for beta")
    s = sim.stats()
    eq(s["loads"], 2)
    eq((s["models"]["alpha:latest"]["loaded"], s["models"]["beta:latest"]["loaded"]),
       (False, True))
    sim.stop()


def test_eviction_prefers_shortest_keep_alive_then_name():
    sim = Sim("--max-loaded", "2", "--ttft-ms", "1", "--tokens-per-s", "0",
              models="alpha:latest,beta:latest,gamma:latest,delta:latest")
    gen(sim.url, "alpha", keep_alive="1h")
    gen(sim.url, "beta", keep_alive="10m")
    gen(sim.url, "gamma")
    eq(sorted(ps_names(sim)), ["alpha:latest", "gamma:latest"], "beta had the shortest")
    gen(sim.url, "gamma", keep_alive="1h")
    gen(sim.url, "delta", keep_alive="1h")
    eq(sorted(ps_names(sim)), ["delta:latest", "gamma:latest"], "tie on keep-alive: by name")
    sim.stop()


def test_eviction_waits_for_busy_victim():
    sim = Sim("--max-loaded", "1", "--load-ms", "50", "--ttft-ms", "1", "--tokens", "10",
              "--tokens-per-s", "20", models="alpha:latest,beta:latest")
    gen(sim.url, "alpha", prompt="")
    done = {}
    ta = threading.Thread(target=lambda: done.setdefault("a", (gen(sim.url, "alpha"),
                                                                time.time())))
    ta.start()
    wait_stat(sim, "in_flight", 1)
    tb = threading.Thread(target=lambda: done.setdefault("b", (gen(sim.url, "beta"),
                                                                time.time())))
    tb.start()
    wait_stat(sim, "queued", 1)
    eq(ps_names(sim), ["alpha:latest"], "busy alpha still loaded while beta waits")
    ta.join()
    tb.join()
    eq((done["a"][0].status, done["b"][0].status), (200, 200))
    ok(done["b"][1] >= done["a"][1], "beta ran after alpha drained")
    eq(ps_names(sim), ["beta:latest"])
    sim.stop()


def test_reload_when_num_ctx_differs():
    sim = Sim("--ttft-ms", "1", "--tokens-per-s", "0", "--load-ms", "20")
    eq(gen(sim.url, options={"num_ctx": 2048}).status, 200)
    eq(gen(sim.url, options={"num_ctx": 2048, "temperature": 0}).status, 200)
    eq(stat(sim, "loads"), 1, "sampling options never reload")
    eq(gen(sim.url, options={"num_ctx": 8192}).status, 200)
    eq(stat(sim, "loads"), 2, "a different num_ctx reloads")
    ps = get(sim.url + "/api/ps").json()["models"]
    eq([(m["name"], m["context_length"]) for m in ps], [("llama3:latest", 8192)])
    sim.stop()


def test_keep_alive_expiry_and_forever():
    sim = Sim("--time-scale", "10", "--ttft-ms", "1", "--tokens-per-s", "0",
              models="alpha:latest,beta:latest")
    gen(sim.url, "alpha", keep_alive="5s")   # 0.5 s real
    gen(sim.url, "beta", keep_alive=-1)
    eq(sorted(ps_names(sim)), ["alpha:latest", "beta:latest"])
    ps = get(sim.url + "/api/ps").json()["models"]
    eq(ps[0]["name"], "beta:latest", "longest expires_at first")
    ok(ps[0]["expires_at"].startswith("23"), ps[0]["expires_at"])
    simlib.harness.wait_until(lambda: ps_names(sim) == ["beta:latest"], timeout=3,
                              what="alpha expired")
    gen(sim.url, "beta", keep_alive=0)
    eq(ps_names(sim), [], "keep_alive 0 unloads when idle")
    sim.stop()


def test_time_scale_and_metrics():
    sim = Sim("--ttft-ms", "1000", "--tokens", "10", "--tokens-per-s", "10",
              "--time-scale", "20")
    gen(sim.url, prompt="")
    t0 = time.time()
    o = gen(sim.url).json()
    dt = time.time() - t0
    ok(dt < 0.5 * SLOW + 0.3, "2 s simulated took %.2fs" % dt)
    ok(0.8e9 < o["prompt_eval_duration"] < 1.6e9, o)
    ok(0.7e9 < o["eval_duration"] < 1.5e9 * SLOW, o)
    sim.stop()


def test_slowdown_throughput():
    """4 busy slots: each runs at 50/(1+0.5*3) = 20 tok/s, 40 tokens take ~2 s."""
    sim = Sim("--parallel", "4", "--ttft-ms", "1", "--tokens", "40", "--tokens-per-s", "50",
              "--slowdown", "0.5", "--time-scale", "4")
    gen(sim.url, prompt="")
    res = parallel(4, lambda i: gen(sim.url, prompt="p%d" % i).json())
    for o in res:
        rate = o["eval_count"] / (o["eval_duration"] / 1e9)
        ok(14 < rate < 30, "per-slot rate %.1f tok/s" % rate)
    o = gen(sim.url).json()
    rate = o["eval_count"] / (o["eval_duration"] / 1e9)
    ok(40 < rate < 60, "single-slot rate %.1f tok/s" % rate)
    sim.stop()


run(globals())
