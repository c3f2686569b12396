/* fm.c - ollama-proxy-failmalloc: the proxy with allocations that fail.
 *
 * The idea of nghttp2's failmalloc test: every allocation the proxy's own
 * code makes (malloc, calloc, realloc, strdup: linked with -Wl,--wrap, so
 * only pxcore's and main.c's calls come here) fails at random, at the rate
 * OP_FAILMALLOC_RATE (default 0.05), while the failures are armed. SIGUSR2 arms them, the
 * next SIGUSR2 disarms them: the test starts the proxy with them off (its
 * startup is not what is tested), arms them under load, disarms them and
 * checks that the proxy serves as before. It must answer 5xx or close
 * when an allocation fails, never crash, never leak a slot.
 *
 * So do the libevent objects it makes itself (evbuffer_new, event_new).
 * The libraries' own allocations are left alone: their failure paths are
 * theirs, and a crash inside one tells nothing of ours. (jansson 2.14, for
 * one, asserts in its lexer when an allocation fails: load.c
 * lex_scan_string, seen with json_set_alloc_funcs failing here.) */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int proxy_main(int argc, char **argv);

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
struct evbuffer *__real_evbuffer_new(void);
struct evbuffer *__wrap_evbuffer_new(void);
struct event *__real_event_new(struct event_base *b, evutil_socket_t fd, short what,
                               event_callback_fn cb, void *arg);
struct event *__wrap_event_new(struct event_base *b, evutil_socket_t fd, short what,
                               event_callback_fn cb, void *arg);

static volatile sig_atomic_t armed;
static uint32_t rng = 2463534242u, threshold;

static int fail_now(void)
{
    if (!armed)
        return 0;
    rng ^= rng << 13; /* xorshift32 */
    rng ^= rng >> 17;
    rng ^= rng << 5;
    if (rng >= threshold)
        return 0;
    errno = ENOMEM;
    return 1;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    return fail_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

/* libevent's objects the proxy makes itself (evbuffer_new, event_new) fail
 * too, at the proxy's calls only: libevent's own allocations are not failed
 * (libevent 2.1.12 crashes in its own cleanup when they do: a failed
 * calloc in evhttp_request_new, then evhttp_clear_headers on NULL). */
struct evbuffer *__wrap_evbuffer_new(void)
{
    return fail_now() ? NULL : __real_evbuffer_new();
}

struct event *__wrap_event_new(struct event_base *b, evutil_socket_t fd, short what,
                               event_callback_fn cb, void *arg)
{
    return fail_now() ? NULL : __real_event_new(b, fd, what, cb, arg);
}

static void on_usr2(int sig)
{
    (void)sig;
    armed = !armed;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    const char *rate = getenv("OP_FAILMALLOC_RATE"), *seed = getenv("OP_FAILMALLOC_SEED");
    double r = rate ? strtod(rate, NULL) : 0.05;
    threshold = (uint32_t)(r * 4294967295.0);
    if (seed && strtoul(seed, NULL, 10))
        rng = (uint32_t)strtoul(seed, NULL, 10);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    return proxy_main(argc, argv);
}
