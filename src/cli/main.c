/*
 * quill: the command-line entry point. Dispatches to a subcommand; each prints its own --help.
 */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/commands.h"
#include "kernels/kernels.h"
#include "quill/status.h"

typedef struct subcommand {
    const char *name;                  /* as typed after `quill` */
    int (*main)(int argc, char **argv); /* receives argv starting at the subcommand's name */
    const char *summary;               /* one line for `quill --help` */
} subcommand;

static const subcommand subcommands[] = {
    {"run", quill_cli_run, "generate a completion from a prompt"},
    {"serve", quill_cli_serve, "serve an OpenAI-compatible HTTP API"},
    {"info", quill_cli_info, "print a model's architecture, sizes and tensor types"},
    {"tokenize", quill_cli_tokenize, "print the token ids of a text"},
    {"detokenize", quill_cli_detokenize, "print the text of token ids"},
    {"template", quill_cli_template, "render a chat template offline"},
    {"bench", quill_cli_bench, "measure prefill and decode speed"},
    {"bench-serve", quill_cli_bench_serve, "load-test a running server"},
};

static void print_usage(FILE *stream) {
    fprintf(stream, "usage: quill <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
        fprintf(stream, "  %-12s %s\n", subcommands[i].name, subcommands[i].summary);
    }
    fprintf(stream, "\nRun 'quill <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("quill 0.1.0\n");
        return 0;
    }
    /* Read QUILL_LOG_LEVEL now, so that an invalid value is reported even by commands that
     * log nothing. */
    (void)quill__log_enabled(QUILL_LOG_LEVEL_INFO);

    /* A QUILL_KERNELS value naming a variant this CPU lacks must stop the run here, rather
     * than leave it on the slow scalar kernels without a word. */
    if (quill__kernels_init() != QUILL_OK) {
        fprintf(stderr, "quill: %s\n", quill_error_message());
        return 1;
    }
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
        if (strcmp(argv[1], subcommands[i].name) == 0) {
            return subcommands[i].main(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "quill: unknown command '%s'; run 'quill --help' for the list\n", argv[1]);
    return 2;
}
