"""ollama-sim: logprobs / top_logprobs in Ollama's format, and the confidence
of enum answers (high where a label word is in the text, low otherwise)."""
import json
import math
import re

from simlib import post, ndjson, sse, Sim
from harness import eq, ok, run

S = Sim("--ttft-ms", "1", "--tokens-per-s", "0", "--tokens", "5")
U = S.url
LABELS = ["account_access", "billing", "feature_request", "bug_report", "account_deletion"]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": LABELS}},
          "required": ["label"]}
GO_FLOAT = re.compile(r"^-?(0|[1-9]\d*)(\.\d*[1-9])?(e[-+][1-9]\d*)?$")


def chat(text, top=5, stream=False, path="/api/chat", **kw):
    body = {"model": "llama3", "stream": stream, "format": SCHEMA, "logprobs": True,
            "top_logprobs": top, "options": {"temperature": 0},
            "messages": [{"role": "system", "content": "Labels: " + ", ".join(LABELS)},
                         {"role": "user", "content": text}]}
    body.update(kw)
    r = post(U + path, body)
    eq(r.status, 200, r.body)
    return r


def check_entry(e, top):
    """One api.Logprob: Go's field order, bytes of the token, N alternatives
    most likely first, probabilities that add up to at most 1."""
    keys = ["token", "logprob", "bytes"] + (["top_logprobs"] if top else [])
    eq(list(e.keys()), keys)
    eq(e["bytes"], list(e["token"].encode()))
    ok(e["logprob"] < 0, e)
    if not top:
        return
    alts = e["top_logprobs"]
    eq(len(alts), top, "exactly top_logprobs alternatives")
    for a in alts:
        eq(list(a.keys()), ["token", "logprob", "bytes"])
        eq(a["bytes"], list(a["token"].encode()))
    lps = [a["logprob"] for a in alts]
    eq(lps, sorted(lps, reverse=True), "most likely first")
    eq(len({a["token"] for a in alts}), top, "distinct alternatives")
    ok(e["token"] in [a["token"] for a in alts], "the chosen token is listed")
    ok(sum(math.exp(x) for x in lps) <= 1 + 1e-9, "probabilities add up to at most 1")


def label_confidence(entries):
    """Probability of the answered label: the product of its tokens' (the
    tokens after the one ending in ':"' and before the closing '"}')."""
    toks = [e["token"] for e in entries]
    start = toks.index('":"') + 1
    end = toks.index('"}')
    return math.exp(sum(e["logprob"] for e in entries[start:end])), entries[start]


def test_entries_and_text_agree():
    o = chat("I was charged twice, billing please").json()
    eq(list(o.keys())[:6], ["model", "created_at", "message", "done", "done_reason", "logprobs"],
       "chat: logprobs before the metrics, as Go orders them")
    ok("total_duration" in o, o)
    eq(json.loads(o["message"]["content"]), {"label": "billing"})
    eq("".join(e["token"] for e in o["logprobs"]), o["message"]["content"])
    eq(len(o["logprobs"]), o["eval_count"], "one entry per generated token")
    eq([e["token"] for e in o["logprobs"]], ['{"', "label", '":"', "billing", '"}'])
    for e in o["logprobs"]:
        check_entry(e, 5)


def test_label_word_is_confident():
    for text, want in [("cannot log in: account_access broken", "account_access"),
                       ("please fix this bug report asap", "bug_report"),
                       ("Feature-Request: dark mode", "feature_request"),
                       ("my billing is wrong", "billing")]:
        o = chat(text).json()
        eq(json.loads(o["message"]["content"])["label"], want, text)
        p, first = label_confidence(o["logprobs"])
        ok(p >= 0.95, "label word in the text: p %.3f for %r" % (p, text))
        alts = [a["token"] for a in first["top_logprobs"]]
        for t in ["account", "billing", "feature", "bug"]:
            ok(t in alts, "%s among %s" % (t, alts))


def test_no_label_word_is_doubtful():
    seen = set()
    for i in range(30):
        text = "ticket %d: something odd happened on the page" % i
        o = chat(text).json()
        lab = json.loads(o["message"]["content"])["label"]
        seen.add(lab)
        p, first = label_confidence(o["logprobs"])
        ok(0.39 <= p <= 0.61, "no label word: p %.3f for %r" % (p, text))
        # no other label is as likely as the one answered
        top = first["top_logprobs"]
        if first["token"] == top[0]["token"]:
            ok(first["logprob"] > top[1]["logprob"], top)
    ok(len(seen) >= 3, "answers spread over the labels: %s" % seen)


def test_shared_first_token():
    """account_access and account_deletion share 'account': the first token's
    probability is theirs together, the second tells them apart."""
    o = chat("account_deletion now").json()
    toks = [e["token"] for e in o["logprobs"]]
    eq(toks[3:5], ["account", "_deletion"])
    first, second = o["logprobs"][3], o["logprobs"][4]
    ok(math.exp(first["logprob"] + second["logprob"]) >= 0.95, (first, second))
    eq(first["top_logprobs"][0]["token"], "account")
    alts2 = [a["token"] for a in second["top_logprobs"]]
    eq(alts2[:2], ["_deletion", "_access"], "siblings under 'account'")
    ok(all(not a.startswith("_") for a in alts2[2:]), alts2)


def test_deterministic():
    for text in ["my billing is wrong", "nothing to see", ""]:
        a = chat(text).json()["logprobs"]
        b = chat(text).json()["logprobs"]
        eq(a, b, "same text, same logprobs")


def test_streamed_chat_one_entry_per_chunk():
    r = chat("bug_report: crash", stream=True)
    objs = ndjson(r.body)
    for o in objs[:-1]:
        eq(list(o.keys()), ["model", "created_at", "message", "done", "logprobs"])
        eq(len(o["logprobs"]), 1)
        eq(o["logprobs"][0]["token"], o["message"]["content"])
        check_entry(o["logprobs"][0], 5)
    ok("logprobs" not in objs[-1], "the final chunk carries none")
    whole = chat("bug_report: crash").json()
    eq([o["logprobs"][0] for o in objs[:-1]], whole["logprobs"], "same entries streamed or not")


def test_top_zero_and_absent():
    o = chat("billing", top=0).json()
    for e in o["logprobs"]:
        check_entry(e, 0)
    body = {"model": "llama3", "stream": False, "format": SCHEMA,
            "messages": [{"role": "user", "content": "billing"}]}
    o = post(U + "/api/chat", body).json()
    ok("logprobs" not in o, "no logprobs unless asked")
    o = post(U + "/api/chat", dict(body, top_logprobs=3)).json()
    ok("logprobs" not in o, "top_logprobs alone does not turn them on")


def test_generate_free_text():
    body = {"model": "llama3", "prompt": "hello", "stream": False, "logprobs": True,
            "top_logprobs": 3}
    o = post(U + "/api/generate", body).json()
    keys = list(o.keys())
    eq(keys[-2:], ["eval_duration", "logprobs"], "generate: logprobs after the metrics")
    eq("".join(e["token"] for e in o["logprobs"]), o["response"])
    eq(len(o["logprobs"]), 5)
    for e in o["logprobs"]:
        check_entry(e, 3)
    objs = ndjson(post(U + "/api/generate", dict(body, stream=True)).body)
    for x in objs[:-1]:
        eq(list(x.keys()), ["model", "created_at", "response", "done", "logprobs"])
        eq(x["logprobs"][0]["token"], x["response"])


def test_v1_chat():
    rf = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    body = {"model": "llama3", "response_format": rf, "logprobs": True, "top_logprobs": 4,
            "messages": [{"role": "user", "content": "billing question"}]}
    o = post(U + "/v1/chat/completions", body).json()
    ch = o["choices"][0]
    eq(list(ch.keys()), ["index", "message", "finish_reason", "logprobs"])
    content = ch["logprobs"]["content"]
    eq("".join(e["token"] for e in content), ch["message"]["content"])
    for e in content:
        check_entry(e, 4)
    p, _ = label_confidence(content)
    ok(p >= 0.95, p)
    r = post(U + "/v1/chat/completions", dict(body, stream=True))
    chunks = [json.loads(e) for e in sse(r.body)[:-1]]
    streamed = []
    for c in chunks[:-1]:
        eq(list(c["choices"][0].keys()), ["index", "delta", "finish_reason", "logprobs"])
        streamed += c["choices"][0]["logprobs"]["content"]
    eq(streamed, content)
    ok("logprobs" not in chunks[-1]["choices"][0], "finish chunk has none")
    o = post(U + "/v1/chat/completions", dict(body, logprobs=False)).json()
    ok("logprobs" not in o["choices"][0], o)


def test_go_number_format():
    r = chat("nothing here", top=20)
    nums = re.findall(rb'"logprob":([^,}\]]+)', r.body)
    ok(len(nums) > 50, len(nums))
    for n in nums:
        ok(GO_FLOAT.match(n.decode()), "Go float64 format: %r" % n)


def test_top_logprobs_range():
    for path, body, openai in [
            ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "x"}]}, 0),
            ("/api/generate", {"model": "llama3", "prompt": "x"}, 0),
            ("/v1/chat/completions", {"model": "llama3",
                                      "messages": [{"role": "user", "content": "x"}]}, 1)]:
        for top in [21, -1, 100]:
            r = post(U + path, dict(body, logprobs=True, top_logprobs=top))
            eq(r.status, 400, (path, top))
            msg = "top_logprobs must be between 0 and 20"
            eq(r.json(), {"error": {"message": msg, "type": "invalid_request_error",
                                    "param": None, "code": None}} if openai else {"error": msg})
        r = post(U + path, dict(body, model="nope", top_logprobs=21))
        eq(r.status, 400, "checked before the model is looked up")
        eq(post(U + path, dict(body, logprobs=True, top_logprobs=20, stream=False)).status, 200)
    r = post(U + "/v1/completions", {"model": "llama3", "prompt": "x", "logprobs": 21})
    eq(r.status, 400)
    o = post(U + "/v1/completions", {"model": "llama3", "prompt": "x", "logprobs": 2}).json()
    ok("logprobs" not in o["choices"][0], "Ollama drops them on /v1/completions")
    r = post(U + "/api/chat", {"model": "llama3", "logprobs": "yes", "messages": []})
    eq((r.status, r.json()), (400, {"error": "json: cannot unmarshal string into Go struct "
                                             "field ChatRequest.logprobs of type bool"}))


def test_clean_exit():
    eq(S.stop(), 0)


run(globals())
