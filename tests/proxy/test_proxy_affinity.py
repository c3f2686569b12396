"""ollama-proxy: conversations stay warm (CONTRACT.md, "Conversations stay
warm"), tested as properties against real sims:

- stickiness: every turn of a conversation (a session header, or the start
  of the conversation with affinity = "prefix") goes to one backend, the
  same through two proxies of one config, and its cache is re-used there
  (the sim's prompt counts); least-loaded routing (affinity "off") moves
  them, which is the control that shows the check can fail;
- bounded load: a flood of one conversation spreads (balance_factor 1),
  where an unbounded hash keeps it on one backend;
- holds: a turn waits at most affinity_wait_ms for its backend, then takes
  a free slot elsewhere; a request behind it is not held up;
- beside a batch at low priority on runners with slots to spare (proxy/
  README.md): each turn still goes to its backend and finds its cache there
  (the batch's identical prompts keep to the batch's own slots); with no
  slot to spare the batch takes a waiting conversation's slot: the control;
- caps per runner: an embedding model (by /api/show, its name says
  nothing) never has more than 1 request in flight on a backend, the
  others take the rest; model_caps, top level and per backend;
- num_ctx: pinned, 0 reloads after warm-up, and the body sent is the
  client's with only num_ctx set (byte for byte); strip removes it; pass:
  at most one reload per backend with two clients' num_ctx mixed;
- all of it visible in /proxy/status and /metrics.
Margins are wide: time is judged only where a hold is (hundreds of ms)."""
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fakebackend import FakeBackend
from harness import Proxy, Sim, eq, get, ok, post, run, wait_until, SLOW

GPU = ("--gpu", "default", "--time-scale", "50", "--tokens", "4")


def ready(px):
    """PX once every backend has said what it has (a request before that
    goes to whichever answered first, as late binding wants)."""
    wait_until(lambda: all(b["models"] for b in px.status()["backends"]), timeout=10,
               what="discovery")
    return px


def start(backends, extra=""):
    return ready(Proxy(backends, extra=extra))


def chat_turns(url, sessions, turns, header="x-session-id", path="/api/chat", extra=None,
               conc=2, key=None):
    """Run SESSIONS conversations of TURNS turns, CONC side by side; each
    turn sends the whole conversation. Returns {session: [(backend, reply)]}.
    Two at once on two backends never trips the bounded load (a backend
    with both is at 2 <= ceil(1.5 x 3 / 2)): each stays on its key's
    backend."""
    out = {}

    def one(sid):
        # Each conversation starts with its own words: a new one then never
        # takes another's free slot for a shared system prompt (llama-server
        # picks the slot sharing over a tenth of the prompt; the sim does
        # too), which evicted a conversation's cache when the first turn of
        # the next one came in the pause between two of its turns.
        system = "Session %s. " % sid + "You are a coding agent. " * 20
        msgs = [{"role": "system", "content": system}]
        seen = []
        for t in range(turns):
            msgs.append({"role": "user", "content": "session %s turn %d: %s" % (sid, t, "y" * 2000)})
            body = {"model": "llama3", "messages": msgs, "stream": False}
            body.update(extra or {})
            hdr = {header: sid} if header else {}
            if key:
                hdr["Authorization"] = "Bearer " + key
            r = post(url + path, body, headers=hdr, timeout=60)
            eq(r.status, 200, "turn %d of %s: %r" % (t, sid, r))
            d = r.json()
            text = d["message"]["content"] if "message" in d else d["choices"][0]["message"]["content"]
            seen.append((r.headers.get("x-backend"), d))
            msgs.append({"role": "assistant", "content": text})
        out[sid] = seen

    with ThreadPoolExecutor(max_workers=conc) as ex:
        list(ex.map(one, sessions))
    return out


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def processed(sims):
    return sum(s.stats()["prompt_processed"] for s in sims)


def prompt_sizes(got):
    """What the conversations of GOT hold at their last turn: each token of
    it processed once is the least a run can process."""
    return sum(t[-1][1]["prompt_eval_count"] for t in got.values())


def test_session_sticky_and_warm():
    # 4 slots a backend: a slot for each conversation running at once, as
    # llama-server needs to keep a conversation's cache (one per slot).
    sims = [Sim("--parallel", "4", *GPU) for _ in range(2)]
    conf = 'routing = { affinity_wait_ms = 10000; };'
    px = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)], extra=conf)
    sessions = ["s%02d" % i for i in range(16)]
    got = chat_turns(px.url, sessions[:4], 6)
    warm, least = processed(sims), prompt_sizes(got)
    ok(warm < 1.15 * least, "each prompt token processed about once: %d for %d" % (warm, least))
    got.update(chat_turns(px.url, sessions[4:8], 6))
    got.update(chat_turns(px.url, sessions[8:16], 1, conc=1))
    where = {}
    for sid, turns in got.items():
        backends = {b for b, _ in turns}
        eq(len(backends), 1, "session %s stays on one backend: %r" % (sid, [b for b, _ in turns]))
        where[sid] = backends.pop()
    ok(set(where.values()) == {"a", "b"}, "sessions spread over both: %r" % where)
    m = get(px.url + "/metrics").text()
    n = 8 * 6 + 8
    eq(metric(m, "ollama_proxy_affinity_total", result="hit"), n, "every turn a hit")
    eq(metric(m, "ollama_proxy_affinity_total", result="miss"), 0, "no miss")
    runners = {b["name"]: b["runners"] for b in px.status()["backends"]}
    eq(sum(r["affinity"]["hits"] for rs in runners.values() for r in rs), n, "/proxy/status too")
    ok(all(r["model"] == "llama3:latest" for rs in runners.values() for r in rs), runners)

    # A second proxy of the same config agrees, sharing nothing.
    px2 = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)], extra=conf)
    again = chat_turns(px2.url, sessions, 1, conc=1)
    eq({s: t[0][0] for s, t in again.items()}, where, "two proxies, one answer")
    px2.stop()
    px.stop()

    # The control: least-loaded routing moves conversations (how much that
    # costs is tests/bench/bench_affinity.py's to measure). One turn at a
    # time on an idle fleet whose sims both have the model loaded, ties go
    # round: every turn moves. (Six side by side moved none in one run: the
    # turns of each fell into step with the same backend.)
    for s in sims:
        s.reset()
    off = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)],
                extra='routing = { affinity = "off"; };')
    got = chat_turns(off.url, ["c%d" % i for i in range(3)], 6, conc=1)
    paths = {s: [b for b, _ in t] for s, t in got.items()}
    ok([s for s, p in paths.items() if len(set(p)) > 1],
       "without affinity some conversation moves: %r" % paths)
    print("prompt tokens processed: affinity %d (at least %d), least loaded %d (at least %d)" %
          (warm, least, processed(sims), prompt_sizes(got)))
    off.stop()


def test_prefix_without_headers():
    sims = [Sim("--parallel", "2", *GPU) for _ in range(2)]
    px = start([("a", sims[0].url, 2), ("b", sims[1].url, 2)],
               extra='routing = { affinity = "prefix"; affinity_wait_ms = 10000; };')
    for path in ("/v1/chat/completions", "/api/chat"):
        got = chat_turns(px.url, ["p%d" % i for i in range(4)], 5, header=None, path=path)
        got.update(chat_turns(px.url, ["q%d" % i for i in range(12)], 1, header=None, path=path,
                              conc=1))
        for sid, turns in got.items():
            eq(len({b for b, _ in turns}), 1, "%s %s: one backend %r" % (path, sid, turns))
        ok({t[0][0] for t in got.values()} == {"a", "b"}, "conversations spread")
    # /api/generate: system and the start of the prompt.
    base = "Summarise the following log. " + "z" * 2500
    seen = set()
    for i in range(5):
        r = post(px.url + "/api/generate", {"model": "llama3", "system": "terse",
                                            "prompt": base + " more %d" % i, "stream": False})
        eq(r.status, 200, r)
        seen.add(r.headers["x-backend"])
    eq(len(seen), 1, "one prompt start, one backend")
    px.stop()


def test_bounded_load_spreads_a_flood():
    def flood(factor):
        sims = [Sim("--parallel", "4", "--ttft-ms", "300", "--tokens", "1", "--tokens-per-s", "0")
                for _ in range(2)]
        px = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)],
                   extra='routing = { balance_factor = %s; affinity_wait_ms = 30000; };' % factor)
        body = {"model": "llama3", "prompt": "hi", "stream": False}
        with ThreadPoolExecutor(max_workers=12) as ex:
            res = list(ex.map(lambda _: post(px.url + "/api/generate", body,
                                             headers={"x-session-id": "one"}, timeout=60),
                              range(12)))
        ok(all(r.status == 200 for r in res), res)
        served = [s.stats()["served"] for s in sims]
        m = get(px.url + "/metrics").text()
        px.stop()
        for s in sims:
            s.stop()
        return served, m

    served, m = flood("1.0")
    ok(min(served) >= 4, "factor 1: a flood of one key spreads: %r" % served)
    ok(metric(m, "ollama_proxy_affinity_total", result="miss") >= 4, "the spread ones are misses")
    served, _ = flood("0")  # the control: an unbounded hash keeps it home
    ok(min(served) == 0, "no bound: all on the key's backend: %r" % served)


def test_hold_then_spill_and_no_head_of_line():
    sims = [Sim("--parallel", "1", "--ttft-ms", "50", "--tokens", "20", "--tokens-per-s", "10")
            for _ in range(2)]
    px = start([("a", sims[0].url, 1), ("b", sims[1].url, 1)],
               extra='routing = { affinity_wait_ms = 400; balance_factor = 0; };')
    long = {"model": "llama3", "prompt": "long", "stream": False, "options": {"num_predict": 15}}
    short = {"model": "llama3", "prompt": "short", "stream": False, "options": {"num_predict": 1}}
    res = {}

    def send(name, body, hdr, delay):
        time.sleep(delay)
        t0 = time.monotonic()
        r = post(px.url + "/api/generate", body, headers=hdr, timeout=60)
        res[name] = (r.status, r.headers.get("x-backend"), time.monotonic() - t0)

    ts = [threading.Thread(target=send, args=a) for a in (
        ("first", long, {"x-session-id": "k"}, 0),        # on k's backend for ~1.5 s
        ("held", short, {"x-session-id": "k"}, 0.15),     # held for it, then elsewhere
        ("other", short, {}, 0.25))]                      # not held up by it
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    home = res["first"][1]
    ok(all(v[0] == 200 for v in res.values()), res)
    ok(res["other"][1] != home and res["other"][2] < 0.35 * SLOW + 0.2,
       "the unkeyed request took the free backend at once: %r" % res)
    ok(res["held"][1] != home, "past its hold it went elsewhere: %r" % res)
    ok(0.3 < res["held"][2] < 1.2 * SLOW, "it waited about affinity_wait_ms (400): %r" % res)
    m = get(px.url + "/metrics").text()
    eq(metric(m, "ollama_proxy_affinity_total", result="miss"), 1, "one miss")
    px.stop()


BATCH_BESIDE = """auth = { keys = (
  { name = "agents"; key = "k-agents"; },
  { name = "batch"; key = "k-batch"; priority = "low"; },
  { name = "ops"; key = "k-ops"; admin = true; }
); };
routing = { affinity_wait_ms = 10000; balance_factor = 0; };
"""
# balance_factor = 0: bounded load would rightly send a turn to the other
# backend at a moment when every batch request there has just ended and the
# batch's threads have not sent the next yet (a loaded test machine's
# pause: 16 threads keep only 8 waiting), which this test is not about
# (test_bounded_load_spreads_a_flood is).
BATCH_PROMPT = "Label this support ticket: billing, account, bug or other. " * 2


def agents_beside_batch(parallel, *sim_flags):
    """4 conversations of 5 turns through 2 backends capped at 4, a batch
    key at low priority keeping 16 requests (the same prompt) waiting
    beside them; the sims have PARALLEL slots (and SIM_FLAGS). Returns
    (prompt tokens the agents processed at most, the least they could, the
    turns' backends)."""
    sims = [Sim("--parallel", str(parallel), *(sim_flags + GPU)) for _ in range(2)]
    px = Proxy([("a", sims[0].url, 4), ("b", sims[1].url, 4)], extra=BATCH_BESIDE)
    wait_until(lambda: all(b["models"] for b in px.status(
        headers={"Authorization": "Bearer k-ops"})["backends"]), timeout=10, what="discovery")
    r = post(px.url + "/api/generate", {"model": "llama3", "prompt": BATCH_PROMPT, "stream": False},
             headers={"Authorization": "Bearer k-batch"}, timeout=60)
    eq(r.status, 200, "the batch's prompt")
    batch_prompt = r.json()["prompt_eval_count"]
    stop, done, bad, lock = threading.Event(), [1], [], threading.Lock()

    def flood():  # an assertion here would end only its thread: failures are kept
        body = {"model": "llama3", "prompt": BATCH_PROMPT, "stream": False}
        while not stop.is_set():
            r = post(px.url + "/api/generate", body, headers={"Authorization": "Bearer k-batch"},
                     timeout=120)
            with lock:
                done[0] += 1
                if r.status != 200:
                    bad.append(r)
    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(s.stats()["models"].get("llama3:latest", {}).get("in_flight", 0)
                           for s in sims) == 8, timeout=20, what="the batch fills every slot")
    got = chat_turns(px.url, ["s%d" % i for i in range(4)], 5, conc=4, key="k-agents")
    stop.set()
    for t in threads:
        t.join()
    eq(bad, [], "every batch request served")
    # The batch's share of what the sims processed, at most: a token a
    # request where its slot kept the prompt, the whole prompt where it did
    # not (each slot's first, and each slot it took from a conversation).
    batch = done[0] + (2 * parallel + 4 * 5) * batch_prompt
    agents = max(0, processed(sims) - batch)
    print("%d slots a sim: the agents processed at most %d prompt tokens (their last prompts: %d), "
          "the batch at most %d for %d requests" % (parallel, agents, prompt_sizes(got), batch,
                                                    done[0]))
    px.stop()
    for s in sims:
        s.stop()
    return agents, prompt_sizes(got), {sid: [b for b, _ in t] for sid, t in got.items()}


def test_beside_a_low_priority_batch_turns_keep_their_cache():
    agents, least, paths = agents_beside_batch(8)
    ok(all(len(set(p)) == 1 for p in paths.values()), "every turn on its backend: %r" % paths)
    ok(agents < 1.3 * least, "each conversation processed about once beside the batch: "
       "at most %d for %d" % (agents, least))
    # The control: runners with no slot to spare (4, the cap). While a
    # conversation's tool runs its slot is free, the batch takes it, and
    # the next turn processes the whole conversation again.
    agents0, least0, paths0 = agents_beside_batch(4)
    ok(all(len(set(p)) == 1 for p in paths0.values()), "turns still held for their backend")
    ok(agents0 > 1.8 * least0, "without slots to spare the caches are lost: %d for %d" %
       (agents0, least0))
    # With llama-server's host-memory prompt cache (Ollama's llama-server
    # runs with it: --cache-ram 8 GiB by default), the slot the batch takes
    # first saves its conversation in RAM, and the next turn brings it back:
    # no slots to spare needed.
    agents1, least1, paths1 = agents_beside_batch(4, "--cache-ram", "100000")
    ok(all(len(set(p)) == 1 for p in paths1.values()), "every turn on its backend: %r" % paths1)
    ok(agents1 < 1.3 * least1, "with the host-memory cache each conversation is processed about "
       "once: at most %d for %d" % (agents1, least1))


def sample_status(px, stop, seen):
    while not stop.is_set():
        for b in px.status()["backends"]:
            seen["backend"] = max(seen.get("backend", 0), b["in_flight"])
            for rn in b["runners"]:
                k = (b["name"], rn["model"])
                seen[k] = max(seen.get(k, 0), rn["in_flight"])
        time.sleep(0.01)


def test_caps_per_runner():
    models = "llama3,nomic-embed-text,bge-m3=embed"
    sims = [Sim("--parallel", "4", "--ttft-ms", "200", "--tokens", "2", "--tokens-per-s", "20",
                models=models) for _ in range(2)]
    px = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)])

    def runner(name, model):
        for b in px.status()["backends"]:
            for rn in b["runners"]:
                if b["name"] == name and rn["model"] == model:
                    return rn
    # bge-m3's name says nothing: /api/show's capabilities do.
    wait_until(lambda: all((runner(n, "bge-m3:latest") or {}).get("cap") == 1 for n in "ab"),
               timeout=10, what="bge-m3 known as an embedding model")
    eq(runner("a", "nomic-embed-text:latest")["cap"], 1, "by name too")
    eq(runner("a", "bge-m3:latest")["embedding"], True, "embedding")
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=sample_status, args=(px, stop, seen))
    watcher.start()
    reqs = [("/api/embed", {"model": "bge-m3", "input": "text %d" % i}) for i in range(16)] + \
           [("/api/generate", {"model": "llama3", "prompt": "p%d" % i, "stream": False})
            for i in range(8)]
    with ThreadPoolExecutor(max_workers=24) as ex:
        res = list(ex.map(lambda pb: post(px.url + pb[0], pb[1], timeout=60), reqs))
    stop.set()
    watcher.join()
    ok(all(r.status == 200 for r in res), [r for r in res if r.status != 200][:3])
    for n in "ab":
        ok(seen.get((n, "bge-m3:latest"), 0) == 1, "never above 1 in its runner: %r" % seen)
        ok(sims["ab".index(n)].stats()["models"]["bge-m3:latest"]["served"] >= 4,
           "both backends embed: %r" % [s.stats()["models"]["bge-m3:latest"]["served"]
                                         for s in sims])
    ok(seen["backend"] <= 4, "the backend's cap holds: %r" % seen)
    ok(max(seen.get((n, "llama3:latest"), 0) for n in "ab") >= 2,
       "the chat model used the other slots: %r" % seen)
    m = get(px.url + "/metrics").text()
    eq(metric(m, "ollama_proxy_runner_cap", model="bge-m3:latest"), 2, "a cap of 1 on each")
    px.stop()

    # model_caps: the top level's, and a backend's own that wins there.
    px = start([("a", sims[0].url, 8), ("b", sims[1].url, 8,
                'model_caps = ( { model = "llama3"; max_concurrent = 3; } );')],
               extra='model_caps = ( { model = "llama3:latest"; max_concurrent = 2; } );')
    for s in sims:
        s.reset()
    body = {"model": "llama3", "prompt": "x", "stream": False}
    with ThreadPoolExecutor(max_workers=20) as ex:
        res = list(ex.map(lambda _: post(px.url + "/api/generate", body, timeout=60), range(20)))
    ok(all(r.status == 200 for r in res), res[:2])
    eq([s.stats()["models"]["llama3:latest"]["max_in_flight"] for s in sims], [2, 3],
       "each backend's runner at its model cap, not above")
    px.stop()


def gen(url, num_ctx, prompt="hello"):
    body = {"model": "llama3", "prompt": prompt, "stream": False}
    if num_ctx:
        body["options"] = {"num_ctx": num_ctx, "temperature": 0}
    r = post(url + "/api/generate", body, timeout=60)
    eq(r.status, 200, r)
    return r


def mixed(url, n, conc=4):
    """N requests of two clients, num_ctx 4096 and 8192, CONC at once."""
    with ThreadPoolExecutor(max_workers=conc) as ex:
        list(ex.map(lambda i: gen(url, 4096 if i % 2 else 8192, "p%d" % i), range(n)))


def test_num_ctx_pin_strip_pass():
    sims = [Sim("--parallel", "2", "--ttft-ms", "30", "--tokens", "2", "--tokens-per-s", "50",
                "--load-ms", "150") for _ in range(2)]
    backends = [("a", sims[0].url, 2), ("b", sims[1].url, 2)]
    for mode, limit in (("4096", 0), ('"strip"', 0)):
        px = start(backends, extra="routing = { num_ctx = %s; };" % mode)
        mixed(px.url, 4, conc=1)  # warm-up: each backend loads once
        before = [s.stats()["loads"] for s in sims]
        m0 = metric(get(px.url + "/metrics").text(), "ollama_proxy_model_loads_total")
        mixed(px.url, 24)
        after = [s.stats()["loads"] for s in sims]
        eq([a - b for a, b in zip(after, before)], [0, 0], "num_ctx %s: no reload" % mode)
        eq(metric(get(px.url + "/metrics").text(), "ollama_proxy_model_loads_total"), m0,
           "and none seen")
        px.stop()
    # pass: two clients' num_ctx on two backends, both loaded with 4096
    # (the proxy reads it in /api/ps): each settles on one.
    for s in sims:
        gen(s.url, 4096)
        s.reset()
    px = start(backends)
    wait_until(lambda: all(rn["num_ctx"] == 4096 for b in px.status()["backends"]
                           for rn in b["runners"]) and
               sum(len(b["runners"]) for b in px.status()["backends"]) == 2,
               timeout=10, what="the runners' num_ctx from /api/ps")
    mixed(px.url, 24)
    reloads = [s.stats()["reloads"] for s in sims]
    ok(max(reloads) <= 1, "pass: at most one reload per backend: %r" % reloads)
    st = px.status()
    ctx = sorted(rn["num_ctx"] for b in st["backends"] for rn in b["runners"])
    eq(ctx, [4096, 8192], "each runs one client's num_ctx")
    m = get(px.url + "/metrics").text()
    ok(metric(m, "ollama_proxy_model_loads_total") >= sum(reloads),
       "reloads seen: %r vs %r" % (metric(m, "ollama_proxy_model_loads_total"), reloads))
    px.stop()


def test_num_ctx_rewrite_bytes():
    fb = FakeBackend()
    px = start([("fb", fb.url, 4)], extra="routing = { num_ctx = 2048; };")
    wait_until(lambda: px.backend("fb")["models"], what="discovery")
    sent = ('{"model": "llama3", "prompt":"num_ctx \\"options\\"",\n'
            ' "options": {"seed": 7, "num_ctx": 65536 }, "stream": false}')
    for path, body, want in (
            ("/api/generate", sent, sent.replace("65536", "2048")),
            ("/api/generate", '{"model":"llama3","stream":false}',
             '{"model":"llama3","stream":false,"options":{"num_ctx":2048}}'),
            ("/api/chat", '{"model":"llama3","messages":[],"options":null,"stream":false}',
             '{"model":"llama3","messages":[],"options":{"num_ctx":2048},"stream":false}'),
            ("/v1/chat/completions", '{"model":"llama3","messages":[{"role":"user","content":"x"}]}',
             '{"model":"llama3","messages":[{"role":"user","content":"x"}]}')):
        fb.take()
        r = post(px.url + path, body)
        eq(r.status, 200, r)
        reqs = [q for q in fb.take() if q.target == path]
        eq(len(reqs), 1, "one request sent")
        eq(reqs[0].body.decode(), want, "%s: sent as the client wrote it, num_ctx pinned" % path)
        eq(int(reqs[0].header("Content-Length")), len(want), "its length")
    px.stop()
    px = start([("fb", fb.url, 4)], extra='routing = { num_ctx = "strip"; };')
    wait_until(lambda: px.backend("fb")["models"], what="discovery")
    fb.take()
    eq(post(px.url + "/api/generate", sent).status, 200)
    body = [q for q in fb.take() if q.target == "/api/generate"][0].body.decode()
    eq(body, sent.replace(', "num_ctx": 65536', ""), "strip: num_ctx and its comma gone")
    px.stop()
    fb.stop()


def ui_browser():
    """test_proxy_ui.py's headless Chromium (Browser), its tests not run."""
    import os
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_proxy_ui.py")).read()
    ns = {"__name__": "test_proxy_ui", "__file__": "test_proxy_ui.py"}
    exec(compile(src.replace("\nrun(globals())", "\n"), "test_proxy_ui.py", "exec"), ns)
    return ns["browser_or_skip"]()


def test_status_page_shows_runners():
    """The status page draws each backend's runners: in flight against the
    runner's cap, affinity hits, loads seen, num_ctx."""
    br = ui_browser()
    sims = [Sim("--parallel", "2", "--ttft-ms", "20", "--tokens", "2", "--load-ms", "150",
                models="llama3,bge-m3=embed") for _ in range(2)]
    px = start([("gpu0", sims[0].url, 2), ("gpu1", sims[1].url, 2)])
    for i in range(6):
        eq(post(px.url + "/api/generate", {"model": "llama3", "prompt": "p", "stream": False,
                                           "options": {"num_ctx": 2048}},
                headers={"x-session-id": "s%d" % i}).status, 200)
    br.new_page(1200, 900)
    br.goto(px.url + "/proxy/ui")
    br.wait("document.querySelectorAll('[data-backend] .runner').length >= 2", what="runners drawn")
    rows = br.eval("""[...document.querySelectorAll('[data-backend] .runner')].map(r => ({
        backend: r.closest('[data-backend]').dataset.backend, model: r.dataset.model,
        hits: Number(r.dataset.hits), loads: Number(r.dataset.loads), text: r.textContent}))""")
    llama = [r for r in rows if r["model"] == "llama3:latest"]
    eq(sum(r["hits"] for r in llama), 6, "affinity hits drawn: %r" % rows)
    ok(sum(r["loads"] for r in llama) >= 1 and all("num_ctx 2048" in r["text"] for r in llama),
       "loads and num_ctx drawn: %r" % rows)
    ok(any(r["model"] == "bge-m3:latest" and "0 / 1 in flight (embedding)" in r["text"]
           for r in rows), "the embedding model's runner and its cap of 1: %r" % rows)
    px.stop()


def test_tokens_per_runner():
    """/proxy/status runners[] count the generated and prompt tokens each
    model's replies said on each backend (CONTRACT.md: per backend and
    model); /metrics' ollama_proxy_prompt_tokens_total agrees."""
    a = Sim(*GPU, "--models", "llama3:latest,qwen2:0.5b")
    px = start([("gpu0", a.url, 4)])
    want = {}
    for model, n in (("llama3", 3), ("qwen2:0.5b", 2)):
        for i in range(n):
            r = post(px.url + "/api/generate", {"model": model, "prompt": "count me %d " % i * 9,
                                                "stream": False})
            eq(r.status, 200, "served")
            j = r.json()
            t = want.setdefault(model, [0, 0])
            t[0] += j["eval_count"]
            t[1] += j["prompt_eval_count"]
    rn = {x["model"]: x for x in px.backend("gpu0")["runners"]}
    for model, name in (("llama3", "llama3:latest"), ("qwen2:0.5b", "qwen2:0.5b")):
        eq((rn[name]["tokens"], rn[name]["prompt_tokens"]), tuple(want[model]),
           "%s's tokens and prompt tokens" % name)
    m = get(px.url + "/metrics").text()
    got = sum(float(v) for v in re.findall(
        r'^ollama_proxy_prompt_tokens_total\{[^}]*backend="gpu0"[^}]*model="llama3:latest"[^}]*\} (\S+)$',
        m, re.M))
    eq(got, want["llama3"][1], "/metrics agrees: " + "".join(
        l + "\n" for l in m.splitlines() if "prompt_tokens_total" in l))
    eq(px.stop(), 0, "clean exit")
    a.stop()


def test_every_default_session_header_keys():
    """Each header of the default session_headers keys a conversation, in
    any case of its name: Codex's session_id (an underscore, which neither
    evhttp nor Go reads as a dash) as well as session-id. One request at a
    time on an idle fleet of two: unkeyed, ties go round and a key's turns
    would alternate."""
    sims = [Sim("--ttft-ms", "0", "--tokens", "2") for _ in range(2)]
    px = start([("a", sims[0].url, 4), ("b", sims[1].url, 4)])
    for hdr in ("x-session-id", "x-claude-code-session-id", "session-id", "session_id",
                "X-Session-Affinity", "x-openwebui-chat-id"):
        seen = [post(px.url + "/api/chat", {"model": "llama3", "stream": False,
                                            "messages": [{"role": "user", "content": "hi"}]},
                     headers={hdr: "conv-" + hdr}).headers.get("x-backend") for _ in range(4)]
        eq(len(set(seen)), 1, "%s keys its turns to one backend: %r" % (hdr, seen))
    m = get(px.url + "/metrics").text()
    eq(metric(m, "ollama_proxy_affinity_total", result="hit"), 24, "every turn a hit")
    px.stop()
    for s in sims:
        s.stop()


run(globals())
