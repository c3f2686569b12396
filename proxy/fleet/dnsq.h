/* dnsq.h - A-record lookups for dns rows (dnsfleet.c) with c-ares, driven
 * from the proxy's event loop (never blocking it), that take every address
 * of an answer.
 *
 * A lookup asks over UDP (EDNS0, 1232 bytes, c-ares falls back to plain
 * DNS for a server that does not know EDNS). An answer with the TC bit set
 * is asked again over TCP, where one message holds up to 65,535 bytes
 * (about 4,000 A records): that is the whole answer. When TCP cannot
 * complete it (no TCP on the server, a timeout), the truncated UDP answer
 * is handed over as it is, marked truncated: the caller must not read
 * what is missing from it as gone.
 *
 * Two c-ares channels share the name servers: one UDP that hands a
 * truncated answer over instead of retrying (ARES_FLAG_IGNTC), one TCP
 * only (ARES_FLAG_USEVC). Each has an event per socket c-ares uses (its
 * socket state callback) and a timer for ares_timeout(). */
#ifndef PX_DNSQ_H
#define PX_DNSQ_H

struct event_base;
struct dnsq;

/* What a lookup found. */
struct dnsq_answer {
    int status;            /* 0, or an ARES_E* code (dnsq_strerror); no addresses then */
    int cancelled;         /* dnsq_free() ended it: nothing else is set */
    const unsigned *addrs; /* n IPv4 addresses, network order; the callee's only during the call */
    int n;                 /* 0: the name has no A record (NOERROR, no answer) */
    int udp_truncated;     /* the UDP answer had the TC bit: asked again over TCP */
    int truncated;         /* ... and TCP could not complete it: addrs are a part (udp_n) */
    int tcp_status;        /* when truncated: why TCP failed (ARES_E*) */
};

/* Called once per dnsq_a(): from the loop, or from inside dnsq_a() when
 * the lookup fails at once (no name server). */
typedef void (*dnsq_fn)(const struct dnsq_answer *a, void *arg);

/* A resolver on BASE asking SERVERS[0..N) ("host:port", "[v6]:port" or
 * "host"; port 53 by default), or /etc/resolv.conf's when N is 0. A server
 * that cannot be parsed is logged and skipped. Returns NULL on failure
 * (logged). */
struct dnsq *dnsq_new(struct event_base *base, char *const *servers, int n);

/* Look NAME up (as it is: no search domains), A records; FN(answer, ARG)
 * once when done. Returns 0, or -1 (out of memory: FN is not called). */
int dnsq_a(struct dnsq *q, const char *name, dnsq_fn fn, void *arg);

/* End every lookup (each FN called with cancelled = 1) and free Q.
 * NULL-safe. Not from inside an FN. */
void dnsq_free(struct dnsq *q);

/* The text of an ARES_E* code. */
const char *dnsq_strerror(int status);

#endif
