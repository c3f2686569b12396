/* metrics.h - the counters behind GET /metrics (Prometheus text format
 * 0.0.4), all kept in the loop thread.
 *
 * Labels are bounded: backend (a configured name, or "none" for what the
 * proxy answered itself), model (its display name when the backend that
 * served it, or else any backend, lists it; "other" otherwise; "" without
 * a model) and code. Never a client: addresses are unbounded. */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stddef.h>

struct proxy;
struct backend;
struct evbuffer;
struct request;

#define METRICS_BUCKETS 16

struct histogram {
    unsigned long long count[METRICS_BUCKETS + 1]; /* per bucket; the last is +Inf */
    double sum;
};

struct metrics_row;

struct metrics {
    struct metrics_row **tab; /* open addressing by (backend, model, code) */
    unsigned size, n;
    struct histogram queue_wait;
    unsigned long long retries, cancelled, refused_auth;
};

void metrics_init(struct metrics *m);
void metrics_cleanup(struct metrics *m);

/* The tokens of a request (-1: unknown): generated (ESTIMATED: counted
 * from deltas, tokscan.h) and of the prompt. */
struct metrics_tokens {
    long long generated, prompt;
    int estimated;
};

/* One request ended: BACKEND served it (NULL: the proxy answered itself),
 * MODEL as the client named it (NULL: none) and KEY its name_key() (NULL:
 * not a valid name), CODE its status, TOK its tokens. */
void metrics_request(struct proxy *px, const struct backend *backend, const char *model,
                     const char *key, int code, const struct metrics_tokens *tok);

/* A histogram observation, in seconds. */
void metrics_observe(struct histogram *h, double seconds);

/* The whole text of GET /metrics into OUT. */
void metrics_render(struct proxy *px, struct evbuffer *out);

/* Answer R, a GET or HEAD /metrics, with it. */
void metrics_reply(struct proxy *px, struct request *r);

#endif
