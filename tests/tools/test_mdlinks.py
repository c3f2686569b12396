"""tests/tools/mdlinks.py on a small tree of Markdown files made here: every
kind of good link passes, and each broken one is reported, at its line, with
the reason."""
import os
import subprocess
import sys

from harness import SRC, eq, ok, run, tmpdir

MDLINKS = os.path.join(SRC, "tests", "tools", "mdlinks.py")


def tree(case, files):
    root = os.path.join(tmpdir(), case)
    for path, text in files.items():
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    r = subprocess.run([sys.executable, MDLINKS, root], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


DOCS = {
    "README.md": """# Top

[docs](docs/guide.md), [folder](docs), [root path](/docs/guide.md),
[space](docs/a%20b.md) and [angle](<docs/a b.md>) and ![pic](img/x.png "title").
[A heading with punctuation](docs/guide.md#keys-priorities-and-fair-sharing),
[repeated](docs/guide.md#setup-1), [code in it](docs/guide.md#max_concurrent-per-backend),
[setext](docs/guide.md#an-underlined-heading), [html](docs/guide.md#custom-id),
[the folder's readme](docs#docs-home), [a line](src/main.c#L2), [lines](src/main.c#L1-L3),
[here](#top), [over
two lines](#top), [external](https://example.com/nothing-here.md), [mail](mailto:a@b).

[ref]: docs/guide.md#setup

`[in a code span](nowhere.md)`

```
[in a fence](nowhere.md)
# Not A Heading
```

<!-- [in a comment](nowhere.md) -->
""",
    "docs/README.md": "# Docs home\n",
    "docs/guide.md": """# Guide

## Keys, priorities and fair sharing
## Setup
## Setup
## `max_concurrent` per backend
An underlined heading
---------------------
<a id="custom-id"></a>
""",
    "docs/a b.md": "# A B\n",
    "img/x.png": "",
    "src/main.c": "int a;\nint b;\nint c;\n",
    "build/CMakeCache.txt": "",
    "build/junk.md": "[broken but in a build folder](nowhere.md)\n",
    "sub/out/CMakeCache.txt": "",
    "sub/out/junk.md": "[broken but in a build folder](nowhere.md)\n",
}


def test_good_links_pass():
    rc, out = tree("good", DOCS)
    eq(rc, 0, out)
    ok("mdlinks: 17 relative links in 4 Markdown files, 0 broken" in out, out)


def test_broken_links_fail_with_reasons():
    bad = dict(DOCS)
    bad["notes.md"] = """# Notes

[gone](missing.md)
[no anchor](docs/guide.md#setup-2)
[case](docs/guide.md#Setup)
[fenced heading](README.md#not-a-heading)
[not markdown](src/main.c#main)
[past the end](src/main.c#L9)
[outside](../../etc/passwd)
[a folder without readme](img#x)
[self](#nope) and [empty]()

[ref]: docs/nowhere.md
"""
    rc, out = tree("bad", bad)
    eq(rc, 1, out)
    want = [
        "notes.md:3: [gone](missing.md): no such file: missing.md",
        "notes.md:4: [no anchor](docs/guide.md#setup-2): no heading #setup-2 in docs/guide.md",
        "notes.md:5: [case](docs/guide.md#Setup): no heading #Setup in docs/guide.md",
        "notes.md:6: [fenced heading](README.md#not-a-heading): no heading #not-a-heading",
        "notes.md:7: [not markdown](src/main.c#main): #main: src/main.c is not Markdown",
        "notes.md:8: [past the end](src/main.c#L9): #L9: src/main.c has 3 lines",
        "notes.md:9: [outside](../../etc/passwd): ../../etc/passwd is outside the repository",
        "notes.md:10: [a folder without readme](img#x): #x: img is a folder without a README.md",
        "notes.md:11: [self](#nope): no heading #nope in notes.md",
        "notes.md:11: [empty](): empty link",
        "notes.md:13: [ref]: docs/nowhere.md: no such file: docs/nowhere.md",
    ]
    for w in want:
        ok(w in out, "missing %r in:\n%s" % (w, out))
    ok(out.count("notes.md:") == len(want), out)
    ok("5 Markdown files, %d broken" % len(want) in out, out)


run(globals())
