/* reqtext.c - see reqtext.h. */
#include "reqtext.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <string.h>
#include <strings.h>

#include "textout.h"
#include "via.h"

/* NAME is one of LIST (NULL-terminated), ignoring case; the first letter
 * and the length rule most names out before any comparison. */
static int name_in(const char *name, const char *const *list)
{
    size_t n = strlen(name);
    int c = name[0] | 0x20;
    for (; *list; list++)
        if (((*list)[0] | 0x20) == c && strlen(*list) == n && strcasecmp(name, *list) == 0)
            return 1;
    return 0;
}

int reqtext_hop_by_hop(const char *name)
{
    static const char *const hop[] = {"Connection",        "Keep-Alive", "Proxy-Connection",
                                      "Transfer-Encoding", "TE",         "Trailer",
                                      "Upgrade",           "Content-Length", NULL};
    return name_in(name, hop);
}

/* NAME is one of the backend's own headers: the client's is replaced. */
static int backends_own(const struct reqtext_host *h, const char *name)
{
    for (int i = 0; i < h->nheaders; i++)
        if (strcasecmp(name, h->headers[i].name) == 0)
            return 1;
    return 0;
}

/* A client's header that is not passed on: the framing and the route are
 * the proxy's (Host, hop-by-hop, Expect), X-Forwarded-For and Via are rebuilt, the
 * backend's own headers replace the client's, and the proxy's own
 * credentials stay here, and so does Origin: the proxy answers CORS itself
 * (front/cors.c), and Ollama answers a foreign Origin with 403. With
 * auth.keys a key in any of its spellings (Authorization: Bearer or Basic,
 * x-api-key) is the proxy's; without, they are the client's business with
 * the backend and pass. */
static int dropped(const struct reqtext *r, const char *name)
{
    static const char *const skip[] = {"Host", "Expect", "X-Forwarded-For", "Via",
                                       "Proxy-Authorization", "Origin", NULL};
    static const char *const auth[] = {"Authorization", "x-api-key", NULL};
    return reqtext_hop_by_hop(name) || name_in(name, skip) || (r->keys && name_in(name, auth)) ||
           backends_own(r->host, name);
}

static void add_header(struct textout *o, const char *k, const char *v)
{
    textout_str(o, k);
    textout_put(o, ": ", 2);
    textout_str(o, v);
    textout_put(o, "\r\n", 2);
}

/* Via: the client's elements in their order, then this proxy's (via.h);
 * HEADERS (or NULL) are read again only when they had a Via. */
static void add_via(struct textout *out, const struct evkeyvalq *headers, int had)
{
    const struct evkeyval *h;
    textout_str(out, "Via: ");
    if (had)
        TAILQ_FOREACH(h, headers, next)
            if (strcasecmp(h->key, "Via") == 0 && h->value[0]) {
                textout_str(out, h->value);
                textout_put(out, ", ", 2);
            }
    textout_str(out, via_element());
    textout_put(out, "\r\n", 2);
}

void reqtext_build(struct evbuffer *evout, const struct reqtext *r)
{
    const struct evkeyval *h;
    const char *xff = NULL;
    int via = 0;
    size_t len = r->body ? evbuffer_get_length(r->body) : 0;
    struct textout text, *out = &text; /* the head, added to EVOUT in one piece */
    textout_init(out, evout);
    textout_str(out, r->method);
    textout_put(out, " ", 1);
    textout_str(out, r->target);
    textout_put(out, " HTTP/1.1\r\n", 11);
    add_header(out, "Host", r->host->name);
    for (int i = 0; i < r->host->nheaders; i++)
        add_header(out, r->host->headers[i].name, r->host->headers[i].value);
    if (r->headers)
        TAILQ_FOREACH(h, r->headers, next) {
            if (!dropped(r, h->key))
                add_header(out, h->key, h->value);
            else if (!xff && strcasecmp(h->key, "X-Forwarded-For") == 0)
                xff = h->value;
            else if (!via && strcasecmp(h->key, "Via") == 0)
                via = 1;
        }
    add_via(out, r->headers, via);
    if (r->peer) {
        textout_str(out, "X-Forwarded-For: ");
        if (xff) {
            textout_str(out, xff);
            textout_put(out, ", ", 2);
        }
        textout_str(out, r->peer);
        textout_put(out, "\r\n", 2);
    }
    if (len || r->length) {
        textout_str(out, "Content-Length: ");
        textout_num(out, len);
        textout_put(out, "\r\n", 2);
    }
    textout_put(out, "\r\n", 2);
    textout_flush(out);
    if (len)
        evbuffer_add(evout, evbuffer_pullup(r->body, -1), len);
}
