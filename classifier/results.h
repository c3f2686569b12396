/* results.h - the results file: one JSONL line per item, appended and
 * written with one write(2) the moment the item ends, so a kill -9 loses
 * only the requests in flight. Lines already there are never rewritten.
 *
 * Resume: results_open() reads an existing file first and remembers the ids
 * that already have a label, and which label. A last line without its
 * newline is either whole (valid JSON: kept, counted, and a newline added)
 * or torn by a kill mid-write: then the file is truncated to the end of the
 * last complete line, so that every line of it parses (jq, json.loads)
 * before the new lines are appended. Other lines that do not parse are
 * ignored and left as they are. */
#ifndef CLS_RESULTS_H
#define CLS_RESULTS_H

#include <stddef.h>

#include "labels.h"

struct results;

/* Open PATH for appending ("-": stdout, no resume). LABELS (borrowed, only
 * during the call) turns the labels read back into indexes. Returns the
 * writer, or NULL with a reason in ERR. */
struct results *results_open(const char *path, const struct labels *labels, char *err,
                             size_t errlen);

/* 1 when the id ID (JSON text, LEN bytes) already has a label in the file;
 * *LABEL is then its index in LABELS, or -1 for a label that is not one of
 * them (written by a run with other labels). 0 when it has none. */
int results_find(const struct results *r, const char *id, size_t len, int *label);

/* Ids found labelled when the file was opened. */
size_t results_resumed(const struct results *r);

/* Bytes of a torn last line cut off when the file was opened; 0: none. */
size_t results_cut(const struct results *r);

/* Append {"id":ID,"label":LABEL,"ms":MS,"attempts":N}. ID is JSON text.
 * Returns 0, or -1 when the write failed (reason in ERR). */
int results_label(struct results *r, const char *id, size_t id_len, const char *label, long ms,
                  int attempts, char *err, size_t errlen);

/* Append {"id":ID,"label":null,"error":ERROR,"attempts":N}. 0 or -1. */
int results_error(struct results *r, const char *id, size_t id_len, const char *error, int attempts,
                  char *err, size_t errlen);

/* Close; NULL is a no-op. */
void results_close(struct results *r);

#endif
