"""ollama-proxy: the status page (GET /proxy/ui), its history ring
(/proxy/history) and error ring (/proxy/status "errors").

The page is driven in headless Chromium (Debian's chromium, run with
--no-sandbox since the tests run as root) through the DevTools protocol over
--remote-debugging-pipe: NUL-terminated JSON on the child's fds 3 and 4, so
no websocket client is needed. The assertions are on the DOM after the
page's own JS has run against a proxy in front of two sims under load: both
backends shown, the in-flight figures equal /proxy/status's, a killed
backend shown down within a few seconds, the drain button (behind its
confirmation) draining its backend, and nothing fetched but the proxy's own
endpoints. Screenshots go to the build folder (proxy-ui.png, and
proxy-ui-phone.png and proxy-ui-wall.png at a phone's and a wall screen's
width) for a person to look at;
OP_UI_WARMUP_S=N runs the warm-up load N seconds first, for a screenshot
whose sparklines have more to show (tests/proxy/ui-screenshot.png, the one
README.md shows, was made so).

Without a chromium on the PATH the browser tests report SKIPPED (never passed); the
HTTP ones always run. The browser gets no network but 127.0.0.1: every
other host name resolves to nothing, background services are off."""
import base64
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import (BUILD, Proxy, Sim, eq, get, http, ok, post, run, tmpdir, wait_until,
                     SLOW)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN, BATCH = "k-admin-7f3", "k-batch-91c"
KEYS = ('auth = { keys = ( { name = "ops"; key = "%s"; admin = true; },\n'
        '                  { name = "batch"; key = "%s"; } ); };' % (ADMIN, BATCH))


# ---- a DevTools-protocol client over a pipe ----

class Browser:
    """One headless Chromium, driven over --remote-debugging-pipe. Commands
    are sent on the browser's connection; page commands carry the session
    of the one page made by new_page()."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps",
             "--disable-breakpad", "--disable-domain-reliability", "--metrics-recording-only",
             "--no-pings", "--mute-audio", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--proxy-server=127.0.0.1:9"]

    def __init__(self):
        self.profile = os.path.join(tmpdir(), "chromium-%d" % time.time_ns())
        self.log = open(os.path.join(tmpdir(), "chromium.log"), "ab")
        to_child, self.wfd = self._pipe_high()
        self.rfd, from_child = self._pipe_high()
        # posix_spawn: the log as stdout and stderr first (the log's fd may
        # be 3 or 4), then the pipes as the child's fds 3 and 4; every other fd
        # of ours is close-on-exec. A session of its own, so that the
        # browser's helpers can be ended with it by its process group.
        fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
              (os.POSIX_SPAWN_DUP2, self.log.fileno(), 1),
              (os.POSIX_SPAWN_DUP2, self.log.fileno(), 2),
              (os.POSIX_SPAWN_DUP2, to_child, 3), (os.POSIX_SPAWN_DUP2, from_child, 4)]
        argv = [CHROMIUM] + self.FLAGS + ["--user-data-dir=" + self.profile, "about:blank"]
        self.pid = os.posix_spawn(CHROMIUM, argv, os.environ, file_actions=fa, setsid=True)
        os.close(to_child)
        os.close(from_child)
        self.next_id = 0
        self.replies = {}
        self.events = []
        self.cv = threading.Condition()
        self.closed = False
        self.session = None
        threading.Thread(target=self._reader, daemon=True).start()

    @staticmethod
    def _pipe_high():
        """A pipe whose ends are above 4: dup2 onto 3 and 4 then cannot
        clobber one end with the other."""
        ends = []
        for fd in os.pipe():
            ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
            os.close(fd)
        return ends

    def _reader(self):
        buf = b""
        while True:
            try:
                data = os.read(self.rfd, 65536)
            except OSError:
                data = b""
            if not data:
                with self.cv:
                    self.closed = True
                    self.cv.notify_all()
                return
            buf += data
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                try:
                    m = json.loads(msg)
                except ValueError:
                    print("chromium: not a DevTools message: %r" % msg[:200])
                    continue
                with self.cv:
                    if "id" in m:
                        self.replies[m["id"]] = m
                    else:
                        self.events.append(m)
                    self.cv.notify_all()

    def send(self, method, params=None, session=True, timeout=30.0):
        with self.cv:
            self.next_id += 1
            mid = self.next_id
        m = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            m["sessionId"] = self.session
        os.write(self.wfd, json.dumps(m).encode() + b"\0")
        deadline = time.time() + timeout
        with self.cv:
            while mid not in self.replies:
                left = deadline - time.time()
                if self.closed or left <= 0:
                    raise AssertionError("chromium: no answer to %s" % method)
                self.cv.wait(left)
            r = self.replies.pop(mid)
        if "error" in r:
            raise AssertionError("chromium: %s: %s" % (method, r["error"]))
        return r.get("result", {})

    def new_page(self, width=1400, height=1000, mobile=False):
        tid = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": tid, "flatten": True},
                                 session=False)["sessionId"]
        for d in ("Page.enable", "Runtime.enable", "Network.enable"):
            self.send(d)
        self.viewport(width, height, mobile)

    def viewport(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def goto(self, url, timeout=10.0):
        """Navigate and wait for the load event (the page's script has run)."""
        with self.cv:
            seen = len(self.events)
        self.send("Page.navigate", {"url": url})
        deadline = time.time() + timeout
        with self.cv:
            while not any(e.get("method") == "Page.loadEventFired"
                          for e in self.events[seen:]):
                left = deadline - time.time()
                if self.closed or left <= 0:
                    raise AssertionError("chromium: %s did not load" % url)
                self.cv.wait(left)

    def eval(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError("page JS: %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, timeout=10.0, what=None):
        """Poll the page until EXPR is truthy; returns its value."""
        return wait_until(lambda: self.eval(expr), timeout=timeout, interval=0.1,
                          what=what or expr)

    def requests(self):
        """(url, headers) of every request the page made so far."""
        with self.cv:
            return [(e["params"]["request"]["url"], e["params"]["request"].get("headers", {}))
                    for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path, width, mobile=False):
        """The whole page at WIDTH, as tall as its content (a short viewport
        first, so that the content, not the window, sets the height)."""
        self.viewport(width, 200, mobile)
        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print("screenshot: %s" % path)

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        deadline = time.time() + 5
        while time.time() < deadline and os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            time.sleep(0.05)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own group: the helpers too
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.wfd)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def browser_or_skip():
    """A browser, or the test ends SKIPPED (never passed) without one."""
    if not CHROMIUM:
        harness.skip("no chromium on the PATH (.ci/packages installs it)")
    return Browser()


# ---- load ----

def gen(n, stream=True):
    return {"model": "llama3", "prompt": "hello", "stream": stream,
            "options": {"num_predict": n}}


class Holders:
    """N streamed requests held open: sent, never read (a slow reader is
    still in flight: a stream counts until its last byte)."""

    def __init__(self, port, n):
        body = json.dumps(gen(100000)).encode()
        head = ("POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                "application/json\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
        self.socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head + body)
            self.socks.append(s)

    def close(self):
        for s in self.socks:
            s.close()


class Churn:
    """Short requests, CONC at a time, until stopped: the sparklines' data."""

    def __init__(self, url, conc=3):
        self.stop_ = threading.Event()
        self.done = 0
        self.threads = [threading.Thread(target=self._loop, args=(url,), daemon=True)
                        for _ in range(conc)]
        for t in self.threads:
            t.start()

    def _loop(self, url):
        while not self.stop_.is_set():
            if post(url + "/api/generate", gen(12, stream=False)).status == 200:
                self.done += 1
            time.sleep(random.uniform(0, 0.5))  # a load that varies a little

    def stop(self):
        self.stop_.set()
        for t in self.threads:
            t.join()


def sims(n):
    return [Sim("--parallel", "8", "--ttft-ms", "30", "--tokens-per-s", "40", "--tokens", "100000")
            for _ in range(n)]


def bearer(k):
    return {"Authorization": "Bearer " + k}


# ---- HTTP-only tests ----

def test_page_is_self_contained():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)])
    r = get(px.url + "/proxy/ui")
    eq(r.status, 200, "the page")
    ok(r.headers["content-type"].startswith("text/html"), r.headers)
    csp = r.headers.get("content-security-policy", "")
    ok("default-src 'none'" in csp and "connect-src 'self'" in csp, "CSP: %r" % csp)
    html = r.text()
    # Nothing from elsewhere: the only absolute URLs are the SVG namespace
    # (a name, never fetched) and the example in the noscript text.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    ok(urls <= {"http://www.w3.org/2000/svg", "http://HOST:PORT/proxy/status"}, urls)
    ok(not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=\"(?!data:)", html),
       "no external script, style or image")
    # Without JS: the JSON it would draw, as links.
    ns = re.search(r"<noscript>(.*?)</noscript>", html, re.S)
    ok(ns and 'href="/proxy/status"' in ns.group(1), "noscript points at the JSON")
    eq(http("HEAD", px.url + "/proxy/ui").status, 200, "HEAD")
    eq(post(px.url + "/proxy/ui", {}).status, 405, "POST")
    px.stop()
    sim.stop()


def test_keys_shell_open_data_admin_only():
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)], extra=KEYS)
    eq(get(px.url + "/proxy/ui").status, 200, "the shell needs no key (it holds no data)")
    for path in ("/proxy/status", "/proxy/history"):
        eq(get(px.url + path).status, 401, path + " without a key")
        eq(get(px.url + path, headers=bearer(BATCH)).status, 403, path + " non-admin key")
        eq(get(px.url + path, headers=bearer(ADMIN)).status, 200, path + " admin key")
    px.stop()
    sim.stop()


def test_proxy_paths_never_reach_a_backend():
    """Issue 18, item 14: HEAD /proxy/status, an unknown action and an
    unknown /proxy/ path are answered by the proxy; none is forwarded (a
    forwarded one would carry X-Backend)."""
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)], extra=KEYS)
    adm = bearer(ADMIN)
    r = http("HEAD", px.url + "/proxy/status", headers=adm)
    eq(r.status, 200, "HEAD /proxy/status")
    ok("x-backend" not in r.headers, "HEAD /proxy/status answered by the proxy")
    for method, path, want in (("POST", "/proxy/backends/gpu0/bogus", 404),
                               ("POST", "/proxy/backends/nobody/drain", 404),
                               ("GET", "/proxy/backends/gpu0/drain", 405),
                               ("GET", "/proxy/nothing", 404),
                               ("DELETE", "/proxy/status", 405),
                               ("PUT", "/proxy/history", 405)):
        r = http(method, px.url + path, body=b"{}", headers=adm)
        eq(r.status, want, "%s %s" % (method, path))
        ok("x-backend" not in r.headers, "%s %s went to a backend" % (method, path))
        ok("error" in r.json(), "%s %s: the proxy's JSON error" % (method, path))
    eq(px.status(headers=adm)["backends"][0]["state"], "up",
       "the unknown action changed nothing")
    eq(sim.stats()["requests"], 0, "the sim saw no request")
    px.stop()
    sim.stop()


def test_history_counts_requests_and_tokens():
    a, b = sims(2)
    px = Proxy([("gpu0", a.url, 2), ("gpu1", b.url, 2)])
    n = 12
    for _ in range(n):
        eq(post(px.url + "/api/generate", gen(5, stream=False)).status, 200, "served")
    served = {x["name"]: x["served"] for x in px.status()["backends"]}

    def settled():
        h = get(px.url + "/proxy/history").json()
        got = {x["name"]: sum(x["requests"]) for x in h["backends"]}
        return h if got == served else None
    h = wait_until(settled, timeout=4, what="the rings to hold every request")
    eq(sum(sum(x["requests"]) for x in h["backends"]), n, "requests counted")
    eq(sum(sum(x["tokens"]) for x in h["backends"]), n * 5, "tokens counted")
    ok(0 < h["samples"] <= 600, h["samples"])
    for x in h["backends"]:
        eq(len(x["requests"]), h["samples"], "one sample a second")
        eq(len(x["tokens"]), h["samples"], "one sample a second")
    eq(len(h["queue"]), h["samples"], "queue samples")
    s0 = h["samples"]
    time.sleep(2.2)
    s1 = get(px.url + "/proxy/history").json()["samples"]
    ok(s0 + 1 <= s1 <= s0 + 4, "a sample a second: %d then %d" % (s0, s1))
    eq(px.stop(), 0, "clean exit")
    a.stop()
    b.stop()


def test_errors_ring_bounded_newest_first():
    sim = Sim("--parallel", "1", "--ttft-ms", "30", "--tokens-per-s", "10", "--tokens", "1000")
    px = Proxy([("gpu0", sim.url, 1)], extra="queue = { max_length = 1; timeout_s = 60; };")
    # Its models known first: else the first holder waits for them, the
    # second is refused, and the queue empties once they are known (ASan on
    # a loaded host: a request meant to be refused waited 100 s and got 200).
    wait_until(lambda: px.backend("gpu0")["models"], what="discovery")
    held = Holders(px.port, 2)  # one in flight, one waiting: the queue is full
    wait_until(lambda: px.status()["queue"]["length"] == 1
               and px.backend("gpu0")["in_flight"] == 1, what="a full queue")
    for _ in range(25):
        eq(post(px.url + "/api/generate", gen(1, stream=False)).status, 503, "queue full")
    errs = px.status()["errors"]
    eq(len(errs), 20, "the ring keeps the last 20")
    e = errs[0]
    eq(e["status"], 503, "status")
    eq(e["path"], "/api/generate", "path")
    eq(e["outcome"], "queue-full", "outcome")
    ok("queue full" in e["why"], e)
    ok(e["time"].endswith("Z") and e["backend"] is None, e)
    st = px.status()["queue"]
    ok(st["oldest_wait_s"] > 0 and st["by_priority"]["normal"] == 1, st)
    held.close()
    eq(px.stop(), 0, "clean exit")
    sim.stop()


# ---- the page in a browser ----

def page_backends(br):
    return br.eval("""[...document.querySelectorAll('[data-backend]')].map(c => ({
        name: c.dataset.backend, state: c.dataset.state,
        inflight: c.querySelector('.inflight').textContent,
        why: c.querySelector('.why').hidden ? '' : c.querySelector('.why').textContent}))""")


def renders(br):
    return br.eval("Number(document.body.dataset.renders || 0)")


def test_page_live_fleet():
    br = browser_or_skip()
    a, b = sims(2)
    px = Proxy([("gpu0", a.url, 3), ("gpu1", b.url, 2)],
               extra="health = { interval_s = 0.3; timeout_s = 0.5; fail_after = 2; };\n"
                     "models = { refresh_s = 1; };")
    held = None
    try:
        churn = Churn(px.url)
        time.sleep(float(os.environ.get("OP_UI_WARMUP_S", "4")))
        churn.stop()
        ok(churn.done > 0, "the warm-up load was served")
        wait_until(lambda: all(x["in_flight"] == 0 for x in px.status()["backends"]),
                   what="the warm-up to end")
        held = Holders(px.port, 7)  # caps 3 + 2: five in flight, two waiting
        wait_until(lambda: px.status()["queue"]["length"] == 2, what="the load in place")

        br.new_page(1400, 1000)
        br.goto(px.url + "/proxy/ui")
        br.wait("document.querySelectorAll('[data-backend]').length == 2 && "
                "Number(document.body.dataset.renders) >= 2", what="both backends drawn")
        # The in-flight figures are /proxy/status's (the load is steady).
        st = px.status()
        want = {x["name"]: "%d / %d" % (x["in_flight"], x["max_concurrent"])
                for x in st["backends"]}
        eq(want, {"gpu0": "3 / 3", "gpu1": "2 / 2"}, "the load")
        n = renders(br)
        br.wait("Number(document.body.dataset.renders) > %d" % n, what="a fresh render")
        got = {x["name"]: x["inflight"] for x in page_backends(br)}
        eq(got, want, "in flight on the page vs /proxy/status")
        eq(br.eval("document.getElementById('q-length').textContent"),
           str(px.status()["queue"]["length"]), "queue length")
        ok(br.eval("document.querySelector('[data-client]') != null"), "a client row")
        br.wait("document.querySelector('[data-backend=gpu0] .chip.loaded') != null",
                what="the loaded model marked")
        # Readable on a phone: nothing wider than the screen.
        br.viewport(390, 844, mobile=True)
        br.wait("document.documentElement.scrollWidth <= window.innerWidth",
                what="no sideways scrolling at 390 px")
        br.screenshot(os.path.join(BUILD, "proxy-ui-phone.png"), 390, mobile=True)
        br.viewport(1400, 1000)

        # A killed backend shows down, with why, within a few seconds.
        t0 = time.time()
        b.kill()
        br.wait("document.querySelector('[data-backend=gpu1]').dataset.state == 'down'",
                timeout=5, what="gpu1 shown down")
        down_after = time.time() - t0
        why = [x for x in page_backends(br) if x["name"] == "gpu1"][0]["why"]
        ok(why.startswith("down since "), why)
        br.wait("document.querySelectorAll('#errors .err').length > 0",
                what="the cut streams listed as errors")
        br.wait("document.getElementById('live').classList.contains('ok')", what="live")
        time.sleep(1.5)  # a second render, so that "down since" has settled
        br.screenshot(os.path.join(BUILD, "proxy-ui.png"), 1400)
        # A wall screen: larger type, more columns, and dark as such screens often are.
        br.send("Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        br.viewport(2560, 1440)
        n = renders(br)
        br.wait("Number(document.body.dataset.renders) > %d" % n, what="a wall-size render")
        br.screenshot(os.path.join(BUILD, "proxy-ui-wall.png"), 2560)
        br.send("Emulation.setEmulatedMedia", {"features": []})
        br.viewport(1400, 1000)

        # Cancel does nothing; confirm drains.
        br.eval("document.querySelector('[data-backend=gpu0] button[data-verb=disable]')"
                ".click()")
        ok(br.eval("document.getElementById('confirm').open"), "the confirmation opens")
        br.eval("document.getElementById('confirm-cancel').click()")
        ok(not br.eval("document.getElementById('confirm').open"), "cancelled")
        br.eval("document.querySelector('[data-backend=gpu0] button[data-verb=drain]').click()")
        ok("Drain gpu0" in br.eval("document.getElementById('confirm-text').textContent"),
           "the confirmation names the backend")
        eq(px.backend("gpu0")["state"], "up", "nothing happens before the confirmation")
        br.eval("document.getElementById('confirm-ok').click()")
        wait_until(lambda: px.backend("gpu0")["state"] == "draining", what="gpu0 draining")
        br.wait("document.querySelector('[data-backend=gpu0]').dataset.state == 'draining'",
                timeout=5, what="the page shows it draining")
        ok(br.eval("document.querySelector('[data-backend=gpu0] button[data-verb=enable]')"
                   ".disabled") is False, "enable offered")

        # Nothing was fetched but the proxy's own endpoints.
        paths = set()
        for url, _ in br.requests():
            ok(url.startswith(px.url + "/"), "fetched from elsewhere: %s" % url)
            paths.add(url[len(px.url):])
        eq(paths, {"/proxy/ui", "/proxy/status", "/proxy/history",
                   "/proxy/backends/gpu0/drain"}, "what the page fetched")
        print("down shown %.2fs after the kill" % down_after)
        held.close()
        held = None
        eq(px.stop(), 0, "clean exit")
    finally:
        br.close()
        if held:
            held.close()
        px.stop()
        a.stop()


def test_page_asks_for_an_admin_key():
    br = browser_or_skip()
    sim = Sim()
    px = Proxy([("gpu0", sim.url, 2)], extra=KEYS)
    try:
        br.new_page(1000, 800)
        br.goto(px.url + "/proxy/ui")
        br.wait("!document.getElementById('keybox').hidden", what="the key prompt")
        ok(br.eval("document.getElementById('app').hidden"), "no data without a key")

        def submit(k):
            br.eval("document.getElementById('key-input').value = %s;"
                    "document.getElementById('key-form').requestSubmit()" % json.dumps(k))
        submit(BATCH)
        br.wait("document.getElementById('key-msg').textContent.includes('not an admin key')",
                what="a non-admin key refused")
        submit(ADMIN)
        br.wait("document.querySelectorAll('[data-backend]').length == 1",
                what="the fleet after the admin key")
        eq(br.eval("sessionStorage.getItem('ollama-proxy.admin-key')"), ADMIN, "kept")
        ok(ADMIN not in br.eval("location.href"), "never in the URL")
        sent = [h for u, h in br.requests() if u.endswith("/proxy/status")]
        ok(any(h.get("Authorization") == "Bearer " + ADMIN for h in sent),
           "sent as a bearer header")
        # A reload in the same tab keeps it (session storage).
        n = renders(br)
        br.goto(px.url + "/proxy/ui")
        br.wait("Number(document.body.dataset.renders || 0) >= 1 && "
                "document.getElementById('keybox').hidden", what="no prompt after a reload")
        ok(n >= 1, "rendered before the reload")
    finally:
        br.close()
        px.stop()
        sim.stop()


def test_page_shows_unknown_and_events():
    """Issue 20: a backend nothing is known of yet is drawn "unknown" (not
    up), and the Events list draws what /proxy/status's events hold (a
    reload here), newest first."""
    br = browser_or_skip()
    sim = Sim()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]  # bound, never listening: connections refused
    # One check at start, and 3 failures to be down: gpu1 stays unknown.
    px = Proxy([("gpu0", sim.url, 2), ("gpu1", "http://127.0.0.1:%d" % dead, 2)],
               extra="health = { interval_s = 3600; fail_after = 3; };")
    try:
        wait_until(lambda: px.backend("gpu0")["state"] == "up", what="gpu0 up")
        eq(px.backend("gpu1")["state"], "unknown", "one failed check of 3: unknown")
        px.proc.signal(signal.SIGHUP)
        wait_until(lambda: any(e["kind"] == "reload" for e in px.status().get("events", [])),
                   what="the reload's event")
        br.new_page(1200, 900)
        br.goto(px.url + "/proxy/ui")
        br.wait("document.querySelectorAll('[data-backend]').length == 2", what="both drawn")
        states = br.eval("Object.fromEntries([...document.querySelectorAll('[data-backend]')]"
                         ".map(c => [c.dataset.backend, c.dataset.state]))")
        eq(states, {"gpu0": "up", "gpu1": "unknown"}, "the states drawn")
        br.wait("document.querySelector('#events [data-kind=\"reload\"]') !== null",
                what="the reload in the Events list")
    finally:
        br.close()
        px.stop()
        sim.stop()
        s.close()


run(globals())
