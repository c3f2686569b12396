/* client.h - the HTTP side: libcurl's multi interface driven by a libevent
 * loop (curl_multi_socket_action), one reusable easy handle per job,
 * connections kept alive in the multi's pool.
 *
 * A job's states and who moves it:
 *   IDLE    --client_send()-->        SENDING (easy handle in the multi)
 *   SENDING --transient failure-->    BACKOFF (handle out, timer armed)
 *   BACKOFF --timer-->                SENDING
 *   SENDING --reply or final error--> IDLE, then the done callback runs
 *   SENDING/BACKOFF --client_cancel()--> IDLE, no callback
 * The batch owns the job and its buffers; the client owns the easy handle
 * and the timer inside it (client_job_init/client_job_cleanup). */
#ifndef CLS_CLIENT_H
#define CLS_CLIENT_H

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "stats.h"

/* The longest wait before a retry: the exponential backoff stops growing
 * there, and a Retry-After asking for more is honoured only up to it (a
 * server may send any number, 99999999999 included; one item waiting that
 * long would stall the end of the run). --help says so. */
#define CLIENT_BACKOFF_MAX_S 30

enum job_state { JOB_IDLE, JOB_SENDING, JOB_BACKOFF };

/* A 404 (Ollama: "model 'M' not found") is fatal only when the endpoint
 * itself says the model exists nowhere:
 * - ollama-proxy adds X-Backend to every reply it passes on from a backend.
 *   A 404 with X-Backend is one backend's answer (a GPU added mid-run that
 *   lacks the model, its tags not polled yet): retried like a 5xx, and the
 *   next try may go to a backend that has the model. After the retries it
 *   is this item's error, not the run's.
 * - A 404 without X-Backend from an endpoint that has sent X-Backend before
 *   is the proxy's own answer: no backend lists the model. Fatal at once.
 * - Against a plain Ollama (no X-Backend on any reply yet), a 404 is retried
 *   on a short schedule (CLIENT_404_BACKOFF_MS, doubling), in case a
 *   balancer of another kind sits in front; the same 404 after the item's
 *   retries is fatal. */
#define CLIENT_404_BACKOFF_MS 50.0

enum job_result {
    JOB_REPLY,  /* a 2xx; the body is in resp */
    JOB_FAILED, /* this item failed: err_kind, err */
    JOB_FATAL,  /* every item would fail the same way: 401, 403 (key
                 * refused), a 404 that says the model is nowhere (below),
                 * a TLS failure before any reply, a URL libcurl refuses,
                 * or no connection at all since the start and retries
                 * spent. err says which. */
};

struct job {
    /* the batch's part (batch.c says how it uses them) */
    struct buf id;   /* the item's id as JSON text ("null": a malformed line) */
    long line;       /* a malformed line: its number, written as "line"; else 0 */
    struct buf gold; /* its gold label */
    int has_gold;
    struct buf text;   /* the item's text */
    json_t *fields;    /* kept input fields (owned), NULL: none */
    struct buf body;   /* the request body */
    int kind;          /* enum request_kind of the body */
    int label_retries; /* resends after an answer outside the labels */
    int *votes;        /* --votes: answers per label, [nlabels] off the labels */
    int nvotes;        /* votes asked so far */
    struct buf raw;    /* the model's last answer */
    /* the client's part, valid in the done callback */
    struct buf resp; /* the reply body */
    int attempts;    /* requests sent for this item so far */
    int retries;     /* of them, retries after transient failures */
    double ms;       /* duration of the last request */
    double ttfb_ms;  /* its time to the first byte of the reply, -1: none */
    long status;     /* its HTTP status, 0 if none */
    enum job_result result;
    int bad_url; /* JOB_FATAL because libcurl refused the URL: bad usage (exit 2) */
    enum err_kind err_kind;
    char err[300];
    /* private */
    enum job_state state;
    double t_start;
    int via_backend;    /* the last reply carried X-Backend (a backend's answer
                         * passed on by ollama-proxy) */
    int plain_404s;     /* tries of this item answered 404 without X-Backend */
    long retry_after_s; /* from the last reply, -1: none */
    CURL *easy;
    struct event *timer;
    struct client *cl;
    char curl_err[CURL_ERROR_SIZE];
};

/* Called once per client_send() that ends (not on cancel), outside any
 * curl callback: it may call client_send() again for this or other jobs. */
typedef void (*client_done_fn)(struct job *job, void *arg);

struct client_conf {
    const char *url;     /* base URL; requests go to URL/api/chat */
    long jobs;           /* requests in flight at most */
    long timeout_s;      /* per request */
    long retries;        /* retries after transient failures */
    const char *api_key; /* NULL: none; else sent as "Authorization: Bearer
                          * KEY" (copied by client_new; never printed) */
    const char *ca_file; /* NULL: the system's CAs; else the CAs (PEM) an https
                          * endpoint is verified with (borrowed for the run) */
};

/* A client on BASE. ST (borrowed) counts the retries. Returns NULL with a
 * reason in ERR. */
struct client *client_new(struct event_base *base, const struct client_conf *conf, struct stats *st,
                          client_done_fn done, void *arg, char *err, size_t errlen);

/* Give JOB its easy handle and timer. 0, or -1 out of memory. */
int client_job_init(struct client *c, struct job *job);
/* Release them (cancels the job first). Safe on a zeroed or cleaned job. */
void client_job_cleanup(struct job *job);

/* Send JOB's body now (a new request; attempts counts on). 0 or -1. */
int client_send(struct client *c, struct job *job);

/* Stop JOB without a callback; nothing is recorded. */
void client_cancel(struct job *job);

/* Jobs sending or waiting to retry. */
size_t client_in_flight(const struct client *c);

/* NULL is a no-op. Cancel and clean up the jobs first. */
void client_free(struct client *c);

#endif
