/* jbody.h - what routing reads deeper in a request body than jscan.h does,
 * and the one rewrite the proxy makes (CONTRACT.md, "Conversations stay
 * warm"): the start of a conversation, for prefix affinity, and
 * options.num_ctx, read, removed or set.
 *
 * Every function takes a BODY that jscan_body() accepted as one JSON
 * object (it does not validate again) and reads it as Ollama's Go decoder
 * does: a struct field's member name matches without regard to ASCII case
 * and its last duplicate wins; options is a map (map[string]any), so its
 * keys match exactly, after their escapes are decoded, a duplicate options
 * object is merged into the one before and null empties it. */
#ifndef PX_JBODY_H
#define PX_JBODY_H

#include <stddef.h>

/* Where a body keeps the start of its conversation. */
enum jbody_shape {
    JBODY_NONE,
    JBODY_MESSAGES,  /* /api/chat, /v1/chat/completions, /v1/messages: "system" (Anthropic's
                        top level), the system messages before the first user message, and
                        that message */
    JBODY_PROMPT,    /* /api/generate, /v1/completions: "system" and the first
                        JBODY_PROMPT_MAX bytes of "prompt" */
    JBODY_RESPONSES, /* /v1/responses: "instructions", then "input": a string (its first
                        JBODY_PROMPT_MAX bytes), or its items up to the first user message */
};

#define JBODY_PROMPT_MAX 2048

/* A 64-bit hash of the start of the conversation in BODY[0..LEN) (the part
 * that stays the same from turn to turn) into *HASH: its values' JSON text
 * as sent. Returns 1, or 0 when BODY holds no user message or prompt. */
int jbody_prefix_hash(const char *body, size_t len, enum jbody_shape shape,
                      unsigned long long *hash);

/* The num_ctx of BODY's options as Ollama will run it: a positive number
 * (truncated to an integer), or 0 when it gives none (absent, null, not a
 * positive number). */
int jbody_num_ctx(const char *body, size_t len);

/* BODY with its options.num_ctx set to VALUE (added where absent; VALUE 0:
 * every num_ctx of options removed), the rest byte for byte, into a new
 * buffer *OUT of *OUTLEN bytes (the caller frees it). Returns 1 when it
 * changed, 0 when BODY needs no change (*OUT NULL), -1 when out of memory
 * or options is neither an object nor null (*OUT NULL: forward BODY as it
 * is; Ollama answers that one 400). */
int jbody_set_num_ctx(const char *body, size_t len, int value, char **out, size_t *outlen);

#endif
