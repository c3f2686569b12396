/* capstate.c - see capstate.h. What was read is a list of saved knees, each
 * used at most once (a runner started from it) and kept until then; what is
 * written is every adaptive runner's knee now plus the saved knees not yet
 * used whose backend is still in the fleet. A write happens only when that
 * text differs from the last one written, so an idle proxy never writes. */
#include "capstate.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "names.h"
#include "proxy.h"

struct saved {
    char *backend, *url, *key;
    int knee;
    int used; /* a runner started from it */
};

struct capstate {
    struct saved *saved;
    size_t nsaved;
    char *path;        /* where the next write goes; NULL: no state file */
    char *written;     /* the text last written (or read): no write without a change */
    int last_errno;    /* of the last failed write, logged once */
    struct event *ev;
};

static void saved_free(struct capstate *cs)
{
    for (size_t i = 0; i < cs->nsaved; i++) {
        free(cs->saved[i].backend);
        free(cs->saved[i].url);
        free(cs->saved[i].key);
    }
    free(cs->saved);
    cs->saved = NULL;
    cs->nsaved = 0;
}

/* One entry of "knees": 0, or -1 when it is not one (skipped, not fatal). */
static int parse_entry(json_t *e, struct saved *s)
{
    json_t *b = json_object_get(e, "backend"), *u = json_object_get(e, "url"),
           *m = json_object_get(e, "model"), *k = json_object_get(e, "knee");
    if (!json_is_string(b) || !json_is_string(u) || !json_is_string(m) || !json_is_integer(k) ||
        json_integer_value(k) < 1 || json_integer_value(k) > 1 << 20)
        return -1;
    char key[NAME_KEY_MAX];
    if (name_key(json_string_value(m), key, sizeof key) < 0)
        return -1;
    s->backend = strdup(json_string_value(b));
    s->url = strdup(json_string_value(u));
    s->key = strdup(key); /* as the runners' keys: "llama3" is llama3:latest */
    s->knee = (int)json_integer_value(k);
    s->used = 0;
    return s->backend && s->url && s->key ? 0 : -1;
}

/* Read PATH into CS->saved; a missing file is no error. */
static void load(struct capstate *cs, const char *path)
{
    json_error_t je;
    json_t *root, *knees;
    size_t i, bad = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT)
            log_warn("state_file %s: cannot read it (%s): adaptive caps start from 1", path,
                     strerror(errno));
        return;
    }
    root = json_loadf(f, 0, &je);
    fclose(f);
    knees = root ? json_object_get(root, "knees") : NULL;
    if (!json_is_array(knees) || json_array_size(knees) > CAPSTATE_MAX_KNEES) {
        log_warn("state_file %s: not a state file (%s): adaptive caps start from 1, and it "
                 "is written anew",
                 path, root ? "no \"knees\" list" : je.text);
        json_decref(root);
        return;
    }
    if (!(cs->saved = calloc(json_array_size(knees) + 1, sizeof *cs->saved))) {
        json_decref(root);
        return;
    }
    for (i = 0; i < json_array_size(knees); i++) {
        if (parse_entry(json_array_get(knees, i), &cs->saved[cs->nsaved]) == 0)
            cs->nsaved++;
        else
            bad++;
    }
    if (bad)
        log_warn("state_file %s: %zu entries that are not knees, left out", path, bad);
    log_info("state_file %s: %zu adaptive knees from before the restart", path, cs->nsaved);
    json_decref(root);
}

/* An entry; the model by its display name ("llama3:latest"), as people
 * and /api/tags write it. */
static int add_knee(json_t *knees, const char *backend, const char *url, const char *key,
                    int knee)
{
    char model[NAME_KEY_MAX];
    if (name_display(key, model, sizeof model) < 0)
        return -1;
    return json_array_append_new(knees, json_pack("{s:s, s:s, s:s, s:i}", "backend", backend,
                                                  "url", url, "model", model, "knee", knee));
}

/* BE (in the fleet now) by name and url, or NULL. */
static const struct backend *in_fleet(struct proxy *px, const char *name, const char *url)
{
    for (int i = 0; i < px->nbackends; i++)
        if (strcmp(px->backends[i]->name, name) == 0 && strcmp(px->backends[i]->url, url) == 0)
            return px->backends[i];
    return NULL;
}

/* BE's runner of the model KEY, or NULL (walked here: backend.c calls us). */
static const struct runner *runner_of(const struct backend *be, const char *key)
{
    const struct runner *rn = be->runners;
    while (rn && strcmp(rn->key, key) != 0)
        rn = rn->next;
    return rn;
}

/* Every adaptive runner's knee now, then the saved ones not yet used. */
static json_t *knees_now(struct proxy *px)
{
    struct capstate *cs = px->capstate;
    json_t *knees = json_array();
    int rc = knees ? 0 : -1;
    for (int i = 0; i < px->nbackends && rc == 0; i++) {
        const struct backend *be = px->backends[i];
        if (!be->adapt.on)
            continue;
        for (const struct runner *rn = be->runners; rn && rc == 0; rn = rn->next)
            if (rn->adapt.on && rn->adapt_epoch == be->adapt_epoch)
                rc = add_knee(knees, be->name, be->url, rn->key, rn->adapt.knee);
    }
    for (size_t i = 0; cs && i < cs->nsaved && rc == 0; i++) {
        const struct saved *s = &cs->saved[i];
        const struct backend *be = s->used ? NULL : in_fleet(px, s->backend, s->url);
        if (be && be->adapt.on && !runner_of(be, s->key))
            rc = add_knee(knees, s->backend, s->url, s->key, s->knee);
    }
    if (rc) {
        json_decref(knees);
        return NULL;
    }
    return knees;
}

char *capstate_text(struct proxy *px)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    json_t *knees = knees_now(px), *root;
    char *text;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    if (!knees)
        return NULL;
    root = json_pack("{s:i, s:s, s:o}", "version", 1, "saved", when, "knees", knees);
    text = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return text;
}

/* TEXT without its "saved" line: what tells two states apart. */
static const char *body_of(const char *text)
{
    const char *k = text ? strstr(text, "\"knees\"") : NULL;
    return k ? k : "";
}

/* Write the state when its knees changed since the last write. */
static void write_if_changed(struct proxy *px)
{
    struct capstate *cs = px->capstate;
    char *text, *tmp;
    FILE *f;
    int ok;
    if (!cs || !cs->path || !(text = capstate_text(px)))
        return;
    if ((cs->written && strcmp(body_of(text), body_of(cs->written)) == 0) ||
        !(tmp = malloc(strlen(cs->path) + 5))) {
        free(text);
        return;
    }
    sprintf(tmp, "%s.tmp", cs->path);
    f = fopen(tmp, "w");
    ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f && fclose(f) == 0) && ok && rename(tmp, cs->path) == 0;
    if (!ok) {
        if (errno != cs->last_errno)
            log_warn("state_file %s: cannot write it (%s): adaptive caps will start from 1 "
                     "after a restart",
                     cs->path, strerror(errno));
        cs->last_errno = errno;
        unlink(tmp);
        free(tmp);
        free(text);
        return;
    }
    free(tmp);
    cs->last_errno = 0;
    free(cs->written);
    cs->written = text;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    write_if_changed(arg);
}

void capstate_settings(struct proxy *px)
{
    struct capstate *cs = px->capstate;
    const char *path = px->cfg->state_file;
    if (!cs || (cs->path && path && strcmp(cs->path, path) == 0) || (!cs->path && !path))
        return;
    free(cs->path);
    cs->path = path ? strdup(path) : NULL;
    free(cs->written); /* another file: written at the next look */
    cs->written = NULL;
}

int capstate_start(struct proxy *px)
{
    struct capstate *cs = calloc(1, sizeof *cs);
    struct timeval tv = {(time_t)CAPSTATE_WRITE_S, 0};
    if (!cs)
        return -1;
    px->capstate = cs;
    if (!px->cfg->state_file)
        return 0;
    if (!(cs->path = strdup(px->cfg->state_file)))
        return -1;
    load(cs, cs->path);
    if (!(cs->ev = event_new(px->base, -1, EV_PERSIST, on_tick, px)) || event_add(cs->ev, &tv))
        return -1;
    return 0;
}

int capstate_knee(struct proxy *px, const struct backend *be, const char *key)
{
    struct capstate *cs = px->capstate;
    for (size_t i = 0; cs && key && i < cs->nsaved; i++) {
        struct saved *s = &cs->saved[i];
        if (!s->used && strcmp(s->key, key) == 0 && strcmp(s->backend, be->name) == 0 &&
            strcmp(s->url, be->url) == 0) {
            s->used = 1;
            return s->knee;
        }
    }
    return 0;
}

void capstate_stop(struct proxy *px)
{
    struct capstate *cs = px->capstate;
    if (!cs)
        return;
    write_if_changed(px);
    if (cs->ev)
        event_free(cs->ev);
    saved_free(cs);
    free(cs->path);
    free(cs->written);
    free(cs);
    px->capstate = NULL;
}
