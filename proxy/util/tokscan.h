/* tokscan.h - the token counts of a response, read on the fly.
 *
 * Each wire format (wire.h) carries its counts under its own keys, one row
 * of tokscan.c's table each:
 *   NDJSON     "eval_count", "prompt_eval_count" (the last line, or the one answer)
 *   OpenAI     usage "completion_tokens", "prompt_tokens" (a non-streamed
 *              answer, or a stream with stream_options.include_usage)
 *   Responses  usage "output_tokens", "input_tokens" (response.completed)
 *   Anthropic  usage "output_tokens" (cumulative, in message_delta),
 *              "input_tokens" (message_start's estimate, then message_delta's)
 * The last value seen of a key wins. An OpenAI stream without usage (the
 * SDKs' default) is counted by its non-empty "content", "text" and
 * "reasoning" deltas, one token each, and marked estimated: Ollama sends one
 * token per chunk.
 *
 * The proxy forwards streams chunk by chunk and keeps nothing, so the
 * counts are picked out of the bytes as they pass, across chunk
 * boundaries, with a few bytes of state and no buffering. A key is only
 * seen as a JSON member name: the same text inside a string is escaped
 * (\"eval_count\":) and does not count. */
#ifndef PX_TOKSCAN_H
#define PX_TOKSCAN_H

#include <stddef.h>

#include "wire.h"

enum tokscan_role { TOKSCAN_GEN, TOKSCAN_PROMPT, TOKSCAN_SEQ, TOKSCAN_NVALUES, TOKSCAN_EST };

struct tokscan {
    char tail[24];        /* the last bytes fed, for a key cut by a chunk's end */
    unsigned char ntail;  /* how many of them */
    unsigned char fmt;    /* enum wire_format */
    unsigned char in_val; /* what the bytes after the last key are read as (tokscan.c) */
    unsigned char role;   /* of that key */
    unsigned char digits;
    long long cur;
    long long val[TOKSCAN_NVALUES]; /* the last value of each role; -1: none */
    long long est;                  /* non-empty deltas seen (TOKSCAN_EST) */
};

/* What a response said, once it has ended. */
struct tokscan_counts {
    long long generated; /* -1: unknown */
    long long prompt;    /* -1: unknown */
    int estimated;       /* generated is counted from deltas, not reported */
};

/* Start counting a response in format FMT. */
void tokscan_init(struct tokscan *t, enum wire_format fmt);

/* Feed the next N bytes of the body. */
void tokscan_feed(struct tokscan *t, const char *p, size_t n);

/* The counts so far; a number still being read when the body ends counts. */
void tokscan_counts(struct tokscan *t, struct tokscan_counts *out);

/* The last "sequence_number" of a Responses stream, -1 if none: an error
 * event added to the stream takes the next. */
long long tokscan_seq(const struct tokscan *t);

/* The format's name ("ndjson", "openai", "responses", "anthropic"). */
const char *tokscan_format_name(enum wire_format fmt);

#endif
