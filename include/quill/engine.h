/*
 * The inference engine: one engine thread owns the model context, the KV cache, the prefix
 * index and the running set. Callers on any thread submit requests (prompt tokens, sampling,
 * limits) and read back events: released text, generated tokens with log-probabilities, and a
 * final event with the finish reason and the usage record. Each step the engine admits queued
 * requests, reuses the longest cached prefix of each new prompt, and runs one batch that mixes a
 * decode token for every running sequence with prefill chunks of new prompts up to a token
 * budget.
 *
 * quill_engine functions are safe from any thread. A quill_request handle is used by one thread
 * at a time (its submitter), while the engine thread writes its events under the request's lock.
 */
#ifndef QUILL_ENGINE_H
#define QUILL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/model.h"
#include "quill/sampler.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

enum { QUILL_MAX_TOP_LOGPROBS = 20, QUILL_MAX_STOP_STRINGS = 16 };

typedef struct quill_engine quill_engine;
typedef struct quill_request quill_request;

/* Most sequences an engine decodes at once (quill_engine_params.n_parallel). */
enum { QUILL_ENGINE_MAX_PARALLEL = 256 };

typedef struct quill_engine_params {
    int n_threads;         /* compute threads */
    bool use_pinning;      /* pin compute threads */
    int32_t n_parallel;    /* most sequences decoding at once, 1 to QUILL_ENGINE_MAX_PARALLEL */
    int64_t n_ctx;         /* most tokens one sequence may hold; 0 = the model's trained ctx,
                              shortened so that n_parallel such sequences fit in the cache;
                              quill_engine_n_ctx returns the value in effect */
    size_t cache_bytes;    /* all KV memory, running and cached; 0 = enough for n_parallel
                              sequences of n_ctx tokens, at most 2 GiB */
    int32_t queue_limit;   /* requests that may wait beyond the n_parallel running ones: a
                              submit finding n_parallel + queue_limit open gets QUILL_ERR_BUSY */
    int32_t step_tokens;   /* token budget of one forward pass (decode + prefill chunks) */
    bool use_prefix_cache; /* reuse cached prompt prefixes across requests */
} quill_engine_params;

QUILL_API quill_engine_params quill_engine_params_default(void);

/* Starts the engine thread. Borrows model, which must outlive the engine. Returns a new engine
 * in *out; the caller destroys it. */
QUILL_API quill_status quill_engine_create(const quill_model *model,
                                           const quill_engine_params *params, quill_engine **out);

/* Stops accepting requests, lets running and queued ones finish, then joins the thread. */
QUILL_API void quill_engine_drain(quill_engine *engine);

/* Cancels everything still queued or running and joins the thread; later submits fail with
 * QUILL_ERR_CANCELLED. Each cancelled request still gets its final event (finish reason
 * cancelled), so the caller can end its responses cleanly before destroying the engine. */
QUILL_API void quill_engine_stop(quill_engine *engine);

/* Cancels everything still queued or running, joins the thread and frees. Accepts NULL. */
QUILL_API void quill_engine_destroy(quill_engine *engine);

QUILL_API int64_t quill_engine_n_ctx(const quill_engine *engine);
QUILL_API const quill_model *quill_engine_model(const quill_engine *engine);

typedef enum quill_finish_reason {
    QUILL_FINISH_NONE = 0,      /* still running */
    QUILL_FINISH_STOP = 1,      /* end-of-generation token or a stop string */
    QUILL_FINISH_LENGTH = 2,    /* max_tokens or the context limit */
    QUILL_FINISH_CANCELLED = 3, /* quill_request_cancel or destroy */
    QUILL_FINISH_ERROR = 4,     /* the engine failed the request; see the event's status */
} quill_finish_reason;

/* Returns "stop", "length", "cancelled", "error" or "none". */
QUILL_API const char *quill_finish_reason_name(quill_finish_reason reason);

typedef struct quill_request_params {
    const int32_t *prompt_tokens;   /* borrowed during submit; copied */
    int64_t n_prompt_tokens;        /* at least 1 */
    int64_t max_tokens;             /* most tokens to generate; <= 0 means up to the context */
    quill_sampling_params sampling; /* biases are copied during submit */
    const char *stop_strings[QUILL_MAX_STOP_STRINGS]; /* borrowed during submit; copied */
    int32_t n_stop_strings;
    bool ignore_eos;                   /* keep generating past end-of-generation tokens */
    bool wants_logprobs;               /* report each generated token's log-probability */
    int32_t n_top_logprobs;            /* 0..QUILL_MAX_TOP_LOGPROBS alternatives per token */
    bool render_special;               /* put control-token text into the output text */
    int64_t arrival_us;                /* monotonic stamp of the request's arrival; 0 = now */
    void (*on_event)(void *user_data); /* called on the engine thread after events are queued;
                                          must not block or call back into the engine */
    void *user_data;                   /* passed to on_event */
} quill_request_params;

QUILL_API quill_request_params quill_request_params_default(void);

typedef struct quill_generated_token {
    int32_t token;                                   /* vocabulary id */
    float logprob;                                   /* when wants_logprobs */
    int32_t n_top;                                   /* entries in top */
    quill_token_logprob top[QUILL_MAX_TOP_LOGPROBS]; /* best first */
} quill_generated_token;

/* Usage of a finished request. Times in microseconds on the monotonic clock. */
typedef struct quill_usage {
    int64_t n_prompt_tokens;     /* includes the cached ones; 0 when the request ended while
                                    waiting, before any of its prompt was scheduled */
    int64_t n_cached_tokens;     /* prompt tokens whose K/V came from the prefix cache at
                                    admission; a preempted request's recomputation adds none */
    int64_t n_completion_tokens; /* generated tokens, including a final end-of-generation one */
    int64_t arrival_us;          /* as submitted */
    int64_t scheduled_us;        /* first prefill chunk scheduled; kept across preemptions */
    int64_t first_token_us;      /* first generated token sampled */
    int64_t first_text_us;       /* first text byte released to the request */
    int64_t finished_us;         /* final event queued */
    int64_t queue_us;            /* scheduled - arrival */
    int64_t prefill_us;          /* first_token - scheduled */
    int64_t generation_us;       /* finished - first_token */
} quill_usage;

/* One or more merged events. Text and tokens are owned by the event until
 * quill_request_event_release. */
typedef struct quill_request_event {
    char *text; /* released bytes (whole UTF-8 characters), NUL-terminated */
    size_t n_text_bytes;
    quill_generated_token *tokens; /* tokens generated since the last event */
    int32_t n_tokens;
    bool is_final;                     /* the request has finished; nothing follows */
    quill_finish_reason finish_reason; /* when is_final */
    quill_status status;               /* QUILL_OK unless finish_reason is ERROR */
    char error_message[256];           /* when status != QUILL_OK */
    quill_usage usage;                 /* when is_final */
} quill_request_event;

/* Validates params against the engine (prompt + max_tokens within n_ctx, sampling ranges, token
 * ids within the vocabulary) and queues the request. Returns a new handle in *out; the caller
 * destroys it. QUILL_ERR_INVALID_ARG names the bad field; QUILL_ERR_BUSY when the queue is
 * full; QUILL_ERR_CANCELLED when the engine is draining. */
QUILL_API quill_status quill_engine_submit(quill_engine *engine, const quill_request_params *params,
                                           quill_request **out);

/* Takes all pending events, merged into *event. With is_blocking, waits until one is pending;
 * without, returns QUILL_ERR_BUSY when none is. After the final event, further calls return
 * QUILL_ERR_NOT_FOUND. */
QUILL_API quill_status quill_request_next_event(quill_request *request, bool is_blocking,
                                                quill_request_event *event);
QUILL_API void quill_request_event_release(quill_request_event *event);

/* Asks the engine to stop the request at the next step; its blocks are released and a final
 * event with QUILL_FINISH_CANCELLED follows. Safe to call more than once. */
QUILL_API void quill_request_cancel(quill_request *request);

/* Cancels the request if it is unfinished and drops the caller's handle. Accepts NULL. */
QUILL_API void quill_request_destroy(quill_request *request);

/* Counters and gauges for metrics. */
typedef struct quill_engine_stats {
    int32_t n_running;              /* sequences in the running set */
    int32_t n_waiting;              /* requests queued for admission, preempted ones included */
    int32_t n_blocks_total;         /* KV blocks in the pool */
    int32_t n_blocks_used;          /* blocks referenced by running sequences */
    int32_t n_blocks_cached;        /* blocks held only by the prefix index */
    int64_t n_prefix_queries;       /* prompts looked up in the prefix index */
    int64_t n_prefix_hits;          /* lookups that reused at least one block */
    int64_t n_prefix_tokens_reused; /* prompt tokens served from the cache */
    int64_t n_steps;                /* forward passes run */
    int64_t n_preemptions;          /* running requests sent back to wait for KV blocks */
    int32_t n_running_max;          /* max sequences running at once since the start */
} quill_engine_stats;

QUILL_API void quill_engine_get_stats(quill_engine *engine, quill_engine_stats *stats);

QUILL_EXTERN_C_END

#endif
