/*
 * The engine's lifecycle and queue: creation of the context, KV cache and prefix index; the
 * engine thread's loop; submission from any thread into a bounded FIFO; drain, destroy and
 * stats. One step of work lives in scheduler.c.
 *
 * Threads: quill_engine functions are safe from any thread. The engine thread alone touches
 * the context, the cache, the prefix index and the running set; submitters and the engine
 * thread meet only under engine->mutex (the queue, the flags, the stats).
 */
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "engine/engine_internal.h"

enum {
    DEFAULT_PARALLEL = 4,
    DEFAULT_QUEUE_LIMIT = 64,
    DEFAULT_STEP_TOKENS = 512,
    /* Used when neither the params nor the model give a context length. */
    FALLBACK_CTX_TOKENS = 2048,
};

/* Default cache budget cap: 2 GiB of K/V for all sequences together. */
static const size_t DEFAULT_CACHE_BYTES_MAX = (size_t)2 << 30;

quill_engine_params quill_engine_params_default(void) {
    long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    quill_engine_params params = {
        .n_threads = n_cpus > 0 ? (int)n_cpus : 1,
        .use_pinning = false,
        .n_parallel = DEFAULT_PARALLEL,
        .n_ctx = 0,
        .cache_bytes = 0,
        .queue_limit = DEFAULT_QUEUE_LIMIT,
        .step_tokens = DEFAULT_STEP_TOKENS,
        .use_prefix_cache = true,
    };
    return params;
}

static quill_status validate_params(const quill_engine_params *params) {
    if (params->n_threads < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: n_threads is %d; it must be at least 1", params->n_threads);
    }
    if (params->n_parallel < 1 || params->n_parallel > QUILL_ENGINE_MAX_PARALLEL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: n_parallel is %d; it must be from 1 to %d",
                               params->n_parallel, QUILL_ENGINE_MAX_PARALLEL);
    }
    if (params->n_ctx < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: n_ctx is %lld; use 0 for the model's trained context or "
                               "a positive token count",
                               (long long)params->n_ctx);
    }
    if (params->queue_limit < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: queue_limit is %d; it must be 0 or more",
                               params->queue_limit);
    }
    if (params->step_tokens < params->n_parallel) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: step_tokens is %d but must be at least n_parallel (%d), "
                               "so that every running sequence can decode in one step",
                               params->step_tokens, params->n_parallel);
    }
    return QUILL_OK;
}

/* Creates the KV cache and derives the usable context length from the blocks it got. */
static quill_status create_cache(quill_engine *engine) {
    const quill_model_info *info = quill_model_get_info(engine->model);
    int64_t n_ctx = engine->params.n_ctx > 0 ? engine->params.n_ctx : info->n_ctx_train;
    if (n_ctx <= 0) {
        n_ctx = FALLBACK_CTX_TOKENS;
    }
    if (info->n_ctx_train > 0 && engine->params.n_ctx > info->n_ctx_train) {
        QUILL_LOG_WARN("engine", "context longer than the model was trained on",
                       "n_ctx=%lld n_ctx_train=%lld hint=\"output past the trained context "
                       "usually degrades; lower --ctx\"",
                       (long long)engine->params.n_ctx, (long long)info->n_ctx_train);
    }

    quill_kv_cache_params cache_params = quill_kv_cache_params_default();
    cache_params.n_seq_max = engine->params.n_parallel;
    cache_params.memory_bytes = engine->params.cache_bytes;
    if (cache_params.memory_bytes == 0) {
        /* One extra block per sequence covers a copy-on-write of a shared last block. */
        size_t per_token = quill_kv_cache_bytes_per_token(engine->model, cache_params.type);
        size_t n_tokens = (size_t)engine->params.n_parallel *
                          (size_t)(n_ctx + 2 * (int64_t)cache_params.block_tokens);
        size_t bytes = 0;
        if (!quill__size_mul(per_token, n_tokens, &bytes) || bytes > DEFAULT_CACHE_BYTES_MAX) {
            bytes = DEFAULT_CACHE_BYTES_MAX;
        }
        cache_params.memory_bytes = bytes;
    }
    quill_status status = quill_kv_cache_create(engine->model, &cache_params, &engine->cache);
    if (status != QUILL_OK) {
        return status;
    }
    engine->block_tokens = quill_kv_cache_block_tokens(engine->cache);
    engine->n_blocks_total = quill_kv_cache_n_blocks(engine->cache);

    /* One sequence of n_ctx tokens takes at most n_blocks - 1 blocks, and a copy-on-write of
     * its shared last block takes one more. So a request running alone always finds its
     * blocks once the prefix index is evicted, and the scheduler can preempt younger requests
     * until the oldest one fits. The context is not split among the n_parallel sequences: the
     * default cache fits n_parallel full-length ones, and a smaller cache_bytes makes long
     * requests share it through preemption rather than shortening every request. */
    int64_t n_ctx_cache = (int64_t)(engine->n_blocks_total - 1) * engine->block_tokens;
    if (n_ctx_cache < 2) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: the KV cache of %zu bytes holds %d blocks of %d tokens, "
                               "too few for any request; raise cache_bytes",
                               cache_params.memory_bytes, engine->n_blocks_total,
                               engine->block_tokens);
    }
    if (n_ctx > n_ctx_cache) {
        QUILL_LOG_WARN("engine", "context limited by the KV cache", "n_ctx=%lld n_ctx_cache=%lld",
                       (long long)n_ctx, (long long)n_ctx_cache);
        n_ctx = n_ctx_cache;
    }
    engine->n_ctx = n_ctx;
    return QUILL_OK;
}

static quill_status create_state(quill_engine *engine) {
    quill_status status = create_cache(engine);
    if (status != QUILL_OK) {
        return status;
    }
    quill_context_params context_params = quill_context_params_default();
    context_params.n_threads = engine->params.n_threads;
    context_params.n_batch_max = engine->params.step_tokens;
    context_params.use_pinning = engine->params.use_pinning;
    status = quill_context_create(engine->model, &context_params, &engine->context);
    if (status != QUILL_OK) {
        return status;
    }
    if (engine->params.use_prefix_cache) {
        status = quill__prefix_cache_create(engine->cache, &engine->prefix);
        if (status != QUILL_OK) {
            return status;
        }
    }
    status = quill_batch_init(&engine->batch, engine->params.step_tokens);
    if (status != QUILL_OK) {
        return status;
    }

    int32_t n_parallel = engine->params.n_parallel;
    engine->detokenizer_bytes = quill_detokenizer_max_bytes(engine->tokenizer);
    engine->running = quill__calloc((size_t)n_parallel, sizeof(quill_request *));
    engine->sample_jobs = quill__calloc((size_t)n_parallel, sizeof(quill_sample_job));
    engine->is_seq_used = quill__calloc((size_t)n_parallel, sizeof(bool));
    engine->text_scratch = quill__malloc(engine->detokenizer_bytes);
    engine->lookup_blocks = quill__malloc_array((size_t)engine->n_blocks_total, sizeof(int32_t));
    if (engine->running == NULL || engine->sample_jobs == NULL || engine->is_seq_used == NULL ||
        engine->text_scratch == NULL || engine->lookup_blocks == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for the running set");
    }
    engine->stats.n_blocks_total = engine->n_blocks_total;
    return QUILL_OK;
}

/* True when the engine thread should stop waiting. Caller holds engine->mutex. */
static bool is_wake_ready(const quill_engine *engine, bool is_idle) {
    if (engine->is_stopping || engine->queue_head != NULL) {
        return true;
    }
    bool has_work = quill__scheduler_has_work(engine);
    if (!has_work) {
        return engine->is_draining;
    }
    return !is_idle;
}

/* Moves newly submitted requests to the end of the waiting list. Caller holds engine->mutex. */
static void take_queue(quill_engine *engine) {
    if (engine->queue_head == NULL) {
        return;
    }
    if (engine->waiting_tail != NULL) {
        engine->waiting_tail->next = engine->queue_head;
    } else {
        engine->waiting_head = engine->queue_head;
    }
    engine->waiting_tail = engine->queue_tail;
    engine->queue_head = NULL;
    engine->queue_tail = NULL;
}

static void *engine_main(void *argument) {
    quill_engine *engine = argument;
    bool is_idle = false;
    for (;;) {
        pthread_mutex_lock(&engine->mutex);
        while (!is_wake_ready(engine, is_idle)) {
            pthread_cond_wait(&engine->wake, &engine->mutex);
            is_idle = false;
        }
        take_queue(engine);
        bool is_stopping = engine->is_stopping;
        bool is_done = engine->is_draining && !quill__scheduler_has_work(engine);
        pthread_mutex_unlock(&engine->mutex);

        if (is_stopping) {
            quill__scheduler_cancel_all(engine);
            break;
        }
        if (is_done) {
            break;
        }
        /* A step should make progress while work is admissible. If one does not, the thread
         * waits for the next submit instead of spinning. */
        is_idle = !quill__scheduler_step(engine);
    }
    return NULL;
}

quill_status quill_engine_create(const quill_model *model, const quill_engine_params *params,
                                 quill_engine **out) {
    quill_status status = QUILL_OK;
    quill_engine *engine = NULL;
    if (out != NULL) {
        *out = NULL;
    }
    if (model == NULL || out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "engine: model or out is NULL");
    }
    quill_engine_params defaults = quill_engine_params_default();
    if (params == NULL) {
        params = &defaults;
    }
    status = validate_params(params);
    if (status != QUILL_OK) {
        return status;
    }

    engine = quill__calloc(1, sizeof(*engine));
    if (engine == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for the engine");
    }
    engine->model = model;
    engine->tokenizer = quill_model_tokenizer(model);
    engine->params = *params;
    engine->n_vocab = quill_model_get_info(model)->n_vocab;
    pthread_mutex_init(&engine->mutex, NULL);
    pthread_cond_init(&engine->wake, NULL);
    status = create_state(engine);
    if (status != QUILL_OK) {
        goto cleanup;
    }

    int error = pthread_create(&engine->thread, NULL, engine_main, engine);
    if (error != 0) {
        status =
            quill_error_set(QUILL_ERR_IO, "engine: pthread_create failed: %s", strerror(error));
        goto cleanup;
    }
    engine->has_thread = true;
    engine->is_started = true;
    QUILL_LOG_INFO("engine", "engine started",
                   "n_ctx=%lld n_parallel=%d n_blocks=%d block_tokens=%d step_tokens=%d "
                   "prefix_cache=%d",
                   (long long)engine->n_ctx, params->n_parallel, engine->n_blocks_total,
                   engine->block_tokens, params->step_tokens, params->use_prefix_cache ? 1 : 0);
    *out = engine;
    engine = NULL;

cleanup:
    quill_engine_destroy(engine);
    return status;
}

/* Tells the scheduler thread to end and joins it. Without is_stopping it finishes the admitted
 * requests first (drain), and with it cancels them. Safe to call again after the thread ended. */
static void end_scheduler(quill_engine *engine, bool is_stopping) {
    pthread_mutex_lock(&engine->mutex);
    if (is_stopping) {
        engine->is_stopping = true;
    }
    engine->is_draining = true;
    pthread_cond_broadcast(&engine->wake);
    pthread_mutex_unlock(&engine->mutex);
    if (engine->has_thread) {
        pthread_join(engine->thread, NULL);
        engine->has_thread = false;
    }
}

void quill_engine_drain(quill_engine *engine) {
    if (engine == NULL) {
        return;
    }
    end_scheduler(engine, false);
}

void quill_engine_stop(quill_engine *engine) {
    if (engine == NULL) {
        return;
    }
    end_scheduler(engine, true);
}

void quill_engine_destroy(quill_engine *engine) {
    if (engine == NULL) {
        return;
    }
    end_scheduler(engine, true);
    if (engine->is_started) {
        QUILL_LOG_INFO("engine", "engine stopped",
                       "n_steps=%lld n_prefix_hits=%lld n_preemptions=%lld",
                       (long long)engine->stats.n_steps, (long long)engine->stats.n_prefix_hits,
                       (long long)engine->stats.n_preemptions);
    }

    quill_batch_release(&engine->batch);
    quill__prefix_cache_destroy(engine->prefix);
    quill_kv_cache_destroy(engine->cache);
    quill_context_destroy(engine->context);
    quill__free(engine->running);
    quill__free(engine->sample_jobs);
    quill__free(engine->is_seq_used);
    quill__free(engine->text_scratch);
    quill__free(engine->lookup_blocks);
    pthread_cond_destroy(&engine->wake);
    pthread_mutex_destroy(&engine->mutex);
    quill__free(engine);
}

int64_t quill_engine_n_ctx(const quill_engine *engine) {
    return engine == NULL ? 0 : engine->n_ctx;
}

const quill_model *quill_engine_model(const quill_engine *engine) {
    return engine == NULL ? NULL : engine->model;
}

/* Checks the prompt, limits and options of a request. Returns the resolved max_tokens. */
static quill_status validate_request(const quill_engine *engine, const quill_request_params *params,
                                     int64_t *max_tokens) {
    *max_tokens = 0;
    if (params->n_prompt_tokens < 1 || params->prompt_tokens == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: the prompt has %lld tokens; it needs at least 1 (start "
                               "with BOS for an empty text)",
                               (long long)params->n_prompt_tokens);
    }
    if (params->n_prompt_tokens >= engine->n_ctx) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: the prompt has %lld tokens but the context holds %lld, "
                               "leaving no room to generate; shorten the prompt",
                               (long long)params->n_prompt_tokens, (long long)engine->n_ctx);
    }
    for (int64_t i = 0; i < params->n_prompt_tokens; i++) {
        int32_t token = params->prompt_tokens[i];
        if (token < 0 || token >= engine->n_vocab) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "engine: prompt token %lld is %d, outside the vocabulary of "
                                   "%d tokens",
                                   (long long)i, token, engine->n_vocab);
        }
    }
    int64_t room = engine->n_ctx - params->n_prompt_tokens;
    if (params->max_tokens > room) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: max_tokens %lld with a prompt of %lld tokens exceeds the "
                               "context of %lld tokens; use max_tokens <= %lld",
                               (long long)params->max_tokens, (long long)params->n_prompt_tokens,
                               (long long)engine->n_ctx, (long long)room);
    }
    if (params->n_stop_strings < 0 || params->n_stop_strings > QUILL_MAX_STOP_STRINGS) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: n_stop_strings is %d; it must be from 0 to %d",
                               params->n_stop_strings, QUILL_MAX_STOP_STRINGS);
    }
    for (int32_t i = 0; i < params->n_stop_strings; i++) {
        if (params->stop_strings[i] == NULL || params->stop_strings[i][0] == '\0') {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "engine: stop string %d is empty; remove it", i);
        }
    }
    if (params->n_top_logprobs < 0 || params->n_top_logprobs > QUILL_MAX_TOP_LOGPROBS) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "engine: n_top_logprobs is %d; it must be from 0 to %d",
                               params->n_top_logprobs, QUILL_MAX_TOP_LOGPROBS);
    }
    quill_status status = quill_sampling_params_validate(&params->sampling, engine->n_vocab);
    if (status != QUILL_OK) {
        return status;
    }
    *max_tokens = params->max_tokens > 0 ? params->max_tokens : room;
    return QUILL_OK;
}

quill_status quill_engine_submit(quill_engine *engine, const quill_request_params *params,
                                 quill_request **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (engine == NULL || params == NULL || out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "engine: engine, params or out is NULL");
    }
    int64_t max_tokens = 0;
    quill_status status = validate_request(engine, params, &max_tokens);
    if (status != QUILL_OK) {
        return status;
    }
    quill_request *request = NULL;
    status = quill__request_create(params, max_tokens, &request);
    if (status != QUILL_OK) {
        return status;
    }
    /* Queue it unless the engine is shutting down or the queue is full. */
    pthread_mutex_lock(&engine->mutex);
    if (engine->is_draining || engine->is_stopping) {
        status = quill_error_set(QUILL_ERR_CANCELLED,
                                 "engine: the engine is shutting down and takes no new requests");
    } else if (engine->n_open >= engine->params.n_parallel + engine->params.queue_limit) {
        /* Requests the engine thread has not admitted yet count as running while sequences
         * are free, so that a burst into an idle engine is not taken for a queue. */
        status = quill_error_set(QUILL_ERR_BUSY,
                                 "engine: %d requests are open, the limit of %d sequences plus "
                                 "%d queue places; retry later",
                                 engine->n_open, engine->params.n_parallel,
                                 engine->params.queue_limit);
    } else {
        engine->n_open++;
        if (engine->queue_tail != NULL) {
            engine->queue_tail->next = request;
        } else {
            engine->queue_head = request;
        }
        engine->queue_tail = request;
        engine->n_waiting++;
        pthread_cond_signal(&engine->wake);
    }
    pthread_mutex_unlock(&engine->mutex);

    if (status != QUILL_OK) {
        quill__request_unref(request);
        quill__request_unref(request);
        return status;
    }
    *out = request;
    return QUILL_OK;
}

void quill_engine_get_stats(quill_engine *engine, quill_engine_stats *stats) {
    memset(stats, 0, sizeof(*stats));
    if (engine == NULL) {
        return;
    }
    pthread_mutex_lock(&engine->mutex);
    *stats = engine->stats;
    stats->n_waiting = engine->n_waiting;
    pthread_mutex_unlock(&engine->mutex);
}
