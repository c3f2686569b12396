/* textout.c - see textout.h. */
#include "textout.h"

#include <event2/buffer.h>
#include <string.h>

void textout_init(struct textout *o, struct evbuffer *ev)
{
    o->ev = ev;
    o->n = 0;
}

void textout_flush(struct textout *o)
{
    if (o->n)
        evbuffer_add(o->ev, o->b, o->n);
    o->n = 0;
}

void textout_put(struct textout *o, const char *p, size_t n)
{
    while (n) {
        size_t k = sizeof o->b - o->n;
        if (!k) {
            textout_flush(o);
            continue;
        }
        if (k > n)
            k = n;
        memcpy(o->b + o->n, p, k);
        o->n += k;
        p += k;
        n -= k;
    }
}

void textout_str(struct textout *o, const char *s)
{
    textout_put(o, s, strlen(s));
}

void textout_num(struct textout *o, unsigned long long v)
{
    char d[24], *p = d + sizeof d;
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    textout_put(o, p, (size_t)(d + sizeof d - p));
}
