/*
 * Fixed-bucket histograms. The bucket search is linear because tables have at most
 * QUILL__HISTOGRAM_MAX_BOUNDS entries.
 */
#include "metrics/histogram.h"

#include <string.h>

void quill__histogram_init(quill__histogram *histogram, const int64_t *bounds, size_t n_bounds) {
    memset(histogram, 0, sizeof(*histogram));
    if (n_bounds > QUILL__HISTOGRAM_MAX_BOUNDS) {
        n_bounds = QUILL__HISTOGRAM_MAX_BOUNDS;
    }
    histogram->bounds = bounds;
    histogram->n_bounds = n_bounds;
}

size_t quill__histogram_bucket_index(const int64_t *bounds, size_t n_bounds, int64_t value) {
    for (size_t i = 0; i < n_bounds; i++) {
        if (value <= bounds[i]) {
            return i;
        }
    }
    return n_bounds;
}

void quill__histogram_observe(quill__histogram *histogram, int64_t value) {
    size_t bucket = quill__histogram_bucket_index(histogram->bounds, histogram->n_bounds, value);
    histogram->counts[bucket] += 1;
    histogram->count += 1;
    if (__builtin_add_overflow(histogram->sum, value, &histogram->sum)) {
        histogram->sum = INT64_MAX;
    }
}

uint64_t quill__histogram_cumulative(const quill__histogram *histogram, size_t bucket) {
    uint64_t total = 0;
    for (size_t i = 0; i <= bucket && i <= histogram->n_bounds; i++) {
        total += histogram->counts[i];
    }
    return total;
}
