/* tokscan.c - see tokscan.h. Two keys matched at once, byte by byte; both
 * begin with '"' and have no other border, so on a mismatch a match can
 * only restart at a '"'. Bytes far from any '"' are skipped with memchr. */
#include "tokscan.h"

#include <string.h>

static const char key_eval[] = "\"eval_count\":";
static const char key_comp[] = "\"completion_tokens\":";
#define LEN_EVAL (sizeof key_eval - 1)
#define LEN_COMP (sizeof key_comp - 1)

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

void tokscan_feed(struct tokscan *t, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        char c;
        if (!t->in_num && !t->m_eval && !t->m_comp) {
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q)
                return;
            p = q;
        }
        c = *p++;
        if (t->in_num) {
            if (c >= '0' && c <= '9') {
                if (t->digits < 18)
                    t->cur = t->cur * 10 + (c - '0');
                t->digits++;
                continue;
            }
            if ((c == ' ' || c == '\t') && !t->digits)
                continue;
            end_number(t);
        }
        t->m_eval = c == key_eval[t->m_eval] ? t->m_eval + 1 : c == '"';
        t->m_comp = c == key_comp[t->m_comp] ? t->m_comp + 1 : c == '"';
        if (t->m_eval == LEN_EVAL || t->m_comp == LEN_COMP) {
            t->in_num = t->m_eval == LEN_EVAL ? 1 : 2;
            t->cur = 0;
            t->digits = 0;
            t->m_eval = t->m_comp = 0;
        }
    }
}

long long tokscan_tokens(struct tokscan *t)
{
    if (t->in_num)
        end_number(t);
    return t->eval >= 0 ? t->eval : t->comp;
}
