/*
 * `quill template`: renders a chat template offline and prints the exact prompt bytes, with no
 * newline added. The template comes from a file or from a model's tokenizer.chat_template, the
 * messages from a JSON file (an array, or an object with "messages" and optionally "tools"),
 * normalized as the server normalizes OpenAI requests unless --raw-messages is given.
 */
#include <stdint.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/file_read.h"
#include "cli/model_source.h"
#include "quill/chat.h"
#include "quill/gguf.h"

static const char *const command = "template";

enum {
    MAX_VARIABLES = 64 /* --var flags on one command line */
};

/* Parsed command line. */
typedef struct template_options {
    quill_cli_model_source model_source; /* -m or -hf */
    const char *template_path;     /* --template-file */
    const char *messages_path;     /* --messages */
    const char *tools_path;        /* --tools, or NULL */
    const char *bos_token;         /* --bos-token, or NULL */
    const char *eos_token;         /* --eos-token, or NULL */
    bool add_generation_prompt;    /* --add-generation-prompt */
    bool use_raw_messages;         /* --raw-messages */
    int64_t now_unix_seconds;      /* --now, or -1 for the current time */
    struct json_object *variables; /* --var NAME=JSON, collected into an object */
} template_options;

static void print_usage(FILE *stream) {
    fprintf(
        stream,
        "usage: quill template (-m MODEL | -hf OWNER/REPO[:FILE] | --template-file FILE)\n"
        "                      --messages FILE.json\n"
        "                      [--tools FILE.json] [--bos-token TEXT] [--eos-token TEXT]\n"
        "                      [--add-generation-prompt] [--var NAME=JSON]... [--now TIME]\n"
        "                      [--raw-messages]\n"
        "\n"
        "Renders a chat template and prints the prompt exactly, without a trailing newline.\n"
        "\n"
        "options:\n"
        "  -m, --model PATH          GGUF file: reads tokenizer.chat_template and the BOS/EOS\n"
        "                            token texts (ChatML when the model has no template)\n"
        "  -hf, --hf-repo REF        Hugging Face reference OWNER/REPO[:FILE] to read as -m,\n"
        "                            downloaded into the cache on first use\n"
        "  --template-file PATH      Jinja template file to render instead of a model's\n"
        "  --messages PATH           JSON array of messages, or an object with \"messages\"\n"
        "                            and optionally \"tools\"\n"
        "  --tools PATH              JSON array of tool definitions (replaces \"tools\")\n"
        "  --bos-token TEXT          value of bos_token (default: the model's, else undefined)\n"
        "  --eos-token TEXT          value of eos_token (default: the model's, else undefined)\n"
        "  --add-generation-prompt   end with the assistant's turn header\n"
        "  --var NAME=JSON           extra template variable, e.g. enable_thinking=false;\n"
        "                            repeatable\n"
        "  --now TIME                clock for strftime_now, ISO 8601 UTC such as\n"
        "                            2026-01-15 or 2026-01-15T10:20:30Z (default: now)\n"
        "  --raw-messages            pass messages as given, without OpenAI normalization\n"
        "  -h, --help                print this help\n"
        "\n"
        "exit status: 0 rendered, 1 the template or an input failed, 2 usage error\n");
}

/* Parses an ISO 8601 date or date-time in UTC (optional Z or +HH:MM offset). */
static bool parse_time(const char *text, int64_t *out) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int n_read = 0;
    if (sscanf(text, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n_read) != 3) {
        return false;
    }

    const char *rest = text + n_read;
    if (*rest == 'T' || *rest == ' ') {
        int n_time = 0;
        if (sscanf(rest + 1, "%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &n_time) != 2) {
            return false;
        }
        rest += 1 + n_time;
        if (*rest == ':') {
            int n_seconds = 0;
            if (sscanf(rest + 1, "%2d%n", &tm.tm_sec, &n_seconds) != 1) {
                return false;
            }
            rest += 1 + n_seconds;
        }
    }

    int64_t offset_seconds = 0;
    if (*rest == 'Z') {
        rest++;
    } else if (*rest == '+' || *rest == '-') {
        int hours = 0;
        int minutes = 0;
        int n_offset = 0;
        if (sscanf(rest + 1, "%2d:%2d%n", &hours, &minutes, &n_offset) != 2) {
            return false;
        }
        offset_seconds = (int64_t)(hours * 3600 + minutes * 60) * (*rest == '+' ? 1 : -1);
        rest += 1 + n_offset;
    }

    if (*rest != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) {
        return false;
    }

    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm) - offset_seconds;
    return true;
}

static bool add_variable(template_options *options, const char *text) {
    const char *equals = strchr(text, '=');
    if (equals == NULL || equals == text) {
        fprintf(stderr,
                "quill %s: invalid --var '%s'; expected NAME=JSON such as "
                "enable_thinking=false\n",
                command, text);
        return false;
    }

    enum json_tokener_error error = json_tokener_success;
    struct json_object *value = json_tokener_parse_verbose(equals + 1, &error);
    if (error != json_tokener_success) {
        json_object_put(value);
        value = NULL;
    }
    if (error != json_tokener_success) {
        fprintf(stderr,
                "quill %s: invalid JSON in --var '%s'; quote strings as JSON, e.g. "
                "name='\"text\"'\n",
                command, text);
        return false;
    }

    char name[256];
    size_t n_name = (size_t)(equals - text);
    if (n_name >= sizeof(name)) {
        fprintf(stderr, "quill %s: --var name longer than 255 bytes\n", command);
        json_object_put(value);
        return false;
    }

    memcpy(name, text, n_name);
    name[n_name] = '\0';
    json_object_object_add(options->variables, name, value);
    return true;
}

/* Returns -1 to continue, or the exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, template_options *options) {
    int n_variables = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char **target = NULL;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            return 0;
        }
        int handled =
            quill_cli_model_source_parse_flag(&options->model_source, command, argc, argv, &i);
        if (handled < 0) {
            return 2;
        }
        if (handled > 0) {
            continue;
        }
        if (strcmp(arg, "--template-file") == 0) {
            target = &options->template_path;
        } else if (strcmp(arg, "--messages") == 0) {
            target = &options->messages_path;
        } else if (strcmp(arg, "--tools") == 0) {
            target = &options->tools_path;
        } else if (strcmp(arg, "--bos-token") == 0) {
            target = &options->bos_token;
        } else if (strcmp(arg, "--eos-token") == 0) {
            target = &options->eos_token;
        } else if (strcmp(arg, "--add-generation-prompt") == 0) {
            options->add_generation_prompt = true;
        } else if (strcmp(arg, "--raw-messages") == 0) {
            options->use_raw_messages = true;
        } else if (strcmp(arg, "--var") == 0) {
            const char *value = quill_cli_take_value(command, argc, argv, &i);
            if (value == NULL) {
                return 2;
            }
            if (++n_variables > MAX_VARIABLES) {
                fprintf(stderr, "quill %s: more than %d --var flags\n", command, MAX_VARIABLES);
                return 2;
            }
            if (!add_variable(options, value)) {
                return 2;
            }
        } else if (strcmp(arg, "--now") == 0) {
            const char *value = quill_cli_take_value(command, argc, argv, &i);
            if (value == NULL) {
                return 2;
            }
            if (!parse_time(value, &options->now_unix_seconds)) {
                fprintf(stderr,
                        "quill %s: invalid --now '%s'; expected ISO 8601 such as "
                        "2026-01-15 or 2026-01-15T10:20:30Z\n",
                        command, value);
                return 2;
            }
        } else {
            quill_cli_unknown_option(command, arg);
            return 2;
        }
        if (target != NULL) {
            *target = quill_cli_take_value(command, argc, argv, &i);
            if (*target == NULL) {
                return 2;
            }
        }
    }
    const quill_cli_model_source *source = &options->model_source;
    bool has_model = quill_cli_model_source_is_set(source);
    bool has_both_models = source->model_path != NULL && source->hub_reference != NULL;
    if (has_model == (options->template_path != NULL) || has_both_models) {
        fprintf(stderr,
                "quill %s: pass exactly one of -m MODEL, -hf OWNER/REPO[:FILE] and "
                "--template-file FILE; see 'quill %s --help'\n",
                command, command);
        return 2;
    }
    if (options->messages_path == NULL) {
        fprintf(stderr, "quill %s: --messages FILE is required; see 'quill %s --help'\n", command,
                command);
        return 2;
    }
    return -1;
}

static struct json_object *read_json_file(const char *flag, const char *path) {
    size_t n_bytes = 0;
    char *text = quill_cli_file_read(command, flag, path, &n_bytes);
    if (text == NULL) {
        return NULL;
    }
    if (n_bytes >= (size_t)INT32_MAX) {
        fprintf(stderr, "quill %s: %s '%s' is larger than 2 GiB\n", command, flag, path);
        quill__free(text);
        return NULL;
    }
    struct json_tokener *tokener = json_tokener_new();
    struct json_object *json = NULL;
    if (tokener != NULL) {
        /* Parse the terminating NUL too, so that a bare number or literal is complete. */
        json = json_tokener_parse_ex(tokener, text, (int)n_bytes + 1);
        enum json_tokener_error error = json_tokener_get_error(tokener);
        if (error != json_tokener_success) {
            fprintf(stderr, "quill %s: %s '%s' is not valid JSON: %s at byte %zu\n", command, flag,
                    path, json_tokener_error_desc(error), json_tokener_get_parse_end(tokener));
            json_object_put(json);
            json = NULL;
        }
        json_tokener_free(tokener);
    }
    quill__free(text);
    return json;
}

/* Copies the text of token `id_key` of the vocabulary into a new string, or NULL. */
static char *read_token_text(const quill_gguf *file, const char *id_key) {
    uint32_t token_id = 0;
    quill_gguf_array tokens;
    if (quill_gguf_get_u32(file, id_key, &token_id) != QUILL_OK ||
        quill_gguf_get_array(file, "tokenizer.ggml.tokens", &tokens) != QUILL_OK ||
        tokens.item_type != QUILL_GGUF_STRING || token_id >= tokens.n_items) {
        return NULL;
    }
    const char *data = NULL;
    size_t n_bytes = 0;
    quill_gguf_array_string(&tokens, token_id, &data, &n_bytes);
    return quill__strndup(data, n_bytes);
}

/* Reads the template and the special tokens of a model. */
static int load_from_model(const char *path, char **source, size_t *n_source, char **bos_token,
                           char **eos_token) {
    quill_gguf *file = NULL;
    quill_status status = quill_gguf_open(path, &file);
    if (status != QUILL_OK) {
        quill_cli_report_error(command, "cannot open -m model");
        return 1;
    }
    const char *data = NULL;
    size_t n_bytes = 0;
    if (quill_gguf_get_string(file, "tokenizer.chat_template", &data, &n_bytes) == QUILL_OK) {
        *source = quill__strndup(data, n_bytes);
        *n_source = n_bytes;
    } else {
        fprintf(stderr,
                "quill %s: model '%s' has no tokenizer.chat_template; rendering the "
                "default ChatML template\n",
                command, path);
        *source = quill__strdup(quill_chat_default_template());
        *n_source = strlen(quill_chat_default_template());
    }
    *bos_token = read_token_text(file, "tokenizer.ggml.bos_token_id");
    *eos_token = read_token_text(file, "tokenizer.ggml.eos_token_id");
    quill_gguf_close(file);
    if (*source == NULL) {
        fprintf(stderr, "quill %s: out of memory\n", command);
        return 1;
    }
    return 0;
}

static int run(template_options *options) {
    int exit_code = 1;
    char *source = NULL;
    size_t n_source = 0;
    char *model_bos = NULL;
    char *model_eos = NULL;
    struct json_object *input = NULL;
    struct json_object *tools_file = NULL;
    struct json_object *normalized = NULL;
    quill_chat_template *chat_template = NULL;
    quill_chat_rendered rendered = {0};

    /* Template and special tokens. */
    if (quill_cli_model_source_is_set(&options->model_source)) {
        const char *model_path = quill_cli_model_source_resolve(&options->model_source, command);
        if (model_path == NULL ||
            load_from_model(model_path, &source, &n_source, &model_bos, &model_eos) != 0) {
            goto cleanup;
        }
    } else {
        source = quill_cli_file_read(command, "--template-file", options->template_path,
                                     &n_source);
        if (source == NULL) {
            goto cleanup;
        }
    }
    if (quill_chat_template_create(source, n_source, &chat_template) != QUILL_OK) {
        quill_cli_report_error(command, "cannot parse the chat template");
        goto cleanup;
    }

    /* Messages and tools. */
    input = read_json_file("--messages", options->messages_path);
    if (input == NULL) {
        goto cleanup;
    }
    struct json_object *messages = input;
    struct json_object *tools = NULL;
    if (json_object_is_type(input, json_type_object)) {
        if (!json_object_object_get_ex(input, "messages", &messages)) {
            fprintf(stderr, "quill %s: --messages '%s' is an object without \"messages\"\n",
                    command, options->messages_path);
            goto cleanup;
        }
        json_object_object_get_ex(input, "tools", &tools);
    }
    if (!json_object_is_type(messages, json_type_array)) {
        fprintf(stderr, "quill %s: --messages '%s' must hold a JSON array of messages\n", command,
                options->messages_path);
        goto cleanup;
    }
    if (options->tools_path != NULL) {
        tools_file = read_json_file("--tools", options->tools_path);
        if (tools_file == NULL) {
            goto cleanup;
        }
        tools = tools_file;
    }
    if (tools != NULL && !json_object_is_type(tools, json_type_array) &&
        !json_object_is_type(tools, json_type_null)) {
        fprintf(stderr, "quill %s: tools must be a JSON array\n", command);
        goto cleanup;
    }
    if (!options->use_raw_messages) {
        bool keeps_parts = quill_chat_template_uses_content_parts(chat_template);
        if (quill_chat_messages_normalize(messages, keeps_parts, &normalized) != QUILL_OK) {
            quill_cli_report_error(command, "invalid --messages");
            goto cleanup;
        }
        messages = normalized;
    }

    /* Render and print the exact bytes. */
    quill_chat_render_params params = quill_chat_render_params_default();
    params.messages = messages;
    params.tools = json_object_is_type(tools, json_type_array) ? tools : NULL;
    params.extra_vars = options->variables;
    params.bos_token = options->bos_token != NULL ? options->bos_token : model_bos;
    params.eos_token = options->eos_token != NULL ? options->eos_token : model_eos;
    params.add_generation_prompt = options->add_generation_prompt;
    params.now_unix_seconds = options->now_unix_seconds;
    if (quill_chat_template_render(chat_template, &params, &rendered) != QUILL_OK) {
        fprintf(stderr, "quill %s: rendering failed: %s\n", command, quill_error_message());
        goto cleanup;
    }
    if (fwrite(rendered.text, 1, rendered.n_bytes, stdout) != rendered.n_bytes ||
        fflush(stdout) != 0) {
        fprintf(stderr, "quill %s: writing the output failed\n", command);
        goto cleanup;
    }
    exit_code = 0;

cleanup:
    quill_chat_rendered_release(&rendered);
    quill_chat_template_destroy(chat_template);
    json_object_put(normalized);
    json_object_put(tools_file);
    json_object_put(input);
    quill__free(model_bos);
    quill__free(model_eos);
    quill__free(source);
    return exit_code;
}

int quill_cli_template(int argc, char **argv) {
    template_options options;
    memset(&options, 0, sizeof(options));
    options.now_unix_seconds = -1;
    options.variables = json_object_new_object();
    if (options.variables == NULL) {
        fprintf(stderr, "quill %s: out of memory\n", command);
        return 1;
    }
    int exit_code = parse_flags(argc, argv, &options);
    if (exit_code < 0) {
        exit_code = run(&options);
    }
    json_object_put(options.variables);
    quill_cli_model_source_release(&options.model_source);
    return exit_code;
}
