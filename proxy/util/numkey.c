/* numkey.c - see numkey.h. The scan jumps from one ':' to the next with
 * memchr and looks back at the bytes before it, the tail of the last
 * chunk included. */
#include "numkey.h"

#include <string.h>

#include "tailbuf.h"

void numkey_init(struct numkey *t, const char *key)
{
    memset(t, 0, sizeof *t);
    t->key = key;
    t->klen = (unsigned char)strlen(key);
    t->last = -1;
}

/* The byte BACK places before P[POS], from the tail before P. */
static char before(const struct numkey *t, const char *p, size_t pos, size_t back)
{
    return pos >= back ? p[pos - back] : t->tail[t->ntail - (back - pos)];
}

/* 1 when the key ends right before P[POS] (blanks between it and the ':'
 * are not looked through: Ollama writes none). */
static int key_before(const struct numkey *t, const char *p, size_t pos)
{
    if (pos + t->ntail < t->klen)
        return 0;
    for (size_t i = 1; i <= t->klen; i++)
        if (before(t, p, pos, i) != t->key[t->klen - i])
            return 0;
    /* Not the end of a longer name ("xload_duration") nor an escaped one. */
    return pos + t->ntail == t->klen || before(t, p, pos, t->klen + 1) != '\\';
}

static void end_number(struct numkey *t)
{
    if (t->digits)
        t->last = t->cur;
    t->in_num = 0;
}

void numkey_feed(struct numkey *t, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *q;
        if (t->in_num) {
            char c = p[i];
            if (c >= '0' && c <= '9') {
                /* Past 18 digits the rest is dropped and no longer counted (the
                 * count, a byte, would wrap to 0 at 256 and read on). */
                if (t->digits < 18) {
                    t->cur = t->cur * 10 + (c - '0');
                    t->digits++;
                }
                i++;
                continue;
            }
            if ((c == ' ' || c == '\t') && !t->digits) {
                i++;
                continue;
            }
            end_number(t);
        }
        if (!(q = memchr(p + i, ':', n - i)))
            break;
        i = (size_t)(q - p) + 1;
        if (key_before(t, p, (size_t)(q - p))) {
            t->in_num = 1;
            t->cur = 0;
            t->digits = 0;
        }
    }
    tailbuf_keep(t->tail, &t->ntail, sizeof t->tail, p, n);
}

long long numkey_value(struct numkey *t)
{
    if (t->in_num)
        end_number(t);
    return t->last;
}
