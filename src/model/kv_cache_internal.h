/*
 * Internal view of the paged KV cache for the forward pass and for tests: creation from a bare
 * shape (no model), where a block's K and V rows sit, and advancing a sequence's length after a
 * forward pass has written its K/V. Same thread rule as the cache: one thread at a time.
 */
#ifndef QUILL_KV_CACHE_INTERNAL_H
#define QUILL_KV_CACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "quill/kv_cache.h"

/* Creates a cache for n_layers layers of kv_dim K (and as many V) elements per token. Same
 * contract as quill_kv_cache_create. */
quill_status quill__kv_cache_create_shape(int32_t n_layers, int32_t kv_dim,
                                          const quill_kv_cache_params *params,
                                          quill_kv_cache **out);

/* Where one layer's K and V live. Block b's K for this layer takes block_tokens * row_bytes
 * bytes from k_data + b * block_stride_bytes (block_tokens * kv_dim elements of `type`); V
 * likewise from v_data. The cache copies and shares whole blocks and never looks inside, so
 * the order of elements within a block is the writer's: the forward pass keeps them head-major
 * (context.c). */
typedef struct quill_kv_layer_view {
    uint32_t type;             /* QUILL_TYPE_F16 or QUILL_TYPE_F32 */
    uint8_t *k_data;           /* layer's K rows in block 0 */
    uint8_t *v_data;           /* layer's V rows in block 0 */
    size_t block_stride_bytes; /* bytes from one block to the next */
    size_t row_bytes;          /* bytes of one token's K (or V): kv_dim elements */
    int32_t block_tokens;      /* token slots per block */
    int32_t kv_dim;            /* elements per row: n_kv_heads * head_dim */
} quill_kv_layer_view;

/* Fills *view for layer in [0, n_layers). */
void quill__kv_cache_layer_view(const quill_kv_cache *cache, int32_t layer,
                                quill_kv_layer_view *view);

int32_t quill__kv_cache_n_layers(const quill_kv_cache *cache);
int32_t quill__kv_cache_kv_dim(const quill_kv_cache *cache);

/* Sets the sequence's length after its K/V for positions up to n_tokens have been written.
 * The caller has checked that the block table covers n_tokens. */
void quill__kv_cache_seq_set_length(quill_kv_cache *cache, int32_t seq_id, int64_t n_tokens);

#endif
