/* net.c - see net.h. */
#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int net_parse_hostport(const char *s, char *host, size_t hostlen, int *port, char *err,
                       size_t errlen)
{
    const char *p, *hs = s;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') {
            snprintf(err, errlen, "bad address \"%s\": expected [v6]:port", s);
            return -1;
        }
        hs = s + 1;
        hl = (size_t)(end - hs);
        p = end + 2;
    } else {
        const char *c = strrchr(s, ':');
        if (!c) {
            snprintf(err, errlen, "bad address \"%s\": expected host:port", s);
            return -1;
        }
        hl = (size_t)(c - s);
        p = c + 1;
    }
    char *endp;
    long v = strtol(p, &endp, 10);
    if (!*p || *endp || v < 0 || v > 65535) {
        snprintf(err, errlen, "bad port in \"%s\"", s);
        return -1;
    }
    if (hl >= hostlen) {
        snprintf(err, errlen, "host too long in \"%s\"", s);
        return -1;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (int)v;
    return 0;
}

int net_listen(const char *host, int port, int backlog, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    int fd = -1, one = 1, rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof portstr, "%d", port);
    rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0)
        goto fail;
    freeaddrinfo(res);
    return fd;
fail:
    snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

int net_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* A loopback address: 127/8, ::1, or 127/8 mapped into IPv6. */
static int addr_loopback(int family, const void *a)
{
    const unsigned char *b = a;
    static const unsigned char lo6[16] = {[15] = 1};
    if (family == AF_INET)
        return b[0] == 127;
    return !memcmp(b, lo6, 16) || (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a) && b[12] == 127);
}

int net_fd_loopback(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return addr_loopback(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr);
    return ss.ss_family == AF_INET6 &&
           addr_loopback(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr);
}

/* The address A (FAMILY) is one of this machine's interfaces' (Go's
 * isLocalIP in Ollama's server). */
static int addr_own(int family, const void *a)
{
    struct ifaddrs *ifs, *i;
    int own = 0;
    if (getifaddrs(&ifs) < 0)
        return 0;
    for (i = ifs; i && !own; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != family)
            continue;
        own = family == AF_INET
                  ? !memcmp(&((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, 4)
                  : !memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, a, 16);
    }
    freeifaddrs(ifs);
    return own;
}

/* HOST is an IP literal: 1 if local (loopback, private, unspecified, one
 * of this machine's), 0 if not; -1 when HOST is not an IP literal. */
static int ip_local(const char *host)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1) {
        unsigned ip = (unsigned)a[0] << 24 | (unsigned)a[1] << 16 | (unsigned)a[2] << 8 | a[3];
        return a[0] == 127 || a[0] == 10 || (ip >> 20) == 0xAC1 || (ip >> 16) == 0xC0A8 ||
               ip == 0 || addr_own(AF_INET, a);
    }
    if (inet_pton(AF_INET6, host, a) == 1) {
        static const unsigned char any[16];
        if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a)) {
            char v4[INET_ADDRSTRLEN];
            return ip_local(inet_ntop(AF_INET, a + 12, v4, sizeof v4));
        }
        return addr_loopback(AF_INET6, a) || !memcmp(a, any, 16) || (a[0] & 0xFE) == 0xFC ||
               addr_own(AF_INET6, a);
    }
    return -1;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !strncasecmp(s + n - k, suffix, k);
}

int net_host_local(const char *hosthdr)
{
    char host[256], self[256];
    const char *h = hosthdr ? hosthdr : "", *end;
    size_t n;
    int ip;
    if (*h == '[') { /* "[v6]" or "[v6]:port" */
        h++;
        end = strchr(h, ']');
        n = end ? (size_t)(end - h) : strlen(h);
    } else { /* "name", "name:port"; a bare v6 has more than one ':' */
        end = strchr(h, ':');
        n = end && !strchr(end + 1, ':') ? (size_t)(end - h) : strlen(h);
    }
    if (n >= sizeof host)
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    if (!n)
        return 1;
    if ((ip = ip_local(host)) >= 0)
        return ip;
    self[sizeof self - 1] = '\0';
    if (gethostname(self, sizeof self - 1) == 0 && !strcasecmp(host, self))
        return 1;
    return !strcasecmp(host, "localhost") || ends_with(host, n, ".localhost") ||
           ends_with(host, n, ".local") || ends_with(host, n, ".internal");
}

struct timeval net_timeval(double seconds)
{
    struct timeval tv;
    if (seconds < 0)
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

long long net_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double net_now_ms(void)
{
    return (double)net_now_ns() / 1e6;
}
