/*
 * quill__matmul: y[t][r] = dot(W[r], x[t]) over a thread pool. Activation rows are quantized
 * once each into scratch (split by token; on the calling thread for decode), then weight rows
 * are split by thread. quill__matmul_prepare and quill__matmul_rows expose the two steps so a
 * caller can run several matrices in one pool run. Each thread
 * takes the tokens in groups whose activation rows fit in L2, and for each group walks its
 * weight rows in tiles, multiplying a tile with every token of the group before reading the
 * next: a weight row leaves memory once per group and the group's activations stay in cache.
 * Each (row, token) result comes from the same kernel call sequence whatever n_tokens, the
 * tiles, the groups or the thread count, so results are batch-invariant bit for bit.
 */
#include "kernels/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/dispatch.h"
#include "kernels/packed.h"

/* Weight rows per tile and tokens per tile: a tile of 16 rows of a 4096-wide Q8_0 matrix is
 * 70 KB, and 32 activation rows of it 139 KB, so a tile pair stays in a 1-2 MB L2 cache. */
enum { QUILL_MATMUL_TILE_ROWS = 16, QUILL_MATMUL_TILE_TOKENS = 32 };

/* Activation bytes per token group, an estimate of half a typical 1 MB L2 cache. With 512
 * tokens, re-reading all activations for every row tile halved prefill throughput on a 2048 x
 * 2048 matrix (tools/bench_kernels.c, AMD EPYC with AVX-512). */
enum { QUILL_MATMUL_GROUP_BYTES = 512 * 1024 };

/* Up to this many tokens (decode), the calling thread quantizes the activations itself: a
 * pool run for one row gives the other threads nothing and costs a wake-up and a barrier. */
enum { QUILL_MATMUL_INLINE_QUANTIZE_TOKENS = 2 };

/* Activation rows in scratch start on 64-byte boundaries. */
enum { QUILL_MATMUL_ROW_ALIGN = 64 };

typedef struct matmul_job {
    const quill_kernel_type_ops *ops;            /* the weight type's kernels */
    const quill_kernel_type_ops *activation_ops; /* the activation type's kernels */
    const quill_matrix *weights;
    const float *x;   /* f32 [n_tokens][x_stride] */
    int64_t x_stride; /* floats between activation rows */
    int64_t n_tokens;
    float *y;                    /* f32 [n_tokens][y_stride] */
    int64_t y_stride;            /* floats between output rows */
    const void *activations;     /* the rows vec_dot reads: x itself or scratch */
    void *scratch;               /* quantized activations [n_tokens][activation_row_bytes] */
    size_t activation_row_bytes; /* bytes between activation rows */
    bool has_packed_kernels;     /* the table packs Q8_0-activation types: prepare the extras */
} matmul_job;

/* Returns the scratch row stride for the activation type, or 0 when activations stay f32. */
static size_t activation_row_stride(const quill_kernel_table *table, const quill_matrix *weights) {
    uint32_t activation_type = table->types[weights->type].vec_dot_type;
    size_t row_bytes = 0;
    if (activation_type == QUILL_TYPE_F32 ||
        !quill_type_row_bytes(activation_type, weights->n_cols, &row_bytes)) {
        return 0;
    }
    if (activation_type == QUILL_TYPE_Q8_0) {
        /* Q8_0 rows carry the extras that the packed kernels read (packed.h). */
        return quill__q8_0_prepared_row_bytes(weights->n_cols / 32);
    }
    return (row_bytes + QUILL_MATMUL_ROW_ALIGN - 1) / QUILL_MATMUL_ROW_ALIGN *
           QUILL_MATMUL_ROW_ALIGN;
}

size_t quill__matmul_scratch_bytes(const quill_matrix *weights, int64_t n_tokens) {
    if (weights == NULL || n_tokens <= 0 || quill_type_traits_get(weights->type) == NULL) {
        return 0;
    }
    return activation_row_stride(quill__kernels_table(), weights) * (size_t)n_tokens;
}

/* Quantizes this thread's share of the activation rows into scratch. */
static void quantize_task(void *context, int thread_index, int n_threads) {
    matmul_job *job = context;
    int64_t begin;
    int64_t end;
    quill__threadpool_split(job->n_tokens, thread_index, n_threads, &begin, &end);
    for (int64_t t = begin; t < end; t++) {
        char *row = (char *)job->scratch + (size_t)t * job->activation_row_bytes;
        job->activation_ops->quantize_row(job->x + t * job->x_stride, row, job->weights->n_cols);
        if (job->has_packed_kernels && job->ops->vec_dot_type == QUILL_TYPE_Q8_0) {
            quill__q8_0_prepare_extras(row, job->weights->n_cols / 32);
        }
    }
}

/* Computes one tile of rows x tokens with the type's vec_dot, row by row. */
static void tile_by_vec_dot(const matmul_job *job, int64_t row_begin, int64_t n_rows,
                            int64_t token_begin, int64_t n_tokens) {
    const quill_matrix *w = job->weights;
    for (int64_t r = row_begin; r < row_begin + n_rows; r++) {
        const char *weight_row = (const char *)w->data + (size_t)r * w->row_bytes;
        for (int64_t t = token_begin; t < token_begin + n_tokens; t++) {
            const char *activation_row =
                (const char *)job->activations + (size_t)t * job->activation_row_bytes;
            job->y[t * job->y_stride + r] =
                job->ops->vec_dot(w->n_cols, weight_row, activation_row);
        }
    }
}

/* Multiplies rows [row, row + n_rows) with tokens [token_begin, token_end) in token tiles. */
static void multiply_rows(const matmul_job *job, int64_t row, int64_t n_rows, int64_t token_begin,
                          int64_t token_end) {
    const quill_matrix *w = job->weights;
    for (int64_t token = token_begin; token < token_end; token += QUILL_MATMUL_TILE_TOKENS) {
        int64_t n_tokens = token_end - token < QUILL_MATMUL_TILE_TOKENS ? token_end - token
                                                                        : QUILL_MATMUL_TILE_TOKENS;
        quill_kernel_gemm_fn gemm = w->is_packed ? job->ops->gemm_packed : job->ops->gemm;
        if (gemm == NULL) {
            tile_by_vec_dot(job, row, n_rows, token, n_tokens);
            continue;
        }
        const char *weight_tile = (const char *)w->data + (size_t)row * w->row_bytes;
        const char *activation_tile =
            (const char *)job->activations + (size_t)token * job->activation_row_bytes;
        gemm(w->n_cols, weight_tile, w->row_bytes, n_rows, activation_tile,
             job->activation_row_bytes, n_tokens, job->y + token * job->y_stride + row,
             job->y_stride);
    }
}

/* Multiplies rows [begin, end) of W with every token: token groups outside, row tiles inside. */
static void multiply_range(const matmul_job *job, int64_t begin, int64_t end) {
    int64_t group_tokens = (int64_t)(QUILL_MATMUL_GROUP_BYTES / job->activation_row_bytes);
    group_tokens = group_tokens / QUILL_MATMUL_TILE_TOKENS * QUILL_MATMUL_TILE_TOKENS;
    if (group_tokens < QUILL_MATMUL_TILE_TOKENS) {
        group_tokens = QUILL_MATMUL_TILE_TOKENS;
    }

    for (int64_t group = 0; group < job->n_tokens; group += group_tokens) {
        int64_t group_end =
            job->n_tokens - group < group_tokens ? job->n_tokens : group + group_tokens;
        for (int64_t row = begin; row < end; row += QUILL_MATMUL_TILE_ROWS) {
            int64_t n_rows =
                end - row < QUILL_MATMUL_TILE_ROWS ? end - row : QUILL_MATMUL_TILE_ROWS;
            multiply_rows(job, row, n_rows, group, group_end);
        }
    }
}

/* Multiplies this thread's share of the rows of W with every token. */
static void multiply_task(void *context, int thread_index, int n_threads) {
    matmul_job *job = context;
    /* Whole tiles per thread, so no part splits a packed row group. */
    int64_t n_tiles = (job->weights->n_rows + QUILL_MATMUL_TILE_ROWS - 1) / QUILL_MATMUL_TILE_ROWS;
    int64_t begin;
    int64_t end;
    quill__threadpool_split(n_tiles, thread_index, n_threads, &begin, &end);
    begin *= QUILL_MATMUL_TILE_ROWS;
    end = end * QUILL_MATMUL_TILE_ROWS < job->weights->n_rows ? end * QUILL_MATMUL_TILE_ROWS
                                                               : job->weights->n_rows;
    multiply_range(job, begin, end);
}

/* Fills a job for weights and the activations. Returns false, and the outputs are then NaN,
 * when the weight type has no dot product or n_cols is not a multiple of its block size. */
static bool job_init(matmul_job *job, const quill_kernel_table *table, const quill_matrix *weights,
                     const float *x, int64_t x_stride, int64_t n_tokens, float *y, int64_t y_stride,
                     void *scratch) {
    *job = (matmul_job){
        .ops = weights->type < QUILL_TYPE_COUNT ? &table->types[weights->type] : NULL,
        .weights = weights,
        .x = x,
        .x_stride = x_stride,
        .n_tokens = n_tokens,
        .y = y,
        .y_stride = y_stride,
        .scratch = scratch,
        /* The extras serve any packed matrix that shares these prepared activations. */
        .has_packed_kernels = table->types[QUILL_TYPE_Q4_0].gemm_packed != NULL ||
                              table->types[QUILL_TYPE_Q8_0].gemm_packed != NULL,
    };
    size_t row_bytes = 0;
    if (weights->type >= QUILL_TYPE_COUNT || job->ops->vec_dot == NULL ||
        (weights->is_packed && job->ops->gemm_packed == NULL) ||
        !quill_type_row_bytes(weights->type, weights->n_cols, &row_bytes)) {
        return false;
    }
    /* F32 activations are read in place; the others are quantized once per row. */
    size_t stride = activation_row_stride(table, weights);
    if (stride == 0) {
        job->activations = x;
        job->activation_row_bytes = (size_t)x_stride * sizeof(float);
    } else {
        job->activation_ops = &table->types[job->ops->vec_dot_type];
        job->activations = scratch;
        job->activation_row_bytes = stride;
    }
    return true;
}

/* Writes NaN to rows [row_begin, row_end) of every token's output. */
static void fill_nan(float *y, int64_t y_stride, int64_t n_tokens, int64_t row_begin,
                     int64_t row_end) {
    for (int64_t t = 0; t < n_tokens; t++) {
        for (int64_t r = row_begin; r < row_end; r++) {
            y[t * y_stride + r] = NAN;
        }
    }
}

void quill__matmul_with_table(const quill_kernel_table *table, quill_threadpool *pool,
                              const quill_matrix *weights, const float *x, int64_t x_stride,
                              int64_t n_tokens, float *y, int64_t y_stride, void *scratch) {
    if (n_tokens <= 0 || weights->n_rows <= 0) {
        return;
    }
    /* A type without a dot product (an activation format, or no kernels), or a row length that
     * is not a multiple of the block size, yields NaN outputs rather than a crash or a read
     * past the rows. The model loader rejects such weights before this point. */
    matmul_job job;
    if (!job_init(&job, table, weights, x, x_stride, n_tokens, y, y_stride, scratch)) {
        fill_nan(y, y_stride, n_tokens, 0, weights->n_rows);
        return;
    }
    if (job.activation_ops != NULL) {
        if (n_tokens <= QUILL_MATMUL_INLINE_QUANTIZE_TOKENS) {
            quantize_task(&job, 0, 1);
        } else {
            quill__threadpool_run(pool, quantize_task, &job);
        }
    }
    quill__threadpool_run(pool, multiply_task, &job);
}

void quill__matmul(quill_threadpool *pool, const quill_matrix *weights, const float *x,
                   int64_t x_stride, int64_t n_tokens, float *y, int64_t y_stride, void *scratch) {
    quill__matmul_with_table(quill__kernels_table(), pool, weights, x, x_stride, n_tokens, y,
                             y_stride, scratch);
}

void quill__matmul_prepare(const quill_matrix *weights, const float *x, int64_t x_stride,
                           int64_t n_tokens, void *scratch) {
    matmul_job job;
    if (n_tokens <= 0 || !job_init(&job, quill__kernels_table(), weights, x, x_stride, n_tokens,
                                   NULL, 0, scratch)) {
        return;
    }
    if (job.activation_ops != NULL) {
        quantize_task(&job, 0, 1);
    }
}

void quill__matmul_rows(const quill_matrix *weights, const float *x, int64_t x_stride,
                        int64_t n_tokens, const void *scratch, int64_t row_begin, int64_t row_end,
                        float *y, int64_t y_stride) {
    row_begin = row_begin < 0 ? 0 : row_begin;
    row_end = row_end > weights->n_rows ? weights->n_rows : row_end;
    if (n_tokens <= 0 || row_begin >= row_end) {
        return;
    }
    if (weights->is_packed &&
        (row_begin % QUILL_PACK_ROWS != 0 ||
         (row_end % QUILL_PACK_ROWS != 0 && row_end != weights->n_rows))) {
        /* A range that cuts a row group cannot be computed from the packed layout. */
        fill_nan(y, y_stride, n_tokens, row_begin, row_end);
        return;
    }
    matmul_job job;
    /* The job only reads scratch here; the cast drops const for the shared job type. */
    if (!job_init(&job, quill__kernels_table(), weights, x, x_stride, n_tokens, y, y_stride,
                  (void *)(uintptr_t)scratch)) {
        fill_nan(y, y_stride, n_tokens, row_begin, row_end);
        return;
    }
    multiply_range(&job, row_begin, row_end);
}
