/* discover.h - model discovery: every models.refresh_s (and at start) each
 * backend is asked GET /api/tags (installed: where a model can run) and
 * then GET /api/ps (loaded: where it runs without a load). These calls are
 * cheap for Ollama (served from memory) and do not take a slot. A backend
 * that does not answer keeps what it said last; one that never answered
 * serves anything (CONTRACT.md, Routing). */
#ifndef PX_DISCOVER_H
#define PX_DISCOVER_H

struct proxy;

/* Start polling (one poll at once per backend). Returns 0 or -1. */
int discover_start(struct proxy *px);

/* Stop polling; NULL-safe on a proxy that never started. */
void discover_stop(struct proxy *px);

#endif
