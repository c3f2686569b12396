/* accesslog.c - see accesslog.h. Formatted without printf: the access log
 * is written once per request, and printf with its float conversions was a
 * tenth of the proxy's CPU. */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "jout.h"
#include "log.h"

static int dest_fd = -1; /* -1: through log_text() to stderr */
static int off, json;
static char pending[32768];
static size_t npending;

struct line {
    char buf[1200];
    size_t n;
};

static void ln_raw(struct line *l, const char *p, size_t k)
{
    if (k > sizeof l->buf - l->n)
        k = sizeof l->buf - l->n;
    memcpy(l->buf + l->n, p, k);
    l->n += k;
}

static void ln_str(struct line *l, const char *str)
{
    ln_raw(l, str, strlen(str));
}

/* Text: anything that could end the line or fake a field (controls,
 * space, '"', backslash, bytes >= 0x7f) as \xHH, so a line is one line
 * and its fields are what they seem. JSON: a valid string literal
 * (controls, '"' and backslash as \u00HH, UTF-8 as it is, a byte that is
 * not UTF-8 as U+FFFD). NULL: "-" or null. */
static unsigned char plain[256]; /* 1: the byte is written as it is */

static void ln_esc(struct line *l, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    if (!str) {
        ln_str(l, json ? "null" : "-");
        return;
    }
    if (!plain['a'])
        for (int c = 0x21; c < 0x7f; c++)
            plain[c] = c != '"' && c != '\\';
    if (json)
        ln_raw(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        size_t k = 0;
        while (plain[p[k]])
            k++;
        if (k) { /* a run of plain bytes at once */
            ln_raw(l, (const char *)p, k);
            p += k;
            if (!*p)
                break;
        }
        if (l->n + 7 > sizeof l->buf)
            break;
        if (json && *p == ' ') {
            l->buf[l->n++] = ' ';
        } else if (json && *p >= 0x80) { /* UTF-8 as it is; a bad byte as U+FFFD */
            k = jout_utf8_char(p, strlen((const char *)p));
            ln_raw(l, k ? (const char *)p : "\xef\xbf\xbd", k ? k : 3);
            p += k ? k - 1 : 0;
        } else {
            ln_str(l, json ? "\\u00" : "\\x");
            l->buf[l->n++] = hex[*p >> 4];
            l->buf[l->n++] = hex[*p & 15];
        }
    }
    if (json)
        ln_raw(l, "\"", 1);
}

static void ln_int(struct line *l, long long v)
{
    char d[24];
    int i = sizeof d;
    unsigned long long u = v < 0 ? (unsigned long long)-v : (unsigned long long)v;
    do {
        d[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        d[--i] = '-';
    ln_raw(l, d + i, sizeof d - (size_t)i);
}

/* Milliseconds with one decimal. */
static void ln_ms(struct line *l, double ms)
{
    long long t = ms > 0 ? (long long)(ms * 10 + 0.5) : 0;
    ln_int(l, t / 10);
    ln_raw(l, ".", 1);
    ln_int(l, t % 10);
}

/* " name=" in text, ",\"name\":" in JSON; NAME a string literal. */
#define ln_key(l, name)                                                          \
    (json ? ln_raw(l, ",\"" name "\":", sizeof(",\"" name "\":") - 1)           \
          : ln_raw(l, " " name "=", sizeof(" " name "=") - 1))

static void emit(const char *p, size_t n)
{
    if (npending + n > sizeof pending)
        accesslog_flush();
    memcpy(pending + npending, p, n);
    npending += n;
}

void accesslog_write(const struct accesslog_entry *a)
{
    struct line l;
    char stamp[40];
    l.n = 0;
    if (off)
        return;
    if (json) {
        ln_str(&l, "{\"time\":\"");
        ln_raw(&l, stamp, log_stamp(stamp));
        ln_str(&l, "\",\"method\":");
        ln_esc(&l, a->method);
        ln_key(&l, "path");
        ln_esc(&l, a->path);
    } else {
        ln_str(&l, a->method);
        ln_str(&l, " ");
        ln_esc(&l, a->path);
    }
    ln_key(&l, "client");
    ln_esc(&l, a->client);
    ln_key(&l, "addr");
    ln_esc(&l, a->addr);
    ln_key(&l, "model");
    ln_esc(&l, a->model);
    ln_key(&l, "backend");
    ln_esc(&l, a->backend);
    ln_key(&l, "status");
    ln_int(&l, a->status);
    ln_key(&l, "wait_ms");
    ln_ms(&l, a->wait_ms);
    ln_key(&l, "ttfb_ms");
    if (a->ttfb_ms >= 0)
        ln_ms(&l, a->ttfb_ms);
    else
        ln_str(&l, json ? "null" : "-");
    ln_key(&l, "upstream_ms");
    ln_ms(&l, a->upstream_ms);
    ln_key(&l, "bytes");
    ln_int(&l, (long long)a->bytes);
    ln_key(&l, "tokens");
    if (a->tokens >= 0 && a->tokens_estimated && !json)
        ln_str(&l, "~");
    if (a->tokens >= 0)
        ln_int(&l, a->tokens);
    else
        ln_str(&l, json ? "null" : "-");
    if (json && a->tokens_estimated)
        ln_str(&l, ",\"tokens_estimated\":true");
    ln_key(&l, "prompt_tokens");
    if (a->prompt_tokens >= 0)
        ln_int(&l, a->prompt_tokens);
    else
        ln_str(&l, json ? "null" : "-");
    ln_key(&l, "tries");
    ln_int(&l, a->tries);
    if (json) {
        ln_key(&l, "outcome");
        ln_esc(&l, a->outcome);
        ln_str(&l, "}");
    } else {
        ln_str(&l, " ");
        ln_str(&l, a->outcome);
    }
    if (dest_fd < 0 && !json) {
        log_text(LOG_INFO, l.buf, l.n);
        return;
    }
    if (dest_fd < 0) /* JSON to stderr: after the other logs' lines */
        log_flush();
    ln_raw(&l, "\n", 1);
    emit(l.buf, l.n);
    if (dest_fd < 0)
        accesslog_flush();
}

void accesslog_flush(void)
{
    int fd = dest_fd >= 0 ? dest_fd : STDERR_FILENO;
    size_t done = 0;
    while (done < npending) {
        ssize_t w = write(fd, pending + done, npending - done);
        if (w <= 0)
            break; /* a log must never stop the proxy */
        done += (size_t)w;
    }
    npending = 0;
}

int accesslog_configure(const char *dest, int as_json)
{
    int fd = -1;
    if (dest && strcmp(dest, "stderr") != 0 && strcmp(dest, "off") != 0) {
        fd = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return -1;
    }
    accesslog_flush();
    if (dest_fd >= 0)
        close(dest_fd);
    dest_fd = fd;
    off = dest && strcmp(dest, "off") == 0;
    json = as_json;
    return 0;
}
