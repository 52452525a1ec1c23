/*
 * Tests of the engine on a tiny generated model: batch-independent results (greedy and seeded),
 * prefix reuse with exact cached-token counts and unchanged output, eviction under a small
 * cache, preemption with unchanged output and usage, admission by the blocks needed now,
 * cancellation releasing KV blocks, the queue limit, stop strings across tokens, whole UTF-8
 * characters in events, length limits, submit validation, drain and destroy.
 */
#include "test_support.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "quill/engine.h"
#include "quill/model.h"
#include "quill/tokenizer.h"
#include "engine_gate.h"
#include "tiny_model.h"

enum {
    MAX_HANDLES = 32,
    MAX_OUTPUT_TOKENS = 256,
    MAX_TEXT_BYTES = 8192,
    N_LETTER_BANS = QUILL_TEST_TINY_FIRST_PIECE,
};

typedef struct completion {
    int32_t tokens[MAX_OUTPUT_TOKENS]; /* generated ids from the events */
    int32_t n_tokens;
    char text[MAX_TEXT_BYTES]; /* concatenated event text */
    size_t n_text_bytes;
    int n_events;
    bool is_each_event_utf8; /* every event's text was whole UTF-8 characters */
    quill_finish_reason reason;
    quill_status status;
    quill_usage usage;
    float logprobs[MAX_OUTPUT_TOKENS];
    int32_t n_top[MAX_OUTPUT_TOKENS];
    int32_t top_first[MAX_OUTPUT_TOKENS];
} completion;

static quill_model *model;
static char *model_path;
/* Bans every byte and control token, so that outputs are letters and spaces only. */
static quill_logit_bias letter_bans[N_LETTER_BANS];

static int group_setup(void **state) {
    (void)state;
    quill_test_tiny_model_params params = quill_test_tiny_model_params_default();
    params.seed = 7;
    if (quill_test_load_tiny_model("engine-tiny.gguf", &params, &model_path, &model) != 0) {
        return -1;
    }
    for (int32_t i = 0; i < N_LETTER_BANS; i++) {
        letter_bans[i].token = i;
        letter_bans[i].bias = -INFINITY;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    quill_model_destroy(model);
    remove(model_path);
    free(model_path);
    return 0;
}

static quill_engine_params small_engine_params(void) {
    /* One compute thread keeps the tests fast on a loaded machine; the batch-independence
     * tests use two. */
    quill_engine_params params = quill_engine_params_default();
    params.n_threads = 1;
    params.n_parallel = 4;
    params.step_tokens = 32;
    params.queue_limit = 16;
    return params;
}

static quill_engine *engine_new(const quill_engine_params *params) {
    quill_engine *engine = NULL;
    assert_int_equal(quill_engine_create(model, params, &engine), QUILL_OK);
    assert_non_null(engine);
    return engine;
}

/* Fills prompt with n tokens from a simple generator over the piece tokens; BOS first. */
static void make_prompt(int32_t *prompt, int64_t n, uint32_t seed) {
    prompt[0] = 1;
    uint32_t x = seed;
    for (int64_t i = 1; i < n; i++) {
        x = x * 1103515245u + 12345u;
        prompt[i] = QUILL_TEST_TINY_FIRST_PIECE + (int32_t)((x >> 16) % 60);
    }
}

static quill_request_params greedy_request(const int32_t *prompt, int64_t n_prompt,
                                           int64_t max_tokens) {
    quill_request_params params = quill_request_params_default();
    params.prompt_tokens = prompt;
    params.n_prompt_tokens = n_prompt;
    params.max_tokens = max_tokens;
    params.sampling.temperature = 0.0f;
    params.ignore_eos = true;
    return params;
}

static bool is_valid_utf8(const char *text, size_t n_bytes) {
    size_t i = 0;
    while (i < n_bytes) {
        unsigned char lead = (unsigned char)text[i];
        size_t length = lead < 0x80           ? 1
                        : (lead >> 5) == 0x6  ? 2
                        : (lead >> 4) == 0xE  ? 3
                        : (lead >> 3) == 0x1E ? 4
                                              : 0;
        if (length == 0 || i + length > n_bytes) {
            return false;
        }
        for (size_t k = 1; k < length; k++) {
            if (((unsigned char)text[i + k] & 0xC0) != 0x80) {
                return false;
            }
        }
        i += length;
    }
    return true;
}

/* Reads events until the final one. */
static void collect(quill_request *request, completion *out) {
    memset(out, 0, sizeof(*out));
    out->is_each_event_utf8 = true;
    for (;;) {
        quill_request_event event;
        assert_int_equal(quill_request_next_event(request, true, &event), QUILL_OK);
        out->n_events++;
        out->is_each_event_utf8 =
            out->is_each_event_utf8 && is_valid_utf8(event.text, event.n_text_bytes);
        assert_true(out->n_text_bytes + event.n_text_bytes < MAX_TEXT_BYTES);
        memcpy(out->text + out->n_text_bytes, event.text, event.n_text_bytes);
        out->n_text_bytes += event.n_text_bytes;
        for (int32_t i = 0; i < event.n_tokens; i++) {
            assert_true(out->n_tokens < MAX_OUTPUT_TOKENS);
            out->logprobs[out->n_tokens] = event.tokens[i].logprob;
            out->n_top[out->n_tokens] = event.tokens[i].n_top;
            out->top_first[out->n_tokens] = event.tokens[i].top[0].token;
            out->tokens[out->n_tokens++] = event.tokens[i].token;
        }
        bool is_final = event.is_final;
        if (is_final) {
            out->reason = event.finish_reason;
            out->status = event.status;
            out->usage = event.usage;
        }
        quill_request_event_release(&event);
        if (is_final) {
            break;
        }
    }
    quill_request_event after;
    assert_int_equal(quill_request_next_event(request, false, &after), QUILL_ERR_NOT_FOUND);
}

static void run_one(quill_engine *engine, const quill_request_params *params, completion *out) {
    quill_request *request = NULL;
    assert_int_equal(quill_engine_submit(engine, params, &request), QUILL_OK);
    collect(request, out);
    quill_request_destroy(request);
}

static void assert_same_tokens(const completion *a, const completion *b) {
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (int32_t i = 0; i < a->n_tokens; i++) {
        assert_int_equal(a->tokens[i], b->tokens[i]);
    }
    assert_int_equal(a->n_text_bytes, b->n_text_bytes);
    assert_memory_equal(a->text, b->text, a->n_text_bytes);
}

/* Runs the prompts one at a time on a fresh engine without prefix cache, then all at once on a
 * fresh engine with it, and checks equal outputs. */
static void check_batch_independent(quill_request_params *params, int n_requests) {
    completion *alone = calloc((size_t)n_requests, sizeof(completion));
    completion *together = calloc((size_t)n_requests, sizeof(completion));
    assert_non_null(alone);
    assert_non_null(together);

    quill_engine_params engine_params = small_engine_params();
    engine_params.n_threads = 2;
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    for (int i = 0; i < n_requests; i++) {
        run_one(engine, &params[i], &alone[i]);
    }
    quill_engine_destroy(engine);

    engine_params.use_prefix_cache = true;
    engine = engine_new(&engine_params);
    quill_request *requests[8] = {NULL};
    for (int i = 0; i < n_requests; i++) {
        assert_int_equal(quill_engine_submit(engine, &params[i], &requests[i]), QUILL_OK);
    }
    for (int i = 0; i < n_requests; i++) {
        collect(requests[i], &together[i]);
        quill_request_destroy(requests[i]);
        assert_int_equal(together[i].reason, QUILL_FINISH_LENGTH);
        assert_same_tokens(&alone[i], &together[i]);
    }
    quill_engine_destroy(engine);
    free(alone);
    free(together);
}

static void test_engine_greedy_batch_independent(void **state) {
    (void)state;
    static int32_t prompts[6][80];
    const int64_t lengths[6] = {5, 17, 70, 3, 33, 48};
    quill_request_params params[6];
    for (int i = 0; i < 6; i++) {
        make_prompt(prompts[i], lengths[i], (uint32_t)(i + 1));
        params[i] = greedy_request(prompts[i], lengths[i], 20 + i);
    }
    check_batch_independent(params, 6);
}

static void test_engine_seeded_batch_independent(void **state) {
    (void)state;
    static int32_t prompts[5][64];
    const int64_t lengths[5] = {9, 40, 2, 21, 60};
    quill_request_params params[5];
    for (int i = 0; i < 5; i++) {
        make_prompt(prompts[i], lengths[i], (uint32_t)(100 + i));
        params[i] = greedy_request(prompts[i], lengths[i], 24);
        params[i].sampling.temperature = 0.9f;
        params[i].sampling.top_k = 0;
        params[i].sampling.top_p = 0.95f;
        params[i].sampling.min_p = 0.0f;
        params[i].sampling.has_seed = true;
        params[i].sampling.seed = 1000 + (uint64_t)i;
    }
    check_batch_independent(params, 5);
}

static void test_engine_prefix_reuse_exact(void **state) {
    (void)state;
    int32_t first[64];
    int32_t second[64];
    make_prompt(first, 40, 11);
    memcpy(second, first, sizeof(first));
    make_prompt(second + 35, 15, 99);

    /* References from an engine without prefix cache. */
    quill_engine_params engine_params = small_engine_params();
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    quill_request_params params = greedy_request(second, 50, 16);
    completion reference;
    run_one(engine, &params, &reference);
    quill_request_params block_params = greedy_request(first, 32, 16);
    completion block_reference;
    run_one(engine, &block_params, &block_reference);
    quill_engine_destroy(engine);
    assert_int_equal(reference.usage.n_cached_tokens, 0);

    engine_params.use_prefix_cache = true;
    engine = engine_new(&engine_params);
    quill_request_params first_params = greedy_request(first, 40, 16);
    completion result;
    run_one(engine, &first_params, &result);
    assert_int_equal(result.usage.n_cached_tokens, 0);

    /* 35 shared tokens hold two whole blocks of 16. */
    run_one(engine, &params, &result);
    assert_int_equal(result.usage.n_cached_tokens, 32);
    assert_int_equal(result.usage.n_prompt_tokens, 50);
    assert_same_tokens(&reference, &result);

    /* A prompt made of exactly two cached blocks reuses all but its last token. */
    run_one(engine, &block_params, &result);
    assert_int_equal(result.usage.n_cached_tokens, 31);
    assert_same_tokens(&block_reference, &result);

    quill_engine_stats stats;
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_prefix_queries, 3);
    assert_int_equal(stats.n_prefix_hits, 2);
    assert_int_equal(stats.n_prefix_tokens_reused, 63);
    quill_engine_destroy(engine);
}

static void test_engine_identical_prompts_share(void **state) {
    (void)state;
    int32_t prompt[80];
    make_prompt(prompt, 70, 5);
    quill_request_params params = greedy_request(prompt, 70, 8);
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);

    /* Submitted together: the second waits for the first's prompt blocks instead of computing
     * them again, so it reuses all four whole blocks. */
    quill_request *first = NULL;
    quill_request *second = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &first), QUILL_OK);
    assert_int_equal(quill_engine_submit(engine, &params, &second), QUILL_OK);
    completion first_result;
    completion second_result;
    collect(first, &first_result);
    collect(second, &second_result);
    assert_int_equal(second_result.usage.n_cached_tokens, 64);
    assert_same_tokens(&first_result, &second_result);
    quill_request_destroy(first);
    quill_request_destroy(second);
    quill_engine_destroy(engine);
}

static void test_engine_eviction_stays_correct(void **state) {
    (void)state;
    enum { N_PROMPTS = 6 };
    static int32_t prompts[N_PROMPTS][48];
    completion references[N_PROMPTS];
    quill_engine_params engine_params = small_engine_params();
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    for (int i = 0; i < N_PROMPTS; i++) {
        make_prompt(prompts[i], 40, (uint32_t)(300 + i));
        quill_request_params params = greedy_request(prompts[i], 40, 20);
        run_one(engine, &params, &references[i]);
    }
    quill_engine_destroy(engine);

    /* Twelve blocks of 16 tokens (256 bytes per token in F16): each request reserves five, and
     * the cached blocks of earlier prompts must be evicted to run later ones. The context is
     * not split between the two sequences: one may take all blocks but the one kept for
     * copy-on-write. */
    engine_params.use_prefix_cache = true;
    engine_params.cache_bytes = 12 * 16 * 256;
    engine_params.n_parallel = 2;
    engine = engine_new(&engine_params);
    assert_int_equal(quill_engine_n_ctx(engine), 11 * 16);
    completion result;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N_PROMPTS; i++) {
            quill_request_params params = greedy_request(prompts[i], 40, 20);
            run_one(engine, &params, &result);
            assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
            assert_same_tokens(&references[i], &result);
        }
    }
    /* The last prompt is still cached right after it ran. */
    quill_request_params params = greedy_request(prompts[N_PROMPTS - 1], 40, 20);
    run_one(engine, &params, &result);
    assert_int_equal(result.usage.n_cached_tokens, 32);
    assert_same_tokens(&references[N_PROMPTS - 1], &result);

    quill_engine_stats stats;
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_blocks_total, 12);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_true(stats.n_blocks_cached <= 12);
    quill_engine_destroy(engine);
}

/* Submits n requests so that they certainly run at the same time: the engine waits in the
 * first request's first callback, behind g, until all are queued. g must outlive the requests, and
 * the caller releases it after collecting them. */
static void submit_together(quill_engine *engine, quill_request_params *params, int n,
                            quill_request **requests, quill_test_gate *g) {
    quill_test_gate_init(g);
    params[0].on_event = quill_test_gate_on_event;
    params[0].user_data = g;
    for (int i = 0; i < n; i++) {
        assert_int_equal(quill_engine_submit(engine, &params[i], &requests[i]), QUILL_OK);
        if (i == 0) {
            quill_test_gate_wait_entered(g);
        }
    }
    quill_test_gate_open(g);
}

static void test_engine_cancel_releases_blocks(void **state) {
    (void)state;
    int32_t prompt[64];
    make_prompt(prompt, 50, 77);
    quill_engine_params engine_params = small_engine_params();
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);

    /* The engine waits in the first callback, so the cancel lands while the request runs. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 50, 200);
    params.on_event = quill_test_gate_on_event;
    params.user_data = &g;
    quill_request *request = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &request), QUILL_OK);
    quill_test_gate_wait_entered(&g);
    quill_request_cancel(request);
    quill_test_gate_open(&g);
    completion result;
    collect(request, &result);
    assert_int_equal(result.reason, QUILL_FINISH_CANCELLED);
    assert_true(result.n_tokens < 200);
    quill_request_destroy(request);
    quill_test_gate_release(&g);

    /* A request destroyed without reading is cancelled too. */
    params.on_event = NULL;
    params.user_data = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &request), QUILL_OK);
    quill_request_destroy(request);

    quill_engine_drain(engine);
    quill_engine_stats stats;
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_int_equal(stats.n_blocks_cached, 0);
    assert_int_equal(stats.n_running, 0);
    assert_int_equal(stats.n_waiting, 0);
    quill_engine_destroy(engine);
}

/* Engine params for a cache of n_blocks blocks of 16 tokens (256 bytes per token in F16) and a
 * context of the whole cache less one block, so that one request may need most of it. */
static quill_engine_params tight_engine_params(int32_t n_blocks, int32_t n_parallel) {
    quill_engine_params params = small_engine_params();
    params.cache_bytes = (size_t)n_blocks * 16 * 256;
    params.n_parallel = n_parallel;
    params.n_ctx = 1000;
    return params;
}

static void test_engine_preemption_keeps_output(void **state) {
    (void)state;
    enum { N_REQUESTS = 4 };
    static int32_t prompts[N_REQUESTS][40];
    const int64_t lengths[N_REQUESTS] = {20, 27, 33, 18};
    quill_request_params params[N_REQUESTS];
    for (int i = 0; i < N_REQUESTS; i++) {
        make_prompt(prompts[i], lengths[i], (uint32_t)(700 + i));
        params[i] = greedy_request(prompts[i], lengths[i], 60);
    }
    /* The sampler continues across a preemption: its RNG and its penalty history. */
    params[1].sampling.temperature = 0.9f;
    params[1].sampling.top_k = 0;
    params[1].sampling.top_p = 0.95f;
    params[1].sampling.min_p = 0.0f;
    params[1].sampling.has_seed = true;
    params[1].sampling.seed = 77;
    params[2].sampling.repetition_penalty = 1.3f;
    params[2].sampling.penalty_last_n = -1;

    /* Each request alone, in a cache large enough for all of them. */
    completion alone[N_REQUESTS];
    quill_engine_params engine_params = small_engine_params();
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    for (int i = 0; i < N_REQUESTS; i++) {
        run_one(engine, &params[i], &alone[i]);
    }
    quill_engine_destroy(engine);

    /* Together in 12 blocks, while their full runs take 22: younger ones are preempted and
     * resume from the prefix index. The engine waits in the first request's first callback
     * until all are queued, so that they certainly run at once. */
    engine_params = tight_engine_params(12, N_REQUESTS);
    engine = engine_new(&engine_params);
    assert_int_equal(quill_engine_n_ctx(engine), 11 * 16);
    quill_test_gate g;
    quill_request *requests[N_REQUESTS] = {NULL};
    submit_together(engine, params, N_REQUESTS, requests, &g);
    completion together[N_REQUESTS];
    for (int i = 0; i < N_REQUESTS; i++) {
        collect(requests[i], &together[i]);
        quill_request_destroy(requests[i]);
        assert_int_equal(together[i].reason, QUILL_FINISH_LENGTH);
        assert_same_tokens(&alone[i], &together[i]);
        assert_int_equal(together[i].n_tokens, together[i].usage.n_completion_tokens);
        assert_int_equal(together[i].usage.n_prompt_tokens, alone[i].usage.n_prompt_tokens);
        assert_int_equal(together[i].usage.n_cached_tokens, alone[i].usage.n_cached_tokens);
        assert_int_equal(together[i].usage.n_completion_tokens, alone[i].usage.n_completion_tokens);
    }
    quill_test_gate_release(&g);

    /* Resumed requests reuse their own blocks, which count as no prompt lookup or hit. */
    quill_engine_stats stats;
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_true(stats.n_preemptions > 0);
    assert_int_equal(stats.n_prefix_queries, N_REQUESTS);
    assert_int_equal(stats.n_prefix_hits, 0);
    assert_int_equal(stats.n_prefix_tokens_reused, 0);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_int_equal(stats.n_waiting, 0);
    quill_engine_destroy(engine);
}

static void test_engine_large_max_tokens_concurrent(void **state) {
    (void)state;
    enum { N_LONG = 3 };
    int32_t prompt[16];
    make_prompt(prompt, 10, 21);
    quill_engine_params engine_params = tight_engine_params(12, 4);
    quill_engine *engine = engine_new(&engine_params);

    /* The engine waits in the first callback of a short request while the others queue up. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 10, 4);
    params.on_event = quill_test_gate_on_event;
    params.user_data = &g;
    quill_request *first = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &first), QUILL_OK);
    quill_test_gate_wait_entered(&g);

    /* max_tokens 0 runs up to the context, 166 tokens, which would take all 12 blocks if
     * reserved up front. An end-of-generation token comes first, so each needs one block. */
    const quill_logit_bias force_eos = {.token = 2, .bias = 1000.0f};
    int32_t long_prompts[N_LONG][16];
    quill_request *requests[N_LONG] = {NULL};
    for (int i = 0; i < N_LONG; i++) {
        make_prompt(long_prompts[i], 10, (uint32_t)(22 + i));
        quill_request_params long_params = greedy_request(long_prompts[i], 10, 0);
        long_params.ignore_eos = false;
        long_params.sampling.logit_biases = &force_eos;
        long_params.sampling.n_logit_biases = 1;
        assert_int_equal(quill_engine_submit(engine, &long_params, &requests[i]), QUILL_OK);
    }
    quill_test_gate_open(&g);

    completion result;
    for (int i = 0; i < N_LONG; i++) {
        collect(requests[i], &result);
        quill_request_destroy(requests[i]);
        assert_int_equal(result.reason, QUILL_FINISH_STOP);
        assert_int_equal(result.n_tokens, 1);
    }
    collect(first, &result);
    quill_request_destroy(first);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    quill_test_gate_release(&g);

    quill_engine_stats stats;
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_running_max, 1 + N_LONG);
    assert_int_equal(stats.n_preemptions, 0);
    quill_engine_destroy(engine);
}

/* Runs a mixed load in a cache of n_blocks blocks: prompts of 3 to 100 tokens, half of them
 * sharing a 40-token prefix, with 10 to 70 output tokens each. Checks that every output equals
 * the same request run alone, and that the load needed preemption. */
static void check_mixed_load(uint32_t seed, int32_t n_blocks) {
    enum { N_REQUESTS = 10, SHARED_TOKENS = 40 };
    static int32_t prompts[N_REQUESTS][104];
    int32_t shared[SHARED_TOKENS];
    make_prompt(shared, SHARED_TOKENS, seed);
    quill_request_params params[N_REQUESTS];
    uint32_t x = seed;
    for (int i = 0; i < N_REQUESTS; i++) {
        x = x * 1103515245u + 12345u;
        int64_t n_prompt = 3 + (int64_t)((x >> 16) % 98);
        x = x * 1103515245u + 12345u;
        int64_t max_tokens = 10 + (int64_t)((x >> 16) % 61);
        make_prompt(prompts[i], n_prompt, seed + 1 + (uint32_t)i);
        if (i % 2 == 1 && n_prompt > SHARED_TOKENS) {
            memcpy(prompts[i], shared, sizeof(shared));
        }
        params[i] = greedy_request(prompts[i], n_prompt, max_tokens);
    }

    completion *alone = calloc(N_REQUESTS, sizeof(completion));
    completion *together = calloc(N_REQUESTS, sizeof(completion));
    assert_non_null(alone);
    assert_non_null(together);
    quill_engine_params engine_params = small_engine_params();
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    for (int i = 0; i < N_REQUESTS; i++) {
        run_one(engine, &params[i], &alone[i]);
    }
    quill_engine_destroy(engine);

    engine_params = tight_engine_params(n_blocks, 4);
    engine = engine_new(&engine_params);
    quill_test_gate g;
    quill_request *requests[N_REQUESTS] = {NULL};
    submit_together(engine, params, N_REQUESTS, requests, &g);
    for (int i = 0; i < N_REQUESTS; i++) {
        collect(requests[i], &together[i]);
        quill_request_destroy(requests[i]);
        assert_int_equal(together[i].reason, QUILL_FINISH_LENGTH);
        assert_same_tokens(&alone[i], &together[i]);
        assert_int_equal(together[i].usage.n_completion_tokens, alone[i].n_tokens);
        assert_true(together[i].usage.n_cached_tokens < params[i].n_prompt_tokens);
    }
    quill_test_gate_release(&g);

    quill_engine_stats stats;
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_true(stats.n_preemptions > 0);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_int_equal(stats.n_waiting, 0);
    quill_engine_destroy(engine);
    free(alone);
    free(together);
}

static void test_engine_mixed_load_tight_cache(void **state) {
    (void)state;
    for (uint32_t seed = 1; seed <= 3; seed++) {
        check_mixed_load(900 + seed, 14);
    }
}

static void test_engine_cancel_preempted_releases(void **state) {
    (void)state;
    int32_t older_prompt[24];
    int32_t younger_prompt[48];
    make_prompt(older_prompt, 20, 31);
    make_prompt(younger_prompt, 40, 32);
    quill_engine_params engine_params = tight_engine_params(8, 2);
    engine_params.use_prefix_cache = false;
    quill_engine *engine = engine_new(&engine_params);
    assert_int_equal(quill_engine_n_ctx(engine), 7 * 16);

    /* Runs of 110 and 100 tokens cannot share 8 blocks, so the younger request is preempted
     * at about the older one's 27th token and, while the older one grows, never fits again.
     * The gate pauses the engine at the older request's first token until the younger one is
     * queued, then at its 62nd token, well after the preemption. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params older_params = greedy_request(older_prompt, 20, 90);
    older_params.on_event = quill_test_gate_on_event;
    older_params.user_data = &g;
    quill_request *older = NULL;
    assert_int_equal(quill_engine_submit(engine, &older_params, &older), QUILL_OK);
    quill_test_gate_wait_entered(&g);
    quill_request_params younger_params = greedy_request(younger_prompt, 40, 60);
    quill_request *younger = NULL;
    assert_int_equal(quill_engine_submit(engine, &younger_params, &younger), QUILL_OK);
    quill_test_gate_pass(&g, 60);
    quill_test_gate_wait_entered(&g);

    quill_engine_stats stats;
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_preemptions, 1);
    assert_int_equal(stats.n_waiting, 1);
    assert_int_equal(stats.n_running, 1);
    quill_request_cancel(younger);
    quill_test_gate_open(&g);

    completion result;
    collect(younger, &result);
    quill_request_destroy(younger);
    assert_int_equal(result.reason, QUILL_FINISH_CANCELLED);
    assert_true(result.n_tokens > 0);
    assert_true(result.n_tokens < 60);
    assert_int_equal(result.usage.n_completion_tokens, result.n_tokens);
    collect(older, &result);
    quill_request_destroy(older);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    assert_int_equal(result.n_tokens, 90);
    quill_test_gate_release(&g);

    /* Nothing is used or cached, so every block is free again. */
    quill_engine_drain(engine);
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_blocks_total, 8);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_int_equal(stats.n_blocks_cached, 0);
    assert_int_equal(stats.n_running, 0);
    assert_int_equal(stats.n_waiting, 0);
    quill_engine_destroy(engine);
}

static void test_engine_queue_limit_busy(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 8, 3);
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 1;
    engine_params.queue_limit = 1;
    quill_engine *engine = engine_new(&engine_params);

    /* The first request runs and holds the engine in its callback, the second waits behind
     * it, and the third finds the queue full. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 8, 240);
    quill_request *running = quill_test_submit_holding(engine, &params, &g);
    quill_request *waiting = NULL;
    quill_request *rejected = (quill_request *)&params;
    assert_int_equal(quill_engine_submit(engine, &params, &waiting), QUILL_OK);
    assert_int_equal(quill_engine_submit(engine, &params, &rejected), QUILL_ERR_BUSY);
    assert_null(rejected);
    assert_non_null(strstr(quill_error_message(), "1 queue places"));

    quill_test_gate_open(&g);
    quill_request_destroy(running);
    quill_request_destroy(waiting);
    quill_engine_destroy(engine);
    quill_test_gate_release(&g);
}

/* The gauges cover the step whose forward pass is running: held at its first token, a request
 * that was admitted in that same step counts as running and holds its blocks, although the
 * step has not ended. */
static void test_engine_stats_cover_the_running_step(void **state) {
    (void)state;
    int32_t prompt[24];
    make_prompt(prompt, 24, 5);
    /* The whole prompt fits one step (32 tokens), so admission, prefill and the first token
     * all happen in the step that the gate holds. */
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);

    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 24, 4);
    quill_request *request = quill_test_submit_holding(engine, &params, &g);
    quill_engine_stats stats;
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_running, 1);
    assert_int_equal(stats.n_waiting, 0);
    /* 24 prompt tokens fill 2 blocks of 16. */
    assert_true(stats.n_blocks_used >= 2);

    quill_test_gate_open(&g);
    completion result;
    collect(request, &result);
    quill_request_destroy(request);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    quill_engine_destroy(engine);
    quill_test_gate_release(&g);
}

static void *stop_engine_thread(void *engine) {
    quill_engine_stop(engine);
    return NULL;
}

static void test_engine_stop_cancels_all(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 8, 3);
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 1;
    quill_engine *engine = engine_new(&engine_params);

    /* The first request blocks the engine thread in its callback while the second waits for
     * the only sequence. Stopping then cancels both, running and waiting, each with a final
     * event. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 8, 240);
    quill_request *running = quill_test_submit_holding(engine, &params, &g);
    quill_request *waiting = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &waiting), QUILL_OK);

    quill_test_end_while_held(engine, &params, &g, stop_engine_thread, NULL, NULL, 0);
    completion result;
    collect(running, &result);
    assert_int_equal(result.reason, QUILL_FINISH_CANCELLED);
    collect(waiting, &result);
    assert_int_equal(result.reason, QUILL_FINISH_CANCELLED);
    assert_int_equal(result.n_tokens, 0);
    /* The waiting request's prompt was never read, so its usage bills none of it. */
    assert_int_equal(result.usage.n_prompt_tokens, 0);
    assert_int_equal(result.usage.n_cached_tokens, 0);

    quill_request *late = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &late), QUILL_ERR_CANCELLED);
    assert_null(late);
    quill_request_destroy(running);
    quill_request_destroy(waiting);
    quill_engine_destroy(engine);
    quill_test_gate_release(&g);
}

static void test_engine_queue_limit_zero_fills_sequences(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 8, 3);
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 4;
    engine_params.queue_limit = 0;
    quill_engine *engine = engine_new(&engine_params);

    /* The first request blocks the engine thread in its callback, so the next three are
     * submitted before any is admitted. They still take the free sequences rather than queue
     * places, and only a fifth request finds the engine full. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 8, 240);
    quill_request *requests[4] = {NULL};
    requests[0] = quill_test_submit_holding(engine, &params, &g);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(quill_engine_submit(engine, &params, &requests[i]), QUILL_OK);
    }
    quill_request *rejected = NULL;
    assert_int_equal(quill_engine_submit(engine, &params, &rejected), QUILL_ERR_BUSY);
    assert_null(rejected);

    quill_test_gate_open(&g);
    for (int i = 0; i < 4; i++) {
        quill_request_destroy(requests[i]);
    }
    quill_engine_destroy(engine);
    quill_test_gate_release(&g);
}

/* Returns the bytes that token stands for (letters and spaces under letter_bans). */
static size_t piece_of(int32_t token, char *buffer, size_t capacity) {
    int64_t n_bytes =
        quill_tokenizer_token_bytes(quill_model_tokenizer(model), token, false, buffer, capacity);
    assert_true(n_bytes >= 0 && (size_t)n_bytes < capacity);
    return (size_t)n_bytes;
}

static void test_engine_stop_string_spans_tokens(void **state) {
    (void)state;
    int32_t prompt[16];
    make_prompt(prompt, 12, 21);
    quill_request_params params = greedy_request(prompt, 12, 40);
    params.sampling.logit_biases = letter_bans;
    params.sampling.n_logit_biases = N_LETTER_BANS;
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion reference;
    run_one(engine, &params, &reference);
    assert_int_equal(reference.n_tokens, 40);

    /* Build a stop string from the last byte of token 5's piece and the first of token 6's. */
    char piece[64];
    size_t offset = 0;
    for (int i = 0; i < 6; i++) {
        offset += piece_of(reference.tokens[i], piece, sizeof(piece));
    }
    size_t next_bytes = piece_of(reference.tokens[6], piece, sizeof(piece));
    assert_true(offset > 0);
    assert_true(next_bytes > 0);
    char stop[3] = {reference.text[offset - 1], piece[0], '\0'};
    const char *first_hit = strstr(reference.text, stop);
    assert_non_null(first_hit);
    size_t n_expected = (size_t)(first_hit - reference.text);

    params.stop_strings[0] = "zzzz";
    params.stop_strings[1] = stop;
    params.n_stop_strings = 2;
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.reason, QUILL_FINISH_STOP);
    assert_int_equal(result.n_text_bytes, n_expected);
    assert_memory_equal(result.text, reference.text, n_expected);
    assert_true(result.n_tokens <= 7);
    quill_engine_destroy(engine);
}

static void test_engine_utf8_never_split(void **state) {
    (void)state;
    /* Only the byte tokens <0xC3> and <0xA9> may be drawn: "é" is C3 A9, and any other
     * sequence is invalid and becomes U+FFFD. No event may end inside a character. */
    static quill_logit_bias bans[320];
    int32_t n_bans = 0;
    for (int32_t token = 0; token < 320; token++) {
        if (token != 3 + 0xC3 && token != 3 + 0xA9) {
            bans[n_bans].token = token;
            bans[n_bans].bias = -INFINITY;
            n_bans++;
        }
    }

    int32_t prompt[8];
    make_prompt(prompt, 6, 8);
    quill_request_params params = greedy_request(prompt, 6, 120);
    params.sampling.temperature = 1.0f;
    params.sampling.top_k = 0;
    params.sampling.top_p = 1.0f;
    params.sampling.min_p = 0.0f;
    params.sampling.has_seed = true;
    params.sampling.seed = 5;
    params.sampling.logit_biases = bans;
    params.sampling.n_logit_biases = n_bans;

    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.n_tokens, 120);
    assert_true(result.is_each_event_utf8);
    assert_true(is_valid_utf8(result.text, result.n_text_bytes));
    result.text[result.n_text_bytes] = '\0';
    assert_non_null(strstr(result.text, "\xC3\xA9"));
    quill_engine_destroy(engine);
}

static void test_engine_max_tokens_length(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 4, 2);
    quill_request_params params = greedy_request(prompt, 4, 5);
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    assert_int_equal(result.status, QUILL_OK);
    assert_int_equal(result.n_tokens, 5);
    assert_int_equal(result.usage.n_completion_tokens, 5);
    assert_int_equal(result.usage.n_prompt_tokens, 4);
    assert_true(result.usage.arrival_us <= result.usage.scheduled_us);
    assert_true(result.usage.scheduled_us <= result.usage.first_token_us);
    assert_true(result.usage.first_token_us <= result.usage.finished_us);
    assert_int_equal(result.usage.queue_us, result.usage.scheduled_us - result.usage.arrival_us);
    assert_int_equal(result.usage.generation_us,
                     result.usage.finished_us - result.usage.first_token_us);

    /* max_tokens 0 runs up to the context: 256 - 4 tokens. */
    params.max_tokens = 0;
    run_one(engine, &params, &result);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    assert_int_equal(result.n_tokens, 252);
    quill_engine_destroy(engine);
}

static void test_engine_eos_stops(void **state) {
    (void)state;
    const quill_logit_bias force_eos = {.token = 2, .bias = 1000.0f};
    int32_t prompt[8];
    make_prompt(prompt, 5, 4);
    quill_request_params params = greedy_request(prompt, 5, 10);
    params.ignore_eos = false;
    params.sampling.logit_biases = &force_eos;
    params.sampling.n_logit_biases = 1;
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.reason, QUILL_FINISH_STOP);
    assert_int_equal(result.n_tokens, 1);
    assert_int_equal(result.tokens[0], 2);
    assert_int_equal(result.n_text_bytes, 0);

    /* With ignore_eos the same request runs to its limit. */
    params.ignore_eos = true;
    run_one(engine, &params, &result);
    assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
    assert_int_equal(result.n_tokens, 10);
    quill_engine_destroy(engine);
}

static void test_engine_logprobs_reported(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 6, 9);
    quill_request_params params = greedy_request(prompt, 6, 6);
    params.wants_logprobs = true;
    params.n_top_logprobs = 3;
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion result;
    run_one(engine, &params, &result);
    for (int32_t i = 0; i < result.n_tokens; i++) {
        assert_int_equal(result.n_top[i], 3);
        assert_int_equal(result.top_first[i], result.tokens[i]);
        assert_true(result.logprobs[i] <= 0.0f);
    }
    quill_engine_destroy(engine);
}

/* Checks that submit fails with INVALID_ARG and a message containing text. */
static void expect_rejected(quill_engine *engine, const quill_request_params *params,
                            const char *text) {
    quill_request *request = NULL;
    assert_int_equal(quill_engine_submit(engine, params, &request), QUILL_ERR_INVALID_ARG);
    assert_null(request);
    assert_non_null(strstr(quill_error_message(), text));
}

static void test_engine_submit_validation(void **state) {
    (void)state;
    static int32_t prompt[300];
    make_prompt(prompt, 300, 1);
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    assert_int_equal(quill_engine_n_ctx(engine), 256);

    quill_request_params params = greedy_request(prompt, 256, 0);
    expect_rejected(engine, &params, "leaving no room");
    params = greedy_request(prompt, 200, 57);
    expect_rejected(engine, &params, "max_tokens 57");
    params = greedy_request(prompt, 0, 4);
    expect_rejected(engine, &params, "at least 1");

    int32_t bad_token[2] = {1, 320};
    params = greedy_request(bad_token, 2, 4);
    expect_rejected(engine, &params, "prompt token 1 is 320");

    params = greedy_request(prompt, 10, 4);
    params.sampling.temperature = -1.0f;
    expect_rejected(engine, &params, "temperature");

    params = greedy_request(prompt, 10, 4);
    params.stop_strings[0] = "";
    params.n_stop_strings = 1;
    expect_rejected(engine, &params, "stop string 0 is empty");

    params = greedy_request(prompt, 10, 4);
    params.n_top_logprobs = 21;
    expect_rejected(engine, &params, "n_top_logprobs");

    /* The largest request that fits is accepted. */
    params = greedy_request(prompt, 200, 56);
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.n_tokens, 56);
    quill_engine_destroy(engine);
}

static void test_engine_explicit_ctx_uses_cache(void **state) {
    (void)state;
    /* An explicit context may take the whole cache less one block, not a 1/n_parallel share. */
    quill_engine_params params = small_engine_params();
    params.cache_bytes = 12 * 16 * 256;
    params.n_parallel = 2;
    params.n_ctx = 1000;
    quill_engine *engine = engine_new(&params);
    assert_int_equal(quill_engine_n_ctx(engine), 11 * 16);
    quill_engine_destroy(engine);
}

static void test_engine_create_validation(void **state) {
    (void)state;
    quill_engine_params params = small_engine_params();
    params.step_tokens = 2;
    quill_engine *engine = (quill_engine *)&params;
    assert_int_equal(quill_engine_create(model, &params, &engine), QUILL_ERR_INVALID_ARG);
    assert_null(engine);
    assert_non_null(strstr(quill_error_message(), "step_tokens"));

    params = small_engine_params();
    params.cache_bytes = 1;
    assert_int_equal(quill_engine_create(model, &params, &engine), QUILL_ERR_INVALID_ARG);
    assert_null(engine);
}

static void test_engine_drain_finishes_work(void **state) {
    (void)state;
    int32_t prompt[16];
    make_prompt(prompt, 10, 6);
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 2;
    quill_engine *engine = engine_new(&engine_params);
    quill_request_params params = greedy_request(prompt, 10, 12);
    quill_request *requests[5] = {NULL};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(quill_engine_submit(engine, &params, &requests[i]), QUILL_OK);
    }
    quill_engine_drain(engine);
    quill_request *late = (quill_request *)&params;
    assert_int_equal(quill_engine_submit(engine, &params, &late), QUILL_ERR_CANCELLED);
    assert_null(late);
    for (int i = 0; i < 5; i++) {
        completion result;
        collect(requests[i], &result);
        assert_int_equal(result.reason, QUILL_FINISH_LENGTH);
        assert_int_equal(result.n_tokens, 12);
        quill_request_destroy(requests[i]);
    }
    quill_engine_destroy(engine);
}

static void *destroy_engine(void *engine) {
    quill_engine_destroy(engine);
    return NULL;
}

static void test_engine_destroy_cancels(void **state) {
    (void)state;
    int32_t prompt[16];
    make_prompt(prompt, 10, 6);
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 1;
    quill_engine *engine = engine_new(&engine_params);

    /* The first request runs and holds the engine in its callback; more wait behind it. */
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request_params params = greedy_request(prompt, 10, 240);
    quill_request *requests[MAX_HANDLES] = {NULL};
    int n_requests = 0;
    requests[n_requests++] = quill_test_submit_holding(engine, &params, &g);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(quill_engine_submit(engine, &params, &requests[n_requests++]), QUILL_OK);
    }

    /* Destroy from another thread, which cancels everything. */
    quill_test_end_while_held(engine, &params, &g, destroy_engine, requests, &n_requests,
                              MAX_HANDLES);

    /* The handles outlive the engine and end with a cancelled final event. */
    for (int i = 0; i < n_requests; i++) {
        completion result;
        collect(requests[i], &result);
        assert_int_equal(result.reason, QUILL_FINISH_CANCELLED);
        quill_request_destroy(requests[i]);
    }
    quill_test_gate_release(&g);
}

static void count_event(void *user_data) {
    atomic_fetch_add((atomic_int *)user_data, 1);
}

static void test_engine_on_event_called(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 6, 12);
    atomic_int n_calls;
    atomic_init(&n_calls, 0);
    quill_request_params params = greedy_request(prompt, 6, 8);
    params.on_event = count_event;
    params.user_data = &n_calls;
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    completion result;
    run_one(engine, &params, &result);
    /* One call per step with output: at least one, at most one per token plus the final. */
    assert_true(atomic_load(&n_calls) >= 1);
    assert_true(atomic_load(&n_calls) <= 9);
    quill_engine_destroy(engine);
}

static void test_engine_submit_out_of_memory(void **state) {
    (void)state;
    int32_t prompt[8];
    make_prompt(prompt, 6, 13);
    const char *stops[] = {"x", "y"};
    quill_request_params params = greedy_request(prompt, 6, 4);
    params.stop_strings[0] = stops[0];
    params.stop_strings[1] = stops[1];
    params.n_stop_strings = 2;
    quill_engine_params engine_params = small_engine_params();
    quill_engine *engine = engine_new(&engine_params);
    /* Each of the request's allocations fails once in turn; none may leak or queue. */
    for (int64_t fail_at = 0; fail_at < 4; fail_at++) {
        quill_request *request = NULL;
        quill__alloc_fail_after(fail_at);
        quill_status status = quill_engine_submit(engine, &params, &request);
        quill__alloc_fail_after(-1);
        assert_int_equal(status, QUILL_ERR_NOMEM);
        assert_null(request);
        assert_non_null(strstr(quill_error_message(), "out of memory"));
    }
    completion result;
    run_one(engine, &params, &result);
    assert_int_equal(result.n_tokens, 4);
    quill_engine_destroy(engine);
}

typedef struct submitter {
    quill_engine *engine;
    uint32_t seed;
    int n_ok;
} submitter;

static void *submit_several(void *argument) {
    submitter *self = argument;
    for (int i = 0; i < 4; i++) {
        int32_t prompt[40];
        make_prompt(prompt, 10 + 7 * i, self->seed + (uint32_t)i);
        quill_request_params params = greedy_request(prompt, 10 + 7 * i, 6);
        quill_request *request = NULL;
        if (quill_engine_submit(self->engine, &params, &request) != QUILL_OK) {
            continue;
        }
        /* Every other request is cancelled right away, to mix cancellation with decoding. */
        if (i % 2 == 1) {
            quill_request_cancel(request);
        }
        quill_request_event event;
        bool is_final = false;
        while (!is_final && quill_request_next_event(request, true, &event) == QUILL_OK) {
            is_final = event.is_final;
            self->n_ok += is_final && event.finish_reason != QUILL_FINISH_ERROR;
            quill_request_event_release(&event);
        }
        quill_request_destroy(request);
    }
    return NULL;
}

static void test_engine_many_submitters(void **state) {
    (void)state;
    enum { N_THREADS = 4 };
    quill_engine_params engine_params = small_engine_params();
    engine_params.n_parallel = 3;
    quill_engine *engine = engine_new(&engine_params);
    pthread_t threads[N_THREADS];
    submitter submitters[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        submitters[i] = (submitter){.engine = engine, .seed = (uint32_t)(50 * i), .n_ok = 0};
        assert_int_equal(pthread_create(&threads[i], NULL, submit_several, &submitters[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(submitters[i].n_ok, 4);
    }
    quill_engine_drain(engine);
    quill_engine_stats stats;
    quill_engine_get_stats(engine, &stats);
    assert_int_equal(stats.n_blocks_used, 0);
    assert_int_equal(stats.n_running, 0);
    quill_engine_destroy(engine);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_greedy_batch_independent),
        cmocka_unit_test(test_engine_seeded_batch_independent),
        cmocka_unit_test(test_engine_prefix_reuse_exact),
        cmocka_unit_test(test_engine_identical_prompts_share),
        cmocka_unit_test(test_engine_eviction_stays_correct),
        cmocka_unit_test(test_engine_cancel_releases_blocks),
        cmocka_unit_test(test_engine_preemption_keeps_output),
        cmocka_unit_test(test_engine_large_max_tokens_concurrent),
        cmocka_unit_test(test_engine_mixed_load_tight_cache),
        cmocka_unit_test(test_engine_cancel_preempted_releases),
        cmocka_unit_test(test_engine_stats_cover_the_running_step),
        cmocka_unit_test(test_engine_queue_limit_busy),
        cmocka_unit_test(test_engine_queue_limit_zero_fills_sequences),
        cmocka_unit_test(test_engine_stop_cancels_all),
        cmocka_unit_test(test_engine_stop_string_spans_tokens),
        cmocka_unit_test(test_engine_utf8_never_split),
        cmocka_unit_test(test_engine_max_tokens_length),
        cmocka_unit_test(test_engine_eos_stops),
        cmocka_unit_test(test_engine_logprobs_reported),
        cmocka_unit_test(test_engine_submit_validation),
        cmocka_unit_test(test_engine_explicit_ctx_uses_cache),
        cmocka_unit_test(test_engine_create_validation),
        cmocka_unit_test(test_engine_drain_finishes_work),
        cmocka_unit_test(test_engine_destroy_cancels),
        cmocka_unit_test(test_engine_on_event_called),
        cmocka_unit_test(test_engine_submit_out_of_memory),
        cmocka_unit_test(test_engine_many_submitters),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
