/* pick.c - see pick.h. */
#include "pick.h"

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static double uniform(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) / 9007199254740992.0;
}

int pick_init(struct pick *p, long limit, long sample, long total, uint64_t seed)
{
    *p = (struct pick){limit, sample, total, 0, 0, seed};
    return sample && total < 0 ? -1 : 0;
}

int pick_next(struct pick *p)
{
    int take = 1;
    if (pick_full(p)) {
        take = 0;
    } else if (p->sample) {
        double left = (double)(p->total - p->seen), want = (double)(p->sample - p->taken);
        take = left <= want || uniform(&p->rng) * left < want;
    }
    p->seen++;
    p->taken += take;
    return take;
}

int pick_full(const struct pick *p)
{
    return (p->limit && p->taken >= p->limit) || (p->sample && p->taken >= p->sample);
}

long pick_count(const struct pick *p)
{
    long want = p->limit ? p->limit : p->sample;
    if (p->total < 0)
        return -1;
    return want && want < p->total ? want : p->total;
}
