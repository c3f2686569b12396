/* sim_fmt.c - Ollama's JSON shapes, written straight into evbuffers in
 * Go's field order (faster than building jansson trees per chunk). */
#include "sim.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

void fmt_jstr(struct evbuffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char out[512];
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o > sizeof out - 8) {
            evbuffer_add(b, out, o);
            o = 0;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            /* Go escapes <, > and & in JSON strings too */
            memcpy(out + o, "\\u00", 4);
            o += 4;
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    evbuffer_add(b, out, o);
}

void fmt_jcstr(struct evbuffer *b, const char *s)
{
    fmt_jstr(b, s, strlen(s));
}

double fmt_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Go's RFC3339Nano: fraction with trailing zeros removed. */
static void frac_trim(char *out, size_t len, long ns)
{
    if (ns == 0) {
        out[0] = '\0';
        return;
    }
    snprintf(out, len, ".%09ld", ns % 1000000000L);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '0')
        out[--n] = '\0';
}

void fmt_rfc3339_utc(char *out, size_t len)
{
    static time_t cached_sec = -1;
    static char cached[32];
    struct timespec ts;
    char frac[24];
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    frac_trim(frac, sizeof frac, ts.tv_nsec);
    snprintf(out, len, "%s%sZ", cached, frac);
}

void fmt_local_time(char *out, size_t len, double wall)
{
    time_t sec = (time_t)wall;
    long ns = (long)((wall - (double)sec) * 1e9);
    struct tm tm;
    char base[40], frac[24];
    if (wall > 253402300799.0) { /* past year 9999: Go's "forever" is ~2318 */
        sec = 10942837200LL;     /* 2316-10-07 */
        ns = 0;
    }
    localtime_r(&sec, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    frac_trim(frac, sizeof frac, ns < 0 ? 0 : ns);
    long off = tm.tm_gmtoff;
    if (off == 0) {
        snprintf(out, len, "%s%sZ", base, frac);
        return;
    }
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(out, len, "%s%s%c%02ld:%02ld", base, frac, sign, off / 3600, (off / 60) % 60);
}

static int is_chat(const struct job *job)
{
    return job->kind == JK_CHAT;
}

static void native_head(struct evbuffer *b, struct job *job)
{
    char ts[48];
    fmt_rfc3339_utc(ts, sizeof ts);
    evbuffer_add(b, "{\"model\":", 9);
    fmt_jcstr(b, job->model_name);
    evbuffer_add_printf(b, ",\"created_at\":\"%s\",", ts);
}

/* ,"logprobs":[...] of tokens FROM..TO-1 (nothing without logprobs). In
 * Ollama each streamed chunk carries the entries of its own tokens; a
 * non-streamed reply all of them; the final streamed chunk none. */
static void logprobs(struct evbuffer *b, const struct job *job, int from, int to, int v1)
{
    const struct lp_buf *lp = &job->lp;
    if (!job->logprobs || from >= to || to > lp->n)
        return;
    evbuffer_add_printf(b, v1 ? ",\"logprobs\":{\"content\":[" : ",\"logprobs\":[");
    for (int i = from; i < to; i++) {
        if (i > from)
            evbuffer_add(b, ",", 1);
        evbuffer_add(b, lp->s + lp->off[i], (size_t)(lp->off[i + 1] - lp->off[i]));
    }
    evbuffer_add(b, v1 ? "]}" : "]", v1 ? 2 : 1);
}

void fmt_native_chunk(struct evbuffer *b, struct job *job, int i)
{
    const char *s = job->answer + job->tok_off[i];
    size_t n = (size_t)(job->tok_off[i + 1] - job->tok_off[i]);
    native_head(b, job);
    if (is_chat(job)) {
        evbuffer_add(b, "\"message\":{\"role\":\"assistant\",\"content\":", 40);
        fmt_jstr(b, s, n);
        evbuffer_add(b, "},\"done\":false", 14);
    } else {
        evbuffer_add(b, "\"response\":", 11);
        fmt_jstr(b, s, n);
        evbuffer_add(b, ",\"done\":false", 13);
    }
    logprobs(b, job, i, i + 1, 0);
    evbuffer_add(b, "}\n", 2);
}

static long long sim_ns(long long real_ns)
{
    double v = (double)real_ns * simcfg.time_scale;
    return v < 1 ? 1 : (long long)v;
}

static void metrics(struct evbuffer *b, struct job *job)
{
    long long total = sim_ns(job->t_end - job->t0), load = sim_ns(job->t_runner - job->t0);
    long long pe = sim_ns(job->t_first - job->t_slot), ev = sim_ns(job->t_end - job->t_first);
    if (total < load + pe + ev)
        total = load + pe + ev;
    evbuffer_add_printf(b,
                        ",\"total_duration\":%lld,\"load_duration\":%lld,\"prompt_eval_count\":%d,"
                        "\"prompt_eval_duration\":%lld,\"eval_count\":%d,\"eval_duration\":%lld",
                        total, load, job->prompt_tokens, pe, job->ntok, ev);
}

static void context_ids(struct evbuffer *b, struct job *job)
{
    int n = job->prompt_tokens + job->ntok;
    char tmp[16];
    evbuffer_add(b, ",\"context\":[", 12);
    for (int i = 0; i < n; i++) {
        int l = snprintf(tmp, sizeof tmp, i ? ",%d" : "%d", 128000 + (i % 4000) * 7919 % 4000);
        evbuffer_add(b, tmp, (size_t)l);
    }
    evbuffer_add(b, "]", 1);
}

void fmt_native_final(struct evbuffer *b, struct job *job, int with_text)
{
    const char *s = with_text ? job->answer : "";
    size_t n = with_text ? (size_t)job->tok_off[job->ntok] : 0;
    const char *reason = job->length_cut ? "length" : "stop";
    int lp_to = with_text ? job->ntok : 0;
    native_head(b, job);
    if (is_chat(job)) { /* Go's field order: logprobs before the metrics */
        evbuffer_add(b, "\"message\":{\"role\":\"assistant\",\"content\":", 40);
        fmt_jstr(b, s, n);
        evbuffer_add_printf(b, "},\"done\":true,\"done_reason\":\"%s\"", reason);
        logprobs(b, job, 0, lp_to, 0);
        metrics(b, job);
    } else { /* and after them */
        evbuffer_add(b, "\"response\":", 11);
        fmt_jstr(b, s, n);
        evbuffer_add_printf(b, ",\"done\":true,\"done_reason\":\"%s\"", reason);
        context_ids(b, job);
        metrics(b, job);
        logprobs(b, job, 0, lp_to, 0);
    }
    evbuffer_add(b, "}", 1);
}

static void native_end(struct evbuffer *b, struct job *job)
{
    fmt_native_final(b, job, 0);
    evbuffer_add(b, "\n", 1);
}

static void native_whole(struct evbuffer *b, struct job *job)
{
    fmt_native_final(b, job, 1);
}

/* Ollama's in-band error after status 200, then the end of the stream. */
static void native_fail(struct evbuffer *b, struct job *job, const char *msg)
{
    (void)job;
    evbuffer_add(b, "{\"error\":", 9);
    fmt_jcstr(b, msg);
    evbuffer_add(b, "}\n", 2);
}

const struct reply_fmt fmt_native = {
    "application/x-ndjson", SHAPE_NATIVE, NULL, fmt_native_chunk, native_end,
    native_whole,           native_fail,  NULL};

void fmt_native_special(struct evbuffer *b, const char *model, int chat, const char *reason)
{
    char ts[48];
    fmt_rfc3339_utc(ts, sizeof ts);
    evbuffer_add(b, "{\"model\":", 9);
    fmt_jcstr(b, model);
    evbuffer_add_printf(b, ",\"created_at\":\"%s\",", ts);
    if (chat)
        evbuffer_add_printf(b, "\"message\":{\"role\":\"assistant\",\"content\":\"\"},");
    else
        evbuffer_add_printf(b, "\"response\":\"\",");
    evbuffer_add_printf(b, "\"done\":true,\"done_reason\":\"%s\"}", reason);
}

/* ---- OpenAI-compatible shapes ---- */

static int v1_chat(const struct job *job)
{
    return job->kind == JK_V1_CHAT;
}

static void v1_head(struct evbuffer *b, struct job *job, int chunk)
{
    const char *obj =
        v1_chat(job) ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    evbuffer_add_printf(b, "{\"id\":\"%s-%d\",\"object\":\"%s\",\"created\":%ld,\"model\":",
                        v1_chat(job) ? "chatcmpl" : "cmpl", job->v1id, obj, job->created);
    fmt_jcstr(b, job->model_name);
    evbuffer_add(b, ",\"system_fingerprint\":\"fp_ollama\",\"choices\":[", 45);
}

static void v1_usage(struct evbuffer *b, struct job *job, int zero)
{
    int p = zero ? 0 : job->prompt_tokens, c = zero ? 0 : job->ntok;
    evbuffer_add_printf(b,
                        "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
                        "\"total_tokens\":%d}",
                        p, c, p + c);
}

void fmt_v1_chunk(struct evbuffer *b, struct job *job, int i)
{
    const char *s = job->answer + job->tok_off[i];
    size_t n = (size_t)(job->tok_off[i + 1] - job->tok_off[i]);
    evbuffer_add(b, "data: ", 6);
    v1_head(b, job, 1);
    if (v1_chat(job)) {
        evbuffer_add(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":", 49);
        fmt_jstr(b, s, n);
        evbuffer_add(b, "},\"finish_reason\":null", 22);
        logprobs(b, job, i, i + 1, 1);
        evbuffer_add(b, "}]", 2);
    } else {
        evbuffer_add(b, "{\"text\":", 8);
        fmt_jstr(b, s, n);
        evbuffer_add(b, ",\"index\":0,\"finish_reason\":null}]", 33);
    }
    if (job->include_usage && !v1_chat(job)) {
        evbuffer_add(b, ",", 1);
        v1_usage(b, job, 1);
    }
    evbuffer_add(b, "}\n\n", 3);
}

void fmt_v1_finish(struct evbuffer *b, struct job *job)
{
    const char *reason = job->length_cut ? "length" : "stop";
    evbuffer_add(b, "data: ", 6);
    v1_head(b, job, 1);
    if (v1_chat(job))
        evbuffer_add_printf(b, "{\"index\":0,\"delta\":{},\"finish_reason\":\"%s\"}]", reason);
    else
        evbuffer_add_printf(b, "{\"text\":\"\",\"index\":0,\"finish_reason\":\"%s\"}]", reason);
    if (job->include_usage && !v1_chat(job)) {
        evbuffer_add(b, ",", 1);
        v1_usage(b, job, 1);
    }
    evbuffer_add(b, "}\n\n", 3);
    if (job->include_usage) {
        evbuffer_add(b, "data: ", 6);
        v1_head(b, job, 1);
        evbuffer_add(b, "],", 2);
        v1_usage(b, job, 0);
        evbuffer_add(b, "}\n\n", 3);
    }
    evbuffer_add(b, "data: [DONE]\n\n", 14);
}

void fmt_v1_full(struct evbuffer *b, struct job *job)
{
    const char *reason = job->length_cut ? "length" : "stop";
    size_t n = (size_t)job->tok_off[job->ntok];
    v1_head(b, job, 0);
    if (v1_chat(job)) {
        evbuffer_add(b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":", 51);
        fmt_jstr(b, job->answer, n);
        evbuffer_add_printf(b, "},\"finish_reason\":\"%s\"", reason);
        logprobs(b, job, 0, job->ntok, 1);
        evbuffer_add(b, "}],", 3);
    } else {
        evbuffer_add(b, "{\"text\":", 8);
        fmt_jstr(b, job->answer, n);
        evbuffer_add_printf(b, ",\"index\":0,\"finish_reason\":\"%s\"}],", reason);
    }
    v1_usage(b, job, 0);
    evbuffer_add(b, "}", 1);
}

/* No final chunk and no [DONE]: a client must treat the stream as failed. */
static void v1_fail(struct evbuffer *b, struct job *job, const char *msg)
{
    (void)job;
    evbuffer_add(b, "data: {\"error\":{\"message\":", 26);
    fmt_jcstr(b, msg);
    evbuffer_add(b, ",\"type\":\"api_error\",\"param\":null,\"code\":null}}\n\n", 48);
}

const struct reply_fmt fmt_v1 = {"text/event-stream", SHAPE_OPENAI, NULL,    fmt_v1_chunk,
                                 fmt_v1_finish,       fmt_v1_full,  v1_fail, NULL};

/* A float32 with the fewest digits that read back as the same float32, as
 * Go's encoding/json prints one: a client's float32 of the float answer then
 * equals the base64 answer bit for bit (9 digits always suffice). */
static void put_float32(struct evbuffer *b, float v)
{
    char s[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, (double)v);
        if (strtof(s, NULL) == v)
            break;
    }
    evbuffer_add(b, s, strlen(s));
}

static void vector(struct evbuffer *b, const float *v)
{
    evbuffer_add(b, "[", 1);
    for (int i = 0; i < SIM_EMBED_DIM; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        put_float32(b, v[i]);
    }
    evbuffer_add(b, "]", 1);
}

/* encoding_format "base64": a JSON string holding the standard, padded
 * base64 of the vector as little-endian float32s, whatever the host's byte
 * order (Ollama's openai.floatsToBase64, OpenAI's wire format). */
static void vector_b64(struct evbuffer *b, const float *v)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[SIM_EMBED_DIM * 4];
    char out[(sizeof raw + 2) / 3 * 4 + 2];
    size_t o = 0;
    for (int i = 0; i < SIM_EMBED_DIM; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        for (int k = 0; k < 4; k++)
            raw[4 * i + k] = (unsigned char)(u >> (8 * k));
    }
    out[o++] = '"';
    for (size_t i = 0; i < sizeof raw; i += 3) {
        size_t n = sizeof raw - i < 3 ? sizeof raw - i : 3;
        uint32_t w = (uint32_t)raw[i] << 16 | (n > 1 ? (uint32_t)raw[i + 1] << 8 : 0) |
                     (n > 2 ? raw[i + 2] : 0);
        out[o++] = abc[w >> 18 & 63];
        out[o++] = abc[w >> 12 & 63];
        out[o++] = n > 1 ? abc[w >> 6 & 63] : '=';
        out[o++] = n > 2 ? abc[w & 63] : '=';
    }
    out[o++] = '"';
    evbuffer_add(b, out, o);
}

void fmt_embed(struct evbuffer *b, struct job *job)
{
    long long total = sim_ns(job->t_end - job->t0), load = sim_ns(job->t_runner - job->t0);
    if (job->kind == JK_EMBEDDINGS) {
        evbuffer_add(b, "{\"embedding\":", 13);
        if (job->nvec)
            vector(b, job->vecs);
        else
            evbuffer_add(b, "[]", 2);
        evbuffer_add(b, "}", 1);
        return;
    }
    if (job->kind == JK_V1_EMBED) {
        evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
        for (int i = 0; i < job->nvec; i++) {
            evbuffer_add(b,
                         i ? ",{\"object\":\"embedding\",\"embedding\":"
                           : "{\"object\":\"embedding\",\"embedding\":",
                         i ? 35 : 34);
            (job->b64 ? vector_b64 : vector)(b, job->vecs + i * SIM_EMBED_DIM);
            evbuffer_add_printf(b, ",\"index\":%d}", i);
        }
        evbuffer_add(b, "],\"model\":", 10);
        fmt_jcstr(b, job->model_name);
        evbuffer_add_printf(b, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
                            job->prompt_tokens, job->prompt_tokens);
        return;
    }
    evbuffer_add(b, "{\"model\":", 9);
    fmt_jcstr(b, job->model_name);
    evbuffer_add(b, ",\"embeddings\":[", 15);
    for (int i = 0; i < job->nvec; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        vector(b, job->vecs + i * SIM_EMBED_DIM);
    }
    if (job->nvec == 0) {
        evbuffer_add(b, "]}", 2);
        return;
    }
    evbuffer_add_printf(b,
                        "],\"total_duration\":%lld,\"load_duration\":%lld,"
                        "\"prompt_eval_count\":%d}",
                        total, load, job->prompt_tokens);
}

void fmt_details(struct evbuffer *b, const struct model *m)
{
    evbuffer_add_printf(b,
                        "{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"%s\","
                        "\"families\":[\"%s\"],\"parameter_size\":\"%s\","
                        "\"quantization_level\":\"%s\"}",
                        m->family, m->family, m->embedding ? "137M" : "8.0B",
                        m->embedding ? "F16" : "Q4_K_M");
}
