/* resfile.h - reading a results file back: for resume (results.c) and for
 * --rescore (rescore.c). JSONL lines and CSV records (after the header
 * row) both come out as one JSON object per result, with the values
 * results_write() wrote: in CSV the id is always a string, its text (an
 * empty cell is the empty string): a cell cannot say whether the item's id
 * was 7 or "7", so CSV results match ids by their text
 * (items_text_key()); an empty label reads as null, confidence, ms and
 * attempts as numbers, review as a boolean, votes as an object, every
 * other cell as a string (other empty cells are left out).
 *
 * The last line or record may be torn by a kill in the middle of a write.
 * JSONL: a last line without its newline is whole if it parses (kept), torn
 * if not. CSV: a last record without its newline is torn (the writer puts
 * each record and its newline in one write(2); a record cannot be known
 * whole by parsing). A torn one is not passed to the callback. */
#ifndef CLS_RESFILE_H
#define CLS_RESFILE_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

enum resfile_format { RESFILE_JSONL, RESFILE_CSV };

/* CSV when PATH ends in .csv (any case), else JSONL. */
enum resfile_format resfile_format_of(const char *path);

/* How the file ends. */
struct resfile_tail {
    off_t good;       /* bytes up to the end of the last complete line or record */
    int torn;         /* the last line or record is torn */
    int need_newline; /* JSONL: a whole last line that only lacks its newline */
    size_t torn_len;  /* bytes of the torn part */
};

/* Called for each result; ROW is borrowed for the call. */
typedef void (*resfile_fn)(json_t *row, void *arg);

/* Read PATH in format FMT, calling FN for each result. TAIL (may be NULL)
 * says how the file ends; HEADER (may be NULL) gets the CSV's column names
 * as a new array (NULL for JSONL or an empty file). Returns 0; 1 when PATH
 * does not exist; -1 when it cannot be read (errno set). */
int resfile_read(const char *path, enum resfile_format fmt, resfile_fn fn, void *arg,
                 struct resfile_tail *tail, json_t **header);

#endif
