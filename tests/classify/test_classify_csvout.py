"""CSV results (-o FILE.csv) resume whatever the item ids are: a CSV cell
holds only text, so ids are matched by their text ("007" is not 7, "" is an
id, 1.5, 19-digit numbers and objects match again); two ids with the same
text (7 and "7") are one id there, and the second is a duplicate, named."""
import csv
import io
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402

# Ids of every JSON type, and texts whose label word the sim answers.
IDS = ['"007"', '7', '""', '1.5', '1234567890123456789', '-3', '{"k":[1,"a"]}',
       '"x, \\"y\\""', '"8"']
LABELS = ["spam", "ham", "other"]


def items_file():
    lines = ['{"id":%s,"text":"%s item %d","gold":"%s"}' % (i, LABELS[n % 3], n, LABELS[n % 3])
             for n, i in enumerate(IDS)]
    return C.write_file("ids.jsonl", "\n".join(lines) + "\n")


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_typed_ids_resume_from_csv():
    """The first run labels one item (--limit 1), the next all the others,
    a third nothing: exactly one labelled row per item, and each item was
    sent exactly once (none skipped as done without being sent)."""
    sim = C.fast_sim()
    items = items_file()
    out = C.fresh("ids.csv")
    args = ["-i", items, "-o", out, "-m", C.MODEL, "-l", ",".join(LABELS), "--url", sim.url]
    r = C.classify(args + ["--limit", 1])
    eq(r.rc, 0, "first run %r" % r)
    eq(len(rows_of(out)), 1, "one row")
    r = C.classify(args)
    eq(r.rc, 0, "second run %r" % r)
    ok("%d items (%d labelled, 0 errors), 1 of them skipped" % (len(IDS), len(IDS)) in r.err,
       r.err[-600:])
    r = C.classify(args)
    eq(r.rc, 0, "third run %r" % r)
    ok("%d of them skipped as already labelled" % len(IDS) in r.err, r.err[-600:])
    rows = rows_of(out)
    eq(len(rows), len(IDS), "one row per item: %r" % rows)
    ok(all(x["label"] in LABELS for x in rows), rows)
    # The cells: strings as they are, other ids as their JSON text.
    want = ["007", "7", "", "1.5", "1234567890123456789", "-3", '{"k":[1,"a"]}', 'x, "y"', "8"]
    eq(sorted(x["id"] for x in rows), sorted(want), "id cells")
    eq(sim.stats()["served"], len(IDS), "each item sent once")
    # --rescore finds the gold of every row by the id's text.
    r = C.classify(["--rescore", "-o", out, "-i", items, "-l", ",".join(LABELS),
                    "--gold-field", "gold"])
    eq(r.rc, 0, "rescore %r" % r)
    ok("(%d of %d items with a gold label" % (len(IDS), len(IDS)) in r.err, r.err[-800:])
    sim.stop()


def test_same_text_ids_are_one_id_in_csv():
    """7 and "7": two ids in JSONL results, one in CSV results (the second
    a duplicate, named with the line of the first and why)."""
    sim = C.fast_sim()
    items = C.write_file("twins.jsonl", '{"id":7,"text":"spam a"}\n{"id":"7","text":"ham b"}\n'
                         '{"id":"a","text":"ham c"}\n')
    out = C.fresh("twins.csv")
    args = ["-i", items, "-o", out, "-m", C.MODEL, "-l", ",".join(LABELS), "--url", sim.url]
    for n in (1, 2):
        r = C.classify(args)
        eq(r.rc, 0, "run %d %r" % (n, r))
        ok(re.search(r'items: line 2: duplicate id "7": skipped \(the same text as the id of '
                     r'line 1: CSV results hold an id as text', r.err), r.err[-800:])
        ok("duplicates: 1 item" in r.err, r.err[-800:])
    rows = rows_of(out)
    eq([(x["id"], x["label"]) for x in rows], [("7", "spam"), ("a", "ham")], "rows")
    eq(sim.stats()["served"], 2, "two requests in all")
    # JSONL results keep the type: two ids.
    out = C.fresh("twins.jsonl")
    r = C.classify(["-i", items, "-o", out, "-m", C.MODEL, "-l", ",".join(LABELS),
                    "--url", sim.url])
    eq(r.rc, 0, "jsonl %r" % r)
    eq(sorted(str(x["id"]) for x in C.results(out)), ["7", "7", "a"], "three ids")
    sim.stop()


run(globals())
