/* fuzz_discover.c - discover_parse() (proxy/discover.c) on arbitrary bytes:
 * what a backend answers to /api/tags and /api/ps.
 *
 * Properties: the list and the array come together or not at all; every
 * entry has a name and a key, the key is name_key() of the name and passes
 * name_key() itself; the list holds exactly the array's elements whose
 * "name" is a string name_key() takes, in order; everything is freed (ASan
 * leak check). The expected list is worked out here with jansson directly. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "discover.h"
#include "fz.h"
#include "names.h"

/* The array discover_parse() should have taken, or NULL if none. */
static json_t *expected_array(json_t *root)
{
    json_t *arr = json_object_get(root, "models");
    if (!json_is_array(arr) && !json_is_null(arr))
        return NULL;
    if (json_array_size(arr) > DISCOVER_MAX_MODELS)
        return NULL;
    return arr;
}

static void check_list(const struct model_list *l, json_t *arr)
{
    size_t i, j = 0;
    json_t *m;
    char key[NAME_KEY_MAX], again[NAME_KEY_MAX];

    FZ_CHECK(l->n >= 0 && (size_t)l->n <= json_array_size(arr));
    json_array_foreach(arr, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!name || name_key(name, key, sizeof key) < 0)
            continue;
        FZ_CHECK(j < (size_t)l->n);
        FZ_CHECK(l->names[j] && l->keys[j]);
        FZ_CHECK(strcmp(l->names[j], name) == 0);
        FZ_CHECK(strcmp(l->keys[j], key) == 0);
        FZ_CHECK(model_list_has(l, key));
        j++;
    }
    FZ_CHECK_INT(j, l->n);
    for (int k = 0; k < l->n; k++) {
        FZ_CHECK(name_key(l->names[k], key, sizeof key) == 0 && strcmp(key, l->keys[k]) == 0);
        FZ_CHECK(name_key(l->keys[k], again, sizeof again) == 0);
        FZ_CHECK(strcmp(again, l->keys[k]) == 0);
    }
    for (int k = 0; k < l->n; k++) { /* the /metrics label: the display form */
        FZ_CHECK(l->labels[k] && name_display(l->names[k], again, sizeof again) == 0);
        FZ_CHECK(strcmp(l->labels[k], again) == 0);
        FZ_CHECK(model_list_label(l, l->keys[k]) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *arr = (json_t *)1, *root, *want;
    struct model_list *l = discover_parse((const char *)data, size, &arr);

    FZ_CHECK(!l == !arr);
    root = json_loadb((const char *)data, size, 0, NULL);
    want = expected_array(root);
    FZ_CHECK(!want == !l);
    if (l) {
        FZ_CHECK(json_is_array(arr));
        if (json_is_array(want))
            FZ_CHECK(json_equal(arr, want));
        else
            FZ_CHECK_INT(json_array_size(arr), 0);
        check_list(l, want);
    }
    json_decref(root);
    model_list_free(l);
    json_decref(arr);
    return 0;
}
