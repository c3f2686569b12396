"""Resume: kill -9 in mid-run, run the same command again: exactly one
labelled line per item; a torn last line is cut off (every line parses) and
a whole last line without its newline is kept; items that ended in error
are tried again; complete lines are never rewritten; duplicate ids in the
input are labelled once; the summary of a resumed run covers the whole
results file."""
import collections
import json
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run, wait_until  # noqa: E402


def test_kill9_then_resume():
    # About 400 items/s: the run takes seconds, so the kill lands mid-run.
    sim = C.harness.Sim("--parallel", 8, "--ttft-ms", 20, "--tokens-per-s", 0)
    out = C.fresh("killed.jsonl")
    args = C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 40)
    p = C.start(args)
    wait_until(lambda: C.count_lines(out) >= 300, timeout=20, what="300 results")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = C.count_lines(out)
    ok(before < 1525, "killed too late: %d lines" % before)
    with open(out, "rb") as f:
        prefix = f.read()
    prefix = prefix[:prefix.rfind(b"\n") + 1]  # the complete lines
    r = C.classify(args)
    eq(r.rc, 0, "resume exit %r" % r)
    ok("resuming: %d items already labelled" % len(C.results(prefix_path(prefix))) in r.err,
       "resume message in %s" % r.err[-800:])
    with open(out, "rb") as f:
        eq(f.read(len(prefix)), prefix, "the first run's lines are untouched")
    rows = C.results(out)
    items = C.bundled()
    eq(len(rows), len(items), "exactly one line per item")
    C.check_all_labelled_once(rows, items)
    C.check_label_words(rows, items)
    # The sim saw only the missing items (plus those lost in flight).
    served = sim.stats()["served"]
    ok(served <= 1525 + 40, "sim served %d: skipped items were sent again" % served)
    # A third run has nothing to do.
    r = C.classify(args)
    eq(r.rc, 0, "third run %r" % r)
    eq(len(C.results(out)), len(items), "nothing appended")
    ok("1525 of them skipped as already labelled" in r.err, r.err[-500:])
    sim.stop()


def prefix_path(data):
    path = C.fresh("prefix.jsonl")
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_torn_last_line_cut():
    """A line cut by a kill -9 mid-write is cut off on resume: afterwards
    every line of the file parses, and each item has one labelled line."""
    sim = C.fast_sim()
    out = C.fresh("torn.jsonl")
    # Ten labelled lines, then a line cut by a kill in the middle of a key.
    with open(out, "w") as f:
        for i in range(1, 11):
            f.write('{"id":"t%04d","label":"bug","ms":1,"attempts":1}\n' % i)
        f.write('{"id":"t0011","lab')
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    eq(r.rc, 0, "exit %r" % r)
    with open(out) as f:
        text = f.read()
    for n, line in enumerate(text.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            raise AssertionError("line %d does not parse: %r" % (n, line))
    rows = [json.loads(line) for line in text.splitlines()]
    ok(text.endswith("\n"), "ends on a newline")
    ok("removed a torn last line (18 bytes" in r.err, r.err[-800:])
    eq(rows[:10], [{"id": "t%04d" % i, "label": "bug", "ms": 1, "attempts": 1}
                   for i in range(1, 11)], "the complete lines untouched")
    items = C.bundled()
    C.check_all_labelled_once(rows, items)
    eq(len(rows), len(items), "one line per item")
    eq(sim.stats()["served"], len(items) - 10, "ten items skipped")
    sim.stop()


def test_whole_last_line_without_newline_kept():
    """A last line that is whole but lacks its newline is a result: kept,
    its item skipped, and the appends start on a fresh line."""
    sim = C.fast_sim()
    out = C.fresh("nonl.jsonl")
    with open(out, "w") as f:
        f.write('{"id":"t0001","label":"bug","ms":1,"attempts":1}\n')
        f.write('{"id":"t0002","label":"praise","ms":1,"attempts":1}')
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    eq(r.rc, 0, "exit %r" % r)
    ok("torn" not in r.err, r.err[-800:])
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    eq(rows[1], {"id": "t0002", "label": "praise", "ms": 1, "attempts": 1}, "kept")
    C.check_all_labelled_once(rows, C.bundled())
    eq(sim.stats()["served"], 1525 - 2, "two items skipped")
    sim.stop()


def test_duplicate_ids_labelled_once():
    """Ids that come twice in the input: one labelled line per id, a warning
    per duplicate (the first ten, then one line), a count in the summary;
    a resume does not take the twin for done in silence."""
    sim = C.fast_sim()
    lines = ['{"id":"a","text":"a bug"}', '{"id":"b","text":"some praise"}',
             '{"id":"a","text":"a bug again"}', '{"id":"c","text":"billing"}',
             '{"id":"b","text":"more praise"}']
    lines += ['{"id":"d","text":"shipping %d"}' % i for i in range(13)]  # 12 duplicates
    items = C.write_file("dups.jsonl", "\n".join(lines) + "\n")
    out = C.fresh("dups-out.jsonl")
    args = C.std_args(sim.url, items, out)
    r = C.classify(args)
    eq(r.rc, 0, "exit %r" % r)
    rows = C.results(out)
    eq(sorted(x["id"] for x in rows), ["a", "b", "c", "d"], "one line per id")
    ok(all(x["label"] for x in rows), rows)
    warned = re.findall(r"items: line (\d+): duplicate id (\S+): skipped", r.err)
    eq(warned[:3], [("3", '"a"'), ("5", '"b"'), ("7", '"d"')], "the first warnings")
    eq(len(warned), 10, "ten named: %s" % r.err)
    eq(r.err.count("more duplicate ids"), 1, r.err)
    ok("duplicates: 14 items skipped" in r.err, r.err)
    ok("summary: 4 items (4 labelled, 0 errors)" in r.err, r.err)
    # Progress and summary agree: the duplicates leave the total, not done.
    eq(re.findall(r"progress: (\d+/\d+) done", r.err)[-1], "4/4", r.err)
    ok("18/18" not in r.err, r.err)
    eq(sim.stats()["served"], 4, "four requests")
    # Resumed: the four are done, the duplicates still named and counted.
    r = C.classify(args)
    eq(r.rc, 0, "resume %r" % r)
    eq(len(C.results(out)), 4, "nothing appended")
    ok("duplicates: 14 items skipped" in r.err and "4 of them skipped" in r.err, r.err)
    eq(len(re.findall(r": duplicate id ", r.err)), 10, r.err)
    eq(sim.stats()["served"], 4, "nothing sent")
    sim.stop()


def label_counts(err):
    m = re.search(r"\n  labels: (.*)\n", err)
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", m.group(1))}


def test_resume_summary_covers_whole_file():
    """After a resume the label counts and the accuracy cover the whole
    results file, the labels read back included, and the summary says how
    many were skipped as already done."""
    sim = C.fast_sim()
    with open(C.ITEMS_JSONL) as f:
        lines = f.readlines()
    first = C.write_file("first600.jsonl", "".join(lines[:600]))
    out = C.fresh("whole.jsonl")
    r = C.classify(C.std_args(sim.url, first, out, "--gold-field", "gold"))
    eq(r.rc, 0, "first part %r" % r)
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--gold-field", "gold"))
    eq(r.rc, 0, "resume %r" % r)
    rows = C.results(out)
    items = C.bundled()
    C.check_all_labelled_once(rows, items)
    eq(label_counts(r.err), dict(collections.Counter(x["label"] for x in rows)),
       "label counts over the whole file")
    right = sum(1 for x in rows if x["label"] == items[x["id"]]["gold"])
    ok("(%d of 1525 items with a gold label" % right in r.err, r.err)
    ok(re.search(r"summary: 1525 items \(1525 labelled, 0 errors\), 600 of them skipped as "
                 r"already labelled; this run 925 items in", r.err), r.err)
    # A third run: nothing to do, the same picture.
    r2 = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out, "--gold-field", "gold"))
    eq(r2.rc, 0, "third %r" % r2)
    eq(label_counts(r2.err), label_counts(r.err), "the same counts")
    ok("(%d of 1525 items with a gold label" % right in r2.err, r2.err)
    ok("latency ms: no successful request this run" in r2.err, r2.err)
    sim.stop()


def test_errors_retried_on_resume():
    """Items recorded as errors are not 'done': the next run tries them again."""
    sim = C.fast_sim("--off-label-rate", 1.0)
    out = C.fresh("errs.jsonl")
    args = C.std_args(sim.url, C.ITEMS_JSONL, out, "-j", 50)
    r = C.classify(args)
    eq(r.rc, 1, "all off-label: exit %r" % r)
    sim.stop()
    sim = C.fast_sim()
    args[args.index("--url") + 1] = sim.url
    r = C.classify(args)
    eq(r.rc, 0, "second run %r" % r)
    rows = C.results(out)
    C.check_all_labelled_once(rows, C.bundled())
    eq(len(rows), 2 * 1525, "one error line and one labelled line per item")
    sim.stop()


run(globals())
