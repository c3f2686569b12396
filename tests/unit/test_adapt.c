/* Unit test of proxy/adapt.c on synthetic backends: the cap settles at the
 * hard knee (Ollama's own parallelism) and at the soft one (a batching
 * curve that flattens), follows a knee that moves, never passes the
 * ceiling, never swings wider than a slot above a steady answer, learns
 * nothing from an idle backend, and a window with errors does not count. */
#include <math.h>
#include <stdlib.h>

#include "adapt.h"
#include "check.h"

static unsigned seed = 7;

/* +-3% of noise, as a real window's measure has. */
static double noisy(double v)
{
    return v * (0.97 + 0.06 * (rand_r(&seed) % 1000) / 1000.0);
}

/* A backend with Ollama's OLLAMA_NUM_PARALLEL = KNEE and 100 ms a request:
 * throughput grows to the knee, then is flat while requests wait inside
 * (their time to first byte grows). */
static void hard(int c, int knee, double *x, double *ttfb)
{
    int run = c < knee ? c : knee;
    *x = noisy(run * 10.0);
    *ttfb = noisy(100.0 + (c > knee ? 100.0 * (c - knee) / c : 0));
}

/* A GPU whose batching curve is linear to KNEE, then adds 5% of a slot. */
static void soft(int c, int knee, double *x, double *ttfb)
{
    *x = noisy(c <= knee ? c * 50.0 : knee * 50.0 + 2.5 * (c - knee));
    *ttfb = noisy(30.0);
}

/* Run N windows of CURVE at KNEE; the range of caps over the last half. */
static void run(struct adapt *a, int n, void (*curve)(int, int, double *, double *), int knee,
                int *lo, int *hi)
{
    *lo = 1 << 30;
    *hi = 0;
    for (int i = 0; i < n; i++) {
        double x, t;
        curve(a->cap, knee, &x, &t);
        adapt_decide(a, x, a->cap, t);
        CHECK(a->cap >= 1 && a->cap <= a->ceiling);
        if (i >= n / 2) {
            *lo = a->cap < *lo ? a->cap : *lo;
            *hi = a->cap > *hi ? a->cap : *hi;
        }
    }
}

int main(void)
{
    struct adapt a;
    int lo, hi;

    /* The hard knee: OLLAMA_NUM_PARALLEL 4 behind a ceiling of 16. */
    adapt_init(&a, 16);
    run(&a, 200, hard, 4, &lo, &hi);
    CHECK(lo >= 3 && hi <= 6); /* a slot or two around the knee */

    /* The soft knee: a curve that flattens at 8, the ceiling 64. */
    adapt_init(&a, 64);
    run(&a, 300, soft, 8, &lo, &hi);
    CHECK(lo >= 6 && hi <= 10);

    /* The knee moves (a model swap): down to 4, then up to 12. */
    run(&a, 300, soft, 4, &lo, &hi);
    CHECK(lo >= 2 && hi <= 6);
    run(&a, 600, soft, 12, &lo, &hi);
    CHECK(lo >= 10 && hi <= 14);

    /* The ceiling holds below the knee. */
    adapt_init(&a, 6);
    run(&a, 200, soft, 8, &lo, &hi);
    CHECK(hi <= 6 && lo >= 5);

    /* An idle backend (1 in flight under a cap of 5) teaches nothing. */
    adapt_init(&a, 16);
    run(&a, 40, hard, 8, &lo, &hi);
    {
        int cap = a.cap;
        for (int i = 0; i < 50; i++)
            adapt_decide(&a, 10, 1, 100);
        CHECK_INT(a.cap, cap);
    }

    /* Through adapt_sample: a burst of failed tries does not count, and
     * the cap goes on from where it was. */
    adapt_init(&a, 16);
    {
        double now = 1000;
        int before;
        for (int w = 0; w < 6; w++) /* busy windows of 0.5 s, all well */
            for (int i = 0; i < 2 * a.cap + 8; i++) {
                now += 500.0 / (2 * a.cap + 8);
                adapt_sample(&a, a.cap, 10, 100, 1, now);
            }
        before = a.cap;
        CHECK(before > 1);
        for (int i = 0; i < 200; i++) { /* errors: nothing learnt */
            now += 10;
            adapt_sample(&a, a.cap, -1, -1, 0, now);
        }
        CHECK_INT(a.cap, before);
    }
    CHECK_DONE();
}
