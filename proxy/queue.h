/* queue.h - the proxy's one central queue of requests waiting for a slot.
 *
 * An entry is either in the queue (queued == 1) or not; only queue_push*,
 * queue_remove and queue_pop move it. The queue never owns the session an
 * entry is embedded in: whoever removes an entry carries on with it.
 *
 * Late binding: entries wait here, not at a backend, and each slot that
 * frees goes to the oldest entry (FIFO), so a backend that frees a slot
 * first gets the next request. A newcomer never overtakes: slots are handed
 * out the moment they free, so a newcomer finding a free slot means no
 * waiting entry could use it. */
#ifndef PX_QUEUE_H
#define PX_QUEUE_H

#include <sys/queue.h>

struct queue_entry {
    TAILQ_ENTRY(queue_entry) link;
    int queued;
};

TAILQ_HEAD(queue_list, queue_entry);

struct queue {
    struct queue_list list;
    int length;
    int max_length; /* entries that may wait; retries may pass it */
};

void queue_init(struct queue *q, int max_length);

/* Append E. Returns 0, or -1 when max_length entries already wait. */
int queue_push(struct queue *q, struct queue_entry *e);

/* Put E first, whatever the length: a request being retried was admitted
 * already and is older than everything waiting. */
void queue_push_front(struct queue *q, struct queue_entry *e);

/* Take E out; a no-op when it is not queued. */
void queue_remove(struct queue *q, struct queue_entry *e);

/* Walk the queue oldest first without taking entries out: the first entry
 * (NULL when empty) and the one after E (NULL at the end). */
struct queue_entry *queue_first(struct queue *q);
struct queue_entry *queue_next(struct queue_entry *e);

/* The oldest entry, taken out, or NULL. */
struct queue_entry *queue_pop(struct queue *q);

#endif
