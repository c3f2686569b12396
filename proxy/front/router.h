/* router.h - the one endpoint table, and where each request goes.
 *
 * Every path the proxy knows is one row: the methods it is that kind for,
 * the kind (who carries it), whether its body names the model it is
 * routed by, whether it needs an admin key or none, the shape of its
 * errors and the format its tokens are counted in. Routing, the key check
 * and the error dialect all read the row; nothing else keeps a list of
 * paths. A path with no row, or a method its row does not list, is
 * forwarded to a backend as it is (Ollama answers 404 or 405), keeping the
 * row's admin rule and dialect.
 *
 * Adding an endpoint kind is a row here (and, for a new token format, a
 * row in tokscan's table); proxy/README.md says which files each seam
 * touches. */
#ifndef PX_ROUTER_H
#define PX_ROUTER_H

#include "request.h"
#include "wire.h"

struct proxy;

enum ep_kind {
    EP_PASS,    /* forwarded to any backend in service, outside any model */
    EP_ROOT,    /* GET / and HEAD /: "Ollama is running" */
    EP_METRICS, /* GET /metrics (own/metrics.h) */
    EP_PROXY,   /* /proxy/...: the proxy's status and controls (own/admin.h) */
    EP_CATALOG, /* the fleet's listings, answered from discovery (own/catalog.h) */
    EP_PS,      /* GET /api/ps: asked of every backend (req/fanout.h) */
    EP_FANOUT,  /* pull, push, create, copy, delete: every backend (req/fanout.h) */
    EP_INFER,   /* routed by its model to a GPU slot (req/session.h) */
    EP_META,    /* routed by its model, outside the GPU slots (sched.h SCHED_META_CAP) */
    EP_BLOB,    /* /api/blobs/D: HEAD asked of every backend, POST streamed to every
                   backend (req/fanout.h) */
};

/* Where an empty prompt or message list with keep_alive 0 makes the
 * request an unload (Ollama's rule, server/routes.go). */
enum ep_unload { UNLOAD_NONE, UNLOAD_PROMPT, UNLOAD_MESSAGES };

#define OPEN_METRICS 2

struct endpoint {
    const char *path;    /* exact, or every path under it when it ends in '/' */
    unsigned char len;   /* strlen(path) */
    unsigned methods;    /* EVHTTP_REQ_* the kind is for; others are EP_PASS */
    enum ep_kind kind;
    enum dialect dialect;
    enum wire_format wire; /* its answers' framing: tokens, in-band errors (wire.h) */
    int fan;             /* EP_FANOUT: enum fanout_kind */
    enum ep_unload unload;
    unsigned model : 1;  /* the body must name a model */
    unsigned form : 1;   /* the body is a multipart form, the model one of its fields */
    unsigned name : 1;   /* its legacy "name" stands for an empty "model" */
    unsigned admin : 1;  /* an admin key, when auth.keys is set */
    unsigned open : 2;   /* for the methods listed: 1 no key at all; OPEN_METRICS
                            no key unless auth.metrics_key_required */
    unsigned own : 1;    /* the proxy's own path: another method gets 405, never a backend */
};

/* The row of PATH (the normalised path), or NULL. */
const struct endpoint *router_find(const char *path);

/* Serve: the listener, the connections and every request. Returns 0, or
 * -1 after logging why. */
int router_start(struct proxy *px);

#endif
