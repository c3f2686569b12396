/* resolve.h - a backend's host name to its address, without ever blocking
 * the event loop: a numeric address at once, a name through evdns
 * (/etc/hosts and the name servers of /etc/resolv.conf), answered later.
 * Until it is answered the backend has no address: a try on it fails as
 * a connect would, and the health check asks again. */
#ifndef PX_RESOLVE_H
#define PX_RESOLVE_H

struct backend;
struct evdns_base;

/* Look up BE's host into be->target (replacing what it had on success; a
 * failure is logged and keeps it). A lookup already under way is not
 * started twice. */
void resolve_backend(struct evdns_base *dns, struct backend *be);

/* BE is freed: its lookup under way is cancelled and will touch it no more. */
void resolve_cancel(struct backend *be);

#endif
