/* session.h - one proxied request, from admission to its last byte.
 *
 * States (s->state):
 *   QUEUED     waiting in the central queue for a slot (queue timer armed)
 *   UPSTREAM   holds a slot of s->be; request sent, no reply to the client yet
 *   STREAMING  reply head sent to the client; body being forwarded
 * and then it is freed. Every exit goes through session_close(), which is
 * idempotent-safe by construction: it runs once, from whichever of these
 * ends first: the upstream's on_done / on_error, the client's leaving (a
 * FIN or a reset: the read watch on its socket before the reply starts,
 * the evhttp close callback after), the queue timeout, or a forced
 * shutdown.
 *
 * Ownership: the session owns its upstream connection (aborted or released
 * on close), its slot (released on close), its queue entry, and its two
 * events (the watch on the client and its poll timer); the evhttp request
 * belongs to evhttp once a reply is sent. */
#ifndef PX_SESSION_H
#define PX_SESSION_H

struct proxy;
struct request;
struct sched_client;

struct session_info {
    const struct request *head; /* who, what (request.h): moved to the session */
    const char *target;  /* what to forward: the normalised path and the query
                            (urlpath.h); copied */
    struct sched_client *client; /* who it is charged to (sched_*_client); the
                                    session's from now on, even on failure */
    /* Routing (router.c, CONTRACT.md "Conversations stay warm"): a hash of
     * its affinity key when KEYED, and the num_ctx it goes with (0: none). */
    unsigned long long affinity;
    int keyed;
    int num_ctx;
};

/* Take the request of IN: dispatch it to a free slot or queue it, or answer
 * 503 when the queue is full. The reply always ends up sent exactly once,
 * and the request recorded (reqlog.h). */
void session_start(struct proxy *px, const struct session_info *in);

/* shutdown_timeout_s has passed: end every live session the way a client
 * can understand. A stream gets Ollama's in-band {"error":...} line, a
 * request without a reply yet (queued or at a backend) 503 + Retry-After. */
void session_end_all(struct proxy *px);

/* Forced shutdown: end every live session, closing its client. */
void session_abort_all(struct proxy *px);

#endif
