/* multipart.c - see multipart.h. The parts are walked with memmem from one
 * delimiter ("\r\n--BOUNDARY", or "\n--BOUNDARY" when the form's first
 * delimiter line ends in a bare LF, as Go accepts) to the next; only the
 * headers of each part are read, never its contents. */
/* memmem: _GNU_SOURCE is set by the build */
#include "multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define BOUNDARY_MAX 70 /* RFC 2046 5.1.1 */

static int fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return -1;
}

/* The value of parameter PARAM in the header value H[0..N) (";"-separated
 * "k=v", v a token or a quoted string), unescaped into OUT. 1 found, 0 not. */
static int param(const char *h, size_t n, const char *name, char *out, size_t outlen)
{
    const char *p = memchr(h, ';', n), *end = h + n;
    size_t nlen = strlen(name);
    while (p && p < end) {
        const char *k = p + 1, *eq;
        while (k < end && (*k == ' ' || *k == '\t'))
            k++;
        eq = memchr(k, '=', (size_t)(end - k));
        if (!eq)
            return 0;
        const char *kend = eq;
        while (kend > k && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        const char *v = eq + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        size_t o = 0;
        int match = (size_t)(kend - k) == nlen && strncasecmp(k, name, nlen) == 0;
        if (v < end && *v == '"') {
            for (v++; v < end && *v != '"'; v++) {
                if (*v == '\\' && v + 1 < end)
                    v++;
                if (match && o + 1 < outlen)
                    out[o++] = *v;
            }
            v += v < end;
        } else {
            for (; v < end && *v != ';' && *v != ' ' && *v != '\t'; v++)
                if (match && o + 1 < outlen)
                    out[o++] = *v;
        }
        if (match) {
            out[o] = '\0';
            return 1;
        }
        p = memchr(v, ';', (size_t)(end - v));
    }
    return 0;
}

/* The form's boundary from its Content-Type. 0, or -1 with Go's reason. */
static int boundary_of(const char *ctype, char *b, size_t blen, char *err, size_t errlen)
{
    static const char mt[] = "multipart/form-data";
    size_t n;
    if (!ctype)
        return fail(err, errlen, "request Content-Type isn't multipart/form-data");
    while (*ctype == ' ' || *ctype == '\t')
        ctype++;
    n = strcspn(ctype, "; \t");
    if (n != sizeof mt - 1 || strncasecmp(ctype, mt, n) != 0)
        return fail(err, errlen, "request Content-Type isn't multipart/form-data");
    if (!param(ctype, strlen(ctype), "boundary", b, blen) || !*b)
        return fail(err, errlen, "no multipart boundary param in Content-Type");
    if (strlen(b) > BOUNDARY_MAX)
        return fail(err, errlen, "mime: invalid media parameter");
    return 0;
}

/* P[0..N) starts with the delimiter line "--B" plus optional blanks and a
 * line end: the length of the line (its end included), 0 if it is not one,
 * and in *LAST whether it is the closing "--B--". */
static size_t delimiter_line(const char *p, size_t n, const char *b, size_t blen, int *last)
{
    size_t i = 2 + blen;
    if (n < i || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, blen) != 0)
        return 0;
    *last = n >= i + 2 && p[i] == '-' && p[i + 1] == '-';
    if (*last)
        i += 2;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i < n && p[i] == '\n')
        return i + 1;
    if (i + 1 < n && p[i] == '\r' && p[i + 1] == '\n')
        return i + 2;
    return *last && i == n ? i : 0;
}

/* The part's headers at P[0..N): its form name and whether it is a file.
 * Returns the headers' length (through the empty line), 0 if they do not
 * end. */
static size_t part_head(const char *p, size_t n, char *fname, size_t flen, int *is_file)
{
    size_t i = 0;
    fname[0] = '\0';
    *is_file = 0;
    while (i < n) {
        const char *e = memchr(p + i, '\n', n - i);
        size_t len;
        if (!e)
            return 0;
        len = (size_t)(e - (p + i));
        if (len && p[i + len - 1] == '\r')
            len--;
        if (!len)
            return (size_t)(e - p) + 1;
        if (len > 20 && strncasecmp(p + i, "Content-Disposition:", 20) == 0) {
            char tmp[8];
            const char *v = p + i + 20;
            size_t vn = len - 20;
            while (vn && (*v == ' ' || *v == '\t'))
                v++, vn--;
            if (vn >= 9 && strncasecmp(v, "form-data", 9) == 0) {
                param(v, vn, "name", fname, flen);
                *is_file = param(v, vn, "filename", tmp, sizeof tmp);
            }
        }
        i = (size_t)(e - p) + 1;
    }
    return 0;
}

int multipart_field(const char *ctype, const char *body, size_t len, const char *name,
                    const char **val, size_t *vlen, char *err, size_t errlen)
{
    char b[BOUNDARY_MAX + 2], delim[BOUNDARY_MAX + 8], fname[256];
    size_t blen, dlen, pos = 0, line;
    int last = 0, is_file;
    if (boundary_of(ctype, b, sizeof b, err, errlen) < 0)
        return -1;
    blen = strlen(b);
    /* The first delimiter: after a preamble of whole lines, if any. */
    while (!(line = delimiter_line(body + pos, len - pos, b, blen, &last))) {
        const char *e = memchr(body + pos, '\n', len - pos);
        if (!e)
            return fail(err, errlen, "multipart: NextPart: EOF");
        pos = (size_t)(e - body) + 1;
    }
    /* Its line end says which the others have. */
    dlen = (size_t)snprintf(delim, sizeof delim, "%s--%s",
                            line >= 2 && body[pos + line - 2] == '\r' ? "\r\n" : "\n", b);
    pos += line;
    while (!last) {
        size_t h = part_head(body + pos, len - pos, fname, sizeof fname, &is_file);
        const char *end;
        if (!h)
            return fail(err, errlen, "multipart: NextPart: EOF");
        pos += h;
        end = memmem(body + pos, len - pos, delim, dlen);
        if (!end)
            return fail(err, errlen, "multipart: NextPart: EOF");
        if (!is_file && strcmp(fname, name) == 0) {
            *val = body + pos;
            *vlen = (size_t)(end - (body + pos));
            return 1;
        }
        pos = (size_t)(end - body) + dlen - 2 - blen; /* at "--B" */
        line = delimiter_line(body + pos, len - pos, b, blen, &last);
        if (!line)
            return fail(err, errlen, "multipart: NextPart: EOF");
        pos += line;
    }
    return 0;
}
