"""engine.py - a Docker engine for test_deploy.py, and the host's network as
it was before one started.

engine_ensure() uses the engine that answers `docker info`; when none does,
it starts dockerd with its defaults (overlay2, the docker0 bridge, iptables
rules, net.ipv4.ip_forward=1) and engine_release() stops it again and puts
the network back: the links dockerd made (docker0, br-*, veth*) are deleted,
every iptables/ip6tables table is restored to the rules it had (a table that
had none is left empty with ACCEPT policies: iptables-nft cannot drop a
table, and an empty one filters nothing), and the sysctls dockerd writes get
their old values. An engine that was already running is never stopped.

States of the dockerd this module starts, and who moves it:
  none     -> started   engine_ensure(): snapshot the network, start dockerd,
                        write STATE_FILE (pid + snapshot) before waiting
  started  -> none      engine_release(): SIGTERM, wait, restore, remove
                        STATE_FILE
  started  -> orphan    the test was killed (a ctest timeout) before release
  orphan   -> started   the next engine_ensure() finds STATE_FILE naming a
                        live dockerd and adopts it, with the first snapshot,
                        so that its release restores the network of before

Every function raises AssertionError with the reason when it cannot do its
job: a missing dockerd, one that exits at start (its log's last lines), a
network that could not be put back.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

STATE_DIR = "/run/ollama-proxy-tests" if os.access("/run", os.W_OK) else "/tmp"
STATE_FILE = os.path.join(STATE_DIR, "dockerd.json")
SYSCTLS = ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"]
BRIDGE_SYSCTLS = "/proc/sys/net/bridge"
# Links dockerd creates: its default bridge, one bridge per network, one veth
# per container end. Only these are deleted, and only if new.
DOCKER_LINK = re.compile(r"^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]+)$")


def sh(argv, timeout=60, **kw):
    """Run ARGV; CompletedProcess with stdout+stderr merged as text."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, text=True, **kw)


def engine_info():
    """`docker info` as a dict, or None when no engine answers."""
    if not shutil.which("docker"):
        return None
    try:
        r = sh(["docker", "info", "--format", "{{json .}}"], timeout=20)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    try:
        info = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return info if info.get("ServerVersion") else None


# ---- the host's network ----------------------------------------------------

def _links():
    r = sh(["ip", "-o", "link", "show"])
    return sorted({m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[:@]", r.stdout, re.M)})


def _sysctl_paths():
    paths = [p for p in SYSCTLS if os.path.exists(p)]
    if os.path.isdir(BRIDGE_SYSCTLS):
        paths += sorted(os.path.join(BRIDGE_SYSCTLS, f) for f in os.listdir(BRIDGE_SYSCTLS))
    return paths


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _iptables_save(cmd):
    if not shutil.which(cmd + "-save"):
        return None
    r = sh([cmd + "-save"])
    if r.returncode != 0:
        raise AssertionError("%s-save failed: %s" % (cmd, r.stdout))
    return r.stdout


def _tables(dump):
    """iptables-save text -> {table: (policies {chain: policy}, [rule lines])},
    counters dropped; a table with no rule, no user chain and only ACCEPT
    policies is the same as no table and is left out."""
    out, cur = {}, None
    for line in (dump or "").splitlines():
        if line.startswith("*"):
            cur = out.setdefault(line[1:], ({}, []))
        elif line.startswith(":") and cur is not None:
            chain, policy = line[1:].split()[:2]
            cur[0][chain] = policy
        elif line.startswith("-") and cur is not None:
            cur[1].append(line)
    return {t: v for t, v in out.items()
            if v[1] or any(p not in ("ACCEPT",) for p in v[0].values())}


def net_snapshot():
    """What dockerd changes: links, the forwarding/bridge sysctls, the rules
    of iptables and ip6tables."""
    return {"links": _links(),
            "sysctl": {p: _read(p) for p in _sysctl_paths()},
            "iptables": {c: _iptables_save(c) for c in ("iptables", "ip6tables")}}


def net_diff(before, after):
    """Human-readable differences between two snapshots ([] if none)."""
    d = []
    new = set(after["links"]) - set(before["links"])
    gone = set(before["links"]) - set(after["links"])
    if new:
        d.append("links added: %s" % sorted(new))
    if gone:
        d.append("links gone: %s" % sorted(gone))
    for p, v in after["sysctl"].items():
        if before["sysctl"].get(p, v) != v:
            d.append("%s = %s (was %s)" % (p, v, before["sysctl"][p]))
    for c in ("iptables", "ip6tables"):
        a, b = _tables(after["iptables"].get(c)), _tables(before["iptables"].get(c))
        if a != b:
            d.append("%s rules differ: tables now %s, before %s" % (c, sorted(a), sorted(b)))
    return d


def _restore_tables(cmd, saved):
    """Give every table of CMD the rules SAVED had (iptables-restore replaces
    each table it is given whole, user chains included)."""
    now = _iptables_save(cmd)
    if now is None:
        return
    blocks, cur = {}, None
    for line in (saved or "").splitlines():
        if line.startswith("*"):
            cur = blocks.setdefault(line[1:], [])
        if cur is not None and not line.startswith("#"):
            cur.append(line)
        if line == "COMMIT":
            cur = None
    text = []
    for table, (policies, _) in sorted(_tables(now).items()):
        if table in blocks:
            continue
        # A table dockerd filled that had nothing before: built-in chains
        # (those with a policy) back to ACCEPT, no rule, no user chain.
        text.append("*" + table)
        text += [":%s ACCEPT [0:0]" % ch for ch, p in policies.items() if p != "-"]
        text.append("COMMIT")
    for table in sorted(blocks):
        text += blocks[table]
    if not text:
        return
    r = sh([cmd + "-restore"], input="\n".join(text) + "\n")
    if r.returncode != 0:
        raise AssertionError("%s-restore failed: %s" % (cmd, r.stdout))


def net_restore(snap):
    """Undo what dockerd did to the network since SNAP; returns what still
    differs (net_diff), [] when all is as it was."""
    for name in sorted(set(_links()) - set(snap["links"])):
        if DOCKER_LINK.match(name):
            sh(["ip", "link", "delete", name])
    for cmd in ("iptables", "ip6tables"):
        _restore_tables(cmd, snap["iptables"].get(cmd))
    for path, value in snap["sysctl"].items():
        if os.path.exists(path) and _read(path) != value:
            try:
                with open(path, "w") as f:
                    f.write(value + "\n")
            except OSError:
                pass  # reported by net_diff below
    return net_diff(snap, net_snapshot())


# ---- dockerd ---------------------------------------------------------------

class Engine:
    """The engine the test uses. started: this module started (or adopted)
    its dockerd, and engine_release() stops it; pid, log, snapshot then say
    which, where its output went and the network before it."""

    def __init__(self, info, started=False, pid=None, log=None, snapshot=None):
        self.info = info
        self.started = started
        self.pid = pid
        self.log = log
        self.snapshot = snapshot


def _alive_dockerd(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv0 = f.read().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"dockerd"


def _load_state():
    try:
        with open(STATE_FILE) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    return st if _alive_dockerd(int(st.get("pid", 0))) else None


def _tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def engine_ensure(logdir, wait_s=60):
    """An Engine that answers, starting dockerd if none does (see the top of
    this file). Raises AssertionError with the reason when there is none."""
    st = _load_state()
    info = engine_info()
    if info and st:
        return Engine(info, True, st["pid"], st.get("log"), st["snapshot"])
    if info:
        return Engine(info)
    if os.environ.get("DOCKER_HOST", "unix://").split("://")[0] not in ("unix", ""):
        raise AssertionError("DOCKER_HOST=%s does not answer `docker info`, and a remote "
                             "engine is not ours to start" % os.environ["DOCKER_HOST"])
    exe = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists(
        "/usr/sbin/dockerd") else None)
    if not exe:
        raise AssertionError("no Docker engine answers and dockerd is not installed "
                             "(docker.io is in the test group of .ci/packages: "
                             ".ci/install-deps test)")
    if not shutil.which("docker"):
        raise AssertionError("dockerd is installed but no docker client is on the PATH")
    if os.geteuid() != 0:
        raise AssertionError("no Docker engine answers, and starting dockerd needs root")
    snap = net_snapshot()
    log = os.path.join(logdir, "dockerd.log")
    with open(log, "wb") as logf:
        p = subprocess.Popen([exe], stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(STATE_FILE + ".tmp", "w") as f:
        json.dump({"pid": p.pid, "log": log, "snapshot": snap}, f)
    os.rename(STATE_FILE + ".tmp", STATE_FILE)
    eng = Engine(None, True, p.pid, log, snap)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if p.poll() is not None:
            why = _tail(log)
            engine_release(eng)
            raise AssertionError("dockerd exited %s at start; its log ends:\n%s" %
                                 (p.returncode, why))
        eng.info = engine_info()
        if eng.info:
            return eng
        time.sleep(0.5)
    why = _tail(log)
    engine_release(eng)
    raise AssertionError("dockerd did not answer within %d s; its log ends:\n%s" %
                         (wait_s, why))


def engine_release(eng, wait_s=40):
    """Stop the dockerd ENG started and restore the network; a no-op for an
    engine that was running already. Returns what of the network still
    differs ([] when all is as before)."""
    if eng is None or not eng.started:
        return []
    if _alive_dockerd(eng.pid):
        os.kill(eng.pid, signal.SIGTERM)
        deadline = time.time() + wait_s
        while time.time() < deadline and _alive_dockerd(eng.pid):
            try:  # our child: reap it; an adopted one is reaped by init
                os.waitpid(eng.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
        if _alive_dockerd(eng.pid):
            os.kill(eng.pid, signal.SIGKILL)
            time.sleep(1)
    eng.started = False
    left = net_restore(eng.snapshot)
    try:
        os.unlink(STATE_FILE)
    except OSError:
        pass
    return left
