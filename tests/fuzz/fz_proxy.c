/* fz_proxy.c - see fz_proxy.h. The proxy of proxy/proxy.c (proxy_start,
 * proxy_stop), as ollama-proxy runs it but for main.c's signals. */
#include "fz_proxy.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "discover.h"
#include "fleet.h"
#include "log.h"
#include "net.h"
#include "proxy.h"
#include "sched.h"
#include "session.h"

static struct proxy px;
static int started;

/* Short timeouts so that no input waits long; a backend that is never
 * marked down (fail_after) so that every input meets the same proxy; no
 * discovery after the first (refresh_s); affinity by prefix and a pinned
 * num_ctx, so that every generate and chat body is read for its start and
 * rewritten (jbody.c) on its way. */
static const char config_fmt[] =
    "listen = \"127.0.0.1:0\";\n"
    "backends = ( { name = \"stub\"; url = \"http://127.0.0.1:%d\"; max_concurrent = 2; } );\n"
    "queue = { max_length = 8; timeout_s = 0.5; };\n"
    "timeouts = { connect_s = 1; first_byte_s = 1; idle_s = 1; request_s = 1; };\n"
    "health = { interval_s = 1; timeout_s = 1; fail_after = 1000; recover_after = 1; };\n"
    "models = { refresh_s = 86400; };\n"
    "limits = { max_body_mb = 1; max_connections = 4096; };\n"
    "routing = { affinity = \"prefix\"; num_ctx = 4096; affinity_wait_ms = 100; };\n"
    "shutdown_timeout_s = 0;\n";

/* The config, through a file as the real proxy reads it. */
static struct px_config *load_config(int backend_port)
{
    char path[] = "/tmp/fuzz-proxy-XXXXXX.conf", err[512];
    int fd = mkstemps(path, 5);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    struct px_config *cfg;
    if (!f) {
        perror("fz_proxy: config file");
        return NULL;
    }
    fprintf(f, config_fmt, backend_port);
    fclose(f);
    cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (!cfg)
        fprintf(stderr, "fz_proxy: %s\n", err);
    return cfg;
}

int fz_proxy_start(int backend_port)
{
    struct px_config *cfg;
    if (started)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    log_set_level((enum log_level)(LOG_ERROR + 1)); /* not even errors: inputs provoke them */
    if (!(cfg = load_config(backend_port)))
        return -1;
    if (proxy_start(&px, cfg) < 0) {
        fprintf(stderr, "fz_proxy: the proxy did not start\n");
        proxy_stop(&px);
        return -1;
    }
    log_set_buffered(0); /* nothing waits for the flush timer */
    started = 1;
    return net_bound_port(evhttp_bound_socket_get_fd(px.bound));
}

struct event_base *fz_proxy_base(void)
{
    return px.base;
}

int fz_proxy_busy(void)
{
    return px.nsessions;
}

void fz_proxy_stop(void)
{
    if (!started)
        return;
    started = 0;
    proxy_stop(&px);
    memset(&px, 0, sizeof px);
}
