/* names.c - model name normalisation, see names.h. */
#include "names.h"

#include <ctype.h>
#include <string.h>

#define DEFAULT_HOST "registry.ollama.ai"
#define DEFAULT_NS "library"
#define DEFAULT_TAG "latest"

struct parts {
    char host[352], ns[84], model[84], tag[84];
};

static int copy_lower(char *dst, size_t dstlen, const char *src, size_t n)
{
    if (n == 0 || n >= dstlen)
        return -1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[n] = '\0';
    return 0;
}

/* Split NAME as Ollama does: the tag at the last ':' after the last '/',
 * then the rest on '/' from the right; missing parts get the defaults. */
static int split(const char *name, struct parts *p)
{
    size_t len = strlen(name);
    const char *at = memchr(name, '@', len); /* drop "@digest" first, then trim */
    if (at)
        len = (size_t)(at - name);
    while (len > 0 && isspace((unsigned char)*name))
        name++, len--;
    while (len > 0 && isspace((unsigned char)name[len - 1]))
        len--;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) /* no blank inside a name: it is not one */
        if (isspace((unsigned char)name[i]))
            return -1;

    const char *slash = NULL, *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '/')
            slash = name + i, colon = NULL;
        else if (name[i] == ':')
            colon = name + i;
    }
    size_t rest = len;
    if (colon) {
        if (copy_lower(p->tag, sizeof p->tag, colon + 1, len - (size_t)(colon + 1 - name)))
            return -1;
        rest = (size_t)(colon - name);
    } else {
        strcpy(p->tag, DEFAULT_TAG);
    }
    /* model = after the last '/', ns = before it, host = before that. */
    const char *m = slash ? slash + 1 : name;
    if (copy_lower(p->model, sizeof p->model, m, rest - (size_t)(m - name)))
        return -1;
    strcpy(p->ns, DEFAULT_NS);
    strcpy(p->host, DEFAULT_HOST);
    if (slash) {
        size_t pre = (size_t)(slash - name);
        const char *s2 = NULL;
        for (size_t i = 0; i < pre; i++)
            if (name[i] == '/')
                s2 = name + i;
        if (s2) {
            if (copy_lower(p->ns, sizeof p->ns, s2 + 1, pre - (size_t)(s2 + 1 - name)) ||
                copy_lower(p->host, sizeof p->host, name, (size_t)(s2 - name)))
                return -1;
        } else if (copy_lower(p->ns, sizeof p->ns, name, pre)) {
            return -1;
        }
    }
    return 0;
}

/* OUT = P's parts from the FIRST on (0 host, 2 namespace, 4 model) as
 * "host/ns/model:tag": 0, or -1 (OUT empty) when it does not fit. Once a
 * request: snprintf's "%s/%s/%s:%s" cost ten times these copies. */
static int join(const struct parts *p, int first, char *out, size_t outlen)
{
    const char *s[7] = {p->host, "/", p->ns, "/", p->model, ":", p->tag};
    size_t at = 0;
    for (int i = first; i < 7; i++) {
        size_t len = strlen(s[i]);
        if (len >= outlen - at) {
            if (outlen)
                out[0] = '\0';
            return -1;
        }
        memcpy(out + at, s[i], len);
        at += len;
    }
    out[at] = '\0';
    return 0;
}

int name_key(const char *name, char *out, size_t outlen)
{
    struct parts p;
    if (outlen)
        out[0] = '\0';
    if (!name || split(name, &p))
        return -1;
    return join(&p, 0, out, outlen);
}

int name_display(const char *name, char *out, size_t outlen)
{
    struct parts p;
    if (outlen)
        out[0] = '\0';
    if (!name || split(name, &p))
        return -1;
    int first = 4; /* model:tag */
    if (strcmp(p.host, DEFAULT_HOST) != 0)
        first = 0;
    else if (strcmp(p.ns, DEFAULT_NS) != 0)
        first = 2;
    return join(&p, first, out, outlen);
}

int name_same(const char *a, const char *b)
{
    char ka[NAME_KEY_MAX], kb[NAME_KEY_MAX];
    if (name_key(a, ka, sizeof ka) || name_key(b, kb, sizeof kb))
        return 0;
    return strcmp(ka, kb) == 0;
}
