"""baseimage.py - the base image docker/Dockerfile starts FROM
(debian:12-slim), on a machine that may reach no image registry.

base_ensure() keeps an image that is there, else pulls it, else imports a
Debian 12 root file system made with debootstrap --variant=minbase from
Debian's package mirror (the one this machine's apt uses), slimmed the way
the official -slim images are (no docs, man pages or locales; apt keeps no
package cache) and cached as a tarball in CACHE_DIR, so that only the first
run on a machine pays for debootstrap (about 30 s). The tarball is made
again when it is older than MAX_AGE_DAYS (security updates), or when
deleted. The image it makes carries LABEL org.ollama-proxy.base=debootstrap.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

from engine import sh

CACHE_DIR = os.environ.get("OP_DOCKER_CACHE", "/var/cache/ollama-proxy-tests")
MAX_AGE_DAYS = 30
SUITE = "bookworm"

# What the official debian:*-slim images configure (debuerreotype's slimify
# and its apt settings for containers).
DPKG_SLIM = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_RM_DEBS = ('"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
            '/var/cache/apt/*.bin || true"')
APT_CLEAN = ("DPkg::Post-Invoke { %s; };\nAPT::Update::Post-Invoke { %s; };\n"
             'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' % (_RM_DEBS, _RM_DEBS))
APT_NO_LANG = 'Acquire::Languages "none";\n'


def debian_mirror():
    """$OP_DEBIAN_MIRROR, else the first Debian archive this machine's apt
    lists for SUITE, else deb.debian.org."""
    if os.environ.get("OP_DEBIAN_MIRROR"):
        return os.environ["OP_DEBIAN_MIRROR"]
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+%s\s" % SUITE, text, re.M):
            return m.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:(.*)$", stanza, re.M)
            if uri and suites and SUITE in suites.group(1).split():
                return uri.group(1)
    return "http://deb.debian.org/debian"


def _sources(mirror):
    security = mirror.rstrip("/") + "-security" if mirror.rstrip("/").endswith("/debian") \
        else "http://deb.debian.org/debian-security"
    return ("Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            "Types: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            % (mirror, SUITE, SUITE, security, SUITE))


def _write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _slim(root, mirror):
    """Make ROOT look like debian:12-slim."""
    _write(root, "etc/dpkg/dpkg.cfg.d/docker", DPKG_SLIM)
    _write(root, "etc/apt/apt.conf.d/docker-clean", APT_CLEAN)
    _write(root, "etc/apt/apt.conf.d/docker-no-languages", APT_NO_LANG)
    _write(root, "etc/apt/sources.list.d/debian.sources", _sources(mirror))
    for rel in ("etc/apt/sources.list", "etc/resolv.conf", "etc/hostname"):
        try:
            os.unlink(os.path.join(root, rel))
        except OSError:
            pass
    for pattern in ("usr/share/man/*", "usr/share/info/*", "usr/share/groff/*",
                    "usr/share/lintian/overrides/*", "usr/share/linda/*", "usr/share/locale/*",
                    "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*", "var/log/*.log", "var/log/apt/*"):
        for p in glob.glob(os.path.join(root, pattern)):
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    for doc in glob.glob(os.path.join(root, "usr/share/doc/*")):
        if os.path.isdir(doc) and not os.path.islink(doc):
            for f in os.listdir(doc):
                if f != "copyright":
                    p = os.path.join(doc, f)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) \
                        else os.unlink(p)


def _debootstrap(tarball, log):
    """Make TARBALL (a .tar.gz of the root file system); LOG gets the output."""
    if os.geteuid() != 0:
        raise AssertionError("debootstrap needs root")
    if not shutil.which("debootstrap"):
        raise AssertionError("debootstrap is not installed (it is in the test group of "
                             ".ci/packages: .ci/install-deps test)")
    os.makedirs(CACHE_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE_DIR)
    try:
        root = os.path.join(work, "root")
        mirror = debian_mirror()
        with open(log, "w") as f:
            r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, root, mirror],
                               stdout=f, stderr=subprocess.STDOUT, timeout=900)
        if r.returncode != 0:
            with open(log) as f:
                tail = "".join(f.readlines()[-15:])
            raise AssertionError("debootstrap %s from %s failed (%d):\n%s" %
                                 (SUITE, mirror, r.returncode, tail))
        _slim(root, mirror)
        r = sh(["tar", "--numeric-owner", "-czf", tarball + ".tmp", "-C", root, "."],
               timeout=300)
        if r.returncode != 0:
            raise AssertionError("tar of the root file system failed: " + r.stdout)
        os.rename(tarball + ".tmp", tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def base_ensure(image, logdir):
    """Make IMAGE (debian:12-slim) available to the engine. Returns how:
    "present", "pulled", "imported (cached tarball)" or "imported (debootstrap
    just now)". Raises AssertionError with the reason when it cannot."""
    if sh(["docker", "image", "inspect", image]).returncode == 0:
        return "present"
    r = sh(["docker", "pull", "-q", image], timeout=300)
    if r.returncode == 0:
        return "pulled"
    tarball = os.path.join(CACHE_DIR, "debian-12-minbase.tar.gz")
    how = "imported (cached tarball)"
    fresh = os.path.exists(tarball) and \
        time.time() - os.path.getmtime(tarball) < MAX_AGE_DAYS * 86400
    if not fresh:
        print("base image: %s cannot be pulled (%s); making it with debootstrap" %
              (image, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "?"))
        _debootstrap(tarball, os.path.join(logdir, "debootstrap.log"))
        how = "imported (debootstrap just now)"
    r = sh(["docker", "import",
            "--change", "LABEL org.ollama-proxy.base=debootstrap",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", 'CMD ["bash"]', tarball, image], timeout=300)
    if r.returncode != 0:
        raise AssertionError("docker import %s failed: %s" % (tarball, r.stdout))
    return how
