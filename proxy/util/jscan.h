/* jscan.h - validate a JSON request body and pick out the top-level
 * members the proxy routes on, without building a tree.
 *
 * The proxy reads bodies only to route them (CONTRACT.md: "the proxy reads
 * JSON only to find model (and stream)"); jansson would allocate a node for
 * every value of every request. This scanner checks the whole grammar
 * (RFC 8259) in one pass and allocates nothing. */
#ifndef PX_JSCAN_H
#define PX_JSCAN_H

#include <stddef.h>

/* The top-level members the proxy routes on, read as Ollama reads them:
 * Go's encoding/json matches a member name to a field without regard to
 * case (Unicode simple folding: "Prompt", "PROMPT" and "\u017ftream" are
 * prompt and stream; U+017F folds to s, U+212A to k) and the last
 * duplicate wins; a JSON null leaves a string field as it was and sets a
 * pointer or slice field to nil; a value of the wrong type is an error
 * (Ollama answers 400). The proxy must see the request the backend will
 * run, or a body can be counted as one thing and run as another. */
enum jscan_member {
    JSCAN_MODEL,
    JSCAN_NAME,
    JSCAN_PROMPT,
    JSCAN_MESSAGES,
    JSCAN_KEEP_ALIVE,
    JSCAN_STREAM,
    JSCAN_INPUT,
    JSCAN_OPTIONS,
    JSCAN_NMEMBERS
};

/* keep_alive as Ollama's api.Duration reads it. */
enum jscan_keep_alive { JSCAN_KA_ABSENT, JSCAN_KA_ZERO, JSCAN_KA_SET };

struct jscan_result {
    /* The last "model" string, pointing into the body, without its quotes,
     * still escaped when model_escaped; NULL when absent (or only null). */
    const char *model;
    size_t model_len;
    int model_escaped;
    const char *name; /* the legacy "name" likewise (show, pull, delete...) */
    size_t name_len;
    int name_escaped;
    int stream;       /* 1 true, 0 false, -1 absent or null */
    enum jscan_keep_alive keep_alive;
    int prompt;       /* the last "prompt" string: 1 non-empty, 0 "", -1 absent */
    int messages;     /* the last "messages": 1 a non-empty array, 0 [] or null, -1 absent */
    unsigned present; /* bit (1 << JSCAN_x) when the member appears */
    unsigned wrong_type; /* bit (1 << JSCAN_x) when a value has a type Go refuses there */
    int is_object;
};

/* Which routed member the name K[0..N) (still escaped when ESC) is, under
 * Go's case-insensitive matching, or -1. */
int jscan_member_of(const char *k, size_t n, int esc);

/* Decode the JSON string contents S[0..N) (between the quotes, as jscan
 * returns them) into OUT (LEN bytes, NUL-terminated, cut if short): the
 * escapes decoded, a lone surrogate as U+FFFD (as Go's decoder). Returns the
 * length the whole decoded text has (>= LEN: it was cut). */
size_t jscan_unescape(const char *s, size_t n, char *out, size_t len);

/* Scan BODY[0..LEN). Returns 0, or -1 with a reason and the byte offset in
 * ERR when it is not one valid JSON value. */
int jscan_body(const char *body, size_t len, struct jscan_result *out, char *err,
               size_t errlen);

#endif
