/* batch.c - see batch.h.
 *
 * Jobs are created on demand up to -j and then reused; an idle job waits in
 * b->idle. A job leaves the idle stack when feed() gives it an item and
 * returns when its result line is written (on_done) or the run is stopped
 * (stop_all). feed() runs after every finished job, so the count in flight
 * never sags while there are items left.
 *
 * Each item read goes one of six ways in feed(): not picked (--limit,
 * --sample: not counted anywhere), a malformed line (an error line with
 * "id":null and its "line": it has no id, and must not take a real item's),
 * a duplicate id (skipped and named), an item with an id but no usable
 * text (an error line), an id the results already label (skipped, its
 * label counted), an empty text (recorded without a request), or a job.
 * Ids are compared by the key the results match them by (results_key():
 * in CSV results, their text). What a job's replies become is verdict.c's
 * part. */
#include "batch.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "idset.h"
#include "verdict.h"

#define DUPS_SHOWN 10 /* duplicate ids named on stderr; the summary counts all */

struct batch {
    const struct batch_conf *conf;
    struct event_base *base;
    struct client *cl;
    struct event *tick, *sigint, *sigterm;
    struct job *jobs; /* conf->jobs slots, the first ncreated in use */
    size_t ncreated;
    struct job **idle; /* stack of idle jobs */
    size_t nidle;
    struct idset *seen; /* every id read so far (its results_key()) -> its line */
    struct buf key;     /* the current item's results_key() */
    unsigned long dups; /* items skipped for a duplicate id */
    struct verdicts *verdicts;
    int eof, stopping, status;
};

static void feed(struct batch *b);

static void job_release(struct batch *b, struct job *job)
{
    b->idle[b->nidle++] = job;
}

static struct job *job_get(struct batch *b)
{
    if (b->nidle)
        return b->idle[--b->nidle];
    if (b->ncreated == (size_t)b->conf->jobs)
        return NULL;
    struct job *job = &b->jobs[b->ncreated];
    job->votes = calloc(b->conf->labels->n + 1, sizeof *job->votes);
    if (!job->votes || client_job_init(b->cl, job) < 0) {
        free(job->votes);
        job->votes = NULL;
        client_job_cleanup(job);
        return NULL;
    }
    b->ncreated++;
    return job;
}

static void maybe_end(struct batch *b)
{
    if ((b->eof || b->stopping) && client_in_flight(b->cl) == 0)
        event_base_loopbreak(b->base);
}

/* Stop sending: cancel every job out (nothing is recorded for them, so a
 * re-run picks them up) and end the loop. */
static void stop_all(struct batch *b, int status)
{
    b->stopping = 1;
    if (status > b->status)
        b->status = status;
    for (size_t i = 0; i < b->ncreated; i++) {
        if (b->jobs[i].state != JOB_IDLE) {
            client_cancel(&b->jobs[i]);
            job_release(b, &b->jobs[i]);
        }
    }
    maybe_end(b);
}

static void write_failed(struct batch *b, const char *err)
{
    fprintf(stderr, "ollama-classify: %s\n", err);
    stats_stopped(b->conf->st, err);
    stop_all(b, 1);
}

static void record_error(struct batch *b, struct job *job, enum err_kind k, const char *text)
{
    char err[256];
    if (verdict_error(b->verdicts, job, k, text, err, sizeof err) < 0)
        write_failed(b, err);
}

/* The endpoint refuses every request (e.g. 401, the proxy's own 404): say
 * so once and stop without recording anything misleading. */
static void on_fatal(struct batch *b, struct job *job)
{
    stats_fatal(b->conf->st, job->err_kind);
    if (!b->stopping) {
        fprintf(stderr, "ollama-classify: %s: %s\n", b->conf->url, job->err);
        stats_stopped(b->conf->st, "at the first fatal error (above), which every request gets");
    }
    int status = job->bad_url ? 2 : 1; /* a URL refused is bad usage */
    job_release(b, job);
    stop_all(b, status);
}

static void on_done(struct job *job, void *arg)
{
    struct batch *b = arg;
    char err[256];
    if (job->result == JOB_FATAL) {
        on_fatal(b, job);
        return;
    }
    if (job->result == JOB_REPLY) {
        enum verdict_next next = verdict_reply(b->verdicts, job, b->stopping, err, sizeof err);
        if (next == VERDICT_AGAIN && client_send(b->cl, job) == 0)
            return;
        if (next == VERDICT_AGAIN)
            record_error(b, job, ERR_NETWORK, "cannot start a request");
        if (next == VERDICT_WRITE_FAILED)
            write_failed(b, err);
    }
    if (job->result == JOB_FAILED)
        record_error(b, job, job->err_kind, job->err);
    job_release(b, job);
    feed(b);
}

static void input_error(struct batch *b, struct job *job, const struct item *it)
{
    fprintf(stderr, "ollama-classify: items: %s\n", it->error);
    buf_set(&job->id, it->id, it->id_len);
    job->line = it->no_id ? it->line : 0;
    job->has_gold = 0;
    job->attempts = 0;
    buf_clear(&job->raw);
    json_decref(job->fields); /* nothing of the previous item */
    job->fields = NULL;
    record_error(b, job, ERR_INPUT, it->error);
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f' &&
            s[i] != '\v')
            return 0;
    return 1;
}

/* Hand ITEM to JOB and send it (an empty text is recorded at once). */
static void start(struct batch *b, struct job *job, const struct item *it)
{
    const struct batch_conf *c = b->conf;
    char err[256];
    buf_set(&job->id, it->id, it->id_len);
    job->line = 0;
    job->has_gold = it->gold != NULL;
    buf_set(&job->gold, it->gold ? it->gold : "", it->gold_len);
    buf_set(&job->text, it->text, it->text_len);
    buf_clear(&job->raw);
    json_decref(job->fields);
    job->fields = NULL;
    if (c->nkeep && (job->fields = json_object()))
        items_fields(c->in, it, c->keep, c->nkeep, job->fields);
    job->attempts = job->retries = job->label_retries = job->plain_404s = 0;
    job->ms = 0;
    job->nvotes = 0;
    job->kind = verdict_first_kind(b->verdicts);
    if (is_blank(it->text, it->text_len)) {
        if (verdict_empty(b->verdicts, job, err, sizeof err) < 0)
            write_failed(b, err);
        job_release(b, job);
        return;
    }
    if (job->kind == REQ_VOTE) {
        memset(job->votes, 0, (c->labels->n + 1) * sizeof *job->votes);
        job->nvotes = 1;
    }
    if (request_body(c->tpl, (enum request_kind)job->kind, it->text, it->text_len, &job->body) <
            0 ||
        client_send(b->cl, job) < 0) {
        record_error(b, job, ERR_NETWORK, "cannot start a request");
        job_release(b, job);
    }
}

/* 1 when an earlier item of the input had IT's id: then IT is skipped,
 * so that an id gets one label (and on resume, the twin of a labelled id
 * is not silently taken for "already done"). The first DUPS_SHOWN are
 * named; the summary counts them all. */
static int is_duplicate(struct batch *b, const struct item *it)
{
    int first = it->line > INT_MAX ? INT_MAX : (int)it->line;
    /* Out of memory (-1): not remembered, the item goes out anyway. */
    if (idset_add(b->seen, b->key.data, b->key.len, first) != 0)
        return 0;
    idset_get(b->seen, b->key.data, b->key.len, &first);
    stats_duplicate(b->conf->st);
    int csv = results_is_csv(b->conf->out);
    if (++b->dups <= DUPS_SHOWN)
        fprintf(stderr,
                "ollama-classify: items: line %ld: duplicate id %.*s%s: skipped (%s line %d%s; "
                "only the first item with an id is classified)\n",
                it->line, it->id_len > 80 ? 80 : (int)it->id_len, it->id,
                it->id_len > 80 ? "..." : "", csv ? "the same text as the id of" : "the id of",
                first, csv ? ": CSV results hold an id as text, so 7 and \"7\" are one id" : "");
    if (b->dups == DUPS_SHOWN + 1)
        fprintf(stderr, "ollama-classify: items: more duplicate ids: not named, the summary "
                        "counts them\n");
    return 1;
}

/* An id the results label already: skipped, its label counted. */
static int is_done(struct batch *b, const struct item *it)
{
    int label;
    double conf;
    if (!results_find(b->conf->out, b->key.data, b->key.len, &label, &conf))
        return 0;
    stats_skipped(b->conf->st, label, conf, it->gold, it->gold_len);
    return 1;
}

static void feed(struct batch *b)
{
    struct item it;
    struct job *job;
    char err[256];
    while (!b->eof && !b->stopping && (job = job_get(b))) {
        int rc = pick_full(b->conf->pick) ? 0 : items_next(b->conf->in, &it, err, sizeof err);
        if (rc <= 0) {
            job_release(b, job);
            b->eof = 1;
            if (rc < 0) {
                fprintf(stderr, "ollama-classify: %s\n", err);
                stats_stopped(b->conf->st, err);
                stop_all(b, 2);
            }
            break;
        }
        if (!pick_next(b->conf->pick)) {
            job_release(b, job);
        } else if (it.error && it.no_id) {
            input_error(b, job, &it);
            job_release(b, job);
        } else if (results_key(b->conf->out, it.id, it.id_len, &b->key) < 0 ||
                   is_duplicate(b, &it)) {
            job_release(b, job);
        } else if (it.error) {
            input_error(b, job, &it);
            job_release(b, job);
        } else if (is_done(b, &it)) {
            job_release(b, job);
        } else {
            start(b, job, &it);
        }
    }
    maybe_end(b);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct batch *b = arg;
    (void)fd;
    (void)what;
    stats_progress(b->conf->st, client_in_flight(b->cl), 0);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct batch *b = arg;
    (void)what;
    char why[128];
    snprintf(why, sizeof why, "%s: run the same command again to resume", strsignal((int)sig));
    fprintf(stderr, "%sollama-classify: %s: stopping; run the same command again to resume\n",
            isatty(STDERR_FILENO) ? "\n" : "", strsignal((int)sig));
    stats_stopped(b->conf->st, why);
    stop_all(b, 130);
}

static int batch_setup(struct batch *b, const struct batch_conf *conf)
{
    struct client_conf cc = {conf->url,     conf->jobs,    conf->timeout_s,
                             conf->retries, conf->api_key, conf->ca_file};
    struct timeval tv = {0, 250000};
    char err[256];
    b->conf = conf;
    b->jobs = calloc((size_t)conf->jobs, sizeof *b->jobs);
    b->idle = calloc((size_t)conf->jobs, sizeof *b->idle);
    b->base = event_base_new();
    b->seen = idset_new();
    b->verdicts = verdict_new(conf);
    if (!b->jobs || !b->idle || !b->base || !b->seen || !b->verdicts)
        return -1;
    b->cl = client_new(b->base, &cc, conf->st, on_done, b, err, sizeof err);
    b->tick = event_new(b->base, -1, EV_PERSIST, on_tick, b);
    b->sigint = evsignal_new(b->base, SIGINT, on_signal, b);
    b->sigterm = evsignal_new(b->base, SIGTERM, on_signal, b);
    if (!b->cl || !b->tick || !b->sigint || !b->sigterm)
        return -1;
    event_add(b->tick, &tv);
    event_add(b->sigint, NULL);
    event_add(b->sigterm, NULL);
    return 0;
}

static void batch_cleanup(struct batch *b)
{
    for (size_t i = 0; i < b->ncreated; i++) {
        client_job_cleanup(&b->jobs[i]);
        buf_free(&b->jobs[i].id);
        buf_free(&b->jobs[i].gold);
        buf_free(&b->jobs[i].body);
        buf_free(&b->jobs[i].resp);
        buf_free(&b->jobs[i].text);
        buf_free(&b->jobs[i].raw);
        json_decref(b->jobs[i].fields);
        free(b->jobs[i].votes);
    }
    client_free(b->cl);
    if (b->tick)
        event_free(b->tick);
    if (b->sigint)
        event_free(b->sigint);
    if (b->sigterm)
        event_free(b->sigterm);
    if (b->base)
        event_base_free(b->base);
    free(b->jobs);
    free(b->idle);
    idset_free(b->seen);
    buf_free(&b->key);
    verdict_free(b->verdicts);
}

int batch_run(const struct batch_conf *conf, int *stopped)
{
    struct batch b = {0};
    *stopped = 1;
    if (batch_setup(&b, conf) < 0) {
        fprintf(stderr, "ollama-classify: cannot set up the event loop\n");
        batch_cleanup(&b);
        return 1;
    }
    feed(&b);
    /* A loopbreak before dispatch would be forgotten: enter only when
     * there is something to wait for. */
    if (!b.stopping && (!b.eof || client_in_flight(b.cl) > 0))
        event_base_dispatch(b.base);
    stats_progress(conf->st, 0, 1);
    int status = b.status ? b.status : (stats_errors(conf->st) ? 1 : 0);
    *stopped = b.stopping;
    batch_cleanup(&b);
    return status;
}
