/* sim_responses.c - POST /v1/responses, OpenAI's Responses API, as Ollama
 * answers it (openai/responses.go, middleware/openai.go; stateless only):
 * the request becomes a chat, and the reply is written as a Response.
 *
 * Request: model, input (a string: one user message; or items: messages
 * {role, content: a string or input_text/output_text parts}, and
 * function_call / function_call_output items), instructions (a system
 * message first), max_output_tokens (num_predict), text.format
 * {type: json_schema, schema} (the format), stream, and the fields echoed
 * back (temperature, top_p, truncation, tools, reasoning, background).
 *
 * Streamed reply (text/event-stream, Cache-Control: no-cache), all at and
 * after the first token, each "event: TYPE\ndata: JSON\n\n" where the JSON
 * carries "type" and a "sequence_number" counting from 0, keys sorted (Go
 * marshals maps so):
 *   response.created, response.in_progress     the response, in_progress,
 *                                               output [], usage null
 *   response.output_item.added                 the message item, in_progress
 *   response.content_part.added                an empty output_text part
 *   response.output_text.delta                 per token: delta
 *   response.output_text.done                  the whole text
 *   response.content_part.done, response.output_item.done
 *   response.completed                         the response, completed, with
 *       usage {input_tokens, input_tokens_details {cached_tokens: 0},
 *              output_tokens, output_tokens_details {reasoning_tokens: 0},
 *              total_tokens}
 * A non-streamed reply is the Response itself (struct field order), with
 * the same usage. cached_tokens is always 0, as in Ollama (a TODO there).
 * Ollama's status stays "completed" when max_output_tokens cut the text.
 *
 * --stream-fail-rate ends a stream with response.failed (status "failed",
 * error {code: "server_error", message}). */
#include "sim.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int bad(struct evhttp_request *req, const char *msg)
{
    http_send_error(req, 400, msg, SHAPE_OPENAI);
    return -1;
}

/* One input item into the prompt. Returns 0, or -1 with ERR set. */
static int input_item(struct ireq *r, json_t *it, size_t i, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(it, "type"));
    const char *role = json_string_value(json_object_get(it, "role"));
    if ((!type || !*type) && role && *role)
        type = "message";
    if (!type || !*type) {
        snprintf(err, errlen, "input[%zu]: input item missing required 'type' field", i);
        return -1;
    }
    if (!strcmp(type, "message")) {
        size_t at = r->plen;
        ireq_add_content(r, json_object_get(it, "content"), 0);
        if (role && !strcmp(role, "user"))
            ireq_set_item(r, r->prompt + at, r->plen - at);
    } else if (!strcmp(type, "function_call")) {
        ireq_add_content(r, json_object_get(it, "arguments"), 0);
    } else if (!strcmp(type, "function_call_output")) {
        ireq_add_content(r, json_object_get(it, "output"), 0);
    } else if (strcmp(type, "reasoning") && strcmp(type, "web_search_call")) {
        snprintf(err, errlen, "input[%zu]: unknown input item type: \"%s\"", i, type);
        return -1;
    }
    return 0;
}

int resp_parse(struct evhttp_request *req, struct ireq *r)
{
    json_t *root = r->root, *in = json_object_get(root, "input"), *it;
    const char *instr = json_string_value(json_object_get(root, "instructions"));
    json_t *fmt = json_object_get(json_object_get(root, "text"), "format");
    json_t *mot = json_object_get(root, "max_output_tokens");
    char err[300];
    size_t i;
    int messages = 0;
    if (in && !json_is_null(in) && !json_is_string(in) && !json_is_array(in))
        return bad(req, "input must be a string or array");
    if (instr && *instr) {
        ireq_prompt_add(r, instr, strlen(instr));
        messages++;
    }
    if (json_is_string(in) && json_string_length(in) > 0) {
        ireq_prompt_add(r, json_string_value(in), json_string_length(in));
        ireq_set_item(r, json_string_value(in), json_string_length(in));
        messages++;
    }
    json_array_foreach(in, i, it)
    {
        if (input_item(r, it, i, err, sizeof err))
            return bad(req, err);
        messages++;
    }
    r->empty_input = messages == 0;
    r->stream = json_is_true(json_object_get(root, "stream"));
    r->num_predict = json_is_integer(mot) ? (int)json_integer_value(mot) : 0;
    r->num_ctx = SIM_DEFAULT_CTX;
    const char *ft = json_string_value(json_object_get(fmt, "type"));
    if (ft && !strcmp(ft, "json_schema") && json_is_object(json_object_get(fmt, "schema")))
        r->format = json_object_get(fmt, "schema");
    return 0;
}

/* ---- the Response object ---- */

/* What to write: STATUS, with output and usage when FINAL; SORTED keys (a
 * streamed event's map) or the struct's field order (a whole reply). */
struct robj {
    struct job *job;
    const char *status;
    int final, sorted, failed;
};

enum rfield {
    F_ID,
    F_OBJECT,
    F_CREATED,
    F_COMPLETED,
    F_STATUS,
    F_INCOMPLETE,
    F_MODEL,
    F_PREVIOUS,
    F_INSTRUCTIONS,
    F_OUTPUT,
    F_ERROR,
    F_TOOLS,
    F_TOOL_CHOICE,
    F_TRUNCATION,
    F_PARALLEL,
    F_TEXT,
    F_TOP_P,
    F_PRESENCE,
    F_FREQUENCY,
    F_TOP_LOGPROBS,
    F_TEMPERATURE,
    F_REASONING,
    F_USAGE,
    F_MAX_OUTPUT,
    F_MAX_TOOL_CALLS,
    F_STORE,
    F_BACKGROUND,
    F_SERVICE_TIER,
    F_METADATA,
    F_SAFETY,
    F_CACHE_KEY
};

/* In ResponsesResponse's field order; sorted copy made on first use. */
static const struct rkey {
    const char *name;
    enum rfield f;
} struct_order[] = {
    {"id", F_ID},
    {"object", F_OBJECT},
    {"created_at", F_CREATED},
    {"completed_at", F_COMPLETED},
    {"status", F_STATUS},
    {"incomplete_details", F_INCOMPLETE},
    {"model", F_MODEL},
    {"previous_response_id", F_PREVIOUS},
    {"instructions", F_INSTRUCTIONS},
    {"output", F_OUTPUT},
    {"error", F_ERROR},
    {"tools", F_TOOLS},
    {"tool_choice", F_TOOL_CHOICE},
    {"truncation", F_TRUNCATION},
    {"parallel_tool_calls", F_PARALLEL},
    {"text", F_TEXT},
    {"top_p", F_TOP_P},
    {"presence_penalty", F_PRESENCE},
    {"frequency_penalty", F_FREQUENCY},
    {"top_logprobs", F_TOP_LOGPROBS},
    {"temperature", F_TEMPERATURE},
    {"reasoning", F_REASONING},
    {"usage", F_USAGE},
    {"max_output_tokens", F_MAX_OUTPUT},
    {"max_tool_calls", F_MAX_TOOL_CALLS},
    {"store", F_STORE},
    {"background", F_BACKGROUND},
    {"service_tier", F_SERVICE_TIER},
    {"metadata", F_METADATA},
    {"safety_identifier", F_SAFETY},
    {"prompt_cache_key", F_CACHE_KEY},
};
#define NFIELDS (sizeof struct_order / sizeof struct_order[0])

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct rkey *)a)->name, ((const struct rkey *)b)->name);
}

static void put_json(struct evbuffer *b, json_t *v, size_t flags)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | flags);
    if (s)
        evbuffer_add(b, s, strlen(s));
    else
        ADD_LIT(b, "null");
    free(s);
}

static void put_number(struct evbuffer *b, json_t *v, double def)
{
    char num[48];
    lp_go_float(num, sizeof num, json_is_number(v) ? json_number_value(v) : def);
    evbuffer_add(b, num, strlen(num));
}

static void put_str_or_null(struct evbuffer *b, json_t *v)
{
    if (json_is_string(v))
        fmt_jcstr(b, json_string_value(v));
    else
        ADD_LIT(b, "null");
}

/* The output_text part: struct order type, text, annotations, logprobs;
 * a map's sorted order annotations, logprobs, text, type. */
static void put_part(struct evbuffer *b, struct job *job, int sorted, int with_text)
{
    size_t n = with_text && job->tok_off ? (size_t)job->tok_off[job->tok_i] : 0;
    if (sorted) {
        ADD_LIT(b, "{\"annotations\":[],\"logprobs\":[],\"text\":");
        fmt_jstr(b, job->answer, n);
        ADD_LIT(b, ",\"type\":\"output_text\"}");
    } else {
        ADD_LIT(b, "{\"type\":\"output_text\",\"text\":");
        fmt_jstr(b, job->answer, n);
        ADD_LIT(b, ",\"annotations\":[],\"logprobs\":[]}");
    }
}

static void put_item(struct evbuffer *b, struct job *job, int sorted, const char *status)
{
    int done = !strcmp(status, "completed");
    if (sorted) {
        ADD_LIT(b, "{\"content\":[");
        if (done)
            put_part(b, job, 1, 1);
        evbuffer_add_printf(b,
                            "],\"id\":\"%s\",\"role\":\"assistant\",\"status\":\"%s\","
                            "\"type\":\"message\"}",
                            job->item_id, status);
    } else {
        evbuffer_add_printf(b,
                            "{\"id\":\"%s\",\"type\":\"message\",\"status\":\"%s\","
                            "\"role\":\"assistant\",\"content\":[",
                            job->item_id, status);
        put_part(b, job, 0, 1);
        ADD_LIT(b, "]}");
    }
}

static void put_usage(struct evbuffer *b, const struct robj *o)
{
    int p = o->job->prompt_tokens, e = o->job->tok_i;
    if (o->sorted)
        evbuffer_add_printf(b,
                            "{\"input_tokens\":%d,\"input_tokens_details\":{\"cached_tokens\":0},"
                            "\"output_tokens\":%d,\"output_tokens_details\":"
                            "{\"reasoning_tokens\":0},\"total_tokens\":%d}",
                            p, e, p + e);
    else
        evbuffer_add_printf(b,
                            "{\"input_tokens\":%d,\"output_tokens\":%d,\"total_tokens\":%d,"
                            "\"input_tokens_details\":{\"cached_tokens\":0},"
                            "\"output_tokens_details\":{\"reasoning_tokens\":0}}",
                            p, e, p + e);
}

/* The request's tools: a map per tool (sorted) or ResponsesTool's order. */
static void put_tools(struct evbuffer *b, json_t *tools, int sorted)
{
    static const char *const map_keys[] = {"description", "name", "parameters", "strict", "type"};
    static const char *const struct_keys[] = {"type", "name", "description", "strict",
                                              "parameters"};
    size_t i;
    json_t *t;
    ADD_LIT(b, "[");
    json_array_foreach(tools, i, t)
    {
        evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
        for (int k = 0; k < 5; k++) {
            const char *key = sorted ? map_keys[k] : struct_keys[k];
            json_t *v = json_object_get(t, key);
            evbuffer_add_printf(b, "%s\"%s\":", k ? "," : "", key);
            if (!strcmp(key, "type") || !strcmp(key, "name"))
                fmt_jcstr(b, json_string_value(v) ? json_string_value(v) : "");
            else
                put_json(b, v ? v : json_null(), JSON_SORT_KEYS);
        }
        ADD_LIT(b, "}");
    }
    ADD_LIT(b, "]");
}

/* One "key":value of an object being written; *FIRST tells the comma. */
static void key(struct evbuffer *b, int *first, const char *name)
{
    evbuffer_add_printf(b, "%s\"%s\":", *first ? "" : ",", name);
    *first = 0;
}

/* text.format echoed: {"type":"text"} by default; else the request's type,
 * name, schema and strict (ResponsesTextFormat's order; a map's: sorted). */
static void put_text(struct evbuffer *b, json_t *fmt, int sorted)
{
    const char *type = json_string_value(json_object_get(fmt, "type"));
    json_t *name = json_object_get(fmt, "name"), *schema = json_object_get(fmt, "schema");
    json_t *strict = json_object_get(fmt, "strict");
    int first = 1;
    ADD_LIT(b, "{\"format\":{");
    if (!type)
        type = "text", name = schema = strict = NULL;
    if (!sorted) {
        key(b, &first, "type");
        fmt_jcstr(b, type);
    }
    if (json_string_length(name)) {
        key(b, &first, "name");
        fmt_jcstr(b, json_string_value(name));
    }
    if (schema && !json_is_null(schema)) {
        key(b, &first, "schema");
        put_json(b, schema, 0);
    }
    if (json_is_boolean(strict)) {
        key(b, &first, "strict");
        evbuffer_add_printf(b, "%s", json_is_true(strict) ? "true" : "false");
    }
    if (sorted) {
        key(b, &first, "type");
        fmt_jcstr(b, type);
    }
    ADD_LIT(b, "}}");
}

static void put_reasoning(struct evbuffer *b, json_t *rs, int sorted)
{
    json_t *effort = json_object_get(rs, "effort"), *summary = json_object_get(rs, "summary");
    int e = json_string_length(effort) > 0, s = json_string_length(summary) > 0;
    if (!e && !s) {
        ADD_LIT(b, "null");
        return;
    }
    if (sorted) { /* a map: both keys, null when not given */
        ADD_LIT(b, "{\"effort\":");
        put_str_or_null(b, e ? effort : NULL);
        ADD_LIT(b, ",\"summary\":");
        put_str_or_null(b, s ? summary : NULL);
        ADD_LIT(b, "}");
        return;
    }
    ADD_LIT(b, "{");
    if (e) {
        ADD_LIT(b, "\"effort\":");
        fmt_jcstr(b, json_string_value(effort));
    }
    if (s) {
        ADD_LIT(b, e ? ",\"summary\":" : "\"summary\":");
        fmt_jcstr(b, json_string_value(summary));
    }
    ADD_LIT(b, "}");
}

static void field(struct evbuffer *b, const struct robj *o, enum rfield f)
{
    struct job *job = o->job;
    json_t *rq = job->echo, *v;
    switch (f) {
    case F_ID: evbuffer_add_printf(b, "\"%s\"", job->id); break;
    case F_OBJECT: ADD_LIT(b, "\"response\""); break;
    case F_CREATED: evbuffer_add_printf(b, "%ld", (long)time(NULL)); break;
    case F_COMPLETED:
        if (o->final && !o->failed)
            evbuffer_add_printf(b, "%ld", (long)time(NULL));
        else
            ADD_LIT(b, "null");
        break;
    case F_STATUS: evbuffer_add_printf(b, "\"%s\"", o->status); break;
    case F_MODEL: fmt_jcstr(b, job->model_name); break;
    case F_INSTRUCTIONS:
        v = json_object_get(rq, "instructions");
        put_str_or_null(b, json_string_length(v) ? v : NULL);
        break;
    case F_OUTPUT:
        ADD_LIT(b, "[");
        if (o->final && !o->failed && (job->tok_i > 0 || !o->sorted))
            put_item(b, job, o->sorted, "completed");
        ADD_LIT(b, "]");
        break;
    case F_ERROR:
        if (o->failed)
            ADD_LIT(b, "{\"code\":\"server_error\",\"message\":\"simulated failure\"}");
        else
            ADD_LIT(b, "null");
        break;
    case F_TOOLS: put_tools(b, json_object_get(rq, "tools"), o->sorted); break;
    case F_TOOL_CHOICE: ADD_LIT(b, "\"auto\""); break;
    case F_TRUNCATION:
        v = json_object_get(rq, "truncation");
        fmt_jcstr(b, json_is_string(v) ? json_string_value(v) : "disabled");
        break;
    case F_PARALLEL: ADD_LIT(b, "true"); break;
    case F_TEXT:
        put_text(b, json_object_get(json_object_get(rq, "text"), "format"), o->sorted);
        break;
    case F_TOP_P: put_number(b, json_object_get(rq, "top_p"), 1); break;
    case F_PRESENCE:
    case F_FREQUENCY:
    case F_TOP_LOGPROBS: ADD_LIT(b, "0"); break;
    case F_TEMPERATURE: put_number(b, json_object_get(rq, "temperature"), 1); break;
    case F_REASONING: put_reasoning(b, json_object_get(rq, "reasoning"), o->sorted); break;
    case F_USAGE:
        if (o->final && !o->failed)
            put_usage(b, o);
        else
            ADD_LIT(b, "null");
        break;
    case F_MAX_OUTPUT:
        v = json_object_get(rq, "max_output_tokens");
        if (json_is_integer(v))
            evbuffer_add_printf(b, "%lld", (long long)json_integer_value(v));
        else
            ADD_LIT(b, "null");
        break;
    case F_STORE: ADD_LIT(b, "false"); break;
    case F_BACKGROUND:
        evbuffer_add_printf(b, "%s",
                            json_is_true(json_object_get(rq, "background")) ? "true" : "false");
        break;
    case F_SERVICE_TIER: ADD_LIT(b, "\"default\""); break;
    case F_METADATA: ADD_LIT(b, "{}"); break;
    case F_INCOMPLETE:
    case F_PREVIOUS:
    case F_MAX_TOOL_CALLS:
    case F_SAFETY:
    case F_CACHE_KEY: ADD_LIT(b, "null"); break;
    }
}

static void put_response(struct evbuffer *b, const struct robj *o)
{
    static struct rkey sorted[NFIELDS];
    if (!sorted[0].name) {
        memcpy(sorted, struct_order, sizeof sorted);
        qsort(sorted, NFIELDS, sizeof *sorted, by_name);
    }
    const struct rkey *keys = o->sorted ? sorted : struct_order;
    for (size_t i = 0; i < NFIELDS; i++) {
        evbuffer_add_printf(b, "%s\"%s\":", i ? "," : "{", keys[i].name);
        field(b, o, keys[i].f);
    }
    ADD_LIT(b, "}");
}

/* ---- events ---- */

/* Sequence numbers: created 0, in_progress 1, item 2, part 3, the deltas
 * from 4, then the closing events. */
static int seq_after_deltas(const struct job *job)
{
    return 4 + job->tok_i;
}

static void event_response(struct evbuffer *b, struct job *job, const char *type, int seq,
                           const char *status, int final, int failed)
{
    struct robj o = {job, status, final, 1, failed};
    evbuffer_add_printf(b, "event: %s\ndata: {\"response\":", type);
    put_response(b, &o);
    evbuffer_add_printf(b, ",\"sequence_number\":%d,\"type\":\"%s\"}\n\n", seq, type);
}

static void do_start(struct evbuffer *b, struct job *job)
{
    event_response(b, job, "response.created", 0, "in_progress", 0, 0);
    event_response(b, job, "response.in_progress", 1, "in_progress", 0, 0);
    ADD_LIT(b, "event: response.output_item.added\ndata: {\"item\":");
    put_item(b, job, 1, "in_progress");
    ADD_LIT(b, ",\"output_index\":0,\"sequence_number\":2,"
               "\"type\":\"response.output_item.added\"}\n\n");
    evbuffer_add_printf(b,
                        "event: response.content_part.added\ndata: {\"content_index\":0,"
                        "\"item_id\":\"%s\",\"output_index\":0,\"part\":",
                        job->item_id);
    put_part(b, job, 1, 0);
    ADD_LIT(b, ",\"sequence_number\":3,\"type\":\"response.content_part.added\"}\n\n");
}

static void do_token(struct evbuffer *b, struct job *job, int i)
{
    ADD_LIT(b, "event: response.output_text.delta\ndata: {\"content_index\":0,\"delta\":");
    fmt_jstr(b, job->answer + job->tok_off[i], (size_t)(job->tok_off[i + 1] - job->tok_off[i]));
    evbuffer_add_printf(b,
                        ",\"item_id\":\"%s\",\"logprobs\":[],\"output_index\":0,"
                        "\"sequence_number\":%d,\"type\":\"response.output_text.delta\"}\n\n",
                        job->item_id, 4 + i);
}

static void do_end(struct evbuffer *b, struct job *job)
{
    int seq = seq_after_deltas(job);
    evbuffer_add_printf(b,
                        "event: response.output_text.done\ndata: {\"content_index\":0,"
                        "\"item_id\":\"%s\",\"logprobs\":[],\"output_index\":0,"
                        "\"sequence_number\":%d,\"text\":",
                        job->item_id, seq++);
    fmt_jstr(b, job->answer, (size_t)job->tok_off[job->tok_i]);
    ADD_LIT(b, ",\"type\":\"response.output_text.done\"}\n\n");
    evbuffer_add_printf(b,
                        "event: response.content_part.done\ndata: {\"content_index\":0,"
                        "\"item_id\":\"%s\",\"output_index\":0,\"part\":",
                        job->item_id);
    put_part(b, job, 1, 1);
    evbuffer_add_printf(b, ",\"sequence_number\":%d,\"type\":\"response.content_part.done\"}\n\n",
                        seq++);
    ADD_LIT(b, "event: response.output_item.done\ndata: {\"item\":");
    put_item(b, job, 1, "completed");
    evbuffer_add_printf(b,
                        ",\"output_index\":0,\"sequence_number\":%d,"
                        "\"type\":\"response.output_item.done\"}\n\n",
                        seq++);
    event_response(b, job, "response.completed", seq, "completed", 1, 0);
}

static void do_whole(struct evbuffer *b, struct job *job)
{
    struct robj o = {job, "completed", 1, 0, 0};
    put_response(b, &o);
    ADD_LIT(b, "\n");
}

static void do_fail(struct evbuffer *b, struct job *job, const char *msg)
{
    (void)msg;
    event_response(b, job, "response.failed", seq_after_deltas(job), "failed", 1, 1);
}

/* A load-only request (no input): Ollama's chat handler answers "load",
 * which the writer turns into a completed response with an empty text. */
static void do_loaded(struct evbuffer *b, struct job *job)
{
    job->prompt_tokens = 0; /* the load reply carries no metrics */
    if (!job->stream) {
        do_whole(b, job);
        return;
    }
    event_response(b, job, "response.created", 0, "in_progress", 0, 0);
    event_response(b, job, "response.in_progress", 1, "in_progress", 0, 0);
    event_response(b, job, "response.completed", 2, "completed", 1, 0);
}

const struct reply_fmt resp_fmt = {
    "text/event-stream", SHAPE_OPENAI, do_start, do_token, do_end, do_whole, do_fail, do_loaded};
