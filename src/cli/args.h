/*
 * Command-line value parsing shared by the subcommands. Every parser prints an error that names
 * the flag, the value and the accepted range to stderr and returns false, so a subcommand can
 * exit with status 2.
 */
#ifndef QUILL_CLI_ARGS_H
#define QUILL_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

/* Accepted range of --ctx in run and serve, in tokens: room for one prompt token and one
 * generated token, up to 16 Mi. */
#define QUILL_CLI_MIN_CTX_TOKENS 2
#define QUILL_CLI_MAX_CTX_TOKENS ((int64_t)1 << 24)

/* Returns the value following flag at argv[*index] and advances *index, or prints
 * "quill <command>: <flag> needs a value" and returns NULL. */
const char *quill_cli_take_value(const char *command, int argc, char **argv, int *index);

bool quill_cli_parse_int64(const char *command, const char *flag, const char *text, int64_t min,
                           int64_t max, int64_t *out);
bool quill_cli_parse_int(const char *command, const char *flag, const char *text, int min, int max,
                         int *out);
bool quill_cli_parse_uint64(const char *command, const char *flag, const char *text,
                            uint64_t *out);
bool quill_cli_parse_double(const char *command, const char *flag, const char *text, double min,
                            double max, double *out);

/* Prints "quill <command>: unknown option '<arg>'; see 'quill <command> --help'". */
void quill_cli_unknown_option(const char *command, const char *arg);

/* Prints "quill <command>: <message>" and the thread's Quill error message, if any. */
void quill_cli_report_error(const char *command, const char *message);

#endif
