#!/usr/bin/env python3
"""bench_tls.py - ollama-proxy over TLS against HAProxy doing the same, and
against its own plain figure, in one run with the same certificates.

Usage: bench_tls.py [requests|streams|memory|handshakes ...] [--quick]
                    [--rounds N] [--rate R] [--build DIR] [--json FILE]

With no benchmark named, runs all four (figures: proxy/README.md, "Past one box"):
  requests    CPU per short request with keep-alive: client -TLS-> proxy
              -TLS-> nginx -> sim (the proxy terminating and originating
              TLS), HAProxy the same way; the proxy all plain (client ->
              proxy -> sim) for the plain figure. Twice: as fast as wrk
              goes (each target at its own rate), and every target at one
              rate (--rate, default 5000 req/s, h2load paced), where the
              goals are judged: <= HAProxy, <= 1.3x plain. CPU per request
              falls as the rate rises (a wake-up of the event loop carries
              more requests), and as fast as it goes the TLS runs reach
              about half the plain rate (core 0 runs the client's and
              nginx's TLS): like with like is the same rate.
  streams     CPU per streamed token line (lines paced 10 ms apart by the
              sim, each its own chunk and record end to end) over the same
              TLS path; HAProxy with http-no-delay (without it HAProxy
              corks lines, BASELINE.md) and plain. Goal: <= HAProxy's.
  memory      RSS per idle TLS connection to the HTTPS listener (a
              handshake and one request each, then idle), against plain
              connections and HAProxy's. Goal: <= 64 KiB.
  handshakes  full handshakes (wrk with Connection: close, no resumption;
              GET / answered by the proxy itself, and by an
              `http-request return` in HAProxy): the server's CPU per
              handshake, and what one core would do (1 s / that), against
              HAProxy's; the rate wrk reached is shown too (wrk shares core
              0 with the load and may be the limit). Then resumed ones: a
              Python client offering the last session each time.
              The requests benchmark also says how many handshakes (and
              resumptions) the proxy made towards the box: keep-alive.

Placement as bench_proxy.py (BASELINE.md): wrk, the Python clients,
ollama-sim and nginx (the remote box's terminator) on core 0, the proxy
under test alone on core 1. CPU is utime+stime from /proc/PID/stat.
Certificates: one CA and one P-256 ECDSA server certificate for localhost
and 127.0.0.1, made here with the openssl CLI, used by every TLS server
(proxy, HAProxy, nginx); clients verify against the CA.

Needs: the project built (default build dir: build-bench, as bench_proxy.py),
/usr/bin/wrk, h2load (nghttp2-client), haproxy, nginx, openssl, taskset.
"""
import asyncio
import os
import re
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_proxy as bp  # noqa: E402  (its processes, placement and tables)

ARGS = None
CERTS = {}
RESULTS = {}
GEN_BODY = bp.GEN_BODY
ROOT_BODY = None


# ---------------------------------------------------------------- certificates

def make_certs():
    d = os.path.join(bp.TMP, "certs")
    os.makedirs(d)

    def ossl(*a):
        subprocess.run(["openssl"] + list(a), cwd=d, check=True, capture_output=True)
    for k in ("ca", "srv"):
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k + ".key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=bench CA")
    ossl("req", "-new", "-key", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "srv.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "7",
         "-days", "30", "-extfile", "srv.ext", "-out", "srv.pem")
    with open(os.path.join(d, "srv.both.pem"), "w") as f:  # HAProxy's crt: certificate and key
        f.write(open(os.path.join(d, "srv.pem")).read() + open(os.path.join(d, "srv.key")).read())
    CERTS.update(ca=os.path.join(d, "ca.pem"), cert=os.path.join(d, "srv.pem"),
                 key=os.path.join(d, "srv.key"), both=os.path.join(d, "srv.both.pem"))


# ---------------------------------------------------------------- servers

def terminator(sim_port):
    """nginx on core 0 in front of the sim: the remote box (TLS, kept-alive
    connections to the sim, streaming unbuffered)."""
    port = bp.free_port()
    d = os.path.join(bp.TMP, "box-%d" % port)
    os.makedirs(d)
    cfg = """daemon off; master_process off; worker_processes 1; user root;
pid {d}/nginx.pid; error_log {d}/error.log error;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream sim {{ server 127.0.0.1:{sim}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} ssl; keepalive_requests 1000000;
    ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:box:10m;
    location / {{
      proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1; proxy_buffering off; proxy_read_timeout 300s;
    }}
  }}
}}
""".format(d=d, sim=sim_port, port=port, cert=CERTS["cert"], key=CERTS["key"])
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(cfg)
    return bp.Proc("nginx", ["nginx", "-p", d, "-c", path], core=bp.LOAD_CORE, wait_re=None,
                   port=port)


class PxTLS:
    """ollama-proxy with a plain and an HTTPS listener; its one backend the
    box at BOX_PORT over TLS (or the sim at SIM_PORT in clear)."""

    def __init__(self, cap, box_port=None, sim_port=None):
        conf = os.path.join(bp.TMP, "proxy-tls-%d.conf" % len(bp._procs))
        if box_port:
            row = ('{ name = "box"; url = "https://localhost:%d"; max_concurrent = %d; '
                   'tls = { ca_file = "%s"; }; }' % (box_port, cap, CERTS["ca"]))
        else:
            row = '{ name = "a"; url = "http://127.0.0.1:%d"; max_concurrent = %d; }' % (sim_port, cap)
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:0";\nbackends = ( %s );\n'
                    'queue = { max_length = 100000; };\nlimits = { max_connections = 100000; };\n'
                    'logging = { access = "off"; };\n'
                    'tls = { listen = "127.0.0.1:0"; cert_file = "%s"; key_file = "%s"; };\n'
                    % (row, CERTS["cert"], CERTS["key"]))
        self.proc = bp.Proc("ollama-proxy", [os.path.join(bp.BUILD, "ollama-proxy"), "-c", conf],
                            core=bp.PROXY_CORE)
        self.port = self.proc.port
        deadline = time.time() + 10
        while time.time() < deadline:
            m = re.search(rb"listening on \S*:(\d+) \(https\)", open(self.proc.log, "rb").read())
            if m:
                self.tls_port = int(m.group(1))
                break
            time.sleep(0.02)
        time.sleep(0.3)  # the first health check and discovery


def haproxy_tls(box_port, cap, nodelay=False, plain_sim=None):
    """HAProxy 2.6, one thread, terminating TLS with the same certificate
    and originating it to the box (verified against the CA, SNI, sessions
    reused: its defaults), http-reuse always; GET / answered by itself as
    the proxy answers it. PLAIN_SIM: all in clear to the sim instead."""
    port = bp.free_port()
    if plain_sim:
        server = "    server a 127.0.0.1:%d maxconn %d" % (plain_sim, cap)
        bind = "bind 127.0.0.1:%d" % port
    else:
        server = ("    server box 127.0.0.1:%d maxconn %d ssl verify required ca-file %s "
                  "sni str(localhost) verifyhost localhost" % (box_port, cap, CERTS["ca"]))
        bind = "bind 127.0.0.1:%d ssl crt %s" % (port, CERTS["both"])
    cfg = """global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 300s
    timeout queue 120s
    http-reuse always
%s
frontend fe
    %s
    http-request return status 200 content-type text/plain string "Ollama is running" if {{ path / }} {{ method GET }}
    default_backend be
backend be
    balance leastconn
    http-request set-header Host 127.0.0.1
%s
""".replace("{{", "{").replace("}}", "}") % ("    option http-no-delay" if nodelay else "", bind, server)
    path = os.path.join(bp.TMP, "haproxy-tls-%d.cfg" % len(bp._procs))
    with open(path, "w") as f:
        f.write(cfg)
    return bp.Proc("haproxy", ["haproxy", "-db", "-f", path], core=bp.PROXY_CORE, wait_re=None,
                   port=port)


# ---------------------------------------------------------------- load

def wrk(url, conns, duration, post=True, close=False):
    """wrk -t1 on core 0 against URL; returns requests, req/s, errors."""
    argv = ["taskset", "-c", bp.LOAD_CORE, "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration,
            "--timeout", "10s"]
    if post:
        argv += ["-s", bp.lua_script()]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
         "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sockerr"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups())} \
        if m else {}
    return r


def client_ctx():
    ctx = ssl.create_default_context(cafile=CERTS["ca"])
    return ctx


async def _stream(port, tls, body, counts):
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx() if tls else None,
                                         server_hostname="localhost" if tls else None,
                                         limit=1 << 20)
    w.write(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        counts["errors"] += 1
    while True:
        line = await r.readline()  # chunk sizes, data lines and CRLFs alike
        if not line:
            break
        if line.startswith(b"{"):
            counts["lines"] += 1
            if b'"done":true' in line:
                break
    w.close()


def streams(port, tls, n, body):
    counts = {"lines": 0, "errors": 0}

    async def main():
        await asyncio.gather(*(_stream(port, tls, body, counts) for _ in range(n)))
    asyncio.run(main())
    return counts


def idle_conns(port, tls, n):
    """N connections, each a handshake (TLS) and one GET /, then held idle."""
    socks = []
    ctx = client_ctx()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while b"Ollama is running" not in got:
            d = s.recv(4096)
            if not d:
                raise SystemExit("connection closed before its answer")
            got += d
        socks.append(s)
    return socks


# ---------------------------------------------------------------- benchmarks

def sims_and_box(*flags):
    s = bp.sim(*flags)
    box = terminator(s.port)
    return s, box


def h2load(url, conns, duration, rate):
    """h2load (HTTP/1.1, keep-alive) on core 0 at RATE requests/s in all,
    paced per connection; returns requests done, req/s and errors."""
    body = os.path.join(bp.TMP, "gen.json")
    if not os.path.exists(body):
        with open(body, "w") as f:
            f.write(GEN_BODY)
    argv = ["taskset", "-c", bp.LOAD_CORE, "h2load", "--h1", "-c", str(conns), "-D", str(duration),
            "--rps", "%g" % (rate / conns), "-d", body, "-H", "Content-Type: application/json", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    done, ok, failed, errored = (int(x) for x in m.groups())
    return {"requests": ok, "rps": ok / duration, "non2xx": done - ok, "sockerr": {"failed": failed,
                                                                              "errored": errored}}


def requests_table(title, targets, res, judge):
    """One table of the four targets (medians over rounds; ratios per round,
    then their median), and with JUDGE the goals on it. Returns the figures
    per target and the goal's two ratios."""
    def ratio(rs, base):
        return bp.med([r["cpu_us"] / x["cpu_us"] for r, x in zip(rs, base)])
    figs = {name: {"rps": bp.med([r["rps"] for r in res[name]]),
                   "cpu_us": bp.med([r["cpu_us"] for r in res[name]]),
                   "vs_plain": ratio(res[name], res["proxy plain"]),
                   "vs_haproxy": ratio(res[name], res["haproxy TLS"]),
                   "errors": sum(r["non2xx"] + sum(r["sockerr"].values()) for r in res[name])}
            for name, _, _ in targets}
    bp.table(title, ["target", "req/s", "cpu us/req", "x proxy plain", "x haproxy TLS", "errors"],
             [[name, "%.0f" % f["rps"], "%.1f" % f["cpu_us"], "%.2f" % f["vs_plain"],
               "%.2f" % f["vs_haproxy"], f["errors"]] for name, f in figs.items()])
    goal = {k: figs["proxy TLS"][k] for k in ("vs_plain", "vs_haproxy")}
    if judge:
        print("goals (at one rate for all): TLS CPU/request <= 1.3x plain: %.2f %s; <= HAProxy TLS: "
              "%.2f %s" % (goal["vs_plain"], bp.goal(goal["vs_plain"] <= 1.3), goal["vs_haproxy"],
                           bp.goal(goal["vs_haproxy"] <= 1.0)))
    return {name: {"rps": f["rps"], "cpu_us": f["cpu_us"]} for name, f in figs.items()}, goal


def bench_requests():
    dur = 2 if ARGS.quick else 5
    conns = 50
    s, box = sims_and_box("--ttft-ms", "0", "--tokens-per-s", "0", "--tokens", "24", "--parallel", "256")
    px_tls = PxTLS(64, box_port=box.port)
    px_plain = PxTLS(64, sim_port=s.port)
    ha = haproxy_tls(box.port, 64)
    ha_plain = haproxy_tls(None, 64, plain_sim=s.port)
    targets = [("proxy plain", px_plain.proc, "http://127.0.0.1:%d/api/generate" % px_plain.port),
               ("proxy TLS", px_tls.proc, "https://localhost:%d/api/generate" % px_tls.tls_port),
               ("haproxy plain", ha_plain, "http://127.0.0.1:%d/api/generate" % ha_plain.port),
               ("haproxy TLS", ha, "https://localhost:%d/api/generate" % ha.port)]
    for _, _, url in targets:
        wrk(url, conns, 1)  # warm-up: connections, sessions, pools
    # Two ways: as fast as wrk goes (each target at its own rate: core 0,
    # with wrk, nginx and the sim, limits the TLS runs to about half the
    # plain rate), and all four at one rate, RATE requests/s, which the
    # goals are judged at: CPU per request falls as the rate rises (an
    # event loop's wake-up carries more requests), so only CPU at the same
    # rate compares like with like.
    ways = [("wrk", lambda url: wrk(url, conns, dur)),
            ("rate", lambda url: h2load(url, conns, dur, ARGS.rate))]
    res = {}
    for rnd in range(ARGS.rounds):
        for way, load in ways:
            for name, p, url in (targets if rnd % 2 == 0 else targets[::-1]):
                c0 = p.cpu()
                r = load(url)
                r["cpu_us"] = (p.cpu() - c0) / max(r["requests"], 1) * 1e6
                res.setdefault(way, {}).setdefault(name, []).append(r)
    figs, _ = requests_table(
        "requests, as fast as it goes: wrk -t1 -c%d keep-alive, POST /api/generate stream:false, "
        "zero-delay sim (%d round(s) x %ds); TLS: client -TLS-> server -TLS-> nginx -> sim" %
        (conns, ARGS.rounds, dur), targets, res["wrk"], False)
    for name, f in figs.items():
        RESULTS["requests_" + name.replace(" ", "_")] = f
    figs, goal = requests_table(
        "requests at %d req/s for every target: h2load --h1 -c%d --rps %g, the same requests "
        "(%d round(s) x %ds)" % (ARGS.rate, conns, ARGS.rate / conns, ARGS.rounds, dur),
        targets, res["rate"], True)
    for name, f in figs.items():
        RESULTS["requests_at_rate_" + name.replace(" ", "_")] = f
    RESULTS["requests_goal"] = dict(goal, rate=ARGS.rate)
    # Keep-alive to the box: the handshakes the proxy made for all those
    # requests (the pool growing to its size), and how many resumed.
    t = bp.http_json(px_tls.port, "GET", "/proxy/status")["backends"][0]["tls"]
    n = sum(r["requests"] for way in res.values() for r in way["proxy TLS"])
    RESULTS["requests_backend_tls"] = {"handshakes": t["handshakes"], "resumed": t["resumed"],
                                       "requests": n}
    print("proxy -> box: %d handshakes (%d resumed) for %d requests and the warm-up's" % (
        t["handshakes"], t["resumed"], n))
    for p in (px_tls.proc, px_plain.proc, ha, ha_plain, box, s):
        p.stop()


def bench_streams():
    n, tokens = (20, 100) if ARGS.quick else (50, 200)
    body = b'{"model":"llama3","prompt":"tell me a story","options":{"num_predict":%d}}' % tokens
    s, box = sims_and_box("--ttft-ms", "10", "--tokens-per-s", "100", "--tokens", str(tokens),
                          "--parallel", str(n), "--slowdown", "0")
    px_tls = PxTLS(n, box_port=box.port)
    px_plain = PxTLS(n, sim_port=s.port)
    ha = haproxy_tls(box.port, n, nodelay=True)
    targets = [("proxy plain", px_plain.proc, px_plain.port, False),
               ("proxy TLS", px_tls.proc, px_tls.tls_port, True),
               ("haproxy TLS no-delay", ha, ha.port, True)]
    for _, _, port, tls in targets:
        streams(port, tls, 4, body)  # warm-up
    res = {}
    for rnd in range(ARGS.rounds):
        for name, p, port, tls in (targets if rnd % 2 == 0 else targets[::-1]):
            c0 = p.cpu()
            t0 = time.time()
            c = streams(port, tls, n, body)
            c["secs"] = time.time() - t0
            c["cpu_us"] = (p.cpu() - c0) / max(c["lines"], 1) * 1e6
            res.setdefault(name, []).append(c)
    rows = []
    hat = res["haproxy TLS no-delay"]
    for name, _, _, _ in targets:
        rs = res[name]
        rows.append([name, bp.med([r["lines"] for r in rs]),
                     "%.0f" % bp.med([r["lines"] / r["secs"] for r in rs]),
                     "%.1f" % bp.med([r["cpu_us"] for r in rs]),
                     "%.2f" % bp.med([r["cpu_us"] / x["cpu_us"] for r, x in zip(rs, hat)]),
                     sum(r["errors"] for r in rs)])
        RESULTS["streams_" + name.replace(" ", "_")] = {"cpu_us_per_line": bp.med([r["cpu_us"] for r in rs])}
    bp.table("streams: %d streams x %d lines at 100 lines/s each (10 ms apart), Python asyncio "
             "clients (%d round(s))" % (n, tokens, ARGS.rounds),
             ["target", "lines", "lines/s", "cpu us/line", "x haproxy", "errors"], rows)
    vs_ha = bp.med([r["cpu_us"] / x["cpu_us"] for r, x in zip(res["proxy TLS"], hat)])
    RESULTS["streams_goal"] = {"vs_haproxy": vs_ha}
    print("goal: TLS CPU/line <= HAProxy's (no-delay): %.2f %s" % (vs_ha, bp.goal(vs_ha <= 1.0)))
    for p in (px_tls.proc, px_plain.proc, ha, box, s):
        p.stop()


def bench_memory():
    n = 300 if ARGS.quick else 2000
    s = bp.sim("--ttft-ms", "0", "--tokens-per-s", "0")
    box = terminator(s.port)
    rows = []
    for name, mk, tls in (("proxy plain", lambda: PxTLS(4, sim_port=s.port), False),
                          ("proxy TLS", lambda: PxTLS(4, sim_port=s.port), True),
                          ("haproxy TLS", lambda: haproxy_tls(box.port, 4), True)):
        figs = []
        for _ in range(ARGS.rounds):
            t = mk()
            p = t.proc if isinstance(t, PxTLS) else t
            port = (t.tls_port if tls else t.port) if isinstance(t, PxTLS) else t.port
            idle_conns(port, tls, 50)  # warm-up allocations (closed at once)
            time.sleep(0.3)
            r0 = p.rss_kib()
            socks = idle_conns(port, tls, n)
            time.sleep(0.5)
            r1 = p.rss_kib()
            figs.append((r1 - r0) / n)
            for x in socks:
                x.close()
            p.stop()
        rows.append([name, n, "%.2f" % bp.med(figs)])
        RESULTS["memory_" + name.replace(" ", "_")] = {"kib_per_idle_conn": bp.med(figs)}
    bp.table("memory: RSS per idle client connection (a handshake and GET /, then idle; %d "
             "connections, %d round(s))" % (n, ARGS.rounds), ["target", "connections", "KiB each"],
             rows)
    m = RESULTS["memory_proxy_TLS"]["kib_per_idle_conn"]
    print("goal: <= 64 KiB per idle TLS connection: %.1f %s" % (m, bp.goal(m <= 64)))
    for p in (box, s):
        p.stop()


def bench_handshakes():
    dur = 2 if ARGS.quick else 5
    s = bp.sim("--ttft-ms", "0", "--tokens-per-s", "0")
    box = terminator(s.port)
    px = PxTLS(4, sim_port=s.port)
    ha = haproxy_tls(box.port, 4)
    targets = [("proxy", px.proc, px.tls_port), ("haproxy", ha, ha.port)]
    res = {}
    for rnd in range(ARGS.rounds):
        for name, p, port in (targets if rnd % 2 == 0 else targets[::-1]):
            c0 = p.cpu()
            r = wrk("https://localhost:%d/" % port, 20, dur, post=False, close=True)
            r["cpu_us"] = (p.cpu() - c0) / max(r["requests"], 1) * 1e6
            res.setdefault(name, []).append(r)
    rows = []
    for name, _, _ in targets:
        rs = res[name]
        cpu = bp.med([r["cpu_us"] for r in rs])
        rows.append([name, "%.0f" % bp.med([r["rps"] for r in rs]), "%.1f" % cpu,
                     "%.0f" % (1e6 / cpu),
                     "%.2f" % bp.med([r["cpu_us"] / x["cpu_us"] for r, x in zip(rs, res["haproxy"])]),
                     sum(r["non2xx"] + r["sockerr"].get("connect", 0) + r["sockerr"].get("timeout", 0)
                         for r in rs)])
        RESULTS["handshakes_" + name] = {"rate": bp.med([r["rps"] for r in rs]), "cpu_us": cpu,
                                         "per_core_s": 1e6 / cpu}
    bp.table("handshakes: wrk -t1 -c20 -H 'Connection: close' GET / (a full TLS handshake per "
             "request, P-256 ECDSA; %d round(s) x %ds)" % (ARGS.rounds, dur),
             ["target", "handshakes/s (wrk)", "cpu us/handshake", "per core (1 s / cpu)",
              "cpu x haproxy", "errors"], rows)
    # Resumed handshakes: one client (Python, on core 0) that offers the
    # session the server gave on its last connection, a GET / each.
    n = 200 if ARGS.quick else 500
    rows = []
    for name, p, port in targets:
        figs, reused = [], 0
        for _ in range(ARGS.rounds):
            c0 = run_ns(p)
            k = resumed_conns(port, n)
            figs.append((run_ns(p) - c0) / n / 1e3)
            reused += k
        cpu = bp.med(figs)
        rows.append([name, "%d of %d" % (reused, n * ARGS.rounds), "%.1f" % cpu, "%.0f" % (1e6 / cpu)])
        RESULTS["resumed_" + name] = {"cpu_us": cpu, "per_core_s": 1e6 / cpu,
                                      "resumed": reused, "of": n * ARGS.rounds}
    bp.table("resumed handshakes: a client offering the last session (TLS 1.3 ticket), "
             "GET / with Connection: close, %d a round" % n,
             ["target", "resumed", "cpu us/handshake", "per core (1 s / cpu)"], rows)
    for p in (px.proc, ha, box, s):
        p.stop()


def run_ns(p):
    """P's time on a CPU in ns (/proc/PID/schedstat: exact, where a
    few hundred short handshakes are only tens of clock ticks)."""
    with open("/proc/%d/schedstat" % p.pid) as f:
        return int(f.read().split()[0])


def resumed_conns(port, n):
    """N connections in turn, each offering the previous one's session;
    returns how many the server resumed."""
    ctx = client_ctx()
    sess, reused = None, 0
    for _ in range(n):
        c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                            server_hostname="localhost", session=sess)
        c.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while c.recv(4096):  # the answer; the TLS 1.3 ticket comes before it
            pass
        reused += c.session_reused
        sess = c.session
        c.close()
    return reused


BENCHES = {"requests": bench_requests, "streams": bench_streams, "memory": bench_memory,
           "handshakes": bench_handshakes}


def main():
    global ARGS
    ARGS = bp.bench_args(__doc__, BENCHES, "1 round, short runs", more=lambda ap: ap.add_argument(
        "--rate", type=int, default=5000, help="requests: the one rate (req/s) of every target"))
    bp.raise_nofile()
    make_certs()
    bp.run_benches("bench_tls", BENCHES, RESULTS)


if __name__ == "__main__":
    main()
