"""ollama-sim: a client that disconnects is noticed at once - while waiting
for a slot, while loading, during prompt processing, while streaming - and
its slot goes to the next request."""
import json
import threading
import time

from simlib import post, raw_send, wait_stat, stat, Stream, Sim
from harness import SLOW, eq, ok, run

FAST = 0.1  # the slot must be back within 100 ms (times SLOW under sanitizers)


def gen_body(stream=True, prompt="x", model="llama3"):
    return {"model": model, "prompt": prompt, "stream": stream}


def freed_within(sim, key, value, limit):
    t0 = time.time()
    wait_stat(sim, key, value, timeout=limit * 20)
    dt = time.time() - t0
    ok(dt < limit * SLOW + 0.05, "%s back to %r after %.3fs" % (key, value, dt))


def test_cancel_while_waiting_for_slot():
    sim = Sim("--parallel", "1", "--ttft-ms", "3000", "--tokens-per-s", "0")
    post(sim.url + "/api/generate", {"model": "llama3"})
    a = raw_send(sim.url, "POST", "/api/generate", gen_body())
    wait_stat(sim, "in_flight", 1)
    b = raw_send(sim.url, "POST", "/api/generate", gen_body(stream=False))
    wait_stat(sim, "queued", 1)
    b.close()
    freed_within(sim, "queued", 0, FAST)
    eq(stat(sim, "cancelled"), 1)
    a.close()
    freed_within(sim, "in_flight", 0, FAST)
    eq(stat(sim, "cancelled"), 2, "cancelled during prompt processing too")
    eq(stat(sim, "served"), 1, "only the load request was served")
    sim.stop()


def test_cancel_while_streaming_frees_slot_for_next():
    sim = Sim("--parallel", "1", "--ttft-ms", "1", "--tokens", "1000", "--tokens-per-s", "20")
    post(sim.url + "/api/generate", {"model": "llama3"})
    st = Stream(sim.url, "/api/generate", gen_body())
    eq(st.status, 200)
    first = json.loads(st.line())
    eq(first["done"], False)
    wait_stat(sim, "in_flight", 1)
    res = []
    t = threading.Thread(target=lambda: res.append(post(sim.url + "/api/generate", dict(
        gen_body(stream=False), options={"num_predict": 2}))))
    t.start()
    wait_stat(sim, "queued", 1)
    st.close()
    freed_within(sim, "queued", 0, FAST)  # the waiter got the slot at once
    t.join()
    eq(res[0].status, 200)
    s = sim.stats()
    eq((s["cancelled"], s["in_flight"], s["max_in_flight"]), (1, 0, 1))
    sim.stop()


def test_cancel_non_streamed_during_generation():
    sim = Sim("--ttft-ms", "0", "--tokens", "1000", "--tokens-per-s", "20")
    post(sim.url + "/api/generate", {"model": "llama3"})
    s = raw_send(sim.url, "POST", "/v1/chat/completions",
                 {"model": "llama3", "messages": [{"role": "user", "content": "x"}]})
    wait_stat(sim, "in_flight", 1)
    time.sleep(0.1)
    s.close()
    freed_within(sim, "in_flight", 0, FAST)
    eq(stat(sim, "cancelled"), 1)
    sim.stop()


def test_cancel_during_load_aborts_it():
    sim = Sim("--load-ms", "5000", "--ttft-ms", "1", "--tokens-per-s", "0")
    s = raw_send(sim.url, "POST", "/api/generate", gen_body())
    wait_stat(sim, "queued", 1)
    s.close()
    freed_within(sim, "queued", 0, FAST)
    s2 = sim.stats()
    eq((s2["cancelled"], s2["loads"]), (1, 1))
    eq(s2["models"]["llama3:latest"]["loaded"], False, "load aborted")
    sim.stop()


def test_many_waiters_cancel():
    sim = Sim("--parallel", "2", "--ttft-ms", "5000", "--tokens-per-s", "0")
    post(sim.url + "/api/generate", {"model": "llama3"})
    socks = [raw_send(sim.url, "POST", "/api/chat", {
        "model": "llama3", "messages": [{"role": "user", "content": "m%d" % i}]})
        for i in range(50)]
    wait_stat(sim, "queued", 48)
    eq(stat(sim, "in_flight"), 2)
    for s in socks:
        s.close()
    wait_stat(sim, "in_flight", 0)
    wait_stat(sim, "queued", 0)
    eq(stat(sim, "cancelled"), 50)
    eq(post(sim.url + "/api/show", {"model": "llama3"}).status, 200, "still serving")
    sim.stop()


def test_sigterm_with_requests_in_every_state():
    sim = Sim("--parallel", "1", "--ttft-ms", "1", "--tokens", "100000", "--tokens-per-s", "50",
              "--load-ms", "200", models="alpha:latest,beta:latest")
    post(sim.url + "/api/generate", {"model": "alpha"})
    st = Stream(sim.url, "/api/generate", gen_body(model="alpha"))
    st.line()
    waiting = raw_send(sim.url, "POST", "/api/generate", gen_body(model="alpha"))
    loading = raw_send(sim.url, "POST", "/api/generate", gen_body(model="beta"))
    wait_stat(sim, "queued", 2)
    t0 = time.time()
    eq(sim.stop(), 0)
    ok(time.time() - t0 < 2 * SLOW, "prompt exit")
    for s in (waiting, loading):
        s.close()
    st.close()


run(globals())
