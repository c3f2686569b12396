"""Faults: 500s, 503 busy and connection resets are retried until every
item is labelled; a wrong model fails fast (after the item's quick retries:
test_classify_404.py has the whole rule), once, with Ollama's message;
answers outside the labels are retried once, then recorded as errors; an
endpoint that is not there ends in connect errors; Retry-After is honoured,
up to the backoff's cap of 30 s; a TLS failure stops the run at once; a run
stopped by a fatal error says so honestly in its summary."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402


def test_500_503_resets_retried():
    # 16 slots of 40 ms: 400 requests/s, less than -j 100 sends, so requests
    # wait and past 32 waiting get 503 busy even when the classifier runs
    # slowly (ASan, a busy machine); with 5 ms a slow sender never filled it.
    sim = C.harness.Sim("--parallel", 16, "--ttft-ms", 40, "--tokens-per-s", 0,
                        "--fail-rate", 0.15, "--reset-rate", 0.05, "--max-waiting", 32,
                        "--seed", 7)
    out = C.fresh("faults.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 100, "--retries", 8),
                   timeout=120)
    eq(r.rc, 0, "exit %r" % r)
    rows = C.results(out)
    items = C.bundled()
    eq(len(rows), len(items), "one line per item")
    C.check_all_labelled_once(rows, items)
    C.check_label_words(rows, items)
    retried = [x for x in rows if x["attempts"] > 1]
    ok(len(retried) > 100, "only %d items needed a retry" % len(retried))
    st = sim.stats()
    ok(st["failed"] > 0 and st["rejected"] > 0, "sim gave 500s and 503s: %r" % st)
    # libcurl itself re-sends, once, a request whose reused connection was
    # reset before any answer: those are the only requests not counted.
    attempts = sum(x["attempts"] for x in rows)
    ok(attempts <= st["requests"] <= attempts + st["resets"],
       "attempts %d, sim requests %d, resets %d" % (attempts, st["requests"], st["resets"]))
    m = re.search(r"retries: (\d+) \((.*)\)", r.err)
    ok(m and "http_5xx" in m.group(2), "retries in the summary: %s" % r.err[-600:])
    sim.stop()


def test_wrong_model_fails_fast():
    sim = C.fast_sim()
    out = C.fresh("wrong.jsonl")
    args = C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 50)
    args[args.index("-m") + 1] = "nosuch:7b"
    r = C.classify(args, timeout=20)
    eq(r.rc, 1, "exit %r" % r)
    ok(r.secs < 5 * C.SLOW, "took %.1fs" % r.secs)
    eq(r.err.count("model 'nosuch:7b' not found (the same answer to all 6 tries)"), 1,
       "Ollama's message once in %s" % r.err)
    # Each of the 50 jobs tries at most 1 + --retries (5) times on the short
    # 404 schedule before the first of them stops the run.
    ok(sim.stats()["requests"] <= 50 * 6, "stopped after the first 404s: %r" % sim.stats())
    ok(not os.path.exists(out), "nothing recorded: the empty results file it made is removed")
    sim.stop()


def test_off_label_retried_then_error():
    sim = C.fast_sim("--off-label-rate", 1.0)
    out = C.fresh("offlabel.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    eq(r.rc, 1, "exit %r" % r)
    rows = C.results(out)
    eq(len(rows), 1525, "one line per item")
    for x in rows:
        ok(x["label"] is None and x["attempts"] == 2 and "outside the labels" in x["error"],
           "row %r" % x)
    ok(re.search(r"errors: off_label 1525", r.err), r.err[-600:])
    eq(sim.stats()["requests"], 2 * 1525, "each item asked twice")
    sim.stop()


def test_off_label_retry_succeeds():
    sim = C.fast_sim("--off-label-rate", 0.2, "--seed", 3)
    out = C.fresh("offlabel2.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    rows = C.results(out)
    C.check_label_words(rows, C.bundled())
    good = [x for x in rows if x["label"] is not None and x["attempts"] == 2]
    bad = [x for x in rows if x["label"] is None]
    ok(len(good) > 150, "retries after an off-label answer that worked: %d" % len(good))
    ok(len(bad) < 150, "two off-label answers in a row: %d" % len(bad))
    eq(r.rc, 1 if bad else 0, "exit %r" % r)
    sim.stop()


def test_nothing_listening():
    """Nothing at the URL: retried with backoff, then one message and a stop,
    not an error line for every item."""
    sim = C.fast_sim()
    url = sim.url
    sim.stop()  # the port is now closed
    out = C.fresh("refused.jsonl")
    r = C.classify(C.std_args(url, C.ITEMS_JSONL, out, "--retries", 2), timeout=30)
    eq(r.rc, 1, "exit %r" % r)
    eq(r.err.count("is it running?"), 1, "one message: %s" % r.err[-1000:])
    ok("Failed to connect" in r.err, r.err[-1000:])
    ok(r.secs >= 0.7, "backoff between tries: %.2fs" % r.secs)
    ok(r.secs < 10 * C.SLOW, "took %.2fs" % r.secs)
    ok(not os.path.exists(out), "nothing recorded: the empty results file it made is removed")
    n = int(re.search(r"retries: (\d+)", r.err).group(1))
    ok(200 <= n <= 400, "200 jobs retried up to twice each, then a stop: %d" % n)


def test_connect_errors_after_replies_are_item_errors():
    """Once the endpoint has answered, a connect failure is about the item:
    retried, then recorded as an error, and the run goes on."""
    # A server that answers once and then closes its port.
    import socket
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]

    def serve_once():
        conn, _ = lsock.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        reply = json.dumps({"message": {"role": "assistant",
                            "content": '{"label":"bug"}'}}).encode()
        lsock.close()  # later connections are refused
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(reply) + reply)
        conn.close()

    t = threading.Thread(target=serve_once, daemon=True)
    t.start()
    txt = C.fresh("three.txt")
    with open(txt, "w") as f:
        f.write("one\ntwo\nthree\n")
    out = C.fresh("refused2.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "-j", 1,
                    "--url", "127.0.0.1:%d" % port, "--retries", 1], timeout=30)
    eq(r.rc, 1, "exit %r" % r)
    rows = C.results(out)
    eq([x["id"] for x in rows], [1, 2, 3], "every item recorded")
    eq(rows[0]["label"], "bug", "first item")
    for x in rows[1:]:
        ok(x["label"] is None and x["attempts"] == 2 and x["error"].startswith("connect"),
           "row %r" % x)


def test_retry_after_honoured():
    """A tiny server: 429 with Retry-After: 1 the first time, then a label."""
    import http.server
    import threading
    times = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            times.append(time.time())
            if len(times) == 1:
                body, status = b'{"error":"slow down"}', 429
            else:
                body, status = json.dumps({"message": {"role": "assistant",
                                          "content": '{"label":"b"}'}}).encode(), 200
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    txt = C.fresh("one.txt")
    with open(txt, "w") as f:
        f.write("x\n")
    out = C.fresh("ra.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "a,b",
                    "--url", "http://127.0.0.1:%d" % srv.server_address[1]])
    srv.shutdown()
    eq(r.rc, 0, "exit %r" % r)
    eq(len(times), 2, "requests")
    ok(times[1] - times[0] >= 0.95, "waited %.2fs" % (times[1] - times[0]))
    eq([(x["label"], x["attempts"]) for x in C.results(out)], [("b", 2)], "result")


def test_huge_retry_after_capped():
    """503 with Retry-After: 99999999999 once per item, then a label: the
    wait is capped at the backoff's cap (30 s), the run ends."""
    asked = {}

    def handle(headers, doc):
        text = C.user_text(doc)
        asked[text] = asked.get(text, 0) + 1
        if asked[text] == 1:
            return 503, {"Retry-After": "99999999999"}, b'{"error":"server busy"}'
        return 200, {}, C.chat_answer("b")

    srv = C.FakeOllama(handle)
    txt = C.write_file("ra3.txt", "one\ntwo\nthree\n")
    out = C.fresh("ra-huge.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url],
                   timeout=45)
    srv.stop()
    eq(r.rc, 0, "exit %r" % r)
    ok(29 <= r.secs < 30 + 10 * C.SLOW, "waited the cap, 30 s: %.1fs" % r.secs)
    eq(asked, {"one": 2, "two": 2, "three": 2}, "each item asked twice")
    eq(sorted((x["id"], x["label"], x["attempts"]) for x in C.results(out)),
       [(1, "b", 2), (2, "b", 2), (3, "b", 2)], "results")
    ok(re.search(r"retries: 3 \(http_5xx 3\)", r.err), r.err[-600:])


def test_tls_to_plain_http_fails_fast():
    """An https:// URL to a plain-HTTP server: the handshake cannot work,
    so the first failure stops the run: no per-item retries."""
    sim = C.fast_sim()
    out = C.fresh("tls.jsonl")
    r = C.classify(C.std_args("https://127.0.0.1:%d" % sim.port, C.ITEMS_JSONL, out, "-j", 20),
                   timeout=30)
    eq(r.rc, 1, "exit %r" % r)
    ok(r.secs < 3 * C.SLOW, "failed fast: %.2fs" % r.secs)
    eq(r.err.count("TLS handshake failed"), 1, "one clear message: %s" % r.err[-1000:])
    ok("https://127.0.0.1:%d" % sim.port in r.err and "http://" in r.err, r.err[-1000:])
    ok(re.search(r"retries: 0\n", r.err), "no retries: %s" % r.err[-600:])
    ok(re.search(r"errors: tls \d+ \(\d+ fatal", r.err), r.err[-600:])
    ok(not os.path.exists(out), "nothing recorded: the empty results file it made is removed")
    sim.stop()


def test_fatal_summary_honest():
    """A wrong model: the summary counts the fatal error, says the run
    stopped and how many items are left, and prints no latencies of zero.
    A run where no reply held a label gives the latencies of its replies."""
    sim = C.fast_sim()
    out = C.fresh("wrong2.jsonl")
    args = C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 50)
    args[args.index("-m") + 1] = "nosuch:7b"
    r = C.classify(args, timeout=20)
    eq(r.rc, 1, "exit %r" % r)
    summary = r.err[r.err.index("summary:"):]
    ok("errors: none" not in summary, summary)
    ok(re.search(r"errors: http_404 (\d+) \(\1 fatal", summary), summary)
    ok(re.search(r"summary: 0 items \(0 labelled, 0 errors, \d+ fatal\)", summary), summary)
    ok("stopped: at the first fatal error" in summary, summary)
    ok("; 1525 items not done" in summary, summary)
    ok("p50" not in summary and "latency ms: no successful request" in summary, summary)
    sim.stop()
    sim = C.fast_sim("--off-label-rate", 1.0)
    txt = C.write_file("two.txt", "a bug\nsome praise\n")
    r = C.classify(C.std_args(sim.url, txt, C.fresh("off.jsonl")))
    eq(r.rc, 1, "exit %r" % r)
    summary = r.err[r.err.index("summary:"):]
    ok("summary: 2 items (0 labelled, 2 errors)" in summary, summary)
    # The latencies are those of the four replies (two items asked twice),
    # which came, though none held a label.
    ok(re.search(r"latency ms: p50 \d+, p95 \d+, p99 \d+ \(4 requests with a reply\)",
                 summary), summary)
    ok("errors: off_label 2\n" in summary and "stopped" not in summary, summary)
    sim.stop()


run(globals())
