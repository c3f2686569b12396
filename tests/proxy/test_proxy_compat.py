"""ollama-proxy: real client libraries (ollama-js and the OpenAI SDK, from
the npm registry, versions pinned in tests/proxy/compat/package.json) work
through the proxy by changing nothing but the URL, streamed and not."""
import json
import os
import shutil
import subprocess

from harness import BUILD, SRC, Proxy, Sim, eq, ok, run, SLOW


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


def test_ollama_js_and_openai_sdk():
    d = _install()
    a = Sim("--parallel", "2", "--ttft-ms", "10", "--tokens", "8", "--tokens-per-s", "200")
    b = Sim("--parallel", "2", "--ttft-ms", "10", "--tokens", "8", "--tokens-per-s", "200")
    px = Proxy([("a", a.url, 2), ("b", b.url, 2)])
    r = subprocess.run(["node", "clients.mjs", px.url], cwd=d, capture_output=True, text=True,
                       timeout=120 * SLOW)
    eq(r.returncode, 0, "clients.mjs failed:\n" + r.stdout + r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(out)
    ok(out["chat"] and out["generate"], "non-streamed chat and generate")
    ok(out["chat_stream_parts"] >= 5 and out["chat_stream_done"], "streamed chat")
    eq(out["embed"], 2, "embed")
    eq(out["list"], ["llama3:latest"], "list")
    eq(out["missing"], "model 'nope' not found", "Ollama's error reaches the client library")
    ok(out["openai"], "OpenAI non-streamed")
    ok(out["openai_stream_deltas"] >= 5, "OpenAI streamed deltas")
    eq(out["openai_finish"], "stop", "OpenAI finish_reason")
    ok(out["openai_embed"] > 0, "OpenAI embeddings")
    served = a.stats()["served"] + b.stats()["served"]
    ok(a.stats()["served"] > 0 and b.stats()["served"] > 0, "both backends used")
    ok(served >= 6, "served %d" % served)
    px.stop()


run(globals())
