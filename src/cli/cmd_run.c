/*
 * `quill run`: generates one completion for a prompt through the engine (a single request) and
 * streams its text to stdout as the engine releases it, then prints usage and timings to
 * stderr. With --json it prints one JSON object with the text, the generated ids, the finish
 * reason, the seed, usage and timings instead. Without --seed a random seed is drawn here, not
 * in the sampler, so it can be printed and the run reproduced.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/strbuf.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_source.h"
#include "quill/engine.h"
#include "quill/model.h"
#include "quill/tokenizer.h"

static const char *const command = "run";

enum { DEFAULT_MAX_TOKENS = 128 };

/* Parsed command line. */
typedef struct run_options {
    quill_cli_model_source model_source; /* -m or -hf */
    const char *prompt;        /* -p; "" starts from BOS alone */
    int64_t max_tokens;        /* -n; 0 means up to the context */
    quill_sampling_params sampling;
    int n_threads;   /* -t; 0 keeps the engine default */
    int64_t n_ctx;   /* --ctx; 0 means the model's trained context */
    bool ignore_eos; /* --ignore-eos */
    bool use_json;   /* --json */
} run_options;

/* What the request produced. */
typedef struct run_result {
    quill_strbuf text; /* all released text */
    int32_t *tokens;   /* [capacity] generated ids */
    int64_t n_tokens;
    int64_t capacity;
    quill_finish_reason finish_reason;
    quill_usage usage;
} run_result;

static void print_usage(FILE *stream) {
    quill_sampling_params defaults = quill_sampling_params_default();
    fprintf(stream,
            "usage: quill run (-m MODEL | -hf OWNER/REPO[:FILE]) [-p PROMPT] [options]\n"
            "\n"
            "Generates a completion of PROMPT and streams it to stdout; usage and timings go to\n"
            "stderr. The prompt is tokenized with the vocabulary's BOS; an empty or absent\n"
            "prompt starts from BOS alone.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH          GGUF model file\n"
            "  -hf, --hf-repo REF        Hugging Face reference OWNER/REPO[:FILE], downloaded\n"
            "                            into the cache on first use\n"
            "  -p, --prompt TEXT         prompt text (default: empty)\n"
            "  -n, --n-predict N         most tokens to generate, -1 for up to the context\n"
            "                            (default: %d)\n"
            "  --temp T                  temperature, 0 for greedy (default: %g)\n"
            "  --top-k K                 keep the K most likely tokens, 0 disables (default: %d)\n"
            "  --top-p P                 nucleus sampling mass in (0, 1], 1 disables (default: "
            "%g)\n"
            "  --min-p P                 drop tokens below P times the best one's probability,\n"
            "                            0 disables (default: %g)\n"
            "  --repeat-penalty F        llama.cpp repetition penalty, 1 disables (default: 1)\n"
            "  --repeat-last-n N         tokens the penalties look back over, -1 for all\n"
            "                            (default: %d)\n"
            "  --presence-penalty F      subtracted once from seen tokens (default: 0)\n"
            "  --frequency-penalty F     subtracted per occurrence (default: 0)\n"
            "  --seed S                  RNG seed (default: random, printed as 'seed: N')\n"
            "  --ignore-eos              keep generating past end-of-generation tokens\n"
            "  -t, --threads N           compute threads (default: online CPUs)\n"
            "  -c, --ctx N               context length in tokens (default: the model's)\n"
            "  --json                    print one JSON object: text, tokens, finish_reason,\n"
            "                            seed, usage, timings\n"
            "  -h, --help                print this help\n",
            DEFAULT_MAX_TOKENS, (double)defaults.temperature, defaults.top_k,
            (double)defaults.top_p, (double)defaults.min_p, defaults.penalty_last_n);
}

/* Parses a float flag into *out. */
static bool parse_float(const char *flag, const char *text, double min, double max, float *out) {
    double value = 0.0;
    if (!quill_cli_parse_double(command, flag, text, min, max, &value)) {
        return false;
    }
    *out = (float)value;
    return true;
}

/* Parses one sampling flag at argv[*index]. Returns 1 when handled, 0 when not a sampling
 * flag, -1 on a bad value. */
static int parse_sampling_flag(int argc, char **argv, int *index, quill_sampling_params *sampling) {
    const char *flag = argv[*index];
    static const char *const flags[] = {"--temp",
                                        "--top-k",
                                        "--top-p",
                                        "--min-p",
                                        "--repeat-penalty",
                                        "--repeat-last-n",
                                        "--presence-penalty",
                                        "--frequency-penalty",
                                        "--seed"};
    bool is_known = false;
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        is_known = is_known || strcmp(flag, flags[i]) == 0;
    }
    if (!is_known) {
        return 0;
    }
    const char *value = quill_cli_take_value(command, argc, argv, index);
    if (value == NULL) {
        return -1;
    }
    bool is_ok = false;
    int parsed = 0;
    if (strcmp(flag, "--temp") == 0) {
        is_ok = parse_float(flag, value, 0.0, 100.0, &sampling->temperature);
    } else if (strcmp(flag, "--top-k") == 0) {
        is_ok = quill_cli_parse_int(command, flag, value, 0, 1 << 30, &parsed);
        sampling->top_k = parsed;
    } else if (strcmp(flag, "--top-p") == 0) {
        is_ok = parse_float(flag, value, 0.0, 1.0, &sampling->top_p);
        if (is_ok && sampling->top_p <= 0.0f) {
            fprintf(stderr,
                    "quill %s: invalid value '%s' for --top-p; expected a number in (0, 1], "
                    "where 1 disables it\n",
                    command, value);
            is_ok = false;
        }
    } else if (strcmp(flag, "--min-p") == 0) {
        is_ok = parse_float(flag, value, 0.0, 1.0, &sampling->min_p);
    } else if (strcmp(flag, "--repeat-penalty") == 0) {
        is_ok = parse_float(flag, value, 1e-6, 100.0, &sampling->repetition_penalty);
    } else if (strcmp(flag, "--repeat-last-n") == 0) {
        is_ok = quill_cli_parse_int(command, flag, value, -1, 1 << 30, &parsed);
        sampling->penalty_last_n = parsed;
    } else if (strcmp(flag, "--presence-penalty") == 0) {
        is_ok = parse_float(flag, value, -100.0, 100.0, &sampling->presence_penalty);
    } else if (strcmp(flag, "--frequency-penalty") == 0) {
        is_ok = parse_float(flag, value, -100.0, 100.0, &sampling->frequency_penalty);
    } else {
        is_ok = quill_cli_parse_uint64(command, flag, value, &sampling->seed);
        sampling->has_seed = is_ok;
    }
    return is_ok ? 1 : -1;
}

/* Parses one general flag at argv[*index]. Returns 1 when handled, 0 when unknown, -1 on a bad
 * value. */
static int parse_general_flag(int argc, char **argv, int *index, run_options *options) {
    const char *arg = argv[*index];
    int handled = quill_cli_model_source_parse_flag(&options->model_source, command, argc, argv,
                                                    index);
    if (handled != 0) {
        return handled;
    }
    if (strcmp(arg, "-p") == 0 || strcmp(arg, "--prompt") == 0) {
        options->prompt = quill_cli_take_value(command, argc, argv, index);
        return options->prompt != NULL ? 1 : -1;
    }
    if (strcmp(arg, "--ignore-eos") == 0) {
        options->ignore_eos = true;
        return 1;
    }
    if (strcmp(arg, "--json") == 0) {
        options->use_json = true;
        return 1;
    }

    bool is_n = strcmp(arg, "-n") == 0 || strcmp(arg, "--n-predict") == 0;
    bool is_threads = strcmp(arg, "-t") == 0 || strcmp(arg, "--threads") == 0;
    bool is_ctx = strcmp(arg, "-c") == 0 || strcmp(arg, "--ctx") == 0;
    if (!is_n && !is_threads && !is_ctx) {
        return 0;
    }
    const char *value = quill_cli_take_value(command, argc, argv, index);
    if (value == NULL) {
        return -1;
    }
    if (is_threads) {
        return quill_cli_parse_int(command, arg, value, 1, 1024, &options->n_threads) ? 1 : -1;
    }
    if (is_ctx) {
        return quill_cli_parse_int64(command, arg, value, QUILL_CLI_MIN_CTX_TOKENS,
                                     QUILL_CLI_MAX_CTX_TOKENS, &options->n_ctx)
                   ? 1
                   : -1;
    }
    if (!quill_cli_parse_int64(command, arg, value, -1, (int64_t)1 << 24, &options->max_tokens)) {
        return -1;
    }
    if (options->max_tokens == 0) {
        fprintf(stderr,
                "quill %s: invalid value '0' for %s; use -1 (up to the context) or a "
                "positive count\n",
                command, arg);
        return -1;
    }
    if (options->max_tokens < 0) {
        options->max_tokens = 0;
    }
    return 1;
}

/* Returns -1 to continue, or the exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, run_options *options) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            return 0;
        }
        int handled = parse_general_flag(argc, argv, &i, options);
        if (handled == 0) {
            handled = parse_sampling_flag(argc, argv, &i, &options->sampling);
        }
        if (handled < 0) {
            return 2;
        }
        if (handled == 0) {
            quill_cli_unknown_option(command, arg);
            return 2;
        }
    }
    if (!quill_cli_model_source_check(&options->model_source, command)) {
        return 2;
    }
    return -1;
}

/* Tokenizes the prompt with the vocabulary's BOS; an empty prompt is BOS alone. */
static quill_status tokenize_prompt(const quill_tokenizer *tokenizer, const char *prompt,
                                    int32_t **tokens, int64_t *n_tokens) {
    *tokens = NULL;
    *n_tokens = 0;
    if (prompt[0] != '\0') {
        quill_status status = quill_tokenizer_encode(tokenizer, prompt, strlen(prompt),
                                                     QUILL_TOKENIZE_ADD_SPECIAL, tokens, n_tokens);
        if (status == QUILL_OK && *n_tokens == 0) {
            quill_tokens_free(*tokens);
            *tokens = NULL;
            status = quill_error_set(QUILL_ERR_INVALID_ARG, "run: the prompt gave no tokens");
        }
        return status;
    }
    int32_t bos = quill_tokenizer_bos(tokenizer);
    if (bos < 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "run: the vocabulary has no BOS token, so an empty prompt cannot "
                               "start generation; pass a prompt with -p");
    }
    *tokens = quill__malloc(sizeof(int32_t));
    if (*tokens == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "run: out of memory");
    }
    (*tokens)[0] = bos;
    *n_tokens = 1;
    return QUILL_OK;
}

static quill_status append_tokens(run_result *result, const quill_request_event *event) {
    if (result->n_tokens + event->n_tokens > result->capacity) {
        int64_t capacity = result->capacity > 0 ? result->capacity : 256;
        while (capacity < result->n_tokens + event->n_tokens) {
            capacity *= 2;
        }
        int32_t *grown = quill__realloc_array(result->tokens, (size_t)capacity, sizeof(int32_t));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "run: out of memory for generated tokens");
        }
        result->tokens = grown;
        result->capacity = capacity;
    }
    for (int32_t i = 0; i < event->n_tokens; i++) {
        result->tokens[result->n_tokens++] = event->tokens[i].token;
    }
    return QUILL_OK;
}

/* Reads the request's events until the final one, streaming text to stdout unless use_json.
 * Returns the request's status. */
static quill_status read_events(quill_request *request, bool use_json, run_result *result) {
    for (;;) {
        quill_request_event event;
        quill_status status = quill_request_next_event(request, true, &event);
        if (status != QUILL_OK) {
            return status;
        }
        if (!use_json && event.n_text_bytes > 0) {
            fwrite(event.text, 1, event.n_text_bytes, stdout);
            fflush(stdout);
        }
        status = quill__strbuf_append(&result->text, event.text, event.n_text_bytes);
        if (status == QUILL_OK) {
            status = append_tokens(result, &event);
        }
        bool is_final = event.is_final;
        if (is_final) {
            result->finish_reason = event.finish_reason;
            result->usage = event.usage;
            if (event.status != QUILL_OK) {
                status = quill_error_set(event.status, "%s", event.error_message);
            }
        }
        quill_request_event_release(&event);
        if (status != QUILL_OK || is_final) {
            return status;
        }
    }
}

/* Timings derived from the usage record, in milliseconds and tokens per second. */
typedef struct run_timings {
    double ttft_ms;
    double generation_ms;
    double prefill_tokens_per_second;
    double decode_tokens_per_second;
} run_timings;

static run_timings compute_timings(const quill_usage *usage) {
    run_timings timings = {0};
    if (usage->first_token_us > 0) {
        timings.ttft_ms = (double)(usage->first_token_us - usage->arrival_us) / 1000.0;
    }
    timings.generation_ms = (double)usage->generation_us / 1000.0;
    int64_t n_prefilled = usage->n_prompt_tokens - usage->n_cached_tokens;
    if (usage->prefill_us > 0) {
        timings.prefill_tokens_per_second = (double)n_prefilled * 1e6 / (double)usage->prefill_us;
    }
    /* The first token comes from the prefill, so decode covers the tokens after it. */
    if (usage->generation_us > 0 && usage->n_completion_tokens > 1) {
        timings.decode_tokens_per_second =
            (double)(usage->n_completion_tokens - 1) * 1e6 / (double)usage->generation_us;
    }
    return timings;
}

static void print_summary(const run_result *result, uint64_t seed) {
    run_timings timings = compute_timings(&result->usage);
    fprintf(stderr,
            "\n\nfinish reason: %s\n"
            "seed: %llu\n"
            "prompt tokens: %lld, completion tokens: %lld\n"
            "time to first token: %.2f ms, generation: %.2f ms\n"
            "prefill: %.2f tokens/s, decode: %.2f tokens/s\n",
            quill_finish_reason_name(result->finish_reason), (unsigned long long)seed,
            (long long)result->usage.n_prompt_tokens, (long long)result->usage.n_completion_tokens,
            timings.ttft_ms, timings.generation_ms, timings.prefill_tokens_per_second,
            timings.decode_tokens_per_second);
}

/* A JSON number rounded to three decimals, so outputs read cleanly. */
static json_object *json_rounded(double value) {
    char text[64];
    snprintf(text, sizeof(text), "%.3f", value);
    return json_object_new_double_s(value, text);
}

static quill_status print_json(const run_result *result, uint64_t seed) {
    run_timings timings = compute_timings(&result->usage);
    json_object *root = json_object_new_object();
    json_object *tokens = json_object_new_array();
    json_object *usage = json_object_new_object();
    json_object *timing = json_object_new_object();
    if (root == NULL || tokens == NULL || usage == NULL || timing == NULL) {
        json_object_put(root);
        json_object_put(tokens);
        json_object_put(usage);
        json_object_put(timing);
        return quill_error_set(QUILL_ERR_NOMEM, "run: out of memory for the JSON output");
    }

    /* Text, ids and finish reason. */
    const char *text = result->text.data != NULL ? result->text.data : "";
    json_object_object_add(root, "text",
                           json_object_new_string_len(text, (int)result->text.length));
    for (int64_t i = 0; i < result->n_tokens; i++) {
        json_object_array_add(tokens, json_object_new_int(result->tokens[i]));
    }
    json_object_object_add(root, "tokens", tokens);
    json_object_object_add(root, "finish_reason",
                           json_object_new_string(quill_finish_reason_name(result->finish_reason)));
    /* As uint64, so a seed above INT64_MAX stays exact. */
    json_object_object_add(root, "seed", json_object_new_uint64(seed));

    /* Usage and timings. */
    json_object_object_add(usage, "prompt_tokens",
                           json_object_new_int64(result->usage.n_prompt_tokens));
    json_object_object_add(usage, "completion_tokens",
                           json_object_new_int64(result->usage.n_completion_tokens));
    json_object_object_add(root, "usage", usage);
    json_object_object_add(timing, "ttft_ms", json_rounded(timings.ttft_ms));
    json_object_object_add(timing, "generation_ms", json_rounded(timings.generation_ms));
    json_object_object_add(timing, "prefill_tokens_per_second",
                           json_rounded(timings.prefill_tokens_per_second));
    json_object_object_add(timing, "decode_tokens_per_second",
                           json_rounded(timings.decode_tokens_per_second));
    json_object_object_add(root, "timings", timing);
    printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return QUILL_OK;
}

/* Draws a seed from the kernel's entropy, falling back to the clock, so that the seed a run
 * used can be printed and passed to --seed to reproduce it. */
static uint64_t draw_seed(void) {
    uint64_t seed = 0;
    if (getentropy(&seed, sizeof(seed)) != 0) {
        seed = (uint64_t)quill__clock_monotonic_ns() ^ ((uint64_t)getpid() << 32);
    }
    return seed;
}

/* Runs the single request on a one-sequence engine. */
static quill_status generate(const quill_model *model, const run_options *options,
                             const int32_t *prompt, int64_t n_prompt, run_result *result) {
    quill_engine *engine = NULL;
    quill_request *request = NULL;
    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_parallel = 1;
    engine_params.queue_limit = 1;
    engine_params.use_prefix_cache = false;
    engine_params.n_ctx = options->n_ctx;
    if (options->n_threads > 0) {
        engine_params.n_threads = options->n_threads;
    }
    quill_status status = quill_engine_create(model, &engine_params, &engine);
    if (status != QUILL_OK) {
        goto cleanup;
    }

    /* A request longer than the context stops there with finish reason "length". */
    quill_request_params params = quill_request_params_default();
    params.prompt_tokens = prompt;
    params.n_prompt_tokens = n_prompt;
    int64_t room = quill_engine_n_ctx(engine) - n_prompt;
    params.max_tokens = options->max_tokens > room ? room : options->max_tokens;
    params.sampling = options->sampling;
    params.ignore_eos = options->ignore_eos;
    status = quill_engine_submit(engine, &params, &request);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    status = read_events(request, options->use_json, result);
    /* On a terminal, end the text with a line break so the shell prompt starts on its own
     * line. Piped output stays exactly the generated text. */
    if (!options->use_json && result->text.length > 0 && isatty(STDOUT_FILENO)) {
        fputc('\n', stdout);
        fflush(stdout);
    }

cleanup:
    quill_request_destroy(request);
    quill_engine_destroy(engine);
    return status;
}

int quill_cli_run(int argc, char **argv) {
    run_options options = {
        .prompt = "",
        .max_tokens = DEFAULT_MAX_TOKENS,
        .sampling = quill_sampling_params_default(),
    };
    int exit_code = parse_flags(argc, argv, &options);
    if (exit_code >= 0) {
        return exit_code;
    }
    if (!options.sampling.has_seed) {
        options.sampling.seed = draw_seed();
        options.sampling.has_seed = true;
    }
    /* The engine's lifecycle lines would interleave with the streamed text on a terminal. */
    if (getenv("QUILL_LOG_LEVEL") == NULL) {
        quill__log_set_level(QUILL_LOG_LEVEL_WARN);
    }

    quill_model *model = NULL;
    int32_t *prompt = NULL;
    int64_t n_prompt = 0;
    run_result result;
    memset(&result, 0, sizeof(result));
    quill__strbuf_init(&result.text);
    exit_code = 1;
    quill_error_clear();

    /* Load the model and tokenize the prompt. */
    const char *model_path = quill_cli_model_source_resolve(&options.model_source, command);
    if (model_path == NULL) {
        goto cleanup;
    }
    if (quill_model_load(model_path, NULL, &model) != QUILL_OK) {
        quill_cli_report_error(command, "cannot load the model");
        goto cleanup;
    }
    if (tokenize_prompt(quill_model_tokenizer(model), options.prompt, &prompt, &n_prompt) !=
        QUILL_OK) {
        quill_cli_report_error(command, "cannot tokenize the prompt");
        goto cleanup;
    }

    /* Generate, then report. */
    if (generate(model, &options, prompt, n_prompt, &result) != QUILL_OK) {
        quill_cli_report_error(command, "generation failed");
        goto cleanup;
    }
    if (options.use_json) {
        if (print_json(&result, options.sampling.seed) != QUILL_OK) {
            quill_cli_report_error(command, "cannot print the result");
            goto cleanup;
        }
    } else {
        print_summary(&result, options.sampling.seed);
    }
    exit_code = 0;

cleanup:
    quill__free(result.tokens);
    quill__strbuf_release(&result.text);
    quill_tokens_free(prompt);
    quill_model_destroy(model);
    quill_cli_model_source_release(&options.model_source);
    return exit_code;
}
