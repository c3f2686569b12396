/* router.c - see router.h. A request's way through here:
 *   the target normalised (urlpath.h) -> its row -> the key (auth.h) ->
 *   the proxy's own answer, or the body read for its model (jscan.h) ->
 *   a fan-out or a session; and every request the proxy answers at once
 *   is recorded (reqlog.h) before on_request returns. */
#include "router.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "auth.h"
#include "catalog.h"
#include "config.h"
#include "conns.h"
#include "fanout.h"
#include "jscan.h"
#include "metrics.h"
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
static const struct endpoint table[] = {
    /* path                        methods kind        dialect         fan         unload           model name admin open own */
    {PATH("/"),                   GET,   EP_ROOT,     DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 0, 1, 1},
    {PATH("/metrics"),            GET,   EP_METRICS,  DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 0, OPEN_METRICS, 1},
    {PATH("/proxy/ui"),           GET,   EP_PROXY,    DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 0, 1, 1},
    {PATH("/proxy/"),             ANY,   EP_PROXY,    DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 1, 0, 1},
    {PATH("/api/tags"),           GET,   EP_CATALOG,  DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 0, 0, 0},
    {PATH("/api/version"),        GET,   EP_CATALOG,  DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 0, 0, 0},
    {PATH("/v1/models"),          GET,   EP_CATALOG,  DIALECT_OPENAI,  0,           UNLOAD_NONE,      0, 0, 0, 0, 0},
    {PATH("/v1/models/"),         GET,   EP_CATALOG,  DIALECT_OPENAI,  0,           UNLOAD_NONE,      0, 0, 0, 0, 0},
    {PATH("/api/ps"),             GET_,  EP_PS,       DIALECT_OLLAMA,  FAN_PS,      UNLOAD_NONE,      0, 0, 0, 0, 0},
    {PATH("/api/pull"),           POST,  EP_FANOUT,   DIALECT_OLLAMA,  FAN_PULL,    UNLOAD_NONE,      0, 1, 1, 0, 0},
    {PATH("/api/push"),           POST,  EP_FANOUT,   DIALECT_OLLAMA,  FAN_PUSH,    UNLOAD_NONE,      0, 1, 1, 0, 0},
    {PATH("/api/create"),         POST,  EP_FANOUT,   DIALECT_OLLAMA,  FAN_CREATE,  UNLOAD_NONE,      0, 1, 1, 0, 0},
    {PATH("/api/copy"),           POST,  EP_FANOUT,   DIALECT_OLLAMA,  FAN_COPY,    UNLOAD_NONE,      0, 0, 1, 0, 0},
    {PATH("/api/delete"),         DEL,   EP_FANOUT,   DIALECT_OLLAMA,  FAN_DELETE,  UNLOAD_NONE,      0, 1, 1, 0, 0},
    {PATH("/api/blobs/"),         ANY,   EP_PASS,     DIALECT_OLLAMA,  0,           UNLOAD_NONE,      0, 0, 1, 0, 0},
    {PATH("/api/generate"),       POST,  EP_INFER,    DIALECT_OLLAMA,  0,           UNLOAD_PROMPT,    1, 0, 0, 0, 0},
    {PATH("/api/chat"),           POST,  EP_INFER,    DIALECT_OLLAMA,  0,           UNLOAD_MESSAGES,  1, 0, 0, 0, 0},
    {PATH("/api/embed"),          POST,  EP_INFER,    DIALECT_OLLAMA,  0,           UNLOAD_NONE,      1, 0, 0, 0, 0},
    {PATH("/api/embeddings"),     POST,  EP_INFER,    DIALECT_OLLAMA,  0,           UNLOAD_NONE,      1, 0, 0, 0, 0},
    {PATH("/api/show"),           POST,  EP_META,     DIALECT_OLLAMA,  0,           UNLOAD_NONE,      1, 1, 0, 0, 0},
    {PATH("/v1/chat/completions"), POST,  EP_INFER,    DIALECT_OPENAI,  0,           UNLOAD_NONE,      1, 0, 0, 0, 0},
    {PATH("/v1/completions"),     POST,  EP_INFER,    DIALECT_OPENAI,  0,           UNLOAD_NONE,      1, 0, 0, 0, 0},
    {PATH("/v1/embeddings"),      POST,  EP_INFER,    DIALECT_OPENAI,  0,           UNLOAD_NONE,      1, 0, 0, 0, 0},
};
#undef PATH
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

/* The request is an unload, as Ollama decides it (server/routes.go): an
 * empty prompt (generate) or no messages (chat) with keep_alive zero.
 * A body with a value of the wrong type is none: Ollama refuses it (400),
 * and the proxy lets it take a slot and hear that from the backend. */
static int is_unload(const struct endpoint *ep, const struct jscan_result *js)
{
    if (js->keep_alive != JSCAN_KA_ZERO || js->wrong_type)
        return 0;
    if (ep->unload == UNLOAD_PROMPT)
        return js->prompt != 1;
    if (ep->unload == UNLOAD_MESSAGES)
        return js->messages != 1;
    return 0;
}

/* Read the model of R's body, as the backend will (jscan.h), into R; its
 * unload verdict into *UNLOAD. Returns 0, or -1 after answering. */
static int parse_body(struct request *r, const struct endpoint *ep, int *unload)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(b), mlen;
    const char *body, *m;
    struct jscan_result js;
    char why[160], msg[200], model[REQUEST_MODEL_MAX];
    int mesc;
    if (len == 0) {
        reply_error(r, 400, "missing request body", 0);
        return -1;
    }
    body = (const char *)evbuffer_pullup(b, -1);
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
    }
    if (request_set_model(r, model) < 0) {
        reply_error(r, 503, "out of memory", 1);
        return -1;
    }
    *unload = is_unload(ep, &js);
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

/* R (of row EP, kind KIND) needs no key. */
static int is_open(const struct proxy *px, const struct endpoint *ep, enum ep_kind kind)
{
    if (!ep || kind == EP_PASS || !ep->open)
        return 0;
    return ep->open != OPEN_METRICS || !px->cfg->metrics_key_required;
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
    int key, rc, unload = 0;

    px->requests++;
    conns_request_arrived(px, req);
    request_init(&r, req, uri);
    /* Routing, keys and fan-outs are decided on the path as Ollama will
     * route it (decoded), and what is forwarded decodes to that path. */
    if ((rc = urlpath_normalize(uri, path, sizeof path, target, sizeof target, &why)) < 0) {
        char msg[128];
        r.dialect = strncmp(uri, "/v1/", 4) == 0 ? DIALECT_OPENAI : DIALECT_OLLAMA;
        snprintf(msg, sizeof msg, "bad request target: %s", why);
        reply_error(&r, rc == URLPATH_ELONG ? 414 : 400, msg, 0);
        goto self;
    }
    net_copy(r.path, sizeof r.path, target, NULL);
    ep = router_find(path);
    kind = ep && (!ep->methods || (ep->methods & cmd)) ? ep->kind : EP_PASS;
    r.dialect = ep ? ep->dialect : strncmp(path, "/v1/", 4) == 0 ? DIALECT_OPENAI : DIALECT_OLLAMA;
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
        (ep && ep->model && kind != EP_PASS && parse_body(&r, ep, &unload) < 0))
        goto self;
    if (kind == EP_PS && !catalog_known(px)) { /* nobody in service to ask */
        catalog_reply(px, &r, path);
        goto self;
    }
    if (kind == EP_PS || kind == EP_FANOUT || unload) { /* R moves to the fan-out */
        fanout_start(px, &r, unload ? FAN_UNLOAD : ep->fan, path);
        return;
    }
    /* Reads that never run on a GPU take no slot and wait behind no
     * inference (sched.h, SCHED_META_CAP). */
    r.meta = kind == EP_META || cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    {
        struct session_info in = {&r, target, auth_client(px, &r, key)};
        session_start(px, &in); /* R moves to the session */
    }
    return;
self:
    reqlog_end(px, &r, "self");
    request_cleanup(&r);
}

int router_start(struct proxy *px)
{
    return conns_start(px, on_request);
}
