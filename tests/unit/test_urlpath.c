/* Unit test of proxy/urlpath.c: the path as Ollama (Go net/http and gin)
 * routes it, and a forwarded target that decodes to that same path. The
 * encoded spellings are the red team's (issue 18, item 1). */
#include <string.h>

#include "check.h"
#include "urlpath.h"

static char path[URLPATH_MAX + 1], fwd[8192];

static void same(const char *target, const char *want_path, const char *want_fwd)
{
    const char *why = NULL;
    int rc = urlpath_normalize(target, path, sizeof path, fwd, sizeof fwd, &why);
    if (rc != 0)
        fprintf(stderr, "%s: refused: %s\n", target, why);
    CHECK_INT(rc, 0);
    CHECK_STR(path, want_path);
    CHECK_STR(fwd, want_fwd);
}

static void refused(const char *target, int want)
{
    const char *why = NULL;
    CHECK_INT(urlpath_normalize(target, path, sizeof path, fwd, sizeof fwd, &why), want);
    CHECK(why != NULL);
}

int main(void)
{
    static char longer[URLPATH_MAX + 16];
    same("/api/tags", "/api/tags", "/api/tags");
    same("/api/tags?x=1&y=%2F", "/api/tags", "/api/tags?x=1&y=%2F"); /* the query as sent */
    same("/api/%70ull", "/api/pull", "/api/pull");
    same("/%61pi/pull", "/api/pull", "/api/pull");
    same("/api/%64elete", "/api/delete", "/api/delete");
    same("/api/%62lobs/sha256%3Aab", "/api/blobs/sha256:ab", "/api/blobs/sha256:ab");
    same("/api/pull/", "/api/pull", "/api/pull");
    same("/api//pull", "/api/pull", "/api/pull");
    same("//api///pull//", "/api/pull", "/api/pull");
    same("/", "/", "/");
    same("", "/", "/");
    same("?q", "/", "/?q");
    same("/v1/models/a%20b", "/v1/models/a b", "/v1/models/a%20b");
    same("/x/%25/%3F/%23", "/x/%/?/#", "/x/%25/%3F/%23"); /* re-encoded: decodes the same */
    same("/x/\xc3\xa9", "/x/\xc3\xa9", "/x/%C3%A9");
    same("/x/a.b/.c/..d", "/x/a.b/.c/..d", "/x/a.b/.c/..d");
    /* What cannot be made unambiguous. */
    refused("/api%2Fpull", URLPATH_EBAD);
    refused("/api%2fpull", URLPATH_EBAD);
    refused("/api/x/../pull", URLPATH_EBAD);
    refused("/api/./pull", URLPATH_EBAD);
    refused("/api/%2e%2e/pull", URLPATH_EBAD);
    refused("/api/%2E/pull", URLPATH_EBAD);
    refused("/api/pull%00", URLPATH_EBAD);
    refused("/api/pu%0all", URLPATH_EBAD);
    refused("/api/pu%7fll", URLPATH_EBAD);
    refused("/api/p\x01ull", URLPATH_EBAD);
    refused("/api/%7", URLPATH_EBAD);
    refused("/api/%", URLPATH_EBAD);
    refused("/api/%zz", URLPATH_EBAD);
    refused("/api/%2/x", URLPATH_EBAD); /* an escape cut by a raw '/' */
    longer[0] = '/';
    memset(longer + 1, 'a', sizeof longer - 2);
    refused(longer, URLPATH_ELONG);
    CHECK_DONE();
}
