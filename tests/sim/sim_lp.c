/* sim_lp.c - log-probabilities in Ollama's wire format, one JSON fragment
 * per generated token:
 *
 *   {"token":"neg","logprob":-0.0123,"bytes":[110,101,103],
 *    "top_logprobs":[{"token":"neg","logprob":-0.0123,"bytes":[...]},...]}
 *
 * (api.Logprob: api.TokenLogprob's token, logprob, bytes (omitted when the
 * token is empty), then top_logprobs, omitted when not asked for.) Ollama asks
 * llama-server for max(top_logprobs, 1) candidates and passes the top list
 * on only when top_logprobs > 0; llama-server's list is the N most likely
 * tokens, the sampled one among them, most likely first. The sim does the
 * same: the alternatives a caller gives (the chosen token among them) are
 * sorted by probability and cut at N; when there are fewer than N, filler
 * tokens from a fixed list follow with probabilities far below any
 * alternative (e^-12 and less, about 1e-4 in all), as a real vocabulary's
 * tail would.
 *
 * Numbers are printed as Go's encoding/json prints a float64: the shortest
 * text that reads back as the same double, in plain notation unless the
 * magnitude is below 1e-6 or at least 1e21 ("1e-7", not "1e-07"). */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const filler[] = {" ",   "\n",  "\"",  "{",   "}",    ",", ".", " the",
                                     "The", "I",   ":",   " a",  "\n\n", "-", "'", " and",
                                     "s",   " of", " to", " in", " is",  "A", "1", "0"};
#define NFILLER (sizeof filler / sizeof filler[0])

static void put(struct lp_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 1024;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(struct lp_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

void lp_go_float(char *out, size_t len, double v)
{
    char e[40], digits[24];
    int prec, exp10, nd = 0;
    if (v == 0) {
        snprintf(out, len, "0");
        return;
    }
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    /* e is [-]d[.ddd]e[+-]XX: collect the digits and the exponent */
    const char *p = e + (e[0] == '-');
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    digits[nd] = '\0';
    exp10 = atoi(p + 1);
    const char *sign = v < 0 ? "-" : "";
    double a = fabs(v);
    if (a < 1e-6 || a >= 1e21) {
        snprintf(out, len, "%s%c%s%se%c%d", sign, digits[0], nd > 1 ? "." : "", digits + 1,
                 exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        return;
    }
    char buf[64];
    size_t o = 0;
    if (exp10 < 0) {
        o += (size_t)snprintf(buf, sizeof buf, "0.");
        for (int i = 0; i < -exp10 - 1; i++)
            buf[o++] = '0';
        memcpy(buf + o, digits, (size_t)nd);
        o += (size_t)nd;
    } else {
        for (int i = 0; i <= exp10 || i < nd; i++) {
            if (i == exp10 + 1)
                buf[o++] = '.';
            buf[o++] = i < nd ? digits[i] : '0';
        }
    }
    buf[o] = '\0';
    snprintf(out, len, "%s%s", sign, buf);
}

/* A JSON string of S (N bytes), escaped as Go escapes it. */
static void put_jstr(struct lp_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c == '\n') {
            put(b, "\\n", 2);
        } else if (c == '\t') {
            put(b, "\\t", 2);
        } else if (c == '\r') {
            put(b, "\\r", 2);
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            snprintf(esc, sizeof esc, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
            put(b, esc, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

/* {"token":..,"logprob":..,"bytes":[..] - without the closing brace. */
static void token_head(struct lp_buf *b, const char *s, size_t n, double logprob)
{
    char num[48];
    puts_(b, "{\"token\":");
    put_jstr(b, s, n);
    lp_go_float(num, sizeof num, logprob);
    puts_(b, ",\"logprob\":");
    puts_(b, num);
    if (n == 0)
        return; /* Go: stringToByteInts("") is nil, omitted */
    puts_(b, ",\"bytes\":[");
    for (size_t i = 0; i < n; i++) {
        snprintf(num, sizeof num, i ? ",%u" : "%u", (unsigned)(unsigned char)s[i]);
        puts_(b, num);
    }
    puts_(b, "]");
}

static int by_prob(const void *a, const void *b)
{
    const struct lp_alt *x = a, *y = b;
    return x->p < y->p ? 1 : x->p > y->p ? -1 : 0;
}

static int listed(const struct lp_alt *alts, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (alts[i].n == len && !memcmp(alts[i].s, s, len))
            return 1;
    return 0;
}

void lp_token(struct lp_buf *b, const char *s, size_t n, double p, struct lp_alt *alts, int nalts,
              uint64_t h)
{
    if (b->n + 2 > b->offcap) {
        b->offcap = b->offcap ? b->offcap * 2 : 32;
        b->off = realloc(b->off, sizeof(int) * (size_t)b->offcap);
    }
    if (b->n == 0)
        b->off[0] = (int)b->len;
    token_head(b, s, n, log(p));
    if (b->top > 0) {
        qsort(alts, (size_t)nalts, sizeof *alts, by_prob);
        puts_(b, ",\"top_logprobs\":[");
        int k = 0;
        for (; k < nalts && k < b->top; k++) {
            if (k)
                puts_(b, ",");
            token_head(b, alts[k].s, alts[k].n, log(alts[k].p));
            puts_(b, "}");
        }
        for (size_t f = 0; k < b->top && f < NFILLER; f++) {
            if (listed(alts, nalts, filler[f], strlen(filler[f])))
                continue;
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
            double jitter = (double)(h >> 11) / 9007199254740992.0;
            if (k)
                puts_(b, ",");
            token_head(b, filler[f], strlen(filler[f]), -12.0 - 0.5 * k - 0.4 * jitter);
            puts_(b, "}");
            k++;
        }
        puts_(b, "]");
    }
    puts_(b, "}");
    b->off[++b->n] = (int)b->len;
}

void lp_free(struct lp_buf *b)
{
    free(b->s);
    free(b->off);
    memset(b, 0, sizeof *b);
}
