/* Unit test of proxy/sched/lb_affinity.c, and of the scheduler's holds:
 * properties, not sample outputs (h2o's balancer tests).
 *   - a key's backend does not depend on the order the fleet is listed in,
 *     nor on anything but the fleet (two balancers agree);
 *   - a backend that leaves moves only its own keys;
 *   - keys spread in proportion to the caps;
 *   - bounded load: a keyed request placed while it may still wait never
 *     goes to a backend whose load, with it, is above balance_factor times
 *     the average (rounded up); with a factor of 1 a flood of one key
 *     spreads evenly;
 *   - a request held is held only while its hold lasts, and past it takes
 *     any backend that has room, the same one each time (spills meet);
 *   - num_ctx: a request goes to a runner that runs its num_ctx when one
 *     does;
 *   - in the scheduler: a held entry does not hold up the entries behind
 *     it, and is granted a slot when its hold ends even if nothing else
 *     happens (no slot idles longer than affinity_wait_ms). */
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "config.h"
#include "lb.h"
#include "net.h"
#include "sched.h"

#define NB 5
static struct backend *bes[NB];
static const char *const M = "m";

static struct backend *mk(int i, int cap)
{
    char name[16], url[64], host[] = "127.0.0.1";
    struct config_backend cb = {.name = name, .url = url, .host = host, .port = 1000 + i,
                                .max_concurrent = cap};
    struct backend *be;
    snprintf(name, sizeof name, "b%d", i);
    snprintf(url, sizeof url, "http://10.0.0.%d:11434", i + 1);
    be = backend_new(&cb);
    be->models_pending = 0; /* serves anything */
    return be;
}

static void fleet(const int *caps, int n)
{
    for (int i = 0; i < NB; i++) {
        backend_free(bes[i]);
        bes[i] = i < n ? mk(i, caps[i]) : NULL;
    }
}

/* Put LOAD requests of M in flight on BE (backend and runner). */
static void load(struct backend *be, int n)
{
    struct runner *rn = backend_runner(be, M);
    be->in_flight = n;
    rn->in_flight = n;
}

static struct lb mklb(double factor, double wait_ms)
{
    struct lb lb = {.ops = &lb_affinity, .affinity_on = 1, .ctx_pass = 1,
                    .balance_factor = factor, .wait_ms = wait_ms};
    return lb;
}

static struct backend *place(struct lb *lb, struct backend **list, int n, unsigned long long key,
                             double since, struct lb_request *r)
{
    *r = (struct lb_request){.key = M, .affinity = key, .keyed = 1, .since_ms = since,
                             .may_hold = 1};
    return lb_pick(lb, list, n, r, 1000.0);
}

static unsigned long long key_of(int i)
{
    return (unsigned long long)i * 0x9e3779b97f4a7c15ULL + 12345;
}

static void test_order_agreement_and_moves(void)
{
    int caps[NB] = {4, 4, 4, 4, 4};
    struct backend *shuffled[NB]; /* another proxy's fleet: the same config, listed otherwise */
    struct lb a = mklb(1.5, 1000), b = mklb(1.5, 1000);
    struct lb_request r;
    int moved_wrongly = 0, differ = 0, homes[NB] = {0};
    fleet(caps, NB);
    for (int i = 0; i < NB; i++)
        shuffled[i] = mk((i * 3 + 1) % NB, 4);
    for (int k = 0; k < 2000; k++) {
        struct backend *x = place(&a, bes, NB, key_of(k), 1000, &r), *y;
        CHECK(r.home);
        for (int i = 0; i < NB; i++)
            homes[i] += x == bes[i];
        y = place(&b, shuffled, NB, key_of(k), 1000, &r);
        differ += strcmp(x->name, y->name) != 0;
        /* b2 leaves: only its keys move. */
        bes[2]->healthy = 0;
        y = place(&a, bes, NB, key_of(k), 1000, &r);
        bes[2]->healthy = 1;
        moved_wrongly += x != bes[2] && y != x;
        CHECK(y != bes[2]);
    }
    CHECK_INT(differ, 0);
    CHECK_INT(moved_wrongly, 0);
    for (int i = 0; i < NB; i++)
        backend_free(shuffled[i]);
    for (int i = 0; i < NB; i++) /* 400 each on average */
        CHECK(homes[i] > 300 && homes[i] < 500);
    lb_cleanup(&a);
    lb_cleanup(&b);
}

static void test_weights(void)
{
    int caps[3] = {2, 4, 8}, homes[3] = {0};
    struct lb lb = mklb(0, 1000);
    struct lb_request r;
    fleet(caps, 3);
    for (int k = 0; k < 28000; k++) {
        struct backend *x = place(&lb, bes, 3, key_of(k), 1000, &r);
        for (int i = 0; i < 3; i++)
            homes[i] += x == bes[i];
    }
    /* 4000, 8000, 16000 expected */
    CHECK(abs(homes[0] - 4000) < 400 && abs(homes[1] - 8000) < 600 &&
          abs(homes[2] - 16000) < 800);
    if (!(abs(homes[0] - 4000) < 400))
        fprintf(stderr, "  shares %d %d %d\n", homes[0], homes[1], homes[2]);
    lb_cleanup(&lb);
}

static int within_bound(double f, struct backend **list, int n, struct backend *b)
{
    long long total = 0, caps = 0;
    for (int i = 0; i < n; i++) {
        total += backend_model_in_flight(list[i], M);
        caps += backend_model_cap(list[i], M);
    }
    return f <= 0 || backend_model_in_flight(b, M) + 1 <=
                         ceil(f * (total + 1) * backend_model_cap(b, M) /
                                  (double)caps -
                              1e-9);
}

static void test_bounded_load_random(void)
{
    unsigned seed = 99;
    int placed = 0, held = 0;
    for (int t = 0; t < 3000; t++) {
        int caps[4], n = 2 + rand_r(&seed) % 3;
        double f = (rand_r(&seed) % 3) ? 1.0 + (rand_r(&seed) % 20) / 10.0 : 1.0;
        struct lb lb = mklb(f, 1000);
        struct lb_request r;
        struct backend *x;
        for (int i = 0; i < n; i++)
            caps[i] = 1 + rand_r(&seed) % 6;
        fleet(caps, n);
        for (int i = 0; i < n; i++)
            load(bes[i], rand_r(&seed) % (caps[i] + 1));
        x = place(&lb, bes, n, key_of(t), 1000, &r); /* may still wait */
        if (x) {
            placed++;
            CHECK(within_bound(f, bes, n, x));
            CHECK(backend_takes(x, M, 0));
        } else {
            int some_full_in_bound = 0, any_takes = 0;
            held++;
            CHECK(r.held_until == 2000);
            for (int i = 0; i < n; i++) {
                some_full_in_bound |= within_bound(f, bes, n, bes[i]) && !backend_takes(bes[i], M, 0);
                any_takes |= backend_takes(bes[i], M, 0);
            }
            CHECK(some_full_in_bound);
            /* Past its hold it takes any backend with room, and the same
             * one each time. */
            x = place(&lb, bes, n, key_of(t), -1, &r);
            CHECK((x != NULL) == any_takes);
            CHECK(r.held_until == 0);
            CHECK(x == place(&lb, bes, n, key_of(t), -1, &r));
        }
        lb_cleanup(&lb);
    }
    CHECK(placed > 500 && held > 100);
}

/* With a factor of 1 a flood of one key spreads over equal backends. */
static void test_one_key_flood(void)
{
    int caps[2] = {8, 8}, n[2] = {0};
    struct lb lb = mklb(1.0, 1000), unbounded = mklb(0, 1000);
    struct lb_request r;
    fleet(caps, 2);
    for (int k = 0; k < 12; k++) {
        struct backend *x = place(&lb, bes, 2, 7, 1000, &r);
        CHECK(x != NULL);
        if (!x)
            break;
        load(x, x->in_flight + 1);
        n[x == bes[1]]++;
    }
    CHECK_INT(n[0], 6);
    CHECK_INT(n[1], 6);
    fleet(caps, 2);
    n[0] = n[1] = 0;
    for (int k = 0; k < 8; k++) { /* no bound: all at home, until it is full */
        struct backend *x = place(&unbounded, bes, 2, 7, 1000, &r);
        CHECK(x != NULL);
        if (!x)
            break;
        load(x, x->in_flight + 1);
        n[x == bes[1]]++;
    }
    CHECK(n[0] == 8 || n[1] == 8);
    CHECK(place(&unbounded, bes, 2, 7, 1000, &r) == NULL && r.held_until == 2000);
    lb_cleanup(&lb);
    lb_cleanup(&unbounded);
}

/* num_ctx: runners that run the request's num_ctx are preferred, held for
 * while they are full, and left only past the hold. */
static void test_num_ctx(void)
{
    int caps[3] = {2, 2, 2};
    struct lb lb = mklb(1.5, 1000);
    struct lb_request r;
    fleet(caps, 3);
    for (int i = 0; i < 3; i++)
        backend_runner(bes[i], M)->ctx = i == 1 ? 8192 : 4096;
    for (int k = 0; k < 50; k++) {
        struct backend *x;
        r = (struct lb_request){.key = M, .num_ctx = 8192, .since_ms = 1000, .may_hold = 1,
                                .affinity = key_of(k), .keyed = k % 2};
        x = lb_pick(&lb, bes, 3, &r, 1000);
        CHECK(x == bes[1]);
    }
    load(bes[1], 2); /* full: held, then anywhere */
    r = (struct lb_request){.key = M, .num_ctx = 8192, .since_ms = 1000, .may_hold = 1};
    CHECK(lb_pick(&lb, bes, 3, &r, 1000) == NULL && r.held_until == 2000);
    r.since_ms = -1;
    CHECK(lb_pick(&lb, bes, 3, &r, 1000) != NULL);
    /* A request with none given goes anywhere /api/ps's numbers stand. */
    for (int i = 0; i < 3; i++)
        backend_runner(bes[i], M)->ctx_from_ps = 1;
    r = (struct lb_request){.key = M, .num_ctx = 0, .since_ms = 1000, .may_hold = 1};
    CHECK(lb_pick(&lb, bes, 3, &r, 1000) != NULL);
    lb_cleanup(&lb);
}

/* ---- the scheduler's holds ---- */

struct req {
    struct sched_entry e;
    int granted;
    double t_granted;
};
static void on_granted(struct sched_entry *e, struct backend *be)
{
    struct req *r = (struct req *)e;
    (void)be;
    r->granted++;
    r->t_granted = net_now_ms();
}
static void on_refused(struct sched_entry *e, enum sched_refusal why, int retry_after)
{
    (void)e, (void)why, (void)retry_after;
    CHECK(0);
}
static const struct sched_ops ops = {on_granted, on_refused};

static void submit(struct sched *s, struct req *r, int keyed, unsigned long long key)
{
    memset(r, 0, sizeof *r);
    r->e.ops = &ops;
    r->e.key = M;
    r->e.keyed = keyed;
    r->e.affinity = key;
    CHECK_INT(sched_submit(s, &r->e, sched_addr_client(s, keyed ? "agent" : "batch")), 0);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {0, ms * 1000};
    struct event *ev = evtimer_new(base, on_stop, base);
    evtimer_add(ev, &tv);
    event_base_dispatch(base);
    event_free(ev);
}

static void test_sched_holds(struct event_base *base)
{
    static struct px_config cfg;
    int caps[2] = {1, 1};
    struct sched s;
    struct req first, held, other, after;
    struct lb lb = mklb(1.5, 1000);
    struct lb_request r;
    unsigned long long k = 1;
    struct backend *home;
    double t0;
    fleet(caps, 2);
    home = place(&lb, bes, 2, k, 1000, &r); /* K's home */
    lb_cleanup(&lb);
    sched_init(&s, base);
    cfg.queue_max_length = 100;
    cfg.queue_timeout_s = 60;
    cfg.queue_no_backend_s = 60;
    cfg.routing.affinity = AFFINITY_SESSION;
    cfg.routing.balance_factor = 0; /* so that K's second request is held, not spread */
    cfg.routing.affinity_wait_ms = 200;
    sched_configure(&s, &cfg);
    sched_set_backends(&s, bes, 2);
    submit(&s, &first, 1, k);
    CHECK(first.granted && first.e.be == home);
    t0 = net_now_ms();
    submit(&s, &held, 1, k); /* its home is full: held */
    CHECK_INT(held.granted, 0);
    submit(&s, &other, 0, 0); /* not held up by it: the other backend at once */
    CHECK(other.granted && other.e.be != home);
    sched_done(&s, &other.e); /* a slot frees: still not held's (its hold lasts) */
    CHECK_INT(held.granted, 0);
    run_for(base, 600); /* the hold ends: the free slot is taken */
    CHECK_INT(held.granted, 1);
    CHECK(held.e.be != home);
    CHECK(held.t_granted - t0 >= 190 && held.t_granted - t0 < 500);
    CHECK_INT(backend_runner(home, M)->hits, 1);
    CHECK_INT(backend_runner(held.e.be, M)->misses, 1);
    /* A hold that the home's slot ends first: granted there, a hit. */
    sched_done(&s, &held.e);
    submit(&s, &after, 1, k);
    CHECK_INT(after.granted, 0);
    sched_done(&s, &first.e);
    CHECK(after.granted && after.e.be == home);
    sched_done(&s, &after.e);
    CHECK_INT(home->in_flight, 0);
    CHECK_INT(backend_model_in_flight(home, M), 0);
    sched_cleanup(&s);
}

static void submit_as(struct sched *s, struct req *r, const char *client, int keyed,
                      unsigned long long key)
{
    memset(r, 0, sizeof *r);
    r->e.ops = &ops;
    r->e.key = M;
    r->e.keyed = keyed;
    r->e.affinity = key;
    CHECK_INT(sched_submit(s, &r->e, sched_addr_client(s, client)), 0);
}

/* A held entry first in the policy's order (its client has no more in
 * flight than the other, and it is older) does not hold up the other
 * client's entry behind it when a slot frees elsewhere. */
static void test_sched_no_head_of_line(struct event_base *base)
{
    static struct px_config cfg;
    int caps[2] = {1, 2};
    struct sched s;
    struct req first, b1, b2, held, other;
    struct lb lb = mklb(0, 1000);
    struct lb_request r;
    unsigned long long k = 0;
    struct backend *home = NULL;
    fleet(caps, 2);
    for (k = 1; k < 100 && home != bes[0]; k++) /* a key whose home is the cap-1 backend */
        home = place(&lb, bes, 2, k, 1000, &r);
    k--;
    lb_cleanup(&lb);
    CHECK(home == bes[0]);
    sched_init(&s, base);
    cfg.queue_max_length = 100;
    cfg.queue_timeout_s = 60;
    cfg.queue_no_backend_s = 60;
    cfg.routing.affinity = AFFINITY_SESSION;
    cfg.routing.balance_factor = 0;
    cfg.routing.affinity_wait_ms = 5000;
    sched_configure(&s, &cfg);
    sched_set_backends(&s, bes, 2);
    submit_as(&s, &first, "agent", 1, k);
    CHECK(first.granted && first.e.be == bes[0]);
    submit_as(&s, &b1, "batch", 0, 0);
    submit_as(&s, &b2, "batch", 0, 0);
    CHECK(b1.e.be == bes[1] && b2.e.be == bes[1]);
    submit_as(&s, &held, "agent", 1, k);  /* its home full: held */
    submit_as(&s, &other, "batch", 0, 0); /* nothing free */
    CHECK(!held.granted && !other.granted);
    sched_done(&s, &b1.e); /* agent 1 in flight, batch 1: held is first in line, and held */
    CHECK_INT(held.granted, 0);
    CHECK_INT(other.granted, 1);
    CHECK(other.e.be == bes[1]);
    sched_done(&s, &first.e); /* its home frees: held takes it */
    CHECK(held.granted && held.e.be == bes[0]);
    sched_done(&s, &held.e);
    sched_done(&s, &b2.e);
    sched_done(&s, &other.e);
    CHECK_INT(bes[0]->in_flight + bes[1]->in_flight, 0);
    sched_cleanup(&s);
}

int main(void)
{
    struct event_base *base = event_base_new();
    test_order_agreement_and_moves();
    test_weights();
    test_bounded_load_random();
    test_one_key_flood();
    test_num_ctx();
    test_sched_holds(base);
    test_sched_no_head_of_line(base);
    for (int i = 0; i < NB; i++)
        backend_free(bes[i]);
    event_base_free(base);
    CHECK_DONE();
}
