/* cors.h - web pages on other origins (CONTRACT.md, "Headers"): the
 * proxy, not its backends, decides which may call it, from cors_origins.
 *
 * Ollama answers a request whose Origin it does not allow with 403, and
 * the proxy never forwards Origin (upstream/reqtext.c), so the rule is
 * kept here, for the fleet:
 *   no Origin, or the proxy's own (Origin's host:port is the Host header:
 *     the status page)                            as if none
 *   a preflight (OPTIONS with Access-Control-Request-Method)
 *     from an allowed origin                      204 with the CORS headers
 *                                                 (the request headers the
 *                                                 SDKs send: Authorization,
 *                                                 x-api-key, anthropic-*,
 *                                                 OpenAI-*, x-stainless-*...)
 *     from another                                403, no CORS headers
 *   a request from an allowed origin              served; its answer carries
 *                                                 Access-Control-Allow-Origin
 *   a request from another origin                 403 (as Ollama: a page
 *                                                 elsewhere cannot make the
 *                                                 browser pull or delete)
 * cors_origins lists origins ("https://chat.example.com"); '*' in one
 * matches any run of characters ("http://localhost:*", or "*": any).
 * Default: none. Preflights need no key (browsers send none). */
#ifndef PX_CORS_H
#define PX_CORS_H

struct proxy;
struct request;

/* Check R's Origin. Returns 1 when R has been answered here (a preflight,
 * or a refused origin), else 0 (R->cors set when its answer must carry
 * the CORS headers: reply.h, reply_cors). */
int cors_check(struct proxy *px, struct request *r);

#endif
