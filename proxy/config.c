/* config.c - load and validate the proxy's libconfig file.
 *
 * Table-driven as redis config.c: every scalar key is a row (group, name,
 * kind, target offset, bounds). Defaults are filled first; a key that is
 * present must have the right type and be in range; any key not in the
 * table is an error, so a typo is never silently ignored. */
#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "names.h"
#include "net.h"
#include "transport_tls.h"

enum opt_kind { OPT_INT, OPT_NUM };

struct opt {
    const char *group; /* NULL: top level */
    const char *name;
    enum opt_kind kind;
    size_t off;
    double min, max;
};

#define OFF(f) offsetof(struct px_config, f)
static const struct opt opts[] = {
    {"queue", "max_length", OPT_INT, OFF(queue_max_length), 0, 10000000},
    {"queue", "timeout_s", OPT_NUM, OFF(queue_timeout_s), 0.001, 86400 * 7},
    {"queue", "no_backend_s", OPT_NUM, OFF(queue_no_backend_s), 0, 86400},
    {"timeouts", "connect_s", OPT_NUM, OFF(connect_s), 0.001, 3600},
    {"timeouts", "first_byte_s", OPT_NUM, OFF(first_byte_s), 0.001, 86400},
    {"timeouts", "idle_s", OPT_NUM, OFF(idle_s), 0.001, 86400},
    {"timeouts", "request_s", OPT_NUM, OFF(request_s), 0.001, 86400},
    {"health", "interval_s", OPT_NUM, OFF(health_interval_s), 0.01, 86400},
    {"health", "timeout_s", OPT_NUM, OFF(health_timeout_s), 0.01, 3600},
    {"health", "fail_after", OPT_INT, OFF(health_fail_after), 1, 1000},
    {"health", "recover_after", OPT_INT, OFF(health_recover_after), 1, 1000},
    {"models", "refresh_s", OPT_NUM, OFF(models_refresh_s), 0.01, 86400},
    {"limits", "max_body_mb", OPT_INT, OFF(max_body_mb), 1, 1 << 20},
    {"limits", "max_connections", OPT_INT, OFF(max_connections), 1, 10000000},
    {NULL, "shutdown_timeout_s", OPT_NUM, OFF(shutdown_timeout_s), 0, 86400},
    {"routing", "balance_factor", OPT_NUM, OFF(routing.balance_factor), 0, 100},
    {"routing", "affinity_wait_ms", OPT_NUM, OFF(routing.affinity_wait_ms), 0, 3600000},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char *const top_keys[] = {"listen",    "backends",  "queue",  "timeouts",
                                       "health",    "models",    "limits", "auth",
                                       "logging",   "resolvers", "tls",    "shutdown_timeout_s",
                                       "routing",   "model_caps", "cors_origins", "state_file"};
static const char *const backend_keys[] = {"name",      "url",      "dns", "max_concurrent",
                                           "resolve_s", "adaptive", "tls", "headers",
                                           "model_caps"};
static const char *const backend_tls_keys[] = {"server_name", "ca_file", "cert_file", "key_file",
                                               "verify"};
static const char *const tls_keys[] = {"listen", "cert_file", "key_file"};
static const char *const key_keys[] = {"name",       "key",    "admin",   "max_concurrent",
                                       "max_queued", "weight", "priority"};
static const char *const prio_names[PRIO_COUNT] = {"high", "normal", "low"};
static const char *const affinity_names[] = {"off", "session", "prefix"};   /* routing_affinity */
static const char *const num_ctx_names[] = {"pass", "strip"};               /* routing_num_ctx */
/* The headers an agent or a chat front end sends to name its conversation
 * (Claude Code, Codex, OpenCode, Open WebUI), tried in this order. */
static const char *const default_session_headers[] = {
    "x-session-id", "x-claude-code-session-id", "session-id", "session_id",
    "x-session-affinity", "x-openwebui-chat-id"};
#define NDEFAULT_HEADERS (sizeof default_session_headers / sizeof default_session_headers[0])
#define MAX_SESSION_HEADERS 16
#define MAX_MODEL_CAPS 1000
static unsigned config_serial; /* configs loaded so far (px_config.serial) */

static void set_defaults(struct px_config *c)
{
    c->queue_max_length = 1024;
    c->queue_timeout_s = 600;
    c->queue_no_backend_s = 5;
    c->ipv4_prefix = 32;
    c->ipv6_prefix = 64;
    c->connect_s = 3;
    c->first_byte_s = 600;
    c->idle_s = 300;
    c->request_s = 10;
    c->health_interval_s = 5;
    c->health_timeout_s = 2;
    c->health_fail_after = 2;
    c->health_recover_after = 1;
    c->models_refresh_s = 30;
    c->max_body_mb = 64;
    c->max_connections = 4096;
    c->shutdown_timeout_s = 30;
    c->access_log = strdup("stderr");
    c->routing.affinity = AFFINITY_SESSION;
    c->routing.balance_factor = 1.5;
    c->routing.affinity_wait_ms = 1000;
    c->routing.num_ctx = NUM_CTX_PASS;
    c->routing.session_headers = calloc(NDEFAULT_HEADERS + 1, sizeof(char *));
    if (c->routing.session_headers) {
        c->routing.nsession_headers = (int)NDEFAULT_HEADERS;
        for (size_t i = 0; i < NDEFAULT_HEADERS; i++)
            c->routing.session_headers[i] = strdup(default_session_headers[i]);
    }
}

/* Every error of a file is reported, in file order: FAIL records one for
 * the setting S and makes the function return -1; its callers go on with
 * the next setting, and config_load() joins what was recorded. Loading is
 * not re-entrant (one load at a time, in the loop thread). */
#define MAX_ERRORS 32
static struct {
    int n, dropped;
    int line[MAX_ERRORS];
    char text[MAX_ERRORS][320];
} errs;

static void add_error(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_error(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    size_t k;
    if (errs.n == MAX_ERRORS) {
        errs.dropped++;
        return;
    }
    k = (size_t)snprintf(errs.text[errs.n], sizeof errs.text[0], "%s:%d: ", file, line);
    if (k >= sizeof errs.text[0])
        k = sizeof errs.text[0] - 1;
    va_start(ap, fmt);
    vsnprintf(errs.text[errs.n] + k, sizeof errs.text[0] - k, fmt, ap);
    va_end(ap);
    errs.line[errs.n++] = line;
}

#define FAIL(s, ...)                                                                    \
    do {                                                                                \
        (void)err, (void)errlen;                                                        \
        add_error(file, (s) ? (int)config_setting_source_line(s) : 0, __VA_ARGS__);     \
        return -1;                                                                      \
    } while (0)

/* The recorded errors into ERR, one a line, in file order. */
static void join_errors(char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
    for (int ln = -1, done = 0; done < errs.n; ln++) /* a stable sort by line */
        for (int i = 0; i < errs.n; i++)
            if (errs.line[i] == ln + 1) {
                used += (size_t)snprintf(err + used, used < errlen ? errlen - used : 0, "%s%s",
                                         done ? "\n" : "", errs.text[i]);
                done++;
                if (used >= errlen)
                    return;
            }
    if (errs.dropped && used < errlen)
        snprintf(err + used, errlen - used, "\n(%d more errors)", errs.dropped);
}

static int in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return 1;
    return 0;
}

/* Every member of GROUP must be one of NAMES. */
static int check_members(const char *file, config_setting_t *group, const char *const *names,
                         size_t n, const char *where, char *err, size_t errlen)
{
    int rc = 0;
    (void)err, (void)errlen;
    for (int i = 0; i < config_setting_length(group); i++) {
        config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        if (!in_list(config_setting_name(m), names, n)) {
            add_error(file, (int)config_setting_source_line(m), "unknown key \"%s\"%s%s",
                      config_setting_name(m), where[0] ? " in " : "", where);
            rc = -1;
        }
    }
    return rc;
}

static int load_scalar(const char *file, config_setting_t *root, const struct opt *o,
                       struct px_config *c, char *err, size_t errlen)
{
    config_setting_t *g = o->group ? config_setting_get_member(root, o->group) : root;
    config_setting_t *s = g ? config_setting_get_member(g, o->name) : NULL;
    double v;
    if (!s)
        return 0;
    if (!config_setting_is_number(s))
        FAIL(s, "%s%s%s must be a number", o->group ? o->group : "", o->group ? "." : "",
             o->name);
    v = config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                     : (double)config_setting_get_int64(s);
    if (o->kind == OPT_INT && config_setting_type(s) == CONFIG_TYPE_FLOAT)
        FAIL(s, "%s.%s must be an integer", o->group ? o->group : "", o->name);
    if (v < o->min || v > o->max)
        FAIL(s, "%s%s%s = %g is out of range [%g, %g]", o->group ? o->group : "",
             o->group ? "." : "", o->name, v, o->min, o->max);
    if (o->kind == OPT_INT)
        *(int *)((char *)c + o->off) = (int)v;
    else
        *(double *)((char *)c + o->off) = v;
    return 0;
}

int config_parse_url(const char *url, char *host, size_t hostlen, int *port, char *err,
                     size_t errlen)
{
    char hp[512];
    const char *p;
    size_t n;
    int tls = strncmp(url, "https://", 8) == 0;
    if (!tls && strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "url \"%s\" must start with http:// or https://", url);
        return -1;
    }
    p = url + 7 + tls;
    n = strcspn(p, "/");
    if (p[n] && strcmp(p + n, "/") != 0) {
        snprintf(err, errlen, "url \"%s\" must not have a path", url);
        return -1;
    }
    if (n == 0 || n >= sizeof hp) {
        snprintf(err, errlen, "url \"%s\" has no host", url);
        return -1;
    }
    memcpy(hp, p, n);
    hp[n] = '\0';
    if (!strchr(hp, ':') || (hp[0] == '[' && !strstr(hp, "]:"))) {
        strncat(hp, tls ? ":443" : ":80", sizeof hp - strlen(hp) - 1);
    }
    if (net_parse_hostport(hp, host, hostlen, port, err, errlen) < 0)
        return -1;
    if (strspn(host, strchr(host, ':') ? "0123456789abcdefABCDEF:.%" /* an IPv6 literal */
                                       : "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789.-_") != strlen(host)) {
        snprintf(err, errlen, "url \"%s\": \"%s\" is not a host name or address", url, host);
        return -1;
    }
    if (!host[0] || *port == 0) {
        snprintf(err, errlen, "url \"%s\" needs a host and a port", url);
        return -1;
    }
    return 0;
}

static int get_string(const char *file, config_setting_t *g, const char *name, int required,
                      char **out, char *err, size_t errlen)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s) {
        if (required)
            FAIL(g, "missing \"%s\"", name);
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_STRING || !*config_setting_get_string(s))
        FAIL(s, "\"%s\" must be a non-empty string", name);
    *out = strdup(config_setting_get_string(s));
    return 0;
}

static int get_int(const char *file, config_setting_t *g, const char *name, int required,
                   int min, int max, int *out, char *err, size_t errlen)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s) {
        if (required)
            FAIL(g, "missing \"%s\"", name);
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
        FAIL(s, "\"%s\" must be an integer", name);
    long long v = config_setting_get_int64(s);
    if (v < min || v > max)
        FAIL(s, "\"%s\" = %lld is out of range [%d, %d]", name, v, min, max);
    *out = (int)v;
    return 0;
}

/* A name that goes into headers, logs, label values and URLs as it is:
 * letters, digits and . _ : - only, 64 at most. */
static int good_name(const char *name)
{
    size_t n = strlen(name);
    return n <= 64 && strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789._:-") == n;
}

/* model_caps = ( { model = "nomic-embed-text"; max_concurrent = 1; } ), at the
 * top level or in a backend's row (L; NULL: absent) into *OUT, *N. */
static int load_model_caps(const char *file, config_setting_t *l, struct config_model_cap **out,
                           int *n, char *err, size_t errlen)
{
    static const char *const keys[] = {"model", "max_concurrent"};
    int rc = 0;
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "\"model_caps\" must be a list ( { model = ...; max_concurrent = ...; } )");
    if (config_setting_length(l) > MAX_MODEL_CAPS)
        FAIL(l, "\"model_caps\": at most %d rows", MAX_MODEL_CAPS);
    if (!(*out = calloc((size_t)config_setting_length(l) + 1, sizeof **out)))
        FAIL(l, "out of memory");
    for (int i = 0; i < config_setting_length(l); i++) {
        config_setting_t *m = config_setting_get_elem(l, (unsigned)i);
        struct config_model_cap *mc = &(*out)[*n];
        char key[NAME_KEY_MAX];
        if (!config_setting_is_group(m)) {
            add_error(file, (int)config_setting_source_line(m),
                      "each model_caps row must be a group { model = ...; max_concurrent = ...; }");
            rc = -1;
            continue;
        }
        if (check_members(file, m, keys, 2, "a model_caps row", err, errlen) ||
            get_string(file, m, "model", 1, &mc->model, err, errlen) ||
            get_int(file, m, "max_concurrent", 1, 1, 100000, &mc->max_concurrent, err, errlen)) {
            free(mc->model);
            mc->model = NULL;
            rc = -1;
            continue;
        }
        (*n)++;
        if (!mc->model || name_key(mc->model, key, sizeof key) < 0 || !(mc->key = strdup(key))) {
            add_error(file, (int)config_setting_source_line(m), "model_caps: \"%s\" is not a "
                      "model name", mc->model ? mc->model : "");
            rc = -1;
            continue;
        }
        for (int j = 0; j < *n - 1; j++)
            if ((*out)[j].key && strcmp((*out)[j].key, mc->key) == 0) {
                add_error(file, (int)config_setting_source_line(m),
                          "model_caps: \"%s\" has two rows", mc->model);
                rc = -1;
            }
    }
    return rc;
}

static void free_model_caps(struct config_model_cap *m, int n)
{
    for (int i = 0; m && i < n; i++) {
        free(m[i].model);
        free(m[i].key);
    }
    free(m);
}

/* A host name or address as SNI and certificates carry it. */
static int good_host(const char *h)
{
    size_t n = strlen(h);
    return n > 0 && n < 254 &&
           strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") == n;
}

static int get_bool(const char *file, config_setting_t *g, const char *name, int *out, char *err,
                    size_t errlen)
{
    config_setting_t *s = config_setting_get_member(g, name);
    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        FAIL(s, "\"%s\" must be true or false", name);
    *out = config_setting_get_bool(s);
    return 0;
}

/* A backend's `tls = { ... }`: only with an https:// url; its files must
 * load (and the key match its certificate) now, not at the first request. */
static int load_backend_tls(const char *file, config_setting_t *b, struct config_backend *be,
                            char *err, size_t errlen)
{
    config_setting_t *g = config_setting_get_member(b, "tls");
    struct config_tls *t = &be->tlsc;
    char why[700];
    t->verify = 1;
    if (!g)
        return 0;
    if (!be->tls)
        FAIL(g, "backend %s: \"tls\" is for an https:// url", be->name);
    if (!config_setting_is_group(g))
        FAIL(g, "\"tls\" must be a group { ca_file = ...; server_name = ...; }");
    if (check_members(file, g, backend_tls_keys,
                      sizeof backend_tls_keys / sizeof backend_tls_keys[0], "a backend's tls",
                      err, errlen) ||
        get_string(file, g, "server_name", 0, &t->server_name, err, errlen) ||
        get_string(file, g, "ca_file", 0, &t->ca_file, err, errlen) ||
        get_string(file, g, "cert_file", 0, &t->cert_file, err, errlen) ||
        get_string(file, g, "key_file", 0, &t->key_file, err, errlen) ||
        get_bool(file, g, "verify", &t->verify, err, errlen))
        return -1;
    if (t->server_name && !good_host(t->server_name))
        FAIL(config_setting_get_member(g, "server_name"),
             "tls.server_name \"%s\" is not a host name", t->server_name);
    if (!t->cert_file != !t->key_file)
        FAIL(g, "tls.cert_file and tls.key_file go together (a client certificate and its key)");
    if (t->ca_file && tls_check_ca(t->ca_file, why, sizeof why) < 0)
        FAIL(config_setting_get_member(g, "ca_file"), "tls.%s", why);
    if (t->cert_file && tls_check_pair(t->cert_file, t->key_file, NULL, why, sizeof why) < 0)
        FAIL(config_setting_get_member(g, "cert_file"), "tls.%s", why);
    return 0;
}

/* A header the proxy itself owns on the way to a backend: the framing,
 * the route and the chain of addresses. */
static int reserved_header(const char *name)
{
    static const char *const owned[] = {"Host",    "Content-Length", "Transfer-Encoding",
                                        "Connection", "Keep-Alive", "Proxy-Connection",
                                        "TE",      "Trailer",        "Upgrade",
                                        "Expect",  "X-Forwarded-For"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (strcasecmp(name, owned[i]) == 0)
            return 1;
    return 0;
}

/* "Name: value" into H: a token name (RFC 9110 5.6.2), a value without
 * control characters. 0, or -1 with why in WHY. */
static int parse_header(const char *s, struct config_header *h, char *why, size_t whylen)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    size_t n = strspn(s, tchar);
    const char *v = s + n;
    if (n == 0 || *v != ':') {
        snprintf(why, whylen, "must be \"Name: value\" with a name of letters, digits and "
                              "!#$%%&'*+-.^_`|~");
        return -1;
    }
    v += 1 + strspn(v + 1, " \t");
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            snprintf(why, whylen, "its value holds a control character");
            return -1;
        }
    h->name = strndup(s, n);
    h->value = strdup(v);
    if (!h->name || !h->value) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (size_t k = strlen(h->value); k > 0 && strchr(" \t", h->value[k - 1]); k--)
        h->value[k - 1] = '\0';
    if (!h->value[0]) {
        snprintf(why, whylen, "its value is empty");
        return -1;
    }
    if (reserved_header(h->name)) {
        snprintf(why, whylen, "%s is the proxy's to set", h->name);
        return -1;
    }
    return 0;
}

/* `headers = [ "Name: value", ... ]`. The messages never quote a value:
 * it is a secret. */
static int load_headers(const char *file, config_setting_t *b, struct config_backend *be,
                        char *err, size_t errlen)
{
    config_setting_t *l = config_setting_get_member(b, "headers");
    char why[160];
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "\"headers\" must be a list of strings [ \"Name: value\", ... ]");
    be->nheaders = config_setting_length(l);
    be->headers = calloc((size_t)be->nheaders + 1, sizeof *be->headers);
    for (int i = 0; i < be->nheaders; i++) {
        const char *v = config_setting_get_string_elem(l, (unsigned)i);
        if (!v)
            FAIL(l, "\"headers\" must be a list of strings [ \"Name: value\", ... ]");
        if (parse_header(v, &be->headers[i], why, sizeof why) < 0)
            FAIL(l, "backend %s: header %d of \"headers\": %s", be->name, i + 1, why);
        for (int j = 0; j < i; j++)
            if (strcasecmp(be->headers[j].name, be->headers[i].name) == 0)
                FAIL(l, "backend %s: header %s is given twice", be->name, be->headers[i].name);
    }
    return 0;
}

static int load_backend(const char *file, config_setting_t *b, struct px_config *c, int i,
                        char *err, size_t errlen)
{
    struct config_backend *be = &c->backends[i];
    char host[256], why[300];
    if (!config_setting_is_group(b))
        FAIL(b, "each backend must be a group { name = ...; url = ...; max_concurrent = ...; }");
    config_setting_t *rs;
    char *dns = NULL;
    be->resolve_s = 10;
    config_setting_t *ad = config_setting_get_member(b, "adaptive");
    if (ad && config_setting_type(ad) != CONFIG_TYPE_BOOL)
        FAIL(ad, "\"adaptive\" must be true or false");
    be->adaptive = ad ? config_setting_get_bool(ad) : 0;
    if (check_members(file, b, backend_keys, sizeof backend_keys / sizeof backend_keys[0],
                      "a backend", err, errlen) ||
        load_model_caps(file, config_setting_get_member(b, "model_caps"), &be->model_caps,
                        &be->nmodel_caps, err, errlen) ||
        get_string(file, b, "name", 1, &be->name, err, errlen) ||
        get_string(file, b, "dns", 0, &dns, err, errlen) ||
        get_string(file, b, "url", !dns, &be->url, err, errlen) ||
        get_int(file, b, "max_concurrent", 1, 1, 100000, &be->max_concurrent, err, errlen))
        return free(dns), -1;
    if (dns && be->url) {
        free(dns);
        FAIL(b, "a backend has a url or a dns name, not both");
    }
    if (dns && (config_setting_get_member(b, "tls") || config_setting_get_member(b, "headers"))) {
        free(dns);
        FAIL(b, "backend %s: \"tls\" and \"headers\" need a url row (a dns row is plain "
             "http:// to each address)", be->name);
    }
    if (dns) { /* "host:port": each address it resolves to is a backend */
        size_t n = strlen(dns) + 16;
        be->is_dns = 1;
        if ((be->url = malloc(n)))
            snprintf(be->url, n, "http://%s", dns);
        free(dns);
    }
    if ((rs = config_setting_get_member(b, "resolve_s"))) {
        if (!config_setting_is_number(rs) || config_setting_get_float(rs) +
                                                     (double)config_setting_get_int64(rs) <
                                                 0.01)
            FAIL(rs, "\"resolve_s\" must be a number of seconds >= 0.01");
        be->resolve_s = config_setting_type(rs) == CONFIG_TYPE_FLOAT
                            ? config_setting_get_float(rs)
                            : (double)config_setting_get_int64(rs);
        if (!be->is_dns)
            FAIL(rs, "\"resolve_s\" is for a backend given by a dns name");
    }
    if (!be->name || !be->url)
        FAIL(b, "out of memory");
    if (!good_name(be->name))
        FAIL(config_setting_get_member(b, "name"),
             "backend name \"%s\": letters, digits and . _ : - only, at most 64", be->name);
    if (config_parse_url(be->url, host, sizeof host, &be->port, why, sizeof why) < 0)
        FAIL(config_setting_get_member(b, be->is_dns ? "dns" : "url"), "%s", why);
    be->host = strdup(host);
    be->line = (int)config_setting_source_line(b);
    be->tls = strncmp(be->url, "https://", 8) == 0;
    if (load_backend_tls(file, b, be, err, errlen) || load_headers(file, b, be, err, errlen))
        return -1;
    for (int j = 0; j < i; j++)
        if (c->backends[j].name && strcmp(c->backends[j].name, be->name) == 0)
            FAIL(b, "duplicate backend name \"%s\"", be->name);
    return 0;
}

static int load_backends(const char *file, config_setting_t *root, struct px_config *c,
                         char *err, size_t errlen)
{
    config_setting_t *l = config_setting_get_member(root, "backends");
    int rc = 0;
    if (!l)
        FAIL(root, "missing \"backends\"");
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "\"backends\" must be a list ( {...}, {...} )");
    c->nbackends = config_setting_length(l);
    if (c->nbackends == 0)
        FAIL(l, "\"backends\" is empty: at least one backend is needed");
    if (!(c->backends = calloc((size_t)c->nbackends, sizeof *c->backends))) {
        c->nbackends = 0;
        FAIL(l, "out of memory");
    }
    for (int i = 0; i < c->nbackends; i++)
        rc |= load_backend(file, config_setting_get_elem(l, (unsigned)i), c, i, err, errlen);
    return rc;
}

static int load_key(const char *file, config_setting_t *k, struct config_key *key, char *err,
                    size_t errlen)
{
    char *prio = NULL;
    config_setting_t *a;
    int rc = 0;
    key->priority = PRIO_NORMAL;
    if (!config_setting_is_group(k))
        FAIL(k, "each key must be a group { name = ...; key = ...; }");
    key->weight = 1;
    if (check_members(file, k, key_keys, sizeof key_keys / sizeof key_keys[0], "a key", err,
                      errlen) ||
        get_string(file, k, "name", 1, &key->name, err, errlen) ||
        get_string(file, k, "key", 1, &key->key, err, errlen) ||
        get_int(file, k, "max_concurrent", 0, 0, 10000000, &key->max_concurrent, err, errlen) ||
        get_int(file, k, "max_queued", 0, 0, 10000000, &key->max_queued, err, errlen) ||
        get_int(file, k, "weight", 0, 1, 1000, &key->weight, err, errlen))
        return -1;
    if (!good_name(key->name))
        FAIL(config_setting_get_member(k, "name"),
             "key name \"%s\": letters, digits and . _ : - only, at most 64", key->name);
    a = config_setting_get_member(k, "admin");
    if (a && config_setting_type(a) != CONFIG_TYPE_BOOL)
        FAIL(a, "\"admin\" must be true or false");
    key->admin = a ? config_setting_get_bool(a) : 0;
    /* read last: the refusals above return at once (prio is a copy) */
    if (get_string(file, k, "priority", 0, &prio, err, errlen))
        return -1;
    if (prio) {
        int found = -1;
        for (int i = 0; i < PRIO_COUNT; i++)
            if (strcmp(prio, prio_names[i]) == 0)
                found = i;
        free(prio);
        if (found < 0) {
            add_error(file,
                      (int)config_setting_source_line(config_setting_get_member(k, "priority")),
                      "priority must be high, normal or low");
            rc = -1;
        } else {
            key->priority = (enum key_priority)found;
        }
    }
    return rc;
}

static int load_key_unique(const char *file, config_setting_t *k, struct px_config *c, int i,
                           char *err, size_t errlen)
{
    if (load_key(file, k, &c->keys[i], err, errlen))
        return -1;
    for (int j = 0; j < i; j++) {
        if (!c->keys[j].name || !c->keys[j].key)
            continue;
        if (strcmp(c->keys[j].name, c->keys[i].name) == 0)
            FAIL(k, "duplicate key name \"%s\"", c->keys[i].name);
        if (strcmp(c->keys[j].key, c->keys[i].key) == 0)
            FAIL(k, "keys \"%s\" and \"%s\" have the same secret", c->keys[j].name,
                 c->keys[i].name);
    }
    return 0;
}

static int load_auth(const char *file, config_setting_t *root, struct px_config *c, char *err,
                     size_t errlen)
{
    static const char *const auth_keys[] = {"keys", "client_header", "metrics_key_required",
                                            "ipv4_prefix", "ipv6_prefix"};
    config_setting_t *a = config_setting_get_member(root, "auth"), *l, *m;
    int rc = 0;
    if (!a)
        return 0;
    if (!config_setting_is_group(a))
        FAIL(a, "\"auth\" must be a group");
    if (check_members(file, a, auth_keys, 5, "auth", err, errlen) ||
        get_string(file, a, "client_header", 0, &c->client_header, err, errlen) ||
        get_int(file, a, "ipv4_prefix", 0, 1, 32, &c->ipv4_prefix, err, errlen) ||
        get_int(file, a, "ipv6_prefix", 0, 1, 128, &c->ipv6_prefix, err, errlen))
        return -1;
    m = config_setting_get_member(a, "metrics_key_required");
    if (m && config_setting_type(m) != CONFIG_TYPE_BOOL)
        FAIL(m, "\"metrics_key_required\" must be true or false");
    c->metrics_key_required = m ? config_setting_get_bool(m) : 0;
    l = config_setting_get_member(a, "keys");
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "auth.keys must be a list ( {...} )");
    c->nkeys = config_setting_length(l);
    if (!(c->keys = calloc((size_t)c->nkeys + 1, sizeof *c->keys))) {
        c->nkeys = 0;
        FAIL(l, "out of memory");
    }
    for (int i = 0; i < c->nkeys; i++)
        rc |= load_key_unique(file, config_setting_get_elem(l, (unsigned)i), c, i, err, errlen);
    return rc;
}

/* logging.skip_paths = [ "/", "/api/version" ]: paths (each "/...",
 * matched whole, the query aside) whose requests write no access-log line. */
static int load_skip_paths(const char *file, config_setting_t *g, struct px_config *c,
                           char *err, size_t errlen)
{
    config_setting_t *l = config_setting_get_member(g, "skip_paths");
    static const char what[] = "logging.skip_paths must be a list of paths, each starting "
                               "with \"/\"";
    int n;
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, what);
    n = config_setting_length(l);
    if (!(c->skip_paths = calloc((size_t)n + 1, sizeof *c->skip_paths)))
        FAIL(l, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string_elem(l, (unsigned)i);
        if (!v || v[0] != '/' || strchr(v, '?'))
            FAIL(l, what);
        if (!(c->skip_paths[c->nskip_paths] = strdup(v)))
            FAIL(l, "out of memory");
        c->nskip_paths++;
    }
    return 0;
}

int config_skip_path(const struct px_config *c, const char *path)
{
    size_t n = strcspn(path, "?");
    for (int i = 0; i < c->nskip_paths; i++)
        if (strlen(c->skip_paths[i]) == n && !memcmp(c->skip_paths[i], path, n))
            return 1;
    return 0;
}

static int load_logging(const char *file, config_setting_t *root, struct px_config *c,
                        char *err, size_t errlen)
{
    static const char *const keys[] = {"access", "format", "skip_paths"};
    config_setting_t *g = config_setting_get_member(root, "logging");
    char *format = NULL;
    if (!g)
        return 0;
    if (!config_setting_is_group(g))
        FAIL(g, "\"logging\" must be a group { ... }");
    if (check_members(file, g, keys, 3, "logging", err, errlen) ||
        load_skip_paths(file, g, c, err, errlen))
        return -1;
    free(c->access_log);
    c->access_log = NULL;
    if (get_string(file, g, "access", 0, &c->access_log, err, errlen) ||
        get_string(file, g, "format", 0, &format, err, errlen))
        return -1;
    if (!c->access_log)
        c->access_log = strdup("stderr");
    if (format && strcmp(format, "json") != 0 && strcmp(format, "text") != 0) {
        free(format);
        FAIL(config_setting_get_member(g, "format"), "logging.format must be \"text\" or "
                                                     "\"json\"");
    }
    c->access_json = format && strcmp(format, "json") == 0;
    free(format);
    return 0;
}

/* resolvers = ( "127.0.0.1:53" ); the name servers of dns backends
 * (default: /etc/resolv.conf's). */
static int load_resolvers(const char *file, config_setting_t *root, struct px_config *c,
                          char *err, size_t errlen)
{
    config_setting_t *l = config_setting_get_member(root, "resolvers");
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "\"resolvers\" must be a list of \"host:port\" strings");
    c->nresolvers = config_setting_length(l);
    if (!(c->resolvers = calloc((size_t)c->nresolvers + 1, sizeof *c->resolvers))) {
        c->nresolvers = 0;
        FAIL(l, "out of memory");
    }
    for (int i = 0; i < c->nresolvers; i++) {
        const char *v = config_setting_get_string_elem(l, (unsigned)i);
        if (!v || !*v)
            FAIL(l, "\"resolvers\" must be a list of \"host:port\" strings");
        c->resolvers[i] = strdup(v);
    }
    return 0;
}

/* tls = { listen; cert_file; key_file; }: the HTTPS listener, all three
 * needed; the certificate must load and the key match it. */
static int load_tls(const char *file, config_setting_t *root, struct px_config *c, char *err,
                    size_t errlen)
{
    config_setting_t *g = config_setting_get_member(root, "tls");
    char why[700], host[256];
    if (!g)
        return 0;
    if (!config_setting_is_group(g))
        FAIL(g, "\"tls\" must be a group { listen = ...; cert_file = ...; key_file = ...; }");
    if (check_members(file, g, tls_keys, sizeof tls_keys / sizeof tls_keys[0], "tls", err,
                      errlen) ||
        get_string(file, g, "listen", 1, &c->tls_listen, err, errlen) ||
        get_string(file, g, "cert_file", 1, &c->tls_cert_file, err, errlen) ||
        get_string(file, g, "key_file", 1, &c->tls_key_file, err, errlen))
        return -1;
    if (net_parse_hostport(c->tls_listen, host, sizeof host, &c->tls_listen_port, why,
                           sizeof why) < 0)
        FAIL(config_setting_get_member(g, "listen"), "tls.listen: %s", why);
    c->tls_listen_host = strdup(host);
    if (tls_check_pair(c->tls_cert_file, c->tls_key_file, NULL, why, sizeof why) < 0)
        FAIL(config_setting_get_member(g, "cert_file"), "tls.%s", why);
    return 0;
}

/* cors_origins = ( "https://chat.example.com", "http://localhost:*" ); the
 * browser origins allowed to call the proxy (front/cors.c); '*' matches
 * any run of characters. Default: none. */
static int load_cors(const char *file, config_setting_t *root, struct px_config *c, char *err,
                     size_t errlen)
{
    config_setting_t *l = config_setting_get_member(root, "cors_origins");
    if (!l)
        return 0;
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "\"cors_origins\" must be a list of origins (\"https://host:port\", \"*\")");
    c->ncors_origins = config_setting_length(l);
    c->cors_origins = calloc((size_t)c->ncors_origins + 1, sizeof *c->cors_origins);
    for (int i = 0; i < c->ncors_origins; i++) {
        const char *v = config_setting_get_string_elem(l, (unsigned)i);
        if (!v || !*v)
            FAIL(l, "\"cors_origins\" must be a list of origins (\"https://host:port\", \"*\")");
        c->cors_origins[i] = strdup(v);
    }
    return 0;
}
/* A header name as RFC 9110 spells one (a token), 64 bytes at most. */
static int good_header(const char *h)
{
    size_t n = strlen(h);
    return n && n <= 64 &&
           strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "!#$%&'*+-.^_`|~") == n;
}

static int index_of(const char *v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0)
            return (int)i;
    return -1;
}

static int load_session_headers(const char *file, config_setting_t *l, struct config_routing *r,
                                char *err, size_t errlen)
{
    int n = config_setting_length(l);
    if (!config_setting_is_list(l) && !config_setting_is_array(l))
        FAIL(l, "routing.session_headers must be a list of header names [ \"x-session-id\" ]");
    if (n > MAX_SESSION_HEADERS)
        FAIL(l, "routing.session_headers: at most %d names", MAX_SESSION_HEADERS);
    for (int i = 0; i < r->nsession_headers; i++)
        free(r->session_headers[i]);
    free(r->session_headers);
    r->nsession_headers = 0;
    if (!(r->session_headers = calloc((size_t)n + 1, sizeof *r->session_headers)))
        FAIL(l, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *v = config_setting_get_string_elem(l, (unsigned)i);
        if (!v || !good_header(v))
            FAIL(l, "routing.session_headers: \"%s\" is not a header name", v ? v : "");
        r->session_headers[r->nsession_headers++] = strdup(v);
    }
    return 0;
}

/* routing = { affinity; session_headers; balance_factor; affinity_wait_ms;
 * num_ctx; } (the two numbers are rows of opts[]). */
static int load_routing(const char *file, config_setting_t *root, struct px_config *c,
                        char *err, size_t errlen)
{
    static const char *const keys[] = {"affinity", "session_headers", "balance_factor",
                                       "affinity_wait_ms", "num_ctx"};
    config_setting_t *g = config_setting_get_member(root, "routing"), *s;
    struct config_routing *r = &c->routing;
    int rc = 0, k;
    if (!g)
        return 0;
    if (!config_setting_is_group(g))
        FAIL(g, "\"routing\" must be a group { ... }");
    if (check_members(file, g, keys, sizeof keys / sizeof keys[0], "routing", err, errlen))
        rc = -1;
    if ((s = config_setting_get_member(g, "affinity"))) {
        const char *v = config_setting_get_string(s);
        if (!v || (k = index_of(v, affinity_names, 3)) < 0) {
            add_error(file, (int)config_setting_source_line(s),
                      "routing.affinity must be \"session\", \"prefix\" or \"off\"");
            rc = -1;
        } else {
            r->affinity = (enum routing_affinity)k;
        }
    }
    if ((s = config_setting_get_member(g, "session_headers")))
        rc |= load_session_headers(file, s, r, err, errlen);
    if ((s = config_setting_get_member(g, "balance_factor")) && config_setting_is_number(s) &&
        r->balance_factor > 0 && r->balance_factor < 1) {
        add_error(file, (int)config_setting_source_line(s),
                  "routing.balance_factor = %g: 0 (no bound) or at least 1", r->balance_factor);
        rc = -1;
    }
    if ((s = config_setting_get_member(g, "num_ctx"))) {
        const char *v = config_setting_get_string(s);
        long long n = config_setting_type(s) == CONFIG_TYPE_INT ||
                              config_setting_type(s) == CONFIG_TYPE_INT64
                          ? config_setting_get_int64(s)
                          : -1;
        if (v && (k = index_of(v, num_ctx_names, 2)) >= 0) {
            r->num_ctx = (enum routing_num_ctx)k;
        } else if (!v && n >= 1 && n <= 16777216) {
            r->num_ctx = NUM_CTX_PIN;
            r->num_ctx_pin = (int)n;
        } else {
            add_error(file, (int)config_setting_source_line(s),
                      "routing.num_ctx must be \"pass\", \"strip\" or a number of tokens "
                      "(1 to 16777216)");
            rc = -1;
        }
    }
    return rc;
}

static int load_groups(const char *file, config_setting_t *root, char *err, size_t errlen)
{
    static const char *const groups[] = {"queue", "timeouts", "health", "models", "limits"};
    int rc = 0;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        config_setting_t *s = config_setting_get_member(root, groups[g]);
        const char *names[8];
        size_t n = 0;
        if (!s)
            continue;
        if (!config_setting_is_group(s)) {
            add_error(file, (int)config_setting_source_line(s), "\"%s\" must be a group { ... }",
                      groups[g]);
            rc = -1;
            continue;
        }
        for (size_t i = 0; i < NOPTS; i++)
            if (opts[i].group && strcmp(opts[i].group, groups[g]) == 0)
                names[n++] = opts[i].name;
        rc |= check_members(file, s, names, n, groups[g], err, errlen);
    }
    return rc;
}

static int load_root(const char *file, config_t *cf, struct px_config *c, char *err,
                     size_t errlen)
{
    config_setting_t *root = config_root_setting(cf);
    char why[300], host[256];
    int rc = check_members(file, root, top_keys, sizeof top_keys / sizeof top_keys[0], "",
                           err, errlen);
    rc |= load_groups(file, root, err, errlen);
    if (get_string(file, root, "listen", 1, &c->listen, err, errlen) == 0 && c->listen) {
        if (net_parse_hostport(c->listen, host, sizeof host, &c->listen_port, why,
                               sizeof why) < 0) {
            add_error(file, (int)config_setting_source_line(config_setting_get_member(root,
                                                                                       "listen")),
                      "listen: %s", why);
            rc = -1;
        } else {
            c->listen_host = strdup(host);
        }
    } else {
        rc = -1;
    }
    for (size_t i = 0; i < NOPTS; i++)
        rc |= load_scalar(file, root, &opts[i], c, err, errlen);
    rc |= load_backends(file, root, c, err, errlen);
    rc |= load_auth(file, root, c, err, errlen);
    rc |= load_logging(file, root, c, err, errlen);
    rc |= load_resolvers(file, root, c, err, errlen);
    rc |= load_tls(file, root, c, err, errlen);
    rc |= load_cors(file, root, c, err, errlen);
    if (get_string(file, root, "state_file", 0, &c->state_file, err, errlen))
        rc = -1;
    rc |= load_routing(file, root, c, err, errlen);
    rc |= load_model_caps(file, config_setting_get_member(root, "model_caps"), &c->model_caps,
                          &c->nmodel_caps, err, errlen);
    return rc;
}

/* Every string a load copies is there: 0, or -1 when an allocation failed
 * (the config is refused rather than half made). */
static int complete(const struct px_config *c)
{
    int ok = c->file && c->listen && c->listen_host && c->access_log;
    for (int i = 0; i < c->nbackends && ok; i++)
        ok = c->backends[i].name && c->backends[i].url && c->backends[i].host;
    for (int i = 0; i < c->nkeys && ok; i++)
        ok = c->keys[i].name && c->keys[i].key;
    for (int i = 0; i < c->nresolvers && ok; i++)
        ok = c->resolvers[i] != NULL;
    ok = ok && c->routing.session_headers;
    for (int i = 0; i < c->routing.nsession_headers && ok; i++)
        ok = c->routing.session_headers[i] != NULL;
    if (ok && c->tls_listen)
        ok = c->tls_listen_host != NULL;
    return ok ? 0 : -1;
}

struct px_config *config_load(const char *file, char *err, size_t errlen)
{
    config_t cf;
    struct px_config *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "%s:0: out of memory", file);
        return NULL;
    }
    c->file = strdup(file);
    c->serial = ++config_serial;
    set_defaults(c);
    config_init(&cf);
    errno = 0;
    if (!config_read_file(&cf, file)) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s:0: cannot read the file: %s", file,
                     strerror(errno ? errno : EIO));
        else
            snprintf(err, errlen, "%s:%d: %s", config_error_file(&cf) ? config_error_file(&cf)
                                                                       : file,
                     config_error_line(&cf), config_error_text(&cf));
        goto fail;
    }
    errs.n = errs.dropped = 0;
    if (load_root(file, &cf, c, err, errlen) < 0 || errs.n) {
        join_errors(err, errlen);
        goto fail;
    }
    if (complete(c) < 0) {
        snprintf(err, errlen, "%s:0: out of memory", file);
        goto fail;
    }
    config_destroy(&cf);
    return c;
fail:
    config_destroy(&cf);
    config_free(c);
    return NULL;
}

void config_free(struct px_config *c)
{
    if (!c)
        return;
    for (int i = 0; c->backends && i < c->nbackends; i++) {
        struct config_backend *b = &c->backends[i];
        free(b->name);
        free(b->url);
        free(b->host);
        free(b->tlsc.server_name);
        free(b->tlsc.ca_file);
        free(b->tlsc.cert_file);
        free(b->tlsc.key_file);
        for (int j = 0; b->headers && j < b->nheaders; j++) {
            free(b->headers[j].name);
            free(b->headers[j].value);
        }
        free(b->headers);
        free_model_caps(b->model_caps, b->nmodel_caps);
    }
    for (int i = 0; c->keys && i < c->nkeys; i++) {
        free(c->keys[i].name);
        free(c->keys[i].key);
    }
    free(c->backends);
    free(c->keys);
    free(c->client_header);
    free(c->state_file);
    for (int i = 0; c->resolvers && i < c->nresolvers; i++)
        free(c->resolvers[i]);
    free(c->resolvers);
    for (int i = 0; c->cors_origins && i < c->ncors_origins; i++)
        free(c->cors_origins[i]);
    free(c->cors_origins);
    for (int i = 0; c->routing.session_headers && i < c->routing.nsession_headers; i++)
        free(c->routing.session_headers[i]);
    free(c->routing.session_headers);
    free_model_caps(c->model_caps, c->nmodel_caps);
    free(c->access_log);
    for (int i = 0; c->skip_paths && i < c->nskip_paths; i++)
        free(c->skip_paths[i]);
    free(c->skip_paths);
    free(c->listen);
    free(c->listen_host);
    free(c->tls_listen);
    free(c->tls_listen_host);
    free(c->tls_cert_file);
    free(c->tls_key_file);
    free(c->file);
    free(c);
}

/* ---- warnings (--check and startup): legal but probably wrong ---- */

/* The addresses HOST resolves to now (NULL: it does not; *RC why). */
static struct addrinfo *resolve_now(const char *host, int passive, int *rc)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    *rc = getaddrinfo(host && *host ? host : NULL, passive ? "0" : NULL, &hints, &res);
    return *rc == 0 ? res : NULL;
}

static int same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
    return 0;
}

/* The first address of RA also in RB, as text into BUF; 0 if none. */
static int shared_addr(const struct addrinfo *ra, const struct addrinfo *rb, char *buf,
                       size_t len)
{
    for (const struct addrinfo *a = ra; a; a = a->ai_next)
        for (const struct addrinfo *b = rb; b; b = b->ai_next)
            if (same_addr(a->ai_addr, b->ai_addr))
                return getnameinfo(a->ai_addr, a->ai_addrlen, buf, (socklen_t)len, NULL, 0,
                                   NI_NUMERICHOST) == 0;
    return 0;
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

/* Backend I's warning into LINE (left "" if none): one server under two
 * names (the same port at an address both names resolve to: "localhost"
 * and "127.0.0.1" are one), or a host that does not resolve now. */
static void backend_warning(const struct px_config *c, int i, struct addrinfo **res,
                            char *line, size_t len)
{
    const struct config_backend *b = &c->backends[i];
    char addr[INET6_ADDRSTRLEN];
    int rc;
    for (int j = 0; j < i && !line[0]; j++) {
        const struct config_backend *o = &c->backends[j];
        if (o->port != b->port)
            continue;
        if (strcmp(o->host, b->host) == 0)
            snprintf(line, len, "%s:%d: warning: backends \"%s\" and \"%s\" are one server "
                     "(%s:%d): its slots are counted twice", c->file, b->line, o->name,
                     b->name, b->host, b->port);
    }
    if (!line[0] && !(res[i] = resolve_now(b->host, 0, &rc)))
        snprintf(line, len, "%s:%d: warning: backend \"%s\": host \"%s\" does not resolve "
                 "now (%s); it is tried again when used", c->file, b->line, b->name, b->host,
                 gai_strerror(rc));
    for (int j = 0; j < i && !line[0]; j++) {
        const struct config_backend *o = &c->backends[j];
        if (o->port == b->port && res[j] && shared_addr(res[j], res[i], addr, sizeof addr))
            snprintf(line, len, "%s:%d: warning: backends \"%s\" and \"%s\" are one server "
                     "(\"%s\" and \"%s\" are both %s, port %d): its slots are counted twice",
                     c->file, b->line, o->name, b->name, o->host, b->host, addr, b->port);
    }
    if (!line[0] && b->tls && !b->tlsc.verify)
        snprintf(line, len, "%s:%d: warning: backend \"%s\": tls.verify = false: its "
                 "certificate is not checked, so anyone on the way can read and change its "
                 "traffic (the key in its headers too)", c->file, b->line, b->name);
}

/* Without keys, a listen address other machines reach opens everything
 * (the admin endpoints included) to whoever reaches the port. */
static void listen_warning(const struct px_config *c, char *line, size_t len)
{
    struct addrinfo *res, *a;
    int rc;
    if (c->nkeys || !(res = resolve_now(c->listen_host, 1, &rc)))
        return; /* keys; or it does not resolve, and startup says so */
    for (a = res; a && is_loopback(a->ai_addr); a = a->ai_next)
        ;
    if (a)
        snprintf(line, len, "%s: warning: listen \"%s\" is reachable from other machines and "
                 "auth.keys is empty: whoever reaches the port may use every backend, drain or "
                 "disable them, and pull or delete models; add keys (auth.keys), or listen on "
                 "127.0.0.1", c->file, c->listen);
    freeaddrinfo(res);
}

static void add_warning(char *out, size_t outlen, size_t *used, int *n, const char *line)
{
    if (!line[0] || *used >= outlen)
        return;
    *used += (size_t)snprintf(out + *used, outlen - *used, "%s%s", *n ? "\n" : "", line);
    (*n)++;
}

int config_warnings(const struct px_config *c, char *out, size_t outlen)
{
    struct addrinfo **res = calloc((size_t)c->nbackends + 1, sizeof *res);
    size_t used = 0;
    int n = 0;
    char line[700];
    out[0] = '\0';
    for (int i = 0; res && i < c->nbackends; i++) {
        line[0] = '\0';
        backend_warning(c, i, res, line, sizeof line);
        add_warning(out, outlen, &used, &n, line);
    }
    line[0] = '\0';
    listen_warning(c, line, sizeof line);
    add_warning(out, outlen, &used, &n, line);
    for (int i = 0; res && i < c->nbackends; i++)
        if (res[i])
            freeaddrinfo(res[i]);
    free(res);
    return n;
}

int config_model_cap(const struct px_config *cfg, const struct config_backend *cb,
                     const char *key)
{
    for (int i = 0; cb && i < cb->nmodel_caps; i++)
        if (cb->model_caps[i].key && strcmp(cb->model_caps[i].key, key) == 0)
            return cb->model_caps[i].max_concurrent;
    for (int i = 0; i < cfg->nmodel_caps; i++)
        if (cfg->model_caps[i].key && strcmp(cfg->model_caps[i].key, key) == 0)
            return cfg->model_caps[i].max_concurrent;
    return 0;
}

const struct config_backend *config_backend_row(const struct px_config *cfg, const char *name,
                                                const char *tmpl)
{
    for (int i = 0; i < cfg->nbackends; i++) {
        const struct config_backend *b = &cfg->backends[i];
        if (tmpl ? b->is_dns && strcmp(b->name, tmpl) == 0
                 : !b->is_dns && strcmp(b->name, name) == 0)
            return b;
    }
    return NULL;
}

static void print_model_caps(const char *indent, const struct config_model_cap *m, int n)
{
    for (int i = 0; i < n; i++)
        printf("%s%-30s max_concurrent %d\n", indent, m[i].model, m[i].max_concurrent);
}

static void print_routing(const struct px_config *c)
{
    const struct config_routing *r = &c->routing;
    printf("routing          affinity %s, balance_factor %g%s, wait %g ms\n",
           affinity_names[r->affinity], r->balance_factor,
           r->balance_factor > 0 ? "" : " (no bound)", r->affinity_wait_ms);
    if (r->affinity != AFFINITY_OFF) {
        printf("  session headers");
        for (int i = 0; i < r->nsession_headers; i++)
            printf("%s%s", i ? ", " : " ", r->session_headers[i]);
        printf("%s\n", r->nsession_headers ? "" : " (none)");
    }
    if (r->num_ctx == NUM_CTX_PIN)
        printf("  num_ctx        pinned to %d on every generate and chat request\n",
               r->num_ctx_pin);
    else
        printf("  num_ctx        %s\n", r->num_ctx == NUM_CTX_STRIP
                                             ? "strip (removed from request bodies)"
                                             : "pass (a backend loaded with it preferred)");
    printf("model caps       embedding models 1 a backend unless set%s\n",
           c->nmodel_caps ? ";" : "");
    print_model_caps("  ", c->model_caps, c->nmodel_caps);
}

void config_print_summary(const struct px_config *c)
{
    int slots = 0;
    printf("%s: OK\n", c->file);
    printf("listen           %s\n", c->listen);
    if (c->tls_listen)
        printf("tls listen       %s (cert %s)\n", c->tls_listen, c->tls_cert_file);
    printf("backends         %d\n", c->nbackends);
    for (int i = 0; i < c->nbackends; i++) {
        const struct config_backend *b = &c->backends[i];
        printf("  %-14s %-32s max_concurrent %d", b->name, b->url, b->max_concurrent);
        if (b->nheaders) /* their names only: the values are secrets */
            for (int j = 0; j < b->nheaders; j++)
                printf("%s%s", j ? ", " : ", headers ", b->headers[j].name);
        printf("%s\n", b->adaptive ? " (adaptive ceiling)" : "");
        print_model_caps("    model ", b->model_caps, b->nmodel_caps);
        slots += b->max_concurrent;
    }
    printf("fleet slots      %d\n", slots);
    printf("queue            max_length %d, timeout %gs, no backend %gs\n",
           c->queue_max_length, c->queue_timeout_s, c->queue_no_backend_s);
    printf("timeouts         connect %gs, first byte %gs, idle %gs, request %gs\n",
           c->connect_s, c->first_byte_s, c->idle_s, c->request_s);
    printf("health           every %gs, timeout %gs, down after %d, up after %d\n",
           c->health_interval_s, c->health_timeout_s, c->health_fail_after,
           c->health_recover_after);
    printf("models           refresh every %gs\n", c->models_refresh_s);
    printf("limits           body %d MiB, %d connections\n", c->max_body_mb, c->max_connections);
    printf("shutdown         %gs\n", c->shutdown_timeout_s);
    printf("access log       %s, %s", c->access_log, c->access_json ? "json" : "text");
    for (int i = 0; i < c->nskip_paths; i++)
        printf("%s%s", i ? " " : ", not for ", c->skip_paths[i]);
    printf("\n");
    printf("state file       %s\n",
           c->state_file ? c->state_file : "none (adaptive caps start from 1 at each start)");
    print_routing(c);
    printf("auth             %s\n", c->nkeys ? "keys" : "open (no keys)");
    for (int i = 0; i < c->nkeys; i++)
        printf("  %-14s admin %s, priority %s, weight %d, max_concurrent %d, max_queued %d\n",
               c->keys[i].name, c->keys[i].admin ? "yes" : "no",
               prio_names[c->keys[i].priority], c->keys[i].weight, c->keys[i].max_concurrent,
               c->keys[i].max_queued);
    if (c->client_header)
        printf("clients          named by the trusted header %s\n", c->client_header);
    else if (!c->nkeys)
        printf("clients          by address: IPv4 /%d, IPv6 /%d\n", c->ipv4_prefix,
               c->ipv6_prefix);
    printf("cors origins     %s", c->ncors_origins ? "" : "none (browsers on other origins refused)");
    for (int i = 0; i < c->ncors_origins; i++)
        printf("%s%s", i ? ", " : "", c->cors_origins[i]);
    printf("\n");
}
