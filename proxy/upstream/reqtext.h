/* reqtext.h - the one builder of what is sent to a backend: the request
 * line, the head, the body; and the one header policy (CONTRACT.md,
 * Headers). Sessions, fan-outs, health checks and model discovery all
 * build their requests here, so a rule about headers (Host rewritten,
 * hop-by-hop dropped, X-Forwarded-For and Via (via.h) added, the proxy's
 * keys never forwarded in any spelling, Origin never forwarded, a backend's
 * own headers) holds for every request kind. */
#ifndef PX_REQTEXT_H
#define PX_REQTEXT_H

#include <stddef.h>

struct evbuffer;
struct evkeyvalq;

/* What a backend puts on every request sent to it, whoever builds it:
 * the Host header, and its own headers (config `headers`: a key for the
 * TLS terminator in front of a remote Ollama), which replace a client's
 * of the same name. Its holder owns the strings. A backend holds it as an
 * array of one (as GMP's mpz_t), so that `.host = be->hostport` passes a
 * pointer to it. */
struct reqtext_host {
    char name[300]; /* the Host header: the backend's host:port, or tls.server_name */
    struct reqtext_header {
        char *name, *value;
    } *headers;
    int nheaders;
};

struct reqtext {
    const char *method;              /* "GET", "POST"... */
    const char *target;              /* origin form: path and query */
    const struct reqtext_host *host; /* the backend's Host and headers */
    const struct evkeyvalq *headers; /* the client's, filtered (NULL: the proxy's own request) */
    const char *peer;                /* the client's address for X-Forwarded-For (NULL: none) */
    int keys;                        /* auth.keys is set: Authorization and x-api-key are the
                                        proxy's, not passed */
    struct evbuffer *body;           /* copied, not drained (NULL: none) */
    int length;                      /* send Content-Length even for an empty body (POST, PUT) */
};

/* Append the whole request of R to OUT. The backend's headers are never
 * logged: OUT goes to the backend only. */
void reqtext_build(struct evbuffer *out, const struct reqtext *r);

/* 1 when NAME is a hop-by-hop header (never forwarded either way). */
int reqtext_hop_by_hop(const char *name);

#endif
