/*
 * Test helpers. Single-threaded use from test programs.
 */
#include "test_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *quill_test_data_path(const char *relative_path) {
    const char *root = getenv("QUILL_TEST_DATA_DIR");
    if (root == NULL || root[0] == '\0') {
        return NULL;
    }
    size_t n_bytes = strlen(root) + strlen(relative_path) + 2;
    char *path = malloc(n_bytes);
    if (path == NULL) {
        return NULL;
    }
    snprintf(path, n_bytes, "%s/%s", root, relative_path);
    struct stat info;
    if (stat(path, &info) != 0) {
        free(path);
        return NULL;
    }
    return path;
}

char *quill_test_data_path_or_skip(const char *relative_path) {
    char *path = quill_test_data_path(relative_path);
    if (path == NULL) {
        const char *root = getenv("QUILL_TEST_DATA_DIR");
        printf("SKIP: fixture '%s' not found under QUILL_TEST_DATA_DIR='%s'; configure with "
               "-DQUILL_TEST_DATA_DIR=<folder with models/ and testdata/> to run this test\n",
               relative_path, root ? root : "(unset)");
        fflush(stdout);
        exit(QUILL_TEST_SKIP_CODE);
    }
    return path;
}

char *quill_test_tmp_path(const char *name) {
    const char *root = getenv("QUILL_TEST_TMP_DIR");
    if (root == NULL || root[0] == '\0') {
        root = "/tmp";
    }
    size_t n_bytes = strlen(root) + strlen(name) + 32;
    char *path = malloc(n_bytes);
    if (path != NULL) {
        snprintf(path, n_bytes, "%s/%ld-%s", root, (long)getpid(), name);
    }
    return path;
}

const char *quill_test_binary(void) {
    const char *binary = getenv("QUILL_BINARY");
    return (binary != NULL && binary[0] != '\0') ? binary : NULL;
}

char *quill_test_read_file(const char *path, size_t *n_bytes) {
    *n_bytes = 0;
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        return NULL;
    }
    char *data = NULL;
    size_t length = 0;
    size_t capacity = 0;
    for (;;) {
        if (capacity - length < 65536) {
            capacity = capacity * 2 + 65536;
            char *grown = realloc(data, capacity + 1);
            if (grown == NULL) {
                free(data);
                fclose(file);
                return NULL;
            }
            data = grown;
        }
        size_t n_read = fread(data + length, 1, capacity - length, file);
        length += n_read;
        if (n_read == 0) {
            break;
        }
    }
    fclose(file);
    data[length] = '\0';
    *n_bytes = length;
    return data;
}

int quill_test_write_file(const char *path, const void *data, size_t n_bytes) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        return -1;
    }
    size_t n_written = fwrite(data, 1, n_bytes, file);
    int close_status = fclose(file);
    return (n_written == n_bytes && close_status == 0) ? 0 : -1;
}

char *quill_test_run_capture(const char *command, int *exit_status) {
    *exit_status = -1;
    FILE *pipe = popen(command, "r");
    if (pipe == NULL) {
        return NULL;
    }
    char *data = NULL;
    size_t length = 0;
    size_t capacity = 0;
    for (;;) {
        if (capacity - length < 4096) {
            capacity = capacity * 2 + 4096;
            char *grown = realloc(data, capacity + 1);
            if (grown == NULL) {
                break;
            }
            data = grown;
        }
        size_t n_read = fread(data + length, 1, capacity - length, pipe);
        length += n_read;
        if (n_read == 0) {
            break;
        }
    }
    int status = pclose(pipe);
    if (data != NULL) {
        data[length] = '\0';
    }
    *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return data;
}
