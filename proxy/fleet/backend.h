/* backend.h - the backends and the choice among them.
 *
 * All of this lives in the one event-loop thread: in_flight is exact
 * because nothing else touches it. A slot is taken with backend_acquire()
 * when a request is dispatched and given back with backend_release() when
 * its response has ended (a stream counts until its last byte) or failed. */
#ifndef PX_BACKEND_H
#define PX_BACKEND_H

#include <sys/socket.h>

#include "adapt.h"
#include "metrics.h"
#include "upstream.h"

struct event;
struct evbuffer;

struct upstream;
struct proxy;
struct resolving;
struct config_backend;

struct backend {
    struct proxy *px; /* the proxy it belongs to (its checks and polls find it here) */
    char *name;
    char *url;
    char *host;
    int port;
    char hostport[300]; /* the Host header the backend is sent */
    struct upstream_target target; /* its address, transport and keep-alive pool */
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
    struct adapt adapt; /* adapt.on: max_concurrent is adapt.cap, cfg_cap the ceiling */
    int removed; /* dropped by a reload: serves what it has, takes nothing */
    int refs;    /* requests that name it (backend_ref); the fleet's list is one */
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
    int poll_phase;              /* 0: /api/tags, 1: /api/ps */
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

/* 1 when BE may serve the model with name key KEY (NULL: any request):
 * its /api/tags lists it, or its models could not be known; 0 while the
 * answer of a joining backend is awaited (models_pending). */
int backend_serves(const struct backend *be, const char *key);


/* The runtime control (own/admin.h): drain, disable or enable BE; a cap
 * of its own (for an adaptive backend, its ceiling), until a reload changes
 * its row. Only fleet/ changes a backend's service, health and cap. */
void backend_set_admin(struct backend *be, enum backend_admin admin);
void backend_set_cap(struct backend *be, int cap);

/* A request (or a try) BE served has ended: TOKENS generated (-1
 * unknown), OUTCOME an enum adapt_outcome; an adaptive backend learns its
 * cap from it. */
void backend_feedback(struct backend *be, long long tokens, int outcome, double now_ms);

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

/* "up", "down", "draining", "drained" or "disabled". */
const char *backend_state(const struct backend *be);

#endif
