/* dnsfleet.c - see dnsfleet.h. */
#include "dnsfleet.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "discover.h"
#include "dnsq.h"
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
    int pending;  /* a lookup runs: its callback clears this */
    int live;     /* still in the config */
    int dead;     /* dropped while a lookup ran: its callback frees it */
    int trunc_n;  /* the last answer was a part of n addresses (TCP failed); -1: whole */
    int over_tcp; /* the last answer needed TCP (more than a UDP answer holds) */
    unsigned long long truncated; /* answers used as a part: the metric */
    struct tmpl *next;
};

/* The dns rows of a proxy (px->dnsfleet). */
struct dnsfleet {
    struct dnsq *dns; /* with `resolvers`, else /etc/resolv.conf */
    struct tmpl *tmpls;
};

/* A backend of T and its address, for one answer's comparison. */
struct mine {
    unsigned addr;
    struct backend *be;
};

static int by_addr(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

static int of_tmpl(const struct backend *be, const struct tmpl *t)
{
    return be->tmpl && !strcmp(be->tmpl, t->name) && !strcmp(be->tmpl_url, t->url);
}

static void join(struct tmpl *t, unsigned addr, int k)
{
    struct config_backend cb = {0};
    char ip[INET_ADDRSTRLEN], name[96], url[128];
    struct backend *be;
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
    /* BE, or the retired backend of this address that still runs requests
     * there, taken back so that they count against the cap (BE freed). */
    if ((be = fleet_add(t->px, be, &cb)))
        discover_rejoin(t->px, be); /* its models before any request for one */
}

static void tmpl_free(struct tmpl *t);

/* Log what changed in how T's answers come: over TCP, or truncated (a
 * part: once per change of its count), and count a truncated one. */
static void note_answer(struct tmpl *t, const struct dnsq_answer *a)
{
    int tcp = a->udp_truncated && !a->truncated;
    if (a->truncated) {
        t->truncated++;
        if (t->trunc_n != a->n)
            log_warn("dns %s (%s): the answer was truncated (%d addresses over UDP) and TCP "
                     "could not complete it (%s): new addresses join, none leaves until an "
                     "answer is whole",
                     t->name, t->host, a->n, dnsq_strerror(a->tcp_status));
        t->trunc_n = a->n;
        return;
    }
    if (t->trunc_n >= 0)
        log_info("dns %s (%s): a whole answer again (%d addresses)", t->name, t->host, a->n);
    else if (tcp && !t->over_tcp)
        log_info("dns %s (%s): %d addresses, more than a UDP answer holds: asked over TCP", t->name,
                 t->host, a->n);
    t->trunc_n = -1;
    t->over_tcp = tcp;
}

/* The backends of T now, sorted by address, into *OUT (*N); the highest
 * number one has into *MAXK. Returns 0 or -1 (out of memory). */
static int mine_of(struct tmpl *t, struct mine **out, int *n, int *maxk)
{
    struct proxy *px = t->px;
    *n = *maxk = 0;
    if (!(*out = calloc((size_t)px->nbackends + 1, sizeof **out)))
        return -1;
    for (int i = 0; i < px->nbackends; i++) {
        struct backend *be = px->backends[i];
        struct in_addr in;
        if (!of_tmpl(be, t) || inet_pton(AF_INET, be->host, &in) != 1)
            continue;
        (*out)[*n].addr = in.s_addr;
        (*out)[(*n)++].be = be;
        if (be->tmpl_k > *maxk)
            *maxk = be->tmpl_k;
    }
    qsort(*out, (size_t)*n, sizeof **out, by_addr);
    return 0;
}

/* Apply the addresses A[0..N) (sorted, no duplicates) to T's backends: a
 * new one joins with the lowest number free (addresses that left are
 * forgotten: numbers are reused, nothing grows with the addresses seen),
 * and, unless the answer is only a PART, one it lacks leaves. The order
 * of an answer means nothing: only its set. */
static void apply(struct tmpl *t, const unsigned *a, int n, int part)
{
    struct mine *m;
    int nm, maxk, k = 1;
    char *used;
    if (mine_of(t, &m, &nm, &maxk) < 0)
        return;
    if (!(used = calloc((size_t)maxk + 2, 1))) {
        free(m);
        return;
    }
    for (int i = 0; i < nm; i++)
        used[m[i].be->tmpl_k] = 1;
    for (int i = 0; i < n; i++) {
        if (bsearch(&a[i], m, (size_t)nm, sizeof *m, by_addr))
            continue;
        while (k <= maxk && used[k])
            k++;
        join(t, a[i], k++);
    }
    for (int i = 0; i < nm && !part; i++) { /* those the answer no longer has */
        struct backend *be = m[i].be;
        if (bsearch(&m[i].addr, a, (size_t)n, sizeof *a, by_addr))
            continue;
        log_info("backend %s leaves (%s no longer resolves to %s)", be->name, t->host, be->host);
        fleet_remove(t->px, be); /* may free it */
    }
    free(used);
    free(m);
}

static void on_resolved(const struct dnsq_answer *a, void *arg)
{
    struct tmpl *t = arg;
    unsigned *s;
    int n = 0;
    t->pending = 0;
    if (t->dead) {
        tmpl_free(t);
        return;
    }
    if (a->cancelled || !t->live)
        return;
    if (a->status) {
        log_warn("dns %s: %s; its backends stay as they are", t->host, dnsq_strerror(a->status));
        return;
    }
    note_answer(t, a);
    if (!(s = malloc(((size_t)a->n + 1) * sizeof *s)))
        return;
    memcpy(s, a->addrs, (size_t)a->n * sizeof *s);
    qsort(s, (size_t)a->n, sizeof *s, by_addr);
    for (int i = 0; i < a->n; i++) /* an address twice is one backend */
        if (n == 0 || s[n - 1] != s[i])
            s[n++] = s[i];
    apply(t, s, n, a->truncated);
    free(s);
}

static struct dnsq *dns_of(const struct tmpl *t)
{
    return t->px->dnsfleet ? t->px->dnsfleet->dns : NULL;
}

static void resolve(struct tmpl *t)
{
    if (t->pending || !dns_of(t))
        return;
    t->pending = 1;
    if (dnsq_a(dns_of(t), t->host, on_resolved, t) < 0) {
        t->pending = 0;
        log_warn("dns %s: out of memory; its backends stay as they are", t->host);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    resolve(arg);
}

/* Free T, or, while its lookup runs, let its callback (which runs from
 * the loop, or from dnsq_free) free it. */
static void tmpl_free(struct tmpl *t)
{
    if (t->pending) {
        t->dead = 1;
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
    if (!(df->dns = dnsq_new(px->base, c->resolvers, c->nresolvers))) {
        free(df);
        return -1;
    }
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
    t->trunc_n = -1;
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
    if (!df)
        return;
    while (df->tmpls) {
        struct tmpl *t = df->tmpls;
        df->tmpls = t->next;
        t->live = 0;
        tmpl_free(t); /* one whose lookup runs: freed by its callback, from dnsq_free */
    }
    dnsq_free(df->dns);
    free(df);
    px->dnsfleet = NULL;
}

unsigned long long dnsfleet_truncated(const struct proxy *px, const char *name, const char *url)
{
    for (const struct tmpl *t = px->dnsfleet ? px->dnsfleet->tmpls : NULL; t; t = t->next)
        if (!strcmp(t->name, name) && !strcmp(t->url, url))
            return t->truncated;
    return 0;
}
