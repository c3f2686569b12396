"""clslib.py - helpers for the ollama-classify end-to-end tests: run the
classifier, read its results, check them against the bundled items."""
import atexit
import json
import os
import signal
import subprocess
import sys
import time

import harness
from harness import SLOW, DATA, tmpdir, binary

CLASSIFY = binary("ollama-classify")
ITEMS_JSONL = os.path.join(DATA, "items.jsonl")
ITEMS_CSV = os.path.join(DATA, "items.csv")
LABELS_FILE = os.path.join(DATA, "labels.txt")
MODEL = "llama3"

_n = [0]
_started = []


@atexit.register
def _kill_started():
    for p in _started:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def fresh(name):
    """A path in the run's temp dir that does not exist yet."""
    _n[0] += 1
    return os.path.join(tmpdir(), "%d-%s" % (_n[0], name))


def fast_sim(*extra, parallel=64):
    """A sim that answers at once."""
    return harness.Sim("--parallel", parallel, "--ttft-ms", 0, "--tokens-per-s", 0, *extra)


class Result:
    def __init__(self, rc, out, err, secs):
        self.rc, self.out, self.err, self.secs = rc, out, err, secs

    def __repr__(self):
        return "<rc %s in %.2fs, stderr:\n%s>" % (self.rc, self.secs, self.err[-3000:])


def env_base(extra=None):
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    e.pop("OLLAMA_HOST", None)
    if extra:
        e.update(extra)
    return e


def classify(args, env=None, stdin_data=None, timeout=60.0):
    """Run ollama-classify with ARGS to the end; returns a Result."""
    t0 = time.time()
    p = subprocess.run([CLASSIFY] + [str(a) for a in args], input=stdin_data,
                       capture_output=True, env=env_base(env), timeout=timeout * SLOW)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                  p.stderr.decode("utf-8", "replace"), time.time() - t0)


def start(args, env=None):
    """Start ollama-classify in the background; returns the Popen (stdout and
    stderr to a file: log_of())."""
    log = open(fresh("classify.log"), "wb")
    p = subprocess.Popen([CLASSIFY] + [str(a) for a in args], stdout=log,
                         stderr=subprocess.STDOUT, env=env_base(env), start_new_session=True)
    p.log_path = log.name
    _started.append(p)
    return p


def log_of(p):
    """What a classifier started by start() has written to stdout and stderr."""
    with open(p.log_path, encoding="utf-8", errors="replace") as f:
        return f.read()


def std_args(url, items, out, *extra):
    return ["-i", items, "-o", out, "-m", MODEL, "-l", "@" + LABELS_FILE, "--url", url] + \
        list(extra)


def results(path):
    """The parsed lines of a results file (lines that do not parse skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def bundled():
    """The bundled items, by id."""
    with open(ITEMS_JSONL, encoding="utf-8") as f:
        return {it["id"]: it for it in map(json.loads, f)}


def labels():
    with open(LABELS_FILE) as f:
        return [l.strip() for l in f if l.strip()]


def check_all_labelled_once(rows, items):
    """Every item has exactly one labelled line, and no line names an unknown id."""
    labelled = [r["id"] for r in rows if r.get("label") is not None]
    harness.eq(len(labelled), len(set(labelled)), "duplicate labelled lines")
    harness.eq(set(labelled), set(items), "labelled ids")


def check_label_words(rows, items):
    """Wherever the text holds its gold label word, the sim answers it."""
    checked = 0
    for r in rows:
        it = items[r["id"]]
        if r.get("label") is not None and it["gold"] in it["text"].lower():
            harness.eq(r["label"], it["gold"], "label of %s (%r)" % (r["id"], it["text"]))
            checked += 1
    harness.ok(checked > len(items) // 3, "too few items with a label word: %d" % checked)


def chat_answer(label):
    """The body of a non-streamed /api/chat reply that answers LABEL."""
    return json.dumps({"model": "m", "created_at": "2024-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": json.dumps({"label": label})},
                       "done": True, "done_reason": "stop"}).encode()


class FakeOllama:
    """A small HTTP/1.1 server on 127.0.0.1 (Python's stdlib) for the cases
    ollama-sim cannot play. HANDLE(headers, body) runs for every POST and
    returns (status, extra headers dict, body bytes); every request is kept
    in .requests as (headers, parsed body)."""

    def __init__(self, handle):
        import http.server
        import threading
        fake = self
        self.requests = []
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # head and body in one segment (no Nagle stall)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with fake.lock:
                    fake.requests.append((self.headers, doc))
                status, headers, data = handle(self.headers, doc)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the classifier stopped and left

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            request_queue_size = 256  # listen backlog: -j connections at once

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.srv = S(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.srv.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def user_text(doc):
    """The item's text in a request body: the user message."""
    return [m["content"] for m in doc["messages"] if m["role"] == "user"][0]


def write_file(name, text):
    path = fresh(name)
    with open(path, "w") as f:
        f.write(text)
    return path
