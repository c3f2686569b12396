/* fuzz_jscan.c - proxy/jscan.c checked against jansson on every input.
 *
 * jscan_body() must agree with json_loadb(JSON_DECODE_ANY) on whether the
 * bytes are one JSON value, and, when they are, on is_object and on the
 * top-level "model" (else "name") string and "stream" boolean.
 *
 * Where the two are allowed to differ, the input is transformed so that
 * they are not, instead of skipping it:
 * - jscan does not validate UTF-8 (Go's decoder, Ollama's, accepts invalid
 *   UTF-8), jansson rejects it. An input that is not valid UTF-8 has every
 *   byte >= 0x80 replaced by 'x', which jscan treats exactly as it treats
 *   such a byte (an ordinary string byte; outside strings an invalid
 *   character; 'x' is in no literal and no escape).
 * - jansson rejects lone UTF-16 surrogates (\uD800) and \u0000 in keys; Go
 *   and jscan accept them. They are rewritten to \u0041 and \u0001 (jscan
 *   only checks that four hex digits follow \u).
 * The first check is therefore that jscan says exactly the same of the
 * original and of the transformed input (verdict, error text with offset,
 * and where "model" lies).
 *
 * Two limits differ and are skipped instead: jscan's depth limit is 512
 * (jansson's 2048), so inputs nested 500 deep or more only check that a
 * depth error is a real one; and jansson refuses numbers beyond a double's
 * range (json_error_numeric_overflow), which are valid JSON text.
 *
 * The differences this target found are fixed (README.md, findings): it
 * tolerates none. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "jscan.h"

#define DEPTH_SKIP 500 /* jscan refuses 512 levels; stay clear of it */

/* Strict UTF-8 as jansson's utf.c checks it: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], len, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if (n - i < len)
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code point of the \uXXXX at P (P[0] == '\\'), or -1. */
static long u_escape(const char *p, size_t left)
{
    long v = 0;
    if (left < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    for (int i = 2; i < 6; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* The transformation described at the top, in place. It does not track
 * strings: a backslash outside a string makes the text invalid for both
 * parsers anyway, and only hex digits are rewritten. */
static void make_comparable(char *s, size_t n)
{
    if (!utf8_valid((const unsigned char *)s, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] >= 0x80)
                s[i] = 'x';
    for (size_t i = 0; i < n;) {
        long u = s[i] == '\\' ? u_escape(s + i, n - i) : -1;
        if (s[i] != '\\') {
            i++;
        } else if (u < 0) {
            i += 2; /* another escape, or a bad one: both parsers judge it */
        } else if (u >= 0xd800 && u <= 0xdbff) {
            long lo = u_escape(s + i + 6, n - i - 6);
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                i += 12;
            } else {
                memcpy(s + i + 2, "0041", 4);
                i += 6;
            }
        } else {
            if (u == 0)
                memcpy(s + i + 2, "0001", 4);
            else if (u >= 0xdc00 && u <= 0xdfff)
                memcpy(s + i + 2, "0041", 4);
            i += 6;
        }
    }
}

/* The deepest nesting of [ and { outside strings. */
static int max_depth(const char *s, size_t n)
{
    int d = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++d > max)
                max = d;
        } else if ((c == ']' || c == '}') && d > 0) {
            d--;
        }
    }
    return max;
}

static void put_utf8(char *out, size_t *o, unsigned long cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | cp >> 18);
        out[(*o)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* The contents of a JSON string as jscan hands it out (escapes intact,
 * already validated by jscan) decoded into OUT, which has room for N bytes:
 * no escape decodes to more bytes than it takes. Returns the length. */
static size_t unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        char c = s[i + 1];
        if (c == 'u') {
            unsigned long cp = (unsigned long)u_escape(s + i, n - i);
            i += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) { /* make_comparable left pairs only */
                unsigned long lo = (unsigned long)u_escape(s + i, n - i);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
            put_utf8(out, &o, cp);
            continue;
        }
        out[o++] = c == 'b' ? '\b' : c == 'f' ? '\f' : c == 'n' ? '\n' : c == 'r' ? '\r'
                 : c == 't' ? '\t' : c;
        i += 2;
    }
    return o;
}

static ptrdiff_t model_offset(const struct jscan_result *r, const char *base)
{
    return r->model ? r->model - base : -1;
}

/* jscan on the original and on the transformed bytes: the same answer. */
static void check_same_scan(const uint8_t *data, const char *m, size_t size, int rc0, int rc1,
                            const struct jscan_result *r0, const struct jscan_result *r1,
                            const char *e0, const char *e1)
{
    if (rc0 == rc1 && (rc0 == 0 || strcmp(e0, e1) == 0) &&
        model_offset(r0, (const char *)data) == model_offset(r1, m) &&
        r0->model_len == r1->model_len && r0->model_escaped == r1->model_escaped &&
        r0->stream == r1->stream && r0->is_object == r1->is_object)
        return;
    fz_dump("input", data, size);
    fz_dump("transformed", m, size);
    fprintf(stderr, "jscan: rc %d (%s) vs %d (%s)\n", rc0, rc0 ? e0 : "ok", rc1, rc1 ? e1 : "ok");
    abort();
}

/* What jscan reports of a valid result must hold together. */
static void check_result(const char *m, size_t size, const struct jscan_result *r)
{
    if (!r->model)
        return;
    FZ_CHECK(r->model > m && r->model + r->model_len < m + size);
    FZ_CHECK(r->model[-1] == '"' && r->model[r->model_len] == '"');
    FZ_CHECK(!!memchr(r->model, '\\', r->model_len) == !!r->model_escaped);
}

/* The oracle: "model" if it is a string, else "name" if that is one. */
static json_t *oracle_model(json_t *root)
{
    json_t *v = json_object_get(root, "model");
    if (json_is_string(v))
        return v;
    v = json_object_get(root, "name");
    return json_is_string(v) ? v : NULL;
}

static int oracle_stream(json_t *root)
{
    json_t *v = json_object_get(root, "stream");
    return json_is_true(v) ? 1 : json_is_false(v) ? 0 : -1;
}

static void report(const uint8_t *data, const char *m, size_t size, const char *what, int rc,
                   const char *err, const json_error_t *je, json_t *root)
{
    fprintf(stderr, "jscan and jansson disagree: %s\n", what);
    fz_dump("input", data, size);
    fz_dump("compared", m, size);
    fprintf(stderr, "jscan: %s; jansson: %s\n", rc ? err : "valid",
            root ? "valid" : je->text);
    abort();
}

static void compare_values(const uint8_t *data, const char *m, size_t size,
                           const struct jscan_result *r, json_t *root, const json_error_t *je)
{
    json_t *jm = oracle_model(root);
    if (r->is_object != json_is_object(root))
        report(data, m, size, "is_object", 0, "", je, root);
    if (!jm != !r->model) {
        report(data, m, size, "whether there is a model", 0, "", je, root);
    } else if (jm) {
        char *dec = malloc(r->model_len + 1);
        size_t n = unescape(r->model, r->model_len, dec);
        if (n != json_string_length(jm) || memcmp(dec, json_string_value(jm), n) != 0) {
            fz_dump("jscan model (decoded)", dec, n);
            fz_dump("jansson model", json_string_value(jm), json_string_length(jm));
            free(dec);
            report(data, m, size, "the model", 0, "", je, root);
        } else {
            free(dec);
        }
    }
    if (r->stream != oracle_stream(root))
        report(data, m, size, "stream", 0, "", je, root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jscan_result r0, r1;
    char e0[160], e1[160];
    char *m = malloc(size ? size : 1);
    json_error_t je;
    json_t *root = NULL;
    int rc0, rc1, depth;

    memcpy(m, data, size);
    make_comparable(m, size);
    rc0 = jscan_body((const char *)data, size, &r0, e0, sizeof e0);
    rc1 = jscan_body(m, size, &r1, e1, sizeof e1);
    check_same_scan(data, m, size, rc0, rc1, &r0, &r1, e0, e1);
    if (rc1 == 0)
        check_result(m, size, &r1);
    else
        FZ_CHECK(e1[0] != '\0');

    /* A raw NUL byte is never valid JSON (RFC 8259: not outside strings,
     * a control character inside), and jansson cannot be asked: it drops
     * a NUL that follows a number or a literal (json_loadb("84\0") is
     * valid for jansson 2.14, whose stream takes an ungot NUL for the end
     * of its buffer). */
    snprintf(je.text, sizeof je.text, "not asked: a raw NUL byte is invalid");
    if (memchr(m, '\0', size)) {
        if (rc1 == 0)
            report(data, m, size, "validity (a raw NUL byte)", rc1, e1, &je, NULL);
        goto done;
    }
    depth = max_depth(m, size);
    if (rc1 < 0 && strstr(e1, "nested too deeply"))
        FZ_CHECK(depth >= 512);
    root = json_loadb(m, size, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &je);
    if (depth >= DEPTH_SKIP || (!root && json_error_code(&je) == json_error_numeric_overflow))
        goto done;
    if ((rc1 == 0) != (root != NULL))
        report(data, m, size, "validity", rc1, e1, &je, root);
    else if (root)
        compare_values(data, m, size, &r1, root, &je);
done:
    json_decref(root);
    free(m);
    return 0;
}
