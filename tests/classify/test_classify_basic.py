"""The bundled items through real ollama-sim processes: every item labelled
exactly once, labels right wherever the text holds a label word; CSV,
stdin and plain-text input; the request shape; the gold summary."""
import json
import os
import re
import sys
import subprocess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402


def test_bundled_one_sim():
    # 20 ms a request, so requests overlap and -j shows in the sim.
    sim = C.harness.Sim("--parallel", 64, "--ttft-ms", 20, "--tokens-per-s", 0)
    out = C.fresh("one.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 100))
    eq(r.rc, 0, "exit status %r" % r)
    rows = C.results(out)
    items = C.bundled()
    eq(len(rows), len(items), "result lines")
    C.check_all_labelled_once(rows, items)
    C.check_label_words(rows, items)
    for row in rows:
        ok(set(row) == {"id", "label", "ms", "attempts"}, "keys of %r" % row)
        ok(row["attempts"] == 1 and isinstance(row["ms"], int), "row %r" % row)
    st = sim.stats()
    eq(st["served"], len(items), "served by the sim")
    ok(st["max_in_flight"] >= 64, "in flight at most %d with -j 100" % st["max_in_flight"])
    ok(re.search(r"summary: 1525 items \(1525 labelled, 0 errors", r.err), r.err)
    ok(re.search(r"latency ms: p50 \d+, p95 \d+, p99 \d+", r.err), r.err)
    sim.stop()


def test_bundled_two_sims():
    """Half the items to each of two sims, two classifiers side by side,
    appending to one results file: still one labelled line per item."""
    sims = [C.fast_sim(parallel=8), C.fast_sim(parallel=8)]
    items = C.bundled()
    with open(C.ITEMS_JSONL) as f:
        lines = f.readlines()
    halves = [C.fresh("half0.jsonl"), C.fresh("half1.jsonl")]
    for k, path in enumerate(halves):
        with open(path, "w") as f:
            f.writelines(lines[k::2])
    outs = [C.fresh("two0.jsonl"), C.fresh("two1.jsonl")]
    procs = [C.start(C.std_args(s.url, h, o, "-j", 50)) for s, h, o in zip(sims, halves, outs)]
    for p in procs:
        eq(p.wait(60 * C.SLOW), 0, "exit status")
    rows = C.results(outs[0]) + C.results(outs[1])
    eq(len(rows), len(items), "result lines")
    C.check_all_labelled_once(rows, items)
    C.check_label_words(rows, items)
    for s in sims:
        ok(abs(s.stats()["served"] - len(items) / 2) <= 1, "each sim served half")
        s.stop()


def test_csv_same_as_jsonl():
    """The CSV copy (quotes, commas, embedded newlines) gives the same texts,
    so the deterministic sim gives the same labels."""
    sim = C.fast_sim()
    oj, oc = C.fresh("j.jsonl"), C.fresh("c.jsonl")
    eq(C.classify(C.std_args(sim.url, C.ITEMS_JSONL, oj)).rc, 0, "jsonl run")
    r = C.classify(C.std_args(sim.url, C.ITEMS_CSV, oc))
    eq(r.rc, 0, "csv run %r" % r)
    a = {x["id"]: x["label"] for x in C.results(oj)}
    b = {x["id"]: x["label"] for x in C.results(oc)}
    eq(b, a, "labels from CSV vs JSONL")
    with open(C.ITEMS_CSV) as f:
        raw = f.read()
    ok('""' in raw and '\nSent from my phone' in raw, "the CSV has quoting and newlines")
    sim.stop()


def test_stdin_and_text_lines():
    sim = C.fast_sim()
    items = C.bundled()
    # JSONL on stdin, sniffed by its first character.
    out = C.fresh("stdin.jsonl")
    with open(C.ITEMS_JSONL, "rb") as f:
        data = f.read()
    r = C.classify(C.std_args(sim.url, "-", out), stdin_data=data)
    eq(r.rc, 0, "stdin run %r" % r)
    C.check_all_labelled_once(C.results(out), items)
    ok("/?" in r.err, "total unknown on stdin: %s" % r.err[-500:])
    # Plain text, one item a line: ids are line numbers (blank lines skipped).
    txt = C.fresh("items.txt")
    with open(txt, "w") as f:
        f.write("my invoice shows a billing error\n\nthe app has a bug\nthanks a lot\n")
    out = C.fresh("text.jsonl")
    r = C.classify(C.std_args(sim.url, txt, out))
    eq(r.rc, 0, "text run %r" % r)
    rows = {x["id"]: x["label"] for x in C.results(out)}
    eq(sorted(rows), [1, 3, 4], "line-number ids")
    eq((rows[1], rows[3]), ("billing", "bug"), "labels")
    ok("4/3 done" not in r.err and "3/3 done" in r.err, "progress total: %s" % r.err)
    sim.stop()


def test_request_shape():
    """Capture one request with a tiny server: /api/chat, stream false,
    temperature 0, an enum schema, the system prompt and the text alone."""
    import http.server
    import threading
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, dict(self.headers), json.loads(body)))
            reply = json.dumps({"model": "m", "message": {"role": "assistant",
                                "content": '{"label": " BUG "}'}, "done": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    prompt = C.fresh("prompt.txt")
    with open(prompt, "w") as f:
        f.write("Pick one of: {{labels}}.")
    txt = C.fresh("one.txt")
    with open(txt, "w") as f:
        f.write('a "quoted" text\twith a tab\n')
    out = C.fresh("shape.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "qwen2:7b", "-l", "billing, bug ,praise",
                    "--url", "127.0.0.1:%d" % srv.server_address[1], "--prompt-file", prompt])
    srv.shutdown()
    eq(r.rc, 0, "exit %r" % r)
    eq(len(seen), 1, "requests")
    path, headers, body = seen[0]
    eq(path, "/api/chat", "path")
    ok("Expect" not in headers, "no Expect header")
    eq(body["model"], "qwen2:7b", "model")
    eq(body["stream"], False, "stream")
    eq(body["options"], {"temperature": 0}, "options")
    eq(body["messages"], [{"role": "system", "content": "Pick one of: billing, bug, praise."},
                          {"role": "user", "content": 'a "quoted" text\twith a tab'}], "messages")
    eq(body["format"], {"type": "object", "properties": {"label": {"type": "string",
                        "enum": ["billing", "bug", "praise"]}}, "required": ["label"]}, "format")
    # " BUG " is trimmed, matched without case and recorded as spelled in -l.
    eq([(x["id"], x["label"]) for x in C.results(out)], [(1, "bug")], "result")


def test_gold_accuracy():
    sim = C.fast_sim()
    out = C.fresh("gold.jsonl")
    r = C.classify(C.std_args(sim.url, C.ITEMS_CSV, out, "--gold-field", "gold"))
    eq(r.rc, 0, "exit %r" % r)
    rows = C.results(out)
    items = C.bundled()
    right = sum(1 for x in rows if x["label"] == items[x["id"]]["gold"])
    m = re.search(r"accuracy: ([\d.]+)% \((\d+) of (\d+) items", r.err)
    ok(m, "accuracy line in %s" % r.err)
    eq((int(m.group(2)), int(m.group(3))), (right, len(items)), "accuracy counts")
    ok("confusion" in r.err, "confusion table")
    # The row of each gold label sums to its items, diagonal = right answers.
    table = {}
    names = C.labels()
    for line in r.err.splitlines():
        parts = line.split()
        if len(parts) == len(names) + 2 and parts[0] in names:
            table[parts[0]] = [int(x) for x in parts[1:]]
    eq(sorted(table), sorted(names), "table rows")
    eq(sum(table[n][i] for i, n in enumerate(names)), right, "diagonal")
    for n in names:
        eq(sum(table[n]), sum(1 for it in items.values() if it["gold"] == n), "row " + n)
    sim.stop()


run(globals())
