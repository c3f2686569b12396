/* buf.c - see buf.h. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

int buf_reserve(struct buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const char *s, size_t len)
{
    if (buf_reserve(b, len) < 0)
        return -1;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_set(struct buf *b, const char *s, size_t len)
{
    buf_clear(b);
    return buf_append(b, s, len);
}

/* The escape for byte C, or NULL when it is copied as it is. */
static const char *json_escape(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        if (c >= 0x20)
            return NULL;
        snprintf(tmp, 8, "\\u%04x", c);
        return tmp;
    }
}

int buf_json_string(struct buf *b, const char *s, size_t len)
{
    char tmp[8];
    size_t run = 0, i = 0;
    /* Worst case every byte becomes \u00XX: reserve once, copy in runs. */
    if (buf_reserve(b, len * 6 + 2) < 0)
        return -1;
    b->data[b->len++] = '"';
    while (i < len) {
        const unsigned char c = (unsigned char)s[i];
        size_t seq = c < 0x80 ? 1 : utf8_seq_len((const unsigned char *)s + i, len - i);
        const char *esc = seq == 0 ? UTF8_REPLACEMENT : c < 0x80 ? json_escape(c, tmp) : NULL;
        if (!esc) {
            i += seq;
            continue;
        }
        memcpy(b->data + b->len, s + run, i - run);
        b->len += i - run;
        size_t el = strlen(esc);
        memcpy(b->data + b->len, esc, el);
        b->len += el;
        run = ++i; /* an escape or an invalid byte is one byte of S */
    }
    memcpy(b->data + b->len, s + run, len - run);
    b->len += len - run;
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
    return 0;
}

void buf_clear(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
