/* net.h - listening sockets and address parsing shared by the programs. */
#ifndef OP_NET_H
#define OP_NET_H

#include <stddef.h>
#include <sys/time.h>

/* Split "host:port", "[v6]:port" or ":port" into HOST (without brackets;
 * "" for ":port") and *PORT. Returns 0, or -1 with a reason in ERR. */
int net_parse_hostport(const char *s, char *host, size_t hostlen, int *port, char *err,
                       size_t errlen);

/* Open a non-blocking TCP listener on HOST:PORT (PORT 0 = any free port)
 * with SO_REUSEADDR, TCP_NODELAY (inherited by accepted sockets on Linux,
 * evhttp never sets it) and a backlog of BACKLOG. Returns the fd, or -1
 * with a reason in ERR. */
int net_listen(const char *host, int port, int backlog, char *err, size_t errlen);

/* The local port FD is bound to, or -1. */
int net_bound_port(int fd);

/* The listening socket FD is bound to a loopback address (127/8, ::1). */
int net_fd_loopback(int fd);

/* HOSTHDR, a Host header's value ("name", "name:port", "[v6]:port"; NULL
 * or "" for none), names this machine as Ollama's DNS-rebinding guard
 * reads it (server/routes.go, allowedHostsMiddleware): an IP literal that
 * is loopback, private, unspecified or one of this machine's; localhost,
 * this machine's hostname, or a name under .localhost, .local or
 * .internal; or no Host at all. A server listening on loopback answers
 * nothing else: a page whose name was rebound to 127.0.0.1 sends its own
 * name as Host, and must not reach it. */
int net_host_local(const char *hosthdr);

/* SECONDS (fractions allowed) as a struct timeval for libevent timers. */
struct timeval net_timeval(double seconds);

/* A then B (NULL: none) into DST of CAP bytes (CAP > 0), cut to fit and
 * always terminated: snprintf("%s%s") without its formatting cost, for
 * the strings copied on every request. Returns the length written. */
static inline size_t net_copy(char *dst, size_t cap, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *p = a; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    for (const char *p = b; p && *p && n + 1 < cap; p++)
        dst[n++] = *p;
    dst[n] = '\0';
    return n;
}

/* Monotonic clock in milliseconds and in nanoseconds. */
double net_now_ms(void);
long long net_now_ns(void);

#endif
