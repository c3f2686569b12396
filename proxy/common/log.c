/* log.c - see log.h. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static const char *prog = "";

void log_set_level(enum log_level lvl)
{
    min_level = lvl;
}

void log_set_name(const char *name)
{
    prog = name ? name : "";
}

/* The date and time to the second, formatted once per second: the proxy
 * logs a line per request. */
static const char *second_stamp(time_t sec)
{
    static char ts[32];
    static time_t cached = -1;
    if (sec != cached) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        cached = sec;
    }
    return ts;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    struct timeval tv;
    va_list ap;
    int n, m;

    if (lvl < min_level)
        return;
    gettimeofday(&tv, NULL);
    n = snprintf(line, sizeof line, "%s.%03dZ %s %s: ", second_stamp(tv.tv_sec),
                 (int)(tv.tv_usec / 1000), prog, names[lvl]);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof line - 1 - (size_t)n ? m : (int)(sizeof line - 2 - (size_t)n);
    line[n++] = '\n';
    /* One write per line: lines of several processes never interleave. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
