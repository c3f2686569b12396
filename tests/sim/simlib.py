"""simlib.py - helpers for the ollama-sim tests, on top of tests/lib/harness.py."""
import http.client as _hc
import json
import re
import socket
import time

import harness
from harness import SLOW, Resp

http = harness.http
get = harness.get
post = harness.post


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def raw_send(url, method, path, body=None, headers=None):
    """Send one request on a raw socket and return the socket (not read).
    A header given as None is left out (e.g. Content-Length)."""
    s = socket.create_connection(("127.0.0.1", port_of(url)), timeout=10 * SLOW)
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    body = body or b""
    h = {"Host": "127.0.0.1:%d" % port_of(url), "Content-Length": str(len(body))}
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n%s\r\n" % (
        method, path, "".join("%s: %s\r\n" % kv for kv in h.items() if kv[1] is not None))
    s.sendall(head.encode() + body)
    return s


def silent_for(sock, seconds):
    """True when nothing arrives on SOCK for SECONDS."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
        return False if data else True
    except socket.timeout:
        return True


def recv_all(sock, timeout=10.0):
    sock.settimeout(timeout * SLOW)
    out = b""
    while True:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d
        if out.endswith(b"0\r\n\r\n") or (b"Content-Length" in out and _complete(out)):
            break
    return out


def _complete(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.search(rb"Content-Length: (\d+)", head)
    return m and len(body) >= int(m.group(1))


class Stream:
    """A streamed request read line by line (http.client undoes chunking)."""

    def __init__(self, url, path, body, headers=None, timeout=30.0):
        self.conn = _hc.HTTPConnection("127.0.0.1", port_of(url), timeout=timeout * SLOW)
        self.conn.request("POST", path, body=json.dumps(body), headers=headers or {})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}

    def line(self):
        return self.resp.readline()

    def lines(self):
        out = []
        while True:
            ln = self.resp.readline()
            if not ln:
                return out
            out.append(ln)

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass
        self.conn.close()


def ndjson(body):
    lines = body.split(b"\n")
    harness.eq(lines[-1], b"", "NDJSON ends with a newline")
    return [json.loads(ln) for ln in lines[:-1]]


def sse(body):
    """Parse SSE 'data: ...\\n\\n' events; returns the list of data strings."""
    text = body.decode()
    harness.ok(text.endswith("\n\n"), "SSE ends with a blank line: %r" % text[-40:])
    events = text[:-2].split("\n\n")
    out = []
    for ev in events:
        harness.ok(ev.startswith("data: "), "SSE event framing: %r" % ev[:60])
        out.append(ev[len("data: "):])
    return out


def stat(sim, key, model=None):
    s = sim.stats()
    return s["models"][model][key] if model else s[key]


def wait_stat(sim, key, value, model=None, timeout=5.0):
    last = [None]

    def pred():
        last[0] = stat(sim, key, model)
        return last[0] == value
    try:
        harness.wait_until(pred, timeout=timeout, what="%s == %r" % (key, value))
    except AssertionError:
        raise AssertionError("%s: wanted %r, last %r; stats %s" %
                             (key, value, last[0], sim.stats()))


def elapsed(fn):
    t = time.time()
    r = fn()
    return r, time.time() - t


class Sim(harness.Sim):
    """harness.Sim whose stop() also checks for a clean exit: status 0 and
    no sanitizer report (leaks are reported at exit under ASan)."""

    def stop(self):
        rc = super().stop()
        out = self.proc.output()
        if rc != 0 or "Sanitizer" in out or "runtime error" in out:
            raise AssertionError("ollama-sim exited %s:\n%s" % (rc, self.proc.tail(60)))
        return rc
