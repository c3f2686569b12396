/* fleet.c - see fleet.h. */
#include "fleet.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "accesslog.h"
#include "config.h"
#include "conns.h"
#include "discover.h"
#include "dnsfleet.h"
#include "health.h"
#include "resolve.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "upstream.h"

static struct backend *add(struct proxy *px, const struct config_backend *cb)
{
    struct backend *be = backend_new(cb);
    if (be)
        resolve_backend(px->dns, be);
    return be;
}

int fleet_init(struct proxy *px)
{
    px->backends = calloc((size_t)px->cfg->nbackends, sizeof *px->backends);
    if (!px->backends)
        return -1;
    for (int i = 0; i < px->cfg->nbackends; i++) {
        if (px->cfg->backends[i].is_dns) /* its addresses come from dnsfleet.c */
            continue;
        if (!(px->backends[px->nbackends] = add(px, &px->cfg->backends[i])))
            return -1;
        px->nbackends++;
    }
    sched_set_backends(&px->sched, px->backends, px->nbackends);
    return 0;
}

static void retire(struct proxy *px, struct backend *be)
{
    struct backend **r = realloc(px->retired, (size_t)(px->nretired + 1) * sizeof *r);
    be->removed = 1;
    be->target.closing = 1;
    upstream_pool_drain(&be->target); /* connections in use close when released */
    if (r) {
        px->retired = r;
        px->retired[px->nretired++] = be;
    }
    log_info("backend %s retired (%d requests in flight finish there)", be->name, be->in_flight);
}

/* BE's row is now CB: when its max_concurrent or adaptive changed, the
 * row wins over the runtime control's drain, disable or cap, and an
 * adaptive backend finds its cap again under the new ceiling. */
static void recap(struct backend *be, const struct config_backend *cb)
{
    if (be->cfg_cap == cb->max_concurrent && be->adapt.on == !!cb->adaptive)
        return;
    log_info("backend %s: max_concurrent %d%s -> %d%s%s", be->name, be->cfg_cap,
             be->adapt.on ? " (adaptive)" : "", cb->max_concurrent,
             cb->adaptive ? " (adaptive)" : "",
             be->admin != ADMIN_READY || be->cap_override
                 ? " (the runtime drain, disable or cap is undone)"
                 : "");
    be->max_concurrent = be->cfg_cap = cb->max_concurrent;
    be->cap_override = 0;
    be->admin = ADMIN_READY;
    be->adapt.on = 0;
    if (cb->adaptive)
        backend_adapt(be, be->cfg_cap);
}

/* The backends made from the dns row CB (same name and name:port) go on,
 * re-capped if its row changed; appended to NEXT[N..]; returns the new N. */
static int keep_dns(struct proxy *px, const struct config_backend *cb, struct backend **next,
                    int n)
{
    for (int i = 0; i < px->nbackends; i++) {
        struct backend *be = px->backends[i];
        if (!be->tmpl || strcmp(be->tmpl, cb->name) || strcmp(be->tmpl_url, cb->url))
            continue;
        recap(be, cb);
        next[n++] = be;
    }
    return n;
}

int fleet_add(struct proxy *px, struct backend *be)
{
    struct backend **b = realloc(px->backends, (size_t)(px->nbackends + 1) * sizeof *b);
    if (!b) {
        log_error("backend %s: out of memory, not added", be->name);
        backend_free(be);
        return -1;
    }
    b[px->nbackends++] = be;
    px->backends = b;
    sched_set_backends(&px->sched, px->backends, px->nbackends);
    return 0;
}

void fleet_remove(struct proxy *px, struct backend *be)
{
    int k = 0;
    for (int i = 0; i < px->nbackends; i++)
        if (px->backends[i] != be)
            px->backends[k++] = px->backends[i];
    if (k == px->nbackends)
        return;
    px->nbackends = k;
    retire(px, be);
    sched_set_backends(&px->sched, px->backends, px->nbackends);
}

/* The current backend called NAME at URL, or NULL. */
static struct backend *find(struct proxy *px, const struct config_backend *cb)
{
    for (int i = 0; i < px->nbackends; i++)
        if (strcmp(px->backends[i]->name, cb->name) == 0 &&
            strcmp(px->backends[i]->url, cb->url) == 0)
            return px->backends[i];
    return NULL;
}

void fleet_settings(struct proxy *px)
{
    const struct px_config *c = px->cfg;
    if (sched_configure(&px->sched, c) < 0)
        log_error("out of memory: the keys' limits are not updated");
    px->uto.connect = net_timeval(c->connect_s);
    px->uto.first_byte = net_timeval(c->first_byte_s);
    px->uto.idle = net_timeval(c->idle_s);
    health_settings(px);
    if (accesslog_configure(c->access_log, c->access_json) < 0)
        log_error("logging.access: cannot open %s: %s; the access log stays where it was",
                  c->access_log, strerror(errno));
    conns_settings(px);
}

void fleet_apply(struct proxy *px, struct px_config *cfg)
{
    struct backend **next = calloc((size_t)(cfg->nbackends + px->nbackends) + 1, sizeof *next);
    int n = 0;
    if (!next) {
        log_error("reload: out of memory; the old config stays");
        config_free(cfg);
        return;
    }
    for (int i = 0; i < cfg->nbackends; i++) {
        struct backend *be;
        if (cfg->backends[i].is_dns) { /* its addresses' backends stay while it does */
            n = keep_dns(px, &cfg->backends[i], next, n);
            continue;
        }
        be = find(px, &cfg->backends[i]);
        if (be) {
            recap(be, &cfg->backends[i]);
        } else if ((be = add(px, &cfg->backends[i]))) {
            log_info("backend %s added (%s)", be->name, be->url);
            discover_rejoin(px, be); /* no request for a model before its answer */
        }
        if (be)
            next[n++] = be;
    }
    for (int i = 0; i < px->nbackends; i++) {
        int kept = 0;
        for (int j = 0; j < n; j++)
            kept |= next[j] == px->backends[i];
        if (!kept)
            retire(px, px->backends[i]);
    }
    /* The scheduler looks at the fleet from here on (fleet_settings below
     * may dispatch): it must never see the old array once freed. */
    free(px->backends);
    px->backends = next;
    px->nbackends = n;
    px->sched.backends = next;
    px->sched.nbackends = n;
    if (strcmp(cfg->listen, px->cfg->listen) != 0)
        log_warn("reload: listen %s -> %s needs a restart; still on %s", px->cfg->listen,
                 cfg->listen, px->cfg->listen);
    config_free(px->cfg);
    px->cfg = cfg;
    fleet_settings(px);
    log_info("reloaded %s: %d backends", cfg->file, n);
    sched_set_backends(&px->sched, px->backends, px->nbackends); /* new slots, new keys */
}

void fleet_free(struct proxy *px)
{
    for (int i = 0; i < px->nbackends; i++)
        backend_free(px->backends[i]);
    for (int i = 0; i < px->nretired; i++)
        backend_free(px->retired[i]);
    free(px->backends);
    free(px->retired);
    px->backends = px->retired = NULL;
    px->nbackends = px->nretired = 0;
}
