"""ollama-proxy: its own endpoints, header handling, errors it makes itself,
the full queue, the queue timeout, --check and the drain on SIGTERM."""
import http.client as httpclient
import json
import os
import signal
import socket
import subprocess
import threading
import time

from harness import (SRC, Proc, Proxy, Sim, binary, cpu_s, eq, get, http, ok,
                     post, run, strace_calls, tmpdir, write_proxy_conf,
                     wait_until, SLOW)

GEN = {"model": "llama3", "prompt": "hello", "stream": False}


def test_keep_alive_requests_leave_epoll_alone():
    """evhttp turns a connection's reading off when a request has come and
    on again after its reply; the read watch keeps the socket in epoll
    meanwhile: 100 keep-alive requests make a few epoll_ctl calls (a health
    check's connection), not two each."""
    sim = Sim("--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "3")
    px = Proxy([("gpu0", sim.url, 4)])
    c = httpclient.HTTPConnection("127.0.0.1", px.port, timeout=30 * SLOW)

    def requests(n):
        for _ in range(n):
            c.request("POST", "/api/generate", json.dumps(GEN),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            eq((r.status, json.loads(r.read())["done"]), (200, True), "a keep-alive request")

    requests(3)  # the connection, and the backend's, open
    calls = strace_calls(px.proc.pid, lambda: requests(100), "epoll_ctl")[0].get("epoll_ctl", 0)
    ok(calls <= 20, "epoll_ctl calls for 100 keep-alive requests: %d (two a request "
                    "without the watch)" % calls)
    c.close()
    px.stop()


def test_bytes_during_a_request_do_not_spin():
    """Bytes that come while a request is in flight (the next request, sent
    before the first is answered) wait in the socket for the reply: the read
    watch steps aside rather than wake the loop for them again and again.
    Both are answered, in order."""
    sim = Sim("--ttft-ms", "1500", "--tokens-per-s", "0", "--tokens", "3")
    px = Proxy([("gpu0", sim.url, 4)])
    eq(post(px.url + "/api/generate", dict(GEN, prompt="warm")).status, 200, "warm")
    body = json.dumps(GEN).encode()
    req = b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)
    s = socket.create_connection(("127.0.0.1", px.port))
    s.settimeout(30 * SLOW)
    s.sendall(req)
    time.sleep(0.3)  # in flight: evhttp reads no more
    cpu0, t0 = cpu_s(px.proc.pid), time.monotonic()
    s.sendall(req)
    for i in range(2):
        r = httpclient.HTTPResponse(s)
        r.begin()
        eq((r.status, json.loads(r.read())["done"]), (200, True), "answer %d" % (i + 1))
        if i == 0:
            cpu, wall = cpu_s(px.proc.pid) - cpu0, time.monotonic() - t0
    ok(cpu < 0.5 * wall, "the proxy used %.2f s of CPU in the %.2f s the first request had "
                         "left, the second's bytes waiting" % (cpu, wall))
    s.close()
    px.stop()


def test_root_and_status():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)])
    r = get(px.url + "/")
    eq(r.status, 200, "GET /")
    eq(r.body, b"Ollama is running", "GET / body")
    ok(r.headers["content-type"].startswith("text/plain"), r.headers)
    eq(http("HEAD", px.url + "/").status, 200, "HEAD /")
    st = px.status()
    b = st["backends"][0]
    for k in ("name", "url", "healthy", "in_flight", "max_concurrent", "served", "failed",
              "models", "loaded"):
        ok(k in b, "status backend lacks %s: %r" % (k, b))
    eq(b["max_concurrent"], 2, "max_concurrent")
    eq(st["queue"]["max_length"], 1024, "queue max_length default")
    ok("uptime_s" in st, "uptime_s")
    eq(px.stop(), 0, "exit code after SIGTERM")


def test_proxied_headers():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)])
    # Let the proxy's own model polls (/api/tags, /api/ps) pass first: the
    # sim reports the headers of the last request it got.
    wait_until(lambda: px.status()["backends"][0]["loaded"] is not None and
               px.status()["backends"][0]["models"], what="model discovery")
    time.sleep(0.2)
    r = post(px.url + "/api/generate", GEN,
             headers={"Host": "gpu-proxy.internal:8080", "Connection": "keep-alive, X-Hop",
                      "Keep-Alive": "timeout=5", "X-Forwarded-For": "10.1.2.3",
                      "X-Custom": "kept"})
    # A Host of the proxy's own (a local name, as a loopback listener
    # takes: test_proxy_clients' DNS-rebinding case) is not the backend's:
    # what the sim got says it was rewritten.
    eq(r.status, 200, "proxied generate: %r" % r)
    eq(r.headers.get("x-backend"), "gpu0", "X-Backend")
    ok(r.json()["done"] is True, r.body)
    h = {k.lower(): v for k, v in sim.stats()["last_headers"].items()}
    eq(h.get("host"), "127.0.0.1:%d" % sim.port, "Host sent upstream")
    eq(h.get("x-forwarded-for"), "10.1.2.3, 127.0.0.1", "X-Forwarded-For")
    eq(h.get("x-custom"), "kept", "end-to-end header")
    ok("keep-alive" not in h, "hop-by-hop Keep-Alive forwarded: %r" % h)
    # A head longer than the piece the proxy gathers it in (4 KiB): a value
    # longer than that, and forty headers around it, all arrive as sent.
    many = {"X-Many-%02d" % i: ("value %d " % i) * 6 for i in range(40)}
    many["X-Big"] = "".join(chr(97 + i % 26) for i in range(6000))
    r = post(px.url + "/api/generate", GEN, headers=many)
    eq(r.status, 200, "generate with a long head: %r" % r)
    h = {k.lower(): v for k, v in sim.stats()["last_headers"].items()}
    for k, v in many.items():
        eq(h.get(k.lower()), v.strip(), "header %s sent upstream" % k)
    # /api/version is the proxy's, from the health checks: no slot taken.
    r = get(px.url + "/api/version")
    eq(r.status, 200, "version")
    ok("version" in r.json(), r.body)
    ok("x-backend" not in r.headers, "version answered by the proxy")
    # Other paths reach a backend, with X-Backend, and HEAD too (no body
    # is read whatever the head says).
    r = get(px.url + "/api/status")
    eq(r.headers.get("x-backend"), "gpu0", "X-Backend on GET")
    r = http("HEAD", px.url + "/api/status", timeout=5)
    eq(r.headers.get("x-backend"), "gpu0", "X-Backend on HEAD")
    # An error from the backend passes through as it is.
    r = post(px.url + "/api/generate", {"model": "nope", "prompt": "x"})
    eq(r.status, 404, "unknown model passes through")
    eq(r.json()["error"], "model 'nope' not found", "Ollama's text")
    px.stop()


def _send_raw(port, head, pieces):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10 * SLOW)
    try:
        s.sendall(head)
        for p in pieces:
            s.sendall(p)
    except OSError:
        pass  # the proxy stopped reading once it had answered
    try:
        return s.recv(200)
    except OSError:
        return b""
    finally:
        s.close()


def test_access_log():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)])
    eq(post(px.url + "/api/generate", GEN).status, 200, "proxied")
    eq(post(px.url + "/api/chat", {"model": "nope", "messages": []}).status, 404, "passed on")
    eq(get(px.url + "/").status, 200, "answered by the proxy")
    line = wait_until(lambda: [l for l in px.proc.output().splitlines()
                               if "POST /api/generate" in l], what="the access line")[0]
    for field in ("client=127.0.0.1", "addr=127.0.0.1", "model=llama3", "backend=gpu0",
                  "status=200", "wait_ms=", "ttfb_ms=", "upstream_ms=", "bytes=", "tries=1",
                  " ok"):
        ok(field in line, "%r not in the access line %r" % (field, line))
    ok(int(line.split("bytes=")[1].split()[0]) > 100, "bytes counted: %r" % line)
    # The sim's answer says how many tokens it generated: the line has them.
    ok(int(line.split("tokens=")[1].split()[0]) == 24, "tokens from eval_count: %r" % line)
    wait_until(lambda: [l for l in px.proc.output().splitlines()
                        if "POST /api/chat client=127.0.0.1 " in l and "model=nope" in l and
                        "status=404" in l], what="the 404 line")
    self_line = wait_until(lambda: [l for l in px.proc.output().splitlines()
                                    if "GET / client=" in l], what="the line of GET /")[0]
    for field in ("status=200", "backend=-", "bytes=17", " self"):
        ok(field in self_line, "%r not in %r" % (field, self_line))
    px.stop()


def test_access_log_json_to_a_file():
    sim = Sim()
    path = os.path.join(tmpdir(), "access-%d.jsonl" % os.getpid())
    px = Proxy([("gpu0", sim.url, 2)],
               extra='logging = { access = "%s"; format = "json"; };' % path)
    eq(post(px.url + "/api/generate", GEN).status, 200, "proxied")
    eq(post(px.url + "/api/generate", {"model": "x\n\u00e9\"", "prompt": "p"}).status, 404,
       "an odd model name")
    eq(get(px.url + "/api/tags").status, 200, "answered by the proxy")
    px.stop()
    lines = [json.loads(l) for l in open(path)]
    eq(len(lines), 3, "one line per request: %r" % lines)
    a, b, c = lines
    eq((a["method"], a["path"], a["status"], a["backend"], a["tokens"], a["tries"]),
       ("POST", "/api/generate", 200, "gpu0", 24, 1), "the proxied request")
    ok(a["ttfb_ms"] is not None and a["time"].endswith("Z"), a)
    eq(b["status"], 404, "the 404")
    eq(b["model"], "x\n\u00e9\"", "the model name survives, escaped")
    eq((c["path"], c["outcome"], c["backend"]), ("/api/tags", "self", None), "self-answered")
    ok("POST /api/generate" not in px.proc.output(), "no access line on stderr")


def test_bad_bodies():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)], extra="limits = { max_body_mb = 1; };")
    r = post(px.url + "/api/chat", "{not json")
    eq(r.status, 400, "bad JSON")
    ok("invalid JSON" in r.json()["error"], r.body)
    r = post(px.url + "/api/chat", {"messages": []})
    eq(r.status, 400, "no model")
    eq(r.json()["error"], "model is required", "no model text")
    r = post(px.url + "/v1/chat/completions", {"messages": []})
    eq(r.status, 400, "no model on /v1")
    eq(r.json()["error"]["message"], "model is required", "OpenAI error shape")
    eq(r.json()["error"]["type"], "invalid_request_error", "OpenAI error type")
    r = post(px.url + "/api/generate", "")
    eq(r.status, 400, "empty body")
    # Over the limit, with a Content-Length and chunked without one. A body
    # with a length is read and dropped, then answered in the path's shape
    # (test_proxy_clients.py); a chunked one is answered 413 in the path's
    # shape as soon as it is over, and the connection closes: the answer may
    # come before all of it is sent, read it anyway.
    big = b'{"model":"llama3","prompt":"' + b"x" * (2 << 20) + b'"}'
    head = _send_raw(px.port, b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(big), [big])
    ok(head.startswith(b"HTTP/1.1 413"), "body over the limit with Content-Length: %r" % head)
    head = _send_raw(px.port, b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n",
                     [b"10000\r\n" + b"y" * 0x10000 + b"\r\n"] * 40)
    ok(head.startswith(b"HTTP/1.1 413"), "chunked body over the limit: %r" % head)
    # The proxy keeps serving everyone else.
    eq(post(px.url + "/api/generate", GEN).status, 200, "still serving")
    eq(sim.stats()["requests"], 1, "bad requests never reached the backend")
    px.stop()


def _send_all(url, n, body):
    out = [None] * n

    def one(i):
        try:
            out[i] = post(url + "/api/generate", body, timeout=60)
        except Exception as e:
            out[i] = e
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
        time.sleep(0.02)
    for t in ts:
        t.join()
    return out


def test_queue_full_503():
    sim = Sim("--parallel", "8", "--ttft-ms", "1500", "--tokens", "2")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 2; timeout_s = 60; };")
    res = _send_all(px.url, 6, GEN)
    codes = sorted(r.status for r in res)
    eq(codes, [200, 200, 200, 503, 503, 503], "1 in flight + 2 queued, 3 refused")
    for r in res:
        if r.status == 503:
            ok(int(r.headers["retry-after"]) >= 1, "Retry-After: %r" % r.headers)
            ok("queue full" in r.json()["error"], r.body)
    eq(sim.stats()["max_in_flight"], 1, "the cap held")
    px.stop()


def test_queue_timeout_503():
    sim = Sim("--parallel", "4", "--ttft-ms", "3000", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { timeout_s = 0.5; };")
    res = _send_all(px.url, 2, GEN)
    codes = sorted(r.status for r in res)
    eq(codes, [200, 503], "the second waits 0.5 s, then 503")
    r = [r for r in res if r.status == 503][0]
    ok("retry-after" in r.headers, "Retry-After on queue timeout")
    ok("timed out" in r.json()["error"], r.body)
    eq(px.status()["queue"]["length"], 0, "queue empty")
    px.stop()


def test_max_connections():
    sim = Sim("--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 2)], extra="limits = { max_connections = 4; };")
    eq(px.status()["connections"], 1, "this status request's own connection")
    time.sleep(0.3)  # counted out by a sweep once closed
    idle = [socket.create_connection(("127.0.0.1", px.port)) for _ in range(4)]
    time.sleep(0.3)
    # The 5th waits in the kernel's backlog: connected, but not served.
    s = socket.create_connection(("127.0.0.1", px.port))
    s.settimeout(0.5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    try:
        got = s.recv(100)
    except socket.timeout:
        got = b""
    eq(got, b"", "served beyond max_connections")
    idle[0].close()
    s.settimeout(5 * SLOW)
    ok(s.recv(100).startswith(b"HTTP/1.1 200"), "served once a connection closed")
    s.close()
    for c in idle[1:]:
        c.close()
    px.stop()


def test_sighup_reload():
    a = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "1")
    b = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "1")
    slow = Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", "30", "--tokens-per-s", "20")
    px = Proxy([("slow", slow.url, 1), ("a", a.url, 1)])  # a tie goes to the first
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]),
               what="discovery")  # once both are known to have the model
    # A stream in flight on "slow", which the reload drops: it must finish there.
    import aclient, asyncio
    async def scenario():
        stream = asyncio.ensure_future(aclient.request(
            px.port, "POST", "/api/generate", body={"model": "llama3", "prompt": "x"}))
        await asyncio.sleep(0.3)
        write_proxy_conf(px.conf, [("a", a.url, 3), ("b", b.url, 2)],
                    "queue = { max_length = 7; };")
        px.proc.signal(signal.SIGHUP)
        return await stream
    r = aclient.run(scenario())
    eq(r.status, 200, "the stream on the dropped backend")
    eq(r.headers["x-backend"], "slow", "served where it started")
    ok(r.lines()[-1].get("done") is True, "finished whole: %r" % r.lines()[-1:])
    st = wait_until(lambda: (lambda s: s if len(s["backends"]) == 2 else None)(px.status()),
                    what="the reloaded fleet")
    eq([(x["name"], x["max_concurrent"]) for x in st["backends"]], [("a", 3), ("b", 2)],
       "backends after reload")
    eq(st["queue"]["max_length"], 7, "queue length after reload")
    for _ in range(6):
        eq(post(px.url + "/api/generate", GEN).status, 200, "served after reload")
    ok(b.stats()["served"] > 0, "the new backend takes requests")
    eq(slow.stats()["requests"], 1, "the dropped backend takes no new request")
    # A bad config is refused; the old one stays.
    with open(px.conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = ( { name = "a"; url = "http://x:1"; } );\n')
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in px.proc.output(), what="the refusal")
    ok("max_concurrent" in px.proc.output().split("reload refused")[1].splitlines()[0],
       "the refusal says why")
    eq(len(px.status()["backends"]), 2, "old config kept")
    eq(post(px.url + "/api/generate", GEN).status, 200, "still serving")
    eq(px.stop(), 0, "clean exit with a retired backend")


def test_check():
    good = os.path.join(SRC, "conf", "ollama-proxy.conf")
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c", good], capture_output=True,
                       text=True)
    eq(r.returncode, 0, "--check on the shipped config: " + r.stderr)
    ok("gpu0" in r.stdout and "fleet slots" in r.stdout, r.stdout)
    bad = os.path.join(tmpdir(), "bad.conf")
    with open(bad, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n { name = "a"; url = "http://h:1"; '
                'max_concurrent = 1; }\n);\ntimeouts = { conect_s = 3; };\n')
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c", bad], capture_output=True,
                       text=True)
    eq(r.returncode, 1, "--check on a typo")
    ok(r.stderr.startswith(bad + ":5:") and "conect_s" in r.stderr, r.stderr)
    with open(bad, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = ( { name = "a"; url = "ftp://h"; '
                'max_concurrent = 0; } );\n')
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c", bad], capture_output=True,
                       text=True)
    eq(r.returncode, 1, "--check on bad values")
    ok(":2:" in r.stderr, r.stderr)
    # An unreadable file says why; without -c and without either default
    # file, the message names both paths it tried.
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c", bad + ".missing"],
                       capture_output=True, text=True)
    eq(r.returncode, 1, "--check on a missing file")
    ok(r.stderr.startswith(bad + ".missing:0: cannot read the file: No such file"), r.stderr)
    if not os.path.exists("/etc/ollama-proxy/ollama-proxy.conf"):
        r = subprocess.run([binary("ollama-proxy"), "--check"], capture_output=True, text=True,
                           cwd=tmpdir())
        eq(r.returncode, 1, "no config at all")
        ok("conf/ollama-proxy.conf" in r.stderr and "/etc/ollama-proxy/ollama-proxy.conf" in
           r.stderr and tmpdir() in r.stderr, r.stderr)
    r = subprocess.run([binary("ollama-proxy"), "--bogus"], capture_output=True, text=True)
    eq(r.returncode, 2, "bad flag")
    ok("--bogus" in r.stderr, r.stderr)


def test_cmake_install_puts_the_config():
    dest = os.path.join(tmpdir(), "destdir")
    env = dict(os.environ, DESTDIR=dest)
    r = subprocess.run(["cmake", "--install", os.environ.get("OP_BUILD_DIR", "build")],
                       env=env, capture_output=True, text=True)
    eq(r.returncode, 0, "cmake --install: " + r.stderr)
    conf = os.path.join(dest, "etc/ollama-proxy/ollama-proxy.conf")
    ok(os.path.exists(conf), "the config the proxy reads by default: %s" % r.stdout)
    prefix = [d for d in ("usr/local", "usr") if os.path.exists(os.path.join(dest, d, "bin"))][0]
    for prog in ("ollama-proxy", "ollama-classify", "ollama-sim"):
        ok(os.access(os.path.join(dest, prefix, "bin", prog), os.X_OK), prog)
    r2 = subprocess.run([binary("ollama-proxy"), "--check", "-c", conf], capture_output=True,
                        text=True)
    eq(r2.returncode, 0, "the installed config passes --check: " + r2.stderr)
    with open(conf, "a") as f:
        f.write("# the admin's edit\n")
    r = subprocess.run(["cmake", "--install", os.environ.get("OP_BUILD_DIR", "build")],
                       env=env, capture_output=True, text=True)
    ok(open(conf).read().endswith("# the admin's edit\n"), "an existing config is kept")


def test_sigterm_drains():
    sim = Sim("--parallel", "4", "--ttft-ms", "800", "--tokens", "3")
    px = Proxy([("gpu0", sim.url, 1)])
    res = {}
    # Before discovery a request waits in the queue too: then "one queued"
    # could be the first request alone, the second not yet arrived.
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")

    def go(i):
        res[i] = post(px.url + "/api/generate", GEN, timeout=30)
    ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    wait_until(lambda: px.status()["queue"]["length"] == 1 and
               px.backend("gpu0")["in_flight"] == 1, what="one in flight, one queued")
    px.proc.signal(signal.SIGTERM)
    time.sleep(0.2)
    # New connections are refused while the accepted requests finish.
    try:
        socket.create_connection(("127.0.0.1", px.port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    ok(refused, "still accepting after SIGTERM")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in res.values()), [200, 200], "in-flight and queued finished")
    px.proc.p.wait(10 * SLOW)
    eq(px.proc.p.returncode, 0, "exit code")


def test_shutdown_timeout_endings():
    # At shutdown_timeout_s what still runs ends the way a client
    # understands: a stream with Ollama's in-band error line, a queued
    # request with 503 + Retry-After.
    import aclient, asyncio
    sim = Sim("--parallel", "4", "--ttft-ms", "0", "--tokens", "200", "--tokens-per-s", "20")
    px = Proxy([("gpu0", sim.url, 1)], extra="shutdown_timeout_s = 0.8;")

    async def scenario():
        stream = asyncio.ensure_future(aclient.request(
            px.port, "POST", "/api/generate", body={"model": "llama3", "prompt": "x"}))
        await asyncio.sleep(0.3)
        queued = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                        body=GEN)) for _ in range(2)]
        await asyncio.sleep(0.3)
        px.proc.signal(signal.SIGTERM)
        return await stream, await asyncio.gather(*queued)
    stream, queued = aclient.run(scenario())
    eq(stream.status, 200, "the stream had started")
    last = stream.lines()[-1]
    ok("shutting down" in last.get("error", ""), "the stream ends in-band: %r" % last)
    ok(len(stream.lines()) > 3, "tokens came before")
    for r in queued:
        eq(r.status, 503, "a queued request at the shutdown timeout: %r" % r.error)
        ok("shutting down" in r.json()["error"], r.body)
        ok(int(r.headers["retry-after"]) >= 1, r.headers)
    px.proc.p.wait(10 * SLOW)
    eq(px.proc.p.returncode, 0, "exit code")
    eq(sim.stats()["in_flight"], 0, "the backend's stream was aborted")


run(globals())
