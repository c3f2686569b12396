/* sim_infer.c - inference requests: parse and validate the body, make a
 * job, hand it to the scheduler, then play it out: prompt processing
 * (--ttft-ms or the prompt curve), tokens at the per-slot rate of the
 * model's generation curve (sim_gpu.c), and the reply.
 *
 * Reply framing follows Ollama: nothing at all (no status line) until the
 * first token; then a streamed reply starts with its first chunk. A
 * non-streamed reply is sent whole at the end.
 *
 * Client hang-ups: from the moment a job has to wait (queue, load, prompt
 * timer) an EV_CLOSED watcher sits on the connection's fd, because evhttp
 * does not read while a request is being handled. Once a streamed reply has
 * started, evhttp notices the hang-up itself and calls our close callback
 * with the request already detached from the connection; we then free the
 * request with evhttp_send_reply_end(). Either way the job is cancelled:
 * taken out of its queue or slot at once. */
#include "sim.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

static struct job_list alljobs = TAILQ_HEAD_INITIALIZER(alljobs);
static struct evbuffer *chunkbuf;
static json_t *json_fmt; /* the string "json", for response_format json_object */

/* Request fields, borrowed from the parsed body. */
struct ireq {
    json_t *root;
    const char *model;
    const char *item; /* the text the answer depends on */
    json_t *format;
    int num_ctx;
    int stream, num_predict, include_usage, empty_input, ka_set, b64;
    int logprobs, top_logprobs; /* top_logprobs 0..20, checked */
    double ka_s;
    int prompt_tokens;
    json_t *inputs; /* embed: array of strings (owned) */
};

/* ---- job lifetime ---- */

static void job_free(struct job *job)
{
    TAILQ_REMOVE(&alljobs, job, all);
    if (job->watch)
        event_free(job->watch);
    if (job->timer)
        event_free(job->timer);
    free(job->model_name);
    free(job->answer);
    free(job->tok_off);
    free(job->vecs);
    lp_free(&job->lp);
    free(job);
}

static void count(struct model *m, long *global, long *per_model)
{
    (*global)++;
    if (per_model)
        (*per_model)++;
    (void)m;
}

/* The client left: free its slot or queue place, then the connection. */
static void job_cancel(struct job *job)
{
    struct evhttp_connection *evcon = job->evcon;
    count(job->m, &simstats.cancelled, &job->m->c.cancelled);
    sched_detach(job);
    if (job->reply_started) {
        evhttp_send_reply_end(job->req); /* detached request: only frees it */
        job_free(job);
        return;
    }
    job_free(job);
    evhttp_connection_free(evcon);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    job_cancel(arg);
}

static void on_conn_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    job_cancel(arg);
}

void job_arm_watch(struct job *job)
{
    if (job->watch || job->reply_started)
        return;
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(job->evcon));
    job->watch = event_new(simbase, fd, EV_CLOSED | EV_PERSIST, on_watch, job);
    event_add(job->watch, NULL);
}

static void disarm_watch(struct job *job)
{
    if (job->watch) {
        event_free(job->watch);
        job->watch = NULL;
    }
}

/* Normal end: the reply has been handed to evhttp. */
static void job_done(struct job *job)
{
    job->t_end = net_now_ns();
    count(job->m, &simstats.served, &job->m->c.served);
    sched_detach(job);
    job_free(job);
}

/* ---- replies ---- */

static int is_v1(const struct job *job)
{
    return job->kind == JK_V1_CHAT || job->kind == JK_V1_COMPLETION || job->kind == JK_V1_EMBED;
}

static void reply_whole(struct job *job)
{
    struct evbuffer *b = evbuffer_new();
    job->t_end = net_now_ns();
    if (job->kind == JK_EMBED || job->kind == JK_EMBEDDINGS || job->kind == JK_V1_EMBED)
        fmt_embed(b, job);
    else if (is_v1(job))
        fmt_v1_full(b, job);
    else
        fmt_native_final(b, job, 1);
    disarm_watch(job);
    http_send_json(job->req, 200, b);
    evbuffer_free(b);
    job_done(job);
}

static void stream_start(struct job *job)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(job->req);
    evhttp_add_header(h, "Content-Type", is_v1(job) ? "text/event-stream" : "application/x-ndjson");
    disarm_watch(job);
    evhttp_connection_set_closecb(job->evcon, on_conn_closed, job);
    evhttp_send_reply_start(job->req, 200, "OK");
    job->reply_started = 1;
}

static void stream_token(struct job *job, int i)
{
    if (is_v1(job))
        fmt_v1_chunk(chunkbuf, job, i);
    else
        fmt_native_chunk(chunkbuf, job, i);
    evhttp_send_reply_chunk(job->req, chunkbuf);
}

static void stream_end(struct job *job)
{
    job->t_end = net_now_ns();
    if (is_v1(job))
        fmt_v1_finish(chunkbuf, job);
    else {
        fmt_native_final(chunkbuf, job, 0);
        evbuffer_add(chunkbuf, "\n", 1);
    }
    evhttp_send_reply_chunk(job->req, chunkbuf);
    evhttp_connection_set_closecb(job->evcon, NULL, NULL);
    evhttp_send_reply_end(job->req);
    job_done(job);
}

/* ---- generation ---- */

static int is_embed(const struct job *job)
{
    return job->kind == JK_EMBED || job->kind == JK_EMBEDDINGS || job->kind == JK_V1_EMBED;
}

static void emit_tokens(struct job *job, int upto)
{
    while (job->tok_i < upto) {
        if (job->stream)
            stream_token(job, job->tok_i);
        job->tok_i++;
    }
}

/* --stream-fail-rate: Ollama's in-band error after status 200, then the end
 * of the stream (no final chunk, no [DONE]). */
static void stream_fail(struct job *job)
{
    if (is_v1(job))
        evbuffer_add_printf(chunkbuf, "data: {\"error\":{\"message\":\"simulated failure\","
                                      "\"type\":\"api_error\",\"param\":null,\"code\":null}}\n\n");
    else
        evbuffer_add_printf(chunkbuf, "{\"error\":\"simulated failure\"}\n");
    evhttp_send_reply_chunk(job->req, chunkbuf);
    evhttp_connection_set_closecb(job->evcon, NULL, NULL);
    evhttp_send_reply_end(job->req);
    simstats.failed++;
    sched_detach(job);
    job_free(job);
}

static void finish(struct job *job)
{
    if (job->fail_mid)
        stream_fail(job);
    else if (job->stream)
        stream_end(job);
    else
        reply_whole(job);
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* Rounded up to the microsecond: a timer never fires before its clock
 * position is due. */
static void arm_timer(struct job *job, double real_s)
{
    struct timeval tv;
    if (!job->timer)
        job->timer = evtimer_new(simbase, on_timer, job);
    if (real_s < 0)
        real_s = 0;
    double us = ceil(real_s * 1e6);
    tv.tv_sec = (time_t)(us / 1e6);
    tv.tv_usec = (suseconds_t)(us - (double)tv.tv_sec * 1e6);
    evtimer_add(job->timer, &tv);
}

/* Arm JOB for its next event at its model's rates now: the end of its
 * prompt, or its next token (token i is due when the model's generation
 * clock is at gen0 + i), but not sooner than MIN_S real seconds. */
static void arm_next(struct job *job, double min_s)
{
    struct model *m = job->m;
    double sim_s;
    if (job->prompting)
        sim_s = (job->prompt0 + job->prompt_tokens - m->prompt_work) / gpu_prompt_rate(m);
    else
        sim_s = (job->gen0 + job->tok_i - m->gen_work) / gpu_slot_rate(m);
    double real_s = sim_s / simcfg.time_scale;
    arm_timer(job, real_s < min_s ? min_s : real_s);
}

/* After a tick, at most one more a millisecond: a tick emits every token
 * due, so fast rates need fewer events. A re-arm for new rates is exact
 * (a due job fires at once): delaying it would let every slot freed push
 * the others back, a chain that costs throughput. */
#define TICK_MIN_S 0.001

void job_repace(struct model *m)
{
    double g = gpu_slot_rate(m), p = gpu_prompt_rate(m);
    if (g == m->paced_gen && p == m->paced_prompt)
        return;
    m->paced_gen = g;
    m->paced_prompt = p;
    if (gpu_instant())
        return;
    struct job *j;
    TAILQ_FOREACH(j, &m->running, link)
    {
        if (j->prompting || (j->t_first && j->tok_i < j->stop_at))
            arm_next(j, 0);
    }
}

/* Emit what the model's clock says is due, then wait for the next one. */
static void tick(struct job *job)
{
    gpu_settle(job->m);
    int due = (int)floor(job->m->gen_work - job->gen0 + 1e-6) + 1;
    emit_tokens(job, due > job->stop_at ? job->stop_at : due);
    if (job->tok_i >= job->stop_at) {
        finish(job);
        return;
    }
    arm_next(job, TICK_MIN_S);
}

/* Prompt processing is over: the first token exists. */
static void first_token(struct job *job)
{
    job->t_first = net_now_ns();
    job->stop_at = job->ntok;
    gpu_settle(job->m); /* before any I/O: job_repace() may see this job from now on */
    job->gen0 = job->m->gen_work;
    if (is_embed(job)) {
        reply_whole(job);
        return;
    }
    if (job->stream) {
        stream_start(job);
        if (simcfg.stream_fail_rate > 0 && text_rand() < simcfg.stream_fail_rate) {
            job->fail_mid = 1;
            job->stop_at = job->ntok / 2 > 0 ? job->ntok / 2 : 1;
        }
    }
    if (gpu_instant()) {
        emit_tokens(job, job->stop_at);
        finish(job);
        return;
    }
    emit_tokens(job, 1);
    if (job->tok_i >= job->stop_at) {
        finish(job);
        return;
    }
    job_arm_watch(job); /* non-streamed: still silent, so watch the socket */
    arm_next(job, 0);
}

/* On the prompt curve: done once the model's prompt clock has advanced by
 * the prompt's tokens; earlier (the rate fell since the timer was armed),
 * wait for the rest. */
static void prompt_tick(struct job *job)
{
    struct model *m = job->m;
    gpu_settle(m);
    if (m->prompt_work - job->prompt0 < job->prompt_tokens - 1e-6) {
        arm_next(job, 0);
        return;
    }
    job->prompting = 0;
    m->prompting--;
    first_token(job); /* may free job */
    job_repace(m);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = arg;
    (void)fd, (void)what;
    if (job->prompting)
        prompt_tick(job);
    else if (!job->t_first)
        first_token(job);
    else
        tick(job);
}

/* JOB holds a slot (sched has already counted it in busy): process its
 * prompt, on the prompt curve by its token count, or for the fixed
 * --ttft-ms (embeddings always: the curves describe the generation model,
 * and embedding is a cheap prompt pass, so a quarter of --ttft-ms). */
void job_start_slot(struct job *job)
{
    struct model *m = job->m;
    if (gpu_has_prompt_curve() && !is_embed(job)) {
        gpu_settle(m);
        m->prompting++;
        job->prompting = 1;
        job->prompt0 = m->prompt_work;
        job_arm_watch(job);
        arm_next(job, 0);
        job_repace(m);
        return;
    }
    double ttft = simcfg.ttft_ms / simcfg.time_scale / 1000.0;
    if (is_embed(job))
        ttft /= 4;
    if (ttft <= 0)
        first_token(job); /* may free job */
    else {
        job_arm_watch(job);
        arm_timer(job, ttft);
    }
    job_repace(m);
}

void job_runner_ready(struct job *job)
{
    struct evbuffer *b = evbuffer_new();
    job->t_end = net_now_ns();
    if (job->kind == JK_EMBED || job->kind == JK_EMBEDDINGS || job->kind == JK_V1_EMBED)
        fmt_embed(b, job);
    else
        fmt_native_special(b, job->model_name, job->kind == JK_CHAT, "load");
    disarm_watch(job);
    http_send_json(job->req, 200, b);
    evbuffer_free(b);
    job_done(job);
}

void infer_free_all(void)
{
    struct job *job;
    while ((job = TAILQ_FIRST(&alljobs)) != NULL) {
        if (job->evcon)
            evhttp_connection_set_closecb(job->evcon, NULL, NULL);
        job->state = JS_NEW;
        job->holds_slot = 0;
        job_free(job);
    }
    if (chunkbuf)
        evbuffer_free(chunkbuf);
    chunkbuf = NULL;
    json_decref(json_fmt);
    json_fmt = NULL;
}

/* ---- parsing ---- */

/* Go's time.ParseDuration, enough of it: [-]N[.F]unit... with units
 * ns us µs ms s m h; "0" alone is allowed. Returns 0 or -1. */
static int parse_go_duration(const char *s, double *secs)
{
    const char *p = s;
    double total = 0, sign = 1;
    if (*p == '-' || *p == '+')
        sign = *p++ == '-' ? -1 : 1;
    if (!strcmp(p, "0")) {
        *secs = 0;
        return 0;
    }
    if (!*p)
        return -1;
    while (*p) {
        char *end;
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return -1;
        double v = strtod(p, &end);
        if (end == p)
            return -1;
        p = end;
        static const struct {
            const char *u;
            double f;
        } units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3},
                     {"s", 1},     {"m", 60},    {"h", 3600}};
        size_t i, best = 0, bestlen = 0;
        for (i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t l = strlen(units[i].u);
            if (!strncmp(p, units[i].u, l) && l > bestlen)
                best = i, bestlen = l;
        }
        if (!bestlen)
            return -2; /* missing unit */
        total += v * units[best].f;
        p += bestlen;
    }
    *secs = sign * total;
    return 0;
}

/* keep_alive: number of seconds or Go duration string; negative = forever.
 * Returns 0, or -1 with the 400 text in ERR. */
static int parse_keep_alive(json_t *v, struct ireq *r, char *err, size_t errlen)
{
    if (!v || json_is_null(v))
        return 0;
    if (json_is_number(v)) {
        r->ka_s = json_number_value(v);
    } else if (json_is_string(v)) {
        int rc = parse_go_duration(json_string_value(v), &r->ka_s);
        if (rc) {
            snprintf(err, errlen, "time: %s duration \"%s\"",
                     rc == -2 ? "missing unit in" : "invalid", json_string_value(v));
            return -1;
        }
    } else {
        snprintf(err, errlen, "Unsupported type: '%s'",
                 json_is_boolean(v) ? "bool"
                 : json_is_array(v) ? "[]interface {}"
                                    : "map[string]interface {}");
        return -1;
    }
    if (r->ka_s < 0)
        r->ka_s = -1;
    r->ka_set = 1;
    return 0;
}

/* The text of a message content: a string, or the "text" parts (v1). */
static const char *content_text(json_t *c)
{
    if (json_is_string(c))
        return json_string_value(c);
    if (json_is_array(c)) {
        size_t i;
        json_t *p;
        json_array_foreach(c, i, p)
        {
            json_t *t = json_object_get(p, "text");
            if (json_is_string(t))
                return json_string_value(t);
        }
    }
    return "";
}

static void parse_messages(json_t *msgs, struct ireq *r)
{
    size_t i;
    json_t *msg;
    size_t total = 0;
    r->item = "";
    json_array_foreach(msgs, i, msg)
    {
        const char *t = content_text(json_object_get(msg, "content"));
        total += strlen(t);
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (role && !strcmp(role, "user"))
            r->item = t;
    }
    r->prompt_tokens = text_count_tokens("", total);
}

static const char *go_type(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "number";
    }
}

/* Embedding inputs: a string or an array of strings, as an owned array. */
static int parse_inputs(json_t *in, struct ireq *r, int keep_empty)
{
    if (!in) {
        r->inputs = json_array();
        return 0;
    }
    if (json_is_string(in)) {
        r->inputs = json_array();
        if (json_string_length(in) > 0 || keep_empty)
            json_array_append(r->inputs, in);
        return 0;
    }
    if (!json_is_array(in))
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(in, i, v)
    {
        if (!json_is_string(v))
            return -1;
    }
    r->inputs = json_incref(in);
    return 0;
}

static void fill_common(struct ireq *r, enum job_kind kind)
{
    json_t *root = r->root, *opts = json_object_get(root, "options"), *st;
    int v1 = kind == JK_V1_CHAT || kind == JK_V1_COMPLETION || kind == JK_V1_EMBED;
    st = json_object_get(root, "stream");
    r->stream = v1 ? json_is_true(st) : !json_is_false(st);
    r->format = json_object_get(root, "format");
    r->num_predict = (int)json_integer_value(json_object_get(opts, "num_predict"));
    r->num_ctx = (int)json_integer_value(json_object_get(opts, "num_ctx"));
    if (r->num_ctx <= 0)
        r->num_ctx = SIM_DEFAULT_CTX;
    if (v1) {
        json_t *rf = json_object_get(root, "response_format");
        const char *t = json_string_value(json_object_get(rf, "type"));
        if (t && !strcmp(t, "json_object")) {
            if (!json_fmt)
                json_fmt = json_string("json");
            r->format = json_fmt;
        }
        if (t && !strcmp(t, "json_schema"))
            r->format = json_object_get(json_object_get(rf, "json_schema"), "schema");
        json_t *mt = json_object_get(root, "max_tokens");
        if (!mt)
            mt = json_object_get(root, "max_completion_tokens");
        r->num_predict = (int)json_integer_value(mt);
        r->include_usage =
            json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    }
}

/* /v1/embeddings encoding_format: absent, null, "" or "float" answer JSON
 * numbers; "base64" answers the float32 bytes (both in any case, as Go's
 * strings.EqualFold in Ollama's middleware). Returns 0, or -1 after
 * answering 400 with Ollama's text. */
static int parse_encoding(struct evhttp_request *req, json_t *v, struct ireq *r)
{
    char err[400];
    const char *s = json_string_value(v);
    if (!v || json_is_null(v))
        return 0;
    if (!s) {
        snprintf(err, sizeof err,
                 "json: cannot unmarshal %s into Go struct field EmbedRequest.encoding_format"
                 " of type string",
                 go_type(v));
        http_send_error(req, 400, err, 1);
        return -1;
    }
    if (!*s || !strcasecmp(s, "float"))
        return 0;
    if (!strcasecmp(s, "base64")) {
        r->b64 = 1;
        return 0;
    }
    snprintf(err, sizeof err,
             "Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64'].", s);
    http_send_error(req, 400, err, 1);
    return -1;
}

/* ---- the handler ---- */

static int openai(enum job_kind k)
{
    return k == JK_V1_CHAT || k == JK_V1_COMPLETION || k == JK_V1_EMBED;
}

static int embedding_kind(enum job_kind k)
{
    return k == JK_EMBED || k == JK_EMBEDDINGS || k == JK_V1_EMBED;
}

static void reject_not_found(struct evhttp_request *req, enum job_kind kind, const char *name)
{
    char msg[NAME_KEY_MAX + 64];
    if (embedding_kind(kind))
        snprintf(msg, sizeof msg, "model \"%s\" not found, try pulling it first", name);
    else
        snprintf(msg, sizeof msg, "model '%s' not found", name);
    http_send_error(req, 404, msg, openai(kind));
}

static void on_reset(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    evhttp_connection_free(arg);
}

/* --reset-rate: close the connection with an RST and no answer. */
static void reset_connection(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    struct timeval zero = {0, 0};
    event_base_once(simbase, -1, EV_TIMEOUT, on_reset, evcon, &zero);
}

/* Go's decoder refuses a JSON value of the wrong type for a struct field. */
struct field_type {
    const char *name;
    json_type type;
    const char *go;
};

static const struct field_type field_types[] = {
    {"model", JSON_STRING, "string"},          {"prompt", JSON_STRING, "string"},
    {"system", JSON_STRING, "string"},         {"stream", JSON_TRUE, "bool"},
    {"messages", JSON_ARRAY, "[]api.Message"}, {"options", JSON_OBJECT, "map[string]interface {}"},
    {"logprobs", JSON_TRUE, "bool"},           {"top_logprobs", JSON_INTEGER, "int"}};

static int type_ok(json_t *v, json_type want)
{
    if (json_is_null(v))
        return 1;
    if (want == JSON_TRUE)
        return json_is_boolean(v);
    if (want == JSON_INTEGER) /* Go takes 3.0 for an int, not 3.5 */
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    return json_typeof(v) == want;
}

/* Returns 0, or -1 after answering 400 with Go's message. */
static int check_types(struct evhttp_request *req, enum job_kind kind, json_t *root)
{
    static const char *const structs[] = {"GenerateRequest", "ChatRequest",     "", "",
                                          "EmbedRequest",    "EmbeddingRequest"};
    char err[200];
    for (size_t i = 0; i < sizeof field_types / sizeof *field_types; i++) {
        const struct field_type *f = &field_types[i];
        json_t *v = json_object_get(root, f->name);
        if (!v || type_ok(v, f->type))
            continue;
        if (!strcmp(f->name, "messages") && kind != JK_CHAT)
            continue;
        if (!strncmp(f->name, "logprobs", 8) + !strcmp(f->name, "top_logprobs") &&
            embedding_kind(kind))
            continue;
        snprintf(err, sizeof err, "json: cannot unmarshal %s into Go struct field %s.%s of type %s",
                 go_type(v), structs[kind], f->name, f->go);
        http_send_error(req, 400, err, 0);
        return -1;
    }
    return 0;
}

/* logprobs / top_logprobs as Ollama reads them: native and /v1/chat a bool
 * and a count; /v1/completions one count ("logprobs": N > 0 means N top
 * alternatives). A count outside 0..20 is a 400 before the model is looked
 * up (server/routes.go). Returns 0, or -1 after answering. */
static int parse_logprobs(struct evhttp_request *req, enum job_kind kind, struct ireq *r)
{
    json_t *lp = json_object_get(r->root, "logprobs");
    json_t *top = json_object_get(r->root, "top_logprobs");
    if (kind == JK_V1_COMPLETION) {
        int n = json_is_number(lp) ? (int)json_number_value(lp) : 0;
        r->logprobs = n > 0;
        r->top_logprobs = n > 0 ? n : 0;
    } else {
        r->logprobs = json_is_true(lp);
        r->top_logprobs = json_is_number(top) ? (int)json_number_value(top) : 0;
    }
    if (r->top_logprobs < 0 || r->top_logprobs > 20) {
        http_send_error(req, 400, "top_logprobs must be between 0 and 20", openai(kind));
        return -1;
    }
    return 0;
}

/* Validate by kind. Returns 0, or -1 after answering. */
static int validate(struct evhttp_request *req, enum job_kind kind, struct ireq *r,
                    struct model **mp)
{
    json_t *root = r->root;
    char err[256];
    int v1 = openai(kind);
    json_t *jm = json_object_get(root, "model");
    if (!v1 && check_types(req, kind, root))
        return -1;
    if (!embedding_kind(kind) && !v1 && parse_logprobs(req, kind, r))
        return -1;
    r->model = jm && json_is_string(jm) ? json_string_value(jm) : "";
    if (!*r->model && (kind == JK_CHAT || kind == JK_V1_CHAT || kind == JK_EMBEDDINGS)) {
        http_send_error(req, 400, "model is required", v1);
        return -1;
    }
    if (kind == JK_V1_CHAT && json_array_size(json_object_get(root, "messages")) == 0) {
        http_send_error(req, 400, "[] is too short - 'messages'", 1);
        return -1;
    }
    if (!embedding_kind(kind) && v1 && parse_logprobs(req, kind, r))
        return -1;
    if (!v1 && parse_keep_alive(json_object_get(root, "keep_alive"), r, err, sizeof err)) {
        http_send_error(req, 400, err, 0);
        return -1;
    }
    if (kind == JK_V1_EMBED && parse_encoding(req, json_object_get(root, "encoding_format"), r))
        return -1;
    if (embedding_kind(kind) && kind != JK_EMBEDDINGS) {
        json_t *in = json_object_get(root, "input");
        if ((kind == JK_V1_EMBED && (!in || json_array_size(in) == 0) && !json_is_string(in)) ||
            parse_inputs(in, r, kind == JK_V1_EMBED)) {
            http_send_error(req, 400, kind == JK_V1_EMBED ? "invalid input" : "invalid input type",
                            v1);
            return -1;
        }
    }
    struct model *m = *r->model ? sched_find(r->model) : NULL;
    if (!m) {
        reject_not_found(req, kind, r->model);
        return -1;
    }
    if (m->embedding && !embedding_kind(kind)) {
        snprintf(err, sizeof err, "\"%s\" does not support %s", r->model,
                 kind == JK_CHAT || kind == JK_V1_CHAT ? "chat" : "generate");
        http_send_error(req, 400, err, v1);
        return -1;
    }
    *mp = m;
    return 0;
}

static void prepare(struct ireq *r, enum job_kind kind)
{
    json_t *root = r->root;
    fill_common(r, kind);
    if (kind == JK_CHAT || kind == JK_V1_CHAT) {
        json_t *msgs = json_object_get(root, "messages");
        parse_messages(msgs, r);
        r->empty_input = json_array_size(msgs) == 0;
    } else if (kind == JK_GENERATE || kind == JK_V1_COMPLETION || kind == JK_EMBEDDINGS) {
        json_t *p = json_object_get(root, "prompt");
        if (json_is_array(p))
            p = json_array_get(p, 0);
        r->item = json_is_string(p) ? json_string_value(p) : "";
        const char *sys = json_string_value(json_object_get(root, "system"));
        r->prompt_tokens = text_count_tokens("", strlen(r->item) + (sys ? strlen(sys) : 0));
        r->empty_input = !*r->item;
    } else {
        r->empty_input = json_array_size(r->inputs) == 0;
    }
}

static struct job *job_new(struct evhttp_request *req, enum job_kind kind, struct ireq *r,
                           struct model *m)
{
    struct job *job = calloc(1, sizeof *job);
    TAILQ_INSERT_TAIL(&alljobs, job, all);
    job->req = req;
    job->evcon = evhttp_request_get_connection(req);
    job->m = m;
    job->kind = kind;
    job->model_name = strdup(r->model);
    job->stream = r->stream && !embedding_kind(kind);
    job->load_only = r->empty_input;
    job->ka_set = r->ka_set;
    job->ka_s = r->ka_s;
    job->num_ctx = r->num_ctx;
    job->include_usage = r->include_usage;
    job->b64 = r->b64;
    job->logprobs = r->logprobs && kind != JK_V1_COMPLETION; /* Ollama drops them there */
    job->lp.top = r->top_logprobs;
    job->prompt_tokens = r->prompt_tokens;
    job->t0 = net_now_ns();
    job->created = (long)time(NULL);
    job->v1id = (int)(text_rand() * 999);
    return job;
}

static void make_answer(struct job *job, struct ireq *r)
{
    if (embedding_kind(job->kind)) {
        size_t n = json_array_size(r->inputs), total = 0;
        if (job->kind == JK_EMBEDDINGS)
            n = *r->item ? 1 : 0;
        job->nvec = (int)n;
        job->vecs = calloc(n ? n : 1, sizeof(float) * SIM_EMBED_DIM);
        for (size_t i = 0; i < n; i++) {
            const char *t = job->kind == JK_EMBEDDINGS
                                ? r->item
                                : json_string_value(json_array_get(r->inputs, i));
            text_embed(job->vecs + i * SIM_EMBED_DIM, t, strlen(t));
            total += strlen(t);
        }
        job->prompt_tokens = (int)(total / 4) + (int)n;
        return;
    }
    int ntok = simcfg.tokens;
    if (r->num_predict > 0 && r->num_predict < ntok) {
        ntok = r->num_predict;
        job->length_cut = !r->format || json_is_null(r->format);
    }
    text_answer(job, json_is_null(r->format) ? NULL : r->format, r->item, ntok);
}

static int parse_body(struct evhttp_request *req, enum job_kind kind, struct ireq *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    char msg[300];
    if (len == 0) {
        http_send_error(req, 400, "missing request body", openai(kind));
        return -1;
    }
    r->root = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_DECODE_ANY, &jerr);
    if (!r->root) {
        if (jerr.position >= (int)len)
            snprintf(msg, sizeof msg, "unexpected EOF");
        else
            snprintf(
                msg, sizeof msg, "invalid character '%c' looking for beginning of value",
                ((const char *)evbuffer_pullup(in, -1))[jerr.position > 0 ? jerr.position - 1 : 0]);
        http_send_error(req, 400, msg, openai(kind));
        return -1;
    }
    if (!json_is_object(r->root)) {
        snprintf(msg, sizeof msg, "json: cannot unmarshal %s into Go value of type api.Request",
                 go_type(r->root));
        http_send_error(req, 400, msg, openai(kind));
        return -1;
    }
    return 0;
}

/* Answer the special cases that never reach the scheduler. Returns 1 when
 * answered. */
static int special(struct evhttp_request *req, enum job_kind kind, struct ireq *r, struct model *m)
{
    if ((kind == JK_GENERATE || kind == JK_CHAT) && r->empty_input && r->ka_set && r->ka_s == 0) {
        struct evbuffer *b = evbuffer_new();
        sched_unload_request(m);
        fmt_native_special(b, r->model, kind == JK_CHAT, "unload");
        http_send_json(req, 200, b);
        evbuffer_free(b);
        count(m, &simstats.served, &m->c.served);
        return 1;
    }
    if (simcfg.fail_rate > 0 && text_rand() < simcfg.fail_rate) {
        count(m, &simstats.failed, NULL);
        http_send_error(req, 500, "simulated failure", openai(kind));
        return 1;
    }
    if (simcfg.reset_rate > 0 && text_rand() < simcfg.reset_rate) {
        count(m, &simstats.resets, NULL);
        reset_connection(req);
        return 1;
    }
    return 0;
}

void infer_handle(struct evhttp_request *req, enum job_kind kind, const char *path)
{
    struct ireq r = {0};
    struct model *m = NULL;
    (void)path;
    if (!chunkbuf)
        chunkbuf = evbuffer_new();
    if (parse_body(req, kind, &r) || validate(req, kind, &r, &m))
        goto done;
    count(m, &simstats.requests, &m->c.requests);
    prepare(&r, kind);
    if (special(req, kind, &r, m))
        goto done;
    struct job *job = job_new(req, kind, &r, m);
    if (!job->load_only)
        make_answer(job, &r);
    if (sched_submit(job) < 0) {
        count(m, &simstats.rejected, &m->c.rejected);
        http_send_error(req, 503,
                        "server busy, please try again.  maximum pending requests exceeded",
                        openai(kind));
        job_free(job);
    }
done:
    json_decref(r.inputs);
    json_decref(r.root);
}
