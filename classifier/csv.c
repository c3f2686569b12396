/* csv.c - see csv.h. A four-state machine fed one byte at a time:
 * START (at the beginning of a field), PLAIN (inside an unquoted field),
 * QUOTED (inside quotes), QUOTE (just saw '"' inside quotes: either the end
 * of the quotes or the first half of ""). */
#include "csv.h"

#include <stdlib.h>

enum csv_state { CSV_START, CSV_PLAIN, CSV_QUOTED, CSV_QUOTE };

/* End the field that began at START; AT_EOL: it ends its line. */
static int field_end(struct csv_record *rec, size_t start, int at_eol)
{
    if (rec->n == rec->cap) {
        size_t cap = rec->cap ? rec->cap * 2 : 16;
        size_t *off = realloc(rec->off, cap * sizeof *off);
        if (!off)
            return -1;
        rec->off = off;
        size_t *len = realloc(rec->len, cap * sizeof *len);
        if (!len)
            return -1;
        rec->len = len;
        rec->cap = cap;
    }
    size_t l = rec->data.len - start;
    /* The last field of a CRLF line keeps no CR. */
    if (at_eol && l && rec->data.data[rec->data.len - 1] == '\r') {
        rec->data.len--;
        l--;
    }
    rec->off[rec->n] = start;
    rec->len[rec->n] = l;
    rec->n++;
    return buf_append(&rec->data, "", 1);
}

static int put(struct csv_record *rec, int c)
{
    char ch = (char)c;
    return buf_append(&rec->data, &ch, 1);
}

static void reset(struct csv_record *rec, long line)
{
    buf_clear(&rec->data);
    rec->n = 0;
    rec->error = NULL;
    rec->line = line;
}

/* Feed byte C in state *ST. Returns 1 at the end of a record, 0 to go on,
 * -1 out of memory. *START is where the current field begins in data. */
static int feed(struct csv_record *rec, enum csv_state *st, size_t *start, int c)
{
    int rc = 0;
    switch (*st) {
    case CSV_START:
    case CSV_PLAIN:
        if (c == ',' || c == '\n') {
            rc = field_end(rec, *start, c == '\n') < 0 ? -1 : (c == '\n');
            *start = rec->data.len;
            *st = CSV_START;
            return rc;
        }
        if (c == '"' && *st == CSV_START) {
            *st = CSV_QUOTED;
            return 0;
        }
        if (c == '"' && !rec->error)
            rec->error = "stray quote in an unquoted field";
        *st = CSV_PLAIN;
        return put(rec, c);
    case CSV_QUOTED:
        if (c == '"') {
            *st = CSV_QUOTE;
            return 0;
        }
        return put(rec, c);
    case CSV_QUOTE:
        if (c == '"') {
            *st = CSV_QUOTED;
            return put(rec, c);
        }
        if (c == ',' || c == '\n' || c == '\r') {
            *st = CSV_PLAIN; /* a CR is dropped by field_end */
            return feed(rec, st, start, c);
        }
        if (!rec->error)
            rec->error = "text after a closing quote";
        *st = CSV_PLAIN;
        return put(rec, c);
    }
    return 0;
}

int csv_read(FILE *f, long *line, struct csv_record *rec)
{
    enum csv_state st = CSV_START;
    size_t start = 0;
    int c, rc;
    reset(rec, *line + 1);
    while ((c = getc_unlocked(f)) != EOF) {
        if (c == '\n')
            (*line)++;
        if (c == '\n' && st == CSV_START && rec->n == 0) {
            reset(rec, *line + 1); /* a blank line */
            continue;
        }
        if (c == '\r' && st == CSV_START && rec->n == 0 && rec->data.len == 0)
            continue; /* the CR of a blank CRLF line */
        rc = feed(rec, &st, &start, c);
        if (rc != 0)
            return rc;
    }
    if (st == CSV_START && rec->n == 0)
        return 0;
    if (st == CSV_QUOTED && !rec->error)
        rec->error = "unterminated quoted field";
    return field_end(rec, start, 1) < 0 ? -1 : 1;
}

void csv_record_free(struct csv_record *rec)
{
    buf_free(&rec->data);
    free(rec->off);
    free(rec->len);
    rec->off = rec->len = NULL;
    rec->n = rec->cap = 0;
}
