/* request.h - the head every request kind shares.
 *
 * Whatever carries a client's request (a session to one backend, a fan-out
 * to several, or the proxy answering it itself) keeps one struct request:
 * who asked, what, and how it went. The replies (reply.h) write its status
 * and bytes; the one record (reqlog.h) reads it when the request ends, for
 * the access log, the metrics, the status page and adaptive caps alike, so
 * no kind of request can be missing from one of them.
 *
 * Ownership: the evhttp request is evhttp's (NULL here once the client is
 * gone and evhttp freed it); every string field is the head's own. The
 * head lives inside its carrier (session, fan-out) or on the router's
 * stack for a request the proxy answers at once. A head is handed to a
 * carrier by value: what it owns (a long model name, its backend
 * reference) moves with it, and the router's copy is not cleaned up. */
#ifndef PX_REQUEST_H
#define PX_REQUEST_H

#include <stddef.h>

#include "names.h"
#include "wire.h"

struct evhttp_request;
struct backend;

/* The shape of the errors the proxy makes on a path (CONTRACT.md, Errors). */
enum dialect {
    DIALECT_OLLAMA,    /* {"error":"..."}: under /api/ and / */
    DIALECT_OPENAI,    /* {"error":{"message":..,"type":..}}: under /v1/ */
    DIALECT_ANTHROPIC, /* {"type":"error","error":{"type":..,"message":..}}: /v1/messages */
};

#define REQUEST_MODEL_MAX 512

struct request {
    struct evhttp_request *req; /* the client's; NULL once gone */
    enum dialect dialect;
    enum wire_format wire;      /* how its answer is framed: tokens, in-band errors */
    const char *method;         /* "GET", "POST"... (static) */
    char path[160];             /* the normalised path and query, cut for the log */
    char addr[48];              /* the client's address */
    char client[80];            /* who it is charged to: a key's name, or the address; "" */
    /* The model as the client named it and its name_key(), for routing:
     * inline when short (nearly always), else on the heap (*_heap, owned);
     * read them with request_model() and request_mkey(). */
    char model_buf[96];
    char mkey_buf[128];
    char *model_heap, *mkey_heap;
    struct backend *be;         /* the backend of its last try (NULL: none); a reference */
    const char *backend_label;  /* the log's backend when be is NULL ("*": a fan-out) */
    int status;                 /* what the client got (499: it left first) */
    unsigned long long bytes;   /* response body bytes sent */
    long long tokens;           /* generated, -1 unknown */
    long long prompt_tokens;    /* the prompt's, -1 unknown */
    int tries;                  /* tries that reached a backend, fan-out targets */
    double t_start;             /* arrival, net_now_ms() */
    double t_dispatch;          /* first slot granted; 0 none */
    double t_try;               /* the last try's start */
    double t_head;              /* the last try's response head; 0 none */
    unsigned meta : 1;          /* took no GPU slot (sched.h, SCHED_META_CAP) */
    unsigned queued : 1;        /* went through the scheduler (a session) */
    unsigned tokens_estimated : 1; /* tokens counted from deltas, not reported (tokscan.h) */
    unsigned cors : 1;          /* from an allowed Origin: the answer carries CORS headers
                                   (front/cors.h; reply.h, reply_cors) */
    unsigned error_body : 1;    /* a 2xx whose body is (or ends in) an error */
};

/* Fill R's identity from EVREQ: method, path (PATH), address, times; the
 * rest zero (tokens and prompt_tokens -1). */
void request_init(struct request *r, struct evhttp_request *evreq, const char *path);

/* R's model as the client named it (NULL: none), copied, and its
 * name_key() for routing. Returns 0, or -1 when out of memory (R then has
 * no model). */
int request_set_model(struct request *r, const char *model);

/* R now names BE as the backend of its last try (a reference taken on BE,
 * the previous one's dropped: a retired backend lives while requests name
 * it). NULL drops it. */
void request_set_backend(struct request *r, struct backend *be);

/* The end of R's life: its references dropped. */
void request_cleanup(struct request *r);

/* The model or NULL, the routing key or NULL. */
static inline const char *request_model(const struct request *r)
{
    return r->model_heap ? r->model_heap : r->model_buf[0] ? r->model_buf : NULL;
}
static inline const char *request_mkey(const struct request *r)
{
    return r->mkey_heap ? r->mkey_heap : r->mkey_buf[0] ? r->mkey_buf : NULL;
}

#endif
