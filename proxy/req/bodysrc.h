/* bodysrc.h - a request body read while it arrives.
 *
 * evhttp hands a request over with its whole body in memory, and refuses
 * a body over its limit. A blob upload (POST /api/blobs/sha256:D, what
 * `ollama create` sends first) is a model file of gigabytes: its body is
 * taken off the client's connection as it arrives instead (front/intake.c)
 * and read through this seam by the request that uses it (req/fanout.c,
 * req/tee.c), at that request's pace: the connection reads no more than a
 * window ahead of its reader, so the client's pace is its reader's.
 *
 * A source is owned by whoever made it (the connection's intake, or the
 * reader for bodysrc_whole); the reader must call release exactly once,
 * and before its client's connection is freed (evhttp's close callback),
 * and never touch it after. */
#ifndef PX_BODYSRC_H
#define PX_BODYSRC_H

#include <stddef.h>

struct evbuffer;
struct bodysrc;

enum bodysrc_state {
    BODYSRC_MORE, /* more may come */
    BODYSRC_END,  /* the whole body has been read */
    BODYSRC_BAD,  /* its framing is malformed (a chunk size that is not one) */
};

struct bodysrc_ops {
    /* Move up to MAX bytes of the body that have arrived (its framing
     * removed: chunked is decoded) to OUT; returns how many. */
    size_t (*read)(struct bodysrc *b, struct evbuffer *out, size_t max);
    enum bodysrc_state (*state)(struct bodysrc *b);
    /* The reader is done with it, at the end or not (then the rest is
     * never read and the connection closes after the reply). */
    void (*release)(struct bodysrc *b);
};

struct bodysrc {
    const struct bodysrc_ops *ops;
    long long length;           /* the client's Content-Length; -1: chunked */
    void (*on_data)(void *arg); /* set by the reader: called when bytes, the end or
                                   an error arrive (not from inside read) */
    void *arg;
};

/* A body evhttp has read whole (a blob upload that did not come through
 * the intake: bodies up to limits.max_body_mb), behind the same seam. */
struct bodysrc_whole {
    struct bodysrc b;
    struct evbuffer *body; /* the request's input buffer: drained as read */
};

/* Make W a source of BODY (not copied). Returns &W->b. */
struct bodysrc *bodysrc_whole(struct bodysrc_whole *w, struct evbuffer *body);

#endif
