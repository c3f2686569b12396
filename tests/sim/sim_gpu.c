/* sim_gpu.c - the simulated GPU: how fast one loaded model generates and
 * processes prompts, as a function of how many sequences it has in flight.
 *
 * A curve maps B, the sequences in flight on one model, to the AGGREGATE
 * tokens/s of that model: points "B:TPS,...", linear in between, through
 * the origin below the first point, flat beyond the last (the sim does not
 * extrapolate a measurement it does not have). The shape is what a GPU
 * does: decoding is memory-bound, so 8 or 16 sequences per step cost little
 * more than one, until compute runs out and the curve flattens (the knee).
 *
 *   generation  --curve        B = slots of the model held (its busy count);
 *                              each of them generates at curve(B) / B tokens/s
 *   prompts     --prompt-curve P = slots of the model in prompt processing;
 *                              each prompt advances at pcurve(P) / P tokens/s
 *
 * With no --curve the curve is Ollama-sim's older rule, a special case:
 * curve(B) = B * tokens_per_s / (1 + slowdown * (B - 1)). With no
 * --prompt-curve the time to first token is the fixed --ttft-ms.
 *
 * The presets are llama-batched-bench tables published by llama.cpp (see
 * presets[] and tests/sim/README.md): real measurements, one GPU and model
 * each, never invented figures.
 *
 * Pace clocks. Rates change whenever a slot is taken or freed, so a job
 * cannot just count time since it started. Each model integrates its rates
 * instead: gen_work is the tokens ONE slot has generated since time began
 * (the integral of curve(B)/B), prompt_work likewise for one prompt. A job
 * notes the clock when its phase starts and is due token k when gen_work
 * has advanced by k. gpu_settle() brings both integrals up to now and must
 * run before busy or prompting change; the job timers are then re-armed
 * (job_repace), so the piecewise-constant rates are integrated exactly. */
#include "sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

#define GPU_POINTS 64

struct gpu_curve {
    int n; /* 0: no curve */
    double b[GPU_POINTS], tps[GPU_POINTS];
};

/* One published llama-batched-bench run: S_TG (generation) and S_PP
 * (prompt processing) t/s at B = 1..32 parallel sequences. */
struct gpu_preset {
    const char *name, *what;
    const char *gen, *prompt;
};

/* ggml-org/llama.cpp benches/dgx-spark.md (commit 4c7e9893, llama.cpp build
 * 2f68ce7cf (6918)): NVIDIA DGX Spark (GB10, 128 GB unified memory, CUDA
 * 13.0), llama-batched-bench with flash_attn = 1, n_batch = n_ubatch = 2048,
 * prompts not shared, the PP = 512, TG = 32 rows. The first row is the
 * default (--gpu default). */
static const struct gpu_preset presets[] = {
    {"gb10-gpt-oss-20b", "DGX Spark (GB10), gpt-oss 20B MXFP4 MoE (ollama gpt-oss:20b)",
     "1:81.11,2:95.00,4:151.90,8:254.09,16:400.94,32:614.82",
     "1:1311.72,2:3754.20,4:3965.01,8:3994.63,16:3988.71,32:3986.29"},
    {"gb10-gpt-oss-120b", "DGX Spark (GB10), gpt-oss 120B MXFP4 MoE",
     "1:57.28,2:60.35,4:95.08,8:146.65,16:220.02,32:312.56",
     "1:846.15,2:1749.57,4:1995.16,8:1997.01,16:1987.35,32:1983.16"},
    {"gb10-qwen3-coder-30b", "DGX Spark (GB10), Qwen3-Coder 30B-A3B Q8_0 MoE",
     "1:57.63,2:64.11,4:102.01,8:154.91,16:232.98,32:345.01",
     "1:1275.89,2:2884.04,4:3333.11,8:3371.40,16:3379.01,32:3381.63"},
    {"gb10-qwen2.5-coder-7b", "DGX Spark (GB10), Qwen2.5-Coder 7B Q8_0 (dense)",
     "1:29.24,2:54.46,4:104.33,8:195.67,16:335.01,32:593.27",
     "1:2379.83,2:2416.31,4:2328.41,8:2356.86,16:2359.65,32:2355.21"},
    {"gb10-gemma3-4b", "DGX Spark (GB10), Gemma 3 4B QAT Q4_0 (dense)",
     "1:78.38,2:126.21,4:231.11,8:369.93,16:550.47,32:801.81",
     "1:5236.19,2:5984.52,4:5981.45,8:6077.05,16:6115.09,32:6123.63"},
};
#define NPRESETS (sizeof presets / sizeof presets[0])

static struct gpu_curve gen_curve, prompt_curve;
static char described[160];

static const struct gpu_preset *find_preset(const char *name)
{
    if (!strcmp(name, "default"))
        return &presets[0];
    for (size_t i = 0; i < NPRESETS; i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

/* "B:TPS,..." with B >= 1 strictly increasing and TPS > 0. Returns 0, or
 * -1 with the reason in ERR. */
static int parse_points(const char *spec, struct gpu_curve *c, char *err, size_t errlen)
{
    const char *p = spec;
    c->n = 0;
    while (*p) {
        char *end;
        double b = strtod(p, &end);
        if (end == p || *end != ':' || b < 1 || b != floor(b) || b > 1e6)
            goto bad;
        p = end + 1;
        double tps = strtod(p, &end);
        if (end == p || !(tps > 0) || tps > 1e9 || (*end && *end != ','))
            goto bad;
        if (c->n == GPU_POINTS) {
            snprintf(err, errlen, "more than %d points", GPU_POINTS);
            return -1;
        }
        if (c->n > 0 && b <= c->b[c->n - 1]) {
            snprintf(err, errlen, "in-flight counts must increase (%g after %g)", b,
                     c->b[c->n - 1]);
            return -1;
        }
        c->b[c->n] = b;
        c->tps[c->n++] = tps;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            goto bad;
    }
    if (c->n > 0)
        return 0;
bad:
    snprintf(err, errlen, "expected B:TOKENS_PER_S,... (e.g. 1:80,4:150,16:400) or a preset name");
    return -1;
}

/* SPEC is a list of points or a preset name; PROMPT picks the preset's
 * prompt curve. Returns 0 or -1 with ERR filled. */
static int parse_curve(const char *spec, int prompt, struct gpu_curve *c, char *err, size_t errlen)
{
    const struct gpu_preset *g = find_preset(spec);
    if (g)
        return parse_points(prompt ? g->prompt : g->gen, c, err, errlen);
    if (*spec < '0' || *spec > '9') {
        snprintf(err, errlen, "no preset named \"%s\" (ollama-sim --gpu list)", spec);
        return -1;
    }
    return parse_points(spec, c, err, errlen);
}

static void describe(void)
{
    char gen[64], pp[64];
    if (simcfg.curve)
        snprintf(gen, sizeof gen, "curve %s", find_preset(simcfg.curve) ? simcfg.curve : "custom");
    else
        snprintf(gen, sizeof gen, "%g tokens/s per slot, slowdown %g", simcfg.tokens_per_s,
                 simcfg.slowdown);
    if (simcfg.prompt_curve)
        snprintf(pp, sizeof pp, "prompt curve %s",
                 find_preset(simcfg.prompt_curve) ? simcfg.prompt_curve : "custom");
    else
        snprintf(pp, sizeof pp, "ttft %g ms", simcfg.ttft_ms);
    snprintf(described, sizeof described, "%s, %s", gen, pp);
}

int gpu_init(char *err, size_t errlen)
{
    char why[160];
    if (simcfg.gpu) {
        if (!find_preset(simcfg.gpu)) {
            snprintf(err, errlen, "--gpu: no preset named \"%s\" (ollama-sim --gpu list)",
                     simcfg.gpu);
            return -1;
        }
        if (!simcfg.curve)
            simcfg.curve = simcfg.gpu;
        if (!simcfg.prompt_curve)
            simcfg.prompt_curve = simcfg.gpu;
    }
    if (simcfg.curve && parse_curve(simcfg.curve, 0, &gen_curve, why, sizeof why)) {
        snprintf(err, errlen, "--curve: %s", why);
        return -1;
    }
    if (simcfg.prompt_curve &&
        parse_curve(simcfg.prompt_curve, 1, &prompt_curve, why, sizeof why)) {
        snprintf(err, errlen, "--prompt-curve: %s", why);
        return -1;
    }
    describe();
    return 0;
}

void gpu_list(FILE *out)
{
    fprintf(out, "Presets (--gpu NAME, or NAME for --curve / --prompt-curve), from\n"
                 "llama.cpp benches/dgx-spark.md, llama-batched-bench PP=512 TG=32:\n");
    for (size_t i = 0; i < NPRESETS; i++)
        fprintf(out, "  %-22s %s%s\n    generation %s\n    prompts    %s\n", presets[i].name,
                presets[i].what, i == 0 ? " [default]" : "", presets[i].gen, presets[i].prompt);
}

const char *gpu_describe(void)
{
    return described;
}

static double curve_at(const struct gpu_curve *c, double b)
{
    if (b <= c->b[0])
        return c->tps[0] * b / c->b[0];
    for (int i = 1; i < c->n; i++)
        if (b <= c->b[i]) {
            double t = (b - c->b[i - 1]) / (c->b[i] - c->b[i - 1]);
            return c->tps[i - 1] + t * (c->tps[i] - c->tps[i - 1]);
        }
    return c->tps[c->n - 1];
}

double gpu_gen_total(int b)
{
    if (b < 1)
        b = 1;
    if (gen_curve.n)
        return curve_at(&gen_curve, b);
    return b * simcfg.tokens_per_s / (1.0 + simcfg.slowdown * (b - 1));
}

double gpu_prompt_total(int p)
{
    if (!prompt_curve.n)
        return 0;
    return curve_at(&prompt_curve, p < 1 ? 1 : p);
}

int gpu_instant(void)
{
    return !gen_curve.n && simcfg.tokens_per_s <= 0;
}

int gpu_has_prompt_curve(void)
{
    return prompt_curve.n > 0;
}

double gpu_slot_rate(const struct model *m)
{
    int b = m->busy < 1 ? 1 : m->busy;
    return gpu_gen_total(b) / b;
}

double gpu_prompt_rate(const struct model *m)
{
    int p = m->prompting < 1 ? 1 : m->prompting;
    return gpu_prompt_total(p) / p;
}

void gpu_settle(struct model *m)
{
    long long now = net_now_ns();
    if (m->clock_ns && now > m->clock_ns) {
        double dt = (double)(now - m->clock_ns) / 1e9 * simcfg.time_scale;
        m->gen_work += dt * gpu_slot_rate(m);
        if (prompt_curve.n)
            m->prompt_work += dt * gpu_prompt_rate(m);
    }
    m->clock_ns = now;
}
