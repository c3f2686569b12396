/* Unit test of proxy/adapt.c on synthetic backends, over many noise
 * seeds: the cap settles at the hard knee (Ollama's own parallelism) and
 * at the soft one (a batching curve that flattens), stays within a slot or
 * two of it (no oscillation), follows a knee that moves both ways within a
 * bounded number of windows, never passes the ceiling, is not moved by one
 * stray window nor by a slot that pays less than the hysteresis asks,
 * learns nothing from an idle backend, and comes through a burst of errors
 * to the same answer (while a few errors in a window do not stop it). */
#include <stdlib.h>
#include <string.h>

#include "adapt.h"
#include "check.h"

#define SEEDS 50

static unsigned seed;
static double noise = 0.03; /* +-: a window's figure off by up to this share */

static double noisy(double v)
{
    return v * (1 - noise + 2 * noise * (rand_r(&seed) % 10000) / 10000.0);
}

/* A backend with Ollama's OLLAMA_NUM_PARALLEL = KNEE, 10 requests/s a
 * slot: throughput grows to the knee, then is flat while requests wait
 * inside. */
static double hard(int c, int knee)
{
    return noisy((c < knee ? c : knee) * 10.0);
}

/* A GPU whose batching curve is linear to KNEE (50 tokens/s a slot), then
 * nearly flat (1/3 token/s a slot more), as the e2e test's sims. */
static double soft(int c, int knee)
{
    return noisy(c <= knee ? c * 50.0 : knee * 50.0 + (c - knee) / 3.0);
}

/* Linear to 8; slot 9 adds 14% of an average slot (between ADAPT_GAIN and
 * ADAPT_UP_GAIN); flat beyond. */
static double between(int c, int knee)
{
    (void)knee;
    return noisy(c <= 8 ? c * 50.0 : 400 / (1 - 0.14 / 9));
}

struct span {
    int lo, hi, first_near; /* caps over the last half; first window near the knee */
};

/* Run N windows of CURVE at KNEE, as a busy backend; the range of caps
 * over the last HALF windows, and the first window from which the cap
 * stays within 2 of the knee. */
static struct span run(struct adapt *a, int n, int half, double (*curve)(int, int), int knee)
{
    struct span s = {1 << 30, 0, -1};
    for (int i = 0; i < n; i++) {
        adapt_decide(a, curve(a->cap, knee), a->cap);
        CHECK(a->cap >= 1 && a->cap <= a->ceiling);
        if (abs(a->cap - knee) > 2)
            s.first_near = -1;
        else if (s.first_near < 0)
            s.first_near = i;
        if (i >= n - half) {
            s.lo = a->cap < s.lo ? a->cap : s.lo;
            s.hi = a->cap > s.hi ? a->cap : s.hi;
        }
    }
    return s;
}

/* Over SEEDS seeds: settles within 2 of KNEE within SETTLE windows and
 * stays there for the rest of N. */
static void settles(double (*curve)(int, int), int knee, int ceiling, int n, int settle)
{
    int worst_settle = 0;
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        struct adapt a;
        struct span s;
        seed = sd;
        adapt_init(&a, ceiling);
        s = run(&a, n, n - settle, curve, knee);
        CHECK(s.lo >= knee - 2 && s.hi <= knee + 2);
        CHECK(s.first_near >= 0 && s.first_near <= settle);
        worst_settle = s.first_near > worst_settle ? s.first_near : worst_settle;
        if (s.lo < knee - 2 || s.hi > knee + 2)
            fprintf(stderr, "  seed %u knee %d: caps %d-%d\n", sd, knee, s.lo, s.hi);
    }
    fprintf(stderr, "knee %d (ceiling %d, noise +-%.1f%%): settled within %d windows\n", knee,
            ceiling, noise * 100, worst_settle);
}

/* The knee moves (a model swap): 8 -> 24 -> 8, each followed within
 * FOLLOW windows, every seed. */
static void follows(int follow)
{
    int worst_up = 0, worst_down = 0;
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        struct adapt a;
        struct span s;
        seed = sd;
        adapt_init(&a, 64);
        s = run(&a, 150, 50, soft, 8);
        CHECK(s.lo >= 6 && s.hi <= 10);
        s = run(&a, 250, 100, soft, 24);
        CHECK(s.lo >= 22 && s.hi <= 26);
        CHECK(s.first_near >= 0 && s.first_near <= follow);
        worst_up = s.first_near > worst_up ? s.first_near : worst_up;
        s = run(&a, 250, 100, soft, 8);
        CHECK(s.lo >= 6 && s.hi <= 10);
        CHECK(s.first_near >= 0 && s.first_near <= follow);
        worst_down = s.first_near > worst_down ? s.first_near : worst_down;
    }
    fprintf(stderr, "knee 8 -> 24 followed within %d windows, 24 -> 8 within %d\n", worst_up,
            worst_down);
}

/* Through adapt_sample: WINDOWS busy windows of 0.5 s at the soft knee
 * KNEE, every ERR_EVERY-th request failed (0: none, 1: all). */
static double feed(struct adapt *a, double now, int windows, int knee, int err_every)
{
    for (int w = 0; w < windows; w++) {
        int n = 4 * a->cap;
        double x = soft(a->cap, knee); /* tokens/s in this window */
        for (int i = 1; i <= n; i++) {
            int ok = !(err_every && i % err_every == 0);
            now += 500.0 / n;
            adapt_sample(a, a->cap, (long long)(x * 0.5 / n + 0.5), ok ? ADAPT_OK : ADAPT_FAILED,
                         now);
        }
    }
    return now;
}

/* Answers "too busy" (503, 429) over 1 in 10 of a window halve the cap
 * at once, whatever the throughput says; other failures leave a window
 * unjudged; neither counts as throughput (issue 18, item 13). */
static void busy_answers_shrink(void)
{
    struct adapt a;
    double now = 0;
    adapt_init(&a, 64);
    run(&a, 50, 40, soft, 16); /* rests near 16 */
    CHECK(a.cap >= 8);
    for (int w = 0; w < 3; w++) { /* whole windows, one answer in five busy */
        int n = 2 * a.cap, start = a.cap;
        for (int i = 0; i < n; i++) {
            now += 600.0 / n;
            adapt_sample(&a, a.cap, 50, i % 5 ? ADAPT_OK : ADAPT_OVERLOAD, now);
        }
        if (w == 0) {
            CHECK_INT(a.cap, start / 2 ? start / 2 : 1);
            CHECK_INT(a.cause, ADAPT_SHRANK);
            CHECK(strstr(a.reason, "busy") != NULL);
        }
    }
    CHECK(a.cap <= 4);
    /* A backend answering every request with an error body: never judged,
     * never grown. */
    adapt_init(&a, 64);
    for (int i = 0; i < 400; i++) {
        now += 50;
        adapt_sample(&a, a.cap, -1, ADAPT_FAILED, now);
    }
    CHECK_INT(a.cap, 1);
}

/* Resumed at the knee a restart saved: at full speed from the first
 * window, and still following the knee when it has moved (both ways). */
static void resumes(void)
{
    struct adapt a;
    struct span s;
    double old;
    adapt_resume(&a, 64, 16);
    CHECK_INT(a.cap, 16);
    CHECK_INT(a.knee, 16);
    CHECK_INT(a.cause, ADAPT_START);
    CHECK(strstr(a.reason, "before the restart") != NULL);
    seed = 7;
    s = run(&a, 100, 100, soft, 16);
    CHECK(s.first_near == 0); /* near 16 from the first window on */
    CHECK(s.lo >= 14 && s.hi <= 18);
    adapt_resume(&a, 8, 16); /* a lower ceiling now: rests there */
    CHECK_INT(a.cap, 8);
    adapt_resume(&a, 64, 1); /* nothing known: the climb from 1 */
    CHECK_INT(a.cap, 1);
    CHECK_INT(a.wait, 2);
    old = noise;
    noise = 0.005; /* as follows(): the e2e sims' windows */
    for (unsigned sd = 1; sd <= SEEDS; sd++) { /* a knee that moved meanwhile */
        seed = sd;
        adapt_resume(&a, 64, 24);
        s = run(&a, 250, 100, soft, 8);
        CHECK(s.lo >= 6 && s.hi <= 10);
        adapt_resume(&a, 64, 4);
        s = run(&a, 250, 100, soft, 16);
        CHECK(s.lo >= 14 && s.hi <= 18);
    }
    noise = old;
}

int main(void)
{
    struct adapt a;
    struct span s;

    busy_answers_shrink();
    resumes();

    /* No oscillation, on every seed. The hard knee: OLLAMA_NUM_PARALLEL 4
     * behind a ceiling of 16. The soft knee at 8 behind 64, with +-3% of
     * noise a window; at 24, where the gain of one slot multiplies the
     * noise by 24, with +-0.5% (what the e2e sims' windows show). */
    settles(hard, 4, 16, 300, 60);
    settles(soft, 8, 64, 400, 80);
    noise = 0.005;
    settles(soft, 24, 64, 400, 160);

    /* No walk up at a knee of tens of slots: one slot's 20% there is a
     * fraction of a percent of X, inside a window's noise; a probe up must
     * beat the spread of the knee's own windows. 2,000 windows at 24: the
     * answer never goes past 25, with +-2% of noise a window. */
    noise = 0.02;
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        int hi = 0;
        seed = sd;
        adapt_init(&a, 64);
        run(&a, 300, 10, soft, 24);
        for (int i = 0; i < 2000; i++) {
            adapt_decide(&a, soft(a.cap, 24), a.cap);
            hi = a.knee > hi ? a.knee : hi;
        }
        if (hi > 25)
            fprintf(stderr, "  seed %u: the knee up to %d, at %d at the end\n", sd, hi, a.knee);
        CHECK(hi <= 25);
        CHECK(a.knee >= 22 && a.knee <= 26);
    }
    noise = 0.005;

    /* The knee moves both ways and the cap follows within 120 windows. */
    follows(120);
    noise = 0.03;

    /* The ceiling holds below the knee, and the cap sits at it. */
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        seed = sd;
        adapt_init(&a, 6);
        s = run(&a, 200, 100, soft, 8);
        CHECK(s.hi <= 6 && s.lo >= 5);
    }

    /* Hysteresis: slot 9 adds 14% of an average slot: it pays (over
     * ADAPT_GAIN), but not enough to win a probe up: the cap rests at 8
     * and never goes to 9 for more than a probe. */
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        int at9 = 0;
        seed = sd;
        noise = 0.002;
        adapt_init(&a, 64);
        run(&a, 100, 50, between, 8);
        for (int i = 0; i < 300; i++) {
            adapt_decide(&a, between(a.cap, 8), a.cap);
            at9 += a.cap == 9;
            CHECK(a.cap >= 7 && a.cap <= 9);
        }
        CHECK(at9 < 300 / 4); /* probes only */
    }
    noise = 0.03;

    /* One stray window (a stall: 40% low, or a burst: 40% high) every 7
     * does not move the answer, in a probe (the votes need two, up three)
     * nor at the knee (its figure is a median). */
    noise = 0.005;
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        seed = sd;
        adapt_init(&a, 64);
        run(&a, 150, 10, soft, 8);
        for (int i = 0; i < 300; i++) {
            double x = soft(a.cap, 8);
            if (i % 7 == 3)
                x *= (i / 7) % 2 ? 1.4 : 0.6;
            adapt_decide(&a, x, a.cap);
            CHECK_INT(a.knee, 8); /* probes to 7 and 9 only */
        }
    }

    noise = 0.03;

    /* An idle backend (1 in flight under a cap of 5) teaches nothing. */
    seed = 1;
    adapt_init(&a, 16);
    run(&a, 40, 10, hard, 8);
    {
        int cap = a.cap;
        for (int i = 0; i < 50; i++)
            adapt_decide(&a, 10, 1);
        CHECK_INT(a.cap, cap);
    }

    /* Through adapt_sample: a burst of failed tries teaches nothing and
     * the cap goes on from where it was, to the same knee; one try in 12
     * failing does not stop the search. */
    noise = 0.01;
    for (unsigned sd = 1; sd <= SEEDS; sd++) {
        double now = 1000;
        int before;
        seed = sd;
        adapt_init(&a, 64);
        now = feed(&a, now, 40, 8, 12); /* 8% failed: still judged */
        CHECK(a.cap >= 6 && a.cap <= 10);
        before = a.cap;
        now = feed(&a, now, 40, 8, 1); /* all failed: the backend's outage */
        CHECK_INT(a.cap, before);
        now = feed(&a, now, 40, 8, 0);
        CHECK(a.cap >= 6 && a.cap <= 10);
    }

    /* A lost probe is not retried at the level that lost: under a ceiling
     * of 5 at a hard knee of 4 a probe up to 5 (its step clamped) lasts
     * the window of the change and one vote, then the cap is back at 4. */
    noise = 0;
    adapt_init(&a, 5);
    {
        int at5 = 0, visits = 0, prev = a.cap;
        for (int i = 0; i < 200; i++) {
            adapt_decide(&a, hard(a.cap, 4), a.cap);
            if (a.cap == 5 && a.knee == 4) {
                at5++;
                visits += prev != 5;
            }
            prev = a.cap;
        }
        CHECK(visits > 0);
        CHECK_INT(at5, 2 * visits); /* the skipped window and one vote */
    }

    /* A new ceiling at runtime (adapt_init on a busy backend): the window
     * of the old cap's requests is not judged, nor one with more in flight
     * than the cap. */
    adapt_init(&a, 64);
    run(&a, 100, 10, soft, 8);
    adapt_init(&a, 16);
    adapt_decide(&a, soft(8, 8), 8); /* 8 still in flight at cap 1 */
    adapt_decide(&a, soft(1, 8), 1); /* the first window at 1: skipped */
    CHECK_INT(a.nw, 0);
    adapt_decide(&a, soft(1, 8), 1);
    CHECK_INT(a.nw, 1);
    CHECK_INT(a.cap, 1);

    /* The cause of the last change: the climb from 1 that rests at the
     * knee grew it; a probe that comes back is "back"; a knee that moves
     * down rests "shrank". */
    noise = 0.005;
    seed = 7;
    adapt_init(&a, 64);
    CHECK_INT(a.cause, ADAPT_START);
    {
        int i, saw_grew = 0, saw_back = 0, saw_shrank = 0;
        for (i = 0; i < 200; i++) {
            adapt_decide(&a, soft(a.cap, 8), a.cap);
            if (a.dir == 0 && a.cause == ADAPT_GREW)
                saw_grew = a.knee;
            if (saw_grew && a.dir == 0 && a.cause == ADAPT_BACK)
                saw_back = a.knee;
        }
        CHECK(saw_grew >= 6 && saw_grew <= 10);
        CHECK(saw_back >= 6 && saw_back <= 10);
        run(&a, 200, 10, soft, 24);
        for (i = 0; i < 300; i++) {
            adapt_decide(&a, soft(a.cap, 8), a.cap);
            if (a.dir == 0 && a.cause == ADAPT_SHRANK && !saw_shrank)
                saw_shrank = a.knee;
        }
        CHECK(saw_shrank >= 6 && saw_shrank <= 10);
        CHECK(strcmp(adapt_cause_name[ADAPT_SHRANK], "shrank") == 0);
    }
    CHECK_DONE();
}
