/* sim.h - ollama-sim: shared types of the simulator's modules.
 *
 * Modules and prefixes:
 *   sim_main.c       main(), command line, signals               (main, cli_*)
 *   sim_http.c       routing, Host/Origin checks, management     (http_*)
 *   sim_conn.c       the framing under each connection: uploads  (conn_*)
 *   sim_req.c        reading a request into a struct ireq        (ireq_*)
 *   sim_anthropic.c  /v1/messages: its request and replies       (anth_*)
 *   sim_responses.c  /v1/responses: its request and replies      (resp_*)
 *   sim_transcribe.c /v1/audio/transcriptions                    (trans_*)
 *   sim_infer.c      inference requests: the job's life          (infer_*, job_*)
 *   sim_sched.c      models, runners, slots and caches, loads    (sched_*)
 *   sim_gpu.c        batching curves, presets, pace clocks       (gpu_*)
 *   sim_fmt.c        native and /v1 JSON writers, times          (fmt_*)
 *   sim_text.c       deterministic answers and embeddings        (text_*)
 *   sim_lp.c         log-probabilities in Ollama's format        (lp_*)
 *   sim_blob.c       /api/blobs and /api/create                  (blob_*)
 *   sim_sha256.c     SHA-256                                     (sha256_*)
 *
 * A job is one inference request. Its states, and who moves it:
 *   JS_NEW      created by infer_*, not yet scheduled
 *   JS_PENDING  in the scheduler's load queue (bounded by --max-queue)  sched
 *   JS_LOADING  the request whose load is in progress (one at a time)  sched
 *   JS_WAITSLOT in its model's FIFO of slot waiters (unbounded)         sched
 *   JS_RUNNING  holds a slot, in its model's running list: prompt, then
 *               tokens, each paced by the model's clocks (sim_gpu.c)    infer
 * A job is freed exactly once, by job_finish() (reply sent) or job_cancel()
 * (client gone); both first take it out of whatever queue it is in. */
#ifndef SIM_H
#define SIM_H

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>

#include "names.h"

#define SIM_OLLAMA_VERSION "0.12.6"
#define SIM_EMBED_DIM 16
#define SIM_DEFAULT_CTX 4096
#define SIM_TEMPLATE_TOKENS 8 /* a prompt's template tokens, before its text */

/* Append a string literal to an evbuffer. */
#define ADD_LIT(b, lit) evbuffer_add((b), (lit), sizeof(lit) - 1)

struct sim_cfg {
    const char *host;
    int port;
    const char *models;
    int parallel, max_loaded, max_queue, max_waiting, tokens;
    long cache_ram; /* llama-server's host-memory prompt cache, in tokens; 0: none */
    double load_ms, keep_alive_s, ttft_ms, tokens_per_s, slowdown, time_scale;
    const char *gpu, *curve, *prompt_curve; /* preset name or "B:TPS,..." list; NULL: none */
    double fail_rate, reset_rate, offlabel_rate, stream_fail_rate;
    uint64_t seed;
    int loopback; /* listening on loopback: Host check on */
};
extern struct sim_cfg simcfg;
extern struct event_base *simbase;

struct sim_counts {
    long in_flight, max_in_flight, queued, served, cancelled, rejected, failed, resets, loads,
        requests;
    long reloads;                         /* loads that replaced a runner (other num_ctx) */
    long prompt_processed, prompt_reused; /* prompt tokens evaluated / taken from a cache */
    long prompt_restored;                 /* prompts brought back from the host-memory cache */
};
extern struct sim_counts simstats;

enum model_state { MS_UNLOADED, MS_LOADING, MS_LOADED };

/* One slot of a loaded runner (llama-server's slot): the text of the prompt
 * it last processed and what it generated after it, i.e. its KV cache.
 * Tokens are counted as everywhere in the sim: SIM_TEMPLATE_TOKENS, then
 * one per 4 characters. Freed with the runner (sim_sched.c). */
struct slot {
    char *text; /* owned; NULL: empty cache */
    size_t len, cap;
    long last_used; /* the runner's slot clock at its last release; -1: never */
    int busy;
};

struct job;
TAILQ_HEAD(job_list, job);

struct model {
    char display[NAME_KEY_MAX];
    char key[NAME_KEY_MAX];
    char digest[65];
    char family[32];
    int installed, embedding;
    long long size;
    double modified_wall; /* seconds since the epoch */
    enum model_state state;
    int busy;            /* slots held */
    int dispatching;     /* inside slot dispatch loop */
    int evicting;        /* chosen as a victim: unload when drained */
    double keep_alive_s; /* < 0: forever */
    int num_ctx;         /* context the runner was loaded with */
    struct slot *slots;  /* the runner's slots (nslots), while loaded */
    int nslots;
    struct slot *saved;  /* --cache-ram: prompts saved from slots, oldest first */
    int nsaved, capsaved;
    long saved_tokens;
    long slot_clock;
    int reload_pending;  /* unloaded (or evicting) to load again with other options */
    double expires_wall; /* when idle: unload time */
    struct event *expire_ev;
    struct job_list waiters; /* FIFO of JS_WAITSLOT jobs */
    struct job_list running; /* JS_RUNNING jobs (slot holders), any order */
    int prompting;           /* of those, in prompt processing on the prompt curve */
    /* Pace clocks (sim_gpu.c): tokens one slot has generated, and one prompt
     * has processed, since the model was created, at the rates of the time;
     * brought up to clock_ns by gpu_settle(). paced_* are the rates the
     * running jobs' timers were last armed with. */
    double gen_work, prompt_work, paced_gen, paced_prompt;
    long long clock_ns;
    struct sim_counts c;
};

enum job_kind {
    JK_GENERATE,
    JK_CHAT,
    JK_V1_CHAT,
    JK_V1_COMPLETION,
    JK_EMBED,
    JK_EMBEDDINGS,
    JK_V1_EMBED,
    JK_MESSAGES,  /* /v1/messages, Anthropic */
    JK_RESPONSES, /* /v1/responses, OpenAI Responses */
    JK_TRANSCRIBE /* /v1/audio/transcriptions */
};

/* Error bodies by dialect: {"error":"..."}; OpenAI's
 * {"error":{"message","type","param","code"}}; Anthropic's
 * {"type":"error","error":{"type","message"},"request_id"}. */
enum err_shape { SHAPE_NATIVE = 0, SHAPE_OPENAI = 1, SHAPE_ANTHROPIC = 2 };
enum job_state { JS_NEW, JS_PENDING, JS_LOADING, JS_WAITSLOT, JS_RUNNING };

/* Log-probabilities of an answer (sim_lp.c): one JSON fragment per token,
 * fragment i is s[off[i]..off[i+1]). Owned by the job. */
struct lp_buf {
    char *s;
    size_t len, cap;
    int *off;
    int n, offcap;
    int top; /* top_logprobs asked for: 0..20 */
};
/* One alternative at a token position: S (N bytes, borrowed) and its
 * probability. */
struct lp_alt {
    const char *s;
    size_t n;
    double p;
};

struct job;

/* How a job's reply is written: one row per wire format (sim_fmt.c,
 * sim_anthropic.c, sim_responses.c). Each writes into B. A streamed reply
 * is start (may be NULL), token for each token, then end, or fail for an
 * in-band error after the head; a non-streamed one is whole. loaded is the
 * reply to a load-only request (NULL: Ollama's native "load" object). */
struct reply_fmt {
    const char *stream_type; /* Content-Type of a streamed reply */
    enum err_shape shape;
    void (*start)(struct evbuffer *b, struct job *job);
    void (*token)(struct evbuffer *b, struct job *job, int i);
    void (*end)(struct evbuffer *b, struct job *job);
    void (*whole)(struct evbuffer *b, struct job *job);
    void (*fail)(struct evbuffer *b, struct job *job, const char *msg);
    void (*loaded)(struct evbuffer *b, struct job *job);
};
extern const struct reply_fmt fmt_native, fmt_v1, anth_fmt, resp_fmt, trans_fmt;

/* An inference request's fields as read from its body, whatever the wire
 * format (sim_infer.c, anth_parse, resp_parse). Strings are borrowed from
 * ROOT, except the owned ITEM and PROMPT. */
struct ireq {
    json_t *root;
    const char *model;
    char *item;   /* what the answer depends on: the last user message (owned) */
    char *prompt; /* the prompt's text: system, then the messages in order (owned) */
    size_t plen, pcap;
    json_t *format;
    int num_ctx;
    int stream, num_predict, include_usage, empty_input, ka_set, b64;
    int logprobs, top_logprobs; /* top_logprobs 0..20, checked */
    double ka_s;
    int prompt_tokens;
    int est_tokens; /* /v1/messages: Ollama's estimate for message_start */
    json_t *inputs; /* embed: array of strings (owned) */
};
/* Read REQ's body as KIND, check it as Ollama does and find its model (*M).
 * Returns 0, or -1 after answering with the error. R is filled either way:
 * ireq_cleanup() it. */
int ireq_read(struct evhttp_request *req, enum job_kind kind, struct ireq *r, struct model **m);
void ireq_cleanup(struct ireq *r); /* frees what R owns; zeroes it */
void ireq_free_all(void);          /* at exit */
int ireq_openai(enum job_kind k);  /* an OpenAI-shaped path */
int ireq_embedding(enum job_kind k);
enum err_shape ireq_shape(enum job_kind k);
void ireq_prompt_add(struct ireq *r, const char *s, size_t n);
void ireq_set_item(struct ireq *r, const char *s, size_t n); /* copies */
/* Append a message content to the prompt: a string, or the "text" of each
 * part of an array (a part's "content" for tool results), in order. */
void ireq_add_content(struct ireq *r, json_t *c, int depth);

struct job {
    TAILQ_ENTRY(job) link; /* pending queue, model waiters or model running */
    TAILQ_ENTRY(job) all;  /* every live job (for shutdown) */
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct model *m;
    enum job_kind kind;
    enum job_state state;
    unsigned stream : 1, load_only : 1, reply_started : 1, include_usage : 1, ka_set : 1,
        holds_slot : 1, length_cut : 1, fail_mid : 1, prompting : 1,
        b64 : 1,      /* /v1/embeddings encoding_format "base64" */
        logprobs : 1; /* answer with log-probabilities (lp, filled by text_answer) */
    struct lp_buf lp;
    double ka_s;
    int num_ctx;              /* options.num_ctx, or the default */
    char *model_name;         /* as sent, owned */
    char *answer;             /* full reply text, owned */
    int *tok_off;             /* ntok + 1 offsets into answer, owned */
    int ntok, tok_i, stop_at; /* tokens; emitted; where to stop */
    int prompt_tokens;        /* the prompt's tokens: prompt_eval_count */
    int prompt_new;           /* of those, not in the slot's cache: processed */
    char *ptext;              /* the prompt's text (owned), matched against the slots */
    size_t plen, lcp;         /* its length; characters shared with the slot's cache */
    int slot;                 /* index in m->slots while holding one, else -1 */
    float *vecs;              /* embeddings: nvec * SIM_EMBED_DIM, owned */
    int nvec;
    long long t0, t_runner, t_slot, t_first, t_end; /* monotonic ns, real */
    double prompt0, gen0; /* the model's clocks when the prompt / generation began */
    struct event *watch;  /* EV_CLOSED until the reply starts */
    struct event *timer;
    long created;
    int v1id;
    const struct reply_fmt *fmt;
    char id[48];      /* msg_... / resp_...: the reply's id */
    char item_id[32]; /* /v1/responses: the output message's id */
    int est_tokens;   /* /v1/messages: input_tokens of message_start */
    json_t *echo;     /* /v1/responses: the request, echoed in the reply (owned) */
};

/* sim_sched.c */
int sched_init(const char *models);
void sched_free(void);
struct model *sched_find(const char *name); /* installed model or NULL */
struct model *sched_add(const char *name);  /* install (pull); existing is returned */
void sched_remove(struct model *m);         /* uninstall (delete) */
int sched_nmodels(void);
struct model *sched_model(int i);
/* Queue JOB for its model. Returns 0, or -1 when it must get 503 busy
 * (nothing was queued; the caller answers). May complete JOB before
 * returning (instant mode): the caller must not touch JOB afterwards. */
int sched_submit(struct job *job);
void sched_detach(struct job *job);         /* out of any queue/slot/load */
void sched_unload_request(struct model *m); /* keep_alive 0 with empty prompt */
void sched_reset_counts(void);
void sched_count_prompt(struct job *job); /* JOB's prompt is processed: count its tokens */

/* sim_infer.c */
void infer_handle(struct evhttp_request *req, enum job_kind kind, const char *path);
void job_start_slot(struct job *job);   /* called by sched when JOB got a slot */
void job_runner_ready(struct job *job); /* load-only job: runner is ready */
void job_arm_watch(struct job *job);    /* watch for a client hang-up while waiting */
/* M's busy or prompting count changed (gpu_settle() ran before): re-arm the
 * timers of its running jobs if the rates moved. Never completes a job. */
void job_repace(struct model *m);
void infer_free_all(void);

/* sim_gpu.c */
/* Parse simcfg.gpu / curve / prompt_curve. Returns 0, or -1 with ERR. */
int gpu_init(char *err, size_t errlen);
void gpu_list(FILE *out);       /* the presets and their source */
const char *gpu_describe(void); /* one line for the startup log; static */
double gpu_gen_total(int b);    /* aggregate generation tokens/s, B slots busy */
double gpu_prompt_total(int p); /* aggregate prompt tokens/s, P prompts; 0: no curve */
int gpu_instant(void);          /* --tokens-per-s 0 and no curve: no pacing */
int gpu_has_prompt_curve(void);
double gpu_slot_rate(const struct model *m);   /* tokens/s of each of M's slots now */
double gpu_prompt_rate(const struct model *m); /* prompt tokens/s of each prompt now */
void gpu_settle(struct model *m);              /* M's clocks up to now */

/* sim_http.c */
void http_send_json(struct evhttp_request *req, int code, struct evbuffer *b);
void http_send_typed(struct evhttp_request *req, int code, const char *type, struct evbuffer *b);
void http_send_error(struct evhttp_request *req, int code, const char *msg, enum err_shape shape);
void http_note_request(struct evhttp_request *req);
void http_count_path(const char *route); /* one more request to ROUTE in /_sim/stats */
int http_setup(struct evhttp *http);
void http_free(void);

/* sim_fmt.c */
void fmt_jstr(struct evbuffer *b, const char *s, size_t n);
void fmt_jcstr(struct evbuffer *b, const char *s);
void fmt_rfc3339_utc(char *out, size_t len);             /* now, ns, trailing zeros trimmed */
void fmt_local_time(char *out, size_t len, double wall); /* with offset */
double fmt_wall_now(void);
void fmt_native_chunk(struct evbuffer *b, struct job *job, int i); /* token I */
void fmt_native_final(struct evbuffer *b, struct job *job, int with_text);
void fmt_native_special(struct evbuffer *b, const char *model, int chat, const char *reason);
void fmt_v1_chunk(struct evbuffer *b, struct job *job, int i);
void fmt_v1_finish(struct evbuffer *b, struct job *job);
void fmt_v1_full(struct evbuffer *b, struct job *job);
void fmt_embed(struct evbuffer *b, struct job *job);
void fmt_details(struct evbuffer *b, const struct model *m);

/* sim_lp.c */
/* Append the fragment of one token S (N bytes) chosen with probability P;
 * ALTS (sorted here; the chosen token among them) are the top_logprobs when
 * B->top > 0, padded to B->top with filler tokens jittered by H. */
void lp_token(struct lp_buf *b, const char *s, size_t n, double p, struct lp_alt *alts, int nalts,
              uint64_t h);
void lp_go_float(char *out, size_t len, double v); /* as Go's encoding/json */
void lp_free(struct lp_buf *b);                    /* zeroes B; B may be empty */

/* sim_anthropic.c: /v1/messages. Fill R from its body (R->root). Returns 0,
 * or -1 after answering 400 in Anthropic's shape. */
int anth_parse(struct evhttp_request *req, struct ireq *r);
void anth_new_id(char *out, size_t len, const char *prefix); /* prefix_ + 24 hex */

/* sim_responses.c: /v1/responses. Fill R from its body. Returns 0, or -1
 * after answering 400 in OpenAI's shape. */
int resp_parse(struct evhttp_request *req, struct ireq *r);

/* sim_conn.c: evhttp_set_bevcb's callback, the filter under each connection */
struct bufferevent *conn_new_bev(struct event_base *base, void *arg);

/* sim_blob.c */
int blob_digest_ok(const char *digest); /* sha256:HEX or sha256-HEX, 64 hex digits */
int blob_exists(const char *digest);
void blob_head(struct evhttp_request *req, const char *digest);
void blob_post(struct evhttp_request *req, const char *digest);
void blob_create(struct evhttp_request *req);
void blob_free_all(void);

/* sim_sha256.c */
struct sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t nbuf;
};
void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t n);
void sha256_hex(struct sha256 *c, char out[65]); /* the digest, lowercase; C is spent */

/* sim_transcribe.c: the multipart form into R (R->root made, owned by R).
 * Returns 0, or -1 after answering 400 in OpenAI's shape. */
int trans_parse(struct evhttp_request *req, struct ireq *r);

/* sim_text.c */
uint64_t text_hash(const char *s, size_t n);
double text_rand(void); /* [0,1) from --seed */
/* Build JOB's answer for FORMAT (NULL, "json" or a schema) and ITEM text,
 * and its log-probabilities when JOB->logprobs (JOB->lp.top set). */
void text_answer(struct job *job, json_t *format, const char *item, int ntokens);
void text_embed(float *out, const char *s, size_t n);
int text_count_tokens(const char *s, size_t n);

#endif
