/*
 * Tests of the base layer: error messages, the string buffer, allocation failure injection,
 * the thread pool and the log level read from QUILL_LOG_LEVEL.
 */
#include "test_support.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/strbuf.h"
#include "base/threadpool.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

static void test_error_set_returns_status(void **state) {
    (void)state;
    quill_status status = quill_error_set(QUILL_ERR_FORMAT, "gguf: bad magic 0x%08x", 0x1234u);
    assert_int_equal(status, QUILL_ERR_FORMAT);
    assert_string_equal(quill_error_message(), "gguf: bad magic 0x00001234");
    assert_string_equal(quill_status_name(status), "QUILL_ERR_FORMAT");
}

static void test_error_long_message_truncated(void **state) {
    (void)state;
    char long_text[3000];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    quill_error_set(QUILL_ERR_IO, "%s", long_text);
    size_t length = strlen(quill_error_message());
    assert_true(length < 1024);
    assert_string_equal(quill_error_message() + length - 3, "...");
}

static void test_strbuf_append_and_json(void **state) {
    (void)state;
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    assert_int_equal(quill__strbuf_appendf(&buffer, "%d-%s", 42, "x"), QUILL_OK);
    assert_int_equal(quill__strbuf_append_json_string(&buffer, "a\"b\n\x01", 5), QUILL_OK);
    assert_string_equal(buffer.data, "42-x\"a\\\"b\\n\\u0001\"");
    char *taken = quill__strbuf_take(&buffer);
    assert_string_equal(taken, "42-x\"a\\\"b\\n\\u0001\"");
    quill__free(taken);
    quill__strbuf_release(&buffer);
}

static void test_strbuf_limit_fails(void **state) {
    (void)state;
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    buffer.limit_bytes = 8;
    assert_int_equal(quill__strbuf_append_cstr(&buffer, "12345678"), QUILL_OK);
    assert_int_equal(quill__strbuf_append_cstr(&buffer, "9"), QUILL_ERR_NOMEM);
    assert_true(buffer.is_failed);
    quill__strbuf_release(&buffer);
}

static void test_alloc_injected_failure(void **state) {
    (void)state;
    quill__alloc_fail_after(1);
    void *first = quill__malloc(16);
    void *second = quill__malloc(16);
    void *third = quill__malloc(16);
    quill__alloc_fail_after(-1);
    assert_non_null(first);
    assert_null(second);
    assert_non_null(third);
    quill__free(first);
    quill__free(third);
}

static void test_alloc_array_overflow(void **state) {
    (void)state;
    assert_null(quill__malloc_array(SIZE_MAX / 2, 4));
}

typedef struct sum_task {
    int64_t n_items;
    atomic_llong total;
    atomic_int n_calls;
} sum_task;

static void sum_range(void *context, int thread_index, int n_threads) {
    sum_task *task = context;
    int64_t begin = 0;
    int64_t end = 0;
    quill__threadpool_split(task->n_items, thread_index, n_threads, &begin, &end);
    long long partial = 0;
    for (int64_t i = begin; i < end; i++) {
        partial += i;
    }
    atomic_fetch_add(&task->total, partial);
    atomic_fetch_add(&task->n_calls, 1);
}

static void test_threadpool_runs_every_thread(void **state) {
    (void)state;
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = 3;
    quill_threadpool *pool = NULL;
    assert_int_equal(quill__threadpool_create(&params, &pool), QUILL_OK);
    for (int round = 0; round < 200; round++) {
        sum_task task = {.n_items = 1001};
        atomic_init(&task.total, 0);
        atomic_init(&task.n_calls, 0);
        quill__threadpool_run(pool, sum_range, &task);
        assert_int_equal(atomic_load(&task.n_calls), 3);
        assert_int_equal(atomic_load(&task.total), 1001 * 1000 / 2);
    }
    quill__threadpool_destroy(pool);
}

static void test_threadpool_runs_every_part(void **state) {
    (void)state;
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = 2;
    params.tasks_per_thread = 8;
    quill_threadpool *pool = NULL;
    assert_int_equal(quill__threadpool_create(&params, &pool), QUILL_OK);
    assert_int_equal(quill__threadpool_n_parts(pool), 16);
    for (int round = 0; round < 500; round++) {
        sum_task task = {.n_items = 1001};
        atomic_init(&task.total, 0);
        atomic_init(&task.n_calls, 0);
        quill__threadpool_run(pool, sum_range, &task);
        assert_int_equal(atomic_load(&task.n_calls), 16);
        assert_int_equal(atomic_load(&task.total), 1001 * 1000 / 2);
    }
    quill__threadpool_destroy(pool);
}

static void test_threadpool_rejects_zero_tasks_per_thread(void **state) {
    (void)state;
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = 2;
    params.tasks_per_thread = 0;
    quill_threadpool *pool = NULL;
    assert_int_equal(quill__threadpool_create(&params, &pool), QUILL_ERR_INVALID_ARG);
    assert_null(pool);
    assert_non_null(strstr(quill_error_message(), "tasks_per_thread=0"));
}

static void test_threadpool_rejects_zero_threads(void **state) {
    (void)state;
    quill_threadpool_params params = quill__threadpool_params_default();
    params.n_threads = 0;
    quill_threadpool *pool = NULL;
    assert_int_equal(quill__threadpool_create(&params, &pool), QUILL_ERR_INVALID_ARG);
    assert_null(pool);
    assert_non_null(strstr(quill_error_message(), "n_threads=0"));
}

static void test_threadpool_split_covers_range(void **state) {
    (void)state;
    int64_t next = 0;
    for (int i = 0; i < 7; i++) {
        int64_t begin = 0;
        int64_t end = 0;
        quill__threadpool_split(100, i, 7, &begin, &end);
        assert_int_equal(begin, next);
        next = end;
    }
    assert_int_equal(next, 100);
}

static void test_tensor_type_row_bytes(void **state) {
    (void)state;
    size_t n_bytes = 0;
    assert_true(quill_type_row_bytes(QUILL_TYPE_Q4_K, 512, &n_bytes));
    assert_int_equal(n_bytes, 288);
    assert_false(quill_type_row_bytes(QUILL_TYPE_Q4_0, 33, &n_bytes));
    assert_false(quill_type_row_bytes(5, 32, &n_bytes));
    assert_string_equal(quill_type_name(QUILL_TYPE_BF16), "BF16");
}

/* The level is read once per process, so each case runs in a forked child whose stderr goes
 * to a file. The child exits 0 when debug lines are enabled, 1 when they are not, 2 when it
 * cannot redirect stderr. Returns the child's stderr (free it). */
static char *log_level_in_child(const char *value, int *exit_status) {
    char *stderr_path = quill_test_tmp_path("base-log-stderr.txt");
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setenv("QUILL_LOG_LEVEL", value, 1);
        int fd = open(stderr_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
            _exit(2);
        }
        bool is_debug = quill__log_enabled(QUILL_LOG_LEVEL_DEBUG);
        bool is_info = quill__log_enabled(QUILL_LOG_LEVEL_INFO);
        fflush(stderr);
        _exit(is_debug ? 0 : (is_info ? 1 : 3));
    }
    int wait_status = 0;
    assert_int_equal(waitpid(child, &wait_status, 0), child);
    assert_true(WIFEXITED(wait_status));
    *exit_status = WEXITSTATUS(wait_status);
    size_t n_bytes = 0;
    char *output = quill_test_read_file(stderr_path, &n_bytes);
    assert_non_null(output);
    remove(stderr_path);
    free(stderr_path);
    return output;
}

static void test_log_level_invalid_warns(void **state) {
    (void)state;
    int exit_status = -1;
    char *output = log_level_in_child("bogus", &exit_status);
    assert_int_equal(exit_status, 1); /* info kept, debug off */
    assert_non_null(strstr(output, "level=warn"));
    assert_non_null(strstr(output, "value=\"bogus\""));
    assert_non_null(strstr(output, "error, warn, info or debug"));
    assert_non_null(strchr(output, '\n'));
    assert_string_equal(strchr(output, '\n'), "\n"); /* one line */
    free(output);
}

static void test_log_level_valid_is_silent(void **state) {
    (void)state;
    int exit_status = -1;
    char *output = log_level_in_child("DEBUG", &exit_status);
    assert_int_equal(exit_status, 0);
    assert_string_equal(output, "");
    free(output);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_returns_status),
        cmocka_unit_test(test_error_long_message_truncated),
        cmocka_unit_test(test_strbuf_append_and_json),
        cmocka_unit_test(test_strbuf_limit_fails),
        cmocka_unit_test(test_alloc_injected_failure),
        cmocka_unit_test(test_alloc_array_overflow),
        cmocka_unit_test(test_threadpool_runs_every_thread),
        cmocka_unit_test(test_threadpool_runs_every_part),
        cmocka_unit_test(test_threadpool_rejects_zero_tasks_per_thread),
        cmocka_unit_test(test_threadpool_rejects_zero_threads),
        cmocka_unit_test(test_threadpool_split_covers_range),
        cmocka_unit_test(test_tensor_type_row_bytes),
        cmocka_unit_test(test_log_level_invalid_warns),
        cmocka_unit_test(test_log_level_valid_is_silent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
