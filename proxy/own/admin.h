/* admin.h - the proxy's own endpoints under /proxy/: the status document and the
 * runtime control of backends, as HAProxy's runtime API (admin keys only
 * when auth.keys is set; server.c checks that):
 *   GET  /proxy/status                       the fleet, the queue, the clients
 *   GET  /proxy/ui                           the status page (ui.h; served without a key)
 *   GET  /proxy/history                      the last ten minutes, second by second (ui.h)
 *   POST /proxy/backends/NAME/drain          no new requests; in flight finish
 *   POST /proxy/backends/NAME/disable        the same, and no health checks
 *   POST /proxy/backends/NAME/enable         back in service
 *   POST /proxy/backends/NAME/cap            {"max_concurrent": N}: a new cap
 * A change lasts until a reload changes that backend's row in the file.
 * Nothing under /proxy/ ever reaches a backend: another method gets 405,
 * another path or action 404. */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

struct proxy;
struct request;

/* Answer REQ, whose PATH starts with /proxy/. Returns 1 (answered). */
int admin_reply(struct proxy *px, struct request *r, const char *path);

#endif
