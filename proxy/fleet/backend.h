/* backend.h - the backends and the choice among them.
 *
 * All of this lives in the one event-loop thread: in_flight is exact
 * because nothing else touches it. A slot is taken with backend_acquire()
 * when a request is dispatched and given back with backend_release() when
 * its response has ended (a stream counts until its last byte) or failed. */
#ifndef PX_BACKEND_H
#define PX_BACKEND_H

#include <sys/queue.h>
#include <sys/socket.h>

#include "adapt.h"
#include "metrics.h"
#include "reqtext.h"
#include "upstream.h"

struct event;
struct evbuffer;

struct upstream;
struct proxy;
struct resolving;
struct config_backend;

/* A model's runner on a backend. Ollama runs each loaded model in a runner
 * of its own, with its own slots (OLLAMA_NUM_PARALLEL; embedding models
 * always 1) and its own prompt caches, so the proxy caps and counts per
 * (backend, model) as well as per backend. Made on a model's first request
 * there (backend_runner), owned by the backend, freed with it.
 *
 * ctx is the num_ctx the runner runs with as far as the proxy knows: that
 * of the last request it sent there (0: none given, the backend's
 * default), or /api/ps' context_length when it has sent nothing since that
 * answer was asked (ctx_from_ps), -1 when not loaded or not known. A
 * request with another num_ctx would reload the model. */
struct runner {
    char *key;         /* name_key() of the model */
    int in_flight;     /* the proxy's requests on it now */
    int cap;           /* its own cap now (0: none, the backend's only): runner_cap() */
    unsigned cfg_serial; /* the config cap was read from (px_config.serial) */
    unsigned adapt_epoch; /* be->adapt_epoch when adapt was started */
    int embed;         /* an embedding model: by /api/show, or by its name until then */
    int show_known;    /* /api/show's capabilities were read (discover.c) */
    int ctx;           /* see above */
    int ctx_from_ps;
    double sent_ms;    /* when the proxy last sent it a request (net_now_ms) */
    struct adapt adapt; /* with adaptive = true: its own cap under the ceiling */
    unsigned long long hits, misses; /* keyed requests granted at their key's home, elsewhere */
    unsigned long long loads;  /* replies that said load_duration >= 100 ms */
    unsigned long long tokens, prompt_tokens; /* generated and prompt tokens of its replies */
    struct runner *next;
};

struct backend {
    struct proxy *px; /* the proxy it belongs to (its checks and polls find it here) */
    char *name;
    char *url;
    char *host;
    int port;
    /* The Host header and the backend's own headers (config `headers`,
     * secrets: never logged nor shown), on every request to it. */
    struct reqtext_host hostport[1];
    /* Its address, transport and keep-alive pool. An https:// backend's
     * transport is transport_tls, its tp_ctx a struct tls_target (ours). */
    struct upstream_target target;
    struct resolving *resolving;   /* a lookup of host under way (resolve.h) */
    int max_concurrent;
    int in_flight;
    int meta_in_flight; /* metadata requests, outside the cap (sched.h SCHED_META_CAP) */
    unsigned long long served; /* responses that ended well */
    unsigned long long failed; /* connect errors, resets, 503s, timeouts */
    /* Health (health.c): down after fail_after failures in a row, of real
     * requests or of the active check; up again only after recover_after
     * checks in a row succeed, so no real request is risked on it. */
    int healthy;
    int health_known; /* a check passed, a request succeeded or it went down: else "unknown" */
    int consecutive_failures;
    int consecutive_ok;
    char down_reason[160]; /* why it went down, for /proxy/status */
    double down_since;     /* wall-clock seconds */
    struct upstream *probe; /* an active check in flight */
    int probe_status;
    char probe_body[128];   /* the start of its answer, {"version":"..."} */
    size_t probe_len;
    char version[48];       /* what it last said of its version; "" before */
    /* The runtime control (/proxy/backends/NAME/...): ADMIN_DRAIN and
     * ADMIN_DISABLED take no new request; a reload that changes the
     * backend's row resets it. cfg_cap is the file's max_concurrent. */
    enum backend_admin { ADMIN_READY, ADMIN_DRAIN, ADMIN_DISABLED } admin;
    int cfg_cap;
    int cap_override; /* 0: none */
    struct histogram h_first_byte, h_upstream; /* metrics.h */
    /* adapt.on: max_concurrent is the ceiling (adapt.ceiling), and each
     * runner finds its own cap under it (struct runner); be->adapt itself
     * is what a runner starts from, and adapt_epoch counts its restarts. */
    struct adapt adapt;
    unsigned adapt_epoch;
    struct runner *runners; /* one per model requested here, see struct runner */
    int removed; /* dropped by a reload: serves what it has, takes nothing */
    int refs;    /* requests that name it (backend_ref); the fleet's list is one */
    /* While removed and named by a request: on fleet.c's list of retired
     * backends (a row for its server takes it back); backend_free unlinks
     * it (le_prev NULL: on no list). */
    LIST_ENTRY(backend) retired_link;
    char *tmpl, *tmpl_url; /* made from the dns row of this name and url; NULL: a url row */
    int tmpl_k;            /* and named tmpl-k */
    /* Model discovery (discover.c): installed models from /api/tags and
     * loaded ones from /api/ps, as display names and as name_key() keys.
     * A backend that joins (startup, reload, dns) or comes back up is asked
     * at once and is models_pending until that answer: it takes no request
     * for a model meanwhile, so it never answers one it does not have. A
     * backend whose /api/tags never answered (models_known 0 and not
     * pending) serves anything, as CONTRACT.md says. */
    int models_known;
    int models_pending;
    struct model_list *models, *loaded;
    struct json_t *tags_json, *ps_json; /* the last "models" arrays, as sent */
    unsigned long long tags_gen; /* tags_json's generation, unique in the process (catalog.c) */
    double ps_at_ms;             /* when loaded/ps_json were last answered */
    int poll_again;              /* a refresh was asked while a poll ran */
    struct upstream *poll;       /* a discovery request in flight */
    struct evbuffer *poll_body;  /* its answer so far */
    int poll_phase;              /* 0: /api/tags, 1: /api/ps, 2: /api/show of show_rn */
    struct runner *show_rn;      /* phase 2: the runner whose capabilities are asked */
    double poll_t0_ms;           /* when the phase in flight was asked */
    double local_change_ms;      /* when a fan-out of ours last changed the lists */
    int poll_status;
};

/* A list of model names, owned by its backend. */
struct model_list {
    int n, cap;
    char **names;  /* as the backend lists them */
    char **keys;   /* name_key() of each */
    char **labels; /* name_display() of each: the /metrics label */
};

void model_list_free(struct model_list *l);

/* What a pull, create, copy, delete or unload just did, into BE's lists at
 * once (discovery confirms later): NAME added to its installed models, or
 * removed from its installed (LOADED 0) or loaded (LOADED 1) ones. A
 * backend whose models are not known yet is left alone. */
void backend_model_add(struct backend *be, const char *name);
void backend_model_remove(struct backend *be, const char *name, int loaded);
/* 1 when L holds KEY. */
int model_list_has(const struct model_list *l, const char *key);
/* The display form of KEY in L, or NULL when L does not hold it. */
const char *model_list_label(const struct model_list *l, const char *key);
/* Append NAME (KEY its name_key()) to L. 0, or -1 when out of memory. */
int model_list_push(struct model_list *l, const char *name, const char *key);

/* Make a backend from its config row (its host is resolved by the caller:
 * resolve.h). Returns NULL on allocation failure. */
struct backend *backend_new(const struct config_backend *cb);
/* Free a backend with no request in flight; NULL is a no-op. */
void backend_free(struct backend *be);

/* A reload keeps BE (same name and url) with the row CB: its headers,
 * Host and TLS settings become CB's; TLS state is made anew only when the
 * settings or their files changed (then idle connections are closed, and
 * connections in use finish as they are). Returns 0, or -1 when the new
 * TLS settings do not load (logged; the old stay). */
int backend_reconfigure(struct backend *be, const struct config_backend *cb);

/* The TLS state of BE (transport_tls.h), NULL for a plain backend. */
struct tls_target *backend_tls(const struct backend *be);


/* The max_concurrent shown (status, metrics): the configured or runtime
 * cap; for an adaptive backend its ceiling, not the cap it found. */
static inline int backend_ceiling(const struct backend *be)
{
    return be->adapt.on ? be->adapt.ceiling : be->max_concurrent;
}

/* Make BE adaptive under CEILING (again, on a new one): its cap is found
 * from 1. */
void backend_adapt(struct backend *be, int ceiling);

/* 1 when BE may be given a request now: a free slot, healthy, in service. */
int backend_available(const struct backend *be, double now_ms);

/* 1 when BE may be given a request for the model KEY (NULL: any) now:
 * available, serving KEY, and KEY's runner under its cap. */
int backend_takes(struct backend *be, const char *key, double now_ms);

/* ---- runners (struct runner) ---- */

/* BE's runner of the model KEY, made if it has none; NULL when KEY is NULL
 * or out of memory. backend_runner_find() never makes one. */
struct runner *backend_runner(struct backend *be, const char *key);
struct runner *backend_runner_find(const struct backend *be, const char *key);

/* The cap of RN in force: the found one where the backend is adaptive, else
 * model_caps' (the backend's row, then the top level), else 1 for an
 * embedding model, else 0 (the backend's cap alone). */
int runner_cap(struct backend *be, struct runner *rn);

/* The model KEY's share of BE: its cap there (the runner's, else the
 * backend's) and its requests in flight. */
int backend_model_cap(struct backend *be, const char *key);
int backend_model_in_flight(const struct backend *be, const char *key);

/* A request with num_ctx CTX (0: none given) takes (acquire) or gives
 * back (release) a slot of RN (NULL: no runner, nothing counted). */
void runner_acquire(struct runner *rn, int ctx, double now_ms);
void runner_release(struct runner *rn, double now_ms);

/* /api/ps answered (asked at ASKED_MS): each runner not sent a request
 * since learns whether its model is loaded and with what context_length. */
void backend_runners_from_ps(struct backend *be, double asked_ms);

/* The cap shown as BE's effective cap: max_concurrent, or with adaptive
 * the sum of the caps its runners in use found (at most the ceiling; 1, a
 * runner's start, before any). *WHY: the adaptive state to show, the
 * runner's that changed last (be->adapt before any). */
int backend_effective_cap(const struct backend *be, const struct adapt **why);

/* 1 when BE may serve the model with name key KEY (NULL: any request):
 * its /api/tags lists it, or its models could not be known; 0 while the
 * answer of a joining backend is awaited (models_pending). */
int backend_serves(const struct backend *be, const char *key);


/* The runtime control (own/admin.h): drain, disable or enable BE; a cap
 * of its own (for an adaptive backend, its ceiling), until a reload changes
 * its row. Only fleet/ changes a backend's service, health and cap. */
void backend_set_admin(struct backend *be, enum backend_admin admin);
void backend_set_cap(struct backend *be, int cap);

/* A request (or a try) for the model KEY that BE served has ended: TOKENS
 * generated (-1 unknown), OUTCOME an enum adapt_outcome, LOADED when its
 * reply said the model was loaded for it (load_duration >= 100 ms); an
 * adaptive backend's runner learns its cap from it. */
/* A reply of BE for the model KEY said it generated TOKENS and read PROMPT
 * prompt tokens (-1 or 0: none said): counted on its runner. */
void backend_count_tokens(struct backend *be, const char *key, long long tokens,
                          long long prompt);

void backend_feedback(struct backend *be, const char *key, long long tokens, int outcome,
                      int loaded, double now_ms);

/* References: a request that names BE as its backend holds one
 * (request.h); a backend a reload or a DNS answer retired is freed when
 * its last reference goes. */
void backend_ref(struct backend *be);
void backend_unref(struct backend *be);

void backend_acquire(struct backend *be);
void backend_release(struct backend *be);

/* Record the outcome of a real request's try: failures mark the backend
 * down after FAIL_AFTER in a row (WHY says of what); a success resets the
 * count (a backend comes back up only through health.c's checks). */
void backend_note_failure(struct backend *be, int fail_after, const char *why);
void backend_note_success(struct backend *be);

/* Mark BE down now with WHY (once: the first reason is kept). */
void backend_mark_down(struct backend *be, const char *why);

/* A connection to BE failed in its transport's setup (UPSTREAM_ESETUP: a
 * TLS handshake or a certificate that does not verify, why in
 * be->target.setup_err): down at once, whatever fail_after says, since
 * every other connection would fail the same way. WHO says which request
 * kind saw it ("health check", or NULL for a request). It comes back
 * through health.c's checks, which shake hands again. */
void backend_setup_failed(struct backend *be, const char *who);

/* "up", "down", "unknown" (in service, but nothing heard of it yet: no
 * check has passed and it has not been marked down), "draining",
 * "drained" or "disabled". */
const char *backend_state(const struct backend *be);

#endif
