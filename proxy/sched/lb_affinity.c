/* lb_affinity.c - conversations stay warm (lb.h; CONTRACT.md, "Conversations
 * stay warm").
 *
 * Ollama's runner (llama-server) keeps in each slot the KV cache of the
 * prompt it last processed, and a request re-uses the longest prefix it
 * shares with it. An agent sends its whole conversation every turn: on the
 * GPU of the last turn only the new tokens are processed, on another the
 * whole context is (tens of seconds at 30-60k tokens). So a request that
 * carries a key of its conversation goes where the key is bound.
 *
 * For a request R of model M, the candidates are the backends in service
 * (not removed, healthy, not drained or disabled) that serve M.
 *   1. num_ctx (ctx_pass): when some candidates' runner of M runs R's
 *      num_ctx, or is not loaded (a load there disturbs nobody), and others
 *      run another one, only the former are R's: on the others R would
 *      reload the model, which empties every cache of that runner and makes
 *      all of its requests wait. What a runner runs is what the proxy last
 *      sent it, or /api/ps' context_length (struct runner); a runner not
 *      known yet counts as not loaded.
 *   2. A keyed R: the candidates ranked by weighted rendezvous hashing of
 *      (R's key, the backend's url), each weighted by its cap for M, so two
 *      proxies with one config rank alike without sharing anything, and a
 *      backend that leaves or joins moves only its own keys. The first is
 *      the key's home. Bounded load (HAProxy's hash-balance-factor): a
 *      backend whose load for M, with R, is above balance_factor times the
 *      candidates' average is passed over for the next in R's order;
 *      rounded up to whole requests as HAProxy does, so that an idle fleet
 *      passes over nobody:
 *          in_flight(b) + 1 <= ceil(factor * (sum of in_flight + 1) * cap(b) / sum of caps).
 *      At least one backend always passes (for a factor >= 1 the bounds
 *      add up to more than what is in flight).
 *   3. The backend so found takes R if it has a free slot for M. If not, R
 *      is held (lb.h) until affinity_wait_ms after it arrived: the first
 *      slot that frees there is R's. Past that, the first backend in R's
 *      order that takes it does (the same one for every turn that spills,
 *      so their caches meet again).
 *   4. An unkeyed R goes to the least loaded candidate (lb_leastload); with
 *      step 1 narrowing the candidates it too is held for them.
 * A retry is never held (its try already started once). */
#include "lb.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

struct cand {
    struct backend *be;
    double score;  /* rendezvous: the highest is the key's first choice */
    int in_flight; /* for M */
    int cap;       /* for M */
    int match;     /* runs R's num_ctx, or nothing that R would reload (step 1) */
};

static unsigned long long mix64(unsigned long long x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL; /* splitmix64's finaliser */
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static unsigned long long hash_str(const char *s)
{
    unsigned long long h = 1469598103934665603ULL; /* FNV-1a 64 */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Weighted rendezvous (Schindelhauer and Schomaker's logarithmic method):
 * -W / ln(U), U uniform in (0, 1) from the pair's hash; a backend wins a
 * share of the keys proportional to W. */
static double score_of(unsigned long long key, const struct backend *be, double w)
{
    unsigned long long h = mix64(key ^ mix64(hash_str(be->url)));
    double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0; /* 2^53 */
    return -w / log(u);
}

/* The weight of BE for M: its configured cap for M (stable, unlike an
 * adaptive cap, so that two proxies agree). */
static double weight_of(struct backend *be, const char *key)
{
    struct runner *rn = backend_runner(be, key);
    int c = backend_ceiling(be);
    if (rn) {
        runner_cap(be, rn); /* rn->cap: the configured part */
        if (rn->cap && rn->cap < c)
            c = rn->cap;
    }
    return c > 0 ? c : 1;
}

static int ctx_matches(const struct backend *be, const char *key, int ctx)
{
    const struct runner *rn = backend_runner_find(be, key);
    /* Not loaded or not known; the same num_ctx; or none given while all
     * we know is /api/ps's number (the backend's default is not known). */
    return !rn || rn->ctx < 0 || rn->ctx == ctx || (ctx == 0 && rn->ctx_from_ps);
}

static int in_service(const struct backend *be)
{
    return !be->removed && be->healthy && be->admin == ADMIN_READY;
}

/* Room for N candidates in lb->scratch, or NULL. */
static struct cand *scratch(struct lb *lb, int n)
{
    if (n > lb->scratch_cap) {
        int cap = n < 16 ? 16 : n;
        void *p = realloc(lb->scratch, (size_t)cap * (sizeof(struct cand) + sizeof(void *)));
        if (!p)
            return NULL;
        lb->scratch = p;
        lb->scratch_cap = cap;
    }
    return lb->scratch;
}

/* The array of backend pointers after the candidates (for lb_leastload). */
static struct backend **scratch_bes(struct lb *lb)
{
    return (struct backend **)((struct cand *)lb->scratch + lb->scratch_cap);
}

/* Fill C with the candidates for R; returns how many, *MATCHING how many of
 * them match R's num_ctx (all of them when step 1 does not narrow). */
static int candidates(struct lb *lb, struct backend **bes, int n, const struct lb_request *r,
                      struct cand *c, int *matching)
{
    int k = 0, m = 0;
    for (int i = 0; i < n; i++) {
        struct backend *be = bes[i];
        if (!in_service(be) || !backend_serves(be, r->key))
            continue;
        c[k] = (struct cand){be, 0, 0, 0, 1};
        if (lb->ctx_pass && r->key)
            c[k].match = ctx_matches(be, r->key, r->num_ctx);
        m += c[k].match;
        k++;
    }
    *matching = m ? m : k; /* every one runs another: any, a reload is due anyway */
    if (m == 0)
        for (int i = 0; i < k; i++)
            c[i].match = 1;
    return k;
}

/* The least loaded of C[0..k) that match (MATCH_ONLY) or all. */
static struct backend *least_loaded(struct lb *lb, struct cand *c, int k, int match_only,
                                    struct lb_request *r, double now_ms)
{
    struct backend **b = scratch_bes(lb);
    int m = 0;
    for (int i = 0; i < k; i++)
        if (!match_only || c[i].match)
            b[m++] = c[i].be;
    return lb_leastload.pick(lb, b, m, r, now_ms);
}

static int by_score(const void *a, const void *b)
{
    double x = ((const struct cand *)a)->score, y = ((const struct cand *)b)->score;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Step 2: the index in C[0..k) (ranked) of the first matching candidate
 * within the bound; -1 when none matches. */
static int bounded(const struct lb *lb, const struct cand *c, int k)
{
    long long total = 0, caps = 0;
    for (int i = 0; i < k; i++)
        if (c[i].match) {
            total += c[i].in_flight;
            caps += c[i].cap;
        }
    for (int i = 0; i < k; i++) {
        double allowed;
        if (!c[i].match)
            continue;
        if (lb->balance_factor <= 0 || caps <= 0)
            return i;
        allowed = ceil(lb->balance_factor * (double)(total + 1) * c[i].cap / (double)caps - 1e-9);
        if (c[i].in_flight + 1 <= allowed)
            return i;
    }
    for (int i = 0; i < k; i++) /* cannot happen for a factor >= 1: the first match */
        if (c[i].match)
            return i;
    return -1;
}

/* The first of C[0..k) in rank order that takes R (matching ones first
 * when MATCH_ONLY), R's failed backend only when nothing else does. */
static struct backend *first_taker(struct cand *c, int k, int match_only, struct lb_request *r,
                                   double now_ms)
{
    struct backend *fallback = NULL;
    for (int i = 0; i < k; i++) {
        if ((match_only && !c[i].match) || !backend_takes(c[i].be, r->key, now_ms))
            continue;
        if (c[i].be != r->avoid)
            return c[i].be;
        fallback = c[i].be;
    }
    return fallback;
}

static int may_hold(const struct lb *lb, const struct lb_request *r, double now_ms)
{
    return r->may_hold && lb->wait_ms > 0 && now_ms < r->since_ms + lb->wait_ms;
}

static struct backend *hold(const struct lb *lb, struct lb_request *r)
{
    r->held_until = r->since_ms + lb->wait_ms;
    return NULL;
}

static struct backend *pick_keyed(struct lb *lb, struct cand *c, int k, struct lb_request *r,
                                  double now_ms)
{
    struct backend *be;
    int at, home = -1;
    for (int i = 0; i < k; i++) {
        c[i].score = score_of(r->affinity, c[i].be, weight_of(c[i].be, r->key));
        c[i].cap = backend_model_cap(c[i].be, r->key);
        c[i].in_flight = backend_model_in_flight(c[i].be, r->key);
    }
    qsort(c, (size_t)k, sizeof *c, by_score);
    for (int i = 0; i < k && home < 0; i++)
        if (c[i].match)
            home = i;
    if ((at = bounded(lb, c, k)) < 0)
        return NULL;
    be = c[at].be;
    if (be != r->avoid && backend_takes(be, r->key, now_ms)) {
        r->home = at == home;
        return be;
    }
    if (may_hold(lb, r, now_ms))
        return hold(lb, r);
    if (!(be = first_taker(c, k, 1, r, now_ms)))
        be = first_taker(c, k, 0, r, now_ms);
    r->home = be && be == c[home].be;
    return be;
}

static struct backend *do_pick(struct lb *lb, struct backend **bes, int n, struct lb_request *r,
                               double now_ms)
{
    struct cand *c;
    struct backend *be;
    int k, m;
    int keyed = lb->affinity_on && r->keyed && r->key;
    if (!keyed && !(lb->ctx_pass && r->key))
        return lb_leastload.pick(lb, bes, n, r, now_ms);
    if (!(c = scratch(lb, n))) /* out of memory: as least loaded */
        return lb_leastload.pick(lb, bes, n, r, now_ms);
    k = candidates(lb, bes, n, r, c, &m);
    if (keyed)
        return pick_keyed(lb, c, k, r, now_ms);
    if (m == k) /* num_ctx narrows nothing */
        return lb_leastload.pick(lb, bes, n, r, now_ms);
    if ((be = least_loaded(lb, c, k, 1, r, now_ms)))
        return be;
    if (may_hold(lb, r, now_ms))
        return hold(lb, r);
    return least_loaded(lb, c, k, 0, r, now_ms);
}

const struct lb_ops lb_affinity = {"affinity", do_pick};
