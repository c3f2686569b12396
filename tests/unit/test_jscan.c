/* Unit test of proxy/jscan.c: the grammar is checked whole, and the top
 * level's routed members are read as Go's encoding/json reads them. */
#include <stdio.h>
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

/* Member names match as Go's encoding/json matches them: without regard to
 * case, Unicode simple folding included; the last duplicate wins; null
 * leaves a string as it was and empties a slice or pointer. Each case
 * is one the red team sent (issue 18, item 2). */
static void go_semantics(void)
{
    struct jscan_result r;
    CHECK_INT(scan("{\"model\":\"llama3\",\"keep_alive\":0,\"Prompt\":\"hi\"}", &r), 0);
    CHECK(r.prompt == 1 && r.keep_alive == JSCAN_KA_ZERO);
    CHECK_INT(scan("{\"PROMPT\":\"hi\"}", &r), 0);
    CHECK_INT(r.prompt, 1);
    CHECK_INT(scan("{\"\\u0050rompt\":\"hi\"}", &r), 0);
    CHECK_INT(r.prompt, 1);
    CHECK_INT(scan("{\"Messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r), 0);
    CHECK_INT(r.messages, 1);
    CHECK_INT(scan("{\"\\u212Aeep_alive\":0}", &r), 0); /* Kelvin sign: k */
    CHECK_INT(r.keep_alive, JSCAN_KA_ZERO);
    CHECK_INT(scan("{\"\xe2\x84\xaa" "EEP_ALIVE\":\"0s\"}", &r), 0);
    CHECK_INT(r.keep_alive, JSCAN_KA_ZERO);
    CHECK_INT(scan("{\"\\u017ftream\":false}", &r), 0); /* long s: s */
    CHECK_INT(r.stream, 0);
    CHECK_INT(scan("{\"mode\\u006C\":\"a\",\"MODEL\":\"b\"}", &r), 0);
    CHECK(r.model && r.model_len == 1 && r.model[0] == 'b');
    CHECK_INT(scan("{\"model\":\"a\",\"Model\":\"b\"}", &r), 0);
    CHECK(r.model && r.model[0] == 'b');
    CHECK_INT(scan("{\"model\":\"a\",\"Model\":null}", &r), 0); /* null: as it was */
    CHECK(r.model && r.model[0] == 'a' && !r.wrong_type);
    CHECK_INT(scan("{\"prompt\":\"\",\"Prompt\":\"hi\",\"keep_alive\":0}", &r), 0);
    CHECK_INT(r.prompt, 1);
    CHECK_INT(scan("{\"prompt\":\"hi\",\"Prompt\":null}", &r), 0);
    CHECK_INT(r.prompt, 1);
    CHECK_INT(scan("{\"prompt\":\"hi\",\"prompt\":\"\"}", &r), 0);
    CHECK_INT(r.prompt, 0);
    CHECK_INT(scan("{\"messages\":[1],\"MESSAGES\":null}", &r), 0); /* a slice: nil */
    CHECK_INT(r.messages, 0);
    CHECK_INT(scan("{\"messages\":[ ],\"Messages\":[ {} ]}", &r), 0);
    CHECK_INT(r.messages, 1);
    CHECK_INT(scan("{\"keep_alive\":0,\"keep_alive\":null}", &r), 0); /* a pointer: nil */
    CHECK_INT(r.keep_alive, JSCAN_KA_ABSENT);
    CHECK_INT(scan("{\"keep_alive\":true}", &r), 0);
    CHECK(r.wrong_type & 1u << JSCAN_KEEP_ALIVE);
    CHECK_INT(scan("{\"stream\":\"yes\"}", &r), 0);
    CHECK(r.wrong_type & 1u << JSCAN_STREAM);
    CHECK_INT(scan("{\"options\":[]}", &r), 0);
    CHECK(r.wrong_type & 1u << JSCAN_OPTIONS);
    /* Near misses stay misses: other letters, other non-ASCII, nesting. */
    CHECK_INT(scan("{\"prompt \":\"x\",\"pr\\u00f6mpt\":\"x\",\"o\":{\"Prompt\":\"x\"}}", &r), 0);
    CHECK_INT(r.prompt, -1);
    CHECK_INT(jscan_member_of("STREAM", 6, 0), JSCAN_STREAM);
    CHECK_INT(jscan_member_of("\\u0073tream", 11, 1), JSCAN_STREAM);
    CHECK_INT(jscan_member_of("streams", 7, 0), -1);
    CHECK_INT(jscan_member_of("\xc5\xbf\xc5\xbf", 4, 0), -1);
}

/* Each of LIST as keep_alive reads as WANT, its type refused or not. */
static void expect_keep_alive(const char *const *list, size_t n, enum jscan_keep_alive want,
                              int wrong)
{
    struct jscan_result r;
    char body[128];
    for (size_t i = 0; i < n; i++) {
        int got_wrong;
        snprintf(body, sizeof body, "{\"keep_alive\":%s}", list[i]);
        CHECK_INT(scan(body, &r), 0);
        got_wrong = !!(r.wrong_type & 1u << JSCAN_KEEP_ALIVE);
        if (r.keep_alive != want || got_wrong != wrong)
            fprintf(stderr, "keep_alive %s: %d (wrong type %d)\n", list[i], r.keep_alive,
                    got_wrong);
        CHECK(r.keep_alive == want && got_wrong == wrong);
    }
}

/* keep_alive as Ollama's api.Duration: seconds, or time.ParseDuration. */
static void durations(void)
{
    static const char *const zero[] = {
        "0", "0.0", "-0", "0e5", "1e-10", "1e-400", "\"0\"", "\"0s\"", "\"-0s\"", "\"+0s\"",
        "\"0ms\"", "\"0us\"", "\"0\\u00b5s\"", "\"0h0m0s\"", "\"0.9ns\"", "\"0.0000000001s\"",
        "\"000000000000000000000000000000000000000000s\"", "\"\\u0030s\"", "\".0s\"",
        "\"0.s\""};
    static const char *const nonzero[] = {"1", "0.5", "-1", "-1e-10", "\"1ns\"", "\"5m\"",
                                          "\"-5m\"", "\"1.5h\"", "\"0.000000001s\""};
    static const char *const refused[] = {"\"\"", "\"s\"", "\"0x\"", "\"1\"", "\".s\"",
                                          "\"0s5\"", "1e400", "[0]", "{}", "false",
                                          "\"99999999999999999999h\""};
    expect_keep_alive(zero, sizeof zero / sizeof zero[0], JSCAN_KA_ZERO, 0);
    expect_keep_alive(nonzero, sizeof nonzero / sizeof nonzero[0], JSCAN_KA_SET, 0);
    expect_keep_alive(refused, sizeof refused / sizeof refused[0], JSCAN_KA_SET, 1);
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
    /* Legacy "name" is reported apart: the caller knows whether the path
     * reads it. */
    CHECK_INT(scan("{\"name\":\"old\"}", &r), 0);
    CHECK(r.model == NULL && r.name && r.name_len == 3);
    CHECK_INT(scan("{\"name\":\"old\",\"model\":\"new\"}", &r), 0);
    CHECK(!memcmp(r.model, "new", 3) && !memcmp(r.name, "old", 3));
    CHECK_INT(scan("{\"model\":5}", &r), 0);
    CHECK(r.model == NULL && (r.wrong_type & 1u << JSCAN_MODEL));
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
    /* An empty body as an empty evbuffer's pullup gives it: NULL, 0 (UBSan
     * saw pointer arithmetic on NULL: fuzz_proxy, an empty POST /api/push). */
    CHECK_INT(jscan_body(NULL, 0, &r, err, sizeof err), -1);
    CHECK(!r.is_object);
    /* Found by the fuzzer: a backslash and a NUL is no escape; an escaped
     * key is the key it decodes to; the last "model" wins, as in jansson. */
    {
        char out[32];
        static const char nul_escape[] = {'"', '\\', 0, '"'};
        CHECK_INT(jscan_body(nul_escape, sizeof nul_escape, &r, err, sizeof err), -1);
        CHECK_INT(jscan_body("{\"mod\\u0065l\":\"llama3\"}", strlen("{\"mod\\u0065l\":\"llama3\"}"), &r, err, sizeof err), 0);
        CHECK(r.model && r.model_len == 6 && !memcmp(r.model, "llama3", 6));
        /* Go: a value of the wrong type leaves the field as it was (and
         * the request is refused); the last good one wins. */
        CHECK_INT(scan("{\"model\":\"x\",\"model\":1}", &r), 0);
        CHECK(r.model && r.model[0] == 'x' && (r.wrong_type & 1u << JSCAN_MODEL));
        CHECK_INT(scan("{\"model\":1,\"model\":\"y\"}", &r), 0);
        CHECK(r.model && r.model_len == 1 && r.model[0] == 'y');
        CHECK_INT(scan("{\"model\":1,\"name\":\"n\"}", &r), 0);
        CHECK(!r.model && r.name && r.name[0] == 'n');
        CHECK_INT(jscan_unescape("a\\u00e9\\n\\ud83d\\ude00\\ud800x", 28, out, sizeof out), 12);
        CHECK_STR(out, "a\xc3\xa9\n\xf0\x9f\x98\x80\xef\xbf\xbdx");
        CHECK_INT(scan("{\"keep_alive\":\"0s\",\"messages\":[]}", &r), 0);
        CHECK(r.keep_alive == JSCAN_KA_ZERO && r.messages == 0 && r.prompt == -1);
        CHECK_INT(scan("{\"keep_alive\":0,\"prompt\":\"hi\"}", &r), 0);
        CHECK(r.keep_alive == JSCAN_KA_ZERO && r.prompt == 1 && r.messages == -1);
    }
    go_semantics();
    durations();
    CHECK_DONE();
}
