/* idset.h - a set of item ids (their JSON text), each with an int value.
 * The only memory that grows with the input: the ids seen in the items (to
 * find duplicates) and the ids already labelled in the results file, with
 * their label. Open addressing over an arena of the id bytes. */
#ifndef CLS_IDSET_H
#define CLS_IDSET_H

#include <stddef.h>

struct idset;

struct idset *idset_new(void);
/* Add ID (LEN bytes, copied) with VALUE. Returns 1 if added, 0 if it was
 * there (its value is kept), -1 no memory. */
int idset_add(struct idset *s, const char *id, size_t len, int value);
/* 1 when ID is in the set, its value then in *VALUE (may be NULL); 0 when
 * it is not. */
int idset_get(const struct idset *s, const char *id, size_t len, int *value);
size_t idset_count(const struct idset *s);
/* NULL is a no-op. */
void idset_free(struct idset *s);

#endif
