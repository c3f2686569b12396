/* utf8.c - see utf8.h. */
#include "utf8.h"

#include <string.h>

#define BOM "\xef\xbb\xbf"

size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0; /* a continuation byte, C0/C1 (overlong), or past F4 */
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* past U+10FFFF */
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

int utf8_skip_bom(FILE *f)
{
    int got[3];
    size_t n = 0;
    while (n < 3 && (got[n] = getc(f)) == (unsigned char)BOM[n])
        n++;
    if (n == 3)
        return 1;
    /* Give back what was read, last first: the mismatch (unless EOF),
     * then the matched part of the mark. */
    if (got[n] != EOF)
        ungetc(got[n], f);
    while (n > 0)
        ungetc(got[--n], f);
    return 0;
}

size_t utf8_bom_len(const char *s, size_t len)
{
    return len >= 3 && memcmp(s, BOM, 3) == 0 ? 3 : 0;
}
