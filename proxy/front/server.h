/* server.h - the client side: the evhttp server, the proxy's own endpoints
 * and its error replies. */
#ifndef PX_SERVER_H
#define PX_SERVER_H

#include <event2/http.h>
#include <stddef.h>

struct proxy;
struct evhttp_request;
struct evhttp_connection;
struct evbuffer;
struct json_t;

/* "GET", "POST", ... */
const char *server_method_name(enum evhttp_cmd_type cmd);

/* REQ's client address ("unknown" if gone) into OUT. */
void server_peer(struct evhttp_request *req, char *out, size_t len);

/* Listen on cfg->listen and serve. Returns 0, or -1 after logging why. */
int server_start(struct proxy *px);

/* Stop accepting new connections (drain); connections open stay served. */
void server_stop_accepting(struct proxy *px);

/* Free the evhttp server and every client connection; NULL-safe. */
void server_free(struct proxy *px);

/* Write what evhttp has just queued on EVCON in this pass of the event
 * loop instead of the next: evhttp writes only from its write event, which
 * would cost two epoll_ctl calls and a loop pass per reply and per streamed
 * chunk. NULL is a no-op. */
void server_flush(struct evhttp_connection *evcon);

/* evhttp_send_reply(), and written in this pass of the loop (server_flush). */
void server_send_reply(struct evhttp_request *req, int status, const char *reason,
                       struct evbuffer *body);

/* Answer REQ with STATUS and the JSON text of O (a reference taken; NULL
 * or a text jansson cannot encode: 500). */
void server_reply_json(struct evhttp_request *req, int status, struct json_t *o);

/* Answer REQ with an error the proxy made itself: {"error":"MSG"}, or the
 * OpenAI shape when V1. RETRY_AFTER > 0 adds a Retry-After header. */
void server_reply_error(struct evhttp_request *req, int v1, int status, const char *msg,
                        int retry_after);

#endif
