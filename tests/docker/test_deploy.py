"""test_deploy.py - docker/compose.sim.yaml run for real, as a user would:
a Docker engine, the image built from docker/Dockerfile, the stack up, the
proxy answering on a host port, the classify job killed and resumed, and
the stack taken down again leaving nothing behind.

The steps, in order (a step whose prerequisite failed fails at once):
  engine     the engine that answers `docker info`, or dockerd started with
             its defaults (engine.py), stopped again at the end with the
             host's network restored; when dockerd cannot start, this fails
             with the reason (its log), never passes
  base       debian:12-slim: there, pulled, or made with debootstrap and
             imported, the tarball cached between runs (baseimage.py)
  build      docker-compose build with the default (classic) builder, the
             one Debian's docker.io 20.10 and docker-compose 1.29 use: the
             image runs as uid:gid 10001:10001 and the build context leaves
             .git and the build folders out (the root .dockerignore)
  up         compose.sim.yaml up -d, project PROJECT, the proxy published on
             127.0.0.1:<a free port> (PROXY_PORT), until all three containers
             are healthy. One override (-f) mounts a copy of the proxy's
             config instead of docker/ollama-proxy.sim.conf, so that the
             reload step can edit it without touching the repository
  endpoints  through the published port: /, /api/tags, /api/version,
             /api/ps, /proxy/status (both sims healthy, listing llama3,
             adaptive with the ceiling OLLAMA_NUM_PARALLEL, set here to 6
             where the config says 4: the one variable reached the sims'
             --parallel and, through ollama-proxy-start, the proxy),
             streamed /api/chat served by both sims, /api/generate,
             /api/embed, /v1/chat/completions, /v1/models, a 404 for an
             unknown model (JSON error) and for an unknown path
  reload     the mounted config edited in place, `docker-compose kill -s HUP
             proxy`: the proxy applies it without restarting (gpu1's
             ceiling set by hand, then its marked line back: 6 again, the
             variable's value, rendered anew on SIGHUP)
  classify   the job (profile job) started detached, killed with SIGKILL
             part way, run again: it resumes and ends with one labelled line
             per item of tests/data/items.jsonl (1,525)
  broken     the same stack with sim-gpu1 renamed (the proxy's config still
             names it): the same fleet check must fail, naming gpu1
  down       down -v: no container, network or volume of either project left
  release    dockerd stopped if this test started it; links, iptables rules
             and sysctls as they were before it

What it cannot check here: docker/compose.yaml (the GPU file) needs the
NVIDIA Container Toolkit and the ollama/ollama image, neither of which this
machine has (no GPU, no image registry): it is only parsed (`config -q`,
here and in test_docker.py), never brought up.

Time: about 75 s when the image is cached (nothing changed), about 90 s when
proxy/, classifier/ or tests/ changed (the compile step runs again); the first
run on a machine adds debootstrap and the build stage's packages: 2.5 to 4
minutes, by the mirror's speed. Settings: OP_DOCKER_CACHE (the base tarball's
folder, /var/cache/ollama-proxy-tests), OP_DEBIAN_MIRROR (debootstrap's
mirror; default: the one apt uses).
"""
import atexit
import http.client as httpclient
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time

from harness import DATA, SRC, eq, ok, run, tmpdir

from baseimage import base_ensure
from engine import engine_ensure, engine_release, sh

DOCKER = os.path.join(SRC, "docker")
SIM_COMPOSE = os.path.join(DOCKER, "compose.sim.yaml")
GPU_COMPOSE = os.path.join(DOCKER, "compose.yaml")
SIM_CONF = os.path.join(DOCKER, "ollama-proxy.sim.conf")
CONF_PATH = "/etc/ollama-proxy/ollama-proxy.conf"
IMAGE, BASE = "ollama-proxy:local", "debian:12-slim"
PROJECT, BROKEN = "op-deploy", "op-deploy-broken"
SIM_TIME_SCALE = "60"  # the job takes ~25 s instead of ~40 s at the default 30
NUM_PARALLEL = 6  # OLLAMA_NUM_PARALLEL: not the default 4 the config files say


class State:
    engine = None   # engine.Engine
    base = False    # the base image is there
    built = False   # IMAGE built from this tree
    up = False      # PROJECT is up and healthy
    port = 0        # its proxy's host port
    url = None      # http://127.0.0.1:<port> of its proxy
    conf = None     # the proxy config copy mounted in PROJECT
    projects = []   # compose projects this run may have left running
    released = False  # test_engine_released ran


S = State()
_tmp = tmpdir()


def need(*flags):
    for f in flags:
        if not getattr(S, f):
            raise AssertionError("not run: an earlier step failed (%s)" % f)


def free_port():
    """A free port on 127.0.0.1 outside the ephemeral range, where the other
    tests' port-0 servers never land."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port in 20000-29999")


def compose_env(port=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.update(SIM_TIME_SCALE=SIM_TIME_SCALE, OLLAMA_NUM_PARALLEL=str(NUM_PARALLEL),
               CLASSIFY_DIR=os.path.join(_tmp, "out"),
               CLASSIFY_USER="%d:%d" % (os.getuid(), os.getgid()))
    if port:
        env["PROXY_PORT"] = "127.0.0.1:%d" % port
    return env


class Stack:
    """One compose project: FILES (-f, in order), PROJECT name, its port."""

    def __init__(self, project, files, port=0, project_dir=DOCKER):
        self.project, self.files, self.port = project, files, port
        self.project_dir = project_dir
        if project not in S.projects:
            S.projects.append(project)

    def compose(self, *args, timeout=300, profile=False):
        argv = ["docker-compose", "--project-directory", self.project_dir, "-p", self.project]
        for f in self.files:
            argv += ["-f", f]
        if profile:
            argv += ["--profile", "job"]
        return sh(argv + list(args), timeout=timeout, env=compose_env(self.port))

    def must(self, *args, **kw):
        r = self.compose(*args, **kw)
        eq(r.returncode, 0, "docker-compose %s:\n%s" % (" ".join(args), r.stdout[-3000:]))
        return r.stdout

    def cid(self, service):
        ids = self.must("ps", "-q", service).split()
        ok(ids, "%s: no container for %s" % (self.project, service))
        return ids[0]

    def logs(self, tail=30):
        """The containers' states and their logs' last lines, for a failure."""
        states = sh(["docker", "ps", "-a", "--filter",
                     "label=com.docker.compose.project=" + self.project, "--format",
                     "{{.Names}}: {{.Status}}"]).stdout
        return states + self.compose("logs", "--no-color", "--tail", str(tail),
                                     timeout=60).stdout

    def wait_healthy(self, services, timeout=120):
        deadline, last = time.time() + timeout, {}
        cids = {svc: self.cid(svc) for svc in services}
        while time.time() < deadline:
            for svc in services:
                r = sh(["docker", "inspect", "-f",
                        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                        cids[svc]])
                last[svc] = r.stdout.strip()
            if all(v == "running healthy" for v in last.values()):
                return
            bad = [s for s, v in last.items() if not v.startswith("running")]
            ok(not bad, "%s: %s not running: %s\n%s" % (self.project, bad, last, self.logs()))
            time.sleep(1)
        raise AssertionError("%s: not healthy after %d s: %s\n%s" %
                             (self.project, timeout, last, self.logs()))

    def leftovers(self):
        label = "label=com.docker.compose.project=" + self.project
        left = {}
        for kind, argv in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                           ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                           ("volumes", ["docker", "volume", "ls", "-q", "--filter", label])):
            ids = sh(argv).stdout.split()
            if ids:
                left[kind] = ids
        return left

    def down(self):
        self.compose("--profile", "job", "down", "-v", "--remove-orphans", "-t", "10",
                     timeout=120)
        return self.leftovers()


def the_stack():
    return Stack(PROJECT, [SIM_COMPOSE, os.path.join(_tmp, "override.yaml")], S.port)


# ---- HTTP through the published port -----------------------------------

def request(method, path, body=None, timeout=30, url=None):
    """(status, headers, body bytes) of one request to the stack's proxy."""
    m = re.match(r"http://([^:/]+):(\d+)$", url or S.url)
    c = httpclient.HTTPConnection(m.group(1), int(m.group(2)), timeout=timeout)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def ceiling(b):
    """A backend's max_concurrent from the config: for an adaptive one its
    ceiling (its max_concurrent is then the cap in force)."""
    return (b.get("adaptive") or {}).get("ceiling", b["max_concurrent"])


def status(url=None):
    st, _, body = request("GET", "/proxy/status", url=url)
    eq(st, 200, "GET /proxy/status")
    return json.loads(body)


def streamed_chat(out, i, url):
    """One streamed /api/chat; appends (backend, [lines]) or the error to OUT."""
    try:
        st, hdr, body = request("POST", "/api/chat",
                                {"model": "llama3", "stream": True,
                                 "messages": [{"role": "user", "content": "hello %d" % i}]},
                                url=url)
        eq(st, 200, "streamed chat %d: %r" % (i, body[:200]))
        ok("ndjson" in hdr.get("content-type", ""), "chat %d content-type %s" %
           (i, hdr.get("content-type")))
        lines = [json.loads(l) for l in body.decode().splitlines() if l.strip()]
        ok(len(lines) >= 2, "chat %d: %d lines, not a stream" % (i, len(lines)))
        ok(lines[-1].get("done") is True, "chat %d: last line not done: %s" % (i, lines[-1]))
        ok(all(not l["done"] and l["message"]["content"] for l in lines[:-1]),
           "chat %d: an empty or early-done chunk" % i)
        out.append((hdr.get("x-backend"), lines))
    except Exception as e:  # collected and raised by the caller
        out.append(("error", repr(e)))


def check_fleet(url, timeout):
    """Both sims healthy behind the proxy: each backend of /proxy/status is
    healthy and lists llama3:latest within TIMEOUT s, and 12 streamed chats
    sent at once are all answered, by both backends."""
    deadline, bs = time.time() + timeout, []
    while time.time() < deadline:
        bs = status(url)["backends"]
        if bs and all(b["healthy"] and "llama3:latest" in b["models"] for b in bs):
            break
        time.sleep(0.5)
    eq(sorted(b["name"] for b in bs), ["gpu0", "gpu1"], "backends in /proxy/status")
    for b in bs:
        ok(b["healthy"] and "llama3:latest" in b["models"],
           "backend %s (%s) not healthy with llama3 after %d s: %s" %
           (b["name"], b["url"], timeout, b))
    out = []
    threads = [threading.Thread(target=streamed_chat, args=(out, i, url)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [e for b, e in out if b == "error"]
    ok(not errors and len(out) == 12, "streamed chats: %d answered, errors %s" %
       (len(out), errors[:3]))
    served = {b["name"]: b["served"] for b in status(url)["backends"]}
    ok(all(served.get(n, 0) >= 1 for n in ("gpu0", "gpu1")),
       "12 chats at once were not spread over both sims: served %s" % served)


# ---- the steps -------------------------------------------------------------

def test_engine():
    S.engine = engine_ensure(_tmp)
    info = S.engine.info
    print("engine: Docker %s, storage %s, %s%s" % (
        info.get("ServerVersion"), info.get("Driver"),
        "started by this test (pid %d)" % S.engine.pid if S.engine.started else "already running",
        "" if not S.engine.started else ", log " + str(S.engine.log)))
    for p in (PROJECT, BROKEN):  # a run killed before its `down`
        Stack(p, [SIM_COMPOSE]).down()


def test_base_image():
    need("engine")
    how = base_ensure(BASE, _tmp)
    print("base image %s: %s" % (BASE, how))
    S.base = True


def test_build():
    need("base")
    t0 = time.time()
    r = Stack(PROJECT, [SIM_COMPOSE]).compose("build", "proxy", timeout=900)
    eq(r.returncode, 0, "docker-compose build:\n%s" % r.stdout[-4000:])
    S.built = True
    print("build: %.0f s" % (time.time() - t0))
    ok("useradd warning" not in r.stdout and "groupadd warning" not in r.stdout,
       "the image's user is made with a warning:\n" +
       "\n".join(l for l in r.stdout.splitlines() if "warning" in l))
    r = sh(["docker", "run", "--rm", "--entrypoint", "id", IMAGE])
    eq(r.stdout.strip().split()[:2], ["uid=10001(ollama-proxy)", "gid=10001(ollama-proxy)"],
       "the image's user")
    # The build context as the classic builder sends it: no .git, no build*/
    r = sh(["docker", "build", "-f", "-", SRC], timeout=300,
           env=dict(os.environ, DOCKER_BUILDKIT="0"),
           input="FROM %s\nCOPY . /ctx\n" % BASE)
    eq(r.returncode, 0, "context probe build: " + r.stdout)
    size = re.search(r"Sending build context to Docker daemon\s+(\S+)", r.stdout)
    probe = re.findall(r"Successfully built (\w+)", r.stdout)
    ok(probe, "context probe build: " + r.stdout)
    ls = sh(["docker", "run", "--rm", probe[-1], "ls", "-a", "/ctx"]).stdout.split()
    sh(["docker", "rmi", "-f", probe[-1]])
    for name in ls:
        ok(name != ".git" and not name.startswith("build"),
           "the build context holds %s (.dockerignore): %s" % (name, ls))
    print("build context: %s: %s" % (size.group(1) if size else "?", " ".join(ls)))
    prune_old_images()


def prune_old_images():
    """Keep one build stage (the build cache of the next run) and drop the
    older ones and the untagged runtime images earlier builds left."""
    r = sh(["docker", "images", "-q", "--no-trunc", "--filter", "dangling=true",
            "--filter", "label=org.ollama-proxy.stage"])
    ids = r.stdout.split()
    stale = [i for i in ids if sh(["docker", "image", "inspect", "-f",
                                   '{{index .Config.Labels "org.ollama-proxy.stage"}}', i]
                                  ).stdout.strip() == "runtime"]
    builds = [i for i in ids if i not in stale]
    for i in stale + builds[1:]:
        sh(["docker", "rmi", i])


def test_up():
    need("built")
    S.conf = os.path.join(_tmp, "ollama-proxy.conf")
    shutil.copyfile(SIM_CONF, S.conf)
    os.chmod(S.conf, 0o644)
    with open(os.path.join(_tmp, "override.yaml"), "w") as f:
        f.write("# test_deploy.py: the proxy reads a copy of its config, which\n"
                "# the reload step edits in place.\nservices:\n  proxy:\n    volumes:\n"
                "      - %s:%s:ro\n" % (S.conf, CONF_PATH))
    os.makedirs(os.path.join(_tmp, "out"), exist_ok=True)
    for attempt in range(3):
        S.port = free_port()
        st = the_stack()
        cfg = st.must("config")
        ok(S.conf in cfg and "127.0.0.1:%d" % S.port in cfg, "override not applied:\n" + cfg)
        r = st.compose("up", "-d", "--no-build", timeout=300)
        if r.returncode == 0:
            break
        if "already allocated" not in r.stdout and "address already in use" not in r.stdout:
            raise AssertionError("docker-compose up:\n%s\n%s" % (r.stdout[-3000:], st.logs()))
        st.down()  # lost the port to someone else: another one
    eq(r.returncode, 0, "docker-compose up:\n" + r.stdout[-3000:])
    t0 = time.time()
    st.wait_healthy(["sim-gpu0", "sim-gpu1", "proxy"])
    S.url = "http://127.0.0.1:%d" % S.port
    S.up = True
    print("up: healthy %.0f s after `up` returned; proxy on %s" % (time.time() - t0, S.url))


def test_endpoints():
    need("up")
    st, hdr, body = request("GET", "/")
    eq((st, body), (200, b"Ollama is running"), "GET /")
    st, _, body = request("GET", "/api/tags")
    eq(st, 200, "GET /api/tags")
    names = [m["name"] for m in json.loads(body)["models"]]
    ok("llama3:latest" in names, "/api/tags lists %s" % names)
    bs = status()["backends"]
    eq(sorted((b["name"], b["url"], ceiling(b)) for b in bs),
       [("gpu0", "http://sim-gpu0:11434", NUM_PARALLEL),
        ("gpu1", "http://sim-gpu1:11434", NUM_PARALLEL)],
       "backends of /proxy/status (ceilings from OLLAMA_NUM_PARALLEL=%d)" % NUM_PARALLEL)
    check_fleet(S.url, 30)
    for b in status()["backends"]:
        ad = b.get("adaptive") or {}
        eq(ad.get("ceiling"), NUM_PARALLEL, "backend %s is adaptive with the ceiling "
                                           "OLLAMA_NUM_PARALLEL: %s" % (b["name"], b))
        cap = b.get("effective_cap")
        ok(isinstance(cap, int) and 1 <= cap <= NUM_PARALLEL,
           "backend %s: effective_cap %r within 1..%d" % (b["name"], cap, NUM_PARALLEL))
    for method, path, body, want in (
            ("GET", "/api/version", None, "version"),
            ("GET", "/api/ps", None, "models"),
            ("POST", "/api/generate", {"model": "llama3", "prompt": "hi", "stream": False},
             "response"),
            ("POST", "/api/embed", {"model": "llama3", "input": "hi"}, "embeddings"),
            ("POST", "/v1/chat/completions",
             {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}, "choices"),
            ("GET", "/v1/models", None, "data")):
        st, _, out = request(method, path, body)
        eq(st, 200, "%s %s: %r" % (method, path, out[:200]))
        ok(want in json.loads(out), "%s %s: no %s in %r" % (method, path, want, out[:200]))
    st, _, out = request("POST", "/api/chat", {"model": "no-such-model", "messages": []})
    eq(st, 404, "chat with an unknown model: %r" % out[:200])
    ok("error" in json.loads(out), "the 404 is not Ollama's JSON error: %r" % out)
    st, _, out = request("GET", "/api/no-such-endpoint")
    eq(st, 404, "GET of an unknown path: %r" % out[:200])


def test_sighup_reload():
    need("up")
    st = the_stack()
    cid = st.cid("proxy")

    def started():
        return sh(["docker", "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}",
                   cid]).stdout.strip()

    with open(S.conf) as f:
        original = f.read()

    def set_gpu1_cap(cap, text=None):
        """gpu1's ceiling set to CAP by hand (its line without the marker),
        or the config replaced by TEXT, which must give CAP."""
        with open(S.conf, "r+") as f:  # in place: the mount follows the inode
            old = f.read()
            new = text
            if new is None:
                new = re.sub(r'(name = "gpu1";[^\n]*max_concurrent = )\d+([^\n]*?)\s*#[^\n]*',
                             r"\g<1>%d\2" % cap, old)
                ok(new != old, "gpu1 row not found")
            f.seek(0)
            f.write(new)
            f.truncate()
        st.must("kill", "-s", "HUP", "proxy")
        deadline = time.time() + 15
        while time.time() < deadline:
            caps = {b["name"]: ceiling(b) for b in status()["backends"]}
            if caps.get("gpu1") == cap:
                return
            time.sleep(0.2)
        raise AssertionError("after SIGHUP gpu1 has max_concurrent %s, not %d\n%s" %
                             (caps, cap, st.logs()))

    before = started()
    set_gpu1_cap(2)
    ok("max_concurrent = 4" in original, "the config no longer says 4: the last step proves "
                                         "nothing")
    set_gpu1_cap(NUM_PARALLEL, original)  # the marked line: the variable's value again
    eq(started(), before, "the proxy container restarted on SIGHUP")
    logs = st.compose("logs", "--no-color", "proxy", timeout=60).stdout
    eq(len(re.findall(r"reloaded \S+: 2 backends", logs)), 2, "reload lines in the log:\n" +
       logs[-2000:])
    st.wait_healthy(["proxy"], timeout=30)


def result_lines(path):
    """The complete lines of a results file, parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:  # the last piece has no newline yet
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_classify_job_and_resume():
    need("up")
    st = the_stack()
    results = os.path.join(_tmp, "out", "results.jsonl")
    with open(os.path.join(DATA, "items.jsonl")) as f:
        items = [json.loads(l)["id"] for l in f if l.strip()]
    with open(os.path.join(DATA, "labels.txt")) as f:
        labels = {l.strip() for l in f if l.strip()}
    name = PROJECT + "-classify-killed"
    sh(["docker", "rm", "-f", name])
    st.must("run", "-d", "-T", "--name", name, "classify", profile=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(result_lines(results)) < 300:
            state = sh(["docker", "inspect", "-f", "{{.State.Status}}", name]).stdout.strip()
            ok(state == "running", "the job is %s before 300 results:\n%s" %
               (state, sh(["docker", "logs", "--tail", "20", name]).stdout))
            time.sleep(0.1)
        eq(sh(["docker", "kill", name]).returncode, 0, "docker kill the job")
    finally:
        first = sh(["docker", "logs", name]).stdout
        sh(["docker", "rm", "-f", name])
    done = [r for r in result_lines(results) if "label" in r]
    ok(300 <= len(done) < len(items), "killed after %d of %d results" % (len(done), len(items)))
    ok("summary:" not in first, "the first run ended before its kill:\n" + first[-500:])
    t0 = time.time()
    out = st.must("run", "--rm", "-T", "classify", profile=True, timeout=600)
    m = re.search(r"resuming: (\d+) items already labelled", out)
    ok(m, "the second run did not resume:\n" + out[-2000:])
    eq(int(m.group(1)), len(done), "items resumed vs complete lines left by the kill")
    ok("summary:" in out, "no summary:\n" + out[-2000:])
    lines = result_lines(results)
    with open(results, "rb") as f:
        ok(f.read().endswith(b"\n"), "results.jsonl does not end in a newline")
    ids = [r["id"] for r in lines]
    eq(len(ids), len(set(ids)), "ids written twice: %s" %
       sorted({i for i in ids if ids.count(i) > 1})[:5])
    eq(sorted(ids), sorted(items), "ids in results.jsonl vs items.jsonl")
    bad = [r for r in lines if r.get("label") not in labels]
    eq(bad[:3], [], "results without one of the labels")
    print("classify: killed at %d/%d results, resumed, %d results (second run %.0f s)" %
          (len(done), len(items), len(lines), time.time() - t0))


def test_gpu_compose_only_parsed():
    """Honest about what is not run: compose.yaml needs the NVIDIA runtime
    and the ollama/ollama image; here it is parsed and nothing more."""
    r = sh(["docker-compose", "-f", GPU_COMPOSE, "--profile", "job", "config", "-q"],
           env=compose_env())
    eq(r.returncode, 0, "docker-compose -f compose.yaml config -q:\n" + r.stdout)
    runtimes = sorted((S.engine.info or {}).get("Runtimes", {})) if S.engine else []
    print("compose.yaml: parsed only, not brought up (engine runtimes %s, no nvidia; no "
          "ollama/ollama image without a registry)" % runtimes)


def test_broken_stack_fails():
    """The checks have teeth: with sim-gpu1 renamed the proxy cannot reach
    its gpu1, and check_fleet says so."""
    need("built")
    with open(SIM_COMPOSE) as f:
        text = f.read()
    broken_text = text.replace("sim-gpu1", "sim-gpu9")
    ok(broken_text != text, "mutation did not apply")
    path = os.path.join(_tmp, "compose.broken.yaml")
    with open(path, "w") as f:
        f.write(broken_text)
    for attempt in range(3):
        st = Stack(BROKEN, [path], free_port())
        r = st.compose("up", "-d", "--no-build", timeout=300)
        if r.returncode == 0 or "already allocated" not in r.stdout:
            break
        st.down()
    try:
        eq(r.returncode, 0, "broken stack up:\n" + r.stdout[-3000:])
        st.wait_healthy(["sim-gpu0", "sim-gpu9", "proxy"])
        try:
            check_fleet("http://127.0.0.1:%d" % st.port, 15)
        except AssertionError as e:
            ok("gpu1" in str(e), "check_fleet failed, but not on gpu1: %s" % e)
            print("broken stack: check_fleet failed as it must: %s" % str(e)[:200])
        else:
            raise AssertionError("check_fleet passed on a stack whose proxy cannot reach "
                                 "sim-gpu1")
    finally:
        left = st.down()
        eq(left, {}, "left by the broken stack's down")


def test_down_leaves_nothing():
    if not S.engine:
        raise AssertionError("not run: no engine")
    for p in S.projects:
        st = the_stack() if p == PROJECT else Stack(p, [SIM_COMPOSE])
        eq(st.down(), {}, "left behind by %s down -v" % p)
    S.up = False


def test_engine_released():
    if not S.engine:
        raise AssertionError("not run: no engine")
    started = S.engine.started
    S.released = True
    left = engine_release(S.engine)
    eq(left, [], "the host's network after dockerd stopped")
    print("engine: %s" % ("stopped, network as before" if started else
                          "left running (it was running before)"))


def _at_exit():
    """Killed (SIGTERM) or crashed before the last two steps: take the
    stacks down and stop the engine if ours."""
    try:
        if S.engine and not S.released:
            for p in S.projects:
                Stack(p, [SIM_COMPOSE]).down()
            engine_release(S.engine)
    except Exception as e:
        print("cleanup: %s" % e)


atexit.register(_at_exit)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))

run(globals())
