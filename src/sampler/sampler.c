/*
 * Token sampling for one sequence. The chain, in order: logit bias, repetition penalty
 * (llama.cpp semantics), presence and frequency penalties (OpenAI semantics), then either greedy
 * argmax (temperature 0) or top-k, top-p and min-p filters on the temperature-1 distribution
 * followed by a temperature softmax and one draw from the sequence's own xoshiro256** generator.
 *
 * Candidates are ordered by a total order (logit descending, then id ascending), so every filter
 * and the draw are deterministic for a given seed and input. A sampler is one sequence's state:
 * one thread at a time.
 */
#include "quill/sampler.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"

enum {
    /* First prefix length tried when top-p needs the best candidates in order; grown 4x. */
    TOP_P_FIRST_PREFIX = 64,
};

typedef struct candidate {
    int32_t token; /* vocabulary id */
    float logit;   /* after bias and penalties */
} candidate;

struct quill_sampler {
    quill_sampling_params params; /* copy; logit_biases points at biases */
    quill_logit_bias *biases;     /* [n_logit_biases] owned copy */
    int32_t n_vocab;              /* logits per token */
    uint64_t rng_state[4];        /* xoshiro256** state */

    int32_t *history;         /* ring of the last history_capacity accepted tokens */
    int64_t history_capacity; /* penalty window; grows when penalty_last_n is -1 */
    int64_t n_history;        /* tokens in the ring, at most history_capacity */
    int64_t history_head;     /* index of the oldest token in the ring */
    int32_t *counts;          /* [n_vocab] occurrences of each token in the ring */

    candidate *candidates; /* [n_vocab] scratch for one sample call */
    double *weights;       /* [n_vocab] the final softmax's exp terms, reused by its draw */
    uint32_t *seen_stamp;  /* [n_vocab] marks tokens already penalized this call */
    uint32_t stamp;        /* current mark value */
};

/* ---- RNG: xoshiro256** (Blackman and Vigna, 2018), seeded through splitmix64. ---- */

static uint64_t splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotate_left(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t state[4]) {
    uint64_t result = rotate_left(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotate_left(state[3], 45);
    return result;
}

/* Returns a double uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t state[4]) {
    return (double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

static void rng_seed(uint64_t state[4], uint64_t seed) {
    uint64_t mix = seed;
    for (int i = 0; i < 4; i++) {
        state[i] = splitmix64_next(&mix);
    }
}

/* ---- Candidate ordering ---- */

/* True when a comes before b: higher logit first, lower id on ties. */
static bool candidate_before(const candidate *a, const candidate *b) {
    if (a->logit != b->logit) {
        return a->logit > b->logit;
    }
    return a->token < b->token;
}

static void candidate_swap(candidate *a, candidate *b) {
    candidate t = *a;
    *a = *b;
    *b = t;
}

/* Reorders items so that the first k are the k best (in any order). Iterative quickselect with
 * a median-of-three pivot; expected O(n). */
static void candidates_select(candidate *items, int64_t n, int64_t k) {
    int64_t low = 0;
    int64_t high = n - 1;
    while (low < high && k > low && k <= high) {
        int64_t middle = low + (high - low) / 2;
        if (candidate_before(&items[middle], &items[low])) {
            candidate_swap(&items[middle], &items[low]);
        }
        if (candidate_before(&items[high], &items[low])) {
            candidate_swap(&items[high], &items[low]);
        }
        if (candidate_before(&items[high], &items[middle])) {
            candidate_swap(&items[high], &items[middle]);
        }
        candidate pivot = items[middle];
        int64_t i = low;
        int64_t j = high;
        while (i <= j) {
            while (candidate_before(&items[i], &pivot)) {
                i++;
            }
            while (candidate_before(&pivot, &items[j])) {
                j--;
            }
            if (i <= j) {
                candidate_swap(&items[i], &items[j]);
                i++;
                j--;
            }
        }
        /* Now items[low..j] come before or equal the pivot and items[i..high] after or equal. */
        if (k <= j) {
            high = j;
        } else if (k >= i) {
            low = i;
        } else {
            break;
        }
    }
}

/* Sorts items best first. Heap sort keeps the worst case at O(n log n) without recursion: the
 * heap keeps the worst item at its root, and each round moves the root to the back. */
static void candidates_sort(candidate *items, int64_t n) {
    /* Build a heap whose root is the worst item, then move roots to the back. */
    for (int64_t start = n / 2 - 1; start >= 0; start--) {
        int64_t root = start;
        while (2 * root + 1 < n) {
            int64_t child = 2 * root + 1;
            if (child + 1 < n && candidate_before(&items[child], &items[child + 1])) {
                child++;
            }
            if (!candidate_before(&items[root], &items[child])) {
                break;
            }
            candidate_swap(&items[root], &items[child]);
            root = child;
        }
    }
    for (int64_t end = n - 1; end > 0; end--) {
        candidate_swap(&items[0], &items[end]);
        int64_t root = 0;
        while (2 * root + 1 < end) {
            int64_t child = 2 * root + 1;
            if (child + 1 < end && candidate_before(&items[child], &items[child + 1])) {
                child++;
            }
            if (!candidate_before(&items[root], &items[child])) {
                break;
            }
            candidate_swap(&items[root], &items[child]);
            root = child;
        }
    }
}

/* Makes items[0..k) the k best, sorted best first. */
static void candidates_sorted_prefix(candidate *items, int64_t n, int64_t k) {
    if (k < n) {
        candidates_select(items, n, k);
    }
    candidates_sort(items, k < n ? k : n);
}

/* ---- Parameters ---- */

quill_sampling_params quill_sampling_params_default(void) {
    quill_sampling_params params;
    memset(&params, 0, sizeof(params));
    params.temperature = 0.8f;
    params.top_k = 40;
    params.top_p = 0.95f;
    params.min_p = 0.05f;
    params.repetition_penalty = 1.0f;
    params.presence_penalty = 0.0f;
    params.frequency_penalty = 0.0f;
    params.penalty_last_n = 64;
    params.seed = 0;
    params.has_seed = false;
    params.logit_biases = NULL;
    params.n_logit_biases = 0;
    return params;
}

static quill_status validate_biases(const quill_sampling_params *params, int32_t n_vocab) {
    if (params->n_logit_biases < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: n_logit_biases is %d; it must be 0 or more",
                               params->n_logit_biases);
    }
    if (params->n_logit_biases > 0 && params->logit_biases == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: logit_biases is NULL but n_logit_biases is %d",
                               params->n_logit_biases);
    }
    for (int32_t i = 0; i < params->n_logit_biases; i++) {
        const quill_logit_bias *entry = &params->logit_biases[i];
        if (entry->token < 0 || entry->token >= n_vocab) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "sampler: logit_bias token %d is outside the vocabulary of %d "
                                   "tokens; use ids from 0 to %d",
                                   entry->token, n_vocab, n_vocab - 1);
        }
        if (isnan(entry->bias) || entry->bias == INFINITY) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "sampler: logit_bias for token %d is %g; use a finite number, "
                                   "or -infinity to ban the token",
                                   entry->token, (double)entry->bias);
        }
    }
    return QUILL_OK;
}

quill_status quill_sampling_params_validate(const quill_sampling_params *params, int32_t n_vocab) {
    if (params == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "sampler: params is NULL");
    }
    if (n_vocab <= 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: n_vocab is %d; it must be at least 1", n_vocab);
    }
    if (!isfinite(params->temperature) || params->temperature < 0.0f) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: temperature is %g; it must be 0 (greedy) or more",
                               (double)params->temperature);
    }
    if (params->top_k < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: top_k is %d; it must be 0 (disabled) or more",
                               params->top_k);
    }
    if (!(params->top_p > 0.0f && params->top_p <= 1.0f)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: top_p is %g; it must be in (0, 1], and 1 disables it",
                               (double)params->top_p);
    }
    if (!(params->min_p >= 0.0f && params->min_p <= 1.0f)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: min_p is %g; it must be in [0, 1], and 0 disables it",
                               (double)params->min_p);
    }
    if (!isfinite(params->repetition_penalty) || params->repetition_penalty <= 0.0f) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: repetition_penalty is %g; it must be a finite number "
                               "above 0, and 1 disables it",
                               (double)params->repetition_penalty);
    }
    if (!isfinite(params->presence_penalty)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: presence_penalty is %g; it must be a finite number",
                               (double)params->presence_penalty);
    }
    if (!isfinite(params->frequency_penalty)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: frequency_penalty is %g; it must be a finite number",
                               (double)params->frequency_penalty);
    }
    if (params->penalty_last_n < -1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "sampler: penalty_last_n is %d; use -1 (all tokens), 0 (no "
                               "penalties) or a positive window",
                               params->penalty_last_n);
    }
    return validate_biases(params, n_vocab);
}

/* ---- Lifecycle ---- */

static bool has_penalties(const quill_sampling_params *params) {
    return params->penalty_last_n != 0 &&
           (params->repetition_penalty != 1.0f || params->presence_penalty != 0.0f ||
            params->frequency_penalty != 0.0f);
}

quill_status quill_sampler_create(const quill_sampling_params *params, int32_t n_vocab,
                                  quill_sampler **out) {
    quill_sampler *sampler = NULL;
    quill_status status = QUILL_OK;
    if (out != NULL) {
        *out = NULL;
    }
    if (out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "sampler: out is NULL");
    }
    status = quill_sampling_params_validate(params, n_vocab);
    if (status != QUILL_OK) {
        goto cleanup;
    }

    sampler = quill__calloc(1, sizeof(*sampler));
    if (sampler == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "sampler: out of memory for the sampler");
        goto cleanup;
    }
    sampler->params = *params;
    sampler->n_vocab = n_vocab;
    sampler->candidates = quill__malloc_array((size_t)n_vocab, sizeof(candidate));
    sampler->weights = quill__malloc_array((size_t)n_vocab, sizeof(double));
    sampler->seen_stamp = quill__calloc((size_t)n_vocab, sizeof(uint32_t));
    sampler->counts = quill__calloc((size_t)n_vocab, sizeof(int32_t));
    if (sampler->candidates == NULL || sampler->weights == NULL || sampler->seen_stamp == NULL ||
        sampler->counts == NULL) {
        status =
            quill_error_set(QUILL_ERR_NOMEM,
                            "sampler: out of memory for scratch of %d vocabulary entries", n_vocab);
        goto cleanup;
    }
    if (params->n_logit_biases > 0) {
        sampler->biases =
            quill__malloc_array((size_t)params->n_logit_biases, sizeof(quill_logit_bias));
        if (sampler->biases == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "sampler: out of memory for %d logit biases",
                                     params->n_logit_biases);
            goto cleanup;
        }
        memcpy(sampler->biases, params->logit_biases,
               (size_t)params->n_logit_biases * sizeof(quill_logit_bias));
    }
    sampler->params.logit_biases = sampler->biases;

    /* The history ring is sized by the window; an unbounded window (-1) grows on demand. */
    sampler->history_capacity = params->penalty_last_n > 0 ? params->penalty_last_n : 0;
    if (sampler->history_capacity > 0 && has_penalties(params)) {
        sampler->history = quill__malloc_array((size_t)sampler->history_capacity, sizeof(int32_t));
        if (sampler->history == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM,
                                     "sampler: out of memory for a penalty window of %d tokens",
                                     params->penalty_last_n);
            goto cleanup;
        }
    }

    uint64_t seed = params->seed;
    if (!params->has_seed) {
        seed = (uint64_t)quill__clock_monotonic_ns() ^ (uint64_t)(uintptr_t)sampler;
    }
    rng_seed(sampler->rng_state, seed);

    *out = sampler;
    sampler = NULL;

cleanup:
    quill_sampler_destroy(sampler);
    return status;
}

void quill_sampler_destroy(quill_sampler *sampler) {
    if (sampler == NULL) {
        return;
    }
    quill__free(sampler->biases);
    quill__free(sampler->history);
    quill__free(sampler->counts);
    quill__free(sampler->candidates);
    quill__free(sampler->weights);
    quill__free(sampler->seen_stamp);
    quill__free(sampler);
}

/* ---- History ---- */

/* Grows the unbounded history ring (penalty_last_n -1). Returns false when memory runs out; the
 * token is then left out of the history, which weakens the penalties but keeps sampling. */
static bool history_grow(quill_sampler *sampler) {
    int64_t capacity = sampler->history_capacity > 0 ? sampler->history_capacity * 2 : 256;
    int32_t *grown = quill__malloc_array((size_t)capacity, sizeof(int32_t));
    if (grown == NULL) {
        return false;
    }
    for (int64_t i = 0; i < sampler->n_history; i++) {
        grown[i] = sampler->history[(sampler->history_head + i) % sampler->history_capacity];
    }
    quill__free(sampler->history);
    sampler->history = grown;
    sampler->history_capacity = capacity;
    sampler->history_head = 0;
    return true;
}

void quill_sampler_accept(quill_sampler *sampler, int32_t token) {
    if (sampler == NULL || token < 0 || token >= sampler->n_vocab ||
        !has_penalties(&sampler->params)) {
        return;
    }
    bool is_unbounded = sampler->params.penalty_last_n < 0;
    if (is_unbounded && sampler->n_history == sampler->history_capacity && !history_grow(sampler)) {
        return;
    }

    /* A full bounded window drops its oldest token first. */
    if (sampler->n_history == sampler->history_capacity) {
        int32_t oldest = sampler->history[sampler->history_head];
        sampler->counts[oldest] -= 1;
        sampler->history_head = (sampler->history_head + 1) % sampler->history_capacity;
        sampler->n_history -= 1;
    }
    int64_t tail = (sampler->history_head + sampler->n_history) % sampler->history_capacity;
    sampler->history[tail] = token;
    sampler->n_history += 1;
    sampler->counts[token] += 1;
}

/* ---- Sampling ---- */

/* Applies the repetition, presence and frequency penalties once per distinct token in the
 * window, to the candidates array indexed by token id. */
static void apply_penalties(quill_sampler *sampler) {
    const quill_sampling_params *params = &sampler->params;
    sampler->stamp += 1;
    if (sampler->stamp == 0) {
        memset(sampler->seen_stamp, 0, (size_t)sampler->n_vocab * sizeof(uint32_t));
        sampler->stamp = 1;
    }
    for (int64_t i = 0; i < sampler->n_history; i++) {
        int32_t token = sampler->history[(sampler->history_head + i) % sampler->history_capacity];
        if (sampler->seen_stamp[token] == sampler->stamp) {
            continue;
        }
        sampler->seen_stamp[token] = sampler->stamp;

        float logit = sampler->candidates[token].logit;
        if (logit > 0.0f) {
            logit /= params->repetition_penalty;
        } else {
            logit *= params->repetition_penalty;
        }
        int32_t count = sampler->counts[token];
        logit -= (float)count * params->frequency_penalty + params->presence_penalty;
        sampler->candidates[token].logit = logit;
    }
}

/* Returns the lowest id among the highest logits; token 0 when every logit is -infinity. */
static int32_t argmax_candidates(const candidate *items, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (items[i].logit > items[best].logit) {
            best = i;
        }
    }
    return items[best].token;
}

/* Applies top-p on the best-first sorted prefix: keeps the fewest candidates whose probability
 * (temperature 1, normalized over all n candidates) sums to at least top_p. Returns the kept
 * count. May sort a longer prefix of items. */
static int64_t apply_top_p(candidate *items, int64_t n, int64_t n_sorted, float top_p) {
    float max_logit = items[0].logit;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        total += exp((double)(items[i].logit - max_logit));
    }
    double target = (double)top_p * total;
    double cumulative = 0.0;
    int64_t i = 0;
    while (i < n) {
        if (i == n_sorted) {
            /* Sort a longer prefix; the part already sorted stays in place. */
            int64_t grown = n_sorted * 4 < n ? n_sorted * 4 : n;
            candidates_sorted_prefix(items + n_sorted, n - n_sorted, grown - n_sorted);
            n_sorted = grown;
        }
        cumulative += exp((double)(items[i].logit - max_logit));
        i++;
        if (cumulative >= target) {
            break;
        }
    }
    return i;
}

/* Temperature softmax over candidates [0, n), whose largest logit is max_logit, and one draw
 * in candidate order. The exp terms are kept for the draw's running sum instead of computed
 * twice (the same doubles either way): with no filter active the set is the whole
 * vocabulary. */
static int32_t draw(quill_sampler *sampler, const candidate *items, int64_t n, float max_logit) {
    double inverse_temperature = 1.0 / (double)sampler->params.temperature;
    double *weights = sampler->weights;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        weights[i] = exp((double)(items[i].logit - max_logit) * inverse_temperature);
        total += weights[i];
    }
    double target = rng_uniform(sampler->rng_state) * total;
    double cumulative = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cumulative += weights[i];
        if (target < cumulative) {
            return items[i].token;
        }
    }
    return items[n - 1].token;
}

/* Filters and draws for temperature > 0. Candidates [0, n) hold finite logits. */
static int32_t sample_filtered(quill_sampler *sampler, candidate *items, int64_t n) {
    const quill_sampling_params *params = &sampler->params;

    /* No filter (OpenAI's defaults): the draw needs no order, only the largest logit for a
     * stable softmax, so skip the selection over the whole vocabulary. */
    bool has_filter = (params->top_k > 0 && params->top_k < n) || params->top_p < 1.0f ||
                      params->min_p > 0.0f;
    if (!has_filter) {
        float max_logit = items[0].logit;
        for (int64_t i = 1; i < n; i++) {
            max_logit = items[i].logit > max_logit ? items[i].logit : max_logit;
        }
        return draw(sampler, items, n, max_logit);
    }

    /* top-k: keep the k best, sorted. Without it, sort a small prefix for min-p and top-p. */
    int64_t n_sorted = 0;
    if (params->top_k > 0) {
        int64_t k = params->top_k < n ? params->top_k : n;
        candidates_sorted_prefix(items, n, k);
        n = k;
        n_sorted = k;
    } else {
        n_sorted = n < TOP_P_FIRST_PREFIX ? n : TOP_P_FIRST_PREFIX;
        candidates_sorted_prefix(items, n, n_sorted);
    }

    /* min-p keeps a prefix of the order too: candidates with p >= min_p * p_max. Counting them
     * first lets top-p stop early. Top-p and min-p both keep a best-first prefix, and min-p's
     * threshold is relative to the best candidate, which top-p never removes, so applying top-p
     * (normalized over the post-top-k set) and cutting at the min-p count gives the same set as
     * top-p followed by min-p. */
    int64_t n_min_p = n;
    if (params->min_p > 0.0f) {
        float threshold = items[0].logit + logf(params->min_p);
        n_min_p = 0;
        for (int64_t i = 0; i < n; i++) {
            if (items[i].logit >= threshold) {
                n_min_p++;
            }
        }
    }
    int64_t n_kept = n;
    if (params->top_p < 1.0f) {
        n_kept = apply_top_p(items, n, n_sorted, params->top_p);
        if (n_kept > n_sorted) {
            n_sorted = n_kept;
        }
    }
    if (n_min_p < n_kept) {
        n_kept = n_min_p;
    }
    /* The draw needs the kept set, not its order: selecting the rest of it is O(n), and when
     * nothing is cut (no filter active) nothing moves. */
    if (n_kept > n_sorted && n_kept < n) {
        candidates_select(items + n_sorted, n - n_sorted, n_kept - n_sorted);
    }

    return draw(sampler, items, n_kept, items[0].logit);
}

int32_t quill_sampler_sample(quill_sampler *sampler, const float *logits) {
    const quill_sampling_params *params = &sampler->params;
    int32_t n_vocab = sampler->n_vocab;
    candidate *items = sampler->candidates;

    /* Candidates indexed by token id: logits, bias, penalties. NaN counts as -infinity. */
    for (int32_t i = 0; i < n_vocab; i++) {
        items[i].token = i;
        items[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
    }
    for (int32_t i = 0; i < params->n_logit_biases; i++) {
        items[params->logit_biases[i].token].logit += params->logit_biases[i].bias;
    }
    if (has_penalties(params) && sampler->n_history > 0) {
        apply_penalties(sampler);
    }

    if (params->temperature == 0.0f) {
        /* items are still in vocabulary order, so items[best] is token best. */
        int32_t best = argmax_candidates(items, n_vocab);
        return items[best].logit > -INFINITY ? best : QUILL_SAMPLER_NO_TOKEN;
    }

    /* Drop banned tokens (-infinity) so that the filters see finite logits only. */
    int64_t n = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (items[i].logit > -INFINITY) {
            items[n++] = items[i];
        }
    }
    if (n == 0) {
        return QUILL_SAMPLER_NO_TOKEN;
    }
    return sample_filtered(sampler, items, n);
}

/* ---- Log-probabilities ---- */

void quill_logprobs_compute(const float *logits, int32_t n_vocab, int32_t chosen, int32_t n_top,
                            float *chosen_logprob, quill_token_logprob *top) {
    if (n_vocab <= 0) {
        if (chosen_logprob != NULL) {
            *chosen_logprob = -INFINITY;
        }
        return;
    }

    /* log_softmax(x)_i = x_i - max - log(sum_j exp(x_j - max)), summed in double. */
    float max_logit = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (logits[i] > max_logit) {
            max_logit = logits[i];
        }
    }
    double total = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        total += exp((double)(logits[i] - max_logit));
    }
    double log_normalizer = (double)max_logit + log(total);

    if (chosen_logprob != NULL) {
        bool is_valid = chosen >= 0 && chosen < n_vocab;
        *chosen_logprob = is_valid ? (float)((double)logits[chosen] - log_normalizer) : -INFINITY;
    }
    if (top == NULL || n_top <= 0) {
        return;
    }
    if (n_top > n_vocab) {
        n_top = n_vocab;
    }

    /* Keep the n_top best in an insertion-sorted array: higher logit first, lower id on ties. */
    int32_t n_filled = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        float logit = logits[i];
        if (n_filled == n_top && !(logit > top[n_top - 1].logprob)) {
            continue;
        }
        int32_t at = n_filled < n_top ? n_filled : n_top - 1;
        while (at > 0 && logit > top[at - 1].logprob) {
            top[at] = top[at - 1];
            at--;
        }
        top[at].token = i;
        top[at].logprob = logit;
        if (n_filled < n_top) {
            n_filled++;
        }
    }
    for (int32_t i = 0; i < n_filled; i++) {
        top[i].logprob = (float)((double)top[i].logprob - log_normalizer);
    }
}
