"""Operating a fleet (issue 20, second part): a preload warms every GPU
that has the model; health is "unknown" until something is known; --check
sees one server under two names and an open admin surface;
logging.skip_paths keeps probes out of the access log."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

from fakebackend import FakeBackend

from harness import (SLOW, Proxy, Sim, binary, eq, get, ok, post, run, wait_until,
                     write_proxy_conf, _tmp)


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
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


def test_preload_partial_and_failed():
    """A preload that loads on one backend and is refused (busy) by the
    other is a success with the loading backend's answer; refused by every
    one with one status, that status (503 with Retry-After), naming them."""
    sim = Sim(models="qwen2.5:7b")
    fb = FakeBackend("ok", models=("qwen2.5:7b",))
    fb2 = FakeBackend("ok", models=("qwen2.5:7b",))
    px = Proxy([("gpu0", sim.url, 2), ("fake", fb.url, 2)],
               extra="models = { refresh_s = 600; };")
    wait_until(lambda: known(px, "gpu0", "fake"), what="discovery")
    fb.set("busy")
    r = post(px.url + "/api/generate", {"model": "qwen2.5:7b"})
    eq((r.status, r.json().get("done_reason")), (200, "load"), "loaded on gpu0: %r" % r)
    ok(any(q.line.startswith("POST /api/generate") for q in fb.take()), "the fake was asked")
    wait_until(lambda: "fanout-partial" in px.proc.output(), what="the partial outcome")
    eq(px.stop(), 0, "clean exit")
    fb.set("busy")
    fb2.set("busy")
    px = Proxy([("a", fb.url, 2), ("b", fb2.url, 2)], extra="models = { refresh_s = 600; };")
    wait_until(lambda: known(px, "a", "b"), what="discovery")
    r = post(px.url + "/api/chat", {"model": "qwen2.5:7b"})
    eq(r.status, 503, "every backend busy: %r" % r)
    ok("retry-after" in r.headers, "with Retry-After: %r" % r.headers)
    ok("load failed on a (" in r.json()["error"] and "; b (" in r.json()["error"],
       "naming both: %r" % r.json())
    eq(px.stop(), 0, "clean exit")


def mute_server():
    """A port that takes connections (the kernel's backlog) and never
    answers: a check of it does not end before health.timeout_s."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, "http://127.0.0.1:%d" % s.getsockname()[1]


def healthy_sample(metrics, name):
    m = re.search(r'^ollama_proxy_backend_healthy\{backend="%s"\} (\S+)$' % name, metrics,
                  re.M)
    return m and m.group(1)


def test_health_unknown_until_known():
    """A backend whose first check has not ended is neither up nor down:
    "unknown" in /proxy/status (healthy stays true: it is routed to), NaN for
    ollama_proxy_backend_healthy; once a check passes it is up, once it is
    marked down, down."""
    sim = Sim()
    mute, url = mute_server()
    px = Proxy([("gpu0", sim.url, 2), ("mute", url, 2)],
               extra="health = { interval_s = 60; timeout_s = 30; fail_after = 1; };")
    wait_until(lambda: px.backend("gpu0")["state"] == "up", what="gpu0 checked")
    b = px.backend("mute")
    eq((b["state"], b["healthy"]), ("unknown", True), "never heard of (routable): %r" % b)
    st = px.status()
    eq(st["queue"]["dispatch_us"], None, "no grant yet: no dispatch time")
    m = get(px.url + "/metrics").text()
    eq(healthy_sample(m, "gpu0"), "1", "gpu0 is up")
    eq(healthy_sample(m, "mute"), "NaN", "neither 1 nor 0 for the unknown one")
    ok('ollama_proxy_backend_in_flight{backend="mute"} 0' in m, "its other gauges are there")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")
    # A short check timeout: its first check ends, failing, and with
    # fail_after 1 it is down; a real success makes a backend known up.
    px = Proxy([("mute", url, 2)],
               extra="health = { interval_s = 60; timeout_s = 0.3; fail_after = 1; };")
    wait_until(lambda: px.backend("mute")["state"] == "down", what="mute marked down")
    eq(px.backend("mute")["healthy"], False, "down")
    eq(healthy_sample(get(px.url + "/metrics").text(), "mute"), "0", "its sample is 0")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")
    mute.close()


def check(conf):
    p = subprocess.run([binary("ollama-proxy"), "-c", conf, "--check"], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_check_sees_one_server_and_open_admin():
    """--check: "localhost" and "127.0.0.1" at one port are one server (its
    slots would be counted twice); a listen address other machines reach
    with no keys is a warning; neither fails the check."""
    sim = Sim()
    conf = os.path.join(_tmp, "check.conf")
    port = sim.port
    write_proxy_conf(conf, [("a", "http://localhost:%d" % port, 2),
                            ("b", "http://127.0.0.1:%d" % port, 2)], listen="0.0.0.0:0")
    rc, out, err = check(conf)
    eq(rc, 0, "warnings do not fail the check: %s" % err)
    ok("OK" in out, out)
    ok(re.search(r'warning: backends "a" and "b" are one server \("localhost" and '
                 r'"127.0.0.1" are both 127.0.0.1, port %d\)' % port, err), err)
    ok('warning: listen "0.0.0.0:0" is reachable from other machines and auth.keys is empty'
       in err, err)
    # Loopback, distinct servers: quiet. Keys on a wildcard listen: quiet.
    other = Sim()
    write_proxy_conf(conf, [("a", "http://localhost:%d" % port, 2),
                            ("b", "http://127.0.0.1:%d" % other.port, 2)])
    rc, out, err = check(conf)
    eq((rc, err), (0, ""), "no warning")
    write_proxy_conf(conf, [("a", sim.url, 2)], listen="[::]:0",
                     extra='auth = { keys = ( { name = "k"; key = "s"; } ); };')
    rc, out, err = check(conf)
    eq((rc, err), (0, ""), "keys: no warning")


def test_skip_paths_keep_probes_out_of_the_access_log():
    """logging.skip_paths: requests for those paths (the query aside) write
    no access-log line; every other request still does."""
    sim = Sim()
    log = os.path.join(_tmp, "access-skip.log")
    px = Proxy([("gpu0", sim.url, 2)],
               extra='logging = { access = "%s"; skip_paths = [ "/", "/api/version" ]; };' % log)
    wait_until(lambda: px.backend("gpu0")["state"] == "up", what="gpu0 up")
    for _ in range(3):
        eq(get(px.url + "/").status, 200, "GET /")
        eq(get(px.url + "/api/version").status, 200, "GET /api/version")
        eq(get(px.url + "/api/version?probe=1").status, 200, "with a query")
    eq(get(px.url + "/api/tags").status, 200, "GET /api/tags")
    eq(post(px.url + "/api/generate", {"model": "llama3", "prompt": "x", "stream": False}).status,
       200, "a generate")
    eq(px.stop(), 0, "clean exit")  # the log is flushed by the end
    lines = open(log).read().splitlines()
    logged = [l.split()[1] for l in lines if l.split()[1] != "/proxy/status"]
    eq(logged, ["/api/tags", "/api/generate"], "only the others have lines: %r" % lines)


def events(px, kind):
    return [e for e in px.status().get("events", []) if e["kind"] == kind]


def test_status_events():
    """/proxy/status "events" (the status page's event list): a backend down
    with its reason and up again, a reload done and one refused with why,
    requests retried; the newest first."""
    late = Sim()
    port = late.port
    late.stop()
    fb = FakeBackend("ok", models=("fakeonly:latest",))
    backends = [("late", "http://127.0.0.1:%d" % port, 2), ("fake", fb.url, 1)]
    extra = "health = { interval_s = 0.2; fail_after = 1; };"
    px = Proxy(backends, extra=extra)
    down = wait_until(lambda: [e for e in events(px, "down") if e["backend"] == "late"],
                      what="late's down event")
    ok("health check" in down[0]["why"], "with its reason: %r" % down)
    late = Sim(port=port)
    up = wait_until(lambda: [e for e in events(px, "up") if e["backend"] == "late"],
                    what="late's up event")
    eq(up[0]["why"], "health checks pass again", "up again: %r" % up)
    # A retry: the fake answers 503 busy once, then serves.
    wait_until(lambda: "fakeonly:latest" in str(px.status()), what="discovery")
    fb.script("busy")
    r = post(px.url + "/api/generate", {"model": "fakeonly", "prompt": "x", "stream": False})
    eq(r.status, 200, "served after the busy 503: %r" % r)
    rt = wait_until(lambda: events(px, "retry"), what="the retry event")
    ok(rt[0]["why"].startswith("1 request "), rt)
    # Reloads: done, then refused with the reason.
    write_proxy_conf(px.conf, backends, extra)
    px.proc.signal(signal.SIGHUP)
    rl = wait_until(lambda: events(px, "reload"), what="the reload event")
    ok(rl[0]["why"].startswith("reloaded ") and "2 backends" in rl[0]["why"], rl)
    with open(px.conf, "a") as f:
        f.write("colour = 3;\n")
    px.proc.signal(signal.SIGHUP)
    rl = wait_until(lambda: len(events(px, "reload")) == 2 and events(px, "reload"),
                    what="the refused reload's event")
    ok(rl[0]["why"].startswith("refused, the old config stays") and "colour" in rl[0]["why"],
       "newest first, with why: %r" % rl)
    evs = px.status()["events"]
    eq([e["time"] for e in evs], sorted([e["time"] for e in evs], reverse=True), "newest first")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


def long_sim(models="llama3:latest"):
    """A sim whose generations last about 4 s (x SLOW): long enough for two
    reloads to land while they run."""
    return Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", str(int(80 * SLOW)),
               "--tokens-per-s", "20", models=models)


def send(px, n, out):
    """N generations for llama3 at once, each in a thread; their replies go
    to OUT. Returns the threads."""
    def one():
        out.append(post(px.url + "/api/generate", {"model": "llama3", "prompt": "x",
                                                   "stream": False}, timeout=120 * SLOW))
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def reload(px, backends):
    """Write BACKENDS, SIGHUP, and wait until the proxy says it reloaded."""
    k = px.proc.output().count("reloaded ")
    write_proxy_conf(px.conf, backends)
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: px.proc.output().count("reloaded ") > k, what="the reload")


def max_on(sim):
    return sim.stats()["models"]["llama3:latest"]["max_in_flight"]


def test_renamed_backend_keeps_its_cap():
    """A cap is the server's, whatever the config calls it: a reload that
    renames a busy backend (gpu0 -> gpu-0, the same url) while 2 run at
    max_concurrent 2 and 2 wait sends the 2 waiting only as the first end:
    the sim never has more than 2 of them, and the status shows the 2 still
    running under the new name."""
    sim = long_sim()
    px = Proxy([("gpu0", sim.url, 2)])
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")
    out = []
    ts = send(px, 4, out)
    wait_until(lambda: (lambda s: s["backends"][0]["in_flight"] == 2 and
                        s["queue"]["length"] == 2)(px.status()), what="2 running, 2 waiting")
    reload(px, [("gpu-0", sim.url, 2)])
    st = px.status()
    eq(sim.stats()["served"], 0, "the reload came while the first 2 ran")
    eq([(b["name"], b["in_flight"], b["max_concurrent"]) for b in st["backends"]],
       [("gpu-0", 2, 2)], "the 2 running are gpu-0's")
    eq(st["queue"]["length"], 2, "the 2 others still wait")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in out), [200] * 4, "every request served: %r" % out)
    eq(max_on(sim), 2, "at most max_concurrent 2 on the server, across the rename")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


def test_backend_dropped_and_added_back_keeps_its_cap():
    """A backend dropped by a reload while it runs 2 requests (its cap),
    then added back by the next while they still run, takes them back: the
    status shows them in its in_flight, and 2 new requests wait for them
    instead of making 4 on the server."""
    a = long_sim()
    b = long_sim(models="phi3:mini")  # lacks llama3: the requests are a's
    rows = [("a", a.url, 2), ("b", b.url, 1)]
    px = Proxy(rows)
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]), what="discovery")
    out = []
    ts = send(px, 2, out)
    wait_until(lambda: px.backend("a")["in_flight"] == 2, what="2 running on a")
    reload(px, rows[1:])
    eq([x["name"] for x in px.status()["backends"]], ["b"], "a dropped")
    reload(px, rows)
    eq(a.stats()["served"], 0, "both reloads came while the first 2 ran")
    eq(px.backend("a")["in_flight"], 2, "the 2 still running are a's again")
    ts += send(px, 2, out)
    wait_until(lambda: sum(c["in_flight"] + c["waiting"] for c in px.status()["clients"]) == 4,
               what="the 2 new at the proxy")
    eq(px.status()["queue"]["length"], 2, "the 2 new wait for a slot of a")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in out), [200] * 4, "every request served: %r" % out)
    eq(max_on(a), 2, "at most max_concurrent 2 on the server, across the drop and re-add")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


def in_flight_sums(st):
    """(backends[] + retired[], clients[]) in flight: equal at every moment."""
    return (sum(b["in_flight"] for b in st["backends"] + st["retired"]),
            sum(c["in_flight"] for c in st["clients"]))


def test_retired_backend_shown_while_it_runs():
    """A backend dropped by a reload with no row left for its server while
    it runs 2 requests leaves backends[] (the config's fleet) but is listed
    in retired[], state "retired", with its 2 in flight and its runner's,
    until they end: the status adds up (backends + retired = clients) and
    then forgets it."""
    a = long_sim()
    b = long_sim(models="phi3:mini")
    rows = [("a", a.url, 2), ("b", b.url, 1)]
    px = Proxy(rows)
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]), what="discovery")
    eq(px.status()["retired"], [], "nothing retired yet")
    out = []
    ts = send(px, 2, out)
    wait_until(lambda: px.backend("a")["in_flight"] == 2, what="2 running on a")
    reload(px, rows[1:])
    st = px.status()
    eq(a.stats()["served"], 0, "the reload came while the 2 ran")
    eq([x["name"] for x in st["backends"]], ["b"], "a left the config's fleet")
    eq([(x["name"], x["url"], x["state"], x["in_flight"]) for x in st["retired"]],
       [("a", a.url, "retired", 2)], "a is retired and still runs its 2")
    eq([(r["model"], r["in_flight"]) for r in st["retired"][0]["runners"]],
       [("llama3:latest", 2)], "its runner's in flight")
    eq(in_flight_sums(st), (2, 2), "backends + retired in flight = clients in flight")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in out), [200] * 2, "both served: %r" % out)
    # A client may read its reply a moment before the proxy lets go of it.
    st = wait_until(lambda: (lambda s: not s["retired"] and s)(px.status()),
                    what="retired[] empty once drained")
    eq(in_flight_sums(st), (0, 0), "nothing in flight")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


def test_status_drain_rate_as_fresh_as_retry_after():
    """queue.drain_per_s and retry_after_s of one /proxy/status are of one
    moment: the first status after a quiet second folds the grants of the
    burst before it into the rate and shows that rate (the same as the
    status right after), not the one from before the fold."""
    sim = Sim("--parallel", "8", "--ttft-ms", "200", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 1)])
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")
    eq(px.status()["queue"]["drain_per_s"], 0, "nothing drained yet")
    out = []
    for t in send(px, 6, out):  # one at a time on gpu0: 5 wait, then are granted
        t.join()
    eq(sorted(r.status for r in out), [200] * 6, "every request served: %r" % out)
    time.sleep(1.2)  # a period of the rate has passed: the next status folds it in
    first, second = (px.status()["queue"]["drain_per_s"] for _ in range(2))
    ok(first > 0, "the grants of the burst in the first status's drain_per_s: %r" % first)
    eq(first, second, "the first status shows the rate the next one does")
    eq(px.stop(), 0, "clean exit (ASan: no leak)")


if __name__ == "__main__":
    run(globals())
