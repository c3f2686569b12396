"""ollama-proxy: real client libraries (ollama-js and the OpenAI SDK, from
the npm registry, versions pinned in tests/proxy/compat/package.json) work
through the proxy by changing nothing but the URL, streamed and not; their
embeddings are the backend's numbers; with auth keys configured they work
with the right key and get a 401 error with a wrong one."""
import json
import os
import shutil
import struct
import subprocess

from harness import BUILD, SRC, Proxy, Sim, eq, get, ok, post, run, wait_until, SLOW

KEY, WRONG = "s3cret", "not-the-key"
AUTH = 'auth = { keys = ( { name = "batch"; key = "%s"; admin = false; } ); };' % KEY


def _install():
    """npm install once per build folder, from the pinned package.json."""
    d = os.path.join(BUILD, "compat")
    if not os.path.isdir(os.path.join(d, "node_modules", "openai")):
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


run(globals())
