/* resolve.h - a backend's host name to its address, without ever blocking
 * the event loop: a numeric address at once, a name through evdns
 * (/etc/hosts and the name servers of /etc/resolv.conf), answered later.
 * Until it is answered the backend has no address: a try on it fails as
 * a connect would, and the health check asks again. */
#ifndef PX_RESOLVE_H
#define PX_RESOLVE_H

struct backend;
struct evdns_base;

/* Called when a backend that had no address gets its first one from a
 * lookup (so it can be asked now rather than at the next tick). */
typedef void (*resolve_found_fn)(struct backend *be);

/* Look up BE's host into be->target (replacing what it had on success; a
 * failure is logged and keeps it). A lookup already under way is not
 * started twice. FOUND (or NULL) is called as above; a numeric address is
 * taken at once, without it. */
void resolve_backend(struct evdns_base *dns, struct backend *be,
                     resolve_found_fn found);

/* BE is freed: its lookup under way is cancelled and will touch it no more. */
void resolve_cancel(struct backend *be);

#endif
