/* logprob.c - see logprob.h for the method. The answer's tokens are laid
 * end to end in one buffer (struct seq); every comparison works on slices
 * of it, so nothing is copied per alternative but the alternative itself. */
#include "logprob.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"

struct tok {
    size_t off, len; /* in seq.text */
    double lp;
    json_t *top; /* borrowed: the top_logprobs array, or NULL */
};

struct seq {
    struct buf text; /* the tokens end to end */
    struct tok *t;
    size_t n;
    size_t s, e;      /* the label's value: text[s..e) */
    const char *term; /* what ends the value: "\"" or "" (a bare answer) */
};

/* A text in up to three slices, compared without joining them. */
struct slices {
    const char *p[3];
    size_t n[3];
};

/* 1 when one of A and B is a prefix of the other. */
static int agree(const struct slices *a, const struct slices *b)
{
    int ia = 0, ib = 0;
    size_t oa = 0, ob = 0;
    for (;;) {
        while (ia < 3 && oa == a->n[ia])
            ia++, oa = 0;
        while (ib < 3 && ob == b->n[ib])
            ib++, ob = 0;
        if (ia == 3 || ib == 3)
            return 1;
        if (a->p[ia][oa] != b->p[ib][ob])
            return 0;
        oa++, ob++;
    }
}

/* The token's bytes: "bytes" when it is a whole array of bytes, else the
 * "token" text. Appended to OUT; -1 when the entry has neither. */
static int token_bytes(json_t *entry, struct buf *out)
{
    json_t *bytes = json_object_get(entry, "bytes"), *v;
    size_t i, start = out->len;
    if (json_is_array(bytes) && json_array_size(bytes) > 0) {
        json_array_foreach(bytes, i, v)
        {
            json_int_t b = json_integer_value(v);
            char c = (char)b;
            if (!json_is_integer(v) || b < 0 || b > 255)
                break;
            buf_append(out, &c, 1);
        }
        if (i == json_array_size(bytes))
            return 0;
        out->len = start; /* not bytes after all: use the text */
    }
    const char *s = json_string_value(json_object_get(entry, "token"));
    if (!s)
        return -1;
    return buf_append(out, s, json_string_length(json_object_get(entry, "token")));
}

static int seq_load(struct seq *q, json_t *logprobs)
{
    size_t i;
    json_t *e;
    q->t = calloc(json_array_size(logprobs) + 1, sizeof *q->t);
    if (!q->t || buf_reserve(&q->text, 64) < 0)
        return -1;
    json_array_foreach(logprobs, i, e)
    {
        struct tok *t = &q->t[q->n];
        json_t *lp = json_object_get(e, "logprob");
        t->off = q->text.len;
        if (!json_is_number(lp) || token_bytes(e, &q->text) < 0)
            return -1;
        t->len = q->text.len - t->off;
        t->lp = json_number_value(lp);
        t->top = json_is_array(json_object_get(e, "top_logprobs"))
                     ? json_object_get(e, "top_logprobs")
                     : NULL;
        q->n++;
    }
    return q->n ? 0 : -1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* After a quote at P (in T, LEN bytes), the offset of the closing quote. */
static size_t closing_quote(const char *t, size_t len, size_t p)
{
    for (; p < len; p++) {
        if (t[p] == '\\')
            p++;
        else if (t[p] == '"')
            return p;
    }
    return len + 1;
}

/* Find the label's value: the last "label" key's, else a bare answer. */
static int seq_find_value(struct seq *q)
{
    const char *t = q->text.data;
    size_t len = q->text.len, found = len + 1;
    static const char key[] = "\"label\"";
    for (size_t i = 0; i + sizeof key - 1 <= len; i++) {
        if (memcmp(t + i, key, sizeof key - 1) != 0)
            continue;
        size_t p = i + sizeof key - 1;
        while (p < len && is_ws(t[p]))
            p++;
        if (p >= len || t[p++] != ':')
            continue;
        while (p < len && is_ws(t[p]))
            p++;
        if (p < len && t[p] == '"')
            found = p + 1;
    }
    q->term = "\"";
    if (found <= len) {
        q->s = found;
        q->e = closing_quote(t, len, found);
        return q->e <= len ? 0 : -1;
    }
    /* A bare answer: the text trimmed, and unquoted if it is quoted. */
    size_t s = 0, e = len;
    while (s < e && is_ws(t[s]))
        s++;
    while (e > s && is_ws(t[e - 1]))
        e--;
    if (e - s >= 2 && t[s] == '"' && t[e - 1] == '"') {
        s++;
        e--;
    } else {
        q->term = "";
    }
    q->s = s;
    q->e = e;
    return e > s ? 0 : -1;
}

/* Where each way out of the chosen path goes. */
enum way { WAY_SAME, WAY_OTHER, WAY_NONE };

struct mass {
    double *lm; /* log masses */
    enum way *way;
    size_t n, cap;
};

static int mass_add(struct mass *m, double lm, enum way w)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        double *lmv = realloc(m->lm, cap * sizeof *lmv);
        if (lmv)
            m->lm = lmv;
        enum way *wv = lmv ? realloc(m->way, cap * sizeof *wv) : NULL;
        if (!wv)
            return -1;
        m->way = wv;
        m->cap = cap;
    }
    m->lm[m->n] = lm;
    m->way[m->n++] = w;
    return 0;
}

/* Which labels the text before token J with ALT in its place agrees with. */
static enum way way_of(const struct seq *q, size_t j, const char *alt, size_t altlen,
                       struct buf *esc, size_t nlabels, int chosen)
{
    const char *t = q->text.data;
    size_t off = q->t[j].off, base = off < q->s ? off : q->s;
    struct slices x = {{t + base, alt, ""}, {off - base, altlen, 0}};
    int same = 0, other = 0;
    for (size_t l = 0; l < nlabels; l++) {
        struct slices y = {{t + base, esc[l].data, q->term},
                           {q->s - base, esc[l].len, strlen(q->term)}};
        if ((int)l == chosen) {
            y.p[1] = t + q->s;
            y.n[1] = q->e - q->s;
        }
        if (agree(&x, &y)) {
            if ((int)l == chosen)
                same = 1;
            else
                other = 1;
        }
    }
    return same && !other ? WAY_SAME : other && !same ? WAY_OTHER : WAY_NONE;
}

/* The alternatives at token J, whose path so far has log mass BEFORE. */
static int ways_at(const struct seq *q, size_t j, double before, struct buf *esc, size_t nlabels,
                   int chosen, struct mass *m, struct buf *alt)
{
    size_t i;
    json_t *e;
    const struct tok *tk = &q->t[j];
    json_array_foreach(tk->top, i, e)
    {
        json_t *lp = json_object_get(e, "logprob");
        buf_clear(alt);
        if (!json_is_number(lp) || token_bytes(e, alt) < 0)
            continue;
        if (alt->len == tk->len && memcmp(alt->data, q->text.data + tk->off, tk->len) == 0)
            continue; /* the chosen token itself */
        enum way w = way_of(q, j, alt->data ? alt->data : "", alt->len, esc, nlabels, chosen);
        if (w != WAY_NONE && mass_add(m, before + json_number_value(lp), w) < 0)
            return -1;
    }
    return 0;
}

/* Sum the masses against the chosen path's log mass PATH. */
static double combine(const struct mass *m, double path)
{
    double top = path, same = 0, other = 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->lm[i] > top)
            top = m->lm[i];
    for (size_t i = 0; i < m->n; i++) {
        double v = exp(m->lm[i] - top);
        if (m->way[i] == WAY_SAME)
            same += v;
        else
            other += v;
    }
    double mine = exp(path - top) + same;
    return mine / (mine + other);
}

static int escape_labels(const struct labels *labels, struct buf *esc)
{
    for (size_t l = 0; l < labels->n; l++) {
        if (buf_json_string(&esc[l], labels->names[l], strlen(labels->names[l])) < 0)
            return -1;
        memmove(esc[l].data, esc[l].data + 1, esc[l].len - 2); /* drop the quotes */
        esc[l].len -= 2;
        esc[l].data[esc[l].len] = '\0';
    }
    return 0;
}

/* The label's tokens: from the one that reaches the value's start to the
 * one holding its last byte (its closing quote, when it has one). */
static void value_tokens(const struct seq *q, size_t *first, size_t *last)
{
    size_t end = q->e + strlen(q->term); /* one past the value's last byte */
    *first = 0;
    while (*first < q->n && q->t[*first].off + q->t[*first].len < q->s)
        (*first)++;
    *last = *first;
    while (*last + 1 < q->n && q->t[*last].off + q->t[*last].len < end)
        (*last)++;
}

static int judge(struct seq *q, const struct labels *labels, int chosen, struct buf *esc,
                 double *conf)
{
    struct mass m = {0};
    struct buf alt = {0};
    size_t first, last, tops = 0;
    int rc = 0;
    if (seq_find_value(q) < 0 || strlen(labels->names[chosen]) != q->e - q->s ||
        strncasecmp(labels->names[chosen], q->text.data + q->s, q->e - q->s) != 0 ||
        escape_labels(labels, esc) < 0)
        return LOGPROB_ENOLABEL;
    value_tokens(q, &first, &last);
    double path = 0;
    for (size_t j = first; j <= last && j < q->n && rc == 0; j++) {
        if (q->t[j].top) {
            tops++;
            rc = ways_at(q, j, path, esc, labels->n, chosen, &m, &alt);
        }
        path += q->t[j].lp;
    }
    if (rc == 0 && !tops)
        rc = LOGPROB_ENOTOP;
    if (rc == 0)
        *conf = combine(&m, path);
    free(m.lm);
    free(m.way);
    buf_free(&alt);
    return rc < 0 && rc != LOGPROB_ENOTOP ? LOGPROB_ENONE : rc;
}

int logprob_confidence(json_t *logprobs, const struct labels *labels, int chosen, double *conf)
{
    struct seq q = {0};
    struct buf *esc;
    int rc;
    if (!json_is_array(logprobs) || json_array_size(logprobs) == 0 || chosen < 0 ||
        (size_t)chosen >= labels->n)
        return LOGPROB_ENONE;
    esc = calloc(labels->n, sizeof *esc);
    if (!esc)
        return LOGPROB_ENONE;
    rc = seq_load(&q, logprobs) < 0 ? LOGPROB_ENONE : judge(&q, labels, chosen, esc, conf);
    for (size_t l = 0; l < labels->n; l++)
        buf_free(&esc[l]);
    free(esc);
    free(q.t);
    buf_free(&q.text);
    return rc;
}

int logprob_top_k(size_t nlabels)
{
    return nlabels + 5 > 20 ? 20 : (int)nlabels + 5;
}
