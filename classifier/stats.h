/* stats.h - counting what happened: the progress line while the run goes
 * and the summary at its end (report.c). Memory is fixed: times go into
 * histograms (1 ms steps below 100 ms, then 1% steps), not lists.
 *
 * Every item of the input ends in exactly one of: labelled (this run),
 * skipped as already labelled (an earlier run's label, read back from the
 * results), failed (an error line written), skipped as a duplicate id, or
 * not done (the run stopped first). "Done", in the progress line and in
 * the summary alike, is labelled + failed + skipped as already labelled;
 * the total is the items to do less the duplicates found so far, so a run
 * that ends has done/total equal and the summary counts the same items.
 * The label counts, the confidence figures and the accuracy cover both
 * this run's labels and those read back, so a resumed run reports on the
 * whole results file; rates and times cover this run only. */
#ifndef CLS_STATS_H
#define CLS_STATS_H

#include <stddef.h>
#include <stdio.h>

#include "labels.h"

/* Why an item ended without a label, or why an attempt was retried. */
enum err_kind {
    ERR_INPUT,   /* a malformed line of the items */
    ERR_EMPTY,   /* an empty or blank text: not sent */
    ERR_CONNECT, /* could not connect / resolve */
    ERR_TIMEOUT, /* --timeout-s hit */
    ERR_NETWORK, /* the connection broke mid-request */
    ERR_TLS,     /* the TLS handshake or certificate check failed */
    ERR_HTTP_429,
    ERR_HTTP_5XX,
    ERR_HTTP_404,   /* model not found (client.h says when it is retried) */
    ERR_HTTP_4XX,   /* another 4xx: not retried */
    ERR_OFF_LABEL,  /* an answer outside the labels */
    ERR_BAD_ANSWER, /* a 200 without a usable label */
    ERR_RECORDED,   /* --rescore: an error line read from the results */
    ERR_KINDS
};

const char *stats_err_name(enum err_kind k);

/* Where an item's confidence came from. */
enum conf_source {
    CONF_NONE,     /* none: not asked, or the endpoint gave none */
    CONF_LOGPROBS, /* the answer's logprobs (logprob.h) */
    CONF_VOTES,    /* agreement of --votes samples */
    CONF_READ,     /* read back from the results file */
    CONF_SOURCES
};

/* The times of one request that got a reply. Ollama's own figures (from
 * the reply, in ms) are -1 when the reply has none. */
struct timing {
    double ms;        /* from sending to the last byte of the reply */
    double ttfb_ms;   /* from sending to the first byte of the reply */
    double total_ms;  /* total_duration: Ollama's handler, start to end */
    double load_ms;   /* load_duration: waiting for the model to load */
    double prompt_ms; /* prompt_eval_duration */
    double eval_ms;   /* eval_duration */
};

struct stats;

/* LABELS is borrowed. TOTAL is the number of items or -1 if unknown;
 * WITH_GOLD turns on accuracy and the confusion table; MIN_CONF (-1:
 * none) is --min-confidence. NULL: no memory. */
struct stats *stats_new(const struct labels *labels, long total, int with_gold, double min_conf);

/* The summary reports on a results file read back (--rescore) named
 * FILE (borrowed), not on a run. */
void stats_rescore(struct stats *st, const char *file);

/* 1 when CONF is under --min-confidence (the item is for review), 0 when
 * not, -1 when either is unknown. */
int stats_review(const struct stats *st, double conf);

/* An item skipped because the results already label it with LABEL (an
 * index in the labels, -1 for a label outside them), with confidence CONF
 * (-1: none). GOLD (may be NULL) is its expected label. */
void stats_skipped(struct stats *st, int label, double conf, const char *gold, size_t gold_len);
/* An item skipped because an earlier item of the input has its id. */
void stats_duplicate(struct stats *st);
/* An item labelled LABEL with confidence CONF (-1: none) from SRC. */
void stats_labelled(struct stats *st, int label, double conf, enum conf_source src,
                    const char *gold, size_t gold_len);
/* A request that got a 2xx reply, and its times. */
void stats_request(struct stats *st, const struct timing *t);
/* An item ended in error of kind K. */
void stats_failed(struct stats *st, enum err_kind k, const char *gold, size_t gold_len);
/* An item whose text is empty or blank (it is also labelled or failed). */
void stats_empty(struct stats *st);
/* An attempt of kind K is being retried. */
void stats_retried(struct stats *st, enum err_kind k);
/* A reply of kind K that every request would get (wrong model, key
 * refused, TLS failure): counted as an error, though no item records it. */
void stats_fatal(struct stats *st, enum err_kind k);
/* The run stops before its end because of WHY (copied); the first reason
 * given is the one the summary shows. */
void stats_stopped(struct stats *st, const char *why);

/* Items that ended in error this run (fatal replies not included). */
unsigned long stats_errors(const struct stats *st);

/* The progress line on stderr (redrawn on a terminal). IN_FLIGHT is the
 * number of requests out. Prints only when due unless FORCE. */
void stats_progress(struct stats *st, size_t in_flight, int force);

/* The summary on stderr (ends a redrawn progress line first). report.c. */
void stats_summary(struct stats *st);

/* NULL is a no-op. */
void stats_free(struct stats *st);

#endif
