/* sched.c - see sched.h for the entry states.
 *
 * The policy, in the order it is applied to each free slot:
 *   1. retries first: an entry whose try failed was admitted and started
 *      before anything waiting (FIFO among retries);
 *   2. priorities strictly: high, then normal, then low;
 *   3. within a priority, the client with the fewest entries in flight
 *      relative to its weight (in_flight / weight, lowest first; a tie goes
 *      to the client granted a slot least recently, one never granted
 *      first, so that tied clients take turns);
 *   4. within a client, oldest first;
 * and always: only an entry some available backend can serve (late binding
 * per model), a client at its max_concurrent waits, and the slot goes to
 * the backend the balancer picks among those that serve it (lb.h).
 * The balancer may hold an entry for a backend that is full (affinity):
 * the entry steps aside, not its client nor the rest of the queue; the
 * slot goes to the next entry in this order that the balancer places
 * (pick: the cgqs in rule-3 order through a small heap of the groups'
 * heaps, each cgq's entries oldest first).
 *
 * Shape, so that handing a slot on costs O(models x backends + log clients)
 * and never O(queue): entries wait in per-client, per-model FIFOs (a cgq);
 * each model with entries waiting is a group with one binary min-heap of
 * its cgqs per priority, keyed by rule 3. Choosing is a look at the top of
 * each group's heap; a grant pops one entry and re-sifts the client's cgqs
 * (its in_flight changed). A client at its cap has its cgqs out of the
 * heaps, so it costs nothing while it waits.
 *
 * Metadata (e->meta, sched.h SCHED_META_CAP) takes no GPU slot and waits
 * in a queue of its own, meta_q, so that it never waits behind inference.
 * Its entries are still their clients': counted in waiting (max_queued,
 * the queue's one max_length, the push-out rule) and, running, in
 * in_flight (as meta_in_flight too). They take the same rules 1-4 for the
 * metadata places that free, rule 3 counting metadata in flight alone; a
 * key's max_concurrent caps its GPU slots, not them (see
 * SCHED_META_CAP). */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "lb.h"
#include "net.h"

/* A client's queue for one model. */
struct sched_cgq {
    struct sched_client *client;
    struct sched_group *group;
    TAILQ_HEAD(, sched_entry) entries; /* oldest first */
    int hidx;                          /* in group->heap[prio]; -1: out */
    struct sched_cgq *next;            /* client->cgqs */
};

struct heap {
    struct sched_cgq **v;
    int n, cap;
};

struct sched_group {
    char *key; /* NULL: requests any backend serves */
    struct heap heap[PRIO_COUNT];
    int ncgq;
    double unserved_ms; /* since when no backend in service serves it; 0: one does */
    struct sched_group *next;
};

/* ---- the heap of one group and priority ---- */

static unsigned long long head_seq(const struct sched_cgq *q)
{
    return TAILQ_FIRST(&q->entries)->seq;
}

/* C's entries holding a GPU slot or retrying for one: what its
 * max_concurrent caps and rule 3 counts (metadata holds none). */
static int slots(const struct sched_client *c)
{
    return c->in_flight - c->meta_in_flight;
}

/* Rule 3: A before B. At equal load, the client granted a slot least
 * recently: where a slot's cap is 1 (an embedding runner, a 1-slot
 * backend) a backlogged client's in_flight falls to 0 each time its
 * request ends and ties with a newcomer's 0; by the older head it would
 * win every such tie and serve its whole backlog first. Taking turns, the
 * newcomer waits one service time. Two cgqs of one client tie on both and
 * go by rule 4 (the older head), as do two clients never granted. The key
 * changes only in count_in, which re-sifts the client's cgqs. */
static int before(const struct sched_cgq *a, const struct sched_cgq *b)
{
    long long la = (long long)slots(a->client) * b->client->weight;
    long long lb = (long long)slots(b->client) * a->client->weight;
    if (la != lb)
        return la < lb;
    if (a->client->granted_at != b->client->granted_at)
        return a->client->granted_at < b->client->granted_at;
    return head_seq(a) < head_seq(b);
}

static void heap_set(struct heap *h, int i, struct sched_cgq *q)
{
    h->v[i] = q;
    q->hidx = i;
}

static void sift_up(struct heap *h, int i)
{
    struct sched_cgq *q = h->v[i];
    while (i > 0 && before(q, h->v[(i - 1) / 2])) {
        heap_set(h, i, h->v[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(h, i, q);
}

static void sift_down(struct heap *h, int i)
{
    struct sched_cgq *q = h->v[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(h->v[c + 1], h->v[c]))
            c++;
        if (!before(h->v[c], q))
            break;
        heap_set(h, i, h->v[c]);
        i = c;
    }
    heap_set(h, i, q);
}

static int heap_push(struct heap *h, struct sched_cgq *q)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        struct sched_cgq **v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    heap_set(h, h->n++, q);
    sift_up(h, h->n - 1);
    return 0;
}

static void heap_remove(struct heap *h, struct sched_cgq *q)
{
    int i = q->hidx;
    q->hidx = -1;
    if (--h->n == i)
        return;
    heap_set(h, i, h->v[h->n]);
    sift_up(h, i);
    sift_down(h, h->v[i]->hidx);
}

/* Q's key changed (its client's in_flight, or its head): restore order. */
static void heap_fix(struct heap *h, struct sched_cgq *q)
{
    sift_up(h, q->hidx);
    sift_down(h, q->hidx);
}

/* ---- cgqs in and out of their heaps ---- */

static struct heap *heap_of(struct sched_cgq *q)
{
    return &q->group->heap[q->client->prio];
}

/* A cgq is in its heap exactly when it has entries and its client is
 * under its cap. */
static void cgq_sync(struct sched_cgq *q)
{
    int want = !TAILQ_EMPTY(&q->entries) && !q->client->capped;
    if (want && q->hidx < 0)
        heap_push(heap_of(q), q); /* on ENOMEM the entry waits for its timeout */
    else if (!want && q->hidx >= 0)
        heap_remove(heap_of(q), q);
    else if (want)
        heap_fix(heap_of(q), q);
}

static void client_sync(struct sched_client *c)
{
    c->capped = c->max_concurrent > 0 && slots(c) >= c->max_concurrent;
    for (struct sched_cgq *q = c->cgqs; q; q = q->next)
        cgq_sync(q);
}

/* pick()'s room: a cgq position per group and the children it may visit. */
struct sched_scan {
    struct heap *h;
    int i; /* h->v[i] */
};

static int scan_reserve(struct sched *s, int groups)
{
    int need = groups + 2 * SCHED_SCAN_MAX + 2;
    struct sched_scan *v;
    if (need <= s->scan_cap)
        return 0;
    if (!(v = realloc(s->scan, (size_t)need * sizeof *v)))
        return -1;
    s->scan = v;
    s->scan_cap = need;
    return 0;
}

static struct sched_group *group_get(struct sched *s, const char *key)
{
    struct sched_group *g;
    for (g = s->groups; g; g = g->next)
        if ((!g->key && !key) || (g->key && key && strcmp(g->key, key) == 0))
            return g;
    if (scan_reserve(s, s->ngroups + 1) < 0)
        return NULL;
    g = calloc(1, sizeof *g);
    if (!g || (key && !(g->key = strdup(key)))) {
        free(g);
        return NULL;
    }
    g->next = s->groups;
    s->groups = g;
    s->ngroups++;
    return g;
}

static void group_put(struct sched *s, struct sched_group *g)
{
    struct sched_group **p;
    if (g->ncgq)
        return;
    for (p = &s->groups; *p != g; p = &(*p)->next)
        ;
    *p = g->next;
    for (int i = 0; i < PRIO_COUNT; i++)
        free(g->heap[i].v);
    free(g->key);
    free(g);
    s->ngroups--;
}

static struct sched_cgq *cgq_get(struct sched *s, struct sched_client *c, const char *key)
{
    struct sched_group *g;
    struct sched_cgq *q;
    for (q = c->cgqs; q; q = q->next)
        if ((!q->group->key && !key) || (q->group->key && key && !strcmp(q->group->key, key)))
            return q;
    if (!(g = group_get(s, key)))
        return NULL;
    if (!(q = calloc(1, sizeof *q))) {
        group_put(s, g);
        return NULL;
    }
    q->client = c;
    q->group = g;
    q->hidx = -1;
    TAILQ_INIT(&q->entries);
    q->next = c->cgqs;
    c->cgqs = q;
    g->ncgq++;
    return q;
}

static void cgq_put(struct sched *s, struct sched_cgq *q)
{
    struct sched_cgq **p;
    if (!TAILQ_EMPTY(&q->entries))
        return;
    if (q->hidx >= 0)
        heap_remove(heap_of(q), q);
    for (p = &q->client->cgqs; *p != q; p = &(*p)->next)
        ;
    *p = q->next;
    q->group->ncgq--;
    group_put(s, q->group);
    free(q);
}

/* ---- the clients by entries waiting ---- */

static void most_set(struct sched *s, int i, struct sched_client *c)
{
    s->most[i] = c;
    c->widx = i;
}

/* The seq of C's newest waiting entry (C has one). */
static unsigned long long newest_seq(const struct sched_client *c)
{
    return TAILQ_LAST(&c->queue, sched_entry_list)->seq;
}

/* A gives up its newest entry for a full queue before B: it has more
 * waiting, or as many and a newer one. Age counts: when many clients have
 * one entry each (a flood from many addresses), the newest goes first, and
 * a small client's older request stays. */
static int pushed_before(const struct sched_client *a, const struct sched_client *b)
{
    if (a->waiting != b->waiting)
        return a->waiting > b->waiting;
    return newest_seq(a) > newest_seq(b);
}

static void most_sift(struct sched *s, int i)
{
    struct sched_client *c = s->most[i];
    while (i > 0 && pushed_before(c, s->most[(i - 1) / 2])) {
        most_set(s, i, s->most[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        int k = 2 * i + 1;
        if (k >= s->nmost)
            break;
        if (k + 1 < s->nmost && pushed_before(s->most[k + 1], s->most[k]))
            k++;
        if (!pushed_before(s->most[k], c))
            break;
        most_set(s, i, s->most[k]);
        i = k;
    }
    most_set(s, i, c);
}

/* C's waiting count changed: in the heap while it is above 0. */
static void most_update(struct sched *s, struct sched_client *c)
{
    if (c->waiting > 0 && c->widx < 0) {
        if (s->nmost == s->most_cap) {
            int cap = s->most_cap ? 2 * s->most_cap : 64;
            struct sched_client **m = realloc(s->most, (size_t)cap * sizeof *m);
            if (!m)
                return; /* it is then never pushed out for a full queue */
            s->most = m;
            s->most_cap = cap;
        }
        most_set(s, s->nmost++, c);
        most_sift(s, c->widx);
    } else if (c->waiting == 0 && c->widx >= 0) {
        int i = c->widx;
        c->widx = -1;
        if (--s->nmost != i) {
            most_set(s, i, s->most[s->nmost]);
            most_sift(s, i);
        }
    } else if (c->widx >= 0) {
        most_sift(s, c->widx);
    }
}

/* ---- clients ---- */

static struct sched_client *client_new(struct sched *s, const char *name)
{
    struct sched_client *c = calloc(1, sizeof *c);
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return NULL;
    }
    c->prio = PRIO_NORMAL;
    c->weight = 1;
    c->key_index = -1;
    c->widx = -1;
    TAILQ_INIT(&c->queue);
    LIST_INSERT_HEAD(&s->clients, c, link);
    return c;
}

static unsigned hash_name(const char *name)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h;
}

static void hash_unlink(struct sched *s, struct sched_client *c)
{
    struct sched_client **p = &s->hash[hash_name(c->name) & (s->hash_size - 1)];
    for (; *p; p = &(*p)->hnext)
        if (*p == c) {
            *p = c->hnext;
            s->naddr--;
            return;
        }
}

/* An address client with no entry left, or a retired key, is freed. */
static void client_put(struct sched *s, struct sched_client *c)
{
    if (c->refs || (c->key_index >= 0 && !c->retired))
        return;
    if (c->key_index < 0)
        hash_unlink(s, c);
    LIST_REMOVE(c, link);
    free(c->name);
    free(c);
}

static int hash_grow(struct sched *s)
{
    unsigned n = s->hash_size ? 2 * s->hash_size : 256;
    struct sched_client **h = calloc(n, sizeof *h);
    if (!h)
        return -1;
    for (unsigned i = 0; i < s->hash_size; i++)
        while (s->hash[i]) {
            struct sched_client *c = s->hash[i];
            s->hash[i] = c->hnext;
            c->hnext = h[hash_name(c->name) & (n - 1)];
            h[hash_name(c->name) & (n - 1)] = c;
        }
    free(s->hash);
    s->hash = h;
    s->hash_size = n;
    return 0;
}

struct sched_client *sched_addr_client(struct sched *s, const char *name)
{
    struct sched_client *c;
    unsigned b;
    if (s->naddr >= s->hash_size && hash_grow(s) < 0 && !s->hash_size)
        return NULL;
    b = hash_name(name) & (s->hash_size - 1);
    for (c = s->hash[b]; c; c = c->hnext)
        if (strcmp(c->name, name) == 0)
            return c;
    if (!(c = client_new(s, name)))
        return NULL;
    c->hnext = s->hash[b];
    s->hash[b] = c;
    s->naddr++;
    return c;
}

void sched_client_unused(struct sched *s, struct sched_client *c)
{
    client_put(s, c);
}

struct sched_client *sched_key_client(struct sched *s, int i)
{
    return i >= 0 && i < s->nkeys ? s->keys[i] : NULL;
}

/* Take C's cgqs out of the heaps, change its priority or weight, put them
 * back: the heaps' order depends on both. */
static void client_set(struct sched_client *c, const struct config_key *k)
{
    for (struct sched_cgq *q = c->cgqs; q; q = q->next)
        if (q->hidx >= 0)
            heap_remove(heap_of(q), q);
    c->prio = k->priority;
    c->weight = k->weight > 0 ? k->weight : 1;
    c->max_concurrent = k->max_concurrent;
    c->max_queued = k->max_queued;
    client_sync(c);
}

int sched_configure(struct sched *s, const struct px_config *cfg)
{
    struct sched_client **keys = calloc((size_t)cfg->nkeys + 1, sizeof *keys);
    if (!keys)
        return -1;
    for (int i = 0; i < cfg->nkeys; i++) {
        struct sched_client *c = NULL;
        for (int j = 0; j < s->nkeys && !c; j++)
            if (s->keys[j] && strcmp(s->keys[j]->name, cfg->keys[i].name) == 0) {
                c = s->keys[j];
                s->keys[j] = NULL;
            }
        if (!c && !(c = client_new(s, cfg->keys[i].name))) {
            free(keys);
            return -1;
        }
        c->key_index = i;
        client_set(c, &cfg->keys[i]);
        keys[i] = c;
    }
    for (int j = 0; j < s->nkeys; j++)
        if (s->keys[j]) { /* dropped: lives until its last entry ends */
            s->keys[j]->retired = 1;
            client_put(s, s->keys[j]);
        }
    free(s->keys);
    s->keys = keys;
    s->nkeys = cfg->nkeys;
    s->max_length = cfg->queue_max_length;
    s->timeout_s = cfg->queue_timeout_s;
    s->no_backend_s = cfg->queue_no_backend_s;
    s->lb.affinity_on = cfg->routing.affinity != AFFINITY_OFF;
    s->lb.ctx_pass = cfg->routing.num_ctx == NUM_CTX_PASS;
    s->lb.balance_factor = cfg->routing.balance_factor;
    s->lb.wait_ms = cfg->routing.affinity_wait_ms;
    s->lb.ops = s->lb.affinity_on || s->lb.ctx_pass ? &lb_affinity : &lb_leastload;
    sched_kick(s); /* caps may have grown */
    return 0;
}

/* ---- the count of a client's entries in flight ---- */

/* E's first grant: counted in flight, and its client's turn taken
 * (granted_at, rule 3's tie; a retry granted again takes none). Metadata
 * changes in_flight and meta_in_flight alike: slots(), the cap and the
 * heaps' order stay as they were. */
static void count_in(struct sched_entry *e)
{
    struct sched_client *c = e->client;
    if (e->counted)
        return;
    e->counted = 1;
    c->in_flight++;
    if (e->meta) {
        c->meta_in_flight++;
        c->meta_granted_at = ++e->sched->grants;
    } else {
        c->granted_at = ++e->sched->grants;
        client_sync(c); /* both keys of rule 3 changed */
    }
}

static void count_out(struct sched_entry *e)
{
    if (!e->counted)
        return;
    e->counted = 0;
    e->client->in_flight--;
    if (e->meta)
        e->client->meta_in_flight--;
    else
        client_sync(e->client);
}

/* ---- the drain rate ---- */

#define RATE_PERIOD_MS 1000.0

/* Fold the grants since the last period into the rate (an average over
 * about the last 10 s), periods with none included. */
static void rate_update(struct sched *s, double now)
{
    double dt = now - s->rate_t0_ms;
    if (dt < RATE_PERIOD_MS)
        return;
    for (double left = dt; left >= RATE_PERIOD_MS; left -= RATE_PERIOD_MS) {
        double r = s->drained * 1000.0 / dt; /* spread evenly over dt */
        s->rate = s->rate ? 0.9 * s->rate + 0.1 * r : r;
        if (left > 10 * RATE_PERIOD_MS) { /* long idle: start afresh */
            s->rate = r;
            break;
        }
    }
    s->drained = 0;
    s->rate_t0_ms = now;
}

int sched_retry_after(struct sched *s)
{
    double secs;
    rate_update(s, net_now_ms());
    if (s->rate <= 0)
        return 1;
    secs = (s->waiting + s->retrying) / s->rate + 0.999;
    if (secs < 1)
        return 1;
    return secs > s->timeout_s ? (int)(s->timeout_s + 0.999) : (int)secs;
}

int sched_length(const struct sched *s)
{
    return s->waiting + s->retrying + s->meta_waiting;
}

double sched_oldest_ms(const struct sched *s)
{
    const struct sched_client *c;
    const struct sched_entry *e;
    double oldest = 0;
    LIST_FOREACH(c, &s->clients, link) /* each client's queue is oldest first */
        if ((e = TAILQ_FIRST(&c->queue)) && (!oldest || e->t_submit_ms < oldest))
            oldest = e->t_submit_ms;
    TAILQ_FOREACH(e, &s->retries, q_link)
        if (!oldest || e->t_submit_ms < oldest)
            oldest = e->t_submit_ms;
    TAILQ_FOREACH(e, &s->meta_q, q_link) { /* its retries are first */
        if (e->state != SCHED_RETRY)
            break;
        if (!oldest || e->t_submit_ms < oldest)
            oldest = e->t_submit_ms;
    }
    return oldest;
}

/* ---- out of the queue ---- */

static void stop_timer(struct sched_entry *e)
{
    if (e->timer_armed) {
        evtimer_del(&e->timer);
        e->timer_armed = 0;
    }
}

/* E (WAITING, its seq set) joins its client's waiting entries as the
 * newest, or leaves them: what max_queued and the push-out rule count. */
static void client_wait_add(struct sched *s, struct sched_entry *e)
{
    TAILQ_INSERT_TAIL(&e->client->queue, e, c_link);
    e->client->waiting++;
    most_update(s, e->client);
}

static void client_wait_del(struct sched *s, struct sched_entry *e)
{
    TAILQ_REMOVE(&e->client->queue, e, c_link);
    e->client->waiting--;
    most_update(s, e->client);
}

/* Take E (WAITING or RETRY) out of the queue; it is then IDLE. */
static void unqueue(struct sched *s, struct sched_entry *e)
{
    stop_timer(e);
    if (e->state == SCHED_WAITING)
        client_wait_del(s, e);
    if (e->meta) {
        TAILQ_REMOVE(&s->meta_q, e, q_link);
        if (e->state == SCHED_WAITING)
            s->meta_waiting--;
        else
            s->retrying--;
    } else if (e->state == SCHED_WAITING) {
        struct sched_cgq *q = e->cgq;
        int was_head = TAILQ_FIRST(&q->entries) == e;
        TAILQ_REMOVE(&q->entries, e, q_link);
        s->waiting--;
        e->cgq = NULL;
        if (TAILQ_EMPTY(&q->entries))
            cgq_put(s, q);
        else if (was_head)
            cgq_sync(q);
    } else if (e->state == SCHED_RETRY) {
        TAILQ_REMOVE(&s->retries, e, q_link);
        s->retrying--;
    }
    e->state = SCHED_IDLE;
}

/* ---- granting ---- */

/* ---- holds ---- */

static void on_hold_end(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;
    (void)fd, (void)what;
    s->hold_at = 0;
    sched_kick(s);
}

/* A balancer held an entry until UNTIL: dispatch again then. */
static void hold_note(struct sched *s, double until)
{
    if (!s->hold_next || until < s->hold_next)
        s->hold_next = until;
}

/* Arm the timer for the earliest hold noted, unless it fires sooner. */
static void hold_arm(struct sched *s)
{
    double at = s->hold_next;
    struct timeval tv;
    s->hold_next = 0;
    if (!at || !s->base || (s->hold_at && s->hold_at <= at))
        return;
    if (s->hold_at)
        evtimer_del(&s->hold_ev);
    tv = net_timeval((at - net_now_ms() + 1) / 1000.0);
    if (tv.tv_sec < 0 || (tv.tv_sec == 0 && tv.tv_usec < 1000))
        tv = (struct timeval){0, 1000};
    evtimer_add(&s->hold_ev, &tv);
    s->hold_at = at;
}

/* The backend the balancer gives E (avoiding AVOID unless it is the only
 * one), or NULL; *HELD when the balancer holds E for a backend now full.
 * A retry (AVOID set) is never held. */
static struct backend *place(struct sched *s, struct sched_entry *e, const struct backend *avoid,
                             double now, int *held)
{
    struct lb_request r = {0};
    struct backend *be;
    r.key = e->key;
    r.avoid = avoid;
    r.affinity = e->affinity;
    r.keyed = e->keyed;
    r.num_ctx = e->num_ctx;
    r.since_ms = e->t_submit_ms;
    r.may_hold = !avoid && e->state != SCHED_RETRY;
    be = lb_pick(&s->lb, s->backends, s->nbackends, &r, now);
    e->home = r.home;
    *held = !be && r.held_until > 0;
    if (*held)
        hold_note(s, r.held_until);
    return be;
}

static void grant(struct sched *s, struct sched_entry *e, struct backend *be)
{
    double now = net_now_ms();
    if (e->state != SCHED_IDLE) {
        unqueue(s, e);
        s->drained++;
    }
    e->state = SCHED_RUNNING;
    e->be = be;
    e->avoid = NULL;
    backend_acquire(be);
    e->runner = backend_runner(be, e->key);
    if (e->runner) /* made here (before discovery made it): its cap starts at this first use */
        runner_cap(be, e->runner);
    runner_acquire(e->runner, e->num_ctx, now);
    if (e->keyed && s->lb.affinity_on && e->runner && !e->aff_counted) {
        e->aff_counted = 1;
        if (e->home)
            e->runner->hits++;
        else
            e->runner->misses++;
    }
    count_in(e);
    e->ops->granted(e, be);
}

/* Give back E's slot on e->be. */
static void release(struct sched_entry *e)
{
    backend_release(e->be);
    runner_release(e->runner, net_now_ms());
    e->runner = NULL;
}

/* The scan's heap of cgq positions, by rule 3 (before()). */
static struct sched_cgq *scan_cgq(const struct sched_scan *x)
{
    return x->h->v[x->i];
}

static void scan_push(struct sched_scan *v, int *n, struct heap *h, int i)
{
    int k = (*n)++;
    v[k] = (struct sched_scan){h, i};
    while (k > 0 && before(scan_cgq(&v[k]), scan_cgq(&v[(k - 1) / 2]))) {
        struct sched_scan t = v[k];
        v[k] = v[(k - 1) / 2];
        v[(k - 1) / 2] = t;
        k = (k - 1) / 2;
    }
}

static struct sched_scan scan_pop(struct sched_scan *v, int *n)
{
    struct sched_scan top = v[0];
    int k = 0;
    v[0] = v[--*n];
    for (;;) {
        int c = 2 * k + 1;
        struct sched_scan t;
        if (c >= *n)
            break;
        if (c + 1 < *n && before(scan_cgq(&v[c + 1]), scan_cgq(&v[c])))
            c++;
        if (!before(scan_cgq(&v[c]), scan_cgq(&v[k])))
            break;
        t = v[k];
        v[k] = v[c];
        v[c] = t;
        k = c;
    }
    return top;
}

/* Some backend takes a request of G's model now. */
static int group_servable(struct sched *s, const struct sched_group *g, double now)
{
    for (int i = 0; i < s->nbackends; i++)
        if (backend_takes(s->backends[i], g->key, now))
            return 1;
    return 0;
}

/* The first entry of Q (oldest first) that the balancer places; *BUDGET
 * counts down the held ones passed over. */
static struct sched_entry *scan_cgq_entries(struct sched *s, struct sched_cgq *q,
                                            struct backend **be_out, double now, int *budget)
{
    struct sched_entry *e;
    int held;
    TAILQ_FOREACH(e, &q->entries, q_link) {
        if ((*be_out = place(s, e, NULL, now, &held)))
            return e;
        if (!held || --*budget <= 0) /* none takes its model: nor the rest of Q */
            return NULL;
    }
    return NULL;
}

/* The next entry to run and its backend, by the policy at the top, or
 * NULL. Groups are few (the models waited for): each is asked whether a
 * backend takes it only when it has entries at the priority looked at. In
 * the common case (nothing held) this is one look at each group's top. */
static struct sched_entry *pick(struct sched *s, struct backend **be_out, double now)
{
    struct sched_entry *e;
    struct backend *be;
    int held, budget = SCHED_SCAN_MAX;

    TAILQ_FOREACH(e, &s->retries, q_link) {
        be = place(s, e, e->avoid, now, &held);
        if (be) {
            *be_out = be;
            return e;
        }
    }
    for (int p = 0; p < PRIO_COUNT && budget > 0; p++) {
        struct sched_scan *v = s->scan;
        int n = 0;
        for (struct sched_group *g = s->groups; g; g = g->next)
            if (g->heap[p].n && n < s->scan_cap && group_servable(s, g, now))
                scan_push(v, &n, &g->heap[p], 0);
        while (n > 0 && budget > 0) {
            struct sched_scan x = scan_pop(v, &n);
            if ((e = scan_cgq_entries(s, scan_cgq(&x), be_out, now, &budget)))
                return e;
            /* Every entry of that cgq is held: the next cgqs in its heap. */
            for (int c = 2 * x.i + 1; c <= 2 * x.i + 2 && c < x.h->n; c++)
                if (n < s->scan_cap)
                    scan_push(v, &n, x.h, c);
        }
    }
    return NULL;
}

/* ---- metadata ---- */

static void arm(struct sched *s, struct sched_entry *e);
static void nb_arm(struct sched *s);
static int admit(struct sched *s, struct sched_entry *e);

/* BE is in service with room for one more metadata request. */
static int meta_takes(const struct backend *be)
{
    return !be->removed && be->healthy && be->admin == ADMIN_READY &&
           be->meta_in_flight < SCHED_META_CAP;
}

/* The backend in service serving KEY with the fewest metadata requests
 * under SCHED_META_CAP, AVOID only if it is the only one; NULL if none. */
static struct backend *meta_pick(struct sched *s, const char *key, const struct backend *avoid)
{
    struct backend *best = NULL, *fallback = NULL;
    for (int i = 0; i < s->nbackends; i++) {
        struct backend *be = s->backends[i];
        if (!meta_takes(be) || !backend_serves(be, key))
            continue;
        if (be == avoid)
            fallback = be;
        else if (!best || be->meta_in_flight < best->meta_in_flight)
            best = be;
    }
    return best ? best : fallback;
}

static int meta_room(const struct sched *s)
{
    for (int i = 0; i < s->nbackends; i++)
        if (meta_takes(s->backends[i]))
            return 1;
    return 0;
}

/* Rule 3 for metadata: A's client before B's. Metadata holds no GPU slot,
 * so its share counts metadata in flight alone: a client running many
 * generations still gets its /api/show in turn, and a flood of one
 * client's GETs delays another's by about one service time at most. At
 * equal load, the client granted a place least recently, as before()
 * and for the same reason: tied clients take turns. */
static int meta_before(const struct sched_client *a, const struct sched_client *b)
{
    long long la = (long long)a->meta_in_flight * b->weight;
    long long lb = (long long)b->meta_in_flight * a->weight;
    if (a->prio != b->prio)
        return a->prio < b->prio;
    if (la != lb)
        return la < lb;
    return a->meta_granted_at < b->meta_granted_at;
}

/* The next metadata entry to run and its backend, or NULL: a retry first
 * (they head meta_q), then by priority and meta_before, oldest first. The
 * rest of meta_q is in arrival order, so the first entry met of the best
 * client is its oldest, and among clients equal by meta_before (never
 * granted, both) the older wins. An entry
 * no backend with room serves does not hold up the rest. One pass over
 * the metadata waiting, made only when some backend has room: that is
 * rare (a place that frees is handed on at once) and the queue is bounded
 * by queue.max_length. */
static struct sched_entry *meta_next(struct sched *s, struct backend **be_out)
{
    struct sched_entry *e, *best = NULL;
    struct backend *be;
    if (!meta_room(s))
        return NULL;
    TAILQ_FOREACH(e, &s->meta_q, q_link) {
        if (e->state == SCHED_RETRY) {
            if ((be = meta_pick(s, e->key, e->avoid))) {
                *be_out = be;
                return e;
            }
            continue;
        }
        if (best && !meta_before(e->client, best->client))
            continue;
        if ((be = meta_pick(s, e->key, NULL))) {
            best = e;
            *be_out = be;
            if (e->client->prio == PRIO_HIGH && !e->client->meta_in_flight &&
                !e->client->meta_granted_at)
                break; /* none after it can come first */
        }
    }
    return best;
}

static void meta_grant(struct sched *s, struct sched_entry *e, struct backend *be)
{
    if (e->state != SCHED_IDLE)
        unqueue(s, e);
    e->state = SCHED_RUNNING;
    e->be = be;
    e->avoid = NULL;
    be->meta_in_flight++;
    count_in(e); /* a retry is counted already */
    e->ops->granted(e, be);
}

/* Waiting metadata entries to backends with room, while some fit. A grant
 * may re-enter and end others: each choice is made afresh. */
static void meta_dispatch(struct sched *s)
{
    struct sched_entry *e;
    struct backend *be;
    while (!s->frozen && (e = meta_next(s, &be)))
        meta_grant(s, e, be);
}

/* E (IDLE) waits for a metadata place, admitted as any entry (admit). */
static int meta_enqueue(struct sched *s, struct sched_entry *e)
{
    int rc = admit(s, e);
    if (rc < 0)
        return rc;
    e->seq = ++s->seq;
    e->state = SCHED_WAITING;
    e->unserved_ms = sched_serveable(s, e->key) ? 0 : net_now_ms();
    TAILQ_INSERT_TAIL(&s->meta_q, e, q_link);
    s->meta_waiting++;
    client_wait_add(s, e);
    arm(s, e);
    nb_arm(s);
    return 0;
}

/* E's try failed and no backend has room: first in line after the retries
 * before it, still in its client's in_flight (as a GPU retry: it had
 * started), not in its waiting, past max_length. */
static void meta_requeue(struct sched *s, struct sched_entry *e)
{
    struct sched_entry *p, *last = NULL;
    for (p = TAILQ_FIRST(&s->meta_q); p && p->state == SCHED_RETRY; p = TAILQ_NEXT(p, q_link))
        last = p;
    e->state = SCHED_RETRY;
    e->unserved_ms = sched_serveable(s, e->key) ? 0 : net_now_ms();
    if (last)
        TAILQ_INSERT_AFTER(&s->meta_q, last, e, q_link);
    else
        TAILQ_INSERT_HEAD(&s->meta_q, e, q_link);
    s->retrying++;
    arm(s, e);
    nb_arm(s);
}

/* The one function that hands free slots on. Grants may re-enter the
 * scheduler (a granted entry's try can fail at once and retry, or end a
 * session): a nested call only asks the running loop to look again. */
static void dispatch(struct sched *s)
{
    long long t0;
    if (s->frozen)
        return;
    if (s->dispatching) {
        s->again = 1;
        return;
    }
    s->dispatching = 1;
    t0 = net_now_ns();
    do {
        double now = net_now_ms();
        struct backend *be;
        struct sched_entry *e;
        s->again = 0;
        while ((e = pick(s, &be, now))) {
            grant(s, e, be);
            s->dispatches++;
            now = net_now_ms();
        }
        meta_dispatch(s);
    } while (s->again);
    hold_arm(s);
    s->dispatch_ns += (unsigned long long)(net_now_ns() - t0);
    s->dispatching = 0;
}

void sched_kick(struct sched *s)
{
    if (s->waiting + s->retrying + s->meta_waiting)
        dispatch(s);
}

void sched_freeze(struct sched *s)
{
    s->frozen = 1;
}

void sched_set_backends(struct sched *s, struct backend **bes, int n)
{
    s->backends = bes;
    s->nbackends = n;
    sched_kick(s);
}

/* ---- the no-backend rule ---- */

int sched_serveable(const struct sched *s, const char *key)
{
    for (int i = 0; i < s->nbackends; i++) {
        const struct backend *be = s->backends[i];
        if (!be->removed && be->healthy && be->admin == ADMIN_READY &&
            (be->models_pending || backend_serves(be, key)))
            return 1;
    }
    return 0;
}

static int no_backend_retry_after(const struct sched *s)
{
    return s->no_backend_s >= 1 ? (int)(s->no_backend_s + 0.999) : 1;
}

static void refuse_no_backend(struct sched *s, struct sched_entry *e)
{
    int was_retry = e->state == SCHED_RETRY;
    unqueue(s, e);
    if (was_retry)
        count_out(e);
    e->client->refused++;
    e->ops->refused(e, SCHED_NO_BACKEND, no_backend_retry_after(s));
}

/* The oldest waiting entry of G, or NULL; *LAST when it is G's last. */
static struct sched_entry *group_first(struct sched *s, struct sched_group *g, int *last)
{
    struct sched_client *c;
    LIST_FOREACH(c, &s->clients, link)
        for (struct sched_cgq *q = c->cgqs; q; q = q->next)
            if (q->group == g) {
                struct sched_entry *e = TAILQ_FIRST(&q->entries);
                *last = g->ncgq == 1 && !TAILQ_NEXT(e, q_link);
                return e;
            }
    return NULL;
}

/* Refuse every entry of G (a refusal may free G with its last entry). */
static void refuse_group(struct sched *s, struct sched_group *g)
{
    struct sched_entry *e;
    int last = 0;
    while (!last && (e = group_first(s, g, &last)))
        refuse_no_backend(s, e);
}

/* Models that no backend in service has had for no_backend_s: their
 * entries are refused. Run every NB_SWEEP_MS; the clock of a model starts
 * when an entry for it is queued or when a sweep first finds it
 * unserved, so the bound holds within a sweep period. O(models x
 * backends) when nothing is to be refused. */
#define NB_SWEEP_MS 250

static int no_backend_expired(const struct sched *s, const char *key, double *since, double now)
{
    if (sched_serveable(s, key)) {
        *since = 0;
        return 0;
    }
    if (!*since)
        *since = now;
    return now - *since >= s->no_backend_s * 1000.0;
}

static void no_backend_sweep(struct sched *s)
{
    double now = net_now_ms();
    struct sched_entry *e, *next;
    int again = 1;
    while (again) { /* refusals may free groups: look again from the start */
        again = 0;
        for (struct sched_group *g = s->groups; g; g = g->next)
            if (no_backend_expired(s, g->key, &g->unserved_ms, now)) {
                refuse_group(s, g); /* G may be freed: not a step further */
                again = 1;
                break;
            }
    }
    for (e = TAILQ_FIRST(&s->retries); e; e = next) {
        next = TAILQ_NEXT(e, q_link);
        if (no_backend_expired(s, e->key, &e->unserved_ms, now)) {
            refuse_no_backend(s, e);
            next = TAILQ_FIRST(&s->retries); /* the callback may have ended others */
        }
    }
    for (e = TAILQ_FIRST(&s->meta_q); e; e = next) {
        next = TAILQ_NEXT(e, q_link);
        if (no_backend_expired(s, e->key, &e->unserved_ms, now)) {
            refuse_no_backend(s, e);
            next = TAILQ_FIRST(&s->meta_q);
        }
    }
}

/* The sweep runs only while entries wait: an idle proxy never wakes. */
static void nb_arm(struct sched *s)
{
    struct timeval tv = {0, NB_SWEEP_MS * 1000};
    if (s->base && !s->nb_armed && s->waiting + s->retrying + s->meta_waiting) {
        evtimer_add(&s->nb_sweep, &tv);
        s->nb_armed = 1;
    }
}

static void on_nb_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;
    (void)fd, (void)what;
    s->nb_armed = 0;
    if (!s->frozen)
        no_backend_sweep(s);
    nb_arm(s);
}

/* ---- admission ---- */

static void on_entry_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct sched_entry *e = arg;
    struct sched *s = e->sched;
    int was_retry = e->state == SCHED_RETRY;
    (void)fd;
    (void)what;
    e->timer_armed = 0;
    unqueue(s, e);
    if (was_retry)
        count_out(e); /* its client may run another now */
    e->client->refused++;
    e->ops->refused(e, SCHED_TIMED_OUT, sched_retry_after(s));
    if (was_retry)
        dispatch(s);
}

static void arm(struct sched *s, struct sched_entry *e)
{
    double left = s->timeout_s * 1000.0 - (net_now_ms() - e->t_submit_ms);
    struct timeval tv = net_timeval((left < 1 ? 1 : left) / 1000.0);
    evtimer_assign(&e->timer, s->base, on_entry_timeout, e);
    evtimer_add(&e->timer, &tv);
    e->timer_armed = 1;
}

/* The client with the most entries waiting (among equals, the one with the
 * newest): the top of s->most, a heap kept as entries come and go
 * (O(log clients) each), so that a full queue under a flood from many
 * addresses costs no scan. */
static struct sched_client *most_waiting(struct sched *s)
{
    return s->nmost ? s->most[0] : NULL;
}

/* The queue is full: E's client, or the one with the most waiting, gives
 * up its newest entry. E counts as its client's: when E's client would
 * have as many waiting as the one with the most, E is the newest of them
 * all and is refused; an entry already waiting is pushed out only by a
 * client with fewer. So a flood from many clients with one entry each
 * refuses newcomers and never pushes a small client's older request out.
 * Returns 0 when room was made, SCHED_EFULL if E is the one refused. */
static int make_room(struct sched *s, struct sched_entry *e)
{
    struct sched_client *most = most_waiting(s);
    struct sched_entry *victim;
    if (!most || most == e->client || most->waiting <= e->client->waiting + 1)
        return SCHED_EFULL;
    victim = TAILQ_LAST(&most->queue, sched_entry_list);
    unqueue(s, victim);
    most->refused++;
    victim->ops->refused(victim, SCHED_PUSHED_OUT, sched_retry_after(s));
    return 0;
}

/* May E (IDLE, its client set) wait? Not past its client's max_queued;
 * and at a full queue (max_length waiting, inference and metadata
 * together: one queue, one push-out rule) only if room is made. Returns 0,
 * SCHED_EKEYQ or SCHED_EFULL. */
static int admit(struct sched *s, struct sched_entry *e)
{
    struct sched_client *c = e->client;
    if (c->max_queued > 0 && c->waiting >= c->max_queued)
        return SCHED_EKEYQ;
    if (s->waiting + s->meta_waiting >= s->max_length && make_room(s, e) < 0)
        return SCHED_EFULL;
    return 0;
}

static int enqueue(struct sched *s, struct sched_entry *e)
{
    struct sched_client *c = e->client;
    struct sched_cgq *q;
    int rc = admit(s, e);
    if (rc < 0)
        return rc;
    if (!(q = cgq_get(s, c, e->key)))
        return SCHED_EFULL;
    if (!q->group->unserved_ms && !sched_serveable(s, e->key))
        q->group->unserved_ms = net_now_ms(); /* the no-backend clock starts now */
    e->seq = ++s->seq;
    e->cgq = q;
    e->state = SCHED_WAITING;
    TAILQ_INSERT_TAIL(&q->entries, e, q_link);
    s->waiting++;
    client_wait_add(s, e);
    if (TAILQ_FIRST(&q->entries) == e)
        cgq_sync(q);
    arm(s, e);
    nb_arm(s);
    return 0;
}

int sched_submit(struct sched *s, struct sched_entry *e, struct sched_client *client)
{
    struct backend *be = NULL;
    double now = net_now_ms();
    int rc, held;
    e->sched = s;
    e->client = client;
    e->state = SCHED_IDLE;
    e->counted = 0;
    e->t_submit_ms = now;
    client->refs++;
    rate_update(s, now);
    if (e->meta) {
        if (!s->frozen && (be = meta_pick(s, e->key, NULL))) {
            meta_grant(s, e, be);
            return 0;
        }
        rc = s->no_backend_s <= 0 && !sched_serveable(s, e->key) ? SCHED_ENOBACKEND
                                                                 : meta_enqueue(s, e);
        goto out;
    }
    /* Slots are handed on the moment they free, so a free slot for E means
     * no waiting entry could take it: E may have it, unless its client is
     * at its cap. */
    e->aff_counted = 0;
    e->runner = NULL;
    if (!client->capped && !s->frozen)
        be = place(s, e, NULL, now, &held);
    if (be) {
        grant(s, e, be);
        return 0;
    }
    rc = s->no_backend_s <= 0 && !sched_serveable(s, e->key) ? SCHED_ENOBACKEND : enqueue(s, e);
    hold_arm(s);
out:
    if (rc < 0) { /* the caller still holds CLIENT: it puts it (sched_client_unused) */
        client->refs--;
        client->refused++;
        e->client = NULL;
    }
    return rc;
}

void sched_retry(struct sched *s, struct sched_entry *e)
{
    struct backend *failed = e->be, *be;
    int held;
    if (e->meta) {
        failed->meta_in_flight--;
        e->be = NULL;
        e->state = SCHED_IDLE;
        e->avoid = failed;
        if (!s->frozen && (be = meta_pick(s, e->key, failed)))
            meta_grant(s, e, be);
        else
            meta_requeue(s, e);
        dispatch(s);
        return;
    }
    release(e);
    e->be = NULL;
    e->state = SCHED_IDLE;
    be = place(s, e, failed, net_now_ms(), &held);
    if (be && be != failed && !s->frozen) {
        grant(s, e, be);
    } else {
        e->state = SCHED_RETRY;
        e->avoid = failed;
        e->unserved_ms = 0;
        TAILQ_INSERT_TAIL(&s->retries, e, q_link);
        s->retrying++;
        nb_arm(s);
        arm(s, e);
    }
    dispatch(s); /* the slot given back may serve another */
}

void sched_done(struct sched *s, struct sched_entry *e)
{
    int freed = 0;
    if (!e->client)
        return;
    if (e->state == SCHED_WAITING || e->state == SCHED_RETRY)
        unqueue(s, e);
    if (e->state == SCHED_RUNNING && e->meta) {
        e->be->meta_in_flight--;
        e->be = NULL;
        e->state = SCHED_IDLE;
        freed = 1;
    } else if (e->state == SCHED_RUNNING) {
        release(e);
        e->be = NULL;
        e->state = SCHED_IDLE;
        freed = 1;
    }
    if (e->counted) {
        count_out(e);
        freed = 1;
    }
    if (freed)
        e->client->served++;
    e->client->refs--;
    client_put(s, e->client);
    e->client = NULL;
    if (freed)
        sched_kick(s);
}

void sched_init(struct sched *s, struct event_base *base)
{
    memset(s, 0, sizeof *s);
    s->base = base;
    s->max_length = 1024;
    s->timeout_s = 600;
    s->rate_t0_ms = net_now_ms();
    s->no_backend_s = 5;
    s->lb.ops = &lb_leastload;
    TAILQ_INIT(&s->retries);
    TAILQ_INIT(&s->meta_q);
    LIST_INIT(&s->clients);
    if (base) {
        evtimer_assign(&s->nb_sweep, base, on_nb_sweep, s);
        evtimer_assign(&s->hold_ev, base, on_hold_end, s);
    }
    scan_reserve(s, 0); /* more as groups come (group_get) */
}

void sched_cleanup(struct sched *s)
{
    struct sched_client *c;
    if (s->nb_armed)
        evtimer_del(&s->nb_sweep);
    if (s->hold_at)
        evtimer_del(&s->hold_ev);
    lb_cleanup(&s->lb);
    free(s->scan);
    while ((c = LIST_FIRST(&s->clients))) {
        LIST_REMOVE(c, link);
        free(c->name);
        free(c);
    }
    while (s->groups) {
        struct sched_group *g = s->groups;
        s->groups = g->next;
        for (int i = 0; i < PRIO_COUNT; i++)
            free(g->heap[i].v);
        free(g->key);
        free(g);
    }
    free(s->keys);
    free(s->hash);
    free(s->most);
}
