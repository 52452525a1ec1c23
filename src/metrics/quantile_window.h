/*
 * Latency percentiles since start and over a sliding window, from log-linear buckets in the
 * style of HdrHistogram. Values below 16 have a bucket each (exact). Above that, every power of
 * two is split into 16 equal buckets, so a bucket spans at most 1/16 of its lower bound and
 * reporting its midpoint is off by at most 1/32 (3.125 %) of the true sample. Values at or
 * above 2^36 (19 hours in microseconds) share the last bucket; the maximum is kept exactly.
 *
 * The window is a ring of QUILL__QUANTILE_N_SLICES time slices. A query merges the slices
 * whose start lies within the window, so it covers between window - slice and window of
 * history (290 to 300 s with the registry's 10 s slices). One thread at a time: the registry's
 * mutex guards every window.
 */
#ifndef QUILL_METRICS_QUANTILE_WINDOW_H
#define QUILL_METRICS_QUANTILE_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    QUILL__QUANTILE_SUB_BUCKETS = 16, /* buckets per power of two; also the exact range */
    QUILL__QUANTILE_MAX_EXPONENT = 36, /* values >= 2^36 go to the last bucket */
    QUILL__QUANTILE_N_BUCKETS =
        QUILL__QUANTILE_SUB_BUCKETS * (QUILL__QUANTILE_MAX_EXPONENT - 4 + 1), /* 528 */
    QUILL__QUANTILE_N_SLICES = 30,
};

typedef struct quill__quantile_counts {
    uint64_t count;                               /* samples */
    int64_t min;                                  /* smallest sample, exact; 0 when empty */
    int64_t max;                                  /* largest sample, exact; 0 when empty */
    uint64_t buckets[QUILL__QUANTILE_N_BUCKETS];  /* samples per log-linear bucket */
} quill__quantile_counts;

typedef struct quill__quantile_window {
    int64_t slice_us;                                    /* duration of one slice */
    quill__quantile_counts total;                        /* every sample since start */
    quill__quantile_counts slices[QUILL__QUANTILE_N_SLICES]; /* ring indexed by epoch % N */
    int64_t slice_epochs[QUILL__QUANTILE_N_SLICES];      /* epoch held by each slice; -1 unused */
} quill__quantile_window;

/* Percentiles by the nearest-rank method: the smallest sample with at least q * count samples
 * at or below it, reported as its bucket's midpoint clamped to [min, max]. */
typedef struct quill__quantile_summary {
    uint64_t count;
    int64_t p50;
    int64_t p95;
    int64_t p99;
    int64_t max;
} quill__quantile_summary;

/* Returns the bucket of value (negative values count as 0). */
size_t quill__quantile_bucket_index(int64_t value);

/* Returns the value reported for a bucket: exact below QUILL__QUANTILE_SUB_BUCKETS, else the
 * midpoint of the bucket's range. */
int64_t quill__quantile_bucket_midpoint(size_t bucket);

/* Empties window; slice_us > 0 is the slice duration, so the window spans
 * QUILL__QUANTILE_N_SLICES * slice_us. */
void quill__quantile_window_init(quill__quantile_window *window, int64_t slice_us);

/* Adds a sample. now_us is time since the registry started (>= 0) on the monotonic clock. */
void quill__quantile_window_observe(quill__quantile_window *window, int64_t now_us,
                                    int64_t value);

/* Summarizes every sample since start, or with is_windowed only the slices inside the window
 * that ends at now_us. */
void quill__quantile_window_summarize(const quill__quantile_window *window, int64_t now_us,
                                      bool is_windowed, quill__quantile_summary *summary);

/* Returns true when a slice that holds epoch is inside the window ending in current_epoch. */
bool quill__quantile_epoch_is_live(int64_t epoch, int64_t current_epoch);

#endif
