/* adapt.c - see adapt.h for what it measures and decides.
 *
 * States: at the knee (dir 0: cap == knee, measuring it, waiting to probe)
 * or probing (dir +1 / -1: cap is the probe's level). A probe ends won
 * (its level becomes the knee; the next probe follows at once in the same
 * direction, or the cap rests there) or lost (a smaller step is tried at
 * once, else back to the knee). Only adapt_decide moves between them. */
#include "adapt.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *const adapt_cause_name[ADAPT_NCAUSES] = {"start", "probe_up", "probe_down",
                                                     "grew",  "shrank",   "back"};

void adapt_init(struct adapt *a, int ceiling)
{
    memset(a, 0, sizeof *a);
    a->on = 1;
    a->ceiling = ceiling < 1 ? 1 : ceiling > ADAPT_MAX ? ADAPT_MAX : ceiling;
    a->cap = a->knee = 1;
    a->next_dir = 1;
    a->step = 1;
    a->streak = 1; /* so the climb doubles from the first won probe: 1, 2, 4, 8 */
    a->wait = 2;   /* one slot against none says little: start soon */
    a->from = 1;
    a->skip = 1; /* on a re-ceil, the old cap's requests are still in flight */
    snprintf(a->reason, sizeof a->reason, "start: climbing from 1");
    a->changed_at = (double)time(NULL);
}

void adapt_resume(struct adapt *a, int ceiling, int knee)
{
    adapt_init(a, ceiling);
    if (knee <= 1)
        return;
    a->cap = a->knee = a->from = knee < a->ceiling ? knee : a->ceiling;
    a->streak = 0;
    a->wait = ADAPT_PROBE_EVERY; /* settled there: probed now and then, both ways */
    snprintf(a->reason, sizeof a->reason, "start: at %d, the knee found before the restart",
             a->knee);
}

/* Put CAP in force; the first window after a change is not judged. */
static void set(struct adapt *a, int cap, enum adapt_cause cause, const char *why)
{
    if (cap != a->cap) {
        a->cause = cause;
        snprintf(a->reason, sizeof a->reason, "%d -> %d: %s", a->cap, cap, why);
        a->changed_at = (double)time(NULL);
        a->skip = 1;
    }
    a->cap = cap;
    a->nw = 0;
}

/* The median of the last windows at this cap (N of them, N >= 1). */
static double median(const double *w, int n)
{
    double lo, hi;
    if (n < ADAPT_WINDOWS)
        return n == 1 ? w[0] : (w[0] + w[1]) / 2;
    lo = w[0] < w[1] ? w[0] : w[1];
    hi = w[0] < w[1] ? w[1] : w[0];
    return w[2] < lo ? lo : w[2] > hi ? hi : w[2];
}

/* How far apart the last windows at this cap are (N of them). */
static double spread(const double *w, int n)
{
    double lo = w[0], hi = w[0];
    for (int i = 1; i < n && i < ADAPT_WINDOWS; i++) {
        lo = w[i] < lo ? w[i] : lo;
        hi = w[i] > hi ? w[i] : hi;
    }
    return hi - lo;
}

/* What slots LO+1..HI add per slot, against an average slot at HI. */
static double gain(double x_lo, int lo, double x_hi, int hi)
{
    return x_hi > 0 ? (x_hi - x_lo) / (hi - lo) / (x_hi / hi) : 0;
}

/* The level a probe from the knee in DIR with STEP would measure, or 0
 * when there is none (the ceiling, or 1). */
static int probe_level(const struct adapt *a, int dir, int step)
{
    int k = a->knee;
    if (dir > 0) {
        int l = k + (step < k ? step : k);
        return k < a->ceiling ? (l < a->ceiling ? l : a->ceiling) : 0;
    }
    if (k <= 1)
        return 0;
    return k - (step < k / 2 ? step : k / 2 > 1 ? k / 2 : 1);
}

/* Probe from the knee in DIR. The windows at hand are the knee's unless
 * RETRY (a lost probe's: the knee's figure stays the one it had). */
static int start_probe(struct adapt *a, int dir, int retry)
{
    char why[96];
    int l = probe_level(a, dir, a->step);
    if (!l)
        return 0;
    a->dir = dir;
    a->votes = a->yes = 0;
    if (!retry) {
        a->ref = median(a->w, a->nw);
        a->spread = spread(a->w, a->nw);
    }
    if (dir > 0)
        snprintf(why, sizeof why, "probing up: do slots %d-%d pay?", a->knee + 1, l);
    else
        snprintf(why, sizeof why, "probing down: do slots %d-%d pay?", l + 1, a->knee);
    set(a, l, dir > 0 ? ADAPT_PROBE_UP : ADAPT_PROBE_DOWN, why);
    return 1;
}

/* Rest at the knee, the next probe ADAPT_PROBE_EVERY windows away. */
static void rest(struct adapt *a, const char *why)
{
    a->next_dir = -a->dir;
    a->dir = 0;
    a->step = 1;
    a->streak = 0;
    a->wait = ADAPT_PROBE_EVERY;
    set(a, a->knee, a->knee > a->from ? ADAPT_GREW : a->knee < a->from ? ADAPT_SHRANK : ADAPT_BACK,
        why);
    a->from = a->knee;
}

/* From the knee: probe in the turn's direction, else the other one. */
static void on_knee_window(struct adapt *a)
{
    if (a->nw < a->wait)
        return;
    a->from = a->knee;
    if (!start_probe(a, a->next_dir, 0) && !start_probe(a, -a->next_dir, 0))
        a->nw = 0; /* a ceiling of 1: nothing to probe */
}

/* The step that goes on from a first won probe, and the one a lost probe
 * is retried with: an eighth of the knee, so that the gain over the step
 * amplifies a window's noise about 8 times, not K times. */
static int step0(const struct adapt *a)
{
    return a->knee / 8 > 1 ? a->knee / 8 : 1;
}

static void probe_won(struct adapt *a, double g)
{
    char why[96];
    int old = a->knee;
    a->knee = a->cap;
    a->streak++;
    a->step = a->streak >= 2 ? 2 * a->step : step0(a);
    snprintf(why, sizeof why, "slots %d-%d added %.0f%% of an average slot each",
             (a->dir > 0 ? old : a->knee) + 1, a->dir > 0 ? a->knee : old, g * 100);
    snprintf(a->reason, sizeof a->reason, "%d -> %d: %s", old, a->knee, why);
    a->changed_at = (double)time(NULL);
    /* The probe's windows are the new knee's: go on from them. */
    if (!start_probe(a, a->dir, 0)) {
        a->cause = a->knee > a->from ? ADAPT_GREW : ADAPT_SHRANK;
        a->from = a->knee;
        a->next_dir = a->dir;
        a->dir = 0;
        a->wait = ADAPT_PROBE_EVERY;
        a->step = 1;
        a->streak = 0;
    }
}

static void probe_lost(struct adapt *a, double g)
{
    char why[96];
    if (a->step > 1) { /* the knee lies within the step: closer in */
        a->step = a->step > step0(a) ? step0(a) : 1;
        a->streak = 0;
        /* Unless the smaller step is clamped to the level that just lost. */
        if (probe_level(a, a->dir, a->step) != a->cap && start_probe(a, a->dir, 1))
            return;
    }
    snprintf(why, sizeof why, "back: slots %d-%d added %.0f%% of an average slot each (%s)",
             (a->dir > 0 ? a->knee : a->cap) + 1, a->dir > 0 ? a->cap : a->knee, g * 100,
             a->dir > 0 ? "up needs 20%" : "10% pays");
    rest(a, why);
}

/* One vote of a probe window of throughput X: for the move? */
static void on_probe_window(struct adapt *a, double x)
{
    double g = a->dir > 0 ? gain(a->ref, a->knee, x, a->cap) : gain(x, a->cap, a->ref, a->knee);
    /* Up must also beat the noise the knee was measured with: at a knee of
     * tens of slots one slot's 20% is a fraction of a percent of X. */
    int move = a->dir > 0 ? g >= ADAPT_UP_GAIN && x - a->ref > a->spread : g < ADAPT_GAIN;
    int won, lost;
    a->votes++;
    a->yes += move;
    if (a->dir > 0) { /* up: every window must vote for it */
        won = a->yes == ADAPT_WINDOWS;
        lost = a->yes < a->votes;
    } else { /* down: the majority */
        won = 2 * a->yes > ADAPT_WINDOWS;
        lost = 2 * (a->votes - a->yes) > ADAPT_WINDOWS;
    }
    if (!won && !lost)
        return;
    g = a->dir > 0 ? gain(a->ref, a->knee, median(a->w, a->nw), a->cap)
                   : gain(median(a->w, a->nw), a->cap, a->ref, a->knee);
    if (won)
        probe_won(a, g);
    else
        probe_lost(a, g);
}

int adapt_decide(struct adapt *a, double x, double mean_inflight)
{
    /* Not kept busy, nothing learnt; or more in flight than the cap, the
     * requests of a higher cap before it (a re-ceil, a probe down). */
    if (mean_inflight < a->cap - 0.5 || mean_inflight > a->cap + 0.5)
        return a->cap;
    if (a->skip) { /* the window of the change itself */
        a->skip--;
        return a->cap;
    }
    if (a->nw < ADAPT_WINDOWS) {
        a->w[a->nw] = x;
    } else { /* the last ADAPT_WINDOWS, oldest first */
        memmove(a->w, a->w + 1, (ADAPT_WINDOWS - 1) * sizeof a->w[0]);
        a->w[ADAPT_WINDOWS - 1] = x;
    }
    a->nw++;
    if (a->dir)
        on_probe_window(a, x);
    else
        on_knee_window(a);
    return a->cap;
}

void adapt_inflight(struct adapt *a, int in_flight, double now_ms)
{
    if (a->last_t > 0)
        a->area += in_flight * (now_ms - a->last_t);
    a->last_t = now_ms;
    if (!a->t0)
        a->t0 = now_ms;
}

/* Over 1 in ADAPT_ERR_SHARE answers said "too busy" (503, 429): the cap
 * is over what the backend takes, whatever its throughput says. Halve it
 * (as AIMD's decrease) and rest there; the search goes on from it. */
static void overloaded(struct adapt *a)
{
    char why[96];
    int k = a->cap > 1 ? a->cap / 2 : 1;
    snprintf(why, sizeof why, "overloaded: %d of %d answered busy (503 or 429)", a->overload,
             a->n);
    a->from = a->knee;
    a->knee = k;
    a->dir = 0;
    a->step = 1;
    a->streak = 0;
    a->next_dir = -1;
    a->wait = ADAPT_PROBE_EVERY;
    set(a, k, ADAPT_SHRANK, why);
    a->from = k;
}

int adapt_sample(struct adapt *a, int in_flight, long long tokens, int outcome, double now_ms)
{
    double span;
    adapt_inflight(a, in_flight, now_ms);
    a->n++;
    a->errors += outcome == ADAPT_FAILED;
    a->overload += outcome == ADAPT_OVERLOAD;
    if (outcome == ADAPT_OK)
        a->tokens += tokens > 1 ? (double)tokens : 1;
    span = now_ms - a->t0;
    /* Whole rounds of the cap: with every slot having ended as many
     * requests, the span does not depend on how the slots' phases bunch. */
    if (a->n < ADAPT_MIN_SAMPLES || a->n < 2 * a->cap || a->n % a->cap || span < 500)
        return a->cap;
    if (a->overload * ADAPT_ERR_SHARE > a->n)
        overloaded(a);
    else if ((a->errors + a->overload) * ADAPT_ERR_SHARE <= a->n)
        adapt_decide(a, a->tokens * 1000.0 / span, a->area / span);
    a->t0 = now_ms;
    a->area = 0;
    a->n = a->errors = a->overload = 0;
    a->tokens = 0;
    return a->cap;
}
