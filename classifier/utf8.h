/* utf8.h - the two UTF-8 rules every input and output of the classifier
 * keeps:
 * - A UTF-8 byte order mark (EF BB BF) at the start of a file or of stdin
 *   is not part of its content: every reader skips it before parsing
 *   (items, labels, the prompt, results read back).
 * - Every JSON text written (request bodies, results lines) is valid
 *   UTF-8: a byte that does not start a valid UTF-8 sequence becomes
 *   U+FFFD, one per byte, as Go's encoding/json (Ollama) does. The same
 *   input always gives the same output, so an id read back from the
 *   results matches the item again. */
#ifndef CLS_UTF8_H
#define CLS_UTF8_H

#include <stddef.h>
#include <stdio.h>

/* The UTF-8 encoding of U+FFFD, what an invalid byte becomes. */
#define UTF8_REPLACEMENT "\xef\xbf\xbd"

/* The length of the valid UTF-8 sequence at S (LEN bytes left): 1 to 4,
 * or 0 when S[0] does not start one (a stray continuation byte, an
 * overlong form, a surrogate, past U+10FFFF, or cut short). */
size_t utf8_seq_len(const unsigned char *s, size_t len);

/* Skip a UTF-8 byte order mark at the current position of F (the start of
 * the file); anything else is left unread. Returns 1 when one was skipped,
 * else 0. Needs more than one ungetc() only on a file starting with EF BB
 * but not BF (invalid UTF-8), which glibc's stdio gives back. */
int utf8_skip_bom(FILE *f);

/* The number of bytes of a byte order mark at the start of S (LEN bytes):
 * 3 or 0. */
size_t utf8_bom_len(const char *s, size_t len);

#endif
