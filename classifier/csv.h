/* csv.h - an RFC 4180 record reader: fields separated by ',', quoted with
 * '"' ("" inside quotes is one quote), quoted fields may hold ',' and
 * newlines, records end at LF or CRLF. Blank lines are skipped. A record
 * that breaks the rules is still returned whole, with ERROR set, so the
 * caller can report it and go on. */
#ifndef CLS_CSV_H
#define CLS_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "buf.h"

struct csv_record {
    struct buf data;   /* the fields, each NUL-terminated, back to back */
    size_t *off;       /* start of field i in data */
    size_t *len;       /* length of field i */
    size_t n, cap;     /* fields in this record, slots allocated */
    long line;         /* line where the record starts */
    const char *error; /* NULL, or why the record is malformed (static text) */
};

/* Read the next record from F into REC; *LINE counts the lines consumed so
 * far and is advanced. Returns 1 (a record), 0 (end of file), -1 (out of
 * memory). REC must be zeroed before the first call. */
int csv_read(FILE *f, long *line, struct csv_record *rec);

/* Free REC's memory; it is empty again. */
void csv_record_free(struct csv_record *rec);

#endif
