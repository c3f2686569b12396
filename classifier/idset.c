/* idset.c - see idset.h. Slots hold the hash and the id's offset in the
 * arena; the table doubles at 50% load. */
#include "idset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

struct slot {
    uint64_t hash; /* 0: empty */
    size_t off;    /* id bytes at arena + off, NUL-terminated */
    size_t len;
    int value;
};

struct idset {
    struct slot *slots;
    size_t cap, count;
    struct buf arena;
};

static uint64_t hash_of(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

struct idset *idset_new(void)
{
    struct idset *s = calloc(1, sizeof *s);
    if (s && !(s->slots = calloc(s->cap = 1024, sizeof *s->slots))) {
        free(s);
        return NULL;
    }
    return s;
}

static struct slot *find(const struct idset *s, uint64_t h, const char *id, size_t len)
{
    size_t i = h & (s->cap - 1);
    for (;; i = (i + 1) & (s->cap - 1)) {
        struct slot *sl = &s->slots[i];
        if (!sl->hash ||
            (sl->hash == h && sl->len == len && memcmp(s->arena.data + sl->off, id, len) == 0))
            return sl;
    }
}

static int grow(struct idset *s)
{
    struct slot *old = s->slots;
    size_t oldcap = s->cap;
    struct slot *slots = calloc(oldcap * 2, sizeof *slots);
    if (!slots)
        return -1;
    s->slots = slots;
    s->cap = oldcap * 2;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].hash)
            continue;
        size_t j = old[i].hash & (s->cap - 1);
        while (s->slots[j].hash)
            j = (j + 1) & (s->cap - 1);
        s->slots[j] = old[i];
    }
    free(old);
    return 0;
}

int idset_add(struct idset *s, const char *id, size_t len, int value)
{
    uint64_t h = hash_of(id, len);
    struct slot *sl = find(s, h, id, len);
    if (sl->hash)
        return 0;
    if ((s->count + 1) * 2 > s->cap) {
        if (grow(s) < 0)
            return -1;
        sl = find(s, h, id, len);
    }
    size_t off = s->arena.len;
    if (buf_append(&s->arena, id, len) < 0 || buf_append(&s->arena, "", 1) < 0)
        return -1;
    *sl = (struct slot){h, off, len, value};
    s->count++;
    return 1;
}

int idset_get(const struct idset *s, const char *id, size_t len, int *value)
{
    const struct slot *sl = find(s, hash_of(id, len), id, len);
    if (!sl->hash)
        return 0;
    if (value)
        *value = sl->value;
    return 1;
}

size_t idset_count(const struct idset *s)
{
    return s->count;
}

void idset_free(struct idset *s)
{
    if (!s)
        return;
    free(s->slots);
    buf_free(&s->arena);
    free(s);
}
