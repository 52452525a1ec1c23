/*
 * Paged KV cache: one pool of fixed-size blocks, each holding block_tokens token slots of K and V
 * for every layer. A sequence is a block table (block ids in position order) plus a length in
 * tokens. Blocks carry reference counts, so sequences can share a prefix by sharing blocks; a
 * shared block that is only partly filled is copied before a sequence writes into it
 * (copy-on-write). The memory budget is one number for the whole cache.
 *
 * Owned by one thread (the engine thread, or the CLI's main thread): one thread at a time.
 */
#ifndef QUILL_KV_CACHE_H
#define QUILL_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_kv_cache quill_kv_cache;
struct quill_model;

typedef struct quill_kv_cache_params {
    size_t memory_bytes;    /* budget for all K/V storage; sets the number of blocks */
    int32_t block_tokens;   /* token slots per block (16 by default) */
    int32_t n_seq_max;      /* sequence ids are 0..n_seq_max-1 */
    uint32_t type;          /* storage type: QUILL_TYPE_F16 (default) or QUILL_TYPE_F32 */
} quill_kv_cache_params;

QUILL_API quill_kv_cache_params quill_kv_cache_params_default(void);

/* Bytes one token takes in the cache for this model and storage type (all layers, K and V). */
QUILL_API size_t quill_kv_cache_bytes_per_token(const struct quill_model *model, uint32_t type);

/* Creates the cache, allocating all blocks up front. Fails with QUILL_ERR_INVALID_ARG when the
 * budget holds fewer than one block. Returns a new cache in *out; the caller destroys it. */
QUILL_API quill_status quill_kv_cache_create(const struct quill_model *model,
                                             const quill_kv_cache_params *params,
                                             quill_kv_cache **out);
QUILL_API void quill_kv_cache_destroy(quill_kv_cache *cache);

QUILL_API int32_t quill_kv_cache_block_tokens(const quill_kv_cache *cache);
QUILL_API int32_t quill_kv_cache_n_blocks(const quill_kv_cache *cache);
/* Blocks with reference count 0, ready to be handed out. */
QUILL_API int32_t quill_kv_cache_n_blocks_free(const quill_kv_cache *cache);
QUILL_API int32_t quill_kv_cache_n_seq_max(const quill_kv_cache *cache);

/* Block references. A block whose count drops to 0 returns to the free list. */
QUILL_API void quill_kv_cache_block_retain(quill_kv_cache *cache, int32_t block);
QUILL_API void quill_kv_cache_block_release(quill_kv_cache *cache, int32_t block);
QUILL_API int32_t quill_kv_cache_block_refcount(const quill_kv_cache *cache, int32_t block);

/* Sequences. */
QUILL_API int64_t quill_kv_cache_seq_length(const quill_kv_cache *cache, int32_t seq_id);
QUILL_API int32_t quill_kv_cache_seq_n_blocks(const quill_kv_cache *cache, int32_t seq_id);
/* Borrowed: valid until the sequence's block table changes. */
QUILL_API const int32_t *quill_kv_cache_seq_blocks(const quill_kv_cache *cache, int32_t seq_id);

/* Releases all of the sequence's blocks and sets its length to 0. */
QUILL_API void quill_kv_cache_seq_reset(quill_kv_cache *cache, int32_t seq_id);

/* Makes seq_id (which must be empty) start with the given blocks (retained) holding n_tokens
 * tokens of K/V; n_tokens may end inside the last block. */
QUILL_API quill_status quill_kv_cache_seq_attach(quill_kv_cache *cache, int32_t seq_id,
                                                 const int32_t *blocks, int32_t n_blocks,
                                                 int64_t n_tokens);

/* Shortens a sequence to n_tokens, releasing blocks past it. */
QUILL_API void quill_kv_cache_seq_truncate(quill_kv_cache *cache, int32_t seq_id,
                                           int64_t n_tokens);

/* Makes sure the sequence has writable blocks for positions [length, n_tokens_total): takes
 * new blocks from the free list and copies a shared partly filled last block. Returns
 * QUILL_ERR_BUSY, changing nothing, when the free list is too short; the caller may evict
 * cached blocks and retry. */
QUILL_API quill_status quill_kv_cache_seq_prepare(quill_kv_cache *cache, int32_t seq_id,
                                                  int64_t n_tokens_total);

/* Number of free blocks seq_prepare would take for n_tokens_total. */
QUILL_API int32_t quill_kv_cache_seq_blocks_needed(const quill_kv_cache *cache, int32_t seq_id,
                                                   int64_t n_tokens_total);

QUILL_EXTERN_C_END

#endif
