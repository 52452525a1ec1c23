/*
 * `quill serve`: loads a model into the engine and serves the OpenAI-compatible HTTP API. The
 * port is bound before the model loads, so /health reports 503 while loading. SIGINT and
 * SIGTERM stop new connections, let requests in flight finish, and exit with status 0; a second
 * signal cancels what is still running. Signals are blocked in every thread and taken
 * synchronously with sigwait on the main thread.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/file_read.h"
#include "kernels/kernels.h"
#include "quill/engine.h"
#include "quill/hub.h"
#include "quill/model.h"
#include "quill/server.h"
#include "server/cost.h"

static const char *const command = "serve";

/* How often the shutdown drain checks for a second stop signal, in milliseconds. */
#define DRAIN_POLL_MS 200

/* How long cancelled responses get to reach their clients after a second stop signal, in
 * milliseconds. */
#define STOP_FLUSH_MS 2000

/* Soft open-file limit that serve requests: the largest connection limit plus spare
 * descriptors for the model file, logs and the listening socket. */
#define OPEN_FILES_REQUESTED ((rlim_t)65536 + 64)

/* Largest accepted --cache-mem, in MiB (1 TiB). */
#define CACHE_MEM_MAX_MIB ((int64_t)1 << 20)

typedef struct serve_options {
    const char *model_path;         /* -m */
    const char *hub_reference;      /* -hf */
    const char *chat_template_path; /* --chat-template-file */
    const char *price_cached_text;  /* --price-cached-input; NULL: the input price */
    quill_server_params server;     /* host, port, key, alias, prices, body limit */
    quill_engine_params engine;     /* ctx, parallel, threads, queue limit, cache bytes */
} serve_options;

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill serve (-m MODEL | -hf OWNER/REPO[:FILE]) [options]\n"
            "\n"
            "Serves an OpenAI-compatible API: POST /v1/chat/completions, POST /v1/completions,\n"
            "GET /v1/models, GET /health, POST /tokenize, POST /detokenize, POST "
            "/apply-template,\n"
            "GET /metrics (Prometheus text) and GET /v1/stats (JSON latency, token and cost\n"
            "summary). With --api-key every endpoint but /health needs the key, /metrics\n"
            "included, so give the Prometheus scrape job the key as a bearer token.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH            GGUF model file\n"
            "  -hf, --hf-repo REF          Hugging Face reference OWNER/REPO[:FILE], downloaded "
            "once\n"
            "  --host ADDRESS              IPv4 address to listen on (default 127.0.0.1)\n"
            "  --port N                    TCP port (default 8080; 0 picks a free port)\n"
            "  --ctx TOKENS                max tokens per sequence, prompt plus completion,\n"
            "                              at least 2 (default: the model's trained context)\n"
            "  --parallel N                max sequences decoding at once, 1 to 256 (default 4)\n"
            "  --threads N                 compute threads (default: all CPUs)\n"
            "  --cache-mem MIB             KV cache memory for all sequences, in MiB\n"
            "                              (default: enough for --parallel full contexts)\n"
            "  --queue-limit N             max requests waiting for a slot (default 64); more get "
            "429\n"
            "  --api-key KEY               require 'Authorization: Bearer KEY'\n"
            "  --model-alias NAME          model id shown in /v1/models (default: the model's\n"
            "                              general.name); requests may also name the model by\n"
            "                              the file's base name without .gguf\n"
            "  --chat-template-file PATH   Jinja chat template replacing the model's own\n"
            "  --price-input USD           price per million uncached prompt tokens (default 0)\n"
            "  --price-cached-input USD    price per million cached prompt tokens\n"
            "                              (default: --price-input)\n"
            "  --price-output USD          price per million completion tokens (default 0)\n"
            "  --max-body-bytes N          largest request body; larger ones get 413 (default "
            "8388608)\n"
            "  -h, --help                  print this help\n");
}

static bool parse_price(const char *text, const char *flag, int64_t *out) {
    if (quill__cost_parse_price(text, out) != QUILL_OK) {
        fprintf(stderr, "quill %s: invalid %s: %s\n", command, flag, quill_error_message());
        return false;
    }
    return true;
}

/* Parses one flag that takes a value. Returns false on misuse. */
static bool parse_valued_flag(const char *flag, const char *value, serve_options *options) {
    quill_server_params *server = &options->server;
    quill_engine_params *engine = &options->engine;
    int64_t number = 0;
    bool is_ok = true;
    if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
        options->model_path = value;
    } else if (strcmp(flag, "-hf") == 0 || strcmp(flag, "--hf-repo") == 0) {
        options->hub_reference = value;
    } else if (strcmp(flag, "--host") == 0) {
        server->host = value;
    } else if (strcmp(flag, "--port") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, 0, 65535, &number);
        server->port = (uint16_t)number;
    } else if (strcmp(flag, "--ctx") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, QUILL_CLI_MIN_CTX_TOKENS,
                                      QUILL_CLI_MAX_CTX_TOKENS, &engine->n_ctx);
    } else if (strcmp(flag, "--parallel") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, 1, QUILL_ENGINE_MAX_PARALLEL, &number);
        engine->n_parallel = (int32_t)number;
    } else if (strcmp(flag, "--threads") == 0) {
        is_ok = quill_cli_parse_int(command, flag, value, 1, 1024, &engine->n_threads);
    } else if (strcmp(flag, "--cache-mem") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, 1, CACHE_MEM_MAX_MIB, &number);
        engine->cache_bytes = (size_t)number << 20;
    } else if (strcmp(flag, "--queue-limit") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, 0, 1000000, &number);
        engine->queue_limit = (int32_t)number;
    } else if (strcmp(flag, "--api-key") == 0) {
        if (value[0] == '\0') {
            fprintf(stderr,
                    "quill %s: --api-key is empty; give a key, or leave the flag out to "
                    "serve without one\n",
                    command);
            is_ok = false;
        }
        server->api_key = value;
    } else if (strcmp(flag, "--model-alias") == 0) {
        if (value[0] == '\0') {
            fprintf(stderr,
                    "quill %s: --model-alias is empty; give the model id clients should send, "
                    "or leave the flag out to use the model's name\n",
                    command);
            is_ok = false;
        }
        server->model_alias = value;
    } else if (strcmp(flag, "--chat-template-file") == 0) {
        options->chat_template_path = value;
    } else if (strcmp(flag, "--price-input") == 0) {
        is_ok = parse_price(value, flag, &server->price_input_picousd);
    } else if (strcmp(flag, "--price-cached-input") == 0) {
        options->price_cached_text = value;
        is_ok = parse_price(value, flag, &server->price_cached_input_picousd);
    } else if (strcmp(flag, "--price-output") == 0) {
        is_ok = parse_price(value, flag, &server->price_output_picousd);
    } else if (strcmp(flag, "--max-body-bytes") == 0) {
        is_ok = quill_cli_parse_int64(command, flag, value, 1, INT32_MAX, &number);
        server->max_body_bytes = (size_t)number;
    } else {
        quill_cli_unknown_option(command, flag);
        is_ok = false;
    }
    return is_ok;
}

/* Every flag of serve takes a value. These are their spellings. */
static const char *const valued_flags[] = {
    "-m",
    "--model",
    "-hf",
    "--hf-repo",
    "--host",
    "--port",
    "--ctx",
    "--parallel",
    "--threads",
    "--cache-mem",
    "--queue-limit",
    "--api-key",
    "--model-alias",
    "--chat-template-file",
    "--price-input",
    "--price-cached-input",
    "--price-output",
    "--max-body-bytes",
};

static bool is_valued_flag(const char *arg) {
    for (size_t i = 0; i < sizeof(valued_flags) / sizeof(valued_flags[0]); i++) {
        if (strcmp(arg, valued_flags[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Returns -1 to continue, or the exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, serve_options *options) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (arg[0] != '-') {
            fprintf(stderr, "quill %s: unexpected argument '%s'; see 'quill %s --help'\n", command,
                    arg, command);
            return 2;
        }
        if (!is_valued_flag(arg)) {
            quill_cli_unknown_option(command, arg);
            return 2;
        }
        const char *value = quill_cli_take_value(command, argc, argv, &i);
        if (value == NULL || !parse_valued_flag(arg, value, options)) {
            return 2;
        }
    }
    if ((options->model_path == NULL) == (options->hub_reference == NULL)) {
        fprintf(stderr,
                "quill %s: pass exactly one of -m MODEL or -hf OWNER/REPO[:FILE]; see "
                "'quill %s --help'\n",
                command, command);
        return 2;
    }
    if (options->hub_reference != NULL &&
        quill_hub_check_reference(options->hub_reference) != QUILL_OK) {
        fprintf(stderr, "quill %s: %s\n", command, quill_error_message());
        return 2;
    }
    if (options->price_cached_text == NULL) {
        options->server.price_cached_input_picousd = options->server.price_input_picousd;
    }

    /* The server admits what the engine can run or queue, and responds with 429 beyond it. */
    options->server.max_requests_in_flight =
        options->engine.n_parallel + options->engine.queue_limit;
    return -1;
}

/* Raises the soft open-file limit to the hard one (at most OPEN_FILES_REQUESTED), because the
 * server sizes its connection limit from it and the usual soft default of 1024 allows only
 * about a thousand connections. Failure only leaves the lower limit, so it is logged. */
static void raise_open_file_limit(void) {
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur >= OPEN_FILES_REQUESTED) {
        return;
    }
    rlim_t wanted = files.rlim_max < OPEN_FILES_REQUESTED ? files.rlim_max : OPEN_FILES_REQUESTED;
    if (wanted <= files.rlim_cur) {
        return;
    }
    rlim_t previous = files.rlim_cur;
    files.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
        int saved_errno = errno;
        QUILL_LOG_WARN("server", "cannot raise the open-file limit; fewer connections fit",
                       "limit=%llu error=\"%s\"", (unsigned long long)previous,
                       strerror(saved_errno));
    }
}

/* Waits for SIGINT or SIGTERM; they were blocked before any thread started. */
static int wait_for_stop_signal(const sigset_t *signals) {
    int signal_number = 0;
    while (sigwait(signals, &signal_number) != 0) {
    }
    return signal_number;
}

/* Waits until every request in flight has its full response. A second SIGINT or SIGTERM
 * cancels what is still running. Each response then ends with an error (a stream with its
 * [DONE] line) if it can be written within STOP_FLUSH_MS. */
static void drain_until_idle_or_signal(quill_server *server, quill_engine *engine,
                                       const sigset_t *signals) {
    const struct timespec no_wait = {0, 0};
    while (quill_server_drain(server, DRAIN_POLL_MS) != QUILL_OK) {
        if (sigtimedwait(signals, NULL, &no_wait) > 0) {
            quill_server_stats stats;
            quill_server_get_stats(server, &stats);
            QUILL_LOG_WARN("server", "second stop signal; cancelling requests in flight",
                           "n_generations_in_flight=%lld",
                           (long long)stats.n_generations_in_flight);
            quill_engine_stop(engine);
            (void)quill_server_drain(server, STOP_FLUSH_MS);
            return;
        }
    }
}

int quill_cli_serve(int argc, char **argv) {
    serve_options options;
    memset(&options, 0, sizeof(options));
    options.server = quill_server_params_default();
    options.engine = quill_engine_params_default();
    int exit_code = parse_flags(argc, argv, &options);
    if (exit_code >= 0) {
        return exit_code;
    }

    char *template_text = NULL;
    char *downloaded_path = NULL;
    quill_server *server = NULL;
    quill_model *model = NULL;
    quill_engine *engine = NULL;
    exit_code = 1;

    /* Every thread inherits this mask, so only sigwait below receives the stop signals. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_open_file_limit();

    if (options.chat_template_path != NULL) {
        template_text =
            quill_cli_file_read(command, "--chat-template-file", options.chat_template_path, NULL);
        if (template_text == NULL) {
            goto cleanup;
        }
        options.server.chat_template = template_text;
    }
    if (quill_server_create(&options.server, &server) != QUILL_OK) {
        quill_cli_report_error(command, "cannot start the HTTP server");
        goto cleanup;
    }
    QUILL_LOG_INFO("server", "loading model", "address=http://%s:%u", options.server.host,
                   (unsigned)quill_server_port(server));

    /* Load the model (downloading it first for -hf), then start the engine on it. */
    const char *model_path = options.model_path;
    if (options.hub_reference != NULL) {
        if (quill_hub_resolve(options.hub_reference, &downloaded_path) != QUILL_OK) {
            quill_cli_report_error(command, "cannot download the model");
            goto cleanup;
        }
        model_path = downloaded_path;
    }
    quill_model_params model_params = quill_model_params_default();
    if (quill_model_load(model_path, &model_params, &model) != QUILL_OK) {
        quill_cli_report_error(command, "cannot load the model");
        goto cleanup;
    }
    if (quill_engine_create(model, &options.engine, &engine) != QUILL_OK) {
        quill_cli_report_error(command, "cannot start the engine");
        goto cleanup;
    }
    if (quill_server_set_model_path(server, model_path) != QUILL_OK) {
        quill_cli_report_error(command, "cannot serve the model");
        goto cleanup;
    }
    if (quill_server_set_engine(server, engine) != QUILL_OK) {
        quill_cli_report_error(command, "cannot serve the model");
        goto cleanup;
    }

    char quoted_path[512];
    char quoted_model[256];
    QUILL_LOG_INFO("server", "listening",
                   "address=http://%s:%u model=%s path=%s n_ctx=%lld n_parallel=%d "
                   "queue_limit=%d kernels=%s",
                   options.server.host, (unsigned)quill_server_port(server),
                   quill__log_quote(options.server.model_alias != NULL
                                        ? options.server.model_alias
                                        : quill_model_get_info(model)->name,
                                    quoted_model, (int)sizeof(quoted_model)),
                   quill__log_quote(model_path, quoted_path, (int)sizeof(quoted_path)),
                   (long long)quill_engine_n_ctx(engine), options.engine.n_parallel,
                   options.engine.queue_limit, quill__kernels_variant_name());

    int signal_number = wait_for_stop_signal(&signals);
    QUILL_LOG_INFO("server", "shutting down; finishing requests in flight", "signal=%s",
                   signal_number == SIGINT ? "SIGINT" : "SIGTERM");
    drain_until_idle_or_signal(server, engine, &signals);
    exit_code = 0;

cleanup:
    quill_server_destroy(server);
    quill_engine_destroy(engine);
    quill_model_destroy(model);
    quill_hub_path_free(downloaded_path);
    quill__free(template_text);
    if (exit_code == 0) {
        QUILL_LOG_INFO("server", "stopped", NULL);
    }
    return exit_code;
}
