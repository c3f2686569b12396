/* request.h - what goes over the wire: the /api/chat body for an item and
 * the label read back from Ollama's answer.
 *
 * The body is the same for every item except the user message, so it is
 * built once as a prefix and a suffix around the item's escaped text. */
#ifndef CLS_REQUEST_H
#define CLS_REQUEST_H

#include <stddef.h>

#include "buf.h"
#include "labels.h"

struct request_tpl {
    struct buf prefix; /* {"model":..,"messages":[{system},{"role":"user","content": */
    struct buf suffix; /* }],"stream":false,"format":{..},"options":{..}} */
};

/* Build the template for MODEL and LABELS with the system prompt read from
 * PROMPT_FILE (NULL: the built-in one), {{labels}} replaced by the labels
 * joined with ", ". Returns 0, or -1 with a reason in ERR. */
int request_init(struct request_tpl *t, const char *model, const struct labels *labels,
                 const char *prompt_file, char *err, size_t errlen);

/* Replace OUT with the body for the item text TEXT (LEN bytes). 0 or -1. */
int request_body(const struct request_tpl *t, const char *text, size_t len, struct buf *out);

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

void request_cleanup(struct request_tpl *t);

#endif
