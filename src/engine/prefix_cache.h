/*
 * The prefix index: full KV blocks indexed by their token content chained from their parent
 * block, so that a new prompt can reuse the K/V of the longest cached prefix. Each indexed block
 * holds one reference in the KV cache. A block that only the index references is evictable, in
 * least-recently-used order, leaves first; a block that a sequence references is never evicted.
 *
 * Owned by the engine thread together with the KV cache: one thread at a time.
 */
#ifndef QUILL_ENGINE_PREFIX_CACHE_H
#define QUILL_ENGINE_PREFIX_CACHE_H

#include <stdint.h>

#include "quill/kv_cache.h"
#include "quill/status.h"

typedef struct quill_prefix_cache quill_prefix_cache;

/* Creates an empty index over cache, which it borrows and which must outlive it. Returns a new
 * index in *out; the caller destroys it. */
quill_status quill__prefix_cache_create(quill_kv_cache *cache, quill_prefix_cache **out);

/* Releases every block reference the index holds and frees it. Accepts NULL. */
void quill__prefix_cache_destroy(quill_prefix_cache *index);

/* Finds the longest chain of indexed blocks whose tokens equal tokens[0..n_tokens) block by
 * block, stores up to max_blocks of their ids in blocks, marks them used, and returns the
 * count. Only whole blocks match. */
int32_t quill__prefix_cache_lookup(quill_prefix_cache *index, const int32_t *tokens,
                                   int64_t n_tokens, int32_t *blocks, int32_t max_blocks);

/* Returns how many leading whole blocks of tokens[0..n_tokens) are indexed, without marking
 * them used. */
int32_t quill__prefix_cache_count_matching(const quill_prefix_cache *index, const int32_t *tokens,
                                           int64_t n_tokens);

/* Indexes the whole blocks of a sequence: tokens[0..n_tokens) whose K/V sit in blocks (in
 * position order, at least n_tokens / block_tokens entries). Blocks already indexed for the
 * same content are marked used; new ones are retained. QUILL_ERR_NOMEM leaves the index
 * consistent with fewer blocks. */
quill_status quill__prefix_cache_insert(quill_prefix_cache *index, const int32_t *tokens,
                                        int64_t n_tokens, const int32_t *blocks);

/* Evicts up to n_blocks indexed blocks that nothing else references, least recently used
 * first, and returns how many it released to the free list. */
int32_t quill__prefix_cache_evict(quill_prefix_cache *index, int32_t n_blocks);

/* Indexed blocks, and those among them that only the index references (evictable). */
int32_t quill__prefix_cache_n_blocks(const quill_prefix_cache *index);
int32_t quill__prefix_cache_n_evictable(const quill_prefix_cache *index);

#endif
