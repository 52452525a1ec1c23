/*
 * Fixed-bucket histograms in the Prometheus style: an observation lands in the first bucket
 * whose upper bound is >= the value, plus an implicit +Inf bucket. Values and bounds are
 * integers in the caller's unit (microseconds or tokens), so bucket choice never depends on
 * float rounding. One thread at a time: the registry's mutex guards every histogram.
 */
#ifndef QUILL_METRICS_HISTOGRAM_H
#define QUILL_METRICS_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

enum { QUILL__HISTOGRAM_MAX_BOUNDS = 24 };

typedef struct quill__histogram {
    const int64_t *bounds;  /* ascending upper bounds, borrowed static table */
    size_t n_bounds;        /* entries in bounds, at most QUILL__HISTOGRAM_MAX_BOUNDS */
    uint64_t counts[QUILL__HISTOGRAM_MAX_BOUNDS + 1]; /* per bucket, not cumulative; the last
                                                         one is +Inf */
    uint64_t count;         /* observations */
    int64_t sum;            /* sum of observations, saturating at INT64_MAX */
} quill__histogram;

/* Initializes an empty histogram over bounds (ascending, borrowed for the histogram's life).
 * Bounds past the first QUILL__HISTOGRAM_MAX_BOUNDS are ignored. */
void quill__histogram_init(quill__histogram *histogram, const int64_t *bounds, size_t n_bounds);

/* Returns the bucket of value: the index of the first bound >= value, or n_bounds (+Inf). */
size_t quill__histogram_bucket_index(const int64_t *bounds, size_t n_bounds, int64_t value);

/* Adds one observation. */
void quill__histogram_observe(quill__histogram *histogram, int64_t value);

/* Returns the number of observations <= bounds[bucket], or all of them for bucket n_bounds,
 * as Prometheus' cumulative _bucket series needs. */
uint64_t quill__histogram_cumulative(const quill__histogram *histogram, size_t bucket);

#endif
