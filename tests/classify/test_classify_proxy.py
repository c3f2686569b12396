"""ollama-classify through ollama-proxy in front of two sims: the bundled
1,525 items, every one labelled once, both backends used, caps held."""
import clslib
import harness
from harness import Proxy, Sim, eq, ok, run


def test_bundled_items_through_proxy():
    sims = [Sim("--parallel", "8", "--ttft-ms", "5", "--tokens-per-s", "0") for _ in range(2)]
    px = Proxy([("gpu%d" % i, s.url, 4) for i, s in enumerate(sims)])
    out = clslib.fresh("proxy.jsonl")
    r = clslib.classify(clslib.std_args(px.url, clslib.ITEMS_JSONL, out, "-j", "200",
                                        "--gold-field", "gold"), timeout=120)
    eq(r.rc, 0, "exit status %r" % r)
    items = clslib.bundled()
    rows = clslib.results(out)
    clslib.check_all_labelled_once(rows, items)
    clslib.check_label_words(rows, items)
    ok("accuracy" in r.err, "summary with accuracy: %s" % r.err[-500:])
    served = [s.stats()["served"] for s in sims]
    for s in sims:
        eq(s.stats()["max_in_flight"], 4, "the proxy's cap of 4 held and was used")
    eq(sum(served), len(items), "each item answered once by the fleet")
    ok(min(served) > len(items) // 4, "both backends did a fair share: %r" % served)
    st = px.status()
    eq(sum(b["in_flight"] for b in st["backends"]), 0, "no slot leaked")
    px.stop()


run(globals())
