/* check.h - assertions for the C unit tests: they survive -DNDEBUG and
 * print both sides. Each test program ends with CHECK_DONE(). */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(c)                                                                      \
    do {                                                                              \
        check_count++;                                                                \
        if (!(c)) {                                                                   \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);     \
        }                                                                             \
    } while (0)

#define CHECK_INT(a, b)                                                                 \
    do {                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                             \
        check_count++;                                                                  \
        if (a_ != b_) {                                                                 \
            check_failures++;                                                           \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,        \
                    __LINE__, #a, a_, #b, b_);                                          \
        }                                                                               \
    } while (0)

#define CHECK_STR(a, b)                                                                 \
    do {                                                                                \
        const char *a_ = (a), *b_ = (b);                                                \
        check_count++;                                                                  \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                        \
            check_failures++;                                                           \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                        \
        }                                                                               \
    } while (0)

#define CHECK_DONE()                                                                    \
    do {                                                                                \
        printf("%d passed, %d failed\n", check_count - check_failures, check_failures); \
        return check_failures ? 1 : 0;                                                  \
    } while (0)

#endif
