/* capstate.h - adaptive caps survive a restart. With `state_file` set, the
 * knee each adaptive (backend, model) found is kept in that file: written a
 * few seconds after a knee changes (a temporary file renamed over it, so a
 * crash leaves the old file or the new one, never half of one) and at
 * exit; read at start, so that a runner starts at the knee saved for its
 * backend's name and url and its model (adapt_resume) instead of climbing
 * from 1 (the first job after a restart ran at 13.7x instead of 21.6x for
 * about 90 s). A saved knee is used once per process: a reload that
 * changes a ceiling finds the cap again as before. A missing file is a
 * first start; an unreadable or malformed one is logged and ignored, and
 * written anew. Knees of runners not used since the start are kept.
 *
 * The file, JSON:
 *   {"version":1,"saved":"2026-12-07T04:00:00Z",
 *    "knees":[{"backend":"gpu0","url":"http://127.0.0.1:11435",
 *              "model":"llama3:latest","knee":16}, ...]} */
#ifndef PX_CAPSTATE_H
#define PX_CAPSTATE_H

#include <stddef.h>

struct proxy;
struct backend;

#define CAPSTATE_WRITE_S 5.0   /* how often a change is looked for */
#define CAPSTATE_MAX_BYTES (1 << 20)
#define CAPSTATE_MAX_KNEES 10000

/* Read px->cfg->state_file (if set) and start looking for changes. Returns
 * 0, or -1 when out of memory. */
int capstate_start(struct proxy *px);

/* The knee saved for BE's runner of the model KEY, once (0: none, or
 * already used). */
int capstate_knee(struct proxy *px, const struct backend *be, const char *key);

/* A reload: the file may be another (the next write goes there). */
void capstate_settings(struct proxy *px);

/* Write the file once more (when it changed) and free; NULL-safe on a
 * proxy that never started. */
void capstate_stop(struct proxy *px);

/* The file's text for what PX runs now (and the saved knees not yet
 * used), NUL-terminated, malloc'd; NULL when out of memory. For tests. */
char *capstate_text(struct proxy *px);

#endif
