/* fuzz_tokscan.c - the counters that read a reply as it passes
 * (proxy/util/tokscan.c, numkey.c): whatever the bytes, where the chunks
 * end must not change what they count.
 *
 * The first input byte picks the wire format (its low two bits) and seeds
 * the cuts; the rest is the reply body. It is fed whole, one byte at a
 * time, and in chunks of sizes drawn from the seed, to tokscan (its counts
 * and a Responses stream's last sequence_number) and to numkey watching
 * "load_duration": all three feeds must give the same figures, and a count
 * is never below -1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "numkey.h"
#include "tokscan.h"

struct figures {
    struct tokscan_counts c;
    long long seq, load;
};

/* Feed BODY in chunks: 0 whole, 1 byte by byte, else sizes from RNG. */
static void feed(const char *body, size_t len, enum wire_format fmt, int how, uint32_t seed,
                 struct figures *f)
{
    struct tokscan t;
    struct numkey k;
    struct fz_rng rng;
    fz_rng_seed(&rng, seed);
    tokscan_init(&t, fmt);
    numkey_init(&k, "\"load_duration\"");
    for (size_t at = 0; at < len;) {
        size_t n = how == 0 ? len : how == 1 ? 1 : 1 + fz_rng_next(&rng) % 40;
        if (n > len - at)
            n = len - at;
        /* drawn chunks in allocations of their own: ASan sees a read past one */
        char *chunk = how == 2 ? malloc(n) : NULL;
        const char *p = chunk ? memcpy(chunk, body + at, n) : body + at;
        tokscan_feed(&t, p, n);
        numkey_feed(&k, p, n);
        free(chunk);
        at += n;
    }
    tokscan_counts(&t, &f->c);
    f->seq = tokscan_seq(&t);
    f->load = numkey_value(&k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct figures whole, bytes, chunks;
    if (size < 1)
        return 0;
    enum wire_format fmt = (enum wire_format)(data[0] & 3);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    feed(body, len, fmt, 0, 0, &whole);
    feed(body, len, fmt, 1, 0, &bytes);
    feed(body, len, fmt, 2, fz_hash(data, size), &chunks);
    FZ_CHECK(whole.c.generated >= -1 && whole.c.prompt >= -1 && whole.load >= -1);
    const struct figures *other[] = {&bytes, &chunks};
    for (int i = 0; i < 2; i++) {
        if (other[i]->c.generated != whole.c.generated || other[i]->c.prompt != whole.c.prompt ||
            other[i]->c.estimated != whole.c.estimated || other[i]->seq != whole.seq ||
            other[i]->load != whole.load) {
            fprintf(stderr, "whole: %lld %lld %d %lld %lld; %s: %lld %lld %d %lld %lld\n",
                    whole.c.generated, whole.c.prompt, whole.c.estimated, whole.seq, whole.load,
                    i ? "chunks" : "bytes", other[i]->c.generated, other[i]->c.prompt,
                    other[i]->c.estimated, other[i]->seq, other[i]->load);
            fz_dump("body", body, len);
            FZ_CHECK(!"the counts do not depend on where chunks end");
        }
    }
    return 0;
}
