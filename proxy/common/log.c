/* log.c - see log.h. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static int buffered;
static char pending[16384];
static size_t npending;
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

size_t log_stamp(char *out)
{
    struct timeval tv;
    const char *ts;
    size_t n, ms;
    gettimeofday(&tv, NULL);
    ts = second_stamp(tv.tv_sec);
    n = strlen(ts);
    memcpy(out, ts, n);
    ms = (size_t)(tv.tv_usec / 1000);
    out[n++] = '.';
    out[n++] = (char)('0' + ms / 100);
    out[n++] = (char)('0' + ms / 10 % 10);
    out[n++] = (char)('0' + ms % 10);
    out[n++] = 'Z';
    out[n] = '\0';
    return n;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* "2026-11-27T12:00:00.123Z NAME LEVEL: " into OUT; returns its length. */
static size_t prefix(char *out, enum log_level lvl)
{
    size_t n = log_stamp(out), k;
    out[n++] = ' ';
    k = strlen(prog);
    memcpy(out + n, prog, k);
    n += k;
    out[n++] = ' ';
    k = strlen(level_names[lvl]);
    memcpy(out + n, level_names[lvl], k);
    n += k;
    out[n++] = ':';
    out[n++] = ' ';
    return n;
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w <= 0)
            return; /* a log must never stop the program */
        p += w;
        n -= (size_t)w;
    }
}

void log_set_buffered(int on)
{
    log_flush();
    buffered = on;
}

void log_flush(void)
{
    write_all(pending, npending);
    npending = 0;
}

void log_text(enum log_level lvl, const char *text, size_t len)
{
    char line[2048];
    size_t n;
    if (lvl < min_level)
        return;
    n = prefix(line, lvl);
    if (len > sizeof line - 1 - n)
        len = sizeof line - 1 - n;
    memcpy(line + n, text, len);
    n += len;
    line[n++] = '\n';
    if (!buffered) {
        write_all(line, n);
        return;
    }
    if (npending + n > sizeof pending)
        log_flush();
    memcpy(pending + npending, line, n);
    npending += n;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n, m;

    if (lvl < min_level)
        return;
    n = (int)prefix(line, lvl); /* prog is short: the prefix fits */
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof line - 1 - (size_t)n ? m : (int)(sizeof line - 2 - (size_t)n);
    line[n++] = '\n';
    log_flush();
    /* One write per line: lines of several processes never interleave. */
    write_all(line, (size_t)n);
}
