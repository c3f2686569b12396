/* batch.h - the run: read items, keep up to -j jobs in flight, turn each
 * answer into a results line, stop at the end, on a fatal reply or on a
 * signal. Everything runs on one thread in one libevent loop. */
#ifndef CLS_BATCH_H
#define CLS_BATCH_H

#include "items.h"
#include "labels.h"
#include "pick.h"
#include "request.h"
#include "results.h"
#include "stats.h"

/* What the run works with; all borrowed, set up by main. */
struct batch_conf {
    const char *url;     /* base URL */
    const char *api_key; /* NULL: none */
    const char *ca_file; /* NULL: the system's CAs */
    long jobs, timeout_s, retries;
    const struct labels *labels;
    const struct request_tpl *tpl;
    struct items *in;
    struct results *out;
    struct stats *st;
    struct pick *pick; /* which items to take */
    int confidence;    /* ask for logprobs */
    int votes;         /* > 0: the fallback of --votes N */
    int abstain;       /* index of the abstain label, -1: none */
    int raw;           /* keep the model's answer */
    char *const *keep; /* input fields to copy into the results */
    size_t nkeep;
};

/* Run the batch to its end. Returns the exit status: 0 every item of this
 * run labelled, 1 some ended in error (or a fatal reply, or a failed
 * write), 2 when the items could not be read, 130 after SIGINT or
 * SIGTERM. *STOPPED is set when the run stopped before its end. */
int batch_run(const struct batch_conf *conf, int *stopped);

#endif
