/* fuzz_urlpath.c - proxy/urlpath.c against a reference on every input.
 *
 * The reference decodes the whole raw path first (noting which bytes came
 * from an escape), then splits it on the raw slashes: a different order
 * of work than urlpath.c's one pass. They must agree on the verdict and
 * the path, and what urlpath.c forwards must decode to that path, carry
 * the query untouched, and normalise to itself (idempotence). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "urlpath.h"

/* 0 with the normalised path in OUT, or -1 (ambiguous or malformed). */
static int reference(const char *raw, size_t n, char *out, size_t *outlen)
{
    char *dec = malloc(n + 1), *from_esc = malloc(n + 1);
    size_t d = 0, o = 0, i;
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++) {
        if (raw[i] != '%') {
            dec[d] = raw[i];
            from_esc[d++] = 0;
            continue;
        }
        if (i + 2 >= n || fz_hexval(raw[i + 1]) < 0 || fz_hexval(raw[i + 2]) < 0) {
            rc = -1;
            break;
        }
        dec[d] = (char)(fz_hexval(raw[i + 1]) * 16 + fz_hexval(raw[i + 2]));
        from_esc[d++] = 1;
        i += 2;
    }
    for (i = 0; i < d && rc == 0; i++)
        if ((dec[i] == '/' && from_esc[i]) || (unsigned char)dec[i] < 0x20 ||
            (unsigned char)dec[i] == 0x7f)
            rc = -1;
    for (i = 0; i < d && rc == 0;) {
        size_t start;
        while (i < d && dec[i] == '/')
            i++;
        start = i;
        while (i < d && dec[i] != '/')
            i++;
        if (i == start)
            continue;
        if ((i - start == 1 && dec[start] == '.') ||
            (i - start == 2 && dec[start] == '.' && dec[start + 1] == '.'))
            rc = -1;
        out[o++] = '/';
        memcpy(out + o, dec + start, i - start);
        o += i - start;
    }
    if (o == 0)
        out[o++] = '/';
    *outlen = o;
    free(dec);
    free(from_esc);
    return rc;
}

static int pchar_or_slash(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+,;=:@/", c));
}

/* FWD's path part: only pchar, '/' and %XX; decoded it is PATH. */
static void check_forwarded(const char *fwd, const char *path)
{
    size_t n = strcspn(fwd, "?"), o = 0, plen = strlen(path);
    char *dec = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)fwd[i];
        if (c == '%') {
            FZ_CHECK(i + 2 < n);
            FZ_CHECK(fz_hexval(fwd[i + 1]) >= 0 && fz_hexval(fwd[i + 2]) >= 0);
            dec[o++] = (char)(fz_hexval(fwd[i + 1]) * 16 + fz_hexval(fwd[i + 2]));
            i += 2;
            continue;
        }
        FZ_CHECK(pchar_or_slash(c));
        dec[o++] = (char)c;
    }
    FZ_CHECK(o == plen && memcmp(dec, path, o) == 0);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[URLPATH_MAX + 1], fwd[8192], path2[URLPATH_MAX + 1], fwd2[8192];
    char *target = malloc(size + 1), *ref = malloc(size + 2);
    const char *why = NULL, *q;
    size_t rawlen, reflen;
    int rc, rrc;
    memcpy(target, data, size);
    target[size] = '\0'; /* a C string: up to the first NUL, as evhttp hands it */
    rawlen = strcspn(target, "?");
    q = target[rawlen] == '?' ? target + rawlen : NULL;
    rc = urlpath_normalize(target, path, sizeof path, fwd, sizeof fwd, &why);
    rrc = reference(target, rawlen, ref, &reflen);
    FZ_CHECK(rc == 0 || rc == URLPATH_EBAD || rc == URLPATH_ELONG);
    if (rc < 0)
        FZ_CHECK(why != NULL && *why);
    if (rc == URLPATH_ELONG) /* the reference has no limits: only the length can differ */
        FZ_CHECK(rrc < 0 || reflen > URLPATH_MAX - 2 || rawlen * 3 + (q ? strlen(q) : 0) > 8000);
    else if (rc == URLPATH_EBAD)
        FZ_CHECK(rrc < 0);
    else {
        FZ_CHECK_INT(rrc, 0);
        FZ_CHECK(strlen(path) == reflen && memcmp(path, ref, reflen) == 0);
        FZ_CHECK(path[0] == '/' && !strstr(path, "//"));
        FZ_CHECK(reflen == 1 || path[reflen - 1] != '/');
        check_forwarded(fwd, path);
        FZ_CHECK((q == NULL) == (strchr(fwd, '?') == NULL));
        if (q)
            FZ_CHECK(strcmp(strchr(fwd, '?'), q) == 0);
        FZ_CHECK_INT(urlpath_normalize(fwd, path2, sizeof path2, fwd2, sizeof fwd2, &why), 0);
        FZ_CHECK(strcmp(path, path2) == 0 && strcmp(fwd, fwd2) == 0);
    }
    free(target);
    free(ref);
    return 0;
}
