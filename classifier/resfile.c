/* resfile.c - see resfile.h. */
#include "resfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "csv.h"
#include "utf8.h"

enum resfile_format resfile_format_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && !strcasecmp(dot, ".csv") ? RESFILE_CSV : RESFILE_JSONL;
}

static int read_jsonl(FILE *f, resfile_fn fn, void *arg, struct resfile_tail *t)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *doc = json_loadb(line, (size_t)n, 0, NULL);
        if (line[n - 1] == '\n') {
            t->good += n;
        } else if (doc) {
            t->need_newline = 1; /* whole, only its newline is missing */
        } else {
            t->torn = 1; /* cut by a kill in the middle of a write */
            t->torn_len = (size_t)n;
        }
        if (json_is_object(doc))
            fn(doc, arg);
        json_decref(doc);
    }
    free(line);
    return ferror(f) ? -1 : 0;
}

static int is_integer(const char *s, size_t len)
{
    size_t i = len && s[0] == '-';
    if (i == len || len > 18)
        return 0;
    for (; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* One CSV cell as the JSON value it was written from; NULL: leave it out. */
static json_t *cell(const char *name, const char *s, size_t len)
{
    if (!strcmp(name, "label"))
        return len ? json_stringn_nocheck(s, len) : json_null();
    if (!strcmp(name, "id"))
        return json_stringn_nocheck(s, len); /* text: see resfile.h */
    if (!len)
        return NULL;
    if ((!strcmp(name, "ms") || !strcmp(name, "attempts")) && is_integer(s, len))
        return json_integer(strtoll(s, NULL, 10));
    if (!strcmp(name, "confidence"))
        return json_real(strtod(s, NULL));
    if (!strcmp(name, "review"))
        return len == 4 && !memcmp(s, "true", 4) ? json_true() : json_false();
    if (!strcmp(name, "votes"))
        return json_loadb(s, len, 0, NULL);
    return json_stringn_nocheck(s, len);
}

static json_t *row_of(const struct csv_record *rec, json_t *header)
{
    json_t *row = json_object();
    for (size_t i = 0; i < rec->n && i < json_array_size(header); i++) {
        const char *name = json_string_value(json_array_get(header, i));
        json_t *v = cell(name, rec->data.data + rec->off[i], rec->len[i]);
        if (v)
            json_object_set_new(row, name, v);
    }
    return row;
}

static json_t *names_of(const struct csv_record *rec)
{
    json_t *names = json_array();
    for (size_t i = 0; i < rec->n; i++)
        json_array_append_new(names,
                              json_stringn_nocheck(rec->data.data + rec->off[i], rec->len[i]));
    return names;
}

/* A record is passed on once it is known whole: a torn last one never is. */
static int read_csv(FILE *f, resfile_fn fn, void *arg, struct resfile_tail *t, json_t **header)
{
    struct csv_record rec = {0};
    json_t *names = NULL;
    long line = 0;
    int rc;
    while ((rc = csv_read(f, &line, &rec)) > 0) {
        long end = ftell(f);
        if (feof(f)) { /* it ends at the end of the file: no newline */
            t->torn = 1;
            t->torn_len = (size_t)(end - t->good);
            break;
        }
        t->good = end;
        if (!names) {
            names = names_of(&rec);
            continue;
        }
        json_t *row = row_of(&rec, names);
        fn(row, arg);
        json_decref(row);
    }
    csv_record_free(&rec);
    if (header)
        *header = names;
    else
        json_decref(names);
    return rc < 0 || ferror(f) ? -1 : 0;
}

int resfile_read(const char *path, enum resfile_format fmt, resfile_fn fn, void *arg,
                 struct resfile_tail *tail, json_t **header)
{
    struct resfile_tail t = {0};
    FILE *f = fopen(path, "rb");
    if (header)
        *header = NULL;
    if (tail)
        *tail = t;
    if (!f)
        return errno == ENOENT ? 1 : -1;
    t.good = utf8_skip_bom(f) ? 3 : 0; /* an editor's mark: not a torn line */
    int rc = fmt == RESFILE_CSV ? read_csv(f, fn, arg, &t, header) : read_jsonl(f, fn, arg, &t);
    fclose(f);
    if (tail)
        *tail = t;
    return rc;
}
