/* tailbuf.h - the last bytes of a stream fed in chunks, kept so that a
 * scanner finds a key the end of one chunk cut (tokscan.c, numkey.c). */
#ifndef PX_TAILBUF_H
#define PX_TAILBUF_H

#include <stddef.h>
#include <string.h>

/* Append P[0..N) to TAIL (CAP bytes, *NTAIL of them used), keeping the
 * last CAP bytes. */
static inline void tailbuf_keep(char *tail, unsigned char *ntail, size_t cap, const char *p,
                                size_t n)
{
    if (n >= cap) {
        memcpy(tail, p + n - cap, cap);
        *ntail = (unsigned char)cap;
    } else if (n) {
        size_t keep = *ntail + n > cap ? cap - n : *ntail;
        memmove(tail, tail + *ntail - keep, keep);
        memcpy(tail + keep, p, n);
        *ntail = (unsigned char)(keep + n);
    }
}

#endif
