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

/* ---- building the answer: text, token boundaries, confidence ---- */

struct tbuf {
    char *s;
    size_t len, cap;
    int *off;
    int n, offcap;
    struct lp_buf *lp; /* NULL: no log-probabilities asked for */
    uint64_t h;        /* jitter of the log-probabilities, from the item */
};

static double unit(uint64_t *h)
{
    *h = *h * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*h >> 11) / 9007199254740992.0;
}

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

/* End the current token, chosen with probability P among ALTS (which hold
 * it); with no ALTS it is a sure token: JSON syntax, p = 1 - [1e-5, 1e-3]. */
static void tb_tok_p(struct tbuf *t, double p, struct lp_alt *alts, int nalts)
{
    if (t->n + 2 > t->offcap) {
        t->offcap = t->offcap ? t->offcap * 2 : 32;
        t->off = realloc(t->off, sizeof(int) * (size_t)t->offcap);
    }
    if (t->n == 0)
        t->off[0] = 0;
    t->off[++t->n] = (int)t->len;
    if (!t->lp)
        return;
    const char *tok = t->s + t->off[t->n - 1];
    size_t n = (size_t)(t->off[t->n] - t->off[t->n - 1]);
    struct lp_alt self = {tok, n, 0};
    if (nalts == 0) {
        self.p = p = 1.0 - 1e-5 * exp(unit(&t->h) * log(100.0));
        alts = &self;
        nalts = 1;
    }
    lp_token(t->lp, tok, n, p, alts, nalts, t->h);
}

static void tb_tok(struct tbuf *t)
{
    tb_tok_p(t, 1, NULL, 0);
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

/* Free text: one word a token. Its confidence is drawn from the item, in
 * [0.35, 0.95], and the next words of the list are the alternatives. */
static void free_text(struct tbuf *t, const char *item, int ntokens)
{
    uint64_t h = text_hash(item, strlen(item));
    char alt[3][40];
    struct lp_alt alts[4];
    for (int i = 0; i < ntokens; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t w = (h >> 33) % NWORDS;
        size_t start = t->len;
        char tok[40];
        snprintf(tok, sizeof tok, "%s%s%s", i > 0 ? " " : "", words[w],
                 i == ntokens - 1 ? "." : "");
        if (i == 0)
            tok[0] = (char)toupper((unsigned char)tok[0]);
        tb_put(t, tok, strlen(tok));
        if (!t->lp) {
            tb_tok(t);
            continue;
        }
        double p = 0.35 + 0.6 * unit(&t->h), rest = 1 - p;
        alts[0] = (struct lp_alt){t->s + start, t->len - start, p};
        for (int k = 0; k < 3; k++) {
            snprintf(alt[k], sizeof alt[k], "%s%s", i > 0 ? " " : "", words[(w + 1 + k) % NWORDS]);
            rest /= 2;
            alts[k + 1] = (struct lp_alt){alt[k], strlen(alt[k]), rest};
        }
        tb_tok_p(t, p, alts, 4);
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
 * occurrence (longest at a tie), else a stable hash of TEXT. *FOUND tells
 * which. */
static size_t choose_enum(json_t *values, const char *text, int *found)
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
    *found = best < n;
    if (best < n)
        return best;
    return (size_t)(text_hash(text, tlen) % n);
}

/* --off-label-rate: a value outside the enum, as JSON text (owned). */
static char *off_label(json_t *values)
{
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

/* ---- enum answers as tokens, with the model's confidence ----
 *
 * Tokens of an enum answer {"label":"account_access"}: `{"`, `label`, `":"`,
 * then the value split before each ' ', '_' and '-' (`account`,
 * `_access`), then `"}`. A bare enum format answers `"`, pieces, `"`; a
 * value that is not a string is one token.
 *
 * The model's distribution over the values: the chosen one gets p in
 * [0.95, 0.995] when a value occurs in the item as a word, else p in
 * [0.40, 0.60] (at least 1.4 / (n - 1 + 1.4), so that no other value is as
 * likely), each drawn from the item's hash; the others share the rest with
 * +-15% jitter; 0.1% is left for the rest of the vocabulary. At each token
 * of the value the alternatives are the next tokens of the values that
 * share the tokens so far (a prefix tree), each with its share of them, so
 * the product of a value's token probabilities is its probability. */

#define CAND_PIECES 16
#define VOCAB_REST 0.001

struct cand {
    char *json;       /* the value as JSON text, owned */
    const char *body; /* what is split into pieces: inside the quotes of a string */
    size_t blen;
    const char *close; /* the token after the value: "\"}", "}", "\"" or "" */
    int npieces;
    size_t cut[CAND_PIECES + 1]; /* piece k is body[cut[k], cut[k+1]) */
    double p;
    int alive; /* shares the chosen value's tokens so far */
};

static void cand_init(struct cand *c, char *json, int in_object)
{
    int str = json[0] == '"';
    c->json = json;
    c->body = json + str;
    c->blen = strlen(json) - (str ? 2 : 0);
    c->close = str ? (in_object ? "\"}" : "\"") : (in_object ? "}" : "");
    c->npieces = 0;
    c->cut[0] = 0;
    for (size_t i = 1; i <= c->blen; i++) {
        int end = i == c->blen || (str && sep(c->body[i]) && c->npieces < CAND_PIECES - 1);
        if (end)
            c->cut[++c->npieces] = i;
    }
    c->alive = 1;
}

static int cand_ntok(const struct cand *c)
{
    return c->npieces + (*c->close ? 1 : 0);
}

static const char *cand_tok(const struct cand *c, int k, size_t *n)
{
    if (k < c->npieces) {
        *n = c->cut[k + 1] - c->cut[k];
        return c->body + c->cut[k];
    }
    *n = strlen(c->close);
    return c->close;
}

static void enum_probs(struct cand *cs, int n, int chosen, int found, const char *item)
{
    uint64_t h = text_hash(item, strlen(item)) ^ 0x9E3779B97F4A7C15ULL;
    double pc = 1, sum = 0;
    if (n > 1 && found) {
        pc = 0.95 + 0.045 * unit(&h);
    } else if (n > 1) {
        double floor_ = 1.4 / (n - 1 + 1.4);
        pc = 0.40 + 0.20 * unit(&h);
        if (pc < floor_)
            pc = floor_;
    }
    for (int i = 0; i < n; i++)
        if (i != chosen)
            sum += cs[i].p = 1 + 0.3 * (unit(&h) - 0.5);
    for (int i = 0; i < n; i++)
        cs[i].p = (1 - VOCAB_REST) * (i == chosen ? pc : (1 - pc) * cs[i].p / sum);
}

static int tok_eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && !memcmp(a, b, an);
}

/* Emit the chosen value's tokens, each with the alternatives of the values
 * still sharing its prefix. */
static void enum_tokens(struct tbuf *t, struct cand *cs, int n, int chosen)
{
    struct lp_alt *alts = calloc((size_t)n, sizeof *alts);
    struct cand *c = &cs[chosen];
    for (int k = 0; k < cand_ntok(c); k++) {
        size_t tn, on;
        const char *tok = cand_tok(c, k, &tn);
        double mass = 0;
        int na = 0, me = 0;
        for (int i = 0; i < n; i++)
            if (cs[i].alive)
                mass += cs[i].p;
        for (int i = 0; i < n; i++) {
            if (k >= cand_ntok(&cs[i]))
                cs[i].alive = 0; /* cannot happen: it would have ended with the chosen one */
            if (!cs[i].alive)
                continue;
            const char *o = cand_tok(&cs[i], k, &on);
            int a = 0;
            while (a < na && !tok_eq(alts[a].s, alts[a].n, o, on))
                a++;
            if (a == na)
                alts[na++] = (struct lp_alt){o, on, 0};
            alts[a].p += cs[i].p / mass * (1 - VOCAB_REST);
            if (tok_eq(o, on, tok, tn))
                me = a;
            else
                cs[i].alive = 0;
        }
        double p = alts[me].p;
        tb_put(t, tok, tn);
        tb_tok_p(t, p, alts, na);
    }
    free(alts);
}

/* The answer of an enum format: VALUES, the property PROP (NULL: a bare
 * value). */
static void enum_answer(struct tbuf *t, json_t *values, const char *prop, const char *item)
{
    int n = (int)json_array_size(values), found = 0, chosen;
    struct cand *cs = calloc((size_t)n + 1, sizeof *cs);
    char *offv = NULL;
    for (int i = 0; i < n; i++)
        cand_init(&cs[i], json_dumps(json_array_get(values, i), JSON_COMPACT | JSON_ENCODE_ANY),
                  !!prop);
    if (simcfg.offlabel_rate > 0 && text_rand() < simcfg.offlabel_rate) {
        offv = off_label(values);
        cand_init(&cs[n], strdup(offv), !!prop);
        chosen = n++;
    } else {
        chosen = (int)choose_enum(values, item, &found);
    }
    enum_probs(cs, n, chosen, found, item);
    if (prop) {
        json_t *tmp = json_string(prop);
        char *pk = json_dumps(tmp, JSON_ENCODE_ANY);
        tb_put(t, "{\"", 2);
        tb_tok(t);
        tb_put(t, pk + 1, strlen(pk) - 2);
        tb_tok(t);
        tb_put(t, cs[chosen].json[0] == '"' ? "\":\"" : "\":", cs[chosen].json[0] == '"' ? 3 : 2);
        tb_tok(t);
        free(pk);
        json_decref(tmp);
    } else if (cs[chosen].json[0] == '"') {
        tb_put(t, "\"", 1);
        tb_tok(t);
    }
    enum_tokens(t, cs, n, chosen);
    for (int i = 0; i < n; i++)
        free(cs[i].json);
    free(cs);
    free(offv);
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

static void structured(struct tbuf *t, json_t *format, const char *item)
{
    if (json_is_string(format)) {
        tb_json(t, "{\"answer\":\"lorem ipsum\"}");
        return;
    }
    const char *prop = NULL;
    json_t *e = json_object_get(format, "enum");
    if (json_is_array(e) && json_array_size(e) > 0) {
        enum_answer(t, e, NULL, item);
        return;
    }
    e = schema_enum(format, &prop);
    if (e) {
        enum_answer(t, e, prop, item);
        return;
    }
    json_t *doc = schema_fill(format, 0);
    char *out = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    tb_json(t, out);
    free(out);
    json_decref(doc);
}

void text_answer(struct job *job, json_t *format, const char *item, int ntokens)
{
    struct tbuf t = {0};
    if (job->logprobs) {
        t.lp = &job->lp;
        t.h = text_hash(item, strlen(item)) ^ 0xC2B2AE3D27D4EB4FULL;
    }
    if (format && (json_is_object(format) ||
                   (json_is_string(format) && !strcmp(json_string_value(format), "json"))))
        structured(&t, format, item);
    else
        free_text(&t, item, ntokens < 1 ? 1 : ntokens);
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
