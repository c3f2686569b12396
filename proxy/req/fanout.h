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
 * A success updates the proxy's model lists at once (a pulled model is
 * routable, a deleted one 404s) and a discovery poll follows. These take
 * no slot: they do not run on the GPU. */
#ifndef PX_FANOUT_H
#define PX_FANOUT_H

struct proxy;
struct request;

enum fanout_kind { FAN_PULL, FAN_PUSH, FAN_CREATE, FAN_DELETE, FAN_COPY, FAN_UNLOAD, FAN_PS };

/* Answer the request of HEAD (moved: the caller does not clean it up) by
 * sending it to the backends KIND
 * says. The reply is sent exactly once, now or when the last backend
 * answered, and the request recorded (reqlog.h). */
void fanout_start(struct proxy *px, struct request *head, enum fanout_kind kind,
                  const char *path);

/* shutdown_timeout_s has passed: end every fan-out the way a client can
 * understand (a stream's in-band {"error":...} line, else 503). */
void fanout_end_all(struct proxy *px);

/* Forced shutdown: end every fan-out in flight, closing its client. */
void fanout_abort_all(struct proxy *px);

#endif
