/* jscan.h - validate a JSON request body and pick out its top-level
 * "model" (or "name") and "stream", without building a tree.
 *
 * The proxy reads bodies only to route them (CONTRACT.md: "the proxy reads
 * JSON only to find model (and stream)"); jansson would allocate a node for
 * every value of every request. This scanner checks the whole grammar
 * (RFC 8259) in one pass and allocates nothing. */
#ifndef PX_JSCAN_H
#define PX_JSCAN_H

#include <stddef.h>

struct jscan_result {
    /* The top-level "model" string (else "name"), pointing into the body,
     * without its quotes, still escaped when model_escaped; NULL when absent
     * or not a string. */
    const char *model;
    size_t model_len;
    int model_escaped;
    int stream; /* 1 true, 0 false, -1 absent or null */
    int keep_alive_zero; /* "keep_alive" is 0, "0", "0s", "0m" or "0h" */
    int has_input;       /* a "prompt" or "messages" that is not empty ("", [], null) */
    int is_object;
};

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
