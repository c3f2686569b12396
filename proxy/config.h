/* config.h - the proxy's configuration (libconfig syntax, CONTRACT.md).
 *
 * config_load() reads and validates a file into a struct px_config that owns
 * all its strings; nothing points into libconfig's tree afterwards, so a
 * reload can build a new one beside the old and swap. */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stddef.h>

/* A cap of one model's runner on a backend (model_caps rows, at the top
 * level or in a backend's row; the backend's row wins). */
struct config_model_cap {
    char *model; /* as written */
    char *key;   /* its name_key() */
    int max_concurrent;
};

/* A backend's TLS: its url is https://, `tls = { ... }` says the rest. */
struct config_tls {
    char *server_name; /* SNI, the name verified and the Host; NULL: the url's host */
    char *ca_file;     /* NULL: the system's CAs */
    char *cert_file, *key_file; /* a client certificate (mTLS); NULL: none */
    int verify;        /* default 1; tls.verify = false turns it off */
};

/* A header a backend is sent with every request (`headers`): "Name: value"
 * split, validated. Secret: never logged nor shown. */
struct config_header {
    char *name, *value;
};

struct config_backend {
    char *name;
    char *url;  /* as written */
    char *host; /* from the URL, without brackets */
    int port;
    int max_concurrent;
    int line; /* in the file, for messages */
    int is_dns;       /* a template: url is "http://NAME:PORT" of a dns name whose
                         every address is a backend NAME-1, NAME-2, ... (dnsfleet.c) */
    double resolve_s; /* how often it is resolved again */
    int adaptive;     /* max_concurrent is a ceiling: adapt.h finds the cap */
    int tls;          /* https:// */
    struct config_tls tlsc;
    struct config_header *headers;
    int nheaders;
    struct config_model_cap *model_caps; /* this backend's own model_caps */
    int nmodel_caps;
};

/* routing.affinity: what a request's affinity key is (lb_affinity.c). */
enum routing_affinity { AFFINITY_OFF, AFFINITY_SESSION, AFFINITY_PREFIX };
/* routing.num_ctx: what is done with a request's options.num_ctx. */
enum routing_num_ctx { NUM_CTX_PASS, NUM_CTX_STRIP, NUM_CTX_PIN };

struct config_routing {
    enum routing_affinity affinity;
    char **session_headers; /* header names, in the order they are tried */
    int nsession_headers;
    double balance_factor;   /* bounded load; 0: no bound */
    double affinity_wait_ms; /* how long a keyed request may wait for its backend */
    enum routing_num_ctx num_ctx;
    int num_ctx_pin; /* NUM_CTX_PIN: the value set on every generate and chat request */
};

enum key_priority { PRIO_HIGH, PRIO_NORMAL, PRIO_LOW, PRIO_COUNT };

struct config_key {
    char *name;
    char *key;
    int admin;
    int max_concurrent; /* 0 = no cap of its own */
    int max_queued;     /* 0 = no bound of its own */
    int weight;         /* share relative to other clients of its priority */
    enum key_priority priority;
};

struct px_config {
    char *file;
    char *listen; /* "host:port" as written */
    char *listen_host;
    int listen_port;
    struct config_backend *backends;
    int nbackends;
    int queue_max_length;
    double queue_timeout_s;
    double queue_no_backend_s; /* a model no backend in service has: 503 after this */
    double connect_s, first_byte_s, idle_s;
    double request_s; /* a request's head and body arrive within this of its first byte */
    double health_interval_s, health_timeout_s;
    int health_fail_after, health_recover_after;
    double models_refresh_s;
    int max_body_mb;
    int max_connections;
    double shutdown_timeout_s;
    struct config_key *keys;
    int nkeys;
    char *client_header;      /* auth.client_header: a trusted header naming the client */
    char *access_log;         /* logging.access: "stderr", "off" or a file */
    int access_json;          /* logging.format = "json" */
    char **skip_paths;        /* logging.skip_paths: no access-log line for these */
    int nskip_paths;
    char *state_file;         /* adaptive knees kept across restarts (capstate.h); NULL: none */
    char **resolvers;         /* name servers for dns backends; NULL: /etc/resolv.conf */
    int nresolvers;
    int metrics_key_required; /* auth.metrics_key_required */
    char **cors_origins;      /* browser origins allowed (front/cors.c); '*' a wildcard */
    int ncors_origins;
    int ipv4_prefix, ipv6_prefix; /* without keys, a client is an address prefix */
    struct config_routing routing;
    struct config_model_cap *model_caps; /* the top level's model_caps */
    int nmodel_caps;
    unsigned serial; /* a new number for every config loaded: a reload is seen by it */
    /* tls = { listen; cert_file; key_file; }: the HTTPS listener; NULL: none */
    char *tls_listen, *tls_listen_host;
    int tls_listen_port;
    char *tls_cert_file, *tls_key_file;
};

/* Read FILE into a new config. Returns it, or NULL with "FILE:LINE: what is
 * wrong" in ERR. The caller frees it with config_free(). */
struct px_config *config_load(const char *file, char *err, size_t errlen);

/* 1 when requests for PATH (a request's path, with or without its query)
 * write no access-log line (logging.skip_paths). */
int config_skip_path(const struct px_config *c, const char *path);

/* Free a config; NULL is a no-op. */
void config_free(struct px_config *cfg);

/* What is legal but probably wrong: two backends that are one server (the
 * same host, or names that resolve to a common address, with the same
 * port), a host that does not resolve, a listen address other machines
 * reach with no auth.keys (blocking: --check and startup only). Writes
 * "FILE:LINE: warning: ..." lines (the listen one "FILE: warning: ..."),
 * in file order, into OUT; returns how many. */
int config_warnings(const struct px_config *cfg, char *out, size_t outlen);

/* The configured cap of the model with name key KEY on the backend of row
 * CB (NULL: none known): CB's model_caps row, else the top level's; 0 when
 * neither names it. */
int config_model_cap(const struct px_config *cfg, const struct config_backend *cb,
                     const char *key);

/* The row of the backend called NAME (a url row) or made from the dns row
 * TMPL (non-NULL); NULL when the config has none. */
const struct config_backend *config_backend_row(const struct px_config *cfg, const char *name,
                                                const char *tmpl);

/* Print the one-screen summary of --check to stdout. */
void config_print_summary(const struct px_config *cfg);

/* Parse "http://host:port" or "https://host:port" (port defaults to 80 or
 * 443, a path is refused) into HOST/PORT. Returns 0, or -1 with a reason
 * in ERR. */
int config_parse_url(const char *url, char *host, size_t hostlen, int *port, char *err,
                     size_t errlen);

#endif
