/* Unit test of proxy/util/multipart.c: a form's field found as Go's
 * FormValue finds it (the first value; a file part is not a value),
 * whatever the line ends and boundary quoting, and Go's reasons for
 * what is not a form. */
#include <string.h>

#include "check.h"
#include "multipart.h"

static const char *field(const char *ctype, const char *body, const char *name, int *rc)
{
    static char out[256];
    const char *v = NULL;
    size_t n = 0;
    char err[128];
    *rc = multipart_field(ctype, body, strlen(body), name, &v, &n, err, sizeof err);
    if (*rc < 0) {
        snprintf(out, sizeof out, "error: %s", err);
        return out;
    }
    if (*rc == 0)
        return "(none)";
    snprintf(out, sizeof out, "%.*s", (int)n, v);
    return out;
}

int main(void)
{
    int rc;
    const char *ct = "multipart/form-data; boundary=XyZ";
    const char *form = "--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n"
                       "Content-Type: audio/wav\r\n\r\n"
                       "RIFF\r\n--X not the end\r\n"
                       "--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
                       "whisper:latest\r\n"
                       "--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
                       "second\r\n"
                       "--XyZ--\r\n";
    CHECK_STR(field(ct, form, "model", &rc), "whisper:latest");
    CHECK_INT(rc, 1);
    CHECK_STR(field(ct, form, "language", &rc), "(none)");
    CHECK_INT(rc, 0);
    /* A file part named like the field is not its value. */
    CHECK_STR(field(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"model\"; "
                        "filename=\"m\"\r\n\r\nx\r\n--XyZ--\r\n", "model", &rc), "(none)");
    /* A quoted boundary, a preamble, LF line ends, an empty value. */
    CHECK_STR(field("Multipart/Form-Data; charset=x; boundary=\"a b\"",
                    "preamble\n--a b\ncontent-disposition: form-data; name=model\n\nm1\n--a b--",
                    "model", &rc), "m1");
    CHECK_STR(field(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"
                        "\r\n--XyZ--\r\n", "model", &rc), "");
    CHECK_INT(rc, 1);
    /* Not a form: Go's reasons. */
    CHECK_STR(field("application/json", "{}", "model", &rc),
              "error: request Content-Type isn't multipart/form-data");
    CHECK_STR(field(NULL, "{}", "model", &rc),
              "error: request Content-Type isn't multipart/form-data");
    CHECK_STR(field("multipart/form-data", "--x\r\n", "model", &rc),
              "error: no multipart boundary param in Content-Type");
    CHECK_STR(field(ct, "no delimiter at all", "model", &rc), "error: multipart: NextPart: EOF");
    CHECK_STR(field(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ncut",
                    "model", &rc), "error: multipart: NextPart: EOF");
    CHECK_DONE();
}
