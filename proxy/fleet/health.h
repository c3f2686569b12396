/* health.h - active health checks, as HAProxy's "check": every
 * health.interval_s each backend is asked GET /api/version (answered at
 * once by Ollama, even while it loads a model or every slot is busy),
 * bounded by health.timeout_s. fail_after failures in a row (of checks or
 * of real requests) mark it down; recover_after checks in a row that
 * succeed bring it back. So a backend that dies while idle is seen, one
 * that comes back takes traffic within about interval_s x recover_after,
 * and no real request is ever sent to a down backend to find out. */
#ifndef PX_HEALTH_H
#define PX_HEALTH_H

struct proxy;
struct backend;

/* Start checking (and check once now). Returns 0 or -1. */
int health_start(struct proxy *px);

/* The interval changed (reload): re-arm. */
void health_settings(struct proxy *px);

/* BE's host name has just resolved for the first time (a resolve_found_fn):
 * check it and ask for its models now, not at the next tick. */
void health_address_found(struct backend *be);

/* Stop; NULL-safe on a proxy that never started. */
void health_stop(struct proxy *px);

#endif
