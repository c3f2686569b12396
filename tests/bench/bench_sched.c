/* bench_sched.c - what handing a slot on costs in proxy/sched.c.
 *
 * No network: the backends are made with backend_new() from a config row
 * pointing at 127.0.0.1:1 and are never connected; the scheduler only
 * counts their slots. Entries are bare struct sched_entry whose granted()
 * records the entry in a FIFO of running ones and does nothing else.
 *
 * Setup of one case (W waiting, C clients): NB backends of 4 slots;
 * 4 models, m0 on every backend, m1 on the first half, m2 on the second
 * half, m3 on none. Every slot is filled, then W entries wait, charged
 * round-robin to C address clients, models m0 m1 m2 m3 in turn: when a slot
 * of the first half frees, m2 has no free backend, and m3 never has one.
 *
 * One cycle = what the proxy does when a response ends and a new request
 * arrives: sched_done() of the oldest running entry (its slot frees and
 * dispatch hands it to a waiting entry, by the policy of sched.c), then
 * sched_addr_client() + sched_submit() of a new entry (no slot is free, so
 * it waits). The new entry asks for the model of the one just granted, so
 * each model's share of the queue stays as it was; clients take turns.
 * W and the slots held stay constant.
 *
 * Figures per case: mean ns per cycle (a batch timed whole), p50/p99 of
 * cycles timed one by one (minus the clock's own cost), and the share that
 * is dispatch() itself (sched.dispatch_ns / dispatches, the counters the
 * proxy keeps). Cases: W in {10, 1000, 10000} x C in {1, 100, 1000}.
 *
 * Usage: bench_sched [--cycles N] [--reps R] [--backends NB]
 *                    [--extra-models M] [--quick]
 * --extra-models M lists M more models on every backend (an Ollama host
 * lists all it has installed; backend_serves() scans that list). Pin it:
 * taskset -c 1 build-bench/bench_sched. Not a ctest test. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "config.h"
#include "sched.h"

#define NMODELS 4
#define SLOTS 4

static const char *const model_keys[NMODELS] = {"m0:latest", "m1:latest", "m2:latest",
                                                "m3:latest"};

struct opts {
    long cycles;  /* timed cycles per rep */
    int reps;     /* reps; the median is reported */
    int nbackends;
    int extra_models;
};

/* ---- the entries and their callbacks ---- */

struct bench {
    struct sched s;
    struct event_base *base;
    struct backend **bes;
    int nbes;
    struct sched_entry *pool; /* every entry, W + slots */
    int npool;
    struct sched_entry **running; /* FIFO ring of RUNNING entries */
    int rhead, rtail, rcap;
    struct sched_entry *last_granted;
    unsigned long long granted, refused;
    char (*names)[32]; /* the clients' addresses */
    int nclients, next_client;
};

static struct bench *the_bench; /* the callbacks' context */

static void on_granted(struct sched_entry *e, struct backend *be)
{
    struct bench *b = the_bench;
    (void)be;
    b->running[b->rtail] = e;
    b->rtail = (b->rtail + 1) % b->rcap;
    b->last_granted = e;
    b->granted++;
}

static void on_refused(struct sched_entry *e, enum sched_refusal why, int retry_after)
{
    (void)e;
    (void)why;
    (void)retry_after;
    the_bench->refused++;
}

static const struct sched_ops ops = {on_granted, on_refused};

static struct sched_entry *pop_running(struct bench *b)
{
    struct sched_entry *e;
    if (b->rhead == b->rtail)
        return NULL;
    e = b->running[b->rhead];
    b->rhead = (b->rhead + 1) % b->rcap;
    return e;
}

/* ---- fake backends ---- */

static struct model_list *models_new(const char *const *keys, int n, int extra)
{
    struct model_list *l = calloc(1, sizeof *l);
    int total = n + extra;
    l->names = calloc((size_t)total + 1, sizeof *l->names);
    l->keys = calloc((size_t)total + 1, sizeof *l->keys);
    /* The fillers first: a model the scheduler looks for is found last. */
    for (int i = 0; i < extra; i++) {
        char name[64];
        snprintf(name, sizeof name, "filler-%d:latest", i);
        l->names[l->n] = strdup(name);
        l->keys[l->n++] = strdup(name);
    }
    for (int i = 0; i < n; i++) {
        l->names[l->n] = strdup(keys[i]);
        l->keys[l->n++] = strdup(keys[i]);
    }
    return l;
}

static struct backend *fake_backend(int i, int nbes, int extra)
{
    char name[32];
    struct config_backend cb = {.name = name, .url = "http://127.0.0.1:1", .host = "127.0.0.1",
                                .port = 1, .max_concurrent = SLOTS};
    const char *first[] = {model_keys[0], model_keys[1]};
    const char *second[] = {model_keys[0], model_keys[2]};
    struct backend *be;
    snprintf(name, sizeof name, "gpu%d", i);
    be = backend_new(&cb);
    if (!be)
        return NULL;
    be->models_known = 1;
    be->models_pending = 0;
    be->models = models_new(i < nbes / 2 ? first : second, 2, extra);
    return be;
}

/* ---- one case ---- */

static struct sched_client *next_client(struct bench *b)
{
    const char *name = b->names[b->next_client];
    b->next_client = (b->next_client + 1) % b->nclients;
    return sched_addr_client(&b->s, name);
}

static int submit(struct bench *b, struct sched_entry *e, const char *key)
{
    memset(e, 0, sizeof *e);
    e->ops = &ops;
    e->key = key;
    return sched_submit(&b->s, e, next_client(b));
}

static int all_full(const struct bench *b)
{
    for (int i = 0; i < b->nbes; i++)
        if (b->bes[i]->in_flight < b->bes[i]->max_concurrent)
            return 0;
    return 1;
}

static int setup(struct bench *b, const struct opts *o, int w, int c)
{
    struct px_config cfg = {0};
    int slots = o->nbackends * SLOTS, used = 0;
    memset(b, 0, sizeof *b);
    the_bench = b;
    b->base = event_base_new();
    sched_init(&b->s, b->base);
    cfg.queue_max_length = w + slots + 16; /* never full: nothing is pushed out */
    cfg.queue_timeout_s = 3600;            /* no timer fires: the loop never runs anyway */
    if (!b->base || sched_configure(&b->s, &cfg) < 0)
        return -1;
    b->nbes = o->nbackends;
    if (!(b->bes = calloc((size_t)b->nbes, sizeof *b->bes)))
        return -1;
    for (int i = 0; i < b->nbes; i++)
        if (!(b->bes[i] = fake_backend(i, b->nbes, o->extra_models)))
            return -1;
    sched_set_backends(&b->s, b->bes, b->nbes);
    b->nclients = c;
    b->names = calloc((size_t)c, sizeof *b->names);
    for (int i = 0; i < c; i++)
        snprintf(b->names[i], sizeof b->names[i], "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255,
                 i & 255);
    b->npool = w + slots;
    b->pool = calloc((size_t)b->npool, sizeof *b->pool);
    b->rcap = slots + 1;
    b->running = calloc((size_t)b->rcap, sizeof *b->running);
    if (!b->names || !b->pool || !b->running)
        return -1;
    /* Every slot first (servable models only), then the waiting ones. */
    for (int i = 0; !all_full(b); i++)
        if (used >= b->npool || submit(b, &b->pool[used++], model_keys[i % 3]) < 0)
            return -1;
    for (int i = 0; sched_length(&b->s) < w; i++)
        if (used >= b->npool || submit(b, &b->pool[used++], model_keys[i % NMODELS]) < 0)
            return -1;
    return 0;
}

/* Safe after a setup() that failed half-way. */
static void teardown(struct bench *b)
{
    for (int i = 0; b->pool && i < b->npool; i++)
        sched_done(&b->s, &b->pool[i]); /* IDLE ones are a no-op */
    if (b->base)
        sched_cleanup(&b->s);
    for (int i = 0; b->bes && i < b->nbes; i++)
        backend_free(b->bes[i]);
    free(b->bes);
    free(b->names);
    free(b->pool);
    free(b->running);
    if (b->base)
        event_base_free(b->base);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One cycle: see the top. Returns 0, or -1 if nothing was running. */
static int cycle(struct bench *b)
{
    struct sched_entry *e = pop_running(b);
    const char *key;
    if (!e)
        return -1;
    key = e->key;
    b->last_granted = NULL;
    sched_done(&b->s, e);
    if (b->last_granted)
        key = b->last_granted->key;
    submit(b, e, key);
    return 0;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct result {
    double mean_ns, p50_ns, p99_ns, dispatch_ns, grants_per_cycle;
    int waiting, cgq_clients;
};

static double clock_cost_ns(void)
{
    long long t0 = now_ns(), t = 0;
    for (int i = 0; i < 100000; i++)
        t += now_ns();
    (void)t;
    return (double)(now_ns() - t0) / 100000;
}

static int run_case(const struct opts *o, int w, int c, double clock_ns, struct result *r)
{
    struct bench b = {0};
    double *means = calloc((size_t)o->reps, sizeof *means);
    long long *one = calloc((size_t)o->cycles, sizeof *one);
    unsigned long long g0, d0, dn0;
    long warm = o->cycles < 2 * w ? 2 * w : o->cycles;
    int rc = -1;
    if (!means || !one || setup(&b, o, w, c) < 0)
        goto end;
    for (long i = 0; i < warm; i++) /* the heaps and the clients reach their steady shape */
        if (cycle(&b) < 0)
            goto end;
    g0 = b.granted;
    d0 = b.s.dispatches;
    dn0 = b.s.dispatch_ns;
    for (int rep = 0; rep < o->reps; rep++) {
        long long t0 = now_ns();
        for (long i = 0; i < o->cycles; i++)
            cycle(&b);
        means[rep] = (double)(now_ns() - t0) / (double)o->cycles;
    }
    r->grants_per_cycle = (double)(b.granted - g0) / ((double)o->cycles * o->reps);
    r->dispatch_ns = (double)(b.s.dispatch_ns - dn0) / (double)(b.s.dispatches - d0);
    for (long i = 0; i < o->cycles; i++) {
        long long t0 = now_ns();
        cycle(&b);
        one[i] = now_ns() - t0;
    }
    qsort(means, (size_t)o->reps, sizeof *means, cmp_d);
    qsort(one, (size_t)o->cycles, sizeof *one, cmp_ll);
    r->mean_ns = means[o->reps / 2];
    r->p50_ns = (double)one[o->cycles / 2] - clock_ns;
    r->p99_ns = (double)one[o->cycles * 99 / 100] - clock_ns;
    r->waiting = sched_length(&b.s);
    r->cgq_clients = 0;
    for (struct sched_client *cl = LIST_FIRST(&b.s.clients); cl; cl = LIST_NEXT(cl, link))
        r->cgq_clients += cl->waiting > 0;
    rc = b.refused || !all_full(&b) ? -1 : 0;
    if (rc < 0)
        fprintf(stderr, "W=%d C=%d: refused %llu, slots full %d\n", w, c, b.refused,
                all_full(&b));
end:
    teardown(&b);
    free(means);
    free(one);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_sched [--cycles N] [--reps R] [--backends NB] "
                    "[--extra-models M] [--quick]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const int ws[] = {10, 1000, 10000}, cs[] = {1, 100, 1000};
    struct opts o = {200000, 5, 4, 0};
    double clock_ns;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            o.cycles = 20000;
            o.reps = 3;
        } else if (i + 1 < argc && !strcmp(argv[i], "--cycles")) {
            o.cycles = atol(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--reps")) {
            o.reps = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--backends")) {
            o.nbackends = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--extra-models")) {
            o.extra_models = atoi(argv[++i]);
        } else {
            usage();
        }
    }
    if (o.cycles < 100 || o.reps < 1 || o.nbackends < 2 || o.extra_models < 0)
        usage();
    clock_ns = clock_cost_ns();
    printf("bench_sched: %d backends x %d slots, %d models (m3 served by none), %d extra "
           "models listed per backend, %ld cycles x %d reps (median), clock %.0f ns\n",
           o.nbackends, SLOTS, NMODELS, o.extra_models, o.cycles, o.reps, clock_ns);
    printf("cycle = sched_done (slot freed, dispatch grants one) + sched_addr_client + "
           "sched_submit (waits)\n\n");
    printf("| waiting | clients | clients waiting | us/cycle | p50 us | p99 us | dispatch() us "
           "| grants/cycle |\n|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        for (size_t j = 0; j < sizeof cs / sizeof cs[0]; j++) {
            struct result r;
            if (run_case(&o, ws[i], cs[j], clock_ns, &r) < 0) {
                printf("| %d | %d | failed |\n", ws[i], cs[j]);
                return 1;
            }
            printf("| %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.2f |\n", r.waiting, cs[j],
                   r.cgq_clients, r.mean_ns / 1000, r.p50_ns / 1000, r.p99_ns / 1000,
                   r.dispatch_ns / 1000, r.grants_per_cycle);
            fflush(stdout);
        }
    return 0;
}
