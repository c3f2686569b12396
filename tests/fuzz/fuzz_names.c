/* fuzz_names.c - proxy/common/names.c on arbitrary bytes.
 *
 * The input is two names separated by a NUL byte (the second may be
 * missing). Properties:
 * - name_key() writes a NUL-terminated key shorter than the buffer, or ""
 *   and -1; with a buffer of any size it stays inside it (the buffers here
 *   are exactly as large as said, so ASan sees a byte too far);
 * - a key is its own key (idempotence), and the display form's key is the
 *   key again, and the key ends with the display form;
 * - name_display() succeeds whenever name_key() does;
 * - case and surrounding blanks do not matter;
 * - name_same() is name_key() equality, symmetric, and true of a name and
 *   its key. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz.h"
#include "names.h"

/* name_key() into a heap buffer of exactly OUTLEN bytes; checks the
 * contract and returns the key (malloc'd, "" on failure) and the result. */
static char *key_of(const char *name, size_t outlen, int *rc,
                    int (*fn)(const char *, char *, size_t))
{
    char *out = malloc(outlen ? outlen : 1);
    char *copy;
    *rc = fn(name, outlen ? out : NULL, outlen);
    FZ_CHECK(*rc == 0 || *rc == -1);
    if (outlen == 0) {
        FZ_CHECK_INT(*rc, -1);
        out[0] = '\0';
    }
    FZ_CHECK(memchr(out, '\0', outlen ? outlen : 1) != NULL);
    if (*rc < 0)
        FZ_CHECK(out[0] == '\0');
    else
        FZ_CHECK(out[0] != '\0');
    copy = strdup(out);
    free(out);
    return copy;
}

/* K and D, the key and display form of A: the key of K is K, the key of D
 * is K, K ends with D, and A is the same model as K. */
static void check_round_trips(const char *a, const char *k, const char *d)
{
    int rc;
    char *kk = key_of(k, NAME_KEY_MAX, &rc, name_key);
    size_t kl = strlen(k), dl = strlen(d);
    if (rc != 0 || strcmp(kk, k) != 0) {
        fz_dump("name", a, strlen(a));
        fz_dump("key", k, kl);
        fz_dump("key of the key", kk, strlen(kk));
        abort();
    }
    free(kk);
    FZ_CHECK(dl <= kl && strcmp(k + kl - dl, d) == 0);
    kk = key_of(d, NAME_KEY_MAX, &rc, name_key);
    if ((rc != 0 || strcmp(kk, k) != 0)) {
        fz_dump("name", a, strlen(a));
        fz_dump("key", k, kl);
        fz_dump("display", d, dl);
        fz_dump("key of the display", kk, strlen(kk));
        abort();
    }
    free(kk);
    FZ_CHECK_INT(name_same(a, k), 1);
}

static void check_name(const char *a, size_t small)
{
    int rk, rd, r2, rs;
    char *k = key_of(a, NAME_KEY_MAX, &rk, name_key);
    char *d = key_of(a, NAME_KEY_MAX, &rd, name_display);
    char *ks = key_of(a, small, &rs, name_key);

    /* A smaller buffer: the same key if it fits, else a clean failure. */
    if (rk == 0 && strlen(k) < small)
        FZ_CHECK(rs == 0 && strcmp(ks, k) == 0);
    else
        FZ_CHECK_INT(rs, -1);
    if (rk == 0) {
        FZ_CHECK_INT(rd, 0);
        FZ_CHECK_INT(name_same(a, a), 1);
        check_round_trips(a, k, d);
    } else {
        FZ_CHECK_INT(name_same(a, a), 0);
    }

    /* Upper case and blanks around: the same answer. */
    size_t n = strlen(a);
    char *v = malloc(n + 3);
    v[0] = ' ';
    for (size_t i = 0; i < n; i++)
        v[i + 1] = (char)toupper((unsigned char)a[i]);
    v[n + 1] = '\t';
    v[n + 2] = '\0';
    char *kv = key_of(v, NAME_KEY_MAX, &r2, name_key);
    FZ_CHECK_INT(r2, rk);
    FZ_CHECK(strcmp(kv, k) == 0);
    free(kv);
    free(v);
    free(k);
    free(d);
    free(ks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    const char *a, *b;
    char *ka, *kb;
    int ra, rb;
    size_t small;

    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    a = buf;
    b = buf + strlen(buf) + 1; /* "" when there is no NUL */
    small = fz_hash(data, size) % (NAME_KEY_MAX + 8);

    check_name(a, small);
    check_name(b, small);
    ka = key_of(a, NAME_KEY_MAX, &ra, name_key);
    kb = key_of(b, NAME_KEY_MAX, &rb, name_key);
    FZ_CHECK_INT(name_same(a, b), name_same(b, a));
    FZ_CHECK_INT(name_same(a, b), ra == 0 && rb == 0 && strcmp(ka, kb) == 0);
    FZ_CHECK_INT(name_same(NULL, a), 0);
    free(ka);
    free(kb);
    free(buf);
    return 0;
}
