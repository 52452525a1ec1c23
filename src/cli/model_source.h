/*
 * Where a subcommand's model comes from: a local GGUF file (-m PATH) or a Hugging Face reference
 * (-hf OWNER/REPO[:FILE]) that quill_hub_resolve downloads into the cache on first use. The
 * parser checks a reference's shape at once, so a malformed one is a usage error (exit 2)
 * before any file or network access. One thread at a time.
 */
#ifndef QUILL_CLI_MODEL_SOURCE_H
#define QUILL_CLI_MODEL_SOURCE_H

#include <stdbool.h>

#include "quill/tokenizer.h"

/* A parsed -m or -hf flag and, after resolving, the local path. Zero-initialize it. */
typedef struct quill_cli_model_source {
    const char *model_path;    /* -m value; borrowed from argv */
    const char *hub_reference; /* -hf value; borrowed from argv */
    char *downloaded_path;     /* owned: the cached file for hub_reference, after resolving */
} quill_cli_model_source;

/* Handles -m/--model and -hf/--hf-repo at argv[*index], advancing *index past the value.
 * Returns 1 when handled, 0 when argv[*index] is another flag, and -1 after printing a usage
 * error (a missing value or a malformed reference), for exit status 2. */
int quill_cli_model_source_parse_flag(quill_cli_model_source *source, const char *command,
                                      int argc, char **argv, int *index);

/* Returns true when -m or -hf was given. */
bool quill_cli_model_source_is_set(const quill_cli_model_source *source);

/* Returns true when exactly one of -m or -hf was given; otherwise prints "quill <command>: pass
 * exactly one of -m MODEL or -hf OWNER/REPO[:FILE]" and returns false, for exit status 2. */
bool quill_cli_model_source_check(const quill_cli_model_source *source, const char *command);

/* Returns the local path of the model: the -m value, or the -hf file, downloaded first when it
 * is not cached. Borrowed: valid until quill_cli_model_source_release. On failure prints
 * "quill <command>: cannot download the model: <reason>" to stderr and returns NULL (exit
 * status 1). */
const char *quill_cli_model_source_resolve(quill_cli_model_source *source, const char *command);

/* Resolves the model as quill_cli_model_source_resolve does and loads only its vocabulary.
 * Returns a new tokenizer; the caller destroys it. On failure prints the download error or
 * "quill <command>: cannot load the vocabulary: <reason>" and returns NULL (exit status 1). */
quill_tokenizer *quill_cli_model_source_load_tokenizer(quill_cli_model_source *source,
                                                      const char *command);

/* Frees the downloaded path. Accepts a source that was never resolved. */
void quill_cli_model_source_release(quill_cli_model_source *source);

#endif
