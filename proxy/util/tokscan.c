/* tokscan.c - see tokscan.h. Both keys end in '":', so the scan jumps from
 * one ':' to the next with memchr and looks back at the bytes before it:
 * a reply holds about one ':' per 50 bytes. The last bytes of a chunk are
 * kept (tail), so a key cut by a chunk boundary is still seen. */
#include "tokscan.h"

#include <string.h>

static const char key_eval[] = "\"eval_count\"";
static const char key_comp[] = "\"completion_tokens\"";
#define LEN_EVAL (sizeof key_eval - 1)
#define LEN_COMP (sizeof key_comp - 1)

_Static_assert(LEN_COMP <= sizeof ((struct tokscan *)0)->tail, "tail holds the longer key");

void tokscan_init(struct tokscan *t)
{
    memset(t, 0, sizeof *t);
    t->eval = t->comp = -1;
}

static void end_number(struct tokscan *t)
{
    if (t->digits) {
        if (t->in_num == 1)
            t->eval = t->cur;
        else
            t->comp = t->cur;
    }
    t->in_num = 0;
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

void tokscan_feed(struct tokscan *t, const char *p, size_t n)
{
    size_t i = 0;
    char c;
    while (i < n) {
        if (t->in_num) {
            c = p[i];
            if (c >= '0' && c <= '9') {
                if (t->digits < 18)
                    t->cur = t->cur * 10 + (c - '0');
                t->digits++;
                i++;
                continue;
            }
            if ((c == ' ' || c == '\t') && !t->digits) {
                i++;
                continue;
            }
            end_number(t);
        }
        const char *q = memchr(p + i, ':', n - i);
        if (!q)
            break;
        size_t pos = (size_t)(q - p);
        i = pos + 1;
        if (pos + t->ntail < LEN_EVAL || before(t, p, pos, 1) != '"')
            continue;
        /* The last letter of each key tells which one to compare. */
        c = before(t, p, pos, 2);
        t->in_num = c == 't' && ends_with(t, p, pos, key_eval, LEN_EVAL)   ? 1
                    : c == 's' && ends_with(t, p, pos, key_comp, LEN_COMP) ? 2
                                                                           : 0;
        t->cur = 0;
        t->digits = 0;
    }
    /* Keep the last bytes seen, for a key that the next chunk ends. */
    if (n >= sizeof t->tail) {
        memcpy(t->tail, p + n - sizeof t->tail, sizeof t->tail);
        t->ntail = sizeof t->tail;
    } else if (n) {
        size_t keep = t->ntail + n > sizeof t->tail ? sizeof t->tail - n : t->ntail;
        memmove(t->tail, t->tail + t->ntail - keep, keep);
        memcpy(t->tail + keep, p, n);
        t->ntail = (unsigned char)(keep + n);
    }
}

long long tokscan_tokens(struct tokscan *t)
{
    if (t->in_num)
        end_number(t);
    return t->eval >= 0 ? t->eval : t->comp;
}
