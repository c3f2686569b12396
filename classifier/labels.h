/* labels.h - the label set: parsed once, matched against every answer. */
#ifndef CLS_LABELS_H
#define CLS_LABELS_H

#include <stddef.h>

struct labels {
    char **names; /* canonical spellings, owned */
    size_t n;
};

/* Parse SPEC: "a,b,c" or "@FILE" (one label a line; blank lines and lines
 * starting with '#' skipped). Labels are trimmed; empty or duplicate
 * (case-insensitive) labels are an error. Returns 0, or -1 with a reason in
 * ERR. L must be zeroed; free with labels_free() in every case. */
int labels_load(struct labels *l, const char *spec, char *err, size_t errlen);

/* The index of the label S (LEN bytes) after trimming blanks, compared
 * case-insensitively; -1 when it is none of them. */
int labels_find(const struct labels *l, const char *s, size_t len);

/* Add NAME (trimmed) as a label unless it is one already (then its index
 * is returned too). Returns its index, or -1 with a reason in ERR (empty,
 * out of memory). */
int labels_add(struct labels *l, const char *name, char *err, size_t errlen);

void labels_free(struct labels *l);

#endif
