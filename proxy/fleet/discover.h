/* discover.h - model discovery: every models.refresh_s (and at start) each
 * backend is asked GET /api/tags (installed: where a model can run) and
 * then GET /api/ps (loaded: where it runs without a load). These calls are
 * cheap for Ollama (served from memory) and do not take a slot. A backend
 * that does not answer keeps what it said last; one that never answered
 * serves anything (CONTRACT.md, Routing). */
#ifndef PX_DISCOVER_H
#define PX_DISCOVER_H

#include <stddef.h>

struct proxy;
struct backend;
struct evbuffer;
struct json_t;

/* Bounds on what a backend may answer: 4 MiB and 10,000 models (Ollama's
 * /api/tags is about 1 KiB a model). A larger answer is ignored. */
#define DISCOVER_MAX_BYTES (4 * 1024 * 1024)
#define DISCOVER_MAX_MODELS 10000

/* Start polling (one poll at once per backend). Returns 0 or -1. */
int discover_start(struct proxy *px);

/* Parse an answer of /api/tags or /api/ps, {"models":[{"name":...},...]},
 * BODY[0..LEN), into a new model list (names that name_key() refuses are
 * left out), and the "models" array itself into *ARRAY (a new reference;
 * [] for null). NULL (and *ARRAY NULL) when malformed or over the bounds.
 * The caller frees both (model_list_free, json_decref). */
struct model_list *discover_parse(const char *body, size_t len, struct json_t **array);

/* Poll BE now (after a pull, a delete...): at once, or again as soon as the
 * poll in flight ends. */
void discover_refresh(struct proxy *px, struct backend *be);

/* BE joins the fleet or comes back up: it is asked at once, and takes no
 * request for a model until it has answered (backend.h, models_pending). */
void discover_rejoin(struct proxy *px, struct backend *be);

/* BE's answer to /api/ps (BODY) as its loaded models now: 0, or -1 when
 * malformed (nothing changed). */
int discover_set_ps(struct backend *be, struct evbuffer *body);

/* Stop polling; NULL-safe on a proxy that never started. */
void discover_stop(struct proxy *px);

#endif
