/* logprob.h - the confidence of a label from the answer's log-probabilities.
 *
 * Asked with "logprobs":true and "top_logprobs":K, Ollama (0.12.11 on)
 * returns for every generated token its text, its log-probability and the
 * K most likely tokens at that place (api/types.go Logprob, TokenLogprob;
 * "bytes" holds the token's exact bytes when its text is not whole UTF-8).
 * The model answered {"label": "feature_request"}; the confidence is the
 * probability of that label against the other labels:
 *
 *   confidence = P(chosen) / (P(chosen) + P(other labels))
 *
 * The answer's text is the tokens end to end. In it we find the label's
 * value: the last "label" key, the value after it up to its closing quote
 * (or, for a bare answer, the whole text). The tokens from the one that
 * reaches the value's start to the one that holds its closing quote are
 * the label's tokens, t_0..t_n; everything before them is the same for
 * every label and cancels out.
 *
 * - P(chosen) = exp(sum of the logprobs of t_0..t_n): a label of several
 *   tokens ("feature" + "_request") is the product of its tokens, and the
 *   closing quote's token tells "bug" from "bugfix".
 * - At every t_j, each alternative token A of top_logprobs (not t_j itself)
 *   is a way to leave the chosen path there. The text so far with A in
 *   t_j's place is compared with each label's complete value (the value's
 *   lead, the label, its closing quote): A agrees with a label when one of
 *   the two texts is a prefix of the other. The mass of that way out is
 *   exp(sum of logprobs of t_0..t_{j-1} + logprob of A), and it goes to
 *   the other labels when A agrees only with labels other than the chosen
 *   one, to the chosen label when it agrees only with it (another spelling
 *   in tokens), and nowhere when it agrees with both or with none (a token
 *   the format's enum would not allow: the logprobs are over the whole
 *   vocabulary, before the grammar, so labels are compared among
 *   themselves only).
 * - The rest of a label reached through A is taken as certain: with the
 *   enum in the format, once the tokens have told labels apart the model
 *   has no other way to go. Where several labels share the first tokens
 *   ("bug", "bugfix" both start with "bug"), a way out that agrees with
 *   both the chosen and another label is not counted, so the confidence is
 *   then an upper bound. Labels outside the top K at every place count as
 *   zero: ask for K at least the number of labels (the request does).
 */
#ifndef CLS_LOGPROB_H
#define CLS_LOGPROB_H

#include <jansson.h>
#include <stddef.h>

#include "labels.h"

/* Return codes of logprob_confidence(). */
#define LOGPROB_ENONE -1    /* no logprobs in the reply */
#define LOGPROB_ENOTOP -2   /* logprobs without top_logprobs at the label */
#define LOGPROB_ENOLABEL -3 /* the tokens do not spell the chosen label */

/* The confidence of label CHOSEN (an index in LABELS) from LOGPROBS, the
 * "logprobs" array of a non-streamed /api/chat reply (borrowed; NULL or not
 * an array: LOGPROB_ENONE). 0 with *CONF in [0, 1], or a LOGPROB_E* code. */
int logprob_confidence(json_t *logprobs, const struct labels *labels, int chosen, double *conf);

/* The top_logprobs to ask for with N labels: N + 5, at most 20 (Ollama's
 * limit), so that every label's first token can appear among them. */
int logprob_top_k(size_t nlabels);

#endif
