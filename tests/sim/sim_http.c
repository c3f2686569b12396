/* sim_http.c - the HTTP front: the Host and Origin guards, routing by path
 * and method (gin's 404/405 texts), the management endpoints, and the
 * /_sim test endpoints. Inference paths go to sim_infer.c. */
#include "sim.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "names.h"
#include "net.h"

static struct evbuffer *last_headers; /* "name\0value\0"... of the last request */

enum route_id {
    R_ROOT,
    R_VERSION,
    R_TAGS,
    R_PS,
    R_SHOW,
    R_PULL,
    R_DELETE,
    R_COPY,
    R_GENERATE,
    R_CHAT,
    R_EMBED,
    R_EMBEDDINGS,
    R_V1_CHAT,
    R_V1_COMPL,
    R_V1_EMBED,
    R_V1_MODELS,
    R_V1_MODEL,
    R_MESSAGES,
    R_RESPONSES,
    R_CREATE,
    R_BLOB,
    R_TRANSCRIBE,
    R_STATS,
    R_RESET,
    R_COUNT /* not a route: the number of them */
};

struct route {
    const char *path;
    int methods;
    enum route_id id;
};

#define GH (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)
static long path_counts[R_COUNT]; /* requests by route, for /_sim/stats */

static const struct route routes[] = {
    {"/", GH, R_ROOT},
    {"/api/version", GH, R_VERSION},
    {"/api/tags", GH, R_TAGS},
    {"/api/ps", EVHTTP_REQ_GET, R_PS},
    {"/api/show", EVHTTP_REQ_POST, R_SHOW},
    {"/api/pull", EVHTTP_REQ_POST, R_PULL},
    {"/api/delete", EVHTTP_REQ_DELETE, R_DELETE},
    {"/api/copy", EVHTTP_REQ_POST, R_COPY},
    {"/api/generate", EVHTTP_REQ_POST, R_GENERATE},
    {"/api/chat", EVHTTP_REQ_POST, R_CHAT},
    {"/api/embed", EVHTTP_REQ_POST, R_EMBED},
    {"/api/embeddings", EVHTTP_REQ_POST, R_EMBEDDINGS},
    {"/v1/chat/completions", EVHTTP_REQ_POST, R_V1_CHAT},
    {"/v1/completions", EVHTTP_REQ_POST, R_V1_COMPL},
    {"/v1/embeddings", EVHTTP_REQ_POST, R_V1_EMBED},
    {"/v1/models", EVHTTP_REQ_GET, R_V1_MODELS},
    {"/v1/messages", EVHTTP_REQ_POST, R_MESSAGES},
    {"/v1/responses", EVHTTP_REQ_POST, R_RESPONSES},
    {"/api/create", EVHTTP_REQ_POST, R_CREATE},
    {"/v1/audio/transcriptions", EVHTTP_REQ_POST, R_TRANSCRIBE},
    {"/_sim/stats", EVHTTP_REQ_GET, R_STATS},
    {"/_sim/reset", EVHTTP_REQ_POST, R_RESET},
};

/* The route's name in /_sim/stats: its path, or its pattern. */
static const char *route_name(enum route_id id)
{
    if (id == R_V1_MODEL)
        return "/v1/models/{model}";
    if (id == R_BLOB)
        return "/api/blobs/{digest}";
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (routes[i].id == id)
            return routes[i].path;
    return "?";
}

void http_count_path(const char *route)
{
    for (int id = 0; id < R_COUNT; id++)
        if (!strcmp(route_name((enum route_id)id), route))
            path_counts[id]++;
}

/* ---- reply helpers ---- */

void http_send_typed(struct evhttp_request *req, int code, const char *type, struct evbuffer *b)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (type)
        evhttp_add_header(h, "Content-Type", type);
    evhttp_send_reply(req, code, NULL, b);
}

void http_send_json(struct evhttp_request *req, int code, struct evbuffer *b)
{
    http_send_typed(req, code, "application/json; charset=utf-8", b);
}

static void send_text(struct evhttp_request *req, int code, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    http_send_typed(req, code, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

static void send_empty(struct evhttp_request *req, int code)
{
    evhttp_send_reply(req, code, NULL, NULL);
}

void http_send_error(struct evhttp_request *req, int code, const char *msg, enum err_shape shape)
{
    struct evbuffer *b = evbuffer_new();
    if (shape == SHAPE_ANTHROPIC) { /* anthropic.NewError */
        const char *type = code == 400                  ? "invalid_request_error"
                           : code == 401                ? "authentication_error"
                           : code == 403                ? "permission_error"
                           : code == 404                ? "not_found_error"
                           : code == 429                ? "rate_limit_error"
                           : code == 503 || code == 529 ? "overloaded_error"
                                                        : "api_error";
        char id[48];
        anth_new_id(id, sizeof id, "req");
        evbuffer_add_printf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
        fmt_jcstr(b, msg);
        evbuffer_add_printf(b, "},\"request_id\":\"%s\"}\n", id);
    } else if (shape == SHAPE_OPENAI) {
        const char *type = code == 400   ? "invalid_request_error"
                           : code == 404 ? "not_found_error"
                                         : "api_error";
        ADD_LIT(b, "{\"error\":{\"message\":");
        fmt_jcstr(b, msg);
        evbuffer_add_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":null}}", type);
    } else {
        ADD_LIT(b, "{\"error\":");
        fmt_jcstr(b, msg);
        ADD_LIT(b, "}");
    }
    http_send_json(req, code, b);
    evbuffer_free(b);
}

/* ---- guards ---- */

static const char *const default_origins[] = {
    "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
    "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://0.0.0.0",   "https://0.0.0.0",   "http://0.0.0.0:*",   "https://0.0.0.0:*",
    "app://*",          "file://*",          "tauri://*",          "vscode-webview://*",
    "vscode-file://*"};

static int origin_allowed(const char *origin, const char *host)
{
    char same[300];
    for (size_t i = 0; i < sizeof default_origins / sizeof *default_origins; i++)
        if (!fnmatch(default_origins[i], origin, 0))
            return 1;
    if (host) {
        snprintf(same, sizeof same, "http://%s", host);
        if (!strcmp(origin, same))
            return 1;
        snprintf(same, sizeof same, "https://%s", host);
        if (!strcmp(origin, same))
            return 1;
    }
    const char *env = getenv("OLLAMA_ORIGINS");
    if (env && *env) {
        char *dup = strdup(env), *save = NULL;
        int okay = 0;
        for (char *t = strtok_r(dup, ",", &save); t && !okay; t = strtok_r(NULL, ",", &save))
            okay = !strcmp(t, "*") || !fnmatch(t, origin, 0);
        free(dup);
        return okay;
    }
    return 0;
}

/* Returns 1 when the request was answered (403, or a CORS preflight). */
static int guard(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *host = evhttp_find_header(in, "Host");
    const char *origin = evhttp_find_header(in, "Origin");
    if (origin) {
        if (!origin_allowed(origin, host)) {
            send_empty(req, 403);
            return 1;
        }
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
        evhttp_add_header(out, "Vary", "Origin");
        if (evhttp_request_get_command(req) == EVHTTP_REQ_OPTIONS) {
            evhttp_add_header(out, "Access-Control-Allow-Methods",
                              "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS");
            evhttp_add_header(out, "Access-Control-Allow-Headers",
                              "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,"
                              "OpenAI-Beta,x-stainless-arch,x-stainless-os,x-stainless-runtime");
            evhttp_add_header(out, "Access-Control-Max-Age", "43200");
            send_empty(req, 204);
            return 1;
        }
    }
    if (simcfg.loopback && !net_host_local(host)) { /* Ollama's DNS-rebinding guard */
        send_empty(req, 403);
        return 1;
    }
    return 0;
}

void http_note_request(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    if (!last_headers)
        last_headers = evbuffer_new();
    evbuffer_drain(last_headers, evbuffer_get_length(last_headers));
    TAILQ_FOREACH(kv, in, next)
    {
        evbuffer_add(last_headers, kv->key, strlen(kv->key) + 1);
        evbuffer_add(last_headers, kv->value, strlen(kv->value) + 1);
    }
}

/* ---- management endpoints ---- */

static json_t *body_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return NULL;
    return json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL);
}

/* The "model" (or legacy "name") of a management request, or NULL after
 * answering 400. *ROOT is set and must be released. */
static const char *body_model(struct evhttp_request *req, json_t **root)
{
    *root = body_json(req);
    if (!*root) {
        size_t len = evbuffer_get_length(evhttp_request_get_input_buffer(req));
        http_send_error(req, 400, len ? "unexpected EOF" : "missing request body", 0);
        return NULL;
    }
    const char *m = json_string_value(json_object_get(*root, "model"));
    if (!m || !*m)
        m = json_string_value(json_object_get(*root, "name"));
    if (!m || !*m) {
        http_send_error(req, 400, "model is required", 0);
        return NULL;
    }
    return m;
}

static void not_found_model(struct evhttp_request *req, const char *name)
{
    char msg[NAME_KEY_MAX + 32];
    snprintf(msg, sizeof msg, "model '%s' not found", name);
    http_send_error(req, 404, msg, 0);
}

static void model_entry(struct evbuffer *b, const struct model *m, int ps)
{
    char t[64];
    evbuffer_add_printf(b, "{\"name\":\"%s\",\"model\":\"%s\",", m->display, m->display);
    if (!ps) {
        fmt_local_time(t, sizeof t, m->modified_wall);
        evbuffer_add_printf(b, "\"modified_at\":\"%s\",", t);
    }
    evbuffer_add_printf(b, "\"size\":%lld,\"digest\":\"%s\",\"details\":", m->size, m->digest);
    fmt_details(b, m);
    if (ps) {
        fmt_local_time(t, sizeof t, m->expires_wall);
        evbuffer_add_printf(b, ",\"expires_at\":\"%s\",\"size_vram\":%lld,\"context_length\":%d", t,
                            m->size, m->num_ctx ? m->num_ctx : SIM_DEFAULT_CTX);
    }
    evbuffer_add(b, "}", 1);
}

static int by_modified(const void *a, const void *b)
{
    const struct model *x = *(struct model *const *)a, *y = *(struct model *const *)b;
    return x->modified_wall < y->modified_wall ? 1 : x->modified_wall > y->modified_wall ? -1 : 0;
}

static int by_expiry(const void *a, const void *b)
{
    const struct model *x = *(struct model *const *)a, *y = *(struct model *const *)b;
    return x->expires_wall < y->expires_wall ? 1 : x->expires_wall > y->expires_wall ? -1 : 0;
}

/* Installed (PS = 0) or loaded/loading (PS = 1) models, sorted. */
static int model_list(struct model **out, int ps)
{
    int n = 0;
    for (int i = 0; i < sched_nmodels(); i++) {
        struct model *m = sched_model(i);
        if (ps ? m->state != MS_UNLOADED : m->installed)
            out[n++] = m;
    }
    qsort(out, (size_t)n, sizeof *out, ps ? by_expiry : by_modified);
    return n;
}

static void do_models(struct evhttp_request *req, int ps)
{
    struct evbuffer *b = evbuffer_new();
    struct model **list = calloc((size_t)sched_nmodels() + 1, sizeof *list);
    int n = model_list(list, ps);
    evbuffer_add(b, "{\"models\":[", 11);
    for (int i = 0; i < n; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        model_entry(b, list[i], ps);
    }
    evbuffer_add(b, "]}", 2);
    http_send_json(req, 200, b);
    evbuffer_free(b);
    free(list);
}

static const char *owner(const struct model *m)
{
    static char ns[96];
    const char *s = strchr(m->key, '/');
    const char *e = s ? strchr(s + 1, '/') : NULL;
    snprintf(ns, sizeof ns, "%.*s", e ? (int)(e - s - 1) : 7, e ? s + 1 : "library");
    return ns;
}

/* An OpenAI model object; ID as listed, or as asked for (/v1/models/M
 * answers the name as given, as Ollama's RetrieveMiddleware does). */
static void v1_model(struct evbuffer *b, const struct model *m, const char *id)
{
    evbuffer_add(b, "{\"id\":", 6);
    fmt_jcstr(b, id ? id : m->display);
    evbuffer_add_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"%s\"}",
                        (long)m->modified_wall, owner(m));
}

static void do_v1_models(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    struct model **list = calloc((size_t)sched_nmodels() + 1, sizeof *list);
    int n = model_list(list, 0);
    evbuffer_add(b, "{\"object\":\"list\",\"data\":", 24);
    if (n == 0)
        evbuffer_add(b, "null", 4);
    for (int i = 0; i < n; i++) {
        evbuffer_add(b, i ? "," : "[", 1);
        v1_model(b, list[i], NULL);
    }
    evbuffer_add(b, n ? "]}" : "}", n ? 2 : 1);
    http_send_json(req, 200, b);
    evbuffer_free(b);
    free(list);
}

static void do_v1_model(struct evhttp_request *req, const char *name)
{
    char dec[NAME_KEY_MAX];
    char *d = evhttp_uridecode(name, 0, NULL);
    snprintf(dec, sizeof dec, "%s", d ? d : name);
    free(d);
    struct model *m = sched_find(dec);
    if (!m) {
        char msg[NAME_KEY_MAX + 32];
        snprintf(msg, sizeof msg, "model '%s' not found", dec);
        http_send_error(req, 404, msg, 1);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    v1_model(b, m, dec);
    http_send_json(req, 200, b);
    evbuffer_free(b);
}

static void do_show(struct evhttp_request *req)
{
    json_t *root;
    const char *name = body_model(req, &root);
    struct model *m = name ? sched_find(name) : NULL;
    if (name && !m)
        not_found_model(req, name);
    if (m) {
        char t[64];
        struct evbuffer *b = evbuffer_new();
        fmt_local_time(t, sizeof t, m->modified_wall);
        evbuffer_add_printf(b,
                            "{\"license\":\"simulated\",\"modelfile\":\"# Modelfile generated by "
                            "ollama-sim\\nFROM %s\\n\",\"parameters\":\"stop \\\"<|eot_id|>\\\"\","
                            "\"template\":\"{{ .Prompt }}\",\"details\":",
                            m->display);
        fmt_details(b, m);
        evbuffer_add_printf(b,
                            ",\"model_info\":{\"general.architecture\":\"%s\","
                            "\"general.parameter_count\":%lld,\"%s.context_length\":8192,"
                            "\"%s.embedding_length\":4096},\"capabilities\":[%s],"
                            "\"modified_at\":\"%s\"}",
                            m->family, m->size * 2, m->family, m->family,
                            m->embedding ? "\"embedding\"" : "\"completion\",\"tools\"", t);
        http_send_json(req, 200, b);
        evbuffer_free(b);
    }
    json_decref(root);
}

static void do_pull(struct evhttp_request *req)
{
    json_t *root;
    const char *name = body_model(req, &root);
    if (name) {
        struct model *m = sched_add(name);
        if (!m) {
            http_send_error(req, 400, "invalid model name", 0);
        } else if (json_is_false(json_object_get(root, "stream"))) {
            struct evbuffer *b = evbuffer_new();
            evbuffer_add_printf(b, "{\"status\":\"success\"}");
            http_send_json(req, 200, b);
            evbuffer_free(b);
        } else {
            struct evbuffer *b = evbuffer_new();
            evbuffer_add_printf(b, "{\"status\":\"pulling manifest\"}\n");
            evbuffer_add_printf(b,
                                "{\"status\":\"pulling %.12s\",\"digest\":\"sha256:%s\","
                                "\"total\":%lld}\n",
                                m->digest, m->digest, m->size);
            evbuffer_add_printf(b,
                                "{\"status\":\"pulling %.12s\",\"digest\":\"sha256:%s\","
                                "\"total\":%lld,\"completed\":%lld}\n",
                                m->digest, m->digest, m->size, m->size);
            evbuffer_add_printf(b, "{\"status\":\"verifying sha256 digest\"}\n"
                                   "{\"status\":\"writing manifest\"}\n"
                                   "{\"status\":\"removing unused layers\"}\n"
                                   "{\"status\":\"success\"}\n");
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "application/x-ndjson");
            evhttp_send_reply_start(req, 200, "OK");
            evhttp_send_reply_chunk(req, b);
            evhttp_send_reply_end(req);
            evbuffer_free(b);
        }
    }
    json_decref(root);
}

static void do_delete(struct evhttp_request *req)
{
    json_t *root;
    const char *name = body_model(req, &root);
    struct model *m = name ? sched_find(name) : NULL;
    if (name && !m)
        not_found_model(req, name);
    if (m) {
        sched_remove(m);
        send_empty(req, 200);
    }
    json_decref(root);
}

static void do_copy(struct evhttp_request *req)
{
    json_t *root = body_json(req);
    const char *src = json_string_value(json_object_get(root, "source"));
    const char *dst = json_string_value(json_object_get(root, "destination"));
    char msg[NAME_KEY_MAX + 32];
    struct model *m = src ? sched_find(src) : NULL;
    if (!root) {
        http_send_error(req, 400, "missing request body", 0);
    } else if (!src || !*src || !dst || !*dst) {
        http_send_error(req, 400, "source and destination are required", 0);
    } else if (!m) {
        snprintf(msg, sizeof msg, "model \"%s\" not found", src);
        http_send_error(req, 404, msg, 0);
    } else {
        struct model *d = sched_add(dst);
        if (d && d != m) {
            memcpy(d->digest, m->digest, sizeof d->digest);
            d->size = m->size;
        }
        send_empty(req, d ? 200 : 400);
    }
    json_decref(root);
}

/* ---- /_sim ---- */

static void counts(struct evbuffer *b, const struct sim_counts *c, int global)
{
    evbuffer_add_printf(b,
                        "\"in_flight\":%ld,\"max_in_flight\":%ld,\"queued\":%ld,\"served\":%ld,"
                        "\"cancelled\":%ld,\"rejected\":%ld,",
                        c->in_flight, c->max_in_flight, c->queued, c->served, c->cancelled,
                        c->rejected);
    if (global)
        evbuffer_add_printf(b, "\"failed\":%ld,\"resets\":%ld,\"loads\":%ld,\"requests\":%ld",
                            c->failed, c->resets, c->loads, c->requests);
    else
        evbuffer_add_printf(b, "\"loads\":%ld", c->loads);
    evbuffer_add_printf(b,
                        ",\"reloads\":%ld,\"prompt_processed\":%ld,\"prompt_reused\":%ld,"
                        "\"prompt_restored\":%ld",
                        c->reloads, c->prompt_processed, c->prompt_reused, c->prompt_restored);
}

static void headers_json(struct evbuffer *b)
{
    json_t *o = json_object();
    size_t len = last_headers ? evbuffer_get_length(last_headers) : 0;
    const char *p = len ? (const char *)evbuffer_pullup(last_headers, -1) : NULL, *end = p + len;
    while (p && p < end) {
        const char *k = p, *v = p + strlen(p) + 1;
        json_object_set_new(o, k, json_string(v));
        p = v + strlen(v) + 1;
    }
    char *s = json_dumps(o, JSON_COMPACT);
    evbuffer_add(b, s, strlen(s));
    free(s);
    json_decref(o);
}

static void do_stats(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "{", 1);
    counts(b, &simstats, 1);
    evbuffer_add(b, ",\"last_headers\":", 16);
    headers_json(b);
    evbuffer_add(b, ",\"paths\":{", 10);
    int any = 0;
    for (int id = 0; id < R_COUNT; id++) {
        if (!path_counts[id])
            continue;
        evbuffer_add_printf(b, "%s\"%s\":%ld", any ? "," : "", route_name((enum route_id)id),
                            path_counts[id]);
        any = 1;
    }
    evbuffer_add(b, "}", 1);
    evbuffer_add(b, ",\"models\":{", 11);
    int first = 1;
    for (int i = 0; i < sched_nmodels(); i++) {
        struct model *m = sched_model(i);
        if (!m->installed && m->state == MS_UNLOADED)
            continue;
        evbuffer_add_printf(b, "%s\"%s\":{", first ? "" : ",", m->display);
        counts(b, &m->c, 0);
        evbuffer_add_printf(b, ",\"loaded\":%s,\"slots\":[",
                            m->state == MS_LOADED ? "true" : "false");
        for (int k = 0; k < m->nslots; k++) /* tokens in each slot's cache */
            evbuffer_add_printf(
                b, "%s%d", k ? "," : "",
                m->slots[k].text ? text_count_tokens(m->slots[k].text, m->slots[k].len) : 0);
        evbuffer_add(b, "]}", 2);
        first = 0;
    }
    evbuffer_add(b, "}}", 2);
    http_send_json(req, 200, b);
    evbuffer_free(b);
}

/* ---- dispatch ---- */

static void dispatch_route(struct evhttp_request *req, enum route_id id, const char *path)
{
    struct evbuffer *b;
    if (id != R_STATS && id != R_RESET)
        path_counts[id]++;
    switch (id) {
    case R_ROOT: send_text(req, 200, "Ollama is running"); return;
    case R_VERSION:
        b = evbuffer_new();
        evbuffer_add_printf(b, "{\"version\":\"%s\"}", SIM_OLLAMA_VERSION);
        http_send_json(req, 200, b);
        evbuffer_free(b);
        return;
    case R_TAGS: do_models(req, 0); return;
    case R_PS: do_models(req, 1); return;
    case R_SHOW: do_show(req); return;
    case R_PULL: do_pull(req); return;
    case R_DELETE: do_delete(req); return;
    case R_COPY: do_copy(req); return;
    case R_GENERATE: infer_handle(req, JK_GENERATE, path); return;
    case R_CHAT: infer_handle(req, JK_CHAT, path); return;
    case R_EMBED: infer_handle(req, JK_EMBED, path); return;
    case R_EMBEDDINGS: infer_handle(req, JK_EMBEDDINGS, path); return;
    case R_V1_CHAT: infer_handle(req, JK_V1_CHAT, path); return;
    case R_V1_COMPL: infer_handle(req, JK_V1_COMPLETION, path); return;
    case R_V1_EMBED: infer_handle(req, JK_V1_EMBED, path); return;
    case R_V1_MODELS: do_v1_models(req); return;
    case R_MESSAGES: infer_handle(req, JK_MESSAGES, path); return;
    case R_RESPONSES: infer_handle(req, JK_RESPONSES, path); return;
    case R_CREATE: blob_create(req); return;
    case R_TRANSCRIBE: infer_handle(req, JK_TRANSCRIBE, path); return;
    case R_BLOB:
        if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)
            blob_head(req, path + strlen("/api/blobs/"));
        else
            blob_post(req, path + strlen("/api/blobs/"));
        return;
    case R_V1_MODEL: do_v1_model(req, path + strlen("/v1/models/")); return;
    case R_STATS: do_stats(req); return;
    case R_COUNT: return;
    case R_RESET:
        sched_reset_counts();
        memset(path_counts, 0, sizeof path_counts);
        b = evbuffer_new();
        evbuffer_add(b, "{}", 2);
        http_send_json(req, 200, b);
        evbuffer_free(b);
        return;
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    char path[1024];
    (void)arg;
    if (!uri)
        return;
    size_t n = strcspn(uri, "?#");
    if (n >= sizeof path)
        n = sizeof path - 1;
    memcpy(path, uri, n);
    path[n] = '\0';
    int sim = !strncmp(path, "/_sim/", 6);
    if (!sim)
        http_note_request(req);
    if (!sim && guard(req))
        return;
    int method = (int)evhttp_request_get_command(req);
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (strcmp(path, routes[i].path))
            continue;
        if (!(routes[i].methods & method))
            send_text(req, 405, "405 method not allowed");
        else
            dispatch_route(req, routes[i].id, path);
        return;
    }
    const char *rest = path + strlen("/v1/models/");
    if (!strncmp(path, "/v1/models/", 11) && *rest && !strchr(rest, '/')) {
        if (method != EVHTTP_REQ_GET)
            send_text(req, 405, "405 method not allowed");
        else
            dispatch_route(req, R_V1_MODEL, path);
        return;
    }
    rest = path + strlen("/api/blobs/");
    if (!strncmp(path, "/api/blobs/", 11) && *rest && !strchr(rest, '/')) {
        if (method != EVHTTP_REQ_HEAD && method != EVHTTP_REQ_POST)
            send_text(req, 405, "405 method not allowed");
        else
            dispatch_route(req, R_BLOB, path);
        return;
    }
    send_text(req, 404, "404 page not found");
}

int http_setup(struct evhttp *http)
{
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                         EVHTTP_REQ_PATCH | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    evhttp_set_default_content_type(http, NULL); /* every body reply sets its own */
    evhttp_set_max_body_size(http, 64 * 1024 * 1024);
    evhttp_set_gencb(http, on_request, NULL);
    evhttp_set_bevcb(http, conn_new_bev, NULL); /* streams blob uploads: sim_conn.c */
    return 0;
}

void http_free(void)
{
    if (last_headers)
        evbuffer_free(last_headers);
    last_headers = NULL;
}
