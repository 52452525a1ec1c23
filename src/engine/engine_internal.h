/*
 * The engine's private structures, shared by engine.c (thread, queue, lifecycle), scheduler.c
 * (one step: admission, batch, sampling, finishing) and request.c (events and handles).
 *
 * Lock order: request->mutex before engine->mutex. The engine thread never holds
 * engine->mutex while it takes a request's mutex, and no lock is held across the forward pass or
 * an on_event callback.
 */
#ifndef QUILL_ENGINE_INTERNAL_H
#define QUILL_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "engine/prefix_cache.h"
#include "engine/stop_matcher.h"
#include "quill/engine.h"
#include "quill/kv_cache.h"
#include "quill/model.h"
#include "quill/sampler.h"
#include "quill/tokenizer.h"

typedef enum quill_request_phase {
    QUILL_REQUEST_WAITING = 0, /* queued for admission, or preempted and queued again */
    QUILL_REQUEST_PREFILL = 1, /* admitted; K/V of its tokens still being computed */
    QUILL_REQUEST_DECODE = 2,  /* generating one token per step */
    QUILL_REQUEST_DONE = 3,    /* final event queued */
} quill_request_phase;

struct quill_request {
    /* Set during submit, then read-only. */
    int64_t n_prompt_tokens;                    /* prompt length */
    int64_t max_tokens;                         /* generation limit, resolved against n_ctx */
    quill_sampling_params sampling;             /* logit_biases points at biases */
    quill_logit_bias *biases;                   /* owned copy */
    char *stop_strings[QUILL_MAX_STOP_STRINGS]; /* owned copies */
    int32_t n_stop_strings;
    bool ignore_eos;
    bool wants_logprobs;
    int32_t n_top_logprobs;
    bool render_special;
    int64_t arrival_us; /* monotonic */
    void (*on_event)(void *user_data);
    void *user_data;

    atomic_bool is_cancel_requested; /* set by cancel or destroy from any thread */
    atomic_int n_references;         /* the caller's handle and the engine's */

    /* Events for the caller. */
    pthread_mutex_t mutex;
    pthread_cond_t cond;                   /* signalled when events are queued */
    quill_strbuf pending_text;             /* guarded by mutex */
    quill_generated_token *pending_tokens; /* guarded by mutex; [pending_capacity] */
    int32_t n_pending_tokens;              /* guarded by mutex */
    int32_t pending_capacity;              /* guarded by mutex */
    bool is_finished;                      /* guarded by mutex: the final event is queued */
    bool is_final_taken;                   /* guarded by mutex: the caller took it */
    bool is_detached;                      /* guarded by mutex: the caller destroyed its handle */
    int32_t n_callbacks_running;           /* guarded by mutex: on_event calls in progress */
    quill_finish_reason finish_reason;     /* guarded by mutex */
    quill_status status;                   /* guarded by mutex */
    char error_message[256];               /* guarded by mutex */
    quill_usage usage;                     /* guarded by mutex; complete when is_finished */

    /* Engine thread only. */
    struct quill_request *next; /* next in the queue or the engine's waiting list */
    quill_request_phase phase;
    int32_t *tokens;         /* [n_prompt_tokens + max_tokens] prompt, then output */
    int64_t n_tokens;        /* prompt plus generated tokens so far */
    int64_t n_computed;      /* tokens whose K/V are in the cache */
    int64_t n_generated;     /* tokens sampled */
    int64_t n_cached_tokens; /* prompt tokens reused from the prefix index at first admission */
    int32_t n_preemptions;   /* times sent back to the waiting list to free its KV blocks */
    int32_t seq_id;          /* KV sequence; -1 when not admitted */
    int32_t logits_index;    /* batch entry whose logits to sample; -1 for none */
    bool is_in_batch;        /* has entries in the batch being built */
    quill_sampler *sampler;  /* created at first admission, kept across preemptions */
    quill_detokenizer detokenizer;
    quill_stop_matcher stop_matcher;
    bool has_stop_matcher;              /* stop_matcher is initialized */
    quill_strbuf step_text;             /* text released during this step */
    quill_generated_token *step_tokens; /* [step_capacity] tokens sampled during this step */
    int32_t n_step_tokens;
    int32_t step_capacity;
    int64_t scheduled_us;   /* first prefill chunk scheduled; 0 before */
    int64_t first_token_us; /* first token sampled; 0 before */
    int64_t first_text_us;  /* first text released; 0 before */
};

/* A draw of one step: the request, its logits and, after the parallel pass, its token. */
typedef struct quill_sample_job {
    quill_request *request;
    const float *logits; /* [n_vocab], valid until the next forward pass */
    int32_t token;
} quill_sample_job;

struct quill_engine {
    const quill_model *model;         /* borrowed */
    const quill_tokenizer *tokenizer; /* borrowed from the model */
    quill_engine_params params;       /* as given, with defaults resolved */
    int64_t n_ctx;                    /* tokens one sequence may hold */
    int32_t n_vocab;
    int32_t block_tokens;
    int32_t n_blocks_total;
    size_t detokenizer_bytes; /* scratch size for one detokenizer feed */

    /* Engine thread only (after create). */
    quill_context *context;
    quill_kv_cache *cache;
    quill_prefix_cache *prefix; /* NULL when use_prefix_cache is false */
    quill_batch batch;
    quill_request *waiting_head; /* preempted requests first, then the queue's (FIFO) */
    quill_request *waiting_tail;
    quill_request **running; /* [n_parallel] admitted requests in admission order */
    quill_sample_job *sample_jobs; /* [n_parallel] one step's draws, made on the pool */
    int32_t n_running;
    bool *is_seq_used;             /* [n_parallel] */
    char *text_scratch;            /* [detokenizer_bytes] */
    int32_t *lookup_blocks;        /* [n_blocks_total] scratch for prefix lookups */
    quill_engine_stats step_stats; /* counters kept here, copied to stats after each step */
    int64_t n_finished;            /* requests finished so far, for progress checks */
    int64_t n_step_decode;         /* decode entries in the batch being built */
    double decode_step_us;         /* moving average of steps with decode entries only */
    double prefill_token_us;       /* moving average of the extra time per prefill token */

    /* Shared with submitters. */
    pthread_mutex_t mutex;
    pthread_cond_t wake;       /* signalled on submit, drain and destroy */
    quill_request *queue_head; /* guarded by mutex: submitted, not yet taken (FIFO) */
    quill_request *queue_tail; /* guarded by mutex */
    int32_t n_waiting;         /* guarded by mutex: queued plus waiting requests */
    int32_t n_open;            /* guarded by mutex: submitted and not yet finished */
    bool is_draining;          /* guarded by mutex */
    bool is_stopping;          /* guarded by mutex */
    quill_engine_stats stats;  /* guarded by mutex; n_waiting filled on read */

    pthread_t thread;
    bool has_thread; /* thread started and not yet joined */
    bool is_started; /* creation succeeded; destroy logs the shutdown */
};

/* Allocates a request from validated params with two references (caller and engine). */
quill_status quill__request_create(const quill_request_params *params, int64_t max_tokens,
                                   quill_request **out);

/* Drops one reference; the last one frees the request. */
void quill__request_unref(quill_request *request);

/* Moves the step's text and tokens into the caller's pending events and, when reason is not
 * QUILL_FINISH_NONE, queues the final event with usage. Then calls on_event. Engine thread. */
void quill__request_publish(quill_request *request, quill_finish_reason reason, quill_status status,
                            const char *error_message, const quill_usage *usage);

/* Runs one engine step: admission, one forward pass, sampling and finishing. Returns false
 * when there was nothing to do. Engine thread. */
bool quill__scheduler_step(quill_engine *engine);

/* Finishes every waiting and running request with QUILL_FINISH_CANCELLED. Engine thread. */
void quill__scheduler_cancel_all(quill_engine *engine);

/* True while any request is waiting or running on the engine thread. */
bool quill__scheduler_has_work(const quill_engine *engine);

#endif
