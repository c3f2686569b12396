/* Unit test of proxy/util/jbody.c: the start of a conversation (the same
 * for every turn of one conversation, different between conversations),
 * options.num_ctx read as Go's decoder reads it, and the rewrite: valid
 * JSON, the value Ollama will then read, every other byte as it was. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "jbody.h"
#include "jscan.h"

static unsigned long long hash(const char *body, enum jbody_shape shape, int *found)
{
    unsigned long long h = 0;
    *found = jbody_prefix_hash(body, strlen(body), shape, &h);
    return h;
}

static void test_prefix(void)
{
    int f1, f2, f3;
    const char *t1 = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                     "{\"role\":\"user\",\"content\":\"fix the bug\"}]}";
    const char *t2 = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                     "{\"role\":\"user\",\"content\":\"fix the bug\"},{\"role\":\"assistant\","
                     "\"content\":\"done\"},{\"role\":\"user\",\"content\":\"now the test\"}],"
                     "\"stream\":true}";
    const char *other = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be "
                        "brief\"},{\"role\":\"user\",\"content\":\"write docs\"}]}";
    /* Go's field names without regard to case; the last "messages" wins. */
    const char *folded = "{\"Messages\":[],\"MESSAGES\":[{\"Role\":\"system\",\"Content\":\"be "
                         "brief\"},{\"ROLE\":\"user\",\"content\":\"fix the bug\"}]}";
    unsigned long long h1 = hash(t1, JBODY_MESSAGES, &f1), h2 = hash(t2, JBODY_MESSAGES, &f2);
    CHECK(f1 && f2 && h1 == h2);
    CHECK(hash(other, JBODY_MESSAGES, &f3) != h1 && f3);
    CHECK(hash(folded, JBODY_MESSAGES, &f3) == h1 && f3);
    /* The system prompt matters too; no user message: no key. */
    CHECK(hash("{\"messages\":[{\"role\":\"system\",\"content\":\"be long\"},{\"role\":\"user\","
               "\"content\":\"fix the bug\"}]}", JBODY_MESSAGES, &f3) != h1);
    hash("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", JBODY_MESSAGES, &f3);
    CHECK(!f3);
    hash("{\"messages\":null}", JBODY_MESSAGES, &f3);
    CHECK(!f3);
    /* OpenAI content parts and Anthropic's top-level system. */
    h1 = hash("{\"system\":[{\"type\":\"text\",\"text\":\"S\"}],\"messages\":[{\"role\":\"user\","
              "\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}", JBODY_MESSAGES, &f1);
    h2 = hash("{\"system\":[{\"type\":\"text\",\"text\":\"S\"}],\"messages\":[{\"role\":\"user\","
              "\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]},{\"role\":\"assistant\","
              "\"content\":\"a\"}],\"max_tokens\":9}", JBODY_MESSAGES, &f2);
    CHECK(f1 && f2 && h1 == h2);
    CHECK(hash("{\"system\":\"T\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
               "\"text\":\"hi\"}]}]}", JBODY_MESSAGES, &f3) != h1);
    /* Anthropic's cache_control marks move from turn to turn (the last
     * blocks): not part of the key, nor are blanks; the text is. */
    h1 = hash("{\"system\":[{\"type\":\"text\",\"text\":\"S\",\"cache_control\":{\"type\":"
              "\"ephemeral\"}}],\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
              "\"text\":\"hi\",\"cache_control\":{\"type\":\"ephemeral\"}}]}]}", JBODY_MESSAGES, &f1);
    h2 = hash("{\"system\":[{\"type\":\"text\",\"text\":\"S\"}],\"messages\":[{\"role\":\"user\","
              "\"content\":[ {\"type\" : \"text\", \"text\":\"hi\"} ]},{\"role\":\"assistant\","
              "\"content\":\"a\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
              "\"more\",\"cache_control\":{\"type\":\"ephemeral\"}}]}]}", JBODY_MESSAGES, &f2);
    CHECK(f1 && f2 && h1 == h2);
    CHECK(hash("{\"system\":[{\"type\":\"text\",\"text\":\"S\"}],\"messages\":[{\"role\":\"user\","
               "\"content\":[{\"type\":\"text\",\"text\":\"hI\"}]}]}", JBODY_MESSAGES, &f3) != h1);
    /* generate: system and the first 2 KiB of the prompt. */
    {
        char a[3000], b[3000];
        memset(a, 0, sizeof a);
        strcpy(a, "{\"system\":\"s\",\"prompt\":\"");
        memset(a + strlen(a), 'x', 2100);
        strcpy(b, a);
        strcat(a, "tail one\"}");
        strcat(b, "tail two, longer\"}");
        CHECK(hash(a, JBODY_PROMPT, &f1) == hash(b, JBODY_PROMPT, &f2) && f1 && f2);
        CHECK(hash("{\"system\":\"s\",\"prompt\":\"short one\"}", JBODY_PROMPT, &f1) !=
              hash("{\"system\":\"s\",\"prompt\":\"short two\"}", JBODY_PROMPT, &f2));
        hash("{\"system\":\"s\",\"prompt\":\"\"}", JBODY_PROMPT, &f1);
        CHECK(!f1);
    }
    /* Responses: instructions, then the input up to the first user item. */
    h1 = hash("{\"instructions\":\"I\",\"input\":[{\"role\":\"user\",\"content\":\"q\"}]}",
              JBODY_RESPONSES, &f1);
    h2 = hash("{\"instructions\":\"I\",\"input\":[{\"role\":\"user\",\"content\":\"q\"},"
              "{\"type\":\"function_call_output\",\"output\":\"o\"}]}", JBODY_RESPONSES, &f2);
    CHECK(f1 && f2 && h1 == h2);
    CHECK(hash("{\"instructions\":\"I\",\"input\":\"q2\"}", JBODY_RESPONSES, &f3) != h1 && f3);
}

static void test_num_ctx_read(void)
{
    static const struct {
        const char *body;
        int want;
    } cases[] = {
        {"{\"options\":{\"num_ctx\":8192}}", 8192},
        {"{\"model\":\"m\"}", 0},
        {"{\"options\":null}", 0},
        {"{\"options\":{\"num_ctx\":1024},\"options\":{\"temperature\":1}}", 1024}, /* merged */
        {"{\"options\":{\"num_ctx\":1024},\"options\":null}", 0},                    /* emptied */
        {"{\"options\":{\"num\\u005fctx\":2048}}", 2048},
        {"{\"Options\":{\"num_ctx\":2048}}", 2048},      /* a struct field: any case */
        {"{\"options\":{\"NUM_CTX\":2048}}", 0},         /* a map key: exactly */
        {"{\"options\":{\"num_ctx\":\"2048\"}}", 0},
        {"{\"options\":{\"num_ctx\":4096.7}}", 4096},
        /* as long as a number may be (fuzz_jbody's first finding) */
        {"{\"options\":{\"num_ctx\":2048.5111111111111111111111111111111111111111111111111111111"
         "1111111111111111111111111}}", 2048},
        {"{\"options\":{\"num_ctx\":1,\"num_ctx\":3}}", 3},
        {"{\"options\":{\"nested\":{\"num_ctx\":5}}}", 0},
        {"{\"prompt\":\"\\\"options\\\":{\\\"num_ctx\\\":9}\"}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = jbody_num_ctx(cases[i].body, strlen(cases[i].body));
        CHECK_INT(got, cases[i].want);
        if (got != cases[i].want)
            fprintf(stderr, "  in %s\n", cases[i].body);
    }
}

/* Rewrite IN with VALUE: the result (or IN when unchanged) must be WANT,
 * valid, and read back as the value. */
static void rewrite(const char *in, int value, int rc_want, const char *want)
{
    char *out = NULL, err[128];
    size_t n = 0;
    struct jscan_result js;
    int rc = jbody_set_num_ctx(in, strlen(in), value, &out, &n);
    CHECK_INT(rc, rc_want);
    if (rc == 1) {
        CHECK(n == strlen(want) && memcmp(out, want, n) == 0);
        if (n != strlen(want) || memcmp(out, want, n) != 0)
            fprintf(stderr, "  %s\n  -> %.*s\n  want %s\n", in, (int)n, out, want);
        CHECK_INT(jscan_body(out, n, &js, err, sizeof err), 0);
        CHECK_INT(jbody_num_ctx(out, n), value);
    } else {
        CHECK(out == NULL);
    }
    free(out);
}

static void test_rewrite(void)
{
    /* pin */
    rewrite("{\"model\":\"m\"}", 4096, 1, "{\"model\":\"m\",\"options\":{\"num_ctx\":4096}}");
    rewrite("{ }", 4096, 1, "{\"options\":{\"num_ctx\":4096} }");
    rewrite("{\"model\":\"m\"  \n}", 4096, 1,
            "{\"model\":\"m\",\"options\":{\"num_ctx\":4096}  \n}");
    rewrite("{\"model\":\"m\", \"options\": {\"temperature\": 0.5}}", 4096, 1,
            "{\"model\":\"m\", \"options\": {\"num_ctx\":4096,\"temperature\": 0.5}}");
    rewrite("{\"options\":{ }}", 4096, 1, "{\"options\":{\"num_ctx\":4096 }}");
    rewrite("{\"options\":{\"num_ctx\": 2048, \"seed\":1}}", 4096, 1,
            "{\"options\":{\"num_ctx\": 4096, \"seed\":1}}");
    rewrite("{\"options\":{\"num_ctx\":4096}}", 4096, 0, NULL);
    rewrite("{\"options\":{\"num_ctx\":4096.0}}", 4096, 1, "{\"options\":{\"num_ctx\":4096}}");
    rewrite("{\"options\":null}", 4096, 1, "{\"options\":{\"num_ctx\":4096}}");
    rewrite("{\"options\":{\"num_ctx\":1},\"Options\":{\"seed\":2}}", 4096, 1,
            "{\"options\":{\"num_ctx\":1},\"Options\":{\"num_ctx\":4096,\"seed\":2}}");
    rewrite("{\"options\":{\"num_ctx\":1,\"num_ctx\":2}}", 4096, 1,
            "{\"options\":{\"num_ctx\":1,\"num_ctx\":4096}}");
    rewrite("{\"options\":\"x\"}", 4096, -1, NULL);
    rewrite("{\"prompt\":\"{\\\"options\\\":1}\",\"model\":\"\\u00e9\"}", 512, 1,
            "{\"prompt\":\"{\\\"options\\\":1}\",\"model\":\"\\u00e9\",\"options\":{\"num_ctx\":512}}");
    /* strip */
    rewrite("{\"options\":{\"num_ctx\":2048}}", 0, 1, "{\"options\":{}}");
    rewrite("{\"options\":{ \"seed\":1 , \"num_ctx\":2048 }}", 0, 1,
            "{\"options\":{ \"seed\":1 }}");
    rewrite("{\"options\":{\"num_ctx\":1,\"num_ctx\":2,\"seed\":3}}", 0, 1,
            "{\"options\":{\"seed\":3}}");
    rewrite("{\"options\":{ \"num_ctx\":1 ,\n \"seed\":3, \"num\\u005fctx\":2}, \"x\":1}", 0, 1,
            "{\"options\":{ \"seed\":3}, \"x\":1}");
    rewrite("{\"options\":{\"seed\":1}}", 0, 0, NULL);
    rewrite("{\"model\":\"m\"}", 0, 0, NULL);
    rewrite("{\"options\":{\"num_ctx\":1},\"x\":[1,2],\"OPTIONS\":{\"top_k\":3,\"num_ctx\":2}}", 0,
            1, "{\"options\":{},\"x\":[1,2],\"OPTIONS\":{\"top_k\":3}}");
    rewrite("{\"options\":{\"NUM_CTX\":2048}}", 0, 0, NULL); /* not Ollama's key */
}

int main(void)
{
    test_prefix();
    test_num_ctx_read();
    test_rewrite();
    CHECK_DONE();
}
