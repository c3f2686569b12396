"""test_systemd.py - the systemd units of a real box (README.md, the quick
start): conf/ollama-proxy.service.in as `cmake --install` writes it, and the
template conf/ollama@.service for one `ollama serve` per GPU.

Each test installs the build with DESTDIR under a temp folder (never into
the host) and checks what landed there:
- the proxy's unit is in PREFIX/lib/systemd/system, for the default prefix
  (/usr/local) and for --prefix /usr, and its ExecStart names the installed
  binary and the installed config;
- `systemd-analyze verify --root=DESTDIR` is clean (exit 0 and not one
  line: a warning such as an unknown key still exits 0) on the proxy's unit
  and on two instances of the Ollama template with the drop-ins the README
  shows; a broken copy (unknown key, missing binary) is not, so the check
  can fail here;
- the unit's command lines work: ExecStart's arguments pass --check on the
  installed config, ExecReload's --check too, and fails on a broken config;
- TimeoutStopSec lies above the installed config's shutdown_timeout_s (the
  SIGTERM drain), and the stop signal is SIGTERM, the reload SIGHUP;
- `systemctl --root enable` wires both into multi-user.target;
- the template's guard: without a GPU chosen ollama@PORT refuses to start,
  saying what to do; with CUDA_VISIBLE_DEVICES it goes on.

systemd-analyze verify with --root reads everything under that root: the
units it depends on (sysinit.target...) and every command it checks. The
test copies the host's systemd units and kill/sh into the root, and puts a
stand-in executable at /usr/local/bin/ollama (the template's ExecStart;
verify only checks that it is executable, nothing runs it).
"""
import os
import re
import shlex
import shutil
import subprocess

import harness
from harness import BUILD, SRC, eq, ok, run, tmpdir

UNIT = "ollama-proxy.service"
CONF = "/etc/ollama-proxy/ollama-proxy.conf"
DROPIN = "[Service]\nEnvironment=CUDA_VISIBLE_DEVICES=%s\n"
INSTANCES = (("11435", "0"), ("11436", "1"))
_roots = []


def tools():
    return (harness.need_tool("systemd-analyze"), harness.need_tool("systemctl"),
            harness.need_tool("cmake"))


def sh(argv, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=e, timeout=120 * harness.SLOW)


def host_units():
    """The host's folder of systemd's own units (where sysinit.target is)."""
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.exists(os.path.join(d, "sysinit.target")):
            return d
    harness.skip("systemd's units (sysinit.target) are not on this host")


def install(prefix="/usr/local"):
    """`cmake --install` of the build into a new DESTDIR with PREFIX, made a
    root systemd-analyze can verify in; returns it."""
    root = os.path.join(tmpdir(), "root%d" % len(_roots))
    _roots.append(root)
    r = sh(["cmake", "--install", BUILD, "--prefix", prefix], env={"DESTDIR": root})
    eq(r.returncode, 0, "cmake --install: %s" % r.stdout.decode())
    units = root + "/usr/lib/systemd/system"
    os.makedirs(units, exist_ok=True)
    src = host_units()
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if not os.path.exists(os.path.join(units, f)) and os.path.isfile(p) and \
                not os.path.islink(p):
            shutil.copy(p, units)
    os.makedirs(root + "/bin", exist_ok=True)
    for name in ("kill", "sh"):
        shutil.copy(os.path.realpath(shutil.which(name)), root + "/bin/" + name)
    return root


def unit_file(root, prefix="/usr/local"):
    return root + prefix + "/lib/systemd/system/" + UNIT


def directives(path):
    """{key: [values]} of a unit file (comments and sections aside)."""
    out = {}
    for line in open(path):
        m = re.match(r"([A-Za-z]+)=(.*)$", line.rstrip("\n"))
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def verify(root, *units):
    """systemd-analyze verify --root: (exit code, its output)."""
    r = sh(["systemd-analyze", "verify", "--root=" + root] + list(units))
    return r.returncode, r.stdout.decode("utf-8", "replace").strip()


def in_root(root, argv):
    """A unit's command line with its absolute paths taken under ROOT."""
    return [root + a if a.startswith("/") and os.path.exists(root + a) else a for a in argv]


def add_ollama(root):
    """The Ollama template as the README installs it, with one drop-in per
    instance, and a stand-in for Ollama's binary."""
    etc = root + "/etc/systemd/system"
    os.makedirs(etc, exist_ok=True)
    shutil.copy(root + "/usr/local/share/doc/ollama-proxy/examples/ollama@.service", etc)
    for port, gpu in INSTANCES:
        d = "%s/ollama@%s.service.d" % (etc, port)
        os.makedirs(d, exist_ok=True)
        with open(d + "/override.conf", "w") as f:
            f.write(DROPIN % gpu)
    os.makedirs(root + "/usr/local/bin", exist_ok=True)
    stand_in = root + "/usr/local/bin/ollama"
    with open(stand_in, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(stand_in, 0o755)


def test_installed_where_systemd_reads():
    tools()
    root = install()
    path = unit_file(root)
    ok(os.path.isfile(path), "cmake --install left no %s" % path)
    d = directives(path)
    eq(d.get("Type"), ["simple"], "Type (the proxy does not speak sd_notify)")
    argv = shlex.split(d["ExecStart"][0])
    eq(argv, ["/usr/local/bin/ollama-proxy", "-c", CONF], "ExecStart")
    ok(os.access(root + argv[0], os.X_OK), "ExecStart's %s is not installed" % argv[0])
    ok(os.path.isfile(root + CONF), "the config ExecStart names is not installed")
    ok(os.path.isfile(root + "/usr/local/share/doc/ollama-proxy/examples/ollama@.service"),
       "the Ollama template is not installed with the examples")
    ok(not re.search(r"@[A-Z_]+@", open(path).read()), "a @VARIABLE@ was left unsubstituted")


def test_prefix_usr():
    tools()
    root = install("/usr")
    path = unit_file(root, "/usr")
    ok(os.path.isfile(path), "with --prefix /usr: no %s" % path)
    argv = shlex.split(directives(path)["ExecStart"][0])
    eq(argv[0], "/usr/bin/ollama-proxy", "ExecStart with --prefix /usr")
    eq(verify(root, UNIT), (0, ""), "systemd-analyze verify (prefix /usr)")


def test_verify_clean():
    tools()
    root = install()
    add_ollama(root)
    eq(verify(root, UNIT), (0, ""), "systemd-analyze verify %s" % UNIT)
    eq(verify(root, *["ollama@%s.service" % p for p, _ in INSTANCES]), (0, ""),
       "systemd-analyze verify of the Ollama instances")


def test_verify_sees_mistakes():
    """The check can fail on this host: an unknown key (a warning, exit 0
    but a line of output) and a binary that is not there (exit 1)."""
    tools()
    root = install()
    units = root + "/usr/local/lib/systemd/system/"
    good = open(units + UNIT).read()
    with open(units + "typo.service", "w") as f:
        f.write(good.replace("Type=simple\n", "Type=simple\nTyp=simple\n"))
    rc, out = verify(root, "typo.service")
    ok("Unknown key" in out and "Typ" in out, "an unknown key went unseen: %r" % out)
    with open(units + "nobin.service", "w") as f:
        f.write(good.replace("bin/ollama-proxy -c", "bin/ollama-proxy-gone -c"))
    rc, out = verify(root, "nobin.service")
    ok(rc != 0 and "ollama-proxy-gone" in out, "a missing binary went unseen: %d %r" % (rc, out))


def test_command_lines_work():
    tools()
    root = install()
    d = directives(unit_file(root))
    start = in_root(root, shlex.split(d["ExecStart"][0]))
    r = sh(start + ["--check"])
    eq(r.returncode, 0, "ExecStart's arguments with --check: %s" % r.stdout.decode())
    reload = [shlex.split(x) for x in d["ExecReload"]]
    eq(len(reload), 2, "ExecReload: --check, then SIGHUP")
    ok("--check" in reload[0], "the first ExecReload is not --check: %r" % reload[0])
    eq(reload[1], ["/bin/kill", "-HUP", "$MAINPID"], "the second ExecReload")
    r = sh(in_root(root, reload[0]))
    eq(r.returncode, 0, "ExecReload's --check on the installed config: %s" % r.stdout.decode())
    with open(root + CONF, "a") as f:
        f.write("\nno_such_key = 1;\n")
    r = sh(in_root(root, reload[0]))
    out = r.stdout.decode()
    ok(r.returncode != 0 and re.search(r"ollama-proxy\.conf:\d+: ", out),
       "a broken config passed ExecReload's --check (%d): %s" % (r.returncode, out))


def test_stop_waits_for_the_drain():
    tools()
    root = install()
    d = directives(unit_file(root))
    m = re.search(r"^shutdown_timeout_s\s*=\s*(\d+)\s*;", open(root + CONF).read(), re.M)
    ok(m, "no shutdown_timeout_s in the installed config")
    eq(d.get("KillSignal"), ["SIGTERM"], "KillSignal")
    stop = int(d["TimeoutStopSec"][0])
    ok(stop > int(m.group(1)), "TimeoutStopSec=%d is not above shutdown_timeout_s = %s" %
       (stop, m.group(1)))


def test_enable():
    tools()
    root = install()
    add_ollama(root)
    r = sh(["systemctl", "--root=" + root, "enable", UNIT, "ollama@11435.service",
            "ollama@11436.service"])
    eq(r.returncode, 0, "systemctl --root enable: %s" % r.stdout.decode())
    wants = root + "/etc/systemd/system/multi-user.target.wants/"
    for u in (UNIT, "ollama@11435.service", "ollama@11436.service"):
        ok(os.path.islink(wants + u), "enable made no %s%s" % (wants, u))


def test_ollama_guard():
    """ollama@PORT without a GPU chosen stops in ExecStartPre with what to
    do; with CUDA_VISIBLE_DEVICES (the drop-in) it goes on."""
    tools()
    d = directives(os.path.join(SRC, "conf", "ollama@.service"))
    ok(any(e == "OLLAMA_HOST=127.0.0.1:%i" for e in d["Environment"]),
       "the instance is not the port of OLLAMA_HOST: %r" % d["Environment"])
    pre = d["ExecStartPre"][0].replace("%i", "11435").replace("$$", "$")
    argv = shlex.split(pre)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")}
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = r.stdout.decode()
    ok(r.returncode != 0 and "systemctl edit ollama@11435" in out and
       "CUDA_VISIBLE_DEVICES" in out, "no GPU chosen, yet (%d): %r" % (r.returncode, out))
    env["CUDA_VISIBLE_DEVICES"] = "1"
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    eq((r.returncode, r.stdout.decode()), (0, ""), "with CUDA_VISIBLE_DEVICES=1")


def _clean():
    for r in _roots:
        shutil.rmtree(r, ignore_errors=True)


if __name__ == "__main__":
    import atexit
    atexit.register(_clean)
    run(globals())
