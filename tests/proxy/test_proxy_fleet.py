"""ollama-proxy: model management applies to the whole fleet (pull, delete,
copy, unload reach every backend concerned; pulled models are routable at
once, deleted ones 404 at once) and /api/ps is live."""
import asyncio
import http.client as httpclient
import json
import re
import signal
import socket
import struct
import time

import aclient
import harness
from fakebackend import FakeBackend
from harness import (Proxy, Sim, cpu_s, eq, get, http, ok, post, raw_post, rss_kib, run,
                     wait_until, SLOW)

FAST = ("--ttft-ms", "0", "--tokens", "1")


def three(refresh_s=30):
    """Three sims behind a proxy; by default no help from periodic polls."""
    sims = [Sim(*FAST, models="llama3:latest") for _ in range(3)]
    px = Proxy([("gpu%d" % i, s.url, 2) for i, s in enumerate(sims)],
               extra="models = { refresh_s = %g; };" % refresh_s)
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    return sims, px


def tags(sim):
    return sorted(m["name"] for m in get(sim.url + "/api/tags").json()["models"])


def test_pull_streams_from_every_backend_and_is_routable_at_once():
    sims, px = three()
    r = aclient.run(aclient.request(px.port, "POST", "/api/pull", body={"model": "qwen2.5:7b"}))
    eq(r.status, 200, "pull")
    lines = r.lines()
    eq(lines[-1], {"status": "success"}, "one success at the end")
    progress = lines[:-1]
    eq({l.get("backend") for l in progress}, {"gpu0", "gpu1", "gpu2"},
       "progress lines from all three, each named")
    ok(all("status" in l and l["status"] != "success" for l in progress),
       "the backends' own successes are not forwarded: %r" % progress)
    for s in sims:
        ok("qwen2.5:7b" in tags(s), "pulled on every sim")
    # Routable at once, with no poll in between (refresh_s = 30).
    r = post(px.url + "/api/generate", {"model": "qwen2.5:7b", "prompt": "x", "stream": False})
    eq(r.status, 200, "routable right after the pull: %r" % r)
    # stream:false: one answer.
    r = post(px.url + "/api/pull", {"model": "phi3", "stream": False})
    eq((r.status, r.json()), (200, {"status": "success"}), "non-streamed pull")
    px.stop()


def test_pull_failing_on_one_names_it():
    sims = [Sim(*FAST) for _ in range(2)]
    fb = FakeBackend("ok")  # answers /api/pull 404: it cannot pull
    px = Proxy([("gpu0", sims[0].url, 2), ("gpu1", sims[1].url, 2), ("bad", fb.url, 2)])
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    r = aclient.run(aclient.request(px.port, "POST", "/api/pull", body={"model": "phi3"}))
    eq(r.status, 200, "the stream started")
    last = r.lines()[-1]
    ok("error" in last and "bad" in last["error"] and "gpu0" not in last["error"],
       "the error names the backend that failed, only it: %r" % last)
    r = post(px.url + "/api/pull", {"model": "phi3", "stream": False})
    eq(r.status, 500, "non-streamed: an error")
    ok("bad" in r.json()["error"], r.body)
    px.stop()


def test_delete_reaches_the_backends_that_have_it():
    sims, px = three(refresh_s=0.2)
    # Only gpu1 and gpu2 have qwen (pulled behind the proxy's back).
    for s in sims[1:]:
        eq(post(s.url + "/api/pull", {"model": "qwen2.5:7b", "stream": False}).status, 200, "")
    wait_until(lambda: sum("qwen2.5:7b" in b["models"] for b in px.status()["backends"]) == 2,
               what="the proxy knows who has qwen")
    r = http("DELETE", px.url + "/api/delete", {"model": "qwen2.5:7b"})
    eq(r.status, 200, "delete: %r" % r)
    for s in sims:
        ok("qwen2.5:7b" not in tags(s), "deleted everywhere")
    r = post(px.url + "/api/generate", {"model": "qwen2.5:7b", "prompt": "x"})
    eq(r.status, 404, "a deleted model 404s at once")
    r = http("DELETE", px.url + "/api/delete", {"model": "qwen2.5:7b"})
    eq(r.status, 404, "deleting what nobody has")
    px.stop()


def test_copy_and_unload_on_all():
    sims, px = three()
    r = post(px.url + "/api/copy", {"source": "llama3", "destination": "mine:v1"})
    eq(r.status, 200, "copy: %r" % r)
    for s in sims:
        ok("mine:v1" in tags(s), "copied on every sim")
    eq(post(px.url + "/api/generate", {"model": "mine:v1", "prompt": "x",
                                       "stream": False}).status, 200, "routable at once")
    # Load llama3 on two backends, then unload: both unload it.
    for i in range(4):
        eq(post(px.url + "/api/generate", {"model": "llama3", "prompt": "x",
                                           "stream": False}).status, 200, "")
    loaded = {"gpu%d" % i for i, s in enumerate(sims) if get(s.url + "/api/ps").json()["models"]}
    ok(len(loaded) >= 2, "llama3 loaded on several: %r" % loaded)
    ps = get(px.url + "/api/ps").json()["models"]
    eq({m["backend"] for m in ps}, loaded, "/api/ps right after the loads shows them (live)")
    r = post(px.url + "/api/generate", {"model": "llama3", "keep_alive": 0})
    eq(r.status, 200, "unload: %r" % r)
    eq(r.json().get("done_reason"), "unload", r.body)
    for s in sims:
        eq([m["name"] for m in get(s.url + "/api/ps").json()["models"]
            if m["name"].startswith("llama3")], [], "unloaded everywhere")
    eq([m for m in get(px.url + "/api/ps").json()["models"] if m["name"].startswith("llama3")],
       [], "and /api/ps says so at once")
    px.stop()


def test_ps_is_live():
    sim = Sim(*FAST)
    px = Proxy([("gpu0", sim.url, 2)], extra="models = { refresh_s = 30; };")
    wait_until(lambda: px.status()["backends"][0]["models"], what="discovery")
    eq(get(px.url + "/api/ps").json()["models"], [], "nothing loaded")
    eq(post(sim.url + "/api/generate", {"model": "llama3", "prompt": "x",
                                        "stream": False}).status, 200, "a load behind its back")
    time.sleep(1.1)  # past the one-second reuse
    ps = get(px.url + "/api/ps").json()["models"]
    eq([(m["name"], m["backend"]) for m in ps], [("llama3:latest", "gpu0")], "live: %r" % ps)
    px.stop()




def test_fanout_counted_by_the_drain():
    """A pull in flight at SIGTERM finishes (up to shutdown_timeout_s), as
    a proxied stream does (issue 19: the drain counts every request kind)."""
    fb = FakeBackend("slow_pull", lines=6, gap=0.25)
    px = Proxy([("fake", fb.url, 2)], extra="shutdown_timeout_s = 20;")
    wait_until(lambda: px.backend("fake")["models"], what="discovery")

    async def scenario():
        pull = asyncio.ensure_future(aclient.request(px.port, "POST", "/api/pull",
                                                     body={"model": "llama3"}))
        await asyncio.sleep(0.4)
        px.proc.signal(signal.SIGTERM)
        return await pull
    r = aclient.run(scenario())
    eq(r.status, 200, "the pull")
    lines = r.lines()
    eq(lines[-1], {"status": "success"}, "finished after SIGTERM: %r" % lines[-2:])
    eq(len([l for l in lines if l.get("completed")]), 6, "every progress line")
    eq(px.proc.p.wait(10 * SLOW), 0, "then a clean exit")
    fb.stop()


def test_fanout_forwarded_and_logged_like_a_request():
    """A fan-out carries X-Forwarded-For, and its log line names the client
    and counts the bytes sent."""
    fb = FakeBackend("slow_pull", lines=2, gap=0.01)
    px = Proxy([("fake", fb.url, 2)])
    wait_until(lambda: px.backend("fake")["models"], what="discovery")
    r = post(px.url + "/api/pull", {"model": "llama3"}, headers={"X-Forwarded-For": "10.9.8.7"})
    eq(r.status, 200, "the pull")
    pulls = [q for q in fb.requests if q.target == "/api/pull"]
    eq(len(pulls), 1, "one pull sent")
    eq(pulls[0].header("X-Forwarded-For"), "10.9.8.7, 127.0.0.1", "X-Forwarded-For")
    wait_until(lambda: "POST /api/pull" in px.proc.output(), what="the log line")
    line = [l for l in px.proc.output().splitlines() if "POST /api/pull" in l][-1]
    ok("client=127.0.0.1" in line, "the log names the client: " + line)
    ok(re.search(r"bytes=[1-9]", line), "and counts the bytes: " + line)
    px.stop()
    fb.stop()


def test_fanout_5xx_on_the_status_page():
    """A fan-out's 5xx is in the status page's error list, as a proxied
    request's is."""
    fb = FakeBackend("slow_pull", status=500)
    px = Proxy([("fake", fb.url, 2)])
    wait_until(lambda: px.backend("fake")["models"], what="discovery")
    r = post(px.url + "/api/pull", {"model": "llama3", "stream": False})
    eq(r.status, 500, "the failed pull")
    errs = px.status()["errors"]
    ok(any(e["path"] == "/api/pull" and e["status"] == 500 for e in errs),
       "on the status page: %r" % errs)
    px.stop()
    fb.stop()


def test_fanout_back_pressure():
    """Issue 18, item 7: a client that stops reading a pull's progress
    pauses every backend's read, as a proxied stream does: the proxy's
    memory stays bounded while two backends pump progress lines."""
    fbs = [FakeBackend("flood_pull") for _ in range(2)]
    px = Proxy([("a", fbs[0].url, 2), ("b", fbs[1].url, 2)], env=harness.SMALL_QUARANTINE)
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    s = raw_post(px.port, "/api/pull", b'{"model":"llama3"}', rcvbuf=65536)
    time.sleep(3 * SLOW)
    rss = rss_kib(px.proc.pid)
    print("proxy RSS with a client that does not read a pull: %d KiB" % rss)
    s.close()
    for fb in fbs:
        fb.stop()
    ok(rss < 40_000 * (3 if SLOW > 1 else 1), "RSS %d KiB: the progress was buffered" % rss)
    px.stop()


def test_fanout_stream_outlives_client_idle():
    """Issue 18, item 9: a streamed pull whose backend is silent for longer
    than the client connection's idle_s (but within its own first_byte_s)
    is not cut: the stream lives by the backends' timeouts."""
    fb = FakeBackend("slow_pull", lines=2, gap=0.1, head_delay=2.5)
    px = Proxy([("fake", fb.url, 2)], extra="timeouts = { idle_s = 1; first_byte_s = 30; };")
    wait_until(lambda: px.backend("fake")["models"], what="discovery")
    r = aclient.run(aclient.request(px.port, "POST", "/api/pull", body={"model": "llama3"},
                                    timeout=30))
    eq(r.status, 200, "the pull")
    eq(r.lines()[-1], {"status": "success"}, "not cut by the client's idle_s: %r" % r.lines())
    px.stop()
    fb.stop()


def test_fanout_judged_by_body():
    """Issue 18, item 11: a non-streamed pull that answers 200 with garbage,
    or with a stream ending in an error, did not succeed, and the model is
    not listed there."""
    def answer(body):
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    bad = [("raw", {"data": answer(b"garbage")}),
           ("raw", {"data": answer(b'{"status":"pulling manifest"}\n{"error":"disk full"}\n')})]
    for name, params in bad:
        fb = FakeBackend(name, models=("llama3:latest",), **params)
        px = Proxy([("fake", fb.url, 2)])
        wait_until(lambda: px.backend("fake")["models"], what="discovery")
        r = post(px.url + "/api/pull", {"model": "qwen2.5:7b", "stream": False})
        eq(r.status, 500, "a pull that did not succeed: %r" % r)
        ok("fake" in r.json()["error"], "names the backend: %r" % r)
        ok("qwen2.5:7b" not in px.backend("fake")["models"], "not listed there")
        px.stop()
        fb.stop()


def _send(port, method, path, obj):
    """A socket on which METHOD PATH with OBJ as its JSON body (None: no
    body) went to the proxy, its answer not read."""
    body = json.dumps(obj).encode() if obj is not None else b""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" %
              (method.encode(), path.encode(), len(body), body))
    return s


def _reset(s):
    """Close S with a TCP RST instead of a FIN (SO_LINGER {1, 0})."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _reset_behind_a_request(s):
    """A pipelining client's next request, unread by the proxy until the
    reply, then a reset behind it."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    time.sleep(0.1)
    _reset(s)


LEAVES = {"a FIN": socket.socket.close,
          "a half-close": lambda s: s.shutdown(socket.SHUT_WR),
          "a reset": _reset,
          "a reset behind a pipelined request": _reset_behind_a_request}
# A proxy that spins on a socket uses about a core; an idle one next to
# nothing (test_proxy_faults' SPIN_SHARE).
SPIN_SHARE = 0.25


def test_fanout_client_leaving_cancels_every_backend():
    """A client that leaves a fan-out before its reply starts (a pull,
    push or create of stream:false, a copy, a delete, a preload, a blob
    check; the backends silent meanwhile, as while a pull downloads GBs or
    a model loads), by a FIN, a half-close or a reset, even behind a
    pipelined request: every backend's request is aborted at once (a
    cancel for Ollama), the access log says client-gone (499), no busy
    loop, and the proxy serves on. Before, evhttp, which does not read a
    connection before its reply, hid the leave until every backend had
    answered: a pull of many GB went on for nobody."""
    fbs = [FakeBackend("silent", hold=120) for _ in range(2)]
    px = Proxy([("a", fbs[0].url, 2), ("b", fbs[1].url, 2)],
               extra="timeouts = { first_byte_s = 60; idle_s = 60; };")
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    cases = [("POST", "/api/pull", {"model": "qwen2.5:7b", "stream": False}, "a FIN"),
             ("POST", "/api/create", {"model": "mine", "from": "llama3", "stream": False},
              "a reset"),
             ("POST", "/api/push", {"model": "llama3", "stream": False}, "a half-close"),
             ("POST", "/api/copy", {"source": "llama3", "destination": "mine"},
              "a reset behind a pipelined request"),
             ("DELETE", "/api/delete", {"model": "llama3"}, "a FIN"),
             ("POST", "/api/generate", {"model": "llama3", "keep_alive": "5m"}, "a reset"),
             ("HEAD", "/api/blobs/sha256:" + "0" * 64, None, "a reset")]
    for method, path, obj, how in cases:
        case = "%s %s, left by %s" % (method, path, how)
        for fb in fbs:
            fb.take()
        s = _send(px.port, method, path, obj)
        wait_until(lambda: all(len(fb.requests) == 1 for fb in fbs),
                   what="%s: the request at both backends" % case)
        time.sleep(0.1)  # the proxy has settled on waiting
        c0, t0 = cpu_s(px.proc.pid), time.monotonic()
        LEAVES[how](s)
        wait_until(lambda: all(fb.requests[0].ended for fb in fbs), timeout=2,
                   what="%s: both backends' requests ended" % case)
        ok(all(fb.requests[0].peer_closed for fb in fbs), "%s: the proxy hung up on both" % case)
        pattern = r"%s %s .*backend=\* status=499 .* tries=2 client-gone" % (method, re.escape(path))
        wait_until(lambda: re.search(pattern, px.proc.output()), timeout=1,
                   what="%s: an access line ... status=499 ... client-gone:\n%s" %
                   (case, px.proc.tail(3)))
        time.sleep(0.5)
        cpu, wall = cpu_s(px.proc.pid) - c0, time.monotonic() - t0
        ok(cpu < SPIN_SHARE * wall, "%s: the proxy used %.2f s of CPU in the %.2f s after the "
                                   "leave: a busy loop" % (case, cpu, wall))
        s.close()
    # Answered, on one keep-alive connection: the watch ends with each reply.
    for fb in fbs:
        fb.set("slow_pull", lines=2, gap=0.05)
    conn = httpclient.HTTPConnection("127.0.0.1", px.port, timeout=10 * SLOW)
    for i in range(2):
        conn.request("POST", "/api/pull", json.dumps({"model": "phi3", "stream": False}),
                     {"Host": "localhost"})
        r = conn.getresponse()
        eq((r.status, json.loads(r.read())), (200, {"status": "success"}),
           "pull %d on one connection" % i)
    conn.close()
    eq(px.stop(), 0, "a clean exit (under ASan: nothing leaked)")
    for fb in fbs:
        fb.stop()


run(globals())
