/* request.c - see request.h. */
#include "request.h"

#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "net.h"
#include "reply.h"

void request_init(struct request *r, struct evhttp_request *evreq, const char *path)
{
    /* Field by field: zeroing the whole head (its buffers) on every
     * request costs more than all the rest of this. */
    r->req = evreq;
    r->dialect = 0;
    r->wire = 0;
    r->method = reply_method(evhttp_request_get_command(evreq));
    net_copy(r->path, sizeof r->path, path, NULL);
    reply_peer(evreq, r->addr, sizeof r->addr);
    r->client[0] = r->model_buf[0] = r->mkey_buf[0] = '\0';
    r->model_heap = r->mkey_heap = NULL;
    r->be = NULL;
    r->backend_label = NULL;
    r->status = 0;
    r->bytes = 0;
    r->tokens = -1;
    r->prompt_tokens = -1;
    r->tries = 0;
    r->t_start = net_now_ms();
    r->t_dispatch = r->t_try = r->t_head = 0;
    r->meta = r->queued = r->error_body = 0;
    r->tokens_estimated = r->cors = 0;
}

/* S (length N) into BUF if it fits, else a heap copy in *HEAP. */
static int keep(const char *s, size_t n, char *buf, size_t len, char **heap)
{
    if (n < len) {
        memcpy(buf, s, n + 1);
        return 0;
    }
    buf[0] = '\0';
    return (*heap = strdup(s)) ? 0 : -1;
}

int request_set_model(struct request *r, const char *model)
{
    char key[NAME_KEY_MAX];
    free(r->model_heap);
    free(r->mkey_heap);
    r->model_heap = r->mkey_heap = NULL;
    r->model_buf[0] = r->mkey_buf[0] = '\0';
    if (!model)
        return 0;
    if (keep(model, strlen(model), r->model_buf, sizeof r->model_buf, &r->model_heap) < 0)
        return -1;
    if (name_key(model, key, sizeof key) < 0) /* not a name: routed to any backend */
        return 0;
    return keep(key, strlen(key), r->mkey_buf, sizeof r->mkey_buf, &r->mkey_heap);
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
    request_set_model(r, NULL);
}
