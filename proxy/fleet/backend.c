/* backend.c - see backend.h. */
#include "backend.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "net.h"
#include "names.h"
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
    be->max_concurrent = be->adapt.cap;
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

void backend_feedback(struct backend *be, long long tokens, int outcome, double now_ms)
{
    if (be->adapt.on)
        be->max_concurrent = adapt_sample(&be->adapt, be->in_flight, tokens, outcome, now_ms);
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
    if (be->adapt.on)
        adapt_inflight(&be->adapt, be->in_flight, net_now_ms());
    be->in_flight++;
}

void backend_release(struct backend *be)
{
    if (be->adapt.on)
        adapt_inflight(&be->adapt, be->in_flight, net_now_ms());
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
