/*
 * `quill info`: prints a model's architecture, sizes, tensor types, vocabulary and chat template
 * presence, read straight from the GGUF metadata (no model is loaded, so it also works for
 * architectures Quill cannot run). Text output for people, --json for scripts.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_source.h"
#include "quill/gguf.h"
#include "quill/tensor_type.h"

static const char *const command = "info";

/* One optional integer field; is_present is false when the key is absent or unusable. */
typedef struct info_integer {
    int64_t value;   /* the value when present */
    bool is_present; /* the key exists and contains an integer */
} info_integer;

/* What `quill info` reports; strings are borrowed from the open file and not NUL-terminated. */
typedef struct model_info {
    const char *architecture; /* general.architecture */
    size_t n_architecture;    /* bytes of architecture */
    const char *name;         /* general.name, or NULL */
    size_t n_name;            /* bytes of name */
    info_integer n_layers;    /* <arch>.block_count */
    info_integer n_embd;      /* <arch>.embedding_length */
    info_integer n_ff;        /* <arch>.feed_forward_length */
    info_integer n_heads;     /* <arch>.attention.head_count */
    info_integer n_kv_heads;  /* <arch>.attention.head_count_kv, else n_heads */
    info_integer head_dim;    /* <arch>.attention.key_length, else n_embd / n_heads */
    info_integer n_ctx_train; /* <arch>.context_length */
    double rope_freq_base;    /* <arch>.rope.freq_base */
    bool has_rope_freq_base;  /* the key exists */
    int64_t n_params;         /* sum of the element counts of all tensors */
    int64_t n_tensors_by_type[QUILL_TYPE_COUNT]; /* tensor count per type id */
    const char *vocab_type;   /* tokenizer.ggml.model, or NULL */
    size_t n_vocab_type;      /* bytes of vocab_type */
    const char *pre;          /* tokenizer.ggml.pre, or NULL */
    size_t n_pre;             /* bytes of pre */
    info_integer n_vocab;     /* items of tokenizer.ggml.tokens */
    bool has_chat_template;   /* tokenizer.chat_template exists and is a string */
    size_t chat_template_bytes; /* its length */
} model_info;

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill info -m MODEL [--json]\n"
            "       quill info -hf OWNER/REPO[:FILE] [--json]\n"
            "\n"
            "Prints a GGUF model's architecture, sizes, tensor types, vocabulary and chat template\n"
            "presence, read from the file's metadata.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH        GGUF file to describe\n"
            "  -hf, --hf-repo REF      Hugging Face reference OWNER/REPO[:FILE], downloaded into\n"
            "                          the cache on first use\n"
            "  --json                  print one JSON object instead of text\n"
            "  -h, --help              print this help\n");
}

/* Reads an integer key, or the first item of an integer array (some architectures store
 * per-layer head counts). */
static info_integer read_integer(const quill_gguf *file, const char *key) {
    info_integer result = {0, false};
    if (quill_gguf_get_i64(file, key, &result.value) == QUILL_OK) {
        result.is_present = true;
        return result;
    }
    quill_gguf_array array;
    if (quill_gguf_get_array(file, key, &array) == QUILL_OK && array.n_items > 0 &&
        array.item_type != QUILL_GGUF_STRING && array.item_type != QUILL_GGUF_ARRAY) {
        result.value = quill_gguf_array_int(&array, 0);
        result.is_present = true;
    }
    quill_error_clear();
    return result;
}

static info_integer read_arch_integer(const quill_gguf *file, const model_info *info,
                                      const char *suffix) {
    char key[256];
    int n = snprintf(key, sizeof(key), "%.*s.%s", (int)info->n_architecture, info->architecture,
                     suffix);
    if (n < 0 || (size_t)n >= sizeof(key)) {
        return (info_integer){0, false};
    }
    return read_integer(file, key);
}

static void read_sizes(const quill_gguf *file, model_info *info) {
    info->n_layers = read_arch_integer(file, info, "block_count");
    info->n_embd = read_arch_integer(file, info, "embedding_length");
    info->n_ff = read_arch_integer(file, info, "feed_forward_length");
    info->n_heads = read_arch_integer(file, info, "attention.head_count");
    info->n_kv_heads = read_arch_integer(file, info, "attention.head_count_kv");
    if (!info->n_kv_heads.is_present) {
        info->n_kv_heads = info->n_heads;
    }
    info->head_dim = read_arch_integer(file, info, "attention.key_length");
    if (!info->head_dim.is_present && info->n_embd.is_present && info->n_heads.is_present &&
        info->n_heads.value > 0) {
        info->head_dim = (info_integer){info->n_embd.value / info->n_heads.value, true};
    }
    info->n_ctx_train = read_arch_integer(file, info, "context_length");

    char key[256];
    int n = snprintf(key, sizeof(key), "%.*s.rope.freq_base", (int)info->n_architecture,
                     info->architecture);
    info->has_rope_freq_base = n > 0 && (size_t)n < sizeof(key) &&
                               quill_gguf_get_f64(file, key, &info->rope_freq_base) == QUILL_OK;
    quill_error_clear();
}

static void read_tensors(const quill_gguf *file, model_info *info) {
    for (int64_t i = 0; i < quill_gguf_n_tensors(file); i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(file, i);
        /* The reader checked that each element count fits in int64; the sum saturates. */
        int64_t n_elements = tensor->ne[0] * tensor->ne[1] * tensor->ne[2] * tensor->ne[3];
        if (__builtin_add_overflow(info->n_params, n_elements, &info->n_params)) {
            info->n_params = INT64_MAX;
        }
        info->n_tensors_by_type[tensor->type]++;
    }
}

static void read_vocabulary(const quill_gguf *file, model_info *info) {
    if (quill_gguf_get_string(file, "tokenizer.ggml.model", &info->vocab_type,
                              &info->n_vocab_type) != QUILL_OK) {
        info->vocab_type = NULL;
    }
    if (quill_gguf_get_string(file, "tokenizer.ggml.pre", &info->pre, &info->n_pre) != QUILL_OK) {
        info->pre = NULL;
    }
    quill_gguf_array tokens;
    if (quill_gguf_get_array(file, "tokenizer.ggml.tokens", &tokens) == QUILL_OK) {
        info->n_vocab = (info_integer){(int64_t)tokens.n_items, true};
    }
    const char *template_text = NULL;
    info->has_chat_template = quill_gguf_get_string(file, "tokenizer.chat_template", &template_text,
                                                    &info->chat_template_bytes) == QUILL_OK;
    quill_error_clear();
}

static quill_status read_info(const quill_gguf *file, model_info *info) {
    memset(info, 0, sizeof(*info));
    quill_status status = quill_gguf_get_string(file, "general.architecture", &info->architecture,
                                                &info->n_architecture);
    if (status == QUILL_ERR_NOT_FOUND) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: general.architecture is missing; the file is not a "
                               "model, convert it with llama.cpp",
                               quill_gguf_path(file));
    }
    if (status != QUILL_OK) {
        return status;
    }
    if (quill_gguf_get_string(file, "general.name", &info->name, &info->n_name) != QUILL_OK) {
        info->name = NULL;
    }
    read_sizes(file, info);
    read_tensors(file, info);
    read_vocabulary(file, info);
    return QUILL_OK;
}

/* ---- Text output --------------------------------------------------------------------------- */

/* Prints GGUF text with control bytes replaced, so a crafted name cannot move the cursor. */
static void print_text(const char *text, size_t n_bytes) {
    for (size_t i = 0; i < n_bytes; i++) {
        unsigned char c = (unsigned char)text[i];
        putchar(c < 0x20 || c == 0x7f ? '?' : c);
    }
}

static void print_integer_line(const char *label, info_integer value) {
    if (value.is_present) {
        printf("%-17s %" PRId64 "\n", label, value.value);
    } else {
        printf("%-17s unknown\n", label);
    }
}

/* Prints a count with a K/M/B suffix, e.g. "1.10B". */
static void print_scaled(int64_t count) {
    if (count >= 1000000000) {
        printf("%.2fB", (double)count / 1e9);
    } else if (count >= 1000000) {
        printf("%.2fM", (double)count / 1e6);
    } else if (count >= 1000) {
        printf("%.2fK", (double)count / 1e3);
    } else {
        printf("%" PRId64, count);
    }
}

static void print_text_info(const quill_gguf *file, const model_info *info) {
    printf("%-17s %s\n", "file:", quill_gguf_path(file));
    printf("%-17s %u\n", "gguf version:", quill_gguf_version(file));
    printf("%-17s ", "architecture:");
    print_text(info->architecture, info->n_architecture);
    printf("\n%-17s ", "name:");
    print_text(info->name != NULL ? info->name : "unknown", info->name != NULL ? info->n_name : 7);
    printf("\n");
    print_integer_line("layers:", info->n_layers);
    print_integer_line("n_embd:", info->n_embd);
    print_integer_line("n_ff:", info->n_ff);
    print_integer_line("n_heads:", info->n_heads);
    print_integer_line("n_kv_heads:", info->n_kv_heads);
    print_integer_line("head_dim:", info->head_dim);
    print_integer_line("context length:", info->n_ctx_train);
    if (info->has_rope_freq_base) {
        printf("%-17s %g\n", "rope freq base:", info->rope_freq_base);
    } else {
        /* Loaders, Quill's and llama.cpp's, use 10000 when the key is absent. */
        printf("%-17s 10000 (default; the key is absent)\n", "rope freq base:");
    }
    printf("%-17s ", "parameters:");
    print_scaled(info->n_params);
    printf(" (%" PRId64 ")\n", info->n_params);
    printf("%-17s %.2f MiB (%zu bytes)\n", "file size:",
           (double)quill_gguf_file_bytes(file) / (1024.0 * 1024.0), quill_gguf_file_bytes(file));

    printf("%-17s", "tensor types:");
    const char *separator = " ";
    for (uint32_t type = 0; type < QUILL_TYPE_COUNT; type++) {
        if (info->n_tensors_by_type[type] > 0) {
            printf("%s%s: %" PRId64, separator, quill_type_name(type),
                   info->n_tensors_by_type[type]);
            separator = ", ";
        }
    }
    printf("%s\n", separator[0] == ' ' ? " none" : "");

    printf("%-17s ", "vocabulary:");
    print_text(info->vocab_type != NULL ? info->vocab_type : "none",
               info->vocab_type != NULL ? info->n_vocab_type : 4);
    printf(", %" PRId64 " tokens\n", info->n_vocab.is_present ? info->n_vocab.value : 0);
    printf("%-17s ", "pre-tokenizer:");
    print_text(info->pre != NULL ? info->pre : "default", info->pre != NULL ? info->n_pre : 7);
    printf("\n");
    if (info->has_chat_template) {
        printf("%-17s present (%zu bytes)\n", "chat template:", info->chat_template_bytes);
    } else {
        printf("%-17s absent\n", "chat template:");
    }
}

/* ---- JSON output --------------------------------------------------------------------------- */

static json_object *json_integer(info_integer value) {
    return value.is_present ? json_object_new_int64(value.value) : NULL;
}

static json_object *json_text(const char *text, size_t n_bytes) {
    return text != NULL ? json_object_new_string_len(text, (int)n_bytes) : NULL;
}

static quill_status print_json_info(const quill_gguf *file, const model_info *info) {
    json_object *root = json_object_new_object();
    json_object *types = json_object_new_object();
    json_object *vocab = json_object_new_object();
    json_object *chat_template = json_object_new_object();
    if (root == NULL || types == NULL || vocab == NULL || chat_template == NULL) {
        json_object_put(root);
        json_object_put(types);
        json_object_put(vocab);
        json_object_put(chat_template);
        return quill_error_set(QUILL_ERR_NOMEM, "info: out of memory for the JSON output");
    }
    json_object_object_add(root, "file", json_object_new_string(quill_gguf_path(file)));
    json_object_object_add(root, "gguf_version", json_object_new_int64(quill_gguf_version(file)));
    json_object_object_add(root, "architecture",
                           json_text(info->architecture, info->n_architecture));
    json_object_object_add(root, "name", json_text(info->name, info->n_name));
    json_object_object_add(root, "n_layers", json_integer(info->n_layers));
    json_object_object_add(root, "n_embd", json_integer(info->n_embd));
    json_object_object_add(root, "n_ff", json_integer(info->n_ff));
    json_object_object_add(root, "n_heads", json_integer(info->n_heads));
    json_object_object_add(root, "n_kv_heads", json_integer(info->n_kv_heads));
    json_object_object_add(root, "head_dim", json_integer(info->head_dim));
    json_object_object_add(root, "context_length", json_integer(info->n_ctx_train));
    json_object_object_add(root, "rope_freq_base",
                           json_object_new_double(info->has_rope_freq_base ? info->rope_freq_base
                                                                           : 10000.0));
    json_object_object_add(root, "n_params", json_object_new_int64(info->n_params));
    json_object_object_add(root, "file_bytes",
                           json_object_new_int64((int64_t)quill_gguf_file_bytes(file)));
    for (uint32_t type = 0; type < QUILL_TYPE_COUNT; type++) {
        if (info->n_tensors_by_type[type] > 0) {
            json_object_object_add(types, quill_type_name(type),
                                   json_object_new_int64(info->n_tensors_by_type[type]));
        }
    }
    json_object_object_add(root, "tensor_types", types);
    json_object_object_add(vocab, "type", json_text(info->vocab_type, info->n_vocab_type));
    json_object_object_add(vocab, "n_tokens", json_integer(info->n_vocab));
    json_object_object_add(vocab, "pre", json_text(info->pre, info->n_pre));
    json_object_object_add(root, "vocab", vocab);
    json_object_object_add(chat_template, "present",
                           json_object_new_boolean(info->has_chat_template));
    json_object_object_add(chat_template, "n_bytes",
                           json_object_new_int64((int64_t)info->chat_template_bytes));
    json_object_object_add(root, "chat_template", chat_template);

    printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return QUILL_OK;
}

/* ---- Entry point --------------------------------------------------------------------------- */

/* Parses the flags; returns 0 to continue, or an exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, quill_cli_model_source *model_source,
                       bool *use_json, bool *is_done) {
    *is_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            *is_done = true;
            return 0;
        }
        int handled = quill_cli_model_source_parse_flag(model_source, command, argc, argv, &i);
        if (handled < 0) {
            return 2;
        }
        if (handled > 0) {
            continue;
        }
        if (strcmp(arg, "--json") == 0) {
            *use_json = true;
        } else {
            quill_cli_unknown_option(command, arg);
            return 2;
        }
    }
    if (!quill_cli_model_source_check(model_source, command)) {
        return 2;
    }
    return 0;
}

int quill_cli_info(int argc, char **argv) {
    quill_cli_model_source model_source = {0};
    bool use_json = false;
    bool is_done = false;
    int exit_code = parse_flags(argc, argv, &model_source, &use_json, &is_done);
    if (exit_code != 0 || is_done) {
        return exit_code;
    }

    quill_gguf *file = NULL;
    model_info info;
    exit_code = 1;
    quill_error_clear();
    const char *model_path = quill_cli_model_source_resolve(&model_source, command);
    if (model_path == NULL) {
        goto cleanup;
    }
    if (quill_gguf_open(model_path, &file) != QUILL_OK) {
        quill_cli_report_error(command, "cannot read the model");
        goto cleanup;
    }
    if (read_info(file, &info) != QUILL_OK) {
        quill_cli_report_error(command, "cannot describe the model");
        goto cleanup;
    }
    if (use_json) {
        if (print_json_info(file, &info) != QUILL_OK) {
            quill_cli_report_error(command, "cannot print the model description");
            goto cleanup;
        }
    } else {
        print_text_info(file, &info);
    }
    exit_code = 0;

cleanup:
    quill_gguf_close(file);
    quill_cli_model_source_release(&model_source);
    return exit_code;
}
