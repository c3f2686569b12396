/* tokscan.h - the generated-token count of a response, read on the fly.
 *
 * Ollama's last NDJSON line (or its one non-streamed answer) carries
 * "eval_count":N; an OpenAI-style answer carries "completion_tokens":N in
 * its usage. The proxy forwards streams chunk by chunk and keeps nothing,
 * so the count is picked out of the bytes as they pass, across chunk
 * boundaries, with a few bytes of state and no buffering. */
#ifndef PX_TOKSCAN_H
#define PX_TOKSCAN_H

#include <stddef.h>

struct tokscan {
    char tail[20];       /* the last bytes fed, for a key cut by a chunk's end */
    unsigned char ntail; /* how many of them */
    unsigned char in_num; /* 0, or which key's number is being read (1, 2) */
    unsigned char digits;
    long long cur;
    long long eval, comp; /* the last value seen of each; -1: none */
};

void tokscan_init(struct tokscan *t);

/* Feed the next N bytes of the body. */
void tokscan_feed(struct tokscan *t, const char *p, size_t n);

/* The tokens generated: eval_count if seen, else completion_tokens, else -1.
 * A number still being read when the body ends counts (tokscan_end). */
long long tokscan_tokens(struct tokscan *t);

#endif
