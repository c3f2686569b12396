"""ollama-sim: every endpoint's shape, framing, Content-Type, and error texts."""
import json
import re
import socket
import subprocess

import simlib
from simlib import get, post, http, ndjson, sse, Sim
from harness import binary, eq, ok, run

JSON = "application/json; charset=utf-8"
S = Sim("--ttft-ms", "5", "--tokens", "6", "--tokens-per-s", "500",
        models="llama3:latest,qwen2.5:7b,nomic-embed-text")
U = S.url
HEX64 = re.compile(r"^[0-9a-f]{64}$")
METRICS = ["total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration"]


def check_metrics(o):
    for k in METRICS:
        ok(isinstance(o.get(k), int) and o[k] > 0, "metric %s in %r" % (k, o))
    ok(o["total_duration"] >= o["load_duration"] + o["prompt_eval_duration"] + o["eval_duration"],
       "total >= load + prompt_eval + eval")


def test_root_and_version():
    r = get(U + "/")
    eq(r.status, 200)
    eq(r.body, b"Ollama is running")
    eq(r.headers["content-type"], "text/plain; charset=utf-8")
    eq(http("HEAD", U + "/").status, 200)
    r = get(U + "/api/version")
    eq(r.headers["content-type"], JSON)
    ok(re.match(r"^\d+\.\d+\.\d+$", r.json()["version"]), r.body)


def test_tags():
    r = get(U + "/api/tags")
    eq(r.headers["content-type"], JSON)
    models = r.json()["models"]
    eq(sorted(m["name"] for m in models),
       ["llama3:latest", "nomic-embed-text:latest", "qwen2.5:7b"])
    for m in models:
        eq(list(m.keys()), ["name", "model", "modified_at", "size", "digest", "details"])
        eq(m["name"], m["model"])
        ok(HEX64.match(m["digest"]), m["digest"])
        eq(list(m["details"].keys()), ["parent_model", "format", "family", "families",
                                       "parameter_size", "quantization_level"])
    eq(http("HEAD", U + "/api/tags").status, 200)
    v1 = get(U + "/v1/models").json()
    eq(v1["object"], "list")
    eq(sorted(d["id"] for d in v1["data"]), sorted(m["name"] for m in models))
    eq(v1["data"][0]["owned_by"], "library")
    r = get(U + "/v1/models/llama3:latest")
    eq(r.json()["id"], "llama3:latest")
    r = get(U + "/v1/models/nope:1")
    eq(r.status, 404)
    eq(r.json()["error"]["type"], "not_found_error")


def test_show():
    r = post(U + "/api/show", {"model": "LLaMA3"})
    eq(r.status, 200)
    eq(r.headers["content-type"], JSON)
    o = r.json()
    for k in ["modelfile", "parameters", "template", "details", "model_info", "capabilities",
              "modified_at"]:
        ok(k in o, "show has %s" % k)
    ok("completion" in o["capabilities"], o["capabilities"])
    r = post(U + "/api/show", {"name": "nope"})
    eq(r.status, 404)
    eq(r.json(), {"error": "model 'nope' not found"})


def test_generate_stream():
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "Why is the sky blue?"})
    eq(r.status, 200)
    eq(r.headers["content-type"], "application/x-ndjson")
    eq(r.headers.get("transfer-encoding"), "chunked")
    objs = ndjson(r.body)
    eq(len(objs), 7, "6 tokens + final")
    for o in objs[:-1]:
        eq(list(o.keys()), ["model", "created_at", "response", "done"])
        eq(o["model"], "llama3")
        eq(o["done"], False)
        ok(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", o["created_at"]), o)
    f = objs[-1]
    eq(list(f.keys())[:6], ["model", "created_at", "response", "done", "done_reason", "context"])
    eq(f["done"], True)
    eq(f["done_reason"], "stop")
    eq(f["response"], "")
    eq(f["eval_count"], 6)
    check_metrics(f)


def test_generate_nostream():
    body = {"model": "llama3", "prompt": "Why is the sky blue?", "stream": False}
    r = post(U + "/api/generate", body)
    eq(r.headers["content-type"], JSON)
    ok("content-length" in r.headers, r.headers)
    o = r.json()
    streamed = ndjson(post(U + "/api/generate", dict(body, stream=True)).body)
    eq(o["response"], "".join(x["response"] for x in streamed), "same text streamed or not")
    ok(len(o["response"].split()) == 6, o["response"])
    eq(o["done_reason"], "stop")
    ok(isinstance(o["context"], list), "context on generate")
    check_metrics(o)
    r = post(U + "/api/generate", dict(body, options={"num_predict": 3}))
    eq(r.json()["done_reason"], "length")
    eq(r.json()["eval_count"], 3)


def test_chat():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    r = post(U + "/api/chat", {"model": "llama3", "messages": msgs})
    eq(r.headers["content-type"], "application/x-ndjson")
    objs = ndjson(r.body)
    for o in objs[:-1]:
        eq(list(o.keys()), ["model", "created_at", "message", "done"])
        eq(o["message"]["role"], "assistant")
    f = objs[-1]
    eq(f["message"], {"role": "assistant", "content": ""})
    ok("context" not in f, "no context on chat")
    eq(f["done_reason"], "stop")
    check_metrics(f)
    r = post(U + "/api/chat", {"model": "llama3", "messages": msgs, "stream": False})
    eq(r.headers["content-type"], JSON)
    o = r.json()
    eq(o["message"]["content"], "".join(x["message"]["content"] for x in objs))
    eq(list(o.keys())[:5], ["model", "created_at", "message", "done", "done_reason"])


def test_v1_chat():
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    r = post(U + "/v1/chat/completions", body)
    eq(r.headers["content-type"], JSON, "/v1 does not stream by default")
    o = r.json()
    eq(o["object"], "chat.completion")
    ok(o["id"].startswith("chatcmpl-"), o["id"])
    eq(o["system_fingerprint"], "fp_ollama")
    eq(o["choices"][0]["message"]["role"], "assistant")
    eq(o["choices"][0]["finish_reason"], "stop")
    u = o["usage"]
    eq(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"])
    r = post(U + "/v1/chat/completions",
             dict(body, stream=True, stream_options={"include_usage": True}))
    eq(r.headers["content-type"], "text/event-stream")
    ev = sse(r.body)
    eq(ev[-1], "[DONE]")
    chunks = [json.loads(e) for e in ev[:-1]]
    eq(chunks[0]["choices"][0]["delta"]["role"], "assistant")
    for c in chunks:
        eq(c["object"], "chat.completion.chunk")
        eq(c["id"], chunks[0]["id"])
        eq(c["created"], chunks[0]["created"])
    fin = chunks[-2]
    eq(fin["choices"][0]["delta"], {})
    eq(fin["choices"][0]["finish_reason"], "stop")
    eq(chunks[-1]["choices"], [])
    eq(chunks[-1]["usage"]["completion_tokens"], 6)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-2])
    eq(text, o["choices"][0]["message"]["content"])
    r = post(U + "/v1/chat/completions", dict(body, stream=True))
    chunks = sse(r.body)
    eq(chunks[-1], "[DONE]")
    ok("usage" not in json.loads(chunks[-2]), "no usage chunk without include_usage")


def test_v1_completions():
    body = {"model": "llama3", "prompt": "once upon"}
    o = post(U + "/v1/completions", body).json()
    eq(o["object"], "text_completion")
    ok(o["id"].startswith("cmpl-"), o["id"])
    eq(o["choices"][0]["finish_reason"], "stop")
    r = post(U + "/v1/completions", dict(body, stream=True))
    eq(r.headers["content-type"], "text/event-stream")
    ev = sse(r.body)
    eq(ev[-1], "[DONE]")
    chunks = [json.loads(e) for e in ev[:-1]]
    eq("".join(c["choices"][0]["text"] for c in chunks), o["choices"][0]["text"])
    eq(chunks[-1]["choices"][0]["finish_reason"], "stop")


def test_embeddings():
    r = post(U + "/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]})
    eq(r.headers["content-type"], JSON)
    o = r.json()
    eq(list(o.keys()), ["model", "embeddings", "total_duration", "load_duration",
                        "prompt_eval_count"])
    eq(len(o["embeddings"]), 2)
    for v in o["embeddings"]:
        eq(len(v), 16)
        ok(abs(sum(x * x for x in v) - 1) < 1e-4, "normalised")
    o2 = post(U + "/api/embed", {"model": "nomic-embed-text", "input": "a"}).json()
    eq(o2["embeddings"][0], o["embeddings"][0], "deterministic")
    eq(post(U + "/api/embed", {"model": "nomic-embed-text", "input": []}).json(),
       {"model": "nomic-embed-text", "embeddings": []})
    r = post(U + "/api/embed", {"model": "nomic-embed-text", "input": 5})
    eq((r.status, r.json()), (400, {"error": "invalid input type"}))
    o = post(U + "/api/embeddings", {"model": "nomic-embed-text", "prompt": "a"}).json()
    eq(list(o.keys()), ["embedding"])
    eq(len(o["embedding"]), 16)
    o = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": ["x", "y"]}).json()
    eq(o["object"], "list")
    eq([d["index"] for d in o["data"]], [0, 1])
    eq(o["data"][0]["object"], "embedding")
    eq(o["usage"]["prompt_tokens"], o["usage"]["total_tokens"])
    r = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": []})
    eq(r.status, 400)
    eq(r.json()["error"]["message"], "invalid input")
    r = post(U + "/api/embed", {"model": "nope", "input": "x"})
    eq(r.json(), {"error": 'model "nope" not found, try pulling it first'})


def test_load_unload():
    r = post(U + "/api/generate", {"model": "qwen2.5:7b"})
    eq(r.headers["content-type"], JSON, "load reply is one JSON object even when streaming")
    o = r.json()
    eq(list(o.keys()), ["model", "created_at", "response", "done", "done_reason"])
    eq(o["done_reason"], "load")
    names = [m["name"] for m in get(U + "/api/ps").json()["models"]]
    ok("qwen2.5:7b" in names, names)
    ps = [m for m in get(U + "/api/ps").json()["models"] if m["name"] == "qwen2.5:7b"][0]
    eq(list(ps.keys()), ["name", "model", "size", "digest", "details", "expires_at",
                         "size_vram", "context_length"])
    o = post(U + "/api/chat", {"model": "qwen2.5:7b", "messages": [], "keep_alive": 0}).json()
    eq(o["done_reason"], "unload")
    eq(o["message"], {"role": "assistant", "content": ""})
    names = [m["name"] for m in get(U + "/api/ps").json()["models"]]
    ok("qwen2.5:7b" not in names, names)
    o = post(U + "/api/chat", {"model": "qwen2.5:7b", "messages": []}).json()
    eq(o["done_reason"], "load")


def test_keep_alive_rules():
    for ka, status in [("-1", 400), ("3600", 400), ("10m", 200), ("-1m", 200), (-1, 200),
                       (30, 200), ("1h30m", 200), ("abc", 400)]:
        r = post(U + "/api/generate", {"model": "llama3", "prompt": "x", "stream": False,
                                       "keep_alive": ka})
        eq(r.status, status, "keep_alive %r" % (ka,))
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "x", "keep_alive": "3600"})
    eq(r.json(), {"error": 'time: missing unit in duration "3600"'})


def test_errors():
    r = post(U + "/api/generate", b"")
    eq((r.status, r.json()), (400, {"error": "missing request body"}))
    r = post(U + "/api/chat", b"{bad")
    eq(r.status, 400)
    eq(r.headers["content-type"], JSON)
    ok(r.json()["error"], r.body)
    r = post(U + "/api/chat", {"messages": []})
    eq((r.status, r.json()), (400, {"error": "model is required"}))
    r = post(U + "/api/generate", {"prompt": "x"})
    eq((r.status, r.json()), (404, {"error": "model '' not found"}))
    r = post(U + "/api/generate", {"model": "Nope:Big", "prompt": "x"})
    eq((r.status, r.json()), (404, {"error": "model 'Nope:Big' not found"}))
    r = post(U + "/api/chat", {"model": "nomic-embed-text",
                               "messages": [{"role": "user", "content": "x"}]})
    eq((r.status, r.json()), (400, {"error": '"nomic-embed-text" does not support chat'}))
    r = post(U + "/api/generate", {"model": "llama3", "prompt": "x", "stream": "yes"})
    eq((r.status, r.json()), (400, {"error": "json: cannot unmarshal string into Go struct "
                                             "field GenerateRequest.stream of type bool"}))
    r = post(U + "/api/chat", {"model": "llama3", "messages": "hi"})
    eq(r.status, 400)
    ok("ChatRequest.messages" in r.json()["error"], r.body)
    r = get(U + "/api/nothing")
    eq((r.status, r.body, r.headers["content-type"]),
       (404, b"404 page not found", "text/plain; charset=utf-8"))
    r = get(U + "/api/generate")
    eq((r.status, r.body), (405, b"405 method not allowed"))
    eq(http("PUT", U + "/api/tags").status, 405)
    r = post(U + "/v1/chat/completions", {"model": "nope", "messages": [
        {"role": "user", "content": "x"}]})
    eq(r.status, 404)
    eq(r.json(), {"error": {"message": "model 'nope' not found", "type": "not_found_error",
                            "param": None, "code": None}})
    r = post(U + "/v1/chat/completions", {"model": "llama3", "messages": []})
    eq(r.status, 400)
    eq(r.json()["error"]["type"], "invalid_request_error")


def test_name_forms():
    for name in ["LLaMA3", "library/llama3:latest", "registry.ollama.ai/library/llama3:latest",
                 "llama3:latest"]:
        o = post(U + "/api/generate", {"model": name, "prompt": "x", "stream": False}).json()
        eq(o["model"], name, "model echoed as sent")
    r = post(U + "/api/generate", {"model": "qwen2.5", "prompt": "x", "stream": False})
    eq(r.status, 404, "a bare name never matches another tag")


def test_pull_delete_copy():
    r = post(U + "/api/pull", {"model": "phi3:mini"})
    eq(r.headers["content-type"], "application/x-ndjson")
    st = [o["status"] for o in ndjson(r.body)]
    eq(st[0], "pulling manifest")
    eq(st[-1], "success")
    ok("phi3:mini" in [m["name"] for m in get(U + "/api/tags").json()["models"]], "pulled")
    eq(post(U + "/api/generate", {"model": "phi3:mini", "prompt": "x",
                                  "stream": False}).status, 200)
    r = post(U + "/api/pull", {"model": "tinyllama", "stream": False})
    eq(r.json(), {"status": "success"})
    r = post(U + "/api/copy", {"source": "phi3:mini", "destination": "phi3:copy"})
    eq((r.status, r.body), (200, b""))
    r = post(U + "/api/copy", {"source": "nope", "destination": "x"})
    eq((r.status, r.json()), (404, {"error": 'model "nope" not found'}))
    r = http("DELETE", U + "/api/delete", {"model": "phi3:mini"})
    eq((r.status, r.body), (200, b""))
    r = http("DELETE", U + "/api/delete", {"model": "phi3:mini"})
    eq((r.status, r.json()), (404, {"error": "model 'phi3:mini' not found"}))
    ok("phi3:mini" not in [m["name"] for m in get(U + "/api/tags").json()["models"]], "gone")


def test_host_and_origin():
    for host in ["evil.com", "example.org:11434", "8.8.8.8"]:
        r = get(U + "/api/tags", headers={"Host": host})
        eq((r.status, r.body), (403, b""), "Host %s" % host)
    for host in ["localhost:11434", "127.0.0.1", "foo.local", "x.internal", "10.1.2.3:80",
                 "192.168.0.9", "[::1]:11434", "a.localhost", socket.gethostname()]:
        eq(get(U + "/api/tags", headers={"Host": host}).status, 200, "Host %s" % host)
    r = get(U + "/api/tags", headers={"Origin": "http://evil.com"})
    eq((r.status, r.body), (403, b""))
    r = get(U + "/api/tags", headers={"Origin": "http://localhost:3000"})
    eq(r.status, 200)
    eq(r.headers.get("access-control-allow-origin"), "http://localhost:3000")
    eq(get(U + "/api/tags", headers={"Origin": "vscode-webview://abc"}).status, 200)


def test_stats_shape():
    simlib.get(U + "/api/tags", headers={"X-Probe": "42"})
    s = S.stats()
    eq(list(s.keys()), ["in_flight", "max_in_flight", "queued", "served", "cancelled",
                        "rejected", "failed", "resets", "loads", "requests", "reloads",
                        "prompt_processed", "prompt_reused", "prompt_restored", "last_headers",
                        "paths", "models"])
    ok(s["paths"].get("/api/tags", 0) >= 1, s["paths"])
    eq(s["last_headers"].get("X-Probe"), "42")
    m = s["models"]["llama3:latest"]
    eq(list(m.keys()), ["in_flight", "max_in_flight", "queued", "served", "cancelled",
                        "rejected", "loads", "reloads", "prompt_processed", "prompt_reused",
                        "prompt_restored", "loaded", "slots"])
    ok(s["served"] > 0 and s["requests"] >= s["served"], s)
    eq(S.reset().json(), {})
    s = S.stats()
    eq((s["served"], s["requests"], s["max_in_flight"]), (0, 0, 0))


def test_cli():
    sim = binary("ollama-sim")
    r = subprocess.run([sim, "--help"], capture_output=True, text=True)
    eq(r.returncode, 0)
    ok("--port" in r.stdout and "tokens_per_s / (1 + F * (B - 1))" in r.stdout, r.stdout)
    r = subprocess.run([sim, "--version"], capture_output=True, text=True)
    eq(r.returncode, 0)
    ok(r.stdout.strip(), "version printed")
    for args, word in [(["--port", "0", "--bogus"], "--bogus"),
                       (["--port", "0", "--parallel", "x"], "parallel"),
                       (["--port", "0", "--fail-rate", "2"], "fail-rate"),
                       (["--models", "a"], "--port")]:
        r = subprocess.run([sim] + args, capture_output=True, text=True)
        eq(r.returncode, 2, args)
        eq(len(r.stderr.strip().splitlines()), 1, r.stderr)
        ok(word in r.stderr, r.stderr)


def test_sigterm_exit_zero():
    eq(S.stop(), 0)


run(globals())
