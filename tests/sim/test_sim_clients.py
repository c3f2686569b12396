"""ollama-sim: every client's wire format - /v1/messages (Anthropic),
/v1/responses (OpenAI Responses), /v1/models/M, /v1/audio/transcriptions,
and the same scheduling for all of them."""
import json
import re
import threading
import time

from simlib import get, post, http, raw_send, silent_for, recv_all, wait_stat, Sim
from harness import SLOW, eq, ok, run

S = Sim("--ttft-ms", "2", "--tokens", "6", "--tokens-per-s", "0",
        models="llama3:latest,nomic-embed-text")
U = S.url
SSE = "text/event-stream"


def events(body):
    """Named SSE events: [(name, data dict)], checking the framing."""
    text = body.decode()
    ok(text.endswith("\n\n"), "SSE ends with a blank line: %r" % text[-40:])
    out = []
    for ev in text[:-2].split("\n\n"):
        m = re.match(r"^event: ([a-z_.]+)\ndata: (.*)$", ev, re.S)
        ok(m, "event framing: %r" % ev[:80])
        out.append((m.group(1), json.loads(m.group(2))))
    return out


def chat_text(last_user, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": last_user}]
    o = post(U + "/api/chat", {"model": "llama3", "messages": msgs, "stream": False}).json()
    return o["message"]["content"], o["prompt_eval_count"], o["eval_count"]


# ---- /v1/messages ----

MSG = {"model": "llama3", "max_tokens": 100, "system": "Be brief.",
       "messages": [{"role": "user", "content": "Where is the sky?"}]}


def test_messages_whole():
    r = post(U + "/v1/messages", MSG)
    eq(r.status, 200)
    ok(r.headers["content-type"].startswith("application/json"), r.headers)
    o = r.json()
    eq(list(o.keys()), ["id", "type", "role", "model", "content", "stop_reason", "usage"])
    ok(re.match(r"^msg_[0-9a-f]{24}$", o["id"]), o["id"])
    eq((o["type"], o["role"], o["model"]), ("message", "assistant", "llama3"))
    eq(o["stop_reason"], "end_turn")
    text, ptok, etok = chat_text("Where is the sky?", "Be brief.")
    eq(o["content"], [{"type": "text", "text": text}], "same answer as /api/chat")
    eq(o["usage"], {"input_tokens": ptok, "output_tokens": etok})
    o = post(U + "/v1/messages", dict(MSG, max_tokens=3)).json()
    eq((o["stop_reason"], o["usage"]["output_tokens"]), ("max_tokens", 3))
    # content as blocks, several text blocks concatenated
    blocks = dict(MSG, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Where is "}, {"type": "text", "text": "the sky?"}]}])
    eq(post(U + "/v1/messages", blocks).json()["content"][0]["text"], text)


def test_messages_stream():
    r = post(U + "/v1/messages", dict(MSG, stream=True))
    eq(r.status, 200)
    eq(r.headers["content-type"], SSE)
    eq(r.headers.get("cache-control"), "no-cache")
    ev = events(r.body)
    names = [n for n, _ in ev]
    eq(names[:2], ["message_start", "content_block_start"])
    eq(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
    ok(all(n == "content_block_delta" for n in names[2:-3]) and len(names) > 5, names)
    for n, d in ev:
        eq(d["type"], n, "data type = event name")
    start = ev[0][1]["message"]
    eq((start["content"], start["role"], start["model"]), ([], "assistant", "llama3"))
    # Ollama's estimate: characters of system, roles and contents / 4
    chars = len("Be brief.") + len("user") + len("Where is the sky?")
    eq(start["usage"], {"input_tokens": chars // 4, "output_tokens": 0})
    eq(ev[1][1], {"type": "content_block_start", "index": 0,
                  "content_block": {"type": "text", "text": ""}})
    deltas = [d for n, d in ev if n == "content_block_delta"]
    for d in deltas:
        eq((d["index"], d["delta"]["type"]), (0, "text_delta"))
    whole = post(U + "/v1/messages", MSG).json()
    eq("".join(d["delta"]["text"] for d in deltas), whole["content"][0]["text"])
    md = ev[-2][1]
    eq(md["delta"], {"stop_reason": "end_turn"})
    eq(md["usage"], whole["usage"], "message_delta carries the real counts")
    eq(md["usage"]["output_tokens"], len(deltas))
    eq(ev[-1][1], {"type": "message_stop"})


def test_messages_errors():
    def err(body, status, etype, msg):
        r = post(U + "/v1/messages", body)
        eq(r.status, status, body)
        o = r.json()
        eq(list(o.keys()), ["type", "error", "request_id"])
        eq(o["type"], "error")
        eq(o["error"], {"type": etype, "message": msg})
        ok(o["request_id"].startswith("req_"), o)
    err(dict(MSG, model="nope"), 404, "not_found_error", "model 'nope' not found")
    err(dict(MSG, model=""), 400, "invalid_request_error", "model is required")
    err({k: v for k, v in MSG.items() if k != "max_tokens"}, 400, "invalid_request_error",
        "max_tokens is required and must be positive")
    err(dict(MSG, messages=[]), 400, "invalid_request_error", "messages is required")
    err(dict(MSG, model="nomic-embed-text"), 400, "invalid_request_error",
        '"nomic-embed-text" does not support chat')
    err(b"", 400, "invalid_request_error", "EOF")
    err(dict(MSG, max_tokens="x"), 400, "invalid_request_error",
        "json: cannot unmarshal string into Go struct field MessagesRequest.max_tokens of type int")


# ---- /v1/responses ----

RESP = {"model": "llama3", "instructions": "Be brief.", "input": "Where is the sky?"}
STRUCT_ORDER = ["id", "object", "created_at", "completed_at", "status", "incomplete_details",
                "model", "previous_response_id", "instructions", "output", "error", "tools",
                "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p",
                "presence_penalty", "frequency_penalty", "top_logprobs", "temperature",
                "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store",
                "background", "service_tier", "metadata", "safety_identifier",
                "prompt_cache_key"]


def test_responses_whole():
    r = post(U + "/v1/responses", dict(RESP, temperature=0.7))
    eq(r.status, 200)
    o = r.json()
    eq(list(o.keys()), STRUCT_ORDER, "Go's struct field order")
    ok(re.match(r"^resp_\d+$", o["id"]), o["id"])
    eq((o["object"], o["status"], o["model"], o["instructions"]),
       ("response", "completed", "llama3", "Be brief."))
    ok(isinstance(o["completed_at"], int) and o["completed_at"] >= o["created_at"], o)
    eq(o["temperature"], 0.7)
    eq((o["top_p"], o["tool_choice"], o["truncation"], o["tools"]), (1, "auto", "disabled", []))
    eq(o["text"], {"format": {"type": "text"}})
    text, ptok, etok = chat_text("Where is the sky?", "Be brief.")
    eq(len(o["output"]), 1)
    item = o["output"][0]
    eq(list(item.keys()), ["id", "type", "status", "role", "content"])
    eq((item["type"], item["status"], item["role"]), ("message", "completed", "assistant"))
    eq(item["content"], [{"type": "output_text", "text": text, "annotations": [],
                          "logprobs": []}])
    eq(o["usage"], {"input_tokens": ptok, "output_tokens": etok, "total_tokens": ptok + etok,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0}})
    o = post(U + "/v1/responses", dict(RESP, max_output_tokens=2)).json()
    eq((o["usage"]["output_tokens"], o["max_output_tokens"]), (2, 2))
    # items, with parts; the last user message decides the answer
    items = [{"role": "user", "content": [{"type": "input_text", "text": "old question"}]},
             {"type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "old answer"}]},
             {"role": "user", "content": "Where is the sky?"}]
    o = post(U + "/v1/responses", dict(RESP, input=items)).json()
    eq(o["output"][0]["content"][0]["text"], text)


def test_responses_format_echo():
    schema = {"type": "object", "properties": {"label": {"type": "string",
                                                         "enum": ["sky", "sea"]}}}
    fmt = {"type": "json_schema", "name": "c", "schema": schema, "strict": True}
    o = post(U + "/v1/responses", dict(RESP, input="the sky", text={"format": fmt})).json()
    eq(json.loads(o["output"][0]["content"][0]["text"]), {"label": "sky"})
    eq(o["text"], {"format": fmt})


def test_responses_stream():
    r = post(U + "/v1/responses", dict(RESP, stream=True))
    eq(r.status, 200)
    eq(r.headers["content-type"], SSE)
    eq(r.headers.get("cache-control"), "no-cache")
    ev = events(r.body)
    names = [n for n, _ in ev]
    eq(names[:4], ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added"])
    eq(names[-4:], ["response.output_text.done", "response.content_part.done",
                    "response.output_item.done", "response.completed"])
    deltas = [d for n, d in ev if n == "response.output_text.delta"]
    eq(len(deltas), len(names) - 8)
    for i, (n, d) in enumerate(ev):
        eq(d["type"], n)
        eq(d["sequence_number"], i, "sequence numbers count from 0")
        eq(list(d.keys()), sorted(d.keys()), "a Go map: keys sorted")
    created = ev[0][1]["response"]
    eq(list(created.keys()), sorted(STRUCT_ORDER))
    eq((created["status"], created["output"], created["usage"], created["completed_at"]),
       ("in_progress", [], None, None))
    item_id = ev[2][1]["item"]["id"]
    eq(ev[2][1]["item"], {"content": [], "id": item_id, "role": "assistant",
                          "status": "in_progress", "type": "message"})
    whole = post(U + "/v1/responses", RESP).json()
    text = whole["output"][0]["content"][0]["text"]
    eq("".join(d["delta"] for d in deltas), text)
    for d in deltas:
        eq((d["item_id"], d["output_index"], d["content_index"], d["logprobs"]),
           (item_id, 0, 0, []))
    eq(ev[-4][1]["text"], text)
    done = ev[-1][1]["response"]
    eq((done["status"], done["usage"]), ("completed", whole["usage"]))
    eq(done["output"][0]["content"][0]["text"], text)
    ok(isinstance(done["completed_at"], int), done)


def test_responses_errors():
    def err(body, status, etype, msg):
        r = post(U + "/v1/responses", body)
        eq(r.status, status, body)
        eq(r.json(), {"error": {"message": msg, "type": etype, "param": None, "code": None}})
    err(dict(RESP, model="nope"), 404, "not_found_error", "model 'nope' not found")
    err(dict(RESP, model=""), 400, "invalid_request_error", "model is required")
    err(dict(RESP, input=[{"type": "bogus"}]), 400, "invalid_request_error",
        'input[0]: unknown input item type: "bogus"')
    err(dict(RESP, input=[{"content": "x"}]), 400, "invalid_request_error",
        "input[0]: input item missing required 'type' field")
    err(b"", 400, "invalid_request_error", "EOF")


# ---- models, transcriptions ----

def test_model_retrieve():
    r = get(U + "/v1/models/LLaMA3")
    eq(r.status, 200)
    o = r.json()
    eq(list(o.keys()), ["id", "object", "created", "owned_by"])
    eq((o["id"], o["object"], o["owned_by"]), ("LLaMA3", "model", "library"),
       "the name as asked for")
    r = get(U + "/v1/models/nope")
    eq((r.status, r.json()), (404, {"error": {"message": "model 'nope' not found",
                                              "type": "not_found_error", "param": None,
                                              "code": None}}))


def multipart(fields, boundary="simBoundary42"):
    body = b""
    for name, (value, filename) in fields.items():
        disp = 'form-data; name="%s"' % name + ('; filename="%s"' % filename if filename else "")
        body += b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disp.encode() + \
            b"\r\n\r\n" + value + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def test_transcriptions():
    body, h = multipart({"model": (b"llama3", None), "file": (b"RIFF\x00audio", "a.wav")})
    r = http("POST", U + "/v1/audio/transcriptions", body, headers=h)
    eq(r.status, 200)
    text = r.json()["text"]
    ok(len(text.split()) == 6, text)
    eq(http("POST", U + "/v1/audio/transcriptions", body, headers=h).json()["text"], text,
       "the same audio, the same words")
    body2, h2 = multipart({"model": (b"llama3", None), "file": (b"other audio", "a.wav"),
                           "response_format": (b"text", None)})
    r = http("POST", U + "/v1/audio/transcriptions", body2, headers=h2)
    eq(r.headers["content-type"], "text/plain")
    ok(r.body and r.body.decode() != text, r.body)
    for fields, msg in [({"file": (b"x", "a.wav")}, "model is required"),
                        ({"model": (b"llama3", None)}, "file is required: http: no such file"),
                        ({"model": (b"llama3", None), "file": (b"", "a.wav")},
                         "audio file is empty")]:
        b, hh = multipart(fields)
        r = http("POST", U + "/v1/audio/transcriptions", b, headers=hh)
        eq((r.status, r.json()["error"]["message"]), (400, msg))
    body, h = multipart({"model": (b"nope", None), "file": (b"x", "a.wav")})
    eq(http("POST", U + "/v1/audio/transcriptions", body, headers=h).status, 404)


# ---- stats and scheduling ----

def test_stats_count_paths():
    S.reset()
    post(U + "/v1/messages", MSG)
    post(U + "/v1/messages", MSG)
    post(U + "/v1/responses", RESP)
    get(U + "/v1/models/llama3")
    http("HEAD", U + "/api/blobs/sha256:" + "0" * 64)
    paths = S.stats()["paths"]
    eq((paths.get("/v1/messages"), paths.get("/v1/responses"),
        paths.get("/v1/models/{model}"), paths.get("/api/blobs/{digest}")), (2, 1, 1, 1), paths)
    ok("/api/chat" not in paths, paths)


def test_same_slots_as_chat():
    """One slot: a chat, a message and a response are served one at a time,
    in order, each silent until its first token."""
    sim = Sim("--parallel", "1", "--ttft-ms", "5", "--tokens", "8", "--tokens-per-s", "40")
    post(sim.url + "/api/generate", {"model": "llama3"})  # loaded
    a = raw_send(sim.url, "POST", "/api/chat", {"model": "llama3", "messages": [
        {"role": "user", "content": "a"}]})
    wait_stat(sim, "in_flight", 1)
    b = raw_send(sim.url, "POST", "/v1/messages", dict(MSG, stream=True))
    c = raw_send(sim.url, "POST", "/v1/responses", dict(RESP, stream=True))
    wait_stat(sim, "queued", 2)
    ok(silent_for(b, 0.05) and silent_for(c, 0.05), "waiting requests are silent")
    for s, marker in [(a, b'"done":true'), (b, b"event: message_stop"),
                      (c, b"event: response.completed")]:
        data = recv_all(s, timeout=10)
        ok(data.startswith(b"HTTP/1.1 200") and marker in data, data[-200:])
        s.close()
    st = sim.stats()
    eq((st["max_in_flight"], st["served"], st["queued"]), (1, 4, 0))
    sim.stop()


def test_stream_fail_in_each_format():
    sim = Sim("--ttft-ms", "1", "--tokens", "6", "--tokens-per-s", "0",
              "--stream-fail-rate", "1")
    ev = events(post(sim.url + "/v1/messages", dict(MSG, stream=True)).body)
    eq(ev[-1], ("error", {"type": "error", "error": {"type": "api_error",
                                                     "message": "simulated failure"}}))
    ok("message_stop" not in [n for n, _ in ev], ev)
    ev = events(post(sim.url + "/v1/responses", dict(RESP, stream=True)).body)
    name, d = ev[-1]
    eq(name, "response.failed")
    eq((d["response"]["status"], d["response"]["error"]),
       ("failed", {"code": "server_error", "message": "simulated failure"}))
    eq(d["sequence_number"], len(ev) - 1)
    ok("response.completed" not in [n for n, _ in ev], ev)
    sim.stop()


def test_cancel_while_waiting():
    sim = Sim("--parallel", "1", "--ttft-ms", "5", "--tokens", "40", "--tokens-per-s", "20")
    post(sim.url + "/api/generate", {"model": "llama3"})
    a = raw_send(sim.url, "POST", "/v1/responses", dict(RESP, stream=True))
    wait_stat(sim, "in_flight", 1)
    b = raw_send(sim.url, "POST", "/v1/messages", MSG)
    wait_stat(sim, "queued", 1)
    b.close()
    wait_stat(sim, "cancelled", 1)
    eq(sim.stats()["queued"], 0)
    a.close()
    wait_stat(sim, "cancelled", 2, timeout=5 * SLOW)
    sim.stop()


def test_clean_exit():
    eq(S.stop(), 0)


run(globals())
