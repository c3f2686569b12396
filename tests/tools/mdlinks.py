#!/usr/bin/env python3
"""mdlinks.py [ROOT]: every relative link of every Markdown file under ROOT
(default: this repository) points to something that is there.

Checked: inline links and images, [text](path), [text](path#anchor),
[text](#anchor), ![alt](path), and reference definitions, [label]: path.
A path is relative to the file's folder (or, starting with /, to ROOT) and
must name an existing file or folder. An anchor into a Markdown file must be
one of its headings' anchors as GitHub makes them (the heading's text
lowercased, punctuation dropped, each space a '-', a repeated heading
getting -1, -2...) or an HTML id/name in it; into another file it must be
a line, #L12 or #L12-L20, that the file has. Links with a scheme (https:,
mailto:) are not followed. Code blocks and code spans are not read.

Not searched: .git, node_modules, and build folders (any folder holding a
CMakeCache.txt, and ROOT/build*). Prints each broken link as
FILE:LINE: [text](target): why; exits 1 if there is any, else 0.
"""
import difflib
import os
import re
import sys
from urllib.parse import unquote

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")  # at any indent: fences in list items too
# [text](dest "title"): text may hold one level of brackets and line breaks.
INLINE = re.compile(r"(!?)\[((?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]"
                    r"\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:\s*(<[^>\n]*>|\S+)", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
HTML_ID = re.compile(r"<[A-Za-z][^>]*?\s(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


def blank(m):
    """The match as spaces, its line breaks kept (offsets stay right)."""
    return re.sub(r"[^\n]", " ", m.group(0))


def prose(text, spans=True):
    """TEXT with fenced code blocks, HTML comments and (SPANS) code spans
    blanked."""
    out, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and \
                    not line.strip()[len(m.group(1)):].strip():
                fence = None
            out.append(" " * len(line))
        elif m:
            fence = m.group(1)
            out.append(" " * len(line))
        else:
            out.append(line)
    text = "\n".join(out)
    text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
    if not spans:
        return text
    # a code span ends at the same run of backticks, within its paragraph
    return re.sub(r"(`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)\1(?!`)", blank, text, flags=re.S)


def slug(heading):
    """GitHub's anchor for a heading's Markdown text."""
    codes = []

    def keep(m):
        codes.append(m.group(2))
        return "\0%d\0" % (len(codes) - 1)
    t = re.sub(r"(`+)(.+?)\1", keep, heading)
    t = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", t)     # links and images: their text
    t = re.sub(r"<[^>]+>", "", t)                          # inline HTML tags
    t = re.sub(r"(?<![\w\\])[*_]+|[*_]+(?![\w])", "", t)   # emphasis delimiters
    t = re.sub(r"\\(.)", r"\1", t)                         # backslash escapes
    t = re.sub(r"\0(\d+)\0", lambda m: codes[int(m.group(1))], t)
    t = t.strip().lower()
    t = "".join(c for c in t if c.isalnum() or c in "-_ ")
    return t.replace(" ", "-")


def anchors(path, cache={}):
    """The anchors of Markdown file PATH: headings (GitHub's rules, repeats
    numbered) and HTML id/name attributes."""
    if path in cache:
        return cache[path]
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = prose(f.read(), spans=False).split("\n")
    found, count = set(), {}
    prev = ""
    for line in lines:
        text = None
        m = ATX.match(line)
        if m:
            text = m.group(2) or ""
        elif SETEXT.match(line) and prev.strip() and not ATX.match(prev) and \
                not re.match(r"^ {0,3}([-*_])( *\1){2,} *$", prev):
            text = prev
        if text is not None:
            s = slug(text)
            n = count.get(s, 0)
            count[s] = n + 1
            found.add(s if n == 0 else "%s-%d" % (s, n))
        for i in HTML_ID.findall(line):
            found.add(i)
        prev = line
    cache[path] = found
    return found


def md_files(root):
    for d, dirs, files in os.walk(root):
        keep = []
        for x in sorted(dirs):
            p = os.path.join(d, x)
            if x in (".git", "node_modules") or os.path.exists(os.path.join(p, "CMakeCache.txt")):
                continue
            if d == root and x.startswith("build"):
                continue
            keep.append(x)
        dirs[:] = keep
        for f in sorted(files):
            if f.lower().endswith(".md"):
                yield os.path.join(d, f)


def check_target(root, src, dest):
    """Why DEST, a link in file SRC, is broken; None if it is not."""
    path, _, frag = dest.partition("#")
    path, frag = unquote(path), unquote(frag)
    if not path:
        target = src
    elif path.startswith("/"):
        target = os.path.join(root, path.lstrip("/"))
    else:
        target = os.path.join(os.path.dirname(src), path)
    target = os.path.normpath(target)
    rel = os.path.relpath(target, root)
    if rel.startswith(".."):
        return "%s is outside the repository" % path
    if not os.path.exists(target):
        return "no such file: %s" % rel
    if not frag:
        return None
    if os.path.isdir(target):
        readme = os.path.join(target, "README.md")
        if not os.path.exists(readme):
            return "#%s: %s is a folder without a README.md" % (frag, rel)
        target = readme
    if target.lower().endswith(".md"):
        have = anchors(target)
        if frag in have:
            return None
        near = difflib.get_close_matches(frag, sorted(have), n=1)
        return "no heading #%s in %s%s" % (frag, os.path.relpath(target, root),
                                            " (did you mean #%s?)" % near[0] if near else "")
    m = LINE_ANCHOR.match(frag)
    if not m:
        return "#%s: %s is not Markdown; only #L<line> anchors go there" % (frag, rel)
    with open(target, "rb") as f:
        n = len(f.read().splitlines())
    last = int(m.group(2) or m.group(1))
    if last > n or int(m.group(1)) < 1:
        return "#%s: %s has %d lines" % (frag, rel, n)
    return None


def links(text):
    """(offset, shown as, destination) of every link in TEXT (prose only)."""
    for m in INLINE.finditer(text):
        dest = m.group(3)
        yield m.start(), "%s[%s](%s)" % (m.group(1), " ".join(m.group(2).split()), dest), dest
    for m in REFDEF.finditer(text):
        yield m.start(), "[%s]: %s" % (m.group(1), m.group(2)), m.group(2)


def check(root):
    """Every broken link under ROOT: [(file, line, shown as, why)]."""
    broken, nlinks, nfiles = [], 0, 0
    for src in md_files(root):
        nfiles += 1
        with open(src, encoding="utf-8", errors="replace") as f:
            text = prose(f.read())
        for off, shown, dest in links(text):
            if dest.startswith("<") and dest.endswith(">"):
                dest = dest[1:-1]
            if SCHEME.match(dest) or dest.startswith("//"):
                continue
            nlinks += 1
            why = "empty link" if not dest else check_target(root, src, dest)
            if why:
                broken.append((os.path.relpath(src, root), text.count("\n", 0, off) + 1,
                               shown, why))
    return broken, nlinks, nfiles


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", ".."))
    broken, nlinks, nfiles = check(root)
    for src, line, shown, why in broken:
        print("%s:%d: %s: %s" % (src, line, shown, why))
    print("mdlinks: %d relative links in %d Markdown files, %d broken" %
          (nlinks, nfiles, len(broken)))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
