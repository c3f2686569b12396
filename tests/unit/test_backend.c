/* Unit test of proxy/fleet/backend.c and sched/lb_leastload.c: the
 * least-loaded choice, as a property
 * (h2o's least_conn test): the chosen backend never has a strictly lower
 * in_flight/max_concurrent than another available one, ties rotate, full
 * or down backends are skipped, AVOID is a last resort. */
#include <stdlib.h>

#include "backend.h"
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
    CHECK_DONE();
}
