/* proxy.c - the start and the end of a proxy: everything but its signals
 * (main.c), so that a fuzz target can run the same proxy in-process. */
#include "proxy.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <string.h>

#include "accesslog.h"
#include "capstate.h"
#include "catalog.h"
#include "config.h"
#include "conns.h"
#include "discover.h"
#include "dnsfleet.h"
#include "fanout.h"
#include "fleet.h"
#include "health.h"
#include "log.h"
#include "net.h"
#include "router.h"
#include "sched.h"
#include "session.h"
#include "ui.h"

/* The last reply may still sit in a client's output buffer: give the loop
 * a moment to flush it before the connections are closed. */
static void proxy_exit_soon(struct proxy *px)
{
    struct timeval flush = {0, 250000};
    event_base_loopexit(px->base, &flush);
}

/* ---- reload and drain ---- */

/* Apply px->cfg's queue, keys, timeouts, health, access log and request
 * limits to the modules that hold them (startup and reload). */
static void settings(struct proxy *px)
{
    const struct px_config *c = px->cfg;
    if (sched_configure(&px->sched, c) < 0)
        log_error("out of memory: the keys' limits are not updated");
    px->uto.connect = net_timeval(c->connect_s);
    px->uto.first_byte = net_timeval(c->first_byte_s);
    px->uto.idle = net_timeval(c->idle_s);
    health_settings(px);
    capstate_settings(px);
    if (accesslog_configure(c->access_log, c->access_json) < 0)
        log_error("logging.access: cannot open %s: %s; the access log stays where it was",
                  c->access_log, strerror(errno));
    conns_settings(px);
}

void proxy_reload(struct proxy *px)
{
    char err[512];
    struct px_config *cfg = config_load(px->cfg->file, err, sizeof err);
    if (!cfg) {
        log_error("reload refused, the old config stays: %s", err);
        {
            char why[600];
            snprintf(why, sizeof why, "refused, the old config stays: %s", err);
            ui_event(px, "reload", NULL, why);
        }
        return;
    }
    if (fleet_apply(px, cfg) < 0) {
        log_error("reload: out of memory; the old config stays");
        config_free(cfg);
        return;
    }
    if (strcmp(cfg->listen, px->cfg->listen) != 0)
        log_warn("reload: listen %s -> %s needs a restart; still on %s", px->cfg->listen,
                 cfg->listen, px->cfg->listen);
    config_free(px->cfg);
    px->cfg = cfg;
    settings(px);
    if (dnsfleet_apply(px) < 0)
        log_error("reload: the dns rows cannot be resolved (out of memory)");
    log_info("reloaded %s: %d backends", cfg->file, px->nbackends);
    {
        char why[200];
        snprintf(why, sizeof why, "reloaded %s: %d backends", cfg->file, px->nbackends);
        ui_event(px, "reload", NULL, why);
    }
    proxy_fleet_changed(px); /* new slots, new keys */
}

static void on_fleet_changed(struct proxy *px)
{
    sched_set_backends(&px->sched, px->backends, px->nbackends);
}

static void on_idle(struct proxy *px)
{
    proxy_exit_soon(px);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;
    (void)fd;
    (void)what;
    log_warn("shutdown: %d requests still running after %gs; ending them", px->live,
             px->cfg->shutdown_timeout_s);
    session_end_all(px); /* their last bytes go out during proxy_exit_soon()'s delay */
    fanout_end_all(px);
    proxy_exit_soon(px);
}

void proxy_drain(struct proxy *px, int sig)
{
    struct timeval tv;
    if (px->draining)
        return;
    px->draining = 1;
    log_info("signal %d: draining %d requests (%d fan-outs; queue %d), then exiting", sig,
             px->live, px->live - px->nsessions, sched_length(&px->sched));
    conns_stop_accepting(px);
    if (px->live == 0) {
        proxy_exit_soon(px);
        return;
    }
    px->on_idle = on_idle;
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

/* The resolver of backends' host names: `resolvers` when set (read at
 * start, as the dns rows' own), else /etc/resolv.conf's and /etc/hosts. */
static struct evdns_base *new_dns(struct proxy *px)
{
    const struct px_config *c = px->cfg;
    struct evdns_base *dns =
        evdns_base_new(px->base, c->nresolvers ? 0 : EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!dns)
        return NULL;
    for (int i = 0; i < c->nresolvers; i++)
        if (evdns_base_nameserver_ip_add(dns, c->resolvers[i]) != 0)
            log_warn("resolvers: cannot use %s", c->resolvers[i]);
    return dns;
}

int proxy_start(struct proxy *px, struct px_config *cfg)
{
    struct timeval flush = {0, LOG_FLUSH_MS * 1000};
    px->cfg = cfg;
    px->start_ms = net_now_ms();
    LIST_INIT(&px->sessions);
    LIST_INIT(&px->fanouts);
    metrics_init(&px->metrics);
    px->base = new_base();
    if (!px->base) {
        log_error("cannot create the event loop (epoll with EV_CLOSED is required)");
        return -1;
    }
    sched_init(&px->sched, px->base);
    px->fleet_changed = on_fleet_changed;
    /* Backends' names are looked up without blocking the loop (resolve.h):
     * /etc/hosts and the name servers of /etc/resolv.conf. */
    px->dns = new_dns(px);
    settings(px);
    px->scratch = evbuffer_new();
    if (!px->scratch || capstate_start(px) < 0 || fleet_init(px) < 0 || ui_start(px) < 0) {
        log_error("out of memory");
        return -1;
    }
    if (!(px->ev_flush = event_new(px->base, -1, EV_PERSIST, on_log_flush, px))) {
        log_error("out of memory");
        return -1;
    }
    event_add(px->ev_flush, &flush);
    log_set_buffered(1);
    if (router_start(px) < 0 || health_start(px) < 0 || dnsfleet_apply(px) < 0)
        return -1;
    return discover_start(px);
}

void proxy_stop(struct proxy *px)
{
    px->on_idle = NULL;
    if (px->ev_drain)
        event_free(px->ev_drain);
    px->ev_drain = NULL;
    discover_stop(px);
    health_stop(px);
    capstate_stop(px); /* the knees as they are: before the fleet goes */
    dnsfleet_stop(px);
    fanout_abort_all(px);
    session_abort_all(px);
    conns_free(px);
    fleet_free(px);
    if (px->dns)
        evdns_base_free(px->dns, 1);
    px->dns = NULL;
    sched_cleanup(&px->sched);
    ui_stop(px);
    catalog_free(px);
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
    px->ev_flush = NULL;
    px->scratch = NULL;
    px->base = NULL;
    px->cfg = NULL;
}
