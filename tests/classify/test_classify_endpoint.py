"""--url and $OLLAMA_HOST: read as Ollama's envconfig.Host() reads
OLLAMA_HOST (blanks trimmed, a bare IPv6 address, http:// without a port
is port 80, an invalid port in $OLLAMA_HOST falls back to the default with
a warning); a value that is still unusable, or a bad --url, is bad usage:
one line naming it, exit 2, no request, no results file."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402


def base(out, txt):
    return ["-i", txt, "-o", out, "-m", C.MODEL, "-l", "bug,praise", "--retries", 0]


def test_bad_url_is_bad_usage():
    txt = C.write_file("u.txt", "a bug\n" * 50)
    for url in ("127.0.0.1:99999", "http://127.0.0.1:1x", "127.0.0.1:", "ftp://127.0.0.1:80",
                "http://a b:80", "127.0.0.1:0", "http://[::1:80"):
        out = C.fresh("u.jsonl")
        r = C.classify(base(out, txt) + ["--url", url])
        eq(r.rc, 2, "--url %r: %r" % (url, r))
        lines = r.err.strip().splitlines()
        eq(len(lines), 1, "one line for %r: %r" % (url, r.err))
        ok(lines[0].startswith("ollama-classify: bad value for --url: '%s'" % url), lines[0])
        ok(not os.path.exists(out), "no results for %r" % url)
    for host in ("http://a b", "ftp://x", "127.0.0.1:0"):
        out = C.fresh("u.jsonl")
        r = C.classify(base(out, txt), env={"OLLAMA_HOST": host})
        eq(r.rc, 2, "OLLAMA_HOST=%r: %r" % (host, r))
        ok("bad value for $OLLAMA_HOST: '%s'" % host in r.err, r.err)
        ok(not os.path.exists(out), "no results for %r" % host)


def test_ollama_host_read_as_ollama_does():
    sim = C.fast_sim()
    txt = C.write_file("h.txt", "a bug\n")
    # Blanks around the value are trimmed, as Ollama's strings.TrimSpace.
    for host in ("127.0.0.1:%d " % sim.port, "\t http://127.0.0.1:%d/\n" % sim.port):
        out = C.fresh("h.jsonl")
        r = C.classify(base(out, txt), env={"OLLAMA_HOST": host})
        eq(r.rc, 0, "OLLAMA_HOST=%r: %r" % (host, r))
        eq(C.results(out)[0]["label"], "bug", "label")
    # Where it points, by the endpoint the fatal connect error names.
    for host, url, warned in (("127.0.0.2:99999", "http://127.0.0.2:11434", True),
                              ("http://127.0.0.2:1x", "http://127.0.0.2:80", True),
                              ("http://127.0.0.2", "http://127.0.0.2:80", False),
                              ("::1", "http://[::1]:11434", False),
                              ("[::1]", "http://[::1]:11434", False)):
        r = C.classify(base(C.fresh("h.jsonl"), txt), env={"OLLAMA_HOST": host})
        ok(r.rc in (0, 1), "OLLAMA_HOST=%r: %r" % (host, r))
        ok(("ollama-classify: %s: " % url) in r.err or r.rc == 0, "%r -> %s: %s" % (host, url, r.err))
        eq("warning: $OLLAMA_HOST '%s': invalid port" % host in r.err, warned, r.err)
        ok("URL using bad/illegal format" not in r.err, r.err)
    sim.stop()


run(globals())
