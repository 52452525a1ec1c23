/*
 * Tests of Hugging Face Hub downloads against a libmicrohttpd server started inside the test on
 * 127.0.0.1 (port 0). The server plays the Hub: a repository listing, files with HTTP Range
 * support, an optional redirect, and switches that cut a transfer or misstate the file size.
 */
#include "test_support.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/gguf.h"
#include "quill/hub.h"
#include "quill/status.h"
#include "quill/tensor_type.h"

/* The fake Hub's state; switches are atomic because the server thread reads them. */
typedef struct test_server {
    struct MHD_Daemon *daemon;  /* running server, or NULL once stopped */
    char base_url[64];          /* http://127.0.0.1:PORT */
    uint8_t *file_bytes;        /* the served GGUF file */
    size_t n_file_bytes;        /* its size */
    const char *file_name;      /* its name in the repository */
    const char *listing_json;   /* reply of /api/models/owner/repo, or NULL for 404 */
    atomic_int n_requests;      /* requests received */
    atomic_long cut_after_bytes; /* >= 0: the next file reply stops after this many bytes */
    atomic_bool use_wrong_total; /* 206 replies announce a total 100 bytes too large */
    atomic_bool use_redirect;   /* /resolve/ replies redirect to /cdn/ */
    atomic_bool is_range_ignored; /* file replies are 200 with the whole file, as without Range */
    char last_range[64];        /* Range header of the last file request */
    char last_authorization[128]; /* Authorization header of the last request */
    int last_status;            /* status of the last file reply */
} test_server;

static test_server server;

/* Body of one file reply from `start`, ending early when cut_after_bytes is set. */
typedef struct file_reply {
    size_t start;          /* first file byte sent */
    long cut_after_bytes;  /* body bytes to send before failing, or -1 */
} file_reply;

static ssize_t read_file_reply(void *context, uint64_t position, char *buffer, size_t max_bytes) {
    file_reply *reply = context;
    if (reply->cut_after_bytes >= 0 && position >= (uint64_t)reply->cut_after_bytes) {
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n_left = server.n_file_bytes - reply->start - (size_t)position;
    size_t n_bytes = n_left < max_bytes ? n_left : max_bytes;
    if (reply->cut_after_bytes >= 0 &&
        n_bytes > (size_t)reply->cut_after_bytes - (size_t)position) {
        n_bytes = (size_t)reply->cut_after_bytes - (size_t)position;
    }
    memcpy(buffer, server.file_bytes + reply->start + position, n_bytes);
    return (ssize_t)n_bytes;
}

static enum MHD_Result queue_text(struct MHD_Connection *connection, unsigned status,
                                  const char *text) {
    struct MHD_Response *response = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result serve_file(struct MHD_Connection *connection) {
    const char *range = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Range");
    snprintf(server.last_range, sizeof(server.last_range), "%s", range != NULL ? range : "");
    if (atomic_load(&server.is_range_ignored)) {
        range = NULL;
    }
    size_t start = 0;
    if (range != NULL && sscanf(range, "bytes=%zu-", &start) != 1) {
        start = 0;
    }
    char content_range[96];
    if (start >= server.n_file_bytes && range != NULL) {
        server.last_status = 416;
        snprintf(content_range, sizeof(content_range), "bytes */%zu", server.n_file_bytes);
        struct MHD_Response *response =
            MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(response, "Content-Range", content_range);
        enum MHD_Result result = MHD_queue_response(connection, 416, response);
        MHD_destroy_response(response);
        return result;
    }

    file_reply *reply = malloc(sizeof(*reply));
    reply->start = start;
    reply->cut_after_bytes = atomic_exchange(&server.cut_after_bytes, -1);
    struct MHD_Response *response = MHD_create_response_from_callback(
        server.n_file_bytes - start, 4096, read_file_reply, reply, free);
    unsigned status = MHD_HTTP_OK;
    if (range != NULL) {
        status = MHD_HTTP_PARTIAL_CONTENT;
        size_t total = server.n_file_bytes + (atomic_load(&server.use_wrong_total) ? 100 : 0);
        snprintf(content_range, sizeof(content_range), "bytes %zu-%zu/%zu", start,
                 server.n_file_bytes - 1, total);
        MHD_add_response_header(response, "Content-Range", content_range);
    }
    server.last_status = (int)status;
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result handle_request(void *context, struct MHD_Connection *connection,
                                      const char *url, const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **request_state) {
    atomic_fetch_add(&server.n_requests, 1);
    const char *authorization =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
    snprintf(server.last_authorization, sizeof(server.last_authorization), "%s",
             authorization != NULL ? authorization : "");

    char resolve_path[256];
    char cdn_path[256];
    snprintf(resolve_path, sizeof(resolve_path), "/owner/repo/resolve/main/%s", server.file_name);
    snprintf(cdn_path, sizeof(cdn_path), "/cdn/%s", server.file_name);
    if (strcmp(url, "/owner/repo/resolve/main/private.gguf") == 0) {
        return queue_text(connection, MHD_HTTP_UNAUTHORIZED, "Unauthorized");
    }
    if (strcmp(url, "/api/models/owner/repo") == 0 && server.listing_json != NULL) {
        return queue_text(connection, MHD_HTTP_OK, server.listing_json);
    }
    if (strcmp(url, resolve_path) == 0 && atomic_load(&server.use_redirect)) {
        char location[320];
        snprintf(location, sizeof(location), "%s%s", server.base_url, cdn_path);
        struct MHD_Response *response =
            MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(response, "Location", location);
        enum MHD_Result result = MHD_queue_response(connection, MHD_HTTP_FOUND, response);
        MHD_destroy_response(response);
        return result;
    }
    if (strcmp(url, resolve_path) == 0 || strcmp(url, cdn_path) == 0) {
        return serve_file(connection);
    }
    return queue_text(connection, MHD_HTTP_NOT_FOUND, "Entry not found");
}

static void server_start(void) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = 0;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                                     handle_request, NULL, MHD_OPTION_SOCK_ADDR, &address,
                                     MHD_OPTION_END);
    assert_non_null(server.daemon);
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(server.daemon, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    snprintf(server.base_url, sizeof(server.base_url), "http://127.0.0.1:%u",
             (unsigned)info->port);
    setenv("QUILL_HF_BASE_URL", server.base_url, 1);
}

static void server_stop(void) {
    if (server.daemon != NULL) {
        MHD_stop_daemon(server.daemon);
        server.daemon = NULL;
    }
}

/* Builds a GGUF file of about 100 KiB to serve. */
static void make_served_file(void) {
    quill_gguf_writer *writer = NULL;
    assert_int_equal(quill__gguf_writer_create(&writer), QUILL_OK);
    assert_int_equal(quill__gguf_writer_set_string(writer, "general.architecture", "llama"),
                     QUILL_OK);
    static float values[25000];
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        values[i] = (float)i;
    }
    int64_t ne[1] = {25000};
    assert_int_equal(quill__gguf_writer_add_tensor(writer, "weights", QUILL_TYPE_F32, 1, ne,
                                                   values, sizeof(values)),
                     QUILL_OK);
    void *data = NULL;
    assert_int_equal(quill__gguf_writer_write_memory(writer, &data, &server.n_file_bytes),
                     QUILL_OK);
    server.file_bytes = data;
    quill__gguf_writer_destroy(writer);
}

static char *cache_dir_path;

/* Gives each test a fresh cache folder and a running server with default switches. */
static int setup(void **state) {
    (void)state;
    char name[64];
    static int n_setups = 0;
    snprintf(name, sizeof(name), "hub-cache-%d", n_setups++);
    cache_dir_path = quill_test_tmp_path(name);
    setenv("QUILL_CACHE_DIR", cache_dir_path, 1);
    unsetenv("HF_TOKEN");
    server.file_name = "model-Q4_K_M.gguf";
    server.listing_json = NULL;
    atomic_store(&server.n_requests, 0);
    atomic_store(&server.cut_after_bytes, -1);
    atomic_store(&server.use_wrong_total, false);
    atomic_store(&server.use_redirect, false);
    atomic_store(&server.is_range_ignored, false);
    server_start();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    server_stop();
    char command[600];
    snprintf(command, sizeof(command), "rm -rf '%s'", cache_dir_path);
    assert_int_equal(system(command), 0);
    free(cache_dir_path);
    return 0;
}

static char *cached_path(const char *file_name) {
    size_t n_bytes = strlen(cache_dir_path) + strlen(file_name) + 32;
    char *path = malloc(n_bytes);
    snprintf(path, n_bytes, "%s/hub/owner/repo/%s", cache_dir_path, file_name);
    return path;
}

static void assert_file_matches_served(const char *path) {
    size_t n_bytes = 0;
    char *bytes = quill_test_read_file(path, &n_bytes);
    assert_non_null(bytes);
    assert_int_equal(n_bytes, server.n_file_bytes);
    assert_memory_equal(bytes, server.file_bytes, n_bytes);
    free(bytes);
}

static long file_size(const char *path) {
    struct stat info;
    return stat(path, &info) == 0 ? (long)info.st_size : -1;
}

/* ---- Tests --------------------------------------------------------------------------------- */

static void test_hub_download_then_cached_offline(void **state) {
    (void)state;
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    char *expected = cached_path("model-Q4_K_M.gguf");
    assert_string_equal(path, expected);
    assert_file_matches_served(path);
    assert_int_equal(atomic_load(&server.n_requests), 1);
    assert_string_equal(server.last_range, "");
    quill_gguf *file = NULL;
    assert_int_equal(quill_gguf_open(path, &file), QUILL_OK);
    quill_gguf_close(file);
    quill_hub_path_free(path);

    /* With the server gone, both reference forms resolve from the cache. */
    server_stop();
    path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    assert_string_equal(path, expected);
    quill_hub_path_free(path);
    path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_OK);
    assert_string_equal(path, expected);
    quill_hub_path_free(path);
    assert_int_equal(atomic_load(&server.n_requests), 1);
    free(expected);
}

static void test_hub_resume_after_cut(void **state) {
    (void)state;
    atomic_store(&server.cut_after_bytes, 30000);
    char *path = NULL;
    quill_status status = quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path);
    assert_int_equal(status, QUILL_ERR_IO);
    assert_null(path);
    assert_non_null(strstr(quill_error_message(), server.base_url));
    assert_non_null(strstr(quill_error_message(), "resumes where it stopped"));
    char *expected = cached_path("model-Q4_K_M.gguf");
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    long n_part_bytes = file_size(part_path);
    assert_true(n_part_bytes > 0);
    assert_true(n_part_bytes <= 30000);
    assert_int_equal(file_size(expected), -1);

    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    char range[64];
    snprintf(range, sizeof(range), "bytes=%ld-", n_part_bytes);
    assert_string_equal(server.last_range, range);
    assert_int_equal(server.last_status, 206);
    assert_file_matches_served(path);
    assert_int_equal(file_size(part_path), -1);
    quill_hub_path_free(path);
    free(part_path);
    free(expected);
}

static void test_hub_complete_part_renamed(void **state) {
    (void)state;
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    char command[700];
    snprintf(command, sizeof(command), "mkdir -p '%s/hub/owner/repo'", cache_dir_path);
    assert_int_equal(system(command), 0);
    assert_int_equal(quill_test_write_file(part_path, server.file_bytes, server.n_file_bytes), 0);

    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    assert_int_equal(server.last_status, 416);
    assert_file_matches_served(path);
    quill_hub_path_free(path);
    free(part_path);
}

static void test_hub_size_mismatch(void **state) {
    (void)state;
    atomic_store(&server.cut_after_bytes, 20000);
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_IO);
    atomic_store(&server.use_wrong_total, true);
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path),
                     QUILL_ERR_UPSTREAM);
    assert_null(path);
    assert_non_null(strstr(quill_error_message(), "size mismatch"));
    char announced[64];
    snprintf(announced, sizeof(announced), "announced %zu", server.n_file_bytes + 100);
    assert_non_null(strstr(quill_error_message(), announced));
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    assert_int_equal(file_size(part_path), -1);
    free(part_path);
}

static void test_hub_http_404(void **state) {
    (void)state;
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:missing.gguf", &path), QUILL_ERR_NOT_FOUND);
    assert_null(path);
    assert_non_null(strstr(quill_error_message(), "/owner/repo/resolve/main/missing.gguf"));
    assert_non_null(strstr(quill_error_message(), "returned HTTP 404"));

    /* Without FILE the listing is requested, and it is missing too. */
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_ERR_NOT_FOUND);
    assert_non_null(strstr(quill_error_message(), "/api/models/owner/repo returned HTTP 404"));
}

static void test_hub_listing_prefers_q4_k_m(void **state) {
    (void)state;
    server.listing_json = "{\"id\":\"owner/repo\",\"siblings\":[{\"rfilename\":\"README.md\"},"
                          "{\"rfilename\":\"model-Q8_0.gguf\"},"
                          "{\"rfilename\":\"model-Q4_K_M.gguf\"}]}";
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_OK);
    char *expected = cached_path("model-Q4_K_M.gguf");
    assert_string_equal(path, expected);
    assert_file_matches_served(path);
    quill_hub_path_free(path);
    free(expected);
}

static void test_hub_listing_choice_over_cache(void **state) {
    (void)state;
    server.file_name = "model-Q8_0.gguf";
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q8_0.gguf", &path), QUILL_OK);
    quill_hub_path_free(path);

    /* A reference without FILE follows the listing, as on a fresh cache, not the Q8_0 file
     * already in the cache. */
    server.file_name = "model-Q4_K_M.gguf";
    server.listing_json = "{\"siblings\":[{\"rfilename\":\"model-Q8_0.gguf\"},"
                          "{\"rfilename\":\"model-Q4_K_M.gguf\"}]}";
    path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_OK);
    char *expected = cached_path("model-Q4_K_M.gguf");
    assert_string_equal(path, expected);
    quill_hub_path_free(path);

    /* Offline, the recorded choice still wins over the other cached file. */
    server_stop();
    int n_requests = atomic_load(&server.n_requests);
    path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_OK);
    assert_string_equal(path, expected);
    assert_int_equal(atomic_load(&server.n_requests), n_requests);
    quill_hub_path_free(path);
    free(expected);
}

static void test_hub_listing_first_gguf(void **state) {
    (void)state;
    server.file_name = "model-Q8_0.gguf";
    server.listing_json = "{\"siblings\":[{\"rfilename\":\"README.md\"},"
                          "{\"rfilename\":\"model-Q8_0.gguf\"},{\"rfilename\":\"x-F16.gguf\"}]}";
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_OK);
    char *expected = cached_path("model-Q8_0.gguf");
    assert_string_equal(path, expected);
    quill_hub_path_free(path);
    free(expected);
}

static void test_hub_listing_without_gguf(void **state) {
    (void)state;
    server.listing_json = "{\"siblings\":[{\"rfilename\":\"README.md\"},"
                          "{\"rfilename\":\"model.safetensors\"}]}";
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_ERR_NOT_FOUND);
    assert_non_null(strstr(quill_error_message(),
                           "owner/repo has no .gguf file (found: README.md, model.safetensors)"));

    server.listing_json = "[1, 2]";
    assert_int_equal(quill_hub_resolve("owner/repo", &path), QUILL_ERR_UPSTREAM);
    assert_non_null(strstr(quill_error_message(), "no \"siblings\" array"));
}

static void test_hub_follows_redirect(void **state) {
    (void)state;
    atomic_store(&server.use_redirect, true);
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    assert_file_matches_served(path);
    assert_int_equal(atomic_load(&server.n_requests), 2);
    quill_hub_path_free(path);
}

static void test_hub_sends_token(void **state) {
    (void)state;
    setenv("HF_TOKEN", "hf_test_token", 1);
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    assert_string_equal(server.last_authorization, "Bearer hf_test_token");
    quill_hub_path_free(path);
    unsetenv("HF_TOKEN");
}

static void test_hub_restart_when_range_ignored(void **state) {
    (void)state;
    atomic_store(&server.cut_after_bytes, 25000);
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_IO);
    atomic_store(&server.is_range_ignored, true);
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_OK);
    assert_int_equal(strncmp(server.last_range, "bytes=", 6), 0);
    assert_int_equal(server.last_status, 200);
    assert_file_matches_served(path);
    quill_hub_path_free(path);
}

static void test_hub_unauthorized(void **state) {
    (void)state;
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:private.gguf", &path), QUILL_ERR_UPSTREAM);
    assert_non_null(strstr(quill_error_message(), "returned HTTP 401"));
    assert_non_null(strstr(quill_error_message(), "set HF_TOKEN"));
}

static void test_hub_network_failure(void **state) {
    (void)state;
    server_stop();
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_IO);
    assert_null(path);
    assert_non_null(strstr(quill_error_message(), server.base_url));
    assert_non_null(strstr(quill_error_message(), "check the network connection"));
}

/* Offline with nothing downloaded: no resume hint, and no empty .part or folders remain. */
static void test_hub_offline_leaves_no_trace(void **state) {
    (void)state;
    server_stop();
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_IO);
    assert_null(path);
    assert_non_null(strstr(quill_error_message(), "unreachable"));
    assert_non_null(strstr(quill_error_message(), "-m PATH"));
    assert_null(strstr(quill_error_message(), "resumes"));
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    assert_int_equal(file_size(part_path), -1);
    char repo_path[600];
    snprintf(repo_path, sizeof(repo_path), "%s/hub", cache_dir_path);
    assert_int_equal(file_size(repo_path), -1);
    free(part_path);
}

/* A folder that existed before a failed download stays. */
static void test_hub_offline_keeps_existing_folder(void **state) {
    (void)state;
    char command[700];
    snprintf(command, sizeof(command), "mkdir -p '%s/hub/owner/repo'", cache_dir_path);
    assert_int_equal(system(command), 0);
    server_stop();
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_IO);
    char repo_path[600];
    snprintf(repo_path, sizeof(repo_path), "%s/hub/owner/repo", cache_dir_path);
    assert_true(file_size(repo_path) >= 0);
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    assert_int_equal(file_size(part_path), -1);
    free(part_path);
}

static void test_hub_busy_when_locked(void **state) {
    (void)state;
    char command[700];
    snprintf(command, sizeof(command), "mkdir -p '%s/hub/owner/repo'", cache_dir_path);
    assert_int_equal(system(command), 0);
    char *part_path = cached_path("model-Q4_K_M.gguf.part");
    int fd = open(part_path, O_RDWR | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path), QUILL_ERR_BUSY);
    assert_non_null(strstr(quill_error_message(), "being downloaded by another process"));
    assert_int_equal(atomic_load(&server.n_requests), 0);
    close(fd);
    free(part_path);
}

/* A file size limit makes write() fail with EFBIG, standing in for a full disk. */
static void test_hub_write_failure(void **state) {
    (void)state;
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit limited = saved;
    limited.rlim_cur = 10000;
    void (*saved_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limited), 0);
    char *path = NULL;
    quill_status status = quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, saved_handler);
    assert_int_equal(status, QUILL_ERR_IO);
    assert_non_null(strstr(quill_error_message(), "model-Q4_K_M.gguf.part' failed"));
    assert_non_null(strstr(quill_error_message(), "free disk space"));
}

static void test_hub_invalid_references(void **state) {
    (void)state;
    const char *invalid[] = {
        "",
        "owner",
        "/repo",
        "owner/",
        "owner/repo/extra",
        "../repo",
        "owner/..",
        "owner/.",
        "own er/repo",
        "owner/repo:",
        "owner/repo:../x.gguf",
        "owner/repo:/abs.gguf",
        "owner/repo:a//b.gguf",
        "owner/repo:dir/",
        "owner/repo:x..gguf",
        "owner/repo:x.gguf:y",
        "owner/repo:x\\y.gguf",
        "https://huggingface.co/owner/repo",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        char *path = NULL;
        assert_false(quill_hub_is_reference(invalid[i]));
        assert_int_equal(quill_hub_check_reference(invalid[i]), QUILL_ERR_INVALID_ARG);
        assert_non_null(strstr(quill_error_message(), "expected OWNER/REPO[:FILE]"));
        assert_int_equal(quill_hub_resolve(invalid[i], &path), QUILL_ERR_INVALID_ARG);
        assert_null(path);
        assert_non_null(strstr(quill_error_message(), "hub: invalid reference"));
    }
    assert_int_equal(atomic_load(&server.n_requests), 0);

    const char *valid[] = {"owner/repo", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-q4_k_m.gguf",
                           "owner/repo:dir/x.gguf"};
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        assert_true(quill_hub_is_reference(valid[i]));
        assert_int_equal(quill_hub_check_reference(valid[i]), QUILL_OK);
    }
}

static void test_hub_missing_cache_location(void **state) {
    (void)state;
    char *home = getenv("HOME") != NULL ? strdup(getenv("HOME")) : NULL;
    unsetenv("QUILL_CACHE_DIR");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    char *path = NULL;
    assert_int_equal(quill_hub_resolve("owner/repo:model-Q4_K_M.gguf", &path),
                     QUILL_ERR_INVALID_ARG);
    assert_non_null(strstr(quill_error_message(), "set QUILL_CACHE_DIR"));
    if (home != NULL) {
        setenv("HOME", home, 1);
        free(home);
    }
    setenv("QUILL_CACHE_DIR", cache_dir_path, 1);
}

int main(void) {
    /* Only the test server is contacted: no proxy may intercept 127.0.0.1. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    make_served_file();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hub_download_then_cached_offline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_offline_leaves_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_offline_keeps_existing_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_resume_after_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_complete_part_renamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_size_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_http_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_listing_prefers_q4_k_m, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_listing_choice_over_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_listing_first_gguf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_listing_without_gguf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_follows_redirect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_sends_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_restart_when_range_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_unauthorized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_network_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_busy_when_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_write_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_invalid_references, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hub_missing_cache_location, setup, teardown),
    };
    int n_failed = cmocka_run_group_tests(tests, NULL, NULL);
    quill__free(server.file_bytes);
    return n_failed;
}
