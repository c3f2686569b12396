/* catalog.h - the fleet's own answers to Ollama's listing endpoints, built
 * from what model discovery (discover.c) last heard from each healthy
 * backend (CONTRACT.md, "Fleet endpoints answered by the proxy itself"):
 *   GET /api/tags   the union of the models, one entry per name, newest first
 *   GET /api/ps     every backend's loaded models, one entry per (model,
 *                   backend), each with an added "backend" field
 *   GET /v1/models  the union in OpenAI's shape
 * GET /api/version is proxied to a backend like any request. */
#ifndef PX_CATALOG_H
#define PX_CATALOG_H

struct proxy;
struct evhttp_request;

/* Answer REQ if PATH is one of the above and some backend's models are
 * known; returns 1 if it answered, 0 to let the request be proxied. */
int catalog_reply(struct proxy *px, struct evhttp_request *req, const char *path);

/* 1 when some usable backend's models are known (catalog_reply answers). */
int catalog_known(struct proxy *px);

#endif
