"""ollama-sim: the runner (llama-server as Ollama runs it) - per-slot prompt
caches, llama-server's slot choice, only the unshared part of a prompt
processed, honest counts; embedding models 1 slot; reload on num_ctx."""
import subprocess
import threading

from simlib import get, post, raw_send, recv_all, wait_stat, Sim
from harness import SLOW, binary, eq, ok, run

# gpt-oss 20B on a GB10: 1311.72 prompt tokens/s for one prompt; time x20
FAST = ("--gpu", "default", "--time-scale", "20", "--tokens", "4")
SYSTEM = "You are a careful assistant who answers in one sentence. " * 40  # ~560 tokens


def tokens(text):
    return len(text) // 4 + 8


def model_stats(sim, model="llama3:latest"):
    return sim.stats()["models"][model]


class Conversation:
    """One conversation over one API: each turn sends the whole history."""

    def __init__(self, sim, api, first, system=SYSTEM):
        self.sim, self.api, self.system = sim, api, system
        self.turns = [("user", first)]

    def body(self):
        msgs = [{"role": r, "content": c} for r, c in self.turns]
        if self.api == "/v1/messages":
            return {"model": "llama3", "max_tokens": 64, "system": self.system, "messages": msgs}
        if self.api == "/v1/responses":
            return {"model": "llama3", "instructions": self.system, "input": msgs}
        return {"model": "llama3", "stream": False,
                "messages": [{"role": "system", "content": self.system}] + msgs}

    def answer(self, o):
        if self.api == "/v1/messages":
            return o["content"][0]["text"]
        if self.api == "/v1/responses":
            return o["output"][0]["content"][0]["text"]
        if self.api == "/v1/chat/completions":
            return o["choices"][0]["message"]["content"]
        return o["message"]["content"]

    def turn(self, next_user=None):
        """Send the conversation; returns (reply, processed, reused) from the
        stats, then appends the answer and NEXT_USER."""
        before = model_stats(self.sim)
        r = post(self.sim.url + self.api, self.body())
        eq(r.status, 200, r.body[:300])
        after = model_stats(self.sim)
        o = r.json()
        self.said = r.headers.get("x-sim-prompt-processed")
        self.turns.append(("assistant", self.answer(o)))
        if next_user:
            self.turns.append(("user", next_user))
        return (o, after["prompt_processed"] - before["prompt_processed"],
                after["prompt_reused"] - before["prompt_reused"])


def test_conversation_reuses_the_cache_in_every_api():
    for api in ["/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/responses"]:
        sim = Sim(*FAST)
        c = Conversation(sim, api, "What is a prompt cache? " * 5)
        o, processed, reused = c.turn("And why does it matter? " * 3)
        full = tokens(SYSTEM + "What is a prompt cache? " * 5)
        eq((processed, reused), (full, 0), "%s: a cold prompt is processed whole" % api)
        o2, processed2, reused2 = c.turn("Thanks. " * 3)
        ok(reused2 >= full, "%s: the next turn re-uses the first (%d >= %d)" %
           (api, reused2, full))
        ok(processed2 < 40, "%s: only the new part is processed (%d)" % (api, processed2))
        # the reply says what it processed (X-Sim-Prompt-Processed): what
        # benches count cache hits by
        eq(c.said, str(processed2), "%s: X-Sim-Prompt-Processed" % api)
        if api == "/api/chat":
            # Ollama reports the whole prompt (cached + processed) as
            # prompt_eval_count, and the time actually spent
            eq(o2["prompt_eval_count"], processed2 + reused2)
            ok(o2["prompt_eval_duration"] < o["prompt_eval_duration"] / 5,
               "time to process: %d ns warm, %d ns cold" %
               (o2["prompt_eval_duration"], o["prompt_eval_duration"]))
            cold = o["prompt_eval_duration"] / 1e9
            ok(abs(cold - full / 1311.72) < 0.25 * SLOW + 0.1,
               "cold prompt at the curve's pace: %.3f s for %d tokens" % (cold, full))
        if api == "/v1/chat/completions":
            eq(o2["usage"]["prompt_tokens"], processed2 + reused2)
        if api == "/v1/messages":
            eq(o2["usage"]["input_tokens"], processed2 + reused2)
        if api == "/v1/responses":
            eq(o2["usage"]["input_tokens"], processed2 + reused2)
        sim.stop()


def test_slot_choice_longest_prefix_else_lru():
    sim = Sim("--parallel", "2", *FAST)
    a = Conversation(sim, "/api/chat", "alpha " * 200, system="")
    b = Conversation(sim, "/api/chat", "bravo " * 200, system="")
    a.turn("more alpha")
    _, _, reused = b.turn("more bravo")
    eq(reused, 0, "nothing shared: the least recently used slot (the empty one)")
    slots = model_stats(sim)["slots"]
    ok(all(n > 200 for n in slots), "each conversation in its own slot: %s" % slots)
    for conv in (a, b, a, b):
        _, processed, reused = conv.turn("again")
        ok(processed < 20 and reused > 300, "each finds its slot: %d/%d" % (processed, reused))
    sim.stop()
    # one slot: B evicts A's cache
    sim = Sim("--parallel", "1", *FAST)
    a = Conversation(sim, "/api/chat", "alpha " * 200, system="")
    b = Conversation(sim, "/api/chat", "bravo " * 200, system="")
    a.turn("more alpha")
    b.turn("more bravo")
    _, processed, reused = a.turn("again")
    ok(processed > 300, "A's cache was replaced by B's: %d processed" % processed)
    sim.stop()


def test_host_memory_cache_brings_a_lost_prompt_back():
    """--cache-ram: llama-server's host-memory prompt cache. One slot: B
    takes A's slot, A's prompt goes to host memory and comes back for A's
    next turn; a cache too small for it keeps nothing."""
    for ram, kept in ((100000, True), (100, False)):
        sim = Sim("--parallel", "1", "--cache-ram", str(ram), *FAST)
        a = Conversation(sim, "/api/chat", "alpha " * 200, system="")
        b = Conversation(sim, "/api/chat", "bravo " * 200, system="")
        a.turn("more alpha")
        b.turn("more bravo")
        _, processed, reused = a.turn("again")
        restored = model_stats(sim)["prompt_restored"]
        if kept:
            ok(processed < 20 and reused > 300,
               "A's prompt came back from host memory: %d processed" % processed)
            eq(restored, 1, "prompt_restored")
            # and B's, saved when A took the slot back, comes back for B
            _, processed, _ = b.turn("again")
            ok(processed < 20, "B's came back too: %d processed" % processed)
            eq(sim.stats()["prompt_restored"], 2)
        else:
            ok(processed > 300, "no room for A's %d tokens: %d processed" %
               (tokens("alpha " * 200), processed))
            eq(restored, 0, "prompt_restored")
        sim.stop()


def test_busy_slot_is_not_taken():
    """Y holds the slot with the shared prefix: Z, with the same prefix,
    takes the other (free) slot and processes its whole prompt."""
    sim = Sim("--parallel", "2", "--gpu", "default", "--time-scale", "20", "--tokens", "60")
    sysmsg = [{"role": "system", "content": SYSTEM}]
    body = lambda item: {"model": "llama3", "stream": False,  # noqa: E731
                         "messages": sysmsg + [{"role": "user", "content": item}]}
    post(sim.url + "/api/chat", body("warm the first slot"))
    y = raw_send(sim.url, "POST", "/api/chat", body("item y"))
    wait_stat(sim, "in_flight", 1)
    r = post(sim.url + "/api/chat", body("item z"))
    o = r.json()
    ydata = recv_all(y, timeout=10)
    y.close()
    ok(b'"done":true' in ydata, ydata[-200:])
    eq(o["prompt_eval_count"], tokens(SYSTEM + "item z"))
    st = sim.stats()
    # warm: full; y: mostly reused; z: full (the other slot was empty)
    full_w, full_z = tokens(SYSTEM + "warm the first slot"), tokens(SYSTEM + "item z")
    ok(st["prompt_processed"] >= full_w + full_z, st)
    ok(st["prompt_reused"] >= tokens(SYSTEM) - 8, st)
    ok(o["prompt_eval_duration"] / 1e9 > 0.7 * full_z / 3754.2,
       "z processed its whole prompt: %d ns" % o["prompt_eval_duration"])
    sim.stop()


def test_identical_prompt_processes_one_token():
    sim = Sim(*FAST)
    body = {"model": "llama3", "prompt": "same prompt " * 100, "stream": False}
    post(sim.url + "/api/generate", body)
    before = sim.stats()
    o = post(sim.url + "/api/generate", body).json()
    after = sim.stats()
    eq(after["prompt_processed"] - before["prompt_processed"], 1,
       "llama-server evaluates the last token again")
    eq(after["prompt_reused"] - before["prompt_reused"], o["prompt_eval_count"] - 1)
    # a streamed reply says it in its head: the slot is chosen before it
    r = post(sim.url + "/api/generate", dict(body, stream=True))
    eq(r.headers.get("x-sim-prompt-processed"), "1", "streamed: X-Sim-Prompt-Processed")
    before = sim.stats()["prompt_processed"]
    r = post(sim.url + "/api/generate", dict(body, prompt="other " * 100, stream=True))
    eq(r.headers.get("x-sim-prompt-processed"), str(sim.stats()["prompt_processed"] - before),
       "another prompt (it shares only the template tokens)")
    ok(int(r.headers["x-sim-prompt-processed"]) > 100, "another prompt processed")
    sim.stop()


def test_reload_on_num_ctx_empties_caches_and_waits():
    sim = Sim("--load-ms", "300", "--ttft-ms", "5", "--tokens", "10", "--tokens-per-s", "50")
    body = {"model": "llama3", "prompt": "p " * 100, "stream": False}
    post(sim.url + "/api/generate", body)
    eq(sim.stats()["reloads"], 0)
    a = raw_send(sim.url, "POST", "/api/generate", body)
    wait_stat(sim, "in_flight", 1)
    order = []

    def req(name, b):
        o = post(sim.url + "/api/generate", b).json()
        order.append(name)
        return o
    tb = threading.Thread(target=lambda: req("b", dict(body, options={"num_ctx": 8192})))
    tb.start()
    wait_stat(sim, "queued", 1)
    tc = threading.Thread(target=lambda: req("c", body))  # default num_ctx again
    tc.start()
    recv_all(a, timeout=10)
    a.close()
    tb.join(20 * SLOW)
    tc.join(20 * SLOW)
    eq(order, ["b", "c"], "everything else waits for the reload, in order")
    st = sim.stats()
    eq((st["loads"], st["reloads"]), (3, 2), "two reloads: to 8192 and back")
    eq(st["max_in_flight"], 1)
    ps = get(sim.url + "/api/ps").json()["models"]
    eq(ps[0]["context_length"], 4096)
    eq(model_stats(sim)["reloads"], 2)
    sim.stop()


def test_reload_clears_the_slot_caches():
    sim = Sim(*FAST)
    body = {"model": "llama3", "prompt": "q " * 400, "stream": False}
    post(sim.url + "/api/generate", body)
    post(sim.url + "/api/generate", dict(body, options={"num_ctx": 2048}))
    st = model_stats(sim)
    eq(st["reloads"], 1)
    eq(st["prompt_reused"], 0, "a new runner has empty caches")
    sim.stop()


def test_embedding_models_one_slot():
    sim = Sim("--parallel", "4", "--ttft-ms", "40", models="llama3:latest,bge-m3=embed")
    show = post(sim.url + "/api/show", {"model": "bge-m3"}).json()
    eq(show["capabilities"], ["embedding"])
    eq(post(sim.url + "/api/show", {"model": "llama3"}).json()["capabilities"][0], "completion")
    outs = [None] * 4
    ts = [threading.Thread(target=lambda i=i: outs.__setitem__(i, post(
        sim.url + "/api/embed", {"model": "bge-m3", "input": "t%d" % i}))) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    eq([o.status for o in outs], [200] * 4)
    st = model_stats(sim, "bge-m3:latest")
    eq((st["max_in_flight"], len(st["slots"])), (1, 1))
    r = post(sim.url + "/api/chat", {"model": "bge-m3", "messages": [
        {"role": "user", "content": "x"}]})
    eq((r.status, r.json()), (400, {"error": '"bge-m3" does not support chat'}))
    eq(len(model_stats(sim)["slots"]), 0, "llama3 not loaded: no slots")
    post(sim.url + "/api/generate", {"model": "llama3"})
    eq(len(model_stats(sim)["slots"]), 4, "--parallel slots for a chat model")
    sim.stop()
    r = subprocess.run([binary("ollama-sim"), "--port", "0", "--models", "a,b=vision"],
                       capture_output=True, text=True)
    eq(r.returncode, 2)
    ok("b=vision" in r.stderr, r.stderr)


def test_clean_exit():
    sim = Sim(*FAST)
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": "x " * 50, "stream": False})
    eq(sim.stop(), 0)


run(globals())
