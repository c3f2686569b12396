/* main.c - ollama-proxy: usage, startup, signals and the drain on exit. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "accesslog.h"
#include "backend.h"
#include "config.h"
#include "discover.h"
#include "fanout.h"
#include "fleet.h"
#include "health.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "server.h"
#include "session.h"
#include "version.h"

static const char usage[] =
    "usage: ollama-proxy [-c FILE] [--check]\n"
    "\n"
    "One Ollama-compatible endpoint in front of many Ollama servers: a concurrency cap\n"
    "per backend, one central queue, least-loaded routing, streaming passed through.\n"
    "\n"
    "  -c, --config FILE  the config (libconfig syntax); default conf/ollama-proxy.conf,\n"
    "                     then /etc/ollama-proxy/ollama-proxy.conf\n"
    "      --check        validate the config, print a summary, exit 0 (1 on error)\n"
    "  -v, --verbose      debug logging\n"
    "  -h, --help         this text\n"
    "      --version      print the version\n"
    "\n"
    "Signals: SIGHUP reloads the config (a bad one is refused, the old stays);\n"
    "SIGTERM/SIGINT stop accepting, finish requests in flight (up to\n"
    "shutdown_timeout_s), exit 0.\n";

#define CONFIG_LOCAL "conf/ollama-proxy.conf"
#define CONFIG_SYSTEM "/etc/ollama-proxy/ollama-proxy.conf"

/* Without -c: the first of the two that exists, or NULL. */
static const char *default_config(void)
{
    if (access(CONFIG_LOCAL, F_OK) == 0)
        return CONFIG_LOCAL;
    if (access(CONFIG_SYSTEM, F_OK) == 0)
        return CONFIG_SYSTEM;
    return NULL;
}

/* The last reply may still sit in a client's output buffer: give the loop
 * a moment to flush it before the connections are closed. */
static void exit_soon(struct proxy *px)
{
    struct timeval flush = {0, 250000};
    event_base_loopexit(px->base, &flush);
}

void proxy_session_ended(struct proxy *px)
{
    if (px->draining && px->nsessions == 0)
        exit_soon(px);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;
    (void)fd;
    (void)what;
    log_warn("shutdown: %d requests still running after %gs; ending them", px->nsessions,
             px->cfg->shutdown_timeout_s);
    session_end_all(px); /* their last bytes go out during exit_soon()'s delay */
    exit_soon(px);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct proxy *px = arg;
    struct timeval tv;
    (void)what;
    if (px->draining)
        return;
    px->draining = 1;
    log_info("signal %d: draining %d requests (queue %d), then exiting", (int)sig,
             px->nsessions, sched_length(&px->sched));
    server_stop_accepting(px);
    if (px->nsessions == 0) {
        exit_soon(px);
        return;
    }
    tv = net_timeval(px->cfg->shutdown_timeout_s);
    px->ev_drain = evtimer_new(px->base, on_drain_timeout, px);
    evtimer_add(px->ev_drain, &tv);
}

/* The access log is written in blocks; this bounds how late a line is. */
#define LOG_FLUSH_MS 100

static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    log_flush();
    accesslog_flush();
}

/* SIGHUP: read the config again; a bad one is refused and the old stays. */
static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    struct proxy *px = arg;
    char err[512];
    struct px_config *cfg;
    (void)sig;
    (void)what;
    cfg = config_load(px->cfg->file, err, sizeof err);
    if (!cfg) {
        log_error("reload refused, the old config stays: %s", err);
        return;
    }
    fleet_apply(px, cfg);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *base;
    /* Fewer epoll_ctl calls: changes are batched per loop iteration. */
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_require_features(ec, EV_FEATURE_EARLY_CLOSE);
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int proxy_init(struct proxy *px, struct px_config *cfg)
{
    struct timeval flush = {0, LOG_FLUSH_MS * 1000};
    px->cfg = cfg;
    px->start_ms = net_now_ms();
    LIST_INIT(&px->sessions);
    metrics_init(&px->metrics);
    px->base = new_base();
    if (!px->base) {
        log_error("cannot create the event loop (epoll with EV_CLOSED is required)");
        return -1;
    }
    sched_init(&px->sched, px->base);
    fleet_settings(px);
    px->scratch = evbuffer_new();
    if (fleet_init(px) < 0) {
        log_error("out of memory");
        return -1;
    }
    px->ev_flush = event_new(px->base, -1, EV_PERSIST, on_log_flush, px);
    event_add(px->ev_flush, &flush);
    log_set_buffered(1);
    px->ev_term = evsignal_new(px->base, SIGTERM, on_stop_signal, px);
    px->ev_int = evsignal_new(px->base, SIGINT, on_stop_signal, px);
    px->ev_hup = evsignal_new(px->base, SIGHUP, on_reload_signal, px);
    evsignal_add(px->ev_term, NULL);
    evsignal_add(px->ev_int, NULL);
    evsignal_add(px->ev_hup, NULL);
    if (server_start(px) < 0 || health_start(px) < 0)
        return -1;
    return discover_start(px);
}

static void proxy_cleanup(struct proxy *px)
{
    discover_stop(px);
    health_stop(px);
    fanout_abort_all(px);
    session_abort_all(px);
    server_free(px);
    fleet_free(px);
    sched_cleanup(&px->sched);
    if (px->ev_term)
        event_free(px->ev_term);
    if (px->ev_int)
        event_free(px->ev_int);
    if (px->ev_hup)
        event_free(px->ev_hup);
    if (px->ev_drain)
        event_free(px->ev_drain);
    if (px->ev_flush)
        event_free(px->ev_flush);
    accesslog_flush();
    log_set_buffered(0);
    metrics_cleanup(&px->metrics);
    if (px->scratch)
        evbuffer_free(px->scratch);
    if (px->base)
        event_base_free(px->base);
    config_free(px->cfg);
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int check = 0, rc;
    struct proxy px = {0};
    struct px_config *cfg;
    char err[512];

    log_set_name("ollama-proxy");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("ollama-proxy %s\n", OP_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "--check")) {
            check = 1;
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            log_set_level(LOG_DEBUG);
        } else if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            file = argv[++i];
        } else {
            fprintf(stderr, "ollama-proxy: bad argument \"%s\" (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!file && !(file = default_config())) {
        fprintf(stderr, "ollama-proxy: no config: neither %s (in %s) nor %s exists; "
                        "give one with -c FILE\n", CONFIG_LOCAL,
                getcwd(err, sizeof err) ? err : ".", CONFIG_SYSTEM);
        return 1;
    }
    cfg = config_load(file, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (config_warnings(cfg, err, sizeof err))
        fprintf(stderr, "%s\n", err);
    if (check) {
        config_print_summary(cfg);
        config_free(cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    /* Requests allocate and free the same few sizes all day long: keep the
     * freed memory instead of handing it back to the kernel and faulting it
     * in again for the next request. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 4 << 20);
    rc = proxy_init(&px, cfg);
    if (rc == 0) {
        event_base_dispatch(px.base);
        log_info("exiting");
    }
    proxy_cleanup(&px);
    return rc == 0 ? 0 : 1;
}
