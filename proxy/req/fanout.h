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
struct evhttp_request;

enum fanout_kind { FAN_PULL, FAN_PUSH, FAN_CREATE, FAN_DELETE, FAN_COPY, FAN_UNLOAD, FAN_PS };

/* The kind REQ (on PATH) is, or -1 when it is an ordinary request. BODY is
 * what jscan found (keep_alive zero without input: an unload). */
int fanout_kind_of(struct evhttp_request *req, const char *path, int unload);

/* Answer REQ by sending it to the backends KIND says. The reply is sent
 * exactly once, now or when the last backend answered. */
void fanout_start(struct proxy *px, struct evhttp_request *req, enum fanout_kind kind,
                  const char *path, int v1);

/* Forced shutdown: end every fan-out in flight. */
void fanout_abort_all(struct proxy *px);

#endif
