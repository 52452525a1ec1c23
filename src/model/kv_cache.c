/*
 * Paged KV cache. All blocks are allocated up front in one buffer; block b holds, for every
 * layer, block_tokens K rows followed by block_tokens V rows:
 *   storage type [n_blocks][n_layers][2][block_tokens][kv_dim]   (2 = K then V)
 * A block with reference count 0 sits on the free list (a stack of ids). A sequence is a block
 * table plus a length; invariant: n_blocks(seq) == ceil(length / block_tokens) except right
 * after seq_prepare, which may append blocks for positions not written yet.
 *
 * Owned by one thread at a time (the engine thread).
 */
#include "quill/kv_cache.h"

#include <string.h>

#include "base/alloc.h"
#include "model/kv_cache_internal.h"
#include "quill/model.h"
#include "quill/tensor_type.h"

enum {
    DEFAULT_BLOCK_TOKENS = 16,
    DEFAULT_SEQ_MAX = 64,
    STORAGE_ALIGNMENT = 64,
};

/* 256 MiB: 8192 tokens of a Llama-3.2-1B-shaped model in F16 (16 layers, K and V rows of 512
 * halves each: 32 KiB per token). */
static const size_t DEFAULT_MEMORY_BYTES = (size_t)256 << 20;

typedef struct kv_sequence {
    int32_t *blocks;  /* [capacity] block ids in position order */
    int32_t n_blocks; /* entries of blocks in use */
    int32_t capacity; /* entries allocated */
    int64_t length;   /* tokens whose K/V are stored */
} kv_sequence;

struct quill_kv_cache {
    uint32_t type;          /* QUILL_TYPE_F16 or QUILL_TYPE_F32 */
    int32_t n_layers;       /* layers per block */
    int32_t kv_dim;         /* elements per K (or V) row */
    int32_t block_tokens;   /* token slots per block */
    int32_t n_blocks;       /* blocks in storage */
    size_t row_bytes;       /* kv_dim elements */
    size_t block_bytes;     /* n_layers * 2 * block_tokens * row_bytes */
    uint8_t *storage;       /* [n_blocks][block_bytes], STORAGE_ALIGNMENT-aligned */
    int32_t *refcounts;     /* [n_blocks] */
    int32_t *free_blocks;   /* [n_blocks] stack of free ids; top at n_free - 1 */
    int32_t n_free;         /* entries of free_blocks in use */
    kv_sequence *sequences; /* [n_seq_max] */
    int32_t n_seq_max;      /* sequence ids are 0..n_seq_max-1 */
};

static size_t element_bytes(uint32_t type) {
    return type == QUILL_TYPE_F32 ? 4 : 2;
}

static bool is_block_valid(const quill_kv_cache *cache, int32_t block) {
    return cache != NULL && block >= 0 && block < cache->n_blocks;
}

static kv_sequence *find_sequence(const quill_kv_cache *cache, int32_t seq_id) {
    if (cache == NULL || seq_id < 0 || seq_id >= cache->n_seq_max) {
        return NULL;
    }
    return &cache->sequences[seq_id];
}

static int64_t blocks_for_tokens(const quill_kv_cache *cache, int64_t n_tokens) {
    return (n_tokens + cache->block_tokens - 1) / cache->block_tokens;
}

/* Takes a block off the free list with reference count 1. The caller has checked n_free. */
static int32_t take_free_block(quill_kv_cache *cache) {
    cache->n_free--;
    int32_t block = cache->free_blocks[cache->n_free];
    cache->refcounts[block] = 1;
    return block;
}

/* Grows the sequence's block table to hold at least n_blocks entries. */
static quill_status reserve_table(kv_sequence *sequence, int64_t n_blocks) {
    if (n_blocks <= sequence->capacity) {
        return QUILL_OK;
    }
    int64_t capacity = sequence->capacity > 0 ? sequence->capacity : 8;
    while (capacity < n_blocks) {
        capacity *= 2;
    }
    int32_t *blocks = quill__realloc_array(sequence->blocks, (size_t)capacity, sizeof(int32_t));
    if (blocks == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM,
                               "kv_cache: cannot grow a block table to %lld entries; out of memory",
                               (long long)capacity);
    }
    sequence->blocks = blocks;
    sequence->capacity = (int32_t)capacity;
    return QUILL_OK;
}

/* True when the sequence's next write goes into a partly filled last block that another owner
 * also references, so that seq_prepare must copy it first. */
static bool needs_copy_on_write(const quill_kv_cache *cache, const kv_sequence *sequence) {
    if (sequence->length % cache->block_tokens == 0) {
        return false;
    }
    int64_t last = sequence->length / cache->block_tokens;
    if (last >= sequence->n_blocks) {
        return false;
    }
    return cache->refcounts[sequence->blocks[last]] > 1;
}

quill_kv_cache_params quill_kv_cache_params_default(void) {
    quill_kv_cache_params params = {
        .memory_bytes = DEFAULT_MEMORY_BYTES,
        .block_tokens = DEFAULT_BLOCK_TOKENS,
        .n_seq_max = DEFAULT_SEQ_MAX,
        .type = QUILL_TYPE_F16,
    };
    return params;
}

size_t quill_kv_cache_bytes_per_token(const struct quill_model *model, uint32_t type) {
    if (model == NULL) {
        return 0;
    }
    const quill_model_info *info = quill_model_get_info(model);
    size_t kv_dim = (size_t)info->n_kv_heads * (size_t)info->head_dim;
    return (size_t)info->n_layers * 2 * kv_dim * element_bytes(type);
}

quill_status quill__kv_cache_create_shape(int32_t n_layers, int32_t kv_dim,
                                          const quill_kv_cache_params *params,
                                          quill_kv_cache **out) {
    quill_status status = QUILL_OK;
    quill_kv_cache *cache = NULL;
    if (out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "kv_cache: out is NULL");
    }
    *out = NULL;
    quill_kv_cache_params defaults = quill_kv_cache_params_default();
    if (params == NULL) {
        params = &defaults;
    }

    /* Check the shape and parameters. */
    if (n_layers < 1 || kv_dim < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: invalid shape n_layers=%d kv_dim=%d; both must be >= 1",
                               n_layers, kv_dim);
    }
    if (params->type != QUILL_TYPE_F16 && params->type != QUILL_TYPE_F32) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: storage type %s is not supported; use F16 or F32",
                               quill_type_name(params->type));
    }
    if (params->block_tokens < 1 || params->block_tokens > 4096) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: block_tokens=%d is out of range [1, 4096]",
                               params->block_tokens);
    }
    if (params->n_seq_max < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "kv_cache: n_seq_max=%d must be >= 1",
                               params->n_seq_max);
    }

    /* Size one block and count how many fit in the budget. */
    size_t row_bytes = (size_t)kv_dim * element_bytes(params->type);
    size_t block_bytes = 0;
    if (!quill__size_mul(row_bytes, (size_t)params->block_tokens * 2 * (size_t)n_layers,
                         &block_bytes)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "kv_cache: block size overflows size_t");
    }
    block_bytes = (block_bytes + STORAGE_ALIGNMENT - 1) / STORAGE_ALIGNMENT * STORAGE_ALIGNMENT;
    size_t n_blocks = params->memory_bytes / block_bytes;
    if (n_blocks < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: memory budget of %zu bytes holds no block of %zu bytes "
                               "(%d tokens); raise the budget or lower block_tokens",
                               params->memory_bytes, block_bytes, params->block_tokens);
    }
    if (n_blocks > INT32_MAX / 2) {
        n_blocks = INT32_MAX / 2;
    }

    /* Allocate the storage, the reference counts, the free list and the sequences. */
    cache = quill__calloc(1, sizeof(*cache));
    if (cache == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "kv_cache: out of memory");
        goto cleanup;
    }
    cache->type = params->type;
    cache->n_layers = n_layers;
    cache->kv_dim = kv_dim;
    cache->block_tokens = params->block_tokens;
    cache->n_blocks = (int32_t)n_blocks;
    cache->row_bytes = row_bytes;
    cache->block_bytes = block_bytes;
    cache->n_seq_max = params->n_seq_max;
    cache->storage = quill__aligned_alloc(STORAGE_ALIGNMENT, n_blocks * block_bytes);
    cache->refcounts = quill__calloc(n_blocks, sizeof(int32_t));
    cache->free_blocks = quill__malloc_array(n_blocks, sizeof(int32_t));
    cache->sequences = quill__calloc((size_t)params->n_seq_max, sizeof(kv_sequence));
    if (cache->storage == NULL || cache->refcounts == NULL || cache->free_blocks == NULL ||
        cache->sequences == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM,
                                 "kv_cache: cannot allocate %zu blocks of %zu bytes; lower the "
                                 "memory budget (serve --cache-mem)",
                                 n_blocks, block_bytes);
        goto cleanup;
    }

    /* Block 0 on top of the stack, so blocks are handed out in id order. */
    for (int32_t i = 0; i < cache->n_blocks; i++) {
        cache->free_blocks[i] = cache->n_blocks - 1 - i;
    }
    cache->n_free = cache->n_blocks;
    *out = cache;
    cache = NULL;

cleanup:
    quill_kv_cache_destroy(cache);
    return status;
}

quill_status quill_kv_cache_create(const struct quill_model *model,
                                   const quill_kv_cache_params *params, quill_kv_cache **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (model == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "kv_cache: model is NULL");
    }
    const quill_model_info *info = quill_model_get_info(model);
    return quill__kv_cache_create_shape(info->n_layers, info->n_kv_heads * info->head_dim, params,
                                        out);
}

void quill_kv_cache_destroy(quill_kv_cache *cache) {
    if (cache == NULL) {
        return;
    }
    if (cache->sequences != NULL) {
        for (int32_t i = 0; i < cache->n_seq_max; i++) {
            quill__free(cache->sequences[i].blocks);
        }
    }
    quill__free(cache->sequences);
    quill__free(cache->free_blocks);
    quill__free(cache->refcounts);
    quill__free(cache->storage);
    quill__free(cache);
}

int32_t quill_kv_cache_block_tokens(const quill_kv_cache *cache) {
    return cache == NULL ? 0 : cache->block_tokens;
}

int32_t quill_kv_cache_n_blocks(const quill_kv_cache *cache) {
    return cache == NULL ? 0 : cache->n_blocks;
}

int32_t quill_kv_cache_n_blocks_free(const quill_kv_cache *cache) {
    return cache == NULL ? 0 : cache->n_free;
}

int32_t quill_kv_cache_n_seq_max(const quill_kv_cache *cache) {
    return cache == NULL ? 0 : cache->n_seq_max;
}

void quill_kv_cache_block_retain(quill_kv_cache *cache, int32_t block) {
    if (!is_block_valid(cache, block) || cache->refcounts[block] < 1) {
        /* A free block has no owner to share it with: retaining it is a caller bug that would
         * let two owners write the same slots, so it is ignored. */
        return;
    }
    cache->refcounts[block]++;
}

void quill_kv_cache_block_release(quill_kv_cache *cache, int32_t block) {
    if (!is_block_valid(cache, block) || cache->refcounts[block] < 1) {
        return;
    }
    cache->refcounts[block]--;
    if (cache->refcounts[block] == 0) {
        cache->free_blocks[cache->n_free] = block;
        cache->n_free++;
    }
}

int32_t quill_kv_cache_block_refcount(const quill_kv_cache *cache, int32_t block) {
    return is_block_valid(cache, block) ? cache->refcounts[block] : 0;
}

int64_t quill_kv_cache_seq_length(const quill_kv_cache *cache, int32_t seq_id) {
    const kv_sequence *sequence = find_sequence(cache, seq_id);
    return sequence == NULL ? 0 : sequence->length;
}

int32_t quill_kv_cache_seq_n_blocks(const quill_kv_cache *cache, int32_t seq_id) {
    const kv_sequence *sequence = find_sequence(cache, seq_id);
    return sequence == NULL ? 0 : sequence->n_blocks;
}

const int32_t *quill_kv_cache_seq_blocks(const quill_kv_cache *cache, int32_t seq_id) {
    const kv_sequence *sequence = find_sequence(cache, seq_id);
    return sequence == NULL ? NULL : sequence->blocks;
}

void quill_kv_cache_seq_reset(quill_kv_cache *cache, int32_t seq_id) {
    quill_kv_cache_seq_truncate(cache, seq_id, 0);
}

quill_status quill_kv_cache_seq_attach(quill_kv_cache *cache, int32_t seq_id, const int32_t *blocks,
                                       int32_t n_blocks, int64_t n_tokens) {
    kv_sequence *sequence = find_sequence(cache, seq_id);
    if (sequence == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: sequence id %d is out of range [0, %d)", seq_id,
                               cache == NULL ? 0 : cache->n_seq_max);
    }
    if (sequence->n_blocks != 0 || sequence->length != 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: cannot attach blocks to sequence %d, which holds %lld "
                               "tokens; reset it first",
                               seq_id, (long long)sequence->length);
    }
    if (n_tokens < 0 || n_blocks < 0 || (n_blocks > 0 && blocks == NULL) ||
        blocks_for_tokens(cache, n_tokens) != n_blocks) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: %d blocks of %d tokens do not match %lld tokens; "
                               "pass ceil(n_tokens / block_tokens) blocks",
                               n_blocks, cache->block_tokens, (long long)n_tokens);
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        if (!is_block_valid(cache, blocks[i]) || cache->refcounts[blocks[i]] < 1) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "kv_cache: block %d (entry %d) is not a block in use; only "
                                   "blocks someone holds can be shared",
                                   blocks[i], i);
        }
    }
    quill_status status = reserve_table(sequence, n_blocks);
    if (status != QUILL_OK) {
        return status;
    }

    for (int32_t i = 0; i < n_blocks; i++) {
        cache->refcounts[blocks[i]]++;
        sequence->blocks[i] = blocks[i];
    }
    sequence->n_blocks = n_blocks;
    sequence->length = n_tokens;
    return QUILL_OK;
}

void quill_kv_cache_seq_truncate(quill_kv_cache *cache, int32_t seq_id, int64_t n_tokens) {
    kv_sequence *sequence = find_sequence(cache, seq_id);
    if (sequence == NULL || n_tokens < 0) {
        return;
    }
    if (n_tokens > sequence->length) {
        n_tokens = sequence->length;
    }
    int64_t n_blocks_kept = blocks_for_tokens(cache, n_tokens);
    for (int64_t i = sequence->n_blocks - 1; i >= n_blocks_kept; i--) {
        quill_kv_cache_block_release(cache, sequence->blocks[i]);
    }
    if (sequence->n_blocks > n_blocks_kept) {
        sequence->n_blocks = (int32_t)n_blocks_kept;
    }
    sequence->length = n_tokens;
}

int32_t quill_kv_cache_seq_blocks_needed(const quill_kv_cache *cache, int32_t seq_id,
                                         int64_t n_tokens_total) {
    const kv_sequence *sequence = find_sequence(cache, seq_id);
    if (sequence == NULL || n_tokens_total <= sequence->length) {
        return 0;
    }
    int64_t n_new = blocks_for_tokens(cache, n_tokens_total) - sequence->n_blocks;
    if (n_new < 0) {
        n_new = 0;
    }
    if (needs_copy_on_write(cache, sequence)) {
        n_new++;
    }
    return n_new > INT32_MAX ? INT32_MAX : (int32_t)n_new;
}

quill_status quill_kv_cache_seq_prepare(quill_kv_cache *cache, int32_t seq_id,
                                        int64_t n_tokens_total) {
    kv_sequence *sequence = find_sequence(cache, seq_id);
    if (sequence == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "kv_cache: sequence id %d is out of range [0, %d)", seq_id,
                               cache == NULL ? 0 : cache->n_seq_max);
    }
    if (n_tokens_total <= sequence->length) {
        return QUILL_OK;
    }
    int32_t n_needed = quill_kv_cache_seq_blocks_needed(cache, seq_id, n_tokens_total);
    if (n_needed > cache->n_free) {
        return quill_error_set(QUILL_ERR_BUSY,
                               "kv_cache: sequence %d needs %d free blocks for %lld tokens but "
                               "%d are free; finish or evict other sequences and retry",
                               seq_id, n_needed, (long long)n_tokens_total, cache->n_free);
    }
    int64_t n_blocks_total = blocks_for_tokens(cache, n_tokens_total);
    quill_status status = reserve_table(sequence, n_blocks_total);
    if (status != QUILL_OK) {
        return status;
    }

    /* Copy a shared partly filled last block, so that writes after `length` stay private. The
     * whole block is copied: slots past `length` are garbage either way and get overwritten. */
    if (needs_copy_on_write(cache, sequence)) {
        int64_t last = sequence->length / cache->block_tokens;
        int32_t shared = sequence->blocks[last];
        int32_t copy = take_free_block(cache);
        memcpy(cache->storage + (size_t)copy * cache->block_bytes,
               cache->storage + (size_t)shared * cache->block_bytes, cache->block_bytes);
        quill_kv_cache_block_release(cache, shared);
        sequence->blocks[last] = copy;
    }

    while (sequence->n_blocks < n_blocks_total) {
        sequence->blocks[sequence->n_blocks] = take_free_block(cache);
        sequence->n_blocks++;
    }
    return QUILL_OK;
}

void quill__kv_cache_layer_view(const quill_kv_cache *cache, int32_t layer,
                                quill_kv_layer_view *view) {
    size_t layer_bytes = 2 * (size_t)cache->block_tokens * cache->row_bytes;
    view->type = cache->type;
    view->k_data = cache->storage + (size_t)layer * layer_bytes;
    view->v_data = view->k_data + (size_t)cache->block_tokens * cache->row_bytes;
    view->block_stride_bytes = cache->block_bytes;
    view->row_bytes = cache->row_bytes;
    view->block_tokens = cache->block_tokens;
    view->kv_dim = cache->kv_dim;
}

int32_t quill__kv_cache_n_layers(const quill_kv_cache *cache) {
    return cache->n_layers;
}

int32_t quill__kv_cache_kv_dim(const quill_kv_cache *cache) {
    return cache->kv_dim;
}

void quill__kv_cache_seq_set_length(quill_kv_cache *cache, int32_t seq_id, int64_t n_tokens) {
    kv_sequence *sequence = find_sequence(cache, seq_id);
    if (sequence != NULL) {
        sequence->length = n_tokens;
    }
}
