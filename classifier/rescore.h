/* rescore.h - --rescore: the report on an existing results file, without a
 * request: counts per label, errors, confidence and review marks (with
 * --min-confidence applied anew to the confidences written), and with gold
 * labels the accuracy (of the marked and unmarked parts, by confidence
 * band) and the confusion table.
 *
 * Each id counts once: its first labelled line, else (only errors) its
 * first error line, so a file resumed after errors is read as the run
 * left it. The gold label of an id is its line's --gold-field (a field
 * kept with --keep-fields, under its own name or as input_NAME), else the
 * item's with that id in -i ITEMS when given. */
#ifndef CLS_RESCORE_H
#define CLS_RESCORE_H

#include <stddef.h>

#include "labels.h"
#include "opts.h"

/* Read O's results (-o) and items (-i, optional) and print the report.
 * Returns 0, or -1 with a reason in ERR (unreadable file: exit 2). */
int rescore_run(const struct opts *o, const struct labels *labels, char *err, size_t errlen);

#endif
