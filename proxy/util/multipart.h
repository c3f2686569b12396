/* multipart.h - one field of a multipart/form-data body, read as Go's
 * mime/multipart reads it: Ollama's /v1/audio/transcriptions takes its
 * model from FormValue("model"). The body is read where it lies (nothing
 * is copied), so a form of audio costs no more memory than its body. */
#ifndef PX_MULTIPART_H
#define PX_MULTIPART_H

#include <stddef.h>

/* The first value of the field NAME (a part with no filename: a file is
 * not a value) of BODY[0..LEN), whose Content-Type header is CTYPE (NULL:
 * none). Returns 1 with *VAL pointing into BODY and *VLEN its length, 0
 * when the form has no such field, or -1 when it is not a form at all,
 * with Go's reason in ERR ("request Content-Type isn't
 * multipart/form-data", "no multipart boundary param in Content-Type",
 * "multipart: NextPart: EOF"...). */
int multipart_field(const char *ctype, const char *body, size_t len, const char *name,
                    const char **val, size_t *vlen, char *err, size_t errlen);

#endif
