/* results.c - see results.h. */
#include "results.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "idset.h"
#include "items.h"

struct results {
    int fd;
    int own_fd;
    struct idset *done; /* ids with a label in the file when it was opened */
    struct buf line;    /* the line being written */
};

/* Remember the id of LINE if it carries a label. */
static void scan_line(struct results *r, const char *line, size_t len, struct buf *key)
{
    json_t *doc = json_loadb(line, len, 0, NULL);
    json_t *id = json_object_get(doc, "id");
    if (id && json_is_string(json_object_get(doc, "label")) && items_id_key(id, key) == 0)
        idset_add(r->done, key->data, key->len);
    json_decref(doc);
}

/* Read the existing file: labelled ids, and whether it ends mid-line. */
static int scan_existing(struct results *r, const char *path, int *torn)
{
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct buf key = {0};
    *torn = 0;
    if (!f)
        return errno == ENOENT ? 0 : -1;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {
            *torn = 1; /* the last line, cut by a kill: ignored */
            break;
        }
        scan_line(r, line, (size_t)n, &key);
    }
    int rc = ferror(f) ? -1 : 0;
    free(line);
    buf_free(&key);
    fclose(f);
    return rc;
}

struct results *results_open(const char *path, char *err, size_t errlen)
{
    struct results *r = calloc(1, sizeof *r);
    int torn = 0;
    if (!r || !(r->done = idset_new()))
        goto fail;
    if (strcmp(path, "-") == 0) {
        r->fd = STDOUT_FILENO;
        return r;
    }
    if (scan_existing(r, path, &torn) < 0) {
        snprintf(err, errlen, "cannot read results '%s': %s", path, strerror(errno));
        goto fail;
    }
    r->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (r->fd < 0) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto fail;
    }
    r->own_fd = 1;
    if (torn && write(r->fd, "\n", 1) != 1) {
        snprintf(err, errlen, "cannot write results '%s': %s", path, strerror(errno));
        goto fail;
    }
    return r;
fail:
    results_close(r);
    return NULL;
}

int results_has_label(const struct results *r, const char *id, size_t len)
{
    return idset_has(r->done, id, len);
}

size_t results_resumed(const struct results *r)
{
    return idset_count(r->done);
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
