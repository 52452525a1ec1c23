/*
 * `quill bench`: measures a model's prefill and decode speed with the context directly (no
 * engine, no sampler beyond argmax), so the figures are the forward pass's. Each repetition
 * prefills a synthetic prompt of random token ids as one batch, then decodes greedily:
 *   prefill rate = prompt tokens / time to the first token
 *   decode rate  = (generated tokens - 1) / time from the first to the last token
 * With --parallel N, N sequences each prefill the prompt (one batch per sequence) and then
 * decode together, one batch of N tokens per step, as a server decodes N streams. Both rates
 * then count the tokens of all sequences:
 *   prefill rate = N * prompt tokens / time until every sequence has its first token
 *   decode rate  = N * (generated tokens - 1) / time from then to the last step
 * One unrecorded warm-up repetition runs first. Medians and the spread over repetitions are
 * reported, or one JSON object with --json.
 */
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_source.h"
#include "quill/engine.h"
#include "quill/kv_cache.h"
#include "quill/model.h"

static const char *const command = "bench";

enum {
    DEFAULT_PROMPT_TOKENS = 512,
    DEFAULT_GEN_TOKENS = 128,
    DEFAULT_REPETITIONS = 3,
    MAX_REPETITIONS = 1000,
};

typedef struct bench_options {
    quill_cli_model_source model_source; /* -m or -hf */
    int n_prompt_tokens;                 /* -p */
    int n_gen_tokens;                    /* -n */
    int n_threads;                       /* -t */
    int n_repetitions;                   /* -r */
    int n_parallel;                      /* --parallel: sequences decoding together */
    bool use_json;                       /* --json */
} bench_options;

/* Figures of one repetition. */
typedef struct bench_run {
    double prefill_ms; /* start to the first token */
    double decode_ms;  /* first to last token */
    double prefill_tokens_per_second;
    double decode_tokens_per_second; /* 0 when only one token is generated */
} bench_run;

/* The model's state for the runs. */
typedef struct bench_state {
    quill_model *model;
    quill_context *context;
    quill_kv_cache *cache;
    quill_batch batch;
    int32_t *prompt; /* [n_prompt_tokens] random ids */
    int32_t *tokens; /* [n_parallel] each sequence's last generated token */
    int32_t n_vocab;
    int n_parallel;
} bench_state;

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill bench (-m MODEL | -hf OWNER/REPO[:FILE]) [-p N] [-n N] [-t N] [-r N] "
            "[--parallel N] [--json]\n"
            "\n"
            "Measures prefill and decode speed. Each repetition prefills a prompt of random\n"
            "token ids as one batch, then generates greedily. Prefill rate is prompt tokens\n"
            "divided by the time to the first token; decode rate is generated tokens minus one\n"
            "divided by the time from the first to the last token. One warm-up repetition runs\n"
            "first and is not counted. With --parallel N, N sequences prefill the prompt and\n"
            "then decode together, N tokens per step, and both rates count all sequences.\n"
            "It also prints the weight bytes one decode step reads (every tensor once, one row\n"
            "of an untied token embedding, no KV cache) and the rate at which the median decode\n"
            "streams them, in MB and GB/s of 10^6 and 10^9 bytes, to compare with the machine's\n"
            "memory bandwidth. Weights that fit in the caches measure the caches instead.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH      GGUF model file\n"
            "  -hf, --hf-repo REF    Hugging Face reference OWNER/REPO[:FILE]\n"
            "  -p, --n-prompt N      prompt tokens (default: %d)\n"
            "  -n, --n-gen N         generated tokens (default: %d)\n"
            "  -t, --threads N       compute threads (default: online CPUs)\n"
            "  -r, --repetitions N   measured repetitions (default: %d)\n"
            "  --parallel N          sequences decoding together (default: 1, at most %d)\n"
            "  --json                print one JSON object with medians and every run\n"
            "  -h, --help            print this help\n",
            DEFAULT_PROMPT_TOKENS, DEFAULT_GEN_TOKENS, DEFAULT_REPETITIONS,
            QUILL_ENGINE_MAX_PARALLEL);
}

/* Parses the value of an integer flag; returns false after printing an error. */
static bool take_int(int argc, char **argv, int *index, int min, int max, int *out) {
    const char *flag = argv[*index];
    const char *value = quill_cli_take_value(command, argc, argv, index);
    return value != NULL && quill_cli_parse_int(command, flag, value, min, max, out);
}

static bool is_flag(const char *arg, const char *short_name, const char *long_name) {
    return strcmp(arg, short_name) == 0 || strcmp(arg, long_name) == 0;
}

/* Returns -1 to continue, or the exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, bench_options *options) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool is_ok = true;
        if (is_flag(arg, "-h", "--help")) {
            print_usage(stdout);
            return 0;
        }
        int handled =
            quill_cli_model_source_parse_flag(&options->model_source, command, argc, argv, &i);
        if (handled != 0) {
            is_ok = handled > 0;
        } else if (is_flag(arg, "-p", "--n-prompt")) {
            is_ok = take_int(argc, argv, &i, 1, 1 << 20, &options->n_prompt_tokens);
        } else if (is_flag(arg, "-n", "--n-gen")) {
            is_ok = take_int(argc, argv, &i, 1, 1 << 20, &options->n_gen_tokens);
        } else if (is_flag(arg, "-t", "--threads")) {
            is_ok = take_int(argc, argv, &i, 1, 1024, &options->n_threads);
        } else if (is_flag(arg, "-r", "--repetitions")) {
            is_ok = take_int(argc, argv, &i, 1, MAX_REPETITIONS, &options->n_repetitions);
        } else if (strcmp(arg, "--parallel") == 0) {
            is_ok = take_int(argc, argv, &i, 1, QUILL_ENGINE_MAX_PARALLEL, &options->n_parallel);
        } else if (strcmp(arg, "--json") == 0) {
            options->use_json = true;
        } else {
            quill_cli_unknown_option(command, arg);
            return 2;
        }
        if (!is_ok) {
            return 2;
        }
    }
    if (!quill_cli_model_source_check(&options->model_source, command)) {
        return 2;
    }
    return -1;
}

/* Replaces the current error with "bench: WHAT (the current message); FIX", so that the library's
 * cause stays and the advice names bench's own flags. Returns status. */
static quill_status fail_with_cause(quill_status status, const char *fix, const char *what_format,
                                    ...) __attribute__((format(printf, 3, 4)));
static quill_status fail_with_cause(quill_status status, const char *fix, const char *what_format,
                                    ...) {
    /* The cause is copied first: quill_error_set formats into the buffer that contains it. */
    char cause[256];
    snprintf(cause, sizeof(cause), "%s", quill_error_message());
    char what[256];
    va_list args;
    va_start(args, what_format);
    vsnprintf(what, sizeof(what), what_format, args);
    va_end(args);
    return quill_error_set(status, "bench: %s (%s); %s", what, cause, fix);
}

/* Creates the context, a cache for the whole run of every sequence and the random prompt. */
static quill_status create_state(const bench_options *options, bench_state *state) {
    /* A batch contains either one sequence's prompt or one decode token per sequence. */
    int n_batch = options->n_prompt_tokens > options->n_parallel ? options->n_prompt_tokens
                                                                 : options->n_parallel;
    quill_context_params context_params = quill_context_params_default();
    context_params.n_threads = options->n_threads;
    context_params.n_batch_max = n_batch;
    quill_status status = quill_context_create(state->model, &context_params, &state->context);
    if (status != QUILL_OK) {
        return fail_with_cause(status, "lower -p or --parallel",
                               "cannot create a context for batches of %d tokens", n_batch);
    }

    /* Room for every token of every sequence plus two blocks of slack each for rounding, in the
     * default type. */
    quill_kv_cache_params cache_params = quill_kv_cache_params_default();
    cache_params.n_seq_max = options->n_parallel;
    size_t n_tokens_each = (size_t)options->n_prompt_tokens + (size_t)options->n_gen_tokens +
                           2 * (size_t)cache_params.block_tokens;
    size_t per_token = quill_kv_cache_bytes_per_token(state->model, cache_params.type);
    size_t n_tokens = 0;
    if (!quill__size_mul(n_tokens_each, (size_t)options->n_parallel, &n_tokens) ||
        !quill__size_mul(per_token, n_tokens, &cache_params.memory_bytes)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "bench: (-p plus -n) times --parallel is too large");
    }
    status = quill_kv_cache_create(state->model, &cache_params, &state->cache);
    if (status != QUILL_OK) {
        return fail_with_cause(
            status, "lower -p, -n or --parallel",
            "cannot allocate a KV cache of %zu bytes for %d sequences of %d tokens",
            cache_params.memory_bytes, options->n_parallel,
            options->n_prompt_tokens + options->n_gen_tokens);
    }
    status = quill_batch_init(&state->batch, n_batch);
    if (status != QUILL_OK) {
        return status;
    }

    /* Token ids from a fixed-seed linear congruential generator: the content does not change
     * the amount of compute. */
    state->n_parallel = options->n_parallel;
    state->n_vocab = quill_model_get_info(state->model)->n_vocab;
    state->prompt = quill__malloc_array((size_t)options->n_prompt_tokens, sizeof(int32_t));
    state->tokens = quill__malloc_array((size_t)options->n_parallel, sizeof(int32_t));
    if (state->prompt == NULL || state->tokens == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "bench: out of memory for the prompt");
    }
    uint64_t x = 0x2545F4914F6CDD1DULL;
    for (int i = 0; i < options->n_prompt_tokens; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        state->prompt[i] = (int32_t)((x >> 33) % (uint64_t)state->n_vocab);
    }
    return QUILL_OK;
}

static void release_state(bench_state *state) {
    quill__free(state->prompt);
    quill__free(state->tokens);
    quill_batch_release(&state->batch);
    quill_kv_cache_destroy(state->cache);
    quill_context_destroy(state->context);
    quill_model_destroy(state->model);
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

/* Runs one forward pass for the batch, after which each of its sequences has n_tokens_total
 * tokens. Stores the greedy next token of each entry that wants logits in
 * state->tokens[entry's sequence]. */
static quill_status forward_next(bench_state *state, int64_t n_tokens_total) {
    for (int32_t t = 0; t < state->batch.n_tokens; t++) {
        quill_status status =
            quill_kv_cache_seq_prepare(state->cache, state->batch.seq_ids[t], n_tokens_total);
        if (status != QUILL_OK) {
            return status;
        }
    }
    quill_status status = quill_context_forward(state->context, state->cache, &state->batch);
    if (status != QUILL_OK) {
        return status;
    }
    for (int32_t t = 0; t < state->batch.n_tokens; t++) {
        if (!state->batch.wants_logits[t]) {
            continue;
        }
        const float *logits = quill_context_logits(state->context, t);
        if (logits == NULL) {
            return quill_error_set(QUILL_ERR_FORMAT, "bench: the forward pass returned no logits");
        }
        state->tokens[state->batch.seq_ids[t]] = argmax(logits, state->n_vocab);
    }
    return QUILL_OK;
}

/* One repetition: prefill the prompt as one batch per sequence, then decode n_gen - 1 more
 * tokens for all sequences together. */
static quill_status run_once(bench_state *state, int n_prompt, int n_gen, bench_run *run) {
    const int n_parallel = state->n_parallel;
    quill_status status = QUILL_OK;
    int64_t start_ns = quill__clock_monotonic_ns();
    for (int32_t seq = 0; seq < n_parallel && status == QUILL_OK; seq++) {
        quill_kv_cache_seq_reset(state->cache, seq);
        quill_batch_clear(&state->batch);
        for (int i = 0; i < n_prompt; i++) {
            quill_batch_add(&state->batch, state->prompt[i], i, seq, i == n_prompt - 1);
        }
        status = forward_next(state, n_prompt);
    }
    int64_t first_ns = quill__clock_monotonic_ns();
    for (int i = 1; i < n_gen && status == QUILL_OK; i++) {
        quill_batch_clear(&state->batch);
        for (int32_t seq = 0; seq < n_parallel; seq++) {
            quill_batch_add(&state->batch, state->tokens[seq], n_prompt + i - 1, seq, true);
        }
        status = forward_next(state, n_prompt + i);
    }
    int64_t last_ns = quill__clock_monotonic_ns();
    if (status != QUILL_OK) {
        return status;
    }

    memset(run, 0, sizeof(*run));
    run->prefill_ms = (double)(first_ns - start_ns) / 1e6;
    run->decode_ms = (double)(last_ns - first_ns) / 1e6;
    if (first_ns > start_ns) {
        run->prefill_tokens_per_second =
            (double)n_parallel * n_prompt * 1e9 / (double)(first_ns - start_ns);
    }
    if (n_gen > 1 && last_ns > first_ns) {
        run->decode_tokens_per_second =
            (double)n_parallel * (n_gen - 1) * 1e9 / (double)(last_ns - first_ns);
    }
    return QUILL_OK;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, minimum and maximum of n values (n >= 1). */
typedef struct spread {
    double median;
    double min;
    double max;
} spread;

static spread compute_spread(const bench_run *runs, int n, bool is_decode) {
    spread result = {0};
    double *values = quill__malloc_array((size_t)n, sizeof(double));
    if (values == NULL) {
        return result;
    }
    for (int i = 0; i < n; i++) {
        values[i] =
            is_decode ? runs[i].decode_tokens_per_second : runs[i].prefill_tokens_per_second;
    }
    qsort(values, (size_t)n, sizeof(double), compare_double);
    result.min = values[0];
    result.max = values[n - 1];
    result.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
    quill__free(values);
    return result;
}

/* A JSON number rounded to two decimals, so outputs read cleanly. */
static json_object *json_rounded(double value) {
    char text[64];
    snprintf(text, sizeof(text), "%.2f", value);
    return json_object_new_double_s(value, text);
}

/* Returns the GB/s of weights that a decode rate streams. Each step reads the decode bytes once,
 * for all of its n_parallel tokens. */
static double decode_weight_gb_per_second(const bench_options *options,
                                          const quill_model_info *info, double tokens_per_second) {
    return (double)info->n_decode_bytes * tokens_per_second / options->n_parallel / 1e9;
}

static void print_json(const bench_options *options, const quill_model_info *info,
                       const bench_run *runs) {
    const char *model_name = info->name;
    spread prefill = compute_spread(runs, options->n_repetitions, false);
    spread decode = compute_spread(runs, options->n_repetitions, true);
    json_object *root = json_object_new_object();
    json_object *list = json_object_new_array();
    json_object_object_add(root, "model", json_object_new_string(model_name));
    json_object_object_add(root, "threads", json_object_new_int(options->n_threads));
    json_object_object_add(root, "parallel", json_object_new_int(options->n_parallel));
    json_object_object_add(root, "prompt_tokens", json_object_new_int(options->n_prompt_tokens));
    json_object_object_add(root, "gen_tokens", json_object_new_int(options->n_gen_tokens));
    json_object_object_add(root, "prefill_tokens_per_second", json_rounded(prefill.median));
    /* One generated token leaves no interval to time decode over: null, not a rate of 0. */
    bool has_decode = options->n_gen_tokens >= 2;
    json_object_object_add(root, "decode_tokens_per_second",
                           has_decode ? json_rounded(decode.median) : NULL);
    json_object_object_add(root, "decode_weight_bytes_per_step",
                           json_object_new_int64((int64_t)info->n_decode_bytes));
    json_object_object_add(
        root, "decode_weight_gb_per_second",
        has_decode ? json_rounded(decode_weight_gb_per_second(options, info, decode.median))
                   : NULL);
    for (int i = 0; i < options->n_repetitions; i++) {
        json_object *run = json_object_new_object();
        json_object_object_add(run, "prefill_ms", json_rounded(runs[i].prefill_ms));
        json_object_object_add(run, "decode_ms", json_rounded(runs[i].decode_ms));
        json_object_object_add(run, "prefill_tokens_per_second",
                               json_rounded(runs[i].prefill_tokens_per_second));
        json_object_object_add(run, "decode_tokens_per_second",
                               has_decode ? json_rounded(runs[i].decode_tokens_per_second) : NULL);
        json_object_array_add(list, run);
    }
    json_object_object_add(root, "runs", list);
    printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
}

static void print_text(const bench_options *options, const quill_model_info *info,
                       const bench_run *runs) {
    const char *model_name = info->name;
    spread prefill = compute_spread(runs, options->n_repetitions, false);
    spread decode = compute_spread(runs, options->n_repetitions, true);
    printf("model: %s\nthreads: %d, parallel sequences: %d, prompt tokens: %d, generated tokens: "
           "%d, repetitions: %d\n",
           model_name, options->n_threads, options->n_parallel, options->n_prompt_tokens,
           options->n_gen_tokens, options->n_repetitions);
    printf("prefill: %.2f tokens/s median (min %.2f, max %.2f)\n", prefill.median, prefill.min,
           prefill.max);
    if (options->n_gen_tokens < 2) {
        printf("decode:  n/a (the rate counts the tokens after the first; use -n 2 or more)\n");
        return;
    }
    printf("decode:  %.2f tokens/s median (min %.2f, max %.2f)\n", decode.median, decode.min,
           decode.max);
    printf("decode weights: %.1f MB read per step, %.1f GB/s at the median rate\n",
           (double)info->n_decode_bytes / 1e6,
           decode_weight_gb_per_second(options, info, decode.median));
}

int quill_cli_bench(int argc, char **argv) {
    long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    bench_options options = {
        .n_prompt_tokens = DEFAULT_PROMPT_TOKENS,
        .n_gen_tokens = DEFAULT_GEN_TOKENS,
        .n_threads = n_cpus > 0 ? (int)n_cpus : 1,
        .n_repetitions = DEFAULT_REPETITIONS,
        .n_parallel = 1,
    };
    int exit_code = parse_flags(argc, argv, &options);
    if (exit_code >= 0) {
        return exit_code;
    }

    bench_state state;
    memset(&state, 0, sizeof(state));
    bench_run *runs = NULL;
    exit_code = 1;
    quill_error_clear();
    const char *model_path = quill_cli_model_source_resolve(&options.model_source, command);
    if (model_path == NULL) {
        goto cleanup;
    }
    if (quill_model_load(model_path, NULL, &state.model) != QUILL_OK) {
        quill_cli_report_error(command, "cannot load the model");
        goto cleanup;
    }
    int64_t n_ctx_train = quill_model_get_info(state.model)->n_ctx_train;
    int64_t n_tokens_each = (int64_t)options.n_prompt_tokens + options.n_gen_tokens;
    if (n_ctx_train > 0 && n_tokens_each > n_ctx_train) {
        fprintf(stderr,
                "quill %s: warning: -p plus -n is %lld tokens, beyond the model's trained "
                "context of %lld; the run measures speed only\n",
                command, (long long)n_tokens_each, (long long)n_ctx_train);
    }
    if (create_state(&options, &state) != QUILL_OK) {
        quill_cli_report_error(command, "cannot set up the benchmark");
        goto cleanup;
    }
    runs = quill__calloc((size_t)options.n_repetitions, sizeof(bench_run));
    if (runs == NULL) {
        fprintf(stderr, "quill %s: out of memory\n", command);
        goto cleanup;
    }

    /* Warm up once (page in the weights, start the threads), then measure. */
    bench_run warm_up;
    if (run_once(&state, options.n_prompt_tokens, options.n_gen_tokens, &warm_up) != QUILL_OK) {
        quill_cli_report_error(command, "the warm-up run failed");
        goto cleanup;
    }
    for (int i = 0; i < options.n_repetitions; i++) {
        if (run_once(&state, options.n_prompt_tokens, options.n_gen_tokens, &runs[i]) != QUILL_OK) {
            quill_cli_report_error(command, "a measured run failed");
            goto cleanup;
        }
    }

    const quill_model_info *info = quill_model_get_info(state.model);
    if (options.use_json) {
        print_json(&options, info, runs);
    } else {
        print_text(&options, info, runs);
    }
    exit_code = 0;

cleanup:
    quill__free(runs);
    release_state(&state);
    quill_cli_model_source_release(&options.model_source);
    return exit_code;
}
