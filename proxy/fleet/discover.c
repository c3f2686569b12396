/* discover.c - see discover.h. A poll is a tiny client of upstream.c with
 * the backend itself as its context: be->poll is the request in flight. */
#include "discover.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "names.h"
#include "net.h"
#include "proxy.h"
#include "reqtext.h"
#include "upstream.h"


static void poll_phase(struct backend *be, int phase);

/* The last tags_gen drawn (backend.h): a backend's list that changes gets
 * the next one, so a generation never names two lists. */
static unsigned long long tags_gen;

/* What a model is (an embedding model gets 1 slot a runner: backend.h) is
 * asked of /api/show for each runner whose answer is not known: the models
 * requested there, and every model of a backend that lists at most
 * SHOW_ALL_MAX (so that the first request already knows). One at a time,
 * after /api/ps. */
#define SHOW_ALL_MAX 32

static const char *phase_path(int phase)
{
    return phase == 0 ? "/api/tags" : phase == 1 ? "/api/ps" : "/api/show";
}

/* The next runner of BE to ask /api/show about, or NULL. */
static struct runner *show_next(struct backend *be)
{
    if (be->models && be->models->n <= SHOW_ALL_MAX)
        for (int i = 0; i < be->models->n; i++)
            backend_runner(be, be->models->keys[i]); /* NULL when out of memory: later */
    for (struct runner *rn = be->runners; rn; rn = rn->next)
        if (!rn->show_known)
            return rn;
    return NULL;
}

/* The answer of /api/show for be->show_rn: its capabilities. */
static void show_answered(struct backend *be, const char *body, size_t len)
{
    struct runner *rn = be->show_rn;
    json_t *root = json_loadb(body, len, 0, NULL), *caps = json_object_get(root, "capabilities"), *c;
    size_t i;
    be->show_rn = NULL;
    if (be->poll_status == 200 && json_is_array(caps)) {
        int embed = 0;
        json_array_foreach(caps, i, c)
            embed |= json_is_string(c) && strcmp(json_string_value(c), "embedding") == 0;
        if (embed != rn->embed)
            log_info("backend %s: model %s is %san embedding model (%s)", be->name, rn->key,
                     embed ? "" : "not ", embed ? "1 slot a runner" : "the backend's caps");
        rn->embed = embed;
        rn->cfg_serial = (unsigned)-1; /* its cap is read again */
    }
    /* Answered, whatever it said (an old Ollama without capabilities: the
     * name decides): not asked again. */
    rn->show_known = be->poll_status > 0 && be->poll_status < 500;
    json_decref(root);
}

/* After /api/ps or a /api/show: the next /api/show, or the end of the
 * poll. Returns 1 when a phase was started. */
static int poll_more(struct backend *be)
{
    if ((be->show_rn = show_next(be))) {
        poll_phase(be, 2);
        return 1;
    }
    if (be->poll_again) { /* a refresh was asked meanwhile: once more */
        be->poll_again = 0;
        poll_phase(be, 0);
        return 1;
    }
    return 0;
}

/* The /api/tags phase of BE's poll has ended, answered or not: a joining
 * backend is pending no more (what it said, or, failing that, what it
 * said before, or "anything" when it never answered). */
static void tags_ended(struct backend *be)
{
    if (!be->models_pending)
        return;
    be->models_pending = 0;
    proxy_fleet_changed(be->px); /* requests for its models may go there now */
}

static void on_header(void *arg, int status, const char *key, const char *value)
{
    (void)arg, (void)status, (void)key, (void)value;
}

static int on_head(void *arg, int status, const char *reason, long long content_length)
{
    struct backend *be = arg;
    (void)reason, (void)content_length;
    be->poll_status = status;
    return 0;
}

/* An answer is kept only up to DISCOVER_MAX_BYTES: past that the poll is
 * aborted (and the list kept from before), so no backend can grow the
 * proxy's memory through it. */
static void on_body(void *arg, struct evbuffer *src, size_t len)
{
    struct backend *be = arg;
    struct upstream *up = be->poll;
    if (evbuffer_get_length(be->poll_body) + len > DISCOVER_MAX_BYTES) {
        evbuffer_drain(src, len);
        evbuffer_drain(be->poll_body, evbuffer_get_length(be->poll_body));
        log_warn("backend %s: answer to %s over %d bytes, ignored", be->name,
                 phase_path(be->poll_phase), DISCOVER_MAX_BYTES);
        be->show_rn = NULL;
        be->poll = NULL;
        upstream_abort(up); /* freed when this callback returns */
        if (be->poll_phase == 0)
            tags_ended(be);
        return;
    }
    evbuffer_remove_buffer(src, be->poll_body, len);
}

struct model_list *discover_parse(const char *body, size_t len, json_t **array)
{
    json_t *root, *arr, *m;
    struct model_list *l = NULL;
    size_t i;
    *array = NULL;
    if (len > DISCOVER_MAX_BYTES)
        return NULL;
    root = json_loadb(body, len, 0, NULL);
    arr = json_object_get(root, "models");
    if (!json_is_array(arr) && !json_is_null(arr))
        goto done;
    if (json_array_size(arr) > DISCOVER_MAX_MODELS)
        goto done;
    if (!(l = calloc(1, sizeof *l)))
        goto done;
    json_array_foreach(arr, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        char key[NAME_KEY_MAX];
        if (!name || name_key(name, key, sizeof key) < 0)
            continue;
        if (model_list_push(l, name, key) < 0) {
            model_list_free(l);
            l = NULL;
            goto done;
        }
    }
    *array = json_is_array(arr) ? json_incref(arr) : json_array();
done:
    json_decref(root);
    return l;
}

static void set_ps(struct backend *be, struct model_list *l, json_t *array)
{
    model_list_free(be->loaded);
    json_decref(be->ps_json);
    be->loaded = l;
    be->ps_json = array;
    be->ps_at_ms = net_now_ms();
}

int discover_set_ps(struct backend *be, struct evbuffer *body)
{
    json_t *array = NULL;
    size_t n = evbuffer_get_length(body);
    struct model_list *l = discover_parse((const char *)evbuffer_pullup(body, -1), n, &array);
    if (!l)
        return -1;
    set_ps(be, l, array);
    return 0;
}

void discover_rejoin(struct proxy *px, struct backend *be)
{
    be->models_pending = 1;
    discover_refresh(px, be);
}

void discover_refresh(struct proxy *px, struct backend *be)
{
    (void)px;
    if (be->removed)
        return;
    if (be->poll)
        be->poll_again = 1;
    else
        poll_phase(be, 0);
}

static void on_done(void *arg)
{
    struct backend *be = arg;
    struct upstream *up = be->poll;
    json_t *array = NULL;
    size_t n = evbuffer_get_length(be->poll_body);
    struct model_list *l;
    if (be->poll_phase == 2) {
        show_answered(be, (const char *)evbuffer_pullup(be->poll_body, -1), n);
        be->poll = NULL;
        upstream_release(up);
        evbuffer_drain(be->poll_body, n);
        poll_more(be);
        proxy_fleet_changed(be->px); /* a cap may have changed */
        return;
    }
    l = be->poll_status == 200
            ? discover_parse((const char *)evbuffer_pullup(be->poll_body, -1), n, &array)
            : NULL;
    be->poll = NULL;
    upstream_release(up);
    evbuffer_drain(be->poll_body, evbuffer_get_length(be->poll_body));
    if (!l) {
        log_warn("backend %s: unusable answer to %s (status %d)", be->name,
                 phase_path(be->poll_phase), be->poll_status);
        if (be->poll_phase == 0)
            tags_ended(be);
        return;
    }
    if (be->poll_t0_ms < be->local_change_ms) {
        /* Asked before a pull, delete or unload of ours changed BE's lists:
         * this answer may predate the change (the red flake of stop 16:
         * an /api/ps answered after an unload listed the model again).
         * Keep what we set and ask again. */
        model_list_free(l);
        json_decref(array);
        poll_phase(be, be->poll_phase); /* asked again, after the change */
        return;
    }
    if (be->poll_phase == 0) {
        if (!be->models_known)
            log_info("backend %s: %d models", be->name, l->n);
        if (!be->tags_json || !json_equal(be->tags_json, array))
            be->tags_gen = ++tags_gen; /* the catalog's union is made again */
        model_list_free(be->models);
        json_decref(be->tags_json);
        be->models = l;
        be->tags_json = array;
        be->models_known = 1;
        be->models_pending = 0;
        poll_phase(be, 1);
    } else {
        set_ps(be, l, array);
        backend_runners_from_ps(be, be->poll_t0_ms);
        poll_more(be);
    }
    proxy_fleet_changed(be->px); /* a waiting request may fit it now */
}

static void on_error(void *arg, enum upstream_err err)
{
    struct backend *be = arg;
    be->poll = NULL;
    evbuffer_drain(be->poll_body, evbuffer_get_length(be->poll_body));
    log_debug("backend %s: model poll failed: %s", be->name, upstream_strerror(err));
    be->show_rn = NULL;
    if (be->poll_phase == 0)
        tags_ended(be);
}

static const struct upstream_cbs poll_cbs = {on_header, on_head, on_body, on_done, on_error};

/* POST /api/show {"model": NAME} for be->show_rn into REQ: the name as BE
 * lists it. */
static int show_request(struct backend *be, struct evbuffer *req)
{
    const char *name = be->show_rn->key;
    struct evbuffer *body = evbuffer_new();
    json_t *o;
    char *text = NULL;
    for (int i = 0; be->models && i < be->models->n; i++)
        if (strcmp(be->models->keys[i], name) == 0)
            name = be->models->names[i];
    o = json_pack("{s:s}", "model", name);
    if (o)
        text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body || !text || evbuffer_add(body, text, strlen(text)) < 0) {
        free(text);
        if (body)
            evbuffer_free(body);
        return -1;
    }
    free(text);
    reqtext_build(req, &(struct reqtext){.method = "POST", .target = "/api/show",
                                         .host = be->hostport, .body = body, .length = 1});
    evbuffer_free(body);
    return 0;
}

static void poll_phase(struct backend *be, int phase)
{
    struct proxy *px = be->px;
    struct upstream_timeouts to;
    struct evbuffer *req = px->scratch;
    to.connect = to.first_byte = to.idle = net_timeval(px->cfg->health_timeout_s);
    if (!be->poll_body && !(be->poll_body = evbuffer_new())) {
        if (phase == 0)
            tags_ended(be); /* out of memory: the next tick asks again */
        return;
    }
    be->poll_phase = phase;
    be->poll_status = 0;
    be->poll_t0_ms = net_now_ms();
    if (phase == 2 && show_request(be, req) < 0) {
        be->show_rn = NULL;
        return; /* out of memory: the next tick asks again */
    }
    if (phase < 2)
        reqtext_build(req, &(struct reqtext){.method = "GET", .target = phase_path(phase),
                                             .host = be->hostport});
    be->poll = upstream_start(px->base, &be->target, req, 0, &to, &poll_cbs, be);
    evbuffer_drain(req, evbuffer_get_length(req));
    if (!be->poll)
        be->show_rn = NULL;
    if (!be->poll && phase == 0)
        tags_ended(be);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;
    (void)fd, (void)what;
    for (int i = 0; i < px->nbackends; i++)
        if (!px->backends[i]->poll && !px->backends[i]->removed)
            poll_phase(px->backends[i], 0);
}

int discover_start(struct proxy *px)
{
    struct timeval tv = net_timeval(px->cfg->models_refresh_s);
    px->ev_discover = event_new(px->base, -1, EV_PERSIST, on_tick, px);
    if (!px->ev_discover)
        return -1;
    event_add(px->ev_discover, &tv);
    event_active(px->ev_discover, EV_TIMEOUT, 1); /* and once now */
    return 0;
}

void discover_stop(struct proxy *px)
{
    if (px->ev_discover)
        event_free(px->ev_discover);
    px->ev_discover = NULL;
}
