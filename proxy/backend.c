/* backend.c - see backend.h. */
#include "backend.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "upstream.h"

int backend_resolve(struct backend *be)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    int rc;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", be->port);
    rc = getaddrinfo(be->host, port, &hints, &res);
    if (rc != 0 || !res) {
        log_warn("backend %s: cannot resolve %s: %s", be->name, be->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&be->addr, res->ai_addr, res->ai_addrlen);
    be->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
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
    be->max_concurrent = cb->max_concurrent;
    be->healthy = 1;
    if (strchr(be->host, ':'))
        snprintf(be->hostport, sizeof be->hostport, "[%s]:%d", be->host, be->port);
    else
        snprintf(be->hostport, sizeof be->hostport, "%s:%d", be->host, be->port);
    backend_resolve(be);
    return be;
}

void model_list_free(struct model_list *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++) {
        free(l->names[i]);
        free(l->keys[i]);
    }
    free(l->names);
    free(l->keys);
    free(l);
}

int model_list_has(const struct model_list *l, const char *key)
{
    for (int i = 0; l && i < l->n; i++)
        if (strcmp(l->keys[i], key) == 0)
            return 1;
    return 0;
}

int backend_serves(const struct backend *be, const char *key)
{
    return !key || !be->models_known || model_list_has(be->models, key);
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
    upstream_pool_drain(be);
    if (be->wake)
        event_free(be->wake);
    free(be->name);
    free(be->url);
    free(be->host);
    free(be);
}

int backend_available(const struct backend *be, double now_ms)
{
    if (be->removed || be->in_flight >= be->max_concurrent)
        return 0;
    return be->healthy || now_ms >= be->retry_at_ms;
}

/* a->in/a->max < b->in/b->max, without division. */
static int less_loaded(const struct backend *a, const struct backend *b)
{
    return (long long)a->in_flight * b->max_concurrent <
           (long long)b->in_flight * a->max_concurrent;
}

struct backend *backend_pick(struct backend **bes, int n, unsigned *rr,
                             const struct backend *avoid, const char *key, double now_ms)
{
    struct backend *best = NULL, *fallback = NULL;
    int best_loaded = 0;
    unsigned start = n ? *rr % (unsigned)n : 0;
    for (int k = 0; k < n; k++) {
        struct backend *be = bes[(start + (unsigned)k) % (unsigned)n];
        int loaded;
        if (!backend_available(be, now_ms) || !backend_serves(be, key))
            continue;
        if (be == avoid) {
            fallback = be;
            continue;
        }
        loaded = key && model_list_has(be->loaded, key);
        if (!best || less_loaded(be, best) ||
            (loaded && !best_loaded && !less_loaded(best, be))) {
            best = be;
            best_loaded = loaded;
        }
    }
    if (!best)
        best = fallback;
    if (best)
        (*rr)++;
    return best;
}

void backend_acquire(struct backend *be)
{
    be->in_flight++;
}

void backend_release(struct backend *be)
{
    be->in_flight--;
}

void backend_note_failure(struct backend *be, int fail_after, double retry_s, double now_ms)
{
    be->failed++;
    be->consecutive_failures++;
    if (be->consecutive_failures >= fail_after) {
        if (be->healthy)
            log_warn("backend %s: down after %d failures in a row", be->name,
                     be->consecutive_failures);
        be->healthy = 0;
        be->retry_at_ms = now_ms + retry_s * 1000.0;
        if (be->wake) {
            struct timeval tv = {(time_t)retry_s, (suseconds_t)((retry_s - (time_t)retry_s) * 1e6)};
            evtimer_add(be->wake, &tv);
        }
    }
}

void backend_note_success(struct backend *be)
{
    be->served++;
    be->consecutive_failures = 0;
    if (!be->healthy)
        log_info("backend %s: up again", be->name);
    be->healthy = 1;
}
