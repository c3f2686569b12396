/* reply.h - the answers the proxy writes itself: errors in the shape of the
 * path's API (request.h, enum dialect), JSON documents, and the write of
 * any whole reply in this pass of the event loop.
 *
 * Every function here records what it sent (status, body bytes) in the
 * request's head, which the one record (reqlog.h) reads at the end. */
#ifndef PX_REPLY_H
#define PX_REPLY_H

#include <event2/http.h>
#include <stddef.h>

#include "wire.h"

struct request;
struct evbuffer;
struct json_t;

/* "GET", "POST", ... (a static string). */
const char *reply_method(enum evhttp_cmd_type cmd);

/* EVREQ's client address ("unknown" if gone) into OUT. */
void reply_peer(struct evhttp_request *evreq, char *out, size_t len);

/* Write what evhttp has just queued on EVCON in this pass of the event
 * loop instead of the next: evhttp writes only from its write event, which
 * would cost two epoll_ctl calls and a loop pass per reply and per streamed
 * chunk. NULL is a no-op. */
void reply_flush(struct evhttp_connection *evcon);

/* Send R's whole reply: STATUS and BODY (NULL: none, typed text/plain
 * unless a type is set; drained), headers as already set on the request;
 * written in this pass of the loop. */
void reply_send(struct request *r, int status, struct evbuffer *body);

/* An error the proxy made itself, in R's dialect: Ollama's
 * {"error":"MSG"}, OpenAI's {"error":{"message":..,"type":..}} or
 * Anthropic's {"type":"error","error":{"type":..,"message":..}}, the type
 * from STATUS. RETRY_AFTER > 0 adds a Retry-After header. */
void reply_error(struct request *r, int status, const char *msg, int retry_after);

/* The CORS headers of an answer to an allowed Origin (R->cors; see
 * front/cors.h), on R's reply headers; nothing when R->cors is not set. A
 * carrier that clears the reply headers (a retry) calls it again. */
void reply_cors(struct request *r);

/* STATUS with the JSON text of O (its reference is taken; NULL, or a text
 * jansson cannot encode: 500). HEAD gets the headers only. */
void reply_json(struct request *r, int status, struct json_t *o);

/* The body of an error in DIALECT into B, without the reply. */
void reply_error_body(struct evbuffer *b, int dialect, int status, const char *msg);

/* An error inside a reply that has started, into B, framed as WIRE says,
 * so that the client's own library reports it (the stream is ended right
 * after it):
 *   NDJSON     {"error":"MSG"}\n                          (Ollama's)
 *   OpenAI     data: {"error":{"message":"MSG",...}}\n\n  (the SDKs throw on it)
 *   Responses  event: response.failed, the response failed with
 *              error {"code":"server_error","message":"MSG"} (Ollama's),
 *              sequence_number SEQ + 1 (SEQ: the stream's last, -1 none)
 *   Anthropic  event: error, {"type":"error","error":{"type":"api_error",...}}
 * MODEL (NULL: none) goes in the failed response. */
void reply_stream_error(struct evbuffer *b, enum wire_format wire, const char *msg,
                        const char *model, long long seq);

#endif
