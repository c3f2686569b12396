"""ollama-sim: /v1/embeddings encoding_format. "float" (or absent) answers
JSON numbers; "base64" answers, per embedding, the base64 of the
little-endian float32 array, as OpenAI and Ollama do (the OpenAI SDKs ask
for base64 by default). Embeddings are a pure function of the text."""
import base64
import struct

from simlib import post, Sim
from harness import eq, ok, run

S = Sim("--ttft-ms", "1", "--tokens-per-s", "0", models="llama3:latest,nomic-embed-text")
U = S.url
DIM = 16
TEXTS = ["hello", "world", "the quick brown fox", "caf\u00e9 \u2603", "hello"]


def v1(url, inp, fmt=None, model="nomic-embed-text"):
    body = {"model": model, "input": inp}
    if fmt is not None:
        body["encoding_format"] = fmt
    r = post(url + "/v1/embeddings", body)
    eq(r.status, 200, "%r %r: %r" % (inp, fmt, r))
    return r.json()


def f32(x):
    """X rounded to the nearest float32 (what a float32 client holds)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def floats(o):
    return [d["embedding"] for d in o["data"]]


def decode(s):
    ok(isinstance(s, str), "base64 embedding is a string: %r" % (s,))
    raw = base64.b64decode(s, validate=True)  # standard alphabet, padded
    eq(len(raw), 4 * DIM, "bytes per embedding")
    return list(struct.unpack("<%df" % DIM, raw))


def test_base64_is_le_float32_of_the_float_answer():
    fl = v1(U, TEXTS, "float")
    b64 = v1(U, TEXTS, "base64")
    for i, (d, vec) in enumerate(zip(b64["data"], floats(fl))):
        eq(len(vec), DIM)
        ok(all(isinstance(x, float) for x in vec), "float answer is numbers")
        eq(decode(d["embedding"]), [f32(x) for x in vec], "item %d: base64 == float32(float)" % i)
        eq((d["object"], d["index"]), ("embedding", i))
    eq(len(b64["data"]), len(TEXTS))
    eq([k for k in b64], ["object", "data", "model", "usage"])
    eq((b64["object"], b64["model"], b64["usage"]), (fl["object"], fl["model"], fl["usage"]))
    # A single string input, base64, on a chat model too (/v1 embeds with any model).
    one = v1(U, "hello", "base64", model="llama3")
    eq(decode(one["data"][0]["embedding"]), [f32(x) for x in floats(fl)[0]])


def test_float_is_the_default():
    eq(v1(U, TEXTS), v1(U, TEXTS, "float"), "absent == float")
    eq(v1(U, TEXTS, ""), v1(U, TEXTS, "float"), "empty string == float")
    o = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": ["a"],
                                    "encoding_format": None}).json()
    eq(o, v1(U, ["a"], "float"), "null == float")


def test_case_insensitive_as_ollama():
    eq(v1(U, TEXTS, "Float"), v1(U, TEXTS, "float"))
    eq(v1(U, TEXTS, "BASE64"), v1(U, TEXTS, "base64"))


def test_embeddings_are_deterministic_from_the_text():
    fl = floats(v1(U, TEXTS, "float"))
    eq(fl[0], fl[4], "same text in one batch, same vector")
    eq(len({tuple(v) for v in fl}), len(set(TEXTS)), "different texts, different vectors")
    eq(floats(v1(U, ["hello"], "float"))[0], fl[0], "alone or in a batch")
    for v in fl:
        ok(abs(sum(x * x for x in v) - 1) < 1e-5, "L2-normalised: %r" % v)
    # Another process, another seed: the same numbers.
    s2 = Sim("--ttft-ms", "1", "--tokens-per-s", "0", "--seed", "7",
             models="nomic-embed-text")
    eq(v1(s2.url, TEXTS, "float"), v1(U, TEXTS, "float"), "same text, same answer across sims")
    eq(v1(s2.url, TEXTS, "base64"), v1(U, TEXTS, "base64"))
    eq(s2.stop(), 0)
    # The native endpoint embeds the same text to the same vector.
    nat = post(U + "/api/embed", {"model": "nomic-embed-text", "input": TEXTS}).json()
    eq(nat["embeddings"], fl, "/api/embed == /v1/embeddings float")


def test_base64_is_exact_float32_bytes():
    # Every decoded value survives a float32 round trip bit for bit, and the
    # encoding is canonical: re-encoding the decoded floats gives the string.
    for d in v1(U, TEXTS, "base64")["data"]:
        vals = decode(d["embedding"])
        eq(base64.b64encode(struct.pack("<%df" % DIM, *vals)).decode(), d["embedding"])
        ok(len(d["embedding"]) % 4 == 0 and "\n" not in d["embedding"], "one padded line")


def test_bad_encoding_format():
    r = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": "x",
                                    "encoding_format": "hex"})
    eq(r.status, 400)
    eq(r.json()["error"]["message"],
       "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].")
    eq(r.json()["error"]["type"], "invalid_request_error")
    r = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": "x",
                                    "encoding_format": 5})
    eq(r.status, 400)
    eq(r.json()["error"]["message"],
       "json: cannot unmarshal number into Go struct field EmbedRequest.encoding_format"
       " of type string")
    # Checked before the input, as in Ollama's middleware.
    r = post(U + "/v1/embeddings", {"model": "nomic-embed-text", "input": [],
                                    "encoding_format": "hex"})
    eq(r.status, 400)
    ok("encoding_format" in r.json()["error"]["message"], r.json())


def test_sigterm_exit_zero():
    eq(S.stop(), 0)


run(globals())
