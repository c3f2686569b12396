/* auth.h - keys, admin rights and who a request is charged to
 * (CONTRACT.md, "Keys, priorities and fair sharing").
 *
 * With auth.keys set, a request needs a known key unless its endpoint is
 * open (router.h); a non-admin key gets 403 on an admin endpoint. A key is
 * read from "Authorization: Bearer KEY", "x-api-key: KEY" or the password
 * of "Authorization: Basic" (every client's spelling). Keys are
 * compared in constant time and never logged (the log names the key). A
 * client is a key by its name, else the value of the trusted
 * auth.client_header, else the connecting address. */
#ifndef PX_AUTH_H
#define PX_AUTH_H

struct proxy;
struct px_config;
struct request;
struct sched_client;

#define AUTH_ANSWERED (-2)

/* Check R's key for an endpoint that is ADMIN and/or OPEN. Returns the
 * key's row of auth.keys, -1 when no key is needed (no keys configured, or
 * an open endpoint), or AUTH_ANSWERED after answering 401 or 403. Sets
 * R's client name for the log. */
int auth_check(struct proxy *px, struct request *r, int admin, int open);

/* A request with the values AUTHORIZATION and XKEY of those headers
 * (NULL: absent), for an endpoint that is ADMIN and not open, would be
 * answered 401 or 403 by auth_check: 1, else 0 (the router's gate on
 * heads, before a body is read). */
int auth_refuses(const struct px_config *cfg, const char *authorization, const char *xkey,
                 int admin);

/* The scheduler's client of R with key row KEY (-1: none); NULL when out
 * of memory. */
struct sched_client *auth_client(struct proxy *px, struct request *r, int key);

#endif
