/* sim_infer.c - inference requests: read (sim_req.c) into a job, hand it
 * to the scheduler, then play it out: prompt processing
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
    free(job->ptext);
    lp_free(&job->lp);
    json_decref(job->echo);
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

static int is_embed(const struct job *job)
{
    return job->kind == JK_EMBED || job->kind == JK_EMBEDDINGS || job->kind == JK_V1_EMBED;
}

/* What Ollama does not say: the prompt tokens this request processed, the
 * rest came from its slot's cache (benches count cache hits by it). */
static void processed_header(struct job *job)
{
    char n[16];
    snprintf(n, sizeof n, "%d", job->prompt_new);
    evhttp_add_header(evhttp_request_get_output_headers(job->req), "X-Sim-Prompt-Processed", n);
}

static void reply_whole(struct job *job)
{
    struct evbuffer *b = evbuffer_new();
    job->t_end = net_now_ns();
    if (is_embed(job)) {
        fmt_embed(b, job);
    } else {
        processed_header(job);
        job->fmt->whole(b, job);
    }
    disarm_watch(job);
    if (job->kind == JK_TRANSCRIBE && job->echo)
        http_send_typed(job->req, 200, "text/plain", b);
    else
        http_send_json(job->req, 200, b);
    evbuffer_free(b);
    job_done(job);
}

/* The head goes out with the first chunk: the caller sends CHUNKBUF, where
 * the format's opening events (if any) now wait. */
static void stream_start(struct job *job)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(job->req);
    evhttp_add_header(h, "Content-Type", job->fmt->stream_type);
    if (job->kind == JK_MESSAGES || job->kind == JK_RESPONSES) {
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_add_header(h, "Connection", "keep-alive");
    }
    processed_header(job);
    disarm_watch(job);
    evhttp_connection_set_closecb(job->evcon, on_conn_closed, job);
    evhttp_send_reply_start(job->req, 200, "OK");
    job->reply_started = 1;
    if (job->fmt->start)
        job->fmt->start(chunkbuf, job);
}

static void stream_token(struct job *job, int i)
{
    job->fmt->token(chunkbuf, job, i);
    evhttp_send_reply_chunk(job->req, chunkbuf);
}

static void stream_end(struct job *job)
{
    job->t_end = net_now_ns();
    job->fmt->end(chunkbuf, job);
    evhttp_send_reply_chunk(job->req, chunkbuf);
    evhttp_connection_set_closecb(job->evcon, NULL, NULL);
    evhttp_send_reply_end(job->req);
    job_done(job);
}

/* ---- generation ---- */

static void emit_tokens(struct job *job, int upto)
{
    while (job->tok_i < upto) {
        if (job->stream)
            stream_token(job, job->tok_i);
        job->tok_i++;
    }
}

/* --stream-fail-rate: an in-band error after status 200 in the format's own
 * way, then the end of the stream (no final chunk, no [DONE]). */
static void stream_fail(struct job *job)
{
    job->fmt->fail(chunkbuf, job, "simulated failure");
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
        sim_s = (job->prompt0 + job->prompt_new - m->prompt_work) / gpu_prompt_rate(m);
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
    sched_count_prompt(job);
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
    if (m->prompt_work - job->prompt0 < job->prompt_new - 1e-6) {
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
    if (is_embed(job))
        fmt_embed(b, job);
    else if (job->fmt->loaded)
        job->fmt->loaded(b, job);
    else
        fmt_native_special(b, job->model_name, job->kind == JK_CHAT, "load");
    disarm_watch(job);
    if (job->stream && job->fmt->loaded)
        http_send_typed(job->req, 200, job->fmt->stream_type, b);
    else
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
    ireq_free_all();
}

/* ---- the handler ---- */

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
    job->stream = r->stream && !ireq_embedding(kind);
    job->load_only = r->empty_input;
    job->ka_set = r->ka_set;
    job->ka_s = r->ka_s;
    job->num_ctx = r->num_ctx;
    job->include_usage = r->include_usage;
    job->fmt = kind == JK_MESSAGES     ? &anth_fmt
               : kind == JK_RESPONSES  ? &resp_fmt
               : kind == JK_TRANSCRIBE ? &trans_fmt
               : ireq_openai(kind)     ? &fmt_v1
                                       : &fmt_native;
    const char *rf = json_string_value(json_object_get(r->root, "response_format"));
    if (kind == JK_TRANSCRIBE && rf && !strcmp(rf, "text"))
        job->echo = json_incref(r->root); /* answer text/plain */
    job->est_tokens = r->est_tokens;
    if (kind == JK_MESSAGES)
        anth_new_id(job->id, sizeof job->id, "msg");
    if (kind == JK_RESPONSES) {
        snprintf(job->id, sizeof job->id, "resp_%d", (int)(text_rand() * 999999));
        snprintf(job->item_id, sizeof job->item_id, "msg_%d", (int)(text_rand() * 999999));
        job->echo = json_incref(r->root);
    }
    job->b64 = r->b64;
    job->logprobs = r->logprobs && kind != JK_V1_COMPLETION; /* Ollama drops them there */
    job->lp.top = r->top_logprobs;
    job->prompt_tokens = job->prompt_new = r->prompt_tokens;
    job->ptext = r->prompt; /* taken */
    job->plen = r->plen;
    r->prompt = NULL;
    job->slot = -1;
    job->t0 = net_now_ns();
    job->created = (long)time(NULL);
    job->v1id = (int)(text_rand() * 999);
    return job;
}

static void make_answer(struct job *job, struct ireq *r)
{
    if (ireq_embedding(job->kind)) {
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
        http_send_error(req, 500, "simulated failure", ireq_shape(kind));
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
    if (ireq_read(req, kind, &r, &m))
        goto done;
    count(m, &simstats.requests, &m->c.requests);
    if (special(req, kind, &r, m))
        goto done;
    struct job *job = job_new(req, kind, &r, m);
    if (!job->load_only)
        make_answer(job, &r);
    if (sched_submit(job) < 0) {
        count(m, &simstats.rejected, &m->c.rejected);
        http_send_error(req, 503,
                        "server busy, please try again.  maximum pending requests exceeded",
                        ireq_shape(kind));
        job_free(job);
    }
done:
    ireq_cleanup(&r);
}
