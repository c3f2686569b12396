/* fz_proxy.h - one ollama-proxy inside the fuzz process, for fuzz_proxy.c.
 *
 * fz_proxy.c is the only file of tests/fuzz that knows how a proxy is put
 * together (it follows proxy_init() in proxy/main.c): when that changes,
 * adjust fz_proxy.c and nothing else. It also defines what main.c defines
 * for pxcore (proxy_session_ended), so every target that links pxcore links
 * this file too. */
#ifndef FZ_PROXY_H
#define FZ_PROXY_H

struct event_base;

/* Start a proxy on 127.0.0.1 (a free port) in front of the one backend
 * http://127.0.0.1:BACKEND_PORT, with short timeouts, quiet logs and one
 * discovery poll at the start (/api/tags then /api/ps). Returns the port
 * it listens on, or -1 after printing why. Once per process. */
int fz_proxy_start(int backend_port);

/* The proxy's event loop: the caller runs it, and may add its own events. */
struct event_base *fz_proxy_base(void);

/* Requests the proxy is still working on (live sessions). */
int fz_proxy_busy(void);

/* Tear everything down as main.c does at exit; a no-op when not started. */
void fz_proxy_stop(void);

#endif
