/* fuzz_multipart.c - proxy/util/multipart.c, the one reader of a body
 * that is not JSON (/v1/audio/transcriptions takes its model from a form).
 *
 * The first input byte chooses how the rest is read:
 * - even: the bytes up to the first NUL are the Content-Type, the rest the
 *   body, asked for the field "model". Whatever they are, a value found
 *   lies inside the body, a refusal has its reason, and asking again gives
 *   the same answer.
 * - odd: a form is built around the bytes: a boundary from the first of
 *   them (Go's boundary characters), a preamble, a file part named model
 *   (a file is not a value, FormValue skips it), then the field model whose
 *   value is the rest, with CRLF or bare LF line ends. The field must come
 *   back whole, byte for byte, unless the value holds the delimiter. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "multipart.h"

static void check_raw(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t clen = nul ? (size_t)(nul - data) : 0, len = nul ? size - clen - 1 : size;
    char *ctype = NULL, *body = malloc(len ? len : 1), err[96], err2[96];
    const char *val = NULL, *val2 = NULL;
    size_t vlen = 0, vlen2 = 0;
    if (nul) {
        ctype = malloc(clen + 1);
        memcpy(ctype, data, clen);
        ctype[clen] = '\0';
    }
    memcpy(body, nul ? nul + 1 : data, len);
    err[0] = err2[0] = '\0';
    int rc = multipart_field(ctype, body, len, "model", &val, &vlen, err, sizeof err);
    int rc2 = multipart_field(ctype, body, len, "model", &val2, &vlen2, err2, sizeof err2);
    FZ_CHECK(rc >= -1 && rc <= 1);
    FZ_CHECK_INT(rc, rc2);
    if (rc == 1) {
        FZ_CHECK(val >= body && vlen <= len && (size_t)(val - body) <= len - vlen);
        FZ_CHECK(val == val2 && vlen == vlen2);
    } else if (rc == -1) {
        FZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err));
        FZ_CHECK(strcmp(err, err2) == 0);
    }
    free(ctype);
    free(body);
}

static void check_built(const uint8_t *data, size_t size, int crlf)
{
    static const char bchars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?";
    const char *nl = crlf ? "\r\n" : "\n";
    char b[71], delim[80], err[96];
    size_t blen = size ? 1 + data[0] % 70 : 1;
    for (size_t i = 0; i < blen; i++)
        b[i] = bchars[(i + 1 < size ? data[i + 1] : i) % (sizeof bchars - 1)];
    b[blen] = '\0';
    const uint8_t *v = size > blen + 1 ? data + blen + 1 : data;
    size_t vn = size > blen + 1 ? size - blen - 1 : 0;
    snprintf(delim, sizeof delim, "%s--%s", nl, b);
    if (memmem(v, vn, delim, strlen(delim)))
        return; /* the value would end the part early: not a form of it */
    char ctype[128];
    snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=\"%s\"", b);
    size_t cap = vn + 512, n = 0;
    char *body = malloc(cap);
    n += (size_t)snprintf(body + n, cap - n,
                          "preamble line%s--%s%s"
                          "Content-Disposition: form-data; name=\"model\"; filename=\"a.wav\"%s%s"
                          "RIFF....%s--%s%s"
                          "Content-Disposition: form-data; name=\"model\"%s%s",
                          nl, b, nl, nl, nl, nl, b, nl, nl, nl);
    size_t at = n;
    memcpy(body + n, v, vn);
    n += vn;
    n += (size_t)snprintf(body + n, cap - n, "%s--%s--%s", nl, b, nl);
    const char *val = NULL;
    size_t vlen = 0;
    int rc = multipart_field(ctype, body, n, "model", &val, &vlen, err, sizeof err);
    if (rc != 1 || val != body + at || vlen != vn) {
        fz_dump("form", body, n);
        FZ_CHECK(!"the field comes back whole");
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        check_raw(data + 1, size - 1);
    else
        check_built(data + 1, size - 1, data[0] & 2);
    return 0;
}
