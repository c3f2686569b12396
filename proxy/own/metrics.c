/* metrics.c - see metrics.h. */
#include "metrics.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "config.h"
#include "dnsfleet.h"
#include "fleet.h"
#include "names.h"
#include "net.h"
#include "proxy.h"
#include "reply.h"
#include "request.h"
#include "sched.h"
#include "textout.h"

/* Seconds: from a fast answer to a long generation. */
static const double bounds[METRICS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                               2.5,   5,    10,    30,   60,  120, 300, 600};

/* The token rows of a (backend, model) beside its rows by status code. */
enum { ROW_GENERATED = 0, ROW_PROMPT = -1, ROW_ESTIMATED = -2 };

struct metrics_row {
    unsigned hash;
    int code; /* a status code, or a token row of (backend, model): ROW_* */
    unsigned long long n;
    char *backend, *model;
};

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof *m);
}

void metrics_cleanup(struct metrics *m)
{
    for (unsigned i = 0; i < m->size; i++)
        if (m->tab[i]) {
            free(m->tab[i]->backend);
            free(m->tab[i]->model);
            free(m->tab[i]);
        }
    free(m->tab);
    memset(m, 0, sizeof *m);
}

void metrics_observe(struct histogram *h, double seconds)
{
    int i = 0;
    while (i < METRICS_BUCKETS && seconds > bounds[i])
        i++;
    h->count[i]++;
    h->sum += seconds;
}

static unsigned hash_of(const char *backend, const char *model, int code)
{
    unsigned h = 2166136261u;
    for (const char *p = backend; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *p = model; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return (h ^ (unsigned)code) * 16777619u;
}

static int grow(struct metrics *m)
{
    unsigned size = m->size ? 2 * m->size : 64;
    struct metrics_row **tab = calloc(size, sizeof *tab);
    if (!tab)
        return -1;
    for (unsigned i = 0; i < m->size; i++)
        if (m->tab[i]) {
            unsigned j = m->tab[i]->hash & (size - 1);
            while (tab[j])
                j = (j + 1) & (size - 1);
            tab[j] = m->tab[i];
        }
    free(m->tab);
    m->tab = tab;
    m->size = size;
    return 0;
}

static struct metrics_row *row(struct metrics *m, const char *backend, const char *model,
                               int code)
{
    unsigned h = hash_of(backend, model, code), j;
    struct metrics_row *r;
    if (2 * (m->n + 1) > m->size && grow(m) < 0)
        return NULL;
    for (j = h & (m->size - 1); (r = m->tab[j]); j = (j + 1) & (m->size - 1))
        if (r->hash == h && r->code == code && !strcmp(r->backend, backend) &&
            !strcmp(r->model, model))
            return r;
    if (!(r = calloc(1, sizeof *r)) || !(r->backend = strdup(backend)) ||
        !(r->model = strdup(model))) {
        if (r)
            free(r->backend);
        free(r);
        return NULL;
    }
    r->hash = h;
    r->code = code;
    m->tab[j] = r;
    m->n++;
    return r;
}

/* The model label, bounded by what the backends list: their display form
 * of KEY, "other" for a name none lists (or no valid name), "" for none. */
static const char *model_label(struct proxy *px, const struct backend *be, const char *model,
                               const char *key)
{
    const char *l = NULL;
    if (!model)
        return "";
    if (!key)
        return "other";
    if (be)
        l = model_list_label(be->models, key);
    for (int i = 0; !l && i < px->nbackends; i++)
        l = model_list_label(px->backends[i]->models, key);
    return l ? l : "other";
}

/* Add N to the row (B, ML, CODE) when N > 0. */
static void add(struct metrics *m, const char *b, const char *ml, int code, long long n)
{
    struct metrics_row *r;
    if (n > 0 && (r = row(m, b, ml, code)))
        r->n += (unsigned long long)n;
}

void metrics_request(struct proxy *px, const struct backend *backend, const char *model,
                     const char *key, int code, const struct metrics_tokens *tok)
{
    const char *b = backend ? backend->name : "none";
    const char *ml = model_label(px, backend, model, key);
    add(&px->metrics, b, ml, code, 1);
    add(&px->metrics, b, ml, ROW_GENERATED, tok->generated);
    add(&px->metrics, b, ml, ROW_PROMPT, tok->prompt);
    if (tok->estimated)
        add(&px->metrics, b, ml, ROW_ESTIMATED, tok->generated);
}

static void inum(struct textout *o, long long v)
{
    if (v < 0) {
        textout_put(o, "-", 1);
        textout_num(o, 0ULL - (unsigned long long)v);
    } else {
        textout_num(o, (unsigned long long)v);
    }
}

/* A label value: backslash, quote and newline escaped; runs of plain
 * characters copied at once. */
static void label(struct textout *o, const char *v)
{
    while (*v) {
        size_t k = strcspn(v, "\\\"\n");
        textout_put(o, v, k);
        v += k;
        if (*v) {
            textout_put(o, *v == '\n' ? "\\n" : *v == '"' ? "\\\"" : "\\\\", 2);
            v++;
        }
    }
}

static void head(struct textout *o, const char *name, const char *type, const char *help)
{
    textout_str(o, "# HELP ");
    textout_str(o, name);
    textout_put(o, " ", 1);
    textout_str(o, help);
    textout_str(o, "\n# TYPE ");
    textout_str(o, name);
    textout_put(o, " ", 1);
    textout_str(o, type);
    textout_put(o, "\n", 1);
}

/* The bucket bounds as Prometheus prints them (%g of bounds[]). */
static const char *const bound_text[METRICS_BUCKETS + 1] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",   "2.5",
    "5",     "10",   "30",    "60",   "120", "300",  "600", "+Inf"};

/* NAME{backend="B",le="..."} for each bucket, then _sum and _count; B NULL:
 * no label. */
static void histogram(struct textout *o, const char *name, const char *backend,
                      const struct histogram *h)
{
    unsigned long long cum = 0;
    char sum[48];
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += h->count[i];
        textout_str(o, name);
        textout_str(o, "_bucket{");
        if (backend) {
            textout_str(o, "backend=\"");
            label(o, backend);
            textout_str(o, "\",");
        }
        textout_str(o, "le=\"");
        textout_str(o, bound_text[i]);
        textout_str(o, "\"} ");
        textout_num(o, cum);
        textout_put(o, "\n", 1);
    }
    snprintf(sum, sizeof sum, " %.6f\n", h->sum);
    for (int k = 0; k < 2; k++) {
        textout_str(o, name);
        textout_str(o, k ? "_count" : "_sum");
        if (backend) {
            textout_str(o, "{backend=\"");
            label(o, backend);
            textout_str(o, "\"}");
        }
        if (k) {
            textout_put(o, " ", 1);
            textout_num(o, cum);
            textout_put(o, "\n", 1);
        } else {
            textout_str(o, sum);
        }
    }
}

static void backend_gauge(struct textout *o, struct proxy *px, const char *name, const char *help,
                          int which)
{
    head(o, name, "gauge", help);
    for (int i = 0; i < px->nbackends; i++) {
        const struct backend *be = px->backends[i];
        const struct adapt *why;
        /* unknown: neither 1 nor 0 until a check or a request tells, but a
         * sample all the same (NaN: "== 0" alerts stay quiet, the series exists) */
        int unknown = which == 2 && be->healthy && !be->health_known;
        int v = which == 0   ? be->in_flight
                : which == 1 ? backend_effective_cap(be, &why)
                : which == 4 ? backend_ceiling(be)
                : which == 2 ? be->healthy
                             : be->admin == ADMIN_READY;
        textout_str(o, name);
        textout_str(o, "{backend=\"");
        label(o, be->name);
        textout_str(o, "\"} ");
        if (unknown)
            textout_str(o, "NaN");
        else
            inum(o, v);
        textout_put(o, "\n", 1);
    }
    for (struct backend *be = NULL; which == 0 && (be = fleet_retired_next(px, be));) {
        textout_str(o, name);
        textout_str(o, "{backend=\"");
        label(o, be->name);
        textout_str(o, "\",retired=\"true\"} ");
        inum(o, be->in_flight);
        textout_put(o, "\n", 1);
    }
}

/* The samples of NAME: the rows of status codes (KIND 1), or the token
 * rows of KIND (ROW_*). */
static void rows(struct textout *o, struct metrics *m, const char *name, int kind)
{
    for (unsigned i = 0; i < m->size; i++) {
        const struct metrics_row *r = m->tab[i];
        if (!r || (kind == 1 ? r->code <= 0 : r->code != kind))
            continue;
        textout_str(o, name);
        textout_str(o, "{backend=\"");
        label(o, r->backend);
        textout_str(o, "\",model=\"");
        label(o, r->model);
        if (kind == 1) {
            textout_str(o, "\",code=\"");
            inum(o, r->code);
        }
        textout_str(o, "\"} ");
        textout_num(o, r->n);
        textout_put(o, "\n", 1);
    }
}

/* Adaptive backends: why the cap last changed (a state set: one sample
 * per cause, 1 for the current one) and when. */
static void adaptive_causes(struct textout *o, struct proxy *px)
{
    head(o, "ollama_proxy_backend_cap_cause", "gauge",
         "Adaptive backends: 1 for the cause of the cap's last change (start, probe_up, "
         "probe_down, grew, shrank, back), 0 for the others.");
    for (int i = 0; i < px->nbackends; i++) {
        const struct backend *be = px->backends[i];
        const struct adapt *why;
        backend_effective_cap(be, &why); /* the runner's that changed last */
        for (int c = 0; why && c < ADAPT_NCAUSES; c++) {
            textout_str(o, "ollama_proxy_backend_cap_cause{backend=\"");
            label(o, be->name);
            textout_str(o, "\",cause=\"");
            textout_str(o, adapt_cause_name[c]);
            textout_str(o, why->cause == (enum adapt_cause)c ? "\"} 1\n" : "\"} 0\n");
        }
    }
    head(o, "ollama_proxy_backend_cap_changed_timestamp_seconds", "gauge",
         "Adaptive backends: when the cap last changed (Unix time).");
    for (int i = 0; i < px->nbackends; i++) {
        const struct backend *be = px->backends[i];
        const struct adapt *why;
        backend_effective_cap(be, &why);
        if (!why)
            continue;
        textout_str(o, "ollama_proxy_backend_cap_changed_timestamp_seconds{backend=\"");
        label(o, be->name);
        textout_str(o, "\"} ");
        inum(o, (long long)why->changed_at);
        textout_put(o, "\n", 1);
    }
}

/* NAME{backend,model[,result]} V: one sample of a runner's series; a
 * retired backend's (BE->removed) with retired="true". */
static void runner_sample(struct textout *o, struct proxy *px, struct backend *be,
                          const struct runner *rn, const char *name, const char *result,
                          unsigned long long v)
{
    textout_str(o, name);
    textout_str(o, "{backend=\"");
    label(o, be->name);
    textout_str(o, "\",model=\"");
    label(o, model_label(px, be, rn->key, rn->key));
    if (result) {
        textout_str(o, "\",result=\"");
        textout_str(o, result);
    }
    if (be->removed)
        textout_str(o, "\",retired=\"true");
    textout_str(o, "\"} ");
    textout_num(o, v);
    textout_put(o, "\n", 1);
}

/* Per (backend, model), for the runners a request was sent to: affinity
 * hits and misses, (re)loads seen, in flight and the runner's cap. */
static void runners(struct textout *o, struct proxy *px)
{
    static const char *const names[] = {
        "ollama_proxy_affinity_total", "ollama_proxy_model_loads_total",
        "ollama_proxy_runner_in_flight", "ollama_proxy_runner_cap"};
    static const char *const types[] = {"counter", "counter", "gauge", "gauge"};
    static const char *const help[] = {
        "Requests with an affinity key, granted on their key's backend (hit) or another (miss).",
        "Replies that said load_duration >= 100 ms: the model was (re)loaded for them.",
        ("Requests in flight per (backend, model): the model's runner (retired=\"true\": of a "
         "retired backend, until they end)."),
        ("The cap of a model's runner on a backend (model_caps, 1 for an embedding model, or "
         "adaptive); absent: the backend's cap alone.")};
    for (int k = 0; k < 4; k++) {
        head(o, names[k], types[k], help[k]);
        for (int i = 0; i < px->nbackends; i++) {
            struct backend *be = px->backends[i];
            for (struct runner *rn = be->runners; rn; rn = rn->next) {
                int cap = runner_cap(be, rn);
                if (!rn->sent_ms)
                    continue;
                if (k == 0) {
                    runner_sample(o, px, be, rn, names[k], "hit", rn->hits);
                    runner_sample(o, px, be, rn, names[k], "miss", rn->misses);
                } else if (k == 1) {
                    runner_sample(o, px, be, rn, names[k], NULL, rn->loads);
                } else if (k == 2) {
                    runner_sample(o, px, be, rn, names[k], NULL, (unsigned long long)rn->in_flight);
                } else if (cap) {
                    runner_sample(o, px, be, rn, names[k], NULL, (unsigned long long)cap);
                }
            }
        }
        for (struct backend *be = NULL; k == 2 && (be = fleet_retired_next(px, be));)
            for (struct runner *rn = be->runners; rn; rn = rn->next)
                if (rn->in_flight > 0)
                    runner_sample(o, px, be, rn, names[k], NULL,
                                  (unsigned long long)rn->in_flight);
    }
}

/* NAME VALUE, a single sample. */
static void single(struct textout *o, const char *name, long long v)
{
    textout_str(o, name);
    textout_put(o, " ", 1);
    inum(o, v);
    textout_put(o, "\n", 1);
}

/* Per dns row of the config: its answers used as a part (truncated, TCP
 * failed). */
static void dns_truncated(struct textout *o, struct proxy *px)
{
    static const char name[] = "ollama_proxy_dns_truncated_total";
    head(o, name, "counter",
         "Answers of a dns row that were truncated and that TCP could not complete: used as a "
         "part (new addresses join, none leaves).");
    for (int i = 0; i < px->cfg->nbackends; i++) {
        const struct config_backend *cb = &px->cfg->backends[i];
        if (!cb->is_dns)
            continue;
        textout_str(o, name);
        textout_str(o, "{row=\"");
        label(o, cb->name);
        textout_str(o, "\"} ");
        textout_num(o, dnsfleet_truncated(px, cb->name, cb->url));
        textout_put(o, "\n", 1);
    }
}

void metrics_render(struct proxy *px, struct evbuffer *out)
{
    struct metrics *m = &px->metrics;
    struct textout *o = malloc(sizeof *o);
    if (!o)
        return;
    textout_init(o, out);
    head(o, "ollama_proxy_requests_total", "counter",
         "Requests ended, by the backend that served them (none: answered by the proxy), "
         "model and status code.");
    rows(o, m, "ollama_proxy_requests_total", 1);
    head(o, "ollama_proxy_generated_tokens_total", "counter",
         "Tokens generated, from each format's usage: eval_count, completion_tokens, "
         "output_tokens (estimated from deltas where an OpenAI stream has no usage).");
    rows(o, m, "ollama_proxy_generated_tokens_total", ROW_GENERATED);
    head(o, "ollama_proxy_prompt_tokens_total", "counter",
         "Prompt tokens, from each format's usage: prompt_eval_count, prompt_tokens, "
         "input_tokens.");
    rows(o, m, "ollama_proxy_prompt_tokens_total", ROW_PROMPT);
    head(o, "ollama_proxy_estimated_tokens_total", "counter",
         "The part of generated_tokens_total counted from stream deltas, not reported by the "
         "backend (OpenAI streams without stream_options.include_usage).");
    rows(o, m, "ollama_proxy_estimated_tokens_total", ROW_ESTIMATED);
    backend_gauge(o, px, "ollama_proxy_backend_in_flight",
                  "Requests in flight; retired=\"true\": on a backend a reload or DNS dropped, "
                  "until they end.", 0);
    backend_gauge(o, px, "ollama_proxy_backend_max_concurrent",
                  "max_concurrent (the runtime control's, if set): an adaptive backend's "
                  "ceiling.", 4);
    backend_gauge(o, px, "ollama_proxy_backend_healthy",
                  "1 up, 0 down, NaN while unknown (nothing heard yet).", 2);
    backend_gauge(o, px, "ollama_proxy_backend_effective_cap",
                  "The cap in force: an adaptive backend's found cap, else max_concurrent.", 1);
    adaptive_causes(o, px);
    runners(o, px);
    backend_gauge(o, px, "ollama_proxy_backend_in_service",
                  "0 when drained or disabled by the runtime control.", 3);
    head(o, "ollama_proxy_queue_length", "gauge", "Requests waiting for a slot.");
    single(o, "ollama_proxy_queue_length", sched_length(&px->sched));
    head(o, "ollama_proxy_queue_max_length", "gauge", "queue.max_length.");
    single(o, "ollama_proxy_queue_max_length", px->sched.max_length);
    head(o, "ollama_proxy_queue_wait_seconds", "histogram",
         "Time from arrival to a slot (or to the answer, for a request that got none).");
    histogram(o, "ollama_proxy_queue_wait_seconds", NULL, &m->queue_wait);
    head(o, "ollama_proxy_upstream_first_byte_seconds", "histogram",
         "Time from sending a request to its backend to the response head.");
    for (int i = 0; i < px->nbackends; i++)
        histogram(o, "ollama_proxy_upstream_first_byte_seconds", px->backends[i]->name,
                  &px->backends[i]->h_first_byte);
    head(o, "ollama_proxy_upstream_seconds", "histogram",
         "Time from sending a request to its backend to its last byte.");
    for (int i = 0; i < px->nbackends; i++)
        histogram(o, "ollama_proxy_upstream_seconds", px->backends[i]->name,
                  &px->backends[i]->h_upstream);
    head(o, "ollama_proxy_retries_total", "counter",
         "Tries that failed before the reply started and went again.");
    single(o, "ollama_proxy_retries_total", (long long)m->retries);
    head(o, "ollama_proxy_cancelled_total", "counter",
         "Requests whose client went away before the end; their upstream was aborted.");
    single(o, "ollama_proxy_cancelled_total", (long long)m->cancelled);
    dns_truncated(o, px);
    head(o, "ollama_proxy_start_time_seconds", "gauge", "When the proxy started, Unix time.");
    single(o, "ollama_proxy_start_time_seconds",
           (long long)((double)time(NULL) - (net_now_ms() - px->start_ms) / 1000.0 + 0.5));
    textout_flush(o);
    free(o);
}

void metrics_reply(struct proxy *px, struct request *r)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        reply_error(r, 500, "out of memory", 0);
        return;
    }
    if (evhttp_request_get_command(r->req) != EVHTTP_REQ_HEAD)
        metrics_render(px, b);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    reply_send(r, 200, b);
    evbuffer_free(b);
}
