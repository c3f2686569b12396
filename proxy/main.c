/* main.c - ollama-proxy: usage, startup, signals and the drain on exit. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "transport_tls.h"
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

/* "2027-01-06 (in 30 days)", "2026-12-01 (EXPIRED 5 days ago)" */
static const char *expiry(double t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char day[16];
    double days = (t - (double)time(NULL)) / 86400.0;
    strftime(day, sizeof day, "%Y-%m-%d", gmtime_r(&tt, &tm));
    if (days >= 0) /* whole days left, as the status page counts them */
        snprintf(buf, n, "%s (in %d days)", day, (int)days);
    else
        snprintf(buf, n, "%s (EXPIRED %d days ago)", day, (int)-days);
    return buf;
}

/* --check, after the summary: TLS or not per backend, and the expiry of
 * every certificate in play: the listener's, a backend's client
 * certificate, and the backend's own as a handshake sees it now (blocking,
 * within timeouts.connect_s; the files were checked by config_load). A
 * backend that cannot be reached now is said, not an error: it may be down
 * while its config is right. */
static void print_tls(const struct px_config *c)
{
    char when[64], err[512];
    double na = 0;
    printf("tls\n");
    if (c->tls_listen &&
        tls_check_pair(c->tls_cert_file, c->tls_key_file, &na, err, sizeof err) == 0)
        printf("  %-14s https on %s, key matches, certificate expires %s\n", "(listener)",
               c->tls_listen, expiry(na, when, sizeof when));
    for (int i = 0; i < c->nbackends; i++) {
        const struct config_backend *b = &c->backends[i];
        struct tls_conf tc = {b->tlsc.server_name ? b->tlsc.server_name : b->host,
                              b->tlsc.ca_file, b->tlsc.cert_file, b->tlsc.key_file,
                              b->tlsc.verify};
        if (!b->tls) {
            printf("  %-14s plain http (no TLS)\n", b->name);
            continue;
        }
        printf("  %-14s TLS to %s, verify %s", b->name, tc.server_name,
               !tc.verify ? "OFF" : tc.ca_file ? tc.ca_file : "(system CAs)");
        if (tc.cert_file && tls_check_pair(tc.cert_file, tc.key_file, &na, err, sizeof err) == 0)
            printf(", client certificate expires %s", expiry(na, when, sizeof when));
        if (tls_probe(b->host, b->port, &tc, c->connect_s, &na, err, sizeof err) == 0)
            printf("\n  %-14s certificate expires %s (handshake %s now)\n", "",
                   expiry(na, when, sizeof when), tc.verify ? "verified" : "NOT verified");
        else
            printf("\n  %-14s no handshake now: %s\n", "", err);
    }
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    proxy_drain(arg, (int)sig);
}

static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    proxy_reload(arg);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int signals(struct proxy *px)
{
    px->ev_term = evsignal_new(px->base, SIGTERM, on_stop_signal, px);
    px->ev_int = evsignal_new(px->base, SIGINT, on_stop_signal, px);
    px->ev_hup = evsignal_new(px->base, SIGHUP, on_reload_signal, px);
    if (!px->ev_term || !px->ev_int || !px->ev_hup)
        return -1;
    evsignal_add(px->ev_term, NULL);
    evsignal_add(px->ev_int, NULL);
    evsignal_add(px->ev_hup, NULL);
    return 0;
}

static void signals_free(struct proxy *px)
{
    struct event **evs[] = {&px->ev_term, &px->ev_int, &px->ev_hup};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int check = 0, rc;
    struct proxy px = {0};
    struct px_config *cfg;
    char err[4096]; /* every error or warning of the file */

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
        print_tls(cfg);
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
    rc = proxy_start(&px, cfg);
    if (rc == 0 && signals(&px) == 0) {
        event_base_dispatch(px.base);
        log_info("exiting");
    }
    signals_free(&px);
    proxy_stop(&px);
    return rc == 0 ? 0 : 1;
}
