/* urlpath.c - see urlpath.h. One pass over the raw path, split on its
 * raw '/', each segment decoded as it is copied. */
#include "urlpath.h"

#include <string.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 3986 pchar without pct-encoded: what a segment carries as is. */
static int pchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+,;=:@", c));
}

/* Decode the raw segment S[0..N) onto OUT at *O (room up to LEN). */
static int segment(const char *s, size_t n, char *out, size_t *o, size_t len, const char **why)
{
    size_t start = *o;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (lo < 0)
                return *why = "malformed percent-escape in the path", URLPATH_EBAD;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
            if (c == '/')
                return *why = "an encoded '/' in the path", URLPATH_EBAD;
        }
        if (c < 0x20 || c == 0x7f)
            return *why = "a control character in the path", URLPATH_EBAD;
        if (*o + 1 >= len)
            return *why = "the path is too long", URLPATH_ELONG;
        out[(*o)++] = (char)c;
    }
    n = *o - start;
    if ((n == 1 && out[start] == '.') || (n == 2 && out[start] == '.' && out[start + 1] == '.'))
        return *why = "a '.' or '..' segment in the path", URLPATH_EBAD;
    return 0;
}

static int encode(const char *path, char *fwd, size_t fwdlen, size_t *o, const char **why)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const char *p = path; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (*o + 4 >= fwdlen)
            return *why = "the path is too long", URLPATH_ELONG;
        if (c == '/' || pchar(c)) {
            fwd[(*o)++] = (char)c;
        } else {
            fwd[(*o)++] = '%';
            fwd[(*o)++] = hex[c >> 4];
            fwd[(*o)++] = hex[c & 15];
        }
    }
    return 0;
}

int urlpath_normalize(const char *target, char *path, size_t pathlen, char *fwd, size_t fwdlen,
                      const char **why)
{
    size_t rawlen = strcspn(target, "?"), o = 0, f = 0, i = 0;
    const char *query = target[rawlen] == '?' ? target + rawlen : NULL;
    int rc;
    if (pathlen > URLPATH_MAX + 1)
        pathlen = URLPATH_MAX + 1;
    while (i < rawlen) {
        size_t n = strcspn(target + i, "/?");
        if (n > rawlen - i)
            n = rawlen - i;
        if (n) { /* an empty segment ("//", a trailing '/') adds nothing */
            if (o + 2 >= pathlen)
                return *why = "the path is too long", URLPATH_ELONG;
            path[o++] = '/';
            if ((rc = segment(target + i, n, path, &o, pathlen, why)) < 0)
                return rc;
        }
        i += n + 1;
    }
    if (o == 0)
        path[o++] = '/';
    path[o] = '\0';
    if ((rc = encode(path, fwd, fwdlen, &f, why)) < 0)
        return rc;
    if (query) {
        size_t q = strlen(query);
        if (f + q + 1 > fwdlen)
            return *why = "the target is too long", URLPATH_ELONG;
        memcpy(fwd + f, query, q);
        f += q;
    }
    fwd[f] = '\0';
    return 0;
}
