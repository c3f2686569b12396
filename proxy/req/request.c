/* request.c - see request.h. */
#include "request.h"

#include <event2/http.h>
#include <string.h>

#include "backend.h"
#include "net.h"
#include "reply.h"

void request_init(struct request *r, struct evhttp_request *evreq, const char *path)
{
    memset(r, 0, sizeof *r);
    r->req = evreq;
    r->method = reply_method(evhttp_request_get_command(evreq));
    net_copy(r->path, sizeof r->path, path, NULL);
    reply_peer(evreq, r->addr, sizeof r->addr);
    r->tokens = -1;
    r->prompt_tokens = -1;
    r->t_start = net_now_ms();
}

void request_set_model(struct request *r, const char *model)
{
    net_copy(r->model, sizeof r->model, model, NULL);
    if (!model || name_key(r->model, r->mkey, sizeof r->mkey) < 0)
        r->mkey[0] = '\0';
}

void request_set_backend(struct request *r, struct backend *be)
{
    if (be == r->be)
        return;
    if (be)
        backend_ref(be);
    if (r->be)
        backend_unref(r->be);
    r->be = be;
}

void request_cleanup(struct request *r)
{
    request_set_backend(r, NULL);
}
