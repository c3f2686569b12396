/* sim_conn.c - the bufferevent under every HTTP connection: a filter that
 * follows the HTTP/1.1 requests as they arrive and hands them to evhttp
 * unchanged, except the bodies of blob uploads.
 *
 * Why: evhttp (libevent 2.1) calls us only once a request's whole body is
 * in memory, and it refuses bodies over its limit. A blob upload
 * (POST /api/blobs/sha256:D, what `ollama create` sends first) is a model
 * file of gigabytes, and Ollama answers 200 at once, before reading it,
 * when the blob is already there. So this filter digests an upload's body
 * as it passes (SHA-256, the size and the first four bytes; the bytes are
 * dropped), and then gives evhttp the request's head alone, with
 * Content-Length: 0 and the results in X-Sim-Blob-* headers, for
 * blob_post() to answer.
 *
 * What Ollama (Go's net/http) does when the handler answers without reading
 * the body, and so this filter: a body of at least 256 KiB, of unknown
 * length past 256 KiB, or one the client waits to send (Expect:
 * 100-continue) is not read: the answer goes out at once with
 * "Connection: close", the rest is discarded, the connection ends. A
 * smaller body is read first and the connection kept. That happens when the
 * blob exists (200) or the digest is malformed (400).
 *
 * States of a connection (the filter reads ahead of evhttp: evhttp keeps
 * reading while it writes a reply, to see a hang-up, so a pipelined
 * request passes through here, and waits in evhttp's input, while the
 * previous one is answered):
 *   C_HEAD     collecting a request's head
 *   C_LEN      a body of known length: passed on, or digested
 *   C_CHUNKED  a chunked body (size line, data, CRLF, ..., trailers)
 *   C_DISCARD  answered early: everything else is dropped until the end
 *   C_PASS     a head past 64 KiB: everything goes to evhttp, which judges it
 * The state is owned by the filter bufferevent and freed with it.
 *
 * Output goes straight through, written to the socket at once where it
 * fits; the rest waits in the socket's bufferevent. evhttp acts on its
 * bufferevent's "written" callback: the end of a reply (evhttp_send_done)
 * reads the next request, or closes the connection. A socket bufferevent
 * calls it on a later loop turn, once its output has gone into the
 * kernel. A libevent 2.1 filter calls it when bytes leave the filter:
 * synchronously, inside the evbuffer_add() of evhttp's last chunk
 * ("0\r\n\r\n"), before evhttp_send_reply_end() has set the callback to
 * evhttp_send_done, so the end of a streamed reply went unseen and the
 * connection hung (a kept-alive connection never read its next request);
 * and for "Connection: close", when bytes still waited under it, so a
 * slow reader lost the end of a big reply. So the output filter never
 * reports progress (libevent then calls nothing) and the filter's
 * "written" callback is ours to call (on_turn): on a later loop turn, with
 * writing enabled, when nothing is left in either bufferevent. A turn is
 * scheduled when evhttp adds output (which also flushes output added
 * while evhttp had writing disabled: enabling does not flush a 2.1 filter)
 * and when the socket's bufferevent has written its last queued byte.
 * (The filter's own write timeout would not see that progress; the sim
 * sets none on its connections.) */
#include "sim.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define HEAD_MAX (64 * 1024)      /* longer heads go to evhttp as they are */
#define GO_DISCARD (256 * 1024)   /* Go's maxPostHandlerReadBytes */
#define BLOB_PREFIX "/api/blobs/" /* the route of uploads */

enum conn_state { C_HEAD, C_LEN, C_CHUNKED, C_DISCARD, C_PASS };
enum chunk_state { CH_SIZE, CH_DATA, CH_CRLF, CH_TRAILER };

struct conn {
    struct bufferevent *bev, *under;   /* the filter evhttp sees, the socket's */
    struct event *turn;                /* on_turn, scheduled: output to move or report */
    struct evbuffer_cb_entry *drained; /* on_under_drained on the socket's output */
    enum conn_state st;
    enum chunk_state ch;
    uint64_t left;     /* C_LEN: body bytes left; CH_DATA: of this chunk */
    unsigned blob : 1, /* this body is digested, not passed on */
        early : 1,     /* answer early if the body goes past GO_DISCARD */
        early_ok : 1;  /* the early answer: 200 (else 400 bad digest) */
    struct sha256 sha;
    uint64_t size;
    unsigned char magic[4]; /* the body's first bytes */
    struct evbuffer *head;  /* a blob request's head, without its framing headers */
};

/* ---- the early answer ---- */

/* A few bytes straight on the socket; a client gone is evhttp's to see. */
static void send_now(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return;
        s += k;
        n -= (size_t)k;
    }
}

static void http_date(char *out, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Answer the blob request now, straight on the socket, and close our side
 * once written. Nothing of ours is pending on it when the upload is the
 * only request in flight. (One pipelined behind a request still being
 * answered would be answered inside that reply; the clients of
 * /api/blobs, Go's net/http among them, do not pipeline.) */
static void answer_early(struct conn *c)
{
    char date[64], msg[512];
    static const char bad[] = "{\"error\":\"invalid digest format\"}";
    int fd = bufferevent_getfd(c->under);
    http_date(date, sizeof date);
    int n = c->early_ok ? snprintf(msg, sizeof msg,
                                   "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n",
                                   date)
                        : snprintf(msg, sizeof msg,
                                   "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; "
                                   "charset=utf-8\r\nDate: %s\r\nContent-Length: %zu\r\n"
                                   "Connection: close\r\n\r\n%s",
                                   date, sizeof bad - 1, bad);
    send_now(fd, msg, (size_t)n);
    shutdown(fd, SHUT_WR);
    http_count_path(BLOB_PREFIX "{digest}");
    c->st = C_DISCARD;
    if (c->head)
        evbuffer_drain(c->head, evbuffer_get_length(c->head));
}

/* ---- the head ---- */

struct head_info {
    char method[16], path[1024];
    int has_len, chunked, expect;
    uint64_t len;
};

/* Request line and the framing headers of the head in H (NUL-terminated). */
static void parse_head(const char *h, struct head_info *hi)
{
    memset(hi, 0, sizeof *hi);
    while (*h == '\r' || *h == '\n')
        h++;
    sscanf(h, "%15s %1023s", hi->method, hi->path);
    hi->path[strcspn(hi->path, "?#")] = '\0';
    for (const char *l = strchr(h, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
        const char *v = strchr(l + 1, ':');
        if (!v)
            continue;
        size_t k = (size_t)(v - (l + 1));
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        if (k == 14 && !strncasecmp(l + 1, "content-length", 14)) {
            hi->has_len = 1;
            hi->len = strtoull(v, NULL, 10);
        } else if (k == 17 && !strncasecmp(l + 1, "transfer-encoding", 17)) {
            hi->chunked = !strncasecmp(v, "chunked", 7);
        } else if (k == 6 && !strncasecmp(l + 1, "expect", 6)) {
            hi->expect = !strncasecmp(v, "100-continue", 12);
        }
    }
}

/* The head without its framing headers (and any X-Sim-Blob- a client sent). */
static void keep_head(struct conn *c, const char *h)
{
    static const char *const drop[] = {
        "content-length:", "transfer-encoding:", "expect:", "x-sim-blob-"};
    if (!c->head)
        c->head = evbuffer_new();
    for (const char *l = h; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l + 1) : strlen(l);
        int skip = n <= 2; /* the blank line: ours comes later */
        for (size_t i = 0; i < sizeof drop / sizeof *drop && !skip; i++)
            skip = !strncasecmp(l, drop[i], strlen(drop[i]));
        if (!skip)
            evbuffer_add(c->head, l, n);
        l += n;
    }
}

/* A blob upload: digest its body, or answer at once. */
static void start_blob(struct conn *c, const struct head_info *hi, const char *h)
{
    const char *digest = hi->path + strlen(BLOB_PREFIX);
    int valid = blob_digest_ok(digest), have = valid && blob_exists(digest);
    c->blob = 1;
    c->early = 0;
    c->early_ok = have;
    sha256_init(&c->sha);
    c->size = 0;
    memset(c->magic, 0, sizeof c->magic);
    keep_head(c, h);
    if ((!valid || have) && (hi->expect || (hi->has_len && hi->len >= GO_DISCARD))) {
        answer_early(c);
        return;
    }
    c->early = !valid || have; /* chunked: past GO_DISCARD bytes */
    if (hi->expect && ((hi->has_len && hi->len > 0) || hi->chunked)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        send_now(bufferevent_getfd(c->under), cont, sizeof cont - 1);
    }
}

/* The blob body is over: evhttp gets the head and the results. */
static void finish_blob(struct conn *c, struct evbuffer *dst)
{
    char hex[65];
    sha256_hex(&c->sha, hex);
    evbuffer_add_buffer(dst, c->head);
    evbuffer_add_printf(dst,
                        "X-Sim-Blob-Sha256: %s\r\nX-Sim-Blob-Size: %llu\r\n"
                        "X-Sim-Blob-Magic: %02x%02x%02x%02x\r\nContent-Length: 0\r\n\r\n",
                        hex, (unsigned long long)c->size, c->magic[0], c->magic[1], c->magic[2],
                        c->magic[3]);
    c->blob = 0;
    c->st = C_HEAD;
}

/* Returns 1 when a whole head was taken from SRC. */
static int take_head(struct conn *c, struct evbuffer *src, struct evbuffer *dst)
{
    /* the head ends at its first empty line; evhttp takes LF for CRLF */
    struct evbuffer_ptr crlf = evbuffer_search(src, "\r\n\r\n", 4, NULL);
    struct evbuffer_ptr lf = evbuffer_search(src, "\n\n", 2, NULL);
    size_t avail = evbuffer_get_length(src), n;
    unsigned char first;
    /* Not the start of a request line (a TLS ClientHello, garbage): evhttp
     * answers it at once, as Go's server answers 400 and closes, rather
     * than the filter waiting for a head that never comes. */
    if (avail && evbuffer_copyout(src, &first, 1) == 1 && !(first >= 'A' && first <= 'Z') &&
        first != '\r' && first != '\n') {
        c->st = C_PASS;
        return 1;
    }
    if (crlf.pos < 0 && lf.pos < 0) {
        if (avail <= HEAD_MAX)
            return 0;
        c->st = C_PASS; /* not ours to judge: evhttp answers it */
        return 1;
    }
    if (lf.pos >= 0 && (crlf.pos < 0 || lf.pos + 2 < crlf.pos + 4))
        n = (size_t)lf.pos + 2;
    else
        n = (size_t)crlf.pos + 4;
    char *h = malloc(n + 1);
    evbuffer_remove(src, h, n);
    h[n] = '\0';
    struct head_info hi;
    parse_head(h, &hi);
    int body = hi.chunked || (hi.has_len && hi.len > 0);
    if (!strcmp(hi.method, "POST") && !strncmp(hi.path, BLOB_PREFIX, strlen(BLOB_PREFIX))) {
        start_blob(c, &hi, h);
        if (c->st != C_DISCARD && !body)
            finish_blob(c, dst);
    } else {
        evbuffer_add(dst, h, n);
    }
    free(h);
    if (c->st == C_DISCARD || !body)
        return 1;
    c->st = hi.chunked ? C_CHUNKED : C_LEN;
    c->ch = CH_SIZE;
    c->left = hi.len;
    return 1;
}

/* Move up to N body bytes: on to evhttp, or into the digest. */
static size_t body_bytes(struct conn *c, struct evbuffer *src, struct evbuffer *dst, uint64_t n)
{
    size_t avail = evbuffer_get_length(src), k = n < avail ? (size_t)n : avail;
    if (!c->blob)
        return (size_t)evbuffer_remove_buffer(src, dst, k);
    struct evbuffer_iovec v[16];
    size_t done = 0;
    while (done < k) {
        int nv = evbuffer_peek(src, (ev_ssize_t)(k - done), NULL, v, 16);
        size_t got = 0;
        for (int i = 0; i < nv && done + got < k; i++) {
            size_t part = v[i].iov_len < k - done - got ? v[i].iov_len : k - done - got;
            for (size_t j = 0; j < part && c->size + got + j < 4; j++)
                c->magic[c->size + got + j] = ((unsigned char *)v[i].iov_base)[j];
            sha256_update(&c->sha, v[i].iov_base, part);
            got += part;
        }
        c->size += got;
        evbuffer_drain(src, got);
        done += got;
    }
    if (c->early && c->size > GO_DISCARD)
        answer_early(c);
    return k;
}

/* A line of the chunked framing (CRLF, or LF as evhttp allows), or NULL;
 * owned. */
static char *chunk_line(struct conn *c, struct evbuffer *src, struct evbuffer *dst)
{
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(src, NULL, &eol_len, EVBUFFER_EOL_CRLF);
    if (eol.pos < 0)
        return NULL;
    size_t n = (size_t)eol.pos + eol_len;
    char *line = malloc(n + 1);
    evbuffer_copyout(src, line, n);
    line[n] = '\0';
    if (c->blob)
        evbuffer_drain(src, n);
    else
        evbuffer_remove_buffer(src, dst, n);
    return line;
}

/* One step of a chunked body. Returns 1 on progress. */
static int chunked_step(struct conn *c, struct evbuffer *src, struct evbuffer *dst)
{
    char *line;
    switch (c->ch) {
    case CH_SIZE:
        if (!(line = chunk_line(c, src, dst)))
            return 0;
        c->left = strtoull(line, NULL, 16);
        c->ch = c->left ? CH_DATA : CH_TRAILER;
        free(line);
        return 1;
    case CH_DATA:
        c->left -= body_bytes(c, src, dst, c->left);
        if (c->left == 0 && c->st == C_CHUNKED)
            c->ch = CH_CRLF;
        return 1;
    case CH_CRLF:
        if (!(line = chunk_line(c, src, dst)))
            return 0;
        c->ch = CH_SIZE;
        free(line);
        return 1;
    case CH_TRAILER:
        if (!(line = chunk_line(c, src, dst)))
            return 0;
        if (line[0] == '\n' || (line[0] == '\r' && line[1] == '\n')) { /* the empty line */
            if (c->blob)
                finish_blob(c, dst);
            c->st = C_HEAD;
        }
        free(line);
        return 1;
    }
    return 0;
}

static enum bufferevent_filter_result on_input(struct evbuffer *src, struct evbuffer *dst,
                                               ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                               void *ctx)
{
    struct conn *c = ctx;
    int any = 0, step = 1;
    (void)limit, (void)mode;
    while (step && evbuffer_get_length(src) > 0) {
        switch (c->st) {
        case C_HEAD: step = take_head(c, src, dst); break;
        case C_LEN:
            c->left -= body_bytes(c, src, dst, c->left);
            if (c->left == 0 && c->st == C_LEN) {
                if (c->blob)
                    finish_blob(c, dst);
                c->st = C_HEAD;
            }
            break;
        case C_CHUNKED: step = chunked_step(c, src, dst); break;
        case C_DISCARD: evbuffer_drain(src, evbuffer_get_length(src)); break;
        case C_PASS: evbuffer_add_buffer(dst, src); break;
        }
        any |= step;
    }
    return any ? BEV_OK : BEV_NEED_MORE;
}

/* ---- output ---- */

/* Write what the socket takes now; the rest waits in the socket's
 * bufferevent, behind which nothing may overtake it. BEV_NEED_MORE though
 * all was taken: the filter then calls no "written" callback (on_turn
 * does). */
static enum bufferevent_filter_result on_output(struct evbuffer *src, struct evbuffer *dst,
                                                ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                                void *ctx)
{
    struct conn *c = ctx;
    (void)limit, (void)mode;
    if (evbuffer_get_length(src) > 0 && evbuffer_get_length(dst) == 0) {
        int fd = bufferevent_getfd(c->under);
        while (evbuffer_get_length(src) > 0 && evbuffer_write(src, fd) > 0)
            ;
    }
    evbuffer_add_buffer(dst, src);
    return BEV_NEED_MORE;
}

/* Whether evhttp still owns the filter: bufferevent_free() clears the
 * callbacks, and the filter's last reference may be gone (its finalizer
 * pending, the socket's bufferevent still writing): then nothing may take a
 * reference to it again. */
static int alive(const struct conn *c)
{
    bufferevent_data_cb writecb;
    bufferevent_getcb(c->bev, NULL, &writecb, NULL, NULL);
    return writecb != NULL;
}

/* A later loop turn, with evhttp's callbacks set: move output added while
 * writing was disabled, and once all of it is in the kernel, tell evhttp,
 * as a socket bufferevent would. */
static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct bufferevent *bev = c->bev;
    (void)fd, (void)what;
    if (alive(c) && (bufferevent_get_enabled(bev) & EV_WRITE)) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
            bufferevent_flush(bev, EV_WRITE, BEV_NORMAL);
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
            evbuffer_get_length(bufferevent_get_output(c->under)) == 0)
            bufferevent_trigger(bev, EV_WRITE, 0); /* may free the connection */
    }
    bufferevent_decref(bev); /* taken when scheduled: may free c */
}

static void schedule_turn(struct conn *c)
{
    if (!alive(c) || event_pending(c->turn, EV_TIMEOUT, NULL))
        return;
    bufferevent_incref(c->bev);
    event_active(c->turn, EV_TIMEOUT, 0);
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added > 0)
        schedule_turn(arg);
}

static void on_under_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    if (info->n_deleted > 0 && evbuffer_get_length(buf) == 0)
        schedule_turn(arg);
}

static void conn_free(void *ctx)
{
    struct conn *c = ctx;
    if (c->head)
        evbuffer_free(c->head);
    /* the socket's bufferevent outlives the filter's context */
    evbuffer_remove_cb_entry(bufferevent_get_output(c->under), c->drained);
    event_free(c->turn);
    free(c);
}

struct bufferevent *conn_new_bev(struct event_base *base, void *arg)
{
    (void)arg;
    /* Both close on free: freeing the filter frees the socket's bufferevent,
     * which deletes its events and then closes the socket, in that order.
     * (Had evhttp closed the socket, as it does when the filter does not
     * close on free, the socket bufferevent's events would be deleted only
     * when the filter is finalized, later: by then the descriptor may be a
     * new connection's, whose events would go with them.) */
    struct conn *c = calloc(1, sizeof *c);
    c->under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct bufferevent *bev =
        bufferevent_filter_new(c->under, on_input, on_output, BEV_OPT_CLOSE_ON_FREE, conn_free, c);
    if (!bev) {
        bufferevent_free(c->under);
        free(c);
        return NULL;
    }
    c->bev = bev;
    c->turn = evtimer_new(base, on_turn, c);
    evbuffer_add_cb(bufferevent_get_output(bev), on_output_added, c);
    c->drained = evbuffer_add_cb(bufferevent_get_output(c->under), on_under_drained, c);
    return bev;
}
