/* ui.h - the live status page (GET /proxy/ui) and the short memory it draws:
 * a per-second history of each backend and of the queue, and the last
 * errors the proxy answered or passed on.
 *
 * The page. proxy/ui/index.html, turned into a C array at build time
 * (proxy/ui/embed.cmake), served as it is: HTML, CSS and JS in one file,
 * nothing fetched but the proxy's own JSON (a Content-Security-Policy
 * header holds the browser to that). The page is a shell without data, so
 * server.c serves it without a key; its JS asks for an admin key when the
 * proxy has auth.keys, keeps it in the browser's sessionStorage (never in
 * the URL) and sends it as "Authorization: Bearer KEY" on its fetches of
 * /proxy/status, /proxy/history and the runtime controls, which need an
 * admin key as every endpoint under /proxy/ does.
 *
 * The history. Every second (a timer of ours) the requests that ended on
 * each backend in that second, the tokens they generated and read (their
 * prompts') and the queue's
 * length are written into fixed rings of UI_HISTORY samples: memory is
 * bounded by the number of backends, whatever the traffic. A backend that
 * a reload drops loses its history; one kept by name keeps it.
 *
 * The errors. The last UI_ERRORS requests that ended with a 5xx (made by
 * the proxy or passed on from a backend), or whose stream a backend cut,
 * with when, the backend, the path and why.
 *
 * All of it lives in the loop thread, as the rest of struct proxy. */
#ifndef PX_UI_H
#define PX_UI_H

struct proxy;
struct backend;
struct request;
struct json_t;

#define UI_HISTORY 600 /* one-second samples: the last ten minutes */
#define UI_ERRORS 20

/* Make px->ui and start its sampling timer. Returns 0, or -1 on allocation
 * failure (px->ui stays NULL; every ui_* function then does nothing). */
int ui_start(struct proxy *px);
/* Stop the timer and free px->ui; safe to call twice, or without start. */
void ui_stop(struct proxy *px);

/* A proxied request ended (session.c's teardown): BE served its last try
 * (NULL: none), STATUS its status (499 when the client left), PATH its
 * path, OUTCOME the access log's outcome word, TOKENS generated and
 * PROMPT_TOKENS of its prompt (-1: unknown). Counted into BE's current
 * second; a 5xx or a cut stream goes into the error ring. Strings are
 * copied. */
void ui_request_ended(struct proxy *px, const struct backend *be, int status, const char *path,
                      const char *outcome, long long tokens, long long prompt_tokens);

/* GET or HEAD /proxy/ui: the page (405 for another method). */
void ui_reply_page(struct request *r);

/* GET /proxy/history: {"interval_s":1,"samples":N,"end":"ISO time",
 * "backends":[{"name":..,"requests":[..],"tokens":[..],"prompt_tokens":[..]}],
 * "queue":[..]},
 * each array N long (at most UI_HISTORY), the oldest first, the last the
 * second that ended most recently. A new reference (NULL on failure). */
struct json_t *ui_history_json(struct proxy *px);

/* The error ring for /proxy/status's "errors": [{"time","status",
 * "backend","path","outcome","why"}], the newest first. A new reference. */
struct json_t *ui_errors_json(struct proxy *px);

#endif
