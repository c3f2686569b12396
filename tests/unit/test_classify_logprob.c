/* Unit test of classifier/logprob.c: the chosen label's probability against
 * the other labels, from Ollama's "logprobs" array (api/types.go Logprob:
 * token, logprob, bytes, top_logprobs), for one-token and multi-token
 * labels, labels that share a prefix, a token that spans the value's
 * opening quote, bare answers, bytes that are not whole UTF-8, and the
 * cases where no confidence can be given. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "labels.h"
#include "logprob.h"

#define CHECK_NEAR(a, b)                                                                           \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        check_count++;                                                                             \
        if (!(fabs(a_ - b_) < 1e-9)) {                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: %s == %.12g, expected %.12g\n", __FILE__, __LINE__, #a, a_,    \
                    b_);                                                                           \
        }                                                                                          \
    } while (0)

static struct labels six;

/* The confidence of CHOSEN (a label name) from the JSON text LP. */
static int conf_of(const struct labels *l, const char *lp, const char *chosen, double *conf)
{
    json_error_t e;
    json_t *doc = json_loads(lp, 0, &e);
    if (!doc) {
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, lp);
        return 99;
    }
    *conf = -1;
    int rc = logprob_confidence(doc, l, labels_find(l, chosen, strlen(chosen)), conf);
    json_decref(doc);
    return rc;
}

/* {"label":"bug"} in five tokens; at "bug": bug -0.1, billing -2.5,
 * praise -4, and "\n", which no label starts with. */
static void one_token_labels(void)
{
    double c;
    const char *lp =
        "[{\"token\":\"{\\\"\",\"logprob\":-0.01,\"top_logprobs\":[]},"
        "{\"token\":\"label\",\"logprob\":0},"
        "{\"token\":\"\\\":\\\"\",\"logprob\":-0.2,"
        " \"top_logprobs\":[{\"token\":\"\\\":\\\"\",\"logprob\":-0.2},"
        "  {\"token\":\"\\\": \\\"\",\"logprob\":-1.7}]},"
        "{\"token\":\"bug\",\"logprob\":-0.1,\"top_logprobs\":["
        "  {\"token\":\"bug\",\"logprob\":-0.1},{\"token\":\"billing\",\"logprob\":-2.5},"
        "  {\"token\":\"\\n\",\"logprob\":-3},{\"token\":\"praise\",\"logprob\":-4}]},"
        "{\"token\":\"\\\"}\",\"logprob\":0,\"top_logprobs\":[{\"token\":\"\\\"}\","
        "\"logprob\":0}]}]";
    CHECK_INT(conf_of(&six, lp, "bug", &c), 0);
    CHECK_NEAR(c, exp(-0.1) / (exp(-0.1) + exp(-2.5) + exp(-4)));
}

/* feature_request in two tokens; the other labels leave the path at the
 * first ("bug") or at the second ("_flag": label feature_flag). The
 * chosen label is the product of its tokens; a way out at the second token
 * carries the first token's probability. */
static void multi_token_labels(void)
{
    struct labels l = {0};
    char err[128];
    double c;
    CHECK_INT(labels_load(&l, "bug,feature_request,feature_flag", err, sizeof err), 0);
    const char *lp =
        "[{\"token\":\"{\\\"label\\\":\\\"\",\"logprob\":0},"
        "{\"token\":\"feature\",\"logprob\":-0.2,\"top_logprobs\":["
        " {\"token\":\"feature\",\"logprob\":-0.2},{\"token\":\"bug\",\"logprob\":-3}]},"
        "{\"token\":\"_request\",\"logprob\":-0.05,\"top_logprobs\":["
        " {\"token\":\"_request\",\"logprob\":-0.05},{\"token\":\"_flag\",\"logprob\":-3.1}]},"
        "{\"token\":\"\\\"}\",\"logprob\":-0.01,\"top_logprobs\":[]}]";
    CHECK_INT(conf_of(&l, lp, "feature_request", &c), 0);
    double mine = exp(-0.2 - 0.05 - 0.01), other = exp(-3) + exp(-0.2 - 3.1);
    CHECK_NEAR(c, mine / (mine + other));
    /* The same answer read for feature_flag's sake would not match. */
    CHECK_INT(conf_of(&l, lp, "feature_flag", &c), LOGPROB_ENOLABEL);
    labels_free(&l);
}

/* bug and bugfix share "bug": the closing quote's token tells them apart
 * ("fix" there is bugfix's way out). A way out that agrees with both
 * ("b") is counted for neither. */
static void shared_prefix(void)
{
    struct labels l = {0};
    char err[128];
    double c;
    CHECK_INT(labels_load(&l, "bug,bugfix,praise", err, sizeof err), 0);
    const char *lp =
        "[{\"token\":\"{\\\"label\\\": \\\"\",\"logprob\":0},"
        "{\"token\":\"bug\",\"logprob\":-0.3,\"top_logprobs\":["
        " {\"token\":\"b\",\"logprob\":-2},{\"token\":\"pra\",\"logprob\":-2.2}]},"
        "{\"token\":\"\\\"}\",\"logprob\":-0.4,\"top_logprobs\":["
        " {\"token\":\"fix\",\"logprob\":-1.2},{\"token\":\"\\\"\",\"logprob\":-2.9}]}]";
    CHECK_INT(conf_of(&l, lp, "bug", &c), 0);
    /* "\"" alone agrees with bug only: the same label in other tokens. */
    double mine = exp(-0.7) + exp(-0.3 - 2.9), other = exp(-2.2) + exp(-0.3 - 1.2);
    CHECK_NEAR(c, mine / (mine + other));
    /* And bugfix chosen: "bug" then "fix", where "\"" leaves for bug. */
    lp = "[{\"token\":\"{\\\"label\\\":\\\"\",\"logprob\":0},"
         "{\"token\":\"bug\",\"logprob\":-0.1,\"top_logprobs\":[]},"
         "{\"token\":\"fix\",\"logprob\":-0.5,\"top_logprobs\":["
         " {\"token\":\"\\\"}\",\"logprob\":-1}]},"
         "{\"token\":\"\\\"}\",\"logprob\":0,\"top_logprobs\":[]}]";
    CHECK_INT(conf_of(&l, lp, "bugfix", &c), 0);
    CHECK_NEAR(c, exp(-0.6) / (exp(-0.6) + exp(-0.1 - 1)));
    labels_free(&l);
}

/* A token that spans the opening quote and the label's start (' "bill'),
 * its alternatives spelled the same way; the chosen path starts there. */
static void token_across_the_quote(void)
{
    double c;
    const char *lp =
        "[{\"token\":\"{\\\"label\\\":\",\"logprob\":0},"
        "{\"token\":\" \\\"bill\",\"logprob\":-0.5,\"top_logprobs\":["
        " {\"token\":\" \\\"bug\",\"logprob\":-1.5},{\"token\":\" \\\"\",\"logprob\":-2},"
        " {\"token\":\" \\\"sh\",\"logprob\":-2.5},{\"token\":\"\\\"\",\"logprob\":-3}]},"
        "{\"token\":\"ing\",\"logprob\":-0.01,\"top_logprobs\":[]},"
        "{\"token\":\"\\\"}\",\"logprob\":0}]";
    CHECK_INT(conf_of(&six, lp, "billing", &c), 0);
    /* ' "' agrees with every label, '"' (no space) with none: neither counts. */
    double mine = exp(-0.51), other = exp(-1.5) + exp(-2.5);
    CHECK_NEAR(c, mine / (mine + other));
}

/* A bare answer (no JSON), and a quoted bare answer. */
static void bare_answers(void)
{
    double c;
    const char *lp = "[{\"token\":\"pra\",\"logprob\":-0.2,\"top_logprobs\":["
                     " {\"token\":\"bug\",\"logprob\":-1.9}]},"
                     "{\"token\":\"ise\",\"logprob\":-0.1,\"top_logprobs\":[]}]";
    CHECK_INT(conf_of(&six, lp, "praise", &c), 0);
    CHECK_NEAR(c, exp(-0.3) / (exp(-0.3) + exp(-1.9)));
    lp = "[{\"token\":\"\\\"\",\"logprob\":0},{\"token\":\"feature\",\"logprob\":-0.4,"
         "\"top_logprobs\":[{\"token\":\"account\",\"logprob\":-1.1}]},"
         "{\"token\":\"\\\"\",\"logprob\":-0.1}]";
    CHECK_INT(conf_of(&six, lp, "feature", &c), 0);
    CHECK_NEAR(c, exp(-0.5) / (exp(-0.5) + exp(-1.1)));
}

/* A label outside ASCII split inside a character: "bytes" carry the
 * halves ("token" is U+FFFD, as Go writes a broken character). */
static void bytes_not_whole_utf8(void)
{
    struct labels l = {0};
    char err[128];
    double c;
    CHECK_INT(labels_load(&l, "caf\xc3\xa9,th\xc3\xa9", err, sizeof err), 0);
    const char *lp = "[{\"token\":\"{\\\"label\\\":\\\"\",\"logprob\":0},"
                     "{\"token\":\"caf\",\"logprob\":-0.2,\"top_logprobs\":["
                     " {\"token\":\"th\",\"logprob\":-1.6}]},"
                     "{\"token\":\"\\ufffd\",\"bytes\":[195],\"logprob\":-0.1,\"top_logprobs\":[]},"
                     "{\"token\":\"\\ufffd\",\"bytes\":[169],\"logprob\":0},"
                     "{\"token\":\"\\\"}\",\"logprob\":0}]";
    CHECK_INT(conf_of(&l, lp, "caf\xc3\xa9", &c), 0);
    CHECK_NEAR(c, exp(-0.3) / (exp(-0.3) + exp(-1.6)));
    labels_free(&l);
}

/* Where no confidence can be given, a code says why; very small
 * probabilities do not underflow into NaN. */
static void no_confidence(void)
{
    double c;
    CHECK_INT(conf_of(&six, "[]", "bug", &c), LOGPROB_ENONE);
    CHECK_INT(logprob_confidence(NULL, &six, 0, &c), LOGPROB_ENONE);
    CHECK_INT(
        conf_of(&six, "[{\"token\":\"{\\\"label\\\":\\\"bug\\\"}\",\"logprob\":-0.1}]", "bug", &c),
        LOGPROB_ENOTOP);
    CHECK_INT(conf_of(&six,
                      "[{\"token\":\"{\\\"label\\\":\\\"bug\\\"}\",\"logprob\":-0.1,"
                      "\"top_logprobs\":[]}]",
                      "praise", &c),
              LOGPROB_ENOLABEL);
    CHECK_INT(conf_of(&six,
                      "[{\"token\":\"{\\\"label\\\":\\\"bu\",\"logprob\":-0.1,"
                      "\"top_logprobs\":[]}]",
                      "bug", &c),
              LOGPROB_ENOLABEL); /* no closing quote: cut short */
    CHECK_INT(conf_of(&six, "[{\"logprob\":-0.1}]", "bug", &c), LOGPROB_ENONE);
    const char *tiny = "[{\"token\":\"{\\\"label\\\":\\\"\",\"logprob\":-900},"
                       "{\"token\":\"bug\",\"logprob\":-800,\"top_logprobs\":["
                       " {\"token\":\"praise\",\"logprob\":-801}]},"
                       "{\"token\":\"\\\"}\",\"logprob\":0}]";
    CHECK_INT(conf_of(&six, tiny, "bug", &c), 0);
    CHECK_NEAR(c, 1 / (1 + exp(-1)));
    /* The last "label" key counts (a thinking model may write one before). */
    const char *twice = "[{\"token\":\"{\\\"label\\\":\\\"praise\\\"} no: \",\"logprob\":0},"
                        "{\"token\":\"{\\\"label\\\":\\\"\",\"logprob\":0},"
                        "{\"token\":\"bug\",\"logprob\":-0.2,\"top_logprobs\":["
                        " {\"token\":\"praise\",\"logprob\":-0.9}]},"
                        "{\"token\":\"\\\"}\",\"logprob\":0}]";
    CHECK_INT(conf_of(&six, twice, "bug", &c), 0);
    CHECK_NEAR(c, exp(-0.2) / (exp(-0.2) + exp(-0.9)));
}

int main(void)
{
    char err[128];
    if (labels_load(&six, "billing,bug,feature,account,shipping,praise", err, sizeof err) < 0)
        return 2;
    one_token_labels();
    multi_token_labels();
    shared_prefix();
    token_across_the_quote();
    bare_answers();
    bytes_not_whole_utf8();
    no_confidence();
    CHECK_INT(logprob_top_k(6), 11);
    CHECK_INT(logprob_top_k(40), 20);
    labels_free(&six);
    CHECK_DONE();
}
