/* fuzz_jbody.c - proxy/util/jbody.c, the one rewrite of a request body and
 * the start of a conversation, on every body jscan_body() accepts as an
 * object (jbody.h's precondition; the router calls it on no other).
 *
 * The first input byte chooses the num_ctx a pin sets; the rest is the
 * body. For every such body:
 * - jbody_set_num_ctx, pinning and stripping: the output is one JSON
 *   object for jscan too, with every routed member but options as before
 *   (model, name, stream, prompt, messages, keep_alive, and which of them
 *   has a type Go refuses); jbody_num_ctx reads the pinned value from it
 *   (0 after a strip); doing it again changes nothing. Unchanged (0)
 *   means jbody_num_ctx already reads the value; refused (-1) only when
 *   options has a type Ollama refuses (jscan says so too).
 * - Where jansson reads the body as Go does (valid UTF-8, no duplicate
 *   member, "options" spelt so and no other case of it, numbers a double
 *   holds): jbody_num_ctx is options.num_ctx as Ollama runs it, and the
 *   output is the body with options.num_ctx set (or removed), nothing
 *   else changed (json_equal).
 * - jbody_prefix_hash in every shape: the same twice; and in the shapes
 *   with messages (chat, Anthropic, Responses' input items), a message
 *   appended at the end (the next turn) changes neither whether a start
 *   was found nor its hash, which is what makes affinity by prefix keep a
 *   conversation on its backend. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "jbody.h"
#include "jscan.h"

static const int pins[] = {1, 2048, 4096, 8192, 131072, 2147483646};

/* ---- a walk of a validated body: where the winning member's value is ---- */

/* A top-level member: its name (still escaped) and value. */
struct top {
    const char *k, *v, *vend;
    size_t kn;
    int which; /* jscan_member_of(): the routed member it is, or -1 */
};

/* The next member of the object BODY whose walk is at *P (NULL: start). */
static int next_top(const char *body, const char *end, const char **p, struct top *m)
{
    const char *q = *p ? *p : fz_json_skip_ws(fz_json_skip_ws(body, end) + 1, end);
    if (q >= end || *q != '"')
        return 0;
    m->k = q + 1;
    q = fz_json_skip_value(q, end);
    m->kn = (size_t)(q - m->k - 1);
    m->v = fz_json_skip_ws(fz_json_skip_ws(q, end) + 1, end);
    m->vend = fz_json_skip_value(m->v, end);
    m->which = jscan_member_of(m->k, m->kn, memchr(m->k, '\\', m->kn) != NULL);
    q = fz_json_skip_ws(m->vend, end);
    *p = q < end && *q == ',' ? fz_json_skip_ws(q + 1, end) : q;
    return 1;
}

/* The value of the last top-level member jscan reads as WHICH: [*V, *VEND). */
static int member_value(const char *body, size_t len, enum jscan_member which, const char **v,
                        const char **vend)
{
    const char *p = NULL;
    struct top m;
    int found = 0;
    while (next_top(body, body + len, &p, &m))
        if (m.which == (int)which)
            *v = m.v, *vend = m.vend, found = 1;
    return found;
}

/* ---- what jscan reads, before and after a rewrite ---- */

static int scan(const char *b, size_t n, struct jscan_result *r)
{
    char err[128];
    return jscan_body(b, n, r, err, sizeof err) == 0 && r->is_object;
}

static void same_str(const char *a, size_t an, const char *b, size_t bn)
{
    FZ_CHECK((a == NULL) == (b == NULL));
    FZ_CHECK(an == bn && (!a || memcmp(a, b, an) == 0));
}

static void same_routing(const struct jscan_result *a, const struct jscan_result *b)
{
    unsigned others = ~(1u << JSCAN_OPTIONS);
    same_str(a->model, a->model_len, b->model, b->model_len);
    same_str(a->name, a->name_len, b->name, b->name_len);
    FZ_CHECK_INT(a->stream, b->stream);
    FZ_CHECK_INT(a->keep_alive, b->keep_alive);
    FZ_CHECK_INT(a->prompt, b->prompt);
    FZ_CHECK_INT(a->messages, b->messages);
    FZ_CHECK_INT(a->present & others, b->present & others);
    FZ_CHECK_INT(a->wrong_type & others, b->wrong_type & others);
}

/* ---- the rewrite: properties on every body ---- */

static void check_rewrite(const char *body, size_t len, const struct jscan_result *in, int value)
{
    char *out = NULL;
    size_t outlen = 0;
    int rc = jbody_set_num_ctx(body, len, value, &out, &outlen);
    if (rc == -1) {
        FZ_CHECK(out == NULL && value > 0);
        FZ_CHECK(in->wrong_type & 1u << JSCAN_OPTIONS);
        return;
    }
    if (rc == 0) {
        FZ_CHECK(out == NULL);
        FZ_CHECK_INT(jbody_num_ctx(body, len), value);
        return;
    }
    FZ_CHECK_INT(rc, 1);
    FZ_CHECK(outlen <= len + 64);
    struct jscan_result r;
    if (!scan(out, outlen, &r)) {
        fz_dump("body", body, len);
        fz_dump("rewritten", out, outlen);
        FZ_CHECK(!"the rewrite is one JSON object");
    }
    same_routing(in, &r);
    FZ_CHECK_INT(jbody_num_ctx(out, outlen), value);
    char *again = NULL;
    size_t againlen = 0;
    FZ_CHECK_INT(jbody_set_num_ctx(out, outlen, value, &again, &againlen), 0);
    FZ_CHECK(again == NULL);
    free(out);
}

/* ---- the rewrite against jansson, where jansson reads the body as Go ---- */

/* "options" spelt exactly so, once, wherever jscan reads an options
 * member: then jansson's object is the one Go decodes. */
static int options_plain(const char *body, size_t len)
{
    const char *p = NULL;
    struct top m;
    int seen = 0;
    while (next_top(body, body + len, &p, &m))
        if (m.which == JSCAN_OPTIONS && (seen++ || m.kn != 7 || memcmp(m.k, "options", 7) != 0))
            return 0;
    return 1;
}

/* options.num_ctx as Ollama runs it (api.Options from the map: a float64
 * truncated), in jbody.h's terms: a positive int, else 0. */
static int expected_num_ctx(json_t *obj)
{
    json_t *o = json_object_get(obj, "options"), *n = o ? json_object_get(o, "num_ctx") : NULL;
    double d;
    if (!n || !json_is_number(n))
        return 0;
    d = json_number_value(n);
    return d >= 1 && d < 2147483647.0 ? (int)d : 0;
}

static void check_against_jansson(const char *body, size_t len, int value)
{
    json_error_t e;
    json_t *in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (!in)
        return; /* invalid UTF-8, a duplicate, \u0000 in a key, a huge number */
    if (!json_is_object(in) || !options_plain(body, len)) {
        json_decref(in);
        return;
    }
    FZ_CHECK_INT(jbody_num_ctx(body, len), expected_num_ctx(in));
    for (int pass = 0; pass < 2; pass++) {
        int v = pass ? value : 0;
        json_t *want = json_deep_copy(in), *o = json_object_get(want, "options");
        char *out = NULL;
        size_t outlen = 0;
        int rc = jbody_set_num_ctx(body, len, v, &out, &outlen);
        if (o && !json_is_object(o) && !json_is_null(o)) {
            FZ_CHECK_INT(rc, v ? -1 : 0); /* Ollama refuses it: forwarded as it is */
            json_decref(want);
            continue;
        }
        if (v && json_is_object(o))
            json_object_set_new(o, "num_ctx", json_integer(v));
        else if (v)
            json_object_set_new(want, "options", json_pack("{s:i}", "num_ctx", v));
        else if (json_is_object(o))
            json_object_del(o, "num_ctx");
        json_t *got = rc == 1 ? json_loadb(out, outlen, JSON_REJECT_DUPLICATES, &e)
                              : json_incref(in);
        if (!got || !json_equal(got, want)) {
            fz_dump("body", body, len);
            if (out)
                fz_dump("rewritten", out, outlen);
            FZ_CHECK(!"the rewrite is the body with options.num_ctx set, nothing else");
        }
        json_decref(got);
        json_decref(want);
        free(out);
    }
    json_decref(in);
}

/* ---- the start of a conversation ---- */

/* BODY with ELEM appended to the array at [V, VEND) (the last messages or
 * input member): the next turn of the conversation. */
static char *append_elem(const char *body, size_t len, const char *v, const char *vend,
                         const char *elem, size_t *outlen)
{
    const char *close = vend - 1; /* the array's ']' */
    int empty = *fz_json_skip_ws(v + 1, vend) == ']';
    size_t en = strlen(elem), head = (size_t)(close - body);
    char *out = malloc(len + en + 2);
    memcpy(out, body, head);
    *outlen = head;
    if (!empty)
        out[(*outlen)++] = ',';
    memcpy(out + *outlen, elem, en);
    *outlen += en;
    memcpy(out + *outlen, close, len - head);
    *outlen += len - head;
    return out;
}

static void check_prefix(const char *body, size_t len)
{
    static const struct {
        enum jbody_shape shape;
        enum jscan_member conv;
    } shapes[] = {{JBODY_MESSAGES, JSCAN_MESSAGES}, {JBODY_RESPONSES, JSCAN_INPUT},
                  {JBODY_PROMPT, JSCAN_PROMPT}, {JBODY_NONE, JSCAN_MESSAGES}};
    static const char *next[] = {"{\"role\":\"assistant\",\"content\":\"ok\"}",
                                 "{\"role\":\"user\",\"content\":\"and then?\"}"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        unsigned long long h1 = 0, h2 = 0;
        int f1 = jbody_prefix_hash(body, len, shapes[s].shape, &h1);
        int f2 = jbody_prefix_hash(body, len, shapes[s].shape, &h2);
        const char *v, *vend;
        FZ_CHECK_INT(f1, f2);
        FZ_CHECK(!f1 || h1 == h2);
        if (shapes[s].shape == JBODY_NONE)
            FZ_CHECK_INT(f1, 0);
        if (!f1 || shapes[s].shape == JBODY_PROMPT ||
            !member_value(body, len, shapes[s].conv, &v, &vend) || *v != '[')
            continue;
        for (size_t t = 0; t < sizeof next / sizeof next[0]; t++) {
            size_t n;
            char *turn = append_elem(body, len, v, vend, next[t], &n);
            unsigned long long h3 = 0;
            int f3 = jbody_prefix_hash(turn, n, shapes[s].shape, &h3);
            if (f3 != 1 || h3 != h1) {
                fz_dump("body", body, len);
                fz_dump("next turn", turn, n);
                FZ_CHECK(!"a conversation's next turn keeps its start");
            }
            free(turn);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jscan_result in;
    if (size < 1)
        return 0;
    int value = pins[data[0] % (sizeof pins / sizeof pins[0])];
    size_t len = size - 1;
    char *body = malloc(len ? len : 1); /* its own allocation: ASan sees any read past it */
    memcpy(body, data + 1, len);
    if (scan(body, len, &in)) {
        check_rewrite(body, len, &in, value);
        check_rewrite(body, len, &in, 0);
        check_against_jansson(body, len, value);
        check_prefix(body, len);
    }
    free(body);
    return 0;
}
