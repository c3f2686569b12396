/* catalog.c - see catalog.h.
 *
 * The union of the fleet's models is kept built (struct catalog), with the
 * text of /api/tags and /v1/models made from it, so that a GET sends a
 * reference to a buffer instead of rebuilding, sorting and serialising
 * 80,000 entries on the event loop. What the union is made of is its key:
 * the stale flag and, in fleet order, the tags_gen of every backend it is
 * built from (discover.c draws a new one, unique in the process, whenever
 * a backend's list of models changes). A GET compares the key (a few
 * integers a backend) and rebuilds only when it differs: a backend's list
 * changed, or a backend entered or left service, joined or was retired.
 * Each text is made on the first GET that needs it; a text still being
 * sent to a client when the union is replaced lives until that send ends
 * (struct text is counted). */
#include "catalog.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "log.h"
#include "net.h"
#include "names.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"

/* A serialised answer, shared by the cache and every reply being sent. */
struct text {
    int refs;
    size_t len;
    char *data;
};

struct catalog {
    int stale;                   /* the key: built in this mode */
    unsigned long long *gens;    /* the key: the tags_gen of each backend used, in order */
    int ngens, gens_cap;
    int built;                   /* the union below is made for this key */
    json_t *tags;                /* the union, newest first (entries borrowed from backends') */
    json_t *by_key;              /* name_key -> entry of tags, for /v1/models/M; NULL until asked */
    struct text *tags_text, *v1_text; /* NULL until asked */
};

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

/* The union TAGS (borrowed) in OpenAI's shape. */
static json_t *v1_models(json_t *tags)
{
    json_t *data = json_array(), *m;
    size_t i;
    json_array_foreach(tags, i, m) {
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:o}", "id", str(m, "name"),
                                              "object", "model", "created",
                                              (json_int_t)unix_time(str(m, "modified_at")),
                                              "owned_by", owner(str(m, "name"))));
    }
    if (json_array_size(data) == 0) { /* Ollama sends null for none */
        json_decref(data);
        data = json_null();
    }
    return json_pack("{s:s,s:o}", "object", "list", "data", data);
}

static void text_unref(struct text *t)
{
    if (t && --t->refs == 0) {
        free(t->data);
        free(t);
    }
}

/* evbuffer's cleanup of a reference (evbuffer_add_reference). */
static void on_text_sent(const void *data, size_t len, void *arg)
{
    (void)data, (void)len;
    text_unref(arg);
}

/* O's compact text (O's reference taken); NULL when out of memory. */
static struct text *text_of(json_t *o)
{
    struct text *t = calloc(1, sizeof *t);
    if (t && o && (t->data = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        t->refs = 1;
        t->len = strlen(t->data);
    } else {
        free(t);
        t = NULL;
    }
    json_decref(o);
    return t;
}

/* Forget the union and its texts (the key stays). */
static void forget(struct catalog *c)
{
    json_decref(c->tags);
    json_decref(c->by_key);
    text_unref(c->tags_text);
    text_unref(c->v1_text);
    c->tags = c->by_key = NULL;
    c->tags_text = c->v1_text = NULL;
    c->built = 0;
}

void catalog_free(struct proxy *px)
{
    struct catalog *c = px->catalog;
    if (!c)
        return;
    forget(c);
    free(c->gens);
    free(c);
    px->catalog = NULL;
}

/* Make C's key the fleet's now (STALE as choose() said): 1 if it changed,
 * -1 when out of memory. */
static int rekey(struct proxy *px, struct catalog *c, int stale)
{
    int n = 0, changed = c->stale != stale || !c->built;
    for (int b = 0; b < px->nbackends; b++) {
        const struct backend *be = px->backends[b];
        if (!usable(be, stale))
            continue;
        if (n == c->gens_cap) {
            int cap = c->gens_cap ? 2 * c->gens_cap : 16;
            unsigned long long *g = realloc(c->gens, (size_t)cap * sizeof *g);
            if (!g)
                return -1;
            c->gens = g, c->gens_cap = cap;
        }
        changed |= n >= c->ngens || c->gens[n] != be->tags_gen;
        c->gens[n++] = be->tags_gen;
    }
    changed |= n != c->ngens;
    c->ngens = n;
    c->stale = stale;
    return changed;
}

/* The cache, its union made for the fleet as it is now (STALE as choose()
 * said); NULL when out of memory. */
static struct catalog *current(struct proxy *px, int stale)
{
    struct catalog *c = px->catalog;
    int changed;
    if (!c && !(c = px->catalog = calloc(1, sizeof *c)))
        return NULL;
    if ((changed = rekey(px, c, stale)) < 0) {
        forget(c);
        return NULL;
    }
    if (changed || !c->built) {
        double t0 = net_now_ms();
        forget(c);
        if (!(c->tags = union_tags(px, stale)))
            return NULL;
        c->built = 1;
        log_info("catalog: the union made again: %zu models of %d backends%s, %.1f ms",
                 json_array_size(c->tags), c->ngens, stale ? " (stale)" : "",
                 net_now_ms() - t0);
    }
    return c;
}

/* R's answer: T (a reference of the reply's own), or 500 when T is NULL. */
static void reply_text(struct request *r, struct text *t, int stale)
{
    struct evbuffer *b;
    if (!t || !(b = evbuffer_new())) {
        reply_error(r, 500, "cannot encode the answer", 0);
        return;
    }
    if (evhttp_request_get_command(r->req) != EVHTTP_REQ_HEAD) {
        t->refs++;
        if (evbuffer_add_reference(b, t->data, t->len, on_text_sent, t) < 0) {
            t->refs--;
            evbuffer_free(b);
            reply_error(r, 500, "out of memory", 0);
            return;
        }
    }
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "application/json; charset=utf-8");
    if (stale)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), CATALOG_STALE_HEADER,
                          "no backend in service; as the backends said last");
    reply_send(r, 200, b);
    evbuffer_free(b);
}

/* GET /api/tags and /v1/models from the cache. */
static void reply_listing(struct proxy *px, struct request *r, int v1, int stale)
{
    struct catalog *c = current(px, stale);
    struct text **t = c ? (v1 ? &c->v1_text : &c->tags_text) : NULL;
    if (t && !*t)
        *t = text_of(v1 ? v1_models(c->tags)
                        : json_pack("{s:O}", "models", c->tags));
    reply_text(r, t ? *t : NULL, stale);
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

/* C's entries by name_key(), made on the first /v1/models/M; -1 when out
 * of memory. A name that has no key (too long) is not found, as before. */
static int index_by_key(struct catalog *c)
{
    json_t *m;
    size_t i;
    char key[NAME_KEY_MAX];
    if (c->by_key)
        return 0;
    if (!(c->by_key = json_object()))
        return -1;
    json_array_foreach(c->tags, i, m) {
        if (name_key(str(m, "name"), key, sizeof key) == 0 && !json_object_get(c->by_key, key))
            json_object_set(c->by_key, key, m);
    }
    return 0;
}

/* GET /v1/models/M: the union's entry for M, OpenAI's shape. */
static void reply_v1_model(struct proxy *px, struct request *r, const char *id, int stale)
{
    struct catalog *c = current(px, stale);
    json_t *m, *found = NULL;
    char want[NAME_KEY_MAX], msg[NAME_KEY_MAX + 64];
    if (!c || index_by_key(c) < 0) {
        reply_error(r, 503, "out of memory", 1);
        return;
    }
    if (name_key(id, want, sizeof want) == 0 && (m = json_object_get(c->by_key, want)))
        found = json_pack("{s:s,s:s,s:I,s:o}", "id", id, "object", "model", "created",
                          (json_int_t)unix_time(str(m, "modified_at")), "owned_by",
                          owner(str(m, "name")));
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
        reply_listing(px, r, 0, stale);
    else if (strcmp(path, "/api/ps") == 0) /* nothing out of service runs a model for us */
        reply(r, json_pack("{s:o}", "models", stale ? json_array() : all_ps(px, 0)), stale);
    else if (strcmp(path, "/v1/models") == 0)
        reply_listing(px, r, 1, stale);
    else
        reply_v1_model(px, r, path + 11, stale);
    return 1;
}
