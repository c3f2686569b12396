/* examples.h - few-shot examples for the prompt: pairs of a text and its
 * label, read from a JSONL or CSV file
 * and kept in file order, so that the prompt's shared prefix is the same
 * for every item (Ollama's prompt cache re-uses it). */
#ifndef CLS_EXAMPLES_H
#define CLS_EXAMPLES_H

#include <stddef.h>

#include "labels.h"

struct example {
    char *text; /* owned */
    int label;  /* index in the labels */
};

struct examples {
    struct example *v;
    size_t n;
};

/* Read PATH (.jsonl/.ndjson/.json or .csv, by extension). The text is in
 * TEXT_FIELD; the label in "label", or, when the file has no "label"
 * field, in GOLD_FIELD (may be NULL), so that a slice of gold data serves
 * as is. Every example needs a text that is not blank and one of LABELS.
 * Returns 0, or -1 with "PATH: line N: what is wrong" in ERR. EX must be
 * zeroed; free it with examples_free() in every case. */
int examples_load(struct examples *ex, const char *path, const char *text_field,
                  const char *gold_field, const struct labels *labels, char *err, size_t errlen);

void examples_free(struct examples *ex);

#endif
