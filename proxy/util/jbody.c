/* jbody.c - see jbody.h. The body was validated by jscan_body(), so the
 * walk here only skips values; every step is still bounded by the end of
 * the body, so a body it was not meant for cannot make it read past it. */
#include "jbody.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"

/* ---- walking a validated body ---- */

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past the string whose opening quote is at P. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

/* Past the value at P (NULL: malformed). */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    if (p >= end)
        return NULL;
    do {
        if (p >= end)
            return NULL;
        switch (*p) {
        case '"':
            p = skip_string(p, end);
            break;
        case '{':
        case '[':
            depth++;
            p++;
            break;
        case '}':
        case ']':
            depth--;
            p++;
            break;
        default: /* a number, a literal, ':' ',' or blanks inside a container */
            p++;
            while (p < end && !strchr("\"{}[],: \t\r\n", *p))
                p++;
            p = depth ? ws(p, end) : p;
        }
    } while (depth > 0);
    return p;
}

/* One member of an object, or one element of an array (k NULL). */
struct member {
    const char *start;   /* the member's first byte (its name's quote, or the value) */
    const char *k;       /* its name, without quotes, still escaped */
    size_t kn;
    int kesc;
    const char *v, *vend; /* its value */
};

struct iter {
    const char *p, *end;
    int first;
};

/* Start iterating the object or array at V. */
static void iter_begin(struct iter *it, const char *v, const char *end)
{
    it->p = v + 1;
    it->end = end;
    it->first = 1;
}

/* The next member (OBJECT) or element; 0 at the end. */
static int iter_next(struct iter *it, int object, struct member *m)
{
    const char *p = ws(it->p, it->end);
    if (p >= it->end || *p == '}' || *p == ']')
        return 0;
    if (!it->first) {
        if (*p != ',')
            return 0;
        p = ws(p + 1, it->end);
    }
    it->first = 0;
    m->start = p;
    m->k = NULL;
    if (object) {
        const char *q;
        if (p >= it->end || *p != '"')
            return 0;
        q = skip_string(p, it->end);
        m->k = p + 1;
        m->kn = (size_t)(q - p - 2);
        m->kesc = memchr(m->k, '\\', m->kn) != NULL;
        p = ws(q, it->end);
        if (p >= it->end || *p != ':')
            return 0;
        p = ws(p + 1, it->end);
    }
    m->v = p;
    if (!(m->vend = skip_value(p, it->end)))
        return 0;
    it->p = m->vend;
    return 1;
}

/* The member's name, its escapes decoded, into BUF; its length (0 when it
 * does not fit, which no name compared here needs). */
static size_t name_of(const struct member *m, char *buf, size_t len)
{
    size_t n;
    if (!m->kesc) {
        if (m->kn >= len)
            return 0;
        memcpy(buf, m->k, m->kn);
        buf[m->kn] = '\0';
        return m->kn;
    }
    n = jscan_unescape(m->k, m->kn, buf, len);
    return n < len ? n : 0;
}

/* A struct field's name as Go matches it (ASCII case aside). */
static int field_is(const struct member *m, const char *name)
{
    char buf[32];
    size_t n = name_of(m, buf, sizeof buf);
    if (n != strlen(name))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((buf[i] >= 'A' && buf[i] <= 'Z' ? buf[i] | 0x20 : buf[i]) != name[i])
            return 0;
    return 1;
}

/* A map key as Go matches it: exactly. */
static int key_is(const struct member *m, const char *name)
{
    char buf[32];
    size_t n = name_of(m, buf, sizeof buf);
    return n && n == strlen(name) && memcmp(buf, name, n) == 0;
}

static int is_member(const struct member *m, enum jscan_member which)
{
    return jscan_member_of(m->k, m->kn, m->kesc) == (int)which;
}

/* ---- the start of a conversation ---- */

struct span {
    const char *p;
    size_t n;
};

static unsigned long long fnv(unsigned long long h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

/* Add a part (its JSON text, cut at MAX bytes when MAX) to H. */
static unsigned long long part(unsigned long long h, struct span s, size_t max)
{
    h = fnv(h, "\x1e", 1); /* a separator: "ab"+"c" is not "a"+"bc" */
    return fnv(h, s.p, s.p && max && s.n > max ? max : s.p ? s.n : 0);
}

/* Add the JSON value V..VEND to H as its tokens (blanks aside), without
 * any member named cache_control: Anthropic's clients mark the last blocks
 * of a conversation for their prompt cache, so the first user message has
 * the mark on one turn and not on the next, and what stays the same from
 * turn to turn is the rest. Nested past DEPTH_MAX: as its text. */
#define DEPTH_MAX 32
static unsigned long long value_hash(unsigned long long h, const char *v, const char *vend,
                                     int depth)
{
    struct iter it;
    struct member m;
    int object = *v == '{';
    if ((!object && *v != '[') || depth > DEPTH_MAX)
        return fnv(h, v, (size_t)(vend - v));
    h = fnv(h, v, 1);
    iter_begin(&it, v, vend);
    while (iter_next(&it, object, &m)) {
        if (object && key_is(&m, "cache_control"))
            continue;
        if (object)
            h = fnv(fnv(h, m.k - 1, m.kn + 2), ":", 1); /* "name": */
        h = fnv(value_hash(h, m.v, m.vend, depth + 1), ",", 1);
    }
    return fnv(h, object ? "}" : "]", 1);
}

/* Add a part that is a JSON value (system, a message's content) to H. */
static unsigned long long part_value(unsigned long long h, struct span s)
{
    h = fnv(h, "\x1e", 1);
    return s.p ? value_hash(h, s.p, s.p + s.n, 0) : h;
}

/* The role of the message M (an object), as its JSON text. */
static int role_is(const struct member *msg, const char *end, const char *role)
{
    struct iter it;
    struct member f;
    struct span r = {NULL, 0};
    size_t n = strlen(role);
    if (*msg->v != '{')
        return 0;
    iter_begin(&it, msg->v, end);
    while (iter_next(&it, 1, &f))
        if (field_is(&f, "role"))
            r = (struct span){f.v, (size_t)(f.vend - f.v)};
    return r.p && r.n == n + 2 && r.p[0] == '"' && memcmp(r.p + 1, role, n) == 0;
}

static struct span content_of(const struct member *msg, const char *end)
{
    struct iter it;
    struct member f;
    struct span c = {NULL, 0};
    iter_begin(&it, msg->v, end);
    while (iter_next(&it, 1, &f))
        if (field_is(&f, "content"))
            c = (struct span){f.v, (size_t)(f.vend - f.v)};
    return c;
}

/* The system messages of the array A up to its first user message, and
 * that message, into *H; 1 when there is a user message. */
static int messages_start(struct span a, const char *end, unsigned long long *h)
{
    struct iter it;
    struct member m;
    if (!a.p || *a.p != '[')
        return 0;
    iter_begin(&it, a.p, end);
    while (iter_next(&it, 0, &m)) {
        if (*m.v != '{')
            continue;
        if (role_is(&m, end, "system") || role_is(&m, end, "developer")) {
            *h = part_value(*h, content_of(&m, end));
        } else if (role_is(&m, end, "user")) {
            *h = part_value(*h, content_of(&m, end));
            return 1;
        }
    }
    return 0;
}

int jbody_prefix_hash(const char *body, size_t len, enum jbody_shape shape,
                      unsigned long long *hash)
{
    const char *end = body + len, *p = ws(body, end);
    struct span sys = {NULL, 0}, conv = {NULL, 0};
    unsigned long long h = 1469598103934665603ULL;
    struct iter it;
    struct member m;
    int found;
    if (shape == JBODY_NONE || p >= end || *p != '{')
        return 0;
    iter_begin(&it, p, end);
    while (iter_next(&it, 1, &m)) {
        struct span v = {m.v, (size_t)(m.vend - m.v)};
        if (field_is(&m, shape == JBODY_RESPONSES ? "instructions" : "system"))
            sys = v;
        else if (is_member(&m, shape == JBODY_MESSAGES   ? JSCAN_MESSAGES
                               : shape == JBODY_PROMPT ? JSCAN_PROMPT
                                                       : JSCAN_INPUT))
            conv = v;
    }
    if (!conv.p || *conv.p == 'n')
        return 0;
    h = part_value(h, sys);
    if (*conv.p == '[' && shape != JBODY_PROMPT)
        found = messages_start(conv, end, &h);
    else if ((found = conv.n > 2 || *conv.p != '"')) /* a prompt: not "" */
        h = part(h, conv, JBODY_PROMPT_MAX);
    h ^= h >> 29; /* FNV's low bits are weak for a hash that is then mixed again */
    *hash = h * 0xbf58476d1ce4e5b9ULL;
    return found;
}

/* ---- options.num_ctx ---- */

/* The number at V as an int (0: not a positive number). Go reads a number
 * of any length ("2048.000...0001" is 2048), so a long one is copied to
 * the heap; one that cannot be is taken as absent. */
static int number_at(const char *v, const char *vend)
{
    char buf[64], *s = buf;
    size_t n = (size_t)(vend - v);
    double d;
    if (n == 0 || (*v != '-' && (*v < '0' || *v > '9')))
        return 0;
    if (n >= sizeof buf && !(s = malloc(n + 1)))
        return 0;
    memcpy(s, v, n);
    s[n] = '\0';
    d = strtod(s, NULL);
    if (s != buf)
        free(s);
    return d >= 1 && d < 2147483647.0 ? (int)d : 0;
}

int jbody_num_ctx(const char *body, size_t len)
{
    const char *end = body + len, *p = ws(body, end);
    struct iter it, o;
    struct member m, f;
    int value = 0;
    if (p >= end || *p != '{')
        return 0;
    iter_begin(&it, p, end);
    while (iter_next(&it, 1, &m)) {
        if (!is_member(&m, JSCAN_OPTIONS))
            continue;
        if (*m.v == 'n') /* null: the map is nil again */
            value = 0;
        if (*m.v != '{')
            continue;
        iter_begin(&o, m.v, end);
        while (iter_next(&o, 1, &f))
            if (key_is(&f, "num_ctx"))
                value = number_at(f.v, f.vend);
    }
    return value;
}

/* An output buffer of known bound. */
struct out {
    char *b;
    size_t n;
};

static void put(struct out *o, const char *p, size_t n)
{
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

/* The options object at V with every num_ctx member left out: its bytes
 * but those members and one separator each. Returns how many were left
 * out. */
static int strip_object(struct out *o, const char *v, const char *end)
{
    struct iter it;
    struct member m;
    const char *last_end = v + 1, *close;
    int kept = 0, dropped = 0;
    iter_begin(&it, v, end);
    while (iter_next(&it, 1, &m)) {
        if (key_is(&m, "num_ctx")) {
            dropped++;
        } else {
            /* The first kept one after the blanks after '{'; a later one
             * after the separator that was before it. */
            const char *from = kept ? last_end : v;
            if (!kept)
                put(o, v, (size_t)(ws(v + 1, end) - v));
            else
                put(o, from, (size_t)(m.start - from));
            put(o, m.start, (size_t)(m.vend - m.start));
            kept++;
        }
        last_end = m.vend;
    }
    close = skip_value(v, end);
    if (!kept)
        put(o, "{", 1);
    put(o, last_end, (size_t)(close - last_end)); /* the blanks and '}' */
    return dropped;
}

/* Strip: every options object's num_ctx left out. */
static int strip(const char *body, const char *end, struct out *o)
{
    struct iter it;
    struct member m;
    const char *from = body;
    int changed = 0;
    iter_begin(&it, ws(body, end), end);
    while (iter_next(&it, 1, &m)) {
        size_t at = o->n;
        if (!is_member(&m, JSCAN_OPTIONS) || *m.v != '{')
            continue;
        put(o, from, (size_t)(m.v - from));
        if (strip_object(o, m.v, end))
            changed = 1;
        else
            o->n = at, put(o, from, (size_t)(m.vend - from)); /* as it was */
        from = m.vend;
    }
    put(o, from, (size_t)(end - from));
    return changed;
}

/* Pin: the effective num_ctx set to VALUE in the last options member. */
static int pin(const char *body, const char *end, int value, struct out *o)
{
    const char *top = ws(body, end);
    struct iter it, oi;
    struct member m, f, last = {0}, last_ctx = {0};
    const char *after_last = NULL; /* the end of the top object's last member */
    char num[48];
    int n;
    iter_begin(&it, top, end);
    while (iter_next(&it, 1, &m)) {
        if (is_member(&m, JSCAN_OPTIONS))
            last = m;
        after_last = m.vend;
    }
    if (last.v && *last.v != '{' && *last.v != 'n')
        return -1; /* Ollama refuses it (400): forwarded as it is */
    if (last.v && *last.v == '{') {
        iter_begin(&oi, last.v, end);
        while (iter_next(&oi, 1, &f))
            if (key_is(&f, "num_ctx"))
                last_ctx = f;
        if (last_ctx.v && number_at(last_ctx.v, last_ctx.vend) == value &&
            strspn(last_ctx.v, "0123456789") == (size_t)(last_ctx.vend - last_ctx.v))
            return 0; /* already so */
    }
    n = snprintf(num, sizeof num, "%d", value);
    if (last_ctx.v) { /* its value replaced */
        put(o, body, (size_t)(last_ctx.v - body));
        put(o, num, (size_t)n);
        put(o, last_ctx.vend, (size_t)(end - last_ctx.vend));
    } else if (last.v && *last.v == '{') { /* first in the last options object */
        const char *in = last.v + 1;
        int empty = *ws(in, end) == '}';
        put(o, body, (size_t)(in - body));
        put(o, "\"num_ctx\":", 10);
        put(o, num, (size_t)n);
        if (!empty)
            put(o, ",", 1);
        put(o, in, (size_t)(end - in));
    } else if (last.v) { /* null: an object in its place */
        put(o, body, (size_t)(last.v - body));
        put(o, "{\"num_ctx\":", 11);
        put(o, num, (size_t)n);
        put(o, "}", 1);
        put(o, last.vend, (size_t)(end - last.vend));
    } else { /* no options: added after the last member, or as the only one */
        const char *at = after_last ? after_last : top + 1;
        put(o, body, (size_t)(at - body));
        put(o, after_last ? ",\"options\":{\"num_ctx\":" : "\"options\":{\"num_ctx\":",
            after_last ? 22 : 21);
        put(o, num, (size_t)n);
        put(o, "}", 1);
        put(o, at, (size_t)(end - at));
    }
    return 1;
}

int jbody_set_num_ctx(const char *body, size_t len, int value, char **out, size_t *outlen)
{
    const char *end = body + len, *top = ws(body, end);
    struct out o = {NULL, 0};
    int rc;
    *out = NULL;
    *outlen = 0;
    if (top >= end || *top != '{')
        return -1;
    if (!(o.b = malloc(len + 64))) /* pin adds at most ,"options":{"num_ctx":N} */
        return -1;
    rc = value > 0 ? pin(body, end, value, &o) : strip(body, end, &o);
    if (rc != 1) {
        free(o.b);
        return rc;
    }
    *out = o.b;
    *outlen = o.n;
    return 1;
}
