"""aclient.py - a small asyncio HTTP/1.1 client for tests that need many
requests in flight at once (stdlib only). It decodes chunked bodies and
records when the head, the first body byte and the end arrived."""
import asyncio
import json
import time


class AResp:
    def __init__(self):
        self.status = 0
        self.headers = {}
        self.body = b""
        self.chunks = []      # (time, bytes) per body read
        self.t_start = self.t_head = self.t_first = self.t_end = None
        self.error = None

    def json(self):
        return json.loads(self.body)

    def lines(self):
        return [json.loads(l) for l in self.body.decode().splitlines() if l.strip()]


async def _read_head(r, resp):
    line = await r.readline()
    if not line:
        raise ConnectionError("closed before the response")
    parts = line.decode().split(" ", 2)
    resp.status = int(parts[1])
    while True:
        h = await r.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode().partition(":")
        resp.headers[k.strip().lower()] = v.strip()
    resp.t_head = time.monotonic()


def _got(resp, data):
    if data:
        now = time.monotonic()
        if resp.t_first is None:
            resp.t_first = now
        resp.chunks.append((now, data))
        resp.body += data


async def _read_body(r, resp, method):
    if method == "HEAD" or resp.status in (204, 304):
        return
    if "chunked" in resp.headers.get("transfer-encoding", ""):
        while True:
            size = int((await r.readline()).split(b";")[0], 16)
            if size == 0:
                await r.readline()
                return
            _got(resp, await r.readexactly(size))
            await r.readline()
    elif "content-length" in resp.headers:
        n = int(resp.headers["content-length"])
        while n > 0:
            d = await r.read(min(n, 65536))
            if not d:
                raise ConnectionError("closed in the body")
            _got(resp, d)
            n -= len(d)
    else:
        while True:
            d = await r.read(65536)
            if not d:
                return
            _got(resp, d)


async def request(port, method, path, body=None, headers=None, host="127.0.0.1",
                  timeout=60.0, abort_after=None, local=None):
    """One request on its own connection. ABORT_AFTER: close the connection
    that many seconds after sending (a client that gives up). LOCAL: the
    source address to connect from (e.g. "127.0.0.2": another client)."""
    resp = AResp()
    resp.t_start = time.monotonic()
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    w = None
    try:
        r, w = await asyncio.open_connection(host, port, limit=1 << 20,
                                             local_addr=(local, 0) if local else None)
        hdr = "%s %s HTTP/1.1\r\nHost: %s:%d\r\n" % (method, path, host, port)
        for k, v in (headers or {}).items():
            hdr += "%s: %s\r\n" % (k, v)
        if body is not None:
            hdr += "Content-Length: %d\r\n" % len(body)
        w.write(hdr.encode() + b"\r\n" + (body or b""))
        await w.drain()
        if abort_after is not None:
            await asyncio.sleep(abort_after)
            return resp
        async def go():
            await _read_head(r, resp)
            await _read_body(r, resp, method)
        await asyncio.wait_for(go(), timeout)
        resp.t_end = time.monotonic()
    except Exception as e:  # recorded, judged by the test
        resp.error = repr(e)
    finally:
        if w is not None:
            w.close()
    return resp


async def many(port, reqs, concurrency):
    """Run REQS (a list of kwargs for request()) CONCURRENCY at a time."""
    sem = asyncio.Semaphore(concurrency)
    async def one(kw):
        async with sem:
            return await request(port, **kw)
    return await asyncio.gather(*(one(kw) for kw in reqs))


def run(coro):
    return asyncio.run(coro)
