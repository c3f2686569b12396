/* lb.h - a balancer: which backend an admitted request goes to.
 *
 * The scheduler (sched.h) decides WHO gets a slot and WHEN: admission,
 * priorities, fair share, late binding. When it has chosen a request and
 * knows some backend could take it, it asks the balancer WHICH one, through
 * this small ops table (STYLE.md: h2o's balancer.h, HAProxy's lbprm). A
 * new routing policy (affinity...) is a new file with its own ops, not an
 * `if` in the scheduler; sched.c only ever calls lb_pick().
 *
 * A balancer sees backends and requests' routing facts, never evhttp or a
 * session. */
#ifndef PX_LB_H
#define PX_LB_H

struct backend;

/* What a balancer may know of the request it places. */
struct lb_request {
    const char *key;             /* name_key() of its model; NULL: any backend */
    const struct backend *avoid; /* the backend its last try failed on (NULL: none):
                                    taken only when it is the only one */
};

struct lb;

struct lb_ops {
    const char *name;
    /* The backend for R among BES[0..N): one that is available now
     * (backend_available) and serves R's model (backend_serves); NULL when
     * none is. */
    struct backend *(*pick)(struct lb *lb, struct backend **bes, int n,
                            const struct lb_request *r, double now_ms);
};

struct lb {
    const struct lb_ops *ops;
    unsigned rr; /* round-robin position, for ties */
};

/* Least loaded (lowest in_flight / max_concurrent), preferring a backend
 * that has the model loaded among equals, ties round-robin (lb_leastload.c;
 * CONTRACT.md, Routing). */
extern const struct lb_ops lb_leastload;

static inline struct backend *lb_pick(struct lb *lb, struct backend **bes, int n,
                                      const struct lb_request *r, double now_ms)
{
    return lb->ops->pick(lb, bes, n, r, now_ms);
}

#endif
