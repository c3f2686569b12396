/* dnsfleet.h - backends from DNS, as HAProxy's server-template: a backend
 * row { name = "gpu"; dns = "ollama.svc:11434"; max_concurrent = 4;
 * resolve_s = 10; } is resolved (A records, with c-ares on the loop:
 * dnsq.h) every resolve_s; each address of an answer, however many (one
 * larger than a UDP packet is asked again over TCP), becomes a backend
 * "gpu-1", "gpu-2", ..., its number kept for that address while it stays
 * in the answers (a new address takes the lowest number free: addresses
 * that left are forgotten, so a row can see any number of them over
 * time). Only an answer's set counts, not its order. A new address joins;
 * one that vanishes from an answer retires like a backend dropped by a
 * reload (its requests in flight finish there, none new goes there); if it
 * comes back while they run, it takes that backend back (fleet_add), so
 * they count against its cap. A
 * failed lookup (timeout, no such name) keeps the backends as they are;
 * an answer with no address retires them all. A truncated answer that TCP
 * could not complete is a part: its new addresses join, none leaves; it is
 * logged (once per change of its count) and counted
 * (dnsfleet_truncated). Name servers: `resolvers`, else /etc/resolv.conf. */
#ifndef PX_DNSFLEET_H
#define PX_DNSFLEET_H

struct proxy;

/* Start (or, after a reload, re-sync to px->cfg): resolve every dns row
 * now and every resolve_s. Returns 0 or -1. */
int dnsfleet_apply(struct proxy *px);

/* Stop; NULL-safe on a proxy that never started. */
void dnsfleet_stop(struct proxy *px);

/* How many answers of the dns row NAME (its URL, "name:port") were used
 * as a part (truncated, TCP failed) since it started; 0 for no such row. */
unsigned long long dnsfleet_truncated(const struct proxy *px, const char *name, const char *url);

#endif
