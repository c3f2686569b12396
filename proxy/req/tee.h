/* tee.h - one request body sent to several uploads as it arrives (a blob
 * upload to every GPU: req/fanout.c), at the pace of the slowest.
 *
 * Memory is bounded by a fixed window, whatever the body's size: bytes are
 * taken from the source only while every upload still sending has less
 * than TEE_WINDOW queued, so the slowest backend's pace sets the reading
 * of the source (bodysrc.h: the client's connection reads at most a
 * window ahead), and the bytes taken are shared by the uploads' queues,
 * not copied. An upload that has ended (answered, possibly before the
 * body, or failed) is dropped and no longer waited for; with none left
 * the rest of the body is read and discarded.
 *
 * Ownership: the tee owns nothing but its scratch buffer; it releases the
 * source in tee_free. The uploads are the caller's, named with tee_set. */
#ifndef PX_TEE_H
#define PX_TEE_H

#include "bodysrc.h"

struct tee;
struct upload;

#define TEE_WINDOW (1024 * 1024) /* bytes queued on an upload at most */

/* Once, when the body has been read to its end (BODYSRC_END: every upload
 * still set got upload_finish) or its framing turned out malformed
 * (BODYSRC_BAD). The last thing tee_pump does: the callee may free the
 * tee. */
typedef void (*tee_end_fn)(void *arg, enum bodysrc_state how);

/* A tee of SRC to N uploads (none set yet). NULL when out of memory. */
struct tee *tee_new(struct bodysrc *src, int n, tee_end_fn on_end, void *arg);

/* The I-th upload is U (NULL: none, or it ended: no more bytes for it). */
void tee_set(struct tee *t, int i, struct upload *u);

/* Move what may be moved now: call it when the source has news (the tee
 * sets itself as the source's on_data) and when an upload has room. */
void tee_pump(struct tee *t);

/* Body bytes taken from the source so far. */
unsigned long long tee_bytes(const struct tee *t);

/* Release the source and free T; NULL is a no-op. */
void tee_free(struct tee *t);

#endif
