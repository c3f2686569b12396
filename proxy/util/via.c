/* via.c - see via.h. */
#include "via.h"

#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define VIA_PREFIX "ollama-proxy-"

static char name[sizeof VIA_PREFIX + 16]; /* "ollama-proxy-" and 16 hex digits */
static char element[sizeof name + 4];

/* Drawn once: 64 random bits (libevent's arc4random, seeded from the
 * kernel), so two proxies of one fleet never share a name. */
static void draw(void)
{
    unsigned char r[8];
    if (name[0])
        return;
    evutil_secure_rng_get_bytes(r, sizeof r);
    snprintf(name, sizeof name, VIA_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7]);
    snprintf(element, sizeof element, "1.1 %s", name);
}

const char *via_name(void)
{
    draw();
    return name;
}

const char *via_element(void)
{
    draw();
    return element;
}

/* C ends a name in Via's grammar (a space, a list's comma, a comment's
 * parenthesis), in a head's text (its line end) or in a JSON text (its
 * quote). */
static int delim(char c)
{
    return c == ' ' || c == '\t' || c == ',' || c == '(' || c == ')' || c == '"' || c == '\r' ||
           c == '\n';
}

/* Within the N bytes at S, the name at AT (LEN bytes) stands as a whole
 * word: what is before it and after it is no character of a token. */
static int whole_at(const char *s, size_t n, const char *at, size_t len)
{
    const char *end = at + len;
    return (at == s || delim(at[-1])) && (end == s + n || delim(*end));
}

int via_names_me(const char *s, size_t n)
{
    const char *me = via_name(), *p = s;
    size_t len = strlen(me);
    while (n - (size_t)(p - s) >= len) {
        const char *at = memchr(p, 'o', n - (size_t)(p - s) - len + 1);
        if (!at)
            return 0;
        if (!memcmp(at, me, len) && whole_at(s, n, at, len))
            return 1;
        p = at + 1;
    }
    return 0;
}

int via_seen(const struct evkeyvalq *headers)
{
    const struct evkeyval *h;
    if (!headers)
        return 0;
    TAILQ_FOREACH(h, headers, next)
        if (strcasecmp(h->key, "Via") == 0 && via_names_me(h->value, strlen(h->value)))
            return 1;
    return 0;
}
