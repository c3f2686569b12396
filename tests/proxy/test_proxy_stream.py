"""ollama-proxy: streams pass chunk by chunk; a client that leaves frees its
queue entry or aborts its upstream at once; 1,000 concurrent streams."""
import asyncio
import resource
import time

import aclient
import harness
from harness import Proxy, Sim, eq, get, ok, raw_post, rss_kib, run, wait_until, SLOW

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def test_first_chunk_long_before_last():
    sim = Sim("--parallel", "2", "--ttft-ms", "50", "--tokens", "20", "--tokens-per-s", "10")
    px = Proxy([("gpu0", sim.url, 2)])
    r = aclient.run(aclient.request(px.port, "POST", "/api/chat", body=CHAT, timeout=30))
    eq(r.status, 200, "stream status")
    eq(r.headers.get("content-type"), "application/x-ndjson", "NDJSON passed through")
    eq(r.headers.get("transfer-encoding"), "chunked", "chunked to the client")
    lines = r.lines()
    ok(lines[-1]["done"] is True and len(lines) >= 20, "all lines: %d" % len(lines))
    first = r.t_first - r.t_start
    total = r.t_end - r.t_start
    print("first chunk after %.3fs, last after %.3fs, %d reads" % (first, total, len(r.chunks)))
    ok(total > 1.5, "the sim takes ~2 s to generate: %.2f" % total)
    ok(first < total / 4, "first chunk at %.2fs of %.2fs: buffered?" % (first, total))
    ok(len(r.chunks) >= 10, "arrived in pieces, not at once: %d" % len(r.chunks))
    # SSE on /v1.
    body = dict(CHAT, stream=True)
    r = aclient.run(aclient.request(px.port, "POST", "/v1/chat/completions", body=body))
    eq(r.status, 200, "SSE status")
    ok(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
    ok(r.body.rstrip().endswith(b"data: [DONE]"), r.body[-100:])
    ok(r.t_first - r.t_start < (r.t_end - r.t_start) / 4, "SSE streamed")
    px.stop()


def _status_idle(px):
    st = px.status()
    return st["queue"]["length"] == 0 and all(b["in_flight"] == 0 for b in st["backends"])


def test_abort_mid_stream_frees_slot():
    sim = Sim("--parallel", "2", "--ttft-ms", "20", "--tokens", "200", "--tokens-per-s", "20")
    px = Proxy([("gpu0", sim.url, 1)])
    s = raw_post(px.port, "/api/generate", b'{"model":"llama3","prompt":"tell me"}')
    s.settimeout(10 * SLOW)
    ok(b"200 OK" in s.recv(4096), "stream started")
    time.sleep(0.3)
    t0 = time.monotonic()
    s.close()
    wait_until(lambda: sim.stats()["cancelled"] == 1 and sim.stats()["in_flight"] == 0,
               timeout=0.1, interval=0.005, what="sim cancelled and slot free")
    dt = time.monotonic() - t0
    wait_until(lambda: _status_idle(px), timeout=0.1, what="proxy slot free")
    print("slot back %.1f ms after the client left" % (dt * 1000))
    # The slot is usable again.
    r = aclient.run(aclient.request(px.port, "POST", "/api/generate",
                                    body={"model": "llama3", "prompt": "x", "stream": False,
                                          "options": {"num_predict": 2}}))
    eq(r.status, 200, "next request served")
    px.stop()


def test_abort_before_first_byte_and_while_queued():
    # ttft 5 s: Ollama sends nothing until then; the proxy must still see
    # the client leave (evhttp alone would not) and abort the upstream.
    sim = Sim("--parallel", "2", "--ttft-ms", "5000", "--tokens", "2")
    px = Proxy([("gpu0", sim.url, 1)])

    async def scenario():
        a = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/chat",
                                                  body=CHAT, abort_after=0.8))
        await asyncio.sleep(0.1)
        b = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/chat",
                                                  body=CHAT, abort_after=0.3))
        await asyncio.sleep(0.15)
        st = px.status()
        eq(st["queue"]["length"], 1, "second request queued")
        await asyncio.gather(a, b)
    aclient.run(scenario())
    wait_until(lambda: _status_idle(px), timeout=0.2, what="queue entry and slot freed")
    wait_until(lambda: sim.stats()["cancelled"] == 1 and sim.stats()["in_flight"] == 0,
               timeout=0.2, what="sim saw the abort before the first token")
    eq(sim.stats()["requests"], 1, "the queued one never reached the backend")
    px.stop()


def test_slow_reader_back_pressure():
    # 4 MB of stream to a client that does not read: the proxy must pause
    # the upstream instead of buffering it all.
    sim = Sim("--parallel", "2", "--ttft-ms", "0", "--tokens", "40000", "--tokens-per-s", "0")
    px = Proxy([("gpu0", sim.url, 1)], env=harness.SMALL_QUARANTINE)
    # A small receive window, so that the kernel cannot hide the stream.
    s = raw_post(px.port, "/api/generate", b'{"model":"llama3","prompt":"long"}', rcvbuf=65536)
    time.sleep(2 * SLOW)
    rss = rss_kib(px.proc.pid)
    got, tail = 0, b""
    s.settimeout(10 * SLOW)
    t0 = time.monotonic()
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
        tail = (tail + d)[-16:]
        if tail.endswith(b"\r\n0\r\n\r\n"):
            break
    print("read in %.2fs" % (time.monotonic() - t0))
    s.close()
    print("proxy RSS with a stalled reader: %d KiB; then read %d bytes" % (rss, got))
    ok(got > 2_000_000, "the whole stream arrived once read: %d" % got)
    ok(rss < 40_000 * (3 if SLOW > 1 else 1), "RSS %d KiB: the stream was buffered" % rss)
    px.stop()


def test_1000_concurrent_streams():
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sim = Sim("--parallel", str(n), "--ttft-ms", "200", "--tokens", "10",
              "--tokens-per-s", "5", "--slowdown", "0")
    px = Proxy([("gpu0", sim.url, n)], extra="queue = { max_length = 4096; };")
    reqs = [dict(method="POST", path="/api/chat", body=CHAT, timeout=120 * SLOW)] * n
    t0 = time.monotonic()
    res = aclient.run(aclient.many(px.port, reqs, n))
    wall = time.monotonic() - t0
    bad = [r for r in res if r.status != 200 or r.error or not r.lines()[-1].get("done")]
    ok(not bad, "%d of %d streams failed: %r" % (len(bad), n, [(r.status, r.error)
                                                              for r in bad[:3]]))
    st = sim.stats()
    eq(st["served"], n, "all served")
    print("%d streams in %.1fs, sim max in flight %d" % (n, wall, st["max_in_flight"]))
    ok(st["max_in_flight"] >= n * 0.8, "they really ran at once: %d" % st["max_in_flight"])
    px.stop()


run(globals())
