/* stats_impl.h - the inside of struct stats, shared by stats.c (counting,
 * the progress line) and report.c (the summary). Not for other files. */
#ifndef CLS_STATS_IMPL_H
#define CLS_STATS_IMPL_H

#include "stats.h"

#define HIST_LINEAR 100 /* 1 ms buckets below this */
#define HIST_BUCKETS 2000
#define CONF_BANDS 4 /* confidence bands of the report: <0.5, <0.8, <0.95, the rest */

struct hist {
    unsigned long n[HIST_BUCKETS];
    unsigned long count;
    double sum; /* ms */
};

/* Items with a gold label, and how many of them were right. */
struct score {
    unsigned long items, right;
};

struct stats {
    const struct labels *labels;
    long total; /* items to do, -1 unknown */
    int with_gold;
    double min_conf;          /* -1: none */
    const char *rescore_file; /* non-NULL: a report on a file read back */
    int tty;
    double t0, last_print;
    int line_open;                  /* a redrawn line is on the terminal */
    unsigned long labelled, failed; /* this run */
    unsigned long skipped;          /* labelled by an earlier run */
    unsigned long duplicates;       /* ids seen before in the input */
    unsigned long empty;            /* empty or blank texts */
    unsigned long *per_label;       /* labels->n: this run's and those read back */
    unsigned long other_label;      /* read back, not one of the labels */
    unsigned long errors[ERR_KINDS];
    unsigned long fatal; /* of errors[], replies that stopped the run */
    char stop_why[320];  /* "" unless the run stopped early */
    unsigned long retries[ERR_KINDS];
    /* confidence */
    unsigned long by_source[CONF_SOURCES]; /* labelled items by where it came from */
    unsigned long review;                  /* of them, under min_conf */
    struct score marked, unmarked;         /* by gold, with min_conf */
    unsigned long band_n[CONF_BANDS];
    struct score band[CONF_BANDS];
    /* times of this run's requests with a reply */
    struct hist latency;             /* every such request */
    struct hist wait, load, service; /* those with Ollama's figures */
    double before_sum, queue_sum;    /* wait = before the server + in its queue */
    unsigned long loads;             /* requests that waited 100 ms or more for a load */
    unsigned long untimed;           /* replies without Ollama's figures */
    /* accuracy */
    struct score gold;
    unsigned long *confusion; /* (n + 1) rows (gold, other) x (n + 1) cols (pred, error) */
};

/* A histogram's value at quantile P (0..1); 0 when it is empty. */
double hist_quantile(const struct hist *h, double p);

/* "item" or "items". */
const char *stats_items_word(unsigned long n);

#endif
