/* idset.h - a set of item ids (their JSON text), the only memory that grows
 * with the input: the ids already labelled in the results file. Open
 * addressing over an arena of the id bytes. */
#ifndef CLS_IDSET_H
#define CLS_IDSET_H

#include <stddef.h>

struct idset;

struct idset *idset_new(void);
/* Add ID (LEN bytes). Returns 1 if added, 0 if it was there, -1 no memory. */
int idset_add(struct idset *s, const char *id, size_t len);
/* 1 when ID is in the set. */
int idset_has(const struct idset *s, const char *id, size_t len);
size_t idset_count(const struct idset *s);
/* NULL is a no-op. */
void idset_free(struct idset *s);

#endif
