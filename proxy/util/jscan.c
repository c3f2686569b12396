/* jscan.c - see jscan.h. A recursive-descent validator; depth is bounded so
 * that a hostile body cannot exhaust the stack. */
#include "jscan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

static const char *const member_names[JSCAN_NMEMBERS] = {
    "model", "name", "prompt", "messages", "keep_alive", "stream", "input", "options"};

int jscan_member_of(const char *k, size_t n, int esc)
{
    char dec[48], fold[16];
    size_t len = n, f = 0, i = 0;
    const unsigned char *p;
    if (esc) { /* "mod\u0065l" is "model": compare the decoded name */
        if ((len = jscan_unescape(k, n, dec, sizeof dec)) >= sizeof dec)
            return -1; /* too long to be one of ours */
        k = dec;
    }
    p = (const unsigned char *)k;
    while (i < len) { /* Go's bytes.EqualFold, as far as it can reach ASCII names */
        if (f == sizeof fold)
            return -1;
        if (p[i] < 0x80) {
            fold[f++] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] | 0x20 : p[i]);
            i++;
        } else if (p[i] == 0xc5 && i + 1 < len && p[i + 1] == 0xbf) { /* U+017F long s */
            fold[f++] = 's';
            i += 2;
        } else if (p[i] == 0xe2 && i + 2 < len && p[i + 1] == 0x84 && p[i + 2] == 0xaa) {
            fold[f++] = 'k'; /* U+212A Kelvin sign */
            i += 3;
        } else {
            return -1;
        }
    }
    for (int m = 0; m < JSCAN_NMEMBERS; m++)
        if (strlen(member_names[m]) == f && memcmp(member_names[m], fold, f) == 0)
            return m;
    return -1;
}

/* The digits of S[*I..N) as Go's leadingInt / leadingFraction read them. */
static int duration_int(const char *s, size_t n, size_t *i, unsigned long long *v)
{
    const unsigned long long top = 1ULL << 63;
    *v = 0;
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
        if (*v > top / 10)
            return -1;
        *v = *v * 10 + (unsigned long long)(s[*i] - '0');
        if (*v > top)
            return -1;
    }
    return 0;
}

static void duration_frac(const char *s, size_t n, size_t *i, unsigned long long *f,
                          double *scale)
{
    int overflow = 0;
    *f = 0;
    *scale = 1;
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
        unsigned long long y;
        if (overflow)
            continue;
        y = *f * 10 + (unsigned long long)(s[*i] - '0');
        if (*f > (1ULL << 63) / 10 || y > 1ULL << 63) {
            overflow = 1;
            continue;
        }
        *f = y;
        *scale *= 10;
    }
}

static unsigned long long duration_unit(const char *u, size_t n)
{
    static const struct { const char *name; unsigned long long ns; } units[] = {
        {"ns", 1ULL}, {"us", 1000ULL}, {"\xc2\xb5s", 1000ULL}, {"\xce\xbcs", 1000ULL},
        {"ms", 1000000ULL}, {"s", 1000000000ULL}, {"m", 60000000000ULL},
        {"h", 3600000000000ULL}};
    for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
        if (strlen(units[k].name) == n && memcmp(units[k].name, u, n) == 0)
            return units[k].ns;
    return 0;
}

/* Go's time.ParseDuration(S[0..N)): 1 when it is zero, 0 when it is not,
 * -1 when Go refuses it. */
static int duration_zero(const char *s, size_t n)
{
    unsigned long long d = 0;
    size_t i = 0;
    if (n && (s[0] == '-' || s[0] == '+'))
        i++;
    if (n - i == 1 && s[i] == '0')
        return 1;
    if (i == n)
        return -1;
    while (i < n) {
        unsigned long long v, f = 0, unit;
        double scale = 1;
        size_t at = i, u;
        int pre, post = 0;
        if (s[i] != '.' && (s[i] < '0' || s[i] > '9'))
            return -1;
        if (duration_int(s, n, &i, &v) < 0)
            return -1;
        pre = i != at;
        if (i < n && s[i] == '.') {
            at = ++i;
            duration_frac(s, n, &i, &f, &scale);
            post = i != at;
        }
        if (!pre && !post)
            return -1;
        for (u = i; u < n && s[u] != '.' && (s[u] < '0' || s[u] > '9'); u++)
            ;
        if (u == i || !(unit = duration_unit(s + i, u - i)))
            return -1;
        i = u;
        if (v > (1ULL << 63) / unit)
            return -1;
        v *= unit;
        if (f > 0) {
            v += (unsigned long long)((double)f * ((double)unit / scale));
            if (v > 1ULL << 63)
                return -1;
        }
        d += v;
        if (d > 1ULL << 63)
            return -1;
    }
    return d == 0;
}

/* A keep_alive value V[0..N) (its JSON text) as Ollama's api.Duration:
 * a number of seconds (negative: forever) or a Go duration string. Values
 * too long to copy here are taken as not zero: then the proxy sends the
 * request to a slot, and the backend, if it unloads, does so from there. */
static enum jscan_keep_alive keep_alive_of(const char *v, size_t n, int *wrong)
{
    char buf[512];
    int z;
    if (*v == 'n')
        return JSCAN_KA_ABSENT;
    if (*v == '"') {
        size_t len = jscan_unescape(v + 1, n - 2, buf, sizeof buf);
        if (len >= sizeof buf)
            return JSCAN_KA_SET;
        if ((z = duration_zero(buf, len)) < 0)
            *wrong = 1;
        return z == 1 ? JSCAN_KA_ZERO : JSCAN_KA_SET;
    }
    if (*v == '-' || (*v >= '0' && *v <= '9')) {
        double t;
        if (n >= sizeof buf)
            return JSCAN_KA_SET;
        memcpy(buf, v, n);
        buf[n] = '\0';
        t = strtod(buf, NULL);
        if (isinf(t)) {
            *wrong = 1; /* Go's ParseFloat: out of range */
            return JSCAN_KA_SET;
        }
        return !signbit(t) && t * 1e9 < 1.0 ? JSCAN_KA_ZERO
               : t == 0                     ? JSCAN_KA_ZERO /* -0 */
                                            : JSCAN_KA_SET;
    }
    *wrong = 1; /* true, false, an array or an object */
    return JSCAN_KA_SET;
}

/* The top-level member M with value V[0..N), by Go's rules (jscan.h). */
static void note_member(struct jscan_result *top, int m, const char *v, size_t n)
{
    char c = *v;
    int null = c == 'n', str = c == '"', wrong = 0;
    top->present |= 1u << m;
    switch (m) {
    case JSCAN_MODEL:
    case JSCAN_NAME:
        if (str) {
            const char *b = v + 1;
            size_t len = n - 2;
            int esc = memchr(b, '\\', len) != NULL;
            if (m == JSCAN_MODEL)
                top->model = b, top->model_len = len, top->model_escaped = esc;
            else
                top->name = b, top->name_len = len, top->name_escaped = esc;
        }
        wrong = !str && !null;
        break;
    case JSCAN_PROMPT:
        if (str)
            top->prompt = n > 2;
        wrong = !str && !null;
        break;
    case JSCAN_MESSAGES:
        if (c == '[') {
            const char *p = v + 1;
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                p++;
            top->messages = *p != ']';
        } else if (null) {
            top->messages = 0;
        }
        wrong = c != '[' && !null;
        break;
    case JSCAN_KEEP_ALIVE:
        top->keep_alive = keep_alive_of(v, n, &wrong);
        break;
    case JSCAN_STREAM:
        top->stream = c == 't' ? 1 : c == 'f' ? 0 : -1;
        wrong = c != 't' && c != 'f' && !null;
        break;
    case JSCAN_OPTIONS:
        wrong = c != '{' && !null;
        break;
    default: /* input: any value */
        break;
    }
    if (wrong)
        top->wrong_type |= 1u << m;
}

/* Members of an object; at top level (TOP) note the routed ones. */
static int object(struct scan *s, int depth, struct jscan_result *top)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        const char *k, *v;
        size_t kn;
        int kesc, m;
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
        if (value(s, depth + 1) < 0)
            return -1;
        if (top && (m = jscan_member_of(k, kn, kesc)) >= 0)
            note_member(top, m, v, (size_t)(s->p - v));
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        return fail(s, "expected ',' or '}'");
    }
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
    /* An empty evbuffer's pullup is NULL: no arithmetic on it. */
    struct scan s = {body ? body : "", body ? body + len : "", body ? body : "", NULL};
    int rc;
    memset(out, 0, sizeof *out);
    out->stream = -1;
    out->prompt = -1;
    out->messages = -1;
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
