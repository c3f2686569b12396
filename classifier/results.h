/* results.h - the results file: one result per item, JSONL (one object a
 * line) or CSV (-o FILE.csv: a header row, then one record per item),
 * appended and written with one write(2) the moment the item ends, so a
 * kill -9 loses only the requests in flight. Lines already there are
 * never rewritten.
 *
 * A JSONL line: {"id":ID,"label":"bug","confidence":0.97,"review":false,
 * "ms":12,"attempts":1, ...kept fields} or {"id":ID,"label":null,
 * "error":"...","attempts":2}. confidence and review are there when known;
 * note (e.g. an empty text), votes and raw when they apply. A kept input
 * field whose name is one of these keys is written as "input_NAME".
 * CSV: the columns id,label,confidence,review,ms,attempts,error,note, then
 * votes (with --votes), raw (with --raw) and the kept fields.
 *
 * Resume: results_open() reads an existing file first (resfile.h) and
 * remembers the ids that already have a label, with the label and its
 * confidence. A torn last line is cut off (the file is truncated to the
 * end of the last complete line), so that every line parses before the new
 * ones are appended. A CSV file must have the columns this run writes. */
#ifndef CLS_RESULTS_H
#define CLS_RESULTS_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "labels.h"

/* One result line. Strings are borrowed for the call. */
struct result {
    const char *id; /* JSON text */
    size_t id_len;
    const char *label; /* NULL: an error */
    const char *error; /* with no label: why */
    const char *note;  /* NULL, or a remark ("empty text: not sent") */
    double confidence; /* < 0: none */
    int review;        /* < 0: not judged; 0 or 1 */
    long ms;           /* < 0: no request made */
    int attempts;
    const char *votes; /* NULL, or {"label":count,...} as JSON text */
    const char *raw;   /* NULL: not kept; else the model's answer */
    size_t raw_len;
    json_t *fields; /* borrowed: the kept input fields, by name; NULL: none */
    long line;      /* > 0: a malformed input line (its id is null): JSONL
                     * writes it as "line" (CSV: the error text names it) */
};

/* What every line holds, fixed for the file (all borrowed during the
 * call but KEEP, which must outlive the writer). */
struct results_conf {
    const struct labels *labels; /* to turn labels read back into indexes */
    char **keep;                 /* kept input fields, in column order */
    size_t nkeep;
    int raw, votes; /* CSV: the raw and votes columns are there */
};

struct results;

/* Open PATH for appending ("-": stdout, JSONL, no resume). Returns the
 * writer, or NULL with a reason in ERR. */
struct results *results_open(const char *path, const struct results_conf *rc, char *err,
                             size_t errlen);

/* The key under which R matches an item whose id is ID (JSON text, LEN
 * bytes), into KEY (replaced): in JSONL the id itself, so 7 and "7" are two
 * ids; in CSV, where a cell holds only text, the id's textual key
 * (items_text_key(): 7 and "7" are one id there). The batch finds
 * duplicate ids by this key too, so that an id the results cannot tell
 * from another is a duplicate. 0 or -1. */
int results_key(const struct results *r, const char *id, size_t len, struct buf *key);

/* 1 when the key ID (results_key(), LEN bytes) already has a label in the file;
 * *LABEL is then its index in the labels, or -1 for a label that is not
 * one of them (written by a run with other labels), *CONF its confidence
 * or -1. 0 when it has none. */
int results_find(const struct results *r, const char *id, size_t len, int *label, double *conf);

/* 1 when R writes CSV (ids are matched as text: results_key()). */
int results_is_csv(const struct results *r);

/* Ids found labelled when the file was opened. */
size_t results_resumed(const struct results *r);

/* Bytes of a torn last line cut off when the file was opened; 0: none. */
size_t results_cut(const struct results *r);

/* Append RES. Returns 0, or -1 when the write failed (reason in ERR). */
int results_write(struct results *r, const struct result *res, char *err, size_t errlen);

/* Results written by this writer. */
unsigned long results_written(const struct results *r);

/* 1 when NAME is one of the keys a result line has of its own (so a kept
 * input field of that name is written as input_NAME), else 0. */
int results_own_key(const char *name);

/* Close; with DISCARD, a file that this writer created and that holds no
 * result (a CSV header at most) is removed. NULL is a no-op. */
void results_close(struct results *r, int discard);

#endif
