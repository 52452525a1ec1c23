/*
 * Requests: the handle a submitter holds and the event channel the engine thread writes. The
 * engine appends released text and generated tokens under the request's mutex; the submitter
 * takes them, merged, with quill_request_next_event. Two references keep a request alive: the
 * caller's handle and the engine's, dropped when the final event is queued.
 */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "engine/engine_internal.h"

quill_request_params quill_request_params_default(void) {
    quill_request_params params;
    memset(&params, 0, sizeof(params));
    params.max_tokens = 0;
    params.sampling = quill_sampling_params_default();
    params.n_top_logprobs = 0;
    return params;
}

const char *quill_finish_reason_name(quill_finish_reason reason) {
    switch (reason) {
    case QUILL_FINISH_STOP:
        return "stop";
    case QUILL_FINISH_LENGTH:
        return "length";
    case QUILL_FINISH_CANCELLED:
        return "cancelled";
    case QUILL_FINISH_ERROR:
        return "error";
    case QUILL_FINISH_NONE:
    default:
        return "none";
    }
}

static void request_free(quill_request *request) {
    if (request == NULL) {
        return;
    }
    quill__free(request->biases);
    for (int32_t i = 0; i < request->n_stop_strings; i++) {
        quill__free(request->stop_strings[i]);
    }
    quill__strbuf_release(&request->pending_text);
    quill__free(request->pending_tokens);
    quill__free(request->tokens);
    quill_sampler_destroy(request->sampler);
    if (request->has_stop_matcher) {
        quill__stop_matcher_release(&request->stop_matcher);
    }
    quill__strbuf_release(&request->step_text);
    quill__free(request->step_tokens);
    pthread_cond_destroy(&request->cond);
    pthread_mutex_destroy(&request->mutex);
    quill__free(request);
}

/* Copies the parts of params that the request keeps. */
static quill_status copy_params(quill_request *request, const quill_request_params *params) {
    size_t n_tokens = (size_t)(params->n_prompt_tokens + request->max_tokens);
    request->tokens = quill__malloc_array(n_tokens, sizeof(int32_t));
    if (request->tokens == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for a request of %zu tokens",
                               n_tokens);
    }
    memcpy(request->tokens, params->prompt_tokens,
           (size_t)params->n_prompt_tokens * sizeof(int32_t));

    int32_t n_biases = params->sampling.n_logit_biases;
    if (n_biases > 0) {
        request->biases = quill__malloc_array((size_t)n_biases, sizeof(quill_logit_bias));
        if (request->biases == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for %d logit biases",
                                   n_biases);
        }
        memcpy(request->biases, params->sampling.logit_biases,
               (size_t)n_biases * sizeof(quill_logit_bias));
    }
    request->sampling.logit_biases = request->biases;

    for (int32_t i = 0; i < params->n_stop_strings; i++) {
        request->stop_strings[i] = quill__strdup(params->stop_strings[i]);
        if (request->stop_strings[i] == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for stop string %d", i);
        }
        request->n_stop_strings = i + 1;
    }
    return QUILL_OK;
}

quill_status quill__request_create(const quill_request_params *params, int64_t max_tokens,
                                   quill_request **out) {
    *out = NULL;
    quill_request *request = quill__calloc(1, sizeof(*request));
    if (request == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory for a request");
    }
    pthread_mutex_init(&request->mutex, NULL);
    pthread_cond_init(&request->cond, NULL);
    quill__strbuf_init(&request->pending_text);
    quill__strbuf_init(&request->step_text);
    request->n_prompt_tokens = params->n_prompt_tokens;
    request->max_tokens = max_tokens;
    request->sampling = params->sampling;
    request->ignore_eos = params->ignore_eos;
    request->wants_logprobs = params->wants_logprobs;
    request->n_top_logprobs = params->n_top_logprobs;
    request->render_special = params->render_special;
    request->arrival_us = params->arrival_us > 0 ? params->arrival_us : quill__clock_monotonic_us();
    request->on_event = params->on_event;
    request->user_data = params->user_data;
    atomic_init(&request->is_cancel_requested, false);
    atomic_init(&request->n_references, 2);
    request->phase = QUILL_REQUEST_WAITING;
    request->seq_id = -1;
    request->logits_index = -1;
    request->n_tokens = params->n_prompt_tokens;

    quill_status status = copy_params(request, params);
    if (status != QUILL_OK) {
        request_free(request);
        return status;
    }
    *out = request;
    return QUILL_OK;
}

void quill__request_unref(quill_request *request) {
    if (request != NULL && atomic_fetch_sub(&request->n_references, 1) == 1) {
        request_free(request);
    }
}

/* Appends the step's tokens to the pending ones. Caller holds request->mutex. */
static quill_status append_pending_tokens(quill_request *request) {
    int32_t n_needed = request->n_pending_tokens + request->n_step_tokens;
    if (n_needed > request->pending_capacity) {
        int32_t capacity = request->pending_capacity > 0 ? request->pending_capacity : 8;
        while (capacity < n_needed) {
            capacity *= 2;
        }
        quill_generated_token *grown = quill__realloc_array(
            request->pending_tokens, (size_t)capacity, sizeof(quill_generated_token));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM,
                                   "engine: out of memory queueing %d generated tokens", n_needed);
        }
        request->pending_tokens = grown;
        request->pending_capacity = capacity;
    }
    memcpy(request->pending_tokens + request->n_pending_tokens, request->step_tokens,
           (size_t)request->n_step_tokens * sizeof(quill_generated_token));
    request->n_pending_tokens = n_needed;
    return QUILL_OK;
}

void quill__request_publish(quill_request *request, quill_finish_reason reason, quill_status status,
                            const char *error_message, const quill_usage *usage) {
    bool has_news =
        request->step_text.length > 0 || request->n_step_tokens > 0 || reason != QUILL_FINISH_NONE;
    if (!has_news) {
        return;
    }

    /* Queue the step's output, and the final event when the request is done. */
    pthread_mutex_lock(&request->mutex);
    quill_status queued = QUILL_OK;
    if (request->step_text.length > 0) {
        queued = quill__strbuf_append(&request->pending_text, request->step_text.data,
                                      request->step_text.length);
    }
    if (queued == QUILL_OK && request->n_step_tokens > 0) {
        queued = append_pending_tokens(request);
    }
    if (queued != QUILL_OK && reason == QUILL_FINISH_NONE) {
        /* NOTE: output that cannot be queued for lack of memory is dropped; the caller sees
         * a gap in the text. The engine fails the request at the next step. */
        atomic_store(&request->is_cancel_requested, true);
    }
    if (reason != QUILL_FINISH_NONE) {
        request->is_finished = true;
        request->finish_reason = reason;
        request->status = status;
        if (error_message != NULL) {
            snprintf(request->error_message, sizeof(request->error_message), "%s", error_message);
        }
        if (usage != NULL) {
            request->usage = *usage;
        }
    }
    bool has_callback = request->on_event != NULL && !request->is_detached;
    if (has_callback) {
        request->n_callbacks_running++;
    }
    pthread_cond_broadcast(&request->cond);
    pthread_mutex_unlock(&request->mutex);
    quill__strbuf_clear(&request->step_text);
    request->n_step_tokens = 0;

    /* Notify outside the lock; destroy waits for the call to return before the caller's
     * user_data may go away. */
    if (has_callback) {
        request->on_event(request->user_data);
        pthread_mutex_lock(&request->mutex);
        request->n_callbacks_running--;
        pthread_cond_broadcast(&request->cond);
        pthread_mutex_unlock(&request->mutex);
    }
}

static bool has_pending(const quill_request *request) {
    return request->pending_text.length > 0 || request->n_pending_tokens > 0 ||
           (request->is_finished && !request->is_final_taken);
}

quill_status quill_request_next_event(quill_request *request, bool is_blocking,
                                      quill_request_event *event) {
    if (event != NULL) {
        memset(event, 0, sizeof(*event));
    }
    if (request == NULL || event == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "engine: request or event is NULL");
    }
    quill_status status = QUILL_OK;
    pthread_mutex_lock(&request->mutex);
    if (request->is_final_taken) {
        status = quill_error_set(QUILL_ERR_NOT_FOUND,
                                 "engine: the request has finished and its final event was "
                                 "already taken");
        goto unlock;
    }
    while (is_blocking && !has_pending(request)) {
        pthread_cond_wait(&request->cond, &request->mutex);
    }
    if (!has_pending(request)) {
        status = quill_error_set(QUILL_ERR_BUSY, "engine: no event is pending yet");
        goto unlock;
    }

    /* Take the merged text and tokens. */
    size_t n_text_bytes = request->pending_text.length;
    char *text = n_text_bytes > 0 ? quill__strbuf_take(&request->pending_text) : quill__strdup("");
    if (text == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "engine: out of memory taking an event");
        goto unlock;
    }
    event->text = text;
    event->n_text_bytes = n_text_bytes;
    event->tokens = request->pending_tokens;
    event->n_tokens = request->n_pending_tokens;
    request->pending_tokens = NULL;
    request->n_pending_tokens = 0;
    request->pending_capacity = 0;

    if (request->is_finished) {
        event->is_final = true;
        event->finish_reason = request->finish_reason;
        event->status = request->status;
        memcpy(event->error_message, request->error_message, sizeof(event->error_message));
        event->usage = request->usage;
        request->is_final_taken = true;
    }

unlock:
    pthread_mutex_unlock(&request->mutex);
    return status;
}

void quill_request_event_release(quill_request_event *event) {
    if (event == NULL) {
        return;
    }
    quill__free(event->text);
    quill__free(event->tokens);
    event->text = NULL;
    event->tokens = NULL;
    event->n_text_bytes = 0;
    event->n_tokens = 0;
}

void quill_request_cancel(quill_request *request) {
    if (request != NULL) {
        atomic_store(&request->is_cancel_requested, true);
    }
}

void quill_request_destroy(quill_request *request) {
    if (request == NULL) {
        return;
    }
    atomic_store(&request->is_cancel_requested, true);

    /* No on_event call may start or still run once this returns. */
    pthread_mutex_lock(&request->mutex);
    request->is_detached = true;
    while (request->n_callbacks_running > 0) {
        pthread_cond_wait(&request->cond, &request->mutex);
    }
    pthread_mutex_unlock(&request->mutex);
    quill__request_unref(request);
}
