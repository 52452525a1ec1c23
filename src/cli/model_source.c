/*
 * -m / -hf parsing and resolution shared by the subcommands that load a model.
 */
#include "cli/model_source.h"

#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "quill/gguf.h"
#include "quill/hub.h"
#include "quill/status.h"
#include "quill/tokenizer.h"

int quill_cli_model_source_parse_flag(quill_cli_model_source *source, const char *command,
                                      int argc, char **argv, int *index) {
    const char *flag = argv[*index];
    bool is_model = strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0;
    bool is_hub = strcmp(flag, "-hf") == 0 || strcmp(flag, "--hf-repo") == 0;
    if (!is_model && !is_hub) {
        return 0;
    }
    const char *value = quill_cli_take_value(command, argc, argv, index);
    if (value == NULL) {
        return -1;
    }
    if (is_model) {
        source->model_path = value;
        return 1;
    }

    /* The reference's shape is checked here, so a typo fails before any download. */
    if (quill_hub_check_reference(value) != QUILL_OK) {
        fprintf(stderr, "quill %s: invalid value for %s: %s; for a local file use -m PATH\n",
                command, flag, quill_error_message());
        quill_error_clear();
        return -1;
    }
    source->hub_reference = value;
    return 1;
}

bool quill_cli_model_source_is_set(const quill_cli_model_source *source) {
    return source->model_path != NULL || source->hub_reference != NULL;
}

bool quill_cli_model_source_check(const quill_cli_model_source *source, const char *command) {
    if ((source->model_path == NULL) == (source->hub_reference == NULL)) {
        fprintf(stderr,
                "quill %s: pass exactly one of -m MODEL or -hf OWNER/REPO[:FILE]; see "
                "'quill %s --help'\n",
                command, command);
        return false;
    }
    return true;
}

const char *quill_cli_model_source_resolve(quill_cli_model_source *source, const char *command) {
    if (source->hub_reference == NULL) {
        return source->model_path;
    }
    if (source->downloaded_path == NULL) {
        quill_error_clear();
        if (quill_hub_resolve(source->hub_reference, &source->downloaded_path) != QUILL_OK) {
            quill_cli_report_error(command, "cannot download the model");
            return NULL;
        }
    }
    return source->downloaded_path;
}

quill_tokenizer *quill_cli_model_source_load_tokenizer(quill_cli_model_source *source,
                                                      const char *command) {
    const char *path = quill_cli_model_source_resolve(source, command);
    if (path == NULL) {
        return NULL;
    }
    quill_gguf *file = NULL;
    quill_tokenizer *tokenizer = NULL;
    quill_status status = quill_gguf_open(path, &file);
    if (status == QUILL_OK) {
        status = quill_tokenizer_load(file, &tokenizer);
    }
    quill_gguf_close(file);
    if (status != QUILL_OK) {
        quill_cli_report_error(command, "cannot load the vocabulary");
        return NULL;
    }
    return tokenizer;
}

void quill_cli_model_source_release(quill_cli_model_source *source) {
    quill_hub_path_free(source->downloaded_path);
    source->downloaded_path = NULL;
}
