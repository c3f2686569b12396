"""gobackend.py - a backend that reads requests as Ollama's own HTTP layer
does (tests/lib/gobackend/: Go, net/http and gin, Ollama's routes and JSON
tags), for tests where the proxy must decide what Ollama will do: routing on
the percent-decoded path, JSON member names matched without regard to case,
the last duplicate winning.

The Go program is built once into $OP_BUILD_DIR/gobackend/ with Debian's
golang-go and golang-github-gin-gonic-gin-dev, offline (GOPATH mode against
/usr/share/gocode), rebuilt when a source is newer than the binary, under a
lock so that parallel ctest runs do not race. Without go or gin a test
calls require() first, which exits 77: ctest reports the test skipped
(SKIP_RETURN_CODE 77), never passed.

GoBackend is used like harness.Sim: GoBackend(models="a,b", gen_ms=300),
.url, .stats() (GET /_go/stats), .reset(), .stop()."""
import fcntl
import os
import shutil
import subprocess
import sys

from harness import BUILD, SRC, Proc, get, post

GOSRC = os.path.join(SRC, "tests", "lib", "gobackend")
GOPATH = "/usr/share/gocode"
GIN = os.path.join(GOPATH, "src", "github.com", "gin-gonic", "gin")
OUT = os.path.join(BUILD, "gobackend")
EXE = os.path.join(OUT, "gobackend")


def missing():
    """Why the backend cannot be built here (None if it can)."""
    if not shutil.which("go"):
        return "go is not installed (.ci/packages: golang-go)"
    if not os.path.isdir(GIN):
        return "gin is not installed (.ci/packages: golang-github-gin-gonic-gin-dev)"
    return None


def require():
    """Exit 77 (ctest: skipped) when go or gin is missing; else build."""
    why = missing()
    if why:
        print("SKIPPED: %s" % why, flush=True)
        sys.exit(77)
    build()


def _sources():
    return [os.path.join(GOSRC, f) for f in sorted(os.listdir(GOSRC)) if f.endswith(".go")]


def _fresh():
    if not os.path.exists(EXE):
        return False
    built = os.path.getmtime(EXE)
    return all(os.path.getmtime(f) <= built for f in _sources())


def build():
    """Build the binary unless it is newer than every source; returns its
    path. A failed build raises with the compiler's output."""
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _fresh():
            return EXE
        env = dict(os.environ)
        env.update(GOPATH=GOPATH, GO111MODULE="off", GOFLAGS="", GOPROXY="off",
                   GOENV="off", GOTOOLCHAIN="local", CGO_ENABLED="0",
                   GOCACHE=os.path.join(OUT, "cache"))
        tmp = EXE + ".tmp"
        r = subprocess.run(["nice", "go", "build", "-o", tmp, "."], cwd=GOSRC, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("building %s failed (%d):\n%s%s" %
                               (GOSRC, r.returncode, r.stdout, r.stderr))
        os.rename(tmp, EXE)
    return EXE


class GoBackend:
    """A gobackend process. MODELS: what it has (comma-separated); GEN_MS:
    how long a generation holds its slot; ARGS: more flags."""

    def __init__(self, *args, models="llama3:latest", port=0, gen_ms=300):
        argv = [build(), "--port", str(port), "--gen-ms", str(gen_ms)]
        if models:
            argv += ["--models", models]
        argv += [str(a) for a in args]
        self.proc = Proc(argv, name="gobackend")
        self.port = self.proc.wait_listen()
        self.url = "http://127.0.0.1:%d" % self.port

    def stats(self):
        return get(self.url + "/_go/stats").json()

    def reset(self):
        return post(self.url + "/_go/reset", {})

    def stop(self):
        return self.proc.stop()

    def kill(self):
        self.proc.kill()
