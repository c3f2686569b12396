/* streamload.c - a small libevent load tool for the proxy benchmarks.
 *
 * Built at run time by bench_proxy.py:
 *   cc -O2 tests/bench/streamload.c -levent -o BUILD/streamload
 *
 * Modes (all traffic to 127.0.0.1:PORT; every mode is bounded in count/time):
 *
 *   stream  -n N [--ramp-ms R] [--period-ms P --tokens T]
 *           N connections, each sends one POST (BODY) and reads a chunked or
 *           Content-Length response, timestamping every NDJSON line ('\n').
 *           Connection i starts at i*R/N ms. Reports TTFB (send -> first
 *           line), inter-line gaps, and, given the backend's token period P,
 *           the lateness of line k (k < T) against the schedule,
 *           late = t_k - t_sent - TTFT - k*P (--ttft-ms), and relative to the
 *           stream's first line, rel = t_k - t_first - k*P. With --sse the
 *           unit is an SSE event (it ends at an empty line, "\n\n") instead
 *           of a line: the SSE streams of /v1; --lead E: the stream opens with E
 *           events before its first token's (sent with it).
 *   rate    --rate R --duration S -c C
 *           open loop: one non-streamed POST every 1/R s on C keep-alive
 *           connections (a request whose time has come waits for a free
 *           connection; its latency counts from its scheduled time, so there
 *           is no coordinated omission).
 *   idle    -n N [--hold S]
 *           N connections, each sends one GET / and reads the reply, then
 *           stays open and idle. Prints "ready N" once all have a reply,
 *           holds for S seconds or until stdin closes.
 *
 * Output: one JSON object on stdout (the summary).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { M_STREAM, M_RATE, M_IDLE };
enum cstate { C_FREE, C_CONNECTING, C_HEAD, C_BODY_CL, C_BODY_CHUNKED, C_IDLE, C_CLOSED };

struct samples {
    double *v;
    size_t n, cap;
};

static void add(struct samples *s, double x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort();
    }
    s->v[s->n++] = x;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(struct samples *s, double p)
{
    if (!s->n)
        return -1;
    size_t i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

struct conn {
    int fd, idx;
    enum cstate st;
    struct event *ev;
    char *in;
    size_t inlen, incap;
    long long remaining; /* CL body bytes left, or bytes left in this chunk */
    int chunk_phase;     /* 0 size line, 1 data, 2 CRLF after data, 3 trailers */
    int status;
    double t_sched, t_sent, t_first, t_prev;
    long lines;
    char last; /* the last body byte: an SSE event ends at "\n\n" across reads */
    int busy; /* rate: a request in flight */
    struct conn *next_free;
};

static struct event_base *base;
static enum mode mode = M_STREAM;
static struct sockaddr_in addr;
static char *req;
static size_t reqlen;
static int n = 100, conns = 50, ramp_ms = 0, tokens = 0, port = 0, sse = 0, lead = 0;
static double ttft_ms = 0, period_ms = 0, rate = 1000, duration = 5, hold = 30, timeout_s = 120;
static struct conn *cs;
static struct samples ttfb, gaps, late, rel, lat;
static long ok, errors, non200, lines_total, done_count, started, connected_count;
static double t_begin, t_first_send = -1, t_last_done;
static long bytes_total;
/* rate mode */
static struct conn *freelist;
static double *pending; /* scheduled times waiting for a connection (FIFO ring) */
static size_t pend_head, pend_tail, pend_cap;
static long sched_count, max_pending;
static double next_sched;
static struct event *tick_ev;
static int stopping;
/* idle mode */
static int max_connecting = 256, connecting_now;
static int next_to_connect;
static int idle_ready_printed;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_io(evutil_socket_t fd, short what, void *arg);
static void check_finished(void);

static void conn_close(struct conn *c, int err)
{
    if (c->st == C_CLOSED)
        return;
    if (err)
        errors++;
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->st == C_CONNECTING)
        connecting_now--;
    c->st = C_CLOSED;
    if (mode != M_RATE)
        done_count++;
}

static int conn_open(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "streamload: socket: %s\n", strerror(errno));
        c->st = C_FREE;
        conn_close(c, 1);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->st = C_CONNECTING;
    connecting_now++;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "streamload: connect: %s\n", strerror(errno));
        conn_close(c, 1);
        return -1;
    }
    c->ev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_io, c);
    event_add(c->ev, NULL);
    return 0;
}

static void set_reading(struct conn *c)
{
    event_del(c->ev);
    event_assign(c->ev, base, c->fd, EV_READ | EV_PERSIST, on_io, c);
    event_add(c->ev, NULL);
}

static int send_request(struct conn *c)
{
    size_t off = 0;
    while (off < reqlen) {
        ssize_t w = write(c->fd, req + off, reqlen - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1; /* requests are small: a full socket buffer is an error here */
        }
        off += (size_t)w;
    }
    c->t_sent = now_s();
    if (t_first_send < 0)
        t_first_send = c->t_sent;
    c->st = C_HEAD;
    c->inlen = 0;
    c->lines = 0;
    c->status = 0;
    c->t_first = 0;
    c->busy = 1;
    return 0;
}

/* A line (an event) ended in the body at time T. Token k is line k +
 * LEAD (--lead: the events a stream opens with, sent with its first
 * token); the lead lines count as token 0 in the schedule. */
static void on_line(struct conn *c, double t)
{
    long k = c->lines - lead < 0 ? 0 : c->lines - lead;
    lines_total++;
    if (c->lines == 0) {
        c->t_first = t;
        if (mode == M_STREAM)
            add(&ttfb, (t - c->t_sent) * 1e3);
    } else {
        add(&gaps, (t - c->t_prev) * 1e3);
        if (period_ms > 0 && k < tokens)
            add(&rel, (t - c->t_first) * 1e3 - (double)k * period_ms);
    }
    if (period_ms > 0 && k < tokens)
        add(&late, (t - c->t_sent) * 1e3 - ttft_ms - (double)k * period_ms);
    c->t_prev = t;
    c->lines++;
}

static void body_bytes(struct conn *c, const char *p, size_t len, double t)
{
    bytes_total += (long)len;
    if (mode != M_STREAM)
        return;
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(p + len - q))) != NULL; q++)
        if (!sse || (q > p ? q[-1] : c->last) == '\n')
            on_line(c, t);
    if (len)
        c->last = p[len - 1];
}

static void start_next_rate(void);

static void response_done(struct conn *c, double t)
{
    if (c->status == 200)
        ok++;
    else
        non200++;
    t_last_done = t;
    if (mode == M_STREAM) {
        add(&lat, (t - c->t_sent) * 1e3);
        conn_close(c, 0);
        check_finished();
    } else if (mode == M_RATE) {
        add(&lat, (t - c->t_sched) * 1e3);
        c->busy = 0;
        c->st = C_IDLE;
        c->next_free = freelist;
        freelist = c;
        start_next_rate();
        check_finished();
    } else { /* idle: keep the connection open */
        c->st = C_IDLE;
        c->busy = 0;
        connected_count++;
        check_finished();
    }
}

/* Parse what is in c->in; returns -1 on a protocol error. */
static int parse(struct conn *c, double t)
{
    for (;;) {
        if (c->st == C_HEAD) {
            char *e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
            if (!e)
                return 0;
            size_t hl = (size_t)(e - c->in) + 4;
            c->in[hl - 1] = 0;
            if (sscanf(c->in, "HTTP/1.%*d %d", &c->status) != 1)
                return -1;
            long long cl = -1;
            int chunked = 0;
            for (char *l = strstr(c->in, "\r\n"); l && l < c->in + hl - 2; l = strstr(l + 2, "\r\n")) {
                char *h = l + 2;
                if (!strncasecmp(h, "content-length:", 15))
                    cl = atoll(h + 15);
                else if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h, "chunked"))
                    chunked = 1;
            }
            memmove(c->in, c->in + hl, c->inlen - hl);
            c->inlen -= hl;
            if (chunked) {
                c->st = C_BODY_CHUNKED;
                c->chunk_phase = 0;
            } else if (cl >= 0) {
                c->st = C_BODY_CL;
                c->remaining = cl;
            } else {
                return -1; /* close-delimited bodies are not expected */
            }
            continue;
        }
        if (c->st == C_BODY_CL) {
            size_t take = c->inlen < (size_t)c->remaining ? c->inlen : (size_t)c->remaining;
            body_bytes(c, c->in, take, t);
            c->remaining -= (long long)take;
            memmove(c->in, c->in + take, c->inlen - take);
            c->inlen -= take;
            if (c->remaining == 0) {
                response_done(c, t);
                return 0;
            }
            return 0;
        }
        if (c->st == C_BODY_CHUNKED) {
            if (c->chunk_phase == 0 || c->chunk_phase == 2 || c->chunk_phase == 3) {
                char *e = memmem(c->in, c->inlen, "\r\n", 2);
                if (!e)
                    return 0;
                size_t ll = (size_t)(e - c->in) + 2;
                if (c->chunk_phase == 0) {
                    c->remaining = strtoll(c->in, NULL, 16);
                    c->chunk_phase = c->remaining ? 1 : 3;
                } else if (c->chunk_phase == 2) {
                    c->chunk_phase = 0;
                } else { /* trailers: an empty line ends the message */
                    if (ll == 2) {
                        memmove(c->in, c->in + ll, c->inlen - ll);
                        c->inlen -= ll;
                        response_done(c, t);
                        return 0;
                    }
                }
                memmove(c->in, c->in + ll, c->inlen - ll);
                c->inlen -= ll;
                continue;
            }
            /* phase 1: data */
            if (!c->inlen)
                return 0;
            size_t take = c->inlen < (size_t)c->remaining ? c->inlen : (size_t)c->remaining;
            body_bytes(c, c->in, take, t);
            c->remaining -= (long long)take;
            memmove(c->in, c->in + take, c->inlen - take);
            c->inlen -= take;
            if (c->remaining == 0)
                c->chunk_phase = 2;
            continue;
        }
        return 0;
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t sl = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        connecting_now--;
        if (err) {
            c->st = C_HEAD; /* not counted as connecting any more */
            conn_close(c, 1);
            check_finished();
            return;
        }
        if (mode == M_RATE) {
            c->st = C_IDLE;
            set_reading(c);
            c->next_free = freelist;
            freelist = c;
            start_next_rate();
            return;
        }
        if (send_request(c) < 0) {
            conn_close(c, 1);
            check_finished();
            return;
        }
        set_reading(c);
        return;
    }
    for (;;) {
        if (c->incap - c->inlen < 16384) {
            c->incap = c->incap ? c->incap * 2 : 32768;
            c->in = realloc(c->in, c->incap);
        }
        size_t avail = c->incap - c->inlen - 1;
        ssize_t r = read(fd, c->in + c->inlen, avail);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        double t = now_s();
        if (r <= 0) {
            /* EOF or error: an error unless the connection was idle */
            int was_busy = c->st == C_HEAD || c->st == C_BODY_CL || c->st == C_BODY_CHUNKED;
            if (mode == M_RATE && c->st == C_IDLE) {
                /* unlink from the free list */
                struct conn **pp = &freelist;
                while (*pp && *pp != c)
                    pp = &(*pp)->next_free;
                if (*pp)
                    *pp = c->next_free;
            }
            conn_close(c, was_busy || mode == M_IDLE);
            check_finished();
            return;
        }
        c->inlen += (size_t)r;
        if (parse(c, t) < 0) {
            conn_close(c, 1);
            check_finished();
            return;
        }
        if (c->st == C_CLOSED)
            return;
        if ((size_t)r < avail)
            return; /* short read: the socket is drained */
    }
}

/* ---- stream and idle: start connections ---- */

static struct event *start_ev;

static void on_start_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    double el = (now_s() - t_begin) * 1e3;
    while (next_to_connect < n) {
        if (mode == M_STREAM && ramp_ms > 0 && (double)next_to_connect * ramp_ms / n > el)
            break;
        if (connecting_now >= max_connecting)
            break;
        conn_open(&cs[next_to_connect]);
        next_to_connect++;
        started++;
    }
    if (next_to_connect < n) {
        struct timeval tv = {0, 1000};
        event_add(start_ev, &tv);
    }
    check_finished();
}

/* ---- rate ---- */

static void start_next_rate(void)
{
    while (freelist && pend_head != pend_tail) {
        struct conn *c = freelist;
        freelist = c->next_free;
        double ts = pending[pend_head % pend_cap];
        pend_head++;
        c->t_sched = ts;
        if (send_request(c) < 0) {
            conn_close(c, 1);
            continue;
        }
    }
}

static void on_rate_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    double t = now_s();
    double end = t_begin + duration;
    while (next_sched <= t && next_sched < end) {
        if (pend_tail - pend_head >= pend_cap) {
            errors++; /* should not happen: the ring is large */
        } else {
            pending[pend_tail % pend_cap] = next_sched;
            pend_tail++;
        }
        sched_count++;
        next_sched += 1.0 / rate;
    }
    if ((long)(pend_tail - pend_head) > max_pending)
        max_pending = (long)(pend_tail - pend_head);
    start_next_rate();
    if (next_sched < end) {
        struct timeval tv = {0, 200};
        event_add(tick_ev, &tv);
    } else {
        stopping = 1;
        check_finished();
    }
}

/* ---- finish ---- */

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    char b[256];
    (void)what, (void)arg;
    ssize_t r = read(fd, b, sizeof b);
    if (r <= 0)
        event_base_loopexit(base, NULL);
}

static void check_finished(void)
{
    if (mode == M_STREAM) {
        if (done_count >= n)
            event_base_loopexit(base, NULL);
    } else if (mode == M_RATE) {
        if (stopping && pend_head == pend_tail) {
            int busy = 0;
            for (int i = 0; i < conns; i++)
                if (cs[i].busy && cs[i].st != C_CLOSED)
                    busy = 1;
            if (!busy)
                event_base_loopexit(base, NULL);
        }
    } else {
        if (!idle_ready_printed && connected_count + errors >= n) {
            idle_ready_printed = 1;
            printf("ready %ld %ld\n", connected_count, errors);
            fflush(stdout);
            struct timeval tv = {(time_t)hold, 0};
            event_base_loopexit(base, &tv);
        }
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    fprintf(stderr, "streamload: overall timeout\n");
    event_base_loopexit(base, NULL);
}

static void print_samples(const char *name, struct samples *s)
{
    qsort(s->v, s->n, sizeof *s->v, cmpd);
    printf("\"%s\":{\"n\":%zu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,\"max\":%.4f}",
           name, s->n, pct(s, 50), pct(s, 90), pct(s, 99), pct(s, 99.9), s->n ? s->v[s->n - 1] : -1);
}

static void usage(void)
{
    fprintf(stderr, "usage: streamload MODE -p PORT [-n N] [-c C] [--body JSON] [--path P]\n"
                    "  [--ramp-ms R] [--ttft-ms F] [--period-ms P] [--tokens T] [--rate R] [--duration S]\n"
                    "  [--hold S] [--timeout S] [--sse] [--lead E]   MODE: stream | rate | idle\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *body = "{\"model\":\"llama3\",\"prompt\":\"hi\"}";
    const char *path = "/api/generate";
    static struct option lo[] = {{"port", 1, 0, 'p'},      {"body", 1, 0, 'b'},     {"path", 1, 0, 'P'},
                                 {"ramp-ms", 1, 0, 'r'},   {"ttft-ms", 1, 0, 'f'},   {"period-ms", 1, 0, 'g'}, {"tokens", 1, 0, 't'},
                                 {"rate", 1, 0, 'R'},      {"duration", 1, 0, 'd'}, {"hold", 1, 0, 'H'},
                                 {"timeout", 1, 0, 'T'},   {"sse", 0, 0, 'S'},      {"lead", 1, 0, 'L'},
                                 {0, 0, 0, 0}};
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "stream"))
        mode = M_STREAM;
    else if (!strcmp(argv[1], "rate"))
        mode = M_RATE;
    else if (!strcmp(argv[1], "idle"))
        mode = M_IDLE;
    else
        usage();
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "p:n:c:", lo, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'b': body = optarg; break;
        case 'P': path = optarg; break;
        case 'r': ramp_ms = atoi(optarg); break;
        case 'f': ttft_ms = atof(optarg); break;
        case 'g': period_ms = atof(optarg); break;
        case 't': tokens = atoi(optarg); break;
        case 'R': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'H': hold = atof(optarg); break;
        case 'T': timeout_s = atof(optarg); break;
        case 'S': sse = 1; break;
        case 'L': lead = atoi(optarg); break;
        default: usage();
        }
    }
    if (!port)
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    size_t bl = strlen(body);
    req = malloc(bl + 512);
    if (mode == M_IDLE)
        reqlen = (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
    else
        reqlen = (size_t)sprintf(req,
                                 "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %zu\r\n\r\n%s",
                                 path, port, bl, body);
    /* timerfd-precise timers: the open-loop schedule needs better than 1 ms */
    struct event_config *ecfg = event_config_new();
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    int total = mode == M_RATE ? conns : n;
    cs = calloc((size_t)total, sizeof *cs);
    for (int i = 0; i < total; i++) {
        cs[i].fd = -1;
        cs[i].idx = i;
        cs[i].st = C_FREE;
    }
    t_begin = now_s();
    struct event *to = evtimer_new(base, on_timeout, NULL);
    struct timeval tov = {(time_t)timeout_s, 0};
    if (mode == M_IDLE)
        tov.tv_sec += (time_t)hold;
    evtimer_add(to, &tov);
    struct event *sin = NULL;
    if (mode == M_RATE) {
        pend_cap = (size_t)(rate * duration) + 16;
        pending = malloc(pend_cap * sizeof *pending);
        for (int i = 0; i < conns; i++)
            conn_open(&cs[i]);
        /* let the connections come up before the clock starts */
        struct timeval w = {0, 200000};
        event_base_loopexit(base, &w);
        event_base_dispatch(base);
        t_begin = now_s();
        next_sched = t_begin;
        tick_ev = evtimer_new(base, on_rate_tick, NULL);
        on_rate_tick(-1, 0, NULL);
    } else {
        if (mode == M_STREAM)
            max_connecting = 100000;
        start_ev = evtimer_new(base, on_start_tick, NULL);
        on_start_tick(-1, 0, NULL);
        if (mode == M_IDLE) {
            sin = event_new(base, 0, EV_READ | EV_PERSIST, on_stdin, NULL);
            event_add(sin, NULL);
        }
    }
    event_base_dispatch(base);
    double t_end = now_s();
    long in_flight = 0;
    for (int i = 0; i < total; i++)
        if (cs[i].st != C_CLOSED && cs[i].st != C_FREE && cs[i].st != C_IDLE)
            in_flight++;
    double span = (t_last_done > t_first_send && t_first_send > 0) ? t_last_done - t_first_send : t_end - t_begin;
    printf("{\"mode\":\"%s\",\"ok\":%ld,\"non200\":%ld,\"errors\":%ld,\"unfinished\":%ld,\"lines\":%ld,"
           "\"bytes\":%ld,\"seconds\":%.4f,\"lines_per_s\":%.1f,\"req_per_s\":%.1f,\"scheduled\":%ld,"
           "\"max_pending\":%ld,\"connected\":%ld,",
           argv[1], ok, non200, errors, in_flight, lines_total, bytes_total, span,
           span > 0 ? lines_total / span : 0, span > 0 ? ok / span : 0, sched_count, max_pending, connected_count);
    print_samples("ttfb_ms", &ttfb);
    printf(",");
    print_samples("gap_ms", &gaps);
    printf(",");
    print_samples("late_ms", &late);
    printf(",");
    print_samples("rel_ms", &rel);
    printf(",");
    print_samples("latency_ms", &lat);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < total; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    return 0;
}
