/* verdict.h - from an item's replies to its result line: the label, its
 * confidence and its review mark, or the next request the item needs.
 *
 * An item's requests, by kind (request.h):
 * - REQ_PLAIN: one answer at temperature 0; no confidence.
 * - REQ_LOGPROBS (--confidence): one answer at temperature 0 with its
 *   logprobs; the confidence from them (logprob.h).
 * - REQ_VOTE (--votes N, where the endpoint gives no logprobs): N answers
 *   at the vote temperature, one after the other; the label is the most
 *   common answer (a tie goes to the label listed first), the confidence
 *   its share of the N, answers outside the labels included.
 *
 * The endpoint's logprobs are learnt from its replies. Until a reply has
 * come without them, items ask for them. The first reply without them
 * (an Ollama older than 0.12.11) is said once on stderr; from then on new
 * items are voted on (--votes) or go without a confidence, and the items
 * that asked for logprobs and got none are voted on too. A reply with
 * logprobs after that (a fleet behind a proxy with old and new Ollamas)
 * makes new items ask for them again; each item whose reply lacks them
 * falls back on its own. */
#ifndef CLS_VERDICT_H
#define CLS_VERDICT_H

#include <stddef.h>

#include "batch.h"
#include "client.h"

struct verdicts;

/* For a run with CONF (borrowed for its life). NULL: no memory. */
struct verdicts *verdict_new(const struct batch_conf *conf);
void verdict_free(struct verdicts *a);

/* Returns of verdict_reply(). */
enum verdict_next {
    VERDICT_RECORDED, /* the item's line is written */
    VERDICT_AGAIN,    /* send job->body again (a vote, or a resend) */
    VERDICT_WRITE_FAILED,
};

/* The kind of body a new item starts with. */
int verdict_first_kind(const struct verdicts *a);

/* Judge JOB's 2xx reply (job->resp). With VERDICT_AGAIN, job->body and
 * job->kind are set for the next request; NO_MORE forbids it (the run is
 * stopping: the item is recorded with what it has). ERR gets the reason
 * of a failed write. */
enum verdict_next verdict_reply(struct verdicts *a, struct job *job, int no_more, char *err,
                                size_t errlen);

/* Record JOB as an error of kind K with TEXT. 0, or -1 when the write failed. */
int verdict_error(struct verdicts *a, struct job *job, enum err_kind k, const char *text, char *err,
                  size_t errlen);

/* Record JOB, whose text is empty or blank, without sending it: the
 * abstain label, else an error of kind empty. 0 or -1 (write failed). */
int verdict_empty(struct verdicts *a, struct job *job, char *err, size_t errlen);

#endif
