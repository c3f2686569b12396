/* jout.c - see jout.h. */
#include "jout.h"

#include <event2/buffer.h>
#include <string.h>

/* The length of the valid UTF-8 character at S[0..N) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
size_t jout_utf8_char(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    if (s[0] == 0xe0)
        lo = 0xa0;
    else if (s[0] == 0xed)
        hi = 0x9f;
    else if (s[0] == 0xf0)
        lo = 0x90;
    else if (s[0] == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

size_t jout_utf8_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;
    while (i < n && (k = jout_utf8_char(u + i, n - i)) > 0)
        i += k;
    return i;
}

void jout_string(struct evbuffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    evbuffer_add(b, "\"", 1);
    while (i < n) {
        size_t k = jout_utf8_char(u + i, n - i);
        char esc[6];
        if (k == 1 && u[i] >= 0x20 && u[i] != '"' && u[i] != '\\') {
            i++, run++;
            continue;
        }
        if (k > 1) {
            i += k, run += k;
            continue;
        }
        evbuffer_add(b, u + i - run, run); /* the plain bytes before this one */
        run = 0;
        if (k == 0) {
            evbuffer_add(b, "\xef\xbf\xbd", 3); /* U+FFFD for one bad byte */
        } else if (u[i] == '"' || u[i] == '\\') {
            esc[0] = '\\', esc[1] = (char)u[i];
            evbuffer_add(b, esc, 2);
        } else {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[u[i] >> 4], esc[5] = hex[u[i] & 15];
            evbuffer_add(b, esc, 6);
        }
        i++;
    }
    evbuffer_add(b, u + i - run, run);
    evbuffer_add(b, "\"", 1);
}

void jout_cstring(struct evbuffer *b, const char *s)
{
    jout_string(b, s, strlen(s));
}
