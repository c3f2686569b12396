/* log.h - one-line logs on stderr: "2026-11-27T12:00:00.123Z LEVEL text". */
#ifndef OP_LOG_H
#define OP_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Lines below this level are dropped (default LOG_INFO). */
void log_set_level(enum log_level lvl);
/* Prefix each line with NAME (the program's name); NAME is borrowed. */
void log_set_name(const char *name);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a text already formatted (LEN bytes, no newline): the hot
 * path of the proxy's access log, without printf. */
void log_text(enum log_level lvl, const char *text, size_t len);

/* Buffered mode (for a hot access log): log_text() lines gather in memory
 * and go out in one write() when the buffer fills or at log_flush(), which
 * the caller runs on a timer and at exit. log_msg() lines flush first, so
 * the order is kept. */
void log_set_buffered(int on);

/* "2026-11-27T12:00:00.123Z" (UTC, milliseconds) into OUT (at least 32
 * bytes); returns its length. */
size_t log_stamp(char *out);
void log_flush(void);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
