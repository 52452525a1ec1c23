/*
 * Tests of the paged KV cache as a data structure: block accounting, sharing by attach,
 * truncation, seq_prepare with copy-on-write of a shared partly filled block, BUSY when the free
 * list is short, and reference counts returning to zero. The cache is created from a bare shape
 * (no model), and the tests write recognisable bytes through the layer view.
 */
#include "test_support.h"

#include <string.h>

#include "base/alloc.h"
#include "model/kv_cache_internal.h"
#include "quill/kv_cache.h"
#include "quill/tensor_type.h"

enum { TEST_LAYERS = 3, TEST_KV_DIM = 8, TEST_BLOCK_TOKENS = 16 };

/* Creates a cache of exactly n_blocks blocks of TEST_BLOCK_TOKENS slots in F16. */
static quill_kv_cache *create_cache(int32_t n_blocks, int32_t n_seq_max) {
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.block_tokens = TEST_BLOCK_TOKENS;
    params.n_seq_max = n_seq_max;
    params.type = QUILL_TYPE_F16;
    /* 3 layers * 2 * 16 slots * 16 bytes = 1536 bytes per block, a multiple of 64. */
    params.memory_bytes = (size_t)n_blocks * TEST_LAYERS * 2 * TEST_BLOCK_TOKENS * TEST_KV_DIM * 2;
    quill_kv_cache *cache = NULL;
    assert_int_equal(quill__kv_cache_create_shape(TEST_LAYERS, TEST_KV_DIM, &params, &cache),
                     QUILL_OK);
    assert_int_equal(quill_kv_cache_n_blocks(cache), n_blocks);
    return cache;
}

/* Address of the K (is_value false) or V row of `position` in a sequence's block table. */
static uint8_t *row_address(const quill_kv_cache *cache, int32_t seq_id, int32_t layer,
                            int64_t position, bool is_value) {
    quill_kv_layer_view view;
    quill__kv_cache_layer_view(cache, layer, &view);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, seq_id);
    int32_t block = blocks[position / view.block_tokens];
    uint8_t *base = is_value ? view.v_data : view.k_data;
    return base + (size_t)block * view.block_stride_bytes +
           (size_t)(position % view.block_tokens) * view.row_bytes;
}

/* Fills every K and V row of positions [begin, end) of a sequence with a byte derived from
 * (seed, layer, position, K/V). */
static void write_rows(quill_kv_cache *cache, int32_t seq_id, int64_t begin, int64_t end,
                       int seed) {
    for (int32_t layer = 0; layer < TEST_LAYERS; layer++) {
        for (int64_t position = begin; position < end; position++) {
            for (int is_value = 0; is_value < 2; is_value++) {
                uint8_t value = (uint8_t)(seed * 31 + layer * 7 + position * 3 + is_value);
                memset(row_address(cache, seq_id, layer, position, is_value), value,
                       TEST_KV_DIM * 2);
            }
        }
    }
}

static bool rows_match(const quill_kv_cache *cache, int32_t seq_id, int64_t begin, int64_t end,
                       int seed) {
    uint8_t expected[TEST_KV_DIM * 2];
    for (int32_t layer = 0; layer < TEST_LAYERS; layer++) {
        for (int64_t position = begin; position < end; position++) {
            for (int is_value = 0; is_value < 2; is_value++) {
                uint8_t value = (uint8_t)(seed * 31 + layer * 7 + position * 3 + is_value);
                memset(expected, value, sizeof(expected));
                if (memcmp(row_address(cache, seq_id, layer, position, is_value), expected,
                           sizeof(expected)) != 0) {
                    return false;
                }
            }
        }
    }
    return true;
}

/* Prepares and "writes" n_tokens more tokens into a sequence, as a forward pass would. */
static void append_tokens(quill_kv_cache *cache, int32_t seq_id, int64_t n_tokens, int seed) {
    int64_t length = quill_kv_cache_seq_length(cache, seq_id);
    assert_int_equal(quill_kv_cache_seq_prepare(cache, seq_id, length + n_tokens), QUILL_OK);
    write_rows(cache, seq_id, length, length + n_tokens, seed);
    quill__kv_cache_seq_set_length(cache, seq_id, length + n_tokens);
}

static void test_create_budget_too_small(void **state) {
    (void)state;
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.memory_bytes = 100;
    quill_kv_cache *cache = NULL;
    assert_int_equal(quill__kv_cache_create_shape(2, 64, &params, &cache), QUILL_ERR_INVALID_ARG);
    assert_null(cache);
    assert_non_null(strstr(quill_error_message(), "holds no block"));
}

static void test_create_rejects_quantized_type(void **state) {
    (void)state;
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.type = QUILL_TYPE_Q8_0;
    quill_kv_cache *cache = NULL;
    assert_int_equal(quill__kv_cache_create_shape(2, 64, &params, &cache), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "Q8_0"));
}

static void test_create_f32_row_bytes(void **state) {
    (void)state;
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.type = QUILL_TYPE_F32;
    params.memory_bytes = 1 << 20;
    quill_kv_cache *cache = NULL;
    assert_int_equal(quill__kv_cache_create_shape(2, 64, &params, &cache), QUILL_OK);
    quill_kv_layer_view view;
    quill__kv_cache_layer_view(cache, 1, &view);
    assert_int_equal(view.row_bytes, 256);
    assert_int_equal(view.type, QUILL_TYPE_F32);
    /* 2 layers * 2 * 16 slots * 256 bytes = 16 KiB per block. */
    assert_int_equal(quill_kv_cache_n_blocks(cache), 64);
    quill_kv_cache_destroy(cache);
}

static void test_prepare_takes_blocks(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    assert_int_equal(quill_kv_cache_seq_blocks_needed(cache, 0, 17), 2);
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 0, 17), QUILL_OK);
    assert_int_equal(quill_kv_cache_seq_n_blocks(cache, 0), 2);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 6);
    /* Length only advances when K/V is written. */
    assert_int_equal(quill_kv_cache_seq_length(cache, 0), 0);
    /* Preparing again for fewer or as many tokens takes nothing. */
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 0, 17), QUILL_OK);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 6);
    quill_kv_cache_destroy(cache);
}

static void test_prepare_busy_changes_nothing(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(4, 4);
    append_tokens(cache, 0, 40, 1); /* 3 blocks */
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 1, 17), QUILL_ERR_BUSY);
    assert_non_null(strstr(quill_error_message(), "needs 2 free blocks"));
    assert_int_equal(quill_kv_cache_seq_n_blocks(cache, 1), 0);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 1);
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 1, 16), QUILL_OK);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 0);
    quill_kv_cache_seq_reset(cache, 0);
    quill_kv_cache_seq_reset(cache, 1);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 4);
    quill_kv_cache_destroy(cache);
}

static void test_prepare_bad_seq_id(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(4, 2);
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 2, 1), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "sequence id 2"));
    assert_int_equal(quill_kv_cache_seq_prepare(cache, -1, 1), QUILL_ERR_INVALID_ARG);
    quill_kv_cache_destroy(cache);
}

static void test_attach_shares_blocks(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 32, 5);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    int32_t shared[2] = {blocks[0], blocks[1]};
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, shared, 2, 32), QUILL_OK);
    assert_int_equal(quill_kv_cache_block_refcount(cache, shared[0]), 2);
    assert_int_equal(quill_kv_cache_block_refcount(cache, shared[1]), 2);
    assert_int_equal(quill_kv_cache_seq_length(cache, 1), 32);
    assert_true(rows_match(cache, 1, 0, 32, 5));
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 6);

    /* Full shared blocks are never written, so appending takes only new blocks. */
    assert_int_equal(quill_kv_cache_seq_blocks_needed(cache, 1, 33), 1);
    append_tokens(cache, 1, 1, 6);
    assert_int_equal(quill_kv_cache_seq_blocks(cache, 1)[0], shared[0]);
    assert_true(rows_match(cache, 0, 0, 32, 5));
    quill_kv_cache_destroy(cache);
}

static void test_attach_rejects_nonempty_sequence(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 4, 1);
    append_tokens(cache, 1, 4, 2);
    int32_t block = quill_kv_cache_seq_blocks(cache, 0)[0];
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, &block, 1, 4), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "reset it first"));
    assert_int_equal(quill_kv_cache_block_refcount(cache, block), 1);
    quill_kv_cache_destroy(cache);
}

static void test_attach_rejects_wrong_block_count(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 40, 1);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, blocks, 2, 40), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "do not match 40 tokens"));
    assert_int_equal(quill_kv_cache_block_refcount(cache, blocks[0]), 1);
    quill_kv_cache_destroy(cache);
}

static void test_attach_rejects_free_block(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    int32_t block = 3;
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, &block, 1, 10), QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "not a block in use"));
    assert_int_equal(quill_kv_cache_block_refcount(cache, block), 0);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 8);
    quill_kv_cache_destroy(cache);
}

static void test_prepare_copies_shared_partial_block(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 20, 9);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    int32_t shared[2] = {blocks[0], blocks[1]};
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, shared, 2, 20), QUILL_OK);

    /* Sequence 1 writes position 20, inside the shared second block: it needs a private copy. */
    assert_int_equal(quill_kv_cache_seq_blocks_needed(cache, 1, 21), 1);
    append_tokens(cache, 1, 1, 10);
    const int32_t *copied = quill_kv_cache_seq_blocks(cache, 1);
    assert_int_equal(copied[0], shared[0]);
    assert_int_not_equal(copied[1], shared[1]);
    assert_int_equal(quill_kv_cache_block_refcount(cache, shared[0]), 2);
    assert_int_equal(quill_kv_cache_block_refcount(cache, shared[1]), 1);
    assert_int_equal(quill_kv_cache_block_refcount(cache, copied[1]), 1);

    /* The copy holds the prefix; the original is untouched by the new write. */
    assert_true(rows_match(cache, 1, 0, 20, 9));
    assert_true(rows_match(cache, 1, 20, 21, 10));
    assert_true(rows_match(cache, 0, 0, 20, 9));

    /* Sequence 0 now owns its block alone and writes in place. */
    assert_int_equal(quill_kv_cache_seq_blocks_needed(cache, 0, 21), 0);
    append_tokens(cache, 0, 1, 11);
    assert_int_equal(quill_kv_cache_seq_blocks(cache, 0)[1], shared[1]);
    assert_true(rows_match(cache, 1, 20, 21, 10));
    assert_true(rows_match(cache, 0, 20, 21, 11));
    quill_kv_cache_destroy(cache);
}

static void test_prepare_copy_needs_free_block(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(2, 4);
    append_tokens(cache, 0, 20, 1);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    int32_t shared[2] = {blocks[0], blocks[1]};
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, shared, 2, 20), QUILL_OK);
    assert_int_equal(quill_kv_cache_seq_prepare(cache, 1, 21), QUILL_ERR_BUSY);
    assert_int_equal(quill_kv_cache_seq_blocks(cache, 1)[1], shared[1]);
    assert_int_equal(quill_kv_cache_block_refcount(cache, shared[1]), 2);
    quill_kv_cache_destroy(cache);
}

static void test_truncate_releases_blocks(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 50, 3); /* 4 blocks */
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 4);
    quill_kv_cache_seq_truncate(cache, 0, 17);
    assert_int_equal(quill_kv_cache_seq_length(cache, 0), 17);
    assert_int_equal(quill_kv_cache_seq_n_blocks(cache, 0), 2);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 6);
    /* Truncating past the length changes nothing. */
    quill_kv_cache_seq_truncate(cache, 0, 100);
    assert_int_equal(quill_kv_cache_seq_length(cache, 0), 17);
    quill_kv_cache_seq_truncate(cache, 0, 0);
    assert_int_equal(quill_kv_cache_seq_n_blocks(cache, 0), 0);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 8);
    quill_kv_cache_destroy(cache);
}

static void test_truncate_into_shared_block(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(8, 4);
    append_tokens(cache, 0, 32, 4);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    int32_t shared[2] = {blocks[0], blocks[1]};
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, shared, 2, 32), QUILL_OK);

    /* Cutting sequence 1 back into its shared second block forces a copy before it writes. */
    quill_kv_cache_seq_truncate(cache, 1, 24);
    assert_int_equal(quill_kv_cache_seq_blocks_needed(cache, 1, 25), 1);
    append_tokens(cache, 1, 1, 8);
    assert_true(rows_match(cache, 0, 0, 32, 4));
    assert_true(rows_match(cache, 1, 0, 24, 4));
    assert_true(rows_match(cache, 1, 24, 25, 8));
    quill_kv_cache_destroy(cache);
}

static void test_refcounts_return_to_zero(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(16, 4);
    append_tokens(cache, 0, 40, 1);
    const int32_t *blocks = quill_kv_cache_seq_blocks(cache, 0);
    int32_t held[3] = {blocks[0], blocks[1], blocks[2]};

    /* An outside owner (a prefix index) holds the full blocks. */
    quill_kv_cache_block_retain(cache, held[0]);
    quill_kv_cache_block_retain(cache, held[1]);
    assert_int_equal(quill_kv_cache_seq_attach(cache, 1, held, 3, 40), QUILL_OK);
    assert_int_equal(quill_kv_cache_seq_attach(cache, 2, held, 3, 33), QUILL_OK);
    append_tokens(cache, 1, 30, 2);
    append_tokens(cache, 2, 5, 3);
    assert_int_equal(quill_kv_cache_block_refcount(cache, held[0]), 4);

    for (int32_t seq_id = 0; seq_id < 3; seq_id++) {
        quill_kv_cache_seq_reset(cache, seq_id);
    }
    assert_int_equal(quill_kv_cache_block_refcount(cache, held[0]), 1);
    assert_int_equal(quill_kv_cache_block_refcount(cache, held[2]), 0);
    quill_kv_cache_block_release(cache, held[0]);
    quill_kv_cache_block_release(cache, held[1]);
    for (int32_t block = 0; block < quill_kv_cache_n_blocks(cache); block++) {
        assert_int_equal(quill_kv_cache_block_refcount(cache, block), 0);
    }
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 16);
    /* A release on a free block is ignored rather than corrupting the free list. */
    quill_kv_cache_block_release(cache, held[0]);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 16);
    quill_kv_cache_destroy(cache);
}

static void test_every_block_used_once(void **state) {
    (void)state;
    quill_kv_cache *cache = create_cache(6, 3);
    append_tokens(cache, 0, 32, 1);
    append_tokens(cache, 1, 17, 2);
    append_tokens(cache, 2, 30, 3);
    assert_int_equal(quill_kv_cache_n_blocks_free(cache), 0);
    int seen[6] = {0};
    for (int32_t seq_id = 0; seq_id < 3; seq_id++) {
        const int32_t *blocks = quill_kv_cache_seq_blocks(cache, seq_id);
        for (int32_t i = 0; i < quill_kv_cache_seq_n_blocks(cache, seq_id); i++) {
            seen[blocks[i]]++;
        }
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(seen[i], 1);
    }
    assert_true(rows_match(cache, 0, 0, 32, 1));
    assert_true(rows_match(cache, 1, 0, 17, 2));
    assert_true(rows_match(cache, 2, 0, 30, 3));
    quill_kv_cache_destroy(cache);
}

static void test_create_allocation_failure(void **state) {
    (void)state;
    quill_kv_cache_params params = quill_kv_cache_params_default();
    params.memory_bytes = 1 << 20;
    for (int64_t n_successes = 0; n_successes < 5; n_successes++) {
        quill_kv_cache *cache = NULL;
        quill__alloc_fail_after(n_successes);
        quill_status status = quill__kv_cache_create_shape(2, 64, &params, &cache);
        quill__alloc_fail_after(-1);
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(cache);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_budget_too_small),
        cmocka_unit_test(test_create_rejects_quantized_type),
        cmocka_unit_test(test_create_f32_row_bytes),
        cmocka_unit_test(test_prepare_takes_blocks),
        cmocka_unit_test(test_prepare_busy_changes_nothing),
        cmocka_unit_test(test_prepare_bad_seq_id),
        cmocka_unit_test(test_attach_shares_blocks),
        cmocka_unit_test(test_attach_rejects_nonempty_sequence),
        cmocka_unit_test(test_attach_rejects_wrong_block_count),
        cmocka_unit_test(test_attach_rejects_free_block),
        cmocka_unit_test(test_prepare_copies_shared_partial_block),
        cmocka_unit_test(test_prepare_copy_needs_free_block),
        cmocka_unit_test(test_truncate_releases_blocks),
        cmocka_unit_test(test_truncate_into_shared_block),
        cmocka_unit_test(test_refcounts_return_to_zero),
        cmocka_unit_test(test_every_block_used_once),
        cmocka_unit_test(test_create_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
