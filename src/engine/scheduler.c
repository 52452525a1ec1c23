/*
 * One engine step. It drops cancelled requests and admits waiting ones, reusing cached prefixes.
 * It builds one batch of a decode token per running sequence plus prefill chunks up to the step
 * token budget and runs the forward pass. Then it samples, detokenizes, matches stop strings and
 * publishes the results.
 *
 * KV blocks are taken on demand. A waiting request is admitted, in arrival order, when the free
 * blocks plus the blocks that only the prefix index holds cover its uncached tokens. They must
 * also cover what running requests take soon: the rest of each prompt in prefill and one decode
 * block per sequence. Sequences then grow block by block and evict unreferenced prefix blocks
 * when the free list runs short.
 *
 * Preemption: when eviction cannot supply a block, the scheduler preempts the most recently
 * admitted request that has no entries in the step's batch. The request's whole computed blocks
 * go into the prefix index, its sequence is released, and it goes back to the front of the
 * waiting list. Admitted again, it recomputes its prompt and generated tokens, except those
 * whose blocks the prefix index still holds. Then it continues with its sampler, detokenizer
 * and stop matcher as they were, so its output does not change and no text is sent twice. The
 * oldest running request is never preempted, and one sequence of n_ctx tokens fits the cache,
 * so the oldest request always makes progress.
 *
 * Engine thread only.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/threadpool.h"
#include "engine/engine_internal.h"
#include "model/model_internal.h"

static int32_t blocks_for_tokens(const quill_engine *engine, int64_t n_tokens) {
    return (int32_t)((n_tokens + engine->block_tokens - 1) / engine->block_tokens);
}

bool quill__scheduler_has_work(const quill_engine *engine) {
    return engine->waiting_head != NULL || engine->n_running > 0;
}

/* ---- Finishing ---- */

static void fill_usage(const quill_request *request, quill_usage *usage) {
    memset(usage, 0, sizeof(*usage));
    /* A request that ends while waiting (cancelled, or stopped with the engine) never had its
     * prompt read, so it reports and is billed for no prompt tokens. */
    if (request->scheduled_us > 0) {
        usage->n_prompt_tokens = request->n_prompt_tokens;
        usage->n_cached_tokens = request->n_cached_tokens;
    }
    usage->n_completion_tokens = request->n_generated;
    usage->arrival_us = request->arrival_us;
    usage->scheduled_us = request->scheduled_us;
    usage->first_token_us = request->first_token_us;
    usage->first_text_us = request->first_text_us;
    usage->finished_us = quill__clock_monotonic_us();
    int64_t scheduled_us = request->scheduled_us > 0 ? request->scheduled_us : usage->finished_us;
    usage->queue_us = scheduled_us - request->arrival_us;
    if (request->first_token_us > 0) {
        usage->prefill_us = request->first_token_us - request->scheduled_us;
        usage->generation_us = usage->finished_us - request->first_token_us;
    }
}

/* Indexes the sequence's whole blocks, then drops its KV and its reservation. */
static void release_sequence(quill_engine *engine, quill_request *request, bool is_kv_valid) {
    if (request->seq_id < 0) {
        return;
    }
    if (engine->prefix != NULL && is_kv_valid) {
        const int32_t *blocks = quill_kv_cache_seq_blocks(engine->cache, request->seq_id);
        /* NOTE: a failure to index (out of memory) only loses cache hits, so it is ignored. */
        (void)quill__prefix_cache_insert(engine->prefix, request->tokens, request->n_computed,
                                         blocks);
    }
    quill_kv_cache_seq_reset(engine->cache, request->seq_id);
    engine->is_seq_used[request->seq_id] = false;
    request->seq_id = -1;
}

/* Releases everything the request holds on the engine side and queues its final event. The
 * caller removes it from its list and drops the engine's reference. */
static void finish_request(quill_engine *engine, quill_request *request, quill_finish_reason reason,
                           quill_status status, const char *message) {
    release_sequence(engine, request, reason != QUILL_FINISH_ERROR);
    engine->n_finished++;
    pthread_mutex_lock(&engine->mutex);
    engine->n_open--;
    pthread_mutex_unlock(&engine->mutex);
    quill_sampler_destroy(request->sampler);
    request->sampler = NULL;
    request->phase = QUILL_REQUEST_DONE;

    quill_usage usage;
    fill_usage(request, &usage);
    if (reason == QUILL_FINISH_ERROR) {
        QUILL_LOG_ERROR("engine", "request failed", "status=%s n_prompt_tokens=%lld error=%s",
                        quill_status_name(status), (long long)request->n_prompt_tokens,
                        message != NULL ? message : "");
    } else {
        QUILL_LOG_DEBUG("engine", "request finished",
                        "reason=%s n_prompt_tokens=%lld n_cached_tokens=%lld "
                        "n_completion_tokens=%lld queue_us=%lld prefill_us=%lld "
                        "generation_us=%lld",
                        quill_finish_reason_name(reason), (long long)usage.n_prompt_tokens,
                        (long long)usage.n_cached_tokens, (long long)usage.n_completion_tokens,
                        (long long)usage.queue_us, (long long)usage.prefill_us,
                        (long long)usage.generation_us);
    }
    quill__request_publish(request, reason, status, message, &usage);
}

/* Fails a request with the thread's current error message. */
static void fail_request(quill_engine *engine, quill_request *request, quill_status status) {
    char message[256];
    snprintf(message, sizeof(message), "%s", quill_error_message());
    finish_request(engine, request, QUILL_FINISH_ERROR, status, message);
}

static void set_waiting_count(quill_engine *engine, int32_t delta) {
    pthread_mutex_lock(&engine->mutex);
    engine->n_waiting += delta;
    pthread_mutex_unlock(&engine->mutex);
}

/* Removes finished and preempted requests from the running set, keeping admission order. A
 * preempted request took the engine's reference with it to the waiting list. */
static void compact_running(quill_engine *engine) {
    int32_t n_kept = 0;
    for (int32_t i = 0; i < engine->n_running; i++) {
        quill_request *request = engine->running[i];
        if (request->phase == QUILL_REQUEST_DONE) {
            quill__request_unref(request);
        } else if (request->phase != QUILL_REQUEST_WAITING) {
            engine->running[n_kept++] = request;
        }
    }
    engine->n_running = n_kept;
}

/* Finishes cancelled requests, waiting or running, or all of them when is_all. */
static void sweep_cancelled(quill_engine *engine, bool is_all) {
    quill_request *previous = NULL;
    quill_request *request = engine->waiting_head;
    while (request != NULL) {
        quill_request *next = request->next;
        if (is_all || atomic_load(&request->is_cancel_requested)) {
            if (previous != NULL) {
                previous->next = next;
            } else {
                engine->waiting_head = next;
            }
            if (engine->waiting_tail == request) {
                engine->waiting_tail = previous;
            }
            set_waiting_count(engine, -1);
            finish_request(engine, request, QUILL_FINISH_CANCELLED, QUILL_OK, NULL);
            quill__request_unref(request);
        } else {
            previous = request;
        }
        request = next;
    }

    for (int32_t i = 0; i < engine->n_running; i++) {
        quill_request *running = engine->running[i];
        if (is_all || atomic_load(&running->is_cancel_requested)) {
            finish_request(engine, running, QUILL_FINISH_CANCELLED, QUILL_OK, NULL);
        }
    }
    compact_running(engine);
}

void quill__scheduler_cancel_all(quill_engine *engine) {
    sweep_cancelled(engine, true);
}

/* ---- Admission ---- */

/* True when a running request is still prefilling whole blocks that this one shares beyond what
 * the index already holds: waiting for them beats computing them twice. */
static bool should_wait_for_prefill(const quill_engine *engine, const quill_request *request) {
    if (engine->prefix == NULL) {
        return false;
    }
    int32_t n_indexed =
        quill__prefix_cache_count_matching(engine->prefix, request->tokens, request->n_tokens);
    for (int32_t i = 0; i < engine->n_running; i++) {
        const quill_request *other = engine->running[i];
        if (other->phase != QUILL_REQUEST_PREFILL) {
            continue;
        }
        int64_t limit = request->n_tokens < other->n_tokens ? request->n_tokens : other->n_tokens;
        int64_t n_same = 0;
        while (n_same < limit && request->tokens[n_same] == other->tokens[n_same]) {
            n_same++;
        }
        if (n_same / engine->block_tokens > n_indexed) {
            return true;
        }
    }
    return false;
}

/* Returns the blocks that running requests take soon: the rest of each prefill, up to the block
 * of its first generated token, and one decode block per generating sequence. */
static int64_t blocks_committed(const quill_engine *engine) {
    int64_t n_blocks = 0;
    for (int32_t i = 0; i < engine->n_running; i++) {
        const quill_request *request = engine->running[i];
        if (request->phase != QUILL_REQUEST_PREFILL) {
            n_blocks += 1;
            continue;
        }
        int32_t n_held = quill_kv_cache_seq_n_blocks(engine->cache, request->seq_id);
        int32_t n_left = blocks_for_tokens(engine, request->n_tokens + 1) - n_held;
        n_blocks += n_left > 0 ? n_left : 0;
    }
    return n_blocks;
}

/* True when the free blocks plus those that only the prefix index holds cover the request's
 * uncached tokens, up to the block of its next generated token, next to blocks_committed.
 * Cached blocks that the request would share count as neither needed nor available. */
static bool has_blocks_to_start(quill_engine *engine, const quill_request *request) {
    int64_t n_cached = 0;
    int64_t n_cached_evictable = 0;
    int64_t n_evictable = 0;
    if (engine->prefix != NULL) {
        n_cached = quill__prefix_cache_lookup(engine->prefix, request->tokens, request->n_tokens,
                                              engine->lookup_blocks, engine->n_blocks_total);
        for (int64_t i = 0; i < n_cached; i++) {
            n_cached_evictable +=
                quill_kv_cache_block_refcount(engine->cache, engine->lookup_blocks[i]) == 1;
        }
        n_evictable = quill__prefix_cache_n_evictable(engine->prefix);
    }

    /* A prefix that covers every token is attached one token short, and the sequence copies
     * its last block before computing that token. */
    int64_t n_needed = blocks_for_tokens(engine, request->n_tokens + 1) - n_cached;
    if (n_cached * engine->block_tokens >= request->n_tokens) {
        n_needed++;
    }
    n_needed += blocks_committed(engine);
    int64_t n_available =
        quill_kv_cache_n_blocks_free(engine->cache) + n_evictable - n_cached_evictable;
    return n_needed <= n_available;
}

/* Attaches the longest cached prefix of the request's tokens to its sequence and returns how
 * many tokens it covers. At least the last token is always computed, because its logits give
 * the next output token. */
static int64_t attach_cached_prefix(quill_engine *engine, quill_request *request) {
    int32_t n_found = quill__prefix_cache_lookup(engine->prefix, request->tokens, request->n_tokens,
                                                 engine->lookup_blocks, engine->n_blocks_total);
    int64_t n_cached = (int64_t)n_found * engine->block_tokens;
    if (n_cached > request->n_tokens - 1) {
        n_cached = request->n_tokens - 1;
    }
    if (n_cached <= 0) {
        return 0;
    }
    int32_t n_attach = blocks_for_tokens(engine, n_cached);
    quill_status status = quill_kv_cache_seq_attach(engine->cache, request->seq_id,
                                                    engine->lookup_blocks, n_attach, n_cached);
    if (status != QUILL_OK) {
        QUILL_LOG_WARN("engine", "prefix reuse skipped", "error=%s", quill_error_message());
        return 0;
    }
    request->n_computed = n_cached;
    return n_cached;
}

/* Gives a request admitted for the first time its cached prompt prefix, sampler and text
 * state. */
static quill_status start_request(quill_engine *engine, quill_request *request) {
    if (engine->prefix != NULL) {
        quill_engine_stats *stats = &engine->step_stats;
        stats->n_prefix_queries++;
        request->n_cached_tokens = attach_cached_prefix(engine, request);
        if (request->n_cached_tokens > 0) {
            stats->n_prefix_hits++;
            stats->n_prefix_tokens_reused += request->n_cached_tokens;
        }
    }

    quill_status status =
        quill_sampler_create(&request->sampling, engine->n_vocab, &request->sampler);
    if (status != QUILL_OK) {
        return status;
    }
    /* The penalties see the prompt too, as llama.cpp's server feeds it to its sampler;
     * penalty_last_n bounds how far back they look. */
    for (int64_t i = 0; i < request->n_prompt_tokens; i++) {
        quill_sampler_accept(request->sampler, request->tokens[i]);
    }

    /* SentencePiece drops the leading space of the first piece after BOS, as llama.cpp and
     * llama2.c print it; after any other prompt the space separates words. */
    quill_detokenizer_init(&request->detokenizer, engine->tokenizer);
    request->detokenizer.replace_invalid = true;
    request->detokenizer.render_special = request->render_special;
    int32_t last_prompt_token = request->tokens[request->n_prompt_tokens - 1];
    request->detokenizer.skip_leading_space =
        quill_tokenizer_type(engine->tokenizer) == QUILL_VOCAB_SPM &&
        last_prompt_token == quill_tokenizer_bos(engine->tokenizer);

    status =
        quill__stop_matcher_init(&request->stop_matcher, (const char *const *)request->stop_strings,
                                 request->n_stop_strings);
    request->has_stop_matcher = true;
    return status;
}

/* Attaches the cached prefix of a readmitted request's prompt and generated tokens. Its
 * sampler, detokenizer and stop matcher continue as they were. Its cached-token count stays the
 * first admission's, because usage and billing count only prompt tokens that the prefix index
 * saved. */
static void resume_request(quill_engine *engine, quill_request *request) {
    int64_t n_reused = engine->prefix != NULL ? attach_cached_prefix(engine, request) : 0;
    QUILL_LOG_DEBUG("engine", "preempted request resumed",
                    "n_tokens=%lld n_reused_tokens=%lld n_preemptions=%d",
                    (long long)request->n_tokens, (long long)n_reused, request->n_preemptions);
}

/* Gives an admitted request a free sequence and starts or resumes it. */
static quill_status admit_request(quill_engine *engine, quill_request *request) {
    int32_t seq_id = 0;
    while (engine->is_seq_used[seq_id]) {
        seq_id++;
    }
    engine->is_seq_used[seq_id] = true;
    request->seq_id = seq_id;
    request->n_computed = 0;
    request->phase = QUILL_REQUEST_PREFILL;
    if (request->n_preemptions > 0) {
        resume_request(engine, request);
        return QUILL_OK;
    }
    return start_request(engine, request);
}

/* Removes request from the waiting list, given its predecessor. */
static void unlink_waiting(quill_engine *engine, quill_request *previous, quill_request *request) {
    if (previous != NULL) {
        previous->next = request->next;
    } else {
        engine->waiting_head = request->next;
    }
    if (engine->waiting_tail == request) {
        engine->waiting_tail = previous;
    }
    request->next = NULL;
}

/* Admits waiting requests in order while sequences and KV blocks allow. Returns true when any
 * request left the waiting list. */
static bool admit_requests(quill_engine *engine) {
    bool has_progress = false;
    quill_request *previous = NULL;
    quill_request *request = engine->waiting_head;
    while (request != NULL && engine->n_running < engine->params.n_parallel) {
        quill_request *next = request->next;
        if (!has_blocks_to_start(engine, request)) {
            break; /* first come, first served: later requests wait behind this one */
        }
        if (should_wait_for_prefill(engine, request)) {
            previous = request;
            request = next;
            continue;
        }

        unlink_waiting(engine, previous, request);
        set_waiting_count(engine, -1);
        has_progress = true;
        quill_status status = admit_request(engine, request);
        if (status != QUILL_OK) {
            fail_request(engine, request, status);
            quill__request_unref(request);
        } else {
            engine->running[engine->n_running++] = request;
        }
        if (engine->n_running > engine->step_stats.n_running_max) {
            engine->step_stats.n_running_max = engine->n_running;
        }
        request = next;
    }
    return has_progress;
}

/* ---- Batch ---- */

/* Makes sure the sequence has blocks for n_tokens_total tokens, evicting blocks that only the
 * prefix index holds when the free list is short. Returns QUILL_ERR_BUSY, changing nothing,
 * when the cache still lacks blocks. */
static quill_status prepare_blocks(quill_engine *engine, quill_request *request,
                                   int64_t n_tokens_total) {
    quill_status status =
        quill_kv_cache_seq_prepare(engine->cache, request->seq_id, n_tokens_total);
    if (status == QUILL_ERR_BUSY && engine->prefix != NULL) {
        int32_t n_needed =
            quill_kv_cache_seq_blocks_needed(engine->cache, request->seq_id, n_tokens_total) -
            quill_kv_cache_n_blocks_free(engine->cache);
        quill__prefix_cache_evict(engine->prefix, n_needed);
        status = quill_kv_cache_seq_prepare(engine->cache, request->seq_id, n_tokens_total);
    }
    return status;
}

/* Sends a running request back to the front of the waiting list and frees its KV blocks. Its
 * whole computed blocks stay in the prefix index until evicted, so that readmission recomputes
 * only the rest. The running set drops it at the end of the step. */
static void preempt_request(quill_engine *engine, quill_request *request) {
    enum { WARN_EVERY = 100 };
    int64_t n_computed = request->n_computed;
    release_sequence(engine, request, true);
    request->n_computed = 0;
    request->logits_index = -1;
    request->phase = QUILL_REQUEST_WAITING;
    request->n_preemptions++;
    request->next = engine->waiting_head;
    engine->waiting_head = request;
    if (engine->waiting_tail == NULL) {
        engine->waiting_tail = request;
    }
    set_waiting_count(engine, 1);

    int64_t n_preemptions = ++engine->step_stats.n_preemptions;
    QUILL_LOG_DEBUG("engine", "request preempted",
                    "n_tokens=%lld n_computed=%lld n_generated=%lld n_preemptions=%d",
                    (long long)request->n_tokens, (long long)n_computed,
                    (long long)request->n_generated, request->n_preemptions);
    if (n_preemptions % WARN_EVERY == 1) {
        QUILL_LOG_WARN("engine", "requests preempted for lack of KV blocks",
                       "n_preemptions_total=%lld n_blocks=%d n_parallel=%d hint=\"give the KV "
                       "cache more memory (serve --cache-mem) or lower --parallel to recompute "
                       "less\"",
                       (long long)n_preemptions, engine->n_blocks_total, engine->params.n_parallel);
    }
}

/* Returns the running-set index of the most recently admitted request after index `after`
 * that has no entries in the batch, or -1 when there is none. */
static int32_t find_preemptible(const quill_engine *engine, int32_t after) {
    for (int32_t i = engine->n_running - 1; i > after; i--) {
        const quill_request *request = engine->running[i];
        bool is_running =
            request->phase == QUILL_REQUEST_PREFILL || request->phase == QUILL_REQUEST_DECODE;
        if (is_running && !request->is_in_batch) {
            return i;
        }
    }
    return -1;
}

/* Makes sure running[at] has blocks for n_tokens_total tokens, preempting younger requests
 * without batch entries, youngest first, while the cache is short. Returns QUILL_ERR_BUSY when
 * it is still short after that. */
static quill_status reserve_blocks(quill_engine *engine, int32_t at, int64_t n_tokens_total) {
    quill_request *request = engine->running[at];
    quill_status status = prepare_blocks(engine, request, n_tokens_total);
    while (status == QUILL_ERR_BUSY) {
        int32_t victim = find_preemptible(engine, at);
        if (victim < 0) {
            break;
        }
        preempt_request(engine, engine->running[victim]);
        status = prepare_blocks(engine, request, n_tokens_total);
    }
    return status;
}

/* Returns the largest end of a prefill chunk, at most n_tokens_total, whose new blocks the
 * free list holds, or the request's n_computed when not even one more token fits. */
static int64_t fitting_end(const quill_engine *engine, const quill_request *request,
                           int64_t n_tokens_total) {
    int32_t n_free = quill_kv_cache_n_blocks_free(engine->cache);
    int64_t end = n_tokens_total;
    while (end > request->n_computed &&
           quill_kv_cache_seq_blocks_needed(engine->cache, request->seq_id, end) > n_free) {
        end = (end - 1) / engine->block_tokens * engine->block_tokens;
    }
    return end > request->n_computed ? end : request->n_computed;
}

/* Adds entries [from, to) of the request's tokens; only the entry of the last token wants
 * logits. Returns that entry's batch index, or -1. */
static int32_t add_entries(quill_engine *engine, quill_request *request, int64_t from, int64_t to,
                           int64_t logits_at) {
    int32_t logits_index = -1;
    request->is_in_batch = true;
    for (int64_t position = from; position < to; position++) {
        bool wants_logits = position == logits_at;
        if (wants_logits) {
            logits_index = engine->batch.n_tokens;
        }
        /* The batch holds step_tokens entries and build_batch never hands out more than that
         * budget, so this cannot fail. */
        (void)quill_batch_add(&engine->batch, request->tokens[position], (int32_t)position,
                              request->seq_id, wants_logits);
    }
    return logits_index;
}

/* Returns how many prefill tokens a step may add next to n_decode decode entries. With no
 * decode entries the whole step budget goes to prefill, which is the most efficient. With
 * decode entries, a chunk should add at most DECODE_STALL_FACTOR - 1 decode steps' worth of
 * time, so that a long prompt arriving slows running streams by a bounded factor instead of
 * stalling them for a whole chunk. The per-token cost comes from the moving averages that the
 * step loop keeps. Until both exist, a chunk is FIRST_PREFILL_CHUNK tokens, which is also large
 * enough to measure that cost. */
static int64_t prefill_budget(const quill_engine *engine, int64_t n_decode, int64_t budget) {
    enum { FIRST_PREFILL_CHUNK = 8, MIN_PREFILL_CHUNK = 2 };
    const double DECODE_STALL_FACTOR = 2.0;
    if (n_decode == 0) {
        return budget;
    }
    int64_t chunk = FIRST_PREFILL_CHUNK;
    if (engine->decode_step_us > 0 && engine->prefill_token_us > 0) {
        double allowed_us = (DECODE_STALL_FACTOR - 1.0) * engine->decode_step_us;
        chunk = (int64_t)(allowed_us / engine->prefill_token_us);
    }
    if (chunk < MIN_PREFILL_CHUNK) {
        chunk = MIN_PREFILL_CHUNK;
    }
    return chunk < budget ? chunk : budget;
}

/* Updates the step-time averages after a forward pass of n_decode decode entries and
 * n_prefill prefill entries that took elapsed_us. */
static void update_step_costs(quill_engine *engine, int64_t n_decode, int64_t n_prefill,
                              int64_t elapsed_us) {
    const double weight = 0.2;
    if (n_prefill == 0 && n_decode > 0) {
        engine->decode_step_us = engine->decode_step_us == 0
                                     ? (double)elapsed_us
                                     : (1 - weight) * engine->decode_step_us + weight * elapsed_us;
        return;
    }
    if (n_prefill < 2) {
        return; /* one token's cost cannot be separated from the step's fixed cost */
    }
    double base_us = n_decode > 0 ? engine->decode_step_us : 0;
    double per_token_us = ((double)elapsed_us - base_us) / (double)n_prefill;
    if (per_token_us <= 0) {
        return;
    }
    engine->prefill_token_us = engine->prefill_token_us == 0
                                   ? per_token_us
                                   : (1 - weight) * engine->prefill_token_us + weight * per_token_us;
}

/* Adds one decode entry per generating sequence, in admission order, and returns how many it
 * added. A sequence that needs a block preempts younger requests to get one. When none is left
 * to preempt, it is itself the youngest without entries and is preempted, unless it is the
 * oldest running request. Alone in the cache, the oldest request always fits. */
static int64_t add_decode_entries(quill_engine *engine) {
    int64_t n_decode = 0;
    for (int32_t i = 0; i < engine->n_running; i++) {
        quill_request *request = engine->running[i];
        if (request->phase != QUILL_REQUEST_DECODE) {
            continue;
        }
        quill_status status = reserve_blocks(engine, i, request->n_computed + 1);
        if (status == QUILL_ERR_BUSY && i > 0) {
            preempt_request(engine, request);
            continue;
        }
        if (status != QUILL_OK) {
            fail_request(engine, request, status);
            continue;
        }
        request->logits_index = add_entries(engine, request, request->n_computed,
                                            request->n_computed + 1, request->n_computed);
        n_decode++;
    }
    return n_decode;
}

/* Adds prefill chunks in admission order until budget tokens are spent. A chunk that lacks
 * blocks preempts younger requests that are not in the batch. When none is left, the chunk
 * shrinks to the blocks that are free. A request that gets no blocks at all waits for the next
 * step, because the decoding requests that hold the blocks finish or get preempted.
 * NOTE: decode entries are added first, so a prefill cannot preempt younger requests that
 * decode in the same step. It may wait a few steps while they take the free blocks. */
static void add_prefill_chunks(quill_engine *engine, int64_t budget) {
    int64_t now_us = quill__clock_monotonic_us();
    for (int32_t i = 0; i < engine->n_running && budget > 0; i++) {
        quill_request *request = engine->running[i];
        if (request->phase != QUILL_REQUEST_PREFILL) {
            continue;
        }
        int64_t n_remaining = request->n_tokens - request->n_computed;
        int64_t end = request->n_computed + (n_remaining < budget ? n_remaining : budget);
        quill_status status = reserve_blocks(engine, i, end);
        if (status == QUILL_ERR_BUSY) {
            end = fitting_end(engine, request, end);
            if (end > request->n_computed) {
                status = prepare_blocks(engine, request, end);
            }
        }
        if (status == QUILL_ERR_BUSY) {
            continue;
        }
        if (status != QUILL_OK) {
            fail_request(engine, request, status);
            continue;
        }
        if (request->scheduled_us == 0) {
            request->scheduled_us = now_us;
        }
        request->logits_index =
            add_entries(engine, request, request->n_computed, end, request->n_tokens - 1);
        budget -= end - request->n_computed;
    }
}

/* Fills the batch: one decode token per generating sequence, then prefill chunks in admission
 * order until the step's token budget is spent. A prefill chunk of a preempted request
 * recomputes its generated tokens too, and its last token's logits give the next token. */
static void build_batch(quill_engine *engine) {
    quill_batch_clear(&engine->batch);
    for (int32_t i = 0; i < engine->n_running; i++) {
        engine->running[i]->logits_index = -1;
        engine->running[i]->is_in_batch = false;
    }
    engine->n_step_decode = add_decode_entries(engine);
    int64_t budget = engine->params.step_tokens - engine->n_step_decode;
    add_prefill_chunks(engine, prefill_budget(engine, engine->n_step_decode, budget));
}

/* ---- Output ---- */

/* Passes text through the stop matcher into the step's text. Returns true when a stop string
 * completed. */
static quill_status release_text(quill_request *request, const char *bytes, size_t n_bytes,
                                 bool *is_stopped) {
    *is_stopped = false;
    if (n_bytes == 0) {
        return QUILL_OK;
    }
    quill_status status = quill__stop_matcher_feed(&request->stop_matcher, bytes, n_bytes,
                                                   &request->step_text, is_stopped);
    if (request->first_text_us == 0 && request->step_text.length > 0) {
        request->first_text_us = quill__clock_monotonic_us();
    }
    return status;
}

/* Releases what the detokenizer and the stop matcher still hold, at the end of a request that
 * did not end on a stop string. The detokenizer's last bytes may still complete one, which
 * *is_stopped reports. */
static quill_status flush_text(quill_engine *engine, quill_request *request, bool *is_stopped) {
    size_t n_bytes = 0;
    quill_status status = quill_detokenizer_flush(&request->detokenizer, engine->text_scratch,
                                                  engine->detokenizer_bytes, &n_bytes);
    if (status == QUILL_OK) {
        status = release_text(request, engine->text_scratch, n_bytes, is_stopped);
    }
    if (status == QUILL_OK && !*is_stopped) {
        status = quill__stop_matcher_flush(&request->stop_matcher, &request->step_text);
        if (request->first_text_us == 0 && request->step_text.length > 0) {
            request->first_text_us = quill__clock_monotonic_us();
        }
    }
    return status;
}

/* Records a sampled token in the step's output, with log-probabilities when requested. */
static quill_status record_token(quill_request *request, int32_t token, const float *logits,
                                 int32_t n_vocab) {
    if (request->n_step_tokens == request->step_capacity) {
        int32_t capacity = request->step_capacity > 0 ? request->step_capacity * 2 : 1;
        quill_generated_token *grown = quill__realloc_array(request->step_tokens, (size_t)capacity,
                                                            sizeof(quill_generated_token));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for a token event");
        }
        request->step_tokens = grown;
        request->step_capacity = capacity;
    }
    quill_generated_token *entry = &request->step_tokens[request->n_step_tokens++];
    memset(entry, 0, sizeof(*entry));
    entry->token = token;
    if (request->wants_logprobs) {
        quill_logprobs_compute(logits, n_vocab, token, request->n_top_logprobs, &entry->logprob,
                               entry->top);
        entry->n_top = request->n_top_logprobs;
    }
    request->tokens[request->n_tokens++] = token;
    request->n_generated++;
    return QUILL_OK;
}

/* Takes the request's next token (drawn from logits), releases its text and finishes the
 * request on an end-of-generation token, a stop string or its length limit. */
static void take_token(quill_engine *engine, quill_request *request, const float *logits,
                       int32_t token) {
    quill_sampler_accept(request->sampler, token);
    if (request->first_token_us == 0) {
        request->first_token_us = quill__clock_monotonic_us();
    }
    quill_status status = record_token(request, token, logits, engine->n_vocab);
    bool is_stopped = false;
    bool is_eog = !request->ignore_eos && quill_tokenizer_is_eog(engine->tokenizer, token);

    /* The end-of-generation token counts as output but adds no text. */
    if (status == QUILL_OK && !is_eog) {
        size_t n_bytes = 0;
        status = quill_detokenizer_feed(&request->detokenizer, token, engine->text_scratch,
                                        engine->detokenizer_bytes, &n_bytes);
        if (status == QUILL_OK) {
            status = release_text(request, engine->text_scratch, n_bytes, &is_stopped);
        }
    }

    quill_finish_reason reason = QUILL_FINISH_NONE;
    if (is_stopped || is_eog) {
        reason = QUILL_FINISH_STOP;
    } else if (request->n_generated >= request->max_tokens) {
        reason = QUILL_FINISH_LENGTH;
    }
    if (status == QUILL_OK && reason != QUILL_FINISH_NONE && !is_stopped) {
        status = flush_text(engine, request, &is_stopped);
        if (is_stopped) {
            reason = QUILL_FINISH_STOP;
        }
    }
    if (status != QUILL_OK) {
        fail_request(engine, request, status);
    } else if (reason != QUILL_FINISH_NONE) {
        finish_request(engine, request, reason, QUILL_OK, NULL);
    } else {
        quill__request_publish(request, QUILL_FINISH_NONE, QUILL_OK, NULL, NULL);
    }
}

/* Sets the error for a draw that found no token: either the model gave no finite logit, or
 * the request's logit_bias banned every token the model can produce. */
static quill_status no_token_error(const float *logits, int32_t n_vocab) {
    for (int32_t i = 0; i < n_vocab; i++) {
        if (isfinite(logits[i])) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "engine: logit_bias bans every token the model can produce "
                                   "next; remove some of the -100 biases");
        }
    }
    return quill_error_set(QUILL_ERR_FORMAT,
                           "engine: the model produced no finite logit (all %d are NaN or "
                           "infinite); the model file's weights are probably corrupt",
                           n_vocab);
}

/* The draws of one step, dealt to the pool's threads. */
typedef struct sample_task {
    quill_sample_job *jobs;
    int32_t n_jobs;
} sample_task;

/* Pool task: draws the tokens of this thread's share of the jobs. */
static void sample_worker(void *task_context, int thread_index, int n_threads) {
    sample_task *task = task_context;
    for (int32_t i = thread_index; i < task->n_jobs; i += n_threads) {
        task->jobs[i].token = quill_sampler_sample(task->jobs[i].request->sampler,
                                                   task->jobs[i].logits);
    }
}

/* After the forward pass: advance each sequence, index newly computed prompt blocks, and
 * sample where logits were computed. */
static void process_outputs(quill_engine *engine) {
    int32_t n_jobs = 0;
    for (int32_t i = 0; i < engine->n_running; i++) {
        quill_request *request = engine->running[i];
        if (request->phase == QUILL_REQUEST_DONE || request->seq_id < 0) {
            continue;
        }
        int64_t n_computed = quill_kv_cache_seq_length(engine->cache, request->seq_id);
        bool has_advanced = n_computed > request->n_computed;
        request->n_computed = n_computed;
        if (request->phase == QUILL_REQUEST_PREFILL && has_advanced && engine->prefix != NULL) {
            /* Index prompt blocks as soon as they exist, so that a request with the same
             * prefix arriving now can share them. */
            (void)quill__prefix_cache_insert(
                engine->prefix, request->tokens, n_computed,
                quill_kv_cache_seq_blocks(engine->cache, request->seq_id));
        }
        if (request->logits_index < 0) {
            continue;
        }
        request->phase = QUILL_REQUEST_DECODE;
        const float *logits = quill_context_logits(engine->context, request->logits_index);
        request->logits_index = -1;
        if (logits == NULL) {
            fail_request(engine, request,
                         quill_error_set(QUILL_ERR_FORMAT,
                                         "engine: the forward pass returned no logits for a "
                                         "sequence that needed them"));
            continue;
        }
        engine->sample_jobs[n_jobs++] = (quill_sample_job){.request = request, .logits = logits};
    }

    /* Each request draws from its own sampler and RNG, so the draws run on the pool (idle
     * between forward passes) in any order and give the same tokens as one after another. */
    sample_task task = {.jobs = engine->sample_jobs, .n_jobs = n_jobs};
    if (n_jobs > 0) {
        quill__threadpool_run(n_jobs > 1 ? quill__context_pool(engine->context) : NULL,
                              sample_worker, &task);
    }
    for (int32_t i = 0; i < n_jobs; i++) {
        const quill_sample_job *job = &engine->sample_jobs[i];
        if (job->token == QUILL_SAMPLER_NO_TOKEN) {
            fail_request(engine, job->request, no_token_error(job->logits, engine->n_vocab));
            continue;
        }
        take_token(engine, job->request, job->logits, job->token);
    }
}

/* Fails every request that had entries in a failed forward pass. */
static void fail_batch(quill_engine *engine, quill_status status) {
    char message[256];
    snprintf(message, sizeof(message), "%s", quill_error_message());
    QUILL_LOG_ERROR("engine", "forward pass failed", "status=%s n_tokens=%d error=%s",
                    quill_status_name(status), engine->batch.n_tokens, message);
    for (int32_t i = 0; i < engine->n_running; i++) {
        quill_request *request = engine->running[i];
        if (request->is_in_batch && request->phase != QUILL_REQUEST_DONE) {
            finish_request(engine, request, QUILL_FINISH_ERROR, status, message);
        }
    }
}

/* Copies the step's counters and gauges to the shared stats. */
static void publish_stats(quill_engine *engine) {
    quill_engine_stats *stats = &engine->step_stats;
    stats->n_running = engine->n_running;
    stats->n_blocks_total = engine->n_blocks_total;
    stats->n_blocks_cached = quill__prefix_cache_n_evictable(engine->prefix);
    stats->n_blocks_used = engine->n_blocks_total - quill_kv_cache_n_blocks_free(engine->cache) -
                           stats->n_blocks_cached;
    pthread_mutex_lock(&engine->mutex);
    engine->stats = *stats;
    pthread_mutex_unlock(&engine->mutex);
}

bool quill__scheduler_step(quill_engine *engine) {
    int64_t n_finished_before = engine->n_finished;
    int64_t n_preemptions_before = engine->step_stats.n_preemptions;
    sweep_cancelled(engine, false);
    bool has_progress = admit_requests(engine);

    build_batch(engine);
    if (engine->batch.n_tokens > 0) {
        /* A step with prefill tokens can take seconds, so the gauges show the requests it
         * admitted and the blocks it took while it runs. Decode-only steps take milliseconds
         * and skip this, because counting the cached blocks walks the prefix index. */
        if (engine->batch.n_tokens > engine->n_step_decode) {
            publish_stats(engine);
        }
        int64_t start_us = quill__clock_monotonic_us();
        quill_status status = quill_context_forward(engine->context, engine->cache, &engine->batch);
        update_step_costs(engine, engine->n_step_decode,
                          engine->batch.n_tokens - engine->n_step_decode,
                          quill__clock_monotonic_us() - start_us);
        engine->step_stats.n_steps++;
        if (status != QUILL_OK) {
            fail_batch(engine, status);
        } else {
            process_outputs(engine);
        }
        has_progress = true;
    }
    compact_running(engine);
    publish_stats(engine);
    return has_progress || engine->n_finished != n_finished_before ||
           engine->step_stats.n_preemptions != n_preemptions_before;
}
