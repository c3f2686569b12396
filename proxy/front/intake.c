/* intake.c - see intake.h.
 *
 * How it stays out of evhttp's way (libevent 2.1, http.c and
 * bufferevent_sock.c):
 * - Our input callback runs inside the bufferevent's read, before evhttp's
 *   read callback, and evhttp consumes only whole lines of a head: a head
 *   we take out of the input (into hold) is never half parsed by evhttp.
 * - While the handler runs and until the reply, evhttp has reading off
 *   and its read callback must not run (it aborts on input in that
 *   state). While a body streams we turn reading on with a read low
 *   watermark above the high one: the bufferevent then reads at most
 *   INTAKE_WINDOW and never calls evhttp's read callback; our input
 *   callback passes the news to the reader. The watermarks go back to 0
 *   when the reply is done, before evhttp reads the next request.
 * - A "100 Continue" is written through the bufferevent with its write
 *   callback cleared: evhttp's write callback would otherwise run the
 *   connection's last completion callback (the previous reply's) when it
 *   is written. evhttp sets its callbacks again when it replies.
 * - A client that leaves mid-body is evhttp's to see (its error callback
 *   stays in place): it frees the connection and calls the close callback,
 *   where the reader releases the body.
 * - libevent 2.1 reads a socket at most 4096 bytes at a time
 *   (EVBUFFER_MAX_READ), an ioctl, a readv and an epoll_wait for each: 3 s
 *   of CPU per GiB of upload. On a plain socket the body is read by an
 *   event of ours instead, INTAKE_READ at a time, into the same input
 *   buffer, the bufferevent's reading off: it stops when the window is
 *   full and starts again when the reader has drained it, and a hang-up,
 *   an error or timeouts.idle_s of silence is handed to evhttp's error
 *   callback as the bufferevent would have. Any other bufferevent (TLS)
 *   reads through its own ops, bounded by the watermarks above. */
#include "intake.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bodysrc.h"
#include "transport_tls.h"

#define HEAD_MAX (64 * 1024)  /* a longer head is evhttp's to refuse */
#define LINE_MAX_CHUNK 4096   /* a chunk-size or trailer line */
#define PREFIX "POST /api/blobs/"
#define INTAKE_READ (64 * 1024) /* a body's reads: below malloc's mmap threshold */

enum intake_state {
    I_IDLE, I_OTHER, I_HEAD, I_READY, I_BODY, I_DONE, I_DISCARD, I_ANSWER, I_SIZING, I_CHUNKS
};
enum chunk_state { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER, CH_END };

struct intake {
    struct bodysrc src; /* what the reader sees: first, so a bodysrc is an intake */
    struct bufferevent *bev;
    struct evhttp_request *req; /* the request of the body (I_BODY, I_DONE) */
    struct evbuffer *hold;      /* a head being gathered; then the body's first bytes */
    struct evbuffer *body;      /* I_CHUNKS: the chunked body so far, as it came */
    enum intake_state st;
    enum chunk_state ch;
    long long left;             /* body bytes left (Content-Length), or of this chunk */
    long long size;             /* I_CHUNKS: the chunked body's data so far */
    bufferevent_data_cb writecb; /* evhttp's, while a 100 Continue is written */
    unsigned busy : 1;          /* changing the input ourselves: no callback */
    unsigned chunked : 1;
    unsigned expect : 1;        /* the client waits for 100 Continue */
    unsigned client_close : 1;  /* the client itself asked to close */
    unsigned ended : 1;         /* read to its end */
    unsigned bad : 1;           /* malformed framing */
    unsigned watermarks : 1;    /* ours are set on the bufferevent */
    unsigned writecb_saved : 1;
    unsigned own_read : 1;      /* the body is read by REV, not the bufferevent */
    unsigned paused : 1;        /* REV is off: the window is full */
    unsigned unread : 1;        /* I_ANSWER: the body was not read, the connection closes */
    enum intake_verdict verdict; /* I_ANSWER: what the router answers */
    int status;                 /* INTAKE_BAD_HEAD: the status, and why */
    const char *why;
    size_t max_body;            /* limits.max_body_mb in bytes; 0: not checked here */
    const struct intake_gate *gate; /* NULL: none */
    double idle_s;              /* timeouts.idle_s: a body that stops this long fails */
    struct event rev;           /* own_read: the socket's readability */
};

static const struct bodysrc_ops intake_ops;
static void send_continue(struct intake *in);
static void restore_writecb(struct intake *in);
static void framing_step(struct intake *in, const char *line, size_t n);

/* ---- the head ---- */

/* The value of header line L (N bytes) if it is NAME, else NULL. */
static const char *header_is(const char *l, size_t n, const char *name, size_t *vlen)
{
    size_t k = strlen(name);
    const char *v;
    if (n <= k || l[k] != ':' || (l[0] | 0x20) != (name[0] | 0x20) ||
        strncasecmp(l, name, k) != 0)
        return NULL;
    for (v = l + k + 1; v < l + n && (*v == ' ' || *v == '\t'); v++)
        ;
    *vlen = (size_t)(l + n - v);
    while (*vlen && (v[*vlen - 1] == ' ' || v[*vlen - 1] == '\t'))
        (*vlen)--;
    return v;
}

/* Give the bytes held back to evhttp, as they came: not ours after all. */
static void give_back(struct intake *in)
{
    evbuffer_prepend_buffer(bufferevent_get_input(in->bev), in->hold);
    in->st = I_OTHER;
}

/* What a head's framing says, as rewrite_head reads it. */
struct framing {
    long long cl; /* Content-Length; -1 none */
    int keepalive; /* "Connection: keep-alive" */
};

/* Header line L (N bytes, without its end) of a head being rewritten:
 * 1 when it is framing (noted in IN and F, left out of the head), 0 to
 * keep it, -1 when the head is evhttp's to judge (a length that is not
 * one, two that differ, a coding but chunked). Connection is framing when
 * CLOSE (ours replaces it), else noted and kept. */
static int framing_header(struct intake *in, const char *l, size_t n, struct framing *f,
                          int close)
{
    const char *v;
    size_t vlen;
    if ((v = header_is(l, n, "Content-Length", &vlen))) {
        char num[24];
        long long x;
        if (!vlen || vlen >= sizeof num || strspn(v, "0123456789") < vlen)
            return -1;
        memcpy(num, v, vlen);
        num[vlen] = '\0';
        x = strtoll(num, NULL, 10);
        if (f->cl >= 0 && x != f->cl)
            return -1;
        f->cl = x;
        return 1;
    }
    if ((v = header_is(l, n, "Transfer-Encoding", &vlen))) {
        in->chunked = vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0;
        return in->chunked ? 1 : -1;
    }
    if ((v = header_is(l, n, "Expect", &vlen))) {
        in->expect = vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
        return 1;
    }
    if ((v = header_is(l, n, "Connection", &vlen))) {
        for (size_t i = 0; i + 5 <= vlen; i++)
            in->client_close |= strncasecmp(v + i, "close", 5) == 0;
        for (size_t i = 0; i + 10 <= vlen; i++)
            f->keepalive |= strncasecmp(v + i, "keep-alive", 10) == 0;
        return close;
    }
    return 0;
}

/* Read the framing of the head H (N bytes, without its blank line) and
 * write it to OUT without it, "Connection: close" added when CLOSE (or
 * the client's own Connection header kept when not). Returns 0, or -1
 * when the head is evhttp's to judge (no body, bad framing, a folded
 * line). */
static int rewrite_head(struct intake *in, const char *h, size_t n, struct evbuffer *out,
                        int close)
{
    const char *p = h, *end = h + n;
    struct framing f = {-1, 0};
    int first = 1, http10 = 0, rc;
    in->chunked = in->expect = in->client_close = 0;
    for (; p < end; first = 0) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p), full = len + (e != NULL);
        if (len && p[len - 1] == '\r')
            len--;
        if (first)
            http10 = len >= 8 && memcmp(p + len - 8, "HTTP/1.0", 8) == 0;
        else if (len && (p[0] == ' ' || p[0] == '\t'))
            return -1; /* obs-fold: evhttp's */
        if (!first && (rc = framing_header(in, p, len, &f, close)) < 0)
            return -1;
        if (first || !rc) {
            evbuffer_add(out, p, len);
            evbuffer_add(out, "\r\n", 2);
        }
        p += full;
    }
    if (!in->chunked && f.cl <= 0)
        return -1; /* no body: nothing to stream */
    in->client_close |= http10 && !f.keepalive;
    in->src.length = in->chunked ? -1 : f.cl;
    in->left = in->chunked ? 0 : f.cl;
    in->ch = CH_SIZE;
    if (close)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
    return 0;
}

/* ---- the size of other paths' bodies ----
 *
 * A request of another path that may carry a body (POST, PUT, PATCH, and
 * DELETE: Ollama's /api/delete has one) has its size judged here, not by
 * evhttp, whose own 413 is an HTML page the client's library cannot
 * read: a body over limits.max_body_mb is read and dropped as it arrives,
 * then evhttp gets the head without its body and the router answers 413
 * in the path's dialect (intake_too_large), the connection living on.
 * Behind "Expect: 100-continue" a Content-Length over the limit is
 * refused at once, nothing read, and the connection closes.
 * - A head is nearly always whole in the first read: judged there, in
 *   place (the common case costs a look at the head). One that arrives
 *   in pieces is held out of evhttp's sight until whole (I_SIZING).
 * - A chunked body's size is known only as it arrives: the request, head
 *   and body as they came, is held (I_CHUNKS) while its data is counted,
 *   and given to evhttp whole once it ends within the limit (or its
 *   framing is bad: evhttp's to refuse), as evhttp would have held it.
 *   Past the limit what is held is dropped and the 413 goes at once, the
 *   connection closing after it (its end may be far off, or never come,
 *   and evhttp cannot read on while the reply is made): the close lingers
 *   (conns.c), dropping what the client still sends, so that it reads the
 *   413 rather than a reset. */

/* The methods evhttp is set to serve (conns.c); of them, all but HEAD may
 * carry a body as evhttp reads requests (http.c, evhttp_method_may_have_body). */
static const char *const served[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"};

/* What a head says of its body, and its fault if it has one: where evhttp
 * would answer itself (an HTML page), or would read its framing otherwise
 * than the proxy does (two lengths: evhttp takes the first, a proxy in
 * front may take the last, and the rest is a request smuggled in). */
struct head_framing {
    long long cl; /* Content-Length; -1 none */
    unsigned chunked : 1;
    unsigned expect : 1;
    unsigned body : 1; /* its method may carry a body */
    int status;        /* 0, or the status to answer: 400, 501, 505 */
    const char *why;
};

/* The value V (N bytes) of a Content-Length: its digits, or -1. */
static long long length_of(const char *v, size_t n)
{
    long long x = 0;
    if (!n || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

/* The request line L (N bytes, without its end) into F: its fault, if
 * any, as evhttp reads request lines (METHOD SP TARGET SP HTTP/d.d). */
static void request_line(const char *l, size_t n, struct head_framing *f)
{
    const char *sp = memchr(l, ' ', n), *v = sp ? memchr(sp + 1, ' ', (size_t)(l + n - sp - 1)) : NULL;
    char version[16], c;
    int major, minor;
    size_t i, m;
    if (!sp || sp == l || !v || v == sp + 1 || (size_t)(l + n - v - 1) >= sizeof version) {
        f->status = 400;
        f->why = "bad request line";
        return;
    }
    memcpy(version, v + 1, (size_t)(l + n - v - 1));
    version[l + n - v - 1] = '\0';
    if (sscanf(version, "HTTP/%d.%d%c", &major, &minor, &c) != 2 || major < 0 || minor < 0) {
        f->status = 400;
        f->why = "bad HTTP version";
        return;
    }
    if (major > 1) {
        f->status = 505;
        f->why = "HTTP version not supported (HTTP/1.1 only)";
        return;
    }
    m = (size_t)(sp - l);
    for (i = 0; i < sizeof served / sizeof *served; i++)
        if (strlen(served[i]) == m && memcmp(l, served[i], m) == 0)
            break;
    if (i == sizeof served / sizeof *served) {
        f->status = 501;
        f->why = "method not implemented";
        return;
    }
    f->body = i != 2; /* HEAD */
}

/* Read head H (N bytes, its blank line included). */
static struct head_framing head_framing(const char *h, size_t n)
{
    struct head_framing f = {-1, 0, 0, 0, 0, NULL};
    const char *p = h, *end = h + n, *v;
    size_t vlen;
    int te = 0;
    for (int first = 1; p < end && !f.status; first = 0) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p), full = len + (e != NULL);
        if (len && p[len - 1] == '\r')
            len--;
        if (first) {
            request_line(p, len, &f);
        } else if ((v = header_is(p, len, "Content-Length", &vlen))) {
            long long x = length_of(v, vlen);
            if (x < 0 || (f.cl >= 0 && x != f.cl)) {
                f.status = 400;
                f.why = "bad Content-Length (not a number, or two that differ)";
            }
            f.cl = x;
        } else if ((v = header_is(p, len, "Transfer-Encoding", &vlen))) {
            if (te++ || vlen != 7 || strncasecmp(v, "chunked", 7) != 0) {
                f.status = 501;
                f.why = "unsupported Transfer-Encoding (chunked only)";
            }
            f.chunked = 1;
        } else if ((v = header_is(p, len, "Expect", &vlen))) {
            f.expect = vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
        }
        p += full;
    }
    if (!f.status && memchr(h, '\0', n)) { /* evhttp would cut a value there */
        f.status = 400;
        f.why = "a NUL byte in the head";
    }
    if (!f.status && !f.body && (f.chunked || f.cl > 0)) { /* evhttp would not read it */
        f.status = 400;
        f.why = "a body on a HEAD request";
    }
    if (!f.status && f.chunked && f.cl >= 0) {
        f.status = 400;
        f.why = "both Content-Length and Transfer-Encoding";
    }
    return f;
}

/* The length of the head in B[0..N), its blank line included (the first
 * empty line, "\r\n" or "\n", as evhttp reads lines); 0 if not there. */
static size_t head_end(const char *b, size_t n)
{
    for (const char *e = memchr(b, '\n', n); e; e = memchr(e + 1, '\n', (size_t)(b + n - e - 1))) {
        if (e + 1 < b + n && e[1] == '\n')
            return (size_t)(e - b) + 2;
        if (e + 2 < b + n && e[1] == '\r' && e[2] == '\n')
            return (size_t)(e - b) + 3;
    }
    return 0;
}

/* The same for the head at the start of BUF, searched from FROM on (what
 * was searched before, less the bytes a blank line could straddle), so
 * that a head sent a byte at a time costs its length, not its square. */
static size_t buffer_head_end(struct evbuffer *buf, size_t from)
{
    struct evbuffer_ptr p;
    char next[3];
    if (evbuffer_ptr_set(buf, &p, from > 3 ? from - 3 : 0, EVBUFFER_PTR_SET) < 0)
        return 0;
    for (;;) {
        size_t got;
        p = evbuffer_search(buf, "\n", 1, &p);
        if (p.pos < 0)
            return 0;
        got = (size_t)evbuffer_copyout_from(buf, &p, next, sizeof next);
        if (got >= 2 && next[1] == '\n')
            return (size_t)p.pos + 2;
        if (got >= 3 && next[1] == '\r' && next[2] == '\n')
            return (size_t)p.pos + 3;
        if (evbuffer_ptr_set(buf, &p, 1, EVBUFFER_PTR_ADD) < 0)
            return 0;
    }
}

/* The head at the start of BUF (the input, or hold) is at fault (STATUS,
 * WHY): evhttp gets a head of ours in its place, the request line's
 * method and target when it serves them (so that the router answers in
 * the path's dialect), else "GET /", with "Connection: close". All the
 * client sent so far is dropped; the close lingers. */
static void answer_bad(struct intake *in, struct evbuffer *buf, int status, const char *why)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    char line[2048];
    ev_ssize_t got = evbuffer_copyout(buf, line, sizeof line);
    const char *end = got > 0 ? memchr(line, '\n', (size_t)got) : NULL; /* the first line, whole */
    const char *sp = end ? memchr(line, ' ', (size_t)(end - line)) : NULL;
    const char *method = "GET", *target = "/";
    size_t t = 1;
    if (sp) {
        for (size_t i = 0; i < sizeof served / sizeof *served; i++)
            if (strlen(served[i]) == (size_t)(sp - line) && !memcmp(line, served[i], strlen(served[i])))
                method = served[i];
        if (sp[1] == '/')
            for (target = sp + 1, t = 0;
                 target + t < end && (unsigned char)target[t] > ' ' && target[t] != 0x7f; t++)
                ;
    }
    evbuffer_drain(in->hold, evbuffer_get_length(in->hold));
    evbuffer_drain(input, evbuffer_get_length(input));
    evbuffer_add_printf(input, "%s %.*s HTTP/1.1\r\nConnection: close\r\n\r\n", method, (int)t,
                        target);
    restore_writecb(in);
    in->verdict = INTAKE_BAD_HEAD;
    in->status = status;
    in->why = why;
    in->unread = 1;
    in->st = I_ANSWER;
}

/* A head longer than HEAD_MAX in BUF: 414 when its request line alone is,
 * else 431 (evhttp would answer 400 in HTML). */
static void answer_long(struct intake *in, struct evbuffer *buf)
{
    struct evbuffer_ptr p = evbuffer_search(buf, "\n", 1, NULL);
    if (p.pos < 0 || p.pos >= HEAD_MAX)
        answer_bad(in, buf, 414, "request target too long");
    else
        answer_bad(in, buf, 431, "request header fields too large");
}

/* hold's head (whole, as it came) replaced by the same without its
 * framing, "Connection: close" added when CLOSE: what evhttp gets for the
 * router's 413. The chunk walk's state is kept. 0, or -1 (no memory). */
static int bare_head(struct intake *in, int close)
{
    enum chunk_state ch = in->ch;
    long long left = in->left;
    size_t n = evbuffer_get_length(in->hold);
    const char *h = (const char *)evbuffer_pullup(in->hold, -1);
    struct evbuffer *out = evbuffer_new();
    int rc = h && out && n > 2 ? rewrite_head(in, h, n - 2, out, close) : -1;
    in->ch = ch;
    in->left = left;
    if (rc == 0) {
        evbuffer_drain(in->hold, n);
        evbuffer_add_buffer(in->hold, out);
    }
    if (out)
        evbuffer_free(out);
    return rc;
}

/* Walk a chunked body's framing in INPUT as it arrives, moving its bytes,
 * as they came, to SINK and counting its data in in->size. Stops at the
 * body's end (CH_END), at bad framing (in->bad), once in->size is over
 * in->max_body, or when INPUT is empty. */
static void walk_chunks(struct intake *in, struct evbuffer *input, struct evbuffer *sink)
{
    char line[LINE_MAX_CHUNK + 1];
    while (in->ch != CH_END && !in->bad && evbuffer_get_length(input) &&
           in->size <= (long long)in->max_body) {
        size_t k, eol;
        if (in->ch == CH_DATA) {
            k = evbuffer_get_length(input);
            if ((long long)k > in->left)
                k = (size_t)in->left;
            in->left -= (long long)k;
            in->size += (long long)k;
            if (!in->left)
                in->ch = CH_CRLF;
        } else {
            struct evbuffer_ptr p = evbuffer_search_eol(input, NULL, &eol, EVBUFFER_EOL_CRLF);
            if (p.pos < 0 || p.pos > LINE_MAX_CHUNK) {
                in->bad = p.pos > LINE_MAX_CHUNK || evbuffer_get_length(input) > LINE_MAX_CHUNK;
                return;
            }
            evbuffer_copyout(input, line, (size_t)p.pos);
            line[p.pos] = '\0';
            framing_step(in, line, (size_t)p.pos);
            k = (size_t)p.pos + eol;
        }
        evbuffer_remove_buffer(input, sink, k);
    }
}

/* I_HEAD, I_SIZING: the input added to hold, where a head is gathered
 * out of evhttp's sight: its length once whole, else 0 (more to come, or
 * over HEAD_MAX: answered). */
static size_t gather_head(struct intake *in)
{
    size_t had = evbuffer_get_length(in->hold), n;
    evbuffer_add_buffer(in->hold, bufferevent_get_input(in->bev));
    n = buffer_head_end(in->hold, had);
    if (n && n <= HEAD_MAX)
        return n;
    if (n || evbuffer_get_length(in->hold) > HEAD_MAX)
        answer_long(in, in->hold);
    return 0;
}

/* I_HEAD: gather the head out of evhttp's sight; once whole, give evhttp
 * the head without its framing, and keep the body's first bytes. */
static void take_head(struct intake *in)
{
    struct evbuffer *input = bufferevent_get_input(in->bev), *out;
    size_t n = gather_head(in);
    struct head_framing f;
    const char *h;
    if (!n)
        return;
    if (!(h = (const char *)evbuffer_pullup(in->hold, (ev_ssize_t)n)) || !(out = evbuffer_new())) {
        give_back(in);
        return;
    }
    f = head_framing(h, n);
    if (f.status) {
        answer_bad(in, in->hold, f.status, f.why);
    } else if (rewrite_head(in, h, n - 2, out, 1) < 0) { /* the last line end stays */
        give_back(in); /* no body, a folded line: evhttp's */
    } else {
        evbuffer_drain(in->hold, n);
        evbuffer_prepend_buffer(input, out);
        in->st = I_READY;
    }
    evbuffer_free(out);
}

/* I_DISCARD: drop the body over the limit as it arrives; once it is
 * gone, evhttp gets the head (in hold) for the router's 413. */
static void discard(struct intake *in)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    size_t n = evbuffer_get_length(input);
    if ((long long)n > in->left)
        n = (size_t)in->left;
    evbuffer_drain(input, n);
    in->left -= (long long)n;
    if (in->left)
        return;
    evbuffer_prepend_buffer(input, in->hold);
    in->verdict = INTAKE_TOO_LARGE;
    in->st = I_ANSWER;
}

/* I_CHUNKS: count the chunked body as it arrives; give the request back
 * to evhttp whole once it ends within the limit; once over, drop it and
 * give evhttp the head alone, "Connection: close" added, for the 413. */
static void hold_chunks(struct intake *in)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    walk_chunks(in, input, in->body);
    if (in->size > (long long)in->max_body) {
        evbuffer_drain(in->body, evbuffer_get_length(in->body));
        evbuffer_drain(input, evbuffer_get_length(input)); /* the body's, not a request */
        restore_writecb(in);
        in->unread = 1;
        in->verdict = INTAKE_TOO_LARGE;
        in->st = bare_head(in, 1) == 0 ? I_ANSWER : I_OTHER; /* no memory: evhttp's */
        evbuffer_prepend_buffer(input, in->hold);
    } else if (in->bad || in->ch == CH_END) {
        evbuffer_prepend_buffer(input, in->body);
        evbuffer_prepend_buffer(input, in->hold);
        restore_writecb(in);
        in->st = I_OTHER;
    }
}

/* The head at the start of INPUT (N bytes) says its body is chunked. A
 * head rewrite_head would not take (an obs-fold, a Content-Length that is
 * not one) is evhttp's to judge, as before. */
static void hold_chunked(struct intake *in, size_t n, int expect)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    struct evbuffer *probe = evbuffer_new();
    const char *h = (const char *)evbuffer_pullup(input, (ev_ssize_t)n);
    int rc = probe && h ? rewrite_head(in, h, n - 2, probe, 0) : -1;
    if (probe)
        evbuffer_free(probe);
    if (rc < 0 || !in->chunked || (!in->body && !(in->body = evbuffer_new())))
        return; /* evhttp's, as before */
    evbuffer_remove_buffer(input, in->hold, n);
    in->chunked = 1;
    in->ch = CH_SIZE;
    in->left = in->size = 0;
    in->bad = in->unread = 0;
    in->expect = expect;
    in->st = I_CHUNKS;
    if (expect && !evbuffer_get_length(input))
        send_continue(in); /* as evhttp would have */
    hold_chunks(in);
}

/* The head at the start of INPUT (N bytes) has a Content-Length over the
 * limit. */
static void too_long(struct intake *in, size_t n)
{
    struct evbuffer *input = bufferevent_get_input(in->bev), *out;
    char *h;
    if (!(h = malloc(n)))
        return;
    if (!(out = evbuffer_new())) {
        free(h);
        return;
    }
    evbuffer_copyout(input, h, n);
    if (rewrite_head(in, h, n - 2, out, 0) == 0 && !in->chunked &&
        (size_t)in->src.length > in->max_body) {
        evbuffer_drain(input, n);
        in->unread = in->expect;
        if (in->expect || in->client_close) { /* the body is not read: close after */
            evbuffer_free(out);
            out = evbuffer_new();
            if (out)
                rewrite_head(in, h, n - 2, out, 1);
        }
        in->left = in->expect ? 0 : in->src.length; /* the body to drop */
        if (out)
            evbuffer_add_buffer(in->hold, out);
        in->st = I_DISCARD;
        discard(in);
    }
    evbuffer_free(out);
    free(h);
}

/* The length of the head at the start of INPUT (its blank line
 * included), 0 if it is not whole there. The first chunk nearly always
 * holds it: searched there, the rest only if not. */
static size_t head_in(struct evbuffer *input)
{
    struct evbuffer_iovec v;
    size_t n;
    if (evbuffer_peek(input, -1, NULL, &v, 1) < 1)
        return 0;
    n = head_end(v.iov_base, v.iov_len < HEAD_MAX ? v.iov_len : HEAD_MAX);
    if (n || v.iov_len >= HEAD_MAX)
        return n;
    n = buffer_head_end(input, 0);
    return n <= HEAD_MAX ? n : 0;
}

/* The head at the start of INPUT (N bytes) is refused on its own (the
 * gate): evhttp gets it without its framing, "Connection: close" added,
 * for the router's 401 or 403. Its body is never read: what came of it is
 * dropped, no 100 Continue asks for the rest, and the close lingers. A
 * head rewrite_head will not take stays evhttp's, as before. */
static void refuse(struct intake *in, size_t n)
{
    struct evbuffer *input = bufferevent_get_input(in->bev), *out = evbuffer_new();
    const char *h = (const char *)evbuffer_pullup(input, (ev_ssize_t)n);
    if (!out)
        return;
    if (h && rewrite_head(in, h, n - 2, out, 1) == 0) {
        evbuffer_drain(input, evbuffer_get_length(input));
        evbuffer_add_buffer(input, out);
        in->unread = 1;
        in->verdict = INTAKE_REFUSED;
        in->st = I_ANSWER;
    }
    evbuffer_free(out);
}

/* A whole head of N bytes at the start of INPUT: judge it, and its body.
 * A body still to come is not read for a request its head refuses: a
 * client without a key must not make the proxy hold max_body_mb for a
 * 401. */
static void judge(struct intake *in, size_t n)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    const char *h = (const char *)evbuffer_pullup(input, (ev_ssize_t)n);
    struct head_framing f;
    if (!h)
        return;
    f = head_framing(h, n);
    if (f.status) {
        answer_bad(in, input, f.status, f.why);
        return;
    }
    if (!f.body || !in->max_body || (!f.chunked && f.cl <= 0))
        return; /* no body: evhttp's */
    if ((f.chunked || evbuffer_get_length(input) - n < (size_t)f.cl) && in->gate &&
        in->gate->refused(in->gate->arg, h, n))
        refuse(in, n);
    else if (f.chunked)
        hold_chunked(in, n, f.expect);
    else if (f.cl > (long long)in->max_body)
        too_long(in, n);
    /* else the common case: evhttp's */
}

/* I_SIZING: a head that arrives in pieces, held until whole (searched
 * from where the last search ended). */
static void size_head(struct intake *in)
{
    size_t n = gather_head(in);
    if (!n)
        return;
    give_back(in); /* whole: in the input again, judged there */
    judge(in, n);
}

/* I_IDLE, a request of another path: judge its head, once whole. */
static void check_head(struct intake *in)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    size_t n;
    in->st = I_OTHER;
    if ((n = head_in(input))) {
        judge(in, n);
    } else if (evbuffer_get_length(input) <= HEAD_MAX) {
        in->st = I_SIZING;
        size_head(in);
    } else {
        answer_long(in, input);
    }
}

/* I_IDLE: the first bytes of a request say whose it is. */
static void look(struct intake *in)
{
    struct evbuffer *input = bufferevent_get_input(in->bev);
    char first[sizeof PREFIX - 1];
    size_t have = evbuffer_get_length(input), n = have < sizeof first ? have : sizeof first;
    if (!have)
        return;
    evbuffer_copyout(input, first, n);
    if (memcmp(first, PREFIX, n) != 0) {
        check_head(in);
        return;
    }
    if (n < sizeof first)
        return; /* a prefix of ours so far */
    in->st = I_HEAD;
    take_head(in);
}

/* ---- the body ---- */

/* evhttp's write callback back, once a 100 Continue of ours is sent. */
static void restore_writecb(struct intake *in)
{
    bufferevent_data_cb r, w, *wp = &w;
    bufferevent_event_cb e;
    void *arg;
    if (!in->writecb_saved)
        return;
    bufferevent_getcb(in->bev, &r, wp, &e, &arg);
    if (!w && r) /* still as we left it, not evhttp's newer */
        bufferevent_setcb(in->bev, r, in->writecb, e, arg);
    in->writecb_saved = 0;
}

/* Reading is over (the end, or the reader let go): evhttp's state back,
 * as it was when the handler ran, but for the watermarks (intake_request_done). */
static void stop_reading(struct intake *in)
{
    if (in->own_read) {
        event_del(&in->rev);
        in->own_read = 0;
    }
    bufferevent_disable(in->bev, EV_READ);
    restore_writecb(in);
    in->st = I_DONE;
}

static void body_end(struct intake *in)
{
    in->ended = 1;
    /* Read whole: the connection may stay open, as the client asked. */
    if (!in->client_close && in->req)
        evhttp_remove_header(evhttp_request_get_input_headers(in->req), "Connection");
    stop_reading(in);
}

/* ---- reading a plain socket ourselves ---- */

static void resume(struct intake *in)
{
    struct timeval tv;
    tv.tv_sec = (time_t)in->idle_s;
    tv.tv_usec = (suseconds_t)((in->idle_s - (double)tv.tv_sec) * 1e6);
    in->paused = 0;
    event_add(&in->rev, in->idle_s > 0 ? &tv : NULL);
}

/* The client hung up, failed or fell silent: evhttp learns it from its own
 * error callback, as from the bufferevent (it frees the connection; the
 * reader releases the body in the close callback). */
static void client_failed(struct intake *in, short what)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *arg;
    stop_reading(in);
    bufferevent_getcb(in->bev, &r, &w, &e, &arg);
    if (e)
        e(in->bev, what, arg); /* may free the connection: nothing after */
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct intake *in = arg;
    struct evbuffer *input = bufferevent_get_input(in->bev);
    size_t have = evbuffer_get_length(input), want;
    struct evbuffer_iovec v[2];
    ssize_t n;
    int nv;
    if (what & EV_TIMEOUT) {
        client_failed(in, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
        return;
    }
    if (have >= INTAKE_WINDOW) { /* the reader is behind: wait for it */
        event_del(&in->rev);
        in->paused = 1;
        return;
    }
    want = INTAKE_WINDOW - have < INTAKE_READ ? INTAKE_WINDOW - have : INTAKE_READ;
    evbuffer_unfreeze(input, 0);
    nv = evbuffer_reserve_space(input, (ev_ssize_t)want, v, 2);
    n = nv > 0 ? readv(fd, (struct iovec *)v, nv) : -1;
    if (n > 0) {
        int used = 0;
        for (; used < nv && n > 0; used++) { /* what was read, in the reserved space */
            size_t k = (size_t)n < v[used].iov_len ? (size_t)n : v[used].iov_len;
            v[used].iov_len = k;
            n -= (ssize_t)k;
        }
        evbuffer_commit_space(input, v, used); /* our input callback: the reader hears */
        evbuffer_freeze(input, 0);
        return;
    }
    evbuffer_freeze(input, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    client_failed(in, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
}

/* BEV is a plain socket's bufferevent (not TLS's, nor a filter): the same
 * ops as one made here. */
static int plain_socket(struct bufferevent *bev)
{
    static const void *socket_ops;
    if (!socket_ops) {
        struct bufferevent *b = bufferevent_socket_new(bufferevent_get_base(bev), -1, 0);
        if (!b)
            return 0;
        socket_ops = b->be_ops;
        bufferevent_free(b);
    }
    return bev->be_ops == socket_ops && bufferevent_getfd(bev) >= 0;
}

/* "1f" or "1f;ext": at most 15 hex digits. 0, or -1. */
static int chunk_size(const char *line, long long *size)
{
    long long v = 0;
    const char *p = line;
    for (; (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f'); p++) {
        if (p - line == 15)
            return -1;
        v = v * 16 + (*p <= '9' ? *p - '0' : (*p | 0x20) - 'a' + 10);
    }
    p += strspn(p, " \t");
    if (p == line || (*p && *p != ';'))
        return -1;
    *size = v;
    return 0;
}

/* LINE (N bytes, without its end, NUL-terminated) of the chunked framing
 * in state in->ch: the next state (CH_END after the trailer), or in->bad. */
static void framing_step(struct intake *in, const char *line, size_t n)
{
    if (in->ch == CH_CRLF) {
        in->bad = n != 0;
        in->ch = CH_SIZE;
    } else if (in->ch == CH_TRAILER) {
        if (!n)
            in->ch = CH_END;
    } else if (chunk_size(line, &in->left) < 0) {
        in->bad = 1;
    } else {
        in->ch = in->left ? CH_DATA : CH_TRAILER;
    }
}

/* One line of the chunked framing from INPUT: 1 done, 0 not yet (or bad). */
static int framing_line(struct intake *in, struct evbuffer *input)
{
    size_t n;
    char *line = evbuffer_readln(input, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
        if (evbuffer_get_length(input) > LINE_MAX_CHUNK)
            in->bad = 1;
        return 0;
    }
    framing_step(in, line, n);
    free(line);
    if (in->ch == CH_END)
        body_end(in);
    return !in->bad;
}

static size_t do_read(struct bodysrc *b, struct evbuffer *out, size_t max)
{
    struct intake *in = (struct intake *)b;
    struct evbuffer *input = bufferevent_get_input(in->bev);
    size_t moved = 0;
    in->busy = 1; /* our own draining is no news */
    while (moved < max && in->st == I_BODY && !in->bad) {
        size_t have = evbuffer_get_length(input), k;
        if (!in->chunked || in->ch == CH_DATA) {
            k = have < max - moved ? have : max - moved;
            if ((long long)k > in->left)
                k = (size_t)in->left;
            if (!k)
                break;
            evbuffer_remove_buffer(input, out, k);
            moved += k;
            in->left -= (long long)k;
            if (!in->left && in->chunked)
                in->ch = CH_CRLF;
            else if (!in->left)
                body_end(in);
        } else if (!framing_line(in, input)) {
            break;
        }
    }
    if (in->bad)
        stop_reading(in);
    else if (in->own_read && in->paused && evbuffer_get_length(input) < INTAKE_WINDOW)
        resume(in);
    in->busy = 0;
    return moved;
}

static enum bodysrc_state do_state(struct bodysrc *b)
{
    struct intake *in = (struct intake *)b;
    return in->bad ? BODYSRC_BAD : in->ended ? BODYSRC_END : BODYSRC_MORE;
}

static void do_release(struct bodysrc *b)
{
    struct intake *in = (struct intake *)b;
    in->src.on_data = NULL;
    in->src.arg = NULL;
    if (in->st == I_BODY)
        stop_reading(in); /* the rest unread: the connection closes after the reply */
}

static const struct bodysrc_ops intake_ops = {do_read, do_state, do_release};

/* The client waits for our word before it sends the body. */
static void send_continue(struct intake *in)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *arg;
    bufferevent_getcb(in->bev, &r, &w, &e, &arg);
    in->writecb = w;
    in->writecb_saved = 1;
    bufferevent_setcb(in->bev, r, NULL, e, arg);
    bufferevent_write(in->bev, cont, sizeof cont - 1);
    bufferevent_enable(in->bev, EV_WRITE);
}

enum intake_verdict intake_verdict(const struct intake *in, int *status, const char **why)
{
    if (!in || in->st != I_ANSWER)
        return INTAKE_SERVE;
    *status = in->status;
    *why = in->why;
    return in->verdict;
}

struct bodysrc *intake_body(struct intake *in, struct evhttp_request *req)
{
    struct evbuffer *input;
    if (!in || in->st != I_READY)
        return NULL;
    input = bufferevent_get_input(in->bev);
    in->req = req;
    in->busy = 1;
    evbuffer_prepend_buffer(input, in->hold); /* the body's first bytes, first */
    in->busy = 0;
    in->st = I_BODY;
    in->ended = in->bad = 0;
    in->src.ops = &intake_ops;
    in->src.on_data = NULL;
    in->src.arg = NULL;
    /* Read on, at most a window ahead, without evhttp's read callback, in
     * reads of up to INTAKE_READ rather than libevent's 4 KiB: a body is
     * bulk, and each read costs an ioctl, a readv and an epoll_wait. */
    bufferevent_setwatermark(in->bev, EV_READ, INTAKE_WINDOW + 1, INTAKE_WINDOW);
    bufferevent_set_max_single_read(in->bev, INTAKE_READ);
    in->watermarks = 1;
    if (plain_socket(in->bev)) {
        event_assign(&in->rev, bufferevent_get_base(in->bev), bufferevent_getfd(in->bev),
                     EV_READ | EV_PERSIST, on_readable, in);
        in->own_read = 1;
        resume(in);
    } else {
        bufferevent_enable(in->bev, EV_READ);
        tls_server_kick(in->bev); /* what its SSL read ahead meanwhile */
    }
    if (in->expect)
        send_continue(in);
    return &in->src;
}

/* ---- the hooks ---- */

void intake_input(struct intake **pin, struct bufferevent *bev, size_t max_body, double idle_s,
                  const struct intake_gate *gate)
{
    struct intake *in = *pin;
    if (!in) {
        if (!(in = calloc(1, sizeof *in)) || !(in->hold = evbuffer_new())) {
            free(in);
            return;
        }
        in->bev = bev;
        in->st = I_IDLE;
        *pin = in;
    }
    in->max_body = max_body;
    in->idle_s = idle_s;
    in->gate = gate;
    if (in->busy)
        return;
    in->busy = 1;
    if (in->st == I_IDLE)
        look(in);
    else if (in->st == I_HEAD)
        take_head(in);
    else if (in->st == I_SIZING)
        size_head(in);
    else if (in->st == I_CHUNKS)
        hold_chunks(in);
    else if (in->st == I_DISCARD)
        discard(in);
    in->busy = 0;
    if (in->st == I_BODY && in->src.on_data)
        in->src.on_data(in->src.arg);
}

int intake_request_done(struct intake *in)
{
    int clean; /* the request's bytes all read: what follows is a request */
    if (!in)
        return 0;
    clean = in->st == I_IDLE || in->st == I_OTHER || (in->st == I_DONE && in->ended) ||
            (in->st == I_ANSWER && !in->unread);
    if (in->watermarks) {
        bufferevent_setwatermark(in->bev, EV_READ, 0, 0);
        bufferevent_set_max_single_read(in->bev, 0); /* libevent's default again */
        in->watermarks = 0;
    }
    if (in->st == I_BODY) /* never released: read no more */
        stop_reading(in);
    evbuffer_drain(in->hold, evbuffer_get_length(in->hold));
    if (in->body)
        evbuffer_drain(in->body, evbuffer_get_length(in->body));
    in->req = NULL;
    in->src.on_data = NULL;
    in->st = I_IDLE;
    in->verdict = INTAKE_SERVE;
    if (!clean) /* the connection closes after this reply ("Connection: close") */
        return 1;
    in->busy = 1;
    look(in); /* a request waiting already (pipelined) */
    in->busy = 0;
    return 0;
}

void intake_free(struct intake *in)
{
    if (!in)
        return;
    if (in->own_read)
        event_del(&in->rev);
    evbuffer_free(in->hold);
    if (in->body)
        evbuffer_free(in->body);
    free(in);
}
