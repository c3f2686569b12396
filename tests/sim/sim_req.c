/* sim_req.c - reading an inference request into a struct ireq, whatever
 * its wire format: the body (JSON, or a multipart form for transcriptions),
 * the checks Ollama makes in its order with its texts (Go's decoder type
 * errors, keep_alive, logprobs, inputs, the model and its capabilities),
 * and the prompt's text (system and messages in order) and the item (the
 * last user message) that the answer and the slot caches depend on. The
 * other formats' own fields are read by anth_parse and resp_parse. */
#include "sim.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static json_t *json_fmt; /* the string "json", for response_format json_object */

void ireq_free_all(void)
{
    json_decref(json_fmt);
    json_fmt = NULL;
}

int ireq_openai(enum job_kind k)
{
    return k == JK_V1_CHAT || k == JK_V1_COMPLETION || k == JK_V1_EMBED || k == JK_RESPONSES ||
           k == JK_TRANSCRIBE;
}

enum err_shape ireq_shape(enum job_kind k)
{
    return k == JK_MESSAGES ? SHAPE_ANTHROPIC : ireq_openai(k) ? SHAPE_OPENAI : SHAPE_NATIVE;
}

int ireq_embedding(enum job_kind k)
{
    return k == JK_EMBED || k == JK_EMBEDDINGS || k == JK_V1_EMBED;
}

static void reject_not_found(struct evhttp_request *req, enum job_kind kind, const char *name)
{
    char msg[NAME_KEY_MAX + 64];
    if (ireq_embedding(kind))
        snprintf(msg, sizeof msg, "model \"%s\" not found, try pulling it first", name);
    else
        snprintf(msg, sizeof msg, "model '%s' not found", name);
    http_send_error(req, 404, msg, ireq_shape(kind));
}

/* ---- parsing ---- */

/* Go's time.ParseDuration, enough of it: [-]N[.F]unit... with units
 * ns us µs ms s m h; "0" alone is allowed. Returns 0 or -1. */
static int parse_go_duration(const char *s, double *secs)
{
    const char *p = s;
    double total = 0, sign = 1;
    if (*p == '-' || *p == '+')
        sign = *p++ == '-' ? -1 : 1;
    if (!strcmp(p, "0")) {
        *secs = 0;
        return 0;
    }
    if (!*p)
        return -1;
    while (*p) {
        char *end;
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return -1;
        double v = strtod(p, &end);
        if (end == p)
            return -1;
        p = end;
        static const struct {
            const char *u;
            double f;
        } units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3},
                     {"s", 1},     {"m", 60},    {"h", 3600}};
        size_t i, best = 0, bestlen = 0;
        for (i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t l = strlen(units[i].u);
            if (!strncmp(p, units[i].u, l) && l > bestlen)
                best = i, bestlen = l;
        }
        if (!bestlen)
            return -2; /* missing unit */
        total += v * units[best].f;
        p += bestlen;
    }
    *secs = sign * total;
    return 0;
}

/* keep_alive: number of seconds or Go duration string; negative = forever.
 * Returns 0, or -1 with the 400 text in ERR. */
static int parse_keep_alive(json_t *v, struct ireq *r, char *err, size_t errlen)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_number(v)) {
        r->ka_s = json_number_value(v);
    } else if (json_is_string(v)) {
        int rc = parse_go_duration(json_string_value(v), &r->ka_s);
        if (rc) {
            snprintf(err, errlen, "time: %s duration \"%s\"",
                     rc == -2 ? "missing unit in" : "invalid", json_string_value(v));
            return -1;
        }
    } else {
        snprintf(err, errlen, "Unsupported type: '%s'",
                 json_is_boolean(v) ? "bool"
                 : json_is_array(v) ? "[]interface {}"
                                    : "map[string]interface {}");
        return -1;
    }
    if (r->ka_s < 0)
        r->ka_s = -1;
    r->ka_set = 1;
    return 0;
}

void ireq_prompt_add(struct ireq *r, const char *s, size_t n)
{
    if (r->plen + n + 1 > r->pcap) {
        while (r->plen + n + 1 > r->pcap)
            r->pcap = r->pcap ? r->pcap * 2 : 256;
        r->prompt = realloc(r->prompt, r->pcap);
    }
    memcpy(r->prompt + r->plen, s, n);
    r->plen += n;
    r->prompt[r->plen] = '\0';
}

void ireq_set_item(struct ireq *r, const char *s, size_t n)
{
    free(r->item);
    r->item = strndup(s, n);
}

void ireq_add_content(struct ireq *r, json_t *c, int depth)
{
    size_t i;
    json_t *p;
    if (json_is_string(c))
        ireq_prompt_add(r, json_string_value(c), json_string_length(c));
    if (!json_is_array(c) || depth > 2)
        return;
    json_array_foreach(c, i, p)
    {
        json_t *t = json_object_get(p, "text");
        if (json_is_string(t))
            ireq_prompt_add(r, json_string_value(t), json_string_length(t));
        else
            ireq_add_content(r, json_object_get(p, "content"), depth + 1);
    }
}

/* Chat messages: the prompt is their contents in order; the item is the
 * last user message. */
static void parse_messages(json_t *msgs, struct ireq *r)
{
    size_t i;
    json_t *msg;
    json_array_foreach(msgs, i, msg)
    {
        size_t at = r->plen;
        ireq_add_content(r, json_object_get(msg, "content"), 0);
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (role && !strcmp(role, "user"))
            ireq_set_item(r, r->prompt + at, r->plen - at);
    }
}

static const char *go_type(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "number";
    }
}

/* Embedding inputs: a string or an array of strings, as an owned array. */
static int parse_inputs(json_t *in, struct ireq *r, int keep_empty)
{
    if (!in) {
        r->inputs = json_array();
        return 0;
    }
    if (json_is_string(in)) {
        r->inputs = json_array();
        if (json_string_length(in) > 0 || keep_empty)
            json_array_append(r->inputs, in);
        return 0;
    }
    if (!json_is_array(in))
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(in, i, v)
    {
        if (!json_is_string(v))
            return -1;
    }
    r->inputs = json_incref(in);
    return 0;
}

static void fill_common(struct ireq *r, enum job_kind kind)
{
    json_t *root = r->root, *opts = json_object_get(root, "options"), *st;
    int v1 = kind == JK_V1_CHAT || kind == JK_V1_COMPLETION || kind == JK_V1_EMBED;
    st = json_object_get(root, "stream");
    r->stream = v1 ? json_is_true(st) : !json_is_false(st);
    r->format = json_object_get(root, "format");
    r->num_predict = (int)json_integer_value(json_object_get(opts, "num_predict"));
    r->num_ctx = (int)json_integer_value(json_object_get(opts, "num_ctx"));
    if (r->num_ctx <= 0)
        r->num_ctx = SIM_DEFAULT_CTX;
    if (v1) {
        json_t *rf = json_object_get(root, "response_format");
        const char *t = json_string_value(json_object_get(rf, "type"));
        if (t && !strcmp(t, "json_object")) {
            if (!json_fmt)
                json_fmt = json_string("json");
            r->format = json_fmt;
        }
        if (t && !strcmp(t, "json_schema"))
            r->format = json_object_get(json_object_get(rf, "json_schema"), "schema");
        json_t *mt = json_object_get(root, "max_tokens");
        if (!mt)
            mt = json_object_get(root, "max_completion_tokens");
        r->num_predict = (int)json_integer_value(mt);
        r->include_usage =
            json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    }
}

/* /v1/embeddings encoding_format: absent, null, "" or "float" answer JSON
 * numbers; "base64" answers the float32 bytes (both in any case, as Go's
 * strings.EqualFold in Ollama's middleware). Returns 0, or -1 after
 * answering 400 with Ollama's text. */
static int parse_encoding(struct evhttp_request *req, json_t *v, struct ireq *r)
{
    char err[400];
    const char *s = json_string_value(v);
    if (!v || json_is_null(v))
        return 0;
    if (!s) {
        snprintf(err, sizeof err,
                 "json: cannot unmarshal %s into Go struct field EmbedRequest.encoding_format"
                 " of type string",
                 go_type(v));
        http_send_error(req, 400, err, 1);
        return -1;
    }
    if (!*s || !strcasecmp(s, "float"))
        return 0;
    if (!strcasecmp(s, "base64")) {
        r->b64 = 1;
        return 0;
    }
    snprintf(err, sizeof err,
             "Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64'].", s);
    http_send_error(req, 400, err, 1);
    return -1;
}

/* Go's decoder refuses a JSON value of the wrong type for a struct field. */
struct field_type {
    const char *name;
    json_type type;
    const char *go;
};

static const struct field_type field_types[] = {
    {"model", JSON_STRING, "string"},          {"prompt", JSON_STRING, "string"},
    {"system", JSON_STRING, "string"},         {"stream", JSON_TRUE, "bool"},
    {"messages", JSON_ARRAY, "[]api.Message"}, {"options", JSON_OBJECT, "map[string]interface {}"},
    {"logprobs", JSON_TRUE, "bool"},           {"top_logprobs", JSON_INTEGER, "int"}};

static int type_ok(json_t *v, json_type want)
{
    if (json_is_null(v))
        return 1;
    if (want == JSON_TRUE)
        return json_is_boolean(v);
    if (want == JSON_INTEGER) /* Go takes 3.0 for an int, not 3.5 */
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    return json_typeof(v) == want;
}

/* Returns 0, or -1 after answering 400 with Go's message. */
static int check_types(struct evhttp_request *req, enum job_kind kind, json_t *root)
{
    static const char *const structs[] = {"GenerateRequest", "ChatRequest",     "", "",
                                          "EmbedRequest",    "EmbeddingRequest"};
    char err[200];
    for (size_t i = 0; i < sizeof field_types / sizeof *field_types; i++) {
        const struct field_type *f = &field_types[i];
        json_t *v = json_object_get(root, f->name);
        if (!v || type_ok(v, f->type))
            continue;
        if (!strcmp(f->name, "messages") && kind != JK_CHAT)
            continue;
        if (!strncmp(f->name, "logprobs", 8) + !strcmp(f->name, "top_logprobs") &&
            ireq_embedding(kind))
            continue;
        snprintf(err, sizeof err, "json: cannot unmarshal %s into Go struct field %s.%s of type %s",
                 go_type(v), structs[kind], f->name, f->go);
        http_send_error(req, 400, err, 0);
        return -1;
    }
    return 0;
}

/* logprobs / top_logprobs as Ollama reads them: native and /v1/chat a bool
 * and a count; /v1/completions one count ("logprobs": N > 0 means N top
 * alternatives). A count outside 0..20 is a 400 before the model is looked
 * up (server/routes.go). Returns 0, or -1 after answering. */
static int parse_logprobs(struct evhttp_request *req, enum job_kind kind, struct ireq *r)
{
    json_t *lp = json_object_get(r->root, "logprobs");
    json_t *top = json_object_get(r->root, "top_logprobs");
    if (kind == JK_V1_COMPLETION) {
        int n = json_is_number(lp) ? (int)json_number_value(lp) : 0;
        r->logprobs = n > 0;
        r->top_logprobs = n > 0 ? n : 0;
    } else {
        r->logprobs = json_is_true(lp);
        r->top_logprobs = json_is_number(top) ? (int)json_number_value(top) : 0;
    }
    if (r->top_logprobs < 0 || r->top_logprobs > 20) {
        http_send_error(req, 400, "top_logprobs must be between 0 and 20", ireq_shape(kind));
        return -1;
    }
    return 0;
}

/* Validate by kind. Returns 0, or -1 after answering. */
static int validate(struct evhttp_request *req, enum job_kind kind, struct ireq *r,
                    struct model **mp)
{
    json_t *root = r->root;
    char err[256];
    int v1 = ireq_openai(kind) || kind == JK_MESSAGES, native = !v1;
    enum err_shape shape = ireq_shape(kind);
    json_t *jm = json_object_get(root, "model");
    if (native && check_types(req, kind, root))
        return -1;
    if (!ireq_embedding(kind) && native && parse_logprobs(req, kind, r))
        return -1;
    if ((kind == JK_MESSAGES && anth_parse(req, r)) || (kind == JK_RESPONSES && resp_parse(req, r)))
        return -1;
    r->model = jm && json_is_string(jm) ? json_string_value(jm) : "";
    if (!*r->model &&
        (kind == JK_CHAT || kind == JK_V1_CHAT || kind == JK_EMBEDDINGS || kind == JK_RESPONSES)) {
        http_send_error(req, 400, "model is required", shape);
        return -1;
    }
    if (kind == JK_V1_CHAT && json_array_size(json_object_get(root, "messages")) == 0) {
        http_send_error(req, 400, "[] is too short - 'messages'", shape);
        return -1;
    }
    if ((kind == JK_V1_CHAT || kind == JK_V1_COMPLETION) && parse_logprobs(req, kind, r))
        return -1;
    if (native && parse_keep_alive(json_object_get(root, "keep_alive"), r, err, sizeof err)) {
        http_send_error(req, 400, err, shape);
        return -1;
    }
    if (kind == JK_V1_EMBED && parse_encoding(req, json_object_get(root, "encoding_format"), r))
        return -1;
    if (ireq_embedding(kind) && kind != JK_EMBEDDINGS) {
        json_t *in = json_object_get(root, "input");
        if ((kind == JK_V1_EMBED && (!in || json_array_size(in) == 0) && !json_is_string(in)) ||
            parse_inputs(in, r, kind == JK_V1_EMBED)) {
            http_send_error(req, 400, kind == JK_V1_EMBED ? "invalid input" : "invalid input type",
                            shape);
            return -1;
        }
    }
    struct model *m = *r->model ? sched_find(r->model) : NULL;
    if (!m) {
        reject_not_found(req, kind, r->model);
        return -1;
    }
    if (m->embedding && !ireq_embedding(kind)) {
        snprintf(err, sizeof err, "\"%s\" does not support %s", r->model,
                 kind == JK_GENERATE || kind == JK_V1_COMPLETION ? "generate" : "chat");
        http_send_error(req, 400, err, shape);
        return -1;
    }
    *mp = m;
    return 0;
}

static void prepare(struct ireq *r, enum job_kind kind)
{
    json_t *root = r->root;
    if (kind != JK_MESSAGES && kind != JK_RESPONSES && kind != JK_TRANSCRIBE)
        fill_common(r, kind);
    if (kind == JK_CHAT || kind == JK_V1_CHAT) {
        json_t *msgs = json_object_get(root, "messages");
        parse_messages(msgs, r);
        r->empty_input = json_array_size(msgs) == 0;
    } else if (kind == JK_GENERATE || kind == JK_V1_COMPLETION || kind == JK_EMBEDDINGS) {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p))
            p = json_array_get(p, 0);
        const char *sys = json_string_value(json_object_get(root, "system"));
        const char *item = json_is_string(p) ? json_string_value(p) : "";
        if (sys)
            ireq_prompt_add(r, sys, strlen(sys));
        ireq_prompt_add(r, item, strlen(item));
        ireq_set_item(r, item, strlen(item));
        r->empty_input = !*item;
    } else if (ireq_embedding(kind)) {
        r->empty_input = json_array_size(r->inputs) == 0;
    }
    if (!r->item)
        ireq_set_item(r, "", 0);
    r->prompt_tokens = text_count_tokens(r->prompt, r->plen);
}

static int parse_body(struct evhttp_request *req, enum job_kind kind, struct ireq *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    char msg[300];
    if (len == 0) { /* the /v1 middlewares pass on Go's decoder error */
        http_send_error(req, 400, ireq_shape(kind) == SHAPE_NATIVE ? "missing request body" : "EOF",
                        ireq_shape(kind));
        return -1;
    }
    r->root = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_DECODE_ANY, &jerr);
    if (!r->root) {
        if (jerr.position >= (int)len)
            snprintf(msg, sizeof msg, "unexpected EOF");
        else
            snprintf(
                msg, sizeof msg, "invalid character '%c' looking for beginning of value",
                ((const char *)evbuffer_pullup(in, -1))[jerr.position > 0 ? jerr.position - 1 : 0]);
        http_send_error(req, 400, msg, ireq_shape(kind));
        return -1;
    }
    if (!json_is_object(r->root)) {
        snprintf(msg, sizeof msg, "json: cannot unmarshal %s into Go value of type api.Request",
                 go_type(r->root));
        http_send_error(req, 400, msg, ireq_shape(kind));
        return -1;
    }
    return 0;
}

int ireq_read(struct evhttp_request *req, enum job_kind kind, struct ireq *r, struct model **m)
{
    if ((kind == JK_TRANSCRIBE ? trans_parse(req, r) : parse_body(req, kind, r)) ||
        validate(req, kind, r, m))
        return -1;
    prepare(r, kind);
    return 0;
}

void ireq_cleanup(struct ireq *r)
{
    json_decref(r->inputs);
    json_decref(r->root);
    free(r->item);
    free(r->prompt);
    memset(r, 0, sizeof *r);
}
