/* sched.h - the scheduler: who gets a slot, and when.
 *
 * Every proxied request is an entry charged to a client (a key, or the
 * connecting address). The scheduler owns admission (queue length, a key's
 * max_queued), the waiting entries by priority, model and client, the
 * clients' counts (a key's max_concurrent), the backends' slots (taken when
 * an entry is granted one, given back by sched_done or sched_retry), and the
 * one function that hands free slots to waiting entries (see sched.c).
 *
 * States of an entry (e->state), and who moves it:
 *   IDLE     not known to the scheduler (before sched_submit, after the end)
 *   WAITING  in the queue, its timer armed          submit -> WAITING
 *   RETRY    first in line again after a failed try retry  -> RETRY
 *   RUNNING  holds a slot of e->be                   dispatch -> RUNNING
 * WAITING and RETRY end in RUNNING (ops->granted) or IDLE (ops->refused:
 * queue timeout, or pushed out by a full queue); every state ends in IDLE
 * by sched_done(). A client counts an entry in flight from the moment it is
 * first granted a slot until sched_done, retries included: a key's
 * max_concurrent is never exceeded, and a retry never waits for its own
 * client. A metadata entry (e->meta) goes through the same states on its
 * own queue and places (SCHED_META_CAP), counted to its client the same
 * way.
 *
 * The callbacks run from inside scheduler calls (a submit, a done, a
 * timer); they may call any sched_* function, on any entry. */
#ifndef PX_SCHED_H
#define PX_SCHED_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <sys/queue.h>

#include "config.h"
#include "lb.h"

struct backend;
struct sched_entry;
struct sched_cgq;

enum sched_refusal {
    SCHED_TIMED_OUT,  /* queue.timeout_s waited */
    SCHED_PUSHED_OUT, /* the queue was full and its client had the most waiting */
    SCHED_NO_BACKEND, /* no backend in service could serve it for queue.no_backend_s */
};

struct sched_ops {
    /* E has a slot on BE (E is RUNNING, e->be == BE). */
    void (*granted)(struct sched_entry *e, struct backend *be);
    /* E leaves the queue without a slot (E is IDLE, its client still
     * set until sched_done): answer 503 with Retry-After RETRY_AFTER. */
    void (*refused)(struct sched_entry *e, enum sched_refusal why, int retry_after);
};

enum sched_state { SCHED_IDLE, SCHED_WAITING, SCHED_RETRY, SCHED_RUNNING };

/* A client: a key of auth.keys, or an address (or a trusted header's
 * value). Owned by the scheduler; an entry holds a reference from
 * sched_submit to sched_done. */
struct sched_client {
    char *name;
    enum key_priority prio;
    int weight;         /* share of the slots relative to other clients, >= 1 */
    int max_concurrent; /* 0: no cap of its own on its GPU slots */
    int max_queued;     /* 0: no bound of its own on its waiting */
    int in_flight;      /* entries holding a slot or a metadata place, or retrying */
    int meta_in_flight; /* of those, metadata: not capped by max_concurrent */
    int waiting;        /* entries WAITING, metadata included */
    int refs;           /* entries between submit and done */
    int key_index;      /* its row in auth.keys, -1 for an address */
    int widx;           /* in s->most (by waiting, the largest first); -1: out */
    unsigned capped : 1;  /* at max_concurrent: out of the heaps */
    unsigned retired : 1; /* a key dropped by a reload */
    unsigned long long served, refused;
    /* When it was last granted a GPU slot, and a metadata place (values of
     * s->grants; 0: never): at equal load the least recent goes first, so
     * that tied clients take turns (sched.c, rule 3). */
    unsigned long long granted_at, meta_granted_at;
    TAILQ_HEAD(, sched_entry) queue; /* WAITING entries, oldest first */
    struct sched_cgq *cgqs;          /* its queues, one per model waited for */
    struct sched_client *hnext;      /* address hash chain */
    LIST_ENTRY(sched_client) link;   /* s->clients */
};

struct sched_entry {
    /* Set by the caller before sched_submit. */
    const struct sched_ops *ops;
    const char *key; /* name_key() of the model, NULL: any backend; borrowed */
    unsigned meta : 1; /* metadata (/api/show...): no GPU slot, see SCHED_META_CAP */
    unsigned keyed : 1; /* it has an affinity key, hashed into affinity (lb.h) */
    unsigned long long affinity;
    int num_ctx; /* its options.num_ctx as it goes to the backend (0: none) */
    /* Read-only for the caller. */
    struct sched_client *client;
    struct backend *be; /* the slot held while RUNNING */
    enum sched_state state;
    /* The scheduler's. */
    struct sched *sched;
    TAILQ_ENTRY(sched_entry) q_link; /* its cgq's entries, or s->retries */
    TAILQ_ENTRY(sched_entry) c_link; /* client->queue while WAITING */
    struct sched_cgq *cgq;
    struct backend *avoid; /* RETRY: the backend that just failed it */
    struct runner *runner; /* RUNNING: the runner of its model on e->be (NULL: none) */
    unsigned home : 1;       /* the balancer's word on the placement being granted */
    unsigned aff_counted : 1; /* its affinity hit or miss is counted (once) */
    unsigned long long seq;
    double t_submit_ms;
    double unserved_ms; /* RETRY: since when no backend in service serves it; 0: one does */
    struct event timer; /* queue timeout while WAITING or RETRY */
    unsigned timer_armed : 1;
    unsigned counted : 1; /* in client->in_flight */
};

LIST_HEAD(sched_client_list, sched_client);
TAILQ_HEAD(sched_entry_list, sched_entry);

struct sched {
    struct event_base *base;
    struct backend **backends; /* the fleet, see sched_set_backends */
    int nbackends;
    struct lb lb; /* which backend (lb.h) */
    int max_length;   /* entries that may wait; retries may pass it */
    double timeout_s; /* queue.timeout_s */
    double no_backend_s; /* queue.no_backend_s */
    struct event nb_sweep; /* every NB_SWEEP_MS while entries wait: the no-backend rule */
    int nb_armed;
    int waiting;      /* WAITING entries, metadata aside */
    int retrying;     /* RETRY entries, metadata included */
    struct sched_entry_list meta_q; /* metadata RETRY (first), then WAITING, oldest first */
    int meta_waiting; /* metadata WAITING; max_length bounds waiting + meta_waiting */
    struct sched_group *groups; /* one per model with entries waiting */
    struct sched_entry_list retries;
    struct sched_client_list clients;
    struct sched_client **keys; /* by auth.keys row */
    int nkeys;
    struct sched_client **hash; /* address clients */
    struct sched_client **most; /* a max-heap of the clients with entries waiting */
    int nmost, most_cap;
    unsigned hash_size, naddr;
    unsigned long long seq;
    unsigned long long grants; /* first grants so far: client->granted_at */
    int dispatching, again, frozen;
    /* Entries a balancer holds for a backend (lb.h): the next time one may
     * go elsewhere, and the timer that dispatches then. */
    double hold_next; /* the earliest held_until seen since the timer was armed; 0: none */
    double hold_at;   /* when the timer fires; 0: not armed */
    struct event hold_ev;
    struct sched_scan *scan; /* pick()'s candidates (SCHED_SCAN_MAX and one a group) */
    int scan_cap, ngroups;
    /* The drain rate, for Retry-After: entries granted from the queue. */
    double rate, rate_t0_ms;
    unsigned long long drained;
    unsigned long long dispatch_ns, dispatches; /* cost of handing slots on */
};

void sched_init(struct sched *s, struct event_base *base);
/* Free everything; no entry may be WAITING or RETRY (their owners end them
 * first). */
void sched_cleanup(struct sched *s);

/* Take the queue settings and the keys of CFG (startup and reload). Keys
 * kept by name keep their counts; a dropped key's client lives on until its
 * last entry ends. Returns 0, or -1 on allocation failure. */
int sched_configure(struct sched *s, const struct px_config *cfg);

/* The backends slots are handed out on (borrowed; fleet.c calls this
 * whenever the fleet changes). Dispatches what may now run. */
void sched_set_backends(struct sched *s, struct backend **bes, int n);

/* The client of auth.keys row I, or the address (or header) client NAME,
 * made on demand. NULL on allocation failure. */
struct sched_client *sched_key_client(struct sched *s, int i);
struct sched_client *sched_addr_client(struct sched *s, const char *name);

/* C was looked up but nothing was submitted for it (a request refused
 * before the queue): an address client with no entry is freed. */
void sched_client_unused(struct sched *s, struct sched_client *c);

/* Admit E (IDLE, ops and key set) for CLIENT: granted a slot at once
 * (ops->granted runs before this returns) or WAITING. Returns 0, or
 * SCHED_EFULL (queue full and E's client has the most waiting) or
 * SCHED_EKEYQ (its client's max_queued reached) or SCHED_ENOBACKEND (no
 * backend in service serves its model and queue.no_backend_s is 0): E stays IDLE, CLIENT is
 * still the caller's to put (sched_client_unused), and the caller answers
 * 503 with sched_retry_after(). Admitting E may push the
 * newest entry of the client with the most waiting out (its refused()). */
#define SCHED_EFULL (-1)
#define SCHED_EKEYQ (-2)
#define SCHED_ENOBACKEND (-3) /* no backend in service serves it, queue.no_backend_s 0 */
int sched_submit(struct sched *s, struct sched_entry *e, struct sched_client *client);

/* E (RUNNING) failed before any byte reached its client: its slot is given
 * back and it goes to another backend than the one that failed if one is
 * free (ops->granted), else first in line (RETRY). */
void sched_retry(struct sched *s, struct sched_entry *e);

/* E ends, in any state: out of the queue, its slot given back, its client
 * released; free slots are handed on. A no-op on an IDLE entry that was
 * never submitted. */
void sched_done(struct sched *s, struct sched_entry *e);

/* Something changed (a backend is back, models were discovered, a reload):
 * hand free slots to waiting entries. */
void sched_kick(struct sched *s);

/* Stop handing slots out (a forced shutdown closes everything). */
void sched_freeze(struct sched *s);

/* A balancer may hold an entry for a backend that is full (lb.h): dispatch
 * then goes on with the entries after it in the policy's order, passing
 * over at most SCHED_SCAN_MAX held ones for one slot; a held entry's slot
 * is looked for again when a slot frees and when its hold ends. */
#define SCHED_SCAN_MAX 64

/* Metadata requests (e->meta: /api/show and reads like it) never run on a
 * GPU: they take no slot and never wait behind inference. Each backend
 * takes at most SCHED_META_CAP of them at once, the least busy first; more
 * wait in a queue of their own, under the same queue timeout and
 * no-backend rule. They are their clients' as any entry: waiting, they
 * count to max_queued, to the queue's one max_length and to the push-out
 * rule; running, to in_flight (and meta_in_flight); a place that frees
 * goes by priority, then to the client with the fewest metadata requests
 * in flight for its weight (at a tie, the one granted a place least
 * recently), oldest first. A key's max_concurrent does not
 * cap them: it is a share of the GPUs, which they do not use, and counting
 * them would hold a key's /api/show behind its own generations. */
#define SCHED_META_CAP 4

/* 1 when some backend in service (up, not drained, not disabled, not
 * retired) serves, or may serve, the model KEY (NULL: any). An entry whose
 * model none serves waits at most queue.no_backend_s, then is refused
 * (SCHED_NO_BACKEND): an outage is a quick 503, not a wait of timeout_s. */
int sched_serveable(const struct sched *s, const char *key);

/* Seconds a refused client should wait: the time the measured drain rate
 * needs to serve what waits now, at least 1 (1 with no measure yet). */
int sched_retry_after(struct sched *s);

/* Entries waiting, retries included. */
int sched_length(const struct sched *s);

/* When the longest-waiting entry (WAITING or RETRY) was submitted, in
 * net_now_ms() time; 0 when none waits. O(clients + retries). */
double sched_oldest_ms(const struct sched *s);

#endif
