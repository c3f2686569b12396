/* Unit test of proxy/fleet/backend.c and sched/lb_leastload.c: the
 * least-loaded choice, as a property
 * (h2o's least_conn test): the chosen backend never has a strictly lower
 * in_flight/max_concurrent than another available one, ties rotate, full
 * or down backends are skipped, AVOID is a last resort. */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "adapt.h"
#include "check.h"
#include "lb.h"

static struct backend bes[4];
static struct backend *list[4] = {&bes[0], &bes[1], &bes[2], &bes[3]};

static void reset(const int *caps, const int *inflight)
{
    for (int i = 0; i < 4; i++) {
        bes[i] = (struct backend){0};
        bes[i].name = (char *)"b";
        bes[i].max_concurrent = caps[i];
        bes[i].in_flight = inflight[i];
        bes[i].healthy = 1;
    }
}

static struct lb lb = {.ops = &lb_leastload};

static struct backend *pick(const struct backend *avoid)
{
    struct lb_request r = {.key = NULL, .avoid = avoid};
    return lb_pick(&lb, list, 4, &r, 0);
}

static int acceptable(const struct backend *chosen)
{
    for (int i = 0; i < 4; i++) {
        const struct backend *b = &bes[i];
        if (!backend_available(b, 0))
            continue;
        if ((long long)b->in_flight * chosen->max_concurrent <
            (long long)chosen->in_flight * b->max_concurrent)
            return 0;
    }
    return 1;
}

/* Adaptive caps per runner (CONTRACT.md: "With adaptive = true, each
 * (backend, model) finds its own cap"): one adaptive backend, two models
 * whose runners batch to different knees (4 and 12 slots: 50 tokens/s a
 * slot up to the knee, flat beyond), each kept busy at its own cap for
 * 400 s of simulated time. Each runner settles near its own knee, and the
 * backend's effective cap is their sum. */
static double curve(int c, int knee)
{
    return (c < knee ? c : knee) * 50.0 + (c > knee ? (c - knee) * 0.2 : 0);
}

static void runners_find_their_own_caps(void)
{
    struct backend be = {0};
    const char *keys[2] = {"registry.ollama.ai/library/small:latest",
                           "registry.ollama.ai/library/big:latest"};
    const int knees[2] = {4, 12};
    struct runner *rn[2];
    double owed[2] = {0, 0}, now = 0;
    const struct adapt *why;
    be.name = (char *)"gpu";
    be.healthy = 1;
    backend_adapt(&be, 32);
    for (int m = 0; m < 2; m++)
        rn[m] = backend_runner(&be, keys[m]);
    CHECK(rn[0] && rn[1]);
    if (!rn[0] || !rn[1])
        return;
    for (int step = 0; step < 40000; step++) { /* 10 ms steps */
        now += 10;
        for (int m = 0; m < 2; m++) {
            int cap = runner_cap(&be, rn[m]);
            while (rn[m]->in_flight < cap)
                runner_acquire(rn[m], 0, now);
            /* Replies of 25 tokens at the curve's pace for the load now. */
            owed[m] += curve(rn[m]->in_flight, knees[m]) * 0.010 / 25;
            while (owed[m] >= 1 && rn[m]->in_flight > 0) {
                owed[m] -= 1;
                runner_release(rn[m], now);
                backend_feedback(&be, keys[m], 25, ADAPT_OK, 0, now);
            }
        }
    }
    fprintf(stderr, "runners: knees %d and %d (the curves' knees: 4 and 12)\n",
            rn[0]->adapt.knee, rn[1]->adapt.knee);
    CHECK(rn[0]->adapt.knee >= 3 && rn[0]->adapt.knee <= 5);
    CHECK(rn[1]->adapt.knee >= 10 && rn[1]->adapt.knee <= 14);
    CHECK_INT(backend_effective_cap(&be, &why), rn[0]->adapt.cap + rn[1]->adapt.cap);
    for (int m = 0; m < 2; m++)
        while (rn[m]->in_flight > 0)
            runner_release(rn[m], now);
    while (be.runners) { /* as backend_free(), which wants a whole backend */
        struct runner *r = be.runners;
        be.runners = r->next;
        free(r->key);
        free(r);
    }
}

int main(void)
{
    int seen[4] = {0};
    int caps[4] = {4, 4, 4, 4}, zero[4] = {0, 0, 0, 0};
    struct backend *b;

    /* Random loads: the choice is always acceptable. */
    srand(7);
    for (int t = 0; t < 2000; t++) {
        int c[4], f[4];
        for (int i = 0; i < 4; i++) {
            c[i] = 1 + rand() % 8;
            f[i] = rand() % (c[i] + 1);
        }
        reset(c, f);
        if (rand() % 2) { /* one down */
            int d = rand() % 4;
            bes[d].healthy = 0;
        }
        if (rand() % 4 == 0) /* one drained by the runtime control */
            bes[rand() % 4].admin = ADMIN_DRAIN;
        b = pick(NULL);
        if (b) {
            CHECK(acceptable(b));
            CHECK(b->in_flight < b->max_concurrent && b->healthy && b->admin == ADMIN_READY);
        } else {
            for (int i = 0; i < 4; i++)
                CHECK(!backend_available(&bes[i], 0));
        }
    }
    /* Ties rotate. */
    reset(caps, zero);
    for (int t = 0; t < 8; t++)
        seen[pick(NULL) - bes]++;
    for (int i = 0; i < 4; i++)
        CHECK_INT(seen[i], 2);
    /* A slot at a time: filling 16 slots spreads them evenly. */
    reset(caps, zero);
    for (int t = 0; t < 16; t++)
        backend_acquire(pick(NULL));
    for (int i = 0; i < 4; i++)
        CHECK_INT(bes[i].in_flight, 4);
    CHECK(pick(NULL) == NULL);
    /* AVOID only when nothing else is free. */
    reset(caps, zero);
    bes[1].in_flight = bes[2].in_flight = bes[3].in_flight = 4;
    CHECK(pick(&bes[0]) == &bes[0]);
    bes[3].in_flight = 3;
    CHECK(pick(&bes[0]) == &bes[3]);
    /* Down after fail_after failures in a row, with the reason; a real
     * request's success resets the count but does not bring it back (only
     * the health checks do, health.c). */
    reset(caps, zero);
    backend_note_failure(&bes[0], 2, "connect failed");
    CHECK_INT(bes[0].healthy, 1);
    backend_note_success(&bes[0]);
    backend_note_failure(&bes[0], 2, "connect failed");
    CHECK_INT(bes[0].healthy, 1);
    backend_note_failure(&bes[0], 2, "connect failed");
    CHECK_INT(bes[0].healthy, 0);
    CHECK(strstr(bes[0].down_reason, "connect failed") != NULL);
    CHECK_STR(backend_state(&bes[0]), "down");
    CHECK(!backend_available(&bes[0], 0));
    backend_note_success(&bes[0]);
    CHECK_INT(bes[0].healthy, 0);
    CHECK_INT(bes[0].consecutive_failures, 0);
    /* Drained: no new request; "draining" while some are in flight. */
    reset(caps, zero);
    bes[1].admin = ADMIN_DRAIN;
    bes[1].in_flight = 1;
    CHECK(!backend_available(&bes[1], 0));
    CHECK_STR(backend_state(&bes[1]), "draining");
    bes[1].in_flight = 0;
    CHECK_STR(backend_state(&bes[1]), "drained");
    bes[1].admin = ADMIN_DISABLED;
    CHECK_STR(backend_state(&bes[1]), "disabled");
    runners_find_their_own_caps();
    CHECK_DONE();
}
