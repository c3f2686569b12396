/* cors.c - see cors.h. */
#include "cors.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"

/* The request headers a page may send, besides the CORS-safelisted ones:
 * what ollama-js, the OpenAI and Anthropic SDKs send (and Ollama allows),
 * and every x-stainless-* (the SDKs' platform headers). */
static const char *const allowed_headers[] = {
    "Authorization",    "Content-Type",     "User-Agent",
    "Accept",           "X-Requested-With", "x-api-key",
    "anthropic-version", "anthropic-beta",  "anthropic-dangerous-direct-browser-access",
    "OpenAI-Beta",      "OpenAI-Organization", "OpenAI-Project",
    NULL};

#define METHODS "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
#define MAX_AGE "600"

/* ORIGIN is listed in cors_origins. */
static int allowed(const struct px_config *cfg, const char *origin)
{
    for (int i = 0; i < cfg->ncors_origins; i++)
        if (fnmatch(cfg->cors_origins[i], origin, FNM_CASEFOLD) == 0)
            return 1;
    return 0;
}

/* ORIGIN is the proxy's own: its host:port is the request's Host (a page
 * the proxy served, the status page). */
static int same_origin(const char *origin, const char *host)
{
    const char *p = strstr(origin, "://");
    return host && p && strcasecmp(p + 3, host) == 0;
}

/* NAME (N bytes) may be sent by a page. */
static int header_allowed(const struct px_config *cfg, const char *name, size_t n)
{
    if (n > 12 && strncasecmp(name, "x-stainless-", 12) == 0)
        return 1;
    if (cfg->client_header && strlen(cfg->client_header) == n &&
        strncasecmp(name, cfg->client_header, n) == 0)
        return 1;
    for (const char *const *h = allowed_headers; *h; h++)
        if (strlen(*h) == n && strncasecmp(name, *h, n) == 0)
            return 1;
    return 0;
}

/* Access-Control-Allow-Headers: the headers the preflight asks for that a
 * page may send ("*" does not cover Authorization, so they are named). A
 * header not allowed is left out, and the browser refuses the request. */
static void allow_headers(const struct px_config *cfg, const char *asked, struct evbuffer *out)
{
    for (const char *p = asked ? asked : ""; *p;) {
        size_t n;
        p += strspn(p, " \t,");
        n = strcspn(p, " \t,");
        if (n && header_allowed(cfg, p, n))
            evbuffer_add_printf(out, "%s%.*s", evbuffer_get_length(out) ? ", " : "", (int)n, p);
        p += n;
    }
    if (!evbuffer_get_length(out))
        evbuffer_add_printf(out, "Authorization, Content-Type, x-api-key");
}

static void preflight(struct proxy *px, struct request *r, const char *origin)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    struct evbuffer *h = evbuffer_new();
    if (!h) {
        reply_error(r, 500, "out of memory", 0);
        return;
    }
    allow_headers(px->cfg, evhttp_find_header(in, "Access-Control-Request-Headers"), h);
    evbuffer_add(h, "", 1);
    evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
    evhttp_add_header(out, "Access-Control-Allow-Methods", METHODS);
    evhttp_add_header(out, "Access-Control-Allow-Headers", (const char *)evbuffer_pullup(h, -1));
    evhttp_add_header(out, "Access-Control-Max-Age", MAX_AGE);
    evhttp_add_header(out, "Vary", "Origin");
    reply_send(r, 204, NULL);
    evbuffer_free(h);
}

/* A refused origin: 403 without CORS headers, so the page learns nothing. */
static void refuse(struct request *r, const char *origin)
{
    char msg[300];
    snprintf(msg, sizeof msg, "origin not allowed: %.200s (cors_origins)", origin);
    reply_error(r, 403, msg, 0);
}

int cors_check(struct proxy *px, struct request *r)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->req);
    const char *origin = evhttp_find_header(in, "Origin");
    int pre = evhttp_request_get_command(r->req) == EVHTTP_REQ_OPTIONS &&
              evhttp_find_header(in, "Access-Control-Request-Method");
    int ok;
    if (!origin)
        return 0;
    ok = allowed(px->cfg, origin);
    if (!ok && same_origin(origin, evhttp_find_header(in, "Host")) && !pre)
        return 0;
    if (!ok) {
        refuse(r, origin);
        return 1;
    }
    if (pre) {
        preflight(px, r, origin);
        return 1;
    }
    r->cors = 1;
    reply_cors(r);
    return 0;
}
