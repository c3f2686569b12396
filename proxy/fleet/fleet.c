/* fleet.c - see fleet.h. */
#include "fleet.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "discover.h"
#include "health.h"
#include "resolve.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "upstream.h"

static struct backend *add(struct proxy *px, const struct config_backend *cb)
{
    struct backend *be = backend_new(cb);
    if (be) {
        be->px = px;
        resolve_backend(px->dns, be, health_address_found);
    }
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
    proxy_fleet_changed(px);
    return 0;
}

/* BE leaves the fleet: it takes nothing new, its requests in flight finish
 * there, and it is freed when the last of them ends (backend_unref). */
static void retire(struct proxy *px, struct backend *be)
{
    (void)px;
    be->removed = 1;
    be->target.closing = 1;
    upstream_pool_drain(&be->target); /* connections in use close when released */
    log_info("backend %s retired (%d requests in flight finish there)", be->name, be->in_flight);
    backend_unref(be); /* the fleet's reference */
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
    be->px = px;
    struct backend **b = realloc(px->backends, (size_t)(px->nbackends + 1) * sizeof *b);
    if (!b) {
        log_error("backend %s: out of memory, not added", be->name);
        backend_free(be);
        return -1;
    }
    b[px->nbackends++] = be;
    px->backends = b;
    proxy_fleet_changed(px);
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
    proxy_fleet_changed(px);
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

int fleet_apply(struct proxy *px, const struct px_config *cfg)
{
    struct backend **next = calloc((size_t)(cfg->nbackends + px->nbackends) + 1, sizeof *next);
    int n = 0;
    if (!next)
        return -1;
    for (int i = 0; i < cfg->nbackends; i++) {
        struct backend *be;
        if (cfg->backends[i].is_dns) { /* its addresses' backends stay while it does */
            n = keep_dns(px, &cfg->backends[i], next, n);
            continue;
        }
        be = find(px, &cfg->backends[i]);
        if (be) {
            recap(be, &cfg->backends[i]);
            backend_reconfigure(be, &cfg->backends[i]); /* headers, Host, TLS */
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
    /* The scheduler looks at the new fleet at once: it must never see the
     * old array once freed. */
    free(px->backends);
    px->backends = next;
    px->nbackends = n;
    proxy_fleet_changed(px);
    return 0;
}

void fleet_free(struct proxy *px)
{
    for (int i = 0; i < px->nbackends; i++)
        backend_unref(px->backends[i]); /* every request has ended by now */
    free(px->backends);
    px->backends = NULL;
    px->nbackends = 0;
}
