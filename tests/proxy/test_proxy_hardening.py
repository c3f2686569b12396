"""ollama-proxy reads a request as Ollama will (issue 18, items 1 and 2).

The backends here are tests/lib/gobackend: Go's net/http and gin with
Ollama's routes and JSON tags, so they route on the percent-decoded path and
decode bodies as encoding/json does (member names without regard to case,
U+017F and U+212A folding to s and k, escapes in names, the last duplicate
winning). Their counters say what really arrived and what really ran.

1. A non-admin key must not reach a model-management route by spelling its
   path otherwise (percent-encoding, an encoded '/', dot segments, a
   trailing or doubled slash): the proxy refuses (403, or 400 for what it
   will not make unambiguous) and no backend counts an admin hit.
2. A body the proxy reads as an unload but Ollama reads as a generation
   ("Prompt", "\\u0050rompt", "me\\u017f\\u017fages", duplicates) must not
   escape the caps and the queue; a body with two spellings of "model" must
   be routed, logged and counted as the model the backend runs. Where the
   issue lets the proxy refuse a duplicated member with 400 instead, a test
   accepts that (and then nothing may run)."""
import hashlib
import json
import os
import re
import time
from collections import Counter

import aclient
import gobackend
from gobackend import GoBackend
from harness import Proxy, eq, get, http, ok, run, tmpdir, wait_until, SLOW

gobackend.require()  # exit 77 (skipped) without go or gin

ADMIN, USER = "k-admin-0123", "k-user-4567"
KEYS = ('auth = { keys = ( { name = "ops"; key = "%s"; admin = true; },\n'
        '                  { name = "user"; key = "%s"; admin = false; } ); };' % (ADMIN, USER))


def bearer(k):
    return {"Authorization": "Bearer " + k}


def discovered(px, headers=None):
    wait_until(lambda: all(b["models"] for b in px.status(headers=headers)["backends"]),
               timeout=10, what="every backend's models known")


def stop(*procs):
    for p in procs:
        p.stop()


def hits(gs):
    """What each backend saw that a test may blame: admin hits (with the raw
    request lines) and requests no route took (redirects, 404, 405)."""
    return [{"admin_requests": s["admin_requests"], "unrouted": s["unrouted"]}
            for s in (g.stats() for g in gs)]


# ---- 1. admin routes under other spellings ---------------------------------

BLOB = b"a blob"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
PULL = {"model": "evil", "stream": False}

# (method, target, body): each is an admin route for Ollama, or becomes one
# after a redirect; a non-admin key must get 400 or 403 from the proxy.
TRICKS = [
    ("POST", "/api/%70ull", PULL),
    ("POST", "/api%2Fpull", PULL),
    ("POST", "/%61pi/pull", PULL),
    ("POST", "/api/%70%75%6C%6c", PULL),
    ("POST", "/api/%70ull?insecure=true", PULL),
    ("POST", "/api/%70ush", {"model": "llama3", "stream": False}),
    ("POST", "/api%2Fpush", {"model": "llama3", "stream": False}),
    ("POST", "/%61pi/push", {"model": "llama3", "stream": False}),
    ("POST", "/api/%63reate", {"model": "evil", "from": "llama3", "stream": False}),
    ("POST", "/api%2Fcreate", {"model": "evil", "from": "llama3", "stream": False}),
    ("POST", "/%61pi/create", {"model": "evil", "from": "llama3", "stream": False}),
    ("POST", "/api/%63opy", {"source": "llama3", "destination": "evil"}),
    ("POST", "/api%2Fcopy", {"source": "llama3", "destination": "evil"}),
    ("POST", "/%61pi/copy", {"source": "llama3", "destination": "evil"}),
    ("DELETE", "/api/%64elete", {"model": "llama3"}),
    ("DELETE", "/api%2Fdelete", {"model": "llama3"}),
    ("DELETE", "/%61pi/delete", {"model": "llama3"}),
    ("POST", "/api/%62lobs/" + DIGEST, BLOB),
    ("POST", "/api%2Fblobs/" + DIGEST, BLOB),
    ("POST", "/%61pi/blobs/" + DIGEST, BLOB),
    ("HEAD", "/api/%62lobs/" + DIGEST, None),
    ("POST", "/api/pull/", PULL),
    ("POST", "/api//pull", PULL),
    ("POST", "//api/pull", PULL),
    ("POST", "/api/./pull", PULL),
    ("POST", "/api/x/../pull", PULL),
    ("POST", "/api/%2e/pull", PULL),
    ("DELETE", "/api/delete/", {"model": "llama3"}),
    ("DELETE", "/api/./delete", {"model": "llama3"}),
]

# Spellings Ollama does not route to an admin handler: any answer will do,
# as long as no backend counts an admin hit.
HARMLESS = [
    ("POST", "/api/%2570ull", PULL),   # decodes once, to a literal "%70"
    ("POST", "/api/Pull", PULL),       # gin routes are case-sensitive
    ("POST", "/API/pull", PULL),
]


def admin_fleet():
    gs = [GoBackend(models="llama3", gen_ms=50) for _ in range(2)]
    px = Proxy([("gpu0", gs[0].url, 2), ("gpu1", gs[1].url, 2)], extra=KEYS)
    discovered(px, bearer(ADMIN))
    return gs, px


def test_admin_routes_counted_when_reached():
    """The control: the plain path is refused to the user key and fanned out
    to every backend for the admin key, and the backends count that."""
    gs, px = admin_fleet()
    r = http("POST", px.url + "/api/pull", PULL, headers=bearer(USER))
    eq(r.status, 403, "POST /api/pull with a non-admin key: %r" % r)
    ok(all(s["admin_hits"] == 0 for s in (g.stats() for g in gs)), "refused: nothing reached")
    r = http("POST", px.url + "/api/pull", PULL, headers=bearer(ADMIN))
    eq(r.status, 200, "POST /api/pull with the admin key: %r" % r)
    for g in gs:
        s = g.stats()
        eq(s["admin_hits"], 1, "the admin pull reached every backend: %r" % s)
        eq(s["admin_requests"], ["POST /api/pull"], "as it was sent")
    stop(px, *gs)


def test_admin_routes_under_other_spellings_refused():
    gs, px = admin_fleet()
    bad = []
    for method, target, body in TRICKS + HARMLESS:
        for g in gs:
            g.reset()
        r = http(method, px.url + target, body, headers=bearer(USER))
        seen = hits(gs)
        if (method, target, body) in HARMLESS:  # any answer, no admin hit
            refused = True
            reached = [s for s in seen if s["admin_requests"]]
        else:  # refused by the proxy: nothing of it reached a backend
            refused = r.status in (400, 403)
            reached = [s for s in seen if s["admin_requests"] or s["unrouted"]]
        if not refused or reached:
            bad.append("%s %s -> %d %r from %s; backends saw %r" %
                       (method, target, r.status, r.body[:60],
                        r.headers.get("x-backend", "the proxy"), seen))
        # A user request that got through may have changed the fleet (a
        # pull or create adds "evil", a delete drops llama3): start afresh.
        if reached:
            for g in gs:
                http("POST", g.url + "/api/pull", {"model": "llama3", "stream": False})
                http("DELETE", g.url + "/api/delete", {"model": "evil"})
    ok(not bad, "%d of %d spellings of an admin route got past the proxy:\n  %s" %
       (len(bad), len(TRICKS) + len(HARMLESS), "\n  ".join(bad)))
    stop(px, *gs)


def test_encoded_inference_paths_still_work():
    """What is harmless stays usable, and is what it decodes to: an encoded
    /api/tags lists the fleet; an encoded /api/generate is routed by its
    model like /api/generate (backend A has only "a", B only "b")."""
    ga, gb = GoBackend(models="a", gen_ms=50), GoBackend(models="b", gen_ms=50)
    log = os.path.join(tmpdir(), "access-enc-%d.jsonl" % os.getpid())
    px = Proxy([("A", ga.url, 2), ("B", gb.url, 2)],
               extra=KEYS + '\nlogging = { access = "%s"; format = "json"; };' % log)
    discovered(px, bearer(ADMIN))
    r = http("GET", px.url + "/api/%74ags", headers=bearer(USER))
    eq(r.status, 200, "GET /api/%%74ags: %r" % r)
    names = {m["name"] for m in r.json()["models"]}
    ok(names and names <= {"a:latest", "b:latest"}, "the model list: %r" % names)
    sent = [("/api/%67enerate", {"model": "b", "prompt": "hi", "stream": False}),
            ("/%61pi/generate", {"model": "b", "prompt": "hi", "stream": False}),
            ("/api/%63hat", {"model": "b", "stream": False,
                             "messages": [{"role": "user", "content": "hi"}]})] * 2
    bad = []
    for target, body in sent:
        r = http("POST", px.url + target, body, headers=bearer(USER))
        if r.status != 200 or r.headers.get("x-backend") != "B" or r.json().get("model") != "b":
            bad.append("%s -> %d via %s: %r" % (target, r.status, r.headers.get("x-backend"),
                                               r.body[:80]))
    ok(not bad, "encoded inference paths not routed by their model:\n  " + "\n  ".join(bad))
    eq(ga.stats()["generations_total"], 0, "nothing ran on A, which has no b")
    eq(gb.stats()["generations"].get("b:latest", 0), len(sent), "all ran on B")
    stop(px, ga, gb)
    lines = [json.loads(l) for l in open(log)]
    gen = [l for l in lines if l["method"] == "POST" and l["status"] == 200]
    eq(len(gen), len(sent), "one access line per request: %r" % gen)
    ok(all(l["model"] in ("b", "b:latest") and l["backend"] == "B" for l in gen),
       "logged as model b on B: %r" % [(l["path"], l["model"], l["backend"]) for l in gen])


# ---- 2. bodies as encoding/json reads them ---------------------------------

MSG = '[{"role":"user","content":"hi"}]'

# (path, raw body, duplicated): Ollama generates for each of these (a prompt
# or messages under another spelling), so each must take a slot like any
# generation. DUPLICATED: a routed member appears twice; the proxy may
# refuse the body with 400 instead.
LOOKALIKES = [
    ("/api/generate", r'{"model":"llama3","keep_alive":0,"Prompt":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","keep_alive":0,"PROMPT":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","keep_alive":0,"promPt":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","keep_alive":0,"\u0050rompt":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","keep_alive":0,"pro\u006dpt":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","keep_alive":"0s","Prompt":"hi"}', 0),
    ("/api/generate", r'{"model":"llama3","prompt":"","Prompt":"hi","keep_alive":0}', 1),
    ("/api/generate", r'{"model":"llama3","prompt":"","prompt":"hi","keep_alive":0}', 1),
    ("/api/chat", r'{"model":"llama3","keep_alive":0,"Messages":%s}' % MSG, 0),
    ("/api/chat", r'{"model":"llama3","keep_alive":0,"me\u017f\u017fages":%s}' % MSG, 0),
    ("/api/chat", '{"model":"llama3","keep_alive":0,"me\u017f\u017fages":%s}' % MSG, 0),
    ("/api/chat", r'{"model":"llama3","keep_alive":0,"messages":[],"MESSAGES":%s}' % MSG, 1),
]

# Bodies Ollama reads as an unload: the proxy must treat them as one too
# (every backend, no slot) or, where a member is duplicated, refuse.
UNLOADS = [
    ("/api/generate", r'{"model":"llama3","keep_alive":0}', 0),  # the control
    ("/api/generate", r'{"model":"llama3","KEEP_ALIVE":0}', 0),
    ("/api/generate", r'{"model":"llama3","\u212Aeep_alive":0}', 0),
    ("/api/generate", '{"model":"llama3","\u212Aeep_alive":0}', 0),
    ("/api/generate", r'{"model":"llama3","prompt":"hi","Prompt":"","keep_alive":0}', 1),
    ("/api/chat", r'{"model":"llama3","Keep_Alive":0}', 0),
    ("/api/chat", r'{"model":"llama3","messages":%s,"messages":[],"keep_alive":0}' % MSG, 1),
]

N = 20


def real_requests(px):
    """ollama_proxy_requests_total summed over the backends (not "none",
    the proxy's own answers and fan-outs)."""
    total = 0
    for line in get(px.url + "/metrics").text().splitlines():
        m = re.match(r'ollama_proxy_requests_total\{(.*)\} (\S+)$', line)
        if m and 'backend="none"' not in m.group(1):
            total += float(m.group(2))
    return total


def settled(value, want, timeout=2.0):
    """VALUE() once it equals WANT, or its last reading after TIMEOUT (a
    request's record may land just after its last byte)."""
    deadline = time.time() + timeout * SLOW
    v = value()
    while v != want and time.time() < deadline:
        time.sleep(0.05)
        v = value()
    return v


def capped_fleet():
    gs = [GoBackend(models="llama3", gen_ms=150) for _ in range(2)]
    px = Proxy([("gpu0", gs[0].url, 1), ("gpu1", gs[1].url, 1)])
    discovered(px)
    return gs, px


def burst(px, path, body, n=N):
    reqs = [dict(method="POST", path=path, body=body.encode(), timeout=120,
                 headers={"Content-Type": "application/json"})] * n
    return aclient.run(aclient.many(px.port, reqs, n))


def done_reason(body):
    """done_reason of an answer: its last NDJSON line, or its one object."""
    lines = [l for l in body.decode("utf-8", "replace").splitlines() if l.strip()]
    try:
        return json.loads(lines[-1]).get("done_reason") if lines else None
    except ValueError:
        return None


def test_unload_lookalikes_take_a_slot():
    """20 at once of each body, caps of 1: never more than one in flight on
    a backend, every 200 a real generation, counted by the proxy as one."""
    gs, px = capped_fleet()
    bad = []
    for path, body, dup in LOOKALIKES:
        for g in gs:
            g.reset()
        before = real_requests(px)
        res = burst(px, path, body)
        st = [g.stats() for g in gs]
        n200 = sum(r.status == 200 for r in res)
        why = []
        allowed = (200, 400) if dup else (200,)
        statuses = sorted({r.status for r in res})
        if any(s not in allowed for s in statuses):
            why.append("statuses %r (%r)" % (statuses, [r.body[:80] for r in res
                                                        if r.status not in allowed][:1]))
        maxes = [s["max_in_flight"] for s in st]
        if max(maxes) > 1:
            why.append("max in flight per backend %r with caps of 1" % maxes)
        gens = sum(s["generations_total"] for s in st)
        if gens != n200:
            why.append("%d generations ran for %d answers of 200" % (gens, n200))
        if any(s["unloads"] for s in st):
            why.append("unloads reached the backends: %r" % [s["unloads"] for s in st])
        reasons = {done_reason(r.body) for r in res if r.status == 200}
        if reasons - {"stop"}:
            why.append("done_reason of the 200s: %r" % reasons)
        counted = settled(lambda: real_requests(px) - before, n200)
        if counted != n200:
            why.append("the proxy counted %d requests to a backend for %d generations" %
                       (counted, n200))
        if why:
            bad.append("%s %s: %s" % (path, body, "; ".join(why)))
    ok(not bad, "%d of %d bodies escaped the caps or were miscounted:\n  %s" %
       (len(bad), len(LOOKALIKES), "\n  ".join(bad)))
    stop(px, *gs)


def test_unloads_as_go_reads_them():
    """A body Ollama reads as an unload is one for the proxy too: it reaches
    every backend (a fan-out, as the plain spelling does) and runs nothing."""
    gs, px = capped_fleet()
    bad = []
    for path, body, dup in UNLOADS:
        for g in gs:
            g.reset()
        r = http("POST", px.url + path, body.encode(),
                 headers={"Content-Type": "application/json"})
        st = [g.stats() for g in gs]
        gens = sum(s["generations_total"] + s["loads"] for s in st)
        unloads = [s["unloads"] for s in st]
        if dup and r.status == 400 and gens == 0 and not any(unloads):
            continue
        if r.status != 200 or done_reason(r.body) != "unload" or unloads != [1, 1] or gens:
            bad.append("%s %s -> %d %r; unloads per backend %r, generations+loads %d" %
                       (path, body, r.status, r.body[:80], unloads, gens))
    ok(not bad, "%d of %d unloads not read as Ollama reads them:\n  %s" %
       (len(bad), len(UNLOADS), "\n  ".join(bad)))
    stop(px, *gs)


# (path, raw body, the model Ollama runs, duplicated)
MODELS = [
    ("/api/generate", r'{"model":"a","Model":"b","prompt":"hi","stream":false}', "b", 1),
    ("/api/generate", r'{"model":"b","Model":"a","prompt":"hi","stream":false}', "a", 1),
    ("/api/generate", r'{"model":"a","model":"b","prompt":"hi","stream":false}', "b", 1),
    ("/api/generate", r'{"Model":"b","prompt":"hi","stream":false}', "b", 0),
    ("/api/generate", r'{"MODEL":"b","prompt":"hi","stream":false}', "b", 0),
    ("/api/generate", r'{"\u006dodel":"b","prompt":"hi","stream":false}', "b", 0),
    ("/api/chat", r'{"model":"a","Model":"b","messages":%s,"stream":false}' % MSG, "b", 1),
    ("/api/chat", r'{"mODEL":"b","messages":%s,"stream":false}' % MSG, "b", 0),
    ("/api/embed", r'{"model":"a","MODEL":"b","input":"hi"}', "b", 1),
]


def test_model_as_go_reads_it():
    """Backend A has only "a", B only "b": a request must land where the
    model Ollama decodes is, succeed, and be logged as that model."""
    ga, gb = GoBackend(models="a", gen_ms=50), GoBackend(models="b", gen_ms=50)
    log = os.path.join(tmpdir(), "access-model-%d.jsonl" % os.getpid())
    px = Proxy([("A", ga.url, 2), ("B", gb.url, 2)],
               extra='logging = { access = "%s"; format = "json"; };' % log)
    discovered(px)
    where = {"a": ("A", ga), "b": ("B", gb)}
    bad, expect_log = [], []
    for path, body, model, dup in MODELS:
        for g in (ga, gb):
            g.reset()
        r = http("POST", px.url + path, body.encode(),
                 headers={"Content-Type": "application/json"})
        ran = {n: where[n][1].stats() for n in where}
        work = {n: s["generations_total"] + s["embeds"] for n, s in ran.items()}
        if dup and r.status == 400 and not any(work.values()):
            continue
        name, g = where[model]
        other = "a" if model == "b" else "b"
        if (r.status != 200 or r.headers.get("x-backend") != name or
                work[model] != 1 or work[other] != 0 or r.json().get("model") != model):
            bad.append("%s %s -> %d via %s %r; work done per backend %r (Ollama runs %s)" %
                       (path, body, r.status, r.headers.get("x-backend"), r.body[:80], work,
                        model))
        else:
            expect_log.append((path, model, name))
    stop(px, ga, gb)
    lines = [json.loads(l) for l in open(log)]
    got = [(l["path"], l["model"].split(":")[0] if l["model"] else None, l["backend"])
           for l in lines if l["method"] == "POST"]
    ok(not bad, "%d of %d bodies not routed to the model Ollama runs:\n  %s" %
       (len(bad), len(MODELS), "\n  ".join(bad)))
    missing = Counter(expect_log) - Counter(got)
    ok(not missing, "access log: %r missing from %r" % (sorted(missing), got))


run(globals())
