/* report.c - the summary at the end of a run or of --rescore (stats.h):
 * totals, what was left out, times, labels, errors, confidence, accuracy.
 * Each part is one static function, printed in that order. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "net.h"
#include "stats_impl.h"

static const char *const band_names[CONF_BANDS] = {"<0.5", "0.5-0.8", "0.8-0.95", ">=0.95"};

/* "name n, name n" for the non-zero COUNTS; returns how many it printed. */
static int print_counts(const unsigned long *counts, size_t n, const char *const *names)
{
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (!counts[i])
            continue;
        fprintf(stderr, "%s%s %lu", any ? ", " : "", names[i], counts[i]);
        any++;
    }
    return any;
}

static double pct(double part, double whole)
{
    return whole > 0 ? 100.0 * part / whole : 0.0;
}

/* The first line: every item accounted for, then this run's pace. */
static void print_totals(const struct stats *st, double secs)
{
    unsigned long ran = st->labelled + st->failed, labelled = st->labelled + st->skipped;
    double rate = secs > 0 ? ran / secs : 0.0;
    if (st->rescore_file)
        fprintf(stderr, "report on %s: ", st->rescore_file);
    else
        fprintf(stderr, "summary: ");
    fprintf(stderr, "%lu %s (%lu labelled, %lu errors", labelled + st->failed,
            stats_items_word(labelled + st->failed), labelled, st->failed);
    if (st->fatal)
        fprintf(stderr, ", %lu fatal", st->fatal);
    fputc(')', stderr);
    if (st->rescore_file)
        fprintf(stderr, "\n");
    else if (st->skipped)
        fprintf(stderr,
                ", %lu of them skipped as already labelled; this run %lu %s in %.2f s, "
                "%.1f items/s\n",
                st->skipped, ran, stats_items_word(ran), secs, rate);
    else
        fprintf(stderr, " in %.2f s, %.1f items/s\n", secs, rate);
}

/* Items that are in none of the counts above: duplicates, not done. */
static void print_left_out(const struct stats *st)
{
    unsigned long done = st->labelled + st->failed + st->skipped;
    if (st->duplicates)
        fprintf(stderr,
                "  duplicates: %lu %s skipped: their id came earlier in the input (an id is "
                "classified once)\n",
                st->duplicates, stats_items_word(st->duplicates));
    if (st->empty)
        fprintf(stderr, "  empty: %lu %s with an empty or blank text, not sent\n", st->empty,
                stats_items_word(st->empty));
    if (!st->stop_why[0])
        return;
    fprintf(stderr, "  stopped: %s", st->stop_why);
    long todo = st->total - (long)st->duplicates;
    if (st->total >= 0 && todo > (long)done)
        fprintf(stderr, "; %lu %s not done", todo - done, stats_items_word(todo - done));
    fprintf(stderr, "\n");
}

static void print_quantiles(const char *what, const struct hist *h)
{
    fprintf(stderr, "  %s ms: p50 %.0f, p95 %.0f, p99 %.0f", what, hist_quantile(h, 0.50),
            hist_quantile(h, 0.95), hist_quantile(h, 0.99));
}

/* Latency per request, split into waiting and service where the replies
 * carry Ollama's durations. Shares are of the summed time of the requests
 * with those figures. */
static void print_times(const struct stats *st)
{
    if (!st->latency.count) {
        fprintf(stderr, "  latency ms: no successful request this run\n");
        return;
    }
    print_quantiles("latency", &st->latency);
    fprintf(stderr, " (%lu requests with a reply)\n", st->latency.count);
    if (!st->wait.count) {
        fprintf(stderr, "  waiting and service: the replies carry no durations (not Ollama?): "
                        "no split\n");
        return;
    }
    double all = st->wait.sum + st->load.sum + st->service.sum;
    print_quantiles("waiting", &st->wait);
    fprintf(stderr,
            " (%.0f%% of the time: %.0f%% before the server began, e.g. in the proxy's "
            "queue; %.0f%% in the server's queue for a slot)\n",
            pct(st->wait.sum, all), pct(st->before_sum, all), pct(st->queue_sum, all));
    print_quantiles("service", &st->service);
    fprintf(stderr, " (%.0f%%: prompt and generation)", pct(st->service.sum, all));
    if (st->loads)
        fprintf(stderr, "; model loads: %lu %s waited for one (%.0f%% of the time)", st->loads,
                st->loads == 1 ? "request" : "requests", pct(st->load.sum, all));
    if (st->untimed)
        fprintf(stderr, "; %lu replies without durations left out", st->untimed);
    fprintf(stderr, "\n");
}

static void print_labels_errors(const struct stats *st)
{
    static const char *err_names[ERR_KINDS];
    unsigned long retried = 0;
    for (int k = 0; k < ERR_KINDS; k++) {
        err_names[k] = stats_err_name((enum err_kind)k);
        retried += st->retries[k];
    }
    fprintf(stderr, "  labels: ");
    int any = print_counts(st->per_label, st->labels->n, (const char *const *)st->labels->names);
    if (st->other_label)
        fprintf(stderr, "%s(read back, not in -l) %lu", any ? ", " : "", st->other_label);
    else if (!any)
        fprintf(stderr, "none");
    fprintf(stderr, "\n  errors: ");
    if (!print_counts(st->errors, ERR_KINDS, err_names))
        fprintf(stderr, "none");
    if (st->fatal)
        fprintf(stderr, " (%lu fatal: the run stopped, nothing recorded for %s)", st->fatal,
                st->fatal > 1 ? "them" : "it");
    if (st->rescore_file) {
        fprintf(stderr, "\n");
        return;
    }
    fprintf(stderr, "\n  retries: %lu", retried);
    if (retried) {
        fprintf(stderr, " (");
        print_counts(st->retries, ERR_KINDS, err_names);
        fprintf(stderr, ")");
    }
    fprintf(stderr, "\n");
}

static void print_confidence(const struct stats *st)
{
    static const char *const src_names[CONF_SOURCES] = {"none", "logprobs", "votes", "read back"};
    unsigned long labelled = st->labelled + st->skipped;
    unsigned long with = labelled - st->by_source[CONF_NONE];
    if (!with && st->min_conf < 0)
        return;
    fprintf(stderr, "  confidence: %lu of %lu labelled %s (", with, labelled,
            stats_items_word(labelled));
    if (!print_counts(st->by_source + 1, CONF_SOURCES - 1, src_names + 1))
        fprintf(stderr, "none: the endpoint gave no logprobs; --votes N estimates it");
    fprintf(stderr, ")");
    if (with) {
        fprintf(stderr, "; ");
        print_counts(st->band_n, CONF_BANDS, band_names);
    }
    fprintf(stderr, "\n");
    if (st->min_conf >= 0)
        fprintf(stderr,
                "  review: %lu %s under %.2f marked \"review\":true (%.1f%% of those "
                "with a confidence)\n",
                st->review, stats_items_word(st->review), st->min_conf, pct(st->review, with));
}

static void print_score(const char *what, const struct score *s)
{
    fprintf(stderr, "%s %.1f%% (%lu of %lu)", what, pct(s->right, s->items), s->right, s->items);
}

static void print_accuracy(const struct stats *st)
{
    size_t n = st->labels->n;
    int w = 8;
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(st->labels->names[i]) + 1 > w)
            w = (int)strlen(st->labels->names[i]) + 1;
    fprintf(stderr,
            "  accuracy: %.1f%% (%lu of %lu items with a gold label; errors count as wrong)\n",
            pct(st->gold.right, st->gold.items), st->gold.right, st->gold.items);
    if (st->marked.items + st->unmarked.items) {
        print_score("    marked for review:", &st->marked);
        print_score("; not marked:", &st->unmarked);
        fprintf(stderr, "\n");
    }
    if (st->band[0].items + st->band[1].items + st->band[2].items + st->band[3].items) {
        const char *sep = "    by confidence:";
        for (int b = 0; b < CONF_BANDS; b++) {
            if (!st->band[b].items)
                continue;
            fprintf(stderr, "%s %s", sep, band_names[b]);
            print_score("", &st->band[b]);
            sep = ";";
        }
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "  confusion (rows: gold, columns: answer):\n  %*s", w, "");
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

void stats_summary(struct stats *st)
{
    double secs = (net_now_ms() - st->t0) / 1000.0;
    if (st->line_open)
        fputc('\n', stderr);
    print_totals(st, secs);
    print_left_out(st);
    if (!st->rescore_file)
        print_times(st);
    print_labels_errors(st);
    print_confidence(st);
    if (st->with_gold)
        print_accuracy(st);
    fflush(stderr);
}
