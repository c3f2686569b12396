/* health.c - see health.h. A check is a tiny client of upstream.c with the
 * backend as its context: be->probe is the check in flight. */
#include "health.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "discover.h"
#include "reqtext.h"
#include "resolve.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "upstream.h"
#include "via.h"


static void check(struct backend *be);

static void on_header(void *arg, int status, const char *key, const char *value)
{
    (void)arg, (void)status, (void)key, (void)value;
}

static int on_head(void *arg, int status, const char *reason, long long content_length)
{
    struct backend *be = arg;
    (void)reason, (void)content_length;
    be->probe_status = status;
    return 0;
}

/* The answer's first bytes are kept: the version the proxy answers
 * /api/version with (catalog.h), without a request of its own. */
static void on_body(void *arg, struct evbuffer *src, size_t len)
{
    struct backend *be = arg;
    size_t room = sizeof be->probe_body - 1 - be->probe_len, k = len < room ? len : room;
    if (k)
        evbuffer_remove(src, be->probe_body + be->probe_len, k);
    be->probe_len += k;
    evbuffer_drain(src, len - k);
}

static void note_version(struct backend *be)
{
    json_t *o, *v;
    be->probe_body[be->probe_len] = '\0';
    o = json_loads(be->probe_body, 0, NULL);
    v = json_object_get(o, "version");
    if (json_is_string(v) && json_string_length(v) < sizeof be->version)
        memcpy(be->version, json_string_value(v), json_string_length(v) + 1);
    json_decref(o);
}

static void passed(struct backend *be)
{
    const struct px_config *c = be->px->cfg;
    be->consecutive_failures = 0;
    be->health_known = 1;
    if (!be->models_known && !be->poll)
        discover_refresh(be->px, be); /* it answers now: what has it got? */
    if (be->healthy || ++be->consecutive_ok < c->health_recover_after)
        return;
    be->healthy = 1;
    be->down_reason[0] = '\0';
    log_info("backend %s: up again (%d checks passed)", be->name, be->consecutive_ok);
    discover_rejoin(be->px, be); /* what it has now, before any request for a model */
    proxy_fleet_changed(be->px); /* waiting requests may go there now */
}

static void failed(struct backend *be, const char *why)
{
    char reason[160];
    be->consecutive_ok = 0;
    if (++be->consecutive_failures >= be->px->cfg->health_fail_after && be->healthy) {
        snprintf(reason, sizeof reason, "health check: %s", why);
        backend_mark_down(be, reason);
    }
}

/* The check came back to this proxy (a 508 naming it, via.h): the backend
 * is this proxy itself, down at once and for as long as it stays so. */
static void is_me(struct backend *be)
{
    static const char why[] = "it is this proxy";
    be->consecutive_ok = 0;
    if (be->healthy) {
        backend_mark_down(be, why);
    } else if (strcmp(be->down_reason, why) != 0) { /* down already, for another reason */
        snprintf(be->down_reason, sizeof be->down_reason, "%s", why);
        log_warn("backend %s: down: %s", be->name, why);
    }
}

static void on_done(void *arg)
{
    struct backend *be = arg;
    struct upstream *up = be->probe;
    char why[64];
    be->probe = NULL;
    upstream_release(up);
    if (be->probe_status >= 200 && be->probe_status < 300) {
        note_version(be);
        passed(be);
    } else if (be->probe_status == 508 && via_names_me(be->probe_body, be->probe_len)) {
        is_me(be);
    } else {
        snprintf(why, sizeof why, "GET /api/version answered %d", be->probe_status);
        failed(be, why);
    }
}

static void on_error(void *arg, enum upstream_err err)
{
    struct backend *be = arg;
    be->probe = NULL;
    if (err == UPSTREAM_ESTALE) { /* a pooled connection had closed: not the backend's fault */
        check(be);
        return;
    }
    if (err == UPSTREAM_ESETUP) { /* a handshake, a certificate: down at once */
        be->consecutive_ok = 0;
        backend_setup_failed(be, "health check");
        return;
    }
    failed(be, upstream_strerror(err));
}

static const struct upstream_cbs check_cbs = {on_header, on_head, on_body, on_done, on_error};

static void check(struct backend *be)
{
    struct proxy *px = be->px;
    struct upstream_timeouts to;
    struct evbuffer *req = px->scratch;
    if (be->probe || be->removed || be->admin == ADMIN_DISABLED)
        return;
    if (!be->target.addrlen) { /* not resolved (yet): ask again, and fail this check */
        resolve_backend(px->dns, be, health_address_found);
        if (be->probe || be->removed) /* answered at once: checked by then */
            return;
        if (!be->target.addrlen) {
            failed(be, "its host name does not resolve");
            return;
        }
    }
    to.connect = to.first_byte = to.idle = net_timeval(px->cfg->health_timeout_s);
    be->probe_status = 0;
    be->probe_len = 0;
    reqtext_build(req, &(struct reqtext){.method = "GET", .target = "/api/version",
                                         .host = be->hostport});
    be->probe = upstream_start(px->base, &be->target, req, 0, &to, &check_cbs, be);
    evbuffer_drain(req, evbuffer_get_length(req));
    if (!be->probe)
        failed(be, "cannot open a socket");
}

void health_address_found(struct backend *be)
{
    check(be);
    discover_refresh(be->px, be);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *px = arg;
    (void)fd, (void)what;
    for (int i = 0; i < px->nbackends; i++)
        check(px->backends[i]);
}

void health_settings(struct proxy *px)
{
    struct timeval tv;
    if (!px->ev_health)
        return;
    tv = net_timeval(px->cfg->health_interval_s);
    event_add(px->ev_health, &tv);
}

int health_start(struct proxy *px)
{
    px->ev_health = event_new(px->base, -1, EV_PERSIST, on_tick, px);
    if (!px->ev_health)
        return -1;
    health_settings(px);
    event_active(px->ev_health, EV_TIMEOUT, 1); /* and once now */
    return 0;
}

void health_stop(struct proxy *px)
{
    if (px->ev_health)
        event_free(px->ev_health);
    px->ev_health = NULL;
}
