/* intake.h - request bodies taken off a client's connection as they
 * arrive, instead of evhttp's buffering them whole: blob uploads
 * (POST /api/blobs/...), gigabytes that must never sit in memory and that
 * limits.max_body_mb does not apply to (CONTRACT.md, "Blobs and create on
 * the whole fleet"). Read through req/bodysrc.h.
 *
 * conns.c calls the hooks: every byte added to a connection's input passes
 * intake_input() before evhttp reads it, and intake_request_done() when a
 * reply has been written. At the start of a request whose first line is
 * "POST /api/blobs/", the head is held out of evhttp's sight until it is
 * whole, then given to evhttp without its framing (no Content-Length, no
 * Transfer-Encoding, no Expect; "Connection: close" added), so evhttp hands
 * the router a request with an empty body at once. The body stays on the
 * connection: the router's handler takes it with intake_body(), and reads
 * it, decoded, at its own pace, the connection reading at most
 * INTAKE_WINDOW ahead (a read watermark). Once the body has been read to
 * its end the added "Connection: close" is taken back (keep-alive as the
 * client asked); a body not read to its end (an error answered first, a
 * client that left) closes the connection after the reply, as Go's server
 * does when a handler does not read its body.
 *
 * Every other request's head is judged here too, whole, before evhttp
 * reads it: one at fault (a bad request line, a method evhttp does not
 * serve, a Content-Length that is not a number or two that differ, a
 * Transfer-Encoding but chunked, both framings, a head over 64 KiB) is
 * answered by the router in the path's shape rather than by evhttp's HTML,
 * and never read otherwise than evhttp would (a request smuggled behind a
 * second length); a body over limits.max_body_mb is dropped (413), and one
 * whose head the gate refuses is never read (401, 403).
 *
 * States of a connection's intake (in->st), moved by the hooks and the
 * reader only:
 *   I_IDLE   the next bytes start a request
 *   I_OTHER  not ours: evhttp reads this request (until its reply is done)
 *   I_HEAD   a blob upload's head, held until it is whole
 *   I_READY  its head given to evhttp; the body waits for intake_body()
 *   I_BODY   a reader has it (bodysrc.h)
 *   I_DONE   read to its end, or released: the reply is being made
 *   I_SIZING another request's head arriving in pieces, held until
 *            whole to be judged
 *   I_CHUNKS another request's chunked body, held (with its head) while
 *            its size is counted; given to evhttp whole within the limit;
 *            over it, dropped, and the head alone given to evhttp
 *            ("Connection: close" added): I_ANSWER
 *   I_DISCARD  another request's body over limits.max_body_mb with a
 *            Content-Length, dropped as it arrives (its head held) so
 *            that the router can answer 413 in the path's dialect rather
 *            than evhttp's HTML
 *   I_ANSWER its head (or one of ours) given to evhttp without its body,
 *            for the router to answer as intake_verdict() says
 *   -> I_IDLE when the reply has been written. */
#ifndef PX_INTAKE_H
#define PX_INTAKE_H

#include <stddef.h>

struct bufferevent;
struct evhttp_request;
struct intake;
struct bodysrc;

/* Body bytes read ahead of the reader: the bound on a connection's input
 * while a body streams. */
#define INTAKE_WINDOW (1024 * 1024)

/* A gate on the heads of other paths' requests with a body still to
 * come: REFUSED(ARG, HEAD, N) is 1 when the head (N bytes, as it came)
 * refuses the request on its own (a key needed and missing: router.c).
 * Such a body is never read: evhttp gets the head alone ("Connection:
 * close" added), the router answers it (intake_refused), and the close
 * lingers. */
struct intake_gate {
    int (*refused)(void *arg, const char *head, size_t n);
    void *arg;
};

/* Bytes were added to BEV's input (conns.c's input callback), before
 * evhttp reads them. *IN is made on first use (NULL stays on failure: the
 * connection is then evhttp's alone). MAX_BODY: limits.max_body_mb in
 * bytes (blob uploads are not bound by it); IDLE_S: timeouts.idle_s, how
 * long a body may fall silent; GATE: NULL, or the gate above. */
void intake_input(struct intake **in, struct bufferevent *bev, size_t max_body, double idle_s,
                  const struct intake_gate *gate);

/* What the router does with the request just handed to it. */
enum intake_verdict {
    INTAKE_SERVE,     /* as it is */
    INTAKE_TOO_LARGE, /* its body was over MAX_BODY and dropped: 413 */
    INTAKE_REFUSED,   /* refused by the gate on its head, its body not read:
                       * 401 or 403, as its head says */
    INTAKE_BAD_HEAD   /* its head was at fault, and this one is ours (the
                       * method and target when served, "Connection:
                       * close"): *STATUS with *WHY */
};
enum intake_verdict intake_verdict(const struct intake *in, int *status, const char **why);

/* The reply of IN's connection's request has been written (evhttp's
 * on-complete callback): the next bytes start a request, and any already
 * waiting are looked at now. Returns 1 when the request's body was left
 * unread (an answer before the body's end: the connection closes after
 * this reply, and should linger, conns.c), else 0. NULL is a no-op (0). */
int intake_request_done(struct intake *in);

/* The body of REQ, just handed to the router, if IN holds it (a blob
 * upload's), else NULL. The reader owns it until it calls release. */
struct bodysrc *intake_body(struct intake *in, struct evhttp_request *req);

/* The connection is gone; NULL is a no-op. Its reader released it already
 * (evhttp's close callback comes first). */
void intake_free(struct intake *in);

#endif
