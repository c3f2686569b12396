/* Unit test of proxy/config.c: defaults, every error names FILE:LINE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char path[64];

static struct px_config *load(const char *text, char *err, size_t n)
{
    FILE *f;
    snprintf(path, sizeof path, "/tmp/test_config_%d.conf", (int)getpid());
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return config_load(path, err, n);
}

static void expect_error(const char *text, int line, const char *needle)
{
    char err[512], want[96];
    struct px_config *c = load(text, err, sizeof err);
    CHECK(c == NULL);
    config_free(c);
    snprintf(want, sizeof want, "%s:%d: ", path, line);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(strstr(err, needle) != NULL);
    if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, needle))
        fprintf(stderr, "  got: %s\n", err);
}

#define BE "backends = ( { name = \"a\"; url = \"http://127.0.0.1:1\"; max_concurrent = 2; } );\n"

/* A config of a listen address, BE, then REST: refused at LINE with NEEDLE. */
static void expect_error_be(const char *rest, int line, const char *needle)
{
    char text[1024];
    snprintf(text, sizeof text, "listen = \"x:1\";\n" BE "%s", rest);
    expect_error(text, line, needle);
}

/* TEXT loads with N warnings, among them NEEDLE1 and NEEDLE2 (NULL: not checked). */
static void expect_warnings(const char *text, int n, const char *needle1, const char *needle2)
{
    char err[512];
    struct px_config *c = load(text, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        char w[2048];
        CHECK_INT(config_warnings(c, w, sizeof w), n);
        if (needle1)
            CHECK(strstr(w, needle1) != NULL);
        if (needle2)
            CHECK(strstr(w, needle2) != NULL);
    }
    config_free(c);
}

/* state_file: none by default, a path as written, "" or a number refused. */
static void test_state_file(void)
{
    char err[512];
    struct px_config *c = load("listen = \"x:1\";\n" BE, err, sizeof err);
    CHECK(c != NULL && c->state_file == NULL);
    config_free(c);
    c = load("listen = \"x:1\";\n" BE "state_file = \"/var/lib/ollama-proxy/state.json\";\n",
             err, sizeof err);
    CHECK(c != NULL);
    if (c)
        CHECK_STR(c->state_file, "/var/lib/ollama-proxy/state.json");
    config_free(c);
    expect_error_be("state_file = \"\";\n", 3, "non-empty string");
    expect_error_be("state_file = 1;\n", 3, "non-empty string");
}

/* routing and model_caps (CONTRACT.md, "Conversations stay warm"). */
static void test_routing(void)
{
    char err[512];
    struct px_config *c = load("listen = \"x:1\";\n" BE, err, sizeof err);
    CHECK(c != NULL);
    if (c) { /* the defaults */
        CHECK_INT(c->routing.affinity, AFFINITY_SESSION);
        CHECK_INT(c->routing.nsession_headers, 6);
        CHECK_STR(c->routing.session_headers[1], "x-claude-code-session-id");
        CHECK_STR(c->routing.session_headers[3], "session_id"); /* Codex's */
        CHECK(c->routing.balance_factor == 1.5 && c->routing.affinity_wait_ms == 1000);
        CHECK_INT(c->routing.num_ctx, NUM_CTX_PASS);
        CHECK_INT(c->nmodel_caps, 0);
    }
    config_free(c);
    c = load("listen = \"x:1\";\n"
             "backends = ( { name = \"a\"; url = \"http://127.0.0.1:1\"; max_concurrent = 8;\n"
             "  model_caps = ( { model = \"llama3\"; max_concurrent = 3; } ); } );\n"
             "routing = { affinity = \"prefix\"; session_headers = [ \"X-Chat\" ];\n"
             "  balance_factor = 0; affinity_wait_ms = 250; num_ctx = 8192; };\n"
             "model_caps = ( { model = \"nomic-embed-text:latest\"; max_concurrent = 2; },\n"
             "               { model = \"llama3\"; max_concurrent = 5; } );\n",
             err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->routing.affinity, AFFINITY_PREFIX);
        CHECK_INT(c->routing.nsession_headers, 1);
        CHECK(c->routing.balance_factor == 0 && c->routing.affinity_wait_ms == 250);
        CHECK_INT(c->routing.num_ctx, NUM_CTX_PIN);
        CHECK_INT(c->routing.num_ctx_pin, 8192);
        /* The backend's row wins over the top level; names as name_key(). */
        CHECK_INT(config_model_cap(c, &c->backends[0], "registry.ollama.ai/library/llama3:latest"),
                  3);
        CHECK_INT(config_model_cap(c, NULL, "registry.ollama.ai/library/llama3:latest"), 5);
        CHECK_INT(config_model_cap(c, &c->backends[0],
                                   "registry.ollama.ai/library/nomic-embed-text:latest"), 2);
        CHECK_INT(config_model_cap(c, &c->backends[0], "registry.ollama.ai/library/other:latest"),
                  0);
        CHECK(config_backend_row(c, "a", NULL) == &c->backends[0]);
    }
    config_free(c);
    c = load("listen = \"x:1\";\n" BE "routing = { num_ctx = \"strip\"; affinity = \"off\"; };\n",
             err, sizeof err);
    CHECK(c && c->routing.num_ctx == NUM_CTX_STRIP && c->routing.affinity == AFFINITY_OFF);
    config_free(c);
    expect_error_be("routing = { afinity = \"session\"; };\n", 3,
                    "unknown key \"afinity\" in routing");
    expect_error_be("routing = { affinity = \"sticky\"; };\n", 3, "routing.affinity must be");
    expect_error_be("routing = {\n balance_factor = 0.5; };\n", 4, "0 (no bound) or at least 1");
    expect_error_be("routing = { num_ctx = \"auto\"; };\n", 3, "routing.num_ctx must be");
    expect_error_be("routing = { num_ctx = 0; };\n", 3, "routing.num_ctx must be");
    expect_error_be("routing = { session_headers = [ \"a b\" ]; };\n", 3, "is not a header name");
    expect_error_be("model_caps = (\n { model = \"m\"; max = 1; } );\n", 4,
                    "unknown key \"max\" in a model_caps row");
    expect_error_be("model_caps = ( { model = \"m\"; max_concurrent = 1; },"
                    "\n { model = \"m:latest\"; max_concurrent = 2; } );\n", 4, "has two rows");
    expect_error_be("model_caps = ( { model = \"m\"; max_concurrent = 0; } );\n", 3,
                    "out of range");
}

int main(void)
{
    char err[512];
    struct px_config *c = load("listen = \"127.0.0.1:11434\";\n" BE, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->listen_port, 11434);
        CHECK_INT(c->nbackends, 1);
        CHECK_INT(c->backends[0].port, 1);
        CHECK_STR(c->backends[0].host, "127.0.0.1");
        CHECK_INT(c->queue_max_length, 1024);
        CHECK(c->queue_timeout_s == 600 && c->connect_s == 3 && c->first_byte_s == 600);
        CHECK(c->idle_s == 300 && c->shutdown_timeout_s == 30);
        CHECK_INT(c->max_body_mb, 64);
        CHECK_INT(c->ncors_origins, 0); /* no browser origin allowed by default */
    }
    config_free(c);
    c = load("listen = \"127.0.0.1:1\";\n" BE
             "cors_origins = ( \"https://chat.example.com\", \"http://localhost:*\" );\n",
             err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->ncors_origins, 2);
        CHECK_STR(c->cors_origins[1], "http://localhost:*");
    }
    config_free(c);
    expect_error("listen = \"127.0.0.1:1\";\n" BE "cors_origins = \"*\";\n", 3,
                 "\"cors_origins\" must be a list of origins");
    expect_error("listen = \"127.0.0.1:1\";\n" BE "cors_origins = ( \"\" );\n", 3,
                 "\"cors_origins\" must be a list of origins");
    c = load("listen = \"[::1]:8080\";\n" BE "queue = { timeout_s = 0.5; max_length = 3; };\n"
             "auth = { keys = ( { name = \"k\"; key = \"s\"; priority = \"low\"; } ); };\n",
             err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->listen_host, "::1");
        CHECK(c->queue_timeout_s == 0.5);
        CHECK_INT(c->nkeys, 1);
        CHECK_INT(c->keys[0].priority, PRIO_LOW);
        CHECK_INT(c->keys[0].weight, 1);
        CHECK_INT(c->keys[0].max_queued, 0);
        CHECK(c->client_header == NULL && !c->metrics_key_required);
        CHECK(c->request_s == 10);
    }
    config_free(c);
    c = load("listen = \"x:1\";\n" BE "timeouts = { request_s = 2.5; };\n"
             "auth = { client_header = \"X-Client\"; metrics_key_required = true;\n"
             "  keys = ( { name = \"k\"; key = \"s\"; weight = 3; max_queued = 7;\n"
             "             max_concurrent = 6; admin = true; } ); };\n",
             err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK(c->request_s == 2.5);
        CHECK_STR(c->client_header, "X-Client");
        CHECK_INT(c->metrics_key_required, 1);
        CHECK_INT(c->keys[0].weight, 3);
        CHECK_INT(c->keys[0].max_queued, 7);
        CHECK_INT(c->keys[0].max_concurrent, 6);
        CHECK_INT(c->keys[0].admin, 1);
        CHECK_INT(c->keys[0].priority, PRIO_NORMAL);
    }
    config_free(c);
    expect_error_be("auth = { keys = ( { name = \"k\"; key = \"s\"; weight = 0; } ); };\n", 3,
                    "weight");
    expect_error("listen = \"x:1\";\nbackends = ( { name = \"a b\"; url = \"http://h:1\"; "
                 "max_concurrent = 1; } );\n", 2, "backend name");
    expect_error_be("auth = { keys = ( { name = \"k\\n\"; key = \"s\"; } ); };\n", 3,
                    "key name");
    /* refused with a priority given: nothing of it kept (LeakSanitizer, under
     * ASan; fuzz_config's finding) */
    expect_error_be("auth = { keys = ( { name = \"k k\"; key = \"s\"; priority = \"low\"; } ); "
                    "};\n", 3, "key name");
    expect_error_be("auth = { keys = ( { name = \"k\"; key = \"s\"; priority = \"low\"; "
                    "admin = 1; } ); };\n", 3, "admin");
    expect_error_be("logging = { format = \"xml\"; };\n", 3, "format");
    expect_error_be("logging = { skip_paths = \"/\"; };\n", 3,
                    "skip_paths must be a list of paths");
    expect_error_be("logging = { skip_paths = [ \"/\", \"api\" ]; };\n", 3,
                    "skip_paths must be a list of paths");
    expect_error_be("logging = { skip_paths = ( \"/\", 1 ); };\n", 3,
                    "skip_paths must be a list of paths");
    /* logging.skip_paths: whole paths, the query aside; none by default. */
    c = load("listen = \"127.0.0.1:1\";\n" BE, err, sizeof err);
    CHECK(c != NULL);
    if (c)
        CHECK_INT(config_skip_path(c, "/"), 0);
    config_free(c);
    c = load("listen = \"127.0.0.1:1\";\n" BE
             "logging = { skip_paths = [ \"/\", \"/api/version\" ]; };\n", err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->nskip_paths, 2);
        CHECK_INT(config_skip_path(c, "/"), 1);
        CHECK_INT(config_skip_path(c, "/?x=1"), 1);
        CHECK_INT(config_skip_path(c, "/api/version"), 1);
        CHECK_INT(config_skip_path(c, "/api/version?probe=1"), 1);
        CHECK_INT(config_skip_path(c, "/api/versions"), 0);
        CHECK_INT(config_skip_path(c, "/api/versio"), 0);
        CHECK_INT(config_skip_path(c, "/api/tags"), 0);
    }
    config_free(c);
    expect_error_be("auth = { keys = ( { name = \"k\"; key = \"s\"; },\n"
                    "{ name = \"k\"; key = \"t\"; } ); };\n", 4, "duplicate key name");
    expect_error_be("auth = { keys = ( { name = \"k\"; key = \"s\"; },\n"
                    "{ name = \"j\"; key = \"s\"; } ); };\n", 4, "same secret");
    expect_error_be("auth = { keys = ( { name = \"k\"; key = \"s\"; "
                    "priority = \"urgent\"; } ); };\n", 3, "priority");
    expect_error(BE, 0, "missing \"listen\"");
    expect_error("listen = \"x:1\";\n", 0, "missing \"backends\"");
    expect_error_be("queue = { max_lenght = 3; };\n", 3, "max_lenght");
    expect_error_be("colour = 3;\n", 3, "unknown key \"colour\"");
    expect_error_be("timeouts = { idle_s = -1; };\n", 3, "out of range");
    expect_error("listen = \"x:1\";\nbackends = ( { name = \"a\"; url = \"http://h:1/api\"; "
                 "max_concurrent = 1; } );\n", 2, "path");
    expect_error("listen = \"x:1\";\nbackends = ( { name = \"a\"; url = \"http://h:1\"; } );\n",
                 2, "max_concurrent");
    expect_error("listen = \"x:1\";\nbackends = ( { name = \"a\"; url = \"http://h:1\"; "
                 "max_concurrent = 1; },\n { name = \"a\"; url = \"http://h:2\"; "
                 "max_concurrent = 1; } );\n", 3, "duplicate");
    expect_error("listen = \"nocolon\";\n" BE, 1, "listen");
    expect_error_be("queue = { max_length = ; };\n", 3, "syntax error");
    expect_error("listen = \"x:1\";\nbackends = ();\n", 2, "empty");
    expect_error_be("queue = { max_length = 1.5; };\n", 3, "integer");
    /* Every error, in file order, not only the first. */
    c = load("listen = \"x:1\";\ncolour = 3;\nbackends = (\n"
             " { name = \"a\"; url = \"http://no such host:1\"; max_concurrent = 1; },\n"
             " { name = \"b\"; url = \"http://h:1\"; max_concurrent = 0; } );\n"
             "queue = { max_length = -1; };\ntimeouts = { conect_s = 3; };\n", err, sizeof err);
    CHECK(c == NULL);
    {
        char want[600];
        snprintf(want, sizeof want, "%s:2: unknown key \"colour\"\n%s:4: url \"http://no such "
                 "host:1\": \"no such host\" is not a host name or address\n%s:5: "
                 "\"max_concurrent\" = 0 is out of range [1, 100000]\n%s:6: queue.max_length = "
                 "-1 is out of range [0, 1e+07]\n%s:7: unknown key \"conect_s\" in timeouts",
                 path, path, path, path, path);
        CHECK_STR(err, want);
    }
    /* Warnings: one server twice, a host that does not resolve. */
    expect_warnings("listen = \"x:1\";\nbackends = (\n"
                    " { name = \"a\"; url = \"http://127.0.0.1:1\"; max_concurrent = 1; },\n"
                    " { name = \"b\"; url = \"http://127.0.0.1:1/\"; max_concurrent = 1; },\n"
                    " { name = \"c\"; url = \"http://nosuchhost.invalid:1\"; "
                    "max_concurrent = 1; } );\n",
                    2, ":4: warning: backends \"a\" and \"b\" are one server",
                    ":5: warning: backend \"c\": host \"nosuchhost.invalid\" does not resolve");
    /* One server under two names: "localhost" resolves to 127.0.0.1 (and
     * ::1); no keys on a wildcard listen; not on loopback, not with keys. */
    expect_warnings("listen = \"0.0.0.0:1\";\nbackends = (\n"
                    " { name = \"a\"; url = \"http://localhost:7\"; max_concurrent = 1; },\n"
                    " { name = \"b\"; url = \"http://127.0.0.1:7\"; max_concurrent = 1; },\n"
                    " { name = \"c\"; url = \"http://127.0.0.1:8\"; max_concurrent = 1; } );\n",
                    2, ":4: warning: backends \"a\" and \"b\" are one server (\"localhost\" "
                    "and \"127.0.0.1\" are both 127.0.0.1, port 7)",
                    ": warning: listen \"0.0.0.0:1\" is reachable from other machines "
                    "and auth.keys is empty");
    expect_warnings("listen = \"127.0.0.1:1\";\nbackends = (\n"
                    " { name = \"a\"; url = \"http://127.0.0.1:7\"; max_concurrent = 1; } );\n",
                    0, NULL, NULL);
    expect_warnings("listen = \"[::]:1\";\nbackends = (\n"
                    " { name = \"a\"; url = \"http://127.0.0.1:7\"; max_concurrent = 1; } );\n"
                    "auth = { keys = ( { name = \"k\"; key = \"s\"; } ); };\n",
                    0, NULL, NULL);
    unlink(path);
    CHECK_INT(config_load("/nonexistent/x.conf", err, sizeof err) == NULL, 1);
    CHECK(strstr(err, "/nonexistent/x.conf:0:") == err);
    CHECK(strstr(err, "No such file or directory") != NULL); /* the reason, strerror */
    test_routing();
    test_state_file();
    CHECK_DONE();
}
