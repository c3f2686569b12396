/* accesslog.h - one line per request, every request (proxied or answered
 * by the proxy itself), as text or JSON, to stderr or a file.
 *
 * Text (the default), after the usual log prefix:
 *   METHOD PATH client=C addr=A model=M backend=B status=S wait_ms=W
 *   ttfb_ms=T upstream_ms=U bytes=N tokens=K prompt_tokens=P tries=R OUTCOME
 * JSON: {"time":...,"method":...,"path":...,"client":...,"addr":...,
 *   "model":...,"backend":...,"status":S,"wait_ms":W,"ttfb_ms":T,
 *   "upstream_ms":U,"bytes":N,"tokens":K,"prompt_tokens":P,"tries":R,
 *   "outcome":...}
 * Generated tokens counted from a stream's deltas rather than reported
 * (tokscan.h) are marked: tokens=~K in text, "tokens_estimated":true in
 * JSON.
 * (absent values: "-" in text, null in JSON). Text fields from outside (the
 * path, names) are escaped as \xHH where they could end the line or fake a
 * field; JSON strings are always valid JSON. Lines gather in a buffer
 * written in blocks: accesslog_flush() runs on the log's flush timer. */
#ifndef PX_ACCESSLOG_H
#define PX_ACCESSLOG_H

#include <stddef.h>

struct accesslog_entry {
    const char *method, *path, *client, *addr, *model, *backend, *outcome;
    int status, tries;
    double wait_ms, ttfb_ms, upstream_ms; /* ttfb_ms < 0: no head came */
    unsigned long long bytes;
    long long tokens; /* generated; -1: unknown */
    long long prompt_tokens; /* -1: unknown */
    int tokens_estimated;
};

/* Where and how: DEST "stderr" (the default), "off" or a file path (opened
 * for appending; reopened by each call, so a reload follows a rotation);
 * JSON 1 for JSON lines. Returns 0, or -1 (the old setting stays) with
 * errno set when the file cannot be opened. */
int accesslog_configure(const char *dest, int json);

void accesslog_write(const struct accesslog_entry *a);
void accesslog_flush(void);

#endif
