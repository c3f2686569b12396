/* sim_sched.c - Ollama's scheduler, simulated (ollama-api.md section 4).
 *
 * Models are installed (listed by /api/tags) or not, and UNLOADED, LOADING
 * or LOADED. A request for a LOADED model takes the fast path: a slot if
 * one of its --parallel slots is free and nobody waits, else the model's
 * FIFO of waiters (unbounded; --max-waiting is a test knob). Any other
 * request goes to the pending queue (at most --max-queue, else 503), which
 * is served in order, one load at a time: room under --max-loaded, else an
 * idle victim (shortest keep-alive, then name) is unloaded, else the
 * shortest keep-alive busy runner is marked evicting and unloaded once it
 * has drained. The request that triggered a load owns it: if its client
 * leaves, the load is aborted.
 *
 * The runner (llama-server, as Ollama runs it since v0.30): each slot of a
 * loaded model keeps the text it last processed, prompt and answer (its KV
 * cache). A request takes the free slot whose cache shares the longest
 * prefix with its prompt, if that prefix is more than a tenth of the prompt
 * (llama-server's --slot-prompt-similarity, 0.1 by default, which Ollama
 * leaves alone; empty caches do not count), else the least recently used
 * free slot; then only the tokens past the shared prefix are processed
 * (at least one: the last is always evaluated again). Caches go with the
 * runner: a reload (another num_ctx) or an unload empties them. Embedding
 * requests take a slot but keep no cache.
 *
 * Re-entrancy: granting a slot may finish a job synchronously (instant
 * mode), which releases the slot and may unload the model and kick the
 * queue again. kick() and dispatch() therefore guard against re-entry with
 * flags and loop instead of recursing. */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net.h"

static struct model **models;
static int nmodels, capmodels;

static struct job_list pending = TAILQ_HEAD_INITIALIZER(pending);
static int npending, nloaded, nwaiting;
static struct model *loading;
static struct job *loader;
static struct event *load_ev;
static int kicking, kick_again;

static void kick(void);

static long long now_ns(void)
{
    return net_now_ns();
}

static struct timeval tv_of(double sim_ms)
{
    double real = sim_ms / simcfg.time_scale / 1000.0;
    struct timeval tv;
    if (real < 0)
        real = 0;
    tv.tv_sec = (time_t)real;
    tv.tv_usec = (suseconds_t)((real - (double)tv.tv_sec) * 1e6);
    return tv;
}

static void queued_add(struct model *m, int d)
{
    simstats.queued += d;
    m->c.queued += d;
}

/* ---- model registry ---- */

static void on_expire(evutil_socket_t fd, short what, void *arg);

struct model *sched_add(const char *name)
{
    char key[NAME_KEY_MAX];
    if (name_key(name, key, sizeof key))
        return NULL;
    for (int i = 0; i < nmodels; i++)
        if (!strcmp(models[i]->key, key)) {
            models[i]->installed = 1;
            models[i]->modified_wall = fmt_wall_now();
            return models[i];
        }
    if (nmodels == capmodels) {
        capmodels = capmodels ? capmodels * 2 : 8;
        models = realloc(models, sizeof *models * (size_t)capmodels);
    }
    struct model *m = calloc(1, sizeof *m);
    strcpy(m->key, key);
    name_display(name, m->display, sizeof m->display);
    uint64_t h = text_hash(key, strlen(key));
    uint64_t h2 = text_hash(m->display, strlen(m->display)) ^ (h >> 7);
    snprintf(m->digest, sizeof m->digest, "%016llx%016llx%016llx%016llx", (unsigned long long)h,
             (unsigned long long)h2, (unsigned long long)(h * 31 + 7),
             (unsigned long long)(h2 * 131 + 3));
    m->embedding = strstr(m->key, "embed") != NULL;
    snprintf(m->family, sizeof m->family, "%s", m->embedding ? "nomic-bert" : "llama");
    m->size = m->embedding ? 274302450LL : 4000000000LL + (long long)(h % 1000000000ULL);
    m->installed = 1;
    m->modified_wall = fmt_wall_now() - (double)(nmodels * 60);
    m->keep_alive_s = simcfg.keep_alive_s;
    TAILQ_INIT(&m->waiters);
    TAILQ_INIT(&m->running);
    m->expire_ev = evtimer_new(simbase, on_expire, m);
    models[nmodels++] = m;
    return m;
}

int sched_init(const char *list)
{
    char *dup = strdup(list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        char *flag = strchr(t, '='); /* NAME=embed: an embedding model */
        if (flag)
            *flag++ = '\0';
        struct model *m = *t ? sched_add(t) : NULL;
        if ((*t && !m) || (flag && strcmp(flag, "embed"))) {
            fprintf(stderr, "ollama-sim: bad model in --models: %s%s%s\n", t, flag ? "=" : "",
                    flag ? flag : "");
            rc = -1;
            break;
        }
        if (m && flag) {
            m->embedding = 1;
            snprintf(m->family, sizeof m->family, "%s", "nomic-bert");
            m->size = 274302450LL;
        }
    }
    free(dup);
    return rc;
}

static void on_load_done(evutil_socket_t fd, short what, void *arg);
static void slots_free(struct model *m);

void sched_free(void)
{
    for (int i = 0; i < nmodels; i++) {
        event_free(models[i]->expire_ev);
        slots_free(models[i]);
        free(models[i]);
    }
    free(models);
    models = NULL;
    nmodels = 0;
    if (load_ev)
        event_free(load_ev);
    load_ev = NULL;
}

struct model *sched_find(const char *name)
{
    char key[NAME_KEY_MAX];
    if (name_key(name, key, sizeof key))
        return NULL;
    for (int i = 0; i < nmodels; i++)
        if (models[i]->installed && !strcmp(models[i]->key, key))
            return models[i];
    return NULL;
}

int sched_nmodels(void)
{
    return nmodels;
}

struct model *sched_model(int i)
{
    return models[i];
}

/* ---- runners ---- */

/* ---- slots and their prompt caches ---- */

static void slots_free(struct model *m)
{
    for (int i = 0; i < m->nslots; i++)
        free(m->slots[i].text);
    free(m->slots);
    m->slots = NULL;
    m->nslots = 0;
    for (int i = 0; i < m->nsaved; i++)
        free(m->saved[i].text);
    free(m->saved);
    m->saved = NULL;
    m->nsaved = m->capsaved = 0;
    m->saved_tokens = 0;
}

static int slots(const struct model *m);

static void slots_new(struct model *m)
{
    slots_free(m);
    m->nslots = slots(m);
    m->slots = calloc((size_t)m->nslots, sizeof *m->slots);
    for (int i = 0; i < m->nslots; i++)
        m->slots[i].last_used = -1;
}

/* Characters of TEXT shared with the start of S's cache. */
static size_t common_prefix(const struct slot *s, const char *text, size_t len)
{
    size_t n = s->len < len ? s->len : len, i = 0;
    while (i < n && s->text[i] == text[i])
        i++;
    return i;
}

/* Tokens of the prompt already in S's cache, given LCP shared characters:
 * the template tokens and every whole 4 characters, never the prompt's
 * last token (llama-server evaluates it again for its logits). */
static int cached_tokens(const struct slot *s, size_t lcp, int prompt_tokens)
{
    if (!s->text)
        return 0;
    int n = SIM_TEMPLATE_TOKENS + (int)(lcp / 4);
    return n < prompt_tokens ? n : prompt_tokens - 1;
}

/* ---- llama-server's host-memory prompt cache (--cache-ram) ----
 * Since llama.cpp's "host-memory prompt caching" (PR 16391; Ollama's
 * llama-server leaves --cache-ram at its default, 8 GiB), a slot about to
 * lose most of its prompt (taken as the least recently used, or by
 * similarity keeping less than half of it) first saves it in host memory,
 * unless a saved prompt already holds it whole (saved prompts it holds
 * whole are dropped). The request then brings back the saved prompt that
 * keeps more of the slot's share and more of its own prompt than the slot
 * does, skipping any it would keep less than a quarter of; bringing one
 * back takes it out of the cache. Bounded here in tokens (there in MiB and
 * in tokens), the oldest dropped first. A restore costs no time here (there
 * a copy back to the GPU, tens of ms). Caches go with the runner. */

/* Take saved prompt I out of the cache; its text is the caller's. */
static char *saved_take(struct model *m, int i)
{
    char *text = m->saved[i].text;
    m->saved_tokens -= text_count_tokens(m->saved[i].text, m->saved[i].len);
    memmove(&m->saved[i], &m->saved[i + 1], (size_t)(m->nsaved - i - 1) * sizeof *m->saved);
    m->nsaved--;
    return text;
}

static void ram_save(struct model *m, const struct slot *s)
{
    long n = text_count_tokens(s->text, s->len);
    if (n > simcfg.cache_ram)
        return;
    for (int i = m->nsaved - 1; i >= 0; i--) {
        size_t lcp = common_prefix(&m->saved[i], s->text, s->len);
        if (lcp == s->len)
            return; /* held whole already */
        if (lcp == m->saved[i].len)
            free(saved_take(m, i)); /* this one holds it whole */
    }
    while (m->nsaved && m->saved_tokens + n > simcfg.cache_ram)
        free(saved_take(m, 0));
    if (m->nsaved == m->capsaved) {
        m->capsaved = m->capsaved ? 2 * m->capsaved : 8;
        m->saved = realloc(m->saved, (size_t)m->capsaved * sizeof *m->saved);
    }
    struct slot *c = &m->saved[m->nsaved++];
    *c = (struct slot){.text = malloc(s->len + 1), .len = s->len, .cap = s->len + 1};
    memcpy(c->text, s->text, s->len + 1);
    m->saved_tokens += n;
}

/* S shares LCP characters with JOB's prompt P; returns what it shares once
 * the best saved prompt, if any, has come back into it. */
static size_t ram_load(struct model *m, struct slot *s, const struct job *job, const char *p,
                       size_t lcp)
{
    double keep_best = (double)lcp / s->len, sim_best = (double)lcp / job->plen;
    int best = -1;
    for (int i = 0; i < m->nsaved; i++) {
        size_t l = common_prefix(&m->saved[i], p, job->plen);
        double keep = (double)l / m->saved[i].len, sim = (double)l / job->plen;
        if (keep < 0.25)
            continue;
        if (keep_best < keep && sim_best < sim) {
            keep_best = keep;
            sim_best = sim;
            best = i;
            lcp = l;
        }
    }
    if (best < 0)
        return lcp;
    size_t len = m->saved[best].len, cap = m->saved[best].cap;
    free(s->text);
    s->text = saved_take(m, best);
    s->len = len;
    s->cap = cap;
    simstats.prompt_restored++;
    m->c.prompt_restored++;
    return lcp;
}

/* llama-server's get_available_slot: the free slot with the largest share
 * of the prompt in its cache, above 0.1 of it; else the least recently
 * used one; with --cache-ram, a prompt of the slot's about to be lost goes
 * to host memory and a better one may come back. Fills JOB's slot, lcp and
 * prompt_new. */
static void pick_slot(struct model *m, struct job *job)
{
    int best = -1, lru = -1;
    double best_sim = 0.1;
    size_t best_lcp = 0;
    const char *p = job->ptext ? job->ptext : "";
    for (int i = 0; i < m->nslots; i++) {
        struct slot *s = &m->slots[i];
        if (s->busy)
            continue;
        if (lru < 0 || s->last_used <= m->slots[lru].last_used) /* ties: the last, as there */
            lru = i;
        if (!s->text || job->prompt_tokens <= 0)
            continue;
        size_t lcp = common_prefix(s, p, job->plen);
        double sim = (double)cached_tokens(s, lcp, job->prompt_tokens) / job->prompt_tokens;
        if (sim > best_sim) {
            best_sim = sim;
            best = i;
            best_lcp = lcp;
        }
    }
    int save = best < 0 || (double)best_lcp < 0.5 * (double)m->slots[best].len;
    if (best < 0) {
        best = lru;
        best_lcp = common_prefix(&m->slots[lru], p, job->plen);
    }
    struct slot *s = &m->slots[best];
    if (save && simcfg.cache_ram > 0 && !m->embedding && s->text && s->len && job->plen) {
        ram_save(m, s);
        best_lcp = ram_load(m, s, job, p, best_lcp);
    }
    job->slot = best;
    job->lcp = best_lcp;
    m->slots[best].busy = 1;
    if (!job->m->embedding)
        job->prompt_new =
            job->prompt_tokens - cached_tokens(&m->slots[best], best_lcp, job->prompt_tokens);
}

static void slot_keep(struct slot *s, const char *a, size_t na, const char *b, size_t nb)
{
    if (na + nb + 1 > s->cap) {
        s->cap = na + nb + 1;
        s->text = realloc(s->text, s->cap);
    }
    memmove(s->text, a, na); /* A may be the cache itself */
    memcpy(s->text + na, b, nb);
    s->len = na + nb;
    s->text[s->len] = '\0';
}

/* JOB leaves its slot: the cache now holds its prompt and the tokens it
 * generated; a prompt not processed to the end leaves only what was
 * shared (the sim does not track a prompt's progress within a batch). */
static void release_slot(struct model *m, struct job *job)
{
    if (job->slot < 0 || job->slot >= m->nslots)
        return;
    struct slot *s = &m->slots[job->slot];
    s->busy = 0;
    s->last_used = m->slot_clock++;
    job->slot = -1;
    if (m->embedding || !job->ptext)
        return;
    if (job->t_first) {
        size_t gen = job->tok_off ? (size_t)job->tok_off[job->tok_i] : 0;
        slot_keep(s, job->ptext, job->plen, job->answer ? job->answer : "", gen);
    } else if (s->text) {
        s->len = job->lcp < s->len ? job->lcp : s->len;
        s->text[s->len] = '\0';
    }
}

void sched_count_prompt(struct job *job)
{
    struct model *m = job->m;
    long reused = job->prompt_tokens - job->prompt_new;
    simstats.prompt_processed += job->prompt_new;
    m->c.prompt_processed += job->prompt_new;
    simstats.prompt_reused += reused;
    m->c.prompt_reused += reused;
}

static void unload(struct model *m)
{
    if (m->state == MS_UNLOADED)
        return;
    log_info("unloading %s", m->display);
    slots_free(m);
    m->state = MS_UNLOADED;
    m->evicting = 0;
    evtimer_del(m->expire_ev);
    nloaded--;
}

/* M has no request in a slot and none waiting: start its keep-alive. */
static void idle(struct model *m)
{
    if (m->state != MS_LOADED)
        return;
    if (m->evicting || m->keep_alive_s == 0 || !m->installed) {
        unload(m);
        kick();
        return;
    }
    if (m->keep_alive_s < 0) {
        m->expires_wall = 1e300;
        return;
    }
    m->expires_wall = fmt_wall_now() + m->keep_alive_s;
    struct timeval tv = tv_of(m->keep_alive_s * 1000.0);
    evtimer_add(m->expire_ev, &tv);
}

static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    struct model *m = arg;
    (void)fd, (void)what;
    if (m->state == MS_LOADED && m->busy == 0 && TAILQ_EMPTY(&m->waiters)) {
        unload(m);
        kick();
    }
}

/* Slots of M's runner: --parallel, but embedding models always run with 1. */
static int slots(const struct model *m)
{
    return m->embedding ? 1 : simcfg.parallel;
}

/* The caller then starts JOB (job_start_slot), which re-paces the model. */
static void take_slot(struct job *job)
{
    struct model *m = job->m;
    gpu_settle(m); /* the rates change with busy */
    pick_slot(m, job);
    m->busy++;
    TAILQ_INSERT_TAIL(&m->running, job, link);
    job->holds_slot = 1;
    job->state = JS_RUNNING;
    job->t_slot = now_ns();
    simstats.in_flight++;
    m->c.in_flight++;
    if (simstats.in_flight > simstats.max_in_flight)
        simstats.max_in_flight = simstats.in_flight;
    if (m->c.in_flight > m->c.max_in_flight)
        m->c.max_in_flight = m->c.in_flight;
    evtimer_del(m->expire_ev);
    m->expires_wall = fmt_wall_now() + (m->keep_alive_s < 0 ? 1e12 : m->keep_alive_s);
}

/* Hand free slots of M to its waiters, oldest first. */
static void dispatch(struct model *m)
{
    if (m->dispatching)
        return;
    m->dispatching = 1;
    struct job *j;
    while (m->busy < slots(m) && (j = TAILQ_FIRST(&m->waiters)) != NULL) {
        TAILQ_REMOVE(&m->waiters, j, link);
        nwaiting--;
        queued_add(m, -1);
        take_slot(j);
        job_start_slot(j); /* may free j */
    }
    m->dispatching = 0;
    if (m->busy == 0 && TAILQ_EMPTY(&m->waiters))
        idle(m);
}

/* JOB's model is loaded: take a slot, wait for one, or (load-only) answer.
 * Returns -1 only for a FRESH request (not from the load queue) refused by
 * --max-waiting. */
static int grant(struct job *job, int fresh)
{
    job->state = JS_NEW; /* in no queue now */
    struct model *m = job->m;
    job->t_runner = now_ns();
    if (job->ka_set)
        m->keep_alive_s = job->ka_s;
    if (job->load_only) {
        job_runner_ready(job); /* frees job */
        if (m->busy == 0 && TAILQ_EMPTY(&m->waiters))
            idle(m);
        return 0;
    }
    if (m->busy < slots(m) && TAILQ_EMPTY(&m->waiters)) {
        take_slot(job);
        job_start_slot(job);
        return 0;
    }
    if (fresh && simcfg.max_waiting > 0 && nwaiting >= simcfg.max_waiting)
        return -1;
    job->state = JS_WAITSLOT;
    TAILQ_INSERT_TAIL(&m->waiters, job, link);
    nwaiting++;
    queued_add(m, 1);
    evtimer_del(m->expire_ev);
    job_arm_watch(job);
    return 0;
}

/* Can JOB run on M's runner as loaded? A different num_ctx forces a reload
 * (ollama-api.md 4.3). */
static int runner_fits(const struct model *m, const struct job *job)
{
    return m->state == MS_LOADED && !m->evicting && m->num_ctx == job->num_ctx;
}

int sched_submit(struct job *job)
{
    struct model *m = job->m;
    if (runner_fits(m, job))
        return grant(job, 1);
    if (npending >= simcfg.max_queue)
        return -1;
    job->state = JS_PENDING;
    TAILQ_INSERT_TAIL(&pending, job, link);
    npending++;
    queued_add(m, 1);
    job_arm_watch(job);
    kick();
    return 0;
}

/* ---- loads and eviction ---- */

static double ka_rank(const struct model *m)
{
    return m->keep_alive_s < 0 ? INFINITY : m->keep_alive_s;
}

static int better_victim(const struct model *a, const struct model *b)
{
    if (!b)
        return 1;
    if (ka_rank(a) != ka_rank(b))
        return ka_rank(a) < ka_rank(b);
    return strcmp(a->display, b->display) < 0;
}

/* Make room for one more runner. Returns 1 when there is room now. */
static int make_room(void)
{
    struct model *idle_v = NULL, *busy_v = NULL;
    if (nloaded < simcfg.max_loaded)
        return 1;
    for (int i = 0; i < nmodels; i++) {
        struct model *m = models[i];
        if (m->state != MS_LOADED)
            continue;
        if (m->evicting)
            return 0; /* already waiting for one to drain */
        if (m->busy == 0 && TAILQ_EMPTY(&m->waiters)) {
            if (better_victim(m, idle_v))
                idle_v = m;
        } else if (better_victim(m, busy_v)) {
            busy_v = m;
        }
    }
    if (idle_v) {
        unload(idle_v);
        return nloaded < simcfg.max_loaded;
    }
    if (busy_v) {
        log_info("evicting %s once its requests finish", busy_v->display);
        busy_v->evicting = 1;
    }
    return 0;
}

static void start_load(struct job *job)
{
    struct model *m = job->m;
    TAILQ_REMOVE(&pending, job, link);
    npending--;
    job->state = JS_LOADING;
    loading = m;
    loader = job;
    m->state = MS_LOADING;
    m->num_ctx = job->num_ctx;
    slots_new(m);
    if (m->reload_pending) {
        m->reload_pending = 0;
        simstats.reloads++;
        m->c.reloads++;
    }
    m->keep_alive_s = job->ka_set ? job->ka_s : simcfg.keep_alive_s;
    m->expires_wall = fmt_wall_now() + (m->keep_alive_s < 0 ? 1e12 : m->keep_alive_s);
    nloaded++;
    simstats.loads++;
    m->c.loads++;
    log_info("loading %s", m->display);
    if (!load_ev)
        load_ev = evtimer_new(simbase, on_load_done, NULL);
    struct timeval tv = tv_of(simcfg.load_ms);
    evtimer_add(load_ev, &tv);
}

static void on_load_done(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = loader;
    (void)fd, (void)what, (void)arg;
    loading->state = MS_LOADED;
    loading = NULL;
    loader = NULL;
    queued_add(job->m, -1);
    grant(job, 0);
    kick();
}

static void kick(void)
{
    struct job *j;
    if (kicking) {
        kick_again = 1;
        return;
    }
    kicking = 1;
    do {
        kick_again = 0;
        while (!loading && (j = TAILQ_FIRST(&pending)) != NULL) {
            struct model *m = j->m;
            if (runner_fits(m, j)) {
                TAILQ_REMOVE(&pending, j, link);
                npending--;
                queued_add(m, -1);
                grant(j, 0);
                continue;
            }
            if (m->state == MS_LOADED) { /* loaded with other options, or going away */
                if (!m->evicting)
                    m->reload_pending = 1;
                if (m->evicting) /* it goes once drained: this load waits, in order */
                    break;
                if (m->busy || !TAILQ_EMPTY(&m->waiters)) {
                    log_info("reloading %s (num_ctx %d -> %d) once its requests finish", m->display,
                             m->num_ctx, j->num_ctx);
                    m->evicting = 1;
                    break;
                }
                unload(m);
            }
            if (!make_room())
                break;
            start_load(j);
        }
    } while (kick_again);
    kicking = 0;
}

void sched_detach(struct job *job)
{
    struct model *m = job->m;
    switch (job->state) {
    case JS_PENDING:
        TAILQ_REMOVE(&pending, job, link);
        npending--;
        queued_add(m, -1);
        break;
    case JS_LOADING:
        log_info("client closed the connection before %s finished loading, aborting load",
                 m->display);
        evtimer_del(load_ev);
        m->state = MS_UNLOADED;
        slots_free(m);
        nloaded--;
        loading = NULL;
        loader = NULL;
        queued_add(m, -1);
        break;
    case JS_WAITSLOT:
        TAILQ_REMOVE(&m->waiters, job, link);
        nwaiting--;
        queued_add(m, -1);
        break;
    case JS_RUNNING:
    case JS_NEW: break;
    }
    int was = job->state;
    job->state = JS_NEW;
    if (job->holds_slot) {
        gpu_settle(m);
        job->holds_slot = 0;
        release_slot(m, job);
        TAILQ_REMOVE(&m->running, job, link);
        m->busy--;
        if (job->prompting) {
            job->prompting = 0;
            m->prompting--;
        }
        simstats.in_flight--;
        m->c.in_flight--;
        dispatch(m);
        job_repace(m);
    } else if (was == JS_WAITSLOT && m->busy == 0 && TAILQ_EMPTY(&m->waiters)) {
        idle(m);
    }
    if (was == JS_LOADING || was == JS_PENDING)
        kick();
}

void sched_unload_request(struct model *m)
{
    m->keep_alive_s = 0;
    if (m->state == MS_LOADED && m->busy == 0 && TAILQ_EMPTY(&m->waiters)) {
        unload(m);
        kick();
    }
}

void sched_remove(struct model *m)
{
    m->installed = 0;
    if (m->state == MS_LOADED && m->busy == 0 && TAILQ_EMPTY(&m->waiters)) {
        unload(m);
        kick();
    }
}

void sched_reset_counts(void)
{
    long inf = simstats.in_flight, q = simstats.queued;
    memset(&simstats, 0, sizeof simstats);
    simstats.in_flight = simstats.max_in_flight = inf;
    simstats.queued = q;
    for (int i = 0; i < nmodels; i++) {
        struct model *m = models[i];
        long mi = m->c.in_flight, mq = m->c.queued;
        memset(&m->c, 0, sizeof m->c);
        m->c.in_flight = m->c.max_in_flight = mi;
        m->c.queued = mq;
    }
}
