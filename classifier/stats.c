/* stats.c - see stats.h: the counting and the progress line; the summary
 * is in report.c. */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"
#include "stats_impl.h"

static const char *const err_names[ERR_KINDS] = {
    "input",    "empty",    "connect",  "timeout",   "network",    "tls",      "http_429",
    "http_5xx", "http_404", "http_4xx", "off_label", "bad_answer", "recorded",
};

const char *stats_err_name(enum err_kind k)
{
    return k < ERR_KINDS ? err_names[k] : "?";
}

struct stats *stats_new(const struct labels *labels, long total, int with_gold, double min_conf)
{
    struct stats *st = calloc(1, sizeof *st);
    size_t n = labels->n + 1;
    if (!st)
        return NULL;
    st->labels = labels;
    st->total = total;
    st->with_gold = with_gold;
    st->min_conf = min_conf;
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

void stats_rescore(struct stats *st, const char *file)
{
    st->rescore_file = file;
}

int stats_review(const struct stats *st, double conf)
{
    if (st->min_conf < 0 || conf < 0)
        return -1;
    return conf < st->min_conf;
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

static void hist_add(struct hist *h, double ms)
{
    if (ms < 0)
        ms = 0;
    h->n[bucket_of(ms)]++;
    h->count++;
    h->sum += ms;
}

double hist_quantile(const struct hist *h, double p)
{
    unsigned long want = (unsigned long)ceil(p * h->count), seen = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->n[b];
        if (seen >= want && seen > 0)
            return value_of(b);
    }
    return 0;
}

const char *stats_items_word(unsigned long n)
{
    return n == 1 ? "item" : "items";
}

static int band_of(double conf)
{
    return conf < 0.5 ? 0 : conf < 0.8 ? 1 : conf < 0.95 ? 2 : 3;
}

static void count_gold(struct stats *st, int pred, double conf, const char *gold, size_t gold_len)
{
    size_t n = st->labels->n;
    if (!st->with_gold || !gold)
        return;
    int g = labels_find(st->labels, gold, gold_len);
    int right = g >= 0 && g == pred;
    size_t row = g >= 0 ? (size_t)g : n, col = pred >= 0 ? (size_t)pred : n;
    st->confusion[row * (n + 1) + col]++;
    st->gold.items++;
    st->gold.right += right;
    int review = pred >= 0 ? stats_review(st, conf) : -1;
    struct score *s = review == 1 ? &st->marked : review == 0 ? &st->unmarked : NULL;
    if (s) {
        s->items++;
        s->right += right;
    }
    if (pred >= 0 && conf >= 0) {
        st->band[band_of(conf)].items++;
        st->band[band_of(conf)].right += right;
    }
}

static void count_label(struct stats *st, int label, double conf, enum conf_source src)
{
    if (label >= 0)
        st->per_label[label]++;
    else
        st->other_label++;
    st->by_source[conf >= 0 ? src : CONF_NONE]++;
    st->review += stats_review(st, conf) == 1;
    if (conf >= 0)
        st->band_n[band_of(conf)]++;
}

void stats_skipped(struct stats *st, int label, double conf, const char *gold, size_t gold_len)
{
    st->skipped++;
    count_label(st, label, conf, CONF_READ);
    count_gold(st, label, conf, gold, gold_len);
}

void stats_duplicate(struct stats *st)
{
    st->duplicates++;
}

void stats_labelled(struct stats *st, int label, double conf, enum conf_source src,
                    const char *gold, size_t gold_len)
{
    st->labelled++;
    count_label(st, label, conf, src);
    count_gold(st, label, conf, gold, gold_len);
}

void stats_request(struct stats *st, const struct timing *t)
{
    hist_add(&st->latency, t->ms);
    if (t->total_ms < 0 || t->load_ms < 0 || t->prompt_ms < 0 || t->eval_ms < 0) {
        st->untimed++;
        return;
    }
    /* stream:false: the first byte comes when Ollama is done, so what the
     * first byte took beyond Ollama's total is the time before Ollama began
     * (the proxy's queue, connecting, sending); inside Ollama's total, what
     * is neither loading nor computing is waiting for a slot. */
    double service = t->prompt_ms + t->eval_ms;
    double before = fmax(0, (t->ttfb_ms >= 0 ? t->ttfb_ms : t->ms) - t->total_ms);
    double queue = fmax(0, t->total_ms - t->load_ms - service);
    hist_add(&st->wait, before + queue);
    hist_add(&st->load, t->load_ms);
    hist_add(&st->service, service);
    st->before_sum += before;
    st->queue_sum += queue;
    st->loads += t->load_ms >= 100;
}

void stats_failed(struct stats *st, enum err_kind k, const char *gold, size_t gold_len)
{
    st->failed++;
    st->errors[k]++;
    count_gold(st, -1, -1, gold, gold_len);
}

void stats_empty(struct stats *st)
{
    st->empty++;
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
    unsigned long ran = st->labelled + st->failed, done = ran + st->skipped;
    double rate = secs > 0 ? ran / secs : 0;
    char total[32], eta[32];
    if (st->total >= 0) {
        long todo = st->total - (long)st->duplicates;
        snprintf(total, sizeof total, "%ld", todo);
        format_eta(eta, sizeof eta, rate > 0 ? (todo - (double)done) / rate : -1);
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

void stats_free(struct stats *st)
{
    if (!st)
        return;
    free(st->per_label);
    free(st->confusion);
    free(st);
}
