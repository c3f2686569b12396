/* main.c - ollama-classify: set up the pieces (options, labels, examples,
 * request template, items, the pick of items, results, stats), run the
 * batch, print the summary; or, with --rescore, only the report.
 * Exit 0: every item labelled; 1: some ended in error; 2: bad usage or
 * unreadable input; 130: stopped by SIGINT or SIGTERM. */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "batch.h"
#include "buf.h"
#include "examples.h"
#include "items.h"
#include "labels.h"
#include "logprob.h"
#include "opts.h"
#include "pick.h"
#include "request.h"
#include "rescore.h"
#include "results.h"
#include "stats.h"

#define DEFAULT_URL "http://127.0.0.1:11434"

struct setup {
    struct opts o;
    struct labels labels;
    int abstain; /* index of --abstain in labels, -1: none */
    struct examples examples;
    struct request_tpl tpl;
    struct buf url;
    const char *api_key; /* NULL: none; borrowed from o or the environment */
    char **keep;         /* --keep-fields, split */
    size_t nkeep;
    struct items *in;
    struct pick pick;
    struct results *out;
    struct stats *st;
};

/* One connection per job: make sure the descriptors are there, or cap -j. */
static void raise_nofile(long *jobs)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)*jobs + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        long cap = rl.rlim_cur > 96 ? (long)rl.rlim_cur - 64 : 32;
        fprintf(stderr, "ollama-classify: only %ld file descriptors: -j lowered to %ld\n",
                (long)rl.rlim_cur, cap);
        *jobs = cap;
    }
}

static int resolve_url(struct setup *s, char *err, size_t errlen)
{
    const char *spec = s->o.url;
    int from_env = !spec;
    if (!spec)
        spec = getenv("OLLAMA_HOST");
    if (!spec || !*spec)
        spec = DEFAULT_URL;
    return opts_endpoint_url(spec, from_env, &s->url, err, errlen);
}

/* --api-key (or api_key in -c FILE), else $OLLAMA_API_KEY; "" means none.
 * The key goes into a header line: a control character (CR, LF) would let
 * it end the header. Errors never quote the key. */
static int resolve_api_key(struct setup *s, char *err, size_t errlen)
{
    const char *key = s->o.api_key, *what = "--api-key";
    if (!key) {
        key = getenv("OLLAMA_API_KEY");
        what = "$OLLAMA_API_KEY";
    }
    s->api_key = key && *key ? key : NULL;
    for (const char *p = s->api_key; p && *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "bad value for %s: a control character in the key (not shown)",
                     what);
            return -1;
        }
    }
    return 0;
}

/* -l and --abstain: two labels at least (one label would label everything). */
static int setup_labels(struct setup *s, char *err, size_t errlen)
{
    s->abstain = -1;
    if (labels_load(&s->labels, s->o.labels, err, errlen) < 0)
        return -1;
    if (s->o.abstain && (s->abstain = labels_add(&s->labels, s->o.abstain, err, errlen)) < 0)
        return -1;
    if (s->labels.n < 2) {
        snprintf(err, errlen,
                 "-l: one label (%s) would label everything the same: give two at "
                 "least (or --abstain LABEL for a yes/no)",
                 s->labels.names[0]);
        return -1;
    }
    return 0;
}

/* --keep-fields "a,b" into s->keep. */
static int split_keep(struct setup *s, char *err, size_t errlen)
{
    for (const char *p = s->o.keep_fields; p && *p;) {
        size_t len = strcspn(p, ",");
        char **k = realloc(s->keep, (s->nkeep + 1) * sizeof *k);
        if (!k)
            return -1;
        s->keep = k;
        if (len == 0 || !(k[s->nkeep] = strndup(p, len))) {
            snprintf(err, errlen, "bad value for --keep-fields: an empty field name");
            return -1;
        }
        s->nkeep++;
        p += len + (p[len] == ',');
    }
    return 0;
}

static int setup_request(struct setup *s, char *err, size_t errlen)
{
    const struct opts *o = &s->o;
    if (o->examples && examples_load(&s->examples, o->examples, o->text_field, o->gold_field,
                                     &s->labels, err, errlen) < 0)
        return -1;
    struct request_conf rc = {o->model,
                              &s->labels,
                              o->prompt_file,
                              s->abstain >= 0 ? s->labels.names[s->abstain] : NULL,
                              o->examples ? &s->examples : NULL,
                              o->options,
                              logprob_top_k(s->labels.n),
                              o->vote_temperature};
    return request_init(&s->tpl, &rc, err, errlen);
}

static int setup_io(struct setup *s, char *err, size_t errlen)
{
    const struct opts *o = &s->o;
    s->in = items_open(o->input, o->format, o->id_field, o->text_field, o->gold_field, err, errlen);
    if (!s->in)
        return -1;
    /* A field named on the command line that the CSV header lacks is a
     * typo, not a file without ids or gold (the default "id" may be
     * absent: the items then get their line numbers). */
    const char *missing = strcmp(o->id_field, "id") && items_lacks_column(s->in, o->id_field)
                              ? "--id-field"
                          : o->gold_field && items_lacks_column(s->in, o->gold_field)
                              ? "--gold-field"
                              : NULL;
    if (missing) {
        snprintf(err, errlen, "bad value for %s: the CSV header of '%s' has no column '%s'",
                 missing, o->input,
                 strcmp(missing, "--id-field") == 0 ? o->id_field : o->gold_field);
        return -1;
    }
    if (pick_init(&s->pick, o->limit, o->sample, items_count(s->in), (uint64_t)o->seed) < 0) {
        snprintf(err, errlen, "--sample needs items in a file (it counts them first), not %s",
                 strcmp(o->input, "-") ? "a pipe" : "stdin");
        return -1;
    }
    struct results_conf rc = {&s->labels, s->keep, s->nkeep, (int)o->raw, o->votes > 0};
    s->out = results_open(o->output, &rc, err, errlen);
    if (!s->out)
        return -1;
    s->st = stats_new(&s->labels, pick_count(&s->pick), o->gold_field != NULL, o->min_confidence);
    if (!s->st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* --ca-file must be readable now: a typo is bad usage (exit 2), not an
 * error on every item. */
static int check_ca_file(const struct setup *s, char *err, size_t errlen)
{
    FILE *f;
    if (!s->o.ca_file)
        return 0;
    if (!(f = fopen(s->o.ca_file, "r"))) {
        snprintf(err, errlen, "bad value for --ca-file: %s: %s", s->o.ca_file, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* Everything that can fail before the first request; -1 means exit 2. */
static int setup_open(struct setup *s, char *err, size_t errlen)
{
    if (resolve_url(s, err, errlen) < 0 || resolve_api_key(s, err, errlen) < 0 ||
        check_ca_file(s, err, errlen) < 0 ||
        split_keep(s, err, errlen) < 0 || setup_request(s, err, errlen) < 0)
        return -1;
    return setup_io(s, err, errlen);
}

static void setup_close(struct setup *s, int discard)
{
    stats_free(s->st);
    results_close(s->out, discard);
    items_close(s->in);
    request_cleanup(&s->tpl);
    examples_free(&s->examples);
    buf_free(&s->url);
    for (size_t i = 0; i < s->nkeep; i++)
        free(s->keep[i]);
    free(s->keep);
    labels_free(&s->labels);
    opts_free(&s->o);
}

/* Returns the exit status; *DISCARD: the run stopped before any result. */
static int run(struct setup *s, int *discard)
{
    const struct opts *o = &s->o;
    struct batch_conf bc = {
        s->url.data,   s->api_key, o->ca_file,  o->jobs,      o->timeout_s, o->retries, &s->labels,
        &s->tpl,       s->in,      s->out,      s->st,        &s->pick,   (int)o->confidence,
        (int)o->votes, s->abstain, (int)o->raw, s->keep,      s->nkeep};
    int stopped;
    if (results_cut(s->out) > 0)
        fprintf(stderr,
                "ollama-classify: %s: removed a torn last line (%zu bytes, left by an interrupted "
                "run)\n",
                o->output, results_cut(s->out));
    if (results_resumed(s->out) > 0)
        fprintf(stderr, "ollama-classify: resuming: %zu items already labelled in %s\n",
                results_resumed(s->out), o->output);
    raise_nofile(&bc.jobs);
    int status = batch_run(&bc, &stopped);
    stats_summary(s->st);
    *discard = stopped && results_written(s->out) == 0;
    return status;
}

int main(int argc, char **argv)
{
    struct setup s = {0};
    char err[512];
    int status = 2, discard = 0;
    int rc = opts_parse(&s.o, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "ollama-classify: %s\n", err);
        opts_free(&s.o);
        return rc > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "ollama-classify: cannot initialise libcurl\n");
        opts_free(&s.o);
        return 2;
    }
    if (setup_labels(&s, err, sizeof err) < 0)
        fprintf(stderr, "ollama-classify: %s\n", err);
    else if (s.o.rescore)
        status = rescore_run(&s.o, &s.labels, err, sizeof err) < 0 ? 2 : 0;
    else if (setup_open(&s, err, sizeof err) < 0)
        fprintf(stderr, "ollama-classify: %s\n", err);
    else
        status = run(&s, &discard);
    if (s.o.rescore && status)
        fprintf(stderr, "ollama-classify: %s\n", err);
    setup_close(&s, discard);
    curl_global_cleanup();
    return status;
}
