/* fleet.h - the set of backends a proxy routes to, and its reload.
 *
 * px->backends holds the backends of the current config, in config order.
 * A backend dropped by a reload (or whose URL changed, or that a DNS answer
 * no longer has) retires: it takes no new request, its requests in flight
 * finish where they are, and it is freed when the last request that names
 * it ends (backend.h, backend_ref): memory stays flat however often the
 * fleet changes.
 *
 * A cap is a server's, whatever the config calls it: a reload's url row
 * for the server (host, port, transport) of a backend no row keeps by name
 * and url, or of a retired one a request still names, takes that backend
 * over under its own name and settings, so that the requests it runs count
 * against the row's cap (a rename, a drop and re-add, a swap of two names
 * never puts more than max_concurrent on one server). An address of a dns
 * row that comes back while its retired backend still runs requests takes
 * it back likewise (fleet_add). */
#ifndef PX_FLEET_H
#define PX_FLEET_H

struct proxy;
struct px_config;
struct config_backend;
struct backend;

/* Build px->backends from px->cfg (startup). Returns 0 or -1. */
int fleet_init(struct proxy *px);

/* The backends of CFG (a reload; CFG stays the caller's): backends kept by
 * name and url get their new cap; a row for the server of another backend
 * takes it over (above); rows for new servers are added; the rest retire.
 * Returns 0, or -1 when out of memory (nothing changed). */
int fleet_apply(struct proxy *px, const struct px_config *cfg);

/* A backend made from the dns row address CB (dnsfleet.c; CB stays the
 * caller's) joins the fleet: BE, or, when a retired backend of the same
 * server (host, port, transport) is still named by a request (it runs
 * requests there), that one, taken back
 * under CB's name and settings and BE's dns fields, and BE freed; its
 * requests in flight count against CB's cap. Returns the backend in
 * service, owned by the fleet, or NULL when out of memory (BE freed). */
struct backend *fleet_add(struct proxy *px, struct backend *be, const struct config_backend *cb);

/* A backend made from a dns row leaves the fleet: it retires like one a
 * reload dropped (its requests in flight finish, no new one goes there). */
void fleet_remove(struct proxy *px, struct backend *be);

/* The retired backends of PX that still have requests in flight, which
 * /proxy/status and /metrics show until they drain: the first after PREV
 * (NULL: the first), newest retired first; NULL after the last. Borrowed:
 * valid until the loop returns to the event loop. */
struct backend *fleet_retired_next(struct proxy *px, struct backend *prev);

/* Let go of every backend (exit, after every request ended). */
void fleet_free(struct proxy *px);

#endif
