/* Unit test of proxy/jscan.c: the grammar is checked whole, and only the
 * top level's "model"/"name" and "stream" are picked. */
#include <string.h>

#include "check.h"
#include "jscan.h"

static int scan(const char *s, struct jscan_result *r)
{
    char err[200];
    return jscan_body(s, strlen(s), r, err, sizeof err);
}

static void bad(const char *s)
{
    struct jscan_result r;
    CHECK_INT(scan(s, &r), -1);
}

int main(void)
{
    struct jscan_result r;
    char err[200];
    CHECK_INT(scan("{\"model\":\"llama3\",\"prompt\":\"x\",\"stream\":false}", &r), 0);
    CHECK(r.model && r.model_len == 6 && !memcmp(r.model, "llama3", 6));
    CHECK_INT(r.stream, 0);
    CHECK_INT(r.is_object, 1);
    CHECK_INT(scan(" {\"stream\" : true , \"model\" : \"a:b\"} \n", &r), 0);
    CHECK_INT(r.stream, 1);
    CHECK_INT((int)r.model_len, 3);
    CHECK_INT(scan("{\"stream\":null}", &r), 0);
    CHECK_INT(r.stream, -1);
    CHECK(r.model == NULL);
    /* Nested "model" and "stream" keys are not the request's. */
    CHECK_INT(scan("{\"options\":{\"model\":\"x\",\"stream\":true},\"messages\":[{\"model\":1}]}",
                   &r), 0);
    CHECK(r.model == NULL);
    CHECK_INT(r.stream, -1);
    /* Legacy "name", and "model" wins over it in any order. */
    CHECK_INT(scan("{\"name\":\"old\"}", &r), 0);
    CHECK(r.model && r.model_len == 3);
    CHECK_INT(scan("{\"name\":\"old\",\"model\":\"new\"}", &r), 0);
    CHECK(!memcmp(r.model, "new", 3));
    CHECK_INT(scan("{\"model\":\"new\",\"name\":\"old\"}", &r), 0);
    CHECK(!memcmp(r.model, "new", 3));
    CHECK_INT(scan("{\"model\":5}", &r), 0);
    CHECK(r.model == NULL);
    CHECK_INT(scan("{\"model\":\"a\\u0041\\\"\"}", &r), 0);
    CHECK_INT(r.model_escaped, 1);
    CHECK_INT(scan("[1,2.5e-3,-0,true,null,\"s\",{}]", &r), 0);
    CHECK_INT(r.is_object, 0);
    CHECK_INT(scan("{\"a\":[[[[]]]],\"b\":{\"c\":{}},\"d\":\"\\u00e9\\n\"}", &r), 0);
    bad("");
    bad("{");
    bad("{\"model\":\"x\"");
    bad("{\"model\":\"x\",}");
    bad("{model:\"x\"}");
    bad("{\"a\":01}");
    bad("{\"a\":1.}");
    bad("{\"a\":-}");
    bad("{\"a\":tru}");
    bad("{\"a\":\"\\x\"}");
    bad("{\"a\":\"\\u12G4\"}");
    bad("{\"a\":\"tab\there\"}");
    bad("{\"a\":1} x");
    bad("{\"a\":[1,]}");
    bad("[");
    /* Depth is bounded, not the stack. */
    {
        static char deep[4000];
        memset(deep, '[', 2000);
        memset(deep + 2000, ']', 2000);
        CHECK_INT(jscan_body(deep, 4000, &r, err, sizeof err), -1);
        CHECK(strstr(err, "deeply") != NULL);
    }
    CHECK_INT(jscan_body("{\"a\":x}", 7, &r, err, sizeof err), -1);
    CHECK(strstr(err, "offset 5") != NULL);
    /* Found by the fuzzer: a backslash and a NUL is no escape; an escaped
     * key is the key it decodes to; the last "model" wins, as in jansson. */
    {
        struct jscan_result r;
        char err[128], out[32];
        static const char nul_escape[] = {'"', '\\', 0, '"'};
        CHECK_INT(jscan_body(nul_escape, sizeof nul_escape, &r, err, sizeof err), -1);
        CHECK_INT(jscan_body("{\"mod\\u0065l\":\"llama3\"}", strlen("{\"mod\\u0065l\":\"llama3\"}"), &r, err, sizeof err), 0);
        CHECK(r.model && r.model_len == 6 && !memcmp(r.model, "llama3", 6));
        CHECK_INT(jscan_body("{\"model\":\"x\",\"model\":1}", strlen("{\"model\":\"x\",\"model\":1}"), &r, err, sizeof err), 0);
        CHECK(r.model == NULL);
        CHECK_INT(jscan_body("{\"model\":1,\"model\":\"y\"}", strlen("{\"model\":1,\"model\":\"y\"}"), &r, err, sizeof err), 0);
        CHECK(r.model && r.model_len == 1 && r.model[0] == 'y');
        CHECK_INT(jscan_body("{\"model\":1,\"name\":\"n\"}", strlen("{\"model\":1,\"name\":\"n\"}"), &r, err, sizeof err), 0);
        CHECK(r.model && r.model[0] == 'n'); /* a "model" that is no string: "name" */
        CHECK_INT(jscan_unescape("a\\u00e9\\n\\ud83d\\ude00\\ud800x", 28, out, sizeof out), 12);
        CHECK_STR(out, "a\xc3\xa9\n\xf0\x9f\x98\x80\xef\xbf\xbdx");
        CHECK_INT(jscan_body("{\"keep_alive\":\"0s\",\"messages\":[]}", strlen("{\"keep_alive\":\"0s\",\"messages\":[]}"), &r, err,
                             sizeof err), 0);
        CHECK(r.keep_alive_zero && !r.has_input);
        CHECK_INT(jscan_body("{\"keep_alive\":0,\"prompt\":\"hi\"}", strlen("{\"keep_alive\":0,\"prompt\":\"hi\"}"), &r, err, sizeof err),
                  0);
        CHECK(r.keep_alive_zero && r.has_input);
    }
    CHECK_DONE();
}
