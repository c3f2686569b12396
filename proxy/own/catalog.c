/* catalog.c - see catalog.h. */
#include "catalog.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "names.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"

/* In service: up, neither drained nor disabled, nor retired. */
static int in_service(const struct backend *be)
{
    return be->healthy && !be->removed && be->admin == ADMIN_READY;
}

/* The backends the answers are built from: those in service whose models
 * are known; when there is none (STALE), every one whose models were ever
 * known, as they said last. */
static int usable(const struct backend *be, int stale)
{
    return be->models_known && !be->removed && (stale || in_service(be));
}

/* Fresh (0) or stale (1) for the answer about to be built; -1 when
 * nothing is known at all. */
static int choose(struct proxy *px)
{
    int any = 0;
    for (int b = 0; b < px->nbackends; b++) {
        if (px->backends[b]->models_known && in_service(px->backends[b]))
            return 0;
        any |= px->backends[b]->models_known && !px->backends[b]->removed;
    }
    return any ? 1 : -1;
}

static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* Newest first by the member KEY names (RFC 3339 strings of one server
 * compare as text). */
struct sortby {
    const char *key;
};

static int newer_first(const void *a, const void *b, void *arg)
{
    const struct sortby *by = arg;
    return strcmp(str(*(json_t *const *)b, by->key), str(*(json_t *const *)a, by->key));
}

/* ARR (its reference taken) sorted newest first by KEY; NULL when out of
 * memory. */
static json_t *sorted(json_t *arr, const char *key)
{
    size_t n = json_array_size(arr);
    json_t **v = calloc(n + 1, sizeof *v), *out = json_array();
    if (!v || !out) {
        free(v);
        json_decref(out);
        json_decref(arr);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    {
        struct sortby by = {key};
        qsort_r(v, n, sizeof *v, newer_first, &by);
    }
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    json_decref(arr);
    return out;
}

/* One entry per name across the usable backends. */
static json_t *union_tags(struct proxy *px, int stale)
{
    json_t *seen = json_object(), *all = json_array(), *m;
    size_t i;
    for (int b = 0; b < px->nbackends; b++) {
        if (!usable(px->backends[b], stale))
            continue;
        json_array_foreach(px->backends[b]->tags_json, i, m) {
            const char *name = str(m, "name");
            if (*name && !json_object_get(seen, name)) {
                json_object_set_new(seen, name, json_true());
                json_array_append(all, m);
            }
        }
    }
    json_decref(seen);
    return sorted(all, "modified_at");
}

static json_t *all_ps(struct proxy *px, int stale)
{
    json_t *all = json_array(), *m;
    size_t i;
    for (int b = 0; b < px->nbackends; b++) {
        struct backend *be = px->backends[b];
        if (!usable(be, stale))
            continue;
        json_array_foreach(be->ps_json, i, m) {
            json_t *c = json_deep_copy(m);
            json_object_set_new(c, "backend", json_string(be->name));
            json_array_append_new(all, c);
        }
    }
    return sorted(all, "expires_at");
}

/* "2026-01-02T03:04:05.123-07:00" as Unix seconds (0 if unparsable). */
static long long unix_time(const char *t)
{
    struct tm tm;
    const char *p;
    long long s;
    memset(&tm, 0, sizeof tm);
    if (!(p = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)))
        return 0;
    s = (long long)timegm(&tm);
    while (*p == '.' || (*p >= '0' && *p <= '9'))
        p++;
    if ((*p == '+' || *p == '-') && strlen(p) >= 6) {
        long off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60;
        s += *p == '+' ? -off : off;
    }
    return s;
}

/* OpenAI's owned_by: the namespace, "library" by default. */
static json_t *owner(const char *name)
{
    const char *slash = strrchr(name, '/'), *prev;
    if (!slash)
        return json_string("library");
    for (prev = slash; prev > name && prev[-1] != '/'; prev--)
        ;
    return json_stringn(prev, (size_t)(slash - prev));
}

static json_t *v1_models(struct proxy *px, int stale)
{
    json_t *tags = union_tags(px, stale), *data = json_array(), *m;
    size_t i;
    json_array_foreach(tags, i, m) {
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:o}", "id", str(m, "name"),
                                              "object", "model", "created",
                                              (json_int_t)unix_time(str(m, "modified_at")),
                                              "owned_by", owner(str(m, "name"))));
    }
    json_decref(tags);
    if (json_array_size(data) == 0) { /* Ollama sends null for none */
        json_decref(data);
        data = json_null();
    }
    return json_pack("{s:s,s:o}", "object", "list", "data", data);
}

static void reply(struct request *r, json_t *o, int stale)
{
    if (stale)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), CATALOG_STALE_HEADER,
                          "no backend in service; as the backends said last");
    reply_json(r, 200, o);
}

int catalog_known(struct proxy *px)
{
    for (int b = 0; b < px->nbackends; b++)
        if (px->backends[b]->models_known && in_service(px->backends[b]))
            return 1;
    return 0;
}

/* GET /v1/models/M: the union's entry for M, OpenAI's shape. */
static void reply_v1_model(struct proxy *px, struct request *r, const char *id, int stale)
{
    json_t *tags = union_tags(px, stale), *m, *found = NULL;
    char want[NAME_KEY_MAX], key[NAME_KEY_MAX], msg[NAME_KEY_MAX + 64];
    size_t i;
    int have = name_key(id, want, sizeof want) == 0;
    json_array_foreach(tags, i, m) {
        if (have && name_key(str(m, "name"), key, sizeof key) == 0 && !strcmp(key, want)) {
            found = json_pack("{s:s,s:s,s:I,s:o}", "id", id, "object", "model", "created",
                              (json_int_t)unix_time(str(m, "modified_at")), "owned_by",
                              owner(str(m, "name")));
            break;
        }
    }
    json_decref(tags);
    if (found) {
        reply(r, found, stale);
        return;
    }
    snprintf(msg, sizeof msg, "model '%s' not found", id);
    reply_error(r, 404, msg, 0);
}

/* GET /api/version: what a backend in service said to its last health
 * check (else, stale, what any said). */
static void reply_version(struct proxy *px, struct request *r)
{
    const struct backend *src = NULL;
    for (int pass = 0; pass < 2 && !src; pass++)
        for (int b = 0; b < px->nbackends && !src; b++) {
            const struct backend *be = px->backends[b];
            if (be->version[0] && !be->removed && (pass || in_service(be)))
                src = be;
        }
    if (!src) {
        reply_error(r, 503, "no backend has answered yet", 1);
        return;
    }
    reply(r, json_pack("{s:s}", "version", src->version), !in_service(src));
}

int catalog_reply(struct proxy *px, struct request *r, const char *path)
{
    int stale;
    if (strcmp(path, "/api/version") == 0) {
        reply_version(px, r);
        return 1;
    }
    if (strcmp(path, "/api/tags") != 0 && strcmp(path, "/v1/models") != 0 &&
        strncmp(path, "/v1/models/", 11) != 0 && strcmp(path, "/api/ps") != 0)
        return 0;
    if ((stale = choose(px)) < 0) {
        reply_error(r, 503, "no backend has said what models it has yet", 1);
        return 1;
    }
    if (strcmp(path, "/api/tags") == 0)
        reply(r, json_pack("{s:o}", "models", union_tags(px, stale)), stale);
    else if (strcmp(path, "/api/ps") == 0) /* nothing out of service runs a model for us */
        reply(r, json_pack("{s:o}", "models", stale ? json_array() : all_ps(px, 0)), stale);
    else if (strcmp(path, "/v1/models") == 0)
        reply(r, v1_models(px, stale), stale);
    else
        reply_v1_model(px, r, path + 11, stale);
    return 1;
}
