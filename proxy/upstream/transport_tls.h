/* transport_tls.h - TLS with OpenSSL: the ops table of https:// backends
 * (transport.h), and the few other things the proxy asks of OpenSSL: the
 * HTTPS listener's context, and the certificate checks of the config and
 * of --check. Nothing else in the proxy calls OpenSSL to make a context.
 *
 * A backend's TLS state is a struct tls_target, the tp_ctx of its
 * upstream_target: the SSL_CTX (CAs, client certificate, the name to
 * verify), the last session the backend gave (the next connection resumes
 * it) and what the last handshake saw (the certificate's expiry, for the
 * status page). One SSL per connection is the tconn's state.
 *
 * What a handshake may do to the caller: upstream.c drives setup with
 * WANT_READ/WANT_WRITE under the connect deadline (a handshake that stalls
 * fails with timeouts.connect_s); a failure writes its reason into the
 * target's setup_err ("TLS: certificate verify failed: certificate has
 * expired") and the connection fails with UPSTREAM_ESETUP. Nothing here
 * ever falls back to plain text. */
#ifndef PX_TRANSPORT_TLS_H
#define PX_TRANSPORT_TLS_H

#include <stddef.h>

#include "transport.h"

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */
struct bufferevent;
struct event_base;

/* TLS to backends: the tconn's ctx is a struct tls_target. */
extern const struct transport transport_tls;

/* How to speak TLS to one backend (the strings are the caller's). */
struct tls_conf {
    const char *server_name; /* sent as SNI (unless an address) and verified */
    const char *ca_file;     /* the CAs to trust; NULL: the system's */
    const char *cert_file;   /* a client certificate (mTLS); NULL: none */
    const char *key_file;    /* its key; with cert_file */
    int verify;              /* 0: no verification at all (tls.verify = false) */
};

struct tls_target;

/* A backend's TLS state for CONF. Returns it, or NULL with why in ERR (a
 * file that does not load, a key that does not match). */
struct tls_target *tls_target_new(const struct tls_conf *conf, char *err, size_t errlen);

/* 1 when T was made from the same CONF and its files have not changed on
 * disk since (a reload that keeps the backend keeps its TLS state). */
int tls_target_same(const struct tls_target *t, const struct tls_conf *conf);

/* Make T speak TLS as CONF says from its next connection on (a reload):
 * the saved session is dropped. Connections open keep what they have.
 * Returns 0, or -1 with why in ERR and T unchanged. */
int tls_target_update(struct tls_target *t, const struct tls_conf *conf, char *err,
                      size_t errlen);

/* Free T; NULL is a no-op. Every connection using T must be gone. */
void tls_target_free(struct tls_target *t);

/* What the status page shows of T. */
struct tls_target_info {
    const char *server_name; /* T's */
    int verify;
    int mtls;                /* a client certificate is sent */
    double not_after;        /* the backend certificate's expiry (Unix seconds) as the
                                last full handshake saw it; 0: none yet */
    const char *version;     /* of the last handshake ("TLSv1.3"); "" none */
    unsigned long long handshakes; /* done, full and resumed */
    unsigned long long resumed;    /* of them, resumed from the saved session */
};
void tls_target_info(const struct tls_target *t, struct tls_target_info *out);

/* The HTTPS listener's context: CERT_FILE (a chain, PEM) and its key;
 * *NOT_AFTER is the certificate's expiry. Returns a new SSL_CTX (the
 * caller's: tls_server_ctx_free), or NULL with why in ERR. */
struct ssl_ctx_st *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                      double *not_after, char *err, size_t errlen);

/* Free CTX (NULL: no-op); connections accepted with it keep a reference. */
void tls_server_ctx_free(struct ssl_ctx_st *ctx);

/* The bufferevent of a connection the HTTPS listener just accepted
 * (evhttp's bevcb: evhttp sets its fd): libevent's bufferevent_openssl,
 * server side, CTX's certificate, owning the fd. A client that leaves
 * without close_notify ends as on plain TCP. NULL when out of memory. */
struct bufferevent *tls_server_bufferevent(struct event_base *base, struct ssl_ctx_st *ctx);

/* Reading on BEV (tls_server_bufferevent's; any other: no-op) is on again:
 * records the SSL read ahead meanwhile are read (no socket event would
 * announce them). */
void tls_server_kick(struct bufferevent *bev);

/* The certificate checks of the config and --check. 0, or -1 with why in
 * ERR. tls_check_pair: CERT_FILE loads, KEY_FILE loads and is its key;
 * *NOT_AFTER (NULL: not wanted) is the certificate's expiry. tls_check_ca:
 * FILE holds at least one certificate. */
int tls_check_pair(const char *cert_file, const char *key_file, double *not_after, char *err,
                   size_t errlen);
int tls_check_ca(const char *file, char *err, size_t errlen);

/* --check: connect to HOST:PORT within TIMEOUT_S seconds and shake hands
 * as CONF says, blocking. Returns 0 with the backend certificate's expiry
 * in *NOT_AFTER, or -1 with why in ERR (a verification failure says so). */
int tls_probe(const char *host, int port, const struct tls_conf *conf, double timeout_s,
              double *not_after, char *err, size_t errlen);

#endif
