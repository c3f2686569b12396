/* tee.c - see tee.h. */
#include "tee.h"

#include <event2/buffer.h>
#include <stdlib.h>

#include "upload.h"

#define TEE_STEP (256 * 1024) /* bytes taken from the source at a time */

struct tee {
    struct bodysrc *src;
    struct upload **ups;
    int n;
    struct evbuffer *chunk; /* bytes on their way from the source to the uploads */
    tee_end_fn on_end;
    void *arg;
    unsigned long long bytes;
    unsigned ended : 1;
    unsigned pumping : 1, again : 1;
};

static void on_data(void *arg)
{
    tee_pump(arg);
}

struct tee *tee_new(struct bodysrc *src, int n, tee_end_fn on_end, void *arg)
{
    struct tee *t = calloc(1, sizeof *t);
    if (!t || !(t->ups = calloc((size_t)n + 1, sizeof *t->ups)) ||
        !(t->chunk = evbuffer_new())) {
        if (t)
            free(t->ups);
        free(t);
        return NULL;
    }
    t->src = src;
    t->n = n;
    t->on_end = on_end;
    t->arg = arg;
    src->on_data = on_data;
    src->arg = t;
    return t;
}

void tee_set(struct tee *t, int i, struct upload *u)
{
    if (i >= 0 && i < t->n)
        t->ups[i] = u;
}

/* The most any upload still set has queued. */
static size_t most_queued(const struct tee *t)
{
    size_t most = 0;
    for (int i = 0; i < t->n; i++)
        if (t->ups[i] && upload_queued(t->ups[i]) > most)
            most = upload_queued(t->ups[i]);
    return most;
}

/* One step: take what the window allows and hand it to every upload.
 * Returns the source's state, *GOT the bytes taken. */
static enum bodysrc_state step(struct tee *t, size_t *got)
{
    size_t most = most_queued(t), room = most < TEE_WINDOW ? TEE_WINDOW - most : 0;
    *got = 0;
    if (room > TEE_STEP)
        room = TEE_STEP;
    if (room)
        *got = t->src->ops->read(t->src, t->chunk, room);
    if (*got) {
        for (int i = 0; i < t->n; i++)
            if (t->ups[i])
                upload_send(t->ups[i], t->chunk); /* shared, not copied */
        evbuffer_drain(t->chunk, *got);
        t->bytes += *got;
    }
    return t->src->ops->state(t->src);
}

void tee_pump(struct tee *t)
{
    enum bodysrc_state st = BODYSRC_MORE;
    size_t got;
    if (t->ended)
        return;
    if (t->pumping) { /* news while moving: go round once more */
        t->again = 1;
        return;
    }
    t->pumping = 1;
    do {
        t->again = 0;
        while ((st = step(t, &got)) == BODYSRC_MORE && got)
            ;
    } while (st == BODYSRC_MORE && t->again);
    t->pumping = 0;
    if (st == BODYSRC_MORE)
        return;
    t->ended = 1;
    if (st == BODYSRC_END)
        for (int i = 0; i < t->n; i++)
            if (t->ups[i])
                upload_finish(t->ups[i]);
    t->on_end(t->arg, st); /* may free T: the last word */
}

unsigned long long tee_bytes(const struct tee *t)
{
    return t->bytes;
}

void tee_free(struct tee *t)
{
    if (!t)
        return;
    t->src->on_data = NULL;
    t->src->ops->release(t->src);
    evbuffer_free(t->chunk);
    free(t->ups);
    free(t);
}
