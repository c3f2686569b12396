/* upload.h - one request to a backend whose body is sent as it arrives:
 * a blob upload (req/fanout.c, req/tee.c), gigabytes that never sit in
 * memory.
 *
 * Beside upstream.h rather than in it: an upload writes for minutes while
 * a response may come at any moment (Ollama answers 200 at once, before
 * reading the body, when it has the blob already; Go's server then closes
 * the connection, so writes fail with EPIPE while the answer waits to be
 * read), it needs flow control on the sending side (on_room), its answer
 * is a few bytes, and it is never pooled. It reads and writes through the
 * target's transport (transport.h), as upstream.c does, so a TLS backend
 * takes uploads too.
 *
 * States: CONNECTING -> SETUP (the transport's) -> SENDING (head, then body
 * as given) -> WAITING (body finished and written) -> answered or failed.
 * The answer is read in any state after SETUP: an early answer ends the
 * upload whatever is left to send.
 *
 * Timeouts: connect_s to connect (and set up); idle_s while bytes wait to
 * be written and the backend takes none (none while the upload waits for
 * its own input: its client's pace is not the backend's fault);
 * first_byte_s from the last byte written to the answer; idle_s between
 * the answer's bytes.
 *
 * Callbacks are only called from the event loop, never from inside an
 * upload_* call. */
#ifndef PX_UPLOAD_H
#define PX_UPLOAD_H

#include <stddef.h>

#include "upstream.h"

struct upload;
struct evbuffer;

#define UPLOAD_ANSWER_MAX (64 * 1024) /* an answer's head and body; larger: malformed */
#define UPLOAD_ROOM (256 * 1024)      /* on_room when the queue falls to this */

struct upload_cbs {
    /* The whole answer (BODY: its body, decoded; the upload's). Nothing
     * more is sent. The callee must upload_free() it, in this callback or
     * later, and must not touch it after that. */
    void (*on_answer)(void *arg, int status, struct evbuffer *body);
    /* No answer can come (connect, setup, reset, timeout, malformed
     * answer): the upload is freed when this returns. */
    void (*on_error)(void *arg, enum upstream_err err);
    /* Its queue fell to UPLOAD_ROOM bytes or less, from more: room for
     * more (NULL: not told). */
    void (*on_room)(void *arg);
};

/* Connect to T and send HEAD (a complete request head, ending in its blank
 * line; drained), then the body as upload_send() gives it: CHUNKED frames
 * it with Transfer-Encoding: chunked (HEAD says so), else it is sent as
 * is (HEAD has its Content-Length). Returns the upload, or NULL when no
 * socket could be made or T has no address (nothing is called then). */
struct upload *upload_start(struct event_base *base, struct upstream_target *t,
                            struct evbuffer *head, int chunked,
                            const struct upstream_timeouts *to, const struct upload_cbs *cbs,
                            void *arg);

/* Queue the body bytes DATA (shared, not copied: DATA stays as it is and
 * may be drained by the caller at once). Dropped after an answer or a
 * failed write. */
void upload_send(struct upload *u, struct evbuffer *data);

/* Body bytes queued, not yet written (0 once writing is over). */
size_t upload_queued(const struct upload *u);

/* The body is complete (chunked: its last chunk is queued); the answer is
 * awaited once everything is written. */
void upload_finish(struct upload *u);

/* Close at once (an abort, or done with the answer). No callback. NULL is
 * a no-op. */
void upload_free(struct upload *u);

#endif
