"""ollama-sim: injected faults (fail-rate 500s, reset-rate hang-ups) and the
/_sim counters around them."""
import http.client
import socket

import simlib
from simlib import post, raw_send, recv_all, Sim
from harness import eq, ok, run


def gen(url, stream=False):
    return post(url + "/api/generate", {"model": "llama3", "prompt": "x", "stream": stream})


def test_fail_rate_all():
    sim = Sim("--fail-rate", "1", "--ttft-ms", "1", "--tokens-per-s", "0")
    for stream in (False, True):
        r = gen(sim.url, stream)
        eq(r.status, 500)
        eq(r.headers["content-type"], "application/json; charset=utf-8")
        eq(r.json(), {"error": "simulated failure"})
    r = post(sim.url + "/v1/chat/completions", {"model": "llama3", "messages": [
        {"role": "user", "content": "x"}]})
    eq(r.status, 500)
    eq(r.json()["error"]["message"], "simulated failure")
    s = sim.stats()
    eq((s["failed"], s["requests"], s["served"]), (3, 3, 0))
    eq(post(sim.url + "/api/show", {"model": "llama3"}).status, 200, "non-inference unaffected")
    sim.stop()


def test_fail_rate_partial_is_seeded():
    def run_once():
        sim = Sim("--fail-rate", "0.3", "--seed", "42", "--ttft-ms", "0", "--tokens-per-s", "0")
        codes = [gen(sim.url).status for _ in range(60)]
        sim.stop()
        return codes
    a = run_once()
    ok(5 < a.count(500) < 35, "about 30%% failures: %d/60" % a.count(500))
    eq(set(a), {200, 500})
    eq(run_once(), a, "same seed, same sequence")


def test_reset_rate():
    sim = Sim("--reset-rate", "1", "--ttft-ms", "1", "--tokens-per-s", "0")
    s = raw_send(sim.url, "POST", "/api/generate", {"model": "llama3", "prompt": "x"})
    try:
        data = recv_all(s, timeout=5)
    except (ConnectionResetError, socket.error):
        data = b""
    eq(data, b"", "no response bytes at all")
    s.close()
    try:
        r = gen(sim.url)
        raise AssertionError("expected a dropped connection, got %r" % r)
    except (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError):
        pass
    st = sim.stats()
    eq((st["resets"], st["served"]), (2, 0))
    eq(simlib.get(sim.url + "/api/tags").status, 200, "server still fine")
    sim.stop()


def test_stream_fail_rate_in_band_error():
    sim = Sim("--stream-fail-rate", "1", "--ttft-ms", "1", "--tokens", "10",
              "--tokens-per-s", "500")
    r = gen(sim.url, stream=True)
    eq(r.status, 200, "status already sent")
    objs = simlib.ndjson(r.body)
    eq(len(objs), 6, "5 tokens then the error line")
    eq(objs[-1], {"error": "simulated failure"})
    ok(all(o["done"] is False for o in objs[:-1]), objs)
    r = post(sim.url + "/v1/chat/completions", {"model": "llama3", "stream": True, "messages": [
        {"role": "user", "content": "x"}]})
    ev = simlib.sse(r.body)
    ok("[DONE]" not in ev, "a failed SSE stream has no [DONE]")
    ok('"simulated failure"' in ev[-1], ev[-1])
    eq(gen(sim.url).status, 200, "non-streamed replies are not cut")
    s = sim.stats()
    eq((s["failed"], s["served"], s["in_flight"]), (2, 1, 0))
    sim.stop()


def test_counters_and_reset():
    sim = Sim("--ttft-ms", "0", "--tokens-per-s", "0")
    for _ in range(5):
        eq(gen(sim.url).status, 200)
    s = sim.stats()
    eq((s["served"], s["requests"], s["max_in_flight"], s["in_flight"]), (5, 5, 1, 0))
    eq(s["models"]["llama3:latest"]["served"], 5)
    sim.reset()
    s = sim.stats()
    eq((s["served"], s["requests"], s["loads"], s["max_in_flight"]), (0, 0, 0, 0))
    eq(s["models"]["llama3:latest"]["loaded"], True, "reset keeps the runners")
    eq(sim.stop(), 0)


run(globals())
