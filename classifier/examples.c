/* examples.c - see examples.h. Read with the items reader, so the file
 * follows the same rules as the items (JSONL objects, CSV with a header). */
#include "examples.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "items.h"

static int blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

static int add(struct examples *ex, const struct item *it, int label)
{
    struct example *v = realloc(ex->v, (ex->n + 1) * sizeof *v);
    if (!v)
        return -1;
    ex->v = v;
    if (!(v[ex->n].text = strndup(it->text, it->text_len)))
        return -1;
    v[ex->n++].label = label;
    return 0;
}

/* One example; -1 with the reason in ERR. */
static int take(struct examples *ex, const struct item *it, const char *path,
                const char *label_field, const struct labels *labels, char *err, size_t errlen)
{
    int label;
    if (it->error) {
        snprintf(err, errlen, "examples %s: %s", path, it->error);
        return -1;
    }
    if (blank(it->text, it->text_len)) {
        snprintf(err, errlen, "examples %s: line %ld: the text is empty", path, it->line);
        return -1;
    }
    if (!it->gold) {
        snprintf(err, errlen, "examples %s: line %ld: no \"%s\" field", path, it->line,
                 label_field);
        return -1;
    }
    if ((label = labels_find(labels, it->gold, it->gold_len)) < 0) {
        snprintf(err, errlen, "examples %s: line %ld: '%.*s' is not one of the labels", path,
                 it->line, it->gold_len > 60 ? 60 : (int)it->gold_len, it->gold);
        return -1;
    }
    if (add(ex, it, label) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Read every example with its label in LABEL_FIELD. Returns 0, 1 when no
 * item has that field at all (try another), or -1. */
static int read_all(struct examples *ex, const char *path, const char *text_field,
                    const char *label_field, const struct labels *labels, char *err, size_t errlen)
{
    struct items *r = items_open(path, "auto", "id", text_field, label_field, err, errlen);
    struct item it;
    int rc = 0, n, any_label = 0;
    if (!r)
        return -1;
    if (items_format(r) == ITEMS_TEXT) {
        snprintf(err, errlen, "examples %s: expected .jsonl or .csv (a text and a label)", path);
        items_close(r);
        return -1;
    }
    while (rc == 0 && (n = items_next(r, &it, err, errlen)) > 0) {
        any_label |= it.gold != NULL;
        if (!it.gold && !it.error && !any_label) {
            rc = 1; /* maybe the label is in the other field */
            break;
        }
        rc = take(ex, &it, path, label_field, labels, err, errlen);
    }
    if (rc == 0 && n < 0)
        rc = -1;
    items_close(r);
    return rc;
}

int examples_load(struct examples *ex, const char *path, const char *text_field,
                  const char *gold_field, const struct labels *labels, char *err, size_t errlen)
{
    int rc = read_all(ex, path, text_field, "label", labels, err, errlen);
    if (rc == 1 && gold_field && strcmp(gold_field, "label") != 0)
        rc = read_all(ex, path, text_field, gold_field, labels, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "examples %s: no \"label\"%s%s%s field in the first example", path,
                 gold_field ? " or \"" : "", gold_field ? gold_field : "", gold_field ? "\"" : "");
    if (rc == 0 && ex->n == 0) {
        snprintf(err, errlen, "examples %s: no examples in the file", path);
        rc = -1;
    }
    return rc == 0 ? 0 : -1;
}

void examples_free(struct examples *ex)
{
    for (size_t i = 0; i < ex->n; i++)
        free(ex->v[i].text);
    free(ex->v);
    ex->v = NULL;
    ex->n = 0;
}
