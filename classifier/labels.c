/* labels.c - see labels.h. */
#include "labels.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "utf8.h"

/* Trim S..S+*LEN in place of the pointer and length. */
static const char *trim(const char *s, size_t *len)
{
    while (*len && isspace((unsigned char)s[0])) {
        s++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)s[*len - 1]))
        (*len)--;
    return s;
}

int labels_find(const struct labels *l, const char *s, size_t len)
{
    s = trim(s, &len);
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->names[i]) == len && strncasecmp(l->names[i], s, len) == 0)
            return (int)i;
    return -1;
}

static int add_label(struct labels *l, const char *s, size_t len, char *err, size_t errlen)
{
    s = trim(s, &len);
    if (len == 0) {
        snprintf(err, errlen, "empty label in the label list");
        return -1;
    }
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n == 0) {
            snprintf(err, errlen, "label '%.*s' is not valid UTF-8", (int)len, s);
            return -1;
        }
        i += n;
    }
    if (labels_find(l, s, len) >= 0) {
        snprintf(err, errlen, "label '%.*s' given twice", (int)len, s);
        return -1;
    }
    char **names = realloc(l->names, (l->n + 1) * sizeof *names);
    if (!names)
        return -1;
    l->names = names;
    if (!(l->names[l->n] = strndup(s, len)))
        return -1;
    l->n++;
    return 0;
}

static int load_file(struct labels *l, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    if (!f) {
        snprintf(err, errlen, "cannot read labels file '%s'", path);
        return -1;
    }
    utf8_skip_bom(f);
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        size_t len = (size_t)n;
        const char *s = trim(line, &len);
        if (len && s[0] != '#')
            rc = add_label(l, s, len, err, errlen);
    }
    free(line);
    fclose(f);
    return rc;
}

int labels_load(struct labels *l, const char *spec, char *err, size_t errlen)
{
    int rc = 0;
    if (spec[0] == '@') {
        rc = load_file(l, spec + 1, err, errlen);
    } else {
        for (const char *p = spec; rc == 0; p++) {
            size_t len = strcspn(p, ",");
            rc = add_label(l, p, len, err, errlen);
            p += len;
            if (!*p)
                break;
        }
    }
    if (rc == 0 && l->n == 0) {
        snprintf(err, errlen, "no labels in '%s'", spec);
        rc = -1;
    }
    return rc;
}

int labels_add(struct labels *l, const char *name, char *err, size_t errlen)
{
    int at = labels_find(l, name, strlen(name));
    err[0] = '\0';
    if (at >= 0)
        return at;
    if (add_label(l, name, strlen(name), err, errlen) < 0) {
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    return (int)l->n - 1;
}

void labels_free(struct labels *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}
