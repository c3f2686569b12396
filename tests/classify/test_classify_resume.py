"""Resume: kill -9 in mid-run, run the same command again: exactly one
labelled line per item; a torn last line is ignored and appends start on a
fresh line; items that ended in error are tried again; the file is only
ever appended to."""
import os
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
    ok("1525 skipped as already labelled" in r.err, r.err[-500:])
    sim.stop()


def prefix_path(data):
    path = C.fresh("prefix.jsonl")
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_torn_last_line():
    sim = C.fast_sim()
    out = C.fresh("torn.jsonl")
    # Ten labelled lines, then a line cut by a kill in the middle of an id.
    with open(out, "w") as f:
        for i in range(1, 11):
            f.write('{"id":"t%04d","label":"bug","ms":1,"attempts":1}\n' % i)
        f.write('{"id":"t0011","lab')
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, out))
    eq(r.rc, 0, "exit %r" % r)
    with open(out) as f:
        lines = f.read().split("\n")
    eq(lines[10], '{"id":"t0011","lab', "the torn line kept as it was")
    ok(lines[11].startswith('{"id":'), "appends start on a fresh line: %r" % lines[11])
    rows = C.results(out)
    items = C.bundled()
    C.check_all_labelled_once(rows, items)
    eq(len(rows), len(items), "one line per item")
    eq(sim.stats()["served"], len(items) - 10, "ten items skipped")
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
