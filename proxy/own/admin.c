/* admin.c - see admin.h. */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "config.h"
#include "fleet.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "reply.h"
#include "transport_tls.h"
#include "request.h"
#include "ui.h"

static const char *const prio_name[PRIO_COUNT] = {"high", "normal", "low"};

static json_t *names_json(const struct model_list *l)
{
    json_t *a = json_array();
    for (int i = 0; l && i < l->n; i++)
        json_array_append_new(a, json_string(l->names[i]));
    return a;
}

/* "2026-12-01T22:00:00Z" */
static json_t *iso_time(double secs)
{
    char buf[32];
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* "tls": false for a plain backend; for an https one what its handshakes
 * saw, the certificate's expiry first (never a header: they are secrets). */
static json_t *tls_json(const struct backend *be)
{
    struct tls_target *t = backend_tls(be);
    struct tls_target_info i;
    if (!t)
        return json_false();
    tls_target_info(t, &i);
    return json_pack("{s:o,s:s,s:b,s:b,s:s,s:I,s:I}", "cert_expires",
                     i.not_after ? iso_time(i.not_after) : json_null(), "server_name",
                     i.server_name, "verify", i.verify, "client_cert", i.mtls, "version",
                     i.version, "handshakes", (json_int_t)i.handshakes, "resumed",
                     (json_int_t)i.resumed);
}

/* The display name of KEY on BE (its /api/tags' form), else KEY. */
static const char *model_name(const struct backend *be, const char *key)
{
    const char *l = model_list_label(be->models, key);
    return l ? l : key;
}

/* BE's runners in use (sent a request), loaded (/api/ps) or capped: the model, its requests
 * in flight and cap (0: none but the backend's), whether it is an
 * embedding model, the num_ctx it runs with (-1: not known), affinity hits
 * and misses, the (re)loads seen, and the generated and prompt tokens its
 * replies said. */
static json_t *runners_json(struct backend *be)
{
    json_t *a = json_array();
    for (struct runner *rn = be->runners; rn; rn = rn->next) {
        int cap = runner_cap(be, rn);
        json_t *o;
        if (!rn->sent_ms && !cap && rn->ctx < 0)
            continue;
        o = json_pack("{s:s,s:i,s:i,s:b,s:i,s:{s:I,s:I},s:I,s:I,s:I}", "model",
                      model_name(be, rn->key), "in_flight", rn->in_flight, "cap", cap,
                      "embedding", rn->embed, "num_ctx", rn->ctx, "affinity", "hits",
                      (json_int_t)rn->hits, "misses", (json_int_t)rn->misses, "loads",
                      (json_int_t)rn->loads, "tokens", (json_int_t)rn->tokens,
                      "prompt_tokens", (json_int_t)rn->prompt_tokens);
        if (o && rn->adapt.on)
            json_object_set_new(o, "adaptive", json_pack("{s:s,s:s}", "cause",
                                                         adapt_cause_name[rn->adapt.cause],
                                                         "reason", rn->adapt.reason));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *backend_json(struct backend *be)
{
    const struct adapt *why;
    int effective = backend_effective_cap(be, &why);
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:i,s:i,s:I,s:I,s:o,s:o}", "name", be->name, "url",
                          be->url, "state", backend_state(be), "healthy", be->healthy,
                          "in_flight", be->in_flight, "max_concurrent", backend_ceiling(be),
                          "served", (json_int_t)be->served, "failed", (json_int_t)be->failed,
                          "models", names_json(be->models), "loaded", names_json(be->loaded));
    if (!o)
        return NULL;
    json_object_set_new(o, "tls", tls_json(be));
    if (be->cap_override)
        json_object_set_new(o, "config_max_concurrent", json_integer(be->cfg_cap));
    if (why) {
        json_object_set_new(o, "effective_cap", json_integer(effective));
        json_object_set_new(o, "adaptive",
                            json_pack("{s:i,s:s,s:s,s:o}", "ceiling", be->adapt.ceiling, "cause",
                                      adapt_cause_name[why->cause], "reason", why->reason,
                                      "since", iso_time(why->changed_at)));
    }
    json_object_set_new(o, "runners", runners_json(be));
    if (!be->healthy) {
        json_object_set_new(o, "down_reason", json_string(be->down_reason));
        json_object_set_new(o, "down_since", iso_time(be->down_since));
    }
    return o;
}

/* Seconds since SUBMIT_MS (net_now_ms() time); 0 for 0. */
static double wait_s(double submit_ms)
{
    return submit_ms ? (net_now_ms() - submit_ms) / 1000.0 : 0.0;
}

/* For the status page (ui.h): how long the oldest has waited, what waits
 * at each priority, and the last errors. */
static void status_extras(struct proxy *px, json_t *st)
{
    json_t *q = json_object_get(st, "queue");
    int by[PRIO_COUNT] = {0};
    struct sched_client *c;
    LIST_FOREACH(c, &px->sched.clients, link)
        by[c->prio] += c->waiting;
    json_object_set_new(q, "oldest_wait_s", json_real(wait_s(sched_oldest_ms(&px->sched))));
    json_object_set_new(q, "by_priority", json_pack("{s:i,s:i,s:i,s:i}", prio_name[0], by[0],
                                                    prio_name[1], by[1], prio_name[2], by[2],
                                                    "retrying", px->sched.retrying));
    json_object_set_new(st, "errors", ui_errors_json(px));
    json_object_set_new(st, "events", ui_events_json(px));
}

static json_t *clients_json(struct proxy *px)
{
    json_t *arr = json_array();
    struct sched_client *c;
    LIST_FOREACH(c, &px->sched.clients, link) {
        json_t *o = json_pack("{s:s,s:b,s:s,s:i,s:i,s:i,s:I,s:I}", "name", c->name, "key",
                              c->key_index >= 0, "priority", prio_name[c->prio], "weight",
                              c->weight, "in_flight", c->in_flight, "waiting", c->waiting,
                              "served", (json_int_t)c->served, "refused",
                              (json_int_t)c->refused);
        if (!o) /* a header's value that is not UTF-8 */
            continue;
        if (c->max_concurrent)
            json_object_set_new(o, "max_concurrent", json_integer(c->max_concurrent));
        if (!TAILQ_EMPTY(&c->queue)) /* oldest first */
            json_object_set_new(o, "oldest_wait_s", json_real(wait_s(TAILQ_FIRST(&c->queue)
                                                                       ->t_submit_ms)));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* The retired backends that still run requests (fleet_retired_next):
 * each in backend_json's shape, state "retired". Not in backends[]: that
 * is the fleet of the config, keyed by name for the runtime control and
 * the page, and a retired backend may share its name with a current one
 * (a url moved to another server). */
static json_t *retired_json(struct proxy *px)
{
    json_t *arr = json_array();
    for (struct backend *be = fleet_retired_next(px, NULL); be; be = fleet_retired_next(px, be)) {
        json_t *o = backend_json(be);
        if (o)
            json_object_set_new(o, "state", json_string("retired"));
        json_array_append_new(arr, o);
    }
    return arr;
}

static void reply_status(struct proxy *px, struct request *r)
{
    json_t *arr = json_array();
    for (int i = 0; i < px->nbackends; i++)
        json_array_append_new(arr, backend_json(px->backends[i]));
    const struct sched *sc = &px->sched;
    /* First: it refreshes the drain rate that drain_per_s reads (the
     * arguments of one call are evaluated in no set order). */
    int retry_after = sched_retry_after(&px->sched);
    json_t *st =
        json_pack("{s:o,s:o,s:{s:i,s:i,s:i,s:f,s:I,s:o},s:o,s:I,s:i}", "backends", arr,
                  "retired", retired_json(px), "queue", "length", sched_length(sc), "max_length",
                  sc->max_length, "retry_after_s", retry_after, "drain_per_s", sc->rate,
                  "grants", (json_int_t)sc->dispatches, "dispatch_us",
                  sc->dispatches ? json_real(sc->dispatch_ns / 1000.0 / (double)sc->dispatches)
                                 : json_null(),
                  "clients", clients_json(px), "uptime_s",
                  (json_int_t)((net_now_ms() - px->start_ms) / 1000.0), "connections",
                  px->nconns);
    if (st)
        status_extras(px, st);
    reply_json(r, 200, st);
}

static struct backend *find(struct proxy *px, const char *name, size_t n)
{
    for (int i = 0; i < px->nbackends; i++)
        if (strlen(px->backends[i]->name) == n && memcmp(px->backends[i]->name, name, n) == 0)
            return px->backends[i];
    return NULL;
}

/* {"max_concurrent": N} from REQ's body: N, or -1. */
static int cap_from_body(struct request *r)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(r->req);
    json_t *root = json_loadb((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b), 0,
                              NULL);
    json_t *v = json_object_get(root, "max_concurrent");
    int n = json_is_integer(v) && json_integer_value(v) >= 1 &&
                    json_integer_value(v) <= 100000
                ? (int)json_integer_value(v)
                : -1;
    json_decref(root);
    return n;
}

static int control(struct proxy *px, struct request *r, struct backend *be,
                   const char *verb)
{
    int cap;
    if (strcmp(verb, "drain") == 0) {
        backend_set_admin(be, ADMIN_DRAIN);
    } else if (strcmp(verb, "disable") == 0) {
        backend_set_admin(be, ADMIN_DISABLED);
    } else if (strcmp(verb, "enable") == 0) {
        backend_set_admin(be, ADMIN_READY);
    } else if (strcmp(verb, "cap") == 0) {
        if ((cap = cap_from_body(r)) < 0) {
            reply_error(r, 400, "the body must be {\"max_concurrent\": N}, 1 <= N <= 100000",
                        0);
            return 1;
        }
        backend_set_cap(be, cap);
    } else {
        return 0;
    }
    log_info("backend %s: %s by the runtime control (now %s, max_concurrent %d)", be->name,
             verb, backend_state(be), be->max_concurrent);
    sched_kick(&px->sched); /* an enabled backend or a higher cap takes waiting requests */
    reply_json(r, 200, backend_json(be));
    return 1;
}

int admin_reply(struct proxy *px, struct request *r, const char *path)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(r->req);
    int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    const char *name, *verb;
    struct backend *be;
    char msg[200];
    /* Everything under /proxy/ is the proxy's own: none of it may reach a
     * backend, whatever the method or the rest of the path. */
    if (strcmp(path, "/proxy/status") == 0 || strcmp(path, "/proxy/history") == 0) {
        if (!get)
            reply_error(r, 405, "use GET", 0);
        else if (path[7] == 's')
            reply_status(px, r);
        else
            reply_json(r, 200, ui_history_json(px));
        return 1;
    }
    if (strcmp(path, "/proxy/ui") == 0) {
        ui_reply_page(r);
        return 1;
    }
    name = path + 16;
    if (strncmp(path, "/proxy/backends/", 16) != 0 || !(verb = strchr(name, '/'))) {
        reply_error(r, 404, "no such endpoint of the proxy", 0);
        return 1;
    }
    if (cmd != EVHTTP_REQ_POST) {
        reply_error(r, 405, "use POST", 0);
        return 1;
    }
    if (!(be = find(px, name, (size_t)(verb - name)))) {
        snprintf(msg, sizeof msg, "no backend named '%.*s'", (int)(verb - name), name);
        reply_error(r, 404, msg, 0);
        return 1;
    }
    if (!control(px, r, be, verb + 1)) {
        snprintf(msg, sizeof msg, "unknown action '%.40s': drain, disable, enable or cap",
                 verb + 1);
        reply_error(r, 404, msg, 0);
    }
    return 1;
}
