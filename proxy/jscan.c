/* jscan.c - see jscan.h. A recursive-descent validator; depth is bounded so
 * that a hostile body cannot exhaust the stack. */
#include "jscan.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 512

struct scan {
    const char *p, *end, *start;
    const char *why;
};

static int value(struct scan *s, int depth);

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int fail(struct scan *s, const char *why)
{
    s->why = why;
    return -1;
}

static int hex4(const char *p)
{
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

/* A string at s->p (on the opening quote). Sets *B and *N to its contents and
 * *ESC when it holds escapes. */
static int string(struct scan *s, const char **b, size_t *n, int *esc)
{
    const char *p = ++s->p;
    *esc = 0;
    while (p < s->end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *b = s->p;
            *n = (size_t)(p - s->p);
            s->p = p + 1;
            return 0;
        }
        if (c < 0x20)
            return s->p = p, fail(s, "control character in a string");
        if (c == '\\') {
            *esc = 1;
            if (p + 1 >= s->end)
                break;
            if (p[1] == 'u') {
                if (p + 6 > s->end || !hex4(p + 2))
                    return s->p = p, fail(s, "bad \\u escape");
                p += 6;
                continue;
            }
            if (!p[1] || !strchr("\"\\/bfnrt", p[1])) /* strchr finds the NUL too */
                return s->p = p, fail(s, "bad escape");
            p += 2;
            continue;
        }
        p++;
    }
    s->p = p;
    return fail(s, "unterminated string");
}

static int digits(struct scan *s)
{
    const char *p = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > p ? 0 : fail(s, "bad number");
}

static int number(struct scan *s)
{
    if (*s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (digits(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (digits(s) < 0)
            return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (digits(s) < 0)
            return -1;
    }
    return 0;
}

static int literal(struct scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return fail(s, "invalid character");
    s->p += n;
    return 0;
}

/* The key K[0..N) (escaped) decoded into BUF, if it fits: only short keys
 * can be one we look for. Returns the key to compare, its length in *OUT. */
static const char *key_unescaped(const char *k, size_t n, char *buf, size_t len, size_t *out)
{
    size_t got = jscan_unescape(k, n, buf, len);
    if (got >= len) { /* too long to be one of ours */
        *out = 0;
        return k;
    }
    *out = got;
    return buf;
}

/* "0", 0, "0s", "0m", "0h" (and 0.0): keep_alive zero, an unload. */
static int is_zero_duration(const char *v, size_t n)
{
    if (n >= 2 && v[0] == '"')
        v++, n -= 2;
    if (!n || v[0] != '0')
        return 0;
    v++, n--;
    if (n && v[0] == '.')
        for (v++, n--; n && v[0] == '0'; v++, n--)
            ;
    return n == 0 || (n == 1 && (v[0] == 's' || v[0] == 'm' || v[0] == 'h'));
}

/* A top-level member K: V[0..VN) (the value's text) of interest. */
static void note_member(struct jscan_result *top, const char *k, size_t kn, const char *v,
                        size_t vn)
{
    if (kn == 6 && !memcmp(k, "stream", 6))
        top->stream = *v == 't' ? 1 : *v == 'f' ? 0 : -1;
    else if (kn == 10 && !memcmp(k, "keep_alive", 10))
        top->keep_alive_zero = is_zero_duration(v, vn);
    else if ((kn == 6 && !memcmp(k, "prompt", 6)) || (kn == 8 && !memcmp(k, "messages", 8)))
        /* an empty "" or [] asks for nothing: an unload or a load */
        top->has_input |= !(vn == 2 && (v[0] == '"' || v[0] == '[')) &&
                           !(vn == 4 && !memcmp(v, "null", 4));
}

/* Members of an object; at top level (TOP) note "model", "name", "stream",
 * "keep_alive", "prompt" and "messages". */
static int object(struct scan *s, int depth, struct jscan_result *top)
{
    const char *name_b = NULL;
    size_t name_n = 0;
    int name_esc = 0, model_seen = 0;
    char kbuf[16];
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        const char *k, *v;
        size_t kn, vn;
        int kesc, vesc;
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a member name");
        if (string(s, &k, &kn, &kesc) < 0)
            return -1;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'");
        s->p++;
        skip_ws(s);
        v = s->p;
        if (top && kesc) /* "mod\u0065l" is "model": compare the decoded key */
            k = key_unescaped(k, kn, kbuf, sizeof kbuf, &kn);
        if (top && ((kn == 5 && !memcmp(k, "model", 5)) || (kn == 4 && !memcmp(k, "name", 4)))) {
            /* The last one wins, as in jansson and Go. */
            vn = 0, vesc = 0;
            if (s->p < s->end && *s->p == '"') {
                if (string(s, &v, &vn, &vesc) < 0)
                    return -1;
            } else {
                if (value(s, depth + 1) < 0)
                    return -1;
                v = NULL;
            }
            if (kn == 5) { /* a "model" that is no string lets "name" stand in */
                top->model = v, top->model_len = vn, top->model_escaped = vesc;
                model_seen = v != NULL;
            } else {
                name_b = v, name_n = vn, name_esc = vesc;
            }
        } else {
            if (value(s, depth + 1) < 0)
                return -1;
            if (top)
                note_member(top, k, kn, v, (size_t)(s->p - v));
        }
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        }
        return fail(s, "expected ',' or '}'");
    }
    if (top && !model_seen && name_b)
        top->model = name_b, top->model_len = name_n, top->model_escaped = name_esc;
    return 0;
}

static int array(struct scan *s, int depth)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        if (value(s, depth + 1) < 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return fail(s, "expected ',' or ']'");
    }
}

static int value(struct scan *s, int depth)
{
    const char *b;
    size_t n;
    int esc;
    if (depth > MAX_DEPTH)
        return fail(s, "nested too deeply");
    skip_ws(s);
    if (s->p >= s->end)
        return fail(s, "unexpected end of input");
    switch (*s->p) {
    case '{':
        return object(s, depth, NULL);
    case '[':
        return array(s, depth);
    case '"':
        return string(s, &b, &n, &esc);
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'n':
        return literal(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
            return number(s);
        return fail(s, "invalid character");
    }
}

static unsigned hexval(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++)
        v = v * 16 + (unsigned)(p[i] <= '9' ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
    return v;
}

static size_t put_utf8(unsigned cp, char *out, size_t at, size_t len)
{
    char b[4];
    size_t n;
    if (cp < 0x80)
        b[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f)),
        b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3f)),
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    for (size_t i = 0; i < n; i++)
        if (at + i < len)
            out[at + i] = b[i];
    return at + n;
}

size_t jscan_unescape(const char *s, size_t n, char *out, size_t len)
{
    size_t i = 0, o = 0;
    while (i < n) {
        char c = s[i++];
        unsigned cp;
        if (c != '\\' || i >= n) {
            if (o < len)
                out[o] = c;
            o++;
            continue;
        }
        c = s[i++];
        switch (c) {
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (i + 4 > n) {
                cp = 0xfffd;
                break;
            }
            cp = hexval(s + i);
            i += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u' &&
                hexval(s + i + 2) >= 0xdc00 && hexval(s + i + 2) < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (hexval(s + i + 2) - 0xdc00);
                i += 6;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd; /* a lone surrogate, as Go's decoder */
            }
            break;
        default: cp = (unsigned char)c; /* \" \\ \/ */
        }
        o = put_utf8(cp, out, o, len);
    }
    if (len)
        out[o < len ? o : len - 1] = '\0';
    return o;
}

int jscan_body(const char *body, size_t len, struct jscan_result *out, char *err,
               size_t errlen)
{
    struct scan s = {body, body + len, body, NULL};
    int rc;
    memset(out, 0, sizeof *out);
    out->stream = -1;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '{') {
        out->is_object = 1;
        rc = object(&s, 1, out);
    } else {
        rc = value(&s, 1);
    }
    if (rc == 0) {
        skip_ws(&s);
        if (s.p != s.end)
            rc = fail(&s, "data after the JSON value");
    }
    if (rc < 0)
        snprintf(err, errlen, "%s at offset %zu", s.why, (size_t)(s.p - s.start));
    return rc;
}
