/* sim.h - ollama-sim: shared types of the simulator's modules.
 *
 * Modules and prefixes:
 *   sim_main.c   main(), command line, signals           (main, cli_*)
 *   sim_http.c   routing, Host/Origin checks, management  (http_*)
 *   sim_infer.c  inference requests: parse, job life      (infer_*, job_*)
 *   sim_sched.c  models, runners, slots, loads, eviction  (sched_*)
 *   sim_gpu.c    batching curves, presets, pace clocks    (gpu_*)
 *   sim_fmt.c    JSON writers and times                   (fmt_*)
 *   sim_text.c   deterministic answers and embeddings     (text_*)
 *   sim_lp.c     log-probabilities in Ollama's format        (lp_*)
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

struct sim_cfg {
    const char *host;
    int port;
    const char *models;
    int parallel, max_loaded, max_queue, max_waiting, tokens;
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
};
extern struct sim_counts simstats;

enum model_state { MS_UNLOADED, MS_LOADING, MS_LOADED };

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
    JK_V1_EMBED
};
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
    int prompt_tokens;
    float *vecs; /* embeddings: nvec * SIM_EMBED_DIM, owned */
    int nvec;
    long long t0, t_runner, t_slot, t_first, t_end; /* monotonic ns, real */
    double prompt0, gen0; /* the model's clocks when the prompt / generation began */
    struct event *watch;  /* EV_CLOSED until the reply starts */
    struct event *timer;
    long created;
    int v1id;
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
void http_send_error(struct evhttp_request *req, int code, const char *msg, int openai);
void http_note_request(struct evhttp_request *req);
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

/* sim_text.c */
uint64_t text_hash(const char *s, size_t n);
double text_rand(void); /* [0,1) from --seed */
/* Build JOB's answer for FORMAT (NULL, "json" or a schema) and ITEM text,
 * and its log-probabilities when JOB->logprobs (JOB->lp.top set). */
void text_answer(struct job *job, json_t *format, const char *item, int ntokens);
void text_embed(float *out, const char *s, size_t n);
int text_count_tokens(const char *s, size_t n);

#endif
