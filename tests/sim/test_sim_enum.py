"""ollama-sim: structured output - enum labels chosen from the item text."""
import json

from simlib import post, ndjson, sse, Sim
from harness import eq, ok, run

S = Sim("--ttft-ms", "1", "--tokens-per-s", "0")
U = S.url
LABELS = ["positive", "negative", "neutral"]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": LABELS}},
          "required": ["label"]}
SYSTEM = "Classify the text as one of: positive, negative, neutral. Answer in JSON."


def classify(text, schema=SCHEMA, system=SYSTEM, **kw):
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    body = {"model": "llama3", "messages": msgs, "stream": False, "format": schema,
            "options": {"temperature": 0}}
    body.update(kw)
    r = post(U + "/api/chat", body)
    eq(r.status, 200)
    return r.json()["message"]["content"]


def label(text, **kw):
    return json.loads(classify(text, **kw))["label"]


def test_label_word_in_user_text_wins():
    eq(classify("I feel negative about this"), '{"label":"negative"}')
    eq(label("NEGATIVE! though partly Positive"), "negative", "earliest occurrence wins")
    eq(label("it was positive, not negative"), "positive")
    eq(label("so neutral."), "neutral")


def test_system_prompt_ignored():
    # the system prompt lists every label; a text without label words must
    # not always pick the first one
    got = {label("item number %d about cats" % i) for i in range(40)}
    eq(got, set(LABELS), "hash spreads over all labels")


def test_deterministic():
    for t in ["a plain sentence", "another one", "x"]:
        a = classify(t)
        eq(classify(t), a)
        eq(classify(t, system="something else entirely"), a, "only the user text counts")
        ok(json.loads(a)["label"] in LABELS, a)


def test_last_user_message_only():
    msgs = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "this is negative"},
            {"role": "assistant", "content": '{"label":"negative"}'},
            {"role": "user", "content": "and this one is neutral"}]
    r = post(U + "/api/chat", {"model": "llama3", "messages": msgs, "stream": False,
                               "format": SCHEMA})
    eq(json.loads(r.json()["message"]["content"]), {"label": "neutral"})


def test_whole_words_and_separators():
    schema = {"type": "object", "properties": {"label": {"enum": ["not_spam", "spam", "cat"]}}}
    eq(label("this is not spam at all", schema=schema), "not_spam")
    eq(label("this is not-spam", schema=schema), "not_spam")
    eq(label("pure spam here", schema=schema), "spam")
    eq(label("concatenate the spammy spam", schema=schema), "spam", "cat inside a word no")


def test_other_property_and_generate():
    schema = {"type": "object", "properties": {
        "reason": {"type": "string"},
        "sentiment": {"type": "string", "enum": ["good", "bad"]}}}
    eq(classify("this is bad", schema=schema), '{"sentiment":"bad"}')
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "quite good", "format": SCHEMA,
                                   "stream": False, "system": "negative negative"})
    ok(json.loads(r.json()["response"])["label"] in LABELS)
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "truly negative",
                                   "format": SCHEMA, "stream": False})
    eq(r.json()["response"], '{"label":"negative"}')


def test_streamed_structured_output():
    r = post(U + "/api/chat", {"model": "llama3", "format": SCHEMA, "messages": [
        {"role": "user", "content": "neutral stuff"}]})
    objs = ndjson(r.body)
    ok(len(objs) > 3, "split over several chunks")
    eq("".join(o["message"]["content"] for o in objs), '{"label":"neutral"}')


def test_format_json_and_v1():
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "x", "format": "json",
                                   "stream": False})
    ok(isinstance(json.loads(r.json()["response"]), dict), r.body)
    rf = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    r = post(U + "/v1/chat/completions", {"model": "llama3", "response_format": rf, "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "very positive"}]})
    eq(r.json()["choices"][0]["message"]["content"], '{"label":"positive"}')
    r = post(U + "/v1/chat/completions", {"model": "llama3", "stream": True,
                                          "response_format": {"type": "json_object"},
                                          "messages": [{"role": "user", "content": "x"}]})
    ev = [json.loads(e) for e in sse(r.body)[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev if e["choices"])
    ok(isinstance(json.loads(text), dict), text)


def test_schema_without_enum():
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}}}
    o = json.loads(classify("x", schema=schema))
    eq(sorted(o.keys()), ["age", "name"])
    ok(isinstance(o["age"], int) and isinstance(o["name"], str), o)


def test_off_label_rate():
    sim = Sim("--ttft-ms", "1", "--tokens-per-s", "0", "--off-label-rate", "1")
    r = post(sim.url + "/api/chat", {"model": "llama3", "stream": False, "format": SCHEMA,
                                     "messages": [{"role": "user", "content": "negative"}]})
    lab = json.loads(r.json()["message"]["content"])["label"]
    ok(lab not in LABELS, lab)
    sim.stop()
    sim = Sim("--ttft-ms", "1", "--tokens-per-s", "0", "--off-label-rate", "0.5", "--seed", "7")
    labs = []
    for i in range(40):
        r = post(sim.url + "/api/chat", {"model": "llama3", "stream": False, "format": SCHEMA,
                                         "messages": [{"role": "user", "content": "negative"}]})
        labs.append(json.loads(r.json()["message"]["content"])["label"])
    n_off = sum(1 for x in labs if x not in LABELS)
    ok(5 < n_off < 35, "about half off-label: %d/40" % n_off)
    ok(all(x == "negative" for x in labs if x in LABELS), labs)
    sim.stop()


def test_clean_exit():
    eq(S.stop(), 0)


run(globals())
