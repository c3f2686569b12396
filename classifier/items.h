/* items.h - reading the items to classify, one at a time, as a stream.
 *
 * Three formats: JSONL (one object a line), CSV (a header row naming the
 * fields, RFC 4180 quoting, embedded newlines allowed) and text (one item a
 * line). Memory does not grow with the file: only the current item is held.
 * Blank lines are not items. An item without an id gets the 1-based number
 * of the line where it starts, as a JSON number. A UTF-8 byte order mark
 * at the start of the file (or stdin) is skipped. An empty or blank gold
 * value is no gold. */
#ifndef CLS_ITEMS_H
#define CLS_ITEMS_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"

enum items_format { ITEMS_JSONL, ITEMS_CSV, ITEMS_TEXT };

/* One item. Every pointer borrows from the reader and is valid until the
 * next items_next() or items_close(). */
struct item {
    long line;      /* line where the item starts */
    const char *id; /* the id as JSON text: "\"t0001\"" or "17" */
    size_t id_len;
    const char *text;
    size_t text_len;
    const char *gold; /* NULL when there is no gold field or value */
    size_t gold_len;
    const char *error; /* non-NULL: a malformed line, this says why */
    int no_id;         /* a line or record too malformed to have an id (with
                        * ERROR): ID is "null", and LINE says which it was;
                        * it must not take the id of a real item */
};

struct items;

/* Open PATH ("-" = stdin). FORMAT is NULL/"auto" (by extension: .jsonl,
 * .ndjson, .json are JSONL, .csv is CSV, anything else text; stdin is JSONL
 * when its first non-blank character is '{', else text), "jsonl", "csv" or
 * "text". ID_FIELD, TEXT_FIELD and GOLD_FIELD (may be NULL) name the fields
 * and are borrowed for the reader's lifetime. Returns the reader, or NULL
 * with a reason in ERR (unreadable file, CSV header without TEXT_FIELD). */
struct items *items_open(const char *path, const char *format, const char *id_field,
                         const char *text_field, const char *gold_field, char *err, size_t errlen);

/* Read the next item into IT. Returns 1 (an item, maybe with IT->error set),
 * 0 at the end, -1 on a read error (reason in ERR). */
int items_next(struct items *r, struct item *it, char *err, size_t errlen);

/* Set in OUT (a JSON object) each field named in NAMES (N of them) that
 * the current item IT has: a JSONL item's values as they are (shared
 * references), a CSV item's cells as strings, and for text input the line
 * as the text field. 0, or -1 out of memory. */
int items_fields(const struct items *r, const struct item *it, char *const *names, size_t n,
                 json_t *out);

/* The format in use. */
enum items_format items_format(const struct items *r);

/* How many items a regular file holds, by a pass over it that splits it
 * exactly as items_next() will (malformed lines included: each is one
 * item); -1 when unknown (stdin, a pipe). Call before the first
 * items_next(). */
long items_count(const struct items *r);

/* The key under which an id is remembered, and the text written for it:
 * ID as JSON text, strings escaped as buf_json_string() does. The results
 * reader uses it too, so that the two agree. OUT is replaced; 0 or -1. */
int items_id_key(json_t *id, struct buf *out);

/* The textual key of the id ID (JSON text, LEN bytes): a string id as it
 * is, any other id as the JSON string of its text (7 -> "7", 1.5 ->
 * "1.5"). Where ids are kept as text (CSV results), ids are matched by
 * this key, so 7 and "7" are the same id there. OUT is replaced; 0 or -1. */
int items_text_key(const char *id, size_t len, struct buf *out);

/* 1 when the input is CSV and its header has no column NAME, else 0 (any
 * other format: fields are per line, nothing to check up front). */
int items_lacks_column(const struct items *r, const char *name);

/* Close the reader; NULL is a no-op. */
void items_close(struct items *r);

#endif
