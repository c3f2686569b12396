"""The 404 rule (issue 20): a 404 is fatal only when the endpoint itself says
the model exists nowhere. Through ollama-proxy, a backend's 404 (the reply
carries X-Backend) is retried like a 5xx: a GPU added by SIGHUP mid-run
that lacks the model must not stop the job. The proxy's own 404 (no
X-Backend, from an endpoint that has sent X-Backend before) stops the run at
once; a plain Ollama's 404 (no X-Backend ever) stops it once the item's
retries all got it."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import Proxy, Sim, eq, ok, run, wait_until, write_proxy_conf  # noqa: E402

NOT_FOUND = b'{"error":"model \'m\' not found"}'


def test_gpu_added_mid_run_without_the_model():
    """Two sims behind a real proxy; the second, which has only phi3:mini,
    joins by SIGHUP while 1,525 items run. Until the proxy has polled its
    tags it may answer the classifier's requests with 404: those are
    retried, and every item ends labelled."""
    a = Sim("--parallel", 8, "--ttft-ms", 20, "--tokens-per-s", 0)
    b = Sim("--parallel", 8, "--ttft-ms", 0, "--tokens-per-s", 0, models="phi3:mini")
    extra = "models = { refresh_s = 1; };"
    px = Proxy([("gpu0", a.url, 4)], extra)
    out = C.fresh("added.jsonl")
    p = C.start(C.std_args(px.url, C.ITEMS_JSONL, out, "-j", 64))
    wait_until(lambda: C.count_lines(out) >= 150 or p.poll() is not None, timeout=30,
               what="the run under way")
    ok(p.poll() is None, "the run was still going when the GPU was added")
    write_proxy_conf(px.conf, [("gpu0", a.url, 4), ("gpu1", b.url, 4)], extra)
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: len(px.status()["backends"]) == 2, what="the reloaded fleet")
    rc = p.wait(timeout=120 * C.SLOW)
    err = C.log_of(p)
    eq(rc, 0, "exit status; stderr:\n%s" % err[-2000:])
    rows = C.results(out)
    items = C.bundled()
    eq(len(rows), len(items), "one line per item")
    C.check_all_labelled_once(rows, items)
    C.check_label_words(rows, items)
    # The proxy counts what it passed on from the new GPU; each of those
    # 404s reached the classifier, which retried it (no item ended in error).
    metrics = C.harness.get(px.url + "/metrics").text()
    passed = sum(int(v) for v in re.findall(
        r'ollama_proxy_requests_total\{backend="gpu1",model="[^"]*",code="404"\} (\d+)', metrics))
    m = re.search(r"retries: \d+ \((.*)\)", err)
    k = re.search(r"http_404 (\d+)", m.group(1)) if m else None
    retried = int(k.group(1)) if k else 0
    print("404s passed on from the new GPU: %d; retried by the classifier: %d" % (passed, retried))
    eq(retried, passed, "every 404 of the new GPU retried")
    px.stop()


def three_items():
    return C.write_file("three.txt", "one\ntwo\nthree\n")


def test_backend_404_through_proxy_retried():
    """A backend's 404 passed on by a proxy (X-Backend set): retried like a
    5xx with the usual backoff; the item gets its label."""
    tries = {}

    def handle(headers, doc):
        text = C.user_text(doc)
        tries[text] = tries.get(text, 0) + 1
        if tries[text] <= 2:
            return 404, {"X-Backend": "gpu9"}, NOT_FOUND
        return 200, {"X-Backend": "gpu0"}, C.chat_answer("b")

    srv = C.FakeOllama(handle)
    out = C.fresh("via.jsonl")
    r = C.classify(["-i", three_items(), "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url],
                   timeout=30)
    srv.stop()
    eq(r.rc, 0, "exit %r" % r)
    eq(sorted((x["id"], x["label"], x["attempts"]) for x in C.results(out)),
       [(1, "b", 3), (2, "b", 3), (3, "b", 3)], "labelled on the third try")
    ok(re.search(r"retries: 6 \(http_404 6\)", r.err), r.err[-600:])
    ok(r.secs >= 0.7, "the 5xx backoff (0.25-0.5 s, then 0.5-1 s): %.2fs" % r.secs)


def test_backend_404_after_retries_is_an_item_error():
    """A backend that keeps answering 404 through the proxy: each item ends
    in an error line after its retries; the run is not stopped."""
    srv = C.FakeOllama(lambda h, d: (404, {"X-Backend": "gpu9"}, NOT_FOUND))
    out = C.fresh("via-err.jsonl")
    r = C.classify(["-i", three_items(), "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url,
                    "--retries", 1], timeout=30)
    srv.stop()
    eq(r.rc, 1, "exit %r" % r)
    rows = C.results(out)
    eq(len(rows), 3, "an error line for every item: %r" % rows)
    for x in rows:
        ok(x["label"] is None and x["attempts"] == 2 and "not found" in x["error"], x)
    ok("fatal" not in r.err and "stopped" not in r.err, r.err[-600:])
    ok(re.search(r"errors: http_404 3\n", r.err), r.err[-600:])


def test_proxy_own_404_fatal_at_once():
    """The endpoint has shown it is ollama-proxy (X-Backend on a reply);
    then a 404 without X-Backend is the proxy's own: no backend has the
    model. One request, no retry, a clear stop."""
    n = [0]

    def handle(headers, doc):
        n[0] += 1
        if n[0] == 1:
            return 200, {"X-Backend": "gpu0"}, C.chat_answer("a")
        return 404, {}, NOT_FOUND

    srv = C.FakeOllama(handle)
    out = C.fresh("own.jsonl")
    r = C.classify(["-i", three_items(), "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url,
                    "-j", 1], timeout=30)
    srv.stop()
    eq(r.rc, 1, "exit %r" % r)
    eq(n[0], 2, "requests: the label, then one 404")
    eq(r.err.count("no backend has this model"), 1, r.err[-800:])
    eq([(x["id"], x["label"]) for x in C.results(out)], [(1, "a")], "results")


def test_plain_404_passing_is_retried():
    """A plain endpoint (no X-Backend) that answers 404 twice, then a label
    (another kind of balancer in front of servers that differ): the item's
    retries find the model, quickly."""
    tries = {}

    def handle(headers, doc):
        text = C.user_text(doc)
        tries[text] = tries.get(text, 0) + 1
        return (404, {}, NOT_FOUND) if tries[text] <= 2 else (200, {}, C.chat_answer("a"))

    srv = C.FakeOllama(handle)
    out = C.fresh("plain-pass.jsonl")
    r = C.classify(["-i", three_items(), "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url],
                   timeout=30)
    srv.stop()
    eq(r.rc, 0, "exit %r" % r)
    eq(sorted((x["id"], x["label"], x["attempts"]) for x in C.results(out)),
       [(1, "a", 3), (2, "a", 3), (3, "a", 3)], "results")
    ok(r.secs < 3 * C.SLOW, "short backoff for a 404: %.2fs" % r.secs)


def test_plain_404_every_try_is_fatal():
    """A plain endpoint that answers 404 to every try: fatal once the
    item's retries all got it, said once, and quickly."""
    srv = C.FakeOllama(lambda h, d: (404, {}, NOT_FOUND))
    out = C.fresh("plain-fatal.jsonl")
    t0 = time.time()
    r = C.classify(["-i", three_items(), "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url,
                    "-j", 1, "--retries", 3], timeout=30)
    srv.stop()
    eq(r.rc, 1, "exit %r" % r)
    eq(len(srv.requests), 4, "the first item tried 4 times, then the stop")
    eq(r.err.count("model 'm' not found (the same answer to all 4 tries)"), 1, r.err[-800:])
    ok(time.time() - t0 < 3 * C.SLOW, "quick: %.2fs" % r.secs)
    ok(not os.path.exists(out), "nothing recorded: the empty results file it made is removed")


run(globals())
