/* reqlog.h - the one record at the end of any request.
 *
 * Every request, whatever carried it (a session, a fan-out, the proxy's
 * own answer), ends here exactly once: one access log line, its figures in
 * /metrics, its place in the status page's history and error list, and,
 * for a request a backend served, the feedback adaptive caps learn from.
 * None of these keeps its own hook in the carriers, so none can miss a
 * kind of request (STYLE.md: one record when a request ends, as h2o's
 * logger). */
#ifndef PX_REQLOG_H
#define PX_REQLOG_H

struct proxy;
struct request;

/* R has ended (its reply sent, or its client gone: status 499), with
 * OUTCOME the access log's word for how ("ok", "client-gone", "fanout",
 * "self", "queue-timeout"...). */
void reqlog_end(struct proxy *px, const struct request *r, const char *outcome);

#endif
