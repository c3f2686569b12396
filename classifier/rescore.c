/* rescore.c - see rescore.h. Two passes over the results: the first finds
 * the ids that have a label somewhere, the second counts each id once. */
#include "rescore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "idset.h"
#include "items.h"
#include "resfile.h"
#include "results.h"
#include "stats.h"

struct rescore {
    const struct opts *o;
    const struct labels *labels;
    struct stats *st;
    enum resfile_format fmt;
    struct idset *labelled; /* ids with a label line */
    struct idset *counted;  /* ids counted in the second pass */
    struct idset *gold_ids; /* from -i: id -> index in golds */
    char **golds;
    size_t ngolds;
    struct buf key, item_key;
    int pass;
};

/* The id's key (in CSV its text: resfile.h, results_key()). 0, or -1 (no
 * id). */
static int key_of(struct rescore *rs, json_t *row)
{
    json_t *id = json_object_get(row, "id");
    if (!id || items_id_key(id, &rs->key) < 0)
        return -1;
    return 0;
}

static const char *gold_of(struct rescore *rs, json_t *row, size_t *len)
{
    const char *f = rs->o->gold_field;
    char kept[256];
    int at;
    if (!f)
        return NULL;
    snprintf(kept, sizeof kept, "input_%s", f);
    json_t *g = json_object_get(row, results_own_key(f) ? kept : f);
    if (json_is_string(g) && json_string_length(g) > 0) {
        *len = json_string_length(g);
        return json_string_value(g);
    }
    if (idset_get(rs->gold_ids, rs->key.data, rs->key.len, &at)) {
        *len = strlen(rs->golds[at]);
        return rs->golds[at];
    }
    return NULL;
}

static void on_row(json_t *row, void *arg)
{
    struct rescore *rs = arg;
    const char *label = json_string_value(json_object_get(row, "label")), *gold;
    size_t glen = 0;
    if (key_of(rs, row) < 0)
        return;
    if (json_is_null(json_object_get(row, "id"))) {
        /* A malformed input line (no id can be known): each counts. */
        if (rs->pass == 2 && !label)
            stats_failed(rs->st, ERR_RECORDED, NULL, 0);
        return;
    }
    if (rs->pass == 1) {
        if (label)
            idset_add(rs->labelled, rs->key.data, rs->key.len, 0);
        return;
    }
    int is_labelled = idset_get(rs->labelled, rs->key.data, rs->key.len, NULL);
    if ((is_labelled && !label) || idset_add(rs->counted, rs->key.data, rs->key.len, 0) != 1)
        return; /* an error superseded by a label, or an id counted already */
    gold = gold_of(rs, row, &glen);
    if (!label) {
        stats_failed(rs->st, ERR_RECORDED, gold, glen);
        return;
    }
    json_t *c = json_object_get(row, "confidence");
    stats_skipped(rs->st, labels_find(rs->labels, label, strlen(label)),
                  json_is_number(c) ? json_number_value(c) : -1, gold, glen);
}

/* The gold labels of -i ITEMS, by id. */
static int read_golds(struct rescore *rs, char *err, size_t errlen)
{
    const struct opts *o = rs->o;
    struct items *in =
        items_open(o->input, o->format, o->id_field, o->text_field, o->gold_field, err, errlen);
    struct item it;
    int rc;
    if (!in)
        return -1;
    while ((rc = items_next(in, &it, err, errlen)) > 0) {
        if (!it.gold || it.no_id)
            continue;
        /* Keyed as the results key their ids (results_key()). */
        if ((rs->fmt == RESFILE_CSV ? items_text_key(it.id, it.id_len, &rs->item_key)
                                    : buf_set(&rs->item_key, it.id, it.id_len)) < 0) {
            rc = -1;
            break;
        }
        char **g = realloc(rs->golds, (rs->ngolds + 1) * sizeof *g);
        if (!g || !(g[rs->ngolds] = strndup(it.gold, it.gold_len))) {
            rs->golds = g ? g : rs->golds;
            rc = -1;
            break;
        }
        rs->golds = g;
        if (idset_add(rs->gold_ids, rs->item_key.data, rs->item_key.len, (int)rs->ngolds) == 1)
            rs->ngolds++;
        else
            free(g[rs->ngolds]);
    }
    items_close(in);
    if (rc < 0 && !err[0])
        snprintf(err, errlen, "out of memory");
    return rc < 0 ? -1 : 0;
}

static int rescore_read(struct rescore *rs, char *err, size_t errlen)
{
    const char *path = rs->o->output;
    for (rs->pass = 1; rs->pass <= 2; rs->pass++) {
        int rc = resfile_read(path, rs->fmt, on_row, rs, NULL, NULL);
        if (rc != 0) {
            snprintf(err, errlen, "cannot read results '%s'%s", path,
                     rc > 0 ? ": no such file" : "");
            return -1;
        }
    }
    return 0;
}

int rescore_run(const struct opts *o, const struct labels *labels, char *err, size_t errlen)
{
    struct rescore rs = {o,           labels,      NULL,        resfile_format_of(o->output),
                         idset_new(), idset_new(), idset_new(), NULL,
                         0,           {0},         {0},         0};
    int rc = -1;
    err[0] = '\0';
    rs.st = stats_new(labels, -1, o->gold_field != NULL, o->min_confidence);
    if (!rs.st || !rs.labelled || !rs.counted || !rs.gold_ids) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if ((o->input && read_golds(&rs, err, errlen) < 0) || rescore_read(&rs, err, errlen) < 0)
        goto done;
    stats_rescore(rs.st, o->output);
    stats_summary(rs.st);
    rc = 0;
done:
    stats_free(rs.st);
    idset_free(rs.labelled);
    idset_free(rs.counted);
    idset_free(rs.gold_ids);
    for (size_t i = 0; i < rs.ngolds; i++)
        free(rs.golds[i]);
    free(rs.golds);
    buf_free(&rs.key);
    buf_free(&rs.item_key);
    return rc;
}
