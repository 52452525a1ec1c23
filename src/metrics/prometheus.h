/*
 * Pieces of the Prometheus text exposition format 0.0.4 shared with tests: label escaping and
 * exact decimal printing of scaled integers.
 */
#ifndef QUILL_METRICS_PROMETHEUS_H
#define QUILL_METRICS_PROMETHEUS_H

#include <stdint.h>

#include "base/strbuf.h"
#include "quill/status.h"

/* Appends value as a quoted label value, escaping backslash, double quote and line feed as
 * the format requires. */
quill_status quill__prometheus_append_label_value(quill_strbuf *buffer, const char *value);

/* Appends value / 10^n_decimals exactly, without trailing zeros ("0.005", "12", "-1.5").
 * n_decimals is 0..18. */
quill_status quill__prometheus_append_scaled(quill_strbuf *buffer, int64_t value,
                                             int n_decimals);

#endif
