"""The command line: --help, --version, bad flags, unreadable input (exit
2), malformed JSONL and CSV lines reported with their line numbers and
recorded as errors, the progress total right with malformed rows, the
OLLAMA_HOST forms, the -c config file with flags winning and unknown keys
refused."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clslib as C  # noqa: E402
from harness import eq, ok, run  # noqa: E402


def write(name, text):
    path = C.fresh(name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_help_version_bad_flags():
    r = C.classify(["--help"])
    eq(r.rc, 0, "--help")
    ok(r.out.startswith("usage: ollama-classify -i ITEMS -o RESULTS -m MODEL -l LABELS"), r.out)
    r = C.classify(["-h"])
    eq(r.rc, 0, "-h")
    r = C.classify(["--version"])
    eq((r.rc, r.out.strip()), (0, "ollama-classify 0.1.0"), "--version")
    for args, word in ((["--bogus"], "--bogus"), (["-x"], "-x"), (["-j", "zero"], "--jobs"),
                       (["-i", "a", "-o", "b", "-m", "m", "-l", "a,b", "-j", "0"], "--jobs"),
                       (["-i", "a", "-o", "b", "-m", "m"], "-l"),
                       (["-i", "a", "-o", "b", "-m", "m", "-l", "a,b", "--retries", "-1"],
                        "--retries"),
                       (["-i"], "-i"),
                       (["-i", "a", "-o", "b", "-m", "m", "-l", "a,,b"], "label")):
        r = C.classify(args)
        eq(r.rc, 2, "exit of %r" % args)
        eq(len(r.err.strip().splitlines()), 1, "one line for %r: %r" % (args, r.err))
        ok(word in r.err, "%r names %s: %r" % (args, word, r.err))


def test_unreadable_input():
    sim = C.fast_sim()
    for items in ("/nonexistent/items.jsonl", C.harness.tmpdir()):
        out = C.fresh("x.jsonl")
        r = C.classify(C.std_args(sim.url, items, out))
        eq(r.rc, 2, "exit %r" % r)
        ok("cannot read items" in r.err, r.err)
    bad_csv = write("nocol.csv", "id,body\n1,hello\n")
    r = C.classify(C.std_args(sim.url, bad_csv, C.fresh("y.jsonl")))
    eq(r.rc, 2, "CSV without a text column %r" % r)
    ok("no 'text' column" in r.err, r.err)
    r = C.classify(C.std_args(sim.url, C.ITEMS_JSONL, "/nonexistent/dir/out.jsonl"))
    eq(r.rc, 2, "unwritable results %r" % r)
    eq(sim.stats()["requests"], 0, "nothing sent")
    sim.stop()


def test_malformed_jsonl_lines():
    sim = C.fast_sim()
    items = write("bad.jsonl", "\n".join([
        '{"id":"a","text":"a billing question"}',
        '{"id":"b","text":"a bug" ',          # line 2: cut
        '',                                   # line 3: blank, not an item
        '["not","an","object"]',              # line 4
        '{"id":"e","body":"no text field"}',  # line 5: keeps its own id
        '{"text":"no id: a praise"}',         # line 6: id = 6
        '{"id":7,"text":"number id, shipping"}',
    ]) + "\n")
    out = C.fresh("bad-out.jsonl")
    r = C.classify(C.std_args(sim.url, items, out))
    eq(r.rc, 1, "exit %r" % r)
    for n in (2, 4, 5):
        ok(re.search(r"items: line %d: " % n, r.err), "line %d reported: %s" % (n, r.err))
    # A line that is not an object has no id: "id":null and its "line"
    # (its line number could be a real item's id).
    all_rows = C.results(out)
    rows = {x["id"]: x for x in all_rows if x["id"] is not None}
    eq(sorted(rows, key=str), sorted(["a", "e", 6, 7], key=str), "ids")
    eq(sorted(x["line"] for x in all_rows if x["id"] is None), [2, 4], "lines without an id")
    eq((rows["a"]["label"], rows[6]["label"], rows[7]["label"]),
       ("billing", "praise", "shipping"), "good lines")
    for x in [x for x in all_rows if x["id"] is None] + [rows["e"]]:
        ok(x["label"] is None and "line" in x["error"], "row %r" % x)
    ok("errors: input 3" in r.err, r.err)
    sim.stop()


def test_malformed_csv_lines():
    sim = C.fast_sim()
    items = write("bad.csv", 'id,text\n'
                  'a,"a ""quoted"", billing text"\n'      # line 2: fine
                  'b,"two\nlines, bug"\n'                 # lines 3-4: fine
                  'c,too,many,fields\n'                    # line 5
                  'd,"unbalanced "quote" here"\n'          # line 6
                  'e,ok praise\r\n'                        # line 7: CRLF
                  'f,"never closed\n')                     # line 8
    out = C.fresh("bad-csv-out.jsonl")
    r = C.classify(C.std_args(sim.url, items, out))
    eq(r.rc, 1, "exit %r" % r)
    for n in (5, 6, 8):
        ok(re.search(r"items: line %d: " % n, r.err), "line %d reported: %s" % (n, r.err))
    all_rows = C.results(out)
    rows = {x["id"]: x for x in all_rows if x["id"] is not None}
    eq(sorted(rows, key=str), ["a", "b", "e"], "ids")
    eq(sorted(x["line"] for x in all_rows if x["id"] is None), [5, 6, 8], "malformed records")
    eq((rows["a"]["label"], rows["b"]["label"], rows["e"]["label"]),
       ("billing", "bug", "praise"), "labels")
    sim.stop()


def test_progress_total_with_malformed_csv():
    """The total counts records the way the reader splits them: a stray
    quote or a blank-looking row is one malformed item, not a quote that
    swallows the rows after it (which gave "6/2 done")."""
    sim = C.fast_sim()
    items = write("quotes.csv", 'id,text\n'
                  'a,a billing question\n'
                  'b,he said "hi there\n'   # a stray quote: malformed, one item
                  'c,a bug\n'
                  '   \n'                   # one field of spaces: malformed
                  'd,"x" y praise\n'        # text after a closing quote: malformed
                  'e,shipping\n')
    out = C.fresh("quotes.jsonl")
    r = C.classify(C.std_args(sim.url, items, out))
    eq(r.rc, 1, "exit %r" % r)
    eq(len(C.results(out)), 6, "six items")
    done = re.findall(r"progress: (\d+)/(\S+) done", r.err)
    ok(done, r.err)
    for d, total in done:
        ok(total == "6" and int(d) <= 6, "progress %s/%s: %s" % (d, total, r.err))
    eq(done[-1], ("6", "6"), "the last progress line")
    sim.stop()


def test_ollama_host_forms():
    sim = C.fast_sim()
    txt = write("h.txt", "a bug\n")
    port = sim.port
    for host in ("127.0.0.1:%d" % port, ":%d" % port, "http://127.0.0.1:%d" % port,
                 "http://localhost:%d/" % port):
        out = C.fresh("h.jsonl")
        r = C.classify(["-i", txt, "-o", out, "-m", "llama3", "-l", "bug,praise"],
                       env={"OLLAMA_HOST": host})
        eq(r.rc, 0, "OLLAMA_HOST=%s: %r" % (host, r))
        eq(C.results(out)[0]["label"], "bug", "label")
    eq(sim.stats()["served"], 4, "all four reached the sim")
    # A bare host keeps Ollama's port 11434: the error names it.
    out = C.fresh("h.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "m", "-l", "bug,praise", "--retries", 0],
                   env={"OLLAMA_HOST": "127.0.0.2"})
    eq(r.rc, 1, "nothing at 127.0.0.2:11434 %r" % r)
    ok("http://127.0.0.2:11434" in r.err and "port 11434" in r.err, r.err)
    # --url wins over OLLAMA_HOST.
    out = C.fresh("h.jsonl")
    r = C.classify(["-i", txt, "-o", out, "-m", "llama3", "-l", "bug,praise", "--url", sim.url],
                   env={"OLLAMA_HOST": "127.0.0.2:1"})
    eq(r.rc, 0, "--url over OLLAMA_HOST %r" % r)
    sim.stop()


def test_config_file():
    sim = C.fast_sim()
    other = C.fast_sim()
    txt = write("c.txt", "a bug\nsome praise\n")
    out = C.fresh("c.jsonl")
    conf = write("c.conf", '# a config\nmodel = "llama3";\nlabels = ["bug", "praise"];\n'
                 'url = "%s";\njobs = 7;\nretries = 1;\ntimeout_s = 30;\n'
                 'input = "%s";\noutput = "%s";\n' % (sim.url, txt, out))
    r = C.classify(["-c", conf])
    eq(r.rc, 0, "config run %r" % r)
    eq({x["id"]: x["label"] for x in C.results(out)}, {1: "bug", 2: "praise"}, "labels")
    eq(sim.stats()["served"], 2, "served by the config's url")
    # A flag wins over the key.
    r = C.classify(["-c", conf, "--url", other.url])
    eq(r.rc, 0, "override %r" % r)
    eq(other.stats()["served"], 0, "resumed: nothing new to send")
    out2 = C.fresh("c2.jsonl")
    r = C.classify(["-c", conf, "--url", other.url, "-o", out2])
    eq(r.rc, 0, "override %r" % r)
    eq(other.stats()["served"], 2, "the flag's url and output won")
    # Unknown keys and wrong types are errors naming the file and line.
    bad = write("bad.conf", 'model = "m";\nmodle = "m";\n')
    r = C.classify(["-c", bad])
    eq(r.rc, 2, "unknown key %r" % r)
    ok(re.search(r"bad.conf:2: unknown key 'modle'", r.err), r.err)
    bad = write("bad2.conf", 'jobs = "many";\n')
    r = C.classify(["-c", bad])
    eq(r.rc, 2, "wrong type %r" % r)
    ok("bad2.conf:1: jobs" in r.err, r.err)
    r = C.classify(["-c", "/nonexistent.conf"])
    eq(r.rc, 2, "missing config %r" % r)
    # The example config in conf/ parses (with the required keys given).
    example = os.path.join(C.harness.SRC, "conf", "ollama-classify.conf")
    r = C.classify(["-c", example, "-i", txt, "-o", C.fresh("e.jsonl"), "--url", sim.url,
                    "-l", "bug,praise"])
    eq(r.rc, 0, "example config %r" % r)
    sim.stop()
    other.stop()


run(globals())
