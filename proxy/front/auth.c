/* auth.c - see auth.h. */
#include "auth.h"

#include <arpa/inet.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "net.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"
#include "sched.h"

/* A == B for a secret, in time that depends on B's length only. */
static int secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)(b[i] ^ (i < alen ? a[i] : 0));
    return diff == 0;
}

/* Base64 (RFC 4648, padding optional) IN[0..N) decoded into OUT (LEN
 * bytes): the decoded length, or -1 if it is not base64 or too long. */
static long base64_decode(const char *in, size_t n, char *out, size_t len)
{
    unsigned v = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        int d = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : -1;
        if (c == '=')
            break;
        if (d < 0)
            return -1;
        v = v << 6 | (unsigned)d;
        if ((bits += 6) >= 8) {
            bits -= 8;
            if (o == len)
                return -1;
            out[o++] = (char)(v >> bits & 0xff);
        }
    }
    return (long)o;
}

/* S[0..*N) without blanks around it: its start, its length in *N. */
static const char *trim(const char *s, size_t *n)
{
    while (*n && (*s == ' ' || *s == '\t'))
        s++, (*n)--;
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t'))
        (*n)--;
    return s;
}

/* The auth.keys row whose secret is S[0..N), or -1. Every key is compared,
 * whichever matches, in time that does not depend on which. */
static int key_row(const struct px_config *cfg, const char *s, size_t n)
{
    int found = -1;
    for (int i = 0; i < cfg->nkeys; i++) {
        int eq = secret_equal(s, n, cfg->keys[i].key, strlen(cfg->keys[i].key));
        found = eq ? i : found;
    }
    return found;
}

/* The auth.keys row of the key that the values H of Authorization and X
 * of x-api-key present (NULL: no such header), or -1. A key is accepted in
 * each client's spelling (CONTRACT.md, "Keys in every client's spelling"):
 * "Authorization: Bearer KEY" (the OpenAI SDKs, ollama-js with headers),
 * "x-api-key: KEY" (the Anthropic SDK, Claude Code) and the password of
 * "Authorization: Basic" (user:KEY@host URLs, as LangChain sends them).
 * Any one that is a key will do. */
static int find_key(const struct px_config *cfg, const char *h, const char *x)
{
    char basic[512];
    size_t n;
    int k = -1;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        n = strlen(h + 7);
        const char *t = trim(h + 7, &n);
        k = key_row(cfg, t, n);
    } else if (h && strncasecmp(h, "Basic ", 6) == 0) {
        n = strlen(h + 6);
        const char *t = trim(h + 6, &n);
        long len = base64_decode(t, n, basic, sizeof basic);
        const char *colon = len > 0 ? memchr(basic, ':', (size_t)len) : NULL;
        if (colon)
            k = key_row(cfg, colon + 1, (size_t)(basic + len - (colon + 1)));
    }
    if (k < 0 && x) {
        n = strlen(x);
        const char *t = trim(x, &n);
        k = key_row(cfg, t, n);
    }
    return k;
}

int auth_refuses(const struct px_config *cfg, const char *authorization, const char *xkey,
                 int admin)
{
    int k;
    if (!cfg->nkeys)
        return 0;
    k = find_key(cfg, authorization, xkey);
    return k < 0 || (admin && !cfg->keys[k].admin);
}

int auth_check(struct proxy *px, struct request *r, int admin, int open)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    int k;
    if (!px->cfg->nkeys) {
        net_copy(r->client, sizeof r->client, r->addr, NULL);
        return -1;
    }
    if (open)
        return -1;
    if ((k = find_key(px->cfg, evhttp_find_header(in, "Authorization"),
                      evhttp_find_header(in, "x-api-key"))) < 0) {
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "WWW-Authenticate",
                          "Bearer");
        reply_error(r, 401,
                    evhttp_find_header(in, "Authorization") || evhttp_find_header(in, "x-api-key")
                        ? "unauthorized: unknown key"
                        : "unauthorized: a key is required (\"Authorization: Bearer KEY\" or "
                          "\"x-api-key: KEY\")",
                    0);
        return AUTH_ANSWERED;
    }
    net_copy(r->client, sizeof r->client, px->cfg->keys[k].name, NULL);
    if (admin && !px->cfg->keys[k].admin) {
        reply_error(r, 403, "forbidden: this endpoint needs an admin key", 0);
        return AUTH_ANSWERED;
    }
    return k;
}

/* ADDR as the client it counts as: the address itself, or its network
 * of V4 / V6 bits ("2001:db8:1:2::/64"), so that the many addresses of one
 * host (free with IPv6) are one client for fair share. */
static void address_prefix(const char *addr, int v4, int v6, char *out, size_t len)
{
    unsigned char a[16];
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET, bits = family == AF_INET ? v4 : v6;
    int all = family == AF_INET ? 32 : 128;
    char text[INET6_ADDRSTRLEN];
    if (bits >= all || inet_pton(family, addr, a) != 1) {
        net_copy(out, len, addr, NULL);
        return;
    }
    for (int i = 0; i < all / 8; i++) {
        int keep = bits - 8 * i;
        a[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
    inet_ntop(family, a, text, sizeof text);
    snprintf(out, len, "%s/%d", text, bits);
}

/* Who REQ is charged to: its key; else the trusted header, if configured
 * and sent; else the connecting address. */
struct sched_client *auth_client(struct proxy *px, struct request *r, int key)
{
    struct evhttp_request *req = r->req;
    char name[80];
    if (key >= 0)
        return sched_key_client(&px->sched, key);
    if (px->cfg->client_header) {
        const char *v = evhttp_find_header(evhttp_request_get_input_headers(req),
                                           px->cfg->client_header);
        if (v && *v) {
            size_t n = strlen(v) < sizeof name - 1 ? strlen(v) : sizeof name - 1;
            memcpy(name, v, n);
            name[n] = '\0';
            return sched_addr_client(&px->sched, name);
        }
    }
    address_prefix(r->addr, px->cfg->ipv4_prefix, px->cfg->ipv6_prefix, name, sizeof name);
    return sched_addr_client(&px->sched, name);
}

