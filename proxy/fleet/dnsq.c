/* dnsq.c - see dnsq.h.
 *
 * A lookup's states: asked over UDP (on_udp will run) -> done, or ->
 * asked over TCP (on_tcp will run) -> done. Its struct is freed by the
 * callback that ends it. c-ares calls each query's callback exactly once,
 * ARES_EDESTRUCTION from ares_destroy() included, so dnsq_free() ends
 * every lookup by destroying the channels (UDP first: its callbacks start
 * nothing new then). */
#include "dnsq.h"

#include <ares.h>
#include <ares_dns.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <event2/util.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DNSQ_EDNS_SIZE 1232 /* the DNS flag day 2020 size: no IP fragments */
#define DNSQ_TIMEOUT_MS 2000
#define DNSQ_TRIES 2

/* A socket c-ares uses, and the event that watches it. */
struct sock {
    ares_socket_t fd;
    struct event *ev;
    struct sock *next;
};

/* A c-ares channel on the loop. */
struct chan {
    struct dnsq *q;
    ares_channel ch;
    int up; /* ch made */
    struct event *timer;
    struct sock *socks;
};

struct dnsq {
    struct event_base *base;
    struct chan udp, tcp;
    int freeing; /* dnsq_free() runs: no TCP retry */
};

struct lookup {
    struct dnsq *q;
    char *name;
    dnsq_fn fn;
    void *arg;
    unsigned *udp_addrs; /* the truncated UDP answer's, kept while TCP is asked */
    int udp_n;
};

const char *dnsq_strerror(int status)
{
    return ares_strerror(status);
}

/* Watch again for what c-ares's next timeout is. */
static void arm(struct chan *c)
{
    struct timeval tv, *t = ares_timeout(c->ch, NULL, &tv);
    if (t)
        evtimer_add(c->timer, t);
    else
        evtimer_del(c->timer);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct chan *c = arg;
    (void)fd, (void)what;
    ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm(c);
}

/* A socket is ready. c-ares may close it (and we free its event, this
 * very one: libevent has copied what it needs before calling us) while it
 * processes. */
static void on_sock(evutil_socket_t fd, short what, void *arg)
{
    struct chan *c = arg;
    ares_process_fd(c->ch, what & EV_READ ? fd : ARES_SOCKET_BAD,
                    what & EV_WRITE ? fd : ARES_SOCKET_BAD);
    arm(c);
}

/* c-ares's socket state callback: watch FD for what it wants, or stop. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct chan *c = data;
    struct sock **p, *s;
    for (p = &c->socks; *p && (*p)->fd != fd; p = &(*p)->next)
        ;
    s = *p;
    if (s) { /* its wishes changed: a new event (an event's flags are fixed) */
        event_free(s->ev);
        s->ev = NULL;
    }
    if (!readable && !writable) {
        if (s) {
            *p = s->next;
            free(s);
        }
        return;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) {
            log_error("dns: out of memory watching a socket");
            return; /* the query times out */
        }
        s->fd = fd;
        s->next = c->socks;
        c->socks = s;
    }
    s->ev = event_new(c->q->base, fd,
                      (short)(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0)),
                      on_sock, c);
    if (!s->ev || event_add(s->ev, NULL) < 0)
        log_error("dns: cannot watch a socket");
}

/* The A records of ABUF into a new array *OUT (*N of them). Returns 0 or
 * an ARES_E* code. NOERROR without an A record is 0 addresses. */
static int parse(const unsigned char *abuf, int alen, unsigned **out, int *n)
{
    int an = alen >= HFIXEDSZ ? DNS_HEADER_ANCOUNT(abuf) : 0, st;
    struct ares_addrttl *t = calloc((size_t)(an ? an : 1), sizeof *t);
    *out = NULL;
    *n = 0;
    if (!t)
        return ARES_ENOMEM;
    *n = an;
    st = ares_parse_a_reply(abuf, alen, NULL, t, n);
    if (st == ARES_ENODATA) {
        *n = 0;
        st = ARES_SUCCESS;
    }
    if (st == ARES_SUCCESS && !(*out = calloc((size_t)(*n ? *n : 1), sizeof **out)))
        st = ARES_ENOMEM;
    for (int i = 0; st == ARES_SUCCESS && i < *n; i++)
        (*out)[i] = t[i].ipaddr.s_addr;
    if (st != ARES_SUCCESS)
        *n = 0;
    free(t);
    return st;
}

/* Hand A over and free L. */
static void finish(struct lookup *l, struct dnsq_answer *a)
{
    l->fn(a, l->arg);
    free(l->udp_addrs);
    free(l->name);
    free(l);
}

static void on_tcp(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct lookup *l = arg;
    struct dnsq_answer a = {0};
    unsigned *addrs = NULL;
    (void)timeouts;
    a.udp_truncated = 1;
    if (status == ARES_EDESTRUCTION || l->q->freeing) {
        a.cancelled = 1;
    } else if (status == ARES_ENODATA ||
               (status == ARES_SUCCESS && parse(abuf, alen, &addrs, &a.n) == ARES_SUCCESS)) {
        a.addrs = addrs; /* the whole answer (none for NODATA) */
    } else { /* TCP could not complete it: the part UDP gave */
        a.truncated = 1;
        a.tcp_status = status != ARES_SUCCESS ? status : ARES_EBADRESP;
        a.addrs = l->udp_addrs;
        a.n = l->udp_n;
    }
    finish(l, &a);
    free(addrs);
}

static void on_udp(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct lookup *l = arg;
    struct dnsq_answer a = {0};
    unsigned *addrs = NULL;
    (void)timeouts;
    if (status == ARES_EDESTRUCTION || l->q->freeing) {
        a.cancelled = 1;
    } else if (status == ARES_ENODATA) {
        a.n = 0;
    } else if (status != ARES_SUCCESS) {
        a.status = status;
    } else if ((a.status = parse(abuf, alen, &addrs, &a.n)) == 0 && DNS_HEADER_TC(abuf)) {
        struct dnsq *q = l->q; /* on_tcp may run (and free L) inside ares_query */
        l->udp_addrs = addrs;
        l->udp_n = a.n;
        ares_query(q->tcp.ch, l->name, C_IN, T_A, on_tcp, l);
        arm(&q->tcp);
        return;
    }
    a.addrs = addrs;
    finish(l, &a);
    free(addrs);
}

int dnsq_a(struct dnsq *q, const char *name, dnsq_fn fn, void *arg)
{
    struct lookup *l = calloc(1, sizeof *l);
    if (!l || !(l->name = strdup(name))) {
        free(l);
        return -1;
    }
    l->q = q;
    l->fn = fn;
    l->arg = arg;
    ares_query(q->udp.ch, name, C_IN, T_A, on_udp, l);
    arm(&q->udp);
    return 0;
}

/* SERVERS as c-ares's list (NULL when none could be parsed). */
static struct ares_addr_port_node *servers_of(char *const *servers, int n)
{
    struct ares_addr_port_node *head = NULL, **tail = &head;
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        int len = (int)sizeof ss;
        struct ares_addr_port_node *s;
        memset(&ss, 0, sizeof ss);
        if (evutil_parse_sockaddr_port(servers[i], (struct sockaddr *)&ss, &len) < 0) {
            log_warn("resolvers: cannot use %s", servers[i]);
            continue;
        }
        if (!(s = calloc(1, sizeof *s)))
            break;
        s->family = ss.ss_family;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            s->addr.addr4 = in->sin_addr;
            s->udp_port = s->tcp_port = ntohs(in->sin_port) ? ntohs(in->sin_port) : 53;
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            memcpy(&s->addr.addr6, &in6->sin6_addr, sizeof in6->sin6_addr);
            s->udp_port = s->tcp_port = ntohs(in6->sin6_port) ? ntohs(in6->sin6_port) : 53;
        }
        *tail = s;
        tail = &s->next;
    }
    return head;
}

static int chan_init(struct dnsq *q, struct chan *c, int flags, char *const *servers, int n)
{
    struct ares_options o;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB |
               ARES_OPT_EDNSPSZ,
        st;
    memset(&o, 0, sizeof o);
    o.flags = flags | ARES_FLAG_EDNS;
    o.timeout = DNSQ_TIMEOUT_MS;
    o.tries = DNSQ_TRIES;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = c;
    o.ednspsz = DNSQ_EDNS_SIZE;
    c->q = q;
    if (!(c->timer = evtimer_new(q->base, on_timer, c)))
        return -1;
    if ((st = ares_init_options(&c->ch, &o, mask)) != ARES_SUCCESS) {
        log_error("dns: %s", ares_strerror(st));
        return -1;
    }
    c->up = 1;
    if (n > 0) {
        struct ares_addr_port_node *list = servers_of(servers, n);
        st = ares_set_servers_ports(c->ch, list); /* none parsed: no server, lookups fail */
        while (list) {
            struct ares_addr_port_node *next = list->next;
            free(list);
            list = next;
        }
        if (st != ARES_SUCCESS) {
            log_error("resolvers: %s", ares_strerror(st));
            return -1;
        }
    }
    return 0;
}

static void chan_cleanup(struct chan *c)
{
    if (c->up)
        ares_destroy(c->ch); /* the callbacks run, and the socket state one for each socket */
    c->up = 0;
    while (c->socks) {
        struct sock *s = c->socks;
        c->socks = s->next;
        if (s->ev)
            event_free(s->ev);
        free(s);
    }
    if (c->timer)
        event_free(c->timer);
    c->timer = NULL;
}

struct dnsq *dnsq_new(struct event_base *base, char *const *servers, int n)
{
    static int lib;
    struct dnsq *q;
    if (!lib && ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        log_error("dns: c-ares does not start");
        return NULL;
    }
    lib = 1;
    if (!(q = calloc(1, sizeof *q)))
        return NULL;
    q->base = base;
    if (chan_init(q, &q->udp, ARES_FLAG_IGNTC, servers, n) < 0 ||
        chan_init(q, &q->tcp, ARES_FLAG_USEVC, servers, n) < 0) {
        dnsq_free(q);
        return NULL;
    }
    return q;
}

void dnsq_free(struct dnsq *q)
{
    if (!q)
        return;
    q->freeing = 1;
    chan_cleanup(&q->udp);
    chan_cleanup(&q->tcp);
    free(q);
}
