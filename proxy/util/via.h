/* via.h - the proxy's name on the Via header (RFC 9110 7.6.3), and the
 * loop it reveals.
 *
 * Every request the proxy sends to a backend (reqtext.h) carries a Via
 * element "1.1 ollama-proxy-<id>", after the client's own, where <id> is
 * drawn at random once per process. A request that arrives carrying that
 * element has been here before: the fleet leads back to this proxy (a
 * backend that is this proxy, or a chain of proxies that closes on
 * itself), and it is answered 508 instead of taking another slot. Other
 * proxies' elements pass: a chain A -> B -> Ollama works. */
#ifndef PX_VIA_H
#define PX_VIA_H

#include <stddef.h>

struct evkeyvalq;

/* "ollama-proxy-<id>": this process's name in Via (a static string). */
const char *via_name(void);

/* The element this proxy appends: "1.1 ollama-proxy-<id>" (static). */
const char *via_element(void);

/* 1 when one of HEADERS' Via fields names this process (any case of the
 * header's name; the element's name compared exactly). */
int via_seen(const struct evkeyvalq *headers);

/* 1 when the text S (N bytes, e.g. the start of a backend's answer)
 * contains this process's name. */
int via_names_me(const char *s, size_t n);

#endif
