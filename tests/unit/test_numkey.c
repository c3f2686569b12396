/* Unit test of proxy/util/numkey.c: the last load_duration of a reply,
 * whatever chunks it comes in, and never from inside a string. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "numkey.h"

static long long scan(const char *s, size_t cut)
{
    struct numkey k;
    size_t n = strlen(s);
    numkey_init(&k, "\"load_duration\"");
    if (cut > n)
        cut = n;
    numkey_feed(&k, s, cut);
    numkey_feed(&k, s + cut, n - cut);
    return numkey_value(&k);
}

int main(void)
{
    const char *final = "{\"model\":\"m\",\"done\":true,\"total_duration\":9,\"load_duration\":"
                        "123456789,\"prompt_eval_count\":3}\n";
    const char *text = "{\"response\":\"say \\\"load_duration\\\":999\",\"done\":false}\n";
    for (size_t cut = 0; cut <= strlen(final); cut++)
        CHECK_INT(scan(final, cut), 123456789);
    for (size_t cut = 0; cut <= strlen(text); cut++)
        CHECK_INT(scan(text, cut), -1);
    CHECK_INT(scan("{\"load_duration\":5", 100), 5); /* the end counts */
    CHECK_INT(scan("{\"xload_duration\":5}", 100), -1);
    CHECK_INT(scan("{\"load_duration\":1}\n{\"load_duration\":2}", 7), 2);
    /* 300 digits: the first 18, never an overflow (the digit count wrapped
     * at 256 before) */
    char big[400];
    int n = snprintf(big, sizeof big, "{\"load_duration\":");
    memset(big + n, '9', 300);
    strcpy(big + n + 300, "}");
    for (size_t cut = 0; cut <= strlen(big); cut += 7)
        CHECK_INT(scan(big, cut), 999999999999999999LL);
    CHECK_DONE();
}
