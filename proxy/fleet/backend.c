/* backend.c - see backend.h. */
#include "backend.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capstate.h"
#include "config.h"
#include "log.h"
#include "net.h"
#include "names.h"
#include "proxy.h"
#include "resolve.h"
#include "transport_tls.h"
#include "upstream.h"

/* The Host header: the url's host (or tls.server_name) and its port,
 * which goes without saying for https on 443. */
static void set_host(struct backend *be, const struct config_backend *cb)
{
    const char *h = cb->tlsc.server_name ? cb->tlsc.server_name : be->host;
    char *out = be->hostport->name;
    size_t n = sizeof be->hostport->name;
    int v6 = strchr(h, ':') != NULL;
    if (cb->tls && be->port == 443)
        snprintf(out, n, "%s%s%s", v6 ? "[" : "", h, v6 ? "]" : "");
    else
        snprintf(out, n, "%s%s%s:%d", v6 ? "[" : "", h, v6 ? "]" : "", be->port);
}

static void free_headers(struct reqtext_host *h)
{
    for (int i = 0; i < h->nheaders; i++) {
        free(h->headers[i].name);
        free(h->headers[i].value);
    }
    free(h->headers);
    h->headers = NULL;
    h->nheaders = 0;
}

/* BE's headers become copies of CB's. 0, or -1 (out of memory: BE's stay). */
static int set_headers(struct backend *be, const struct config_backend *cb)
{
    struct reqtext_header *h = calloc((size_t)cb->nheaders + 1, sizeof *h);
    if (!h)
        return -1;
    for (int i = 0; i < cb->nheaders; i++)
        if (!(h[i].name = strdup(cb->headers[i].name)) ||
            !(h[i].value = strdup(cb->headers[i].value))) {
            struct reqtext_host tmp = {.headers = h, .nheaders = i + 1};
            free_headers(&tmp);
            return -1;
        }
    free_headers(be->hostport);
    be->hostport->headers = h;
    be->hostport->nheaders = cb->nheaders;
    return 0;
}

static void tls_conf_of(const struct backend *be, const struct config_backend *cb,
                        struct tls_conf *tc)
{
    tc->server_name = cb->tlsc.server_name ? cb->tlsc.server_name : be->host;
    tc->ca_file = cb->tlsc.ca_file;
    tc->cert_file = cb->tlsc.cert_file;
    tc->key_file = cb->tlsc.key_file;
    tc->verify = cb->tlsc.verify;
}

/* An https:// backend speaks TLS (transport_tls.h); 0, or -1 logged. */
static int set_transport(struct backend *be, const struct config_backend *cb)
{
    struct tls_conf tc;
    char err[700];
    if (!cb->tls)
        return 0;
    tls_conf_of(be, cb, &tc);
    if (!(be->target.tp_ctx = tls_target_new(&tc, err, sizeof err))) {
        log_error("backend %s: %s", be->name, err);
        return -1;
    }
    be->target.tp = &transport_tls;
    return 0;
}

struct tls_target *backend_tls(const struct backend *be)
{
    return be->target.tp == &transport_tls ? be->target.tp_ctx : NULL;
}

int backend_reconfigure(struct backend *be, const struct config_backend *cb)
{
    struct tls_target *t = backend_tls(be);
    struct tls_conf tc;
    char err[700];
    if (set_headers(be, cb) < 0)
        log_error("backend %s: out of memory: its headers stay as they were", be->name);
    set_host(be, cb);
    if (!t)
        return 0;
    tls_conf_of(be, cb, &tc);
    if (tls_target_same(t, &tc))
        return 0;
    if (tls_target_update(t, &tc, err, sizeof err) < 0) {
        log_error("backend %s: %s; its TLS settings stay as they were", be->name, err);
        return -1;
    }
    upstream_pool_drain(&be->target); /* made under the old settings */
    log_info("backend %s: new TLS settings (or files) from the next connection on", be->name);
    return 0;
}

struct backend *backend_new(const struct config_backend *cb)
{
    struct backend *be = calloc(1, sizeof *be);
    if (!be)
        return NULL;
    be->name = strdup(cb->name);
    be->url = strdup(cb->url);
    be->host = strdup(cb->host);
    be->port = cb->port;
    be->max_concurrent = be->cfg_cap = cb->max_concurrent;
    be->refs = 1; /* the fleet's: fleet_remove (retire) drops it */
    be->healthy = 1;
    be->models_pending = 1; /* until discovery has asked it (discover_refresh) */
    if (cb->adaptive)
        backend_adapt(be, cb->max_concurrent);
    if (!be->name || !be->url || !be->host || set_headers(be, cb) < 0 ||
        set_transport(be, cb) < 0) {
        backend_free(be);
        return NULL;
    }
    set_host(be, cb);
    return be;
}

void model_list_free(struct model_list *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++) {
        free(l->names[i]);
        free(l->keys[i]);
        free(l->labels[i]);
    }
    free(l->names);
    free(l->keys);
    free(l->labels);
    free(l);
}

int model_list_push(struct model_list *l, const char *name, const char *key)
{
    char disp[NAME_KEY_MAX];
    char **n, **k, **d;
    if (name_display(name, disp, sizeof disp) < 0)
        snprintf(disp, sizeof disp, "%s", "other");
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        if (!(n = realloc(l->names, (size_t)cap * sizeof *n)))
            return -1;
        l->names = n;
        if (!(k = realloc(l->keys, (size_t)cap * sizeof *k)))
            return -1;
        l->keys = k;
        if (!(d = realloc(l->labels, (size_t)cap * sizeof *d)))
            return -1;
        l->labels = d;
        l->cap = cap;
    }
    n = l->names;
    k = l->keys;
    d = l->labels;
    n[l->n] = strdup(name);
    k[l->n] = strdup(key);
    d[l->n] = strdup(disp);
    if (!n[l->n] || !k[l->n] || !d[l->n]) {
        free(n[l->n]);
        free(k[l->n]);
        free(d[l->n]);
        return -1;
    }
    l->n++;
    return 0;
}

void backend_model_add(struct backend *be, const char *name)
{
    char key[NAME_KEY_MAX], disp[NAME_KEY_MAX];
    if (!be->models_known || !be->models || name_key(name, key, sizeof key) < 0 ||
        name_display(name, disp, sizeof disp) < 0 || model_list_has(be->models, key))
        return;
    be->local_change_ms = net_now_ms();
    model_list_push(be->models, disp, key);
}

void backend_model_remove(struct backend *be, const char *name, int loaded)
{
    char key[NAME_KEY_MAX];
    struct model_list *l = loaded ? be->loaded : be->models;
    if (!l || name_key(name, key, sizeof key) < 0)
        return;
    be->local_change_ms = net_now_ms();
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0) {
            free(l->names[i]);
            free(l->keys[i]);
            free(l->labels[i]);
            l->n--;
            l->names[i] = l->names[l->n];
            l->keys[i] = l->keys[l->n];
            l->labels[i] = l->labels[l->n];
            return;
        }
}

void backend_adapt(struct backend *be, int ceiling)
{
    adapt_init(&be->adapt, ceiling);
    be->adapt_epoch++; /* each runner starts again from 1 (runner_cap) */
    be->max_concurrent = be->adapt.ceiling;
}

int model_list_has(const struct model_list *l, const char *key)
{
    for (int i = 0; l && i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0)
            return 1;
    return 0;
}

const char *model_list_label(const struct model_list *l, const char *key)
{
    for (int i = 0; l && i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0)
            return l->labels[i];
    return NULL;
}

int backend_serves(const struct backend *be, const char *key)
{
    if (!key)
        return 1;
    if (be->models_pending)
        return 0;
    return !be->models_known || model_list_has(be->models, key);
}

void backend_free(struct backend *be)
{
    if (!be)
        return;
    if (be->retired_link.le_prev) /* fleet.c's retired list: no head needed */
        LIST_REMOVE(be, retired_link);
    while (be->runners) {
        struct runner *rn = be->runners;
        be->runners = rn->next;
        free(rn->key);
        free(rn);
    }
    if (be->poll)
        upstream_abort(be->poll);
    if (be->poll_body)
        evbuffer_free(be->poll_body);
    model_list_free(be->models);
    model_list_free(be->loaded);
    json_decref(be->tags_json);
    json_decref(be->ps_json);
    if (be->probe)
        upstream_abort(be->probe);
    resolve_cancel(be);
    upstream_pool_drain(&be->target);
    tls_target_free(backend_tls(be)); /* after the last connection that used it */
    free_headers(be->hostport);
    free(be->tmpl);
    free(be->tmpl_url);
    free(be->name);
    free(be->url);
    free(be->host);
    free(be);
}

int backend_available(const struct backend *be, double now_ms)
{
    (void)now_ms;
    return !be->removed && be->healthy && be->admin == ADMIN_READY &&
           be->in_flight < be->max_concurrent;
}

int backend_takes(struct backend *be, const char *key, double now_ms)
{
    struct runner *rn;
    int cap;
    if (!backend_available(be, now_ms) || !backend_serves(be, key))
        return 0;
    if (!key || !(rn = backend_runner_find(be, key)))
        return 1; /* nothing of that model in flight there */
    cap = runner_cap(be, rn);
    return !cap || rn->in_flight < cap;
}

/* ---- runners ---- */

struct runner *backend_runner_find(const struct backend *be, const char *key)
{
    for (struct runner *rn = be->runners; key && rn; rn = rn->next)
        if (strcmp(rn->key, key) == 0)
            return rn;
    return NULL;
}

struct runner *backend_runner(struct backend *be, const char *key)
{
    struct runner *rn = backend_runner_find(be, key);
    if (rn || !key)
        return rn;
    if (!(rn = calloc(1, sizeof *rn)) || !(rn->key = strdup(key))) {
        free(rn);
        return NULL;
    }
    rn->embed = strstr(key, "embed") != NULL; /* until /api/show says (discover.c) */
    rn->cfg_serial = (unsigned)-1;               /* its cap is read on first use */
    rn->ctx = -1;
    rn->next = be->runners;
    be->runners = rn;
    return rn;
}

/* RN's cap from the config: model_caps (BE's row, then the top level),
 * else 1 for an embedding model, else 0. */
static int static_cap(const struct backend *be, const struct runner *rn)
{
    const struct px_config *cfg = be->px ? be->px->cfg : NULL;
    int cap = cfg ? config_model_cap(cfg, config_backend_row(cfg, be->name, be->tmpl), rn->key)
                  : 0;
    return cap ? cap : rn->embed ? 1 : 0;
}

int runner_cap(struct backend *be, struct runner *rn)
{
    unsigned serial = be->px && be->px->cfg ? be->px->cfg->serial : 0;
    int fixed = rn->cap;
    if (rn->cfg_serial != serial) { /* a reload, or what the runner is became known */
        rn->cfg_serial = serial;
        fixed = static_cap(be, rn);
        if (fixed != rn->cap && rn->adapt_epoch == be->adapt_epoch)
            rn->adapt_epoch = be->adapt_epoch - 1; /* a new ceiling: found again */
        rn->cap = fixed;
    }
    if (!be->adapt.on) {
        rn->adapt.on = 0;
        return rn->cap;
    }
    if (!rn->adapt.on || rn->adapt_epoch != be->adapt_epoch) {
        int ceiling = be->adapt.ceiling;
        /* Its first start in this process resumes at a knee saved before a
         * restart, if any (capstate.h); a restart of the search from 1. */
        adapt_resume(&rn->adapt, rn->cap && rn->cap < ceiling ? rn->cap : ceiling,
                     be->px ? capstate_knee(be->px, be, rn->key) : 0);
        rn->adapt_epoch = be->adapt_epoch;
    }
    return rn->adapt.cap;
}

int backend_model_cap(struct backend *be, const char *key)
{
    struct runner *rn = backend_runner(be, key);
    int cap = rn ? runner_cap(be, rn) : 0;
    return cap && cap < be->max_concurrent ? cap : be->max_concurrent;
}

int backend_model_in_flight(const struct backend *be, const char *key)
{
    const struct runner *rn = backend_runner_find(be, key);
    return rn ? rn->in_flight : 0;
}

void runner_acquire(struct runner *rn, int ctx, double now_ms)
{
    if (!rn)
        return;
    if (rn->adapt.on)
        adapt_inflight(&rn->adapt, rn->in_flight, now_ms);
    rn->in_flight++;
    rn->ctx = ctx;
    rn->ctx_from_ps = 0;
    rn->sent_ms = now_ms;
}

void runner_release(struct runner *rn, double now_ms)
{
    if (!rn)
        return;
    if (rn->adapt.on)
        adapt_inflight(&rn->adapt, rn->in_flight, now_ms);
    rn->in_flight--;
}

void backend_runners_from_ps(struct backend *be, double asked_ms)
{
    for (int i = 0; be->loaded && i < be->loaded->n; i++)
        backend_runner(be, be->loaded->keys[i]); /* a model loaded: what it runs with */
    for (struct runner *rn = be->runners; rn; rn = rn->next) {
        size_t i;
        json_t *m;
        if (rn->sent_ms >= asked_ms) /* sent since: what we sent is newer */
            continue;
        rn->ctx = -1; /* not loaded, unless listed */
        rn->ctx_from_ps = 0;
        json_array_foreach(be->ps_json, i, m) {
            const char *name = json_string_value(json_object_get(m, "name"));
            json_t *cl = json_object_get(m, "context_length");
            char key[NAME_KEY_MAX];
            if (name && name_key(name, key, sizeof key) == 0 && strcmp(key, rn->key) == 0) {
                rn->ctx = json_is_integer(cl) ? (int)json_integer_value(cl) : -1;
                rn->ctx_from_ps = rn->ctx >= 0;
            }
        }
    }
}

/* A runner counts in the effective cap while it has requests in flight,
 * and for this long after its last. */
#define RUNNER_ACTIVE_MS 60000.0

int backend_effective_cap(const struct backend *be, const struct adapt **why)
{
    const struct adapt *last = NULL;
    double now = net_now_ms();
    int sum = 0;
    if (!be->adapt.on) {
        *why = NULL;
        return be->max_concurrent;
    }
    for (const struct runner *rn = be->runners; rn; rn = rn->next) {
        if (!rn->adapt.on || rn->adapt_epoch != be->adapt_epoch)
            continue;
        if (rn->in_flight > 0 || now - rn->sent_ms < RUNNER_ACTIVE_MS)
            sum += rn->adapt.cap;
        if (!last || rn->adapt.changed_at >= last->changed_at)
            last = &rn->adapt;
    }
    if (!sum)
        sum = last ? last->cap : be->adapt.cap;
    *why = last ? last : &be->adapt;
    return sum < be->adapt.ceiling ? sum : be->adapt.ceiling;
}

const char *backend_state(const struct backend *be)
{
    if (be->admin == ADMIN_DISABLED)
        return "disabled";
    if (be->admin == ADMIN_DRAIN)
        return be->in_flight ? "draining" : "drained";
    return !be->healthy ? "down" : be->health_known ? "up" : "unknown";
}

void backend_set_admin(struct backend *be, enum backend_admin admin)
{
    be->admin = admin;
}

void backend_set_cap(struct backend *be, int cap)
{
    be->cap_override = cap != be->cfg_cap ? cap : 0;
    if (be->adapt.on) /* the ceiling: the cap is found again under it */
        backend_adapt(be, cap);
    else
        be->max_concurrent = cap;
}

void backend_feedback(struct backend *be, const char *key, long long tokens, int outcome,
                      int loaded, double now_ms)
{
    struct runner *rn = backend_runner_find(be, key);
    if (!rn)
        return;
    rn->loads += loaded;
    if (be->adapt.on && rn->adapt.on && rn->adapt_epoch == be->adapt_epoch)
        adapt_sample(&rn->adapt, rn->in_flight, tokens, outcome, now_ms);
}

void backend_count_tokens(struct backend *be, const char *key, long long tokens,
                          long long prompt)
{
    struct runner *rn = backend_runner_find(be, key);
    if (!rn)
        return;
    rn->tokens += tokens > 0 ? (unsigned long long)tokens : 0;
    rn->prompt_tokens += prompt > 0 ? (unsigned long long)prompt : 0;
}

void backend_ref(struct backend *be)
{
    be->refs++;
}

void backend_unref(struct backend *be)
{
    if (--be->refs == 0)
        backend_free(be);
}

void backend_acquire(struct backend *be)
{
    be->in_flight++;
}

void backend_release(struct backend *be)
{
    be->in_flight--;
}

void backend_mark_down(struct backend *be, const char *why)
{
    be->consecutive_ok = 0;
    be->health_known = 1;
    if (!be->healthy)
        return;
    be->healthy = 0;
    snprintf(be->down_reason, sizeof be->down_reason, "%s", why);
    be->down_since = (double)time(NULL);
    log_warn("backend %s: down: %s", be->name, why);
}

void backend_setup_failed(struct backend *be, const char *who)
{
    char reason[160];
    be->failed++;
    be->consecutive_failures++;
    size_t n = who ? net_copy(reason, sizeof reason, who, ": ") : 0;
    net_copy(reason + n, sizeof reason - n,
             be->target.setup_err[0] ? be->target.setup_err : "transport setup failed", NULL);
    backend_mark_down(be, reason);
}

void backend_note_failure(struct backend *be, int fail_after, const char *why)
{
    char reason[160];
    be->failed++;
    be->consecutive_ok = 0;
    if (++be->consecutive_failures >= fail_after && be->healthy) {
        snprintf(reason, sizeof reason, "%d failures in a row, the last: %s",
                 be->consecutive_failures, why);
        backend_mark_down(be, reason);
    }
}

void backend_note_success(struct backend *be)
{
    be->served++;
    be->health_known = 1;
    be->consecutive_failures = 0;
}
