/* opts.c - see opts.h. One table row per option; flags win over the config
 * file, which wins over the defaults. */
#include "opts.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <getopt.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "version.h"

enum opt_type { OPT_STR, OPT_INT, OPT_NUM, OPT_FLAG };

struct opt_row {
    const char *name; /* long flag; the config key is this with '_' for '-' */
    int shortopt;     /* 0: long only */
    enum opt_type type;
    size_t off;      /* offset in struct opts */
    double min, max; /* OPT_INT and OPT_NUM bounds */
};

#define STR(f) OPT_STR, offsetof(struct opts, f), 0, 0
#define INT(f, lo, hi) OPT_INT, offsetof(struct opts, f), lo, hi
#define NUM(f, lo, hi) OPT_NUM, offsetof(struct opts, f), lo, hi
#define FLAG(f) OPT_FLAG, offsetof(struct opts, f), 0, 1

static const struct opt_row rows[] = {
    {"input", 'i', STR(input)},
    {"output", 'o', STR(output)},
    {"model", 'm', STR(model)},
    {"labels", 'l', STR(labels)},
    {"url", 0, STR(url)},
    {"jobs", 'j', INT(jobs, 1, 100000)},
    {"id-field", 0, STR(id_field)},
    {"text-field", 0, STR(text_field)},
    {"gold-field", 0, STR(gold_field)},
    {"prompt-file", 0, STR(prompt_file)},
    {"format", 0, STR(format)},
    {"retries", 0, INT(retries, 0, 100)},
    {"timeout-s", 0, INT(timeout_s, 1, 86400 * 7)},
    {"api-key", 0, STR(api_key)},
    {"ca-file", 0, STR(ca_file)},
    {"abstain", 0, STR(abstain)},
    {"examples", 0, STR(examples)},
    {"keep-fields", 0, STR(keep_fields)},
    {"raw", 0, FLAG(raw)},
    {"confidence", 0, FLAG(confidence)},
    {"min-confidence", 0, NUM(min_confidence, 0, 1)},
    {"votes", 0, INT(votes, 2, 100)},
    {"vote-temperature", 0, NUM(vote_temperature, 0.01, 5)},
    {"limit", 0, INT(limit, 1, 1e15)},
    {"sample", 0, INT(sample, 1, 1e15)},
    {"seed", 0, INT(seed, 0, 4294967295.0)},
    {"options", 0, STR(options)},
    {"rescore", 0, FLAG(rescore)},
    {"config", 'c', STR(config)},
};
#define NROWS (sizeof rows / sizeof rows[0])

/* The usage text below names the backoff's cap. */
_Static_assert(CLIENT_BACKOFF_MAX_S == 30, "update --retries in usage_text");

static const char usage_text[] =
    "usage: ollama-classify -i ITEMS -o RESULTS -m MODEL -l LABELS [options]\n"
    "       ollama-classify --rescore -o RESULTS -l LABELS --gold-field F [-i ITEMS]\n"
    "\n"
    "Label every item of ITEMS with one of LABELS by asking an Ollama endpoint\n"
    "(POST /api/chat, many requests in flight); one result per item in RESULTS.\n"
    "\n"
    "  -i, --input FILE      items: .jsonl (one object a line), .csv (header row),\n"
    "                        anything else one text a line; - is stdin. An id\n"
    "                        that comes again is skipped with a warning\n"
    "  -o, --output FILE     results: CSV if FILE ends in .csv, else JSONL; if it\n"
    "                        exists, labelled ids are skipped and new lines\n"
    "                        appended (resume), after cutting off a torn last\n"
    "                        line left by a kill\n"
    "  -m, --model MODEL     model name\n"
    "  -l, --labels LABELS   a,b,c or @FILE with one label a line (two at least)\n"
    "      --url URL         endpoint (default $OLLAMA_HOST, else\n"
    "                        http://127.0.0.1:11434)\n"
    "  -j, --jobs N          requests in flight (default 200)\n"
    "      --id-field F      id field of a JSONL/CSV item (default id)\n"
    "      --text-field F    text field of a JSONL/CSV item (default text)\n"
    "      --gold-field F    field with the expected label: the summary adds\n"
    "                        accuracy and a confusion table\n"
    "      --prompt-file F   system prompt template; {{labels}} is replaced\n"
    "      --format FMT      auto (default: by extension; stdin by its first\n"
    "                        character), jsonl, csv or text\n"
    "\n"
    "Labels you can trust:\n"
    "      --abstain LABEL   a label the model may choose when none fits (added\n"
    "                        to the labels; the prompt says so). Empty or blank\n"
    "                        texts are never sent: they get LABEL, or without\n"
    "                        --abstain an error of kind \"empty\"\n"
    "      --examples FILE   few-shot examples (JSONL or CSV with a text and a\n"
    "                        label field), put in the prompt in file order\n"
    "      --confidence      ask for the answer's logprobs (Ollama 0.12.11 or\n"
    "                        newer) and write the chosen label's probability\n"
    "                        against the other labels as \"confidence\"\n"
    "      --min-confidence P  --confidence, and mark items under P with\n"
    "                        \"review\":true; the summary counts them\n"
    "      --votes N         when the endpoint gives no logprobs, ask N times\n"
    "                        at --vote-temperature (default 0.7): the label is\n"
    "                        the most common answer, its share the confidence\n"
    "      --options SPEC    model options for every request: k=v,k=v or a JSON\n"
    "                        object (num_ctx=8192,think=false,keep_alive=30m;\n"
    "                        think and keep_alive go to the request itself)\n"
    "\n"
    "Results you can review:\n"
    "      --keep-fields F,G copy these input fields into every result\n"
    "      --raw             keep the model's answer as \"raw\"\n"
    "      --limit N         only the first N items (a dry run)\n"
    "      --sample N        N items drawn at random, the same for the same\n"
    "                        --seed (default 1) and input\n"
    "      --rescore         no request: read RESULTS (gold from --gold-field in\n"
    "                        its lines, or in ITEMS by id) and print the report\n"
    "\n"
    "      --retries N       tries after the first on connect errors, timeouts,\n"
    "                        429, 5xx and a 404 of one backend behind\n"
    "                        ollama-proxy (default 5), with backoff and jitter up\n"
    "                        to 30 s; a Retry-After is honoured, capped at 30 s\n"
    "      --timeout-s N     per request (default 600)\n"
    "      --api-key KEY     sent as \"Authorization: Bearer KEY\" on every request\n"
    "                        (default $OLLAMA_API_KEY; \"\" for none); never printed.\n"
    "                        $OLLAMA_API_KEY or api_key in -c FILE keep it out of\n"
    "                        the process list; a refused key (401/403) stops the run\n"
    "      --ca-file FILE    trust the CA certificates in FILE (PEM) for an https://\n"
    "                        URL instead of the system's: a private CA, as the one\n"
    "                        of ollama-proxy's tls.listen certificate\n"
    "  -c, --config FILE     libconfig file with any of the above as keys\n"
    "                        (model = \"llama3\"; jobs = 200; raw = true; ...)\n"
    "  -h, --help            this text\n"
    "      --version         print the version\n"
    "\n"
    "Exit status: 0 every item labelled, 1 some items ended in error, or the\n"
    "run stopped at once because every request would fail the same way (no\n"
    "such model: ollama-proxy's own 404, or a plain Ollama's 404 to every try\n"
    "of an item; API key refused, TLS failure, nothing listening), 2 bad usage\n"
    "or unreadable input, 130 stopped by SIGINT or SIGTERM (run the same\n"
    "command again to resume).\n";

static char **field_str(struct opts *o, const struct opt_row *r)
{
    return (char **)((char *)o + r->off);
}

static long *field_int(struct opts *o, const struct opt_row *r)
{
    return (long *)((char *)o + r->off);
}

static double *field_num(struct opts *o, const struct opt_row *r)
{
    return (double *)((char *)o + r->off);
}

/* Store VALUE (a flag argument or config string) for row R. */
static int set_value(struct opts *o, const struct opt_row *r, const char *value, const char *what,
                     char *err, size_t errlen)
{
    char *end;
    if (r->type == OPT_STR) {
        char **f = field_str(o, r);
        free(*f);
        *f = strdup(value);
        return *f ? 0 : -1;
    }
    if (r->type == OPT_FLAG) {
        *field_int(o, r) = 1;
        return 0;
    }
    double v = r->type == OPT_NUM ? strtod(value, &end) : (double)strtol(value, &end, 10);
    if (!*value || *end || !(v >= r->min && v <= r->max)) {
        if (r->type == OPT_NUM)
            snprintf(err, errlen, "bad value '%s' for %s (a number %g..%g)", value, what, r->min,
                     r->max);
        else
            snprintf(err, errlen, "bad value '%s' for %s (an integer %.0f..%.0f)", value, what,
                     r->min, r->max);
        return -1;
    }
    if (r->type == OPT_NUM)
        *field_num(o, r) = v;
    else
        *field_int(o, r) = (long)v;
    return 0;
}

static void key_of(const struct opt_row *r, char *key, size_t len)
{
    snprintf(key, len, "%s", r->name);
    for (char *p = key; *p; p++)
        if (*p == '-')
            *p = '_';
}

/* A config list or array of strings joined with ',' (for labels). */
static int join_list(const config_setting_t *s, struct buf *out)
{
    for (int i = 0; i < config_setting_length(s); i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (!v || strchr(v, ','))
            return -1;
        if ((i && buf_puts(out, ",") < 0) || buf_puts(out, v) < 0)
            return -1;
    }
    return 0;
}

/* Apply one setting of the config file unless its flag was given. */
static int config_apply(struct opts *o, const config_setting_t *s, const unsigned char *given,
                        const char *file, char *err, size_t errlen)
{
    const char *name = config_setting_name(s);
    int line = config_setting_source_line(s);
    char key[64], what[96];
    for (size_t i = 0; i < NROWS; i++) {
        key_of(&rows[i], key, sizeof key);
        if (strcmp(key, name) != 0 || strcmp(key, "config") == 0)
            continue;
        if (given[i])
            return 0;
        snprintf(what, sizeof what, "%s:%d: %s", file, line, name);
        int t = config_setting_type(s);
        char num[64];
        if ((rows[i].type == OPT_INT || rows[i].type == OPT_NUM) &&
            (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)) {
            snprintf(num, sizeof num, "%lld", config_setting_get_int64(s));
            return set_value(o, &rows[i], num, what, err, errlen);
        }
        if (rows[i].type == OPT_NUM && t == CONFIG_TYPE_FLOAT) {
            snprintf(num, sizeof num, "%.17g", config_setting_get_float(s));
            return set_value(o, &rows[i], num, what, err, errlen);
        }
        if (rows[i].type == OPT_FLAG && t == CONFIG_TYPE_BOOL) {
            *field_int(o, &rows[i]) = config_setting_get_bool(s);
            return 0;
        }
        if (rows[i].type == OPT_STR && t == CONFIG_TYPE_STRING)
            return set_value(o, &rows[i], config_setting_get_string(s), what, err, errlen);
        if (strcmp(key, "labels") == 0 && (t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY)) {
            struct buf b = {0};
            int rc = join_list(s, &b) < 0 || !b.data
                         ? -1
                         : set_value(o, &rows[i], b.data, what, err, errlen);
            buf_free(&b);
            if (rc < 0 && !err[0])
                snprintf(err, errlen, "%s: expected a list of labels without commas", what);
            return rc;
        }
        static const char *const expected[] = {"a string", "an integer", "a number",
                                               "true or false"};
        snprintf(err, errlen, "%s: expected %s", what, expected[rows[i].type]);
        return -1;
    }
    snprintf(err, errlen, "%s:%d: unknown key '%s'", file, line, name);
    return -1;
}

static int config_load(struct opts *o, const unsigned char *given, char *err, size_t errlen)
{
    config_t cfg;
    int rc = 0;
    config_init(&cfg);
    if (config_read_file(&cfg, o->config) != CONFIG_TRUE) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "cannot read config file '%s'", o->config);
        else
            snprintf(err, errlen, "%s:%d: %s", o->config, config_error_line(&cfg),
                     config_error_text(&cfg));
        rc = -1;
        goto done;
    }
    config_setting_t *root = config_root_setting(&cfg);
    for (int i = 0; i < config_setting_length(root) && rc == 0; i++)
        rc = config_apply(o, config_setting_get_elem(root, i), given, o->config, err, errlen);
done:
    config_destroy(&cfg);
    return rc;
}

static void build_longopts(struct option *lo, char *shorts)
{
    size_t n = 0;
    char *s = shorts;
    *s++ = ':';
    *s++ = 'h';
    for (size_t i = 0; i < NROWS; i++) {
        int has_arg = rows[i].type == OPT_FLAG ? no_argument : required_argument;
        lo[n++] = (struct option){rows[i].name, has_arg, NULL, 1000 + (int)i};
        if (rows[i].shortopt) {
            *s++ = (char)rows[i].shortopt;
            *s++ = ':';
        }
    }
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n++] = (struct option){"version", no_argument, NULL, 'V'};
    lo[n] = (struct option){NULL, 0, NULL, 0};
    *s = '\0';
}

static int row_of_short(int c)
{
    for (size_t i = 0; i < NROWS; i++)
        if (rows[i].shortopt == c)
            return (int)i;
    return -1;
}

/* The flag as the user wrote it, for error lines. */
static const char *flag_text(char **argv, int at)
{
    return at > 0 && argv[at - 1] ? argv[at - 1] : "?";
}

static int parse_flags(struct opts *o, int argc, char **argv, unsigned char *given, char *err,
                       size_t errlen)
{
    struct option lo[NROWS + 3];
    char shorts[2 * NROWS + 4];
    char what[64];
    int c;
    build_longopts(lo, shorts);
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        int r = c >= 1000 ? c - 1000 : row_of_short(c);
        if (c == 'h') {
            fputs(usage_text, stdout);
            return 1;
        } else if (c == 'V') {
            printf("ollama-classify %s\n", OP_VERSION);
            return 1;
        } else if (c == ':') {
            snprintf(err, errlen, "option '%s' needs a value", flag_text(argv, optind));
            return -1;
        } else if (c == '?' || r < 0) {
            if (optopt && optopt < 256)
                snprintf(err, errlen, "unknown option '-%c' (try --help)", optopt);
            else
                snprintf(err, errlen, "unknown option '%s' (try --help)", flag_text(argv, optind));
            return -1;
        }
        snprintf(what, sizeof what, "--%s", rows[r].name);
        if (set_value(o, &rows[r], optarg ? optarg : "", what, err, errlen) < 0)
            return -1;
        given[r] = 1;
        /* Blank the key in our argv: from here on ps and /proc/PID/cmdline
         * show x's. Until here they showed the key, hence the advice in
         * --help to pass it in $OLLAMA_API_KEY or the config file. */
        if (rows[r].off == offsetof(struct opts, api_key))
            memset(optarg, 'x', strlen(optarg));
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (try --help)", argv[optind]);
        return -1;
    }
    return 0;
}

static int check_required(const struct opts *o, char *err, size_t errlen)
{
    const char *missing = !o->output   ? "-o RESULTS"
                          : !o->labels ? "-l LABELS"
                          : o->rescore ? NULL
                          : !o->input  ? "-i ITEMS"
                          : !o->model  ? "-m MODEL"
                                       : NULL;
    if (missing) {
        snprintf(err, errlen, "missing %s (try --help)", missing);
        return -1;
    }
    if (o->format && strcmp(o->format, "auto") && strcmp(o->format, "jsonl") &&
        strcmp(o->format, "csv") && strcmp(o->format, "text")) {
        snprintf(err, errlen, "bad value '%s' for --format (auto, jsonl, csv or text)", o->format);
        return -1;
    }
    if (o->limit && o->sample) {
        snprintf(err, errlen, "--limit and --sample: give one of them");
        return -1;
    }
    return 0;
}

/* Defaults for what neither the flags nor the config file set. */
static int fill_defaults(struct opts *o)
{
    if (o->retries < 0)
        o->retries = 5;
    if (!o->timeout_s)
        o->timeout_s = 600;
    if (!o->jobs)
        o->jobs = 200;
    if (o->seed < 0)
        o->seed = 1;
    if (!o->vote_temperature)
        o->vote_temperature = 0.7;
    if (o->min_confidence >= 0 || o->votes)
        o->confidence = 1;
    if (!o->id_field)
        o->id_field = strdup("id");
    if (!o->text_field)
        o->text_field = strdup("text");
    return o->id_field && o->text_field ? 0 : -1;
}

int opts_parse(struct opts *o, int argc, char **argv, char *err, size_t errlen)
{
    unsigned char given[NROWS] = {0};
    err[0] = '\0';
    /* "unset" marks where 0 is a legal value */
    o->retries = -1;
    o->seed = -1;
    o->min_confidence = -1;
    int rc = parse_flags(o, argc, argv, given, err, errlen);
    if (rc != 0)
        return rc;
    if (o->config && config_load(o, given, err, errlen) < 0)
        return -1;
    if (fill_defaults(o) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return check_required(o, err, errlen);
}

void opts_free(struct opts *o)
{
    for (size_t i = 0; i < NROWS; i++) {
        if (rows[i].type == OPT_STR) {
            char **f = field_str(o, &rows[i]);
            free(*f);
            *f = NULL;
        }
    }
}

/* Go's net.SplitHostPort: "host:port" or "[v6]:port" (the port may be
 * empty). 0 with *HOST (without brackets) and *PORT pointing into HP; -1
 * when HP is not of that form (no port, or too many colons). */
static int split_host_port(const char *hp, size_t len, const char **host, size_t *hostlen,
                           const char **port, size_t *portlen)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (hp[i] == ':')
            colon = hp + i;
    if (!colon)
        return -1;
    *port = colon + 1;
    *portlen = (size_t)(hp + len - *port);
    if (hp[0] == '[') {
        const char *end = memchr(hp, ']', len);
        if (!end || end + 1 != colon)
            return -1;
        *host = hp + 1;
        *hostlen = (size_t)(end - hp - 1);
    } else {
        *host = hp;
        *hostlen = (size_t)(colon - hp);
        if (memchr(hp, ':', *hostlen))
            return -1; /* too many colons: a bare IPv6 address */
    }
    if (memchr(*host, '[', *hostlen) || memchr(*host, ']', *hostlen) ||
        memchr(*port, '[', *portlen) || memchr(*port, ']', *portlen))
        return -1;
    return 0;
}

/* strconv.ParseInt(port, 10, 32) and 0..65535, as Ollama checks it. */
static long port_number(const char *p, size_t len)
{
    size_t i = len && (p[0] == '+' || p[0] == '-');
    long n = 0;
    if (i == len || len - i > 10)
        return -1;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        n = n * 10 + (p[i] - '0');
    }
    n = p[0] == '-' ? -n : n;
    return n > 65535 || n < 0 ? -1 : n;
}

static int is_ipv6(const char *s, size_t len)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;
    if (len >= sizeof tmp)
        return 0;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET6, tmp, &a) == 1;
}

/* libcurl must take it as it is: a space, a bad character or a port
 * libcurl refuses would otherwise fail every request the same way. */
static int url_usable(const char *url)
{
    CURLU *u = curl_url();
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK;
    curl_url_cleanup(u);
    return ok;
}

int opts_endpoint_url(const char *spec, int from_env, struct buf *out, char *err, size_t errlen)
{
    const char *what = from_env ? "$OLLAMA_HOST" : "--url";
    const char *s = spec, *scheme = "http", *defport = "11434";
    size_t len = strlen(spec);
    buf_clear(out);
    while (len && isspace((unsigned char)*s)) /* as Ollama: strings.TrimSpace */
        s++, len--;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    const char *sep = memmem(s, len, "://", 3);
    if (sep) {
        size_t sl = (size_t)(sep - s);
        if (sl == 4 && !strncasecmp(s, "http", 4)) {
            defport = "80";
        } else if (sl == 5 && !strncasecmp(s, "https", 5)) {
            scheme = "https";
            defport = "443";
        } else {
            snprintf(err, errlen, "bad value for %s: '%s': the scheme must be http:// or https://",
                     what, spec);
            return -1;
        }
        len -= sl + 3;
        s = sep + 3;
    } else if (len == 10 && !memcmp(s, "ollama.com", 10)) {
        scheme = "https";
        defport = "443";
    }
    size_t hplen = strcspn(s, "/"), hostlen, portlen;
    if (hplen > len)
        hplen = len;
    const char *host, *port, *path = s + hplen;
    size_t pathlen = len - hplen;
    if (split_host_port(s, hplen, &host, &hostlen, &port, &portlen) < 0) {
        /* No port: all of it is the host (a bare IPv6 address too). */
        host = s;
        hostlen = hplen;
        if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']')
            host++, hostlen -= 2;
        port = defport;
        portlen = strlen(defport);
    }
    if (port_number(port, portlen) < 0) {
        if (!from_env) {
            snprintf(err, errlen, "bad value for --url: '%s': the port '%.*s' is not 0-65535",
                     spec, (int)portlen, port);
            return -1;
        }
        fprintf(stderr, "ollama-classify: warning: $OLLAMA_HOST '%s': invalid port '%.*s', "
                        "using the default %s (as Ollama does)\n", spec, (int)portlen, port,
                defport);
        port = defport;
        portlen = strlen(defport);
    }
    buf_puts(out, scheme);
    buf_puts(out, "://");
    if (hostlen == 0)
        buf_puts(out, "127.0.0.1"); /* ":port" means this machine */
    else if (is_ipv6(host, hostlen) || memchr(host, ':', hostlen))
        buf_puts(out, "["), buf_append(out, host, hostlen), buf_puts(out, "]");
    else
        buf_append(out, host, hostlen);
    buf_puts(out, ":");
    buf_append(out, port, portlen);
    buf_append(out, path, pathlen);
    while (out->len > 0 && out->data[out->len - 1] == '/')
        out->data[--out->len] = '\0';
    if (!out->data) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (port_number(port, portlen) == 0 || !url_usable(out->data)) {
        snprintf(err, errlen, "bad value for %s: '%s' is not a usable endpoint (%s)", what, spec,
                 out->data);
        return -1;
    }
    return 0;
}
