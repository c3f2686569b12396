/* transport.c - the plain transport (transport.h): the socket itself. */
#include "transport.h"

#include <sys/socket.h>
#include <unistd.h>

static int do_setup(struct tconn *c, char *err, size_t errlen)
{
    (void)c, (void)err, (void)errlen;
    return 0;
}

static ssize_t do_read(struct tconn *c, void *buf, size_t n)
{
    return read(c->fd, buf, n);
}

static ssize_t do_writev(struct tconn *c, struct iovec *iov, int n)
{
    struct msghdr m = {0};
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    return sendmsg(c->fd, &m, MSG_NOSIGNAL);
}

static void do_close(struct tconn *c)
{
    (void)c;
}

const struct transport transport_plain = {"plain", do_setup, do_read, do_writev, do_close, NULL};
