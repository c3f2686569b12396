/* reqtext.h - the one builder of what is sent to a backend: the request
 * line, the head, the body; and the one header policy (CONTRACT.md,
 * Headers). Sessions, fan-outs, health checks and model discovery all
 * build their requests here, so a rule about headers (Host rewritten,
 * hop-by-hop dropped, X-Forwarded-For and Via (via.h) added, the proxy's keys never
 * forwarded, a backend's own headers) holds for every request kind. */
#ifndef PX_REQTEXT_H
#define PX_REQTEXT_H

#include <stddef.h>

struct evbuffer;
struct evkeyvalq;

struct reqtext {
    const char *method;              /* "GET", "POST"... */
    const char *target;              /* origin form: path and query */
    const char *host;                /* the Host header: the backend's host:port */
    const struct evkeyvalq *headers; /* the client's, filtered (NULL: the proxy's own request) */
    const char *peer;                /* the client's address for X-Forwarded-For (NULL: none) */
    int keys;                        /* auth.keys is set: Authorization is the proxy's, not passed */
    struct evbuffer *body;           /* copied, not drained (NULL: none) */
    int length;                      /* send Content-Length even for an empty body (POST, PUT) */
};

/* Append the whole request of R to OUT. */
void reqtext_build(struct evbuffer *out, const struct reqtext *r);

/* 1 when NAME is a hop-by-hop header (never forwarded either way). */
int reqtext_hop_by_hop(const char *name);

#endif
