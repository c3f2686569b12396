/* Unit test of proxy/util/tokscan.c: the token counts found whatever the
 * chunk boundaries, in each wire format's own keys, not fooled by
 * look-alike keys or keys inside strings.
 *
 * test_tokscan DIR: DIR holds answers as ollama-sim gives them (captured
 * with curl; the sim writes Ollama's framing, see tests/sim/README.md), one
 * per format and way (streamed or not); each is cut at every byte, and fed
 * byte by byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokscan.h"

struct want {
    long long gen, prompt;
    int estimated;
};

static void count(enum wire_format f, const char *text, size_t n, const size_t *cuts, int ncuts,
                  struct tokscan_counts *out)
{
    struct tokscan t;
    size_t at = 0;
    tokscan_init(&t, f);
    for (int i = 0; i < ncuts; i++) {
        tokscan_feed(&t, text + at, cuts[i] - at);
        at = cuts[i];
    }
    tokscan_feed(&t, text + at, n - at);
    tokscan_counts(&t, out);
}

/* Counts equal W, or report where: the first failure of a text only. */
static int same(const struct tokscan_counts *c, const struct want *w, const char *what,
                size_t cut)
{
    if (c->generated == w->gen && c->prompt == w->prompt && c->estimated == w->estimated)
        return 1;
    fprintf(stderr, "%s cut at %zu: generated %lld prompt %lld estimated %d, expected %lld %lld %d\n",
            what, cut, c->generated, c->prompt, c->estimated, w->gen, w->prompt, w->estimated);
    return 0;
}

/* TEXT in format F fed in two pieces cut at every position, and byte by
 * byte: always W. */
static void every_split(enum wire_format f, const char *text, struct want w, const char *what)
{
    size_t n = strlen(text);
    struct tokscan_counts c;
    int good = 1;
    for (size_t cut = 0; cut <= n && good; cut++) {
        count(f, text, n, &cut, 1, &c);
        good = same(&c, &w, what, cut);
    }
    CHECK(good);
    struct tokscan t;
    tokscan_init(&t, f);
    for (size_t i = 0; i < n; i++)
        tokscan_feed(&t, text + i, 1);
    tokscan_counts(&t, &c);
    CHECK(same(&c, &w, what, (size_t)-1));
}

/* TEXT fed in three pieces, cut at every pair of positions (short texts). */
static void every_three(enum wire_format f, const char *text, struct want w)
{
    size_t n = strlen(text), cuts[2];
    struct tokscan_counts c;
    int good = 1;
    for (cuts[0] = 0; cuts[0] <= n && good; cuts[0]++)
        for (cuts[1] = cuts[0]; cuts[1] <= n && good; cuts[1]++) {
            count(f, text, n, cuts, 2, &c);
            good = same(&c, &w, text, cuts[0] * 10000 + cuts[1]);
        }
    CHECK(good);
}

static char *slurp(const char *dir, const char *name)
{
    char path[1024];
    FILE *fp;
    char *buf;
    long n;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!(fp = fopen(path, "rb"))) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

/* The captured answers: each format, streamed and not. */
static void real_streams(const char *dir)
{
    static const struct {
        const char *file;
        enum wire_format f;
        struct want w;
    } cases[] = {
        {"ndjson_chat.txt", WIRE_NDJSON, {5, 20, 0}},
        {"ndjson_generate.json", WIRE_NDJSON, {5, 11, 0}},
        {"openai_chat_usage.txt", WIRE_OPENAI, {5, 20, 0}}, /* include_usage */
        {"openai_chat.txt", WIRE_OPENAI, {5, -1, 1}},       /* the SDKs' default: no usage */
        {"openai_chat.json", WIRE_OPENAI, {5, 20, 0}},
        {"openai_completions.txt", WIRE_OPENAI, {5, -1, 1}},
        {"responses_stream.txt", WIRE_RESPONSES, {5, 20, 0}},
        {"responses.json", WIRE_RESPONSES, {5, 20, 0}},
        {"anthropic_stream.txt", WIRE_ANTHROPIC, {5, 20, 0}},
        {"anthropic.json", WIRE_ANTHROPIC, {5, 20, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = slurp(dir, cases[i].file);
        every_split(cases[i].f, text, cases[i].w, cases[i].file);
        free(text);
    }
}

/* A Responses stream tells its last sequence number (an error event
 * added to it takes the next). */
static void sequence(const char *dir)
{
    char *text = slurp(dir, "responses_stream.txt");
    struct tokscan t;
    tokscan_init(&t, WIRE_RESPONSES);
    tokscan_feed(&t, text, strlen(text));
    CHECK_INT(tokscan_seq(&t), 12);
    free(text);
}

int main(int argc, char **argv)
{
    const struct want none = {-1, -1, 0};
    if (argc != 2) {
        fprintf(stderr, "usage: test_tokscan STREAMS_DIR\n");
        return 2;
    }
    real_streams(argv[1]);
    sequence(argv[1]);
    every_split(WIRE_NDJSON, "{\"response\":\"the \\\"eval_count\\\": 9 of it\",\"done\":false}\n",
                none, "escaped key");
    every_split(WIRE_NDJSON, "{\"eval_count\": 7}", (struct want){7, -1, 0}, "space, end");
    every_split(WIRE_NDJSON, "{\"prompt_eval_count\":5}", (struct want){-1, 5, 0}, "prompt");
    every_split(WIRE_NDJSON, "{\"xeval_count\":5}", none, "look-alike");
    every_split(WIRE_OPENAI, "{\"xcompletion_tokens\":5,\"n\":1}", none, "look-alike");
    every_split(WIRE_NDJSON, "\"eval_count\":8", (struct want){8, -1, 0}, "at the start");
    every_split(WIRE_NDJSON, ":\":\"eval_count\"::3", none, "colons");
    /* A count of 300 digits (a backend's bug, or worse): its first 18
     * digits, never an overflow (fuzz_tokscan's finding: the digit count
     * wrapped at 256 and the value overflowed). */
    {
        char big[400];
        int n = snprintf(big, sizeof big, "{\"eval_count\":");
        memset(big + n, '7', 300);
        strcpy(big + n + 300, "}");
        every_split(WIRE_NDJSON, big, (struct want){777777777777777777LL, -1, 0}, "300 digits");
    }
    /* Each format reads its own keys only. */
    every_split(WIRE_NDJSON, "{\"completion_tokens\":3,\"output_tokens\":4}", none, "ndjson");
    every_split(WIRE_ANTHROPIC, "{\"eval_count\":3,\"completion_tokens\":4}", none, "anthropic");
    every_split(WIRE_RESPONSES, "{\"output_tokens_details\":{\"reasoning_tokens\":0}}", none,
                "details");
    /* Estimates: empty, null and escaped content count nothing; a usage
     * seen anywhere wins over them. */
    every_split(WIRE_OPENAI, "data: {\"delta\":{\"content\":\"\"}}\n\ndata: {\"delta\":"
                "{\"content\":null}}\n\ndata: {\"delta\":{\"content\": \"a\"}}\n\n",
                (struct want){1, -1, 1}, "estimates");
    every_split(WIRE_OPENAI, "data: {\"delta\":{\"reasoning\":\"hm\"}}\n\ndata: {\"delta\":"
                "{\"content\":\"a\"}}\n\n", (struct want){2, -1, 1}, "thinking deltas count");
    every_split(WIRE_OPENAI, "{\"content\":\"x \\\"content\\\":\\\"y\"}",
                (struct want){1, -1, 1}, "content in content");
    every_split(WIRE_OPENAI, "{\"content\":\"a\"}{\"content\":\"b\"}{\"usage\":{"
                "\"completion_tokens\":9}}", (struct want){9, -1, 0}, "usage wins");
    /* A key cut in three (its middle piece shorter than the tail). */
    every_three(WIRE_OPENAI, "{\"a\":\"b\",\"completion_tokens\":31}", (struct want){31, -1, 0});
    every_three(WIRE_NDJSON, "{\"created_at\":\"10:00\",\"eval_count\":4,\"x\":1}",
                (struct want){4, -1, 0});
    every_three(WIRE_NDJSON, "{\"n\":\"eval_count\",\"p\":\"q\"}", none);
    every_three(WIRE_ANTHROPIC, "{\"usage\":{\"input_tokens\":12,\"output_tokens\":345}}",
                (struct want){345, 12, 0});
    CHECK_DONE();
}
