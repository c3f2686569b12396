/* reply.c - see reply.h. */
#include "reply.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jout.h"
#include "net.h"
#include "request.h"

const char *reply_method(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    }
    return "GET";
}

void reply_peer(struct evhttp_request *evreq, char *out, size_t len)
{
    char *peer = NULL;
    ev_uint16_t port;
    struct evhttp_connection *evcon = evreq ? evhttp_request_get_connection(evreq) : NULL;
    if (evcon)
        evhttp_connection_get_peer(evcon, &peer, &port);
    net_copy(out, len, peer ? peer : "unknown", NULL);
}

void reply_flush(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    /* Run the bufferevent's own write callback now, as if the socket had
     * been reported writable: it writes, and if all is written it deletes
     * the write event in the same pass, which the epoll changelist then
     * never sends to the kernel; on EAGAIN it simply stays armed. */
    if (bev && evbuffer_get_length(bufferevent_get_output(bev)) &&
        event_pending(&bev->ev_write, EV_WRITE, NULL))
        event_active(&bev->ev_write, EV_WRITE, 1);
}

void reply_send(struct request *r, int status, struct evbuffer *body)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    r->status = status;
    if (body && evhttp_request_get_command(r->req) == EVHTTP_REQ_HEAD)
        evbuffer_drain(body, evbuffer_get_length(body)); /* a HEAD's answer has none */
    r->bytes = body ? evbuffer_get_length(body) : 0;
    /* An empty reply is no JSON: not the listener's default type (evhttp
     * types none for 204 and 304). */
    if (!body && status != 204 && status != 304 && !evhttp_find_header(h, "Content-Type"))
        evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    /* libevent names no status past 505, nor 431: "Server Error" else */
    evhttp_send_reply(r->req, status,
                      status == 508   ? "Loop Detected"
                      : status == 431 ? "Request Header Fields Too Large"
                                      : NULL,
                      body);
    reply_flush(evcon);
}

/* The "type" of an error of STATUS in DIALECT. */
static const char *error_type(int dialect, int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return dialect == DIALECT_ANTHROPIC ? "request_too_large" : "invalid_request_error";
    case 414: case 431: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return dialect == DIALECT_ANTHROPIC ? "overloaded_error" : "api_error";
    }
    return "api_error";
}

void reply_error_body(struct evbuffer *b, int dialect, int status, const char *msg)
{
    /* Written by hand, not with jansson: MSG may quote bytes a client sent
     * (a model name), which need not be UTF-8 (jout.h). */
    if (dialect == DIALECT_OPENAI) {
        evbuffer_add(b, "{\"error\":{\"message\":", 20);
        jout_cstring(b, msg);
        evbuffer_add_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":null}}",
                            error_type(dialect, status));
    } else if (dialect == DIALECT_ANTHROPIC) {
        evbuffer_add_printf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
                            error_type(dialect, status));
        jout_cstring(b, msg);
        evbuffer_add(b, "}}", 2);
    } else {
        evbuffer_add(b, "{\"error\":", 9);
        jout_cstring(b, msg);
        evbuffer_add(b, "}", 1);
    }
}

/* A string literal into B. */
#define ADD_LIT(b, s) evbuffer_add(b, s, sizeof s - 1)

void reply_stream_error(struct evbuffer *b, enum wire_format wire, const char *msg,
                        const char *model, long long seq)
{
    switch (wire) {
    case WIRE_OPENAI:
        ADD_LIT(b, "data: ");
        reply_error_body(b, DIALECT_OPENAI, 500, msg);
        ADD_LIT(b, "\n\n");
        return;
    case WIRE_ANTHROPIC:
        ADD_LIT(b, "event: error\ndata: ");
        reply_error_body(b, DIALECT_ANTHROPIC, 500, msg);
        ADD_LIT(b, "\n\n");
        return;
    case WIRE_RESPONSES:
        evbuffer_add_printf(b, "event: response.failed\ndata: {\"type\":\"response.failed\","
                               "\"sequence_number\":%lld,\"response\":{\"id\":\"resp_proxy\","
                               "\"object\":\"response\",\"status\":\"failed\",\"model\":",
                            seq + 1);
        if (model)
            jout_cstring(b, model);
        else
            ADD_LIT(b, "null");
        ADD_LIT(b, ",\"output\":[],\"error\":{\"code\":\"server_error\",\"message\":");
        jout_cstring(b, msg);
        ADD_LIT(b, "}}}\n\n");
        return;
    default:
        reply_error_body(b, DIALECT_OLLAMA, 500, msg);
        ADD_LIT(b, "\n");
    }
}

void reply_error(struct request *r, int status, const char *msg, int retry_after)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    struct evbuffer *b = evbuffer_new();
    char ra[16];
    if (!b) { /* out of memory: the status alone still tells the client */
        reply_send(r, status, NULL);
        return;
    }
    reply_error_body(b, (int)r->dialect, status, msg);
    evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
    if (retry_after > 0) {
        snprintf(ra, sizeof ra, "%d", retry_after);
        evhttp_add_header(h, "Retry-After", ra);
    }
    reply_send(r, status, b);
    evbuffer_free(b);
}

void reply_cors(struct request *r)
{
    struct evkeyvalq *h;
    const char *origin;
    if (!r->cors || !r->req)
        return;
    origin = evhttp_find_header(evhttp_request_get_input_headers(r->req), "Origin");
    if (!origin)
        return;
    h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Access-Control-Allow-Origin", origin);
    evhttp_add_header(h, "Access-Control-Expose-Headers", "X-Backend, Retry-After, X-Proxy-Stale");
    evhttp_add_header(h, "Vary", "Origin");
}

void reply_json(struct request *r, int status, json_t *o)
{
    struct evbuffer *b;
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!text || !(b = evbuffer_new())) { /* a string not UTF-8, or out of memory */
        free(text);
        reply_error(r, 500, "cannot encode the answer", 0);
        return;
    }
    if (evhttp_request_get_command(r->req) != EVHTTP_REQ_HEAD)
        evbuffer_add(b, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "application/json; charset=utf-8");
    reply_send(r, status, b);
    evbuffer_free(b);
    free(text);
}
