/* verdict.c - see verdict.h. */
#include "verdict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logprob.h"

/* What the endpoint's replies have shown about logprobs. */
enum lp_state { LP_UNKNOWN, LP_YES, LP_NO };

struct verdicts {
    const struct batch_conf *conf;
    enum lp_state lp;
    int warned_none, warned_mixed;
};

struct verdicts *verdict_new(const struct batch_conf *conf)
{
    struct verdicts *a = calloc(1, sizeof *a);
    if (a)
        a->conf = conf;
    return a;
}

void verdict_free(struct verdicts *a)
{
    free(a);
}

int verdict_first_kind(const struct verdicts *a)
{
    if (!a->conf->confidence)
        return REQ_PLAIN;
    if (a->lp != LP_NO)
        return REQ_LOGPROBS;
    return a->conf->votes ? REQ_VOTE : REQ_PLAIN;
}

/* The item's result, the parts every line has filled in. */
static void result_of(const struct verdicts *a, const struct job *job, struct result *res)
{
    memset(res, 0, sizeof *res);
    res->id = job->id.data;
    res->id_len = job->id.len;
    res->line = job->line;
    res->confidence = -1;
    res->review = -1;
    res->ms = (long)(job->ms + 0.5);
    res->attempts = job->attempts;
    res->fields = job->fields;
    if (a->conf->raw && job->raw.data) {
        res->raw = job->raw.data;
        res->raw_len = job->raw.len;
    }
}

static const char *gold_of(const struct job *job)
{
    return job->has_gold ? job->gold.data : NULL;
}

static int record_label(struct verdicts *a, struct job *job, int label, double conf,
                        enum conf_source src, const char *votes, char *err, size_t errlen)
{
    struct result res;
    struct stats *st = a->conf->st;
    result_of(a, job, &res);
    res.label = a->conf->labels->names[label];
    res.confidence = conf;
    res.review = stats_review(st, conf);
    res.votes = votes;
    /* Counted once written: the summary claims no line that is not there. */
    if (results_write(a->conf->out, &res, err, errlen) < 0)
        return -1;
    stats_labelled(st, label, conf, src, gold_of(job), job->gold.len);
    return 0;
}

int verdict_error(struct verdicts *a, struct job *job, enum err_kind k, const char *text, char *err,
                  size_t errlen)
{
    struct result res;
    result_of(a, job, &res);
    res.error = text;
    res.ms = -1;
    if (results_write(a->conf->out, &res, err, errlen) < 0)
        return -1;
    stats_failed(a->conf->st, k, gold_of(job), job->gold.len);
    return 0;
}

int verdict_empty(struct verdicts *a, struct job *job, char *err, size_t errlen)
{
    static const char note[] = "empty text: not sent";
    struct result res;
    stats_empty(a->conf->st);
    if (a->conf->abstain < 0)
        return verdict_error(a, job, ERR_EMPTY, note, err, errlen);
    result_of(a, job, &res);
    res.label = a->conf->labels->names[a->conf->abstain];
    res.note = note;
    res.ms = -1;
    if (results_write(a->conf->out, &res, err, errlen) < 0)
        return -1;
    stats_labelled(a->conf->st, a->conf->abstain, -1, CONF_NONE, gold_of(job), job->gold.len);
    return 0;
}

/* Make JOB's next request a vote (its first when START). */
static int ask_vote(struct verdicts *a, struct job *job, int start)
{
    if (start) {
        memset(job->votes, 0, (a->conf->labels->n + 1) * sizeof *job->votes);
        job->nvotes = 0;
        if (request_body(a->conf->tpl, REQ_VOTE, job->text.data ? job->text.data : "",
                         job->text.len, &job->body) < 0)
            return -1;
        job->kind = REQ_VOTE;
    }
    job->nvotes++;
    return 0;
}

/* The reply carried no logprobs: say so once, and tell whether the item
 * falls back on votes. */
static void no_logprobs(struct verdicts *a)
{
    if (a->lp == LP_YES) {
        if (!a->warned_mixed++)
            fprintf(stderr,
                    "ollama-classify: some replies carry no logprobs while others do "
                    "(an Ollama older than 0.12.11 behind a proxy?): those items %s\n",
                    a->conf->votes ? "are voted on (--votes)" : "get no confidence");
        return;
    }
    a->lp = LP_NO;
    if (!a->warned_none++)
        fprintf(stderr,
                "ollama-classify: the endpoint gives no logprobs (Ollama 0.12.11 or newer "
                "does): %s\n",
                a->conf->votes ? "the confidence comes from --votes samples instead"
                               : "no confidence (--votes N estimates it from N samples)");
}

/* The last vote is in: the most common answer wins. */
static int close_votes(struct verdicts *a, struct job *job, char *err, size_t errlen)
{
    const struct labels *l = a->conf->labels;
    struct buf votes = {0};
    int best = -1, rc;
    for (size_t i = 0; i < l->n; i++) {
        if (!job->votes[i])
            continue;
        buf_puts(&votes, votes.len ? "," : "{");
        buf_json_string(&votes, l->names[i], strlen(l->names[i]));
        char n[24];
        snprintf(n, sizeof n, ":%d", job->votes[i]);
        buf_puts(&votes, n);
        if (best < 0 || job->votes[i] > job->votes[best])
            best = (int)i;
    }
    if (best < 0) {
        char text[96];
        snprintf(text, sizeof text, "no vote of %d inside the labels", job->nvotes);
        rc = verdict_error(a, job, ERR_OFF_LABEL, text, err, errlen);
    } else {
        buf_puts(&votes, "}");
        rc = record_label(a, job, best, (double)job->votes[best] / job->nvotes, CONF_VOTES,
                          votes.data, err, errlen);
    }
    buf_free(&votes);
    return rc;
}

static enum verdict_next on_vote(struct verdicts *a, struct job *job, const struct reply *rp,
                                 int no_more, char *err, size_t errlen)
{
    job->votes[rp->answer == ANSWER_LABEL ? (size_t)rp->label : a->conf->labels->n]++;
    if (job->nvotes < a->conf->votes && !no_more && ask_vote(a, job, 0) == 0)
        return VERDICT_AGAIN;
    return close_votes(a, job, err, errlen) < 0 ? VERDICT_WRITE_FAILED : VERDICT_RECORDED;
}

/* An answer outside the labels: one resend, then an error. */
static enum verdict_next off_label(struct verdicts *a, struct job *job, const struct reply *rp,
                                   int no_more, char *err, size_t errlen)
{
    char text[260];
    enum err_kind k = rp->answer == ANSWER_OFF_LABEL ? ERR_OFF_LABEL : ERR_BAD_ANSWER;
    if (job->label_retries < 1 && !no_more) {
        job->label_retries++;
        stats_retried(a->conf->st, k);
        return VERDICT_AGAIN;
    }
    if (rp->answer == ANSWER_OFF_LABEL)
        snprintf(text, sizeof text, "answer outside the labels: \"%s\"", rp->what);
    else
        snprintf(text, sizeof text, "bad answer: %s", rp->what);
    return verdict_error(a, job, k, text, err, errlen) < 0 ? VERDICT_WRITE_FAILED
                                                           : VERDICT_RECORDED;
}

/* A label at temperature 0; with logprobs asked for, its confidence. */
static enum verdict_next on_label(struct verdicts *a, struct job *job, const struct reply *rp,
                                  int no_more, char *err, size_t errlen)
{
    double conf = -1;
    enum conf_source src = CONF_NONE;
    if (job->kind == REQ_LOGPROBS && !rp->logprobs) {
        no_logprobs(a);
        if (a->conf->votes && !no_more && ask_vote(a, job, 1) == 0)
            return VERDICT_AGAIN;
    } else if (job->kind == REQ_LOGPROBS) {
        a->lp = LP_YES;
        if (logprob_confidence(rp->logprobs, a->conf->labels, rp->label, &conf) == 0)
            src = CONF_LOGPROBS;
        else
            conf = -1;
    }
    return record_label(a, job, rp->label, conf, src, NULL, err, errlen) < 0 ? VERDICT_WRITE_FAILED
                                                                             : VERDICT_RECORDED;
}

enum verdict_next verdict_reply(struct verdicts *a, struct job *job, int no_more, char *err,
                                size_t errlen)
{
    struct reply rp;
    enum verdict_next next;
    request_reply(a->conf->labels, job->resp.data, job->resp.len, &rp);
    struct timing t = {job->ms, job->ttfb_ms, rp.total_ms, rp.load_ms, rp.prompt_ms, rp.eval_ms};
    stats_request(a->conf->st, &t);
    buf_clear(&job->raw);
    if (rp.content)
        buf_set(&job->raw, rp.content, rp.content_len);
    if (job->kind == REQ_VOTE)
        next = on_vote(a, job, &rp, no_more, err, errlen);
    else if (rp.answer == ANSWER_LABEL)
        next = on_label(a, job, &rp, no_more, err, errlen);
    else
        next = off_label(a, job, &rp, no_more, err, errlen);
    request_reply_free(&rp);
    return next;
}
