/* Unit test of proxy/tokscan.c: the token count found whatever the chunk
 * boundaries, the right key of the two, not fooled by look-alike keys. */
#include <string.h>

#include "check.h"
#include "tokscan.h"

/* TEXT fed in two pieces split at every position: always WANT. */
static void every_split(const char *text, long long want)
{
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n; cut++) {
        struct tokscan t;
        tokscan_init(&t);
        tokscan_feed(&t, text, cut);
        tokscan_feed(&t, text + cut, n - cut);
        CHECK_INT(tokscan_tokens(&t), want);
    }
}

/* TEXT fed in three pieces, cut at every pair of positions: always WANT. */
static void every_three(const char *text, long long want)
{
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            struct tokscan t;
            tokscan_init(&t);
            tokscan_feed(&t, text, a);
            tokscan_feed(&t, text + a, b - a);
            tokscan_feed(&t, text + b, n - b);
            CHECK_INT(tokscan_tokens(&t), want);
        }
}

int main(void)
{
    struct tokscan t;
    every_split("{\"model\":\"x\",\"done\":true,\"prompt_eval_count\":11,\"eval_count\":42,"
                "\"eval_duration\":5}\n", 42);
    every_split("data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":17,"
                "\"total_tokens\":20}}\n\n", 17);
    every_split("{\"response\":\"the \\\"eval_count\\\": 9 of it\",\"done\":false}\n", -1);
    every_split("{\"eval_count\": 7}", 7);  /* a space, and the body ends on the number */
    every_split("{\"prompt_eval_count\":5}", -1);
    every_split("{\"xeval_count\":5}", -1);
    every_split("{\"xcompletion_tokens\":5,\"n\":1}", -1);
    every_split("\"eval_count\":8", 8); /* the key at the very start */
    every_split(":\":\"eval_count\"::3", -1);
    /* A key cut in three (its middle piece shorter than the tail). */
    every_three("{\"a\":\"b\",\"completion_tokens\":31}", 31);
    every_three("{\"created_at\":\"10:00\",\"eval_count\":4,\"x\":1}", 4);
    every_three("{\"n\":\"eval_count\",\"p\":\"q\"}", -1);
    /* Byte by byte, a stream of lines: the last value counts. */
    tokscan_init(&t);
    const char *s = "{\"response\":\"a\"}\n{\"done\":true,\"eval_count\":123}\n";
    for (size_t i = 0; s[i]; i++)
        tokscan_feed(&t, s + i, 1);
    CHECK_INT(tokscan_tokens(&t), 123);
    CHECK_DONE();
}
