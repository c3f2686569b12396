/* pick.h - which items a run takes: all, the first N (--limit) or N drawn
 * at random (--sample), decided item by item as the input streams past.
 *
 * --sample is Knuth's selection sampling (TAOCP vol. 2, 3.4.2, Algorithm
 * S): knowing the number of items T, the item after t seen, m taken, is
 * taken with probability (N - m) / (T - t). Every set of N items is
 * equally likely, exactly N are taken, they keep their input order, and
 * nothing is held in memory. The random numbers are splitmix64 from
 * --seed, so the same seed and input give the same sample on any machine
 * (and a re-run resumes the same sample). */
#ifndef CLS_PICK_H
#define CLS_PICK_H

#include <stdint.h>

struct pick {
    long limit;  /* 0: no limit */
    long sample; /* 0: no sample */
    long total;  /* items in the input (needed by sample), -1: unknown */
    long seen, taken;
    uint64_t rng;
};

/* Set P up. SAMPLE needs TOTAL >= 0: returns -1 otherwise, else 0. */
int pick_init(struct pick *p, long limit, long sample, long total, uint64_t seed);

/* The next item of the input: 1 to take it, 0 to pass it by. */
int pick_next(struct pick *p);

/* 1 once no later item will be taken (the reader may stop). */
int pick_full(const struct pick *p);

/* How many items will be taken, -1 when unknown. */
long pick_count(const struct pick *p);

#endif
