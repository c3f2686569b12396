/* metrics.c - see metrics.h. */
#include "metrics.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "names.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"

/* Seconds: from a fast answer to a long generation. */
static const double bounds[METRICS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                               2.5,   5,    10,    30,   60,  120, 300, 600};

struct metrics_row {
    unsigned hash;
    int code; /* 0: the row of generated tokens of (backend, model) */
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

/* The model label: bounded by what the backends list. */
static const char *model_label(struct proxy *px, const struct backend *be, const char *model,
                               char *buf, size_t len)
{
    char key[NAME_KEY_MAX];
    int known = 0;
    if (!model)
        return "";
    if (name_key(model, key, sizeof key) < 0 || name_display(model, buf, len) < 0)
        return "other";
    if (be)
        known = model_list_has(be->models, key);
    for (int i = 0; !known && i < px->nbackends; i++)
        known = model_list_has(px->backends[i]->models, key);
    return known ? buf : "other";
}

void metrics_request(struct proxy *px, const struct backend *backend, const char *model,
                     int code, long long tokens)
{
    char buf[NAME_KEY_MAX];
    const char *b = backend ? backend->name : "none";
    const char *ml = model_label(px, backend, model, buf, sizeof buf);
    struct metrics_row *r = row(&px->metrics, b, ml, code);
    if (r)
        r->n++;
    if (tokens > 0 && (r = row(&px->metrics, b, ml, 0)))
        r->n += (unsigned long long)tokens;
}

/* A label value: backslash, quote and newline escaped. */
static void label(struct evbuffer *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            evbuffer_add_printf(out, "\\%c", *v);
        else if (*v == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, v, 1);
    }
}

static void head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{LABELS,le="..."} for each bucket, then _sum and _count; LABELS is
 * "" or 'backend="x"'. */
static void histogram(struct evbuffer *out, const char *name, const char *labels,
                      const struct histogram *h)
{
    unsigned long long cum = 0;
    const char *sep = *labels ? "," : "";
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += h->count[i];
        if (i < METRICS_BUCKETS)
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                                bounds[i], cum);
        else
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                                cum);
    }
    evbuffer_add_printf(out, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name,
                        *labels ? "{" : "", labels, *labels ? "}" : "", h->sum, name,
                        *labels ? "{" : "", labels, *labels ? "}" : "", cum);
}

static void backend_gauge(struct evbuffer *out, struct proxy *px, const char *name,
                          const char *help, int which)
{
    head(out, name, "gauge", help);
    for (int i = 0; i < px->nbackends; i++) {
        const struct backend *be = px->backends[i];
        int v = which == 0   ? be->in_flight
                : which == 1 ? be->max_concurrent
                : which == 2 ? be->healthy
                             : be->admin == ADMIN_READY;
        evbuffer_add(out, name, strlen(name));
        evbuffer_add(out, "{backend=\"", 10);
        label(out, be->name);
        evbuffer_add_printf(out, "\"} %d\n", v);
    }
}

static void rows(struct evbuffer *out, struct metrics *m, int tokens)
{
    const char *name = tokens ? "ollama_proxy_generated_tokens_total" : "ollama_proxy_requests_total";
    for (unsigned i = 0; i < m->size; i++) {
        const struct metrics_row *r = m->tab[i];
        if (!r || (tokens ? r->code != 0 : r->code == 0))
            continue;
        evbuffer_add_printf(out, "%s{backend=\"", name);
        label(out, r->backend);
        evbuffer_add(out, "\",model=\"", 9);
        label(out, r->model);
        if (tokens)
            evbuffer_add_printf(out, "\"} %llu\n", r->n);
        else
            evbuffer_add_printf(out, "\",code=\"%d\"} %llu\n", r->code, r->n);
    }
}

void metrics_render(struct proxy *px, struct evbuffer *out)
{
    struct metrics *m = &px->metrics;
    char lab[200];
    head(out, "ollama_proxy_requests_total", "counter",
         "Requests ended, by the backend that served them (none: answered by the proxy), "
         "model and status code.");
    rows(out, m, 0);
    head(out, "ollama_proxy_generated_tokens_total", "counter",
         "Tokens generated, from the final eval_count (usage.completion_tokens on /v1).");
    rows(out, m, 1);
    backend_gauge(out, px, "ollama_proxy_backend_in_flight", "Requests in flight.", 0);
    backend_gauge(out, px, "ollama_proxy_backend_max_concurrent",
                  "The cap on requests in flight (the runtime control's, if set).", 1);
    backend_gauge(out, px, "ollama_proxy_backend_healthy", "1 when the health checks pass.", 2);
    backend_gauge(out, px, "ollama_proxy_backend_effective_cap",
                  "The cap in force: an adaptive backend's found cap, else max_concurrent.", 1);
    backend_gauge(out, px, "ollama_proxy_backend_in_service",
                  "0 when drained or disabled by the runtime control.", 3);
    head(out, "ollama_proxy_queue_length", "gauge", "Requests waiting for a slot.");
    evbuffer_add_printf(out, "ollama_proxy_queue_length %d\n", sched_length(&px->sched));
    head(out, "ollama_proxy_queue_max_length", "gauge", "queue.max_length.");
    evbuffer_add_printf(out, "ollama_proxy_queue_max_length %d\n", px->sched.max_length);
    head(out, "ollama_proxy_queue_wait_seconds", "histogram",
         "Time from arrival to a slot (or to the answer, for a request that got none).");
    histogram(out, "ollama_proxy_queue_wait_seconds", "", &m->queue_wait);
    head(out, "ollama_proxy_upstream_first_byte_seconds", "histogram",
         "Time from sending a request to its backend to the response head.");
    for (int i = 0; i < px->nbackends; i++) {
        snprintf(lab, sizeof lab, "backend=\"%s\"", px->backends[i]->name);
        histogram(out, "ollama_proxy_upstream_first_byte_seconds", lab,
                  &px->backends[i]->h_first_byte);
    }
    head(out, "ollama_proxy_upstream_seconds", "histogram",
         "Time from sending a request to its backend to its last byte.");
    for (int i = 0; i < px->nbackends; i++) {
        snprintf(lab, sizeof lab, "backend=\"%s\"", px->backends[i]->name);
        histogram(out, "ollama_proxy_upstream_seconds", lab, &px->backends[i]->h_upstream);
    }
    head(out, "ollama_proxy_retries_total", "counter",
         "Tries that failed before the reply started and went again.");
    evbuffer_add_printf(out, "ollama_proxy_retries_total %llu\n", m->retries);
    head(out, "ollama_proxy_cancelled_total", "counter",
         "Requests whose client went away before the end; their upstream was aborted.");
    evbuffer_add_printf(out, "ollama_proxy_cancelled_total %llu\n", m->cancelled);
    head(out, "ollama_proxy_start_time_seconds", "gauge", "When the proxy started, Unix time.");
    evbuffer_add_printf(out, "ollama_proxy_start_time_seconds %.0f\n",
                        (double)time(NULL) - (net_now_ms() - px->start_ms) / 1000.0);
}
