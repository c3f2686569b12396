/* Unit test of proxy/sched.c: properties of the scheduler's choice under
 * random load (caps and per-key caps never exceeded, no idle slot while a
 * request it could serve waits, strict priorities, the fewest-in-flight
 * client first), shares that follow the weights, a full queue that refuses
 * the client with the most waiting, max_queued, retries first in line,
 * the queue timeout, metadata counted to its client and shared fairly,
 * clients of equal load taking turns (GPU slots and metadata places).
 * Backends are real struct backend objects that are
 * never connected to: granting a slot is all the scheduler does. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "config.h"
#include "net.h"
#include "sched.h"

#define MAXE 4000

struct req {
    struct sched_entry e;
    int granted, refused, done;
    enum sched_refusal why;
};

static struct req reqs[MAXE];
static int nreqs;
static struct sched S;
static struct backend *bes[8];
static int nbes;
static int prop_failures;
/* The last grant, for the checks made at grant time. */
static struct req *last_granted;

static void on_granted(struct sched_entry *e, struct backend *be);
static void on_refused(struct sched_entry *e, enum sched_refusal why, int retry_after)
{
    struct req *r = (struct req *)e;
    (void)retry_after;
    r->refused++;
    r->why = why;
}
static const struct sched_ops ops = {on_granted, on_refused};

static int ratio_less(const struct sched_client *a, int ina, const struct sched_client *b,
                      int inb)
{
    return (long long)ina * b->weight < (long long)inb * a->weight;
}

static int servable_now(const char *key)
{
    for (int i = 0; i < nbes; i++)
        if (backend_available(bes[i], 0) && backend_serves(bes[i], key))
            return 1;
    return 0;
}

/* At the moment of a grant from the queue: nothing of a higher priority,
 * and no client of its priority with fewer in flight for its weight, had
 * a request waiting that some then available backend could serve. The
 * granted slot is counted already, so it is taken out again for this. */
static void on_granted(struct sched_entry *e, struct backend *be)
{
    struct req *r = (struct req *)e;
    struct sched_client *c = e->client;
    int was_waiting = r->granted == 0 && r->e.seq != 0;
    CHECK(e->state == SCHED_RUNNING && e->be == be);
    r->granted++;
    last_granted = r;
    if (!was_waiting || e->meta) /* metadata took no slot of BE */
        return;
    backend_release(be); /* as it was just before the grant */
    for (int i = 0; i < nreqs; i++) {
        struct req *o = &reqs[i];
        struct sched_client *oc = o->e.client;
        if (o->e.state != SCHED_WAITING || oc->capped || !servable_now(o->e.key))
            continue;
        if (oc->prio < c->prio) {
            prop_failures++;
            fprintf(stderr, "priority: a waiting %d before a granted %d\n", oc->prio, c->prio);
        } else if (oc->prio == c->prio && oc != c &&
                   ratio_less(oc, oc->in_flight - oc->meta_in_flight, c,
                              c->in_flight - c->meta_in_flight - 1)) {
            prop_failures++;
            fprintf(stderr, "fairness: %s (%d/%d) waited while %s (%d/%d) got a slot\n",
                    oc->name, oc->in_flight, oc->weight, c->name, c->in_flight - 1, c->weight);
        }
    }
    backend_acquire(be);
}

static struct backend *mk_backend(const char *name, int cap, const char *const *models, int n)
{
    char nm[32], url[] = "http://127.0.0.1:1", host[] = "127.0.0.1";
    struct config_backend cb = {.name = nm, .url = url, .host = host, .port = 1,
                                .max_concurrent = cap};
    snprintf(nm, sizeof nm, "%s", name);
    struct backend *be = backend_new(&cb);
    be->models_pending = 0; /* as if discovery had asked (and, without MODELS, failed) */
    if (models) {
        be->models_known = 1;
        be->models = calloc(1, sizeof *be->models);
        for (int i = 0; i < n; i++)
            if (model_list_push(be->models, models[i], models[i]) < 0)
                abort();
    }
    return be;
}

static void free_backends(void)
{
    for (int i = 0; i < nbes; i++)
        backend_free(bes[i]);
    nbes = 0;
}

static struct config_key keys[8];
static struct px_config cfg;

static void setup(int max_length, double timeout_s, int nkeys)
{
    memset(reqs, 0, sizeof reqs);
    nreqs = 0;
    cfg.queue_max_length = max_length;
    cfg.queue_timeout_s = timeout_s;
    cfg.queue_no_backend_s = 1e6; /* off but where a test sets it */
    cfg.keys = keys;
    cfg.nkeys = nkeys;
    sched_configure(&S, &cfg);
    sched_set_backends(&S, bes, nbes);
}

static struct req *submit(struct sched_client *c, const char *key, int *rc)
{
    struct req *r = &reqs[nreqs++];
    r->e.ops = &ops;
    r->e.key = key;
    *rc = sched_submit(&S, &r->e, c);
    return r;
}

static struct req *submit_meta(struct sched_client *c, int *rc)
{
    struct req *r = &reqs[nreqs++];
    r->e.ops = &ops;
    r->e.meta = 1;
    *rc = sched_submit(&S, &r->e, c);
    return r;
}

/* Invariants that hold between any two calls. */
static void check_invariants(void)
{
    int on[8] = {0};
    for (int i = 0; i < nreqs; i++)
        if (reqs[i].e.state == SCHED_RUNNING && !reqs[i].e.meta)
            for (int b = 0; b < nbes; b++)
                on[b] += reqs[i].e.be == bes[b];
    for (int b = 0; b < nbes; b++) {
        CHECK(bes[b]->in_flight <= bes[b]->max_concurrent);
        CHECK_INT(bes[b]->in_flight, on[b]);
    }
    for (int k = 0; k < S.nkeys; k++) {
        struct sched_client *c = S.keys[k];
        if (c->max_concurrent) /* its GPU slots; metadata holds none */
            CHECK(c->in_flight - c->meta_in_flight <= c->max_concurrent);
    }
    /* The clients by waiting: the heap holds exactly those with some, the
     * most first. */
    {
        int with = 0, max = 0;
        struct sched_client *c;
        LIST_FOREACH(c, &S.clients, link) {
            with += c->waiting > 0;
            if (c->waiting > max)
                max = c->waiting;
        }
        CHECK_INT(S.nmost, with);
        if (S.nmost)
            CHECK_INT(S.most[0]->waiting, max);
    }
    /* Work-conserving: a waiting request of a client under its cap has no
     * available backend that serves it; waiting metadata, no backend with
     * a metadata place free. */
    for (int i = 0; i < nreqs; i++) {
        struct req *r = &reqs[i];
        if (r->e.meta) {
            for (int b = 0; b < nbes && r->e.state == SCHED_WAITING; b++)
                if (bes[b]->meta_in_flight < SCHED_META_CAP) {
                    prop_failures++;
                    fprintf(stderr, "idle metadata place: request %d waits\n", i);
                }
            continue;
        }
        if (r->e.state == SCHED_WAITING && !r->e.client->capped && servable_now(r->e.key)) {
            prop_failures++;
            fprintf(stderr, "idle slot: request %d (%s) waits beside a free backend\n", i,
                    r->e.key ? r->e.key : "any");
        }
    }
}

static void test_random_properties(void)
{
    static const char *const m01[] = {"m0", "m1"}, *const m12[] = {"m1", "m2"},
                             *const m3[] = {"m3"};
    static const char *const model_keys[] = {"m0", "m1", "m2", "m3", "m4", NULL};
    static char names[][8] = {"a", "b", "c", "d", "e", "f"};
    unsigned seed = 12345;
    int running[MAXE], nrun;
    bes[0] = mk_backend("b0", 3, m01, 2);
    bes[1] = mk_backend("b1", 2, m12, 2);
    bes[2] = mk_backend("b2", 4, NULL, 0); /* models not known yet: serves all */
    bes[3] = mk_backend("b3", 1, m3, 1);
    nbes = 4;
    for (int k = 0; k < 6; k++) {
        keys[k].name = names[k];
        keys[k].key = names[k];
        keys[k].priority = (enum key_priority)(k % 3);
        keys[k].weight = 1 + k % 3;
        keys[k].max_concurrent = k == 1 ? 2 : 0;
        keys[k].max_queued = 0;
    }
    setup(100000, 600, 6);
    /* b2 serves everything: take it out for most of the run so that models
     * matter (m4 then waits for nobody). */
    bes[2]->removed = 1;
    for (int step = 0; step < 3000 && nreqs < MAXE - 1; step++) {
        int op = rand_r(&seed) % 10, rc;
        if (step == 2000)
            bes[2]->removed = 0, sched_kick(&S); /* a backend comes: waiting work moves */
        if (op < 5) {
            struct sched_client *c = sched_key_client(&S, rand_r(&seed) % 6);
            const char *key = model_keys[rand_r(&seed) % 6];
            submit(c, key, &rc);
            CHECK_INT(rc, 0);
        } else {
            nrun = 0;
            for (int i = 0; i < nreqs; i++)
                if (!reqs[i].done && (reqs[i].e.state == SCHED_RUNNING ||
                                      (op == 9 && reqs[i].e.state == SCHED_WAITING)))
                    running[nrun++] = i;
            if (nrun) {
                struct req *r = &reqs[running[rand_r(&seed) % nrun]];
                sched_done(&S, &r->e); /* a reply ends, or a waiting client leaves */
                r->done = 1;
            }
        }
        check_invariants();
    }
    CHECK_INT(prop_failures, 0);
    /* End everything: the counts come back to zero. */
    for (int i = 0; i < nreqs; i++)
        if (!reqs[i].done)
            sched_done(&S, &reqs[i].e), reqs[i].done = 1;
    for (int b = 0; b < nbes; b++)
        CHECK_INT(bes[b]->in_flight, 0);
    for (int k = 0; k < 6; k++) {
        CHECK_INT(S.keys[k]->in_flight, 0);
        CHECK_INT(S.keys[k]->waiting, 0);
    }
    CHECK_INT(sched_length(&S), 0);
    CHECK(S.groups == NULL);
    free_backends();
}

/* Two clients with weights 1 and 3 on 8 slots, both with plenty waiting:
 * as replies end, the slots in flight stay within one of 2 and 6. */
static void test_shares_follow_weights(void)
{
    static char names[][8] = {"light", "heavy"};
    int rc, worst = 0;
    bes[0] = mk_backend("b0", 8, NULL, 0);
    nbes = 1;
    for (int k = 0; k < 2; k++) {
        memset(&keys[k], 0, sizeof keys[k]);
        keys[k].name = keys[k].key = names[k];
        keys[k].priority = PRIO_NORMAL;
        keys[k].weight = k ? 3 : 1;
    }
    setup(100000, 600, 2);
    for (int i = 0; i < 200; i++) {
        submit(sched_key_client(&S, 0), NULL, &rc);
        submit(sched_key_client(&S, 1), NULL, &rc);
    }
    for (int step = 0; step < 300; step++) {
        int oldest = -1, dl, dh;
        for (int i = 0; i < nreqs && oldest < 0; i++)
            if (reqs[i].e.state == SCHED_RUNNING)
                oldest = i;
        if (oldest < 0)
            break;
        sched_done(&S, &reqs[oldest].e);
        dl = abs(S.keys[0]->in_flight - 2);
        dh = abs(S.keys[1]->in_flight - 6);
        if (step > 8 && (dl > worst || dh > worst))
            worst = dl > dh ? dl : dh;
        CHECK_INT(S.keys[0]->in_flight + S.keys[1]->in_flight, 8);
    }
    CHECK(worst <= 1);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    free_backends();
}

static void test_full_queue_refuses_the_flooder(void)
{
    struct sched_client *flood, *other;
    struct req *f[7], *o;
    int rc;
    bes[0] = mk_backend("b0", 2, NULL, 0);
    nbes = 1;
    setup(5, 600, 0);
    flood = sched_addr_client(&S, "10.0.0.1");
    other = sched_addr_client(&S, "10.0.0.2");
    for (int i = 0; i < 7; i++) { /* two run, five wait: the queue is full */
        f[i] = submit(flood, NULL, &rc);
        CHECK_INT(rc, 0);
    }
    CHECK_INT(f[0]->granted + f[1]->granted, 2);
    CHECK_INT(S.waiting, 5);
    o = submit(other, NULL, &rc); /* the flooder's newest makes room */
    CHECK_INT(rc, 0);
    CHECK_INT(o->e.state, SCHED_WAITING);
    CHECK_INT(f[6]->refused, 1);
    CHECK_INT(f[6]->why, SCHED_PUSHED_OUT);
    sched_done(&S, &f[6]->e);
    CHECK_INT(f[5]->refused, 0);
    submit(flood, NULL, &rc); /* the flooder itself, when full: refused */
    CHECK_INT(rc, SCHED_EFULL);
    CHECK_INT(S.waiting, 5);
    /* The other client is next, though it came last: it has none in
     * flight, the flooder one. */
    sched_done(&S, &f[0]->e);
    CHECK_INT(o->granted, 1);
    CHECK_INT(f[2]->granted, 0);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    CHECK_INT(S.waiting, 0);
    free_backends();
}

/* keys[0]: "k", normal, weight 1, with these caps. */
static void key_k(int max_concurrent, int max_queued)
{
    memset(&keys[0], 0, sizeof keys[0]);
    keys[0].name = keys[0].key = "k";
    keys[0].weight = 1;
    keys[0].priority = PRIO_NORMAL;
    keys[0].max_concurrent = max_concurrent;
    keys[0].max_queued = max_queued;
}

static void test_max_queued_and_cap(void)
{
    struct req *r[5];
    int rc;
    bes[0] = mk_backend("b0", 4, NULL, 0);
    nbes = 1;
    key_k(1, 2);
    setup(100, 600, 1);
    for (int i = 0; i < 4; i++)
        r[i] = submit(sched_key_client(&S, 0), NULL, &rc);
    CHECK_INT(r[0]->granted, 1);
    CHECK_INT(r[1]->e.state, SCHED_WAITING); /* a free slot, but the key is at its cap */
    CHECK_INT(r[2]->e.state, SCHED_WAITING);
    CHECK_INT(rc, SCHED_EKEYQ);
    CHECK_INT(bes[0]->in_flight, 1);
    sched_done(&S, &r[0]->e);
    CHECK_INT(r[1]->granted, 1);
    CHECK_INT(bes[0]->in_flight, 1);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    free_backends();
}

static void test_retry_first_in_line(void)
{
    struct sched_client *a, *b;
    struct req *r0, *r1, *w;
    int rc;
    bes[0] = mk_backend("b0", 1, NULL, 0);
    bes[1] = mk_backend("b1", 1, NULL, 0);
    nbes = 2;
    setup(100, 600, 0);
    a = sched_addr_client(&S, "a");
    b = sched_addr_client(&S, "b");
    r0 = submit(a, NULL, &rc);
    r1 = submit(a, NULL, &rc);
    w = submit(b, NULL, &rc);
    CHECK_INT(w->e.state, SCHED_WAITING);
    /* r0's try fails on its backend; the other is busy: r0 goes first in
     * line, before w (which has fewer in flight, but waits behind a retry). */
    sched_retry(&S, &r0->e);
    CHECK_INT(r0->e.state, SCHED_RUNNING); /* its own slot was the free one: taken again */
    CHECK(r0->e.be == r1->e.be || r0->e.be != NULL);
    sched_done(&S, &r1->e);
    CHECK_INT(w->granted, 1);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    free_backends();
}

static void test_timeout(struct event_base *base)
{
    struct req *r0, *r1;
    int rc;
    bes[0] = mk_backend("b0", 1, NULL, 0);
    nbes = 1;
    setup(100, 0.05, 0);
    r0 = submit(sched_addr_client(&S, "x"), NULL, &rc);
    r1 = submit(sched_addr_client(&S, "x"), NULL, &rc);
    CHECK_INT(r1->e.state, SCHED_WAITING);
    event_base_dispatch(base); /* until the timer fired */
    CHECK_INT(r1->refused, 1);
    CHECK_INT(r1->why, SCHED_TIMED_OUT);
    CHECK_INT(r1->e.state, SCHED_IDLE);
    CHECK_INT(S.waiting, 0);
    sched_done(&S, &r1->e);
    sched_done(&S, &r0->e);
    CHECK_INT(bes[0]->in_flight, 0);
    free_backends();
}

/* The no-backend rule: a model no backend in service serves waits at most
 * queue.no_backend_s, then SCHED_NO_BACKEND; with 0, refused at submit. A
 * backend coming back in time saves the entry. */
static void on_backend_back(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    bes[1]->healthy = 1;
    sched_kick(arg);
}

static void test_no_backend(struct event_base *base)
{
    static const char *const m0[] = {"m0"}, *const m1[] = {"m1"};
    struct req *drained, *saved, *now;
    struct event *ev;
    struct timeval back = {0, 150000};
    double t0;
    int rc;
    bes[0] = mk_backend("b0", 1, m0, 1);
    bes[1] = mk_backend("b1", 1, m1, 1);
    nbes = 2;
    setup(100, 60, 0);
    bes[0]->healthy = 0;
    bes[1]->healthy = 0;
    cfg.queue_no_backend_s = 0; /* fail fast */
    sched_configure(&S, &cfg);
    now = submit(sched_addr_client(&S, "x"), "m0", &rc);
    CHECK_INT(rc, SCHED_ENOBACKEND);
    CHECK_INT(now->e.state, SCHED_IDLE);
    CHECK_INT(S.waiting, 0);
    cfg.queue_no_backend_s = 0.4;
    sched_configure(&S, &cfg);
    bes[0]->healthy = 1;
    bes[0]->admin = ADMIN_DRAIN; /* up but out of service: the same as down */
    drained = submit(sched_addr_client(&S, "x"), "m0", &rc);
    CHECK_INT(rc, 0);
    saved = submit(sched_addr_client(&S, "y"), "m1", &rc); /* b1 comes back in 150 ms */
    CHECK_INT(rc, 0);
    CHECK_INT(S.waiting, 2);
    ev = evtimer_new(base, on_backend_back, &S);
    evtimer_add(ev, &back);
    t0 = net_now_ms();
    event_base_dispatch(base); /* until nothing waits */
    CHECK_INT(drained->refused, 1);
    CHECK_INT(drained->why, SCHED_NO_BACKEND);
    CHECK(net_now_ms() - t0 >= 400 && net_now_ms() - t0 < 400 + 3 * 250 + 500);
    CHECK_INT(saved->refused, 0);
    CHECK_INT(saved->granted, 1);
    CHECK(saved->e.be == bes[1]);
    sched_done(&S, &drained->e);
    sched_done(&S, &saved->e);
    CHECK_INT(bes[1]->in_flight, 0);
    event_free(ev);
    free_backends();
}

/* Many clients with one request waiting each, at a full queue: a newcomer
 * ties them, is the newest, and is refused; a waiting request is never
 * pushed out by it (issue 18, item 8). */
static void test_full_queue_flood_of_clients(void)
{
    char name[32];
    struct req *w[4], *late;
    int rc;
    bes[0] = mk_backend("b0", 1, NULL, 0);
    nbes = 1;
    setup(3, 600, 0);
    for (int i = 0; i < 4; i++) { /* one runs, three wait, each its own client */
        snprintf(name, sizeof name, "10.0.1.%d", i);
        w[i] = submit(sched_addr_client(&S, name), NULL, &rc);
        CHECK_INT(rc, 0);
    }
    CHECK_INT(S.waiting, 3);
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "10.0.2.%d", i);
        late = submit(sched_addr_client(&S, name), NULL, &rc);
        CHECK_INT(rc, SCHED_EFULL);
        CHECK_INT(late->refused, 0);
    }
    for (int i = 1; i < 4; i++)
        CHECK_INT(w[i]->refused, 0);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    free_backends();
}

/* Metadata (e->meta) takes no slot but is its client's: counted in
 * waiting and in flight, under max_queued and the queue's one max_length
 * with its push-out rule (across kinds), and each metadata place that
 * frees goes to the client with the fewest metadata in flight. A key's
 * max_concurrent caps its GPU slots, not its metadata. */
static void test_metadata_counted(void)
{
    enum { M = SCHED_META_CAP };
    struct sched_client *k, *f, *o;
    struct req *gpu, *m[M + 2], *fl[M + 6], *om, *og1, *og2;
    int rc;
    bes[0] = mk_backend("b0", 1, NULL, 0);
    nbes = 1;
    key_k(1, 2);
    setup(100, 600, 1);
    k = sched_key_client(&S, 0);
    gpu = submit(k, NULL, &rc);
    CHECK_INT(gpu->granted, 1);
    CHECK(k->capped);
    for (int i = 0; i < M + 2; i++) {
        m[i] = submit_meta(k, &rc);
        CHECK_INT(rc, 0);
        CHECK_INT(m[i]->granted, i < M); /* at its cap, yet its metadata runs */
    }
    CHECK_INT(k->in_flight, 1 + M);
    CHECK_INT(k->meta_in_flight, M);
    CHECK_INT(k->waiting, 2);
    CHECK_INT(S.meta_waiting, 2);
    CHECK_INT(sched_length(&S), 2);
    submit_meta(k, &rc);
    CHECK_INT(rc, SCHED_EKEYQ);
    check_invariants();
    sched_done(&S, &m[0]->e);
    CHECK_INT(m[M]->granted, 1);
    CHECK_INT(k->waiting, 1);
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    CHECK_INT(k->in_flight + k->meta_in_flight + k->waiting, 0);

    setup(6, 600, 0);
    f = sched_addr_client(&S, "f");
    o = sched_addr_client(&S, "o");
    for (int i = 0; i < M + 6; i++) { /* M run, 6 wait: the queue is full */
        fl[i] = submit_meta(f, &rc);
        CHECK_INT(rc, 0);
    }
    CHECK_INT(f->waiting, 6);
    submit_meta(f, &rc);
    CHECK_INT(rc, SCHED_EFULL);
    om = submit_meta(o, &rc); /* the flooder's newest makes room */
    CHECK_INT(rc, 0);
    CHECK_INT(om->e.state, SCHED_WAITING);
    CHECK_INT(fl[M + 5]->refused, 1);
    CHECK_INT(fl[M + 5]->why, SCHED_PUSHED_OUT);
    og1 = submit(o, NULL, &rc); /* the GPU slot, at once */
    CHECK_INT(og1->granted, 1);
    og2 = submit(o, NULL, &rc); /* waits: the flooder's newest metadata makes room */
    CHECK_INT(rc, 0);
    CHECK_INT(og2->e.state, SCHED_WAITING);
    CHECK_INT(fl[M + 4]->refused, 1);
    CHECK_INT(S.waiting + S.meta_waiting, 6);
    check_invariants();
    sched_done(&S, &fl[0]->e); /* o has no metadata in flight: it goes first */
    CHECK_INT(om->granted, 1);
    CHECK_INT(fl[M]->granted, 0);
    CHECK_INT(o->meta_in_flight, 1);
    sched_done(&S, &fl[1]->e);
    CHECK_INT(fl[M]->granted, 1); /* then the flood, oldest first */
    CHECK_INT(fl[M + 1]->granted, 0);
    check_invariants();
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    CHECK_INT(S.waiting + S.meta_waiting + S.retrying, 0);
    CHECK_INT(bes[0]->meta_in_flight, 0);
    free_backends();
}

/* keys[0..1]: "a" and "b", normal, of weights WA and WB. */
static void keys_ab(int wa, int wb)
{
    static char names[][8] = {"a", "b"};
    for (int k = 0; k < 2; k++) {
        memset(&keys[k], 0, sizeof keys[k]);
        keys[k].name = keys[k].key = names[k];
        keys[k].priority = PRIO_NORMAL;
        keys[k].weight = k ? wb : wa;
    }
}

/* The order the waiting requests R[0..N-1] are granted in as the one
 * running (RUN) and each granted after it end: their indexes into ORDER. */
static void drain_order(struct req *run, struct req **r, int n, int *order)
{
    for (int k = 0; k < n; k++) {
        int next = -1;
        sched_done(&S, &run->e);
        for (int i = 0; i < n; i++)
            if (r[i]->granted && r[i]->e.state == SCHED_RUNNING)
                next = i;
        CHECK(next >= 0);
        order[k] = next;
        run = r[next];
    }
    sched_done(&S, &run->e);
}

/* Where a slot's cap is 1, a backlogged client's in_flight is 0 each time
 * its request ends, as is every other waiting client's: a tie, which goes
 * to the client granted least recently (audit: it went to the older
 * request, the backlog's, and a single request waited for all 6). Tied
 * clients then take turns; within a client, oldest first across models. */
static void test_ties_take_turns(void)
{
    struct req *f0, *r[8];
    int rc, order[8];
    bes[0] = mk_backend("b0", 1, NULL, 0);
    nbes = 1;
    keys_ab(1, 1);
    setup(100, 600, 2);
    f0 = submit(sched_key_client(&S, 0), NULL, &rc);
    CHECK_INT(f0->granted, 1);
    for (int i = 0; i < 5; i++)
        r[i] = submit(sched_key_client(&S, 0), NULL, &rc);
    r[5] = submit(sched_key_client(&S, 1), NULL, &rc); /* the newcomer, last */
    drain_order(f0, r, 6, order);
    CHECK_INT(order[0], 5); /* one service time, not six */
    for (int k = 1; k < 6; k++)
        CHECK_INT(order[k], k - 1);

    /* Two backlogs alternate; a's requests for two models keep their age. */
    f0 = submit(sched_key_client(&S, 0), NULL, &rc);
    CHECK_INT(f0->granted, 1);
    for (int i = 0; i < 4; i++) {
        r[2 * i] = submit(sched_key_client(&S, 0), i % 2 ? "m0" : "m1", &rc);
        r[2 * i + 1] = submit(sched_key_client(&S, 1), NULL, &rc);
    }
    drain_order(f0, r, 8, order);
    for (int k = 0; k < 8; k++)
        CHECK_INT(order[k], k % 2 ? k - 1 : k + 1); /* b, a, b, a...: b was granted less recently */
    CHECK_INT(sched_length(&S), 0);
    CHECK(S.groups == NULL);
    free_backends();
}

/* The same for metadata places: a of weight 1 and b of weight 2 hold 2 of
 * the backend's places each and wait for more; when one of a's ends, a
 * holds 1 for 1 and b 2 for 2, a tie, which b wins (granted before a), and
 * then a (granted before b), and so on, each client oldest first. */
static void test_meta_ties_take_turns(void)
{
    enum { M = SCHED_META_CAP };
    struct sched_client *a, *b;
    struct req *ra[M + 4], *rb[M + 4];
    int rc;
    bes[0] = mk_backend("b0", 1, NULL, 0);
    nbes = 1;
    keys_ab(1, 2);
    setup(100, 600, 2);
    a = sched_key_client(&S, 0);
    b = sched_key_client(&S, 1);
    for (int i = 0; i < M / 2; i++)
        rb[i] = submit_meta(b, &rc);
    for (int i = 0; i < M / 2 + 3; i++)
        ra[i] = submit_meta(a, &rc);
    for (int i = M / 2; i < M / 2 + 3; i++)
        rb[i] = submit_meta(b, &rc);
    CHECK_INT(a->meta_in_flight + b->meta_in_flight, M);
    CHECK_INT(S.meta_waiting, 6);
    sched_done(&S, &ra[0]->e); /* a: 1 for 1, b: 2 for 2 */
    CHECK_INT(rb[M / 2]->granted, 1);
    CHECK_INT(ra[M / 2]->granted, 0);
    sched_done(&S, &rb[0]->e); /* b: 2 for 2 again, a 1 for 1: a's turn */
    CHECK_INT(ra[M / 2]->granted, 1);
    CHECK_INT(rb[M / 2 + 1]->granted, 0);
    sched_done(&S, &ra[1]->e);
    CHECK_INT(rb[M / 2 + 1]->granted, 1);
    CHECK_INT(ra[M / 2 + 1]->granted, 0);
    check_invariants();
    for (int i = 0; i < nreqs; i++)
        sched_done(&S, &reqs[i].e);
    CHECK_INT(S.meta_waiting + S.retrying, 0);
    CHECK_INT(bes[0]->meta_in_flight, 0);
    free_backends();
}

int main(void)
{
    struct event_base *base = event_base_new();
    sched_init(&S, base);
    test_random_properties();
    test_shares_follow_weights();
    test_full_queue_refuses_the_flooder();
    test_full_queue_flood_of_clients();
    test_max_queued_and_cap();
    test_metadata_counted();
    test_ties_take_turns();
    test_meta_ties_take_turns();
    test_retry_first_in_line();
    test_timeout(base);
    test_no_backend(base);
    (void)last_granted;
    sched_cleanup(&S);
    event_base_free(base);
    CHECK_DONE();
}
