/* sim_blob.c - the blob store (HEAD and POST /api/blobs/:digest) and
 * POST /api/create, which makes a model of blobs, as Ollama does
 * (server/routes.go HeadBlobHandler, CreateBlobHandler; server/create.go).
 *
 * A blob is kept as its digest, size and first four bytes; the bytes
 * themselves were digested and dropped as they arrived (sim_conn.c), so a
 * multi-GB upload costs no memory. Digests are "sha256:HEX" or
 * "sha256-HEX" (64 hex digits, either case); the store is keyed as
 * Ollama's blob file name, sha256-HEX with the hex as given.
 *
 * POST answers, in Ollama's order: 400 invalid digest format; 200 (empty)
 * if the blob exists (Ollama does not read the body then: see sim_conn.c);
 * else the body's digest "sha256:" + lowercase hex must equal the digest
 * as given (Ollama compares the strings): 201 (empty), else 400 digest
 * mismatch, expected "D", got "sha256:...". Like Ollama, a mismatched
 * upload is still kept under the digest it has.
 *
 * /api/create with "files" {name: digest} makes a GGUF model: each file in
 * name order is parsed ("parsing GGUF"): a missing blob fails with Go's
 * "open <OLLAMA_MODELS>/blobs/sha256-...: no such file or directory" (500,
 * or in-band once progress has been streamed), a blob that does not start
 * with "GGUF" with 400 "supplied file was not in GGUF format". A file name
 * without .gguf is typed by its blob's magic ("unknown type", 400, when
 * none is GGUF or a blob is missing). Then one "using existing layer"
 * line per file, "creating new layer" for template, system, parameters
 * and license, "writing manifest", "success"; the model is installed
 * (/api/tags), its size the sum of its blobs. "from" copies an installed
 * model. The sim does not convert safetensors (400). */
#include "sim.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct blob {
    char key[72]; /* sha256-HEX */
    unsigned long long size;
    unsigned char magic[4];
};

static struct blob *blobs;
static size_t nblobs, capblobs;

int blob_digest_ok(const char *d)
{
    if (strncmp(d, "sha256", 6) || (d[6] != ':' && d[6] != '-') || strlen(d) != 71)
        return 0;
    for (int i = 7; i < 71; i++)
        if (!isxdigit((unsigned char)d[i]))
            return 0;
    return 1;
}

static struct blob *find(const char *digest)
{
    for (size_t i = 0; i < nblobs; i++)
        if (!strcmp(blobs[i].key + 7, digest + 7))
            return &blobs[i];
    return NULL;
}

int blob_exists(const char *digest)
{
    return blob_digest_ok(digest) && find(digest) != NULL;
}

static void store(const char *hex, unsigned long long size, const unsigned char magic[4])
{
    char key[72];
    snprintf(key, sizeof key, "sha256-%s", hex);
    if (find(key))
        return;
    if (nblobs == capblobs) {
        capblobs = capblobs ? capblobs * 2 : 16;
        blobs = realloc(blobs, capblobs * sizeof *blobs);
    }
    memcpy(blobs[nblobs].key, key, sizeof key);
    blobs[nblobs].size = size;
    memcpy(blobs[nblobs].magic, magic, 4);
    nblobs++;
}

void blob_free_all(void)
{
    free(blobs);
    blobs = NULL;
    nblobs = capblobs = 0;
}

static void send_empty(struct evhttp_request *req, int code)
{
    evhttp_send_reply(req, code, NULL, NULL);
}

/* The path parameter, URI-decoded (an SDK may send %3A). */
static char *param(const char *raw)
{
    char *d = evhttp_uridecode(raw, 0, NULL);
    return d ? d : strdup(raw);
}

void blob_head(struct evhttp_request *req, const char *raw)
{
    char *d = param(raw), msg[128];
    if (!blob_digest_ok(d)) {
        http_send_error(req, 400, "invalid digest format", SHAPE_NATIVE);
    } else if (find(d)) {
        send_empty(req, 200);
    } else {
        snprintf(msg, sizeof msg, "blob \"%s\" not found", d);
        http_send_error(req, 404, msg, SHAPE_NATIVE);
    }
    free(d);
}

void blob_post(struct evhttp_request *req, const char *raw)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *hex = evhttp_find_header(in, "X-Sim-Blob-Sha256");
    const char *size = evhttp_find_header(in, "X-Sim-Blob-Size");
    const char *magic = evhttp_find_header(in, "X-Sim-Blob-Magic");
    char *d = param(raw), msg[256], got[80];
    unsigned char mg[4] = {0};
    if (!blob_digest_ok(d)) {
        http_send_error(req, 400, "invalid digest format", SHAPE_NATIVE);
    } else if (find(d)) {
        send_empty(req, 200);
    } else if (!hex || !size) { /* cannot happen: sim_conn.c digests every upload */
        http_send_error(req, 500, "upload not digested", SHAPE_NATIVE);
    } else {
        for (int i = 0; magic && i < 4 && sscanf(magic + 2 * i, "%2hhx", &mg[i]) == 1; i++)
            ;
        store(hex, strtoull(size, NULL, 10), mg);
        snprintf(got, sizeof got, "sha256:%s", hex);
        if (strcmp(got, d)) {
            snprintf(msg, sizeof msg, "digest mismatch, expected \"%s\", got \"%s\"", d, got);
            http_send_error(req, 400, msg, SHAPE_NATIVE);
        } else {
            send_empty(req, 201);
        }
    }
    free(d);
}

/* ---- /api/create ---- */

/* What create says: progress lines, then success or an error with its
 * status (0: none given, Go's 500). */
struct outcome {
    struct evbuffer *lines;
    int nlines;
    const char *error;
    char errbuf[800];
    int status;
};

/* One progress line: WHAT, then ARG when not NULL. */
static void progress(struct outcome *o, const char *what, const char *arg)
{
    char s[256];
    snprintf(s, sizeof s, "%s%s", what, arg ? arg : "");
    evbuffer_add_printf(o->lines, "{\"status\":");
    fmt_jcstr(o->lines, s);
    evbuffer_add_printf(o->lines, "}\n");
    o->nlines++;
}

static int fail(struct outcome *o, int status, const char *msg)
{
    snprintf(o->errbuf, sizeof o->errbuf, "%s", msg);
    o->error = o->errbuf;
    o->status = status;
    return -1;
}

/* fs.ValidPath: relative, no empty, "." or ".." elements. */
static int valid_path(const char *p)
{
    if (!strcmp(p, "."))
        return 1;
    if (!*p || *p == '/')
        return 0;
    for (const char *s = p;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && !strncmp(s, "..", 2)))
            return 0;
        if (!e)
            return 1;
        s = e + 1;
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *models_dir(char *buf, size_t len)
{
    const char *env = getenv("OLLAMA_MODELS"), *home = getenv("HOME");
    if (env && *env)
        snprintf(buf, len, "%s", env);
    else
        snprintf(buf, len, "%s/.ollama/models", home ? home : "");
    return buf;
}

/* detectModelTypeFromFiles, in name order: "gguf", "safetensors" or "". */
static const char *detect_type(const char **names, size_t n, json_t *files)
{
    for (size_t i = 0; i < n; i++) {
        if (ends_with(names[i], ".safetensors"))
            return "safetensors";
        if (ends_with(names[i], ".gguf"))
            return "gguf";
        const char *d = json_string_value(json_object_get(files, names[i]));
        struct blob *b = d && blob_digest_ok(d) ? find(d) : NULL;
        if (!b)
            return "";
        if (!memcmp(b->magic, "GGUF", 4))
            return "gguf";
    }
    return "";
}

/* The GGUF files: checked and listed as layers. Returns 0 or -1. */
static int gguf_layers(struct outcome *o, const char **names, size_t n, json_t *files,
                       unsigned long long *size)
{
    char dir[512], msg[700];
    for (size_t i = 0; i < n; i++) {
        const char *d = json_string_value(json_object_get(files, names[i]));
        progress(o, "parsing GGUF", NULL);
        if (!blob_digest_ok(d))
            return fail(o, 0, "invalid digest format");
        struct blob *b = find(d);
        if (!b) {
            snprintf(msg, sizeof msg, "open %s/blobs/sha256-%s: no such file or directory",
                     models_dir(dir, sizeof dir), d + 7);
            return fail(o, 0, msg);
        }
        if (memcmp(b->magic, "GGUF", 4))
            return fail(o, 400, "supplied file was not in GGUF format");
        *size += b->size;
    }
    for (size_t i = 0; i < n; i++) {
        const char *d = json_string_value(json_object_get(files, names[i]));
        char layer[80];
        snprintf(layer, sizeof layer, "sha256:%s", d + 7);
        progress(o, "using existing layer ", layer);
    }
    return 0;
}

/* The layers that the request's own fields make. */
static void extra_layers(struct outcome *o, json_t *root)
{
    static const char *const fields[] = {"template", "system", "parameters", "license"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        json_t *v = json_object_get(root, fields[i]);
        if (!v || json_is_null(v))
            continue;
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), hex[65], layer[80];
        struct sha256 c;
        sha256_init(&c);
        sha256_update(&c, s, strlen(s));
        sha256_hex(&c, hex);
        snprintf(layer, sizeof layer, "sha256:%s", hex);
        progress(o, "creating new layer ", layer);
        free(s);
    }
}

/* Make the model NAME of ROOT's files or from. Returns 0 or -1 (O has it). */
static int create_model(struct outcome *o, json_t *root, const char *name)
{
    json_t *files = json_object_get(root, "files");
    const char *from = json_string_value(json_object_get(root, "from"));
    unsigned long long size = 0;
    struct model *src = NULL;
    if (from && *from) {
        if (!(src = sched_find(from)))
            return fail(o, 0, "pull model manifest: file does not exist");
        size = (unsigned long long)src->size;
        progress(o, "using existing layer sha256:", src->digest);
    } else if (json_is_object(files)) {
        size_t n = json_object_size(files), i = 0;
        const char **names = calloc(n ? n : 1, sizeof *names), *k;
        json_t *v;
        json_object_foreach(files, k, v) names[i++] = k;
        qsort(names, n, sizeof *names, by_str);
        const char *type = detect_type(names, n, files);
        int rc = !strcmp(type, "gguf") ? gguf_layers(o, names, n, files, &size)
                 : *type ? fail(o, 400, "ollama-sim does not convert safetensors models")
                         : fail(o, 400, "unknown type");
        free(names);
        if (rc)
            return -1;
    } else {
        return fail(o, 400, "neither 'from' or 'files' was specified");
    }
    extra_layers(o, root);
    progress(o, "writing manifest", NULL);
    struct model *m = sched_add(name);
    if (!m)
        return fail(o, 400, "invalid model name");
    char *doc = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    struct sha256 c;
    sha256_init(&c);
    sha256_update(&c, doc, strlen(doc));
    sha256_hex(&c, m->digest);
    free(doc);
    m->size = (long long)(size ? size : 1);
    progress(o, "success", NULL);
    return 0;
}

/* The checks Ollama makes before it starts (plain 400s). Returns the
 * model name, or NULL after answering. */
static const char *create_checks(struct evhttp_request *req, json_t *root)
{
    const char *k;
    json_t *v, *files = json_object_get(root, "files");
    json_object_foreach(files, k, v)
    {
        if (!valid_path(k)) {
            http_send_error(req, 400, "file path must be relative", SHAPE_NATIVE);
            return NULL;
        }
        if (!json_string_length(v)) {
            http_send_error(req, 400, "invalid digest format", SHAPE_NATIVE);
            return NULL;
        }
    }
    const char *name = json_string_value(json_object_get(root, "model"));
    if (!name || !*name)
        name = json_string_value(json_object_get(root, "name"));
    char key[NAME_KEY_MAX];
    if (!name || name_key(name, key, sizeof key)) {
        http_send_error(req, 400, "invalid model name", SHAPE_NATIVE);
        return NULL;
    }
    return name;
}

static void create_reply(struct evhttp_request *req, struct outcome *o, int stream)
{
    struct evbuffer *b = evbuffer_new();
    int code = o->status ? o->status : 500;
    if (!stream || (o->error && o->nlines == 0)) { /* one object, a real status */
        if (o->error) {
            http_send_error(req, code, o->error, SHAPE_NATIVE);
        } else {
            ADD_LIT(b, "{\"status\":\"success\"}");
            http_send_json(req, 200, b);
        }
    } else { /* NDJSON; an error after progress is an in-band line */
        if (o->error) {
            ADD_LIT(o->lines, "{\"error\":");
            fmt_jcstr(o->lines, o->error);
            ADD_LIT(o->lines, "}\n");
        }
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/x-ndjson");
        evhttp_send_reply_start(req, 200, "OK");
        evhttp_send_reply_chunk(req, o->lines);
        evhttp_send_reply_end(req);
    }
    evbuffer_free(b);
}

void blob_create(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_t *root = len ? json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL) : NULL;
    struct outcome o = {0};
    const char *name;
    if (!root) {
        http_send_error(req, 400, len ? "unexpected EOF" : "missing request body", SHAPE_NATIVE);
        return;
    }
    if ((name = create_checks(req, root)) != NULL) {
        o.lines = evbuffer_new();
        create_model(&o, root, name);
        create_reply(req, &o, !json_is_false(json_object_get(root, "stream")));
        evbuffer_free(o.lines);
    }
    json_decref(root);
}
