/* router.c - see router.h. A request's way through here:
 *   the target normalised (urlpath.h) -> its row -> the key (auth.h) ->
 *   the proxy's own answer, or the body read for its model (jscan.h) ->
 *   a fan-out or a session; and every request the proxy answers at once
 *   is recorded (reqlog.h) before on_request returns. */
#include "router.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "auth.h"
#include "catalog.h"
#include "config.h"
#include "conns.h"
#include "cors.h"
#include "fanout.h"
#include "jbody.h"
#include "jscan.h"
#include "metrics.h"
#include "multipart.h"
#include "net.h"
#include "proxy.h"
#include "reply.h"
#include "reqlog.h"
#include "session.h"
#include "urlpath.h"
#include "via.h"

#define GET (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)
#define GET_ EVHTTP_REQ_GET /* GET alone */
#define POST EVHTTP_REQ_POST
#define DEL EVHTTP_REQ_DELETE
#define ANY 0u

/* clang-format off */
#define PATH(p) p, sizeof p - 1
#define OLL DIALECT_OLLAMA
#define OAI DIALECT_OPENAI
#define ANT DIALECT_ANTHROPIC
static const struct endpoint table[] = {
    /* path                          methods kind        dialect wire          fan         unload          model form name admin open own */
    {PATH("/"),                      GET,   EP_ROOT,     OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 0, 1, 1},
    {PATH("/metrics"),               GET,   EP_METRICS,  OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 0, OPEN_METRICS, 1},
    {PATH("/proxy/ui"),              GET,   EP_PROXY,    OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 0, 1, 1},
    {PATH("/proxy/"),                ANY,   EP_PROXY,    OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 1, 0, 1},
    {PATH("/api/tags"),              GET,   EP_CATALOG,  OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/api/version"),           GET,   EP_CATALOG,  OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/v1/models"),             GET,   EP_CATALOG,  OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/v1/models/"),            GET,   EP_CATALOG,  OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/api/ps"),                GET_,  EP_PS,       OLL, WIRE_NDJSON,    FAN_PS,     UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/api/pull"),              POST,  EP_FANOUT,   OLL, WIRE_NDJSON,    FAN_PULL,   UNLOAD_NONE,     0, 0, 1, 1, 0, 0},
    {PATH("/api/push"),              POST,  EP_FANOUT,   OLL, WIRE_NDJSON,    FAN_PUSH,   UNLOAD_NONE,     0, 0, 1, 1, 0, 0},
    {PATH("/api/create"),            POST,  EP_FANOUT,   OLL, WIRE_NDJSON,    FAN_CREATE, UNLOAD_NONE,     0, 0, 1, 1, 0, 0},
    {PATH("/api/copy"),              POST,  EP_FANOUT,   OLL, WIRE_NDJSON,    FAN_COPY,   UNLOAD_NONE,     0, 0, 0, 1, 0, 0},
    {PATH("/api/delete"),            DEL,   EP_FANOUT,   OLL, WIRE_NDJSON,    FAN_DELETE, UNLOAD_NONE,     0, 0, 1, 1, 0, 0},
    {PATH("/api/blobs/"),            EVHTTP_REQ_HEAD | POST, EP_BLOB, OLL, WIRE_NDJSON, 0, UNLOAD_NONE,   0, 0, 0, 1, 0, 0},
    /* Ollama's ollama.com account of the box: who it is, signing it out */
    {PATH("/api/me"),                POST,  EP_PASS,     OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 1, 0, 0},
    {PATH("/api/signout"),           POST,  EP_PASS,     OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 1, 0, 0},
    {PATH("/api/user/keys/"),        DEL,   EP_PASS,     OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     0, 0, 0, 1, 0, 0},
    {PATH("/api/generate"),          POST,  EP_INFER,    OLL, WIRE_NDJSON,    0,          UNLOAD_PROMPT,   1, 0, 0, 0, 0, 0},
    {PATH("/api/chat"),              POST,  EP_INFER,    OLL, WIRE_NDJSON,    0,          UNLOAD_MESSAGES, 1, 0, 0, 0, 0, 0},
    {PATH("/api/embed"),             POST,  EP_INFER,    OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/api/embeddings"),        POST,  EP_INFER,    OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/api/show"),              POST,  EP_META,     OLL, WIRE_NDJSON,    0,          UNLOAD_NONE,     1, 0, 1, 0, 0, 0},
    {PATH("/v1/chat/completions"),   POST,  EP_INFER,    OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/v1/completions"),        POST,  EP_INFER,    OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/v1/embeddings"),         POST,  EP_INFER,    OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/v1/messages"),           POST,  EP_INFER,    ANT, WIRE_ANTHROPIC, 0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/v1/messages/"),          ANY,   EP_PASS,     ANT, WIRE_ANTHROPIC, 0,          UNLOAD_NONE,     0, 0, 0, 0, 0, 0},
    {PATH("/v1/responses"),          POST,  EP_INFER,    OAI, WIRE_RESPONSES, 0,          UNLOAD_NONE,     1, 0, 0, 0, 0, 0},
    {PATH("/v1/audio/transcriptions"), POST, EP_INFER,   OAI, WIRE_OPENAI,    0,          UNLOAD_NONE,     1, 1, 0, 0, 0, 0},
};
#undef PATH
#undef OLL
#undef OAI
#undef ANT
/* clang-format on */

const struct endpoint *router_find(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *p = table[i].path;
        size_t len = table[i].len;
        if (len > 1 && p[len - 1] == '/' ? n > len && !memcmp(path, p, len)
                                         : n == len && !memcmp(path, p, len))
            return &table[i];
    }
    return NULL;
}

/* ---- the body ---- */

/* What routing reads in the body of a model-routed path (jbody.h): where
 * its conversation starts (prefix affinity), whether it carries Ollama's
 * options (routing.num_ctx = "strip" applies) and whether it is a generate
 * or chat request (a pinned num_ctx is set on it). /v1/messages and
 * /v1/responses take effect once their rows route them by model. */
static const struct body_rule {
    const char *path;
    enum jbody_shape shape;
    unsigned options : 1;
    unsigned pin : 1;
} body_rules[] = {
    {"/api/chat", JBODY_MESSAGES, 1, 1},
    {"/api/generate", JBODY_PROMPT, 1, 1},
    {"/api/embed", JBODY_NONE, 1, 0},
    {"/api/embeddings", JBODY_NONE, 1, 0},
    {"/v1/chat/completions", JBODY_MESSAGES, 0, 0},
    {"/v1/completions", JBODY_PROMPT, 0, 0},
    {"/v1/messages", JBODY_MESSAGES, 0, 0},
    {"/v1/responses", JBODY_RESPONSES, 0, 0},
};

static const struct body_rule *body_rule_of(const struct endpoint *ep)
{
    for (size_t i = 0; i < sizeof body_rules / sizeof body_rules[0]; i++)
        if (strcmp(ep->path, body_rules[i].path) == 0)
            return &body_rules[i];
    return NULL;
}

/* The affinity key of R (routing.affinity): the first session header it
 * carries, else (prefix) the start of its conversation, hashed. */
static int affinity_key(struct proxy *px, struct request *r, const struct body_rule *br,
                        const char *body, size_t len, unsigned long long *hash)
{
    const struct config_routing *rt = &px->cfg->routing;
    const struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    if (rt->affinity == AFFINITY_OFF)
        return 0;
    for (int i = 0; i < rt->nsession_headers; i++) {
        const char *v = evhttp_find_header(h, rt->session_headers[i]);
        if (v && *v) {
            unsigned long long x = 1469598103934665603ULL; /* FNV-1a 64 */
            for (const char *p = v; *p; p++)
                x = (x ^ (unsigned char)*p) * 1099511628211ULL;
            *hash = x;
            return 1;
        }
    }
    return rt->affinity == AFFINITY_PREFIX && br &&
           jbody_prefix_hash(body, len, br->shape, hash);
}

/* routing.num_ctx: the one rewrite of a body (jbody.h), and the num_ctx R
 * goes to its backend with. */
static int num_ctx_rule(struct proxy *px, struct request *r, const struct body_rule *br,
                        const char *body, size_t len, const struct jscan_result *js)
{
    const struct config_routing *rt = &px->cfg->routing;
    struct evbuffer *b = evhttp_request_get_input_buffer(r->req);
    char *out = NULL;
    size_t outlen = 0;
    int value = 0, rc = 0;
    if (!br || !br->options)
        return 0; /* /v1 bodies carry no num_ctx: the backend's default */
    if (rt->num_ctx == NUM_CTX_PIN && br->pin)
        value = rt->num_ctx_pin;
    else if (rt->num_ctx == NUM_CTX_PASS || (rt->num_ctx == NUM_CTX_PIN && !br->pin))
        /* the body scanned again only when jscan saw an "options" member */
        return js->present & 1u << JSCAN_OPTIONS ? jbody_num_ctx(body, len) : 0;
    if (!(js->wrong_type & 1u << JSCAN_OPTIONS))
        rc = jbody_set_num_ctx(body, len, value, &out, &outlen);
    if (rc == 1) {
        evbuffer_drain(b, len);
        evbuffer_add(b, out, outlen);
        free(out);
    } else if (rc < 0) { /* forwarded as it is: Ollama answers it */
        return jbody_num_ctx(body, len);
    }
    return value;
}

/* The request is an unload or a preload, as Ollama decides them
 * (server/routes.go): an empty prompt (generate) or no messages (chat),
 * an unload with keep_alive zero. A body with a value of the wrong type
 * is neither: Ollama refuses it (400), and the proxy lets it take a slot
 * and hear that from the backend. Returns 0, PRELOAD_UNLOAD or PRELOAD_LOAD. */
enum { PRELOAD_UNLOAD = 1, PRELOAD_LOAD };
static int is_unload(const struct endpoint *ep, const struct jscan_result *js)
{
    int empty = ep->unload == UNLOAD_PROMPT     ? js->prompt != 1
                : ep->unload == UNLOAD_MESSAGES ? js->messages != 1
                                                : 0;
    if (!empty || js->wrong_type)
        return 0;
    return js->keep_alive == JSCAN_KA_ZERO ? PRELOAD_UNLOAD : PRELOAD_LOAD;
}

/* The model M[0..MLEN) (still escaped when MESC) into R, checked as a
 * name. Returns 0, or -1 after answering. */
static int set_model(struct request *r, const char *m, size_t mlen, int mesc)
{
    char model[REQUEST_MODEL_MAX];
    if (!m || mlen == 0) {
        reply_error(r, 400, "model is required", 0);
        return -1;
    }
    if (mlen >= sizeof model) {
        reply_error(r, 400, "invalid model name", 0);
        return -1;
    }
    if (mesc) { /* rare: undo the escapes */
        size_t got = jscan_unescape(m, mlen, model, sizeof model);
        if (!got || got >= sizeof model || strlen(model) != got) { /* "", or a "\u0000" */
            reply_error(r, 400, "invalid model name", 0);
            return -1;
        }
    } else {
        memcpy(model, m, mlen);
        model[mlen] = '\0';
        if (memchr(m, '\0', mlen)) { /* a form's field may hold any byte */
            reply_error(r, 400, "invalid model name", 0);
            return -1;
        }
    }
    if (request_set_model(r, model) < 0) {
        reply_error(r, 503, "out of memory", 1);
        return -1;
    }
    return 0;
}

/* The model of a multipart form (a transcription), as Ollama reads it:
 * FormValue("model"), the form's field, else the query's. Returns 0, or
 * -1 after answering with Ollama's 400. */
static int parse_form(struct request *r, const char *body, size_t len)
{
    const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(r->req),
                                           "Content-Type");
    const char *m = NULL, *q;
    size_t mlen = 0;
    char why[160], msg[200];
    struct evkeyvalq query;
    int rc = multipart_field(ctype, body, len, "model", &m, &mlen, why, sizeof why);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "failed to parse multipart form: %s", why);
        reply_error(r, 400, msg, 0);
        return -1;
    }
    if (rc > 0 && mlen)
        return set_model(r, m, mlen, 0);
    q = strchr(evhttp_request_get_uri(r->req), '?');
    TAILQ_INIT(&query);
    if (q && evhttp_parse_query_str(q + 1, &query) == 0 &&
        (m = evhttp_find_header(&query, "model")) && *m) {
        rc = set_model(r, m, strlen(m), 0);
        evhttp_clear_headers(&query);
        return rc;
    }
    evhttp_clear_headers(&query);
    return set_model(r, NULL, 0, 0);
}

/* Read the model of R's body, as the backend will (jscan.h, or a form's
 * field), into R; its unload or preload verdict (is_unload) into *UNLOAD and what routing needs
 * into *RT (the body rewritten for routing.num_ctx). Returns 0, or -1
 * after answering. */
static int parse_body(struct proxy *px, struct request *r, const struct endpoint *ep,
                      int *unload, struct session_info *rt)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(b), mlen;
    const char *body, *m;
    struct jscan_result js;
    char why[160], msg[200];
    int mesc;
    if (len == 0) {
        reply_error(r, 400, "missing request body", 0);
        return -1;
    }
    body = (const char *)evbuffer_pullup(b, -1);
    if (ep->form)
        return parse_form(r, body, len);
    if (jscan_body(body, len, &js, why, sizeof why) < 0 || !js.is_object) {
        snprintf(msg, sizeof msg, "invalid JSON in request body: %s",
                 js.is_object ? why : "not an object");
        reply_error(r, 400, msg, 0);
        return -1;
    }
    if (js.wrong_type & (1u << JSCAN_MODEL | 1u << JSCAN_NAME)) {
        reply_error(r, 400, "invalid JSON in request body: the model must be a string", 0);
        return -1;
    }
    m = js.model, mlen = js.model_len, mesc = js.model_escaped;
    if (!mlen && ep->name)
        m = js.name, mlen = js.name_len, mesc = js.name_escaped;
    if (set_model(r, m, mlen, mesc) < 0)
        return -1;
    *unload = is_unload(ep, &js);
    if (*unload != PRELOAD_UNLOAD && ep->kind == EP_INFER) { /* a preload too: it may be one */
        const struct body_rule *br = body_rule_of(ep);
        rt->keyed = affinity_key(px, r, br, body, len, &rt->affinity);
        rt->num_ctx = num_ctx_rule(px, r, br, body, len, &js); /* body is stale after it */
    }
    return 0;
}

/* ---- what the proxy answers at once ---- */

static void reply_root(struct request *r)
{
    struct evbuffer *b = evbuffer_new();
    if (b && evhttp_request_get_command(r->req) != EVHTTP_REQ_HEAD)
        evbuffer_add(b, "Ollama is running", 17);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "text/plain; charset=utf-8");
    reply_send(r, 200, b);
    if (b)
        evbuffer_free(b);
}

/* R came back to this proxy (via.h): its fleet leads to itself. The name
 * is in the body, so a health check that meets it knows (health.c). */
static void reply_loop(struct request *r)
{
    char msg[128];
    snprintf(msg, sizeof msg, "loop detected: the request came back to %s", via_name());
    reply_error(r, 508, msg, 0);
}

/* The request target in origin form. An absolute-form URI (RFC 9112
 * 3.2.2: "GET http://host/proxy/status") is taken as its path and query,
 * so that it reaches the proxy's own endpoints and checks like any other
 * (an empty path is "/": urlpath_normalize adds it). */
static const char *origin_form(const char *uri)
{
    const char *p;
    if (strncasecmp(uri, "http://", 7) != 0 && strncasecmp(uri, "https://", 8) != 0)
        return uri;
    p = strchr(uri, ':') + 3;
    return p + strcspn(p, "/?");
}

/* Answer R (of row EP, kind KIND) if the proxy answers it itself: 1 if so. */
static int answer_self(struct proxy *px, struct request *r, const struct endpoint *ep,
                       enum ep_kind kind, const char *path)
{
    switch (kind) {
    case EP_ROOT:
        reply_root(r);
        return 1;
    case EP_METRICS:
        metrics_reply(px, r);
        return 1;
    case EP_PROXY:
        admin_reply(px, r, path);
        return 1;
    case EP_CATALOG:
        catalog_reply(px, r, path);
        return 1;
    default:
        break;
    }
    if (ep && ep->own) { /* the proxy's path, another method: never a backend's */
        reply_error(r, 405, "use GET", 0);
        return 1;
    }
    if (px->draining) {
        reply_error(r, 503, "the proxy is shutting down", 1);
        return 1;
    }
    return 0;
}

/* ---- a request ---- */

/* A body over limits.max_body_mb (dropped by the connection, conns.h). */
static void reply_too_large(struct proxy *px, struct request *r)
{
    char msg[96];
    snprintf(msg, sizeof msg, "request body too large (limits.max_body_mb = %d)",
             px->cfg->max_body_mb);
    reply_error(r, 413, msg, 0);
}

/* R came through a loopback listener with a Host that does not name this
 * machine: a page whose name was rebound to 127.0.0.1 (DNS rebinding) sends
 * its own name. Ollama answers it 403 (allowedHostsMiddleware), whatever
 * the path; so does the proxy that stands in its place. 1 if answered. */
static int host_refused(struct proxy *px, struct request *r)
{
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(r->req), "Host");
    char msg[400];
    if (!conns_local_only(px, r->req) || net_host_local(host))
        return 0;
    snprintf(msg, sizeof msg,
             "forbidden: Host %.200s is not a name of this machine (on a loopback listener, "
             "as Ollama, only local names are answered)", host);
    reply_error(r, 403, msg, 0);
    return 1;
}

/* R (of row EP, kind KIND) needs no key. */
static int is_open(const struct proxy *px, const struct endpoint *ep, enum ep_kind kind)
{
    if (!ep || kind == EP_PASS || !ep->open)
        return 0;
    return ep->open != OPEN_METRICS || !px->cfg->metrics_key_required;
}

/* The value of the first header NAME in head H (N bytes), as evhttp will
 * read it (spaces before it and blanks after it trimmed, cut at a NUL),
 * into OUT (LEN bytes); NULL when H has none (or it does not fit). */
static const char *head_header(const char *h, size_t n, const char *name, char *out, size_t len)
{
    size_t k = strlen(name);
    const char *end = h + n, *p = memchr(h, '\n', n); /* past the request line */
    for (p = p ? p + 1 : end; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p)), *v;
        size_t vlen;
        e = e ? e : end;
        if ((size_t)(e - p) > k && p[k] == ':' && strncasecmp(p, name, k) == 0) {
            for (v = p + k + 1; v < e && *v == ' '; v++)
                ;
            vlen = (size_t)(e - v);
            if (memchr(v, '\0', vlen))
                vlen = (size_t)((const char *)memchr(v, '\0', vlen) - v);
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t' || v[vlen - 1] == '\r'))
                vlen--;
            if (vlen >= len)
                return NULL;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return out;
        }
        p = e + 1;
    }
    return NULL;
}

/* The intake's gate (intake.h): the head H (N bytes) of a request with a
 * body still to come refuses it on its own, as on_request will: keys are
 * set, the endpoint is not open, and no key of the head is one (or it is
 * not an admin's, for an admin endpoint). Anything the head alone does not
 * settle (a target on_request refuses, an unknown method) is left to
 * on_request, the body read as before. */
static int head_refused(void *arg, const char *h, size_t n)
{
    static const struct { const char *name; enum evhttp_cmd_type cmd; } methods[] = {
        {"POST ", EVHTTP_REQ_POST}, {"PUT ", EVHTTP_REQ_PUT}, {"PATCH ", EVHTTP_REQ_PATCH},
        {"DELETE ", EVHTTP_REQ_DELETE}, {"GET ", EVHTTP_REQ_GET}};
    struct proxy *px = arg;
    const struct endpoint *ep;
    enum ep_kind kind;
    char uri[4096], path[URLPATH_MAX + 1], target[8192], auth[1024], xkey[1024];
    const char *sp, *eol, *why;
    size_t i, k;
    if (!px->cfg->nkeys || via_names_me(h, n)) /* a loop is answered 508 before the key */
        return 0;
    for (i = 0; i < sizeof methods / sizeof *methods; i++)
        if (n > strlen(methods[i].name) && !memcmp(h, methods[i].name, strlen(methods[i].name)))
            break;
    if (i == sizeof methods / sizeof *methods)
        return 0;
    h += strlen(methods[i].name), n -= strlen(methods[i].name);
    eol = memchr(h, '\n', n);
    sp = memchr(h, ' ', eol ? (size_t)(eol - h) : n);
    if (!sp || (k = (size_t)(sp - h)) >= sizeof uri)
        return 0;
    memcpy(uri, h, k);
    uri[k] = '\0';
    if (urlpath_normalize(origin_form(uri), path, sizeof path, target, sizeof target, &why) < 0)
        return 0;
    ep = router_find(path);
    kind = ep && (!ep->methods || (ep->methods & methods[i].cmd)) ? ep->kind : EP_PASS;
    if (is_open(px, ep, kind))
        return 0;
    return auth_refuses(px->cfg, head_header(h, n, "Authorization", auth, sizeof auth),
                        head_header(h, n, "x-api-key", xkey, sizeof xkey), ep && ep->admin);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct proxy *px = arg;
    const char *uri = origin_form(evhttp_request_get_uri(req)), *why = NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct endpoint *ep;
    enum ep_kind kind;
    char path[URLPATH_MAX + 1], target[8192];
    struct request r;
    struct session_info in = {0};
    int key, rc, unload = 0, status;

    px->requests++;
    conns_request_arrived(px, req);
    request_init(&r, req, uri);
    /* Routing, keys and fan-outs are decided on the path as Ollama will
     * route it (decoded), and what is forwarded decodes to that path. */
    if ((rc = urlpath_normalize(uri, path, sizeof path, target, sizeof target, &why)) < 0) {
        char msg[128];
        r.dialect = strncmp(uri, "/v1/messages", 12) == 0 ? DIALECT_ANTHROPIC
                    : strncmp(uri, "/v1/", 4) == 0        ? DIALECT_OPENAI
                                                          : DIALECT_OLLAMA;
        snprintf(msg, sizeof msg, "bad request target: %s", why);
        reply_error(&r, rc == URLPATH_ELONG ? 414 : 400, msg, 0);
        goto self;
    }
    net_copy(r.path, sizeof r.path, target, NULL);
    ep = router_find(path);
    kind = ep && (!ep->methods || (ep->methods & cmd)) ? ep->kind : EP_PASS;
    r.dialect = ep ? ep->dialect : strncmp(path, "/v1/", 4) == 0 ? DIALECT_OPENAI : DIALECT_OLLAMA;
    r.wire = ep ? ep->wire : r.dialect == DIALECT_OPENAI ? WIRE_OPENAI : WIRE_NDJSON;
    if (cors_check(px, &r) || host_refused(px, &r)) /* Ollama's order: a preflight first */
        goto self;
    switch (conns_verdict(px, req, &status, &why)) {
    case INTAKE_TOO_LARGE: /* its body dropped: 413 in the path's dialect */
        reply_too_large(px, &r);
        goto self;
    case INTAKE_REFUSED: /* by head_refused, its body not read: 401 or 403 */
        if (auth_check(px, &r, ep && ep->admin, is_open(px, ep, kind)) != AUTH_ANSWERED)
            reply_error(&r, 401, "unauthorized", 0); /* cannot happen: the same rule */
        goto self;
    case INTAKE_BAD_HEAD: /* its head at fault, and this one the intake's */
        reply_error(&r, status, why, 0);
        goto self;
    case INTAKE_SERVE:
        break;
    }
    if (via_seen(evhttp_request_get_input_headers(req))) { /* before the key: ours is not sent on */
        reply_loop(&r);
        goto self;
    }
    if (kind == EP_ROOT) {
        reply_root(&r);
        goto self;
    }
    if ((key = auth_check(px, &r, ep && ep->admin, is_open(px, ep, kind))) == AUTH_ANSWERED ||
        answer_self(px, &r, ep, kind, path) ||
        (ep && ep->model && kind != EP_PASS && parse_body(px, &r, ep, &unload, &in) < 0))
        goto self;
    if (kind == EP_PS && !catalog_known(px)) { /* nobody in service to ask */
        catalog_reply(px, &r, path);
        goto self;
    }
    if (unload == PRELOAD_LOAD && !fanout_loadable(px, request_mkey(&r)))
        unload = 0; /* fewer than two list it: routed as one request, retried as one */
    if (kind == EP_PS || kind == EP_FANOUT || unload) { /* R moves to the fan-out */
        fanout_start(px, &r, unload == PRELOAD_LOAD ? FAN_LOAD : unload ? FAN_UNLOAD : ep->fan,
                     path);
        return;
    }
    if (kind == EP_BLOB) { /* for every GPU; an upload's body still arriving */
        if (cmd == EVHTTP_REQ_HEAD)
            fanout_start(px, &r, FAN_BLOB_HEAD, target);
        else
            fanout_upload(px, &r, target, conns_body(px, req));
        return;
    }

    /* Reads that never run on a GPU take no slot and wait behind no
     * inference (sched.h, SCHED_META_CAP). */
    r.meta = kind == EP_META || cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    in.head = &r;
    in.target = target;
    in.client = auth_client(px, &r, key);
    session_start(px, &in); /* R moves to the session */
    return;
self:
    reqlog_end(px, &r, "self");
    request_cleanup(&r);
}

int router_start(struct proxy *px)
{
    px->gate = (struct intake_gate){head_refused, px};
    return conns_start(px, on_request);
}
