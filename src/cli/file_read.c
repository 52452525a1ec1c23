/*
 * Reads a file named on the command line into memory in one piece. The buffer doubles from
 * 4 KiB, so a file of n bytes costs O(n) copying, and it works on pipes and other streams
 * whose size is unknown up front.
 */
#include "cli/file_read.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"

char *quill_cli_file_read(const char *command, const char *flag, const char *path,
                          size_t *n_bytes) {
    if (n_bytes != NULL) {
        *n_bytes = 0;
    }
    FILE *stream = fopen(path, "rb");
    if (stream == NULL) {
        int saved_errno = errno;
        fprintf(stderr, "quill %s: cannot open %s '%s': %s\n", command, flag, path,
                strerror(saved_errno));
        return NULL;
    }
    size_t capacity = 4096;
    size_t length = 0;
    char *data = quill__malloc(capacity + 1);
    while (data != NULL) {
        length += fread(data + length, 1, capacity - length, stream);
        if (length < capacity) {
            break;
        }
        char *bigger = quill__realloc(data, capacity * 2 + 1);
        if (bigger == NULL) {
            quill__free(data);
            data = NULL;
            break;
        }
        data = bigger;
        capacity *= 2;
    }
    bool has_error = ferror(stream) != 0;
    fclose(stream);
    if (data == NULL || has_error) {
        fprintf(stderr, "quill %s: cannot read %s '%s'\n", command, flag, path);
        quill__free(data);
        return NULL;
    }
    data[length] = '\0';
    if (n_bytes != NULL) {
        *n_bytes = length;
    }
    return data;
}
