"""The harness itself (tests/lib/harness.py): a skipped test is reported
SKIP, never PASS; a script whose tests all skipped exits 77, and ctest is
told that 77 means skipped for every Python test.

Each case writes a small test script, runs it with python3 as ctest would,
and checks its exit code and what it printed."""
import json
import os
import re
import subprocess
import sys

import harness
from harness import eq, ok, run, tmpdir

LIB = os.path.join(harness.SRC, "tests", "lib")


def script(body):
    """Run a test script made of BODY (after "from harness import *");
    returns (exit code, output)."""
    path = os.path.join(tmpdir(), "case-%d.py" % len(os.listdir(tmpdir())))
    with open(path, "w") as f:
        f.write("import os, sys\nfrom harness import *\n" + body)
    env = dict(os.environ, PYTHONPATH=LIB)
    r = subprocess.run([sys.executable, "-u", path], env=env, capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_skip_is_not_pass():
    rc, out = script(
        "def test_a():\n    pass\n"
        "def test_b():\n    skip('chromium not found')\n    raise AssertionError('ran on')\n"
        "run(globals())\n")
    eq(rc, 0, out)
    ok("PASS test_a" in out, out)
    ok("SKIP test_b: chromium not found" in out, out)
    ok("PASS test_b" not in out and "ran on" not in out, out)
    ok("1 passed, 0 failed, 1 skipped" in out, out)


def test_all_skipped_exits_77():
    rc, out = script(
        "def test_a():\n    skip('docker not found')\n"
        "def test_b():\n    need_tool('no-such-tool-for-the-harness-test')\n"
        "run(globals())\n")
    eq(rc, 77, out)
    ok("SKIP test_a: docker not found" in out, out)
    ok("SKIP test_b: no-such-tool-for-the-harness-test not found" in out, out)
    ok("0 passed, 0 failed, 2 skipped" in out, out)


def test_failure_beats_skip():
    rc, out = script(
        "def test_a():\n    skip('promtool not found')\n"
        "def test_b():\n    eq(1, 2, 'one')\n"
        "run(globals())\n")
    eq(rc, 1, out)
    ok("SKIP test_a: promtool not found" in out and "FAIL test_b" in out, out)
    ok("0 passed, 1 failed, 1 skipped" in out, out)


def test_need_tool_finds_a_tool():
    rc, out = script(
        "def test_a():\n    p = need_tool('no-such-tool-for-the-harness-test', 'sh')\n"
        "    ok(os.access(p, os.X_OK), p)\n"
        "run(globals())\n")
    eq(rc, 0, out)
    ok("PASS test_a" in out, out)


def test_skip_all_at_the_top():
    rc, out = script(
        "skip_all('kubectl not found')\n"
        "def test_a():\n    print('ran test_a')\n"
        "run(globals())\n")
    eq(rc, 77, out)
    ok("SKIP all: kubectl not found" in out, out)
    ok("ran test_a" not in out, out)
    rc, out = script("skip('no engine')\nrun(globals())\n")
    eq(rc, 77, out)
    ok("SKIP all: no engine" in out, out)


def test_skip_all_in_a_test_skips_the_rest():
    rc, out = script(
        "def test_a():\n    pass\n"
        "def test_b():\n    skip_all('dockerd will not start')\n"
        "def test_c():\n    raise AssertionError('test_c ran')\n"
        "run(globals())\n")
    eq(rc, 77, out)
    ok("PASS test_a" in out, out)
    ok("SKIP test_b: dockerd will not start" in out, out)
    ok("SKIP test_c: dockerd will not start" in out and "test_c ran" not in out, out)
    ok("1 passed, 0 failed, 2 skipped" in out, out)


def test_unknown_test_name_fails():
    path = os.path.join(tmpdir(), "named.py")
    with open(path, "w") as f:
        f.write("from harness import *\ndef test_a():\n    pass\nrun(globals())\n")
    r = subprocess.run([sys.executable, path, "test_typo"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=LIB), timeout=60)
    eq(r.returncode, 1, r.stdout)
    ok("no such test: test_typo" in r.stdout, r.stdout)


def ctest_command():
    with open(os.path.join(harness.BUILD, "CMakeCache.txt")) as f:
        m = re.search(r"^CMAKE_CTEST_COMMAND:INTERNAL=(.*)$", f.read(), re.M)
    ok(m, "CMAKE_CTEST_COMMAND not in the build's CMakeCache.txt")
    return m.group(1)


def test_ctest_knows_77_means_skipped():
    """Every ctest that runs a Python test script (op_py_test) has
    SKIP_RETURN_CODE 77."""
    r = subprocess.run([ctest_command(), "--show-only=json-v1"], cwd=harness.BUILD,
                       capture_output=True, text=True, timeout=60)
    eq(r.returncode, 0, r.stderr)
    py = 0
    for t in json.loads(r.stdout)["tests"]:
        cmd = t.get("command") or []
        if len(cmd) < 3 or not os.path.basename(cmd[0]).startswith("python") or \
                not cmd[2].endswith(".py"):
            continue
        py += 1
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        eq(str(props.get("SKIP_RETURN_CODE")), "77", t["name"])
    ok(py >= 20, "only %d Python tests found in ctest" % py)


run(globals())
