/* sim_main.c - ollama-sim: command line, event loop, signals, teardown. */
#include "sim.h"

#include <errno.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "log.h"
#include "net.h"
#include "version.h"

struct sim_cfg simcfg;
struct sim_counts simstats;
struct event_base *simbase;

/* Options given on the command line, for the ones that exclude each other. */
static int set_tps, set_slowdown, set_ttft;

static const char usage[] =
    "usage: ollama-sim --port N [options]\n"
    "A fast Ollama simulator for tests and benchmarks: Ollama's HTTP API, framing,\n"
    "status codes, error texts and scheduling, with no GPU and no model.\n"
    "\n"
    "  --host H            address to listen on (default 127.0.0.1)\n"
    "  --port N            port (required; 0 = any free port). Logs one line\n"
    "                      \"listening on HOST:PORT\" on stderr once ready\n"
    "  --models LIST       installed models, comma-separated, any name form\n"
    "                      (default llama3:latest; names containing \"embed\", or\n"
    "                      given as NAME=embed, are embedding models: /api/embed\n"
    "                      only, always 1 slot)\n"
    "  --parallel N        slots per loaded model, OLLAMA_NUM_PARALLEL (default 1);\n"
    "                      each keeps a prompt cache (llama-server's slots); a\n"
    "                      request with another options.num_ctx reloads the model\n"
    "  --cache-ram TOKENS  llama-server's host-memory prompt cache (--cache-ram,\n"
    "                      8 GiB by default there): a slot's prompt about to be\n"
    "                      lost is saved, and a request brings back a saved one\n"
    "                      that shares more of it; at most TOKENS kept, oldest\n"
    "                      dropped first (default 0: none, slots only)\n"
    "  --max-loaded N      models loaded at once, OLLAMA_MAX_LOADED_MODELS (default 3)\n"
    "  --load-ms MS        time to load a model (default 0)\n"
    "  --max-queue N       requests waiting for a model load, OLLAMA_MAX_QUEUE;\n"
    "                      beyond it 503 busy at once (default 512)\n"
    "  --keep-alive S      default keep-alive in seconds, <0 = forever (default 300)\n"
    "  --ttft-ms MS        time to first token: prompt processing (default 20;\n"
    "                      embeddings take a quarter of it)\n"
    "  --tokens N          tokens in a free-text reply (default 24);\n"
    "                      options.num_predict / max_tokens cap it\n"
    "  --tokens-per-s F    generation speed of one slot (default 50; 0 = instant)\n"
    "  --slowdown F        with B slots of a model busy, each slot generates at\n"
    "                        tokens_per_s / (1 + F * (B - 1))\n"
    "                      so throughput B * rate grows sub-linearly (default 0.15)\n"
    "GPU model (measured batching curves; see tests/sim/README.md):\n"
    "  --curve LIST        aggregate generation tokens/s of a model by sequences in\n"
    "                      flight, \"B:TPS,...\" (e.g. 1:81,4:152,16:401,32:615),\n"
    "                      linear in between, flat beyond the last point, or a\n"
    "                      preset name; with B slots busy each generates at\n"
    "                      curve(B) / B. Replaces --tokens-per-s and --slowdown\n"
    "  --prompt-curve LIST the same for prompt processing (prompt tokens/s by\n"
    "                      prompts in process): time to first token = the prompt\n"
    "                      tokens not in the slot's cache (all: ~ characters / 4\n"
    "                      + 8) at pcurve(P) / P each. Replaces --ttft-ms for\n"
    "                      generation\n"
    "  --gpu NAME          both curves from a preset (default: none, the rules\n"
    "                      above); \"--gpu default\" is gb10-gpt-oss-20b,\n"
    "                      \"--gpu list\" prints the presets and their source\n"
    "  --time-scale F      run F times faster than real time; durations in replies\n"
    "                      stay in simulated ns (default 1)\n"
    "Test knobs (Ollama has none of these):\n"
    "  --max-waiting N     503 busy once N requests wait for a slot (0 = unlimited,\n"
    "                      the default, as in Ollama)\n"
    "  --fail-rate P       share of inference requests answered 500\n"
    "                      {\"error\":\"simulated failure\"} (default 0)\n"
    "  --reset-rate P      share of inference requests whose connection is reset\n"
    "                      with no response (default 0)\n"
    "  --stream-fail-rate P  share of streamed replies cut halfway by an in-band\n"
    "                      {\"error\":\"simulated failure\"} line after status 200\n"
    "                      (as Ollama reports a failure mid-stream; default 0)\n"
    "  --off-label-rate P  share of enum-format answers given a value outside the\n"
    "                      enum (default 0)\n"
    "  --seed N            seed for the random choices above (default 1)\n"
    "  -h, --help          this text;  --version  the version\n"
    "\n"
    "Besides Ollama's native API and /v1 chat, completions, embeddings and models:\n"
    "/v1/messages (Anthropic), /v1/responses, /v1/models/M, /v1/audio/transcriptions,\n"
    "HEAD/POST /api/blobs/sha256:D (uploads digested as they arrive, never held)\n"
    "and /api/create with files; see tests/sim/README.md.\n"
    "Extra endpoints: GET /_sim/stats (counters, requests per path), POST /_sim/reset\n"
    "(zero them).\n"
    "SIGTERM/SIGINT: exit 0 at once.\n";

/* Long options only; the values index cli_option()'s switch. */
enum {
    O_HOST = 256,
    O_PORT,
    O_MODELS,
    O_PARALLEL,
    O_MAXLOADED,
    O_LOADMS,
    O_MAXQUEUE,
    O_CACHERAM,
    O_KEEPALIVE,
    O_TTFT,
    O_TOKENS,
    O_TPS,
    O_SLOWDOWN,
    O_TIMESCALE,
    O_GPU,
    O_CURVE,
    O_PCURVE,
    O_MAXWAITING,
    O_FAIL,
    O_RESET,
    O_STREAMFAIL,
    O_OFFLABEL,
    O_SEED,
    O_VERSION
};

// clang-format off
static const struct option longopts[] = {
    {"host", required_argument, 0, O_HOST},
    {"port", required_argument, 0, O_PORT},
    {"models", required_argument, 0, O_MODELS},
    {"parallel", required_argument, 0, O_PARALLEL},
    {"max-loaded", required_argument, 0, O_MAXLOADED},
    {"load-ms", required_argument, 0, O_LOADMS},
    {"max-queue", required_argument, 0, O_MAXQUEUE},
    {"cache-ram", required_argument, 0, O_CACHERAM},
    {"keep-alive", required_argument, 0, O_KEEPALIVE},
    {"ttft-ms", required_argument, 0, O_TTFT},
    {"tokens", required_argument, 0, O_TOKENS},
    {"tokens-per-s", required_argument, 0, O_TPS},
    {"slowdown", required_argument, 0, O_SLOWDOWN},
    {"time-scale", required_argument, 0, O_TIMESCALE},
    {"gpu", required_argument, 0, O_GPU},
    {"curve", required_argument, 0, O_CURVE},
    {"prompt-curve", required_argument, 0, O_PCURVE},
    {"max-waiting", required_argument, 0, O_MAXWAITING},
    {"fail-rate", required_argument, 0, O_FAIL},
    {"reset-rate", required_argument, 0, O_RESET},
    {"stream-fail-rate", required_argument, 0, O_STREAMFAIL},
    {"off-label-rate", required_argument, 0, O_OFFLABEL},
    {"seed", required_argument, 0, O_SEED},
    {"version", no_argument, 0, O_VERSION},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};
// clang-format on

static void bad(const char *flag, const char *val)
{
    fprintf(stderr, "ollama-sim: bad value for --%s: \"%s\" (see --help)\n", flag, val);
    exit(2);
}

static double num(const char *flag, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || v != v || v < lo || v > hi)
        bad(flag, s);
    return v;
}

static int integer(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        bad(flag, s);
    return (int)v;
}

static void cli_defaults(void)
{
    simcfg.host = "127.0.0.1";
    simcfg.port = -1;
    simcfg.models = "llama3:latest";
    simcfg.parallel = 1;
    simcfg.max_loaded = 3;
    simcfg.max_queue = 512;
    simcfg.keep_alive_s = 300;
    simcfg.ttft_ms = 20;
    simcfg.tokens = 24;
    simcfg.tokens_per_s = 50;
    simcfg.slowdown = 0.15;
    simcfg.time_scale = 1;
    simcfg.seed = 1;
}

static void cli_option(int c, const char *a)
{
    const char *name = NULL;
    for (const struct option *o = longopts; o->name; o++)
        if (o->val == c)
            name = o->name;
    switch (c) {
    case O_HOST: simcfg.host = a; break;
    case O_PORT: simcfg.port = integer(name, a, 0, 65535); break;
    case O_MODELS: simcfg.models = a; break;
    case O_PARALLEL: simcfg.parallel = integer(name, a, 1, 100000); break;
    case O_MAXLOADED: simcfg.max_loaded = integer(name, a, 1, 100000); break;
    case O_LOADMS: simcfg.load_ms = num(name, a, 0, 1e9); break;
    case O_MAXQUEUE: simcfg.max_queue = integer(name, a, 0, 100000000); break;
    case O_CACHERAM: simcfg.cache_ram = integer(name, a, 0, 1000000000); break;
    case O_KEEPALIVE: simcfg.keep_alive_s = num(name, a, -1e18, 1e9); break;
    case O_TTFT: simcfg.ttft_ms = num(name, a, 0, 1e9), set_ttft = 1; break;
    case O_TOKENS: simcfg.tokens = integer(name, a, 1, 1000000); break;
    case O_TPS: simcfg.tokens_per_s = num(name, a, 0, 1e9), set_tps = 1; break;
    case O_SLOWDOWN: simcfg.slowdown = num(name, a, 0, 1e6), set_slowdown = 1; break;
    case O_TIMESCALE: simcfg.time_scale = num(name, a, 1e-6, 1e9); break;
    case O_GPU: simcfg.gpu = a; break;
    case O_CURVE: simcfg.curve = a; break;
    case O_PCURVE: simcfg.prompt_curve = a; break;
    case O_MAXWAITING: simcfg.max_waiting = integer(name, a, 0, 100000000); break;
    case O_FAIL: simcfg.fail_rate = num(name, a, 0, 1); break;
    case O_RESET: simcfg.reset_rate = num(name, a, 0, 1); break;
    case O_STREAMFAIL: simcfg.stream_fail_rate = num(name, a, 0, 1); break;
    case O_OFFLABEL: simcfg.offlabel_rate = num(name, a, 0, 1); break;
    case O_SEED: simcfg.seed = (uint64_t)num(name, a, 0, 1.8e19); break;
    }
}

/* A curve replaces the older knobs: giving both is a mistake, not a choice. */
static void cli_check_gpu(void)
{
    char err[256];
    if ((simcfg.curve || simcfg.gpu) && (set_tps || set_slowdown)) {
        fprintf(stderr, "ollama-sim: --%s replaces --tokens-per-s and --slowdown (see --help)\n",
                simcfg.curve ? "curve" : "gpu");
        exit(2);
    }
    if ((simcfg.prompt_curve || simcfg.gpu) && set_ttft) {
        fprintf(stderr, "ollama-sim: --%s replaces --ttft-ms (see --help)\n",
                simcfg.prompt_curve ? "prompt-curve" : "gpu");
        exit(2);
    }
    if (gpu_init(err, sizeof err)) {
        fprintf(stderr, "ollama-sim: %s (see --help)\n", err);
        exit(2);
    }
}

static void cli_parse(int argc, char **argv)
{
    int c;
    cli_defaults();
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            exit(0);
        } else if (c == O_VERSION) {
            printf("ollama-sim %s (simulates Ollama %s)\n", OP_VERSION, SIM_OLLAMA_VERSION);
            exit(0);
        } else if (c == '?' || c == ':') {
            fprintf(stderr, "ollama-sim: %s: %s (see --help)\n",
                    c == ':' ? "missing value for option" : "unknown option", argv[optind - 1]);
            exit(2);
        }
        cli_option(c, optarg);
    }
    if (optind < argc) {
        fprintf(stderr, "ollama-sim: unexpected argument: %s (see --help)\n", argv[optind]);
        exit(2);
    }
    if (simcfg.gpu && !strcmp(simcfg.gpu, "list")) {
        gpu_list(stdout);
        exit(0);
    }
    cli_check_gpu();
    if (simcfg.port < 0) {
        fprintf(stderr, "ollama-sim: --port is required (see --help)\n");
        exit(2);
    }
}

static int is_loopback(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what, (void)arg;
    log_info("signal %d, exiting", (int)sig);
    event_base_loopbreak(simbase);
}

static struct event_base *make_base(void)
{
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_require_features(ec, EV_FEATURE_EARLY_CLOSE);
    struct event_base *b = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!b) /* no EPOLLRDHUP: fall back, hang-ups then show on the next write */
        b = event_base_new();
    return b;
}

int main(int argc, char **argv)
{
    char err[256];
    cli_parse(argc, argv);
    log_set_name("ollama-sim");
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    simbase = make_base();
    simcfg.loopback = is_loopback(simcfg.host);
    if (sched_init(simcfg.models))
        return 2;
    int fd = net_listen(simcfg.host, simcfg.port, 4096, err, sizeof err);
    if (fd < 0) {
        log_error("%s", err);
        return 1;
    }
    struct evhttp *http = evhttp_new(simbase);
    struct evconnlistener *lev =
        evconnlistener_new(simbase, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 0, fd);
    if (!http || !lev || !evhttp_bind_listener(http, lev)) {
        log_error("cannot set up the HTTP server");
        return 1;
    }
    http_setup(http);
    struct event *sigterm = evsignal_new(simbase, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(simbase, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    log_info("listening on %s:%d (ollama-sim %s, models %s, parallel %d, %s)", simcfg.host,
             net_bound_port(fd), OP_VERSION, simcfg.models, simcfg.parallel, gpu_describe());
    event_base_dispatch(simbase);

    infer_free_all();
    evhttp_free(http);
    sched_free();
    http_free();
    event_free(sigterm);
    event_free(sigint);
    /* A connection freed above may still be referenced by a deferred
     * callback of its bufferevents, which event_base_free would cancel
     * without running: one more turn runs them, and the last reference
     * frees the connection. */
    event_base_loop(simbase, EVLOOP_NONBLOCK);
    event_base_free(simbase);
    libevent_global_shutdown();
    return 0;
}
