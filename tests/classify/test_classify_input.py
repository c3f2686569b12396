"""What the items, labels and prompt files may hold: a malformed JSONL line
takes no real item's id (its error line has "id":null and its "line"); a
UTF-8 byte order mark is skipped in every file and stdin; invalid UTF-8
becomes U+FFFD (one per byte, as Go's encoding/json) in every JSON written,
so results parse and resume; an empty gold value is no gold; a field named
on the command line that the CSV lacks is bad usage; a prompt file without
{{labels}} is warned about."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402

BOM = b"\xef\xbb\xbf"


def write_bytes(name, data):
    path = C.fresh(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def args(url, items, out, *extra, labels="spam,ham,other"):
    return ["-i", items, "-o", out, "-m", C.MODEL, "-l", labels, "--url", url] + list(extra)


def strict_rows(path):
    """Every line of PATH as strict UTF-8 JSON (raises on any other)."""
    with open(path, "rb") as f:
        return [json.loads(line.decode("utf-8")) for line in f]


def test_malformed_line_takes_no_real_id():
    sim = C.fast_sim()
    items = C.write_file("bad.jsonl", '{"id":0,"text":"spam a"}\n{"id":1,"text":"ham b"\n'
                         '{"id":2,"text":"other c"}\n{"id":3,"text":"spam d"}\n')
    out = C.fresh("bad-out.jsonl")
    r = C.classify(args(sim.url, items, out))
    eq(r.rc, 1, "exit %r" % r)
    ok("duplicate" not in r.err, r.err)
    ok("items: line 2: not a JSON object" in r.err, r.err)
    rows = C.results(out)
    bad = [x for x in rows if x["label"] is None]
    eq(len(bad), 1, "one error line: %r" % rows)
    eq((bad[0]["id"], bad[0]["line"]), (None, 2), "the error line: %r" % bad[0])
    ok(bad[0]["error"].startswith("line 2: "), bad[0])
    eq(sorted(x["id"] for x in rows if x["label"]), [0, 2, 3], "every real item labelled")
    # Resumed: the three are done; nothing is skipped as a duplicate.
    r = C.classify(args(sim.url, items, out))
    ok("duplicate" not in r.err and "3 of them skipped as already labelled" in r.err, r.err)
    eq(sim.stats()["served"], 3, "three requests")
    sim.stop()


def test_byte_order_marks_skipped():
    sim = C.fast_sim()
    # (a) a JSONL file, (b) the same on stdin, sniffed as JSONL.
    items = write_bytes("bom.jsonl", BOM + b'{"id":"a","text":"spam x"}\n')
    out = C.fresh("a.jsonl")
    r = C.classify(args(sim.url, items, out))
    eq(r.rc, 0, "jsonl %r" % r)
    eq([(x["id"], x["label"]) for x in C.results(out)], [("a", "spam")], "jsonl")
    out = C.fresh("b.jsonl")
    with open(items, "rb") as f:
        r = C.classify(args(sim.url, "-", out), stdin_data=f.read())
    eq(r.rc, 0, "stdin %r" % r)
    eq([(x["id"], x["label"]) for x in C.results(out)], [("a", "spam")], "stdin")
    # (c) a CSV whose first header name is quoted.
    items = write_bytes("bom.csv", BOM + b'"id","text"\r\n1,spam y\r\n')
    out = C.fresh("c.jsonl")
    r = C.classify(args(sim.url, items, out))
    eq(r.rc, 0, "csv %r" % r)
    eq([(x["id"], x["label"]) for x in C.results(out)], [("1", "spam")], "csv")
    # (d) a labels file, (e) a text file: nothing of the mark in a label or a text.
    labels = write_bytes("labels.txt", BOM + b"spam\nham\n")
    items = write_bytes("bom.txt", BOM + b"spam z\n")
    out = C.fresh("d.jsonl")
    r = C.classify(args(sim.url, items, out, "--keep-fields", "text", labels="@" + labels))
    eq(r.rc, 0, "labels, text %r" % r)
    eq([(x["id"], x["label"], x["text"]) for x in C.results(out)], [(1, "spam", "spam z")],
       "labels file and text")
    ok("labels: spam 1\n" in r.err, r.err[-600:])
    sim.stop()


def test_byte_order_mark_of_prompt_file():
    """The system prompt sent holds the file's text without the mark."""
    fake = C.FakeOllama(lambda h, doc: (200, {}, C.chat_answer("spam")))
    prompt = write_bytes("prompt.txt", BOM + b"Classify into {{labels}}.")
    items = C.write_file("p.txt", "spam\n")
    r = C.classify(args(fake.url, items, C.fresh("p.jsonl"), "--prompt-file", prompt))
    eq(r.rc, 0, "exit %r" % r)
    system = [m["content"] for m in fake.requests[0][1]["messages"] if m["role"] == "system"]
    eq(system, ["Classify into spam, ham, other."], "system prompt")
    ok("{{labels}}" not in r.err, "no warning: %s" % r.err)
    fake.stop()


def test_invalid_utf8_replaced():
    """Latin-1 bytes in an id and a text: every results line is valid UTF-8
    JSON with U+FFFD for each bad byte (Go's rule), the request is accepted,
    and a re-run resumes (nothing sent, nothing appended), in JSONL and CSV."""
    sim = C.fast_sim()
    items = write_bytes("latin1.csv", b"id,text\ncaf\xe9,spam \xe9t\xe9\nx\xe2\x82y,ham\nok,ham\n")
    for name in ("u.jsonl", "u.csv"):
        out = C.fresh(name)
        a = args(sim.url, items, out, "--keep-fields", "text")
        r = C.classify(a)
        eq(r.rc, 0, "%s %r" % (name, r))
        with open(out, "rb") as f:
            before = f.read()
        before.decode("utf-8")  # strict
        sim.reset()
        r = C.classify(a)
        eq(r.rc, 0, "%s again %r" % (name, r))
        ok("3 of them skipped as already labelled" in r.err, r.err[-600:])
        eq(sim.stats()["served"], 0, "nothing sent again")
        with open(out, "rb") as f:
            eq(f.read(), before, "nothing appended")
        sim.reset()
    out = C.fresh("v.jsonl")
    r = C.classify(args(sim.url, items, out, "--keep-fields", "text"))
    rows = strict_rows(out)
    eq(sorted((x["id"], x["label"], x["text"]) for x in rows),
       sorted([("caf\ufffd", "spam", "spam \ufffdt\ufffd"), ("x\ufffd\ufffdy", "ham", "ham"),
               ("ok", "ham", "ham")]), "rows")
    sim.stop()


def test_empty_gold_is_no_gold():
    sim = C.fast_sim()
    csv_items = C.write_file("g.csv", "id,text,gold\n1,spam a,spam\n2,ham b,\n3,ham c,\n4,ham d, \n")
    jsonl_items = C.write_file("g.jsonl", '{"id":1,"text":"spam a","gold":"spam"}\n'
                               '{"id":2,"text":"ham b","gold":""}\n{"id":3,"text":"ham c"}\n')
    for items in (csv_items, jsonl_items):
        r = C.classify(args(sim.url, items, C.fresh("g.jsonl"), "--gold-field", "gold",
                            labels="spam,ham"))
        eq(r.rc, 0, "exit %r" % r)
        ok("accuracy: 100.0% (1 of 1 items with a gold label" in r.err, r.err[-900:])
    sim.stop()


def test_missing_csv_columns_and_prompt_without_labels():
    sim = C.fast_sim()
    items = C.write_file("cols.csv", "id,text\n1,spam\n")
    for flag in ("--id-field", "--gold-field"):
        out = C.fresh("cols.jsonl")
        r = C.classify(args(sim.url, items, out, flag, "idd"))
        eq(r.rc, 2, "%s %r" % (flag, r))
        eq(r.err.strip().splitlines(),
           ["ollama-classify: bad value for %s: the CSV header of '%s' has no column 'idd'"
            % (flag, items)], "one line")
        ok(not os.path.exists(out), "no results file")
    # The default id field may be absent: line numbers.
    items = C.write_file("noid.csv", "text\nspam\n")
    out = C.fresh("noid.jsonl")
    r = C.classify(args(sim.url, items, out))
    eq((r.rc, C.results(out)[0]["id"]), (0, 2), "line number id %r" % r)
    prompt = C.write_file("nolabels.txt", "Classify the message.")
    r = C.classify(args(sim.url, items, C.fresh("np.jsonl"), "--prompt-file", prompt))
    eq(r.rc, 0, "exit %r" % r)
    eq(len(re.findall(r"warning: prompt file .* has no \{\{labels\}\}", r.err)), 1, r.err)
    sim.stop()


run(globals())
