/* session.c - one proxied request; see session.h for its states.
 *
 * The two blind spots of evhttp 2.1 shape this file:
 * - While our handler runs, evhttp does not read the client connection, so
 *   a client that leaves before the reply starts (queued, or while a model
 *   loads and Ollama sends nothing) is invisible to it. We watch the
 *   client's socket ourselves until the reply starts ("the client going
 *   away" below says how, and what counts as leaving).
 * - After the reply starts, a hang-up reaches the connection's close
 *   callback with the request detached; the request is then ours to free
 *   (evhttp_send_reply_end), and the callback must be cleared when the
 *   request ends because the connection outlives it on keep-alive. */
#include "session.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "clientwatch.h"
#include "config.h"
#include "discover.h"
#include "log.h"
#include "names.h"
#include "numkey.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "reply.h"
#include "reqlog.h"
#include "reqtext.h"
#include "request.h"
#include "tokscan.h"
#include "ui.h"

#define MAX_TRIES 3         /* tries that reached a backend: the first and 2 retries */
#define MAX_CONNECT_FAILS 20 /* tries that did not: see retry_or_fail() */
#define CLIENT_HIGH_WATER (256 * 1024)   /* pause the upstream above this */
#define BUFFER_WHOLE_MAX (1024 * 1024)   /* non-streamed replies up to this go in one write */
#define LOAD_SEEN_NS 100000000LL         /* a load_duration this long: a model (re)load */

enum session_state { S_QUEUED, S_UPSTREAM, S_STREAMING };

struct session {
    LIST_ENTRY(session) link; /* px->sessions */
    struct request h;         /* the head: who, what, how it went (request.h) */
    struct sched_entry se;    /* its place in the scheduler; se.be is its slot */
    struct sched_client *client; /* charged with it (se.client once submitted) */
    struct proxy *px;
    struct evhttp_connection *evcon;
    struct upstream *up;
    int ntries;       /* tries that reached a backend */
    int nconnect;     /* tries whose connect failed */
    enum session_state state;
    struct clientwatch cw;   /* the client, until the reply starts */
    struct evbuffer *body;   /* a non-streamed reply being gathered */
    struct evbuffer *chunk;  /* scratch for one forwarded chunk */
    char *target;       /* what is sent upstream: session_info's; target_buf or malloc'd */
    char target_buf[128];
    char reason[64];
    char tail[2]; /* the last two bytes forwarded, see note_tail() */
    struct tokscan tok; /* the token counts, read as the body passes */
    struct numkey load; /* load_duration, in Ollama's native replies */
    unsigned paused : 1;
    unsigned ndjson : 1;
    unsigned sse : 1;
};

static void start_try(struct session *s, struct backend *be);
static void session_close(struct session *s, const char *outcome);

/* The session inside its sched_submit (a grant to it now came without a
 * wait); it may have ended by the time sched_submit returns. */
static const struct session *submitting;

static struct session *from_entry(struct sched_entry *e)
{
    return (struct session *)((char *)e - offsetof(struct session, se));
}

/* ---- the end of a session ---- */

/* The one teardown. The client's reply must already be sent, or the client
 * gone; this frees everything else and tells the scheduler, which hands a
 * freed slot on (to other sessions: this one is off every list by then). */
static void session_close(struct session *s, const char *outcome)
{
    struct proxy *px = s->px;
    struct tokscan_counts tc;
    tokscan_counts(&s->tok, &tc);
    s->h.tokens = tc.generated;
    s->h.prompt_tokens = tc.prompt;
    s->h.tokens_estimated = (unsigned)tc.estimated;
    s->h.loaded = numkey_value(&s->load) >= LOAD_SEEN_NS;
    s->h.tries = s->ntries + s->nconnect;
    reqlog_end(px, &s->h, outcome);
    clientwatch_stop(&s->cw);
    if (s->up) {
        upstream_abort(s->up);
        s->up = NULL;
    }
    if (s->evcon)
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
    if (s->body)
        evbuffer_free(s->body);
    if (s->chunk)
        evbuffer_free(s->chunk);
    LIST_REMOVE(s, link);
    px->nsessions--;
    if (s->se.client)
        sched_done(&px->sched, &s->se);
    else if (s->client)
        sched_client_unused(&px->sched, s->client); /* refused before the queue */
    if (s->target != s->target_buf)
        free(s->target);
    request_cleanup(&s->h);
    free(s);
    proxy_request_end(px);
}

/* Answer with an error of our own (before any reply byte) and close. */
static void fail_session(struct session *s, int status, const char *msg, int retry_after,
                         const char *outcome)
{
    s->h.status = status;
    clientwatch_stop(&s->cw);
    reply_error(&s->h, status, msg, retry_after);
    session_close(s, outcome);
}

/* ---- the client going away ----
 *
 * From admission to the reply's first byte the client's socket is watched
 * (clientwatch.h, which says what counts as leaving: a FIN, a half-close
 * included, or a reset). */

/* Before the reply started: the client left. Its queue entry, upstream
 * request and slot go with the session; the connection (and the request
 * evhttp holds on it) is freed. */
static void client_left(void *arg)
{
    struct session *s = arg;
    struct evhttp_connection *evcon = s->evcon;
    s->h.status = 499;
    s->evcon = NULL;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    session_close(s, "client-gone");
    evhttp_connection_free(evcon); /* frees the request too */
}

/* Before a try of a request that waited (for a slot, or to retry): the
 * client is still there. Its leaving may wait unhandled in the same turn
 * of the loop as the slot's freeing (clients that all leave at once), and
 * a request must not reach a backend for a client already gone. */
static int client_still_there(struct session *s)
{
    return clientwatch_still_there(&s->cw);
}

/* After the reply started: evhttp noticed the hang-up and detached the
 * request, which is ours to free now. */
static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
    struct session *s = arg;
    struct evhttp_request *req = s->h.req;
    (void)evcon;
    s->evcon = NULL;
    session_close(s, "client-gone");
    evhttp_send_reply_end(req);
}

/* ---- retries and errors before the reply ---- */

static int is_retryable(enum upstream_err err)
{
    return err == UPSTREAM_ECONNECT || err == UPSTREAM_ETIMEOUT_CONNECT ||
           err == UPSTREAM_ERESET || err == UPSTREAM_ESTALE || err == UPSTREAM_ESETUP;
}

/* A try failed before the reply started: whatever headers it sent are
 * forgotten, so that neither our error reply nor the next try's reply
 * carries them (and they cannot add up across tries). */
static void drop_reply_headers(struct session *s)
{
    evhttp_clear_headers(evhttp_request_get_output_headers(s->h.req));
    s->ndjson = s->sse = 0;
    reply_cors(&s->h); /* the proxy's own, as at the start */
}

/* The try on s->be failed before any byte reached the client.
 *
 * A try whose connect failed never reached the backend: it counts against
 * the backend's health but not against the request's MAX_TRIES, so that in
 * an outage (every backend restarting) requests go back to wait, first in
 * line, until a backend is up again or queue.timeout_s, instead of using
 * up their tries in the moments before the backends are marked down. Each
 * such failure counts towards marking its backend down, which ends the
 * loop; MAX_CONNECT_FAILS is the safety net should fail_after be huge. */
static void retry_or_fail(struct session *s, enum upstream_err err, int was_503)
{
    struct proxy *px = s->px;
    struct backend *failed = s->se.be;
    char msg[256];
    /* A failed TLS handshake never reached the backend either; it takes
     * the backend down at once (backend_setup_failed), and the request goes
     * on over another backend's own transport, never in plain text. */
    int connect_err = err == UPSTREAM_ECONNECT || err == UPSTREAM_ETIMEOUT_CONNECT ||
                      err == UPSTREAM_ESETUP;
    drop_reply_headers(s);
    if (err == UPSTREAM_ESTALE) {
        /* The keep-alive race: the backend closed an idle connection as we
         * reused it. Not a failure of the backend, and not a try: go again
         * on a fresh connection to the same backend, slot kept. */
        s->ntries--;
        start_try(s, failed);
        return;
    }
    if (err == UPSTREAM_ESETUP)
        backend_setup_failed(failed, NULL);
    else
        backend_note_failure(failed, px->cfg->health_fail_after,
                             was_503 ? "503 busy" : upstream_strerror(err));
    if (connect_err && ++s->nconnect < MAX_CONNECT_FAILS)
        s->ntries--;
    if (s->ntries >= MAX_TRIES || s->nconnect >= MAX_CONNECT_FAILS) {
        if (was_503)
            fail_session(s, 503, "server busy, please try again.  maximum pending requests "
                         "exceeded", 1, "busy");
        else {
            snprintf(msg, sizeof msg, "backend %s: %s", failed->name, upstream_strerror(err));
            fail_session(s, 502, msg, 0, "upstream-error");
        }
        return;
    }
    /* Another backend than the one that failed, or first in line. */
    px->metrics.retries++;
    s->state = S_QUEUED;
    sched_retry(&px->sched, &s->se);
}

/* ---- the upstream's callbacks ---- */

/* Headers the proxy itself sets on a reply: a backend cannot forge them. */
static int is_ours(const char *name)
{
    return strcasecmp(name, "X-Backend") == 0;
}

/* A header of the backend's response, on its way to the client's. A 503
 * will be retried, so its headers are not kept. */
static void on_header(void *arg, int status, const char *key, const char *value)
{
    struct session *s = arg;
    if (status == 503 || reqtext_hop_by_hop(key) || is_ours(key))
        return;
    if (strcasecmp(key, "Content-Type") == 0) {
        s->ndjson = strstr(value, "ndjson") != NULL;
        s->sse = strstr(value, "event-stream") != NULL;
    }
    evhttp_add_header(evhttp_request_get_output_headers(s->h.req), key, value);
}

/* Start the client's reply: from now on nothing may be retried. */
static void start_reply(struct session *s, long long content_length)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    struct timeval wtv;
    char cl[32];
    clientwatch_stop(&s->cw);
    if (content_length >= 0) { /* evhttp then sends the body as is */
        snprintf(cl, sizeof cl, "%lld", content_length);
        evhttp_add_header(evhttp_request_get_output_headers(s->h.req), "Content-Length", cl);
    }
    /* evhttp's connection timeout is a read timeout that stays armed while
     * we stream: a long pause between tokens would cut the client. Keep
     * only a write timeout (a client that stops reading) until the end. */
    wtv.tv_sec = (time_t)s->px->cfg->idle_s;
    wtv.tv_usec = 0;
    bufferevent_set_timeouts(bev, NULL, &wtv);
    evhttp_connection_set_closecb(s->evcon, on_client_close, s);
    s->state = S_STREAMING;
    evhttp_send_reply_start(s->h.req, s->h.status, s->reason);
    reply_flush(s->evcon);
}

static int on_head(void *arg, int status, const char *reason, long long content_length)
{
    struct session *s = arg;
    s->h.t_head = net_now_ms();
    if (status == 503) { /* Ollama's busy answer: try another slot */
        struct upstream *up = s->up;
        s->up = NULL;
        upstream_abort(up);
        /* The try tells an adaptive cap the backend is over what it takes
         * (the request's own end may come on another backend). */
        if (!s->h.meta)
            backend_feedback(s->se.be, request_mkey(&s->h), -1, ADAPT_OVERLOAD, 0, s->h.t_head);
        retry_or_fail(s, UPSTREAM_ERESET, 1);
        return -1;
    }
    s->h.status = status;
    net_copy(s->reason, sizeof s->reason, reason && *reason ? reason : "OK", NULL);
    evhttp_add_header(evhttp_request_get_output_headers(s->h.req), "X-Backend", s->se.be->name);
    if (content_length >= 0 && content_length <= BUFFER_WHOLE_MAX)
        s->body = evbuffer_new(); /* sent whole, in one write, on_done */
    else
        s->chunk = evbuffer_new(); /* scratch for each forwarded chunk */
    if (!s->body && !s->chunk) { /* out of memory, and nothing sent yet */
        struct upstream *up = s->up;
        s->up = NULL;
        upstream_abort(up);
        drop_reply_headers(s);
        fail_session(s, 503, "out of memory", 1, "no-memory");
        return -1;
    }
    if (s->chunk)
        start_reply(s, content_length);
    return 0;
}

static void on_drained(struct evhttp_connection *evcon, void *arg)
{
    struct session *s = arg;
    (void)evcon;
    if (s->paused && s->up) {
        s->paused = 0;
        upstream_pause(s->up, 0); /* may deliver and even finish s */
    }
}

/* Keep the last two bytes forwarded (s->chunk holds LEN new ones): an
 * in-band error must start on a line (an event) of its own. */
static void note_tail(struct session *s, size_t len)
{
    struct evbuffer_ptr p;
    size_t k = len < 2 ? len : 2;
    if (!k || evbuffer_ptr_set(s->chunk, &p, len - k, EVBUFFER_PTR_SET) < 0)
        return;
    if (k == 1)
        s->tail[0] = s->tail[1];
    evbuffer_copyout_from(s->chunk, &p, s->tail + 2 - k, k);
}

/* The first LEN bytes of SRC through the token counter, without copying. */
static void count_tokens(struct session *s, struct evbuffer *src, size_t len)
{
    struct evbuffer_iovec v[8];
    int n = evbuffer_peek(src, (ev_ssize_t)len, NULL, v, 8);
    for (int i = 0; i < n && i < 8 && len; i++) {
        size_t k = v[i].iov_len < len ? v[i].iov_len : len;
        tokscan_feed(&s->tok, v[i].iov_base, k);
        if (s->h.dialect == DIALECT_OLLAMA) /* only native replies say load_duration */
            numkey_feed(&s->load, v[i].iov_base, k);
        len -= k;
    }
}

/* B holds an error a backend wrote in a 2xx stream: Ollama's NDJSON line
 * and OpenAI's data object {"error":..}, Anthropic's event: error,
 * Responses' response.failed. In generated text these would be escaped
 * (\"error\"), so they do not match there. */
static int holds_error(struct evbuffer *b)
{
    return evbuffer_search(b, "{\"error\"", 8, NULL).pos >= 0 ||
           evbuffer_search(b, "event: error", 12, NULL).pos >= 0 ||
           evbuffer_search(b, "response.failed", 15, NULL).pos >= 0;
}

/* A whole 2xx body that is an error object ({"error":..} or Anthropic's
 * {"type":"error"...}). */
static int is_error_body(struct evbuffer *b)
{
    char head[24];
    ev_ssize_t n = evbuffer_copyout(b, head, sizeof head - 1);
    const char *p = head;
    if (n <= 0)
        return 0;
    head[n] = '\0';
    p += strspn(p, " \t\r\n");
    return !strncmp(p, "{\"error\"", 8) || !strncmp(p, "{\"type\":\"error\"", 15);
}

static void on_body(void *arg, struct evbuffer *src, size_t len)
{
    struct session *s = arg;
    struct evbuffer *out;
    s->h.bytes += len;
    count_tokens(s, src, len);
    if (s->body) {
        evbuffer_remove_buffer(src, s->body, len);
        return;
    }
    evbuffer_remove_buffer(src, s->chunk, len);
    if (!s->h.error_body && s->h.status < 300 && holds_error(s->chunk))
        s->h.error_body = 1; /* adaptive caps count it as no throughput */
    note_tail(s, len);
    evhttp_send_reply_chunk_with_cb(s->h.req, s->chunk, on_drained, s);
    reply_flush(s->evcon);
    out = bufferevent_get_output(evhttp_connection_get_bufferevent(s->evcon));
    if (evbuffer_get_length(out) > CLIENT_HIGH_WATER && !s->paused) {
        s->paused = 1;
        upstream_pause(s->up, 1);
    }
}

static void finish_reply(struct session *s)
{
    struct evhttp_connection *evcon = s->evcon;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (s->body && s->h.status >= 200 && s->h.status < 300 && is_error_body(s->body))
        s->h.error_body = 1;
    if (s->body) {
        clientwatch_stop(&s->cw);
        evhttp_send_reply(s->h.req, s->h.status, s->reason, s->body);
    } else {
        evhttp_send_reply_end(s->h.req);
        /* Back to the keep-alive read timeout that start_reply() lifted. */
        evhttp_connection_set_timeout(evcon, (int)s->px->cfg->idle_s);
    }
    reply_flush(evcon);
}

/* Another backend in service lists KEY (BE's answer said it has not). */
static int listed_elsewhere(struct proxy *px, const char *key, const struct backend *be)
{
    for (int i = 0; i < px->nbackends; i++) {
        const struct backend *o = px->backends[i];
        if (o != be && !o->removed && o->healthy && o->admin == ADMIN_READY &&
            o->models_known && model_list_has(o->models, key))
            return 1;
    }
    return 0;
}

/* The backend answered 404 "model ... not found" (a GPU added since its
 * list was read, a model deleted behind the proxy's back): it does not
 * have the model, whatever it listed. It is asked again, and the request
 * goes to a backend that lists the model; the client gets the 404 only
 * when no other one does. Returns 1 when the request was sent on. Only
 * Ollama's error says so ({"error":"model 'M' not found"}, in the OpenAI
 * shape too): a router's "404 page not found" (a path the server behind
 * that URL does not have) says nothing of its models. */
static int retry_missing_model(struct session *s)
{
    struct proxy *px = s->px;
    struct backend *be = s->se.be;
    size_t n = s->body ? evbuffer_get_length(s->body) : 0;
    if (s->h.status != 404 || !request_mkey(&s->h) || !n || s->ntries >= MAX_TRIES ||
        evbuffer_search(s->body, "not found", 9, NULL).pos < 0 ||
        evbuffer_search(s->body, "\"error\"", 7, NULL).pos < 0)
        return 0;
    backend_model_remove(be, request_model(&s->h), 0);
    discover_refresh(px, be);
    if (!listed_elsewhere(px, request_mkey(&s->h), be))
        return 0;
    log_info("backend %s: 404 for model %s, which others list: sent to another backend",
             be->name, request_model(&s->h));
    px->metrics.retries++;
    drop_reply_headers(s);
    evbuffer_free(s->body);
    s->body = NULL;
    s->h.status = 0;
    s->state = S_QUEUED;
    sched_retry(&px->sched, &s->se);
    return 1;
}

static void on_done(void *arg)
{
    struct session *s = arg;
    struct upstream *up = s->up;
    s->up = NULL;
    upstream_release(up);
    backend_note_success(s->se.be);
    if (retry_missing_model(s))
        return;
    finish_reply(s);
    session_close(s, "ok");
}

/* The framing of an error added to the stream: the row's, unless the
 * backend answered in another (an NDJSON answer on a path of SSE). */
static enum wire_format stream_wire(const struct session *s)
{
    if (s->ndjson)
        return WIRE_NDJSON;
    return s->h.wire == WIRE_NDJSON ? WIRE_OPENAI : s->h.wire;
}

/* After the reply started: end it the way the path's API does (reply.h,
 * reply_stream_error: Ollama's {"error":...} line, OpenAI's data: error,
 * Responses' response.failed, Anthropic's event: error), so that the
 * client's library reports the failure instead of a cut stream. */
static void end_stream(struct session *s, const char *msg, const char *outcome)
{
    struct evbuffer *b = s->chunk;
    /* A stream cut inside a line (an event) first gets its end, so that
     * the error is a line (an event) of its own. */
    const char *sep = !s->h.bytes ? ""
                      : s->sse ? (s->tail[1] != '\n' ? "\n\n" : s->tail[0] != '\n' ? "\n" : "")
                               : (s->tail[1] != '\n' ? "\n" : "");
    if (s->ndjson || s->sse) {
        evbuffer_add(b, sep, strlen(sep));
        reply_stream_error(b, stream_wire(s), msg, request_model(&s->h), tokscan_seq(&s->tok));
        s->h.bytes += evbuffer_get_length(b);
        evhttp_send_reply_chunk(s->h.req, b);
        finish_reply(s);
        session_close(s, outcome);
    } else { /* a raw body: only a cut connection tells the client */
        struct evhttp_connection *evcon = s->evcon;
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        s->evcon = NULL;
        session_close(s, outcome);
        evhttp_connection_free(evcon);
    }
}

static void fail_stream(struct session *s, enum upstream_err err)
{
    end_stream(s, upstream_strerror(err), "upstream-error");
}

static void on_error(void *arg, enum upstream_err err)
{
    struct session *s = arg;
    char msg[256];
    s->up = NULL; /* already freed */
    if (s->state == S_STREAMING) {
        backend_note_failure(s->se.be, s->px->cfg->health_fail_after, upstream_strerror(err));
        fail_stream(s, err);
        return;
    }
    if (is_retryable(err) && !s->body) {
        retry_or_fail(s, err, 0);
        return;
    }
    backend_note_failure(s->se.be, s->px->cfg->health_fail_after, upstream_strerror(err));
    snprintf(msg, sizeof msg, "backend %s: %s", s->se.be->name, upstream_strerror(err));
    drop_reply_headers(s);
    if (s->body) { /* the head came: drop what was gathered */
        evbuffer_free(s->body);
        s->body = NULL;
    }
    fail_session(s, err == UPSTREAM_ETIMEOUT_HEAD ? 504 : 502, msg, 0, "upstream-error");
}

static const struct upstream_cbs up_cbs = {on_header, on_head, on_body, on_done, on_error};

/* ---- admission ---- */


/* The request to send upstream: the client's, as reqtext.h's policy has it. */
static void build_request(struct session *s, struct backend *be, struct evbuffer *b)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(s->h.req);
    struct reqtext t = {0};
    t.method = s->h.method;
    t.target = s->target;
    t.host = be->hostport;
    t.headers = evhttp_request_get_input_headers(s->h.req);
    t.peer = s->h.addr;
    t.keys = s->px->cfg->nkeys > 0;
    t.body = evhttp_request_get_input_buffer(s->h.req);
    t.length = cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT || cmd == EVHTTP_REQ_PATCH;
    reqtext_build(b, &t);
}

/* A try on BE, whose slot s holds. */
static void start_try(struct session *s, struct backend *be)
{
    struct evbuffer *req;
    s->state = S_UPSTREAM;
    request_set_backend(&s->h, be);
    s->ntries++;
    be->ps_at_ms = 0; /* it may load a model: the next /api/ps asks again */
    s->h.t_try = net_now_ms();
    s->h.t_head = 0;
    if (!s->h.t_dispatch)
        s->h.t_dispatch = net_now_ms();
    req = s->px->scratch; /* upstream_start() drains it */
    build_request(s, be, req);
    s->up = upstream_start(s->px->base, &be->target, req,
                           evhttp_request_get_command(s->h.req) == EVHTTP_REQ_HEAD, &s->px->uto,
                           &up_cbs, s);
    evbuffer_drain(req, evbuffer_get_length(req));
    if (!s->up)
        retry_or_fail(s, UPSTREAM_ECONNECT, 0);
}

/* ---- the scheduler's callbacks ---- */

static void on_granted(struct sched_entry *e, struct backend *be)
{
    struct session *s = from_entry(e);
    if (s != submitting && !client_still_there(s)) {
        client_left(s); /* gives the slot back (sched.h: callbacks may) */
        return;
    }
    start_try(s, be);
}

/* No backend in service (up, not drained, not disabled) serves the
 * session's model: 503 at once or after queue.no_backend_s. */
static void fail_no_backend(struct session *s, int retry_after)
{
    char msg[NAME_KEY_MAX + 96];
    snprintf(msg, sizeof msg, "no backend in service has model '%s' (every backend that "
             "serves it is down, drained or disabled)", request_model(&s->h));
    fail_session(s, 503, msg, retry_after, "no-backend");
}

static void on_refused(struct sched_entry *e, enum sched_refusal why, int retry_after)
{
    struct session *s = from_entry(e);
    if (why == SCHED_TIMED_OUT)
        fail_session(s, 503, "timed out waiting for a free backend slot (queue.timeout_s)",
                     retry_after, "queue-timeout");
    else if (why == SCHED_NO_BACKEND)
        fail_no_backend(s, retry_after);
    else /* pushed out of a full queue by a client with fewer waiting */
        fail_session(s, 503, "queue full: too many requests waiting (queue.max_length)",
                     retry_after, "pushed-out");
}

static const struct sched_ops sched_cbs = {on_granted, on_refused};

/* No backend of the fleet lists KEY (down ones by what they said last),
 * and every one has said what it has: a 404 now rather than a wait. While
 * some backend's answer is awaited (joining, or never answered) the
 * request waits; a model only backends out of service have gets the
 * no-backend 503 (sched.h) instead. */
static int model_unknown(struct proxy *px, const char *key)
{
    int known = 0;
    for (int i = 0; i < px->nbackends; i++) {
        struct backend *be = px->backends[i];
        if (be->removed)
            continue;
        if (be->models_pending || !be->models_known || model_list_has(be->models, key))
            return 0;
        known = 1;
    }
    return known;
}

void session_start(struct proxy *px, const struct session_info *in)
{
    struct session *s = calloc(1, sizeof *s);
    int rc;
    if (s && strlen(in->target) < sizeof s->target_buf)
        s->target = strcpy(s->target_buf, in->target);
    else if (s)
        s->target = strdup(in->target);
    if (!s || !s->target || !in->client) {
        struct request h = *in->head;
        if (in->client)
            sched_client_unused(&px->sched, in->client);
        free(s);
        reply_error(&h, 500, "out of memory", 0);
        reqlog_end(px, &h, "no-memory");
        request_cleanup(&h);
        return;
    }
    s->px = px;
    s->h = *in->head;
    s->h.be = NULL; /* the head comes without a backend: no reference to copy */
    s->h.queued = 1;
    s->client = in->client;
    s->evcon = evhttp_request_get_connection(s->h.req);
    net_copy(s->h.client, sizeof s->h.client, in->client->name, NULL);
    tokscan_init(&s->tok, s->h.wire);
    numkey_init(&s->load, "\"load_duration\"");
    LIST_INSERT_HEAD(&px->sessions, s, link);
    px->nsessions++;
    proxy_request_begin(px);

    if (request_mkey(&s->h) && model_unknown(px, request_mkey(&s->h))) {
        char msg[REQUEST_MODEL_MAX + 32];
        snprintf(msg, sizeof msg, "model '%s' not found", request_model(&s->h));
        fail_session(s, 404, msg, 0, "no-model");
        return;
    }
    /* Queued until told otherwise: the grant may come (and even end the
     * session) before sched_submit returns. */
    s->state = S_QUEUED;
    clientwatch_start(&s->cw, px->base, s->evcon, client_left, s);
    s->se.ops = &sched_cbs;
    s->se.key = request_mkey(&s->h);
    s->se.meta = s->h.meta;
    s->se.keyed = in->keyed;
    s->se.affinity = in->affinity;
    s->se.num_ctx = in->num_ctx;
    submitting = s;
    rc = sched_submit(&px->sched, &s->se, in->client);
    submitting = NULL;
    if (rc == SCHED_EKEYQ)
        fail_session(s, 503, "too many requests waiting for this key (max_queued)",
                     sched_retry_after(&px->sched), "key-queue-full");
    else if (rc == SCHED_ENOBACKEND)
        fail_no_backend(s, 1);
    else if (rc < 0)
        fail_session(s, 503, "queue full: too many requests waiting (queue.max_length)",
                     sched_retry_after(&px->sched), "queue-full");
}

void session_end_all(struct proxy *px)
{
    struct session *s;
    sched_freeze(&px->sched);
    while ((s = LIST_FIRST(&px->sessions))) {
        if (s->state == S_STREAMING) {
            end_stream(s, "the proxy is shutting down", "shutdown");
            continue;
        }
        if (s->up) { /* no reply yet: the try is abandoned */
            upstream_abort(s->up);
            s->up = NULL;
        }
        drop_reply_headers(s);
        if (s->body) {
            evbuffer_free(s->body);
            s->body = NULL;
        }
        fail_session(s, 503, "the proxy is shutting down", 1, "shutdown");
    }
}

void session_abort_all(struct proxy *px)
{
    struct session *s;
    sched_freeze(&px->sched);
    while ((s = LIST_FIRST(&px->sessions))) {
        struct evhttp_connection *evcon = s->evcon;
        s->evcon = NULL;
        if (evcon)
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        session_close(s, "shutdown");
        if (evcon)
            evhttp_connection_free(evcon);
    }
}
