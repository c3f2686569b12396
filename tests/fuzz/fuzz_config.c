/* fuzz_config.c - config_load() (proxy/config.c) on any file: an
 * operator's typo must get a clear error, never a crash, and what loads
 * must be usable.
 *
 * The input is written to a file and loaded twice. Either both loads give
 * a config or neither does; a refusal names the file and a line
 * ("FILE:LINE: what"), the same both times; a config has at least one
 * backend, each with a name, a host, a port in 1-65535 and a cap of at
 * least 1, every key with a name and a secret, every model cap of at
 * least 1, and a pinned num_ctx only with num_ctx pinned. Both are freed
 * (leaks are findings).
 *
 * config_load() reads the files a config names (tls.ca_file, a certificate
 * and its key: OpenSSL loads them) and libconfig reads @include'd ones, so
 * an input that could name a device or a kernel file (/dev/zero would be
 * read for ever) is skipped, as is a \x escape that could spell one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fz.h"

/* libconfig 1.5 (Debian 12) leaks on some parse errors: the buffer of a
 * string a parse error ends (strbuf_append), a token's copy (yylex).
 * Leaks allocated inside libconfig are its own and are not findings; no
 * code of ours runs under it, so ours all still are. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libconfig.so\n";
}

static char path[64];

static void remove_file(void)
{
    unlink(path);
}

static void check_caps(const struct config_model_cap *mc, int n)
{
    for (int i = 0; i < n; i++)
        FZ_CHECK(mc[i].model && mc[i].key && mc[i].max_concurrent >= 1);
}

static void check_config(const struct px_config *c)
{
    FZ_CHECK(c->nbackends >= 1 && c->backends);
    for (int i = 0; i < c->nbackends; i++) {
        const struct config_backend *b = &c->backends[i];
        FZ_CHECK(b->name && *b->name && b->url && b->host);
        FZ_CHECK(b->port >= 1 && b->port <= 65535);
        FZ_CHECK(b->max_concurrent >= 1);
        FZ_CHECK(b->nheaders == 0 || b->headers);
        for (int h = 0; h < b->nheaders; h++)
            FZ_CHECK(b->headers[h].name && *b->headers[h].name && b->headers[h].value);
        check_caps(b->model_caps, b->nmodel_caps);
    }
    for (int i = 0; i < c->nkeys; i++)
        FZ_CHECK(c->keys[i].name && c->keys[i].key && *c->keys[i].key &&
                 c->keys[i].priority >= PRIO_HIGH && c->keys[i].priority < PRIO_COUNT);
    check_caps(c->model_caps, c->nmodel_caps);
    FZ_CHECK(c->listen && c->listen_port >= 0 && c->listen_port <= 65535);
    FZ_CHECK(c->routing.num_ctx != NUM_CTX_PIN || c->routing.num_ctx_pin >= 1);
    FZ_CHECK(c->routing.nsession_headers == 0 || c->routing.session_headers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err1[1024], err2[1024];
    FILE *f;
    if (!*path) {
        int fd;
        snprintf(path, sizeof path, "/tmp/fuzz-config-XXXXXX");
        if ((fd = mkstemp(path)) < 0) {
            perror("fuzz_config: mkstemp");
            abort();
        }
        close(fd);
        atexit(remove_file);
    }
    if (!(f = fopen(path, "wb")) || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror("fuzz_config: writing the file");
        abort();
    }
    static const char *const skip[] = {"/dev", "/proc", "/sys", "\\x", "@include"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (memmem(data, size, skip[i], strlen(skip[i])))
            return 0;
    err1[0] = err2[0] = '\0';
    struct px_config *a = config_load(path, err1, sizeof err1);
    struct px_config *b = config_load(path, err2, sizeof err2);
    FZ_CHECK((a == NULL) == (b == NULL));
    if (a) {
        check_config(a);
        check_config(b);
    } else {
        size_t n = strlen(path);
        if (strncmp(err1, path, n) != 0 || err1[n] != ':' || !strchr(err1 + n + 1, ':')) {
            fprintf(stderr, "error: %s\n", err1);
            FZ_CHECK(!"a refusal says FILE:LINE: what");
        }
        FZ_CHECK(strcmp(err1, err2) == 0);
    }
    config_free(a);
    config_free(b);
    return 0;
}
