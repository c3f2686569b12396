/* fz.h - what the fuzz targets share: checks that abort with both sides
 * printed (libFuzzer then saves the input as a crash artifact), a small
 * deterministic generator, and a hex dump for reports.
 *
 * Every decision a target makes beyond the bytes themselves (where to split
 * a write, when to pause) comes from fz_rng seeded by the input, so that a
 * saved artifact replays the same run. */
#ifndef FZ_H
#define FZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A property of the code under test does not hold: say which, then abort. */
#define FZ_CHECK(c)                                                                    \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "%s:%d: FZ_CHECK(%s) failed\n", __FILE__, __LINE__, #c);   \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#define FZ_CHECK_INT(a, b)                                                             \
    do {                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                            \
        if (a_ != b_) {                                                                \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,       \
                    __LINE__, #a, a_, #b, b_);                                         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* The value of the hex digit C, or -1. */
static inline int fz_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* xorshift32: never 0 once seeded with fz_rng_seed(). */
struct fz_rng {
    uint32_t s;
};

static inline void fz_rng_seed(struct fz_rng *r, uint32_t seed)
{
    r->s = seed ? seed : 0x9e3779b9u;
}

static inline uint32_t fz_rng_next(struct fz_rng *r)
{
    uint32_t x = r->s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return r->s = x;
}

/* 1 with probability 1/N. */
static inline int fz_rng_one_in(struct fz_rng *r, uint32_t n)
{
    return fz_rng_next(r) % n == 0;
}

/* FNV-1a of DATA: a seed for inputs that have no control bytes of their own. */
static inline uint32_t fz_hash(const uint8_t *data, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ data[i]) * 16777619u;
    return h;
}

/* NAME: the N bytes of P, escaped, on stderr (for the report of a finding). */
static inline void fz_dump(const char *name, const void *p, size_t n)
{
    const unsigned char *s = p;
    fprintf(stderr, "%s (%zu bytes): \"", name, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
            fputc(s[i], stderr);
        else
            fprintf(stderr, "\\x%02x", s[i]);
    }
    fputs("\"\n", stderr);
}

/* A walk over JSON text a parser has already accepted (no checks): past
 * the string whose quote is at P, past blanks, past the value at P (a
 * scalar ends at the ',', '}', ']' or blank after it). */
static inline const char *fz_json_skip_string(const char *p)
{
    for (p++; *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p + 1;
}

static inline const char *fz_json_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static inline const char *fz_json_skip_value(const char *p, const char *end)
{
    int depth = 0;
    if (*p == '"')
        return fz_json_skip_string(p);
    if (*p != '{' && *p != '[') {
        while (p < end && !strchr(",}] \t\n\r", *p))
            p++;
        return p;
    }
    do {
        if (*p == '"') {
            p = fz_json_skip_string(p);
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        p++;
    } while (depth > 0);
    return p;
}

#endif
