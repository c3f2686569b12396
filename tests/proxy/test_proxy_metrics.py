"""ollama-proxy: GET /metrics in the Prometheus text format, read with a real
parser (promtool from Debian's prometheus package) and its numbers checked
against what was sent."""
import asyncio
import re
import shutil
import signal
import subprocess
import threading
import time

import aclient
from fakebackend import FakeBackend
from harness import (Proxy, Sim, eq, get, http, ok, post, run, wait_until,
                     write_proxy_conf, SLOW)

GEN = {"model": "llama3", "prompt": "hello", "stream": False}
STREAM = {"model": "llama3", "prompt": "hello"}
CHAT_V1 = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of every sample; checks each line
    is a comment or a sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        ok(m, "not a sample line: %r" % line)
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and want <= set(l))


def promtool_check(text):
    tool = shutil.which("promtool")
    ok(tool, "promtool is not installed (.ci/packages: prometheus)")
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    eq(r.returncode, 0, "promtool check metrics: %s%s" % (r.stdout, r.stderr))
    ok(not r.stdout.strip() and not r.stderr.strip(), "promtool complains: %s%s" %
       (r.stdout, r.stderr))


def test_metrics_match_what_was_sent():
    sims = [Sim("--parallel", "4", "--ttft-ms", "200", "--tokens", "7", "--tokens-per-s", "0")
            for _ in range(2)]
    px = Proxy([("gpu0", sims[0].url, 3), ("gpu1", sims[1].url, 3)])
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")

    async def burst():
        reqs = ([dict(method="POST", path="/api/generate", body=GEN, timeout=60)] * 14 +
                [dict(method="POST", path="/api/generate", body=STREAM, timeout=60)] * 6 +
                [dict(method="POST", path="/v1/chat/completions", body=CHAT_V1, timeout=60)] * 4)
        go = asyncio.ensure_future(aclient.many(px.port, reqs, 24))
        await asyncio.sleep(0.1 * SLOW)
        during = parse(get(px.url + "/metrics").text())
        return await go, during
    res, during = aclient.run(burst())
    ok(all(r.status == 200 for r in res), "all 200: %r" % [r.status for r in res])
    eq(value(during, "ollama_proxy_backend_in_flight", backend="gpu0"), 3, "in flight = cap")
    eq(value(during, "ollama_proxy_backend_in_flight", backend="gpu1"), 3, "in flight = cap")
    ok(value(during, "ollama_proxy_queue_length") >= 10, "queue length during the burst")
    m0 = parse(get(px.url + "/metrics").text())
    eq(post(px.url + "/api/generate", {"model": "nope", "prompt": "x"}).status, 404, "404")
    eq(get(px.url + "/").status, 200, "GET /")
    text = get(px.url + "/metrics").text()
    promtool_check(text)
    m = parse(text)
    for name in ("gpu0", "gpu1"):
        served = sims[int(name[-1])].stats()["served"]
        eq(value(m, "ollama_proxy_requests_total", backend=name, code="200"), served,
           "200s of %s = the sim's count" % name)
        eq(value(m, "ollama_proxy_backend_in_flight", backend=name), 0, "in flight after")
        eq(value(m, "ollama_proxy_backend_max_concurrent", backend=name), 3, "cap")
        eq(value(m, "ollama_proxy_backend_healthy", backend=name), 1, "healthy")
    # 7 tokens each: eval_count on /api, usage.completion_tokens on /v1 (the
    # sim sends usage on non-streamed answers).
    eq(value(m, "ollama_proxy_generated_tokens_total"), 24 * 7, "tokens = sum of eval_count")
    eq(value(m, "ollama_proxy_generated_tokens_total", model="llama3:latest"), 24 * 7,
       "by model, in its display form")
    eq(value(m, "ollama_proxy_requests_total", backend="none", code="404", model="other"), 1,
       "the proxy's own 404 for a model nobody lists")
    eq(value(m, "ollama_proxy_requests_total", backend="none", code="200") -
       value(m0, "ollama_proxy_requests_total", backend="none", code="200"), 2,
       "GET / and the /metrics before it, answered by the proxy")
    eq(value(m, "ollama_proxy_queue_wait_seconds_count"), 25, "every proxied request waited")
    ok(value(m, "ollama_proxy_queue_wait_seconds_bucket", le="0.005") < 25,
       "some waited in the queue")
    eq(value(m, "ollama_proxy_upstream_seconds_count"), 24, "every request that reached one")
    eq(value(m, "ollama_proxy_upstream_first_byte_seconds_count"), 24, "every head")
    ok(value(m, "ollama_proxy_upstream_first_byte_seconds_bucket", le="0.1") == 0,
       "200 ms to the first token: none under 0.1 s")
    ok(not any("127.0.0.1" in str(k) for k in m), "no client address as a label")
    px.stop()


def test_metrics_retries_cancels_and_key():
    fb = FakeBackend("ok", models=("llama3:latest", "fakeonly:latest"))
    fb.script("busy", "busy")  # Ollama's 503 twice, then an answer
    sim = Sim("--parallel", "4", "--ttft-ms", "2000", "--tokens", "1")
    px = Proxy([("fake", fb.url, 1), ("gpu0", sim.url, 4)],
               extra='auth = { keys = ( { name = "a"; key = "ka"; admin = true; } ); '
                     'metrics_key_required = true; };\nhealth = { fail_after = 100; };')
    eq(get(px.url + "/metrics").status, 401, "metrics_key_required")
    hdr = {"Authorization": "Bearer ka"}
    # To gpu0 (its 2 s first token), and gone after 0.5 s: a cancel.
    aclient.run(aclient.request(px.port, "POST", "/api/generate", body=GEN, headers=hdr,
                                abort_after=0.5))
    wait_until(lambda: "client-gone" in px.proc.output(), what="the cancel")
    # Only the fake has this model, and answers 503 twice: two retries, then 200.
    wait_until(lambda: "fakeonly:latest" in str(px.status(headers=hdr)), what="discovery")
    r = post(px.url + "/api/chat", {"model": "fakeonly", "messages": [], "stream": False},
             headers=hdr)
    eq(r.status, 200, "served after the 503s: %r" % r)
    m = parse(get(px.url + "/metrics", headers=hdr).text())
    eq(value(m, "ollama_proxy_cancelled_total"), 1, "cancelled")
    eq(value(m, "ollama_proxy_retries_total"), 2, "retries")
    px.stop()


def test_metrics_open_to_scrapes_only():
    """Issue 18, item 3: the key exemption of /metrics is for GET and HEAD;
    any other method needs a key and is never proxied to a backend."""
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)],
               extra='auth = { keys = ( { name = "a"; key = "ka"; admin = true; } ); };')
    eq(get(px.url + "/metrics").status, 200, "GET without a key")
    eq(http("HEAD", px.url + "/metrics").status, 200, "HEAD without a key")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = http(method, px.url + "/metrics", body=b'{"model":"llama3"}')
        eq(r.status, 401, method + " /metrics without a key")
        r = http(method, px.url + "/metrics", body=b"{}",
                 headers={"Authorization": "Bearer ka"})
        eq(r.status, 405, method + " /metrics with a key")
        ok("x-backend" not in r.headers, method + " /metrics reached a backend")
    px.stop()
    sim.stop()


def test_monitoring_config_and_alerts():
    """docker/monitoring: promtool checks the scrape config and the alert
    rules, and promtool's rule tests show each alert fires when it should;
    a broken rule is caught (the check can fail)."""
    import os
    import tempfile
    from harness import SRC
    tool = shutil.which("promtool")
    ok(tool, "promtool is not installed (.ci/packages: prometheus)")
    mon = os.path.join(SRC, "docker", "monitoring")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run([tool] + args, cwd=mon, capture_output=True, text=True)
        eq(r.returncode, 0, "promtool %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
    # Every metric an alert uses is one the proxy exports.
    sim = Sim("--ttft-ms", "0", "--tokens", "1")
    px = Proxy([("gpu0", sim.url, 2)])
    eq(get(px.url + "/").status, 200, "a request, so that requests_total has a row")
    names = {n for (n, _l) in parse(get(px.url + "/metrics").text())}
    rules = open(os.path.join(mon, "alerts.yml")).read()
    used = set(re.findall(r"ollama_proxy_[a-z_]+", rules))
    ok(used and used <= names, "alerts use metrics the proxy lacks: %r" % (used - names))
    px.stop()
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "alerts.yml")
        with open(bad, "w") as f:
            f.write(rules.replace("ollama_proxy_backend_healthy == 0",
                                  "ollama_proxy_backend_healthy == == 0"))
        r = subprocess.run([tool, "check", "rules", bad], capture_output=True, text=True)
        ok(r.returncode != 0, "a broken rule passed promtool")


def test_metrics_adaptive_cap_and_its_cause():
    """An adaptive backend (ceiling 16, a sim whose own parallelism is 4):
    max_concurrent is the ceiling, effective_cap the cap it found, and
    ollama_proxy_backend_cap_cause a state set naming why the cap last
    changed, the same cause /proxy/status gives, with the time it did."""
    sim = Sim("--parallel", "4", "--ttft-ms", "50", "--tokens", "1", "--tokens-per-s", "0")
    px = Proxy([("gpu", sim.url, 16, "adaptive = true;"), ("fixed", sim.url, 2)])
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), what="discovery")
    causes = ("start", "probe_up", "probe_down", "grew", "shrank", "back")

    def check(want_cause=None):
        """(status cause, metrics) once two /proxy/status reads around one
        /metrics read agree: the controller may change between them."""
        for _ in range(50):
            before = px.backend("gpu")
            text = get(px.url + "/metrics").text()
            after = px.backend("gpu")
            if before["adaptive"] == after["adaptive"] and \
                    before["effective_cap"] == after["effective_cap"]:
                break
        else:
            raise AssertionError("the cap never held still for one /metrics read")
        promtool_check(text)
        m = parse(text)
        eq(after["max_concurrent"], 16, "/proxy/status: max_concurrent is the ceiling")
        eq(value(m, "ollama_proxy_backend_max_concurrent", backend="gpu"), 16, "the ceiling")
        eq(value(m, "ollama_proxy_backend_max_concurrent", backend="fixed"), 2, "a fixed cap")
        eq(value(m, "ollama_proxy_backend_effective_cap", backend="gpu"), after["effective_cap"],
           "the cap in force")
        eq(value(m, "ollama_proxy_backend_effective_cap", backend="fixed"), 2, "fixed: the cap")
        got = {c: value(m, "ollama_proxy_backend_cap_cause", backend="gpu", cause=c)
               for c in causes}
        eq(sorted(got.values()), [0] * 5 + [1], "one cause at 1: %r" % got)
        cause = [c for c, v in got.items() if v == 1][0]
        eq(cause, after["adaptive"]["cause"], "the cause /proxy/status gives")
        ok(after["adaptive"]["reason"], "and in words: %r" % after["adaptive"])
        if want_cause:
            eq(cause, want_cause, "cause")
        ok(not any(n == "ollama_proxy_backend_cap_cause" and ("backend", "fixed") in l
                   for (n, l) in m), "no cause for a fixed backend")
        stamp = value(m, "ollama_proxy_backend_cap_changed_timestamp_seconds", backend="gpu")
        ok(abs(stamp - time.time()) < 120 * SLOW, "changed at %s, now %s" % (stamp, time.time()))
        return cause, after["effective_cap"]

    eq(check("start"), ("start", 1), "a fresh adaptive backend starts at 1")

    async def load():
        reqs = [dict(method="POST", path="/api/generate",
                     body=dict(GEN, model="llama3"), timeout=60 * SLOW)] * 400
        return await aclient.many(px.port, reqs, 40)
    res = aclient.run(load())
    ok(all(r.status == 200 for r in res), "all 200")
    cause, cap = check()
    ok(cause != "start" and cap > 1, "the cap moved: %s at %d" % (cause, cap))
    px.stop()
    sim.stop()


def exact(samples, name, **labels):
    """The sample of NAME with exactly LABELS, or None."""
    return samples.get((name, frozenset(labels.items())))


def test_metrics_retired_backend_in_flight_until_it_drains():
    """gpu0 moves to another server by a reload (its url changes) while it
    runs 2 requests on the first: the new gpu0 has its own in-flight series
    (0) and the retired one keeps its 2 under retired="true" (one name,
    two series, no duplicate: promtool and Prometheus take it), and the
    model's runner likewise, until they end; then the retired series go."""
    old, new = [Sim("--parallel", "8", "--ttft-ms", "0", "--tokens", str(int(80 * SLOW)),
                    "--tokens-per-s", "20") for _ in range(2)]
    px = Proxy([("gpu0", old.url, 2)])
    wait_until(lambda: px.status()["backends"][0]["models"], what="discovery")
    out = []

    def one():
        out.append(post(px.url + "/api/generate", GEN, timeout=120 * SLOW))
    ts = [threading.Thread(target=one) for _ in range(2)]
    for t in ts:
        t.start()
    wait_until(lambda: px.status()["backends"][0]["in_flight"] == 2, what="2 running")
    k = px.proc.output().count("reloaded ")
    write_proxy_conf(px.conf, [("gpu0", new.url, 2)])
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: px.proc.output().count("reloaded ") > k, what="the reload")
    text = get(px.url + "/metrics").text()
    eq(old.stats()["served"], 0, "the reload came while the 2 ran")
    promtool_check(text)
    lines = [l.rsplit(" ", 1)[0] for l in text.splitlines() if l and not l.startswith("#")]
    eq(sorted(set(l for l in lines if lines.count(l) > 1)), [], "no series twice")
    m = parse(text)
    eq(exact(m, "ollama_proxy_backend_in_flight", backend="gpu0"), 0, "the new gpu0")
    eq(exact(m, "ollama_proxy_backend_in_flight", backend="gpu0", retired="true"), 2,
       "the retired gpu0 until its 2 end")
    eq(exact(m, "ollama_proxy_runner_in_flight", backend="gpu0", model="llama3:latest",
             retired="true"), 2, "its runner's")
    eq(value(m, "ollama_proxy_backend_max_concurrent"), 2, "one cap: the new gpu0's")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in out), [200] * 2, "both served: %r" % out)
    # A client may read its reply a moment before the proxy lets go of it.
    text = wait_until(lambda: (lambda t: "retired=\"true\"} " not in t and t)(
        get(px.url + "/metrics").text()), what="the retired series gone once it drained")
    promtool_check(text)
    eq(px.stop(), 0, "clean exit (ASan: no leak)")
    old.stop()
    new.stop()


run(globals())
