"""ollama-proxy: backends from DNS. A dnsmasq started by the test on
127.0.0.1 answers for a name whose addresses change during the test; each
address is a sim on 127.0.0.x, one port for all (as a headless Service)."""
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import struct
import threading
import time

import aclient
from harness import Proc, Proxy, binary, eq, get, ok, post, rss_kib, run, tmpdir, wait_until, SLOW

GEN = {"model": "llama3", "prompt": "hello", "stream": False}
NAME = "ollama.fleet.test"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def free_tcp_port(hosts):
    """A port free on every one of HOSTS."""
    for _ in range(50):
        s = socket.socket()
        s.bind((hosts[0], 0))
        p = s.getsockname()[1]
        s.close()
        try:
            for h in hosts[1:]:
                t = socket.socket()
                t.bind((h, p))
                t.close()
            return p
        except OSError:
            continue
    raise AssertionError("no port free on %r" % hosts)


class Dns:
    """dnsmasq answering NAME from a hosts file the test rewrites."""

    def __init__(self, addrs, name=NAME):
        self.name = name
        tool = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        ok(os.path.exists(tool), "dnsmasq is not installed (.ci/packages: dnsmasq-base)")
        self.hosts = os.path.join(tmpdir(), "dns-hosts-%d" % os.getpid())
        self.set(addrs, reload=False)
        for _ in range(10):  # it listens on UDP and TCP: a port free on both
            self.port = free_udp_port()
            self.proc = Proc([tool, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                              "--addn-hosts=" + self.hosts, "--listen-address=127.0.0.1",
                              "--bind-interfaces", "--port=%d" % self.port, "--local-ttl=1",
                              "--log-facility=-", "--user=root", "--pid-file="],
                             name="dnsmasq")
            wait_until(lambda: "started" in self.proc.output() or not self.proc.alive(),
                       what="dnsmasq")
            if self.proc.alive() or "in use" not in self.proc.output():
                break
        ok(self.proc.alive(), "dnsmasq: " + self.proc.output())

    def set(self, addrs, reload=True):
        with open(self.hosts + ".tmp", "w") as f:
            for a in addrs:
                f.write("%s %s\n" % (a, self.name))
        os.rename(self.hosts + ".tmp", self.hosts)
        if reload:
            self.proc.signal(signal.SIGHUP)  # dnsmasq rereads its hosts files


def sim_at(host, port, *args):
    p = Proc([binary("ollama-sim"), "--host", host, "--port", str(port), "--models",
              "llama3:latest"] + [str(a) for a in args], name="ollama-sim")
    p.wait_listen()
    return p


def names(px):
    return sorted(b["name"] for b in px.status()["backends"])


def test_dns_backends_join_and_leave():
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = free_tcp_port(hosts)
    sims = {h: sim_at(h, port, "--parallel", "4", "--ttft-ms", "600", "--tokens", "1",
                      "--tokens-per-s", "0") for h in hosts}
    dns = Dns(hosts[:2])
    px = Proxy([("static", "http://%s:%d" % (hosts[2], port), 1)],
               extra='resolvers = ( "127.0.0.1:%d" );' % dns.port)
    # A dns row added by a reload (the harness writes url rows only).
    with open(px.conf) as f:
        text = f.read()
    text = text.replace('max_concurrent = 1; }',
                        'max_concurrent = 1; },\n  { name = "gpu"; dns = "%s:%d"; '
                        'max_concurrent = 2; resolve_s = 1; }' % (NAME, port))
    with open(px.conf, "w") as f:
        f.write(text)
    px.proc.signal(signal.SIGHUP)
    wait_until(lambda: names(px) == ["gpu-1", "gpu-2", "static"], timeout=10,
               what="a backend per address")
    by_name = {b["name"]: b for b in px.status()["backends"]}
    eq({by_name["gpu-1"]["url"], by_name["gpu-2"]["url"]},
       {"http://%s:%d" % (h, port) for h in hosts[:2]}, "one per address")
    gpu1_url = by_name["gpu-1"]["url"]

    async def scenario():
        # Requests in flight on both dns backends, then an address vanishes.
        reqs = [asyncio.ensure_future(aclient.request(px.port, "POST", "/api/generate",
                                                      body=GEN, timeout=60)) for _ in range(5)]
        await asyncio.sleep(0.2 * SLOW)
        gone = gpu1_url.split("//")[1].split(":")[0]
        dns.set([h for h in hosts[:2] if h != gone])
        for _ in range(int(60 * SLOW)):
            await asyncio.sleep(0.1)
            if "gpu-1" not in names(px):
                break
        return await asyncio.gather(*reqs), gone
    res, gone = aclient.run(scenario())
    eq([r.status for r in res], [200] * 5, "in flight on the vanished address: they finish")
    eq(names(px), ["gpu-2", "static"], "gpu-1 left")
    served_gone = get("http://%s:%d/_sim/stats" % (gone, port)).json()["served"]
    for _ in range(6):
        eq(post(px.url + "/api/generate", GEN).status, 200, "served after it left")
    eq(get("http://%s:%d/_sim/stats" % (gone, port)).json()["served"], served_gone,
       "no new request goes to a vanished address")
    # It comes back: the same number for the same address.
    dns.set(hosts[:2])
    wait_until(lambda: names(px) == ["gpu-1", "gpu-2", "static"], timeout=10,
               what="gpu-1 back")
    eq({b["name"]: b["url"] for b in px.status()["backends"]}["gpu-1"], gpu1_url,
       "a number stays with its address")
    # The DNS server goes away: the backends stay.
    dns.proc.kill()
    import time
    time.sleep(3)
    eq(names(px), ["gpu-1", "gpu-2", "static"], "a failed lookup keeps the backends")
    eq(post(px.url + "/api/generate", GEN).status, 200, "still served")
    eq(px.stop(), 0, "clean exit")
    for p in sims.values():
        p.stop()


def test_named_backend_asked_once_resolved():
    """A backend given by a host name (url row) that `resolvers` answer:
    the first health check and model poll run before the answer, so once
    the name resolves it is checked and asked for its models at once, not
    at the next tick (here 600 s away)."""
    port = free_tcp_port(["127.0.0.2"])
    sim = sim_at("127.0.0.2", port)
    # .internal: a loopback Ollama refuses (403) a Host it does not know
    dns = Dns(["127.0.0.2"], name="gpu.fleet.internal")
    px = Proxy([("named", "http://gpu.fleet.internal:%d" % port, 2)],
               extra='resolvers = ( "127.0.0.1:%d" );\n'
                     'models = { refresh_s = 600; };\n'
                     'health = { interval_s = 600; fail_after = 5; };' % dns.port)
    wait_until(lambda: px.backend("named")["models"] == ["llama3:latest"], timeout=10,
               what="its models once its name resolved")
    r = get(px.url + "/api/tags", timeout=5)
    eq(r.status, 200, "catalog")
    eq([m["name"] for m in r.json()["models"]], ["llama3:latest"], "its models")
    ok(px.backend("named")["healthy"], "healthy")
    eq(post(px.url + "/api/generate", GEN).status, 200, "served through its name")
    eq(px.stop(), 0, "clean exit")
    sim.stop()
    dns.proc.kill()


def test_dns_row_adaptive():
    """adaptive = true on a dns row: each address's backend is adaptive,
    with the row's max_concurrent as its ceiling; a reload that drops the
    flag makes them fixed at max_concurrent, one that sets it again makes
    them find their caps again."""
    host = "127.0.0.2"
    port = free_tcp_port([host])
    sim = sim_at(host, port, "--parallel", "4")
    dns = Dns([host])
    row = '{ name = "gpu"; dns = "%s:%d"; max_concurrent = 4; resolve_s = 1;%s }'
    conf = os.path.join(tmpdir(), "dns-adaptive.conf")

    def write(adaptive):
        with open(conf + ".tmp", "w") as f:
            f.write('listen = "127.0.0.1:0";\nresolvers = ( "127.0.0.1:%d" );\n'
                    'backends = ( %s );\n' %
                    (dns.port, row % (NAME, port, " adaptive = true;" if adaptive else "")))
        os.rename(conf + ".tmp", conf)
    write(True)
    proc = Proc([binary("ollama-proxy"), "-c", conf], name="ollama-proxy")
    px = Proxy.__new__(Proxy)
    px.proc, px.conf, px.port = proc, conf, proc.wait_listen()
    px.url = "http://127.0.0.1:%d" % px.port
    wait_until(lambda: names(px) == ["gpu-1"], timeout=10, what="the address's backend")
    b = px.backend("gpu-1")
    ok(b.get("adaptive", {}).get("ceiling") == 4 and b["effective_cap"] == 1,
       "adaptive from the dns row: %r" % b)
    eq(b["max_concurrent"], 4, "max_concurrent: the ceiling")
    write(False)
    proc.signal(signal.SIGHUP)
    wait_until(lambda: "adaptive" not in px.backend("gpu-1"), timeout=10,
               what="the flag dropped by a reload")
    eq(px.backend("gpu-1")["max_concurrent"], 4, "fixed at the row's max_concurrent")
    write(True)
    proc.signal(signal.SIGHUP)
    wait_until(lambda: "adaptive" in px.backend("gpu-1"), timeout=10,
               what="the flag set again by a reload")
    eq(px.backend("gpu-1")["effective_cap"], 1, "finding its cap again, from 1")
    eq(proc.stop(), 0, "clean exit")
    sim.stop()


def test_dns_churn_leaves_memory_flat():
    """1,000 changes of a dns row's answer (a pod rescheduled again and
    again): each backend that leaves is freed, with its model lists, once
    its last request ended, so memory stays flat (issue 19; issue 18, item
    6). Each sim lists 100 models: a backend kept would cost ~0.2 MB."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = free_tcp_port(hosts)
    models = ",".join("m%03d:latest" % i for i in range(100))
    sims = [sim_at(h, port, "--models", models) for h in hosts]
    dns = Dns(hosts[:1])
    conf = os.path.join(tmpdir(), "dns-churn.conf")
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nresolvers = ( "127.0.0.1:%d" );\n'
                'backends = ( { name = "gpu"; dns = "%s:%d"; max_concurrent = 2; '
                'resolve_s = 0.02; } );\nlogging = { access = "off"; };\n'
                'health = { interval_s = 60; };\n' % (dns.port, NAME, port))
    # ASan keeps freed memory in quarantine: a small one, or RSS says nothing.
    proc = Proc([binary("ollama-proxy"), "-c", conf], name="ollama-proxy",
                env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=2"})
    proc.wait_listen()
    seen = [0]

    def joined(n):
        out = proc.output()
        return out.count(" joins (") >= n and out.count(": 100 models") >= n
    # The first address must be in before the first change: else the
    # proxy's first answer can already be the second address.
    wait_until(lambda: joined(1), timeout=10, interval=0.002,
               what="the first address joins and says its models")
    rss = {}
    for k in range(1, 1001):
        dns.set([hosts[k % 2]])
        wait_until(lambda: joined(k + 1), timeout=10, interval=0.002,
                   what="change %d: the new address joins and says its models" % k)
        if k in (100, 1000):
            rss[k] = rss_kib(proc.pid)
    grown = (rss[1000] - rss[100]) / 1024.0
    print("RSS after 100 changes %d KiB, after 1000 %d KiB (+%.1f MiB)" %
          (rss[100], rss[1000], grown))
    ok(proc.output().count(" leaves (") >= 1000, "every change retired the old address")
    ok(grown < 16, "memory grew %.1f MiB over 900 changes" % grown)
    eq(proc.stop(), 0, "clean exit, nothing leaked (ASan checks at exit)")
    for p in sims:
        p.stop()


class FakeDns:
    """A hostile name server over UDP only, run in a thread of the test:
    answers NAME with self.addrs (shuffled at every query when
    self.shuffle), or, when self.cut is a number, with the first self.cut
    of them and the TC bit set. Its TCP port is closed: a truncated answer
    cannot be completed. self.queries counts the questions."""

    def __init__(self, addrs, name=NAME):
        self.addrs, self.name, self.shuffle, self.cut, self.queries = list(addrs), name, False, None, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, q):
        i = 12
        while q[i]:
            i += 1 + q[i]
        question = q[12:i + 5]
        addrs = list(self.addrs)
        if self.shuffle:
            random.shuffle(addrs)
        flags = 0x8180
        if self.cut is not None:
            addrs, flags = addrs[:self.cut], flags | 0x0200
        out = struct.pack(">HHHHHH", struct.unpack(">H", q[:2])[0], flags, 1, len(addrs), 0, 0)
        out += question
        for a in addrs:
            out += struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a)
        return out

    def serve(self):
        while self.running:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            self.sock.sendto(self.answer(q), peer)

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def dns_proxy(dns_port, port, resolve_s=0.2, extra=""):
    """A proxy whose one row is the dns row gpu = NAME:PORT."""
    conf = os.path.join(tmpdir(), "dns-%d-%d.conf" % (dns_port, port))
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nresolvers = ( "127.0.0.1:%d" );\n'
                'backends = ( { name = "gpu"; dns = "%s:%d"; max_concurrent = 1; '
                'resolve_s = %g; } );\nlogging = { access = "off"; };\n%s'
                % (dns_port, NAME, port, resolve_s, extra))
    proc = Proc([binary("ollama-proxy"), "-c", conf], name="ollama-proxy")
    px = Proxy.__new__(Proxy)
    px.proc, px.conf, px.port = proc, conf, proc.wait_listen()
    px.url = "http://127.0.0.1:%d" % px.port
    return px


def urls(px):
    return {b["url"] for b in px.status()["backends"]}


def addr_range(third, n, first=1):
    return ["127.0.%d.%d" % (third + (k // 250), k % 250 + 1) for k in range(first - 1, first - 1 + n)]


def test_dns_answer_of_40_all_served():
    """40 A records (more than libevent's evdns took: 32; more than a plain
    512-byte UDP answer holds): 40 backends, and each one serves."""
    hosts = addr_range(2, 40)
    port = free_tcp_port(hosts)
    sims = [sim_at(h, port, "--ttft-ms", "300", "--tokens", "1", "--tokens-per-s", "0")
            for h in hosts]
    dns = Dns(hosts)
    px = dns_proxy(dns.port, port)
    want = ["gpu-%d" % k for k in range(1, 41)]
    wait_until(lambda: names(px) == sorted(want), timeout=10,
               what="a backend per address of 40: %r" % names(px))
    eq(urls(px), {"http://%s:%d" % (h, port) for h in hosts}, "one per address")
    wait_until(lambda: all(b["healthy"] and b["models"] for b in px.status()["backends"]),
               timeout=20, what="every one healthy with its models")

    async def burst():  # prompts of their own: no affinity between them
        return await asyncio.gather(*[aclient.request(
            px.port, "POST", "/api/generate", body=dict(GEN, prompt="hello %d" % i), timeout=60)
            for i in range(80)])
    res = aclient.run(burst())
    eq([r.status for r in res], [200] * 80, "80 requests over 40 backends of cap 1")
    served = [get("http://%s:%d/_sim/stats" % (h, port)).json()["served"] for h in hosts]
    ok(all(n >= 1 for n in served), "every address served: %r" % served)
    eq(px.stop(), 0, "clean exit")
    for p in sims:
        p.stop()
    dns.proc.kill()


def test_dns_answer_of_100_over_tcp():
    """100 A records: more than a UDP answer holds (dnsmasq sets TC), asked
    again over TCP: 100 backends NAME-1..NAME-100 (need not be reachable to
    be counted); then 60 of them: 40 leave."""
    hosts = addr_range(3, 100)
    port = free_tcp_port(["127.0.0.1"])
    dns = Dns(hosts)
    px = dns_proxy(dns.port, port, extra='health = { interval_s = 60; };\n')
    want = sorted("gpu-%d" % k for k in range(1, 101))
    wait_until(lambda: names(px) == want, timeout=15,
               what="a backend per address of 100: %d" % len(names(px)))
    eq(urls(px), {"http://%s:%d" % (h, port) for h in hosts}, "one per address")
    ok("100 addresses, more than a UDP answer holds: asked over TCP" in px.proc.output(),
       "the TCP answer logged")
    dns.set(hosts[:60])
    wait_until(lambda: len(names(px)) == 60, timeout=15, what="60 left")
    eq(urls(px), {"http://%s:%d" % (h, port) for h in hosts[:60]}, "the 60 of the answer")
    eq(px.stop(), 0, "clean exit")
    dns.proc.kill()


def test_dns_over_256_addresses_in_time():
    """Pods get a new address at each restart: a long-lived dns row takes
    300 distinct addresses over 15 answers of 20 (each replacing the last),
    each answer's 20 numbered within 1..40 (an answer's new addresses join
    before the old ones leave; the numbers of those that left are reused,
    nothing is kept of them)."""
    port = free_tcp_port(["127.0.0.1"])
    dns = Dns(addr_range(4, 20))
    px = dns_proxy(dns.port, port, resolve_s=0.05, extra='health = { interval_s = 60; };\n')
    room = {"gpu-%d" % k for k in range(1, 41)}
    for r in range(15):
        hosts = addr_range(4, 20, first=1 + 20 * r)
        if r:
            dns.set(hosts)
        wait_until(lambda: urls(px) == {"http://%s:%d" % (h, port) for h in hosts}, timeout=10,
                   what="answer %d (addresses %d..%d seen)" % (r, 20 * r + 1, 20 * r + 20))
        ok(len(names(px)) == 20 and set(names(px)) <= room,
           "answer %d: the numbers of those that left, reused: %r" % (r, names(px)))
    out = px.proc.output()
    eq(len(set(re.findall(r"resolves to (127\.\S+)\)", out))), 300, "300 distinct addresses joined")
    eq(out.count(" leaves ("), 280, "280 left")
    eq(px.stop(), 0, "clean exit")
    dns.proc.kill()


def test_dns_shuffled_answer_no_churn():
    """A server that shuffles its 40 addresses at every answer (CoreDNS):
    only the set counts, so after the first answer nothing leaves or joins
    (with a part of each answer, 32 of 40, backends left and joined at every
    lookup and adaptive caps began again from 1)."""
    hosts = addr_range(5, 40)
    port = free_tcp_port(["127.0.0.1"])
    dns = FakeDns(hosts)
    dns.shuffle = True
    px = dns_proxy(dns.port, port, resolve_s=0.05, extra='health = { interval_s = 60; };\n')
    wait_until(lambda: len(names(px)) == 40, timeout=10, what="40 backends: %d" % len(names(px)))
    before, q0 = px.proc.output(), dns.queries
    wait_until(lambda: dns.queries >= q0 + 20, timeout=20, what="20 more shuffled answers")
    after = px.proc.output()
    eq(after.count(" joins ("), before.count(" joins ("), "no join after the first answer")
    eq(after.count(" leaves ("), 0, "nothing left")
    eq(urls(px), {"http://%s:%d" % (h, port) for h in hosts}, "the 40")
    eq(px.stop(), 0, "clean exit")
    dns.stop()


def truncated_metric(px):
    m = re.search(r'^ollama_proxy_dns_truncated_total\{row="gpu"\} (\d+)$',
                  get(px.url + "/metrics").text(), re.M)
    ok(m, "ollama_proxy_dns_truncated_total{row=\"gpu\"} in /metrics")
    return int(m.group(1))


def test_dns_truncated_answer_without_tcp():
    """A truncated UDP answer that TCP cannot complete (the server has no
    TCP): a part. Its new addresses join, the ones it lacks stay; a warning
    names the row and the count once per change, the metric counts every
    such answer; a whole answer again applies in full."""
    hosts = addr_range(6, 12)
    port = free_tcp_port(["127.0.0.1"])
    dns = FakeDns(hosts[:8])
    px = dns_proxy(dns.port, port, resolve_s=0.05, extra='health = { interval_s = 60; };\n')
    wait_until(lambda: len(names(px)) == 8, timeout=10, what="8 backends")
    eq(truncated_metric(px), 0, "no truncated answer yet")
    # A part: 4 of the 8 and 2 new ones, TC set.
    dns.addrs, dns.cut = hosts[4:8] + hosts[8:10] + hosts[:4], 6
    wait_until(lambda: truncated_metric(px) >= 5, timeout=20, what="5 truncated answers")
    eq(urls(px), {"http://%s:%d" % (h, port) for h in hosts[:10]},
       "the 2 new joined, none of the 4 missing left")
    warn = "dns gpu (%s): the answer was truncated (6 addresses over UDP) and TCP could not " \
           "complete it" % NAME
    eq(px.proc.output().count(warn), 1, "warned once while the count stays")
    eq(px.proc.output().count(" leaves ("), 0, "nothing left")
    dns.cut = 7
    wait_until(lambda: "truncated (7 addresses over UDP)" in px.proc.output(), timeout=10,
               what="a new warning for a new count")
    # Whole again: 5 addresses, no TC.
    n = truncated_metric(px)
    dns.addrs, dns.cut = hosts[:5], None
    wait_until(lambda: len(names(px)) == 5, timeout=10, what="a whole answer: 5")
    ok("dns gpu (%s): a whole answer again (5 addresses)" % NAME in px.proc.output(),
       "logged: whole again")
    m = truncated_metric(px)
    time.sleep(0.5)
    eq(truncated_metric(px), m, "no count while answers are whole")
    ok(m >= n, "a counter")
    eq(px.stop(), 0, "clean exit")
    dns.stop()


def test_dns_row_config():
    import subprocess
    bad = os.path.join(tmpdir(), "dns-bad.conf")
    with open(bad, "w") as f:
        f.write('listen = "127.0.0.1:0";\nbackends = (\n'
                ' { name = "a"; url = "http://h:1"; dns = "h:1"; max_concurrent = 1; },\n'
                ' { name = "b"; url = "http://h:2"; max_concurrent = 1; resolve_s = 5; } );\n')
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c", bad], capture_output=True,
                       text=True)
    eq(r.returncode, 1, "--check")
    ok(":3: a backend has a url or a dns name" in r.stderr, r.stderr)
    ok(":4: \"resolve_s\" is for a backend given by a dns name" in r.stderr, r.stderr)


def test_dns_address_back_while_it_runs_keeps_its_cap():
    """An address that leaves the answer while its backend runs 2 requests
    (max_concurrent 2) and comes back while they still run takes that
    backend back: the 2 count against its cap again, so 2 new requests wait
    for them instead of making 4 on the server; meanwhile the status lists
    it in retired[]."""
    a, b = "127.0.0.2", "127.0.0.3"  # b lacks llama3: every request is a's
    port = free_tcp_port([a, b])
    sim_a = sim_at(a, port, "--parallel", "8", "--ttft-ms", "0", "--tokens",
                   str(int(80 * SLOW)), "--tokens-per-s", "20")
    sim_b = sim_at(b, port, "--models", "phi3:mini")
    url_a = "http://%s:%d" % (a, port)

    def stats_a():
        return get(url_a + "/_sim/stats").json()
    dns = Dns([a, b])
    conf = os.path.join(tmpdir(), "dns-back-%d.conf" % port)
    with open(conf, "w") as f:
        f.write('listen = "127.0.0.1:0";\nresolvers = ( "127.0.0.1:%d" );\n'
                'backends = ( { name = "gpu"; dns = "%s:%d"; max_concurrent = 2; '
                'resolve_s = 0.2; } );\n' % (dns.port, NAME, port))
    proc = Proc([binary("ollama-proxy"), "-c", conf], name="ollama-proxy")
    px = Proxy.__new__(Proxy)
    px.proc, px.conf, px.port = proc, conf, proc.wait_listen()
    px.url = "http://127.0.0.1:%d" % px.port

    def of_a(key="backends"):
        return [x for x in px.status()[key] if x["url"] == url_a]
    wait_until(lambda: len(urls(px)) == 2 and all(x["models"] for x in px.status()["backends"]),
               timeout=10, what="both addresses' backends and their models")
    out = []

    def send(n):
        def one():
            out.append(post(px.url + "/api/generate", GEN, timeout=120 * SLOW))
        ts = [threading.Thread(target=one) for _ in range(n)]
        for t in ts:
            t.start()
        return ts
    ts = send(2)
    wait_until(lambda: of_a() and of_a()[0]["in_flight"] == 2, what="2 running on a")
    dns.set([b])
    wait_until(lambda: not of_a(), timeout=10, what="a leaves the answer")
    eq([x["in_flight"] for x in of_a("retired")], [2], "retired, its 2 still running")
    dns.set([a, b])
    wait_until(lambda: of_a(), timeout=10, what="a back in the answer")
    eq(stats_a()["served"], 0, "a left and came back while the 2 ran")
    eq(of_a()[0]["in_flight"], 2, "the 2 still running count on a's backend again")
    eq(px.status()["retired"], [], "taken back: no longer retired")
    ts += send(2)
    wait_until(lambda: sum(c["in_flight"] + c["waiting"] for c in px.status()["clients"]) == 4,
               what="the 2 new at the proxy")
    eq(px.status()["queue"]["length"], 2, "the 2 new wait for a slot of a")
    for t in ts:
        t.join()
    eq(sorted(r.status for r in out), [200] * 4, "every request served: %r" % out)
    eq(stats_a()["models"]["llama3:latest"]["max_in_flight"], 2,
       "at most max_concurrent 2 on the server, across its leaving and coming back")
    eq(proc.stop(), 0, "clean exit (ASan: no leak)")
    for p in (sim_a, sim_b):
        p.stop()


run(globals())
