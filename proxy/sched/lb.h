/* lb.h - a balancer: which backend an admitted request goes to.
 *
 * The scheduler (sched.h) decides WHO gets a slot and WHEN: admission,
 * priorities, fair share, late binding. When it has chosen a request and
 * knows some backend could take it, it asks the balancer WHICH one, through
 * this small ops table (STYLE.md: h2o's balancer.h, HAProxy's lbprm). A
 * new routing policy (affinity...) is a new file with its own ops, not an
 * `if` in the scheduler; sched.c only ever calls lb_pick().
 *
 * A balancer may also decline a request for now (lb_request.held_until):
 * it would rather the request waited a little for a backend that is full
 * (its prompt cache is there). The scheduler then goes on with the other
 * requests, never stopping at a declined one, and asks again when a slot
 * frees or held_until has passed; past held_until a balancer must place
 * the request on any backend that takes it.
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
    /* Affinity (lb_affinity.c): a hash of the request's affinity key (its
     * conversation, CONTRACT.md "Conversations stay warm") when KEYED, and
     * its options.num_ctx (0: none given). */
    unsigned long long affinity;
    int keyed;
    int num_ctx;
    double since_ms; /* when it started waiting: it may be held until since_ms + the wait */
    int may_hold;    /* 0: place it now if anything takes it (a retry) */
    /* Out, set by pick. */
    double held_until; /* NULL returned to keep it waiting until then; 0: not held */
    int home;          /* keyed: the backend returned is its key's first choice */
};

struct lb;

struct lb_ops {
    const char *name;
    /* The backend for R among BES[0..N): one that takes R now
     * (backend_takes: available, serving its model, its runner under its
     * cap); NULL when none does, or when R is held (R->held_until). */
    struct backend *(*pick)(struct lb *lb, struct backend **bes, int n, struct lb_request *r,
                            double now_ms);
};

struct lb {
    const struct lb_ops *ops;
    unsigned rr; /* round-robin position, for ties */
    /* routing (config.h), for lb_affinity. */
    int affinity_on;       /* keyed requests are bound by their key */
    int ctx_pass;          /* num_ctx = "pass": prefer runners loaded with the same num_ctx */
    double balance_factor; /* bounded load; 0: no bound */
    double wait_ms;        /* affinity_wait_ms */
    void *scratch; /* lb_affinity's candidates (grown as needed; freed by lb_cleanup) */
    int scratch_cap;
};

/* Least loaded (lowest in_flight / max_concurrent), preferring a backend
 * that has the model loaded among equals, ties round-robin (lb_leastload.c;
 * CONTRACT.md, Routing). */
extern const struct lb_ops lb_leastload;

/* Affinity (lb_affinity.c): a keyed request goes to its key's backend by
 * rendezvous hashing over the backends that serve its model, skipping one
 * loaded above balance_factor times the average (bounded load), and may
 * wait up to wait_ms for it; with ctx_pass a request prefers runners that
 * run its num_ctx. An unkeyed request is placed as by lb_leastload. */
extern const struct lb_ops lb_affinity;

static inline struct backend *lb_pick(struct lb *lb, struct backend **bes, int n,
                                      struct lb_request *r, double now_ms)
{
    r->held_until = 0;
    r->home = 0;
    return lb->ops->pick(lb, bes, n, r, now_ms);
}

/* Free what a balancer keeps (lb->scratch). */
void lb_cleanup(struct lb *lb);

#endif
