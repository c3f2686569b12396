/* bodysrc.c - see bodysrc.h: the source of a body already in memory. */
#include "bodysrc.h"

#include <event2/buffer.h>

static size_t whole_read(struct bodysrc *b, struct evbuffer *out, size_t max)
{
    struct bodysrc_whole *w = (struct bodysrc_whole *)b;
    size_t n = evbuffer_get_length(w->body);
    if (n > max)
        n = max;
    return n ? (size_t)evbuffer_remove_buffer(w->body, out, n) : 0;
}

static enum bodysrc_state whole_state(struct bodysrc *b)
{
    struct bodysrc_whole *w = (struct bodysrc_whole *)b;
    return evbuffer_get_length(w->body) ? BODYSRC_MORE : BODYSRC_END;
}

static void whole_release(struct bodysrc *b)
{
    (void)b;
}

static const struct bodysrc_ops whole_ops = {whole_read, whole_state, whole_release};

struct bodysrc *bodysrc_whole(struct bodysrc_whole *w, struct evbuffer *body)
{
    w->b.ops = &whole_ops;
    w->b.length = (long long)evbuffer_get_length(body);
    w->b.on_data = NULL;
    w->b.arg = NULL;
    w->body = body;
    return &w->b;
}
