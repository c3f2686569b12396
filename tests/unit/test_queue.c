/* Unit test of proxy/queue.c: FIFO order, the length bound, front
 * insertion for retries, removal from the middle. */
#include "check.h"
#include "queue.h"

int main(void)
{
    struct queue q;
    struct queue_entry e[5] = {{{0}, 0}};
    queue_init(&q, 3);
    CHECK(queue_pop(&q) == NULL);
    CHECK_INT(queue_push(&q, &e[0]), 0);
    CHECK_INT(queue_push(&q, &e[1]), 0);
    CHECK_INT(queue_push(&q, &e[2]), 0);
    CHECK_INT(queue_push(&q, &e[3]), -1); /* full */
    CHECK_INT(e[3].queued, 0);
    CHECK_INT(q.length, 3);
    queue_remove(&q, &e[1]);
    queue_remove(&q, &e[1]); /* twice: a no-op */
    CHECK_INT(q.length, 2);
    queue_push_front(&q, &e[4]); /* a retry: first in line */
    CHECK(queue_pop(&q) == &e[4]);
    CHECK(queue_pop(&q) == &e[0]);
    CHECK(queue_pop(&q) == &e[2]);
    CHECK(queue_pop(&q) == NULL);
    CHECK_INT(q.length, 0);
    CHECK_INT(e[0].queued + e[2].queued + e[4].queued, 0);
    /* Past max_length with front insertion, then back under it. */
    queue_init(&q, 1);
    CHECK_INT(queue_push(&q, &e[0]), 0);
    queue_push_front(&q, &e[1]);
    CHECK_INT(q.length, 2);
    CHECK_INT(queue_push(&q, &e[2]), -1);
    CHECK_DONE();
}
