/* main.c - ollama-classify: set up the pieces (options, labels, request
 * template, items, results, stats), run the batch, print the summary.
 * Exit 0: every item labelled; 1: some ended in error; 2: bad usage or
 * unreadable input. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "batch.h"
#include "buf.h"
#include "items.h"
#include "labels.h"
#include "opts.h"
#include "request.h"
#include "results.h"
#include "stats.h"

#define DEFAULT_URL "http://127.0.0.1:11434"

struct setup {
    struct opts o;
    struct labels labels;
    struct request_tpl tpl;
    struct buf url;
    const char *api_key; /* NULL: none; borrowed from o or the environment */
    struct items *in;
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
    if (!spec)
        spec = getenv("OLLAMA_HOST");
    if (!spec || !*spec)
        spec = DEFAULT_URL;
    return opts_endpoint_url(spec, &s->url, err, errlen);
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

/* Everything that can fail before the first request; -1 means exit 2. */
static int setup_open(struct setup *s, char *err, size_t errlen)
{
    const struct opts *o = &s->o;
    if (labels_load(&s->labels, o->labels, err, errlen) < 0 || resolve_url(s, err, errlen) < 0 ||
        resolve_api_key(s, err, errlen) < 0 ||
        request_init(&s->tpl, o->model, &s->labels, o->prompt_file, err, errlen) < 0)
        return -1;
    s->in = items_open(o->input, o->format, o->id_field, o->text_field, o->gold_field, err, errlen);
    if (!s->in)
        return -1;
    s->out = results_open(o->output, &s->labels, err, errlen);
    if (!s->out)
        return -1;
    s->st = stats_new(&s->labels, items_count(s->in), o->gold_field != NULL);
    if (!s->st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void setup_close(struct setup *s)
{
    stats_free(s->st);
    results_close(s->out);
    items_close(s->in);
    request_cleanup(&s->tpl);
    buf_free(&s->url);
    labels_free(&s->labels);
    opts_free(&s->o);
}

static int run(struct setup *s)
{
    struct batch_conf bc = {s->url.data, s->api_key, s->o.jobs, s->o.timeout_s, s->o.retries,
                            &s->labels,  &s->tpl,    s->in,     s->out,         s->st};
    if (results_cut(s->out) > 0)
        fprintf(stderr,
                "ollama-classify: %s: removed a torn last line (%zu bytes, left by an interrupted "
                "run)\n",
                s->o.output, results_cut(s->out));
    if (results_resumed(s->out) > 0)
        fprintf(stderr, "ollama-classify: resuming: %zu items already labelled in %s\n",
                results_resumed(s->out), s->o.output);
    raise_nofile(&bc.jobs);
    int status = batch_run(&bc);
    stats_summary(s->st);
    return status;
}

int main(int argc, char **argv)
{
    struct setup s = {0};
    char err[512];
    int status = 2;
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
    if (setup_open(&s, err, sizeof err) < 0)
        fprintf(stderr, "ollama-classify: %s\n", err);
    else
        status = run(&s);
    setup_close(&s);
    curl_global_cleanup();
    return status;
}
