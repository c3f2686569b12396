"""test_docker.py - what CI can check of docker/ without a Docker engine.

- every docker/compose*.yaml parses with Debian's docker-compose (`config
  -q`, with and without the job profile), and a broken copy does not;
- their shape: each backend URL of the proxy config names a service of the
  file, its OLLAMA_NUM_PARALLEL (or ollama-sim --parallel) equals the
  backend's max_concurrent, the proxy starts after every backend is healthy,
  the classify job sits under a profile and waits for a healthy proxy;
- one variable, OLLAMA_NUM_PARALLEL, sets the slots of every GPU service
  and, through docker/ollama-proxy-start (the proxy's command), the ceiling
  of every backend, each adaptive: rendered with a value that is not the
  default (7), every service and every ceiling says 7;
- ollama-proxy-start itself, run on this host in front of a sim: the
  proxy reads the rendered ceiling, SIGHUP renders the edited config again
  and the proxy reloads it, SIGTERM ends both with status 0; a bad value
  is refused;
- docker/Dockerfile takes its packages from .ci/packages through
  .ci/install-deps (the build group in the build stage, only the runtime
  group in the runtime stage; no hand-written apt-get install), and the
  runtime group holds every library the built programs link to;
- the Dockerfile's shape: multi-stage, non-root user, HEALTHCHECK on GET /,
  the config at /etc/ollama-proxy/ollama-proxy.conf;
- every proxy config the images use passes `ollama-proxy --check` and
  listens on 0.0.0.0:11434, and a broken copy fails it;
- the build context: a root .dockerignore (the only one the classic builder
  of docker.io 20.10 and docker-compose 1.29 reads) leaves out .git, the
  build folders and the job's data, and no Dockerfile-specific ignore file
  (read by BuildKit instead of it) can say otherwise;
- the image's user and group are made with fixed ids (groupadd --gid first).

tests/docker/test_deploy.py runs the sim stack for real; test_k8s.py checks
docker/k8s.
"""
import json
import os
import re
import shutil
import subprocess

import harness
from harness import SRC, binary, eq, ok, run, tmpdir

DOCKER = os.path.join(SRC, "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
CONF_PATH = "/etc/ollama-proxy/ollama-proxy.conf"
COMPOSE = sorted(os.path.join(DOCKER, f) for f in os.listdir(DOCKER)
                 if re.match(r"compose.*\.ya?ml$", f))


def sh(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def compose_bin():
    exe = shutil.which("docker-compose")
    ok(exe, "docker-compose is not installed (it is in the test group of .ci/packages: "
            ".ci/install-deps test)")
    return exe


def compose_config(path, profile=True, **env_vars):
    """The resolved compose file as data (docker-compose config prints YAML;
    the Python that runs docker-compose has PyYAML, so it converts it).
    ENV_VARS are the settings it is rendered with (the default: none of
    this host's OLLAMA_NUM_PARALLEL)."""
    exe = compose_bin()
    argv = [exe, "-f", path] + (["--profile", "job"] if profile else []) + ["config"]
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_NUM_PARALLEL"}
    env.update(CLASSIFY_USER="1000:1000", **env_vars)
    r = sh(argv, env=env)
    eq(r.returncode, 0, "%s config:\n%s" % (path, r.stdout.decode()))
    with open(exe) as f:
        first = f.readline()
    py = first[2:].strip().split()[0] if first.startswith("#!") else "python3"
    if py.endswith("/env"):
        py = first[2:].split()[1]
    c = subprocess.run([py, "-c", "import sys, json, yaml; "
                        "json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
                       input=r.stdout, stdout=subprocess.PIPE, check=True)
    return json.loads(c.stdout)


def dockerfile_instructions():
    """[(stage_index, INSTRUCTION, args)] with continuation lines joined."""
    with open(DOCKERFILE) as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        out.append((stage, word, rest.strip()))
    return out


def install_deps_list(*groups):
    r = sh([os.path.join(SRC, ".ci", "install-deps"), "--list"] + list(groups))
    eq(r.returncode, 0, "install-deps --list " + " ".join(groups))
    return set(r.stdout.decode().split())


def proxy_check(path):
    return sh([binary("ollama-proxy"), "--check", "-c", path])


def configs_used():
    """Every proxy config an image or compose file puts at CONF_PATH:
    {host path: where it is used}."""
    used = {}
    for stage, word, args in dockerfile_instructions():
        if word == "COPY" and args.split()[-1] == CONF_PATH and "--from" not in args:
            used[os.path.join(SRC, args.split()[0])] = "Dockerfile"
    for path in COMPOSE:
        cfg = compose_config(path)
        for name, svc in cfg["services"].items():
            for v in svc.get("volumes", []):
                src, dst = (v["source"], v["target"]) if isinstance(v, dict) else \
                    v.split(":")[:2]
                if dst == CONF_PATH:
                    used[src] = "%s: %s" % (os.path.basename(path), name)
    return used


START = os.path.join(DOCKER, "ollama-proxy-start")


def render_conf(conf, env):
    """CONF as the proxy's command (ollama-proxy-start) hands it to the proxy,
    with the proxy service's ENV."""
    e = {k: v for k, v in os.environ.items() if k != "OLLAMA_NUM_PARALLEL"}
    e.update({k: str(v) for k, v in env.items()})
    r = sh([START, "--render", conf], env=e)
    eq(r.returncode, 0, "ollama-proxy-start --render %s: %s" % (conf, r.stdout.decode()))
    return r.stdout.decode()


def read_backends(conf, text=None):
    """[(name, host, port, max_concurrent)] from a proxy config (simple
    one-backend-per-line form, as ours are written); TEXT instead of the
    file's, e.g. rendered."""
    return [b[:4] for b in backend_rows(conf, text)]


def backend_rows(conf, text=None):
    """[(name, host, port, max_concurrent, adaptive)] of CONF's backend rows."""
    if text is None:
        with open(conf) as f:
            text = f.read()
    text = re.sub(r"#.*", "", text)
    rows = re.findall(r'name\s*=\s*"([^"]+)"\s*;\s*url\s*=\s*"http://([^":/]+):(\d+)"\s*;'
                      r'\s*max_concurrent\s*=\s*(\d+)\s*;([^}]*)\}', text)
    return [(n, h, int(p), int(m), bool(re.search(r"\badaptive\s*=\s*true\b", rest)))
            for n, h, p, m, rest in rows]


def proxy_conf_of(svcs):
    """(host path of the config mounted at CONF_PATH, its text as the proxy
    reads it) for the proxy service of a resolved compose file."""
    proxy = svcs["proxy"]
    conf = [v["source"] if isinstance(v, dict) else v.split(":")[0]
            for v in proxy.get("volumes", [])
            if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == CONF_PATH]
    ok(conf, "proxy has no config mounted at %s" % CONF_PATH)
    cmd = proxy.get("command") or []
    if cmd and os.path.basename(cmd[0]) == "ollama-proxy-start":
        return conf[0], render_conf(conf[0], env_of(proxy))
    with open(conf[0]) as f:
        return conf[0], f.read()


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return env


def parallel_of(svc):
    """The parallel slots a backend service runs with: OLLAMA_NUM_PARALLEL or
    ollama-sim's --parallel; None if it sets neither."""
    env = env_of(svc)
    cmd = svc.get("command") or []
    if isinstance(cmd, str):
        cmd = cmd.split()
    if "OLLAMA_NUM_PARALLEL" in env:
        return int(env["OLLAMA_NUM_PARALLEL"])
    if "--parallel" in cmd:
        return int(cmd[cmd.index("--parallel") + 1])
    return None


# ---- compose files ----

def test_compose_files_exist():
    names = [os.path.basename(p) for p in COMPOSE]
    ok("compose.yaml" in names, "docker/compose.yaml is missing: %s" % names)
    ok(any("sim" in n for n in names), "no ollama-sim variant in docker/: %s" % names)


def test_compose_files_parse():
    exe = compose_bin()
    for path in COMPOSE:
        for extra in ([], ["--profile", "job"]):
            r = sh([exe, "-f", path] + extra + ["config", "-q"])
            eq(r.returncode, 0, "docker-compose -f %s %s config -q:\n%s" %
               (path, " ".join(extra), r.stdout.decode()))


def test_compose_parse_catches_breakage():
    exe = compose_bin()
    for path in COMPOSE:
        with open(path) as f:
            text = f.read()
        broken = os.path.join(tmpdir(), "broken-" + os.path.basename(path))
        # an unknown key inside a service, and a bad depends_on condition
        for mutated in (re.sub(r"(\n  proxy:\n)", r"\1    no_such_key: 1\n", text, count=1),
                        text.replace("condition: service_healthy", "condition: when_ready", 1)):
            ok(mutated != text, "mutation did not apply to %s" % path)
            with open(broken, "w") as f:
                f.write(mutated)
            r = sh([exe, "-f", broken, "config", "-q"])
            ok(r.returncode != 0, "docker-compose accepted a broken %s" % path)


def test_compose_shape():
    for path in COMPOSE:
        fname = os.path.basename(path)
        cfg = compose_config(path)
        svcs = cfg["services"]
        ok("proxy" in svcs and "classify" in svcs, "%s: needs proxy and classify" % fname)
        proxy = svcs["proxy"]
        ports = [str(p.get("target")) if isinstance(p, dict) else str(p).split(":")[-1]
                 for p in proxy.get("ports", [])]
        ok("11434" in ports, "%s: proxy does not publish 11434: %s" % (fname, ports))
        conf, text = proxy_conf_of(svcs)
        backends = read_backends(conf, text)
        ok(len(backends) >= 2, "%s: fewer than 2 backends in %s" % (fname, conf))
        deps = proxy.get("depends_on", {})
        for name, host, port, cap in backends:
            ok(host in svcs, "%s: backend %s points at %s, not a service" % (fname, name, host))
            svc = svcs[host]
            ok(deps.get(host, {}).get("condition") == "service_healthy",
               "%s: proxy does not wait for %s to be healthy" % (fname, host))
            ok(svc.get("healthcheck") and not svc["healthcheck"].get("disable"),
               "%s: %s has no health check" % (fname, host))
            cmd = svc.get("command") or []
            if isinstance(cmd, str):
                cmd = cmd.split()
            par = parallel_of(svc)
            ok(par is not None, "%s: %s sets neither OLLAMA_NUM_PARALLEL nor --parallel" %
               (fname, host))
            if "OLLAMA_NUM_PARALLEL" in env_of(svc):
                ok(port == 11434, "%s: %s listens on 11434, not %d" % (fname, host, port))
            else:
                eq(str(port), cmd[cmd.index("--port") + 1], "%s: %s port" % (fname, host))
            eq(cap, par, "%s: max_concurrent of %s vs the parallel slots of %s" %
               (fname, name, host))
        job = svcs["classify"]
        ok("job" in (job.get("profiles") or []), "%s: classify is not under profile job" % fname)
        eq(job.get("depends_on", {}).get("proxy", {}).get("condition"), "service_healthy",
           "%s: classify waits for a healthy proxy" % fname)
        ok(job.get("volumes"), "%s: classify has no mounted folder" % fname)
        ok("http://proxy:11434" in (job.get("command") or []),
           "%s: classify does not go through the proxy" % fname)


def test_num_parallel_one_variable():
    """OLLAMA_NUM_PARALLEL=7 (not the default) reaches every backend service
    and every ceiling of the proxy's config as the proxy reads it, and each
    of those backends is adaptive; unset, both sides say the same default."""
    for path in COMPOSE:
        fname = os.path.basename(path)
        seen = {}
        for value in ("7", None):
            svcs = compose_config(path, **({"OLLAMA_NUM_PARALLEL": value} if value else {})
                                  )["services"]
            conf, text = proxy_conf_of(svcs)
            rows = backend_rows(conf, text)
            ok(len(rows) >= 2, "%s: fewer than 2 backends in %s" % (fname, conf))
            pars = {h: parallel_of(svcs[h]) for _, h, _, _, _ in rows}
            caps = {h: cap for _, h, _, cap, _ in rows}
            if value:
                eq(pars, {h: 7 for h in pars}, "%s: the slots of each backend service with "
                                                "OLLAMA_NUM_PARALLEL=7" % fname)
                eq(caps, {h: 7 for h in caps}, "%s: the proxy's ceilings (%s, rendered) with "
                                                "OLLAMA_NUM_PARALLEL=7" % (fname, conf))
                gpus = [n for n, s in svcs.items()
                        if str(s.get("image", "")).startswith("ollama/ollama") or
                        "ollama-sim" in (s.get("command") or [])]
                eq(sorted(gpus), sorted(pars), "%s: GPU services vs the proxy's backends" % fname)
            else:
                eq(caps, pars, "%s: ceilings vs slots with the defaults" % fname)
            for name, host, _, _, adaptive in rows:
                ok(adaptive, "%s: backend %s (%s) is not adaptive" % (fname, name, host))
            seen[value] = caps
        ok(seen["7"] != seen[None], "%s: the ceilings do not follow the variable" % fname)


def test_proxy_start_script():
    """docker/ollama-proxy-start on this host: the ceiling from the variable,
    SIGHUP renders the edited config and reloads it, SIGTERM ends it, a bad
    value is refused."""
    import signal
    from harness import Proc, Sim
    sims = Sim("--parallel", "8"), Sim("--parallel", "3")
    d = tmpdir()
    conf, rendered = os.path.join(d, "start.conf"), os.path.join(d, "rendered.conf")

    def write(extra):
        with open(conf, "w") as f:  # in place, as an edited mount
            f.write('listen = "127.0.0.1:0";\nbackends = (\n'
                    '  { name = "a"; url = "%s"; max_concurrent = 2; adaptive = true; },'
                    '  # ceiling: OLLAMA_NUM_PARALLEL\n'
                    '  { name = "b"; url = "%s"; max_concurrent = 3; }\n);\n%s\n' %
                    (sims[0].url, sims[1].url, extra))

    write("")
    path = os.path.dirname(binary("ollama-proxy")) + os.pathsep + os.environ.get("PATH", "")
    env = {"PATH": path, "OLLAMA_PROXY_RENDERED": rendered}
    bad = sh([START, conf], env=dict(os.environ, OLLAMA_NUM_PARALLEL="0", **env), timeout=10)
    ok(bad.returncode != 0 and b"OLLAMA_NUM_PARALLEL" in bad.stdout,
       "OLLAMA_NUM_PARALLEL=0 accepted: %s" % bad.stdout)
    p = Proc([START, conf], name="ollama-proxy-start", env=dict(env, OLLAMA_NUM_PARALLEL="6"))
    try:
        check_start_script(p, write)
    finally:
        # the script and the proxy it started: its process group (new session)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.kill()
        for s in sims:
            s.stop()


def check_start_script(p, write):
    import signal
    from harness import get, wait_until
    port = p.wait_listen()

    def status():
        return json.loads(get("http://127.0.0.1:%d/proxy/status" % port).body)

    def caps():
        bs = {b["name"]: b for b in status()["backends"]}
        ok("adaptive" in bs["a"] and "adaptive" not in bs["b"], "adaptive only on a: %s" % bs)
        return bs["a"]["adaptive"]["ceiling"], bs["b"]["max_concurrent"]

    eq(caps(), (6, 3), "ceilings: a marked (OLLAMA_NUM_PARALLEL=6), b as written")
    write("queue = { max_length = 77; };")
    p.signal(signal.SIGHUP)
    wait_until(lambda: status()["queue"]["max_length"] == 77, 5, 0.05,
               "the edited config reloaded after SIGHUP")
    eq(caps(), (6, 3), "the ceilings after the reload")
    ok(p.alive(), "ollama-proxy-start died on SIGHUP:\n" + p.tail())
    p.signal(signal.SIGTERM)
    p.p.wait(15)
    eq(p.p.returncode, 0, "exit status after SIGTERM:\n" + p.tail())


def test_compose_gpus():
    cfg = compose_config(os.path.join(DOCKER, "compose.yaml"))
    ids = []
    for name, svc in cfg["services"].items():
        if str(svc.get("image", "")).startswith("ollama/ollama"):
            devs = svc["deploy"]["resources"]["reservations"]["devices"]
            ok(all("gpu" in d.get("capabilities", []) for d in devs), name)
            ids += [i for d in devs for i in d.get("device_ids", [])]
            vols = [v["source"] if isinstance(v, dict) else v.split(":")[0]
                    for v in svc.get("volumes", [])]
            ok("models" in vols, "%s does not mount the shared models volume" % name)
    eq(sorted(ids), ["0", "1"], "GPU device_ids of the ollama services")


# ---- Dockerfile ----

def test_dockerfile_packages_from_list():
    ins = dockerfile_instructions()
    stages = max(s for s, _, _ in ins) + 1
    ok(stages >= 2, "the Dockerfile is not multi-stage")
    runs = [(s, a) for s, w, a in ins if w == "RUN"]
    for s, a in runs:
        ok(not re.search(r"\bapt(-get)?\s+(-\S+\s+)*install\b", a),
           "the Dockerfile installs packages by hand (put them in .ci/packages): " + a)
        for m in re.finditer(r"install-deps\s+((?:[\w-]+\s*)+)", a):
            groups = m.group(1).split()
            ok("--list" not in groups, a)
            ok(install_deps_list(*groups), "install-deps %s: empty group" % groups)

    def groups_of(stage):
        g = []
        for s, a in runs:
            if s == stage:
                for m in re.finditer(r"install-deps\s+([\w\s-]+?)(?:&&|;|$)", a):
                    g += m.group(1).split()
        return g

    eq(groups_of(0), ["build"], "groups installed by the build stage")
    eq(groups_of(stages - 1), ["runtime"], "groups installed by the runtime stage")
    for s in (0, stages - 1):
        copies = [a for st, w, a in ins if st == s and w == "COPY"]
        ok(any(a.split()[0].rstrip("/") == ".ci" for a in copies),
           "stage %d does not COPY .ci/ (the list and the script)" % s)


def test_runtime_group_covers_binaries():
    """Every library the programs link to directly is in a runtime package."""
    runtime = install_deps_list("runtime")
    if not shutil.which("dpkg") or not shutil.which("readelf"):
        harness.skip("no dpkg/readelf")
    for prog in ("ollama-proxy", "ollama-classify", "ollama-sim"):
        r = sh(["readelf", "-d", binary(prog)])
        eq(r.returncode, 0, "readelf " + prog)
        for lib in re.findall(r"Shared library: \[([^\]]+)\]", r.stdout.decode()):
            if re.match(r"lib(c|m|pthread|dl|rt|asan|ubsan|gcc_s|stdc\+\+)\.so", lib):
                continue  # libc6 (in every image) and the sanitizers of SANITIZE builds
            d = sh(["dpkg", "-S", "*/" + lib])
            pkgs = {l.split(":")[0] for l in d.stdout.decode().splitlines() if ":" in l}
            ok(pkgs & runtime, "%s links %s (package %s), not in the runtime group %s" %
               (prog, lib, ",".join(sorted(pkgs)) or "?", sorted(runtime)))


def test_dockerfile_shape():
    ins = dockerfile_instructions()
    last = max(s for s, _, _ in ins)
    final = [(w, a) for s, w, a in ins if s == last]
    users = [a for w, a in final if w == "USER"]
    ok(users and users[-1].split(":")[0] not in ("root", "0"), "runtime stage runs as root")
    hc = [a for w, a in final if w == "HEALTHCHECK"]
    ok(hc and "GET / " in hc[0] and "11434" in hc[0], "no HEALTHCHECK on GET /: %s" % hc)
    cmd = [a for w, a in final if w == "CMD"]
    ok(cmd and CONF_PATH in cmd[-1] and "ollama-proxy" in cmd[-1], "CMD: %s" % cmd)
    bins = " ".join(a for w, a in final if w == "COPY" and "--from" in a)
    for prog in ("ollama-proxy", "ollama-classify", "ollama-sim"):
        ok(prog in bins, "the runtime image lacks " + prog)
    for s, w, a in ins:
        if w == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                ok(os.path.exists(os.path.join(SRC, src)), "COPY %s: no such file" % src)


def test_healthcheck_command_works():
    """The HEALTHCHECK's bash one-liner passes against a real proxy and
    fails on a closed port."""
    from harness import Proxy, Sim
    hc = [a for s, w, a in dockerfile_instructions() if w == "HEALTHCHECK"][0]
    argv = json.loads(hc[hc.index("CMD") + 3:].strip())
    sim = Sim()
    proxy = Proxy([("a", sim.url, 4)])
    for port, want in ((proxy.port, 0), (sim.port, 0), (1, 1)):
        a = [x.replace("/11434", "/%d" % port) for x in argv]
        r = sh(a, timeout=10)
        eq(r.returncode != 0, bool(want), "health check on port %d: %s" % (port, r.stdout))
    proxy.stop()
    sim.stop()


def test_dockerignore():
    path = os.path.join(SRC, ".dockerignore")
    ok(os.path.exists(path), "no .dockerignore at the root of the build context")
    with open(path) as f:
        rules = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for want in (".git", "build", "build-*", "docker/data", "docker/out"):
        ok(want in rules, ".dockerignore does not leave out %s: %s" % (want, rules))
    for name in os.listdir(DOCKER):
        ok(not name.endswith(".dockerignore"),
           "docker/%s: BuildKit reads it instead of the root .dockerignore, the classic "
           "builder never; keep one list" % name)
    # Nothing the Dockerfile COPYs is ignored.
    for s, w, a in dockerfile_instructions():
        if w == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                top = src.rstrip("/").split("/")[0]
                ok(src.rstrip("/") not in rules and top not in rules,
                   "COPY %s, but .dockerignore leaves it out" % src)


def test_image_user_fixed_ids():
    runs = " ".join(a for s, w, a in dockerfile_instructions() if w == "RUN")
    m_g = re.search(r"groupadd\s+[^&;]*--gid\s+(\d+)[^&;]*\bollama-proxy\b", runs)
    m_u = re.search(r"useradd\s+[^&;]*--uid\s+(\d+)[^&;]*--gid\s+(\d+)", runs)
    ok(m_g and m_u, "the image's user and group are not made with fixed ids: " + runs)
    ok(runs.index("groupadd") < runs.index("useradd"), "the group is made after the user")
    ok("--user-group" not in runs, "useradd --user-group takes whatever gid is free")
    eq((m_u.group(1), m_u.group(2)), ("10001", m_g.group(1)), "uid and gid of the image's user")
    if "--system" in runs:
        ok(int(m_u.group(1)) <= 999, "useradd --system warns for a uid above SYS_UID_MAX")


# ---- proxy configs ----

def test_proxy_configs_pass_check():
    used = configs_used()
    ok(len(used) >= 2, "expected the image's and the compose files' configs: %s" % used)
    for path, where in sorted(used.items()):
        r = proxy_check(path)
        out = r.stdout.decode()
        eq(r.returncode, 0, "ollama-proxy --check -c %s (%s):\n%s" % (path, where, out))
        ok(re.search(r"listen\s+0\.0\.0\.0:11434", out),
           "%s (%s) must listen on 0.0.0.0:11434 in its container:\n%s" % (path, where, out))


def test_check_catches_broken_config():
    for path in configs_used():
        with open(path) as f:
            text = f.read()
        broken = os.path.join(tmpdir(), "broken-" + os.path.basename(path))
        with open(broken, "w") as f:
            # a typo in a key of the first backend (not in a comment)
            mutated = re.sub(r"(\n\s*\{\s*name[^\n]*?)max_concurrent", r"\1max_concurent",
                             text, count=1)
            ok(mutated != text, "mutation did not apply to %s" % path)
            f.write(mutated)
        r = proxy_check(broken)
        eq(r.returncode, 1, "--check accepted a typo in %s: %s" % (path, r.stdout))


run(globals())
