/* tokscan.c - see tokscan.h. Every key ends in '":', so the scan jumps
 * from one ':' to the next with memchr and looks back at the bytes before
 * it: a reply holds about one ':' per 50 bytes. The last bytes of a chunk
 * are kept (tail), so a key cut by a chunk boundary is still seen. What
 * follows a key is read by a small state machine (in_val) that survives
 * chunk boundaries too: a number, or for an estimate key the first bytes
 * of a string. */
#include "tokscan.h"

#include <string.h>

#include "tailbuf.h"

struct tok_key {
    const char *s; /* with its quotes */
    unsigned char len;
    unsigned char role; /* enum tokscan_role */
};

struct tok_format {
    const char *name;
    struct tok_key keys[5];
    unsigned last; /* bit c - 'a' for each key's last letter c */
};

#define KEY(s, role) {s, sizeof s - 1, role}
#define L(c) (1u << ((c) - 'a'))

/* One row per wire format: the keys its counts are read from. */
static const struct tok_format formats[WIRE_NFORMATS] = {
    [WIRE_NDJSON] = {"ndjson",
                     {KEY("\"eval_count\"", TOKSCAN_GEN),
                      KEY("\"prompt_eval_count\"", TOKSCAN_PROMPT)},
                     L('t')},
    [WIRE_OPENAI] = {"openai",
                     {KEY("\"completion_tokens\"", TOKSCAN_GEN),
                      KEY("\"prompt_tokens\"", TOKSCAN_PROMPT), KEY("\"content\"", TOKSCAN_EST),
                      KEY("\"text\"", TOKSCAN_EST), KEY("\"reasoning\"", TOKSCAN_EST)},
                     L('s') | L('t') | L('g')},
    [WIRE_RESPONSES] = {"responses",
                        {KEY("\"output_tokens\"", TOKSCAN_GEN),
                         KEY("\"input_tokens\"", TOKSCAN_PROMPT),
                         KEY("\"sequence_number\"", TOKSCAN_SEQ)},
                        L('s') | L('r')},
    [WIRE_ANTHROPIC] = {"anthropic",
                        {KEY("\"output_tokens\"", TOKSCAN_GEN),
                         KEY("\"input_tokens\"", TOKSCAN_PROMPT)},
                        L('s')},
};

_Static_assert(sizeof "\"prompt_eval_count\"" - 1 <= sizeof ((struct tokscan *)0)->tail,
               "the tail holds the longest key");

/* What the bytes after a key are read as. */
enum { V_NONE, V_NUMBER, V_STR_OPEN, V_STR_FIRST };

void tokscan_init(struct tokscan *t, enum wire_format fmt)
{
    memset(t, 0, sizeof *t);
    t->fmt = (unsigned char)(fmt < WIRE_NFORMATS ? fmt : WIRE_NDJSON);
    for (int i = 0; i < TOKSCAN_NVALUES; i++)
        t->val[i] = -1;
}

const char *tokscan_format_name(enum wire_format fmt)
{
    return fmt < WIRE_NFORMATS ? formats[fmt].name : "?";
}

static void end_number(struct tokscan *t)
{
    if (t->digits && t->role < TOKSCAN_NVALUES)
        t->val[t->role] = t->cur;
    t->in_val = V_NONE;
}

/* Read the value after a key from P[I..N); returns where the scan for the
 * next key goes on. The byte that ends a value is left to that scan. */
static size_t read_value(struct tokscan *t, const char *p, size_t i, size_t n)
{
    for (; i < n && t->in_val; i++) {
        char c = p[i];
        if ((c == ' ' || c == '\t' || c == '\n' || c == '\r') &&
            (t->in_val == V_STR_OPEN || (t->in_val == V_NUMBER && !t->digits)))
            continue;
        if (t->in_val == V_NUMBER) {
            if (c < '0' || c > '9') {
                end_number(t);
                return i;
            }
            /* Past 18 digits the rest is dropped and no longer counted (the
             * count, a byte, would wrap to 0 at 256 and read on). */
            if (t->digits < 18) {
                t->cur = t->cur * 10 + (c - '0');
                t->digits++;
            }
        } else if (t->in_val == V_STR_OPEN) {
            if (c != '"') {
                t->in_val = V_NONE;
                return i;
            }
            t->in_val = V_STR_FIRST;
        } else { /* the string's first byte: '"' ends an empty one */
            if (c != '"')
                t->est++;
            t->in_val = V_NONE;
            return i;
        }
    }
    return i;
}

/* The byte BACK places before P[POS], from the tail before P. */
static char before(const struct tokscan *t, const char *p, size_t pos, size_t back)
{
    return pos >= back ? p[pos - back] : t->tail[t->ntail - (back - pos)];
}

/* 1 when the LEN bytes before P[POS] (the tail's, then P's) are KEY. */
static int ends_with(const struct tokscan *t, const char *p, size_t pos, const char *key,
                     size_t len)
{
    size_t from_p = pos < len ? pos : len, from_tail = len - from_p;
    if (from_tail > t->ntail)
        return 0;
    if (!from_tail)
        return memcmp(p + pos - len, key, len) == 0;
    return memcmp(p + pos - from_p, key + from_tail, from_p) == 0 &&
           memcmp(t->tail + t->ntail - from_tail, key, from_tail) == 0;
}

/* A ':' at P[POS]: start reading a value if a key of ours ends before it. */
static void at_colon(struct tokscan *t, const char *p, size_t pos)
{
    const struct tok_format *f = &formats[t->fmt];
    char c;
    if (pos + t->ntail < 4 || before(t, p, pos, 1) != '"')
        return;
    c = before(t, p, pos, 2); /* the key's last letter rules most keys out */
    if (c < 'a' || c > 'z' || !(f->last & 1u << (c - 'a')))
        return;
    for (size_t k = 0; k < sizeof f->keys / sizeof f->keys[0] && f->keys[k].s; k++) {
        const struct tok_key *key = &f->keys[k];
        if (key->s[key->len - 2] != c || !ends_with(t, p, pos, key->s, key->len))
            continue;
        t->role = key->role;
        t->in_val = key->role == TOKSCAN_EST ? V_STR_OPEN : V_NUMBER;
        t->cur = 0;
        t->digits = 0;
        return;
    }
}

void tokscan_feed(struct tokscan *t, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *q;
        if (t->in_val) {
            i = read_value(t, p, i, n);
            continue;
        }
        if (!(q = memchr(p + i, ':', n - i)))
            break;
        i = (size_t)(q - p) + 1;
        at_colon(t, p, i - 1);
    }
    tailbuf_keep(t->tail, &t->ntail, sizeof t->tail, p, n); /* for a key the next chunk ends */
}

void tokscan_counts(struct tokscan *t, struct tokscan_counts *out)
{
    if (t->in_val == V_NUMBER)
        end_number(t);
    out->generated = t->val[TOKSCAN_GEN];
    out->prompt = t->val[TOKSCAN_PROMPT];
    out->estimated = 0;
    if (out->generated < 0 && t->est > 0) {
        out->generated = t->est;
        out->estimated = 1;
    }
}

long long tokscan_seq(const struct tokscan *t)
{
    return t->val[TOKSCAN_SEQ];
}
