"""tests/tools/cycles.py, on small programs compiled here: it finds a circle
of use between object files, names the symbols behind each arrow, passes
code without one, and resolves symbols per program, as a linker does."""
import os
import subprocess
import sys

from harness import SRC, eq, ok, run, tmpdir

CYCLES = os.path.join(SRC, "tests", "tools", "cycles.py")
CC = os.environ.get("CC") or "cc"


def build(case, programs):
    """PROGRAMS: {program: {file.c: source}}. Compiles each file to
    CASE/<program>/CMakeFiles/t.dir/<file>.o (the layout CMake uses), writes
    the manifest; returns cycles.py's (exit code, output)."""
    root = os.path.join(tmpdir(), case)
    lines = ["build " + root]
    for prog, files in programs.items():
        lines.append("program " + prog)
        d = os.path.join(root, prog, "CMakeFiles", "t.dir")
        os.makedirs(d, exist_ok=True)
        for name, code in files.items():
            c = os.path.join(root, prog, name)
            with open(c, "w") as f:
                f.write(code)
            o = os.path.join(d, name + ".o")
            subprocess.run([CC, "-c", c, "-o", o], check=True)
            lines.append(o)
    man = os.path.join(root, "objects.txt")
    with open(man, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, CYCLES, man], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_a_circle_fails_and_is_named():
    rc, out = build("circle", {"prog": {
        "a.c": "int b_fn(int n);\nint a_fn(void);\nint a_fn(void) { return b_fn(1); }\n",
        "b.c": "int a_fn(void);\nint b_fn(int n);\n"
               "int b_fn(int n) { return n ? a_fn() : 0; }\n",
        "c.c": "int a_fn(void);\nint main(void) { return a_fn(); }\n"}})
    eq(rc, 1, out)
    # c.c uses the circle but is not in it
    ok("circle (prog): prog/a.c prog/b.c\n" in out, out)
    ok("prog/a.c -> prog/b.c: b_fn" in out and "prog/b.c -> prog/a.c: a_fn" in out, out)
    ok("prog/c.c" not in out, out)
    ok("1 circles, 2 files in them, 3 objects in 1 programs" in out, out)


def test_a_variable_makes_a_circle_too():
    rc, out = build("var", {"prog": {
        "a.c": "extern int b_count;\nint a_count;\nint a_fn(void);\n"
               "int a_fn(void) { return b_count; }\n",
        "b.c": "extern int a_count;\nint b_count;\nint b_fn(void);\n"
               "int b_fn(void) { return a_count; }\n"}})
    eq(rc, 1, out)
    ok("prog/a.c -> prog/b.c: b_count" in out and "prog/b.c -> prog/a.c: a_count" in out, out)


def test_layers_pass():
    rc, out = build("layers", {"prog": {
        "top.c": "int mid(void);\nint low(void);\nint main(void) { return mid() + low(); }\n",
        "mid.c": "int low(void);\nint mid(void);\nint mid(void) { return low(); }\n",
        "low.c": "static int helper(void) { return 1; }\nint low(void);\n"
                 "int low(void) { return helper(); }\n"}})
    eq(rc, 0, out)
    ok("0 circles, 0 files in them, 3 objects in 1 programs" in out, out)


def test_symbols_resolve_within_each_program():
    """f and g exist in both programs; a global symbol table would see
    one/x.c -> two/y.c -> one/x.c, a circle no linker makes."""
    rc, out = build("perprog", {
        "one": {"x.c": "int g(void);\nint f(void);\nint f(void) { return g(); }\n",
                "w.c": "int g(void);\nint g(void) { return 2; }\n"},
        "two": {"y.c": "int f(void);\nint g(void);\nint g(void) { return f(); }\n",
                "z.c": "int f(void);\nint f(void) { return 3; }\n"}})
    eq(rc, 0, out)
    ok("0 circles, 0 files in them, 4 objects in 2 programs" in out, out)


def test_a_missing_object_is_an_error():
    man = os.path.join(tmpdir(), "missing.txt")
    with open(man, "w") as f:
        f.write("build %s\nprogram p\n%s/nowhere.c.o\n" % (tmpdir(), tmpdir()))
    r = subprocess.run([sys.executable, CYCLES, man], capture_output=True, text=True)
    eq(r.returncode, 2, r.stdout)
    ok("nm " in r.stdout, r.stdout)


run(globals())
