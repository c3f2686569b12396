/* jout.h - JSON text written by the proxy itself, safe for any bytes.
 *
 * Error replies quote what a client or a backend sent (a model name, a
 * backend's name): those bytes may be cut anywhere or not be UTF-8 at all,
 * and a JSON text must be valid UTF-8. jansson's json_pack() returns NULL
 * for such a string; these functions never fail instead: invalid UTF-8 is
 * replaced by U+FFFD, as Go's encoding/json (Ollama's) does. */
#ifndef PX_JOUT_H
#define PX_JOUT_H

#include <stddef.h>

struct evbuffer;

/* Append S[0..N) to B as a JSON string literal, quotes included: '"', '\\'
 * and control characters escaped, each invalid UTF-8 sequence written as
 * U+FFFD. */
void jout_string(struct evbuffer *b, const char *s, size_t n);

/* The same for a NUL-terminated S. */
void jout_cstring(struct evbuffer *b, const char *s);

/* The length of the valid UTF-8 character at S[0..N) (no overlong form,
 * no surrogate, nothing above U+10FFFF), or 0 when it is not one. */
size_t jout_utf8_char(const unsigned char *s, size_t n);

/* Length of the longest prefix of S[0..N) that is valid UTF-8 and does not
 * end inside a character: where to cut a text that must stay valid. */
size_t jout_utf8_prefix(const char *s, size_t n);

#endif
