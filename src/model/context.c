/*
 * The forward pass over a batch of entries from one or more sequences. Every matrix product
 * runs over all of the batch's tokens at once through quill__matmul, and Q/K/V and gate/up
 * each run as one pool run over their concatenated rows. Attention runs per (entry, KV head)
 * on the compute pool, covering the query heads of that KV head's group, and each entry attends
 * over its own sequence's positions [0, position] in the paged KV cache. All scratch is
 * allocated in quill_context_create for n_batch_max tokens, so a forward pass allocates nothing.
 *
 * Batch invariance: every step is either per token (norms, RoPE, activations), a matmul whose
 * per-row result does not depend on the other rows, or attention whose reduction order depends
 * only on the sequence's positions. So an entry's K/V and logits are the same bits whatever else
 * shares the batch and however a prompt is split into chunks.
 *
 * One thread at a time drives a context, and the pool's workers only run its tasks.
 */
#include "quill/model.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "model/kv_cache_internal.h"
#include "model/model_internal.h"

enum {
    DEFAULT_BATCH_MAX = 512,
    SCRATCH_ALIGNMENT = 64,
    /* Parts per thread of each pool run: with 8, a thread whose core another process uses
     * delays an op by at most about an eighth of its share (see threadpool.h). */
    TASKS_PER_THREAD = 8,
};

/* Smallest op that runs on the pool: 256 KiB of weights take about 15 us to read on one
 * thread, and 64M multiply-adds about 600 us (AMD EPYC with AVX-512, estimates). */
#define PARALLEL_MIN_BYTES ((int64_t)256 << 10)
#define PARALLEL_MIN_MACS ((int64_t)64 << 20)

/* Smallest attention that runs on the pool, in multiply-adds (2 * q_dim per key). 256K are 64
 * keys of a 2048-wide query: about 15 us on one thread with f16 keys (30 ns per key and KV head,
 * 8 KV heads, AMD EPYC), several times a pool run's wake-up and barrier. With 2M (512 keys), a 1B
 * model's short-context decode ran attention on the driver alone, and the waiting worker took
 * 7.7 % of `perf record` samples, against 3.0 % with 256K. */
#define PARALLEL_MIN_ATTENTION_MACS ((int64_t)256 << 10)

/* Smallest norm, SwiGLU or residual add, in elements, that runs on the pool: 256K elements of
 * SwiGLU take about 1 ms on one thread (estimate). */
#define ROW_OP_MIN_ELEMENTS ((int64_t)256 << 10)

/* Tokens per feed-forward pass of a batch. The gate and up rows (n_ff floats each, the largest
 * activations) are then sized for this many tokens instead of the whole batch: 16 MiB less at
 * 512 tokens of an n_ff 8192 model. The extra reads of the FFN weights per chunk cost under 1%
 * of a prefill, and each token's values do not depend on the chunking. */
enum { FFN_CHUNK_TOKENS = 256 };

struct quill_context {
    const quill_model *model;     /* borrowed; outlives the context */
    quill_threadpool *pool;       /* compute threads, the driver included */
    int n_threads;                /* threads in pool */
    int64_t min_pool_bytes;       /* PARALLEL_MIN_BYTES unless a test lowers it */
    int64_t min_pool_macs;        /* PARALLEL_MIN_MACS likewise */
    int64_t min_pool_attention;   /* PARALLEL_MIN_ATTENTION_MACS likewise */
    int64_t min_pool_elements;    /* ROW_OP_MIN_ELEMENTS likewise */
    int32_t n_batch_max;          /* entries one pass takes */
    float *residual;              /* f32 [n_batch_max][n_embd] */
    float *normed;                /* f32 [n_batch_max][n_embd] */
    float *projected;             /* f32 [n_batch_max][n_embd]; shares normed's memory */
    float *q;                     /* f32 [n_batch_max][n_heads][head_dim] */
    float *k;                     /* f32 [n_batch_max][n_kv_heads][head_dim] */
    float *v;                     /* f32 [n_batch_max][n_kv_heads][head_dim] */
    float *attention;             /* f32 [n_batch_max][n_heads][head_dim] */
    float *gate;                  /* f32 [min(n_batch_max, FFN_CHUNK_TOKENS)][n_ff] */
    float *up;                    /* f32 [min(n_batch_max, FFN_CHUNK_TOKENS)][n_ff] */
    float *rope;                  /* f32 [n_batch_max][n_rot / 2][2]: cos, sin */
    void *matmul_scratch;         /* quill__matmul's activation copies */
    float *logits;                /* f32 [n_batch_max][n_vocab]; rows in use: n_logits */
    int32_t *logits_rows;         /* [n_batch_max] logits row of each entry, or -1 */
    int32_t *logits_entries;      /* [n_batch_max] entry of each logits row */
    int32_t n_logits;             /* logits rows of the last pass */
    int32_t n_entries_last;       /* entries of the last pass */
    int32_t *seq_ids;             /* [n_batch_max] distinct sequences of the current batch */
    int64_t *seq_ends;            /* [n_batch_max] their lengths after the current batch */
    const int32_t **entry_blocks; /* [n_batch_max] block table of each entry's sequence */
};

/* What the attention task reads: one layer's K/V in the cache and the current batch. */
typedef struct attention_task {
    quill_context *context;          /* scratch and shapes */
    const quill_kv_layer_view *view; /* the layer's K/V */
    const quill_batch *batch;        /* positions */
} attention_task;

quill_context_params quill_context_params_default(void) {
    long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    quill_context_params params = {
        .n_threads = n_cpus > 0 ? (int)n_cpus : 1,
        .n_batch_max = DEFAULT_BATCH_MAX,
        .use_pinning = false,
    };
    return params;
}

/* Allocates f32 [n_rows][n_cols] of scratch, aligned for vector loads. */
static float *allocate_rows(int64_t n_rows, int64_t n_cols) {
    size_t n_bytes = 0;
    if (!quill__size_mul((size_t)n_rows, (size_t)n_cols * sizeof(float), &n_bytes)) {
        return NULL;
    }
    n_bytes = (n_bytes + SCRATCH_ALIGNMENT - 1) / SCRATCH_ALIGNMENT * SCRATCH_ALIGNMENT;
    return quill__aligned_alloc(SCRATCH_ALIGNMENT, n_bytes > 0 ? n_bytes : SCRATCH_ALIGNMENT);
}

/* Scratch bytes of the largest matmul a pass runs. */
static size_t matmul_scratch_bytes(const quill_model *model, int64_t n_tokens) {
    size_t n_max = quill__matmul_scratch_bytes(&model->output, n_tokens);
    for (int32_t i = 0; i < model->info.n_layers; i++) {
        const quill_layer_weights *layer = &model->layers[i];
        const quill_matrix *matrices[] = {&layer->attn_q,      &layer->attn_k,   &layer->attn_v,
                                          &layer->attn_output, &layer->ffn_gate, &layer->ffn_up,
                                          &layer->ffn_down};
        for (size_t j = 0; j < sizeof(matrices) / sizeof(matrices[0]); j++) {
            size_t n_bytes = quill__matmul_scratch_bytes(matrices[j], n_tokens);
            n_max = n_bytes > n_max ? n_bytes : n_max;
        }
    }
    return n_max;
}

static quill_status allocate_scratch(quill_context *context) {
    const quill_model_info *info = &context->model->info;
    const int64_t n = context->n_batch_max;
    const int64_t q_dim = (int64_t)info->n_heads * info->head_dim;
    const int64_t kv_dim = (int64_t)info->n_kv_heads * info->head_dim;
    context->residual = allocate_rows(n, info->n_embd);
    context->normed = allocate_rows(n, info->n_embd);
    /* A layer reads normed only before it writes projected (the Q/K/V and gate/up inputs)
     * and reads projected only before it writes normed again, so one buffer serves both:
     * 4 MiB less at 512 tokens of a 2048-wide model. */
    context->projected = context->normed;
    context->q = allocate_rows(n, q_dim);
    context->k = allocate_rows(n, kv_dim);
    context->v = allocate_rows(n, kv_dim);
    context->attention = allocate_rows(n, q_dim);
    context->gate = allocate_rows(n < FFN_CHUNK_TOKENS ? n : FFN_CHUNK_TOKENS, info->n_ff);
    context->up = allocate_rows(n < FFN_CHUNK_TOKENS ? n : FFN_CHUNK_TOKENS, info->n_ff);
    context->rope = allocate_rows(n, info->n_rot > 0 ? info->n_rot : 1);
    /* NOTE: the logits buffer has room for every entry to want logits. For large vocabularies
     * that reserves much address space, but the pages no pass writes stay untouched. */
    context->logits = allocate_rows(n, info->n_vocab);
    size_t scratch_bytes = matmul_scratch_bytes(context->model, n);
    context->matmul_scratch =
        quill__aligned_alloc(SCRATCH_ALIGNMENT, (scratch_bytes + SCRATCH_ALIGNMENT - 1) /
                                                        SCRATCH_ALIGNMENT * SCRATCH_ALIGNMENT +
                                                    SCRATCH_ALIGNMENT);
    context->logits_rows = quill__malloc_array((size_t)n, sizeof(int32_t));
    context->logits_entries = quill__malloc_array((size_t)n, sizeof(int32_t));
    context->seq_ids = quill__malloc_array((size_t)n, sizeof(int32_t));
    context->seq_ends = quill__malloc_array((size_t)n, sizeof(int64_t));
    context->entry_blocks = quill__malloc_array((size_t)n, sizeof(const int32_t *));
    if (context->residual == NULL || context->normed == NULL || context->projected == NULL ||
        context->q == NULL || context->k == NULL || context->v == NULL ||
        context->attention == NULL || context->gate == NULL || context->up == NULL ||
        context->rope == NULL || context->logits == NULL || context->matmul_scratch == NULL ||
        context->logits_rows == NULL || context->logits_entries == NULL ||
        context->seq_ids == NULL || context->seq_ends == NULL || context->entry_blocks == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM,
                               "context: out of memory for the scratch of %d batch entries; "
                               "lower n_batch_max",
                               context->n_batch_max);
    }
    return QUILL_OK;
}

quill_status quill_context_create(const quill_model *model, const quill_context_params *params,
                                  quill_context **out) {
    quill_status status = QUILL_OK;
    quill_context *context = NULL;
    if (out == NULL || model == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "context: model and out must not be NULL");
    }
    *out = NULL;
    quill_context_params defaults = quill_context_params_default();
    if (params == NULL) {
        params = &defaults;
    }
    if (params->n_threads < 1 || params->n_threads > 1024) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: n_threads=%d is out of range [1, 1024]",
                               params->n_threads);
    }
    if (params->n_batch_max < 1 || params->n_batch_max > (1 << 20)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: n_batch_max=%d is out of range [1, %d]",
                               params->n_batch_max, 1 << 20);
    }

    /* Fails when QUILL_KERNELS names a variant this CPU cannot run. */
    status = quill__kernels_init();
    if (status != QUILL_OK) {
        return status;
    }

    context = quill__calloc(1, sizeof(*context));
    if (context == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "context: out of memory");
        goto cleanup;
    }
    context->model = model;
    context->n_batch_max = params->n_batch_max;
    quill_threadpool_params pool_params = quill__threadpool_params_default();
    pool_params.n_threads = params->n_threads;
    pool_params.use_pinning = params->use_pinning;
    pool_params.tasks_per_thread = TASKS_PER_THREAD;
    status = quill__threadpool_create(&pool_params, &context->pool);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    context->n_threads = quill__threadpool_size(context->pool);
    context->min_pool_bytes = PARALLEL_MIN_BYTES;
    context->min_pool_macs = PARALLEL_MIN_MACS;
    context->min_pool_attention = PARALLEL_MIN_ATTENTION_MACS;
    context->min_pool_elements = ROW_OP_MIN_ELEMENTS;
    status = allocate_scratch(context);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    *out = context;
    context = NULL;

cleanup:
    quill_context_destroy(context);
    return status;
}

void quill_context_destroy(quill_context *context) {
    if (context == NULL) {
        return;
    }
    quill__threadpool_destroy(context->pool);
    quill__free(context->residual);
    quill__free(context->normed);
    quill__free(context->q);
    quill__free(context->k);
    quill__free(context->v);
    quill__free(context->attention);
    quill__free(context->gate);
    quill__free(context->up);
    quill__free(context->rope);
    quill__free(context->logits);
    quill__free(context->matmul_scratch);
    quill__free(context->logits_rows);
    quill__free(context->logits_entries);
    quill__free(context->seq_ids);
    quill__free(context->seq_ends);
    quill__free(context->entry_blocks);
    quill__free(context);
}

/* Checks one entry's token, sequence id and position ranges. */
static quill_status validate_entry(const quill_context *context, const quill_kv_cache *cache,
                                   const quill_batch *batch, int32_t index) {
    const quill_model_info *info = &context->model->info;
    int32_t token = batch->tokens[index];
    int32_t seq_id = batch->seq_ids[index];
    if (token < 0 || token >= info->n_vocab) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: batch entry %d has token %d, outside the vocabulary "
                               "[0, %d)",
                               index, token, info->n_vocab);
    }
    if (seq_id < 0 || seq_id >= quill_kv_cache_n_seq_max(cache)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: batch entry %d has sequence id %d, outside the cache's "
                               "[0, %d)",
                               index, seq_id, quill_kv_cache_n_seq_max(cache));
    }
    if (batch->positions[index] < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: batch entry %d has negative position %d", index,
                               batch->positions[index]);
    }
    return QUILL_OK;
}

/* Checks that entries continue their sequences with consecutive positions, and records the
 * distinct sequences and their lengths after the pass in seq_ids/seq_ends. */
static quill_status validate_positions(quill_context *context, const quill_kv_cache *cache,
                                       const quill_batch *batch, int32_t *n_seqs) {
    *n_seqs = 0;
    for (int32_t index = 0; index < batch->n_tokens; index++) {
        quill_status status = validate_entry(context, cache, batch, index);
        if (status != QUILL_OK) {
            return status;
        }
        int32_t seq_id = batch->seq_ids[index];
        int32_t slot = 0;
        while (slot < *n_seqs && context->seq_ids[slot] != seq_id) {
            slot++;
        }
        if (slot == *n_seqs) {
            context->seq_ids[slot] = seq_id;
            context->seq_ends[slot] = quill_kv_cache_seq_length(cache, seq_id);
            (*n_seqs)++;
        }
        if (batch->positions[index] != context->seq_ends[slot]) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "context: batch entry %d has position %d but sequence %d "
                                   "continues at position %lld; positions of a sequence must be "
                                   "consecutive and follow its cached tokens",
                                   index, batch->positions[index], seq_id,
                                   (long long)context->seq_ends[slot]);
        }
        context->seq_ends[slot]++;
        context->entry_blocks[index] = quill_kv_cache_seq_blocks(cache, seq_id);
    }
    return QUILL_OK;
}

/* Checks that each sequence owns writable blocks for the positions the pass writes. */
static quill_status validate_blocks(const quill_context *context, const quill_kv_cache *cache,
                                    int32_t n_seqs) {
    const int32_t block_tokens = quill_kv_cache_block_tokens(cache);
    for (int32_t slot = 0; slot < n_seqs; slot++) {
        int32_t seq_id = context->seq_ids[slot];
        int64_t begin = quill_kv_cache_seq_length(cache, seq_id);
        int64_t end = context->seq_ends[slot];
        int64_t n_blocks = quill_kv_cache_seq_n_blocks(cache, seq_id);
        if (n_blocks * block_tokens < end) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "context: sequence %d has blocks for %lld tokens but the batch "
                                   "takes it to %lld; call quill_kv_cache_seq_prepare first",
                                   seq_id, (long long)(n_blocks * block_tokens), (long long)end);
        }
        const int32_t *blocks = quill_kv_cache_seq_blocks(cache, seq_id);
        for (int64_t block = begin / block_tokens; block <= (end - 1) / block_tokens; block++) {
            if (quill_kv_cache_block_refcount(cache, blocks[block]) != 1) {
                return quill_error_set(QUILL_ERR_INVALID_ARG,
                                       "context: sequence %d would write into block %d, which is "
                                       "shared; call quill_kv_cache_seq_prepare first so that "
                                       "it is copied",
                                       seq_id, blocks[block]);
            }
        }
    }
    return QUILL_OK;
}

static quill_status validate_batch(quill_context *context, const quill_kv_cache *cache,
                                   const quill_batch *batch, int32_t *n_seqs) {
    const quill_model_info *info = &context->model->info;
    if (cache == NULL || batch == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "context: cache and batch must not be NULL");
    }
    if (quill__kv_cache_n_layers(cache) != info->n_layers ||
        quill__kv_cache_kv_dim(cache) != info->n_kv_heads * info->head_dim) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: the KV cache has %d layers of %d K elements per token "
                               "but the model needs %d of %d; create the cache for this model",
                               quill__kv_cache_n_layers(cache), quill__kv_cache_kv_dim(cache),
                               info->n_layers, info->n_kv_heads * info->head_dim);
    }
    if (batch->n_tokens < 0 || batch->n_tokens > context->n_batch_max) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "context: the batch has %d entries but the context takes at most "
                               "%d; split it or raise n_batch_max",
                               batch->n_tokens, context->n_batch_max);
    }
    quill_status status = validate_positions(context, cache, batch, n_seqs);
    if (status == QUILL_OK) {
        status = validate_blocks(context, cache, *n_seqs);
    }
    return status;
}

/* Returns the pool for an op that reads n_bytes of weights or cache and does n_macs
 * multiply-adds, or NULL to run it on the calling thread alone. A pool run costs a few
 * microseconds when the workers spin, and much more when a worker's core is busy with another
 * process, so only ops that take several times that on one thread go to the pool. */
static quill_threadpool *pool_for(const quill_context *context, int64_t n_bytes, int64_t n_macs) {
    if (n_bytes >= context->min_pool_bytes || n_macs >= context->min_pool_macs) {
        return context->pool;
    }
    return NULL;
}

/* y[t] = W x[t] for n_tokens rows, on the pool when the product is large enough. */
static void multiply(quill_context *context, const quill_matrix *weights, const float *x,
                     int64_t x_stride, int64_t n_tokens, float *y, int64_t y_stride) {
    quill_threadpool *pool = pool_for(context, (int64_t)weights->row_bytes * weights->n_rows,
                                      weights->n_rows * weights->n_cols * n_tokens);
    quill__matmul(pool, weights, x, x_stride, n_tokens, y, y_stride, context->matmul_scratch);
}

enum {
    /* Rows per part of a fused product: a multiple of the matmul's tile height (16 rows), so
     * no part cuts a tile in two. */
    FUSED_ROW_ALIGN = 16,
    FUSED_MAX_MATRICES = 3,
    /* Up to this many tokens (decode), the calling thread quantizes the activations alone, as
     * quill__matmul does. */
    FUSED_INLINE_PREPARE_TOKENS = 2,
};

/* A product of several matrices with the same activations (Q, K and V, or gate and up) as one
 * pool run over their concatenated rows [W0 rows | W1 rows | ...]. This costs one wake-up and
 * one barrier instead of one per matrix, and each part streams one contiguous slice of rows. */
typedef struct fused_task {
    const quill_matrix *weights[FUSED_MAX_MATRICES]; /* same n_cols and activation type */
    float *y[FUSED_MAX_MATRICES];                    /* f32 [n_tokens][y_stride[i]] */
    int64_t y_stride[FUSED_MAX_MATRICES];            /* floats between output rows */
    int n_matrices;                                  /* entries in use */
    int64_t n_rows;                                  /* rows of all matrices together */
    const float *x;                                  /* f32 [n_tokens][x_stride] */
    int64_t x_stride;                                /* floats between activation rows */
    int64_t n_tokens;                                /* activation rows */
    void *scratch;                                   /* prepared activations */
    size_t scratch_row_bytes;                        /* scratch bytes per activation row */
} fused_task;

/* Pool task: quantizes this part's activation rows into the shared scratch. */
static void fused_prepare_worker(void *task_context, int thread_index, int n_threads) {
    const fused_task *task = task_context;
    int64_t begin = 0;
    int64_t end = 0;
    quill__threadpool_split(task->n_tokens, thread_index, n_threads, &begin, &end);
    if (begin < end) {
        quill__matmul_prepare(task->weights[0], task->x + begin * task->x_stride, task->x_stride,
                              end - begin, (char *)task->scratch + begin * task->scratch_row_bytes);
    }
}

/* Pool task: computes this part's slice of the concatenated rows, in whole tiles. */
static void fused_rows_worker(void *task_context, int thread_index, int n_threads) {
    const fused_task *task = task_context;
    int64_t n_tiles = (task->n_rows + FUSED_ROW_ALIGN - 1) / FUSED_ROW_ALIGN;
    int64_t begin = 0;
    int64_t end = 0;
    quill__threadpool_split(n_tiles, thread_index, n_threads, &begin, &end);
    begin *= FUSED_ROW_ALIGN;
    end = end * FUSED_ROW_ALIGN < task->n_rows ? end * FUSED_ROW_ALIGN : task->n_rows;
    int64_t offset = 0;
    for (int i = 0; i < task->n_matrices && begin < end; i++) {
        const quill_matrix *w = task->weights[i];
        if (begin < offset + w->n_rows) {
            int64_t local_end = end - offset < w->n_rows ? end - offset : w->n_rows;
            quill__matmul_rows(w, task->x, task->x_stride, task->n_tokens, task->scratch,
                               begin - offset, local_end, task->y[i], task->y_stride[i]);
            begin = offset + local_end;
        }
        offset += w->n_rows;
    }
}

/* y_i[t] = W_i x[t] for each of n_matrices matrices that read the same activations x. They run
 * as one pool run when they share n_cols and activation type, every matrix but the last has a
 * whole number of tiles, and together they reach the pool's threshold. Otherwise each matrix
 * runs through multiply. */
static void multiply_fused(quill_context *context, const quill_matrix *const *weights,
                           float *const *y, const int64_t *y_stride, int n_matrices, const float *x,
                           int64_t x_stride, int64_t n_tokens) {
    fused_task task = {.n_matrices = n_matrices,
                       .x = x,
                       .x_stride = x_stride,
                       .n_tokens = n_tokens,
                       .scratch = context->matmul_scratch};
    int64_t n_bytes = 0;
    bool can_fuse = context->pool != NULL && n_tokens > 0;
    uint32_t activation_type = quill__vec_dot_type(weights[0]->type);
    for (int i = 0; i < n_matrices; i++) {
        task.weights[i] = weights[i];
        task.y[i] = y[i];
        task.y_stride[i] = y_stride[i];
        task.n_rows += weights[i]->n_rows;
        n_bytes += (int64_t)weights[i]->row_bytes * weights[i]->n_rows;
        /* Every matrix but the last must end on a tile boundary, or a part that spans two
         * matrices would compute a partial tile. */
        can_fuse = can_fuse && weights[i]->n_cols == weights[0]->n_cols &&
                   quill__vec_dot_type(weights[i]->type) == activation_type &&
                   (i == n_matrices - 1 || weights[i]->n_rows % FUSED_ROW_ALIGN == 0);
    }
    if (!can_fuse ||
        pool_for(context, n_bytes, task.n_rows * weights[0]->n_cols * n_tokens) == NULL) {
        for (int i = 0; i < n_matrices; i++) {
            multiply(context, weights[i], x, x_stride, n_tokens, y[i], y_stride[i]);
        }
        return;
    }
    task.scratch_row_bytes = quill__matmul_scratch_bytes(weights[0], 1);
    quill__threadpool_run(n_tokens > FUSED_INLINE_PREPARE_TOKENS ? context->pool : NULL,
                          fused_prepare_worker, &task);
    quill__threadpool_run(context->pool, fused_rows_worker, &task);
}

/* Per-token ops of a prefill that run on the pool: each part takes a contiguous range of
 * tokens, and each token's result depends on that token alone. */
typedef enum row_op {
    ROW_OP_NORM,     /* normed[t] = RMSNorm(residual[t]) * weight */
    ROW_OP_SILU_MUL, /* gate[t] = silu(gate[t]) * up[t] */
    ROW_OP_ADD,      /* residual[t] += projected[t] */
} row_op;

typedef struct row_task {
    quill_context *context; /* scratch and shapes */
    row_op op;              /* what to compute */
    const float *weight;    /* ROW_OP_NORM's weight, f32 [n_embd] */
    int32_t n_tokens;       /* rows of the batch */
} row_task;

/* Pool task: applies the op to this part's tokens. */
static void row_worker(void *task_context, int thread_index, int n_threads) {
    const row_task *task = task_context;
    quill_context *context = task->context;
    const quill_model_info *info = &context->model->info;
    int64_t begin = 0;
    int64_t end = 0;
    quill__threadpool_split(task->n_tokens, thread_index, n_threads, &begin, &end);
    for (int64_t t = begin; t < end; t++) {
        int64_t embd_offset = t * info->n_embd;
        int64_t ff_offset = t * info->n_ff;
        switch (task->op) {
        case ROW_OP_NORM:
            quill__rms_norm(context->residual + embd_offset, task->weight,
                            context->normed + embd_offset, info->n_embd, info->rms_eps);
            break;
        case ROW_OP_SILU_MUL:
            quill__silu_mul(context->gate + ff_offset, context->up + ff_offset,
                            context->gate + ff_offset, info->n_ff);
            break;
        case ROW_OP_ADD:
            quill__vec_add(context->residual + embd_offset, context->projected + embd_offset,
                           info->n_embd);
            break;
        }
    }
}

/* Runs a per-token op over the batch, on the pool from ROW_OP_MIN_ELEMENTS elements. */
static void run_rows(quill_context *context, row_op op, const float *weight, int32_t n_tokens) {
    const quill_model_info *info = &context->model->info;
    row_task task = {.context = context, .op = op, .weight = weight, .n_tokens = n_tokens};
    int64_t n_elements = (int64_t)n_tokens * (op == ROW_OP_SILU_MUL ? info->n_ff : info->n_embd);
    quill__threadpool_run(n_elements >= context->min_pool_elements ? context->pool : NULL,
                          row_worker, &task);
}

/* Looks up each entry's embedding row into residual and computes its RoPE angles. */
static quill_status embed_tokens(quill_context *context, const quill_batch *batch) {
    const quill_model *model = context->model;
    const quill_model_info *info = &model->info;
    for (int32_t t = 0; t < batch->n_tokens; t++) {
        quill_status status = quill__matrix_dequantize_row(
            &model->token_embd, batch->tokens[t], context->residual + (int64_t)t * info->n_embd);
        if (status != QUILL_OK) {
            return status;
        }
        quill__rope_angles(batch->positions[t], info->n_rot, info->rope_freq_base,
                           model->rope_freqs, context->rope + (int64_t)t * info->n_rot);
    }
    return QUILL_OK;
}

/* Adds an f32 bias (or nothing when NULL) to each of n_tokens rows of n elements. */
static void add_bias(float *rows, const float *bias, int32_t n_tokens, int64_t n) {
    if (bias == NULL) {
        return;
    }
    for (int32_t t = 0; t < n_tokens; t++) {
        quill__vec_add(rows + (int64_t)t * n, bias, n);
    }
}

/* Per-head RMSNorm (qwen3) of n_tokens rows of n_heads heads, when weight is not NULL. */
static void norm_heads(float *rows, const float *weight, int32_t n_tokens, int32_t n_heads,
                       int32_t head_dim, float eps) {
    if (weight == NULL) {
        return;
    }
    for (int64_t head = 0; head < (int64_t)n_tokens * n_heads; head++) {
        float *x = rows + head * head_dim;
        quill__rms_norm(x, weight, x, head_dim, eps);
    }
}

/* Projects normed into Q, K and V, then applies biases, Q/K norms and RoPE. */
static void project_qkv(quill_context *context, const quill_layer_weights *layer,
                        int32_t n_tokens) {
    const quill_model_info *info = &context->model->info;
    const int64_t q_dim = (int64_t)info->n_heads * info->head_dim;
    const int64_t kv_dim = (int64_t)info->n_kv_heads * info->head_dim;
    const quill_matrix *weights[] = {&layer->attn_q, &layer->attn_k, &layer->attn_v};
    float *outputs[] = {context->q, context->k, context->v};
    const int64_t strides[] = {q_dim, kv_dim, kv_dim};
    multiply_fused(context, weights, outputs, strides, 3, context->normed, info->n_embd, n_tokens);

    add_bias(context->q, layer->q_bias, n_tokens, q_dim);
    add_bias(context->k, layer->k_bias, n_tokens, kv_dim);
    add_bias(context->v, layer->v_bias, n_tokens, kv_dim);
    norm_heads(context->q, layer->q_norm, n_tokens, info->n_heads, info->head_dim, info->rms_eps);
    norm_heads(context->k, layer->k_norm, n_tokens, info->n_kv_heads, info->head_dim,
               info->rms_eps);

    quill_rope_mode mode =
        info->rope_layout == QUILL_ROPE_NEOX ? QUILL_ROPE_MODE_NEOX : QUILL_ROPE_MODE_NORMAL;
    for (int32_t t = 0; t < n_tokens; t++) {
        const float *angles = context->rope + (int64_t)t * info->n_rot;
        quill__rope_apply(context->q + t * q_dim, info->n_heads, info->head_dim, info->n_rot, mode,
                          angles);
        quill__rope_apply(context->k + t * kv_dim, info->n_kv_heads, info->head_dim, info->n_rot,
                          mode, angles);
    }
}

/* Returns the bytes from the start of a block's K (or V) region to head kv_head's slot `slot`
 * in the head-major layout the forward pass keeps inside each block: [n_kv_heads][block_tokens]
 * [head_dim]. Attention reads one KV head at a time, so each head's keys of a block form one
 * contiguous run (2 KB for 16 slots of 64 F16 values). A token-major layout gave it a 128-byte
 * slice of every 1 KB row, which the hardware prefetchers follow poorly. */
static size_t kv_head_offset(const quill_kv_layer_view *view, size_t head_bytes, int32_t kv_head,
                             int32_t slot) {
    return ((size_t)kv_head * (size_t)view->block_tokens + (size_t)slot) * head_bytes;
}

/* Stores each entry's K and V in its sequence's block at its position, head by head. */
static void store_kv(quill_context *context, const quill_kv_layer_view *view,
                     const quill_batch *batch) {
    const quill_model_info *info = &context->model->info;
    const int32_t kv_dim = view->kv_dim;
    const size_t head_bytes =
        (size_t)info->head_dim * (view->type == QUILL_TYPE_F32 ? sizeof(float) : sizeof(uint16_t));
    for (int32_t t = 0; t < batch->n_tokens; t++) {
        int32_t position = batch->positions[t];
        int32_t block = context->entry_blocks[t][position / view->block_tokens];
        int32_t slot = position % view->block_tokens;
        const float *k = context->k + (int64_t)t * kv_dim;
        const float *v = context->v + (int64_t)t * kv_dim;
        for (int32_t h = 0; h < info->n_kv_heads; h++) {
            size_t offset = (size_t)block * view->block_stride_bytes +
                            kv_head_offset(view, head_bytes, h, slot);
            const float *k_head = k + (int64_t)h * info->head_dim;
            const float *v_head = v + (int64_t)h * info->head_dim;
            if (view->type == QUILL_TYPE_F32) {
                memcpy(view->k_data + offset, k_head, head_bytes);
                memcpy(view->v_data + offset, v_head, head_bytes);
                continue;
            }
            /* The row converters round exactly as quill__fp32_to_fp16, 8 or 16 values at a
             * time. */
            quill__quantize_row(QUILL_TYPE_F16, k_head, view->k_data + offset, info->head_dim);
            quill__quantize_row(QUILL_TYPE_F16, v_head, view->v_data + offset, info->head_dim);
        }
    }
}

/* Pool task: attention for this thread's share of the (entry, KV head) pairs. Each pair runs the
 * query heads of that KV head's GQA group in one quill__attention_heads call, which reads and
 * widens the group's K/V once. */
static void attention_worker(void *task_context, int thread_index, int n_threads) {
    const attention_task *task = task_context;
    const quill_context *context = task->context;
    const quill_model_info *info = &context->model->info;
    const quill_kv_layer_view *view = task->view;
    const int32_t group = info->n_heads / info->n_kv_heads;
    const int64_t q_dim = (int64_t)info->n_heads * info->head_dim;
    const size_t element_bytes = view->type == QUILL_TYPE_F32 ? 4 : 2;
    const float scale = 1.0f / sqrtf((float)info->head_dim);
    float scores[QUILL_ATTENTION_MAX_HEADS * QUILL_ATTENTION_CHUNK];

    /* Items are dealt round-robin rather than in contiguous ranges: in a prefill, later
     * entries attend over more keys, so contiguous ranges would leave the last thread with most
     * of the work. Each head's result depends only on its own query and keys, so neither the
     * split nor the grouping changes any result. */
    const int64_t n_items = (int64_t)task->batch->n_tokens * info->n_kv_heads;
    for (int64_t item = thread_index; item < n_items; item += n_threads) {
        int32_t t = (int32_t)(item / info->n_kv_heads);
        int32_t kv_head = (int32_t)(item % info->n_kv_heads);
        const size_t head_bytes = (size_t)info->head_dim * element_bytes;
        size_t head_offset = kv_head_offset(view, head_bytes, kv_head, 0);
        quill_attention_keys keys = {
            .type = view->type,
            .k_data = view->k_data + head_offset,
            .v_data = view->v_data + head_offset,
            .block_stride_bytes = view->block_stride_bytes,
            .row_bytes = head_bytes,
            .block_tokens = view->block_tokens,
            .blocks = context->entry_blocks[t],
        };
        /* The group's query heads are adjacent: heads kv_head * group .. + group - 1. */
        int64_t offset = t * q_dim + (int64_t)kv_head * group * info->head_dim;
        quill__attention_heads(context->q + offset, group, info->head_dim, info->head_dim, &keys,
                               (int64_t)task->batch->positions[t] + 1, scale, scores,
                               context->attention + offset, info->head_dim);
    }
}

/* One transformer block over the batch: attention then the SwiGLU feed-forward, each added to
 * the residual stream. */
static void run_layer(quill_context *context, quill_kv_cache *cache, const quill_batch *batch,
                      int32_t index) {
    const quill_model_info *info = &context->model->info;
    const quill_layer_weights *layer = &context->model->layers[index];
    const int32_t n_tokens = batch->n_tokens;
    const int64_t q_dim = (int64_t)info->n_heads * info->head_dim;
    quill_kv_layer_view view;
    quill__kv_cache_layer_view(cache, index, &view);

    /* Attention: every entry's K/V is stored before any entry attends, so an entry reads the
     * K/V of the earlier entries of its own sequence in this batch. */
    run_rows(context, ROW_OP_NORM, layer->attn_norm, n_tokens);
    project_qkv(context, layer, n_tokens);
    store_kv(context, &view, batch);
    attention_task task = {.context = context, .view = &view, .batch = batch};
    int64_t n_keys_total = 0;
    for (int32_t t = 0; t < n_tokens; t++) {
        n_keys_total += (int64_t)batch->positions[t] + 1;
    }
    quill_threadpool *pool =
        n_keys_total * 2 * q_dim >= context->min_pool_attention ? context->pool : NULL;
    quill__threadpool_run(pool, attention_worker, &task);
    multiply(context, &layer->attn_output, context->attention, q_dim, n_tokens, context->projected,
             info->n_embd);
    run_rows(context, ROW_OP_ADD, NULL, n_tokens);

    /* Feed-forward: down(silu(gate(x)) * up(x)), FFN_CHUNK_TOKENS tokens at a time. Chunk c
     * writes projected rows that alias the normed rows it has just read, and later chunks
     * read only later rows. */
    run_rows(context, ROW_OP_NORM, layer->ffn_norm, n_tokens);
    const quill_matrix *ffn_weights[] = {&layer->ffn_gate, &layer->ffn_up};
    float *ffn_outputs[] = {context->gate, context->up};
    const int64_t ffn_strides[] = {info->n_ff, info->n_ff};
    for (int32_t first = 0; first < n_tokens; first += FFN_CHUNK_TOKENS) {
        int32_t n_chunk = n_tokens - first < FFN_CHUNK_TOKENS ? n_tokens - first : FFN_CHUNK_TOKENS;
        multiply_fused(context, ffn_weights, ffn_outputs, ffn_strides, 2,
                       context->normed + (int64_t)first * info->n_embd, info->n_embd, n_chunk);
        run_rows(context, ROW_OP_SILU_MUL, NULL, n_chunk);
        multiply(context, &layer->ffn_down, context->gate, info->n_ff, n_chunk,
                 context->projected + (int64_t)first * info->n_embd, info->n_embd);
    }
    run_rows(context, ROW_OP_ADD, NULL, n_tokens);
}

/* Final norm and output projection for the entries that want logits, gathered into
 * consecutive rows first so the matmul runs over those rows only. */
static void compute_logits(quill_context *context, const quill_batch *batch) {
    const quill_model *model = context->model;
    const quill_model_info *info = &model->info;
    int32_t n_rows = 0;
    for (int32_t t = 0; t < batch->n_tokens; t++) {
        context->logits_rows[t] = -1;
        if (!batch->wants_logits[t]) {
            continue;
        }
        quill__rms_norm(context->residual + (int64_t)t * info->n_embd, model->output_norm,
                        context->normed + (int64_t)n_rows * info->n_embd, info->n_embd,
                        info->rms_eps);
        context->logits_rows[t] = n_rows;
        context->logits_entries[n_rows] = t;
        n_rows++;
    }
    if (n_rows > 0) {
        multiply(context, &model->output, context->normed, info->n_embd, n_rows, context->logits,
                 info->n_vocab);
    }
    context->n_logits = n_rows;
}

quill_threadpool *quill__context_pool(const quill_context *context) {
    return context->pool;
}

void quill__context_set_parallel_min(quill_context *context, int64_t n_min) {
    context->min_pool_bytes = n_min;
    context->min_pool_macs = n_min;
    context->min_pool_attention = n_min;
    context->min_pool_elements = n_min;
}

quill_status quill_context_forward(quill_context *context, quill_kv_cache *cache,
                                   const quill_batch *batch) {
    if (context == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "context: context is NULL");
    }
    context->n_logits = 0;
    context->n_entries_last = 0;
    int32_t n_seqs = 0;
    quill_status status = validate_batch(context, cache, batch, &n_seqs);
    if (status != QUILL_OK || batch->n_tokens == 0) {
        return status;
    }
    status = embed_tokens(context, batch);
    if (status != QUILL_OK) {
        return status;
    }

    for (int32_t index = 0; index < context->model->info.n_layers; index++) {
        run_layer(context, cache, batch, index);
    }
    for (int32_t slot = 0; slot < n_seqs; slot++) {
        quill__kv_cache_seq_set_length(cache, context->seq_ids[slot], context->seq_ends[slot]);
    }
    compute_logits(context, batch);
    context->n_entries_last = batch->n_tokens;
    return QUILL_OK;
}

const float *quill_context_logits(const quill_context *context, int32_t index) {
    if (context == NULL || index < 0 || index >= context->n_entries_last ||
        context->logits_rows[index] < 0) {
        return NULL;
    }
    return context->logits + (int64_t)context->logits_rows[index] * context->model->info.n_vocab;
}
