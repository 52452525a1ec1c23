/*
 * `quill tokenize`: prints the token ids of a text with a model's vocabulary, one
 * `id<TAB>"piece"` line per token, or all ids on one line with --ids. Only the vocabulary is
 * read (quill_gguf_open + quill_tokenizer_load), so it works for any GGUF with a tokenizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/file_read.h"
#include "cli/model_source.h"
#include "quill/tokenizer.h"

static const char *const command = "tokenize";

/* Parsed command line. */
typedef struct tokenize_options {
    quill_cli_model_source model_source; /* -m or -hf */
    const char *file_path;   /* --file, or NULL */
    const char *text;        /* positional TEXT, or NULL */
    bool use_ids;            /* --ids */
    bool add_special;        /* false with --no-bos */
    bool parse_special;      /* --parse-special */
} tokenize_options;

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill tokenize (-m MODEL | -hf OWNER/REPO[:FILE]) [--no-bos] [--parse-special]\n"
            "                      [--ids] (--file FILE | TEXT)\n"
            "\n"
            "Prints the tokens of a text, one 'id<TAB>piece' line per token with the piece as a\n"
            "JSON string (bytes that are not valid UTF-8 shown as \\xNN), or the ids alone.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH        GGUF file whose vocabulary is used\n"
            "  -hf, --hf-repo REF      Hugging Face reference OWNER/REPO[:FILE], downloaded into\n"
            "                          the cache on first use\n"
            "  --file PATH             tokenize the contents of this file instead of TEXT\n"
            "  --no-bos                do not add the BOS/EOS (CLS/SEP) tokens of the vocabulary\n"
            "  --parse-special         match control-token text such as <|im_start|> in the text\n"
            "  --ids                   print only the ids, separated by spaces, on one line\n"
            "  -h, --help              print this help\n");
}

/* Returns -1 to continue, or the exit code (0 after --help, 2 on misuse). */
static int parse_flags(int argc, char **argv, tokenize_options *options) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
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
        if (strcmp(arg, "--file") == 0) {
            options->file_path = quill_cli_take_value(command, argc, argv, &i);
            if (options->file_path == NULL) {
                return 2;
            }
        } else if (strcmp(arg, "--no-bos") == 0) {
            options->add_special = false;
        } else if (strcmp(arg, "--parse-special") == 0) {
            options->parse_special = true;
        } else if (strcmp(arg, "--ids") == 0) {
            options->use_ids = true;
        } else if (arg[0] == '-' && arg[1] != '\0') {
            quill_cli_unknown_option(command, arg);
            return 2;
        } else if (options->text != NULL) {
            fprintf(stderr, "quill %s: more than one TEXT given ('%s'); quote the text as one "
                            "argument\n", command, arg);
            return 2;
        } else {
            options->text = arg;
        }
    }
    if (!quill_cli_model_source_check(&options->model_source, command)) {
        return 2;
    }
    if (options->text == NULL && options->file_path == NULL) {
        fprintf(stderr, "quill %s: no text given; pass TEXT or --file FILE\n", command);
        return 2;
    }
    if (options->text != NULL && options->file_path != NULL) {
        fprintf(stderr, "quill %s: both TEXT and --file given; pass only one\n", command);
        return 2;
    }
    return -1;
}

/* Prints bytes as a JSON string; bytes that are not valid UTF-8 appear as \xNN. */
static void print_piece(const char *piece, size_t n_bytes) {
    putchar('"');
    for (size_t i = 0; i < n_bytes;) {
        unsigned char c = (unsigned char)piece[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
            i++;
        } else if (c == '\n') {
            fputs("\\n", stdout);
            i++;
        } else if (c == '\t') {
            fputs("\\t", stdout);
            i++;
        } else if (c == '\r') {
            fputs("\\r", stdout);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            printf("\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            putchar(c);
            i++;
        } else {
            size_t length = c >= 0xF0 ? 4 : (c >= 0xE0 ? 3 : (c >= 0xC0 ? 2 : 1));
            bool is_valid = length > 1 && c >= 0xC2 && c <= 0xF4 && length <= n_bytes - i;
            for (size_t k = 1; is_valid && k < length; k++) {
                is_valid = ((unsigned char)piece[i + k] & 0xC0) == 0x80;
            }
            if (is_valid) {
                fwrite(piece + i, 1, length, stdout);
                i += length;
            } else {
                printf("\\x%02x", c);
                i++;
            }
        }
    }
    putchar('"');
}

static int print_tokens(const quill_tokenizer *tokenizer, const int32_t *tokens,
                        int64_t n_tokens, bool use_ids) {
    size_t capacity = quill_detokenizer_max_bytes(tokenizer);
    char *piece = quill__malloc(capacity > 0 ? capacity : 1);
    if (piece == NULL) {
        fprintf(stderr, "quill %s: out of memory\n", command);
        return 1;
    }
    for (int64_t i = 0; i < n_tokens; i++) {
        if (use_ids) {
            printf(i == 0 ? "%d" : " %d", (int)tokens[i]);
            continue;
        }
        int64_t n_piece = quill_tokenizer_token_bytes(tokenizer, tokens[i], true, piece, capacity);
        printf("%d\t", (int)tokens[i]);
        print_piece(piece, n_piece > 0 ? (size_t)n_piece : 0);
        putchar('\n');
    }
    if (use_ids) {
        putchar('\n');
    }
    quill__free(piece);
    return 0;
}

int quill_cli_tokenize(int argc, char **argv) {
    tokenize_options options = {.add_special = true};
    quill_tokenizer *tokenizer = NULL;
    char *file_text = NULL;
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    int exit_code = parse_flags(argc, argv, &options);
    if (exit_code >= 0) {
        return exit_code;
    }

    exit_code = 1;
    const char *text = options.text;
    size_t n_bytes = text != NULL ? strlen(text) : 0;
    if (options.file_path != NULL) {
        file_text = quill_cli_file_read(command, "--file", options.file_path, &n_bytes);
        if (file_text == NULL) {
            goto cleanup;
        }
        text = file_text;
    }
    tokenizer = quill_cli_model_source_load_tokenizer(&options.model_source, command);
    if (tokenizer == NULL) {
        goto cleanup;
    }
    uint32_t flags = (options.add_special ? QUILL_TOKENIZE_ADD_SPECIAL : 0) |
                     (options.parse_special ? QUILL_TOKENIZE_PARSE_SPECIAL : 0);
    if (quill_tokenizer_encode(tokenizer, text, n_bytes, flags, &tokens, &n_tokens) != QUILL_OK) {
        quill_cli_report_error(command, "cannot tokenize the text");
        goto cleanup;
    }
    exit_code = print_tokens(tokenizer, tokens, n_tokens, options.use_ids);

cleanup:
    quill_tokens_free(tokens);
    quill_tokenizer_destroy(tokenizer);
    quill__free(file_text);
    quill_cli_model_source_release(&options.model_source);
    return exit_code;
}
