/* adapt.h - adaptive caps: with `adaptive = true` a backend's
 * max_concurrent is a ceiling, and the proxy finds the number of requests
 * in flight where that backend's throughput stops growing, and caps there.
 *
 * Measure: windows of completed requests (at least ADAPT_MIN_SAMPLES and
 * 2 x the cap, a whole number of rounds of the cap, and 0.5 s). A window's figure is its throughput X:
 * generated tokens per second (a successful request counts at least 1, a
 * failed one 0, and only a 2xx whose body is no error is a success). A
 * window with over 1 in ADAPT_ERR_SHARE answers "too busy" (Ollama's 503,
 * a 429) halves the cap at once: overload, whatever X says (a backend
 * that refuses work must not be driven to its ceiling by the requests
 * it refuses fast). A window is not judged when the backend was not kept busy
 * (time-weighted mean in flight more than half a slot under the cap: an
 * idle backend says nothing of its capacity), when more than 1 in
 * ADAPT_ERR_SHARE of its requests failed (a burst of errors teaches
 * nothing; the search goes on from where it was once they stop), nor when
 * it is the first at a new cap (the in-flight count and the completions
 * still reflect the old one).
 *
 * The rule: slots LO+1..HI "pay" when what they add, per slot, is at
 * least ADAPT_GAIN (10%) of what an average slot gives at HI:
 *     gain = (X[HI] - X[LO]) / (HI - LO) / (X[HI] / HI).
 * The answer (the knee) is where the next slot stops paying: the soft
 * knee where a GPU's batching curve flattens, and the hard one where
 * Ollama's own OLLAMA_NUM_PARALLEL ends (beyond it requests wait inside
 * and X is flat). The time to first byte does not steer: for a reply that
 * is not streamed the head comes at the end, so it grows with batching on
 * any curve, knee or not; X alone is flat beyond a hard knee.
 *
 * Search (adapt_decide, a pure function, unit-tested): the cap sits at
 * the knee K, measuring it (its figure: the median of its last
 * ADAPT_WINDOWS windows), and every ADAPT_PROBE_EVERY windows probes one
 * level, alternately above and below, and comes back unless the probe
 * wins:
 *   - up to K+s: won if slots K+1..K+s pay ADAPT_UP_GAIN (2 x ADAPT_GAIN:
 *     the hysteresis that keeps noise from walking the cap up) and the
 *     probe's X beats the knee's by more than the spread of the knee's own
 *     windows (at a knee of tens of slots, one slot's 20% is a fraction of
 *     a percent of X, inside a window's noise);
 *   - down to K-s: won if slots K-s+1..K do not pay ADAPT_GAIN.
 * Each window of a probe votes against K's figure. A probe down is decided
 * by the majority of ADAPT_WINDOWS (two agreeing votes), so one stray
 * window cannot shrink the cap; a probe up is won only if every one of
 * them votes for it, and lost at the first that does not (a stall ends it:
 * the safe side; a majority up lets noise walk a cap of tens of slots a
 * few slots up). A lost probe is not retried at the level that lost, nor
 * is a window judged while more than the cap is still in flight (the
 * requests of a higher cap before it). A won probe becomes the knee and the search goes on at once in
 * the same direction: the first probe from a resting knee steps 1 slot,
 * the next max(1, K/8), then the step doubles (up: to at most 2K and the
 * ceiling; down: at most K/2 removed in one move); a lost probe is retried
 * with max(1, K/8), then 1, before the cap goes back to K (a step of K/8
 * amplifies a window's noise about 8 times, one slot K times). So the
 * start climbs 1, 2, 4, 8, 16 ... and then closes in
 * on the knee; a knee that moves (a model swap, another load) is found
 * again in a few probes, either way; and once settled the cap in force is
 * K, or K+1 / K-1 while a probe lasts. Never above the ceiling, never
 * below 1.
 * Limitation: the noise of a window's X is amplified by HI in the gain of
 * one slot; at knees of tens of slots a probe can then be won or lost by
 * noise. The votes and the hysteresis keep the answer within a slot or
 * two of the knee for noise of a few percent a window (tests/unit).
 *
 * Why throughput and not latency, against the usual anchors: TCP Vegas
 * and Netflix's Vegas and Gradient2 limits, and Envoy's adaptive
 * concurrency filter, steer on latency (the limit shrinks as the round
 * trip grows over its minimum, or over its long-term mean). They assume a
 * server whose service time is constant until a queue forms. A GPU that
 * batches is the other kind: each sequence decodes slower as more share a
 * step, so latency grows with every slot even while the throughput still
 * grows several times over; a latency gradient reads batching as queueing
 * and holds the cap far under the knee. BBR measures what we do: the
 * delivery rate, and it probes (a pacing gain above, then below, the
 * estimate, and now and then a drop to re-measure the floor); the probes
 * here, alternately above and below the knee, follow that idea, and
 * Envoy's periodic re-measuring at a low limit is the probe down. */
#ifndef PX_ADAPT_H
#define PX_ADAPT_H

#define ADAPT_MAX 1024       /* the highest ceiling */
#define ADAPT_GAIN 0.10      /* a slot must add 10% of an average slot */
#define ADAPT_UP_GAIN 0.20   /* ... and 20% to win a probe up */
#define ADAPT_MIN_SAMPLES 4  /* requests in a window, at least */
#define ADAPT_WINDOWS 3      /* windows judged per level: median / majority */
#define ADAPT_PROBE_EVERY 4  /* windows at the knee between probes */
#define ADAPT_ERR_SHARE 10   /* a window with over 1 in 10 failed is not judged */

/* Why the cap last changed: a bounded set, for /metrics' labels. */
enum adapt_cause {
    ADAPT_START,      /* (re)started from 1: a new backend, ceiling or reload */
    ADAPT_PROBE_UP,   /* a probe above the knee: do more slots pay? */
    ADAPT_PROBE_DOWN, /* a probe below it: do its last slots pay? */
    ADAPT_GREW,       /* a probe up won and the cap rests at the new knee */
    ADAPT_SHRANK,     /* a probe down won and the cap rests there */
    ADAPT_BACK,       /* a probe lost: back at the knee */
    ADAPT_NCAUSES
};
extern const char *const adapt_cause_name[ADAPT_NCAUSES];

struct adapt {
    int on, ceiling, cap; /* cap: in force, the knee or a probe's level */
    int knee;             /* the standing answer */
    int dir;              /* 0 at the knee, +1 / -1 while probing up / down */
    int step, streak;     /* the probe's step; probes won in a row */
    int next_dir;         /* the direction of the next probe from the knee */
    int wait;             /* windows at the knee before the next probe */
    int skip;             /* windows still to skip at this cap (the change's own) */
    int from;             /* the knee the search left from: grew, shrank or back */
    int nw;               /* windows judged at this cap, this visit */
    double w[ADAPT_WINDOWS]; /* their X, the last ADAPT_WINDOWS, oldest first */
    int votes, yes;          /* a probe's windows so far, and those for the move */
    double ref;              /* the knee's X when the probe started */
    double spread;           /* ... and how far apart its windows were */
    enum adapt_cause cause; /* of the last change of the cap */
    char reason[120];       /* the same in words, with its figures */
    double changed_at;      /* wall-clock seconds */
    /* The window being measured. */
    double t0, last_t, area; /* ms; in-flight x ms */
    int n, errors, overload;
    double tokens;
};

/* How a request on the backend went, for adapt_sample. Only a success
 * (2xx, its body not an error) counts as throughput; a "too busy" answer
 * (503, 429) says the cap is too high; another failure says nothing of the
 * cap (a window with too many is not judged). */
enum adapt_outcome { ADAPT_OK, ADAPT_FAILED, ADAPT_OVERLOAD };

/* A window's figures: throughput and mean in flight. Returns the cap in
 * force after it, and fills a->reason when it changes. */
int adapt_decide(struct adapt *a, double x, double mean_inflight);

/* Start (or re-ceil) A at CEILING (at most ADAPT_MAX): from 1, climbing;
 * the first window is not judged. */
void adapt_init(struct adapt *a, int ceiling);

/* Start A at CEILING from KNEE, a knee found before (the state file of a
 * restart): resting there as if found, probed now and then both ways, so a
 * knee that moved meanwhile is followed. A KNEE of 1 or less is
 * adapt_init's climb from 1; one over the ceiling rests at the ceiling. */
void adapt_resume(struct adapt *a, int ceiling, int knee);

/* The in-flight count is about to change (IN_FLIGHT now) at NOW_MS. */
void adapt_inflight(struct adapt *a, int in_flight, double now_ms);

/* A request (or a try) on the backend ended: TOKENS generated (-1
 * unknown), OUTCOME an enum adapt_outcome. Over 1 in ADAPT_ERR_SHARE of a
 * window's answers busy halves the cap (cause shrank). Returns the cap to
 * use. */
int adapt_sample(struct adapt *a, int in_flight, long long tokens, int outcome,
                 double now_ms);

#endif
