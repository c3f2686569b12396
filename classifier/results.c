/* results.c - see results.h. */
#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "idset.h"
#include "items.h"

struct results {
    int fd;
    int own_fd;
    struct idset *done; /* labelled ids when the file was opened -> label index */
    struct buf line;    /* the line being written */
    size_t cut;         /* bytes of a torn last line cut off */
};

/* What scan_existing() found at the end of the file. */
struct tail {
    off_t good;       /* bytes up to the end of the last complete line */
    int torn;         /* a last line without newline that is not JSON */
    int need_newline; /* a last line without newline that is whole */
    size_t torn_len;
};

/* Remember the id of LINE if it carries a label. Returns 1 when LINE is a
 * JSON document at all, 0 when it does not parse. */
static int scan_line(struct results *r, const struct labels *labels, const char *line, size_t len,
                     struct buf *key)
{
    json_t *doc = json_loadb(line, len, 0, NULL);
    json_t *id = json_object_get(doc, "id");
    const char *label = json_string_value(json_object_get(doc, "label"));
    int parsed = doc != NULL;
    if (id && label && items_id_key(id, key) == 0)
        idset_add(r->done, key->data, key->len, labels_find(labels, label, strlen(label)));
    json_decref(doc);
    return parsed;
}

/* Read the existing file: labelled ids, and how it ends. */
static int scan_existing(struct results *r, const struct labels *labels, const char *path,
                         struct tail *t)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct buf key = {0};
    memset(t, 0, sizeof *t);
    if (!f)
        return errno == ENOENT ? 0 : -1;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') {
            scan_line(r, labels, line, (size_t)n, &key);
            t->good += n;
        } else if (scan_line(r, labels, line, (size_t)n, &key)) {
            t->need_newline = 1; /* whole, only its newline is missing */
        } else {
            t->torn = 1; /* cut by a kill in the middle of a write */
            t->torn_len = (size_t)n;
        }
    }
    int rc = ferror(f) ? -1 : 0;
    free(line);
    buf_free(&key);
    fclose(f);
    return rc;
}

/* Make the file end on a complete line before the first append: cut a torn
 * last line off (on a regular file; elsewhere end it with a newline). */
static int repair_tail(struct results *r, const struct tail *t)
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

struct results *results_open(const char *path, const struct labels *labels, char *err,
                             size_t errlen)
{
    struct results *r = calloc(1, sizeof *r);
    struct tail t;
    if (!r || !(r->done = idset_new()))
        goto fail;
    if (strcmp(path, "-") == 0) {
        r->fd = STDOUT_FILENO;
        return r;
    }
    if (scan_existing(r, labels, path, &t) < 0) {
        snprintf(err, errlen, "cannot read results '%s': %s", path, strerror(errno));
        goto fail;
    }
    r->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (r->fd < 0) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto fail;
    }
    r->own_fd = 1;
    if (repair_tail(r, &t) < 0) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto fail;
    }
    return r;
fail:
    results_close(r);
    return NULL;
}

int results_find(const struct results *r, const char *id, size_t len, int *label)
{
    return idset_get(r->done, id, len, label);
}

size_t results_resumed(const struct results *r)
{
    return idset_count(r->done);
}

size_t results_cut(const struct results *r)
{
    return r->cut;
}

/* Write the line in r->line with one write(2), so lines never interleave. */
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

int results_label(struct results *r, const char *id, size_t id_len, const char *label, long ms,
                  int attempts, char *err, size_t errlen)
{
    char tail[64];
    buf_clear(&r->line);
    buf_puts(&r->line, "{\"id\":");
    buf_append(&r->line, id, id_len);
    buf_puts(&r->line, ",\"label\":");
    buf_json_string(&r->line, label, strlen(label));
    snprintf(tail, sizeof tail, ",\"ms\":%ld,\"attempts\":%d}\n", ms, attempts);
    if (buf_puts(&r->line, tail) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return flush_line(r, err, errlen);
}

int results_error(struct results *r, const char *id, size_t id_len, const char *error, int attempts,
                  char *err, size_t errlen)
{
    char tail[32];
    buf_clear(&r->line);
    buf_puts(&r->line, "{\"id\":");
    buf_append(&r->line, id, id_len);
    buf_puts(&r->line, ",\"label\":null,\"error\":");
    buf_json_string(&r->line, error, strlen(error));
    snprintf(tail, sizeof tail, ",\"attempts\":%d}\n", attempts);
    if (buf_puts(&r->line, tail) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return flush_line(r, err, errlen);
}

void results_close(struct results *r)
{
    if (!r)
        return;
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    idset_free(r->done);
    buf_free(&r->line);
    free(r);
}
