/* fuzz_proxy.c - the whole request path of ollama-proxy: bytes from a
 * client, through evhttp, the server's routing and body scan, the
 * scheduler, a session and upstream.c, to a stub backend and back.
 *
 * The proxy runs in this process (fz_proxy.c sets it up as main.c does).
 * The stub backend is a loopback listener of ours on the proxy's event
 * loop: it answers every request, whatever it is, with one small valid
 * Ollama reply that is also a valid /api/tags answer (it lists llama3 and
 * qwen2:0.5b, so requests for other models get the proxy's 404).
 *
 * Per input: connect, send the input in writes of sizes drawn from its
 * hash, sometimes half-close, read whatever comes back until the proxy
 * closes or has been quiet a moment, then close (sometimes with a reset),
 * and run the loop until no session is left. Findings: a crash, UB or a
 * leak; a reply that does not start with a status line; a JSON reply body (by
 * Content-Type) that is not valid JSON; a session still alive 3 s after
 * its client left (every timeout of the config is 1 s or less). */
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fz.h"
#include "fz_proxy.h"
#include "net.h"

#define QUIET_MS 2.0    /* all sent, nothing new for this long: done */
#define INPUT_MS 300.0  /* the longest one input talks to the proxy */
#define SETTLE_MS 3000.0

static const char reply_body[] =
    "{\"model\":\"llama3:latest\",\"created_at\":\"2024-01-01T00:00:00Z\","
    "\"message\":{\"role\":\"assistant\",\"content\":\"positive\"},\"done\":true,"
    "\"done_reason\":\"stop\",\"models\":[{\"name\":\"llama3:latest\",\"model\":\"llama3:latest\","
    "\"size\":1},{\"name\":\"qwen2:0.5b\",\"model\":\"qwen2:0.5b\",\"size\":2}]}";

static struct event_base *base;
static int proxy_port;
static unsigned long stub_answers;

/* ---- the stub backend ---- */

struct stub_conn {
    int fd;
    struct event ev;
    struct evbuffer *in;
    struct stub_conn *prev, *next; /* stub_conns */
};

static struct stub_conn *stub_conns;

static void stub_close(struct stub_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        stub_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_del(&c->ev);
    close(c->fd);
    evbuffer_free(c->in);
    free(c);
}

/* The value of header NAME ("\r\nname:", lower case) in HEAD[0..N), or
 * NULL; it runs to the next CR. */
static const char *header(const char *head, size_t n, const char *name)
{
    size_t k = strlen(name);
    for (size_t i = 0; i + k < n; i++)
        if (strncasecmp(head + i, name, k) == 0)
            return head + i + k;
    return NULL;
}

/* The head's Content-Length, -1 without one. */
static long long content_length(const char *head, size_t n)
{
    const char *v = header(head, n, "\r\ncontent-length:");
    return v ? strtoll(v, NULL, 10) : -1;
}

/* Answer every complete request in C's input. Returns -1 to close. */
static int stub_answer(struct stub_conn *c)
{
    for (;;) {
        struct evbuffer_ptr p = evbuffer_search(c->in, "\r\n\r\n", 4, NULL);
        char out[1024];
        const char *h;
        size_t hlen, blen;
        long long cl;
        int n;
        if (p.pos < 0)
            return evbuffer_get_length(c->in) > (1 << 20) ? -1 : 0;
        hlen = (size_t)p.pos + 4;
        h = (const char *)evbuffer_pullup(c->in, (ev_ssize_t)hlen);
        cl = content_length(h, hlen);
        blen = cl > 0 ? (size_t)cl : 0;
        if (evbuffer_get_length(c->in) < hlen + blen)
            return 0;
        n = snprintf(out, sizeof out,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     sizeof reply_body - 1, strncmp(h, "HEAD ", 5) == 0 ? "" : reply_body);
        evbuffer_drain(c->in, hlen + blen);
        if (write(c->fd, out, (size_t)n) != n)
            return -1;
        stub_answers++;
    }
}

static void stub_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct stub_conn *c = arg;
    (void)what;
    for (;;) {
        int n = evbuffer_read(c->in, fd, 65536);
        if (n > 0)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            stub_close(c);
            return;
        }
        break;
    }
    if (stub_answer(c) < 0)
        stub_close(c);
}

static void stub_on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what, (void)arg;
    for (int fd; (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
        struct stub_conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        c->in = evbuffer_new();
        c->next = stub_conns;
        if (stub_conns)
            stub_conns->prev = c;
        stub_conns = c;
        event_assign(&c->ev, base, fd, EV_READ | EV_PERSIST, stub_on_read, c);
        event_add(&c->ev, NULL);
    }
}

/* At exit, before the proxy (and its event_base) goes. */
static void stub_close_all(void)
{
    while (stub_conns)
        stub_close(stub_conns);
}

/* ---- setup ---- */

static void run_for(double ms)
{
    double end = net_now_ms() + ms;
    while (net_now_ms() < end)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static struct event accept_ev;
    char err[256];
    int lfd = net_listen("127.0.0.1", 0, 128, err, sizeof err);
    double deadline;
    (void)argc, (void)argv;
    if (lfd < 0 || (proxy_port = fz_proxy_start(net_bound_port(lfd))) < 0) {
        fprintf(stderr, "fuzz_proxy: setup failed%s%s\n", lfd < 0 ? ": " : "",
                lfd < 0 ? err : "");
        abort();
    }
    base = fz_proxy_base();
    event_assign(&accept_ev, base, lfd, EV_READ | EV_PERSIST, stub_on_accept, NULL);
    event_add(&accept_ev, NULL);
    atexit(fz_proxy_stop);
    atexit(stub_close_all); /* runs first */
    /* Discovery: /api/tags, then /api/ps, so that models are known. */
    deadline = net_now_ms() + 5000;
    while (stub_answers < 2 && net_now_ms() < deadline)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (stub_answers < 2) {
        fprintf(stderr, "fuzz_proxy: the proxy never polled the stub backend\n");
        abort();
    }
    run_for(20);
    return 0;
}

/* ---- what the client got ---- */

/* "HTTP/<version> ddd " as far as R[0..N) goes. The version is not
 * checked: evhttp echoes the request's, even "HTTP/0.1" or "HTTP/1.-1"
 * (libevent 2.1, README.md). */
static int status_line(const char *r, size_t n)
{
    const char *sp = memchr(r, ' ', n < 16 ? n : 16);
    size_t i;
    if (memcmp(r, "HTTP/", n < 5 ? n : 5) != 0)
        return 0;
    if (!sp)
        return n < 16;
    for (i = (size_t)(sp - r) + 1; i < n && i < (size_t)(sp - r) + 4; i++)
        if (!isdigit((unsigned char)r[i]))
            return 0;
    return 1;
}

/* Each reply in OUT[0..N) starts with a status line; a JSON body that is all there
 * is valid JSON. Stops at the first reply without Content-Length (streamed
 * or close-delimited) or cut short. With HEAD in the input, bodies cannot
 * be told apart (a HEAD reply has Content-Length and no body): only the
 * first status line is checked. */
static void check_replies(const char *out, size_t n, int has_head, const uint8_t *in,
                          size_t in_len)
{
    size_t pos = 0;
    while (pos < n) {
        const char *r = out + pos, *end = memmem(r, n - pos, "\r\n\r\n", 4);
        const char *ct, *sp;
        size_t hlen, blen;
        long long cl;
        int status;
        if (!status_line(r, n - pos)) {
            fz_dump("request", in, in_len);
            fz_dump("reply", r, n - pos);
            fprintf(stderr, "fuzz_proxy: a reply that does not start with a status line\n");
            abort();
        }
        if (!end || has_head || n - pos < 12)
            return;
        hlen = (size_t)(end - r) + 4;
        sp = memchr(r, ' ', hlen);
        if (!sp)
            return;
        status = atoi(sp + 1);
        if (status < 200 || status == 204 || status == 304) {
            pos += hlen;
            continue;
        }
        cl = content_length(r, hlen);
        if (cl < 0)
            return;
        blen = (size_t)cl;
        if (n - pos - hlen < blen)
            return;
        ct = header(r, hlen, "\r\ncontent-type:");
        if (ct && memmem(ct, (size_t)(end - ct), "json", 4)) {
            json_error_t je;
            json_t *j = json_loadb(r + hlen, blen, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            if (!j) {
                fz_dump("request", in, in_len);
                fz_dump("reply", r, hlen + blen);
                fprintf(stderr, "fuzz_proxy: a JSON reply that is not JSON: %s\n", je.text);
                abort();
            }
            json_decref(j);
        }
        pos += hlen + blen;
    }
}

/* ---- one input ---- */

/* libFuzzer's SIGALRM, every timeout/2 + 1 seconds, has no SA_RESTART:
 * a blocking connect() it lands in fails with EINTR (CI, after 45k inputs).
 * So connect without blocking and wait in poll(), again after EINTR. On
 * loopback the kernel completes it at once, before the proxy accepts. */
static int client_connect(void)
{
    struct sockaddr_in sin = {0};
    struct pollfd p;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
    socklen_t len = sizeof err;
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)proxy_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FZ_CHECK(fd >= 0);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        FZ_CHECK(errno == EINPROGRESS || errno == EINTR);
        p = (struct pollfd){.fd = fd, .events = POLLOUT};
        while (poll(&p, 1, 5000) < 0)
            FZ_CHECK(errno == EINTR);
        FZ_CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
        if (!(p.revents & POLLOUT) || err) {
            fprintf(stderr, "fuzz_proxy: cannot connect to the proxy: %s\n",
                    err ? strerror(err) : "no answer in 5 s");
            abort();
        }
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_rng rng;
    static const size_t max_writes[] = {1, 5, 64, 1024, 65536};
    size_t max_write, pos = 0;
    struct evbuffer *out = evbuffer_new();
    double start, last;
    int fd, half_close, reset, shut = 0;

    fz_rng_seed(&rng, fz_hash(data, size));
    max_write = max_writes[fz_rng_next(&rng) % 5];
    half_close = fz_rng_one_in(&rng, 3);
    reset = fz_rng_one_in(&rng, 4);
    fd = client_connect();
    start = last = net_now_ms();
    for (;;) {
        double now;
        int n;
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (pos < size) {
            size_t k = 1 + fz_rng_next(&rng) % max_write;
            ssize_t w = write(fd, data + pos, k < size - pos ? k : size - pos);
            if (w > 0)
                pos += (size_t)w, last = net_now_ms();
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                pos = size; /* the proxy closed on us */
        } else if (half_close && !shut) {
            shutdown(fd, SHUT_WR);
            shut = 1;
        }
        n = evbuffer_read(out, fd, 65536);
        if (n > 0)
            last = net_now_ms();
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        now = net_now_ms();
        if ((pos == size && now - last > QUIET_MS) || now - start > INPUT_MS)
            break;
    }
    if (reset) {
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
    check_replies((const char *)evbuffer_pullup(out, -1), evbuffer_get_length(out),
                  memmem(data, size, "HEAD", 4) != NULL, data, size);
    evbuffer_free(out);

    start = net_now_ms();
    while (fz_proxy_busy()) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (net_now_ms() - start > SETTLE_MS) {
            fz_dump("request", data, size);
            fprintf(stderr, "fuzz_proxy: %d sessions alive %.0f ms after the client left\n",
                    fz_proxy_busy(), SETTLE_MS);
            abort();
        }
    }
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
