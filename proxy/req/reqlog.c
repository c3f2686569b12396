/* reqlog.c - see reqlog.h. */
#include "reqlog.h"

#include <string.h>

#include "accesslog.h"
#include "backend.h"
#include "config.h"
#include "metrics.h"
#include "net.h"
#include "proxy.h"
#include "request.h"
#include "ui.h"

static void log_line(const struct request *r, const char *outcome, double now)
{
    struct accesslog_entry a = {0};
    a.method = r->method;
    a.path = r->path;
    a.client = r->client[0] ? r->client : NULL;
    a.addr = r->addr;
    a.model = request_model(r);
    a.backend = r->be ? r->be->name : r->backend_label;
    a.status = r->status;
    a.wait_ms = (r->t_dispatch ? r->t_dispatch : now) - r->t_start;
    a.ttfb_ms = r->t_head ? r->t_head - r->t_try : -1;
    a.upstream_ms = r->t_dispatch ? now - r->t_dispatch : 0;
    a.bytes = r->bytes;
    a.tokens = r->tokens;
    a.prompt_tokens = r->prompt_tokens;
    a.tokens_estimated = r->tokens_estimated;
    a.tries = r->tries;
    a.outcome = outcome;
    accesslog_write(&a);
}

static void count(struct proxy *px, const struct request *r, int gone, double now)
{
    struct backend *be = r->be;
    struct metrics_tokens tok = {r->tokens, r->prompt_tokens, r->tokens_estimated};
    metrics_request(px, be, request_model(r), request_mkey(r), r->status, &tok);
    if (r->queued) /* the proxy's own answers and fan-outs wait for nothing */
        metrics_observe(&px->metrics.queue_wait,
                        ((r->t_dispatch ? r->t_dispatch : now) - r->t_start) / 1000.0);
    if (be && r->t_head)
        metrics_observe(&be->h_first_byte, (r->t_head - r->t_try) / 1000.0);
    if (be)
        metrics_observe(&be->h_upstream, (now - r->t_try) / 1000.0);
    if (gone)
        px->metrics.cancelled++;
}

/* How R went, for adaptive caps: only a 2xx whose body is no error is a
 * success; "too busy" (503, 429) is overload (adapt.h). */
static int adapt_outcome_of(const struct request *r, const char *outcome)
{
    if (r->status == 503 || r->status == 429)
        return ADAPT_OVERLOAD;
    if (r->status >= 200 && r->status < 300 && !r->error_body && !strcmp(outcome, "ok"))
        return ADAPT_OK;
    return ADAPT_FAILED;
}

void reqlog_end(struct proxy *px, const struct request *r, const char *outcome)
{
    double now = net_now_ms();
    int gone = strcmp(outcome, "client-gone") == 0;
    if (!config_skip_path(px->cfg, r->path)) /* logging.skip_paths: probes */
        log_line(r, outcome, now);
    count(px, r, gone, now);
    ui_request_ended(px, r->be, r->status, r->path, outcome, r->tokens, r->prompt_tokens);
    /* What a backend served teaches its adaptive cap; metadata never ran on
     * the GPU, and a client that left says nothing of the backend. */
    if (r->be && !r->meta)
        backend_count_tokens(r->be, request_mkey(r), r->tokens, r->prompt_tokens);
    if (r->be && !r->meta && !gone)
        backend_feedback(r->be, request_mkey(r), r->tokens, adapt_outcome_of(r, outcome),
                         r->loaded, now);
}
