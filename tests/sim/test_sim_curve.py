"""ollama-sim: the GPU model. Aggregate generation and prompt throughput,
measured from outside (wall clock, N requests in flight at once), match the
configured batching curve within 10%; the curve flattens (the knee); the old
--slowdown rule is the curve's special case; the command line refuses
conflicting or malformed curves.

How it stays robust under ASan and ctest -j2: every level runs about 1.5 s
of real time, with N requests started together on pre-opened connections
(so the start skew is milliseconds), non-streamed (the client reads one
reply per request), and a moderate --time-scale so the sim does at most a
few thousand timer ticks a second. A late timer does not cost throughput:
the sim's pace clock owes the tokens and the next tick emits them."""
import http.client
import json
import subprocess
import threading
import time

import harness
from simlib import Sim, post
from harness import eq, ok, run

TS = 10  # --time-scale
WALL = 1.5  # real seconds a level should take
TOL = 0.10

# The default preset (gb10-gpt-oss-20b): llama.cpp benches/dgx-spark.md,
# llama-batched-bench PP=512 TG=32 on a DGX Spark (GB10), gpt-oss 20B MXFP4.
GEN = [(1, 81.11), (2, 95.00), (4, 151.90), (8, 254.09), (16, 400.94), (32, 614.82)]
PROMPT = [(1, 1311.72), (2, 3754.20), (4, 3965.01), (8, 3994.63), (16, 3988.71), (32, 3986.29)]


def curve(points, b):
    """The sim's rule: linear between points, through 0 below, flat beyond."""
    if b <= points[0][0]:
        return points[0][1] * b / points[0][0]
    for (b0, t0), (b1, t1) in zip(points, points[1:]):
        if b <= b1:
            return t0 + (b - b0) / (b1 - b0) * (t1 - t0)
    return points[-1][1]


def burst(sim, n, body):
    """N copies of BODY (a /api/generate request; or BODY(i), a function
    giving request i) at once. Returns the replies and the real seconds from
    the first send to the last reply."""
    conns = [http.client.HTTPConnection("127.0.0.1", sim.port, timeout=60 * harness.SLOW)
             for _ in range(n)]
    for c in conns:
        c.connect()
    gate = threading.Barrier(n)
    out, t_send, t_recv = [None] * n, [0.0] * n, [0.0] * n
    data = [json.dumps(body(i) if callable(body) else body) for i in range(n)]

    def one(i):
        gate.wait()
        t_send[i] = time.monotonic()
        conns[i].request("POST", "/api/generate", body=data[i])
        r = conns[i].getresponse()
        out[i] = (r.status, r.read())
        t_recv[i] = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for c in conns:
        c.close()
    for st, b in out:
        eq(st, 200, b[:200])
    return [json.loads(b) for _, b in out], max(t_recv) - min(t_send)


def measure_gen(sim, n, total):
    """Aggregate generation tokens/s (simulated time) with N in flight, on a
    sim whose time to first token is 0. TOTAL is the curve's value at N,
    used only to size the run. Each reply's first token comes with its
    prompt, so the wall time covers its other T - 1 tokens."""
    tokens = max(20, int(total / n * WALL * TS))
    replies, wall = burst(sim, n, {"model": "llama3", "prompt": "x", "stream": False,
                                   "options": {"num_predict": tokens}})
    for o in replies:
        eq(o["eval_count"], tokens)
    outside = n * (tokens - 1) / (wall * TS)
    inside = sum((o["eval_count"] - 1) / (o["eval_duration"] / 1e9) for o in replies)
    return outside, inside


def check(what, got, want):
    ok(abs(got - want) <= TOL * want,
       "%s: measured %.1f tokens/s, configured %.1f (%+.1f%%, limit 10%%)" %
       (what, got, want, 100 * (got / want - 1)))


def test_generation_curve_and_knee():
    sim = Sim("--parallel", 64, "--curve", "default", "--ttft-ms", 0, "--time-scale", TS,
              "--tokens", 100000)
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": ""})  # load it
    got = {}
    for n in (1, 4, 16, 64):
        want = curve(GEN, n)
        outside, inside = measure_gen(sim, n, want)
        print("in flight %2d: configured %6.1f, measured %6.1f (wall clock), %6.1f (replies)"
              % (n, want, outside, inside))
        check("%d in flight, wall clock" % n, outside, want)
        check("%d in flight, eval_duration" % n, inside, want)
        got[n] = outside
    eq(sim.stats()["max_in_flight"], 64)
    # The knee: from 1 to 16 sequences the aggregate grows about 5x, from 16
    # to 64 (four times the sequences) by half, and one slot at 64 in flight
    # runs at an eighth of a lone slot's pace. (Bounds that hold even with
    # every level 10% off in the worst direction.)
    ok(got[4] > 1.4 * got[1] and got[16] > 2.0 * got[4], got)
    ok(got[64] < 2.0 * got[16], "flattens past 16: %r" % got)
    ok(got[64] / 64 < got[1] / 6, "per-slot pace falls: %r" % got)
    sim.stop()


def test_prompt_curve():
    """Prompts of known size, N at once, one token each: the wall time is
    prompt processing, at pcurve(N) tokens/s between them. Each prompt is
    new (a serial first), so no slot's prompt cache holds any of it."""
    sim = Sim("--parallel", 64, "--prompt-curve", "default", "--tokens", 1,
              "--tokens-per-s", 0, "--time-scale", TS)
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": ""})
    for n in (1, 4, 16):
        want = curve(PROMPT, n)
        chars = int(want / n * WALL * TS) * 4
        replies, wall = burst(sim, n, lambda i: {
            "model": "llama3", "prompt": "%04d" % (100 * n + i) + "w" * (chars - 4),
            "stream": False})
        ptok = replies[0]["prompt_eval_count"]
        eq(ptok, chars // 4 + 8, "prompt tokens: characters / 4 + 8")
        outside = n * ptok / (wall * TS)
        inside = sum(ptok / (o["prompt_eval_duration"] / 1e9) for o in replies)
        print("prompts %2d: configured %6.1f, measured %6.1f (wall clock), %6.1f (replies)"
              % (n, want, outside, inside))
        check("%d prompts, wall clock" % n, outside, want)
        check("%d prompts, prompt_eval_duration" % n, inside, want)
    sim.stop()


def test_custom_curve_interpolates_and_flattens():
    sim = Sim("--parallel", 8, "--curve", "1:100,4:400,6:480", "--ttft-ms", 0,
              "--time-scale", TS, "--tokens", 100000)
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": ""})
    for n, want in ((2, 200.0), (5, 440.0), (8, 480.0)):  # on, between, beyond the points
        outside, inside = measure_gen(sim, n, want)
        check("custom curve, %d in flight" % n, outside, want)
        check("custom curve, %d in flight (replies)" % n, inside, want)
    sim.stop()


def test_slowdown_is_the_special_case():
    """No curve: curve(B) = B * rate / (1 + F * (B - 1)), as before."""
    sim = Sim("--parallel", 8, "--tokens-per-s", 50, "--slowdown", 0.5, "--ttft-ms", 0,
              "--time-scale", TS, "--tokens", 100000)
    post(sim.url + "/api/generate", {"model": "llama3", "prompt": ""})
    for n in (1, 4, 8):
        want = n * 50 / (1 + 0.5 * (n - 1))
        outside, _ = measure_gen(sim, n, want)
        check("--slowdown 0.5, %d in flight" % n, outside, want)
    sim.stop()


def refused(*args):
    p = subprocess.run([harness.binary("ollama-sim"), "--port", "0"] + list(args),
                       capture_output=True, text=True, timeout=10 * harness.SLOW)
    eq(p.returncode, 2, "%r: %s" % (args, p.stderr))
    return p.stderr


def test_command_line():
    ok("replaces --tokens-per-s" in refused("--gpu", "default", "--tokens-per-s", "10"))
    ok("replaces --tokens-per-s" in refused("--curve", "1:10", "--slowdown", "0"))
    ok("replaces --ttft-ms" in refused("--prompt-curve", "1:10", "--ttft-ms", "5"))
    ok("no preset" in refused("--gpu", "rtx9999"))
    for bad in ("", "1:", "1:0", "0:5", "2:5,1:9", "1:5,", "1.5:9", "1:5;2:6", "x:1"):
        ok("--curve" in refused("--curve", bad), bad)
    p = subprocess.run([harness.binary("ollama-sim"), "--gpu", "list"], capture_output=True,
                       text=True, timeout=10 * harness.SLOW)
    eq(p.returncode, 0)
    ok("gb10-gpt-oss-20b" in p.stdout and "benches/dgx-spark.md" in p.stdout, p.stdout)
    # A preset name works for one curve alone, and the sim says what it runs.
    sim = Sim("--curve", "gb10-gemma3-4b", "--ttft-ms", 0, "--tokens", 3)
    ok("curve gb10-gemma3-4b" in sim.proc.output(), sim.proc.tail(3))
    eq(post(sim.url + "/api/generate", {"model": "llama3", "prompt": "x"}).status, 200)
    sim.stop()


run(globals())
