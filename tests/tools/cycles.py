#!/usr/bin/env python3
"""cycles.py MANIFEST: circles of use among the object files of our programs.

A.o uses B.o when A.o needs a symbol (function or variable) that B.o
defines, as `nm` reads them. A circle is a set of two or more objects each
of which uses, directly or not, every other: code that cannot be read,
tested or replaced one file at a time. Prints every circle with the symbols
behind each of its arrows, and exits 1 if there is any, 0 if none (2 when
an object cannot be read: build first).

MANIFEST (CMake writes it, tests/tools/CMakeLists.txt):
    build BUILD_DIR
    program NAME
    OBJECT...          one path a line: what NAME links
    program NAME ...
Symbols are resolved within each program, as its linker does: a name two
programs both define links each user to its own program's copy only.
Objects are named by their source: BUILD/proxy/CMakeFiles/pxcore.dir/x.c.o
is proxy/x.c.
"""
import os
import subprocess
import sys


def read_manifest(path):
    build, programs, cur = None, {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            word, _, rest = line.partition(" ")
            if word == "build":
                build = rest
            elif word == "program":
                cur = programs.setdefault(rest, [])
            elif cur is None:
                raise ValueError("%s: object %s before any 'program' line" % (path, line))
            else:
                cur.append(line)
    if build is None:
        raise ValueError("%s: no 'build' line" % path)
    return build, programs


def source_name(obj, build):
    """BUILD/proxy/CMakeFiles/pxcore.dir/x.c.o -> proxy/x.c"""
    rel = os.path.relpath(obj, build)
    if "/CMakeFiles/" in "/" + rel:
        head, _, tail = ("/" + rel).partition("/CMakeFiles/")
        rel = os.path.join(head.lstrip("/"), tail.split("/", 1)[1])
    return rel[:-2] if rel.endswith(".o") else rel


def nm(obj, *flags):
    r = subprocess.run(["nm", "-g"] + list(flags) + [obj], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError("nm %s: %s" % (obj, r.stderr.strip()))
    return {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}


def edges_of(objs, build, symbols):
    """{user: {used: sorted symbols}} among OBJS, one program's objects."""
    names = {o: source_name(o, build) for o in objs}
    defs = {}
    for o in objs:
        for s in symbols(o, "--defined-only"):
            defs.setdefault(s, set()).add(names[o])
    edges = {names[o]: {} for o in objs}
    for o in objs:
        a = names[o]
        for s in symbols(o, "--undefined-only"):
            for b in defs.get(s, ()):
                if b != a:
                    edges[a].setdefault(b, []).append(s)
    return edges


def circles(edges):
    """Strongly connected sets of 2+ nodes (Tarjan, iterative), each sorted."""
    index, low, on, stack, out = {}, {}, set(), [], []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        build, programs = read_manifest(sys.argv[1])
        graphs = {p: edges_of(objs, build, nm) for p, objs in sorted(programs.items())}
    except (OSError, ValueError) as e:
        print("cycles: %s" % e)
        sys.exit(2)
    seen, found = set(), []
    nobjs = set()
    for prog, edges in graphs.items():
        nobjs |= set(edges)
        for c in circles(edges):
            if tuple(c) not in seen:
                seen.add(tuple(c))
                found.append((prog, c, edges))
    for prog, c, edges in found:
        print("circle (%s): %s" % (prog, " ".join(c)))
        for a in c:
            for b in sorted(edges[a]):
                if b in c:
                    syms = sorted(edges[a][b])
                    more = " +%d" % (len(syms) - 3) if len(syms) > 3 else ""
                    print("    %s -> %s: %s%s" % (a, b, " ".join(syms[:3]), more))
    print("%d circles, %d files in them, %d objects in %d programs" %
          (len(found), sum(len(c) for _, c, _ in found), len(nobjs), len(programs)))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
