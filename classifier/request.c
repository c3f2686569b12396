/* request.c - see request.h. */
#include "request.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char default_prompt[] =
    "You are a text classifier. Read the user's message and choose the one label "
    "that fits it best from this list: {{labels}}.\n"
    "Answer with JSON only, in the form {\"label\": \"<label>\"}, using one of the "
    "labels exactly as written. Do not explain.";

static int read_file(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    char chunk[4096];
    size_t n;
    if (!f)
        return -1;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    return rc;
}

/* The prompt with every {{labels}} replaced. */
static int expand_prompt(const char *tpl, const struct labels *l, struct buf *out)
{
    static const char mark[] = "{{labels}}";
    const char *p = tpl, *m;
    while ((m = strstr(p, mark))) {
        buf_append(out, p, (size_t)(m - p));
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                buf_puts(out, ", ");
            buf_puts(out, l->names[i]);
        }
        p = m + sizeof mark - 1;
    }
    return buf_puts(out, p);
}

static int build_suffix(struct request_tpl *t, const struct labels *l)
{
    json_t *labels = json_array();
    for (size_t i = 0; i < l->n; i++)
        json_array_append_new(labels, json_string(l->names[i]));
    json_t *format = json_pack("{s:s, s:{s:{s:s, s:o}}, s:[s]}", "type", "object", "properties",
                               "label", "type", "string", "enum", labels, "required", "label");
    char *fs = format ? json_dumps(format, JSON_COMPACT) : NULL;
    int rc = -1;
    if (fs) {
        buf_puts(&t->suffix, "}],\"stream\":false,\"format\":");
        buf_puts(&t->suffix, fs);
        rc = buf_puts(&t->suffix, ",\"options\":{\"temperature\":0}}");
    }
    free(fs);
    json_decref(format);
    return rc;
}

static int build_prefix(struct request_tpl *t, const char *model, const char *prompt)
{
    buf_puts(&t->prefix, "{\"model\":");
    buf_json_string(&t->prefix, model, strlen(model));
    buf_puts(&t->prefix, ",\"messages\":[{\"role\":\"system\",\"content\":");
    buf_json_string(&t->prefix, prompt, strlen(prompt));
    return buf_puts(&t->prefix, "},{\"role\":\"user\",\"content\":");
}

int request_init(struct request_tpl *t, const char *model, const struct labels *labels,
                 const char *prompt_file, char *err, size_t errlen)
{
    struct buf tpl = {0}, prompt = {0};
    int rc = -1;
    if (prompt_file && read_file(prompt_file, &tpl) < 0) {
        snprintf(err, errlen, "cannot read prompt file '%s'", prompt_file);
        goto done;
    }
    if (expand_prompt(prompt_file ? (tpl.data ? tpl.data : "") : default_prompt, labels, &prompt) <
            0 ||
        build_prefix(t, model, prompt.data) < 0 || build_suffix(t, labels) < 0) {
        snprintf(err, errlen, "out of memory building the request");
        goto done;
    }
    rc = 0;
done:
    buf_free(&tpl);
    buf_free(&prompt);
    return rc;
}

int request_body(const struct request_tpl *t, const char *text, size_t len, struct buf *out)
{
    buf_clear(out);
    if (buf_reserve(out, t->prefix.len + t->suffix.len + len + 16) < 0 ||
        buf_append(out, t->prefix.data, t->prefix.len) < 0 || buf_json_string(out, text, len) < 0)
        return -1;
    return buf_append(out, t->suffix.data, t->suffix.len);
}

/* The label inside CONTENT: {"label":"x"} or a bare (maybe quoted) word. */
static enum answer label_of_content(const struct labels *l, const char *content, int *label,
                                    char *what, size_t whatlen)
{
    json_t *doc = json_loads(content, JSON_DECODE_ANY, NULL);
    const char *value = content;
    enum answer rc;
    if (json_is_object(doc)) {
        value = json_string_value(json_object_get(doc, "label"));
        if (!value) {
            snprintf(what, whatlen, "answer has no \"label\": %.80s", content);
            json_decref(doc);
            return ANSWER_BAD;
        }
    } else if (json_is_string(doc)) {
        value = json_string_value(doc);
    }
    *label = labels_find(l, value, strlen(value));
    if (*label >= 0) {
        rc = ANSWER_LABEL;
    } else {
        snprintf(what, whatlen, "%.80s", value);
        rc = ANSWER_OFF_LABEL;
    }
    json_decref(doc);
    return rc;
}

enum answer request_answer(const struct labels *labels, const char *body, size_t len, int *label,
                           char *what, size_t whatlen)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    json_t *msg = json_object_get(doc, "message");
    const char *content = json_string_value(json_object_get(msg, "content"));
    enum answer rc;
    if (!doc) {
        snprintf(what, whatlen, "reply is not JSON: %.80s", body ? body : "");
        rc = ANSWER_BAD;
    } else if (!content) {
        const char *e = json_string_value(json_object_get(doc, "error"));
        snprintf(what, whatlen, "%s%.160s",
                 e ? "" : "reply has no message.content: ", e ? e : body);
        rc = ANSWER_BAD;
    } else {
        rc = label_of_content(labels, content, label, what, whatlen);
    }
    json_decref(doc);
    return rc;
}

void request_cleanup(struct request_tpl *t)
{
    buf_free(&t->prefix);
    buf_free(&t->suffix);
}
