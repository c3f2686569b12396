/* names.h - Ollama model names: normalisation and matching.
 *
 * Ollama treats "llama3", "llama3:latest", "library/llama3:latest" and
 * "registry.ollama.ai/library/llama3:latest" as one model, case-insensitively
 * (ollama-api.md section 6). Every program of the project compares names
 * through name_key() so that they agree on what "the same model" means. */
#ifndef OP_NAMES_H
#define OP_NAMES_H

#include <stddef.h>

/* Longest key name_key() writes, terminator included. */
#define NAME_KEY_MAX 600

/* Write the canonical key of NAME into OUT (OUTLEN bytes): host/ns/model:tag,
 * lowercased, with the defaults filled in (registry.ollama.ai, library,
 * latest) and leading/trailing blanks trimmed. Returns 0, or -1 when NAME is
 * empty, has a blank inside, or does not fit (OUT is then ""). */
int name_key(const char *name, char *out, size_t outlen);

/* Write the display form of NAME (what /api/tags shows: "llama3:latest",
 * "ns/model:tag", or the full name for another host) into OUT.
 * Returns 0 or -1 as name_key(). */
int name_display(const char *name, char *out, size_t outlen);

/* 1 when A and B name the same model, else 0. */
int name_same(const char *a, const char *b);

#endif
