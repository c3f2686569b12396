/* Unit test of classifier/pick.c: --limit takes the first N; --sample
 * takes exactly N in input order, the same N for the same seed, others for
 * another seed, and every item about equally often over many seeds. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "pick.h"

/* Run a pick over TOTAL items; TAKEN[i] says whether item i was taken.
 * Returns how many were. */
static long run(long limit, long sample, long total, uint64_t seed, unsigned char *taken)
{
    struct pick p;
    long n = 0;
    CHECK_INT(pick_init(&p, limit, sample, total, seed), 0);
    for (long i = 0; i < total; i++) {
        taken[i] = (unsigned char)pick_next(&p);
        n += taken[i];
    }
    CHECK(pick_full(&p) || (!limit && !sample) || n == total);
    return n;
}

int main(void)
{
    unsigned char a[1525], b[1525];
    struct pick p;
    long counts[100] = {0};

    /* --limit: the first N, and full after them */
    CHECK_INT(run(50, 0, 1525, 1, a), 50);
    CHECK(a[0] && a[49] && !a[50] && !a[1524]);
    CHECK_INT(run(50, 0, 20, 1, a), 20);
    CHECK_INT(run(0, 0, 1525, 1, a), 1525);

    /* --sample: exactly N, deterministic, the seed matters */
    CHECK_INT(run(0, 50, 1525, 7, a), 50);
    CHECK_INT(run(0, 50, 1525, 7, b), 50);
    CHECK(memcmp(a, b, sizeof a) == 0);
    run(0, 50, 1525, 8, b);
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK_INT(run(0, 2000, 1525, 7, a), 1525); /* more than there are: all */
    CHECK_INT(run(0, 1, 1, 3, a), 1);

    /* The last items are not starved: a sample of 10 of 100 over 20,000
     * seeds takes each item about 2,000 times (binomial sd ~42). */
    for (uint64_t seed = 0; seed < 20000; seed++) {
        unsigned char t[100];
        CHECK_INT(run(0, 10, 100, seed, t), 10);
        for (int i = 0; i < 100; i++)
            counts[i] += t[i];
    }
    for (int i = 0; i < 100; i++)
        CHECK(counts[i] > 1750 && counts[i] < 2250);

    /* sample without a known total is refused; counts */
    CHECK_INT(pick_init(&p, 0, 5, -1, 1), -1);
    CHECK_INT(pick_init(&p, 0, 5, 100, 1), 0);
    CHECK_INT(pick_count(&p), 5);
    CHECK_INT(pick_init(&p, 500, 0, 100, 1), 0);
    CHECK_INT(pick_count(&p), 100);
    CHECK_INT(pick_init(&p, 0, 0, -1, 1), 0);
    CHECK_INT(pick_count(&p), -1);
    CHECK_DONE();
}
