/* textout.h - text for an evbuffer, gathered in a buffer of our own and
 * added in pieces of up to TEXTOUT_SIZE bytes.
 *
 * An evbuffer_add() costs far more than the copy of a few bytes, and an
 * evbuffer_add_printf() more still: text made of many short parts (a
 * request's head, a /metrics scrape of 10,000 lines) is put here and
 * reaches the evbuffer in a few adds. */
#ifndef PX_TEXTOUT_H
#define PX_TEXTOUT_H

#include <stddef.h>

struct evbuffer;

#define TEXTOUT_SIZE 4096

struct textout {
    struct evbuffer *ev;
    size_t n;
    char b[TEXTOUT_SIZE];
};

/* Text for EV. Nothing reaches EV before textout_flush(). */
void textout_init(struct textout *o, struct evbuffer *ev);

/* Append P[0..N), any length. */
void textout_put(struct textout *o, const char *p, size_t n);

/* Append the NUL-terminated S. */
void textout_str(struct textout *o, const char *s);

/* Append V in decimal. */
void textout_num(struct textout *o, unsigned long long v);

/* Add what is gathered to the evbuffer. */
void textout_flush(struct textout *o);

#endif
