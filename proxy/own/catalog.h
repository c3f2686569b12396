/* catalog.h - the fleet's own answers to Ollama's listing endpoints, built
 * from what model discovery (discover.c) last heard from each healthy
 * backend (CONTRACT.md, "Fleet endpoints answered by the proxy itself"):
 *   GET /api/tags   the union of the models, one entry per name, newest first
 *   GET /api/ps     every backend's loaded models, one entry per (model,
 *                   backend), each with an added "backend" field
 *   GET /v1/models  the union in OpenAI's shape
 *   GET /v1/models/M  its entry, or 404 in OpenAI's shape
 *   GET /api/version  what a backend said to its last health check
 * None of them takes a GPU slot or waits. With no backend in service they
 * answer from what the backends said last, with the header
 * CATALOG_STALE_HEADER (and /api/ps with no model), or 503 at once when
 * nothing was ever heard. The union behind /api/tags and /v1/models is
 * kept built, and rebuilt only when the fleet's models change (catalog.c). */
#ifndef PX_CATALOG_H
#define PX_CATALOG_H

struct proxy;
struct request;

#define CATALOG_STALE_HEADER "X-Proxy-Stale"

/* Answer REQ if PATH is one of the above: 1 if it answered, else 0. */
int catalog_reply(struct proxy *px, struct request *r, const char *path);

/* Free the kept union (proxy_stop). Replies still being sent keep their
 * text until sent. */
void catalog_free(struct proxy *px);

/* 1 when some backend in service has said what models it has. */
int catalog_known(struct proxy *px);

#endif
