/* fanout.h - requests that apply to the whole fleet, sent to several
 * backends at once and answered as one (CONTRACT.md, "Fleet endpoints").
 *
 *   pull, push, create   every healthy backend. Streamed (the default):
 *                        each backend's progress lines as they arrive,
 *                        each with a "backend" field, then one
 *                        {"status":"success"} only if every backend
 *                        succeeded, else one {"error":...} naming those
 *                        that failed. stream:false: one answer likewise.
 *   delete               every healthy backend that has the model.
 *   copy                 every healthy backend that has the source.
 *   unload               (/api/generate or /api/chat with keep_alive 0 and
 *                        no prompt or messages, what `ollama stop` sends):
 *                        every backend that has the model loaded.
 *   ps                   GET /api/ps asked of every healthy backend now
 *                        (answers a second old at most are reused).
 *   blob check           HEAD /api/blobs/D: every healthy backend; 200 only
 *                        if all have it, 404 if one lacks it.
 *   upload               POST /api/blobs/D: the body sent to every healthy
 *                        backend as it arrives (tee.h; memory bounded, the
 *                        slowest backend's pace the client's); 201 when all
 *                        stored it (200 when all had it), else an error
 *                        naming each backend that failed and what it said.
 *                        Answered once every backend has answered: a
 *                        backend that has the blob answers before reading
 *                        the body (Ollama), and when all did, so does the
 *                        proxy (the rest of the body unread, the connection
 *                        closed after the answer, as Ollama's).
 * A success updates the proxy's model lists at once (a pulled model is
 * routable, a deleted one 404s) and a discovery poll follows. These take
 * no slot: they do not run on the GPU. */
#ifndef PX_FANOUT_H
#define PX_FANOUT_H

struct proxy;
struct request;

enum fanout_kind {
    FAN_PULL,
    FAN_PUSH,
    FAN_CREATE,
    FAN_DELETE,
    FAN_COPY,
    FAN_UNLOAD,
    FAN_PS,
    FAN_BLOB_HEAD,
    FAN_BLOB_PUT, /* fanout_upload() */
};

struct bodysrc;

/* Answer the request of HEAD (moved: the caller does not clean it up) by
 * sending it to the backends KIND
 * says. The reply is sent exactly once, now or when the last backend
 * answered, and the request recorded (reqlog.h). */
void fanout_start(struct proxy *px, struct request *head, enum fanout_kind kind,
                  const char *path);

/* Answer a blob upload (POST PATH, PATH the forwarded target
 * /api/blobs/sha256:D) of HEAD (moved: the caller does not clean it up)
 * by sending its body to every healthy backend as it arrives from SRC
 * (conns.h, conns_body; NULL: the body is whole in the request's input
 * buffer). SRC is released, the
 * reply sent exactly once and the request recorded (reqlog.h). */
void fanout_upload(struct proxy *px, struct request *head, const char *path,
                   struct bodysrc *src);

/* shutdown_timeout_s has passed: end every fan-out the way a client can
 * understand (a stream's in-band {"error":...} line, else 503). */
void fanout_end_all(struct proxy *px);

/* Forced shutdown: end every fan-out in flight, closing its client. */
void fanout_abort_all(struct proxy *px);

#endif
