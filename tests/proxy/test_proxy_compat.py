"""ollama-proxy: real client libraries (ollama-js, the OpenAI SDK and the
Anthropic SDK, from the npm registry, versions pinned in
tests/proxy/compat/package.json) work through the proxy by changing nothing
but the URL, streamed and not; their embeddings are the backend's numbers;
with auth keys configured they work with the right key (in each SDK's own
header) and get a 401 error with a wrong one; the Anthropic SDK and the
OpenAI SDK's Responses API are routed by model, their tokens counted, their
errors (before the head and inside a cut stream) their own shapes; a model
made with ollama-js create from an uploaded blob is on every backend."""
import json
import os
import shutil
import struct
import subprocess

from harness import BUILD, SRC, Proxy, Sim, eq, get, ok, post, run, wait_until, SLOW

KEY, WRONG = "s3cret", "not-the-key"
AUTH = 'auth = { keys = ( { name = "batch"; key = "%s"; admin = false; } ); };' % KEY


def _install():
    """npm install in the build folder, from the pinned package.json, when
    a package it names is missing there."""
    d = os.path.join(BUILD, "compat")
    src = os.path.join(SRC, "tests", "proxy", "compat", "package.json")
    with open(src) as f:
        deps = json.load(f)["dependencies"]
    if not all(os.path.isdir(os.path.join(d, "node_modules", p)) for p in deps):
        os.makedirs(d, exist_ok=True)
        for f in ("package.json", "clients.mjs"):
            shutil.copy(os.path.join(SRC, "tests", "proxy", "compat", f), d)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=d, check=True, timeout=300)
    shutil.copy(os.path.join(SRC, "tests", "proxy", "compat", "clients.mjs"), d)
    return d


def _clients(d, *args):
    """Run clients.mjs with ARGS; returns its JSON line."""
    r = subprocess.run(["node", "clients.mjs"] + list(args), cwd=d, capture_output=True,
                       text=True, timeout=120 * SLOW)
    eq(r.returncode, 0, "clients.mjs failed:\n" + r.stdout + r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _sims():
    return [Sim("--parallel", "2", "--ttft-ms", "10", "--tokens", "8", "--tokens-per-s", "200")
            for _ in range(2)]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_vectors(got, want, what):
    """GOT (a client's vectors) equals WANT (the backend's float answer)
    within float32 precision: one float32 ulp at most."""
    eq(len(got), len(want), what + ": count")
    for i, (g, w) in enumerate(zip(got, want)):
        eq(len(g), len(w), "%s[%d]: length" % (what, i))
        for j, (x, y) in enumerate(zip(g, w)):
            ok(abs(x - y) <= 2.0 ** -23 * max(abs(x), abs(y), 2.0 ** -126),
               "%s[%d][%d]: %r != backend's %r (float32 %r)" % (what, i, j, x, y, f32(y)))


def test_ollama_js_and_openai_sdk():
    d = _install()
    a, b = _sims()
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)])
    out = _clients(d, px.url)
    print({k: v for k, v in out.items() if "embed" not in k})
    ok(out["chat"] and out["generate"], "non-streamed chat and generate")
    ok(out["chat_stream_parts"] >= 5 and out["chat_stream_done"], "streamed chat")
    eq(out["list"], ["llama3:latest"], "list")
    eq(out["missing"], "model 'nope' not found", "Ollama's error reaches the client library")
    ok(out["openai"], "OpenAI non-streamed")
    ok(out["openai_stream_deltas"] >= 5, "OpenAI streamed deltas")
    eq(out["openai_finish"], "stop", "OpenAI finish_reason")

    # Embeddings: the numbers a backend gives for the same text, asked
    # directly (the sim's vectors depend on the text only, so either
    # backend will do).
    def direct_v1(inp):
        r = post(a.url + "/v1/embeddings",
                 {"model": "llama3", "input": inp, "encoding_format": "float"})
        eq(r.status, 200, "direct /v1/embeddings")
        return [e["embedding"] for e in r.json()["data"]]
    native = post(a.url + "/api/embed", {"model": "llama3", "input": ["a", "b"]}).json()
    same_vectors(out["embed"], native["embeddings"], "ollama-js embed")
    # The OpenAI SDK's default asks for base64 and decodes float32 bytes.
    same_vectors(out["openai_embed"], direct_v1(["x", "hello world"]), "OpenAI embeddings")
    eq(out["openai_embed_index"], [0, 1], "OpenAI embeddings index")
    same_vectors([out["openai_embed_one"]], direct_v1("x"), "OpenAI embeddings, one string")
    same_vectors(out["openai_embed_float"], direct_v1(["x", "hello world"]),
                 "OpenAI embeddings, encoding_format float")

    served = a.stats()["served"] + b.stats()["served"]
    ok(a.stats()["served"] > 0 and b.stats()["served"] > 0, "both backends used")
    ok(served >= 6, "served %d" % served)
    px.stop()


def test_ollama_js_pull_and_delete():
    d = _install()
    a, b = _sims()
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)], extra="models = { refresh_s = 0.2; };")
    wait_until(lambda: all(x["models"] for x in px.status()["backends"]), what="discovery")
    out = _clients(d, px.url, "manage")
    print(out)
    eq(out["progress"][-1], {"status": "success", "backend": None}, "one success at the end")
    eq({p["backend"] for p in out["progress"][:-1]}, {"a", "b"},
       "ollama-js saw each backend's progress")
    ok("qwen2.5:7b" in out["listed"], "listed after the pull: %r" % out["listed"])
    ok("qwen2.5:7b" not in out["after"], "gone after the delete: %r" % out["after"])
    for sim in (a, b):
        ok("qwen2.5:7b" not in [m["name"] for m in get(sim.url + "/api/tags").json()["models"]],
           "deleted on every backend")
    px.stop()


def _is_401(o, what):
    ok(not o["ok"], "%s: expected an HTTP 401 error, the call succeeded: %r" % (what, o))
    eq(o["status"], 401, what + ": status")


def test_keys():
    """auth.keys: ollama-js with `headers: {Authorization: "Bearer KEY"}` and
    the OpenAI SDK with `apiKey: KEY` work; a wrong key (and ollama-js with
    none) gets 401, surfaced as each library's own error: ollama-js a
    ResponseError with status_code 401 and the text of {"error": "..."}, the
    OpenAI SDK an AuthenticationError carrying {"error": {"message", "type"}}."""
    d = _install()
    a, b = _sims()
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)], extra=AUTH)
    out = _clients(d, px.url, "auth", KEY, WRONG)
    print(json.dumps(out, indent=1))

    for how in ("chat", "stream"):
        g = out["ollama_good"][how]
        ok(g["ok"], "ollama-js %s with the key: %r" % (how, g))
        g = out["openai_good"][how]
        ok(g["ok"], "OpenAI SDK %s with the key: %r" % (how, g))
    ok(out["ollama_good"]["chat"]["done"] and out["ollama_good"]["chat"]["content"],
       "ollama-js chat")
    ok(out["ollama_good"]["stream"]["parts"] >= 5 and out["ollama_good"]["stream"]["done"],
       "ollama-js streamed chat")
    ok(out["openai_good"]["chat"]["content"], "OpenAI chat")
    ok(out["openai_good"]["stream"]["deltas"] >= 5, "OpenAI streamed deltas")
    eq(out["openai_good"]["stream"]["finish"], "stop", "OpenAI finish_reason")

    for who in ("ollama_wrong", "ollama_none"):
        for how in ("chat", "stream"):
            o = out[who][how]
            what = "ollama-js %s, %s" % (how, who)
            _is_401(o, what)
            eq(o["name"], "ResponseError", what + ": error class")
            # ollama-js took the text out of a JSON {"error": "..."} body.
            ok(isinstance(o["error"], str) and o["error"] and o["error"] == o["message"] and
               not o["error"].lstrip().startswith("{") and
               not o["error"].startswith("Error 401"),
               what + ": message from {\"error\": \"...\"}: %r" % o["error"])
    for how in ("chat", "stream"):
        o = out["openai_wrong"][how]
        what = "OpenAI SDK %s, wrong key" % how
        _is_401(o, what)
        ok(o["authError"], what + ": AuthenticationError, got %r" % o["name"])
        e = o["error"]
        ok(isinstance(e, dict) and isinstance(e.get("message"), str) and e["message"] and
           isinstance(e.get("type"), str) and e["type"],
           what + ": body {\"error\": {\"message\", \"type\"}}: %r" % (e,))
        eq(o["message"], "401 " + e["message"], what + ": message")

    # Only the requests with the right key reached a backend: 2 per library.
    served = a.stats()["served"] + b.stats()["served"]
    eq(served, 4, "requests served by the backends")
    px.stop()


EVERY_KEYS = ('auth = { keys = ( { name = "user"; key = "%s"; },'
              ' { name = "ops"; key = "adm1n"; admin = true; } ); };' % KEY)


def _alpha_fleet(extra="", **sim):
    """Model alpha only on "a", llama3 on both."""
    flags = ["--ttft-ms", "5", "--tokens", "7", "--tokens-per-s", "0", "--parallel", "4"]
    for k, v in sim.items():
        flags += ["--" + k.replace("_", "-"), str(v)]
    a = Sim(*flags, models="alpha:latest,llama3:latest")
    b = Sim(*flags, models="llama3:latest")
    px = Proxy([("a", a.url, 4), ("b", b.url, 4)], extra=extra)
    wait_until(lambda: all(x["models"] for x in
                           px.status(headers={"Authorization": "Bearer adm1n"})["backends"]),
               what="discovery")
    return a, b, px


def _metric(px, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in get(px.url + "/metrics").text().splitlines():
        if line.startswith(name + "{"):
            lab = line[len(name) + 1:line.index("}")]
            if ",".join(sorted(lab.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_wire_format_client():
    """The Anthropic SDK (key as x-api-key), the OpenAI SDK's Responses
    API and models.retrieve, and ollama-js create after a blob upload done
    as the ollama CLI does it, through a proxy with keys: the answers are
    the backend's text, served by "a" (the only one with alpha), their
    tokens in /metrics, an unknown model each library's NotFoundError, and
    the created model on every backend."""
    d = _install()
    a, b, px = _alpha_fleet(extra=EVERY_KEYS)
    want = post(a.url + "/api/chat", {"model": "alpha", "stream": False, "messages": [
        {"role": "user", "content": "Tell me about Lisbon"}]}).json()
    a.reset()
    out = _clients(d, px.url, "every", KEY, "adm1n")
    print(json.dumps(out, indent=1))
    text = want["message"]["content"]

    an = out["anthropic"]
    eq(an["text"], text, "Anthropic: the backend's answer")
    eq(an["stream_text"], text, "Anthropic streamed")
    eq(an["stop"], "end_turn")
    for e in ("message_start", "content_block_delta", "message_delta", "message_stop"):
        ok(e in an["stream_events"], "Anthropic event %s: %r" % (e, an["stream_events"]))
    eq((an["usage"]["output_tokens"], an["stream_usage"]["output_tokens"]),
       (want["eval_count"], want["eval_count"]), "Anthropic usage")
    m = an["missing"]
    ok(m["notFound"] and m["status"] == 404, "Anthropic NotFoundError: %r" % m)
    eq(m["error"]["type"], "error", "Anthropic's error shape: %r" % m["error"])
    eq(m["error"]["error"], {"type": "not_found_error", "message": "model 'nope' not found"})

    rs = out["responses"]
    eq((rs["text"], rs["stream_text"]), (text, text), "Responses: the backend's answer")
    eq(rs["status"], "completed")
    eq(rs["stream_last"], "response.completed")
    eq((rs["usage"]["output_tokens"], rs["stream_usage"]["output_tokens"]),
       (want["eval_count"], want["eval_count"]), "Responses usage")
    m = rs["missing"]
    ok(m["notFound"] and m["status"] == 404, "OpenAI NotFoundError: %r" % m)
    eq(m["error"]["type"], "not_found_error")
    eq(m["error"]["message"], "model 'nope' not found")
    eq(rs["model"], {"id": "alpha", "object": "model", "owned_by": "library",
                     "created": "number"}, "models.retrieve")
    m = rs["model_missing"]
    ok(m["notFound"] and m["status"] == 404 and m["error"]["type"] == "not_found_error",
       "models.retrieve of a model nobody lists: %r" % m)

    # All four answers came from a, the only backend with alpha; b saw none.
    paths = a.stats()["paths"]
    eq((paths.get("/v1/messages"), paths.get("/v1/responses")), (2, 2), "served by a")
    bp = b.stats()["paths"]
    ok("/v1/messages" not in bp and "/v1/responses" not in bp, "b served none: %r" % bp)
    gen = _metric(px, "ollama_proxy_generated_tokens_total", backend="a", model="alpha:latest")
    eq(gen, 4 * want["eval_count"], "the four answers' tokens in /metrics")
    prompt = _metric(px, "ollama_proxy_prompt_tokens_total", backend="a", model="alpha:latest")
    eq(prompt, 2 * an["usage"]["input_tokens"] + 2 * rs["usage"]["input_tokens"],
       "their prompt tokens in /metrics")

    cr = out["create"]
    eq((cr["upload"]["first"], cr["upload"]["post"], cr["upload"]["after"]), (404, 201, 200),
       "HEAD 404, POST 201, HEAD 200")
    eq(cr["statuses"][-1], "success", "create succeeded on the fleet: %r" % cr["statuses"])
    ok("made:latest" in cr["listed"] and cr["generated"], cr)
    for sim in (a, b):
        names = [m["name"] for m in get(sim.url + "/api/tags").json()["models"]]
        ok("made:latest" in names, "made on every backend: %r" % names)
    px.stop()


def test_cut_streams_reported_by_each_library():
    """A stream the proxy ends after its head (here the backend stalls past
    timeouts.idle_s) is reported by each library as an error of its own:
    the Anthropic SDK throws its APIError from the `event: error` frame, the
    OpenAI SDK throws on the chat stream's error object and yields the
    Responses stream's response.failed. On main the Anthropic and Responses
    streams just ended, as if whole."""
    d = _install()
    a, b, px = _alpha_fleet(extra=EVERY_KEYS + "\ntimeouts = { idle_s = 0.5; };\n"
                            "health = { fail_after = 100; };", tokens_per_s=1)
    out = _clients(d, px.url, "cut", KEY)
    print(json.dumps(out, indent=1))
    an = out["anthropic"]
    ok(an["threw"] and "message_start" in an["seen"], "Anthropic SDK threw mid-stream: %r" % an)
    eq(an["error"]["error"], {"type": "api_error",
                              "message": "response stalled longer than timeouts.idle_s"})
    rs = out["responses"]
    eq(rs["seen"][-2:], ["response.failed", {"code": "server_error", "message":
                                             "response stalled longer than timeouts.idle_s"}],
       "Responses: response.failed")
    ch = out["chat"]
    ok(ch["threw"] and ch["seen"], "OpenAI chat stream threw: %r" % ch)
    ok("stalled" in ch["message"], ch["message"])
    px.stop()


run(globals())
