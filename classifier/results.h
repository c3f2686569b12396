/* results.h - the results file: one JSONL line per item, appended and
 * written with one write(2) the moment the item ends, so a kill -9 loses
 * only the requests in flight. The file is never rewritten in place.
 *
 * Resume: results_open() reads an existing file first and remembers the ids
 * that already have a label; lines that do not parse (a torn last line left
 * by a kill) are ignored, and if the file does not end in a newline one is
 * written before the first new line. */
#ifndef CLS_RESULTS_H
#define CLS_RESULTS_H

#include <stddef.h>

struct results;

/* Open PATH for appending ("-": stdout, no resume). Returns the writer, or
 * NULL with a reason in ERR. */
struct results *results_open(const char *path, char *err, size_t errlen);

/* 1 when the id ID (JSON text, LEN bytes) already has a label in the file. */
int results_has_label(const struct results *r, const char *id, size_t len);

/* Ids found labelled when the file was opened. */
size_t results_resumed(const struct results *r);

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
