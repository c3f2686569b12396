/* sim_text.c - what the simulated model says: deterministic free text,
 * JSON for format:"json", schema-shaped JSON, enum labels chosen from the
 * item text, and embedding vectors. Everything here is a pure function of
 * its input except text_rand() (seeded by --seed) and the off-label choice. */
#include "sim.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const words[] = {
    "lorem",  "ipsum",   "dolor",  "sit",     "amet",         "consectetur", "adipiscing",
    "elit",   "sed",     "do",     "eiusmod", "tempor",       "incididunt",  "ut",
    "labore", "et",      "dolore", "magna",   "aliqua",       "enim",        "ad",
    "minim",  "veniam",  "quis",   "nostrud", "exercitation", "ullamco",     "laboris",
    "nisi",   "aliquip", "ex",     "ea",      "commodo",      "consequat"};
#define NWORDS (sizeof words / sizeof words[0])

static uint64_t rng_state;

uint64_t text_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

double text_rand(void)
{
    if (rng_state == 0)
        rng_state = simcfg.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

int text_count_tokens(const char *s, size_t n)
{
    (void)s;
    return (int)(n / 4) + 8; /* template overhead plus ~4 chars a token */
}

/* ---- building the answer: text plus token boundaries ---- */

struct tbuf {
    char *s;
    size_t len, cap;
    int *off;
    int n, offcap;
};

static void tb_put(struct tbuf *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        while (t->len + n + 1 > t->cap)
            t->cap = t->cap ? t->cap * 2 : 256;
        t->s = realloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

/* End the current token. */
static void tb_tok(struct tbuf *t)
{
    if (t->n + 2 > t->offcap) {
        t->offcap = t->offcap ? t->offcap * 2 : 32;
        t->off = realloc(t->off, sizeof(int) * (size_t)t->offcap);
    }
    if (t->n == 0)
        t->off[0] = 0;
    t->off[++t->n] = (int)t->len;
}

/* Split JSON text S into tokens of up to 4 bytes, never inside a UTF-8
 * sequence. */
static void tb_json(struct tbuf *t, const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = i + 4 < n ? 4 : n - i;
        while (i + k < n && ((unsigned char)s[i + k] & 0xC0) == 0x80)
            k++;
        tb_put(t, s + i, k);
        tb_tok(t);
        i += k;
    }
}

static void free_text(struct tbuf *t, const char *item, int ntokens)
{
    uint64_t h = text_hash(item, strlen(item));
    for (int i = 0; i < ntokens; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        const char *w = words[(h >> 33) % NWORDS];
        if (i > 0)
            tb_put(t, " ", 1);
        if (i == 0) {
            char cap[32];
            snprintf(cap, sizeof cap, "%s", w);
            cap[0] = (char)toupper((unsigned char)cap[0]);
            tb_put(t, cap, strlen(cap));
        } else {
            tb_put(t, w, strlen(w));
        }
        if (i == ntokens - 1)
            tb_put(t, ".", 1);
        tb_tok(t);
    }
}

/* ---- enum choice ---- */

static int is_word(unsigned char c)
{
    return isalnum(c) || c >= 0x80;
}

static int sep(char c)
{
    return c == ' ' || c == '-' || c == '_';
}

/* Does VALUE occur in TEXT at I (case-insensitive, '_'/'-'/' ' equal),
 * as a whole word? Returns the match length or 0. */
static size_t match_at(const char *text, size_t tlen, size_t i, const char *value)
{
    size_t vlen = strlen(value), j;
    if (vlen == 0 || i + vlen > tlen)
        return 0;
    if (i > 0 && is_word((unsigned char)text[i - 1]))
        return 0;
    for (j = 0; j < vlen; j++) {
        char a = text[i + j], b = value[j];
        if (sep(a) && sep(b))
            continue;
        if (tolower((unsigned char)a) != tolower((unsigned char)b))
            return 0;
    }
    if (i + vlen < tlen && is_word((unsigned char)text[i + vlen]))
        return 0;
    return vlen;
}

/* Index of the enum value chosen for TEXT: the earliest whole-word
 * occurrence (longest at a tie), else a stable hash of TEXT. */
static size_t choose_enum(json_t *values, const char *text)
{
    size_t n = json_array_size(values), tlen = strlen(text), best = n, bestlen = 0;
    for (size_t i = 0; i < tlen && best == n; i++) {
        if (i > 0 && is_word((unsigned char)text[i - 1]))
            continue;
        for (size_t k = 0; k < n; k++) {
            const char *v = json_string_value(json_array_get(values, k));
            size_t l = v ? match_at(text, tlen, i, v) : 0;
            if (l > bestlen) {
                best = k;
                bestlen = l;
            }
        }
    }
    if (best < n)
        return best;
    return (size_t)(text_hash(text, tlen) % n);
}

/* The value to answer, as JSON text (a string, or a number etc. as is). */
static char *enum_value_json(json_t *values, const char *item)
{
    if (simcfg.offlabel_rate > 0 && text_rand() < simcfg.offlabel_rate) {
        char buf[64];
        snprintf(buf, sizeof buf, "\"other_xyz\"");
        for (int i = 0; i < 5; i++) {
            int clash = 0;
            for (size_t k = 0; k < json_array_size(values); k++) {
                const char *v = json_string_value(json_array_get(values, k));
                if (v && strncmp(v, buf + 1, strlen(buf) - 2) == 0 && strlen(v) == strlen(buf) - 2)
                    clash = 1;
            }
            if (!clash)
                break;
            snprintf(buf, sizeof buf, "\"other_xyz%d\"", i);
        }
        return strdup(buf);
    }
    json_t *v = json_array_get(values, choose_enum(values, item));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Find the enum of SCHEMA: properties.label.enum, else the first property
 * with an enum. Sets *PROP to the property name. */
static json_t *schema_enum(json_t *schema, const char **prop)
{
    json_t *props = json_object_get(schema, "properties");
    json_t *e = json_object_get(json_object_get(props, "label"), "enum");
    if (json_is_array(e) && json_array_size(e) > 0) {
        *prop = "label";
        return e;
    }
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        e = json_object_get(v, "enum");
        if (json_is_array(e) && json_array_size(e) > 0) {
            *prop = k;
            return e;
        }
    }
    return NULL;
}

/* A minimal document satisfying SCHEMA (types only). */
static json_t *schema_fill(json_t *schema, int depth)
{
    const char *type = json_string_value(json_object_get(schema, "type"));
    json_t *e = json_object_get(schema, "enum");
    if (json_is_array(e) && json_array_size(e) > 0)
        return json_incref(json_array_get(e, 0));
    if (!type || depth > 8)
        return json_string("lorem");
    if (!strcmp(type, "object")) {
        json_t *o = json_object(), *props = json_object_get(schema, "properties"), *v;
        const char *k;
        json_object_foreach(props, k, v)
        {
            json_object_set_new(o, k, schema_fill(v, depth + 1));
        }
        return o;
    }
    if (!strcmp(type, "array"))
        return json_array();
    if (!strcmp(type, "integer") || !strcmp(type, "number"))
        return json_integer(1);
    if (!strcmp(type, "boolean"))
        return json_true();
    return json_string("lorem");
}

static char *structured(json_t *format, const char *item)
{
    if (json_is_string(format))
        return strdup("{\"answer\":\"lorem ipsum\"}");
    const char *prop = NULL;
    json_t *e = json_object_get(format, "enum");
    if (json_is_array(e) && json_array_size(e) > 0)
        return enum_value_json(e, item);
    e = schema_enum(format, &prop);
    if (e) {
        char *v = enum_value_json(e, item);
        json_t *tmp = json_string(prop);
        char *pk = json_dumps(tmp, JSON_ENCODE_ANY);
        size_t n = strlen(v) + strlen(pk) + 4;
        char *out = malloc(n);
        snprintf(out, n, "{%s:%s}", pk, v);
        free(v);
        free(pk);
        json_decref(tmp);
        return out;
    }
    json_t *doc = schema_fill(format, 0);
    char *out = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    return out;
}

void text_answer(struct job *job, json_t *format, const char *item, int ntokens)
{
    struct tbuf t = {0};
    if (format && (json_is_object(format) ||
                   (json_is_string(format) && !strcmp(json_string_value(format), "json")))) {
        char *s = structured(format, item);
        tb_json(&t, s);
        free(s);
    } else {
        free_text(&t, item, ntokens < 1 ? 1 : ntokens);
    }
    if (t.n == 0) {
        tb_put(&t, "", 0);
        tb_tok(&t);
    }
    job->answer = t.s;
    job->tok_off = t.off;
    job->ntok = t.n;
}

void text_embed(float *out, const char *s, size_t n)
{
    uint64_t h = text_hash(s, n);
    double sum = 0;
    for (int i = 0; i < SIM_EMBED_DIM; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = (float)((double)(h >> 40) / 16777216.0 * 2.0 - 1.0);
        sum += (double)out[i] * out[i];
    }
    sum = sqrt(sum);
    for (int i = 0; i < SIM_EMBED_DIM; i++)
        out[i] = (float)(out[i] / (sum > 0 ? sum : 1));
}
