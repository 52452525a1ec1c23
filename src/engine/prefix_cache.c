/*
 * Prefix index as a chained hash over full blocks. A node stands for one full block: its key is
 * (parent node, block_tokens token ids), hashed as a chain from the first block, and it holds one
 * reference to the KV block with that content. Nodes sit in a hash table for lookup and in one
 * LRU list (least recently used at the head) for eviction.
 *
 * Eviction frees least recently used leaves whose block only the index references. A sequence
 * may reference a child's block but not its parent's (it copied a shared last block before
 * writing, or computed the same content as another sequence at the same time), so as a last
 * resort eviction also drops an unreferenced inner node with its whole subtree; dropping an index
 * node never takes a block away from a sequence, it only releases the index's reference.
 *
 * Owned by the engine thread: one thread at a time.
 */
#include "engine/prefix_cache.h"

#include <stdbool.h>
#include <string.h>

#include "base/alloc.h"

enum { FIRST_BUCKETS = 256 };

typedef struct prefix_node {
    uint64_t hash;                   /* chained hash of the parent's hash and this block's tokens */
    struct prefix_node *parent;      /* NULL for a first block */
    int32_t *tokens;                 /* [block_tokens] token ids of the block */
    int32_t block;                   /* KV block id; the index holds one reference */
    int32_t n_children;              /* nodes whose parent is this one */
    bool is_marked;                  /* scratch for dropping a subtree */
    struct prefix_node *bucket_next; /* next node in the same hash bucket */
    struct prefix_node *lru_prev;    /* toward the least recently used */
    struct prefix_node *lru_next;    /* toward the most recently used */
} prefix_node;

struct quill_prefix_cache {
    quill_kv_cache *cache; /* borrowed */
    int32_t block_tokens;  /* tokens per block */
    prefix_node **buckets; /* [n_buckets] chains of nodes */
    size_t n_buckets;      /* a power of two */
    int32_t n_nodes;       /* nodes indexed */
    prefix_node *lru_head; /* least recently used */
    prefix_node *lru_tail; /* most recently used */
};

/* FNV-1a style mixing of 32-bit tokens into the parent's hash, finished with a 64-bit mixer. */
static uint64_t hash_block(uint64_t parent_hash, const int32_t *tokens, int32_t n_tokens) {
    uint64_t hash = parent_hash ^ 0xcbf29ce484222325ULL;
    for (int32_t i = 0; i < n_tokens; i++) {
        hash ^= (uint32_t)tokens[i];
        hash *= 0x100000001b3ULL;
    }
    hash ^= hash >> 33;
    hash *= 0xff51afd7ed558ccdULL;
    hash ^= hash >> 33;
    return hash;
}

static void lru_unlink(quill_prefix_cache *index, prefix_node *node) {
    if (node->lru_prev != NULL) {
        node->lru_prev->lru_next = node->lru_next;
    } else {
        index->lru_head = node->lru_next;
    }
    if (node->lru_next != NULL) {
        node->lru_next->lru_prev = node->lru_prev;
    } else {
        index->lru_tail = node->lru_prev;
    }
    node->lru_prev = NULL;
    node->lru_next = NULL;
}

static void lru_append(quill_prefix_cache *index, prefix_node *node) {
    node->lru_prev = index->lru_tail;
    node->lru_next = NULL;
    if (index->lru_tail != NULL) {
        index->lru_tail->lru_next = node;
    } else {
        index->lru_head = node;
    }
    index->lru_tail = node;
}

static void touch(quill_prefix_cache *index, prefix_node *node) {
    lru_unlink(index, node);
    lru_append(index, node);
}

static prefix_node *find_child(const quill_prefix_cache *index, const prefix_node *parent,
                               const int32_t *tokens) {
    uint64_t parent_hash = parent != NULL ? parent->hash : 0;
    uint64_t hash = hash_block(parent_hash, tokens, index->block_tokens);
    prefix_node *node = index->buckets[hash & (index->n_buckets - 1)];
    size_t n_bytes = (size_t)index->block_tokens * sizeof(int32_t);
    while (node != NULL) {
        if (node->hash == hash && node->parent == parent &&
            memcmp(node->tokens, tokens, n_bytes) == 0) {
            return node;
        }
        node = node->bucket_next;
    }
    return NULL;
}

/* Doubles the bucket array when the load passes one node per bucket. Failure keeps the old
 * table, which only makes chains longer. */
static void maybe_grow(quill_prefix_cache *index) {
    if ((size_t)index->n_nodes < index->n_buckets) {
        return;
    }
    size_t n_buckets = index->n_buckets * 2;
    prefix_node **buckets = quill__calloc(n_buckets, sizeof(prefix_node *));
    if (buckets == NULL) {
        return;
    }
    for (size_t i = 0; i < index->n_buckets; i++) {
        prefix_node *node = index->buckets[i];
        while (node != NULL) {
            prefix_node *next = node->bucket_next;
            size_t at = node->hash & (n_buckets - 1);
            node->bucket_next = buckets[at];
            buckets[at] = node;
            node = next;
        }
    }
    quill__free(index->buckets);
    index->buckets = buckets;
    index->n_buckets = n_buckets;
}

static void remove_node(quill_prefix_cache *index, prefix_node *node) {
    prefix_node **link = &index->buckets[node->hash & (index->n_buckets - 1)];
    while (*link != node) {
        link = &(*link)->bucket_next;
    }
    *link = node->bucket_next;
    lru_unlink(index, node);
    if (node->parent != NULL) {
        node->parent->n_children--;
    }
    quill_kv_cache_block_release(index->cache, node->block);
    quill__free(node->tokens);
    quill__free(node);
    index->n_nodes--;
}

quill_status quill__prefix_cache_create(quill_kv_cache *cache, quill_prefix_cache **out) {
    *out = NULL;
    quill_prefix_cache *index = quill__calloc(1, sizeof(*index));
    if (index == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for the prefix index");
    }
    index->buckets = quill__calloc(FIRST_BUCKETS, sizeof(prefix_node *));
    if (index->buckets == NULL) {
        quill__free(index);
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for the prefix index");
    }
    index->cache = cache;
    index->block_tokens = quill_kv_cache_block_tokens(cache);
    index->n_buckets = FIRST_BUCKETS;
    *out = index;
    return QUILL_OK;
}

void quill__prefix_cache_destroy(quill_prefix_cache *index) {
    if (index == NULL) {
        return;
    }
    /* Children before parents is not needed here: every node goes, so only the block
     * references and memory matter. */
    prefix_node *node = index->lru_head;
    while (node != NULL) {
        prefix_node *next = node->lru_next;
        quill_kv_cache_block_release(index->cache, node->block);
        quill__free(node->tokens);
        quill__free(node);
        node = next;
    }
    quill__free(index->buckets);
    quill__free(index);
}

int32_t quill__prefix_cache_lookup(quill_prefix_cache *index, const int32_t *tokens,
                                   int64_t n_tokens, int32_t *blocks, int32_t max_blocks) {
    int64_t n_whole = n_tokens / index->block_tokens;
    int32_t n_found = 0;
    prefix_node *parent = NULL;
    while (n_found < n_whole && n_found < max_blocks) {
        const int32_t *block_tokens = tokens + (int64_t)n_found * index->block_tokens;
        prefix_node *node = find_child(index, parent, block_tokens);
        if (node == NULL) {
            break;
        }
        touch(index, node);
        blocks[n_found] = node->block;
        n_found++;
        parent = node;
    }
    return n_found;
}

int32_t quill__prefix_cache_count_matching(const quill_prefix_cache *index, const int32_t *tokens,
                                           int64_t n_tokens) {
    int64_t n_whole = n_tokens / index->block_tokens;
    int32_t n_found = 0;
    const prefix_node *parent = NULL;
    while (n_found < n_whole) {
        const prefix_node *node =
            find_child(index, parent, tokens + (int64_t)n_found * index->block_tokens);
        if (node == NULL) {
            break;
        }
        n_found++;
        parent = node;
    }
    return n_found;
}

quill_status quill__prefix_cache_insert(quill_prefix_cache *index, const int32_t *tokens,
                                        int64_t n_tokens, const int32_t *blocks) {
    int64_t n_whole = n_tokens / index->block_tokens;
    size_t n_bytes = (size_t)index->block_tokens * sizeof(int32_t);
    prefix_node *parent = NULL;
    for (int64_t i = 0; i < n_whole; i++) {
        const int32_t *block_tokens = tokens + i * index->block_tokens;
        prefix_node *node = find_child(index, parent, block_tokens);
        if (node != NULL) {
            touch(index, node);
            parent = node;
            continue;
        }

        node = quill__calloc(1, sizeof(*node));
        int32_t *copy = quill__malloc(n_bytes);
        if (node == NULL || copy == NULL) {
            quill__free(node);
            quill__free(copy);
            return quill_error_set(
                QUILL_ERR_NOMEM, "engine: out of memory indexing prefix block %lld", (long long)i);
        }
        memcpy(copy, block_tokens, n_bytes);
        node->tokens = copy;
        node->hash =
            hash_block(parent != NULL ? parent->hash : 0, block_tokens, index->block_tokens);
        node->parent = parent;
        node->block = blocks[i];
        quill_kv_cache_block_retain(index->cache, node->block);
        if (parent != NULL) {
            parent->n_children++;
        }
        size_t at = node->hash & (index->n_buckets - 1);
        node->bucket_next = index->buckets[at];
        index->buckets[at] = node;
        lru_append(index, node);
        index->n_nodes++;
        maybe_grow(index);
        parent = node;
    }
    return QUILL_OK;
}

/* Frees evictable leaves from the least recently used end. Freeing a leaf can turn its parent
 * into one, so passes repeat until n_blocks are freed or a pass frees nothing. */
static void evict_leaves(quill_prefix_cache *index, int32_t n_blocks, int32_t *n_evicted) {
    bool is_progress = true;
    while (*n_evicted < n_blocks && is_progress) {
        is_progress = false;
        prefix_node *node = index->lru_head;
        while (node != NULL && *n_evicted < n_blocks) {
            prefix_node *next = node->lru_next;
            if (node->n_children == 0 &&
                quill_kv_cache_block_refcount(index->cache, node->block) == 1) {
                remove_node(index, node);
                *n_evicted += 1;
                is_progress = true;
            }
            node = next;
        }
    }
}

static bool has_ancestor(const prefix_node *node, const prefix_node *ancestor) {
    for (const prefix_node *at = node; at != NULL; at = at->parent) {
        if (at == ancestor) {
            return true;
        }
    }
    return false;
}

/* Removes root and all its descendants from the index, leaves first. */
static void drop_subtree(quill_prefix_cache *index, prefix_node *root) {
    for (prefix_node *node = index->lru_head; node != NULL; node = node->lru_next) {
        node->is_marked = has_ancestor(node, root);
    }
    bool is_progress = true;
    while (is_progress) {
        is_progress = false;
        prefix_node *node = index->lru_head;
        while (node != NULL) {
            prefix_node *next = node->lru_next;
            if (node->is_marked && node->n_children == 0) {
                remove_node(index, node);
                is_progress = true;
            }
            node = next;
        }
    }
}

int32_t quill__prefix_cache_evict(quill_prefix_cache *index, int32_t n_blocks) {
    int32_t n_free_before = quill_kv_cache_n_blocks_free(index->cache);
    int32_t n_evicted = 0;
    evict_leaves(index, n_blocks, &n_evicted);

    /* Last resort: an unreferenced inner node whose subtree holds blocks in use. */
    prefix_node *node = index->lru_head;
    while (node != NULL && quill_kv_cache_n_blocks_free(index->cache) - n_free_before < n_blocks) {
        if (quill_kv_cache_block_refcount(index->cache, node->block) == 1) {
            drop_subtree(index, node);
            node = index->lru_head;
            continue;
        }
        node = node->lru_next;
    }
    return quill_kv_cache_n_blocks_free(index->cache) - n_free_before;
}

int32_t quill__prefix_cache_n_blocks(const quill_prefix_cache *index) {
    return index == NULL ? 0 : index->n_nodes;
}

int32_t quill__prefix_cache_n_evictable(const quill_prefix_cache *index) {
    if (index == NULL) {
        return 0;
    }
    int32_t n_evictable = 0;
    for (const prefix_node *node = index->lru_head; node != NULL; node = node->lru_next) {
        if (quill_kv_cache_block_refcount(index->cache, node->block) == 1) {
            n_evictable++;
        }
    }
    return n_evictable;
}
