/* fuzz_classify.c - the classifier's parsers of outside bytes, through
 * their headers: the items reader (classifier/items.h: JSONL, CSV with
 * csv.c, text) and the answer parser request_answer() (request.h), which
 * reads Ollama's /api/chat reply into a label.
 *
 * Every input is read in all three formats (from a memfd, which is a
 * regular file, so items_count() runs too) and as a reply. Properties:
 * - items_next() returns 1 until 0, never -1 (no read error on a memfd),
 *   and at most one item per input byte;
 * - each item has an id (NUL-terminated, id_len long), a line that never
 *   goes back, and either an error text or a NUL-terminated text (and gold);
 * - items_count() is the number of items items_next() then returns;
 * - request_answer(): a label index in range when it says LABEL, and WHAT
 *   NUL-terminated inside the size given, whatever that size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fz.h"
#include "items.h"
#include "labels.h"
#include "request.h"

static struct labels labels;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[128];
    (void)argc, (void)argv;
    if (labels_load(&labels, "positive, negative,neutral,Mixed Feelings", err, sizeof err) < 0) {
        fprintf(stderr, "labels_load: %s\n", err);
        abort();
    }
    return 0;
}

static void check_field(const char *s, size_t len)
{
    FZ_CHECK(s != NULL);
    FZ_CHECK(s[len] == '\0');
}

static void read_items(const char *path, const char *format, const char *gold, size_t size)
{
    char err[256];
    struct items *r = items_open(path, format, "id", "text", gold, err, sizeof err);
    struct item it;
    long count, n = 0, last_line = 0;
    int rc;

    if (!r) {
        FZ_CHECK(strcmp(format, "csv") == 0); /* only a CSV header can be refused */
        FZ_CHECK(err[0] != '\0');
        return;
    }
    count = items_count(r);
    while ((rc = items_next(r, &it, err, sizeof err)) == 1) {
        FZ_CHECK(++n <= (long)size);
        FZ_CHECK(it.line >= 1 && it.line >= last_line);
        last_line = it.line;
        FZ_CHECK(it.id_len > 0);
        check_field(it.id, it.id_len);
        if (it.error) {
            FZ_CHECK(it.error[0] != '\0');
            continue;
        }
        check_field(it.text, it.text_len);
        if (it.gold)
            check_field(it.gold, it.gold_len);
    }
    FZ_CHECK_INT(rc, 0);
    FZ_CHECK_INT(count, n);
    items_close(r);
}

static void read_answer(const uint8_t *data, size_t size)
{
    char *body = malloc(size + 1); /* job->resp is always NUL-terminated */
    uint32_t h = fz_hash(data, size);
    size_t whatlen = h & 1 ? 200 : 1 + h % 24;
    char *what = malloc(whatlen);
    int label = -7;
    enum answer a;

    memcpy(body, data, size);
    body[size] = '\0';
    what[0] = '\0';
    a = request_answer(&labels, body, size, &label, what, whatlen);
    FZ_CHECK(a == ANSWER_LABEL || a == ANSWER_OFF_LABEL || a == ANSWER_BAD);
    if (a == ANSWER_LABEL)
        FZ_CHECK(label >= 0 && (size_t)label < labels.n);
    FZ_CHECK(memchr(what, '\0', whatlen) != NULL);
    free(what);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("items", MFD_CLOEXEC);
    char path[64];
    const char *gold = fz_hash(data, size) & 2 ? "label" : NULL;

    FZ_CHECK(fd >= 0);
    FZ_CHECK(write(fd, data, size) == (ssize_t)size);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    read_items(path, "jsonl", gold, size);
    read_items(path, "csv", gold, size);
    read_items(path, "text", gold, size);
    close(fd);
    read_answer(data, size);
    return 0;
}
