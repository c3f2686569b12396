/* results.c - see results.h. */
#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "idset.h"
#include "items.h"
#include "resfile.h"
#include "utf8.h"

/* A label read back: its index and confidence. */
struct prior {
    int label;
    float confidence; /* -1: none */
};

struct results {
    int fd;
    int own_fd;
    char *path;  /* NULL for stdout */
    int created; /* the file did not exist before this writer */
    int regular; /* a regular file (read back for resume); else written only */
    enum resfile_format fmt;
    struct results_conf conf;
    char **names;       /* the kept fields' keys in the output */
    struct idset *done; /* labelled ids when the file was opened -> index in priors */
    struct prior *priors;
    size_t npriors, cap;
    size_t resumed;  /* ids read back with a label */
    struct buf line; /* the line being written */
    size_t cut;      /* bytes of a torn last line cut off */
    unsigned long written;
};

static const char *const own_keys[] = {"id",       "label", "confidence", "review", "ms",
                                       "attempts", "error", "note",       "votes",  "raw"};
#define NOWN (sizeof own_keys / sizeof own_keys[0])

int results_own_key(const char *name)
{
    for (size_t i = 0; i < NOWN; i++)
        if (strcmp(name, own_keys[i]) == 0)
            return 1;
    return 0;
}

/* The output key of kept field NAME: NAME, or input_NAME when it is ours. */
static char *key_for(const char *name)
{
    if (!results_own_key(name))
        return strdup(name);
    char *k = malloc(strlen(name) + 7);
    if (k)
        sprintf(k, "input_%s", name);
    return k;
}

/* Returns 1 when KEY is new, 0 when it was there, -1 out of memory. */
static int remember(struct results *r, const struct buf *key, int label, double conf)
{
    if (r->npriors == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        struct prior *p = realloc(r->priors, cap * sizeof *p);
        if (!p)
            return -1;
        r->priors = p;
        r->cap = cap;
    }
    if (idset_add(r->done, key->data, key->len, (int)r->npriors) != 1)
        return 0; /* an id labelled twice: the first label stands */
    r->priors[r->npriors++] = (struct prior){label, (float)conf};
    return 1;
}

/* A result read back: remember its id if it has a label. In CSV the id is
 * its text (a string), so its key is the textual key results_key() gives
 * the items. */
static void on_row(json_t *row, void *arg)
{
    struct results *r = arg;
    json_t *id = json_object_get(row, "id"), *c = json_object_get(row, "confidence");
    const char *label = json_string_value(json_object_get(row, "label"));
    struct buf key = {0};
    if (!id || !label)
        return;
    int l = labels_find(r->conf.labels, label, strlen(label));
    double conf = json_is_number(c) ? json_number_value(c) : -1;
    if (items_id_key(id, &key) == 0 && remember(r, &key, l, conf) == 1)
        r->resumed++;
    buf_free(&key);
}

/* The CSV columns this writer writes, as a JSON array. */
static json_t *csv_columns(const struct results *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < 8; i++)
        json_array_append_new(a, json_string(own_keys[i]));
    if (r->conf.votes)
        json_array_append_new(a, json_string("votes"));
    if (r->conf.raw)
        json_array_append_new(a, json_string("raw"));
    for (size_t i = 0; i < r->conf.nkeep; i++)
        json_array_append_new(a, json_string(r->names[i]));
    return a;
}

/* S as a CSV cell, quoted when it must be; like the JSON lines, valid
 * UTF-8 (a bad byte becomes U+FFFD, utf8.h). */
static void csv_cell(struct buf *b, const char *s, size_t len)
{
    int quote = strcspn(s, ",\"\r\n") < len || (len && (s[0] == ' ' || s[len - 1] == ' '));
    if (quote)
        buf_puts(b, "\"");
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n == 0) {
            buf_puts(b, UTF8_REPLACEMENT);
            i++;
            continue;
        }
        if (quote && s[i] == '"')
            buf_puts(b, "\"");
        buf_append(b, s + i, n);
        i += n;
    }
    if (quote)
        buf_puts(b, "\"");
}

static char *join_columns(json_t *cols)
{
    struct buf b = {0};
    size_t i;
    json_t *v;
    json_array_foreach(cols, i, v)
    {
        if (i)
            buf_puts(&b, ",");
        csv_cell(&b, json_string_value(v), json_string_length(v));
    }
    return b.data ? b.data : strdup("");
}

/* Write all of r->line with write(2), retrying short writes. */
static int flush_line(struct results *r, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < r->line.len) {
        ssize_t n = write(r->fd, r->line.data + off, r->line.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot write results: %s", strerror(errno));
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* A new CSV file gets the header; an existing one must have it. */
static int check_header(struct results *r, json_t *found, char *err, size_t errlen)
{
    json_t *want = csv_columns(r);
    char *w = join_columns(want);
    int rc = 0;
    if (!found) {
        buf_clear(&r->line);
        buf_puts(&r->line, w);
        buf_puts(&r->line, "\n");
        rc = flush_line(r, err, errlen);
    } else if (!json_equal(found, want)) {
        char *f = join_columns(found);
        snprintf(err, errlen,
                 "results %s: its columns (%.150s) are not this run's (%.150s): give the same "
                 "--keep-fields, --raw and --votes as the run that wrote it, or another -o",
                 r->path, f, w);
        free(f);
        rc = -1;
    }
    free(w);
    json_decref(want);
    return rc;
}

/* Make the file end on a complete line before the first append: cut a torn
 * last line off (on a regular file; elsewhere end it with a newline). */
static int repair_tail(struct results *r, const struct resfile_tail *t)
{
    struct stat st;
    if (t->torn && fstat(r->fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if (ftruncate(r->fd, t->good) < 0)
            return -1;
        r->cut = t->torn_len;
        return 0;
    }
    if ((t->torn || t->need_newline) && write(r->fd, "\n", 1) != 1)
        return -1;
    return 0;
}

/* Only a regular file is read back (resume, the torn tail, the CSV
 * header): anything else (/dev/stdout to a pipe, a FIFO, /dev/null,
 * /dev/full) is written only, as a stream that starts empty. Reading one
 * back would block (a pipe's write end) or never end (/dev/zero). The file
 * is opened for writing first, so that the check is on what will be
 * written to. */
static int open_file(struct results *r, const char *path, char *err, size_t errlen)
{
    struct resfile_tail t = {0};
    json_t *header = NULL;
    struct stat st;
    int rc = -1;
    r->created = stat(path, &st) < 0 && errno == ENOENT;
    r->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    r->own_fd = r->fd >= 0;
    if (r->fd < 0 || fstat(r->fd, &st) < 0) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto done;
    }
    r->regular = S_ISREG(st.st_mode);
    if (r->regular && resfile_read(path, r->fmt, on_row, r, &t, &header) < 0) {
        snprintf(err, errlen, "cannot read results '%s': %s", path, strerror(errno));
        goto done;
    }
    if (repair_tail(r, &t) < 0) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto done;
    }
    rc = r->fmt == RESFILE_CSV ? check_header(r, header, err, errlen) : 0;
done:
    json_decref(header);
    return rc;
}

struct results *results_open(const char *path, const struct results_conf *rc, char *err,
                             size_t errlen)
{
    struct results *r = calloc(1, sizeof *r);
    if (!r || !(r->done = idset_new()) || !(r->names = calloc(rc->nkeep + 1, sizeof *r->names)))
        goto oom;
    r->conf = *rc;
    for (size_t i = 0; i < rc->nkeep; i++)
        if (!(r->names[i] = key_for(rc->keep[i])))
            goto oom;
    if (strcmp(path, "-") == 0) {
        r->fd = STDOUT_FILENO;
        return r;
    }
    r->fmt = resfile_format_of(path);
    if (!(r->path = strdup(path)))
        goto oom;
    if (open_file(r, path, err, errlen) < 0)
        goto fail;
    r->conf.labels = NULL; /* borrowed for the scan only */
    return r;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    results_close(r, 0);
    return NULL;
}

int results_key(const struct results *r, const char *id, size_t len, struct buf *key)
{
    if (r->fmt == RESFILE_CSV)
        return items_text_key(id, len, key);
    return buf_set(key, id, len);
}

int results_find(const struct results *r, const char *id, size_t len, int *label, double *conf)
{
    int at;
    if (!idset_get(r->done, id, len, &at))
        return 0;
    *label = r->priors[at].label;
    *conf = r->priors[at].confidence;
    return 1;
}

int results_is_csv(const struct results *r)
{
    return r->fmt == RESFILE_CSV;
}

size_t results_resumed(const struct results *r)
{
    return r->resumed;
}

size_t results_cut(const struct results *r)
{
    return r->cut;
}

unsigned long results_written(const struct results *r)
{
    return r->written;
}

static void put_json_value(struct buf *b, json_t *v)
{
    if (json_is_string(v)) {
        buf_json_string(b, json_string_value(v), json_string_length(v));
        return;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    buf_puts(b, s ? s : "null");
    free(s);
}

static void jsonl_line(struct results *r, const struct result *res)
{
    struct buf *b = &r->line;
    char num[64];
    buf_puts(b, "{\"id\":");
    buf_append(b, res->id, res->id_len);
    buf_puts(b, ",\"label\":");
    if (res->label)
        buf_json_string(b, res->label, strlen(res->label));
    else
        buf_puts(b, "null");
    if (res->confidence >= 0) {
        snprintf(num, sizeof num, ",\"confidence\":%.4f", res->confidence);
        buf_puts(b, num);
    }
    if (res->review >= 0)
        buf_puts(b, res->review ? ",\"review\":true" : ",\"review\":false");
    if (res->ms >= 0) {
        snprintf(num, sizeof num, ",\"ms\":%ld", res->ms);
        buf_puts(b, num);
    }
    snprintf(num, sizeof num, ",\"attempts\":%d", res->attempts);
    buf_puts(b, num);
    if (res->line > 0) {
        snprintf(num, sizeof num, ",\"line\":%ld", res->line);
        buf_puts(b, num);
    }
    if (!res->label) {
        buf_puts(b, ",\"error\":");
        buf_json_string(b, res->error ? res->error : "", res->error ? strlen(res->error) : 0);
    }
    if (res->note) {
        buf_puts(b, ",\"note\":");
        buf_json_string(b, res->note, strlen(res->note));
    }
    if (res->votes) {
        buf_puts(b, ",\"votes\":");
        buf_puts(b, res->votes);
    }
    if (res->raw) {
        buf_puts(b, ",\"raw\":");
        buf_json_string(b, res->raw, res->raw_len);
    }
    for (size_t i = 0; i < r->conf.nkeep; i++) {
        json_t *v = json_object_get(res->fields, r->conf.keep[i]);
        if (!v)
            continue;
        buf_puts(b, ",");
        buf_json_string(b, r->names[i], strlen(r->names[i]));
        buf_puts(b, ":");
        put_json_value(b, v);
    }
    buf_puts(b, "}\n");
}

/* A CSV cell from a JSON value: strings as they are, others as JSON. */
static void csv_value(struct buf *b, json_t *v)
{
    if (!v || json_is_null(v))
        return;
    if (json_is_string(v)) {
        csv_cell(b, json_string_value(v), json_string_length(v));
        return;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s)
        csv_cell(b, s, strlen(s));
    free(s);
}

static void csv_line(struct results *r, const struct result *res)
{
    struct buf *b = &r->line;
    json_t *id = json_loadb(res->id, res->id_len, JSON_DECODE_ANY, NULL);
    char num[64];
    csv_value(b, id);
    json_decref(id);
    buf_puts(b, ",");
    if (res->label)
        csv_cell(b, res->label, strlen(res->label));
    snprintf(num, sizeof num, ",%.4f", res->confidence);
    buf_puts(b, res->confidence >= 0 ? num : ",");
    buf_puts(b, res->review < 0 ? "," : res->review ? ",true" : ",false");
    snprintf(num, sizeof num, ",%ld", res->ms);
    buf_puts(b, res->ms >= 0 ? num : ",");
    snprintf(num, sizeof num, ",%d,", res->attempts);
    buf_puts(b, num);
    if (!res->label && res->error)
        csv_cell(b, res->error, strlen(res->error));
    buf_puts(b, ",");
    if (res->note)
        csv_cell(b, res->note, strlen(res->note));
    if (r->conf.votes) {
        buf_puts(b, ",");
        if (res->votes)
            csv_cell(b, res->votes, strlen(res->votes));
    }
    if (r->conf.raw) {
        buf_puts(b, ",");
        if (res->raw)
            csv_cell(b, res->raw, res->raw_len);
    }
    for (size_t i = 0; i < r->conf.nkeep; i++) {
        buf_puts(b, ",");
        csv_value(b, json_object_get(res->fields, r->conf.keep[i]));
    }
    buf_puts(b, "\n");
}

int results_write(struct results *r, const struct result *res, char *err, size_t errlen)
{
    buf_clear(&r->line);
    if (r->fmt == RESFILE_CSV)
        csv_line(r, res);
    else
        jsonl_line(r, res);
    if (!r->line.data || buf_puts(&r->line, "") < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (flush_line(r, err, errlen) < 0)
        return -1;
    r->written++;
    return 0;
}

void results_close(struct results *r, int discard)
{
    if (!r)
        return;
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    if (discard && r->created && r->written == 0 && r->path)
        unlink(r->path);
    idset_free(r->done);
    for (size_t i = 0; r->names && i < r->conf.nkeep; i++)
        free(r->names[i]);
    free(r->names);
    free(r->priors);
    free(r->path);
    buf_free(&r->line);
    free(r);
}
