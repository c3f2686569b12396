/* lb_leastload.c - today's pick (lb.h): the least loaded backend that can
 * take the request now. */
#include "lb.h"

#include <stdlib.h>

#include "backend.h"

/* a->in/a->max < b->in/b->max, without division. */
static int less_loaded(const struct backend *a, const struct backend *b)
{
    return (long long)a->in_flight * b->max_concurrent <
           (long long)b->in_flight * a->max_concurrent;
}

static struct backend *do_pick(struct lb *lb, struct backend **bes, int n, struct lb_request *r,
                               double now_ms)
{
    const char *key = r->key;
    const struct backend *avoid = r->avoid;
    unsigned *rr = &lb->rr;
    struct backend *best = NULL, *fallback = NULL;
    int best_loaded = 0;
    unsigned start = n ? *rr % (unsigned)n : 0;
    for (int k = 0; k < n; k++) {
        struct backend *be = bes[(start + (unsigned)k) % (unsigned)n];
        int loaded;
        if (!backend_takes(be, key, now_ms))
            continue;
        if (be == avoid) {
            fallback = be;
            continue;
        }
        loaded = key && model_list_has(be->loaded, key);
        if (!best || less_loaded(be, best) ||
            (loaded && !best_loaded && !less_loaded(best, be))) {
            best = be;
            best_loaded = loaded;
        }
    }
    if (!best)
        best = fallback;
    if (best)
        (*rr)++;
    return best;
}

const struct lb_ops lb_leastload = {"leastload", do_pick};

void lb_cleanup(struct lb *lb)
{
    free(lb->scratch);
    lb->scratch = NULL;
    lb->scratch_cap = 0;
}
