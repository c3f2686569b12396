/* items.c - see items.h. The reader owns one line (or CSV record), one
 * parsed JSON document and one id buffer; items borrow them until the next
 * call. */
#include "items.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "buf.h"
#include "csv.h"
#include "utf8.h"

struct items {
    FILE *f;
    int is_stdin;
    int regular; /* a regular file: items_count() can count */
    enum items_format fmt;
    const char *id_field, *text_field, *gold_field;
    long line;     /* lines consumed so far */
    char *linebuf; /* JSONL and text */
    size_t linecap;
    json_t *doc;                    /* JSONL: the current item's object */
    struct csv_record rec;          /* CSV: the current record */
    int col_id, col_text, col_gold; /* CSV columns, -1 if absent */
    json_t *header;                 /* CSV: the column names */
    size_t ncols;
    struct buf id;      /* the current id as JSON text */
    char err_text[256]; /* the current item's error */
};

static enum items_format format_of_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot &&
        (!strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".ndjson") || !strcasecmp(dot, ".json")))
        return ITEMS_JSONL;
    if (dot && !strcasecmp(dot, ".csv"))
        return ITEMS_CSV;
    return ITEMS_TEXT;
}

/* stdin in auto mode: JSONL when the first non-blank character is '{'. */
static enum items_format sniff_format(FILE *f, long *line)
{
    int c;
    while ((c = getc(f)) != EOF && isspace(c))
        *line += c == '\n';
    if (c == EOF)
        return ITEMS_TEXT;
    ungetc(c, f);
    return c == '{' ? ITEMS_JSONL : ITEMS_TEXT;
}

static int column_of(const struct csv_record *rec, const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < rec->n; i++)
        if (strcmp(rec->data.data + rec->off[i], name) == 0)
            return (int)i;
    return -1;
}

static int read_csv_header(struct items *r, char *err, size_t errlen)
{
    int rc = csv_read(r->f, &r->line, &r->rec);
    if (rc <= 0 || r->rec.error) {
        snprintf(err, errlen, "CSV input has no usable header row%s%s", rc > 0 ? ": " : "",
                 rc > 0 ? r->rec.error : "");
        return -1;
    }
    r->ncols = r->rec.n;
    r->header = json_array();
    for (size_t i = 0; i < r->rec.n; i++)
        json_array_append_new(r->header, json_string(r->rec.data.data + r->rec.off[i]));
    r->col_id = column_of(&r->rec, r->id_field);
    r->col_text = column_of(&r->rec, r->text_field);
    r->col_gold = column_of(&r->rec, r->gold_field);
    if (r->col_text < 0) {
        snprintf(err, errlen, "CSV header has no '%s' column", r->text_field);
        return -1;
    }
    return 0;
}

struct items *items_open(const char *path, const char *format, const char *id_field,
                         const char *text_field, const char *gold_field, char *err, size_t errlen)
{
    struct items *r = calloc(1, sizeof *r);
    struct stat st;
    if (!r)
        return NULL;
    r->is_stdin = strcmp(path, "-") == 0;
    r->f = r->is_stdin ? stdin : fopen(path, "rb");
    r->id_field = id_field;
    r->text_field = text_field;
    r->gold_field = gold_field;
    if (!r->f || fstat(fileno(r->f), &st) < 0 || S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cannot read items '%s'", path);
        items_close(r);
        return NULL;
    }
    r->regular = S_ISREG(st.st_mode);
    utf8_skip_bom(r->f); /* before anything looks at the first byte */
    if (format && strcmp(format, "auto") != 0)
        r->fmt = !strcmp(format, "jsonl") ? ITEMS_JSONL
                 : !strcmp(format, "csv") ? ITEMS_CSV
                                          : ITEMS_TEXT;
    else
        r->fmt = r->is_stdin ? sniff_format(r->f, &r->line) : format_of_path(path);
    if (r->fmt == ITEMS_CSV && read_csv_header(r, err, errlen) < 0) {
        items_close(r);
        return NULL;
    }
    return r;
}

int items_fields(const struct items *r, const struct item *it, char *const *names, size_t n,
                 json_t *out)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (r->fmt == ITEMS_JSONL) {
            json_t *v = json_object_get(r->doc, names[i]);
            if (v)
                rc = json_object_set(out, names[i], v);
        } else if (r->fmt == ITEMS_TEXT) {
            if (it->text && strcmp(names[i], r->text_field) == 0)
                rc = json_object_set_new(out, names[i],
                                         json_stringn_nocheck(it->text, it->text_len));
        } else {
            for (size_t c = 0; c < json_array_size(r->header) && c < r->rec.n; c++)
                if (strcmp(json_string_value(json_array_get(r->header, c)), names[i]) == 0)
                    rc = json_object_set_new(
                        out, names[i],
                        json_stringn_nocheck(r->rec.data.data + r->rec.off[c], r->rec.len[c]));
        }
    }
    return rc;
}

enum items_format items_format(const struct items *r)
{
    return r->fmt;
}

static void set_line_id(struct items *r, struct item *it)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%ld", it->line);
    buf_set(&r->id, num, (size_t)n);
}

/* The id of a JSONL object as JSON text: strings and integers as they are,
 * no id (or null) -> the line number. */
static void set_json_id(struct items *r, struct item *it, json_t *id)
{
    if (!id || json_is_null(id) || items_id_key(id, &r->id) < 0)
        set_line_id(r, it);
}

int items_id_key(json_t *id, struct buf *out)
{
    buf_clear(out);
    if (json_is_string(id))
        return buf_json_string(out, json_string_value(id), json_string_length(id));
    char *s = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    int rc = s ? buf_puts(out, s) : -1;
    free(s);
    return rc;
}

int items_text_key(const char *id, size_t len, struct buf *out)
{
    if (len > 0 && id[0] == '"')
        return buf_set(out, id, len);
    buf_clear(out);
    return buf_json_string(out, id, len);
}

int items_lacks_column(const struct items *r, const char *name)
{
    size_t i;
    json_t *v;
    if (r->fmt != ITEMS_CSV)
        return 0;
    json_array_foreach(r->header, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return 0;
    }
    return 1;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Next non-blank physical line into r->linebuf; its length, or -1 at EOF. */
static long next_line(struct items *r)
{
    ssize_t n;
    while ((n = getline(&r->linebuf, &r->linecap, r->f)) >= 0) {
        r->line++;
        while (n > 0 && (r->linebuf[n - 1] == '\n' || r->linebuf[n - 1] == '\r'))
            r->linebuf[--n] = '\0';
        if (!is_blank(r->linebuf, (size_t)n))
            return (long)n;
    }
    return -1;
}

static void jsonl_item(struct items *r, struct item *it, long n)
{
    json_error_t jerr;
    r->doc = json_loadb(r->linebuf, (size_t)n, 0, &jerr);
    if (!json_is_object(r->doc)) {
        it->no_id = 1;
        snprintf(r->err_text, sizeof r->err_text, "line %ld: not a JSON object%s%.100s", it->line,
                 r->doc ? "" : ": ", r->doc ? "" : jerr.text);
        it->error = r->err_text;
        return;
    }
    set_json_id(r, it, json_object_get(r->doc, r->id_field));
    json_t *text = json_object_get(r->doc, r->text_field);
    json_t *gold = r->gold_field ? json_object_get(r->doc, r->gold_field) : NULL;
    if (!json_is_string(text)) {
        snprintf(r->err_text, sizeof r->err_text, "line %ld: %s \"%s\" field", it->line,
                 text ? "a non-string" : "no", r->text_field);
        it->error = r->err_text;
        return;
    }
    it->text = json_string_value(text);
    it->text_len = json_string_length(text);
    if (json_is_string(gold) && !is_blank(json_string_value(gold), json_string_length(gold))) {
        it->gold = json_string_value(gold);
        it->gold_len = json_string_length(gold);
    }
}

static int csv_item(struct items *r, struct item *it)
{
    int rc = csv_read(r->f, &r->line, &r->rec);
    const struct csv_record *rec = &r->rec;
    if (rc <= 0)
        return rc;
    it->line = rec->line;
    if (r->col_id >= 0 && (size_t)r->col_id < rec->n && rec->len[r->col_id] > 0) {
        buf_clear(&r->id);
        buf_json_string(&r->id, rec->data.data + rec->off[r->col_id], rec->len[r->col_id]);
    } else {
        set_line_id(r, it);
    }
    if (rec->error || rec->n != r->ncols) {
        if (!rec->error)
            snprintf(r->err_text, sizeof r->err_text, "line %ld: %zu fields, the header has %zu",
                     it->line, rec->n, r->ncols);
        else
            snprintf(r->err_text, sizeof r->err_text, "line %ld: %s", it->line, rec->error);
        it->no_id = 1;
        it->error = r->err_text;
        return 1;
    }
    it->text = rec->data.data + rec->off[r->col_text];
    it->text_len = rec->len[r->col_text];
    if (r->col_gold >= 0 && !is_blank(rec->data.data + rec->off[r->col_gold], rec->len[r->col_gold])) {
        it->gold = rec->data.data + rec->off[r->col_gold];
        it->gold_len = rec->len[r->col_gold];
    }
    return 1;
}

int items_next(struct items *r, struct item *it, char *err, size_t errlen)
{
    long n;
    memset(it, 0, sizeof *it);
    json_decref(r->doc);
    r->doc = NULL;
    if (r->fmt == ITEMS_CSV) {
        n = csv_item(r, it);
    } else if ((n = next_line(r)) >= 0) {
        it->line = r->line;
        if (r->fmt == ITEMS_JSONL) {
            jsonl_item(r, it, n);
        } else {
            set_line_id(r, it);
            it->text = r->linebuf;
            it->text_len = (size_t)n;
        }
        n = 1;
    } else {
        n = 0;
    }
    if (n >= 0 && ferror(r->f)) {
        snprintf(err, errlen, "read error on the items");
        return -1;
    }
    if (n < 0)
        snprintf(err, errlen, "out of memory reading the items");
    if (it->no_id)
        buf_set(&r->id, "null", 4);
    it->id = r->id.data;
    it->id_len = r->id.len;
    return (int)n;
}

/* Count the non-blank lines of F, as next_line() reads them. */
static long count_lines(FILE *f)
{
    char chunk[65536];
    size_t n;
    long count = 0;
    int content = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        for (size_t i = 0; i < n; i++) {
            if (chunk[i] == '\n') {
                count += content;
                content = 0;
            } else if (!isspace((unsigned char)chunk[i])) {
                content = 1;
            }
        }
    }
    return count + content;
}

/* Count the records of F, header included, with the reader's own parser:
 * a malformed record (a stray or unbalanced quote) is one item, and only a
 * parser that ends records where csv_read() does can count them. */
static long count_csv(FILE *f)
{
    struct csv_record rec = {0};
    long line = 0, count = 0;
    int rc;
    while ((rc = csv_read(f, &line, &rec)) > 0)
        count++;
    csv_record_free(&rec);
    return rc < 0 ? -1 : count;
}

long items_count(const struct items *r)
{
    if (!r->regular || r->is_stdin)
        return -1;
    /* A second descriptor of its own, so the reader's position is untouched. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fileno(r->f));
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    utf8_skip_bom(f);
    long n = r->fmt == ITEMS_CSV ? count_csv(f) : count_lines(f);
    fclose(f);
    return r->fmt == ITEMS_CSV && n > 0 ? n - 1 : n;
}

void items_close(struct items *r)
{
    if (!r)
        return;
    if (r->f && !r->is_stdin)
        fclose(r->f);
    free(r->linebuf);
    json_decref(r->doc);
    json_decref(r->header);
    csv_record_free(&r->rec);
    buf_free(&r->id);
    free(r);
}
