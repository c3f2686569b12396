"""ollama-proxy: adaptive caps (adaptive = true: max_concurrent is a
ceiling). The hard knee: two sims whose Ollama-style parallelism is 4 (one
fast, one 5x slower) behind a ceiling of 16: each backend's cap settles
near 4, where its throughput stops growing, so the excess waits in the
proxy's queue and binds late; a fixed batch is faster than with fixed caps
of 16, where requests queue inside the slow sim."""
import asyncio
import os
import time

import aclient
from harness import Proc, Proxy, Sim, binary, ok, run, tmpdir, write_proxy_conf, SLOW

GEN = {"model": "llama3", "prompt": "hello", "stream": False}


def sims():
    return (Sim("--parallel", "4", "--ttft-ms", "100", "--tokens", "1", "--tokens-per-s", "0"),
            Sim("--parallel", "4", "--ttft-ms", "500", "--tokens", "1", "--tokens-per-s", "0"))


def batch(px, n, seen=None):
    async def go():
        reqs = [dict(method="POST", path="/api/generate", body=GEN, timeout=120)] * n
        t0 = time.monotonic()
        task = asyncio.ensure_future(aclient.many(px.port, reqs, 64))
        while not task.done():
            await asyncio.sleep(0.25)
            if seen is not None:
                seen.append({b["name"]: b.get("effective_cap") for b in px.status()["backends"]})
        res = await task
        return res, time.monotonic() - t0
    return aclient.run(go())


def test_hard_knee_settles_and_binds_late():
    fast, slow = sims()
    px = Proxy([("fast", fast.url, 16), ("slow", slow.url, 16)])  # fixed caps of 16
    conf = os.path.join(tmpdir(), "adaptive.conf")
    write_proxy_conf(conf, [("fast", fast.url, 16), ("slow", slow.url, 16)])
    with open(conf) as f:
        text = f.read().replace("max_concurrent = 16; }", "max_concurrent = 16; adaptive = true; }")
    with open(conf, "w") as f:
        f.write(text)
    aproc = Proc([binary("ollama-proxy"), "-c", conf], name="ollama-proxy")
    apx = Proxy.__new__(Proxy)  # the same helpers, on the process started here
    apx.proc, apx.conf, apx.port = aproc, conf, aproc.wait_listen()
    apx.url = "http://127.0.0.1:%d" % apx.port
    seen = []
    batch(apx, 500, seen)  # learning
    res, t_adaptive = batch(apx, 300, seen)
    ok(all(r.status == 200 for r in res), "all 200")
    late = seen[-8:]
    for name in ("fast", "slow"):
        caps = [s[name] for s in late]
        ok(all(c is not None and 3 <= c <= 6 for c in caps),
           "%s's effective cap settles near its parallelism of 4: %r" % (name, caps))
    st = {b["name"]: b for b in apx.status()["backends"]}
    ok("adaptive" in st["fast"] and st["fast"]["adaptive"]["ceiling"] == 16, st["fast"])
    res, t_fixed = batch(px, 300)
    ok(all(r.status == 200 for r in res), "all 200 with fixed caps")
    ideal = 300 / (4 / 0.1 + 4 / 0.5)
    print("300 requests: adaptive %.2fs, fixed caps of 16 %.2fs, ideal %.2fs" %
          (t_adaptive, t_fixed, ideal))
    ok(t_adaptive < t_fixed, "adaptive (%.2fs) measurably faster than fixed 16 (%.2fs)" %
       (t_adaptive, t_fixed))
    ok(ideal / t_adaptive >= 0.80 / SLOW ** 0.5,
       "adaptive reaches %.0f%% of the ideal late-binding rate" % (100 * ideal / t_adaptive))
    aproc.stop()
    px.stop()


run(globals())
