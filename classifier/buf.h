/* buf.h - a growable byte buffer and the JSON string escaper the request
 * builder needs. A zeroed struct buf is an empty buffer; data is always
 * NUL-terminated once anything has been appended. The buffer owns data. */
#ifndef CLS_BUF_H
#define CLS_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Make room for N more bytes plus a NUL. Returns 0 or -1 (out of memory). */
int buf_reserve(struct buf *b, size_t n);
/* Append LEN bytes of S. Returns 0 or -1. */
int buf_append(struct buf *b, const char *s, size_t len);
/* Append the NUL-terminated S. Returns 0 or -1. */
int buf_puts(struct buf *b, const char *s);
/* Replace the contents with S (LEN bytes). Returns 0 or -1. */
int buf_set(struct buf *b, const char *s, size_t len);
/* Append S (LEN bytes) as a quoted JSON string: ", \ and control characters
 * escaped, valid UTF-8 copied, and each byte that does not start a valid
 * UTF-8 sequence replaced by U+FFFD (utf8.h), so that the result is always
 * valid JSON. Returns 0 or -1. */
int buf_json_string(struct buf *b, const char *s, size_t len);
/* Empty the buffer, keep its memory. */
void buf_clear(struct buf *b);
/* Free the memory; the buffer is empty again. */
void buf_free(struct buf *b);

#endif
