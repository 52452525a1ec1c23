/*
 * Tests of the prefix index over a small paged KV cache (no model): lookup of whole blocks,
 * reference counting, LRU eviction that never touches blocks in use, the last-resort drop of a
 * subtree, and release of every reference on destroy.
 */
#include "test_support.h"

#include <stdlib.h>
#include <string.h>

#include "engine/prefix_cache.h"
#include "model/kv_cache_internal.h"
#include "quill/tensor_type.h"

enum { BLOCK_TOKENS = 4, N_BLOCKS = 8, MAX_TOKENS = 64 };

typedef struct fixture {
    quill_kv_cache *cache;
    quill_prefix_cache *index;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.type = QUILL_TYPE_F32;
    params.block_tokens = BLOCK_TOKENS;
    params.n_seq_max = 4;
    /* One layer, kv_dim 16: a block is 4 tokens * 2 * 16 floats = 512 bytes. */
    params.memory_bytes = 512 * N_BLOCKS;
    assert_int_equal(quill__kv_cache_create_shape(1, 16, &params, &f->cache), QUILL_OK);
    assert_int_equal(quill_kv_cache_n_blocks(f->cache), N_BLOCKS);
    assert_int_equal(quill__prefix_cache_create(f->cache, &f->index), QUILL_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    quill__prefix_cache_destroy(f->index);
    quill_kv_cache_destroy(f->cache);
    free(f);
    return 0;
}

/* Gives seq_id blocks for n_tokens tokens as if a forward pass had written them. */
static void fill_sequence(fixture *f, int32_t seq_id, int64_t n_tokens) {
    assert_int_equal(quill_kv_cache_seq_prepare(f->cache, seq_id, n_tokens), QUILL_OK);
    quill__kv_cache_seq_set_length(f->cache, seq_id, n_tokens);
}

/* Fills tokens with base, base + 1, ... */
static void make_tokens(int32_t *tokens, int64_t n_tokens, int32_t base) {
    for (int64_t i = 0; i < n_tokens; i++) {
        tokens[i] = base + (int32_t)i;
    }
}

static void index_sequence(fixture *f, int32_t seq_id, const int32_t *tokens, int64_t n_tokens) {
    assert_int_equal(quill__prefix_cache_insert(f->index, tokens, n_tokens,
                                                quill_kv_cache_seq_blocks(f->cache, seq_id)),
                     QUILL_OK);
}

static void test_prefix_lookup_whole_blocks(void **state) {
    fixture *f = *state;
    int32_t tokens[MAX_TOKENS];
    make_tokens(tokens, 10, 100);
    fill_sequence(f, 0, 10);
    index_sequence(f, 0, tokens, 10);
    /* 10 tokens make two whole blocks; the third is partial and not indexed. */
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 2);

    const int32_t *seq_blocks = quill_kv_cache_seq_blocks(f->cache, 0);
    int32_t found[4] = {-1, -1, -1, -1};
    assert_int_equal(quill__prefix_cache_lookup(f->index, tokens, 10, found, 4), 2);
    assert_int_equal(found[0], seq_blocks[0]);
    assert_int_equal(found[1], seq_blocks[1]);

    /* A prompt that differs in the second block matches only the first. */
    int32_t other[MAX_TOKENS];
    memcpy(other, tokens, sizeof(tokens));
    other[5] = 7;
    assert_int_equal(quill__prefix_cache_lookup(f->index, other, 10, found, 4), 1);
    assert_int_equal(quill__prefix_cache_count_matching(f->index, other, 10), 1);

    /* The same second block under a different first block does not match: content chains. */
    other[5] = tokens[5];
    other[0] = 9;
    assert_int_equal(quill__prefix_cache_lookup(f->index, other, 10, found, 4), 0);

    /* Seven tokens hold one whole block; max_blocks caps the result. */
    assert_int_equal(quill__prefix_cache_lookup(f->index, tokens, 7, found, 4), 1);
    assert_int_equal(quill__prefix_cache_lookup(f->index, tokens, 10, found, 1), 1);
}

static void test_prefix_insert_holds_reference(void **state) {
    fixture *f = *state;
    int32_t tokens[MAX_TOKENS];
    make_tokens(tokens, 8, 1);
    fill_sequence(f, 0, 8);
    index_sequence(f, 0, tokens, 8);
    int32_t first = quill_kv_cache_seq_blocks(f->cache, 0)[0];
    assert_int_equal(quill_kv_cache_block_refcount(f->cache, first), 2);
    assert_int_equal(quill__prefix_cache_n_evictable(f->index), 0);

    /* Indexing again changes no count. */
    index_sequence(f, 0, tokens, 8);
    assert_int_equal(quill_kv_cache_block_refcount(f->cache, first), 2);
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 2);

    quill_kv_cache_seq_reset(f->cache, 0);
    assert_int_equal(quill_kv_cache_block_refcount(f->cache, first), 1);
    assert_int_equal(quill__prefix_cache_n_evictable(f->index), 2);
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), N_BLOCKS - 2);
}

static void test_prefix_evict_lru_order(void **state) {
    fixture *f = *state;
    int32_t old_tokens[MAX_TOKENS];
    int32_t new_tokens[MAX_TOKENS];
    make_tokens(old_tokens, 4, 10);
    make_tokens(new_tokens, 4, 50);
    fill_sequence(f, 0, 4);
    index_sequence(f, 0, old_tokens, 4);
    fill_sequence(f, 1, 4);
    index_sequence(f, 1, new_tokens, 4);
    quill_kv_cache_seq_reset(f->cache, 0);
    quill_kv_cache_seq_reset(f->cache, 1);

    assert_int_equal(quill__prefix_cache_evict(f->index, 1), 1);
    int32_t found[1];
    assert_int_equal(quill__prefix_cache_lookup(f->index, old_tokens, 4, found, 1), 0);
    assert_int_equal(quill__prefix_cache_lookup(f->index, new_tokens, 4, found, 1), 1);
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), N_BLOCKS - 1);
}

static void test_prefix_evict_touch_refreshes(void **state) {
    fixture *f = *state;
    int32_t first_tokens[MAX_TOKENS];
    int32_t second_tokens[MAX_TOKENS];
    make_tokens(first_tokens, 4, 10);
    make_tokens(second_tokens, 4, 50);
    fill_sequence(f, 0, 4);
    index_sequence(f, 0, first_tokens, 4);
    fill_sequence(f, 1, 4);
    index_sequence(f, 1, second_tokens, 4);
    quill_kv_cache_seq_reset(f->cache, 0);
    quill_kv_cache_seq_reset(f->cache, 1);

    /* A lookup makes the first chain the most recently used. */
    int32_t found[1];
    assert_int_equal(quill__prefix_cache_lookup(f->index, first_tokens, 4, found, 1), 1);
    assert_int_equal(quill__prefix_cache_evict(f->index, 1), 1);
    assert_int_equal(quill__prefix_cache_count_matching(f->index, first_tokens, 4), 1);
    assert_int_equal(quill__prefix_cache_count_matching(f->index, second_tokens, 4), 0);
}

static void test_prefix_evict_skips_blocks_in_use(void **state) {
    fixture *f = *state;
    int32_t tokens[MAX_TOKENS];
    make_tokens(tokens, 8, 1);
    fill_sequence(f, 0, 8);
    index_sequence(f, 0, tokens, 8);
    assert_int_equal(quill__prefix_cache_evict(f->index, N_BLOCKS), 0);
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 2);

    /* A second sequence shares the chain; once the first is gone it still pins both blocks. */
    int32_t found[2];
    assert_int_equal(quill__prefix_cache_lookup(f->index, tokens, 8, found, 2), 2);
    assert_int_equal(quill_kv_cache_seq_attach(f->cache, 1, found, 2, 8), QUILL_OK);
    quill_kv_cache_seq_reset(f->cache, 0);
    assert_int_equal(quill__prefix_cache_evict(f->index, N_BLOCKS), 0);

    quill_kv_cache_seq_reset(f->cache, 1);
    assert_int_equal(quill__prefix_cache_evict(f->index, N_BLOCKS), 2);
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 0);
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), N_BLOCKS);
}

static void test_prefix_evict_drops_subtree(void **state) {
    fixture *f = *state;
    int32_t tokens[MAX_TOKENS];
    make_tokens(tokens, 12, 1);
    /* Sequence 0 computes two blocks. Sequence 1 reuses them up to the last token, so it copies
     * the shared last block before writing (copy-on-write) and then fills a third block. */
    fill_sequence(f, 0, 8);
    index_sequence(f, 0, tokens, 8);
    int32_t found[2];
    assert_int_equal(quill__prefix_cache_lookup(f->index, tokens, 8, found, 2), 2);
    assert_int_equal(quill_kv_cache_seq_attach(f->cache, 1, found, 2, 7), QUILL_OK);
    fill_sequence(f, 1, 12);
    assert_int_not_equal(quill_kv_cache_seq_blocks(f->cache, 1)[1], found[1]);
    index_sequence(f, 1, tokens, 12);
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 3);
    quill_kv_cache_seq_reset(f->cache, 0);

    /* The second block is referenced only by the index but has a child in use: dropping it
     * with its subtree frees exactly that block. */
    int32_t n_free = quill_kv_cache_n_blocks_free(f->cache);
    assert_int_equal(quill__prefix_cache_evict(f->index, 1), 1);
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), n_free + 1);
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), 1);
    assert_int_equal(quill_kv_cache_seq_length(f->cache, 1), 12);
}

static void test_prefix_destroy_releases_all(void **state) {
    fixture *f = *state;
    int32_t tokens[MAX_TOKENS];
    make_tokens(tokens, 16, 3);
    fill_sequence(f, 0, 16);
    index_sequence(f, 0, tokens, 16);
    quill_kv_cache_seq_reset(f->cache, 0);
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), N_BLOCKS - 4);
    quill__prefix_cache_destroy(f->index);
    f->index = NULL;
    assert_int_equal(quill_kv_cache_n_blocks_free(f->cache), N_BLOCKS);
}

static void test_prefix_many_chains_grow_table(void **state) {
    fixture *f = *state;
    /* 600 single-block chains force the bucket array to grow; each sequence is reset at once,
     * and eviction keeps the cache from running out. */
    int32_t tokens[BLOCK_TOKENS];
    for (int32_t i = 0; i < 600; i++) {
        if (quill_kv_cache_n_blocks_free(f->cache) == 0) {
            assert_int_equal(quill__prefix_cache_evict(f->index, 1), 1);
        }
        make_tokens(tokens, BLOCK_TOKENS, i * 10);
        fill_sequence(f, 0, BLOCK_TOKENS);
        index_sequence(f, 0, tokens, BLOCK_TOKENS);
        quill_kv_cache_seq_reset(f->cache, 0);
    }
    assert_int_equal(quill__prefix_cache_n_blocks(f->index), N_BLOCKS);
    make_tokens(tokens, BLOCK_TOKENS, 599 * 10);
    assert_int_equal(quill__prefix_cache_count_matching(f->index, tokens, BLOCK_TOKENS), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prefix_lookup_whole_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_insert_holds_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_evict_lru_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_evict_touch_refreshes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_evict_skips_blocks_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_evict_drops_subtree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_destroy_releases_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_many_chains_grow_table, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
