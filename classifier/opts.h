/* opts.h - the command line and the -c config file of ollama-classify.
 *
 * Every option has one row in opts.c: its long flag, its config key (the
 * flag with '-' turned into '_'), its type and bounds. Flags are read first;
 * the config file then fills only what the flags left unset; defaults fill
 * the rest. All strings in struct opts are owned by it (opts_free). */
#ifndef CLS_OPTS_H
#define CLS_OPTS_H

#include <stddef.h>

#include "buf.h"

struct opts {
    char *input;             /* -i: items file, "-" for stdin */
    char *output;            /* -o: results file (.csv: CSV, else JSONL) */
    char *model;             /* -m */
    char *labels;            /* -l: "a,b,c" or "@FILE" */
    char *url;               /* --url, NULL: $OLLAMA_HOST or the default */
    char *id_field;          /* default "id" */
    char *text_field;        /* default "text" */
    char *gold_field;        /* NULL: no accuracy */
    char *prompt_file;       /* NULL: the built-in prompt */
    char *format;            /* NULL or "auto", "jsonl", "csv", "text" */
    char *config;            /* -c */
    char *api_key;           /* --api-key, NULL: $OLLAMA_API_KEY or none; secret */
    char *ca_file;           /* --ca-file: the CAs an https:// endpoint is verified
                                with; NULL: the system's */
    char *abstain;           /* --abstain LABEL, NULL: none */
    char *examples;          /* --examples FILE, NULL: none */
    char *keep_fields;       /* --keep-fields a,b, NULL: none */
    char *options;           /* --options "k=v,..." or a JSON object, NULL: none */
    long jobs;               /* -j, default 200 */
    long retries;            /* default 5 */
    long timeout_s;          /* default 600 */
    long votes;              /* --votes N, 0: no fallback */
    long limit;              /* --limit N, 0: all */
    long sample;             /* --sample N, 0: all */
    long seed;               /* --seed, default 1 */
    long raw;                /* --raw: keep the model's answer */
    long confidence;         /* --confidence, also set by --min-confidence or --votes */
    long rescore;            /* --rescore: report on -o without a request */
    double min_confidence;   /* --min-confidence P, -1: none */
    double vote_temperature; /* default 0.7 */
};

/* Fill O from ARGV and, with -c, from the config file.
 * Returns 0 to run; 1 when --help or --version was printed (exit 0);
 * -1 on bad usage, with one line naming the flag or key in ERR (exit 2).
 * O must be zeroed before; free it with opts_free() in every case. */
int opts_parse(struct opts *o, int argc, char **argv, char *err, size_t errlen);

void opts_free(struct opts *o);

/* Turn an endpoint in any of Ollama's OLLAMA_HOST forms into a base URL
 * without a trailing '/', e.g. "http://127.0.0.1:11434", in OUT, read as
 * Ollama's envconfig.Host() reads it: blanks around it trimmed; "host",
 * "host:port", ":port" (this machine), a bare or bracketed IPv6 address,
 * "http://host[:port][/path]" (port 80 when none), "https://..." (443);
 * without a scheme the port is 11434 ("ollama.com" alone is
 * https://ollama.com:443). A port that is not 0-65535 falls back to that
 * default with a warning on stderr when FROM_ENV ($OLLAMA_HOST, as Ollama
 * does), and is an error for --url. Returns 0, or -1 with one line naming
 * --url or $OLLAMA_HOST and the value in ERR (another scheme, port 0, or a
 * URL libcurl would refuse: bad usage, never an error per item). */
int opts_endpoint_url(const char *spec, int from_env, struct buf *out, char *err, size_t errlen);

#endif
