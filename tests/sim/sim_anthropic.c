/* sim_anthropic.c - POST /v1/messages, Anthropic's Messages API, as Ollama
 * answers it (anthropic/anthropic.go and middleware/anthropic.go): the
 * request becomes a chat, and the reply is written in Anthropic's shapes.
 *
 * Request: model, max_tokens (required, > 0: Ollama's num_predict),
 * messages (required; content a string or blocks), system (a string or
 * text blocks), stream. Checked in Ollama's order, each a 400 in
 * Anthropic's error shape: model, max_tokens, messages.
 *
 * Streamed reply (text/event-stream, Cache-Control: no-cache), all at and
 * after the first token, each "event: NAME\ndata: JSON\n\n":
 *   message_start        the message with content [] and usage
 *                        {input_tokens: Ollama's estimate (characters of
 *                        system, roles and contents / 4), output_tokens: 0}
 *   content_block_start  index 0, {"type":"text","text":""}
 *   content_block_delta  per token, {"type":"text_delta","text":...}
 *   content_block_stop   index 0
 *   message_delta        {"stop_reason":...}, usage {input_tokens:
 *                        prompt_eval_count, output_tokens: eval_count}
 *   message_stop
 * No ping. stop_reason: end_turn, or max_tokens when max_tokens cut it.
 * A non-streamed reply is the message itself, with the same usage.
 *
 * --stream-fail-rate ends a stream with Anthropic's own in-band error,
 * "event: error" {"type":"error","error":{"type":"api_error",...}} (Ollama
 * itself would just stop: its writer drops the native error line). */
#include "sim.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void anth_new_id(char *out, size_t len, const char *prefix)
{
    static uint64_t counter;
    uint64_t a = text_hash((const char *)&counter, sizeof counter) ^ (uint64_t)getpid() << 20;
    counter++;
    uint64_t b = text_hash((const char *)&a, sizeof a);
    snprintf(out, len, "%s_%016llx%08llx", prefix, (unsigned long long)a,
             (unsigned long long)(b >> 32));
}

static int bad(struct evhttp_request *req, const char *msg)
{
    http_send_error(req, 400, msg, SHAPE_ANTHROPIC);
    return -1;
}

/* Go's decoder refuses a value of the wrong type for these fields. */
static int check_type(struct evhttp_request *req, json_t *root, const char *field, json_type want,
                      const char *gotype)
{
    json_t *v = json_object_get(root, field);
    char err[200];
    if (!v || json_is_null(v) || json_typeof(v) == want ||
        (want == JSON_TRUE && json_is_boolean(v)))
        return 0;
    snprintf(err, sizeof err,
             "json: cannot unmarshal %s into Go struct field MessagesRequest.%s of type %s",
             json_is_string(v)   ? "string"
             : json_is_array(v)  ? "array"
             : json_is_object(v) ? "object"
             : json_is_number(v) ? "number"
                                 : "bool",
             field, gotype);
    return bad(req, err);
}

/* Characters EstimateInputTokens counts for a content (text, thinking, and
 * tool blocks as their JSON). */
static size_t content_chars(json_t *c)
{
    size_t i, n = 0;
    json_t *b;
    if (json_is_string(c))
        return json_string_length(c);
    json_array_foreach(c, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        n += json_string_length(json_object_get(b, "text"));
        n += json_string_length(json_object_get(b, "thinking"));
        if (type && (!strcmp(type, "tool_use") || !strcmp(type, "tool_result"))) {
            char *s = json_dumps(b, JSON_COMPACT);
            n += s ? strlen(s) : 0;
            free(s);
        }
    }
    return n;
}

int anth_parse(struct evhttp_request *req, struct ireq *r)
{
    json_t *root = r->root, *msgs = json_object_get(root, "messages"), *m;
    json_t *sys = json_object_get(root, "system");
    size_t i, chars = 0;
    if (check_type(req, root, "model", JSON_STRING, "string") ||
        check_type(req, root, "max_tokens", JSON_INTEGER, "int") ||
        check_type(req, root, "messages", JSON_ARRAY, "[]anthropic.MessageParam") ||
        check_type(req, root, "stream", JSON_TRUE, "bool"))
        return -1;
    const char *model = json_string_value(json_object_get(root, "model"));
    if (!model || !*model)
        return bad(req, "model is required");
    if (json_integer_value(json_object_get(root, "max_tokens")) <= 0)
        return bad(req, "max_tokens is required and must be positive");
    if (json_array_size(msgs) == 0)
        return bad(req, "messages is required");
    ireq_add_content(r, sys, 0);
    chars += content_chars(sys);
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *c = json_object_get(m, "content");
        size_t at = r->plen;
        ireq_add_content(r, c, 0);
        if (role && !strcmp(role, "user"))
            ireq_set_item(r, r->prompt + at, r->plen - at);
        chars += (role ? strlen(role) : 0) + content_chars(c);
    }
    r->est_tokens = (int)(chars / 4) ? (int)(chars / 4) : 1;
    r->stream = json_is_true(json_object_get(root, "stream"));
    r->num_predict = (int)json_integer_value(json_object_get(root, "max_tokens"));
    r->num_ctx = SIM_DEFAULT_CTX;
    return 0;
}

/* ---- replies ---- */

static const char *stop_reason(const struct job *job)
{
    return job->length_cut ? "max_tokens" : "end_turn";
}

static void message_head(struct evbuffer *b, struct job *job)
{
    evbuffer_add_printf(
        b, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", job->id);
    fmt_jcstr(b, job->model_name);
}

static void do_start(struct evbuffer *b, struct job *job)
{
    ADD_LIT(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":");
    message_head(b, job);
    evbuffer_add_printf(b,
                        ",\"content\":[],\"usage\":{\"input_tokens\":%d,\"output_tokens\":0}}}\n\n",
                        job->est_tokens);
    ADD_LIT(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
               "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
}

static void do_token(struct evbuffer *b, struct job *job, int i)
{
    ADD_LIT(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
               "\"delta\":{\"type\":\"text_delta\",\"text\":");
    fmt_jstr(b, job->answer + job->tok_off[i], (size_t)(job->tok_off[i + 1] - job->tok_off[i]));
    ADD_LIT(b, "}}\n\n");
}

static void do_end(struct evbuffer *b, struct job *job)
{
    ADD_LIT(b,
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    evbuffer_add_printf(b,
                        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                        "{\"stop_reason\":\"%s\"},\"usage\":{\"input_tokens\":%d,"
                        "\"output_tokens\":%d}}\n\n",
                        stop_reason(job), job->prompt_tokens, job->tok_i);
    ADD_LIT(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
}

static void do_whole(struct evbuffer *b, struct job *job)
{
    message_head(b, job);
    ADD_LIT(b, ",\"content\":[{\"type\":\"text\",\"text\":");
    fmt_jstr(b, job->answer, (size_t)job->tok_off[job->ntok]);
    evbuffer_add_printf(b,
                        "}],\"stop_reason\":\"%s\",\"usage\":{\"input_tokens\":%d,"
                        "\"output_tokens\":%d}}\n",
                        stop_reason(job), job->prompt_tokens, job->ntok);
}

static void do_fail(struct evbuffer *b, struct job *job, const char *msg)
{
    (void)job;
    ADD_LIT(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
               "\"message\":");
    fmt_jcstr(b, msg);
    ADD_LIT(b, "}}\n\n");
}

const struct reply_fmt anth_fmt = {
    "text/event-stream", SHAPE_ANTHROPIC, do_start, do_token, do_end, do_whole, do_fail, NULL};
