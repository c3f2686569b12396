/* net.c - see net.h. */
#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
