/* adapt.h - adaptive caps: with `adaptive = true` a backend's
 * max_concurrent is a ceiling, and the proxy finds the number of requests
 * in flight where that backend's throughput stops growing, and caps there.
 *
 * Measure: windows of completed requests (at least ADAPT_MIN_SAMPLES and
 * 2 x the cap, and 0.5 s). For each window: throughput X (generated tokens
 * per second, a request counting at least 1), the time-weighted mean in
 * flight, and the mean time to the response head. A window only counts
 * when the backend was kept busy (mean in flight within half a slot of the
 * cap): an idle backend says nothing of its capacity.
 *
 * Decide (adapt_decide, a pure function, unit-tested):
 *   - X is kept per cap level (a moving average). The last slot's gain is
 *     (X[C] - X[C-1]) / (X[C] / C): what slot C adds, against what an
 *     average slot gives. Below ADAPT_GAIN (0.1) slot C does not pay:
 *     the knee is C-1. That finds both knees: the soft one where a GPU's
 *     batching curve flattens, and the hard one where Ollama's own
 *     OLLAMA_NUM_PARALLEL ends (beyond it requests wait inside and X is
 *     flat, while the time to first byte grows).
 *   - A mean time to first byte over 2x its best (and 50 ms more) means
 *     requests queue inside the backend: one slot down at once.
 *   - Otherwise one slot up, to the ceiling (probing).
 *   - Settled at a knee, it probes one slot up every ADAPT_PROBE_EVERY
 *     windows, so a change of model or load moves the answer; it never
 *     goes more than one slot above a steady answer, nor above the
 *     ceiling.
 * The first window after a change is not judged (the in-flight count was
 * moving); a level is judged on the next one while climbing, on three once
 * settled. Noise in a
 * window's figures is amplified by the cap in the gain, so the answer may
 * swing a slot or two above the knee before it settles back.
 * Errors of a window (failed tries) make it not count. */
#ifndef PX_ADAPT_H
#define PX_ADAPT_H

#define ADAPT_MAX 1024        /* levels measured */
#define ADAPT_GAIN 0.10       /* a slot must add 10% of an average slot */
#define ADAPT_MIN_SAMPLES 4
#define ADAPT_PROBE_EVERY 10  /* windows between probes once settled */

struct adapt {
    int on, ceiling, cap;
    double x[ADAPT_MAX + 1]; /* throughput measured at each cap; 0: not yet */
    double ttfb_best;        /* the best window mean, rising slowly */
    int settled, probe_in, probing;
    int fresh; /* windows at this cap so far: the first after a change is skipped */
    char reason[120];
    double changed_at; /* wall-clock seconds */
    /* The window being measured. */
    double t0, last_t, area; /* ms; in-flight x ms */
    int n, errors;
    double tokens, ttfb_sum;
};

/* A window's figures: throughput, mean in flight, mean time to first
 * byte (ms). Returns the new cap and fills a->reason when it changes. */
int adapt_decide(struct adapt *a, double x, double mean_inflight, double ttfb_ms);

/* Start (or re-ceil) A at CEILING: from 1, probing up. */
void adapt_init(struct adapt *a, int ceiling);

/* The in-flight count is about to change (IN_FLIGHT now) at NOW_MS. */
void adapt_inflight(struct adapt *a, int in_flight, double now_ms);

/* A request on the backend ended: TOKENS generated (-1 unknown), TTFB_MS
 * (-1: no head), OK 0 for a failed try. Returns the cap to use. */
int adapt_sample(struct adapt *a, int in_flight, long long tokens, double ttfb_ms, int ok,
                 double now_ms);

#endif
