"""API keys: --api-key KEY, else api_key in the -c file, else $OLLAMA_API_KEY,
is sent as "Authorization: Bearer KEY" on every request; a 401 or 403 stops
the run at once with a message saying the key was refused (no per-item
retries); the key is never printed, and leaves the process's command line."""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402

GOOD = "s3cret-Good-Key-4711"
WRONG = "wr0ng-Key-0815"
FORBIDDEN = "n0t-allowed-Key-42"
SECRETS = (GOOD, WRONG, FORBIDDEN)


def key_server():
    """Answers a label for the good key, 403 for the forbidden one, 401 for
    anything else (no key included), like the proxy with auth.keys."""
    def handle(headers, doc):
        auth = headers.get("Authorization")
        if auth == "Bearer " + GOOD:
            return 200, {}, C.chat_answer("bug")
        if auth == "Bearer " + FORBIDDEN:
            return 403, {}, b'{"error":"forbidden"}'
        return 401, {}, b'{"error":"unauthorized"}'
    return C.FakeOllama(handle)


def items(n):
    return C.write_file("auth%d.txt" % n, "".join("item %d\n" % i for i in range(n)))


def no_secret(r):
    for s in SECRETS:
        ok(s not in r.err and s not in r.out, "the key %s printed: %r" % (s, r))


def test_key_sent_on_every_request():
    srv = key_server()
    txt = items(40)
    out = C.fresh("auth-ok.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "-j", 8,
                    "--url", srv.url, "--api-key", GOOD])
    eq(r.rc, 0, "exit %r" % r)
    eq(len(C.results(out)), 40, "every item labelled")
    eq(len(srv.requests), 40, "one request per item")
    for h, _ in srv.requests:
        eq(h.get_all("Authorization"), ["Bearer " + GOOD], "the header, once")
    no_secret(r)
    srv.stop()


def test_key_from_env_and_config():
    srv = key_server()
    txt = items(3)
    # $OLLAMA_API_KEY when there is no flag.
    out = C.fresh("auth-env.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "--url", srv.url],
                   env={"OLLAMA_API_KEY": GOOD})
    eq(r.rc, 0, "env key %r" % r)
    no_secret(r)
    # api_key in the config file wins over the environment ...
    conf = C.write_file("auth.conf", 'api_key = "%s";\n' % GOOD)
    out = C.fresh("auth-conf.jsonl")
    r = C.classify(["-c", conf, "-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "--url", srv.url],
                   env={"OLLAMA_API_KEY": WRONG})
    eq(r.rc, 0, "config key %r" % r)
    no_secret(r)
    # ... and the flag over both; "" means no key at all.
    out = C.fresh("auth-flag.jsonl")
    r = C.classify(["-c", conf, "-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "--url", srv.url,
                    "--api-key", ""], env={"OLLAMA_API_KEY": GOOD})
    eq(r.rc, 1, "no key %r" % r)
    ok("wants an API key" in r.err, r.err)
    eq(srv.requests[-1][0].get("Authorization"), None, "no header sent")
    no_secret(r)
    srv.stop()


def test_refused_key_fails_fast():
    srv = key_server()
    txt = items(200)
    for key, status in ((WRONG, 401), (FORBIDDEN, 403)):
        out = C.fresh("auth-bad.jsonl")
        r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "-j", 10, "--url",
                        srv.url, "--api-key", key], timeout=20)
        eq(r.rc, 1, "exit %r" % r)
        ok(r.secs < 3 * C.SLOW, "failed fast: %.2fs" % r.secs)
        eq(r.err.count("the API key was refused"), 1, "one message: %r" % r)
        ok("HTTP %d" % status in r.err, r.err)
        sent = [h for h, _ in srv.requests if h.get("Authorization") == "Bearer " + key]
        ok(len(sent) <= 10, "no per-item retries: %d requests" % len(sent))
        ok(re.search(r"retries: 0\n", r.err), r.err[-500:])
        ok(not os.path.exists(out), "nothing recorded: the empty results file it made is removed")
        no_secret(r)
    srv.stop()


def test_key_never_shown():
    """Not in --help, not in a bad-value error, not on the command line
    that ps shows while the run goes."""
    r = C.classify(["--help"])
    ok("--api-key KEY" in r.out and "OLLAMA_API_KEY" in r.out, r.out)
    r = C.classify(["--help"], env={"OLLAMA_API_KEY": GOOD})
    no_secret(r)
    r = C.classify(["-i", "x", "-o", C.fresh("x.jsonl"), "-m", "m", "-l", "a,b", "--api-key",
                    WRONG + "\r\nX-Evil: 1"])
    eq(r.rc, 2, "a key with CR LF %r" % r)
    ok("--api-key" in r.err and len(r.err.strip().splitlines()) == 1, r.err)
    no_secret(r)
    # A server that holds the first request until we have read the
    # classifier's command line.
    release = threading.Event()

    def handle(headers, doc):
        release.wait(20)
        return 200, {}, C.chat_answer("bug")

    srv = C.FakeOllama(handle)
    p = C.start(["-i", items(1), "-o", C.fresh("ps.jsonl"), "-m", "m", "-l", "bug,praise", "--url",
                 srv.url, "--api-key", GOOD])
    deadline = time.time() + 10 * C.SLOW
    while not srv.requests and time.time() < deadline:
        time.sleep(0.02)
    with open("/proc/%d/cmdline" % p.pid, "rb") as f:
        cmdline = f.read()
    release.set()
    eq(p.wait(20 * C.SLOW), 0, "exit")
    ok(srv.requests, "the request came")
    ok(GOOD.encode() not in cmdline and b"--api-key" in cmdline, cmdline)
    srv.stop()


run(globals())
