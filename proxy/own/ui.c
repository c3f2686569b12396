/* ui.c - see ui.h.
 *
 * The rings. struct ui holds one write position (head) and one count for
 * every ring, since all are sampled by the same tick: sample i (0 the
 * oldest) of N is at (head - N + i) mod UI_HISTORY. A track is one
 * backend's rings, found by the backend's pointer (a reload that keeps a
 * backend by name makes a new struct: the tick re-finds it by name). What
 * ends during a second is added to the track's "now" counters; the tick
 * moves them into the rings. */
#include "ui.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "proxy.h"
#include "sched.h"
#include "reply.h"
#include "request.h"

/* The page, made from proxy/ui/index.html by proxy/ui/embed.cmake. */
extern const unsigned char ui_page[];
extern const size_t ui_page_len;

struct ui_track {
    char *name;
    const struct backend *be;
    unsigned long long req_now, tok_now, ptok_now; /* this second so far */
    uint32_t req[UI_HISTORY], tok[UI_HISTORY], ptok[UI_HISTORY]; /* ptok: the prompts' */
};

struct ui_error {
    time_t t;
    int status;
    char backend[64];
    char path[96];
    char outcome[24];
    char why[240];
};

struct ui {
    struct event *tick;
    struct ui_track **tracks; /* one per backend of px->backends */
    int ntracks;
    int head, count;            /* of every ring */
    uint32_t queue[UI_HISTORY]; /* waiting, retries included, at each tick */
    time_t last_tick;
    struct ui_error errors[UI_ERRORS];
    int ehead, ecount;
};

/* SRC into OUT[LEN], cut (if it must be) before a UTF-8 sequence rather
 * than inside one, so that the copy stays valid for JSON. */
static void copy_text(char *out, size_t len, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= len) {
        n = len - 1;
        while (n && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, src ? src : "", n);
    out[n] = '\0';
}

static uint32_t clamp32(unsigned long long v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* ---- tracks ---- */

static struct ui_track *track_find(struct ui *ui, const struct backend *be)
{
    for (int i = 0; i < ui->ntracks; i++)
        if (ui->tracks[i]->be == be)
            return ui->tracks[i];
    return NULL;
}

static struct ui_track *track_by_name(struct ui *ui, const char *name)
{
    for (int i = 0; i < ui->ntracks; i++)
        if (strcmp(ui->tracks[i]->name, name) == 0)
            return ui->tracks[i];
    return NULL;
}

static void track_free(struct ui_track *t)
{
    if (t)
        free(t->name);
    free(t);
}

static int track_is_old(const struct ui *ui, const struct ui_track *t)
{
    for (int j = 0; j < ui->ntracks; j++)
        if (ui->tracks[j] == t)
            return 1;
    return 0;
}

/* Make the tracks follow px->backends, in its order: kept by name, made
 * for a new backend, freed for a dropped one. On allocation failure the
 * old tracks stay (and the next tick tries again). */
static void tracks_sync(struct proxy *px, struct ui *ui)
{
    int n = px->nbackends;
    struct ui_track **nt = calloc(n ? (size_t)n : 1, sizeof *nt);
    if (!nt)
        return;
    for (int i = 0; i < n; i++) {
        if ((nt[i] = track_by_name(ui, px->backends[i]->name)))
            continue;
        if (!(nt[i] = calloc(1, sizeof *nt[i])) ||
            !(nt[i]->name = strdup(px->backends[i]->name)))
            goto fail;
    }
    for (int j = 0; j < ui->ntracks; j++) {
        int kept = 0;
        for (int i = 0; i < n; i++)
            kept |= nt[i] == ui->tracks[j];
        if (!kept)
            track_free(ui->tracks[j]);
    }
    for (int i = 0; i < n; i++)
        nt[i]->be = px->backends[i];
    free(ui->tracks);
    ui->tracks = nt;
    ui->ntracks = n;
    return;
fail:
    for (int i = 0; i < n; i++)
        if (nt[i] && !track_is_old(ui, nt[i]))
            track_free(nt[i]);
    free(nt);
}

static int tracks_match(const struct proxy *px, const struct ui *ui)
{
    if (ui->ntracks != px->nbackends)
        return 0;
    for (int i = 0; i < ui->ntracks; i++)
        if (ui->tracks[i]->be != px->backends[i])
            return 0;
    return 1;
}

/* ---- the tick ---- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;
    struct ui *ui = px->ui;
    (void)fd;
    (void)what;
    if (!tracks_match(px, ui))
        tracks_sync(px, ui);
    for (int i = 0; i < ui->ntracks; i++) {
        struct ui_track *t = ui->tracks[i];
        t->req[ui->head] = clamp32(t->req_now);
        t->tok[ui->head] = clamp32(t->tok_now);
        t->ptok[ui->head] = clamp32(t->ptok_now);
        t->req_now = t->tok_now = t->ptok_now = 0;
    }
    ui->queue[ui->head] = (uint32_t)sched_length(&px->sched);
    ui->head = (ui->head + 1) % UI_HISTORY;
    if (ui->count < UI_HISTORY)
        ui->count++;
    ui->last_tick = time(NULL);
}

int ui_start(struct proxy *px)
{
    struct timeval second = {1, 0};
    struct ui *ui = calloc(1, sizeof *ui);
    if (!ui || !(ui->tick = event_new(px->base, -1, EV_PERSIST, on_tick, px))) {
        free(ui);
        return -1;
    }
    ui->last_tick = time(NULL);
    px->ui = ui;
    tracks_sync(px, ui);
    event_add(ui->tick, &second);
    return 0;
}

void ui_stop(struct proxy *px)
{
    struct ui *ui = px->ui;
    if (!ui)
        return;
    event_free(ui->tick);
    for (int i = 0; i < ui->ntracks; i++)
        track_free(ui->tracks[i]);
    free(ui->tracks);
    free(ui);
    px->ui = NULL;
}

/* ---- requests ending ---- */

/* Why a request ended badly, in words, from what its teardown knows. */
static void why_of(char *out, size_t len, const struct backend *be, int status,
                   const char *outcome)
{
    const char *down = be && !be->healthy ? be->down_reason : NULL;
    if (strcmp(outcome, "queue-timeout") == 0)
        snprintf(out, len, "no free slot within queue.timeout_s");
    else if (strcmp(outcome, "queue-full") == 0)
        snprintf(out, len, "queue full (queue.max_length)");
    else if (strcmp(outcome, "key-queue-full") == 0)
        snprintf(out, len, "its key has max_queued requests waiting");
    else if (strcmp(outcome, "busy") == 0)
        snprintf(out, len, "backends answered 503 busy on every try");
    else if (strcmp(outcome, "shutdown") == 0)
        snprintf(out, len, "the proxy is shutting down");
    else if (strcmp(outcome, "upstream-error") == 0 && status < 500)
        snprintf(out, len, "the backend cut the stream%s%s", down ? ": " : "",
                 down ? down : "");
    else if (strcmp(outcome, "upstream-error") == 0 && status == 504)
        snprintf(out, len, "no response within timeouts.first_byte_s");
    else if (strcmp(outcome, "upstream-error") == 0)
        snprintf(out, len, "backend failed (connect, reset or bad reply)%s%s",
                 down ? ": " : "", down ? down : "");
    else if (be)
        snprintf(out, len, "the backend answered %d", status);
    else
        snprintf(out, len, "%s", outcome);
}

static void note_error(struct ui *ui, const struct backend *be, int status, const char *path,
                       const char *outcome)
{
    struct ui_error *e = &ui->errors[ui->ehead];
    e->t = time(NULL);
    e->status = status;
    copy_text(e->backend, sizeof e->backend, be ? be->name : "");
    copy_text(e->path, sizeof e->path, path);
    copy_text(e->outcome, sizeof e->outcome, outcome);
    why_of(e->why, sizeof e->why, be, status, outcome);
    ui->ehead = (ui->ehead + 1) % UI_ERRORS;
    if (ui->ecount < UI_ERRORS)
        ui->ecount++;
}

void ui_request_ended(struct proxy *px, const struct backend *be, int status, const char *path,
                      const char *outcome, long long tokens, long long prompt_tokens)
{
    struct ui *ui = px->ui;
    struct ui_track *t = NULL;
    if (!ui)
        return;
    if (be && !(t = track_find(ui, be)) && !tracks_match(px, ui)) {
        tracks_sync(px, ui); /* the fleet changed since the last tick */
        t = track_find(ui, be);
    }
    if (be && t) {
        t->req_now++;
        if (tokens > 0)
            t->tok_now += (unsigned long long)tokens;
        if (prompt_tokens > 0)
            t->ptok_now += (unsigned long long)prompt_tokens;
    }
    if (!outcome)
        outcome = "";
    if (status >= 500 || (strcmp(outcome, "upstream-error") == 0 && status != 499))
        note_error(ui, be, status, path, outcome);
}

/* ---- the answers ---- */

/* Inline script and style only, and connections to this origin: the page
 * can load nothing from elsewhere, whatever it is made to show. */
#define UI_CSP                                                                                 \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "            \
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "               \
    "frame-ancestors 'none'"

void ui_reply_page(struct request *r)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(r->req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    struct evbuffer *b;
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        reply_error(r, 405, "use GET", 0);
        return;
    }
    if (!(b = evbuffer_new())) {
        reply_error(r, 500, "out of memory", 0);
        return;
    }
    evbuffer_add_reference(b, ui_page, ui_page_len, NULL, NULL);
    evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "Content-Security-Policy", UI_CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    reply_send(r, 200, b);
    evbuffer_free(b);
}

static json_t *iso_time(time_t t)
{
    char buf[32];
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* The last UI->count samples of RING, the oldest first. */
static json_t *ring_json(const struct ui *ui, const uint32_t *ring)
{
    json_t *a = json_array();
    for (int i = 0; a && i < ui->count; i++)
        json_array_append_new(
            a, json_integer(ring[(ui->head - ui->count + i + UI_HISTORY) % UI_HISTORY]));
    return a;
}

json_t *ui_history_json(struct proxy *px)
{
    struct ui *ui = px->ui;
    json_t *arr, *o;
    if (!ui)
        return json_pack("{s:i,s:i,s:[],s:[]}", "interval_s", 1, "samples", 0, "backends",
                         "queue");
    arr = json_array();
    for (int i = 0; arr && i < ui->ntracks; i++) {
        const struct ui_track *t = ui->tracks[i];
        /* a name that is not UTF-8 makes json_pack fail: that row is left out */
        if ((o = json_pack("{s:s,s:o,s:o,s:o}", "name", t->name, "requests",
                           ring_json(ui, t->req), "tokens", ring_json(ui, t->tok),
                           "prompt_tokens", ring_json(ui, t->ptok))))
            json_array_append_new(arr, o);
    }
    return json_pack("{s:i,s:i,s:o,s:o,s:o}", "interval_s", 1, "samples", ui->count, "end",
                     iso_time(ui->last_tick), "backends", arr, "queue",
                     ring_json(ui, ui->queue));
}

json_t *ui_errors_json(struct proxy *px)
{
    struct ui *ui = px->ui;
    json_t *a = json_array();
    for (int i = 0; ui && a && i < ui->ecount; i++) {
        const struct ui_error *e = &ui->errors[(ui->ehead - 1 - i + UI_ERRORS) % UI_ERRORS];
        /* the path and names are the client's bytes: not UTF-8 drops the row */
        json_t *o = json_pack("{s:o,s:i,s:s?,s:s,s:s,s:s}", "time", iso_time(e->t), "status",
                              e->status, "backend", e->backend[0] ? e->backend : NULL, "path",
                              e->path, "outcome", e->outcome, "why", e->why);
        if (o)
            json_array_append_new(a, o);
    }
    return a;
}
