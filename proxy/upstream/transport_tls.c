/* transport_tls.c - see transport_tls.h.
 *
 * OpenSSL straight on the non-blocking socket that upstream.c owns (an SSL
 * with a socket BIO), rather than libevent's bufferevent_openssl: upstream.c
 * drives its sockets with plain events and its own buffers, and a filtering
 * bufferevent under it would add a second pair of buffers and a copy to
 * every read and write.
 *
 * Three OpenSSL rules shape the ops:
 * - An SSL_write that wanted to write must be called again with the same
 *   bytes and at least the same length. upstream.c keeps unsent bytes at the
 *   head of its buffer and offers them again, and do_writev gathers a
 *   prefix of that buffer, so a retry always starts with the same bytes
 *   (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets them be at another address).
 * - Records are read ahead (as many as one read() brings), and SSL_read
 *   hands out one record's data at most, no more than the caller asked
 *   for: the rest waits inside the SSL, where no socket event announces
 *   it. do_pending says so, and upstream.c reads again.
 * - A TLS 1.3 server sends its session tickets after the handshake, with
 *   the first response: the new-session callback keeps the last one, and
 *   the next connection to the target resumes it (one round trip and no
 *   certificate chain to verify), as HAProxy reuses a server's last
 *   session. */
#include "transport_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

/* What a file was when it was loaded: a rotated certificate is seen at the
 * next reload even when the config's text did not change. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct tls_target {
    SSL_CTX *ctx;
    SSL_SESSION *session; /* the last resumable one the backend gave; ours */
    char *server_name, *ca_file, *cert_file, *key_file;
    int verify;
    int sni; /* server_name is a host name (an address is never sent as SNI) */
    struct file_id ids[3]; /* of ca_file, cert_file, key_file */
    double not_after;
    const char *version;
    unsigned long long handshakes, resumed;
};

/* ---- errors ---- */

/* WHAT, and the reason OpenSSL gives for its last error, into ERR; the
 * error queue is left empty (SSL_get_error reads it). */
static void ssl_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "%s%s%s", what, why ? ": " : "", why ? why : "");
    ERR_clear_error();
}

static int readable(const char *what, const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

static double x509_not_after(const X509 *x)
{
    struct tm tm;
    if (!x || !ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm))
        return 0;
    return (double)timegm(&tm);
}

static int is_address(const char *name)
{
    unsigned char a[16];
    return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

/* ---- contexts ---- */

static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    char what[600];
    EVP_PKEY *pk = NULL;
    FILE *f;
    if (readable("cert_file", cert, err, errlen) < 0 || readable("key_file", key, err, errlen) < 0)
        return -1;
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert)) {
        snprintf(what, sizeof what, "cert_file %s does not load", cert);
        ssl_error(err, errlen, what);
        return -1;
    }
    if (!(f = fopen(key, "r")) || !(pk = PEM_read_PrivateKey(f, NULL, NULL, NULL))) {
        snprintf(what, sizeof what, "key_file %s does not load (a PEM key without a "
                                    "passphrase is needed)", key);
        ssl_error(err, errlen, what);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    /* It loads: a refusal now is a key of another certificate. */
    if (!SSL_CTX_use_PrivateKey(ctx, pk) || !SSL_CTX_check_private_key(ctx)) {
        snprintf(what, sizeof what, "key_file %s is not the key of cert_file %s", key, cert);
        ssl_error(err, errlen, what);
        EVP_PKEY_free(pk);
        return -1;
    }
    EVP_PKEY_free(pk);
    return 0;
}

static int load_ca(SSL_CTX *ctx, const char *file, char *err, size_t errlen)
{
    char what[600];
    if (readable("ca_file", file, err, errlen) < 0)
        return -1;
    if (!SSL_CTX_load_verify_locations(ctx, file, NULL)) {
        snprintf(what, sizeof what, "ca_file %s holds no certificate that loads", file);
        ssl_error(err, errlen, what);
        return -1;
    }
    return 0;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess);

static SSL_CTX *client_ctx_new(const struct tls_conf *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_VERIFY_PARAM *param;
    if (!ctx) {
        ssl_error(err, errlen, "TLS: no context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle pooled connections give their 2 x 16 KiB record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One read() takes what the socket has, several records at once, not
     * a record's 5-byte header and then its body: half the reads. What is
     * read ahead waits in the SSL, which do_pending reports. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    if (c->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (c->ca_file) {
            if (load_ca(ctx, c->ca_file, err, errlen) < 0)
                goto fail;
        } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
            ssl_error(err, errlen, "TLS: the system's CAs do not load");
            goto fail;
        }
        param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_address(c->server_name) ? !X509_VERIFY_PARAM_set1_ip_asc(param, c->server_name)
                                       : !X509_VERIFY_PARAM_set1_host(param, c->server_name, 0)) {
            ssl_error(err, errlen, "TLS: bad server_name");
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (c->cert_file && load_pair(ctx, c->cert_file, c->key_file, err, errlen) < 0)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Read ahead only from the end of the handshake (see tls_server_kick): a
 * request that comes with the client's Finished stays in the socket, whose
 * event announces it, rather than inside the SSL, where nothing would once
 * bufferevent_openssl turns to reading. (OpenSSL hands the callback its
 * SSL as const: the bufferevent, the SSL's app data, has it to change.) */
static void on_server_info(const SSL *ssl, int where, int ret)
{
    struct bufferevent *bev = SSL_get_app_data(ssl);
    (void)ret;
    if ((where & SSL_CB_HANDSHAKE_DONE) && bev)
        SSL_set_read_ahead(bufferevent_openssl_get_ssl(bev), 1);
}

struct ssl_ctx_st *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                      double *not_after, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_error(err, errlen, "TLS: no context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_info_callback(ctx, on_server_info); /* reads ahead once open */
    /* TLS 1.3 resumes from stateless tickets; the cache is for TLS 1.2's
     * session ids, bounded. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"ollama-proxy", 12);
    SSL_CTX_sess_set_cache_size(ctx, 4096);
    if (load_pair(ctx, cert_file, key_file, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    *not_after = x509_not_after(SSL_CTX_get0_certificate(ctx));
    return ctx;
}

void tls_server_ctx_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

/* bufferevent_openssl writes each chain of its output as a record of its
 * own, with a write() of its own (do_write), and evhttp hands it a reply's
 * head and body, or a streamed chunk's size line and data, as separate
 * chains. Made one chain before the write event runs, a short reply or a
 * token line is one record and one write(), as on plain TCP, where writev
 * sends all chains at once. A larger output is a bulk transfer, whose
 * chains fill records anyway. */
#define COALESCE_MAX (16 * 1024)

static void on_output_added(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    size_t len = evbuffer_get_length(b);
    (void)arg;
    if (info->n_added && len <= COALESCE_MAX && evbuffer_get_contiguous_space(b) < len)
        evbuffer_pullup(b, -1);
}

/* The listener's SSLs read ahead: one read() takes what has come, where
 * OpenSSL would read a record's 5-byte header and then its body, two
 * read()s a request. Records read ahead wait inside the SSL, where no
 * socket event announces them, and bufferevent_openssl reads on only while
 * the current record has data (consider_reading): a second request, or a
 * body sent in a record after its head, would wait for the client's next
 * bytes. So when the input changes and the SSL holds bytes that no read in
 * progress will take (the record is done, reading is off or at its high
 * watermark, or a consumer drained the input), the read event is made
 * active: consider_reading runs once the callbacks in progress are done
 * and reads them if reading is on by then. Reading turned on again later
 * (evhttp's, after a reply) is kicked by whoever turns it on. */
static void kick(struct bufferevent *bev, SSL *ssl)
{
    if (SSL_has_pending(ssl) && SSL_is_init_finished(ssl))
        event_active(&bev->ev_read, EV_READ, 1);
}

void tls_server_kick(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl)
        kick(bev, ssl);
}

static void on_input_changed(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    struct bufferevent *bev = arg;
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (info->n_added && SSL_pending(ssl) && (bev->enabled & EV_READ) &&
        !(bev->wm_read.high && evbuffer_get_length(b) >= bev->wm_read.high))
        return; /* consider_reading goes on with this record */
    kick(bev, ssl);
}

struct bufferevent *tls_server_bufferevent(struct event_base *base, struct ssl_ctx_st *ctx)
{
    struct bufferevent *bev;
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, bev);
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    evbuffer_add_cb(bufferevent_get_output(bev), on_output_added, NULL);
    evbuffer_add_cb(bufferevent_get_input(bev), on_input_changed, bev);
    return bev;
}

/* ---- targets ---- */

static void file_id(const char *file, struct file_id *id)
{
    struct stat st;
    memset(id, 0, sizeof *id);
    if (file && stat(file, &st) == 0) {
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->size = st.st_size;
        id->mtime = st.st_mtim;
    }
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void drop_strings(struct tls_target *t)
{
    free(t->server_name);
    free(t->ca_file);
    free(t->cert_file);
    free(t->key_file);
    t->server_name = t->ca_file = t->cert_file = t->key_file = NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* T takes CTX (made from C) and copies of C's strings. 0, or -1 (no memory). */
static int take(struct tls_target *t, SSL_CTX *ctx, const struct tls_conf *c)
{
    char *sn = strdup(c->server_name), *ca = dup_or_null(c->ca_file),
         *cert = dup_or_null(c->cert_file), *key = dup_or_null(c->key_file);
    if (!sn || (c->ca_file && !ca) || (c->cert_file && !cert) || (c->key_file && !key)) {
        free(sn), free(ca), free(cert), free(key);
        return -1;
    }
    drop_strings(t);
    SSL_CTX_free(t->ctx);
    if (t->session)
        SSL_SESSION_free(t->session);
    t->session = NULL;
    t->ctx = ctx;
    t->server_name = sn;
    t->ca_file = ca;
    t->cert_file = cert;
    t->key_file = key;
    t->verify = c->verify;
    t->sni = !is_address(sn);
    file_id(ca, &t->ids[0]);
    file_id(cert, &t->ids[1]);
    file_id(key, &t->ids[2]);
    return 0;
}

struct tls_target *tls_target_new(const struct tls_conf *conf, char *err, size_t errlen)
{
    struct tls_target *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->version = "";
    if (tls_target_update(t, conf, err, errlen) < 0) {
        free(t);
        return NULL;
    }
    return t;
}

int tls_target_update(struct tls_target *t, const struct tls_conf *conf, char *err,
                      size_t errlen)
{
    SSL_CTX *ctx = client_ctx_new(conf, err, errlen);
    if (!ctx)
        return -1;
    if (take(t, ctx, conf) < 0) {
        SSL_CTX_free(ctx);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int tls_target_same(const struct tls_target *t, const struct tls_conf *c)
{
    const char *files[3] = {c->ca_file, c->cert_file, c->key_file};
    if (!same_str(t->server_name, c->server_name) || !same_str(t->ca_file, c->ca_file) ||
        !same_str(t->cert_file, c->cert_file) || !same_str(t->key_file, c->key_file) ||
        t->verify != !!c->verify)
        return 0;
    for (int i = 0; i < 3; i++) {
        struct file_id now;
        file_id(files[i], &now);
        if (memcmp(&now, &t->ids[i], sizeof now) != 0)
            return 0;
    }
    return 1;
}

void tls_target_free(struct tls_target *t)
{
    if (!t)
        return;
    if (t->session)
        SSL_SESSION_free(t->session);
    SSL_CTX_free(t->ctx);
    drop_strings(t);
    free(t);
}

void tls_target_info(const struct tls_target *t, struct tls_target_info *out)
{
    out->server_name = t->server_name;
    out->verify = t->verify;
    out->mtls = t->cert_file != NULL;
    out->not_after = t->not_after;
    out->version = t->version;
    out->handshakes = t->handshakes;
    out->resumed = t->resumed;
}

/* A session ticket (TLS 1.3: after the handshake) or the handshake's
 * session (TLS 1.2): the target keeps the last, for the next connection.
 * A connection made before tls_target_update() has the old context: its
 * session is for the old settings and is not kept. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_target *t = SSL_get_app_data(ssl);
    if (!t || SSL_get_SSL_CTX(ssl) != t->ctx || !SSL_SESSION_is_resumable(sess))
        return 0;
    if (t->session)
        SSL_SESSION_free(t->session);
    t->session = sess;
    return 1; /* the reference is ours now */
}

/* ---- the ops ---- */

static void handshake_error(SSL *ssl, int rc, char *err, size_t errlen)
{
    int e = SSL_get_error(ssl, rc), saved = errno;
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(err, errlen, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SYSCALL && !ERR_peek_last_error()) {
        snprintf(err, errlen, "TLS: handshake: %s",
                 saved ? strerror(saved) : "connection closed by the backend");
    } else {
        ssl_error(err, errlen, "TLS: handshake failed");
    }
}

static void note_handshake(struct tls_target *t, SSL *ssl)
{
    int reused = SSL_session_reused(ssl);
    t->handshakes++;
    t->resumed += (unsigned long long)reused;
    t->version = SSL_get_version(ssl);
    if (!reused) /* a resumed session brings no certificate to look at */
        t->not_after = x509_not_after(SSL_get0_peer_certificate(ssl));
    log_debug("tls %s: handshake done, %s, %s, session %s", t->server_name, t->version,
              SSL_get_cipher_name(ssl), reused ? "reused" : "new");
}

static int do_setup(struct tconn *c, char *err, size_t errlen)
{
    struct tls_target *t = c->ctx;
    SSL *ssl = c->state;
    int rc;
    if (!ssl) {
        if (!(ssl = SSL_new(t->ctx))) {
            ssl_error(err, errlen, "TLS: cannot make a connection");
            return -1;
        }
        c->state = ssl;
        SSL_set_app_data(ssl, t);
        if (!SSL_set_fd(ssl, c->fd) || (t->sni && !SSL_set_tlsext_host_name(ssl, t->server_name))) {
            ssl_error(err, errlen, "TLS: cannot make a connection");
            return -1;
        }
        if (t->session)
            SSL_set_session(ssl, t->session);
        SSL_set_connect_state(ssl);
    }
    errno = 0;
    rc = SSL_do_handshake(ssl);
    if (rc == 1) {
        note_handshake(t, ssl);
        return 0;
    }
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return TRANSPORT_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TRANSPORT_WANT_WRITE;
    }
    handshake_error(ssl, rc, err, errlen);
    if (t->session) { /* the next try shakes hands in full, and verifies */
        SSL_SESSION_free(t->session);
        t->session = NULL;
    }
    return -1;
}

/* A read or write that did not happen: -1 with errno (EAGAIN: not now), or
 * 0 for the backend's close_notify. The error queue is left empty. */
static ssize_t io_error(SSL *ssl)
{
    int saved = errno;
    switch (SSL_get_error(ssl, 0)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: /* a key update's answer waits for room: rare */
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        errno = saved && saved != EAGAIN ? saved : ECONNRESET;
        return -1;
    default: /* a bad record, an alert, an end without close_notify */
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
}

static ssize_t do_read(struct tconn *c, void *buf, size_t n)
{
    size_t got;
    if (SSL_read_ex(c->state, buf, n, &got))
        return (ssize_t)got;
    return io_error(c->state);
}

/* One record at a time, from the first buffers of IOV gathered (a request
 * head and a small body are one record rather than several). */
#define GATHER (16 * 1024)

static ssize_t do_writev(struct tconn *c, struct iovec *iov, int n)
{
    char gather[GATHER];
    const void *p = iov[0].iov_base;
    size_t len = iov[0].iov_len, done;
    if (n > 1 && len < GATHER) {
        len = 0;
        for (int i = 0; i < n && len < GATHER; i++) {
            size_t k = iov[i].iov_len < GATHER - len ? iov[i].iov_len : GATHER - len;
            memcpy(gather + len, iov[i].iov_base, k);
            len += k;
        }
        p = gather;
    }
    if (SSL_write_ex(c->state, p, len, &done))
        return (ssize_t)done;
    return io_error(c->state);
}

static int do_pending(struct tconn *c)
{
    return c->state && SSL_has_pending(c->state);
}

/* A clean end sends close_notify, so that the backend can tell our close
 * from a cut; upstream.c closes the socket after. */
static void do_close(struct tconn *c)
{
    SSL *ssl = c->state;
    if (!ssl)
        return;
    if (SSL_is_init_finished(ssl) && !SSL_get_shutdown(ssl))
        SSL_shutdown(ssl);
    ERR_clear_error();
    SSL_free(ssl);
    c->state = NULL;
}

const struct transport transport_tls = {"tls", do_setup, do_read, do_writev, do_close,
                                        do_pending};

/* ---- checks ---- */

int tls_check_pair(const char *cert_file, const char *key_file, double *not_after, char *err,
                   size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    int rc = -1;
    if (!ctx) {
        ssl_error(err, errlen, "TLS: no context");
        return -1;
    }
    if (load_pair(ctx, cert_file, key_file, err, errlen) == 0) {
        if (not_after)
            *not_after = x509_not_after(SSL_CTX_get0_certificate(ctx));
        rc = 0;
    }
    SSL_CTX_free(ctx);
    return rc;
}

int tls_check_ca(const char *file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    int rc;
    if (!ctx) {
        ssl_error(err, errlen, "TLS: no context");
        return -1;
    }
    rc = load_ca(ctx, file, err, errlen);
    SSL_CTX_free(ctx);
    return rc;
}

/* Wait until FD is ready for WHAT, until DEADLINE_MS (net_now_ms). */
static int wait_fd(int fd, short what, double deadline_ms)
{
    struct pollfd p = {fd, what, 0};
    double left = deadline_ms - net_now_ms();
    return left > 0 && poll(&p, 1, (int)left + 1) == 1 ? 0 : -1;
}

static int connect_within(const char *host, int port, double deadline_ms, char *err,
                          size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ports[16];
    int fd = -1, rc, soerr = 0;
    socklen_t len = sizeof soerr;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ports, sizeof ports, "%d", port);
    if ((rc = getaddrinfo(host, ports, &hints, &res)) != 0) {
        snprintf(err, errlen, "%s does not resolve: %s", host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) ||
        wait_fd(fd, POLLOUT, deadline_ms) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr) {
        snprintf(err, errlen, "connect to %s:%d: %s", host, port,
                 soerr ? strerror(soerr) : errno ? strerror(errno) : "timed out");
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int tls_probe(const char *host, int port, const struct tls_conf *conf, double timeout_s,
              double *not_after, char *err, size_t errlen)
{
    double deadline = net_now_ms() + timeout_s * 1000.0;
    struct tls_target *t = tls_target_new(conf, err, errlen);
    struct tconn c = {-1, &transport_tls, NULL, t};
    int rc = -1;
    if (!t)
        return -1;
    if ((c.fd = connect_within(host, port, deadline, err, errlen)) >= 0) {
        while ((rc = do_setup(&c, err, errlen)) > 0)
            if (wait_fd(c.fd, rc == TRANSPORT_WANT_READ ? POLLIN : POLLOUT, deadline) < 0) {
                snprintf(err, errlen, "TLS: no handshake within %gs", timeout_s);
                rc = -1;
                break;
            }
        if (rc == 0)
            *not_after = t->not_after;
        do_close(&c);
        close(c.fd);
    }
    tls_target_free(t);
    return rc;
}
