/* fleet.h - the set of backends a proxy routes to, and its reload.
 *
 * px->backends holds the backends of the current config, in config order.
 * A backend dropped by a reload (or whose URL changed) moves to
 * px->retired: it takes no new request, its requests in flight finish where
 * they are, and it is freed only at exit, because finished sessions' access
 * lines and in-flight sessions may still point at it. */
#ifndef PX_FLEET_H
#define PX_FLEET_H

struct proxy;
struct px_config;
struct backend;

/* Build px->backends from px->cfg (startup). Returns 0 or -1. */
int fleet_init(struct proxy *px);

/* Take NEW (owned from now on) as the config: backends kept by name get
 * their new cap, new ones are added, missing ones retire; queue, timeouts
 * and limits apply to what happens next. `listen` cannot change without a
 * restart (a warning says so). The old config is freed. */
void fleet_apply(struct proxy *px, struct px_config *cfg);

/* Apply px->cfg's queue length, timeouts and request limits to the queue,
 * the upstream timeouts and evhttp (startup and reload). */
void fleet_settings(struct proxy *px);

/* A backend made from a dns row (dnsfleet.c) joins the fleet (BE owned
 * from now on), or leaves it: it retires like one a reload dropped (its
 * requests in flight finish, no new one goes there). */
int fleet_add(struct proxy *px, struct backend *be); /* 0, or -1: BE was freed */
void fleet_remove(struct proxy *px, struct backend *be);

/* Free every backend, current and retired (exit). */
void fleet_free(struct proxy *px);

#endif
