/*
 * Matmul throughput of every kernel variant this CPU runs, for each weight type: a 2048 x 2048
 * weight matrix by default, decode (1 token; reported as GB/s of weight bytes read) and prefill
 * (64 tokens by default; reported as GFLOP/s, 2 * rows * cols * tokens per call). Run by hand:
 *
 *   cmake --build build --target quill_lib
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc tools/bench_kernels.c build/libquill.a \
 *      -lpthread -lm -o /tmp/bench_kernels && \
 *      /tmp/bench_kernels [n_threads] [n_prefill_tokens] [n_rows] [n_cols] [variant] [type]
 *
 * n_threads defaults to 1 (the calling thread only). n_rows x n_cols larger than the L3 cache
 * (8192 x 2048 is a Llama-3.2-1B gate matrix) measure memory streaming; variant ("ref",
 * "avx2", "avx512") limits the run to one kernel variant and type ("q4_0", ...) to one weight type.
 * The "(packed)" lines measure the row-group layout with the selected kernel table only, so the
 * AVX2 packed figures need QUILL_KERNELS=avx2 in the environment.
 * Timings use the monotonic clock and take the best of several repetitions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/alloc.h"
#include "base/threadpool.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "kernels/packed.h"
#include "quill/tensor_type.h"

enum { N_MAX_PREFILL_TOKENS = 1024, N_MAX_DIM = 65536 };

/* The weight matrix shape: rows x cols. */
static int64_t bench_rows = 2048;
static int64_t bench_cols = 2048;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Returns the best time of one matmul call over repetitions lasting about min_seconds. Each
 * call reads the next of n_copies copies of the weights, so that with enough copies every call
 * streams its weights from memory as decode does, instead of from the L3 cache. */
static double time_matmul(const quill_kernel_table *table, quill_threadpool *pool,
                          const quill_matrix *weights, int n_copies, const float *x,
                          int64_t n_tokens, float *y, void *scratch, double min_seconds) {
    double best = 1e30;
    double start = now_seconds();
    int n_runs = 0;
    while (n_runs < 2 * n_copies || now_seconds() - start < min_seconds) {
        quill_matrix copy = *weights;
        copy.data = (const uint8_t *)weights->data +
                    (size_t)(n_runs % n_copies) * weights->row_bytes * (size_t)bench_rows;
        double t0 = now_seconds();
        quill__matmul_with_table(table, pool, &copy, x, bench_cols, n_tokens, y, bench_rows,
                                 scratch);
        double elapsed = now_seconds() - t0;
        best = elapsed < best ? elapsed : best;
        n_runs++;
    }
    return best;
}

/* Parses an optional positive integer argument; returns fallback when absent or invalid. */
static long parse_count(int argc, char **argv, int index, long fallback, long max) {
    if (argc <= index) {
        return fallback;
    }
    char *end = NULL;
    long value = strtol(argv[index], &end, 10);
    if (end == argv[index] || *end != '\0' || value < 1 || value > max) {
        fprintf(stderr, "bench_kernels: ignoring argument '%s', expected 1..%ld\n", argv[index],
                max);
        return fallback;
    }
    return value;
}

int main(int argc, char **argv) {
    const uint32_t types[] = {QUILL_TYPE_F32,  QUILL_TYPE_F16,  QUILL_TYPE_BF16, QUILL_TYPE_Q8_0,
                              QUILL_TYPE_Q4_0, QUILL_TYPE_Q4_1, QUILL_TYPE_Q5_0, QUILL_TYPE_Q5_1,
                              QUILL_TYPE_Q4_K, QUILL_TYPE_Q5_K, QUILL_TYPE_Q6_K};
    int n_threads = (int)parse_count(argc, argv, 1, 1, 256);
    int64_t n_prefill = parse_count(argc, argv, 2, 64, N_MAX_PREFILL_TOKENS);
    bench_rows = parse_count(argc, argv, 3, 2048, N_MAX_DIM);
    bench_cols = parse_count(argc, argv, 4, 2048, N_MAX_DIM) / 256 * 256;
    const char *only_variant = argc > 5 ? argv[5] : NULL;
    const char *only_type = argc > 6 ? argv[6] : NULL;
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = n_threads;
    quill_threadpool *pool = NULL;
    if (quill__threadpool_create(&params, &pool) != QUILL_OK) {
        fprintf(stderr, "bench_kernels: cannot create a pool of %d threads\n", n_threads);
        return 1;
    }
    float *w = malloc(sizeof(float) * bench_cols);
    float *x = malloc(sizeof(float) * bench_cols * (size_t)n_prefill);
    float *y = malloc(sizeof(float) * bench_rows * (size_t)n_prefill);
    void *scratch = quill__aligned_alloc(64, (size_t)bench_cols * 2 * (size_t)n_prefill);
    unsigned seed = 1;
    for (int64_t i = 0; i < bench_cols * n_prefill; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }

    printf("threads=%d prefill_tokens=%lld rows=%lld cols=%lld\n", n_threads, (long long)n_prefill,
           (long long)bench_rows, (long long)bench_cols);
    printf("%-6s %-7s %14s %16s\n", "type", "variant", "decode GB/s", "prefill GFLOP/s");
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
        if (only_type != NULL && strcasecmp(quill_type_name(types[k]), only_type) != 0) {
            continue;
        }
        size_t row_bytes = 0;
        quill_type_row_bytes(types[k], bench_cols, &row_bytes);
        uint8_t *data = malloc(row_bytes * bench_rows);
        for (int64_t r = 0; r < bench_rows; r++) {
            for (int64_t i = 0; i < bench_cols; i++) {
                seed = seed * 1103515245u + 12345u;
                w[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
            }
            quill__quantize_row(types[k], w, data + (size_t)r * row_bytes, bench_cols);
        }
        /* Copies of the matrix filling 128 MB, 4x the 32 MB L3 of the EPYC used for tuning. */
        size_t matrix_bytes = row_bytes * (size_t)bench_rows;
        int n_copies = (int)((size_t)128 * 1024 * 1024 / matrix_bytes);
        n_copies = n_copies < 1 ? 1 : (n_copies > 256 ? 256 : n_copies);
        uint8_t *copies = realloc(data, matrix_bytes * (size_t)n_copies);
        if (copies == NULL) {
            fprintf(stderr, "bench_kernels: cannot allocate %d copies of the weights\n", n_copies);
            return 1;
        }
        data = copies;
        for (int c = 1; c < n_copies; c++) {
            memcpy(data + (size_t)c * matrix_bytes, data, matrix_bytes);
        }
        quill_matrix weights = {types[k], bench_rows, bench_cols, data, row_bytes, false};
        for (int v = 0; v < QUILL_KERNEL_VARIANT_COUNT; v++) {
            const quill_kernel_table *table = quill__kernels_variant_table((quill_kernel_variant)v);
            if (table == NULL || (only_variant != NULL && strcmp(table->name, only_variant) != 0)) {
                continue;
            }
            double min_seconds = v == QUILL_KERNEL_VARIANT_REF ? 0.2 : 0.5;
            double decode =
                time_matmul(table, pool, &weights, n_copies, x, 1, y, scratch, min_seconds);
            double prefill =
                time_matmul(table, pool, &weights, n_copies, x, n_prefill, y, scratch, min_seconds);
            double bytes = (double)row_bytes * bench_rows;
            double flops = 2.0 * bench_rows * bench_cols * (double)n_prefill;
            printf("%-6s %-7s %14.2f %16.2f\n", quill_type_name(types[k]), table->name,
                   bytes / decode * 1e-9, flops / prefill * 1e-9);
            fflush(stdout);
        }
        /* The packed row-group layout, when the selected variant multiplies it. */
        if (quill__matrix_wants_packing(types[k], bench_rows) &&
            (only_variant == NULL ||
             strcmp(quill__kernels_table()->name, only_variant) == 0)) {
            void *pack_scratch = malloc(row_bytes * 8);
            for (int c = 0; c < n_copies; c++) {
                quill__pack_rows(types[k], data + (size_t)c * matrix_bytes, row_bytes, bench_rows,
                                 bench_cols, pack_scratch);
            }
            free(pack_scratch);
            weights.is_packed = true;
            const quill_kernel_table *table = quill__kernels_table();
            double decode = time_matmul(table, pool, &weights, n_copies, x, 1, y, scratch, 0.5);
            double prefill =
                time_matmul(table, pool, &weights, n_copies, x, n_prefill, y, scratch, 0.5);
            printf("%-6s %-7s %14.2f %16.2f  (packed)\n", quill_type_name(types[k]), table->name,
                   (double)row_bytes * bench_rows / decode * 1e-9,
                   2.0 * bench_rows * bench_cols * (double)n_prefill / prefill * 1e-9);
            fflush(stdout);
        }
        free(data);
    }
    quill__free(scratch);
    free(y);
    free(x);
    free(w);
    quill__threadpool_destroy(pool);
    return 0;
}
