/* dnsfleet.c - see dnsfleet.h. */
#include "dnsfleet.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "discover.h"
#include "fleet.h"
#include "log.h"
#include "resolve.h"
#include "net.h"
#include "proxy.h"

/* One dns row: its lookups. */
struct tmpl {
    struct proxy *px;
    char *name, *url, *host;
    int port, cap, adaptive;
    double resolve_s;
    struct event *timer;
    struct evdns_request *pending;
    int live; /* still in the config */
    int dead; /* dropped while a lookup ran: its callback frees it */
    struct tmpl *next;
};

/* The dns rows of a proxy (px->dnsfleet). */
struct dnsfleet {
    struct evdns_base *dns; /* with `resolvers`, else /etc/resolv.conf */
    struct tmpl *tmpls;
};

static struct backend *find(struct proxy *px, const struct tmpl *t, unsigned addr)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr, ip, sizeof ip);
    for (int i = 0; i < px->nbackends; i++) {
        struct backend *be = px->backends[i];
        if (be->tmpl && !strcmp(be->tmpl, t->name) && !strcmp(be->tmpl_url, t->url) &&
            !strcmp(be->host, ip))
            return be;
    }
    return NULL;
}

/* The number a new address of T gets: the lowest that no backend of T
 * has now. Addresses that left are forgotten (pods get a new address on
 * every restart: a table of every address ever seen would only grow). */
static int number_of(struct tmpl *t)
{
    struct proxy *px = t->px;
    for (int k = 1;; k++) {
        int used = 0;
        for (int i = 0; i < px->nbackends && !used; i++) {
            const struct backend *be = px->backends[i];
            used = be->tmpl && be->tmpl_k == k && !strcmp(be->tmpl, t->name) &&
                   !strcmp(be->tmpl_url, t->url);
        }
        if (!used)
            return k;
    }
}

static void join(struct tmpl *t, unsigned addr)
{
    struct config_backend cb = {0};
    char ip[INET_ADDRSTRLEN], name[96], url[128];
    struct backend *be;
    int k = number_of(t);
    inet_ntop(AF_INET, &addr, ip, sizeof ip);
    snprintf(name, sizeof name, "%s-%d", t->name, k);
    snprintf(url, sizeof url, "http://%s:%d", ip, t->port);
    cb.name = name;
    cb.url = url;
    cb.host = ip;
    cb.port = t->port;
    cb.max_concurrent = t->cap;
    cb.adaptive = t->adaptive;
    if (!(be = backend_new(&cb)))
        return;
    resolve_backend(NULL, be, NULL); /* a numeric address: at once */
    be->tmpl = strdup(t->name);
    be->tmpl_url = strdup(t->url);
    be->tmpl_k = k;
    if (!be->tmpl || !be->tmpl_url) {
        backend_free(be);
        return;
    }
    log_info("backend %s joins (%s resolves to %s)", name, t->host, ip);
    if (fleet_add(t->px, be) == 0)
        discover_rejoin(t->px, be); /* its models before any request for one */
}

static void tmpl_free(struct tmpl *t);

static void on_resolved(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct tmpl *t = arg;
    struct proxy *px = t->px;
    unsigned *a = addresses;
    (void)ttl;
    t->pending = NULL;
    if (t->dead) {
        tmpl_free(t);
        return;
    }
    if (!t->live || result == DNS_ERR_SHUTDOWN || result == DNS_ERR_CANCEL)
        return;
    if (result != DNS_ERR_NONE || type != DNS_IPv4_A) {
        log_warn("dns %s: %s; its backends stay as they are", t->host,
                 evdns_err_to_string(result));
        return;
    }
    for (int i = 0; i < count; i++)
        if (!find(px, t, a[i]))
            join(t, a[i]);
    for (int i = 0; i < px->nbackends; i++) { /* those the answer no longer has */
        struct backend *be = px->backends[i];
        struct in_addr in;
        int there = 0;
        if (!be->tmpl || strcmp(be->tmpl, t->name) || strcmp(be->tmpl_url, t->url) ||
            inet_pton(AF_INET, be->host, &in) != 1)
            continue;
        for (int j = 0; j < count && !there; j++)
            there = a[j] == in.s_addr;
        if (!there) {
            log_info("backend %s leaves (%s no longer resolves to %s)", be->name, t->host,
                     be->host);
            fleet_remove(px, be);
            i--;
        }
    }
}

static struct evdns_base *dns_of(const struct tmpl *t)
{
    return t->px->dnsfleet ? t->px->dnsfleet->dns : NULL;
}

static void resolve(struct tmpl *t)
{
    if (t->pending || !dns_of(t))
        return;
    t->pending =
        evdns_base_resolve_ipv4(dns_of(t), t->host, DNS_QUERY_NO_SEARCH, on_resolved, t);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    resolve(arg);
}

/* Free T, or, while its lookup runs, cancel it and let its callback (which
 * evdns runs later, from the loop) free it. */
static void tmpl_free(struct tmpl *t)
{
    if (t->pending) {
        t->dead = 1;
        evdns_cancel_request(dns_of(t), t->pending);
        return;
    }
    if (t->timer)
        event_free(t->timer);
    free(t->name);
    free(t->url);
    free(t->host);
    free(t);
}

static int start_dns(struct proxy *px)
{
    const struct px_config *c = px->cfg;
    struct dnsfleet *df = px->dnsfleet;
    if (df)
        return 0;
    if (!(df = calloc(1, sizeof *df)))
        return -1;
    df->dns = evdns_base_new(px->base, c->nresolvers ? 0 : EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!df->dns) {
        free(df);
        return -1;
    }
    for (int i = 0; i < c->nresolvers; i++)
        if (evdns_base_nameserver_ip_add(df->dns, c->resolvers[i]) != 0)
            log_warn("resolvers: cannot use %s", c->resolvers[i]);
    evdns_base_set_option(df->dns, "timeout:", "2");
    evdns_base_set_option(df->dns, "attempts:", "2");
    px->dnsfleet = df;
    return 0;
}

/* A new template for the dns row CB, or NULL when out of memory. */
static struct tmpl *tmpl_new(struct proxy *px, const struct config_backend *cb)
{
    struct tmpl *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->px = px;
    t->name = strdup(cb->name);
    t->url = strdup(cb->url);
    t->host = strdup(cb->host);
    t->port = cb->port;
    t->timer = event_new(px->base, -1, EV_PERSIST, on_timer, t);
    if (!t->name || !t->url || !t->host || !t->timer) {
        tmpl_free(t);
        return NULL;
    }
    t->next = px->dnsfleet->tmpls;
    px->dnsfleet->tmpls = t;
    return t;
}

int dnsfleet_apply(struct proxy *px)
{
    const struct px_config *c = px->cfg;
    struct tmpl **p;
    for (struct tmpl *t = px->dnsfleet ? px->dnsfleet->tmpls : NULL; t; t = t->next)
        t->live = 0;
    for (int i = 0; i < c->nbackends; i++) {
        const struct config_backend *cb = &c->backends[i];
        struct tmpl *t;
        struct timeval tv = net_timeval(cb->resolve_s);
        if (!cb->is_dns)
            continue;
        if (start_dns(px) < 0)
            return -1;
        for (t = px->dnsfleet->tmpls; t && (strcmp(t->name, cb->name) || strcmp(t->url, cb->url));
             t = t->next)
            ;
        if (!t && !(t = tmpl_new(px, cb)))
            return -1;
        t->live = 1;
        t->cap = cb->max_concurrent;
        t->adaptive = cb->adaptive;
        t->resolve_s = cb->resolve_s;
        event_add(t->timer, &tv);
        resolve(t);
    }
    /* Rows a reload dropped: fleet_apply retired their backends. */
    for (p = px->dnsfleet ? &px->dnsfleet->tmpls : NULL; p && *p;) {
        struct tmpl *t = *p;
        if (t->live) {
            p = &t->next;
            continue;
        }
        *p = t->next;
        tmpl_free(t);
    }
    return 0;
}

void dnsfleet_stop(struct proxy *px)
{
    struct dnsfleet *df = px->dnsfleet;
    int waiting = 0;
    if (!df)
        return;
    while (df->tmpls) {
        struct tmpl *t = df->tmpls;
        df->tmpls = t->next;
        t->live = 0;
        waiting |= t->pending != NULL;
        tmpl_free(t);
    }
    /* A cancelled lookup's callback is deferred: let it run (and free its
     * template) before its base goes. */
    if (waiting)
        event_base_loop(px->base, EVLOOP_NONBLOCK);
    evdns_base_free(df->dns, 0);
    free(df);
    px->dnsfleet = NULL;
}
