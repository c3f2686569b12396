/* stats.c - see stats.h. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

#define HIST_LINEAR 100 /* 1 ms buckets below this */
#define HIST_BUCKETS 2000

static const char *const err_names[ERR_KINDS] = {
    "input",    "connect",  "timeout",  "network",   "tls",
    "http_429", "http_5xx", "http_404", "http_4xx", "off_label", "bad_answer",
};

struct stats {
    const struct labels *labels;
    long total;
    int with_gold;
    int tty;
    double t0, last_print;
    int line_open;                  /* a redrawn line is on the terminal */
    unsigned long labelled, failed; /* this run */
    unsigned long skipped;          /* labelled by an earlier run */
    unsigned long duplicates;       /* ids seen before in the input */
    unsigned long *per_label;       /* labels->n: this run's and those read back */
    unsigned long other_label;      /* read back, not one of the labels */
    unsigned long errors[ERR_KINDS];
    unsigned long fatal; /* of errors[], replies that stopped the run */
    char stop_why[320];  /* "" unless the run stopped early */
    unsigned long retries[ERR_KINDS];
    unsigned long hist[HIST_BUCKETS];
    unsigned long gold_items, gold_right;
    unsigned long *confusion; /* (n + 1) rows (gold, other) x (n + 1) cols (pred, error) */
};

const char *stats_err_name(enum err_kind k)
{
    return k < ERR_KINDS ? err_names[k] : "?";
}

struct stats *stats_new(const struct labels *labels, long total, int with_gold)
{
    struct stats *st = calloc(1, sizeof *st);
    size_t n = labels->n + 1;
    if (!st)
        return NULL;
    st->labels = labels;
    st->total = total;
    st->with_gold = with_gold;
    st->tty = isatty(STDERR_FILENO);
    st->t0 = st->last_print = net_now_ms();
    st->per_label = calloc(labels->n, sizeof *st->per_label);
    st->confusion = calloc(n * n, sizeof *st->confusion);
    if (!st->per_label || !st->confusion) {
        stats_free(st);
        return NULL;
    }
    return st;
}

static size_t bucket_of(double ms)
{
    if (ms < HIST_LINEAR)
        return ms < 0 ? 0 : (size_t)ms;
    size_t b = HIST_LINEAR + (size_t)(log(ms / HIST_LINEAR) / log(1.01));
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static double value_of(size_t b)
{
    return b < HIST_LINEAR ? (double)b : HIST_LINEAR * pow(1.01, (double)(b - HIST_LINEAR));
}

static void count_gold(struct stats *st, int pred, const char *gold, size_t gold_len)
{
    size_t n = st->labels->n;
    if (!st->with_gold || !gold)
        return;
    int g = labels_find(st->labels, gold, gold_len);
    size_t row = g >= 0 ? (size_t)g : n, col = pred >= 0 ? (size_t)pred : n;
    st->confusion[row * (n + 1) + col]++;
    st->gold_items++;
    st->gold_right += g >= 0 && g == pred;
}

void stats_skipped(struct stats *st, int label, const char *gold, size_t gold_len)
{
    st->skipped++;
    if (label >= 0)
        st->per_label[label]++;
    else
        st->other_label++;
    count_gold(st, label, gold, gold_len);
}

void stats_duplicate(struct stats *st)
{
    st->duplicates++;
}

void stats_labelled(struct stats *st, int label, double ms, int attempts, const char *gold,
                    size_t gold_len)
{
    (void)attempts;
    st->labelled++;
    st->per_label[label]++;
    st->hist[bucket_of(ms)]++;
    count_gold(st, label, gold, gold_len);
}

void stats_failed(struct stats *st, enum err_kind k, const char *gold, size_t gold_len)
{
    st->failed++;
    st->errors[k]++;
    count_gold(st, -1, gold, gold_len);
}

void stats_retried(struct stats *st, enum err_kind k)
{
    st->retries[k]++;
}

void stats_fatal(struct stats *st, enum err_kind k)
{
    st->errors[k]++;
    st->fatal++;
}

void stats_stopped(struct stats *st, const char *why)
{
    if (!st->stop_why[0])
        snprintf(st->stop_why, sizeof st->stop_why, "%s", why);
}

unsigned long stats_errors(const struct stats *st)
{
    return st->failed;
}

static void format_eta(char *out, size_t len, double s)
{
    if (s < 0 || s > 360000)
        snprintf(out, len, "?");
    else
        snprintf(out, len, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
}

void stats_progress(struct stats *st, size_t in_flight, int force)
{
    double now = net_now_ms();
    if (!force && now - st->last_print < (st->tty ? 250 : 5000))
        return;
    st->last_print = now;
    double secs = (now - st->t0) / 1000.0;
    unsigned long ran = st->labelled + st->failed, done = ran + st->skipped + st->duplicates;
    double rate = secs > 0 ? ran / secs : 0;
    char total[32], eta[32];
    if (st->total >= 0) {
        snprintf(total, sizeof total, "%ld", st->total);
        format_eta(eta, sizeof eta, rate > 0 ? (st->total - (double)done) / rate : -1);
    } else {
        snprintf(total, sizeof total, "?");
        snprintf(eta, sizeof eta, "?");
    }
    fprintf(stderr, "%sprogress: %lu/%s done, %.1f items/s, ETA %s, %zu in flight, %lu errors%s",
            st->tty ? "\r" : "", done, total, rate, eta, in_flight, st->failed,
            st->tty ? "\033[K" : "\n");
    st->line_open = st->tty;
    fflush(stderr);
}

static double percentile(const struct stats *st, double p)
{
    unsigned long want = (unsigned long)ceil(p * st->labelled), seen = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += st->hist[b];
        if (seen >= want && seen > 0)
            return value_of(b);
    }
    return 0;
}

/* "name n, name n" for the non-zero COUNTS; returns how many it printed. */
static int print_counts(const unsigned long *counts, size_t n,
                        const char *(*name)(const struct stats *, size_t), const struct stats *st)
{
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (!counts[i])
            continue;
        fprintf(stderr, "%s%s %lu", any ? ", " : "", name(st, i), counts[i]);
        any++;
    }
    return any;
}

static const char *label_name(const struct stats *st, size_t i)
{
    return st->labels->names[i];
}

static const char *err_name(const struct stats *st, size_t i)
{
    (void)st;
    return err_names[i];
}

static void print_confusion(const struct stats *st)
{
    size_t n = st->labels->n;
    int w = 8;
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(st->labels->names[i]) + 1 > w)
            w = (int)strlen(st->labels->names[i]) + 1;
    fprintf(stderr,
            "  accuracy: %.1f%% (%lu of %lu items with a gold label; errors count as "
            "wrong)\n  confusion (rows: gold, columns: answer):\n  %*s",
            st->gold_items ? 100.0 * st->gold_right / st->gold_items : 0.0, st->gold_right,
            st->gold_items, w, "");
    for (size_t c = 0; c <= n; c++)
        fprintf(stderr, " %*s", w, c < n ? st->labels->names[c] : "(error)");
    fprintf(stderr, "\n");
    for (size_t r = 0; r <= n; r++) {
        fprintf(stderr, "  %*s", w, r < n ? st->labels->names[r] : "(other)");
        for (size_t c = 0; c <= n; c++)
            fprintf(stderr, " %*lu", w, st->confusion[r * (n + 1) + c]);
        fprintf(stderr, "\n");
    }
}

static const char *items_word(unsigned long n)
{
    return n == 1 ? "item" : "items";
}

/* The first line: every item accounted for, then this run's pace. */
static void print_totals(const struct stats *st, double secs)
{
    unsigned long ran = st->labelled + st->failed, labelled = st->labelled + st->skipped;
    double rate = secs > 0 ? ran / secs : 0.0;
    fprintf(stderr, "summary: %lu %s (%lu labelled, %lu errors", labelled + st->failed,
            items_word(labelled + st->failed), labelled, st->failed);
    if (st->fatal)
        fprintf(stderr, ", %lu fatal", st->fatal);
    fputc(')', stderr);
    if (st->skipped)
        fprintf(stderr,
                ", %lu of them skipped as already labelled; this run %lu %s in %.2f s, "
                "%.1f items/s\n",
                st->skipped, ran, items_word(ran), secs, rate);
    else
        fprintf(stderr, " in %.2f s, %.1f items/s\n", secs, rate);
}

/* Items that are in none of the counts above: duplicates, not done. */
static void print_left_out(const struct stats *st)
{
    unsigned long done = st->labelled + st->failed + st->skipped + st->duplicates;
    if (st->duplicates)
        fprintf(stderr,
                "  duplicates: %lu %s skipped: their id came earlier in the input (an id is "
                "classified once)\n",
                st->duplicates, items_word(st->duplicates));
    if (!st->stop_why[0])
        return;
    fprintf(stderr, "  stopped: %s", st->stop_why);
    if (st->total >= 0 && (unsigned long)st->total > done)
        fprintf(stderr, "; %lu %s not done", (unsigned long)st->total - done,
                items_word((unsigned long)st->total - done));
    fprintf(stderr, "\n");
}

void stats_summary(struct stats *st)
{
    double secs = (net_now_ms() - st->t0) / 1000.0;
    unsigned long retried = 0;
    for (int k = 0; k < ERR_KINDS; k++)
        retried += st->retries[k];
    if (st->line_open)
        fputc('\n', stderr);
    print_totals(st, secs);
    print_left_out(st);
    if (st->labelled)
        fprintf(stderr, "  latency ms: p50 %.0f, p95 %.0f, p99 %.0f\n", percentile(st, 0.50),
                percentile(st, 0.95), percentile(st, 0.99));
    else
        fprintf(stderr, "  latency ms: no successful request this run\n");
    fprintf(stderr, "  labels: ");
    int any = print_counts(st->per_label, st->labels->n, label_name, st);
    if (st->other_label)
        fprintf(stderr, "%s(read back, not in -l) %lu", any ? ", " : "", st->other_label);
    else if (!any)
        fprintf(stderr, "none");
    fprintf(stderr, "\n  errors: ");
    if (!print_counts(st->errors, ERR_KINDS, err_name, st))
        fprintf(stderr, "none");
    if (st->fatal)
        fprintf(stderr, " (%lu fatal: the run stopped, nothing recorded for %s)", st->fatal,
                st->fatal > 1 ? "them" : "it");
    fprintf(stderr, "\n  retries: %lu", retried);
    if (retried) {
        fprintf(stderr, " (");
        print_counts(st->retries, ERR_KINDS, err_name, st);
        fprintf(stderr, ")");
    }
    fprintf(stderr, "\n");
    if (st->with_gold)
        print_confusion(st);
    fflush(stderr);
}

void stats_free(struct stats *st)
{
    if (!st)
        return;
    free(st->per_label);
    free(st->confusion);
    free(st);
}
