/* numkey.h - the last number a response gives one member name, read as
 * the bytes pass (the shape of tokscan.h, for one key of our choosing).
 *
 * The proxy reads "load_duration" out of Ollama's native replies with it:
 * a reply that spent 100 ms or more loading its model is a (re)load seen
 * (CONTRACT.md, "Conversations stay warm"). A key is only seen as a JSON
 * member name followed by ':' (inside a string it is escaped, \"...\":,
 * and does not count), across chunk boundaries, with no buffering. */
#ifndef PX_NUMKEY_H
#define PX_NUMKEY_H

#include <stddef.h>

#define NUMKEY_MAX 30 /* the longest member name, its quotes included */

struct numkey {
    const char *key; /* "\"name\"": borrowed, static */
    unsigned char klen;
    char tail[NUMKEY_MAX]; /* the last bytes fed, for a key a chunk's end cuts */
    unsigned char ntail;
    unsigned char in_num, digits;
    long long cur, last; /* the number being read; the last one read (-1: none) */
};

/* Watch for KEY, the member name with its quotes ("\"load_duration\"",
 * at most NUMKEY_MAX bytes). */
void numkey_init(struct numkey *t, const char *key);

/* Feed the next N bytes of the body. */
void numkey_feed(struct numkey *t, const char *p, size_t n);

/* The last value seen (a number still being read at the end counts), -1
 * when none was. */
long long numkey_value(struct numkey *t);

#endif
