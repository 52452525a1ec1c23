/*
 * `quill detokenize`: prints the text that a list of token ids decodes to with a model's
 * vocabulary. Ids may be separate arguments or one argument with ids separated by spaces or
 * commas, so the output of `quill tokenize --ids` can be pasted back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_source.h"
#include "quill/tokenizer.h"

static const char *const command = "detokenize";

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill detokenize (-m MODEL | -hf OWNER/REPO[:FILE]) [--special] IDS...\n"
            "\n"
            "Prints the text of token ids (separate arguments, or one argument with ids\n"
            "separated by spaces or commas).\n"
            "\n"
            "options:\n"
            "  -m, --model PATH        GGUF file whose vocabulary is used\n"
            "  -hf, --hf-repo REF      Hugging Face reference OWNER/REPO[:FILE], downloaded into\n"
            "                          the cache on first use\n"
            "  --special               print the text of control tokens such as <s>\n"
            "  -h, --help              print this help\n");
}

/* Appends the ids found in one argument. Returns false after printing an error. */
static bool parse_ids(const char *arg, int32_t n_vocab, int32_t **ids, int64_t *n_ids,
                      int64_t *capacity) {
    const char *cursor = arg;
    for (;;) {
        while (*cursor == ' ' || *cursor == ',' || *cursor == '\t' || *cursor == '\n') {
            cursor++;
        }
        if (*cursor == '\0') {
            return true;
        }
        char *end = NULL;
        errno = 0;
        long long value = strtoll(cursor, &end, 10);
        if (end == cursor || errno != 0 ||
            (*end != '\0' && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            fprintf(stderr, "quill %s: '%s' is not a token id; ids are integers\n", command, arg);
            return false;
        }
        if (value < 0 || value >= n_vocab) {
            fprintf(stderr, "quill %s: token id %lld is out of range; the vocabulary has %d "
                            "tokens (ids 0 to %d)\n", command, value, (int)n_vocab,
                    (int)n_vocab - 1);
            return false;
        }
        if (*n_ids == *capacity) {
            int64_t bigger = *capacity > 0 ? *capacity * 2 : 64;
            int32_t *grown = quill__realloc_array(*ids, (size_t)bigger, sizeof(int32_t));
            if (grown == NULL) {
                fprintf(stderr, "quill %s: out of memory\n", command);
                return false;
            }
            *ids = grown;
            *capacity = bigger;
        }
        (*ids)[(*n_ids)++] = (int32_t)value;
        cursor = end;
    }
}

int quill_cli_detokenize(int argc, char **argv) {
    quill_cli_model_source model_source = {0};
    bool render_special = false;
    int first_id_arg = argc;
    quill_tokenizer *tokenizer = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    int64_t capacity = 0;
    char *text = NULL;
    size_t n_bytes = 0;
    bool *is_id_arg = quill__calloc((size_t)argc + 1, sizeof(bool));
    int exit_code = 2;

    if (is_id_arg == NULL) {
        fprintf(stderr, "quill %s: out of memory\n", command);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            exit_code = 0;
            goto cleanup;
        }
        int handled = quill_cli_model_source_parse_flag(&model_source, command, argc, argv, &i);
        if (handled < 0) {
            goto cleanup;
        }
        if (handled > 0) {
            continue;
        }
        if (strcmp(arg, "--special") == 0) {
            render_special = true;
        } else if (arg[0] == '-' && arg[1] != '\0' && (arg[1] < '0' || arg[1] > '9')) {
            quill_cli_unknown_option(command, arg);
            goto cleanup;
        } else {
            is_id_arg[i] = true;
            first_id_arg = i < first_id_arg ? i : first_id_arg;
        }
    }
    if (!quill_cli_model_source_check(&model_source, command)) {
        goto cleanup;
    }
    if (first_id_arg == argc) {
        fprintf(stderr, "quill %s: no token ids given; see 'quill %s --help'\n", command,
                command);
        goto cleanup;
    }

    exit_code = 1;
    tokenizer = quill_cli_model_source_load_tokenizer(&model_source, command);
    if (tokenizer == NULL) {
        goto cleanup;
    }
    exit_code = 2;
    for (int i = first_id_arg; i < argc; i++) {
        if (is_id_arg[i] &&
            !parse_ids(argv[i], quill_tokenizer_n_vocab(tokenizer), &ids, &n_ids, &capacity)) {
            goto cleanup;
        }
    }
    exit_code = 1;
    if (quill_tokenizer_decode(tokenizer, ids, n_ids, render_special, &text, &n_bytes) !=
        QUILL_OK) {
        quill_cli_report_error(command, "cannot decode the ids");
        goto cleanup;
    }
    fwrite(text, 1, n_bytes, stdout);
    putchar('\n');
    exit_code = 0;

cleanup:
    quill_text_free(text);
    quill__free(ids);
    quill_tokenizer_destroy(tokenizer);
    quill__free(is_id_arg);
    quill_cli_model_source_release(&model_source);
    return exit_code;
}
