/* request.h - what goes over the wire: the /api/chat body for an item and
 * the label read back from Ollama's answer.
 *
 * The body is the same for every item except the user message, so it is
 * built once as a prefix and a suffix around the item's escaped text. */
#ifndef CLS_REQUEST_H
#define CLS_REQUEST_H

#include <stddef.h>

#include <jansson.h>

#include "buf.h"
#include "labels.h"

struct examples;

/* What the requests are made of; all borrowed during request_init(). */
struct request_conf {
    const char *model;
    const struct labels *labels;     /* the abstain label among them */
    const char *prompt_file;         /* NULL: the built-in prompt */
    const char *abstain;             /* NULL, or the label for "none fits" */
    const struct examples *examples; /* NULL: none */
    const char *options;             /* --options SPEC, NULL: none */
    int top_logprobs;                /* asked for with REQ_LOGPROBS */
    double vote_temperature;         /* REQ_VOTE's temperature */
};

/* The three bodies: the same prefix, suffixes that differ in options. */
enum request_kind {
    REQ_PLAIN,    /* temperature 0 */
    REQ_LOGPROBS, /* temperature 0, "logprobs":true, "top_logprobs":K */
    REQ_VOTE,     /* a sample at the vote temperature, no seed */
    REQ_KINDS
};

struct request_tpl {
    struct buf prefix;            /* {"model":..,"messages":[{system},{examples}..,
                                   * {"role":"user","content": */
    struct buf suffix[REQ_KINDS]; /* }],"stream":false,"format":{..},"options":{..}..} */
};

/* Build the template: the system prompt from PROMPT_FILE (NULL: the
 * built-in one) with {{labels}} replaced by the labels joined with ", "
 * and {{abstain}} by the sentence that allows the abstain label (appended
 * when the template has no {{abstain}} and an abstain label is set); then
 * each example as a user message and the assistant's answer
 * {"label":"..."}, in file order; then the item. --options: "k=v,k=v"
 * (values are JSON when they parse, else strings) or a JSON object; think
 * and keep_alive go to the request, the rest to "options", where they win
 * over temperature 0 (not over the vote temperature). Returns 0, or -1
 * with a reason in ERR. */
int request_init(struct request_tpl *t, const struct request_conf *rc, char *err, size_t errlen);

/* Replace OUT with the body of kind K for the item text TEXT (LEN bytes). 0 or -1. */
int request_body(const struct request_tpl *t, enum request_kind k, const char *text, size_t len,
                 struct buf *out);

/* Results of request_answer(). */
enum answer {
    ANSWER_LABEL = 0, /* *label is the index of the label */
    ANSWER_OFF_LABEL, /* a label outside the set; WHAT holds it */
    ANSWER_BAD,       /* no label at all; WHAT says why */
};

/* Read the label out of a non-streamed /api/chat reply BODY: message.content
 * parsed as JSON and its "label" (or, failing that, the content itself as
 * a bare label). */
enum answer request_answer(const struct labels *labels, const char *body, size_t len, int *label,
                           char *what, size_t whatlen);

/* A non-streamed /api/chat reply, parsed once. */
struct reply {
    json_t *doc; /* owned: the parsed reply, NULL if it is not JSON */
    enum answer answer;
    int label;           /* with ANSWER_LABEL */
    char what[200];      /* otherwise: the answer outside the labels, or why */
    const char *content; /* message.content, borrowed from doc; NULL: none */
    size_t content_len;
    json_t *logprobs; /* borrowed from doc; NULL: none in the reply */
    double total_ms;  /* Ollama's total_duration: from the request's arrival */
    double load_ms;   /* load_duration: waiting for the model to be loaded */
    double prompt_ms; /* prompt_eval_duration */
    double eval_ms;   /* eval_duration; each -1 when not in the reply */
};

/* Parse BODY into R (request_answer()'s reading, and the rest). Free R
 * with request_reply_free() in every case. */
void request_reply(const struct labels *labels, const char *body, size_t len, struct reply *r);
void request_reply_free(struct reply *r);

void request_cleanup(struct request_tpl *t);

#endif
