/* fleet.c - see fleet.h. */
#include "fleet.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "backend.h"
#include "config.h"
#include "discover.h"
#include "health.h"
#include "resolve.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "upstream.h"

/* Retired backends that a request still names (retire): a reload's row
 * for the same server takes one back (take), so that what it still runs
 * there counts against that row's cap. Of every proxy in the process (one
 * in practice; each entry knows its own, be->px); backend_free unlinks an
 * entry when its last request lets go of it. */
static LIST_HEAD(retired_list, backend) retired = LIST_HEAD_INITIALIZER(retired);

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
    LIST_INSERT_HEAD(&retired, be, retired_link);
    backend_unref(be); /* the fleet's reference: freed (and unlinked) if nothing names it */
}

/* BE's row is now CB: when its max_concurrent or adaptive changed (or
 * TAKEN: the row is another's, BE taken over by it), the row wins over the
 * runtime control's drain, disable or cap, and an adaptive backend finds
 * its cap again under the new ceiling (else it keeps the caps it found). */
static void recap(struct backend *be, const struct config_backend *cb, int taken)
{
    if (be->cfg_cap == cb->max_concurrent && be->adapt.on == !!cb->adaptive &&
        !(taken && (be->admin != ADMIN_READY || be->cap_override)))
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
        recap(be, cb, 0);
        next[n++] = be;
    }
    return n;
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

struct backend *fleet_retired_next(struct proxy *px, struct backend *prev)
{
    struct backend *be = prev ? LIST_NEXT(prev, retired_link) : LIST_FIRST(&retired);
    while (be && (be->px != px || be->in_flight <= 0))
        be = LIST_NEXT(be, retired_link);
    return be;
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

/* 1 when BE is the server CB names: the same host and port over the same
 * transport. Judged on the text, as config.c's "one server" warning first
 * does: "localhost" and "127.0.0.1" are two servers here (a row is not
 * resolved before it joins). */
static int same_server(const struct backend *be, const struct config_backend *cb)
{
    return be->port == cb->port && strcasecmp(be->host, cb->host) == 0 &&
           !backend_tls(be) == !cb->tls;
}

/* BE (of another name or url, the same server) is CB's from now on: its
 * name, url, cap and settings are the row's, and its dns row's TMPL,
 * TMPL_URL and TMPL_K (BE's own strings, stolen; NULL: CB is a url row);
 * what it runs, its runners, the caps it found, health and counters go on.
 * 0, or -1 when out of memory (BE unchanged). */
static int take_row(struct backend *be, const struct config_backend *cb, char *tmpl,
                    char *tmpl_url, int tmpl_k)
{
    char *name = strdup(cb->name), *url = strdup(cb->url);
    if (!name || !url) {
        free(name);
        free(url);
        return -1;
    }
    log_info("backend %s (%s%s) is %s (%s) from now on, the same server: its %d requests "
             "in flight count against its cap", be->name, be->url,
             be->removed ? ", retired" : "", cb->name, cb->url, be->in_flight);
    free(be->name);
    free(be->url);
    free(be->tmpl);
    free(be->tmpl_url);
    be->name = name;
    be->url = url;
    be->tmpl = tmpl;
    be->tmpl_url = tmpl_url;
    be->tmpl_k = tmpl_k;
    recap(be, cb, 1);
    backend_reconfigure(be, cb); /* headers, Host, TLS */
    return 0;
}

/* A retired backend of PX that a request still names, of CB's server, taken
 * over by CB (take_row, with the dns fields of TMPL_OF, or none: NULL) and
 * back in the fleet's hands (but not yet in px->backends); NULL: none. */
static struct backend *take_retired(struct proxy *px, const struct config_backend *cb,
                                    struct backend *tmpl_of)
{
    struct backend *be;
    LIST_FOREACH(be, &retired, retired_link) {
        if (be->px != px || !same_server(be, cb))
            continue;
        if (take_row(be, cb, tmpl_of ? tmpl_of->tmpl : NULL, tmpl_of ? tmpl_of->tmpl_url : NULL,
                     tmpl_of ? tmpl_of->tmpl_k : 0) < 0)
            return NULL; /* out of memory: CB's server gets a backend of its own */
        if (tmpl_of)
            tmpl_of->tmpl = tmpl_of->tmpl_url = NULL; /* BE's now */
        LIST_REMOVE(be, retired_link);
        be->retired_link.le_prev = NULL;
        be->removed = 0;
        be->target.closing = 0;
        backend_ref(be); /* the fleet's again */
        return be;
    }
    return NULL;
}

/* The backend that is CB's server under another name or url, taken over
 * by CB (take_row): one of the fleet no row of the new config keeps (KEPT,
 * the url rows' backends so far; not one of a dns row, which keep_dns
 * keeps), else a retired one a request still names (of a url or a dns
 * row), which rejoins. Either way the server's requests in flight stay
 * counted on one backend, so its cap holds across a rename or a drop and
 * re-add. NULL: none (CB's server is new to the fleet). */
static struct backend *take(struct proxy *px, const struct px_config *cfg,
                            struct backend *const *kept, const struct config_backend *cb)
{
    struct backend *be;
    for (int i = 0; i < px->nbackends; i++) {
        int in_use = 0;
        be = px->backends[i];
        for (int j = 0; j < cfg->nbackends; j++)
            in_use |= kept[j] == be;
        if (!in_use && !be->tmpl && same_server(be, cb))
            return take_row(be, cb, NULL, NULL, 0) == 0 ? be : NULL;
    }
    if ((be = take_retired(px, cb, NULL)))
        discover_rejoin(px, be); /* not polled while retired */
    return be;
}

struct backend *fleet_add(struct proxy *px, struct backend *be, const struct config_backend *cb)
{
    struct backend *old = take_retired(px, cb, be);
    struct backend **b;
    if (old) { /* BE's server still runs requests of OLD's: one backend, one cap */
        backend_free(be);
        be = old;
    }
    be->px = px;
    if (!(b = realloc(px->backends, (size_t)(px->nbackends + 1) * sizeof *b))) {
        log_error("backend %s: out of memory, not added", be->name);
        if (old)
            retire(px, be);
        else
            backend_free(be);
        return NULL;
    }
    b[px->nbackends++] = be;
    px->backends = b;
    proxy_fleet_changed(px);
    return be;
}

int fleet_apply(struct proxy *px, const struct px_config *cfg)
{
    struct backend **next = calloc((size_t)(cfg->nbackends + px->nbackends) + 1, sizeof *next);
    struct backend **kept = calloc((size_t)cfg->nbackends + 1, sizeof *kept); /* by row */
    int n = 0;
    if (!next || !kept) {
        free(next);
        free(kept);
        return -1;
    }
    for (int i = 0; i < cfg->nbackends; i++) /* first those of the same name and url */
        if (!cfg->backends[i].is_dns)
            kept[i] = find(px, &cfg->backends[i]);
    for (int i = 0; i < cfg->nbackends; i++) {
        const struct config_backend *cb = &cfg->backends[i];
        if (cb->is_dns) { /* its addresses' backends stay while it does */
            n = keep_dns(px, cb, next, n);
            continue;
        }
        if (kept[i]) {
            recap(kept[i], cb, 0);
            backend_reconfigure(kept[i], cb); /* headers, Host, TLS */
        } else if (!(kept[i] = take(px, cfg, kept, cb)) && (kept[i] = add(px, cb))) {
            log_info("backend %s added (%s)", kept[i]->name, kept[i]->url);
            discover_rejoin(px, kept[i]); /* no request for a model before its answer */
        }
        if (kept[i])
            next[n++] = kept[i];
    }
    for (int i = 0; i < px->nbackends; i++) {
        int in_use = 0;
        for (int j = 0; j < n; j++)
            in_use |= next[j] == px->backends[i];
        if (!in_use)
            retire(px, px->backends[i]);
    }
    /* The scheduler looks at the new fleet at once: it must never see the
     * old array once freed. */
    free(kept);
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
