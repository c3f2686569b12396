"""-o to something that is not a regular file is written, never read back
for resume: /dev/stdout into a pipe and a FIFO get the lines, /dev/full's
ENOSPC is reported with exit 1 and the summary claims no line that was not
written. (Reading them back hung, or read NULs until memory ran out.)"""
import os
import resource
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import SANITIZE, SLOW, eq, ok, run  # noqa: E402


def capped(argv, timeout=30):
    """Run the classifier with stdout a pipe, its address space capped (a
    regression reading /dev/full must not take the machine's memory; ASan
    needs the address space, so no cap under it) and a timeout."""
    def cap():
        if not SANITIZE:
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    p = subprocess.run([C.CLASSIFY] + [str(a) for a in argv], capture_output=True,
                       env=C.env_base(), timeout=timeout * SLOW, preexec_fn=cap)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def argv(url, items, out):
    return ["-i", items, "-o", out, "-m", C.MODEL, "-l", "spam,ham", "--url", url]


def test_stdout_pipe_and_fifo():
    sim = C.fast_sim()
    items = C.write_file("o.jsonl", '{"id":1,"text":"spam"}\n{"id":2,"text":"ham"}\n')
    rc, out, err = capped(argv(sim.url, items, "/dev/stdout"))
    eq(rc, 0, err)
    eq(sorted((x["id"], x["label"]) for x in map(__import__("json").loads, out.splitlines())),
       [(1, "spam"), (2, "ham")], "the lines on stdout")
    fifo = C.fresh("fifo")
    os.mkfifo(fifo)
    got = []
    t = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    t.start()
    rc, _, err = capped(argv(sim.url, items, fifo))
    t.join(10)
    eq(rc, 0, err)
    eq(len(got[0].splitlines()), 2, "two lines through the FIFO: %r" % got)
    sim.stop()


def test_dev_full_reported():
    sim = C.fast_sim()
    items = C.write_file("f.jsonl", '{"id":1,"text":"spam"}\n')
    rc, _, err = capped(argv(sim.url, items, "/dev/full"))
    eq(rc, 1, err)
    ok("cannot write results: No space left on device" in err, err)
    ok("summary: 0 items (0 labelled, 0 errors)" in err, err)
    sim.stop()


run(globals())
