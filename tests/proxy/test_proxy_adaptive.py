"""ollama-proxy: adaptive caps (adaptive = true: max_concurrent is a
ceiling).

Hard knee: two sims whose Ollama-style parallelism is 4 (one fast, one 5x
slower) behind a ceiling of 16: each backend's cap settles near 4 (within
HARD_SETTLE_S), where
its throughput stops growing, so the excess waits in the proxy's queue and
binds late; a fixed batch is faster than with fixed caps of 16, where
requests queue inside the slow sim.

Soft knee: one sim with 64 slots whose batching curve is linear to 8 and
then nearly flat, behind a ceiling of 64, under a load of 96 in flight: the
cap settles within a slot or two of the knee the documented rule gives
(the last slot adding at least ADAPT_GAIN = 10% of an average slot's
throughput), not at 64, and stays within +-2 of its median.

Moving knee: the sim is restarted on the same port with another curve
(the knee goes from 8 to 24, then back to 8, as a model swap would move
it): the cap follows, up within UP_S and down within DOWN_S seconds
(x SLOW under the sanitizers), and rests there."""
import asyncio
import json
import os
import re
import signal
import statistics
import tempfile
import time

import aclient
from fakebackend import FakeBackend
from harness import Proxy, Sim, eq, get, ok, post, run, wait_until, write_proxy_conf, SLOW

GEN = {"model": "llama3", "prompt": "hello", "stream": False}
ADAPT_GAIN = 0.10  # proxy/adapt.h
HARD_SETTLE_S = 60.0  # the hard knee's learning, at most (measured: 15-30 s)

# The soft-knee sims: 50 tokens/s a slot up to the knee, then 1/3 token/s
# more a slot; 50 tokens a reply; 4x real time (a request: 0.25 s at the
# knee). The two knees have the same pace per slot, as two models that
# batch alike up to different sizes. Faster, the slot a reply frees stays
# empty for the turnaround (a ms or two) long enough against the request
# that one more slot past 24 measures 1% more throughput: 25% of an
# average slot, a probe up won (a real GPU's requests are 10-100x longer).
KNEE8 = "8:400,64:420"
KNEE24 = "24:1200,64:1214"
SOFT = ("--parallel", "64", "--tokens", "50", "--ttft-ms", "10", "--time-scale", "4")
LOAD = 96          # requests kept in flight: well above the ceiling of 64
SETTLE_S = 20.0    # from the start to the knee (measured: ~12 s)
STEADY_S = 12.0    # then watched for oscillation
UP_S = 60.0        # knee 8 -> 24 (measured: 20-23 s)
DOWN_S = 150.0     # knee 24 -> 8 (measured: 13-94 s)


def curve_at(spec, b):
    """The sim's curve (tests/sim/README.md): through the origin below the
    first point, linear between points, flat beyond the last."""
    pts = [tuple(float(v) for v in p.split(":")) for p in spec.split(",")]
    prev = (0.0, 0.0)
    for pt in pts:
        if b <= pt[0]:
            return prev[1] + (pt[1] - prev[1]) * (b - prev[0]) / (pt[0] - prev[0])
        prev = pt
    return pts[-1][1]


def expected_knee(spec, ceiling):
    """adapt.h's rule: climbing from 1, the knee is the last C before the
    first slot C+1 that adds less than ADAPT_GAIN of an average slot."""
    for c in range(1, ceiling):
        x0, x1 = curve_at(spec, c), curve_at(spec, c + 1)
        if (x1 - x0) / (x1 / (c + 1)) < ADAPT_GAIN:
            return c
    return ceiling


def sims():
    return (Sim("--parallel", "4", "--ttft-ms", "100", "--tokens", "1", "--tokens-per-s", "0"),
            Sim("--parallel", "4", "--ttft-ms", "500", "--tokens", "1", "--tokens-per-s", "0"))


def adaptive_proxy(backends):
    """A proxy whose BACKENDS (name, url, ceiling) are all adaptive."""
    return Proxy([b + ("adaptive = true;",) for b in backends])


T0 = [time.monotonic()]
REASONS = {}
CAUSE = {}  # backend: the cause of its cap's last change, as last sampled


def seen_reasons(seen, name):
    """The reasons a batch's sampling saw for backend NAME: [(s, reason)]."""
    return REASONS.setdefault((id(seen), name), [])


def batch(px, n, seen=None):
    async def go():
        reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=120)] * n
        t0 = time.monotonic()
        task = asyncio.ensure_future(aclient.many(px.port, reqs, 64))
        while not task.done():
            await asyncio.sleep(0.25)
            if seen is not None:
                sample(px, seen)
        res = await task
        return res, time.monotonic() - t0
    return aclient.run(go())


def sample(px, seen):
    """The effective caps of PX's backends into SEEN; their causes and
    reasons as they change into CAUSE and REASONS."""
    st = px.status()["backends"]
    seen.append({b["name"]: b.get("effective_cap") for b in st})
    for b in st:
        if "adaptive" not in b:
            continue
        CAUSE[b["name"]] = b["adaptive"]["cause"]
        mine = seen_reasons(seen, b["name"])
        if not mine or mine[-1][1] != b["adaptive"]["reason"]:
            mine.append((round(time.monotonic() - T0[0], 1), b["adaptive"]["reason"]))


def test_hard_knee_settles_and_binds_late():
    fast, slow = sims()
    px = Proxy([("fast", fast.url, 16), ("slow", slow.url, 16)])  # fixed caps of 16
    apx = adaptive_proxy([("fast", fast.url, 16), ("slow", slow.url, 16)])
    seen = []
    t0 = time.monotonic()

    def near(samples, lo, hi):
        return all(s[n] is not None and lo <= s[n] <= hi for s in samples
                   for n in ("fast", "slow"))

    def reasons():
        return "\n".join("%s:\n%s" % (n, "\n".join("%6.1fs %s" % r
                                                    for r in seen_reasons(seen, n)))
                         for n in ("fast", "slow"))
    # Learning: batches of 100 until both controllers rest (the climb
    # over: their last change no probe) with the caps at 3-6 for 2 s. The
    # slow backend's windows last 1-2 s (16 of its 0.5 s requests at a cap
    # of 8), so its climb, 1 2 4 8 and back, takes 15-30 s.
    async def learn():
        stop = []

        async def worker():
            while not stop:
                await aclient.request(apx.port, "POST", "/api/generate", body=GEN,
                                      timeout=120)
        tasks = [asyncio.ensure_future(worker()) for _ in range(64)]
        try:
            while time.monotonic() - t0 < HARD_SETTLE_S * SLOW:
                await asyncio.sleep(0.25)
                sample(apx, seen)
                if len(seen) >= 8 and near(seen[-8:], 3, 6) and \
                        all(CAUSE.get(n) in ("back", "grew", "shrank") for n in ("fast", "slow")):
                    return time.monotonic() - t0
            return None
        finally:
            stop.append(1)
            await asyncio.gather(*tasks, return_exceptions=True)
    settled = aclient.run(learn())
    ok(settled is not None, "the caps did not settle at 3-6 within %.0fs: %r\n%s" %
       (HARD_SETTLE_S * SLOW, seen[-8:], reasons()))
    res, t_adaptive = batch(apx, 300, seen)
    ok(all(r.status == 200 for r in res), "all 200")
    late = seen[-8:]
    # Measured: at the knee, or a probe a slot or two away.
    ok(near(late, 3, 8) and all(statistics.median(s[n] for s in late) <= 6
                                for n in ("fast", "slow")),
       "the caps stay near the parallelism of 4: %r\n%s" % (late, reasons()))
    st = {b["name"]: b for b in apx.status()["backends"]}
    ok("adaptive" in st["fast"] and st["fast"]["adaptive"]["ceiling"] == 16, st["fast"])
    res, t_fixed = batch(px, 300)
    ok(all(r.status == 200 for r in res), "all 200 with fixed caps")
    ideal = 300 / (4 / 0.1 + 4 / 0.5)
    print("hard knee: both caps at 3-6 after %.1fs; over the measured batch's last 2 s %r" %
          (settled, late))
    print("300 requests: adaptive %.2fs, fixed caps of 16 %.2fs, ideal %.2fs" %
          (t_adaptive, t_fixed, ideal))
    ok(t_adaptive < t_fixed, "adaptive (%.2fs) measurably faster than fixed 16 (%.2fs)" %
       (t_adaptive, t_fixed))
    ok(ideal / t_adaptive >= 0.80 / SLOW ** 0.5,
       "adaptive reaches %.0f%% of the ideal late-binding rate" % (100 * ideal / t_adaptive))
    apx.stop()
    px.stop()


def test_reload_turns_adaptive_on_and_off():
    """A reload that sets or drops `adaptive` on a backend, max_concurrent
    unchanged, takes effect: set, the cap starts again from 1 (one request
    in flight of four sent); dropped, the cap is max_concurrent again (all
    four in flight)."""
    sim = Sim("--parallel", "8", "--ttft-ms", str(int(1500 * SLOW)), "--tokens", "1",
              "--tokens-per-s", "0")
    px = Proxy([("gpu", sim.url, 4)])

    def in_flight_of_four():
        """Four requests sent at once: how many the proxy has in flight
        while the first are still running. Those left waiting are given
        up (a cap of 1 would run them one after the other)."""
        async def go():
            reqs = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                          body=GEN, timeout=60 * SLOW))
                    for _ in range(4)]
            await asyncio.sleep(0.5 * SLOW)
            n = px.backend("gpu")["in_flight"]
            if n == 4:
                res = await asyncio.gather(*reqs)
                ok(all(r.status == 200 for r in res), "all 200")
            else:
                for r in reqs:
                    r.cancel()
                await asyncio.gather(*reqs, return_exceptions=True)
                wait_until(lambda: px.backend("gpu")["in_flight"] == 0, timeout=10,
                           what="the given-up requests to end")
            return n
        return aclient.run(go())

    def reload(backends):
        write_proxy_conf(px.conf, backends)
        px.proc.signal(signal.SIGHUP)

    eq(in_flight_of_four(), 4, "fixed cap 4")
    reload([("gpu", sim.url, 4, "adaptive = true;")])
    wait_until(lambda: "adaptive" in px.backend("gpu"), timeout=10 * SLOW, what="adaptive on")
    b = px.backend("gpu")
    eq((b["max_concurrent"], b["effective_cap"], b["adaptive"]["cause"]), (4, 1, "start"),
       "the ceiling, and the cap from 1")
    eq(in_flight_of_four(), 1, "the adaptive cap in force")
    reload([("gpu", sim.url, 4)])
    wait_until(lambda: "adaptive" not in px.backend("gpu"), timeout=10 * SLOW,
               what="adaptive off")
    eq(in_flight_of_four(), 4, "fixed cap 4 again")
    eq(px.stop(), 0, "clean exit")
    sim.stop()


class Load:
    """LOAD requests kept in flight through PX, and the backend's effective
    cap sampled every 0.25 s as (seconds since start, cap)."""

    def __init__(self, px, name):
        self.px, self.name = px, name
        self.caps, self.errors, self.done = [], 0, 0
        self.stop = False
        self.t0 = time.monotonic()

    async def worker(self):
        while not self.stop:
            r = await aclient.request(self.px.port, "POST", "/api/generate", body=GEN,
                                      timeout=60 * SLOW)
            if r.status == 200:
                self.done += 1
            else:  # the sim restarting: the proxy answers 502/503 meanwhile
                self.errors += 1
                await asyncio.sleep(0.05)

    async def sampler(self):
        while not self.stop:
            r = await aclient.request(self.px.port, "GET", "/proxy/status", timeout=10 * SLOW)
            if r.status == 200:
                b = [b for b in r.json()["backends"] if b["name"] == self.name][0]
                self.caps.append((time.monotonic() - self.t0, b["effective_cap"], b["adaptive"]))
            await asyncio.sleep(0.25)

    def now(self):
        return time.monotonic() - self.t0

    def since(self, t):
        return [c for (s, c, _) in self.caps if s >= t]

    async def reach(self, knee, timeout, what, hold=4.0):
        """Wait until the cap has stayed within 2 of KNEE for HOLD seconds
        (passing by on the way is not settling); return the seconds from
        the call to the start of that stretch."""
        t = self.now()
        while self.now() - t < timeout * SLOW + hold:
            near = None  # the start of the latest stretch near the knee
            for (s, c, _) in self.caps:
                if s >= t:
                    near = (near if near is not None else s) if abs(c - knee) <= 2 else None
            if near is not None and self.now() - near >= hold:
                took = near - t
                ok(took <= timeout * SLOW, "%s: settled after %.1fs, over %.0fs\n%s" %
                   (what, took, timeout * SLOW, self.reasons(t)))
                return took
            await asyncio.sleep(0.1)
        raise AssertionError("%s: the cap did not settle at %d +-2 within %.0fs: %r\n%s" %
                             (what, knee, timeout * SLOW, self.since(t), self.reasons(t)))

    def reasons(self, t):
        """The controller's reasons since T, one line each as it changed."""
        out, last = [], None
        for (s, c, a) in self.caps:
            if s >= t and a["reason"] != last:
                out.append("%6.1fs %3d %s" % (s, c, a["reason"]))
                last = a["reason"]
        return "\n".join(out)

    async def steady(self, knee, seconds, what):
        """Watch SECONDS: the median cap within 2 of KNEE, every sample
        within one probe step (2, or an eighth of KNEE) of a cap next to
        the median.
        Returns (median, lo, hi)."""
        t = self.now()
        await asyncio.sleep(seconds)
        caps = self.since(t)
        ok(len(caps) >= seconds * 2, "%s: samples %r" % (what, caps))
        med = statistics.median(caps)
        ok(abs(med - knee) <= 2, "%s: settles near the knee %d: median %s of %r\n%s" %
           (what, knee, med, caps, self.reasons(0)))
        # A probe that won goes on by an eighth of the knee (adapt.c step0),
        # from wherever the cap rests, which may be one off the median: at
        # 24, 25 -> 28 is one such step, not an oscillation.
        swing = 1 + max(2, knee // 8)
        ok(all(abs(c - med) <= swing for c in caps), "%s: no swing over +-%d around %s: %r\n%s" %
           (what, swing, med, caps, self.reasons(0)))
        ok(max(caps) < 64, "%s: never at the ceiling: %r" % (what, caps))
        return med, min(caps), max(caps)


def soft_sim(spec, port=0):
    return Sim(*SOFT, "--curve", spec, port=port)


def metrics_cap(px, name):
    text = get(px.url + "/metrics").text()
    m = re.search(r'ollama_proxy_backend_effective_cap\{backend="%s"\} (\d+)' % name, text)
    ok(m, "effective cap in /metrics")
    return int(m.group(1))


async def with_load(px, name, script):
    load = Load(px, name)
    tasks = [asyncio.ensure_future(load.worker()) for _ in range(LOAD)]
    tasks.append(asyncio.ensure_future(load.sampler()))
    try:
        return await script(load)
    finally:
        load.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)


def test_busy_and_error_answers_are_no_throughput():
    """Issue 18, item 13: a backend that answers every request fast with
    429 (too busy), or with 200 and an error body, must not be driven to
    its ceiling by the throughput of the answers it refuses: busy answers
    shrink the cap, error bodies are no throughput."""
    from fakebackend import FakeBackend
    # 50 ms an answer, each connection its own thread: more slots answer
    # more per second, so counted as throughput they would pay.
    for name, params in (("busy", {"status": 429, "body": b'{"error":"too many, later"}'}),
                         ("error body", {"body": b'{"error":"the runner crashed"}'})):
        params["delay"] = 0.05
        fb = FakeBackend("answer", **params)
        px = Proxy([("fake", fb.url, 32, "adaptive = true;")],
                   extra="health = { fail_after = 1000; };")
        wait_until(lambda: px.backend("fake")["models"], what="discovery")
        reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=60)] * 100
        t0, n = time.time(), 0
        while time.time() - t0 < 12:  # long enough to climb to 8 and beyond if it may
            aclient.run(aclient.many(px.port, reqs, 32))
            n += len(reqs)
        b = px.backend("fake")
        print("%s: %d requests in %.1f s, effective cap %d (%s)" %
              (name, n, time.time() - t0, b["effective_cap"], b["adaptive"]["reason"]))
        ok(b["effective_cap"] <= 2, "%s: not driven up by refused work: %r" % (name, b))
        px.stop()
        fb.stop()


def test_soft_knee_settles_near_the_curves_knee():
    knee = expected_knee(KNEE8, 64)
    ok(knee == 8, "the curve's knee by the rule: %d" % knee)
    sim = soft_sim(KNEE8)
    px = adaptive_proxy([("gpu", sim.url, 64)])

    async def script(load):
        took = await load.reach(knee, SETTLE_S, "soft knee")
        med, lo, hi = await load.steady(knee, STEADY_S, "soft knee")
        print("soft knee %d: cap within a slot after %.1fs; then %.0fs at median %s, range %d-%d"
              % (knee, took, STEADY_S, med, lo, hi))
        # The same figure in /metrics.
        ok(abs(metrics_cap(px, "gpu") - med) <= 2, "/metrics agrees")
        reason = load.caps[-1][2]
        ok(reason["ceiling"] == 64 and reason["reason"], reason)
    aclient.run(with_load(px, "gpu", script))
    px.stop()
    sim.stop()


def test_knee_moves_and_the_cap_follows():
    lo_knee, hi_knee = expected_knee(KNEE8, 64), expected_knee(KNEE24, 64)
    ok((lo_knee, hi_knee) == (8, 24), "the curves' knees: %d, %d" % (lo_knee, hi_knee))
    holder = [soft_sim(KNEE8)]
    port = holder[0].port
    px = adaptive_proxy([("gpu", holder[0].url, 64)])

    async def swap(spec):
        holder[0].stop()
        # On the same port: the proxy keeps pointing at the same URL.
        holder[0] = await asyncio.get_running_loop().run_in_executor(
            None, lambda: soft_sim(spec, port))

    async def script(load):
        took0 = await load.reach(lo_knee, SETTLE_S, "knee 8, first")
        await swap(KNEE24)
        up = await load.reach(hi_knee, UP_S, "knee 8 -> 24")
        med_up, lo_up, hi_up = await load.steady(hi_knee, STEADY_S / 2, "knee 24")
        await swap(KNEE8)
        down = await load.reach(lo_knee, DOWN_S, "knee 24 -> 8")
        med_dn, lo_dn, hi_dn = await load.steady(lo_knee, STEADY_S / 2, "knee 8 again")
        print("moving knee: 8 reached in %.1fs; 8 -> 24 in %.1fs (then median %s, %d-%d); "
              "24 -> 8 in %.1fs (then median %s, %d-%d); %d requests, %d errors" %
              (took0, up, med_up, lo_up, hi_up, down, med_dn, lo_dn, hi_dn, load.done,
               load.errors))
        print(load.reasons(0))
    aclient.run(with_load(px, "gpu", script))
    px.stop()
    holder[0].stop()


def state_file_knees(path):
    with open(path) as f:
        st = json.load(f)
    return {(k["backend"], k["url"], k["model"]): k["knee"] for k in st["knees"] if "knee" in k}


def served_once(px):
    """PX's backend "gpu" after its models are known and it served one
    request (its runner of llama3 started)."""
    wait_until(lambda: px.backend("gpu")["models"], what="discovery")
    eq(post(px.url + "/api/generate", GEN).status, 200, "served")
    return px.backend("gpu")


def test_state_file_resumes_the_knees():
    """state_file: a restart resumes each runner at the knee saved for its
    backend (name and url) and model instead of climbing from 1; knees not
    used yet are kept, a backend no longer configured is dropped, the file
    is rewritten after a change and at exit; a malformed file is said and
    replaced."""
    sim = Sim("--parallel", "8", "--ttft-ms", "20", "--tokens", "1", "--tokens-per-s", "0")
    d = tempfile.mkdtemp(prefix="capstate-")
    path = os.path.join(d, "state.json")
    with open(path, "w") as f:
        json.dump({"version": 1, "saved": "2026-12-07T00:00:00Z", "knees": [
            {"backend": "gpu", "url": sim.url, "model": "llama3:latest", "knee": 6},
            {"backend": "gpu", "url": sim.url, "model": "qwen2:0.5b", "knee": 3},
            {"backend": "gpu", "url": "http://127.0.0.1:1", "model": "llama3:latest", "knee": 9},
            {"backend": "gone", "url": sim.url, "model": "llama3:latest", "knee": 9},
            {"backend": "gpu", "url": sim.url, "model": "x"}]}, f)
    extra = 'state_file = "%s";' % path
    px = Proxy([("gpu", sim.url, 16, "adaptive = true;")], extra=extra)
    b = served_once(px)
    eq(b["effective_cap"], 6, "resumed at the saved knee, not at 1: %r" % b)
    ok("before the restart" in b["adaptive"]["reason"], b["adaptive"])
    ok("1 entries that are not knees" in px.proc.output(), px.proc.tail())
    # Rewritten within CAPSTATE_WRITE_S (5 s) of the start: its runner's
    # knee, the unused one kept, the other url's and the gone backend's not.
    want = {("gpu", sim.url, "llama3:latest"): 6, ("gpu", sim.url, "qwen2:0.5b"): 3}
    wait_until(lambda: os.path.getmtime(path) > time.time() - 8 and
               state_file_knees(path) == want, timeout=12, what="the state rewritten")
    eq(px.stop(), 0, "clean exit")
    eq(state_file_knees(path), want, "the knees at exit")
    ok(not os.path.exists(path + ".tmp"), "no temporary file left")

    # Used once: the next start resumes again from the file, as written.
    px = Proxy([("gpu", sim.url, 16, "adaptive = true;")], extra=extra)
    eq(served_once(px)["effective_cap"], 6, "resumed again")
    eq(px.stop(), 0, "clean exit")

    # A malformed file: said, started from 1, written anew.
    with open(path, "w") as f:
        f.write("{not json")
    px = Proxy([("gpu", sim.url, 16, "adaptive = true;")], extra=extra)
    eq(served_once(px)["effective_cap"], 1, "nothing known: from 1")
    ok("not a state file" in px.proc.output(), px.proc.tail())
    eq(px.stop(), 0, "clean exit")
    eq(state_file_knees(path), {("gpu", sim.url, "llama3:latest"): 1}, "written anew")

    # No state_file: from 1, and nothing written.
    os.unlink(path)
    px = Proxy([("gpu", sim.url, 16, "adaptive = true;")])
    eq(served_once(px)["effective_cap"], 1, "without a state file: from 1")
    eq(px.stop(), 0, "clean exit")
    ok(not os.path.exists(path), "nothing written")
    sim.stop()


def test_a_runner_made_by_its_first_request_resumes_its_knee():
    """A request that comes before the backend's /api/ps has answered makes
    its model's runner itself (discovery has not yet): that runner's cap
    starts there as at any first use, at the knee saved before the restart,
    and the backend's effective cap counts it at once."""
    fb = FakeBackend(ps="stall")
    path = os.path.join(tempfile.mkdtemp(prefix="capstate-"), "state.json")
    with open(path, "w") as f:
        json.dump({"version": 1, "saved": "2026-12-07T00:00:00Z", "knees": [
            {"backend": "gpu", "url": fb.url, "model": "llama3:latest", "knee": 6}]}, f)
    px = Proxy([("gpu", fb.url, 16, "adaptive = true;")], extra='state_file = "%s";' % path)
    wait_until(lambda: px.backend("gpu")["models"] and fb.polls.get("/api/ps"),
               what="the models listed, /api/ps asked")
    eq(post(px.url + "/api/generate", GEN).status, 200, "served")
    b = px.backend("gpu")
    eq(b["effective_cap"], 6, "resumed at the saved knee: %r" % b)
    fb.halt()
    eq(px.stop(), 0, "clean exit")


run(globals())

