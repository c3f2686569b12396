/* adapt.c - see adapt.h. */
#include "adapt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void adapt_init(struct adapt *a, int ceiling)
{
    memset(a, 0, sizeof *a);
    a->on = 1;
    a->ceiling = ceiling > ADAPT_MAX ? ADAPT_MAX : ceiling;
    a->cap = 1;
    snprintf(a->reason, sizeof a->reason, "start: probing up from 1");
    a->changed_at = (double)time(NULL);
}

static int set(struct adapt *a, int cap, const char *why)
{
    if (cap < 1)
        cap = 1;
    if (cap > a->ceiling)
        cap = a->ceiling;
    if (cap != a->cap) {
        snprintf(a->reason, sizeof a->reason, "%d -> %d: %s", a->cap, cap, why);
        a->changed_at = (double)time(NULL);
        a->fresh = 0;
    }
    a->cap = cap;
    return cap;
}

int adapt_decide(struct adapt *a, double x, double mean_inflight, double ttfb_ms)
{
    int c = a->cap;
    double gain;
    if (mean_inflight < c - 0.5) /* not kept busy: nothing learnt */
        return c;
    if (++a->fresh == 1 && c > 1) /* the window of the change itself */
        return c;
    a->x[c] = a->x[c] && a->fresh > 2 ? 0.7 * a->x[c] + 0.3 * x
              : a->x[c] && a->fresh == 2 ? x /* a level is measured afresh on each visit */
                                         : (a->x[c] + x) / (a->x[c] ? 2 : 1);
    if (a->fresh < (a->settled ? 4 : 2) && c > 1 && a->x[c - 1] > 0)
        return c; /* judged on one window while climbing, three once settled */
    if (ttfb_ms >= 0) {
        if (!a->ttfb_best || ttfb_ms < a->ttfb_best)
            a->ttfb_best = ttfb_ms;
        else
            a->ttfb_best *= 1.01; /* forget an old best slowly */
        if (c > 1 && ttfb_ms > 2 * a->ttfb_best + 50) {
            a->settled = 1;
            a->probing = 0;
            a->probe_in = ADAPT_PROBE_EVERY;
            return set(a, c - 1, "time to first byte doubled: requests queue inside");
        }
    }
    if (c > 1 && a->x[c - 1] > 0) {
        gain = (a->x[c] - a->x[c - 1]) / (a->x[c] / c);
        /* A probe above a settled answer must pay twice the bar to stay:
         * noise alone, amplified by C, should not walk the cap up. */
        if (gain < (a->settled && a->probing ? 2 * ADAPT_GAIN : ADAPT_GAIN)) {
            char why[96];
            snprintf(why, sizeof why, "slot %d added %.0f%% of an average slot's throughput",
                     c, gain * 100);
            a->settled = 1;
            a->probing = 0;
            a->probe_in = ADAPT_PROBE_EVERY;
            return set(a, c - 1, why);
        }
    }
    if (a->settled && a->probing) { /* the probe paid: the answer is higher */
        a->probing = 0;
        a->probe_in = ADAPT_PROBE_EVERY;
        return c;
    }
    if (a->settled && --a->probe_in > 0) /* steady: stay until the next probe */
        return c;
    a->probing = a->settled;
    if (c < a->ceiling)
        return set(a, c + 1, a->settled ? "probing one slot up" : "throughput still grows");
    return c;
}

void adapt_inflight(struct adapt *a, int in_flight, double now_ms)
{
    if (a->last_t > 0)
        a->area += in_flight * (now_ms - a->last_t);
    a->last_t = now_ms;
    if (!a->t0)
        a->t0 = now_ms;
}

int adapt_sample(struct adapt *a, int in_flight, long long tokens, double ttfb_ms, int ok,
                 double now_ms)
{
    double span;
    adapt_inflight(a, in_flight, now_ms);
    a->n++;
    a->errors += !ok;
    a->tokens += tokens > 1 ? (double)tokens : 1;
    if (ttfb_ms >= 0)
        a->ttfb_sum += ttfb_ms;
    span = now_ms - a->t0;
    if (a->n < ADAPT_MIN_SAMPLES || a->n < 2 * a->cap || span < 500)
        return a->cap;
    if (!a->errors)
        adapt_decide(a, a->tokens * 1000.0 / span, a->area / span,
                     a->n ? a->ttfb_sum / a->n : -1);
    a->t0 = now_ms;
    a->area = 0;
    a->n = a->errors = 0;
    a->tokens = a->ttfb_sum = 0;
    return a->cap;
}
