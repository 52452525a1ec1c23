/*
 * Helpers shared by the test programs: locating fixtures under QUILL_TEST_DATA_DIR (and skipping
 * with exit code 77 when they are absent), a scratch folder, and file helpers.
 */
#ifndef QUILL_TEST_SUPPORT_H
#define QUILL_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

/* Exit code that CTest reports as a skip (SKIP_RETURN_CODE). */
enum { QUILL_TEST_SKIP_CODE = 77 };

/* Returns the path of a fixture under QUILL_TEST_DATA_DIR as a new string (free it), or NULL
 * when the variable is unset or the file is absent. */
char *quill_test_data_path(const char *relative_path);

/* Returns the fixture's path like quill_test_data_path, or prints why and exits with
 * QUILL_TEST_SKIP_CODE. For use before cmocka starts running tests. */
char *quill_test_data_path_or_skip(const char *relative_path);

/* Returns a new path under the build's scratch folder (QUILL_TEST_TMP_DIR, else /tmp) made
 * unique with the process id: "<dir>/<pid>-<name>". Free it. */
char *quill_test_tmp_path(const char *name);

/* Returns the path of the quill CLI binary built with the tests (QUILL_BINARY), or NULL. */
const char *quill_test_binary(void);

/* Reads a whole file into a new NUL-terminated buffer; stores its size. Returns NULL on error. */
char *quill_test_read_file(const char *path, size_t *n_bytes);

/* Writes bytes to path, replacing it. Returns 0 on success. */
int quill_test_write_file(const char *path, const void *data, size_t n_bytes);

/* Runs a shell command and captures its stdout (new buffer, free it) and exit status. */
char *quill_test_run_capture(const char *command, int *exit_status);

#endif
