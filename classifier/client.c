/* client.c - see client.h. Follows curl's hiperfifo.c: the multi tells us
 * which sockets to watch (on_socket) and when to call it back (on_timer,
 * which only arms a libevent timer); every curl_multi_socket_action() is
 * followed by check_done(), the one place where transfers end. */
#include "client.h"

#include <ctype.h>
#include <event2/event_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net.h"
#include "version.h"

#define MAX_REPLY (4 << 20) /* a classification reply is a few hundred bytes */
#define BACKOFF_BASE_MS 500.0
#define BACKOFF_MAX_MS (CLIENT_BACKOFF_MAX_S * 1000.0)

struct client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer; /* curl's timeout */
    struct curl_slist *headers;
    struct buf url; /* URL/api/chat */
    struct client_conf conf;
    struct stats *st;
    client_done_fn done;
    void *arg;
    size_t in_flight;
    unsigned rng;
    struct sock *socks;    /* every struct sock alive */
    unsigned long replies; /* HTTP replies received, any status */
    int has_key;           /* an Authorization header is sent */
    int proxy_seen;        /* a reply carried X-Backend: the endpoint is ollama-proxy */
};

/* Per-socket context, attached with curl_multi_assign(). */
struct sock {
    struct event ev;
    struct sock *prev, *next; /* in client.socks, to free what curl forgets */
};

static void check_done(struct client *c);

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    int running,
        action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(c->multi, fd, action, &running);
    check_done(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    int running;
    (void)fd;
    (void)what;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* CURLMOPT_TIMERFUNCTION: only arm or disarm our timer; never call curl. */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct client *c = arg;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
    }
    return 0;
}

static void sock_free(struct client *c, struct sock *sk)
{
    event_del(&sk->ev);
    if (sk->prev)
        sk->prev->next = sk->next;
    else
        c->socks = sk->next;
    if (sk->next)
        sk->next->prev = sk->prev;
    free(sk);
}

/* CURLMOPT_SOCKETFUNCTION: watch S as curl asks. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp)
{
    struct client *c = arg;
    struct sock *sk = sockp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            curl_multi_assign(c->multi, s, NULL);
            sock_free(c, sk);
        }
        return 0;
    }
    if (!sk) {
        if (!(sk = calloc(1, sizeof *sk)))
            return -1;
        sk->next = c->socks;
        if (c->socks)
            c->socks->prev = sk;
        c->socks = sk;
        curl_multi_assign(c->multi, s, sk);
    } else {
        event_del(&sk->ev);
    }
    short kind =
        EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    event_assign(&sk->ev, c->base, s, kind, on_event, c);
    event_add(&sk->ev, NULL);
    return 0;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct job *job = arg;
    if (job->resp.len + n > MAX_REPLY || buf_append(&job->resp, ptr, n) < 0)
        return 0;
    (void)size;
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *arg)
{
    struct job *job = arg;
    static const char name[] = "retry-after:", backend[] = "x-backend:";
    (void)size;
    if (n > sizeof backend && strncasecmp(ptr, backend, sizeof backend - 1) == 0)
        job->via_backend = 1;
    if (n > sizeof name && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        const char *p = ptr + sizeof name - 1;
        while (p < ptr + n && isspace((unsigned char)*p))
            p++;
        if (p < ptr + n && isdigit((unsigned char)*p))
            job->retry_after_s = strtol(p, NULL, 10); /* an HTTP-date is ignored */
    }
    return n;
}

static void on_backoff_end(evutil_socket_t fd, short what, void *arg)
{
    struct job *job = arg;
    (void)fd;
    (void)what;
    job->state = JOB_IDLE;
    job->cl->in_flight--;
    if (client_send(job->cl, job) < 0) {
        job->result = JOB_FAILED;
        job->err_kind = ERR_NETWORK;
        snprintf(job->err, sizeof job->err, "cannot start a request");
        job->cl->done(job, job->cl->arg);
    }
}

int client_job_init(struct client *c, struct job *job)
{
    CURL *e = job->easy = curl_easy_init();
    job->cl = c;
    job->timer = evtimer_new(c->base, on_backoff_end, job);
    if (!e || !job->timer)
        return -1;
    curl_easy_setopt(e, CURLOPT_URL, c->url.data);
    curl_easy_setopt(e, CURLOPT_PRIVATE, job);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->curl_err);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* ignore http_proxy: the endpoint is local */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "ollama-classify/" OP_VERSION);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->conf.timeout_s * 1000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     c->conf.timeout_s < 10 ? c->conf.timeout_s * 1000L : 10000L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L); /* replies are small; RSS at -j 2000 */
    if (c->conf.ca_file) /* a private CA (--ca-file); verification stays on */
        curl_easy_setopt(e, CURLOPT_CAINFO, c->conf.ca_file);
    return 0;
}

void client_job_cleanup(struct job *job)
{
    client_cancel(job);
    if (job->easy)
        curl_easy_cleanup(job->easy);
    if (job->timer)
        event_free(job->timer);
    job->easy = NULL;
    job->timer = NULL;
}

int client_send(struct client *c, struct job *job)
{
    buf_clear(&job->resp);
    job->retry_after_s = -1;
    job->status = 0;
    job->via_backend = 0;
    job->curl_err[0] = '\0';
    curl_easy_setopt(job->easy, CURLOPT_POSTFIELDSIZE, (long)job->body.len);
    curl_easy_setopt(job->easy, CURLOPT_POSTFIELDS, job->body.data);
    if (curl_multi_add_handle(c->multi, job->easy) != CURLM_OK)
        return -1;
    job->attempts++;
    job->t_start = net_now_ms();
    job->state = JOB_SENDING;
    c->in_flight++;
    return 0;
}

void client_cancel(struct job *job)
{
    if (job->state == JOB_SENDING)
        curl_multi_remove_handle(job->cl->multi, job->easy);
    else if (job->state == JOB_BACKOFF)
        evtimer_del(job->timer);
    if (job->state != JOB_IDLE)
        job->cl->in_flight--;
    job->state = JOB_IDLE;
}

size_t client_in_flight(const struct client *c)
{
    return c->in_flight;
}

/* Ollama's {"error":"..."} text, or the start of the body. */
static void reply_error(struct job *job)
{
    json_t *doc = json_loadb(job->resp.data ? job->resp.data : "", job->resp.len, 0, NULL);
    const char *e = json_string_value(json_object_get(doc, "error"));
    if (e)
        snprintf(job->err, sizeof job->err, "HTTP %ld: %s", job->status, e);
    else
        snprintf(job->err, sizeof job->err, "HTTP %ld: %.200s", job->status,
                 job->resp.data ? job->resp.data : "");
    for (char *p = job->err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    json_decref(doc);
}

static enum err_kind kind_of_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return ERR_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return ERR_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return ERR_TLS;
    default:
        return ERR_NETWORK;
    }
}

static void append_err(struct job *job, const char *text)
{
    strncat(job->err, text, sizeof job->err - strlen(job->err) - 1);
}

/* A TLS failure is the same for every request (http:// server behind an
 * https:// URL, a certificate we do not trust): stop at the first, rather
 * than retry each item. Only a handshake that failed after the endpoint
 * has answered before may be a passing fault, and is retried. */
static int tls_fatal(struct job *job, CURLcode rc)
{
    if (rc == CURLE_SSL_CONNECT_ERROR && job->cl->replies > 0)
        return 0;
    append_err(job, rc == CURLE_SSL_CONNECT_ERROR
                        ? " (the TLS handshake failed: is the endpoint plain http://?)"
                        : " (TLS: the endpoint's certificate or the TLS setup was refused)");
    return 1;
}

/* 401/403 say the same to every request: the key is missing or refused. */
static void auth_hint(struct job *job)
{
    if (job->cl->has_key)
        append_err(job, " (the API key was refused)");
    else if (job->status == 401)
        append_err(job, " (the endpoint wants an API key: --api-key or $OLLAMA_API_KEY)");
}

/* A 404: the rule in client.h. Returns 1 when it may be retried. */
static int classify_404(struct job *job)
{
    job->err_kind = ERR_HTTP_404;
    if (job->via_backend)
        return 1;
    if (job->cl->proxy_seen) {
        job->result = JOB_FATAL;
        append_err(job, " (ollama-proxy: no backend has this model)");
        return 0;
    }
    job->plain_404s++;
    return 1;
}

/* Sort a finished transfer: reply, retry, item error, or fatal. Returns 1
 * when it may be retried. */
static int classify(struct job *job, CURLcode rc)
{
    job->bad_url = rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL;
    if (rc != CURLE_OK) {
        job->result = JOB_FAILED;
        job->err_kind = kind_of_curl(rc);
        snprintf(job->err, sizeof job->err, "%s: %s", stats_err_name(job->err_kind),
                 job->curl_err[0] ? job->curl_err : curl_easy_strerror(rc));
        if (job->err_kind == ERR_TLS && tls_fatal(job, rc)) {
            job->result = JOB_FATAL;
            return 0;
        }
        /* The URL is the same for every request: never one item's error.
         * (main checks it before the run; this is the last guard.) */
        if (job->bad_url) {
            job->result = JOB_FATAL;
            append_err(job, " (the endpoint URL)");
            return 0;
        }
        return rc != CURLE_WRITE_ERROR;
    }
    job->cl->replies++;
    if (job->via_backend)
        job->cl->proxy_seen = 1;
    curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &job->status);
    if (job->status >= 200 && job->status < 300) {
        job->result = JOB_REPLY;
        return 0;
    }
    reply_error(job);
    job->result = JOB_FAILED;
    if (job->status == 429 || job->status >= 500) {
        job->err_kind = job->status == 429 ? ERR_HTTP_429 : ERR_HTTP_5XX;
        return 1;
    }
    if (job->status == 404)
        return classify_404(job);
    job->err_kind = ERR_HTTP_4XX;
    if (job->status == 401 || job->status == 403) {
        auth_hint(job);
        job->result = JOB_FATAL;
    }
    return 0;
}

static double backoff_ms(struct client *c, const struct job *job)
{
    /* Retry-After wins over our own backoff, but only up to its cap
     * (CLIENT_BACKOFF_MAX_S, client.h): the header is the server's wish,
     * and a huge one must not stall the run. */
    if (job->retry_after_s >= 0) {
        double s = job->retry_after_s < CLIENT_BACKOFF_MAX_S ? (double)job->retry_after_s
                                                             : CLIENT_BACKOFF_MAX_S;
        return s * 1000.0 + rand_r(&c->rng) % 250;
    }
    /* A plain Ollama's 404 will not go away with time: its retries only
     * rule out a passing fault, on a short schedule. */
    int fast = job->err_kind == ERR_HTTP_404 && !job->via_backend;
    double ms = fast ? CLIENT_404_BACKOFF_MS : BACKOFF_BASE_MS;
    for (int i = 1; i < job->retries && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    return ms * (0.5 + 0.5 * rand_r(&c->rng) / (double)RAND_MAX); /* jitter */
}

static void retry_later(struct client *c, struct job *job)
{
    job->retries++;
    stats_retried(c->st, job->err_kind);
    double ms = backoff_ms(c, job);
    struct timeval tv = {(long)(ms / 1000), (long)((long)ms % 1000) * 1000};
    job->state = JOB_BACKOFF;
    c->in_flight++;
    evtimer_add(job->timer, &tv);
}

static void finish(struct client *c, struct job *job, CURLcode rc)
{
    curl_multi_remove_handle(c->multi, job->easy);
    job->state = JOB_IDLE;
    c->in_flight--;
    job->ms = net_now_ms() - job->t_start;
    curl_off_t ttfb_us = -1;
    job->ttfb_ms =
        curl_easy_getinfo(job->easy, CURLINFO_STARTTRANSFER_TIME_T, &ttfb_us) == CURLE_OK &&
                ttfb_us > 0
            ? ttfb_us / 1000.0
            : -1;
    if (classify(job, rc) && job->retries < c->conf.retries) {
        retry_later(c, job);
        return;
    }
    /* Out of retries without a single reply from the endpoint: it is not
     * there (wrong URL, Ollama not running). Every other item would end
     * the same way, so stop rather than write an error line for each. */
    if (job->result == JOB_FAILED && job->err_kind == ERR_CONNECT && c->replies == 0) {
        job->result = JOB_FATAL;
        append_err(job, " (no reply from the endpoint yet: is it running?)");
    }
    /* The endpoint said 404 to every try of this item, never through a
     * backend of a proxy: the model is nowhere. */
    if (job->result == JOB_FAILED && job->err_kind == ERR_HTTP_404 && !job->via_backend &&
        job->plain_404s == job->attempts) {
        char tail[96];
        job->result = JOB_FATAL;
        snprintf(tail, sizeof tail, " (the same answer to all %d tries)", job->attempts);
        append_err(job, tail);
    }
    c->done(job, c->arg);
}

static void check_done(struct client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct job *job = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        finish(c, job, rc);
    }
}

/* Append "Authorization: Bearer KEY" to the headers of every request. */
static int add_auth(struct client *c, const char *key)
{
    struct buf h = {0};
    struct curl_slist *l = NULL;
    if (buf_puts(&h, "Authorization: Bearer ") == 0 && buf_puts(&h, key) == 0)
        l = curl_slist_append(c->headers, h.data);
    buf_free(&h);
    if (!l)
        return -1;
    c->headers = l;
    c->has_key = 1;
    return 0;
}

static int client_setup(struct client *c, const struct client_conf *conf)
{
    if (buf_puts(&c->url, conf->url) < 0 || buf_puts(&c->url, "/api/chat") < 0)
        return -1;
    c->conf = *conf;
    c->conf.url = NULL;
    c->headers = curl_slist_append(NULL, "Content-Type: application/json");
    c->headers = c->headers ? curl_slist_append(c->headers, "Expect:") : NULL;
    if (conf->api_key && c->headers && add_auth(c, conf->api_key) < 0)
        return -1;
    c->conf.api_key = NULL; /* not kept: the header list holds the only copy */
    c->multi = curl_multi_init();
    c->timer = evtimer_new(c->base, on_timeout, c);
    if (!c->headers || !c->multi || !c->timer)
        return -1;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Keep a connection per job; never cap per host (a non-FIFO queue). */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, conf->jobs + 16);
    return 0;
}

struct client *client_new(struct event_base *base, const struct client_conf *conf, struct stats *st,
                          client_done_fn done, void *arg, char *err, size_t errlen)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = base;
    c->st = st;
    c->done = done;
    c->arg = arg;
    c->rng = (unsigned)net_now_ns();
    if (client_setup(c, conf) < 0) {
        snprintf(err, errlen, "cannot set up libcurl");
        client_free(c);
        return NULL;
    }
    return c;
}

void client_free(struct client *c)
{
    if (!c)
        return;
    if (c->multi)
        curl_multi_cleanup(c->multi);
    while (c->socks) /* sockets curl closed without telling us */
        sock_free(c, c->socks);
    if (c->timer)
        event_free(c->timer);
    curl_slist_free_all(c->headers);
    buf_free(&c->url);
    free(c);
}
