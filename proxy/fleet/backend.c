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
#include "upstream.h"

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
    if (strchr(be->host, ':'))
        snprintf(be->hostport, sizeof be->hostport, "[%s]:%d", be->host, be->port);
    else
        snprintf(be->hostport, sizeof be->hostport, "%s:%d", be->host, be->port);
    if (!be->name || !be->url || !be->host) {
        backend_free(be);
        return NULL;
    }
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
    return be->healthy ? "up" : "down";
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
    if (!be->healthy)
        return;
    be->healthy = 0;
    snprintf(be->down_reason, sizeof be->down_reason, "%s", why);
    be->down_since = (double)time(NULL);
    log_warn("backend %s: down: %s", be->name, why);
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
    be->consecutive_failures = 0;
}
