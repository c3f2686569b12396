/* queue.c - see queue.h. */
#include "queue.h"

#include <stddef.h>

void queue_init(struct queue *q, int max_length)
{
    TAILQ_INIT(&q->list);
    q->length = 0;
    q->max_length = max_length;
}

int queue_push(struct queue *q, struct queue_entry *e)
{
    if (q->length >= q->max_length)
        return -1;
    TAILQ_INSERT_TAIL(&q->list, e, link);
    e->queued = 1;
    q->length++;
    return 0;
}

void queue_push_front(struct queue *q, struct queue_entry *e)
{
    TAILQ_INSERT_HEAD(&q->list, e, link);
    e->queued = 1;
    q->length++;
}

void queue_remove(struct queue *q, struct queue_entry *e)
{
    if (!e->queued)
        return;
    TAILQ_REMOVE(&q->list, e, link);
    e->queued = 0;
    q->length--;
}

struct queue_entry *queue_pop(struct queue *q)
{
    struct queue_entry *e = TAILQ_FIRST(&q->list);
    if (e)
        queue_remove(q, e);
    return e;
}

struct queue_entry *queue_first(struct queue *q)
{
    return TAILQ_FIRST(&q->list);
}

struct queue_entry *queue_next(struct queue_entry *e)
{
    return TAILQ_NEXT(e, link);
}
