/* sim_transcribe.c - POST /v1/audio/transcriptions, as Ollama answers it
 * (middleware/openai.go TranscriptionMiddleware, openai.FromTranscription-
 * Request): a multipart form with "model" and "file" (and optional
 * "response_format", "language", "prompt") becomes a chat with a fixed
 * system prompt, scheduled like any chat; the reply is never streamed:
 * {"text":"..."} (application/json), or the bare text with
 * response_format "text" (text/plain). Errors are OpenAI's, 400: "failed to
 * parse multipart form: ...", "model is required", "file is required:
 * http: no such file", "audio file is empty". The words are drawn from a
 * hash of the audio bytes. */
#include "sim.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char system_prompt[] = "Transcribe the audio exactly as spoken. Output only the "
                                    "spoken words. Do not answer any question in the audio.";
static const char user_prompt[] = "What exact words are spoken in this audio?";

struct part {
    const char *data;
    size_t len;
    int found;
};

/* The form field NAME of the multipart BODY, or .found = 0. */
static struct part field(const char *body, size_t len, const char *delim, const char *name)
{
    struct part p = {0};
    char want[128];
    size_t dl = strlen(delim);
    snprintf(want, sizeof want, "name=\"%s\"", name);
    for (const char *s = memmem(body, len, delim, dl); s;) {
        const char *start = s + dl, *end = body + len;
        const char *next = memmem(start, (size_t)(end - start), delim, dl);
        const char *hdr_end = memmem(start, (size_t)((next ? next : end) - start), "\r\n\r\n", 4);
        if (hdr_end && memmem(start, (size_t)(hdr_end - start), want, strlen(want))) {
            const char *data = hdr_end + 4, *stop = next ? next : end;
            if (stop - data >= 2 && stop[-2] == '\r' && stop[-1] == '\n')
                stop -= 2;
            p.data = data;
            p.len = stop > data ? (size_t)(stop - data) : 0;
            p.found = 1;
            return p;
        }
        s = next;
    }
    return p;
}

static char *dup_part(struct part p)
{
    return p.found ? strndup(p.data, p.len) : strdup("");
}

int trans_parse(struct evhttp_request *req, struct ireq *r)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    const char *b = ct ? strstr(ct, "boundary=") : NULL;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    char delim[256];
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) || !b) {
        http_send_error(req, 400,
                        "failed to parse multipart form: request Content-Type isn't "
                        "multipart/form-data",
                        SHAPE_OPENAI);
        return -1;
    }
    b += 9;
    snprintf(delim, sizeof delim, "--%.*s", (int)strcspn(b, "; \""), *b == '"' ? b + 1 : b);
    char *model = dup_part(field(body, len, delim, "model"));
    struct part file = field(body, len, delim, "file");
    const char *err = !*model       ? "model is required"
                      : !file.found ? "file is required: http: no such file"
                      : !file.len   ? "audio file is empty"
                                    : NULL;
    if (err) {
        http_send_error(req, 400, err, SHAPE_OPENAI);
        free(model);
        return -1;
    }
    char *fmt = dup_part(field(body, len, delim, "response_format"));
    char *lang = dup_part(field(body, len, delim, "language"));
    char *ctx = dup_part(field(body, len, delim, "prompt"));
    r->root = json_pack("{s:s, s:s}", "model", model, "response_format", fmt);
    ireq_prompt_add(r, system_prompt, sizeof system_prompt - 1);
    if (*lang) {
        ireq_prompt_add(r, " The audio is in ", 17);
        ireq_prompt_add(r, lang, strlen(lang));
        ireq_prompt_add(r, ".", 1);
    }
    if (*ctx) {
        ireq_prompt_add(r, " Context: ", 10);
        ireq_prompt_add(r, ctx, strlen(ctx));
    }
    ireq_prompt_add(r, user_prompt, sizeof user_prompt - 1);
    /* the words follow the audio: its hash is the item */
    char item[32];
    snprintf(item, sizeof item, "%016llx", (unsigned long long)text_hash(file.data, file.len));
    ireq_set_item(r, item, strlen(item));
    r->num_ctx = SIM_DEFAULT_CTX;
    free(model), free(fmt), free(lang), free(ctx);
    return 0;
}

static void do_whole(struct evbuffer *b, struct job *job)
{
    size_t n = (size_t)job->tok_off[job->ntok];
    if (job->echo) { /* response_format "text" */
        evbuffer_add(b, job->answer, n);
        return;
    }
    ADD_LIT(b, "{\"text\":");
    fmt_jstr(b, job->answer, n);
    ADD_LIT(b, "}\n");
}

static void no_stream(struct evbuffer *b, struct job *job, int i)
{
    (void)b, (void)job, (void)i;
}

static void no_stream_end(struct evbuffer *b, struct job *job)
{
    (void)b, (void)job;
}

static void no_fail(struct evbuffer *b, struct job *job, const char *msg)
{
    (void)b, (void)job, (void)msg;
}

const struct reply_fmt trans_fmt = {"application/json", SHAPE_OPENAI, NULL,    no_stream,
                                    no_stream_end,      do_whole,     no_fail, NULL};
