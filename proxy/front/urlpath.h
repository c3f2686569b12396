/* urlpath.h - read a request target's path as Ollama reads it.
 *
 * Ollama (Go net/http, then gin) routes on the percent-DECODED path, so the
 * proxy must decide routing, admin and fan-out on that same path, and must
 * forward a target that decodes to it: "/api/%70ull" is /api/pull, for the
 * key check as for the backend. What cannot be made unambiguous is refused
 * (400): a malformed escape, an encoded '/' (Go decodes it, gin then sees
 * a different path than its raw form), NUL and other control bytes, and
 * "." or ".." segments (encoded or not). Empty segments ("//") and a
 * trailing '/' are dropped: /api//pull/ is /api/pull.
 *
 * The forwarded target is the normalised path, each byte outside RFC 3986's
 * pchar set percent-encoded, then the query exactly as the client sent it. */
#ifndef PX_URLPATH_H
#define PX_URLPATH_H

#include <stddef.h>

#define URLPATH_MAX 2048 /* decoded path bytes; longer: URLPATH_ELONG (414) */

#define URLPATH_EBAD (-1)  /* ambiguous or malformed: 400 */
#define URLPATH_ELONG (-2) /* longer than URLPATH_MAX or than the buffers: 414 */

/* TARGET is the request target in origin form ("/path?query"; a target
 * that does not start with '/' is taken as "/" followed by it). Writes the
 * decoded, normalised path into PATH (PATHLEN bytes, NUL-terminated) and
 * the target to forward into FWD (FWDLEN bytes). Returns 0, or a negative
 * code above with a short reason in *WHY (a static string). */
int urlpath_normalize(const char *target, char *path, size_t pathlen, char *fwd, size_t fwdlen,
                      const char **why);

#endif
