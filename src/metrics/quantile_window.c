/*
 * Log-linear bucket counts and their time-sliced ring. Bucket layout, for value v:
 *   v < 16:  bucket v (exact).
 *   else:    e = floor(log2 v) in 4..35, bucket 16 * (e - 3) + (v >> (e - 4)) - 16,
 *            which covers [m << (e - 4), (m + 1) << (e - 4)) for m = v >> (e - 4) in 16..31.
 */
#include "metrics/quantile_window.h"

#include <string.h>

static const int64_t max_exact_value = QUILL__QUANTILE_SUB_BUCKETS - 1;

size_t quill__quantile_bucket_index(int64_t value) {
    if (value <= max_exact_value) {
        return value < 0 ? 0 : (size_t)value;
    }
    if (value >= ((int64_t)1 << QUILL__QUANTILE_MAX_EXPONENT)) {
        return QUILL__QUANTILE_N_BUCKETS - 1;
    }
    int exponent = 63 - __builtin_clzll((unsigned long long)value);
    int shift = exponent - 4;
    int64_t mantissa = value >> shift; /* 16..31 */
    return (size_t)(QUILL__QUANTILE_SUB_BUCKETS * (exponent - 3) + (mantissa - 16));
}

int64_t quill__quantile_bucket_midpoint(size_t bucket) {
    if (bucket < QUILL__QUANTILE_SUB_BUCKETS) {
        return (int64_t)bucket;
    }
    int exponent = (int)(bucket / QUILL__QUANTILE_SUB_BUCKETS) + 3;
    int64_t mantissa = (int64_t)(bucket % QUILL__QUANTILE_SUB_BUCKETS) + 16;
    int shift = exponent - 4;
    int64_t lower = mantissa << shift;
    int64_t width = (int64_t)1 << shift;
    return lower + width / 2;
}

static void counts_add_sample(quill__quantile_counts *counts, int64_t value) {
    counts->buckets[quill__quantile_bucket_index(value)] += 1;
    if (counts->count == 0 || value < counts->min) {
        counts->min = value;
    }
    counts->count += 1;
    if (value > counts->max) {
        counts->max = value;
    }
}

static void counts_merge(quill__quantile_counts *into, const quill__quantile_counts *from) {
    for (size_t i = 0; i < QUILL__QUANTILE_N_BUCKETS; i++) {
        into->buckets[i] += from->buckets[i];
    }
    if (from->count > 0 && (into->count == 0 || from->min < into->min)) {
        into->min = from->min;
    }
    into->count += from->count;
    if (from->max > into->max) {
        into->max = from->max;
    }
}

/* Nearest rank: the sample at 1-based rank ceil(q_permille * count / 1000). */
static int64_t counts_percentile(const quill__quantile_counts *counts, uint64_t q_permille) {
    if (counts->count == 0) {
        return 0;
    }
    uint64_t rank = (counts->count * q_permille + 999) / 1000;
    if (rank == 0) {
        rank = 1;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < QUILL__QUANTILE_N_BUCKETS; i++) {
        seen += counts->buckets[i];
        if (seen >= rank) {
            int64_t value = quill__quantile_bucket_midpoint(i);
            if (value < counts->min) {
                return counts->min;
            }
            return value > counts->max ? counts->max : value;
        }
    }
    return counts->max;
}

static void counts_summarize(const quill__quantile_counts *counts,
                             quill__quantile_summary *summary) {
    summary->count = counts->count;
    summary->p50 = counts_percentile(counts, 500);
    summary->p95 = counts_percentile(counts, 950);
    summary->p99 = counts_percentile(counts, 990);
    summary->max = counts->max;
}

void quill__quantile_window_init(quill__quantile_window *window, int64_t slice_us) {
    memset(window, 0, sizeof(*window));
    window->slice_us = slice_us > 0 ? slice_us : 1;
    for (size_t i = 0; i < QUILL__QUANTILE_N_SLICES; i++) {
        window->slice_epochs[i] = -1;
    }
}

bool quill__quantile_epoch_is_live(int64_t epoch, int64_t current_epoch) {
    return epoch >= 0 && epoch <= current_epoch && current_epoch - epoch < QUILL__QUANTILE_N_SLICES;
}

void quill__quantile_window_observe(quill__quantile_window *window, int64_t now_us,
                                    int64_t value) {
    if (value < 0) {
        value = 0;
    }
    counts_add_sample(&window->total, value);

    /* A slot still holding an older epoch has left the window, so it is reused from empty. */
    int64_t epoch = (now_us < 0 ? 0 : now_us) / window->slice_us;
    size_t slot = (size_t)(epoch % QUILL__QUANTILE_N_SLICES);
    if (window->slice_epochs[slot] != epoch) {
        memset(&window->slices[slot], 0, sizeof(window->slices[slot]));
        window->slice_epochs[slot] = epoch;
    }
    counts_add_sample(&window->slices[slot], value);
}

void quill__quantile_window_summarize(const quill__quantile_window *window, int64_t now_us,
                                      bool is_windowed, quill__quantile_summary *summary) {
    memset(summary, 0, sizeof(*summary));
    if (!is_windowed) {
        counts_summarize(&window->total, summary);
        return;
    }

    /* 4 KiB of counts on the stack: the merged live slices. */
    quill__quantile_counts merged;
    memset(&merged, 0, sizeof(merged));
    int64_t current_epoch = (now_us < 0 ? 0 : now_us) / window->slice_us;
    for (size_t i = 0; i < QUILL__QUANTILE_N_SLICES; i++) {
        if (quill__quantile_epoch_is_live(window->slice_epochs[i], current_epoch)) {
            counts_merge(&merged, &window->slices[i]);
        }
    }
    counts_summarize(&merged, summary);
}
