"""Results you can review (issue 24): --keep-fields and --raw in the lines,
CSV output (-o FILE.csv) with resume, --rescore (the report from a results
file without a request), --limit and seeded --sample for a dry run,
--options passed on every request; the run's edges: progress and summary
agree after a fatal stop, exit 130 on SIGINT/SIGTERM, the results file a
fatal stop created is removed (one that existed is left), and the summary
splits waiting from service time."""
import csv
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import Proxy, Sim, eq, ok, run, wait_until  # noqa: E402


def test_keep_fields_and_raw_jsonl():
    sim = C.fast_sim()
    items = C.write_file("keep.jsonl", json.dumps(
        {"id": "a", "text": "a bug", "gold": "bug", "label": "mine", "n": 7}) + "\n")
    out = C.fresh("keep-out.jsonl")
    r = C.classify(["-i", items, "-o", out, "-m", C.MODEL, "-l", "bug,praise", "--url", sim.url,
                    "--keep-fields", "text,gold,label,n,missing", "--raw"])
    eq(r.rc, 0, "exit %r" % r)
    row = C.results(out)[0]
    eq((row["label"], row["text"], row["gold"], row["input_label"], row["n"]),
       ("bug", "a bug", "bug", "mine", 7), "kept fields (label as input_label)")
    eq(json.loads(row["raw"]), {"label": "bug"}, "the model's answer")
    ok("missing" not in row, row)
    sim.stop()


def test_new_options_in_a_config_file():
    """Every new option is a key of -c FILE too (booleans, numbers)."""
    seen = []

    def handle(headers, doc):
        seen.append(doc)
        return 200, {}, C.chat_answer("b")

    srv = C.FakeOllama(handle)
    conf = C.write_file("new.conf", 'labels = "a,b"; abstain = "other"; raw = true;\n'
                        'min_confidence = 0.8; votes = 3; vote_temperature = 0.5;\n'
                        'keep_fields = "text"; limit = 2; seed = 9;\n'
                        'options = "num_ctx=2048";\n')
    out = C.fresh("conf-out.jsonl")
    r = C.classify(["-c", conf, "-i", C.write_file("three.txt", "x\ny\nz\n"), "-o", out,
                    "-m", "m", "--url", srv.url, "-j", 1])
    srv.stop()
    eq(r.rc, 0, "exit %r" % r)
    rows = C.results(out)
    eq([(x["label"], x["confidence"], x["review"], x["text"], x["raw"]) for x in rows],
       [("b", 1.0, False, "x", '{"label": "b"}'), ("b", 1.0, False, "y", '{"label": "b"}')],
       "limit 2, votes of 3, kept text, raw")
    eq(seen[-1]["options"], {"temperature": 0.5, "num_ctx": 2048}, "vote temperature, options")
    eq(seen[-1]["format"]["properties"]["label"]["enum"], ["a", "b", "other"], "abstain")
    r = C.classify(["-c", C.write_file("bad.conf", "raw = 1;\n"), "-i", "x", "-o", "y", "-m",
                    "m", "-l", "a,b"])
    eq(r.rc, 2, "exit %r" % r)
    ok("raw: expected true or false" in r.err, r.err)


def test_csv_output_and_resume():
    """-o FILE.csv: a header, one record per item (quotes, commas and
    newlines kept), readable by any CSV reader; a second run resumes it;
    other columns are refused."""
    sim = C.fast_sim()
    out = C.fresh("results.csv")
    args = C.std_args(sim.url, C.ITEMS_CSV, out, "--keep-fields", "text,gold", "--raw",
                      "--confidence")
    r = C.classify(args + ["--limit", 700])
    eq(r.rc, 0, "exit %r" % r)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    eq(list(rows[0]), ["id", "label", "confidence", "review", "ms", "attempts", "error", "note",
                       "raw", "text", "gold"], "columns")
    eq(len(rows), 700, "records")
    items = C.bundled()
    for x in rows:
        eq(x["text"], items[x["id"]]["text"], "the text of %s, whole" % x["id"])
        eq(json.loads(x["raw"])["label"], x["label"], "raw")
        ok(0 <= float(x["confidence"]) <= 1 and x["review"] == "", x)
    ok(any("\n" in x["text"] for x in rows) and any('"' in x["text"] for x in rows),
       "texts with newlines and quotes went through")
    # Resume: the rest, each id once.
    requests = sim.stats()["requests"]
    r = C.classify(args)
    eq(r.rc, 0, "exit %r" % r)
    ok("resuming: 700 items already labelled" in r.err, r.err[-500:])
    eq(sim.stats()["requests"] - requests, 1525 - 700, "only the rest asked")
    with open(out, newline="", encoding="utf-8") as f:
        ids = [x["id"] for x in csv.DictReader(f)]
    eq(sorted(ids), sorted(items), "each id once")
    # A torn last record (a kill mid-write) is cut off before appending.
    with open(out, "ab") as f:
        f.write(b't9999,bug,0.5000,,3,1,,,"{""la')
    r = C.classify(args)
    ok("removed a torn last line" in r.err, r.err[-500:])
    with open(out, newline="", encoding="utf-8") as f:
        eq(len(list(csv.DictReader(f))), 1525, "the torn record gone, nothing added")
    # The same file with other columns: refused.
    r = C.classify(C.std_args(sim.url, C.ITEMS_CSV, out))
    eq(r.rc, 2, "exit %r" % r)
    ok("its columns" in r.err and "--keep-fields" in r.err, r.err)
    sim.stop()


def summary_part(err, start):
    i = err.index(start)
    return err[i:]


def test_rescore_without_requests():
    """--rescore prints, without a request, the report the run printed:
    labels, confidence, review marks and accuracy; --min-confidence is
    applied anew; gold from the lines, or from -i by id; JSONL or CSV."""
    sim = C.fast_sim()
    out = C.fresh("rs.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--keep-fields", "gold",
                              "--min-confidence", "0.8", "--gold-field", "gold"))
    eq(r.rc, 0, "exit %r" % r)
    sim.stop()  # nothing to ask from here on
    run_part = summary_part(r.err, "  labels:").replace("  retries: 0\n", "")
    rs = C.classify(["--rescore", "-o", out, "-l", "@" + C.LABELS_FILE, "--gold-field", "gold",
                     "--min-confidence", "0.8"])
    eq(rs.rc, 0, "exit %r" % rs)
    ok(rs.err.startswith("report on %s: 1525 items (1525 labelled, 0 errors)\n" % out), rs.err)
    eq(summary_part(rs.err, "  labels:").replace("read back", "logprobs"), run_part,
       "the same report")
    # Another threshold: other marks, from the confidences written.
    conf = [x["confidence"] for x in C.results(out)]
    rs = C.classify(["--rescore", "-o", out, "-l", "@" + C.LABELS_FILE, "--gold-field", "gold",
                     "--min-confidence", "0.5"])
    ok('review: %d items under 0.50' % sum(c < 0.5 for c in conf) in rs.err, rs.err)
    # Results without gold: joined with the items by id; CSV results too.
    sim = C.fast_sim()
    for name in ("plain.jsonl", "plain.csv"):
        plain = C.fresh(name)
        eq(C.classify(C.std_args(sim.url, C.ITEMS_CSV, plain)).rc, 0, "run")
        rs = C.classify(["--rescore", "-o", plain, "-l", "@" + C.LABELS_FILE, "--gold-field",
                         "gold", "-i", C.ITEMS_JSONL])
        eq(rs.rc, 0, "exit %r" % rs)
        ok(re.search(r"accuracy: [\d.]+% \(\d+ of 1525 items", rs.err), rs.err)
    rs = C.classify(["--rescore", "-o", C.fresh("none.jsonl"), "-l", "a,b"])
    eq(rs.rc, 2, "no such file %r" % rs)
    sim.stop()


def test_rescore_counts_each_id_once():
    """An error line later superseded by a label (a resumed run) counts as
    the label; an id with only errors counts once as an error."""
    out = C.write_file("mixed.jsonl", "\n".join(json.dumps(x) for x in [
        {"id": 1, "label": None, "error": "HTTP 500", "attempts": 6},
        {"id": 2, "label": None, "error": "HTTP 500", "attempts": 6},
        {"id": 1, "label": "bug", "confidence": 0.91, "ms": 3, "attempts": 1},
        {"id": 2, "label": None, "error": "timeout", "attempts": 6},
        {"id": 3, "label": "praise", "ms": 3, "attempts": 1}]) + "\n")
    rs = C.classify(["--rescore", "-o", out, "-l", "bug,praise"])
    eq(rs.rc, 0, "exit %r" % rs)
    ok("3 items (2 labelled, 1 errors)" in rs.err, rs.err)
    ok("errors: recorded 1" in rs.err and "labels: bug 1, praise 1" in rs.err, rs.err)


def test_limit_and_sample():
    sim = C.fast_sim()
    order = list(C.bundled())
    out = C.fresh("limit.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--limit", 50))
    eq(r.rc, 0, "exit %r" % r)
    eq(sorted(x["id"] for x in C.results(out)), order[:50], "the first 50")
    eq(re.findall(r"progress: (\d+/\d+) done", r.err)[-1], "50/50", r.err)
    picks = []
    for seed, name in ((3, "s3a.jsonl"), (3, "s3b.jsonl"), (4, "s4.jsonl")):
        out = C.fresh(name)
        r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--sample", 50, "--seed", seed))
        eq(r.rc, 0, "exit %r" % r)
        eq(re.findall(r"progress: (\d+/\d+) done", r.err)[-1], "50/50", r.err)
        picks.append(sorted(x["id"] for x in C.results(out)))
    eq(len(set(picks[0])), 50, "50 items")
    eq(picks[0], picks[1], "the same seed, the same sample")
    ok(picks[0] != picks[2], "another seed, another sample")
    ok(max(order.index(i) for i in picks[0]) > 1000 and min(order.index(i) for i in picks[0])
       < 500, "spread over the file")
    # A re-run of the sample resumes it: nothing asked.
    n = sim.stats()["requests"]
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--sample", 50, "--seed", 4))
    eq((r.rc, sim.stats()["requests"]), (0, n), "resumed, nothing sent")
    with open(C.ITEMS_JSONL, "rb") as f:
        r = C.classify(C.std_args(sim.url, "-", C.fresh("x.jsonl"), "--sample", 5),
                       stdin_data=f.read())
    eq(r.rc, 2, "a sample needs a file %r" % r)
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, C.fresh("x.jsonl"), "--sample", 5,
                              "--limit", 5))
    eq(r.rc, 2, "one of the two %r" % r)
    sim.stop()


def test_options_on_every_request():
    seen = []

    def handle(headers, doc):
        seen.append(doc)
        return 200, {}, C.chat_answer("b")

    srv = C.FakeOllama(handle)
    txt = C.write_file("opts.txt", "one\ntwo\n")
    r = C.classify(["-i", txt, "-o", C.fresh("o1.jsonl"), "-m", "m", "-l", "a,b", "--url",
                    srv.url, "--options", 'num_ctx=8192,think=false,keep_alive=30m,stop=["x","y"]'])
    eq(r.rc, 0, "exit %r" % r)
    r = C.classify(["-i", txt, "-o", C.fresh("o2.jsonl"), "-m", "m", "-l", "a,b", "--url",
                    srv.url, "--options", '{"num_ctx": 4096, "temperature": 0.2, "think": "low"}'])
    eq(r.rc, 0, "exit %r" % r)
    srv.stop()
    eq(len(seen), 4, "requests")
    for d in seen[:2]:
        eq(d["options"], {"temperature": 0, "num_ctx": 8192, "stop": ["x", "y"]}, "options")
        eq((d["think"], d["keep_alive"]), (False, "30m"), "request-level fields")
    for d in seen[2:]:
        eq(d["options"], {"temperature": 0.2, "num_ctx": 4096}, "JSON options")
        eq(d["think"], "low", "think")
    for bad in ("num_ctx", "=3", "{nope"):
        r = C.classify(["-i", txt, "-o", C.fresh("o3.jsonl"), "-m", "m", "-l", "a,b", "--url",
                        "http://127.0.0.1:9", "--options", bad])
        eq(r.rc, 2, "--options %s: %r" % (bad, r))
        ok("--options" in r.err, r.err)


def test_fatal_stop_progress_and_files():
    """A fatal stop: the last progress line counts nothing done (the
    summary's 0 items); the empty results file it created is removed, one
    that existed is left as it was."""
    srv = C.FakeOllama(lambda h, d: (401, {}, b'{"error":"unauthorized"}'))
    out = C.fresh("fatal.jsonl")
    r = C.classify(["-i", C.ITEMS_JSONL, "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url])
    eq(r.rc, 1, "exit %r" % r)
    eq(re.findall(r"progress: (\d+/\d+) done", r.err)[-1], "0/1525", r.err)
    ok("summary: 0 items" in r.err, r.err)
    ok(not os.path.exists(out), "the empty file it made is removed")
    for before in (b"", b'{"id":"t0001","label":"a","ms":1,"attempts":1}\n'):
        with open(out, "wb") as f:
            f.write(before)
        r = C.classify(["-i", C.ITEMS_JSONL, "-o", out, "-m", "m", "-l", "a,b", "--url", srv.url])
        eq(r.rc, 1, "exit %r" % r)
        with open(out, "rb") as f:
            eq(f.read(), before, "a file that existed is left alone")
    srv.stop()


def test_signals_exit_130_and_resume():
    sim = Sim("--parallel", 2, "--ttft-ms", 50, "--tokens-per-s", 0)
    out = C.fresh("sig.jsonl")
    args = C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 8)
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = C.start(args)
        start = C.count_lines(out)
        wait_until(lambda: C.count_lines(out) >= start + 20, timeout=30, what="some results")
        os.kill(p.pid, sig)
        eq(p.wait(timeout=30 * C.SLOW), 130, "exit after %s: %s" % (sig, C.log_of(p)[-800:]))
        log = C.log_of(p)
        ok("stopping; run the same command again to resume" in log and "summary:" in log, log)
    eq(C.classify(["-i", C.write_file("none.txt", ""), "-o", C.fresh("n.jsonl"), "-m", C.MODEL,
                   "-l", "a,b", "--url", sim.url]).rc, 0, "an empty input is no failure")
    sim.stop()
    # Resumed on a fast sim: every item once.
    sim = C.fast_sim()
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    eq(r.rc, 0, "resume %r" % r)
    C.check_all_labelled_once([x for x in C.results(out)], C.bundled())
    sim.stop()


def split(err):
    """The shares of the waiting line: (waiting, before the server, in its queue)."""
    m = re.search(r"waiting ms: p50 \d+, p95 \d+, p99 \d+ \((\d+)% of the time: (\d+)% before "
                  r"the server began, e.g. in the proxy's queue; (\d+)% in the server's queue",
                  err)
    ok(m, err)
    return tuple(int(g) for g in m.groups())


def test_waiting_and_service_split():
    """Where the time goes: 200 in flight on a proxy with 4 slots over two
    sims: mostly waiting, in the proxy's queue (before the server); 40 in
    flight straight to a 2-slot sim: mostly waiting in the server's own
    queue; a sim with free slots: mostly service. Wide margins."""
    items = C.write_file("400.jsonl", "".join(
        json.dumps({"id": i, "text": "item %d" % i}) + "\n" for i in range(400)))
    sims = [Sim("--parallel", 8, "--ttft-ms", 20, "--tokens-per-s", 0) for _ in range(2)]
    px = Proxy([("gpu%d" % i, s.url, 2) for i, s in enumerate(sims)])
    r = C.classify(C.std_args(px.url, items, C.fresh("w1.jsonl"), "-j", 200), timeout=120)
    eq(r.rc, 0, "exit %r" % r)
    wait, before, queue = split(r.err)
    ok(wait >= 80 and before >= 70 and queue <= 10, "in the proxy's queue: %s" % r.err)
    service = int(re.search(r"service ms: p50 (\d+)", r.err).group(1))
    ok(15 <= service <= 200, "service: the sim's 20 ms to first token: %s" % r.err)
    px.stop()
    one = Sim("--parallel", 2, "--ttft-ms", 20, "--tokens-per-s", 0)
    r = C.classify(C.std_args(one.url, items, C.fresh("w2.jsonl"), "-j", 40), timeout=120)
    wait, before, queue = split(r.err)
    ok(wait >= 70 and queue >= 60 and before <= 20, "in the sim's queue: %s" % r.err)
    r = C.classify(C.std_args(sims[0].url, items, C.fresh("w3.jsonl"), "-j", 4), timeout=120)
    wait, before, queue = split(r.err)
    ok(wait <= 40, "free slots, mostly service: %s" % r.err)
    srv = C.FakeOllama(lambda h, d: (200, {}, C.chat_answer("a")))
    r = C.classify(["-i", C.write_file("one.txt", "x\n"), "-o", C.fresh("w4.jsonl"), "-m", "m",
                    "-l", "a,b", "--url", srv.url])
    ok("the replies carry no durations" in r.err, r.err)
    srv.stop()


run(globals())
