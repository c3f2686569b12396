/* proxy.h - the state of one proxy process: one event loop owns all of it.
 *
 * Routing state (backends' slots, the queue, health) is touched only from
 * the event-loop thread, so caps are exact without a lock. */
#ifndef PX_PROXY_H
#define PX_PROXY_H

#include <event2/event.h>
#include <sys/queue.h>

#include "intake.h"
#include "metrics.h"
#include "sched.h"
#include "upstream.h"

struct px_config;
struct backend;
struct session;
struct conn;
struct ui;
struct evdns_base;
struct dnsfleet;

LIST_HEAD(session_list, session);
LIST_HEAD(fanout_list, fanout);

struct proxy {
    struct event_base *base;
    struct evdns_base *dns; /* for backends' host names (fleet/resolve.h) */
    struct dnsfleet *dnsfleet; /* the dns rows (dnsfleet.h); NULL: none yet */
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    int listen_local; /* bound to loopback: the Host guard (conns_local_only) */
    struct intake_gate gate; /* the router's, on heads with a body (intake.h) */
    struct px_config *cfg;
    struct backend **backends; /* the current config's, see fleet.h */
    int nbackends;
    struct sched sched; /* who gets a slot (sched.h) */
    struct metrics metrics;
    struct session_list sessions; /* every live session */
    int nsessions;
    struct fanout_list fanouts; /* every live fan-out */
    int live;                   /* live requests of every kind: the drain waits for them */
    void (*fleet_changed)(struct proxy *px); /* set by proxy.c: tells the scheduler */
    void (*on_idle)(struct proxy *px); /* set while draining: live reached 0 */
    int draining;
    double start_ms;
    struct upstream_timeouts uto;
    struct event *ev_term, *ev_int, *ev_hup, *ev_drain, *ev_flush, *ev_discover, *ev_health;
    unsigned long long requests;
    struct evbuffer *scratch; /* a request being built for upstream_start() */
    /* Client connections, for limits.max_connections: every connection's
     * bufferevent, with a reference of ours so that we can see evhttp free
     * it (its callbacks are cleared) and count it out; see server.c. */
    struct conn **conns; /* conns.c */
    int nconns, conns_cap;
    struct conn **conn_fd; /* by fd, for the request deadline */
    int nconn_fd;
    int accept_paused;
    struct event *ev_sweep;
    struct conns_tls *https; /* the HTTPS listener (conns.c); NULL: none */
    struct ui *ui; /* the status page's history and last errors (ui.h) */
    struct capstate *capstate; /* adaptive knees across restarts (capstate.h) */
    struct catalog *catalog; /* the fleet's listings, kept built (catalog.c) */
};

/* Start a proxy on CFG (owned from now on): the event loop, the fleet, the
 * scheduler, the listener, health checks and model discovery; signals are
 * the caller's (main.c). Returns 0, or -1 after logging why; either way
 * proxy_stop() frees what was made. */
int proxy_start(struct proxy *px, struct px_config *cfg);

/* SIGHUP: read the config file again and apply it; a config that fails
 * validation is refused with a log line and the old one stays. */
void proxy_reload(struct proxy *px);

/* SIGTERM/SIGINT: stop accepting, let every live request (sessions and
 * fan-outs alike) finish, up to shutdown_timeout_s, then end the rest the
 * way a client can understand and leave the loop. */
void proxy_drain(struct proxy *px, int sig);

/* Free everything proxy_start() made, ending what still runs. */
void proxy_stop(struct proxy *px);

/* A request of any kind begins or ends (session.c, fanout.c): the drain
 * counts them. An inline hook rather than a call into proxy.c, so that
 * nothing below calls up into the lifecycle. */
static inline void proxy_request_begin(struct proxy *px)
{
    px->live++;
}

/* The fleet changed (a backend joined, left, came up, said what models it
 * has, or a reload): fleet/ says so through this hook, and the scheduler
 * (proxy.c wires it) hands out what may now run. Nothing in fleet/ calls
 * up into the scheduler. */
static inline void proxy_fleet_changed(struct proxy *px)
{
    if (px->fleet_changed)
        px->fleet_changed(px);
}

static inline void proxy_request_end(struct proxy *px)
{
    if (--px->live == 0 && px->on_idle)
        px->on_idle(px);
}

#endif
