#!/usr/bin/env python3
"""warnings.py BUILD_DIR --werror|--no-werror: the warning set is in force.

Reads BUILD_DIR/compile_commands.json (CMake writes it) and checks that:
1. every C file of proxy/, classifier/ and tests/sim is compiled with each
   flag of WANTED, and with -Werror exactly when the build says so;
2. the real compile command of proxy/proxy.c, given a small probe file that
   breaks one rule, reports that rule's warning, and under --werror fails
   with it as an error (under --no-werror it still builds).
So dropping a flag from CMakeLists.txt, or WERROR=ON not stopping the build
on a warning, fails this test. Exit 0 when all holds, 1 with the reasons.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile

# flag -> (the name gcc prints in brackets, a file that breaks only that rule)
WANTED = {
    "-Wall": ("unused-variable",
              "int f(void);\nint f(void) { int unused; return 0; }\n"),
    "-Wextra": ("unused-parameter",
                "int f(int x);\nint f(int x) { return 0; }\n"),
    "-Wstrict-prototypes": ("strict-prototypes",
                            "int f();\nint f(void) { return 0; }\n"),
    "-Wshadow": ("shadow",
                 "int f(int x);\nint f(int x) { { int x = 2; return x; } }\n"),
    "-Wmissing-prototypes": ("missing-prototypes",
                             "int f(void) { return 0; }\n"),
    "-Wformat=2": ("format-nonliteral",
                   "#include <stdio.h>\nint f(const char *s);\n"
                   "int f(const char *s) { return printf(s, 1); }\n"),
    "-Wcast-qual": ("cast-qual",
                    "char *f(const char *s);\nchar *f(const char *s) { return (char *)s; }\n"),
    "-Wvla": ("vla",
              "int f(int n);\nint f(int n) { char a[n]; a[0] = 0; return a[0]; }\n"),
}
DIRS = ("proxy/", "classifier/", "tests/sim/")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("--werror", "--no-werror"):
        sys.exit(__doc__)
    build, werror = sys.argv[1], sys.argv[2] == "--werror"
    path = os.path.join(build, "compile_commands.json")
    try:
        with open(path) as f:
            entries = json.load(f)
    except OSError as e:
        sys.exit("warnings: %s (configure with CMake's Makefile or Ninja generator)" % e)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    errors = []
    probe_cmd = None
    checked = 0
    for e in entries:
        rel = os.path.relpath(e["file"], src)
        if not rel.startswith(DIRS):
            continue
        argv = shlex.split(e["command"]) if "command" in e else e["arguments"]
        checked += 1
        missing = [w for w in WANTED if w not in argv]
        if missing:
            errors.append("%s: compiled without %s" % (rel, " ".join(missing)))
        if ("-Werror" in argv) != werror:
            errors.append("%s: -Werror %s, the build has WERROR=%s" %
                          (rel, "present" if "-Werror" in argv else "absent",
                           "ON" if werror else "OFF"))
        if rel == "proxy/proxy.c":
            probe_cmd = (argv, e["directory"])
    if checked < 10:
        errors.append("only %d files of %s in %s" % (checked, " ".join(DIRS), path))
    if probe_cmd is None:
        errors.append("proxy/proxy.c is not in %s" % path)
    else:
        errors += probe(*probe_cmd, werror=werror)
    for m in errors:
        print("warnings: " + m)
    print("warnings: %d files checked for %s%s; %d probes; %s" %
          (checked, " ".join(WANTED), " -Werror" if werror else "", len(WANTED),
           "FAILED" if errors else "ok"))
    sys.exit(1 if errors else 0)


def probe(argv, cwd, werror):
    """Compile each probe with ARGV (server.c's command, source and output
    swapped); return what did not behave."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="warnings-") as tmp:
        for flag, (name, code) in WANTED.items():
            c = os.path.join(tmp, "probe_%s.c" % name.replace("-", "_"))
            with open(c, "w") as f:
                f.write(code)
            cmd = list(argv)
            cmd[cmd.index("-c") + 1] = c
            cmd[cmd.index("-o") + 1] = c + ".o"
            r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
            tag = "[-Werror=%s]" % name if werror else "[-W%s]" % name
            if tag not in r.stderr:
                errors.append("%s: a probe that breaks it did not get %s:\n%s" %
                              (flag, tag, r.stderr.strip() or "(no diagnostics)"))
            if werror and r.returncode == 0:
                errors.append("%s: the probe compiled although -Werror is on" % flag)
            if not werror and r.returncode != 0:
                errors.append("%s: the probe failed to compile without -Werror:\n%s" %
                              (flag, r.stderr.strip()))
    return errors


if __name__ == "__main__":
    main()
