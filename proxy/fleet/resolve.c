/* resolve.c - see resolve.h. A lookup is a small object of its own between
 * the backend and evdns: evdns calls back even after a cancel (later, from
 * the loop), so the backend may be gone by then; cancelling detaches it. */
#include "resolve.h"

#include <event2/dns.h>
#include <event2/util.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "log.h"

struct resolving {
    struct backend *be; /* NULL once cancelled */
    struct evdns_getaddrinfo_request *req;
    resolve_found_fn found;
};

static void take(struct backend *be, const struct evutil_addrinfo *ai)
{
    memcpy(&be->target.addr, ai->ai_addr, ai->ai_addrlen);
    be->target.addrlen = (socklen_t)ai->ai_addrlen;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct resolving *r = arg;
    struct backend *be = r->be;
    if (be) {
        be->resolving = NULL;
        if (result == 0 && res && !be->target.addrlen) {
            take(be, res);
            if (r->found) /* its first address: the caller asks it now */
                r->found(be);
        } else if (result == 0 && res)
            take(be, res);
        else if (result != EVUTIL_EAI_CANCEL)
            log_warn("backend %s: cannot resolve %s: %s", be->name, be->host,
                     evutil_gai_strerror(result));
    }
    if (res)
        evutil_freeaddrinfo(res);
    free(r);
}

void resolve_backend(struct evdns_base *dns, struct backend *be,
                     resolve_found_fn found)
{
    struct evutil_addrinfo hints, *res = NULL;
    struct resolving *r;
    struct evdns_getaddrinfo_request *req;
    char port[16];
    if (be->resolving)
        return;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", be->port);
    if (evutil_getaddrinfo(be->host, port, &hints, &res) == 0 && res) { /* no lookup */
        take(be, res);
        evutil_freeaddrinfo(res);
        return;
    }
    if (!dns || !(r = calloc(1, sizeof *r))) {
        log_warn("backend %s: cannot resolve %s now", be->name, be->host);
        return;
    }
    hints.ai_flags = EVUTIL_AI_NUMERICSERV | EVUTIL_AI_ADDRCONFIG;
    r->be = be;
    r->found = found;
    be->resolving = r;
    /* May answer at once (from /etc/hosts): then on_resolved has run and
     * freed R (it cleared be->resolving), and NULL comes back. */
    req = evdns_getaddrinfo(dns, be->host, port, &hints, on_resolved, r);
    if (be->resolving == r)
        r->req = req;
}

void resolve_cancel(struct backend *be)
{
    struct resolving *r = be->resolving;
    if (!r)
        return;
    be->resolving = NULL;
    r->be = NULL;
    if (r->req)
        evdns_getaddrinfo_cancel(r->req);
}
