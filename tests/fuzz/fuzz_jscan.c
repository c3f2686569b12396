/* fuzz_jscan.c - proxy/jscan.c checked against jansson and against a
 * reference that reads members as Go does, on every input.
 *
 * jscan_body() must agree with json_loadb(JSON_DECODE_ANY) on whether the
 * bytes are one JSON value, and, when they are an object, with the
 * reference below on every routed top-level member (jscan.h): the last
 * "model" and "name" strings, stream, prompt, messages, keep_alive given
 * as a number, and which of them has a type Go refuses. Member names match
 * as Go's encoding/json matches them: case-insensitively, with Unicode
 * simple folding, the last duplicate winning. keep_alive given as a Go
 * duration string is checked against Go itself, in test_proxy_hardening.
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

/* The code point of the \uXXXX at P (P[0] == '\\'), or -1. */
static long u_escape(const char *p, size_t left)
{
    long v = 0;
    if (left < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    for (int i = 2; i < 6; i++) {
        int h = fz_hexval((unsigned char)p[i]);
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

/* jscan on the original and on the transformed bytes: the same answer
 * (but for members spelled with U+017F or U+212A, which the transform of a
 * non-UTF-8 input turns into other names). */
static void check_same_scan(const uint8_t *data, const char *m, size_t size, int rc0, int rc1,
                            const struct jscan_result *r0, const struct jscan_result *r1,
                            const char *e0, const char *e1)
{
    if (rc0 == rc1 && (rc0 == 0 || strcmp(e0, e1) == 0) &&
        model_offset(r0, (const char *)data) == model_offset(r1, m) &&
        r0->model_len == r1->model_len && r0->model_escaped == r1->model_escaped &&
        r0->is_object == r1->is_object)
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

/* ---- the reference: the top-level members as Go's encoding/json reads
 * them (jscan.h), written apart from jscan: the member boundaries found by
 * a skipper over text jansson has already validated, every key and value
 * decoded by jansson, names folded per code point. ---- */

struct ref {
    json_t *model, *name; /* the last string (borrowed from vals) */
    int stream, prompt, messages;
    int keep_alive;       /* JSCAN_KA_*, or -1: a duration string (checked in e2e) */
    int ka_strings;       /* some keep_alive was a string: its type is not judged here */
    unsigned wrong;
    json_t *vals;         /* owns every value decoded */
};

/* The member Go would fill from the (decoded, valid UTF-8) name K, or -1:
 * ASCII letters fold to lower case, U+017F to 's', U+212A to 'k'. */
static int ref_member(const char *k, size_t n)
{
    static const char *const names[JSCAN_NMEMBERS] = {
        "model", "name", "prompt", "messages", "keep_alive", "stream", "input", "options"};
    char folded[32];
    size_t f = 0;
    for (size_t i = 0; i < n;) {
        unsigned long cp = (unsigned char)k[i];
        size_t len = cp < 0x80 ? 1 : cp < 0xe0 ? 2 : cp < 0xf0 ? 3 : 4;
        for (size_t j = 1; j < len && i + j < n; j++)
            cp = (j == 1 ? cp & (0x7f >> len) : cp) << 6 | ((unsigned char)k[i + j] & 0x3f);
        i += len;
        if (cp >= 'A' && cp <= 'Z')
            cp += 32;
        else if (cp == 0x17f)
            cp = 's';
        else if (cp == 0x212a)
            cp = 'k';
        if (cp >= 0x80 || f == sizeof folded)
            return -1;
        folded[f++] = (char)cp;
    }
    for (int m = 0; m < JSCAN_NMEMBERS; m++)
        if (strlen(names[m]) == f && memcmp(names[m], folded, f) == 0)
            return m;
    return -1;
}

static void ref_value(struct ref *r, int m, json_t *v)
{
    int null = json_is_null(v), str = json_is_string(v);
    unsigned bit = 1u << m;
    switch (m) {
    case JSCAN_MODEL:
    case JSCAN_NAME:
        if (str)
            *(m == JSCAN_MODEL ? &r->model : &r->name) = v;
        if (!str && !null)
            r->wrong |= bit;
        break;
    case JSCAN_PROMPT:
        if (str)
            r->prompt = json_string_length(v) > 0;
        if (!str && !null)
            r->wrong |= bit;
        break;
    case JSCAN_MESSAGES:
        if (json_is_array(v))
            r->messages = json_array_size(v) > 0;
        else if (null)
            r->messages = 0;
        else
            r->wrong |= bit;
        break;
    case JSCAN_KEEP_ALIVE:
        if (null) {
            r->keep_alive = JSCAN_KA_ABSENT;
        } else if (json_is_number(v)) {
            double t = json_number_value(v);
            r->keep_alive = t == 0 || (t > 0 && t * 1e9 < 1.0) ? JSCAN_KA_ZERO : JSCAN_KA_SET;
        } else if (str) {
            r->keep_alive = -1;
            r->ka_strings = 1;
        } else {
            r->keep_alive = JSCAN_KA_SET;
            r->wrong |= bit;
        }
        break;
    case JSCAN_STREAM:
        r->stream = json_is_true(v) ? 1 : json_is_false(v) ? 0 : -1;
        if (!json_is_boolean(v) && !null)
            r->wrong |= bit;
        break;
    case JSCAN_OPTIONS:
        if (!json_is_object(v) && !null)
            r->wrong |= bit;
        break;
    }
}

/* Walk the top-level members of M (a valid JSON object) in order. */
static void ref_scan(const char *m, size_t size, struct ref *r)
{
    const char *p = m, *end = m + size;
    memset(r, 0, sizeof *r);
    r->stream = r->prompt = r->messages = -1;
    r->vals = json_array();
    p = fz_json_skip_ws(p, end) + 1; /* '{' */
    for (;;) {
        const char *k, *v;
        json_t *key, *val;
        int mem;
        p = fz_json_skip_ws(p, end);
        if (*p == '}')
            return;
        k = p;
        p = fz_json_skip_string(p);
        key = json_loadb(k, (size_t)(p - k), JSON_DECODE_ANY, NULL);
        FZ_CHECK(json_is_string(key));
        p = fz_json_skip_ws(fz_json_skip_ws(p, end) + 1, end); /* ':' */
        v = p;
        p = fz_json_skip_value(p, end);
        mem = ref_member(json_string_value(key), json_string_length(key));
        json_decref(key);
        if (mem >= 0) {
            val = json_loadb(v, (size_t)(p - v), JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
            FZ_CHECK(val != NULL);
            json_array_append_new(r->vals, val);
            ref_value(r, mem, val);
        }
        p = fz_json_skip_ws(p, end);
        if (*p == ',')
            p++;
    }
}

static void report(const uint8_t *data, const char *m, size_t size, const char *what, int rc,
                   const char *err, const json_error_t *je, json_t *root)
{
    fprintf(stderr, "jscan and the reference disagree: %s\n", what);
    fz_dump("input", data, size);
    fz_dump("compared", m, size);
    fprintf(stderr, "jscan: %s; jansson: %s\n", rc ? err : "valid",
            root ? "valid" : je->text);
    abort();
}

/* jscan's string S[0..N) (escaped) decoded equals V's. */
static int same_string(const char *s, size_t n, json_t *v)
{
    char *dec;
    size_t k;
    int same;
    if (!s || !v)
        return !s && !v;
    dec = malloc(n + 1);
    k = unescape(s, n, dec);
    same = k == json_string_length(v) && memcmp(dec, json_string_value(v), k) == 0;
    if (!same) {
        fz_dump("jscan (decoded)", dec, k);
        fz_dump("reference", json_string_value(v), json_string_length(v));
    }
    free(dec);
    return same;
}

static void compare_values(const uint8_t *data, const char *m, size_t size,
                           const struct jscan_result *r, json_t *root, const json_error_t *je)
{
    struct ref ref;
    unsigned mask = ~(1u << JSCAN_KEEP_ALIVE);
    if (r->is_object != json_is_object(root))
        report(data, m, size, "is_object", 0, "", je, root);
    if (!r->is_object)
        return;
    ref_scan(m, size, &ref);
    if (!same_string(r->model, r->model_len, ref.model))
        report(data, m, size, "the model", 0, "", je, root);
    if (!same_string(r->name, r->name_len, ref.name))
        report(data, m, size, "the name", 0, "", je, root);
    if (r->stream != ref.stream)
        report(data, m, size, "stream", 0, "", je, root);
    if (r->prompt != ref.prompt)
        report(data, m, size, "prompt", 0, "", je, root);
    if (r->messages != ref.messages)
        report(data, m, size, "messages", 0, "", je, root);
    if (ref.keep_alive >= 0 && (int)r->keep_alive != ref.keep_alive)
        report(data, m, size, "keep_alive", 0, "", je, root);
    if (!ref.ka_strings)
        mask = ~0u;
    if ((r->wrong_type & mask) != (ref.wrong & mask))
        report(data, m, size, "which values have a wrong type", 0, "", je, root);
    json_decref(ref.vals);
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
