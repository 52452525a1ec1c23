/*
 * Token sampling: logit bias, repetition/presence/frequency penalties, then greedy (temperature
 * 0) or temperature with top-k, top-p and min-p filtering, drawn from a per-sequence RNG seeded
 * by the request, so the same seed and input give the same tokens whatever else is running.
 * A quill_sampler is one sequence's state: one thread at a time.
 */
#ifndef QUILL_SAMPLER_H
#define QUILL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_logit_bias {
    int32_t token; /* vocabulary id */
    float bias;    /* added to the logit; -INFINITY bans the token */
} quill_logit_bias;

typedef struct quill_sampling_params {
    float temperature;          /* 0 means greedy */
    int32_t top_k;              /* 0 disables */
    float top_p;                /* 1 disables */
    float min_p;                /* 0 disables */
    float repetition_penalty;   /* 1 disables; divides positive logits, multiplies negative */
    float presence_penalty;     /* 0 disables; subtracted once per seen token */
    float frequency_penalty;    /* 0 disables; subtracted per occurrence */
    int32_t penalty_last_n;     /* tokens of history the penalties look at; -1 means all */
    uint64_t seed;              /* RNG seed */
    bool has_seed;              /* false: seed from the clock */
    const quill_logit_bias *logit_biases; /* borrowed for the sampler's lifetime */
    int32_t n_logit_biases;
} quill_sampling_params;

QUILL_API quill_sampling_params quill_sampling_params_default(void);

/* Checks ranges (temperature >= 0, top_p in (0, 1], min_p in [0, 1], penalties finite, ...).
 * Returns QUILL_ERR_INVALID_ARG with a message naming the field. */
QUILL_API quill_status quill_sampling_params_validate(const quill_sampling_params *params,
                                                      int32_t n_vocab);

typedef struct quill_sampler quill_sampler;

/* Returns a new sampler in *out; the caller destroys it. Copies params and the biases. */
QUILL_API quill_status quill_sampler_create(const quill_sampling_params *params, int32_t n_vocab,
                                            quill_sampler **out);
QUILL_API void quill_sampler_destroy(quill_sampler *sampler);

/* Records a token in the penalty history (prompt tokens too, when penalties should see them). */
QUILL_API void quill_sampler_accept(quill_sampler *sampler, int32_t token);

/* Returned by quill_sampler_sample when no token can be drawn: every logit is NaN or minus
 * infinity after the logit biases (a bias of minus infinity bans a token). */
enum { QUILL_SAMPLER_NO_TOKEN = -1 };

/* Picks the next token from logits f32 [n_vocab] (not modified), or returns
 * QUILL_SAMPLER_NO_TOKEN. */
QUILL_API int32_t quill_sampler_sample(quill_sampler *sampler, const float *logits);

typedef struct quill_token_logprob {
    int32_t token;   /* vocabulary id */
    float logprob;   /* natural log of the probability */
} quill_token_logprob;

/* Log-probabilities of the model's raw distribution, log_softmax(logits): the chosen token's in
 * *chosen_logprob and the n_top most likely tokens, best first, in top[0..n_top). */
QUILL_API void quill_logprobs_compute(const float *logits, int32_t n_vocab, int32_t chosen,
                                      int32_t n_top, float *chosen_logprob,
                                      quill_token_logprob *top);

QUILL_EXTERN_C_END

#endif
