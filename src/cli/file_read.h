/*
 * Whole-file reading for the subcommands' file flags (--file, --template-file, --messages,
 * --chat-template-file). Errors go to stderr in the CLI's "quill <command>: ..." form, so a
 * subcommand only has to exit. Safe from any thread.
 */
#ifndef QUILL_CLI_FILE_READ_H
#define QUILL_CLI_FILE_READ_H

#include <stddef.h>

/* Returns a new buffer with the contents of path and a terminating NUL byte that n_bytes does
 * not count; the caller frees it with quill__free. n_bytes may be NULL. On failure prints
 * "quill <command>: cannot open <flag> '<path>': <reason>" or "... cannot read ..." and
 * returns NULL. */
char *quill_cli_file_read(const char *command, const char *flag, const char *path,
                          size_t *n_bytes);

#endif
