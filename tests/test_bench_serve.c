/*
 * Tests of `quill bench-serve`, run as a separate process against a fake OpenAI-style server
 * started here with libmicrohttpd on 127.0.0.1 and an ephemeral port. The fake server streams
 * completions with known token counts (one or two tokens per chunk, with or without a usage
 * chunk) and records what the load generator sent, so counts are checked exactly. Timings are
 * not asserted. CLI error cases (bad URL, bad flags, connection refused, a missing API key, HTTP
 * errors) check the exit code and part of the message.
 */
#include "test_support.h"

#include <arpa/inet.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { FAKE_VOCAB_SIZE = 500, MAX_RECORDED_PROMPT = 256 };

/* What the fake server received since the last reset. */
typedef struct fake_observations {
    int n_completion_requests;
    int n_models_requests;
    int n_bad_requests;           /* not stream:true, or no prompt array */
    int n_ids_out_of_range;       /* prompt ids outside 3..FAKE_VOCAB_SIZE-1 */
    int n_model_lookups;          /* GET /v1/models/{id} */
    int32_t max_prompt_id;        /* largest prompt id received */
    int n_ignore_eos;
    int n_include_usage;
    int64_t last_prompt_length;
    int64_t last_max_tokens;
    int32_t first_prompt[MAX_RECORDED_PROMPT]; /* prompt of the first request */
    int64_t first_prompt_length;
    int64_t shared_prefix_checked;             /* leading ids compared with first_prompt */
    int n_prefix_mismatches;                   /* requests whose leading ids differ */
    int n_identical_prompts;                   /* later prompts equal to the first in full */
    char last_authorization[128];
} fake_observations;

typedef struct fake_server {
    struct MHD_Daemon *daemon;
    uint16_t port;
    pthread_mutex_t mutex;
    fake_observations seen;       /* guarded by mutex */
    char required_authorization[128]; /* guarded by mutex; "" accepts any request */
} fake_server;

static fake_server server;

typedef struct upload {
    char *data;
    size_t n_bytes;
} upload;

/* State of one streamed reply. */
typedef struct fake_stream {
    int64_t n_tokens;         /* tokens to send */
    int64_t n_sent;
    int tokens_per_chunk;     /* 1, or 2 with logprobs.tokens */
    bool has_usage;           /* send a usage chunk before [DONE] */
    bool is_cut;              /* end after the tokens, without usage or [DONE] */
    int phase;                /* 0 tokens, 1 usage, 2 done, 3 end */
} fake_stream;

static ssize_t stream_next(void *cls, uint64_t position, char *buffer, size_t max_bytes) {
    (void)position;
    fake_stream *stream = cls;
    int n = 0;
    if (stream->phase == 0 && stream->n_sent < stream->n_tokens) {
        /* A short pause so that chunks arrive separately; the figures are not asserted. */
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
        if (stream->tokens_per_chunk == 2) {
            n = snprintf(buffer, max_bytes,
                         "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,"
                         "\"text\":\"ab\",\"logprobs\":{\"tokens\":[\"a\",\"b\"]},"
                         "\"finish_reason\":null}]}\n\n");
        } else {
            n = snprintf(buffer, max_bytes,
                         "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,"
                         "\"text\":\"t\",\"finish_reason\":null}]}\n\n");
        }
        stream->n_sent += stream->tokens_per_chunk;
        if (stream->n_sent >= stream->n_tokens) {
            stream->phase = stream->is_cut ? 3 : 1;
        }
    } else if (stream->phase <= 1) {
        stream->phase = 2;
        if (stream->has_usage) {
            n = snprintf(buffer, max_bytes,
                         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,"
                         "\"completion_tokens\":%lld,\"total_tokens\":1}}\n\n",
                         (long long)stream->n_tokens);
        } else {
            n = snprintf(buffer, max_bytes, ": keep-alive comment\n\n");
        }
    } else if (stream->phase == 2) {
        stream->phase = 3;
        n = snprintf(buffer, max_bytes, "data: [DONE]\n\n");
    } else {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    return n;
}

static void stream_free(void *cls) {
    free(cls);
}

static enum MHD_Result reply_text(struct MHD_Connection *connection, unsigned int status,
                                  const char *text) {
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(response, "Content-Type", "application/json");
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static json_object *member(json_object *object, const char *key) {
    json_object *value = NULL;
    json_object_object_get_ex(object, key, &value);
    return value;
}

/* Records what a completion request carried; called with server.mutex held. */
static void inspect_completion(json_object *request) {
    json_object *prompt = member(request, "prompt");
    json_object *stream = member(request, "stream");
    if (prompt == NULL || !json_object_is_type(prompt, json_type_array) || stream == NULL ||
        !json_object_get_boolean(stream)) {
        server.seen.n_bad_requests += 1;
        return;
    }
    int64_t length = (int64_t)json_object_array_length(prompt);
    server.seen.last_prompt_length = length;
    server.seen.last_max_tokens = json_object_get_int64(member(request, "max_tokens"));
    server.seen.n_ignore_eos += member(request, "ignore_eos") != NULL ? 1 : 0;
    json_object *options = member(request, "stream_options");
    server.seen.n_include_usage += options != NULL && member(options, "include_usage") != NULL;

    bool is_first = server.seen.first_prompt_length == 0;
    bool is_identical = !is_first && length == server.seen.first_prompt_length;
    bool has_prefix_mismatch = false;
    for (int64_t i = 0; i < length; i++) {
        int32_t id = json_object_get_int(json_object_array_get_idx(prompt, (size_t)i));
        if (id < 3 || id >= FAKE_VOCAB_SIZE) {
            server.seen.n_ids_out_of_range += 1;
        }
        if (id > server.seen.max_prompt_id) {
            server.seen.max_prompt_id = id;
        }
        if (is_first && i < MAX_RECORDED_PROMPT) {
            server.seen.first_prompt[i] = id;
        } else if (i < MAX_RECORDED_PROMPT && server.seen.first_prompt[i] != id) {
            is_identical = false;
            has_prefix_mismatch |= i < server.seen.shared_prefix_checked;
        }
    }
    if (is_first) {
        server.seen.first_prompt_length = length;
    }
    server.seen.n_prefix_mismatches += has_prefix_mismatch ? 1 : 0;
    server.seen.n_identical_prompts += is_identical ? 1 : 0;
}

static enum MHD_Result handle_completion(struct MHD_Connection *connection, upload *body) {
    json_object *request = json_tokener_parse(body->data != NULL ? body->data : "");
    const char *model = request != NULL && member(request, "model") != NULL
                            ? json_object_get_string(member(request, "model"))
                            : "";
    pthread_mutex_lock(&server.mutex);
    server.seen.n_completion_requests += 1;
    if (request != NULL) {
        inspect_completion(request);
    }
    pthread_mutex_unlock(&server.mutex);

    enum MHD_Result result = MHD_NO;
    if (request == NULL) {
        result = reply_text(connection, 400, "{\"error\":{\"message\":\"body is not JSON\"}}");
    } else if (strcmp(model, "fail") == 0) {
        result = reply_text(connection, 500, "{\"error\":{\"message\":\"fake failure\"}}");
    } else {
        fake_stream *stream = calloc(1, sizeof(*stream));
        stream->n_tokens = json_object_get_int64(member(request, "max_tokens"));
        stream->tokens_per_chunk = strcmp(model, "pairs") == 0 ? 2 : 1;
        stream->has_usage = strcmp(model, "pairs") != 0;
        stream->is_cut = strcmp(model, "cut") == 0;
        struct MHD_Response *response = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, 4096, stream_next, stream, stream_free);
        MHD_add_response_header(response, "Content-Type", "text/event-stream");
        result = MHD_queue_response(connection, 200, response);
        MHD_destroy_response(response);
    }
    json_object_put(request);
    return result;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection,
                                      const char *url, const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **request_state) {
    (void)cls;
    (void)version;
    upload *body = *request_state;
    if (body == NULL) {
        *request_state = calloc(1, sizeof(upload));
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        body->data = realloc(body->data, body->n_bytes + *upload_data_size + 1);
        memcpy(body->data + body->n_bytes, upload_data, *upload_data_size);
        body->n_bytes += *upload_data_size;
        body->data[body->n_bytes] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }

    const char *authorization =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
    pthread_mutex_lock(&server.mutex);
    snprintf(server.seen.last_authorization, sizeof(server.seen.last_authorization), "%s",
             authorization != NULL ? authorization : "");
    bool is_authorized = server.required_authorization[0] == '\0' ||
                         (authorization != NULL &&
                          strcmp(authorization, server.required_authorization) == 0);
    pthread_mutex_unlock(&server.mutex);
    if (!is_authorized) {
        return reply_text(connection, 401,
                          "{\"error\":{\"message\":\"invalid API key\",\"type\":"
                          "\"authentication_error\"}}");
    }

    if (strcmp(method, "GET") == 0 && strcmp(url, "/v1/models") == 0) {
        pthread_mutex_lock(&server.mutex);
        server.seen.n_models_requests += 1;
        pthread_mutex_unlock(&server.mutex);
        return reply_text(connection, 200,
                          "{\"object\":\"list\",\"data\":[{\"id\":\"fake\",\"object\":\"model\","
                          "\"vocab_size\":500}]}");
    }
    if (strcmp(method, "GET") == 0 && strncmp(url, "/v1/models/", 11) == 0) {
        /* Serves "alias" without listing it, as a server that also accepts other names. */
        pthread_mutex_lock(&server.mutex);
        server.seen.n_model_lookups += 1;
        pthread_mutex_unlock(&server.mutex);
        if (strcmp(url + 11, "alias") == 0) {
            return reply_text(connection, 200,
                              "{\"id\":\"alias\",\"object\":\"model\",\"vocab_size\":40}");
        }
        return reply_text(connection, 404,
                          "{\"error\":{\"message\":\"no such model\",\"type\":"
                          "\"invalid_request_error\"}}");
    }
    if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/completions") == 0) {
        return handle_completion(connection, body);
    }
    return reply_text(connection, 404, "{\"error\":{\"message\":\"not found\"}}");
}

static void request_completed(void *cls, struct MHD_Connection *connection,
                              void **request_state, enum MHD_RequestTerminationCode code) {
    (void)cls;
    (void)connection;
    (void)code;
    upload *body = *request_state;
    if (body != NULL) {
        free(body->data);
        free(body);
        *request_state = NULL;
    }
}

static int start_server(void **state) {
    (void)state;
    memset(&server, 0, sizeof(server));
    pthread_mutex_init(&server.mutex, NULL);
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = 0;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server.daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, handle_request, NULL, MHD_OPTION_SOCK_ADDR, &address,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL, MHD_OPTION_END);
    if (server.daemon == NULL) {
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server.daemon, MHD_DAEMON_INFO_BIND_PORT);
    server.port = info != NULL ? info->port : 0;
    return server.port != 0 ? 0 : -1;
}

static int stop_server(void **state) {
    (void)state;
    MHD_stop_daemon(server.daemon);
    pthread_mutex_destroy(&server.mutex);
    return 0;
}

static void reset_server_counts(int64_t shared_prefix) {
    pthread_mutex_lock(&server.mutex);
    memset(&server.seen, 0, sizeof(server.seen));
    server.seen.shared_prefix_checked = shared_prefix;
    pthread_mutex_unlock(&server.mutex);
}

/* Runs `quill bench-serve` with args; returns its stdout (free it) and exit code. With
 * is_merged, stderr is captured too. */
static char *run_bench(const char *args, bool is_merged, int *exit_code) {
    const char *binary = quill_test_binary();
    if (binary == NULL) {
        skip();
    }
    char command[2048];
    snprintf(command, sizeof(command), "timeout 60 '%s' bench-serve %s %s", binary, args,
             is_merged ? "2>&1" : "2>/dev/null");
    char *output = quill_test_run_capture(command, exit_code);
    assert_non_null(output);
    return output;
}

/* Runs `quill bench-serve` with args (which include --json), checks its exit code against
 * expected_exit and returns the parsed JSON report (release it with json_object_put). */
static json_object *run_bench_json(const char *args, int expected_exit) {
    int exit_code = -1;
    char *output = run_bench(args, false, &exit_code);
    assert_int_equal(exit_code, expected_exit);
    print_message("bench-serve output: %s", output);
    json_object *root = json_tokener_parse(output);
    free(output);
    assert_non_null(root);
    return root;
}

static json_object *json_member(json_object *object, const char *key) {
    json_object *value = NULL;
    if (!json_object_object_get_ex(object, key, &value)) {
        fail_msg("missing JSON member '%s'", key);
    }
    return value;
}

static int64_t json_int_at(json_object *object, const char *key, const char *inner) {
    json_object *value = json_member(object, key);
    if (inner != NULL) {
        value = json_member(value, inner);
    }
    return json_object_get_int64(value);
}

static void test_bench_serve_counts_streamed_tokens(void **state) {
    (void)state;
    reset_server_counts(8);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --requests 7 --concurrency 3 --prompt-tokens 16 "
             "--shared-prefix 8 --max-tokens 5 --api-key secret-key --json",
             (unsigned)server.port);
    json_object *root = run_bench_json(args, 0);

    assert_int_equal(json_int_at(root, "requests", NULL), 7);
    assert_int_equal(json_int_at(root, "completed", NULL), 7);
    assert_int_equal(json_int_at(root, "failed", NULL), 0);
    assert_int_equal(json_int_at(root, "output_tokens", NULL), 35);
    assert_int_equal(json_int_at(root, "ttft_ms", "count"), 7);
    assert_int_equal(json_int_at(root, "itl_ms", "count"), 28);
    assert_int_equal(json_int_at(root, "decode_tokens", NULL), 28);
    assert_true(json_object_get_double(json_member(root, "decode_tokens_per_second")) > 0.0);
    assert_int_equal(json_int_at(root, "e2e_ms", "count"), 7);
    assert_true(json_object_get_double(json_member(root, "output_tokens_per_second")) > 0.0);
    json_object *e2e = json_member(root, "e2e_ms");
    assert_true(json_object_get_double(json_member(e2e, "p50")) <=
                json_object_get_double(json_member(e2e, "max")));
    assert_true(json_object_get_double(json_member(e2e, "p95")) <=
                json_object_get_double(json_member(e2e, "p99")));
    json_object_put(root);

    /* What the server received: the model and vocabulary came from GET /v1/models. */
    pthread_mutex_lock(&server.mutex);
    assert_int_equal(server.seen.n_models_requests, 1);
    assert_int_equal(server.seen.n_completion_requests, 7);
    assert_int_equal(server.seen.n_bad_requests, 0);
    assert_int_equal(server.seen.n_ids_out_of_range, 0);
    assert_int_equal(server.seen.last_prompt_length, 16);
    assert_int_equal(server.seen.last_max_tokens, 5);
    assert_int_equal(server.seen.n_prefix_mismatches, 0);
    assert_int_equal(server.seen.n_identical_prompts, 0);
    assert_int_equal(server.seen.n_ignore_eos, 0);
    assert_int_equal(server.seen.n_include_usage, 7);
    assert_string_equal(server.seen.last_authorization, "Bearer secret-key");
    pthread_mutex_unlock(&server.mutex);
}

static void test_bench_serve_multi_token_chunks(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u/ --model pairs --vocab 100 --requests 4 "
             "--concurrency 2 --prompt-tokens 4 --max-tokens 6 --ignore-eos --json",
             (unsigned)server.port);
    json_object *root = run_bench_json(args, 0);
    /* Three chunks of two tokens, no usage chunk: 6 tokens each, 4 gaps after the first
     * chunk. */
    assert_int_equal(json_int_at(root, "output_tokens", NULL), 24);
    assert_int_equal(json_int_at(root, "itl_ms", "count"), 16);
    assert_int_equal(json_int_at(root, "decode_tokens", NULL), 16);
    assert_int_equal(json_int_at(root, "ttft_ms", "count"), 4);
    json_object_put(root);

    /* GET /v1/models is sent even with --model and --vocab, to check the server first. */
    pthread_mutex_lock(&server.mutex);
    int n_models_requests = server.seen.n_models_requests;
    int n_ignore_eos = server.seen.n_ignore_eos;
    int n_ids_out_of_range = server.seen.n_ids_out_of_range;
    pthread_mutex_unlock(&server.mutex);
    assert_int_equal(n_models_requests, 1);
    assert_int_equal(n_ignore_eos, 4);
    assert_int_equal(n_ids_out_of_range, 0);
}

/* A --model that GET /v1/models does not list is looked up by GET /v1/models/{id}: its
 * vocabulary size bounds the prompt ids, and a model the server does not know gets a warning
 * that names it. */
static void test_bench_serve_looks_up_unlisted_model(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --model alias --requests 3 --prompt-tokens 32 "
             "--max-tokens 2",
             (unsigned)server.port);
    int exit_code = -1;
    char *output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 0);
    assert_null(strstr(output, "gave no vocabulary size"));
    free(output);
    pthread_mutex_lock(&server.mutex);
    int n_model_lookups = server.seen.n_model_lookups;
    int32_t max_prompt_id = server.seen.max_prompt_id;
    pthread_mutex_unlock(&server.mutex);
    assert_int_equal(n_model_lookups, 1);
    assert_true(max_prompt_id < 40);

    reset_server_counts(0);
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --model nope --requests 1 --prompt-tokens 4 "
             "--max-tokens 2",
             (unsigned)server.port);
    output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 0);
    assert_non_null(strstr(output, "does not list --model 'nope'"));
    assert_non_null(strstr(output, "HTTP 404: no such model"));
    assert_non_null(strstr(output, "gave no vocabulary size for model 'nope'"));
    free(output);
}

/* One request at a time: the next request starts as soon as the previous one ends, without
 * waiting out the 100 ms socket poll interval. So 10 requests of about 3 ms each take well under
 * half a second, even on a loaded machine. */
static void test_bench_serve_refills_slots_at_once(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --vocab 50 --requests 10 --concurrency 1 "
             "--prompt-tokens 4 --max-tokens 1 --json",
             (unsigned)server.port);
    json_object *root = run_bench_json(args, 0);
    assert_int_equal(json_int_at(root, "completed", NULL), 10);
    assert_true(json_object_get_double(json_member(root, "duration_s")) < 0.5);
    json_object_put(root);
}

static void test_bench_serve_text_report(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u/v1 --requests 2 --prompt-tokens 3 --max-tokens 2",
             (unsigned)server.port);
    int exit_code = -1;
    char *output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 0);
    assert_non_null(strstr(output, "2 completed, 0 failed"));
    assert_non_null(strstr(output, "output tokens/s"));
    assert_non_null(strstr(output, "ttft"));
    free(output);
}

static void test_bench_serve_http_error_counted(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --model fail --vocab 50 --requests 3 --json",
             (unsigned)server.port);
    int exit_code = -1;
    char *output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 1);
    assert_non_null(strstr(output, "\"failed\":3"));
    assert_non_null(strstr(output, "\"completed\":0"));
    assert_non_null(strstr(output, "HTTP 500"));
    assert_non_null(strstr(output, "fake failure"));
    free(output);
}

/* Streams cut off after 4 tokens fail, and none of their latencies is counted: inter-token
 * gaps join the figures only with the request's TTFT and end-to-end time. */
static void test_bench_serve_failed_streams_add_no_latency(void **state) {
    (void)state;
    reset_server_counts(0);
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --model cut --vocab 50 --requests 2 --max-tokens 4 "
             "--json",
             (unsigned)server.port);
    json_object *root = run_bench_json(args, 1);
    assert_int_equal(json_int_at(root, "failed", NULL), 2);
    assert_int_equal(json_int_at(root, "ttft_ms", "count"), 0);
    assert_int_equal(json_int_at(root, "itl_ms", "count"), 0);
    assert_int_equal(json_int_at(root, "e2e_ms", "count"), 0);
    json_object_put(root);
}

/* Returns a loopback port that nothing listens on: bound, then closed. */
static unsigned closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
    socklen_t length = sizeof(address);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    close(fd);
    return ntohs(address.sin_port);
}

/* An unreachable server fails at once, before any completion request or report. */
static void test_bench_serve_connection_refused(void **state) {
    (void)state;
    char args[512];
    snprintf(args, sizeof(args),
             "--url http://127.0.0.1:%u --model m --vocab 50 --requests 2 --json", closed_port());
    int exit_code = -1;
    char *output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 1);
    assert_non_null(strstr(output, "cannot reach the server: GET http://127.0.0.1:"));
    assert_null(strstr(output, "\"failed\""));
    assert_null(strstr(output, "vocabulary"));
    free(output);
}

/* A 401 on GET /v1/models is named with the server's message and the --api-key hint. */
static void test_bench_serve_missing_api_key(void **state) {
    (void)state;
    reset_server_counts(0);
    pthread_mutex_lock(&server.mutex);
    snprintf(server.required_authorization, sizeof(server.required_authorization),
             "Bearer secret");
    pthread_mutex_unlock(&server.mutex);
    char args[512];
    snprintf(args, sizeof(args), "--url http://127.0.0.1:%u --requests 1 --json",
             (unsigned)server.port);
    int exit_code = -1;
    char *output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 1);
    assert_non_null(strstr(output, "/v1/models returned HTTP 401: invalid API key"));
    assert_non_null(strstr(output, "pass it with --api-key"));
    assert_null(strstr(output, "gave no vocabulary size"));
    free(output);

    /* A wrong key: the message names the rejected key, and no completion is sent. */
    snprintf(args, sizeof(args), "--url http://127.0.0.1:%u --requests 3 --api-key wrong --json",
             (unsigned)server.port);
    output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 1);
    assert_non_null(strstr(output, "rejected the key given with --api-key"));
    free(output);
    pthread_mutex_lock(&server.mutex);
    int n_completions_before_key = server.seen.n_completion_requests;
    pthread_mutex_unlock(&server.mutex);
    assert_int_equal(n_completions_before_key, 0);

    /* With the key the same run succeeds. */
    snprintf(args, sizeof(args), "--url http://127.0.0.1:%u --requests 1 --api-key secret --json",
             (unsigned)server.port);
    output = run_bench(args, true, &exit_code);
    assert_int_equal(exit_code, 0);
    assert_null(strstr(output, "HTTP 401"));
    free(output);

    pthread_mutex_lock(&server.mutex);
    server.required_authorization[0] = '\0';
    pthread_mutex_unlock(&server.mutex);
}

static void test_bench_serve_rejects_bad_arguments(void **state) {
    (void)state;
    struct {
        const char *args;
        const char *message;
    } cases[] = {
        {"", "--url is required"},
        {"--url ftp://127.0.0.1/", "invalid --url 'ftp://127.0.0.1/'"},
        {"--url 'not a url'", "invalid --url"},
        {"--url http://127.0.0.1:1 --concurrency 0", "invalid value '0' for --concurrency"},
        {"--url http://127.0.0.1:1 --requests x", "invalid value 'x' for --requests"},
        {"--url http://127.0.0.1:1 --prompt-tokens 4 --shared-prefix 5",
         "--shared-prefix 5 exceeds --prompt-tokens 4"},
        {"--url http://127.0.0.1:1 --vocab 2", "invalid value '2' for --vocab"},
        {"--url http://127.0.0.1:1 --bogus", "unknown option '--bogus'"},
        {"--url", "--url needs a value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int exit_code = -1;
        char *output = run_bench(cases[i].args, true, &exit_code);
        if (exit_code != 2 || strstr(output, cases[i].message) == NULL) {
            fail_msg("args '%s': exit %d, output '%s', expected exit 2 and '%s'", cases[i].args,
                     exit_code, output, cases[i].message);
        }
        free(output);
    }
}

static void test_bench_serve_help_exits_zero(void **state) {
    (void)state;
    int exit_code = -1;
    char *output = run_bench("--help", false, &exit_code);
    assert_int_equal(exit_code, 0);
    assert_non_null(strstr(output, "--shared-prefix K"));
    free(output);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bench_serve_counts_streamed_tokens),
        cmocka_unit_test(test_bench_serve_multi_token_chunks),
        cmocka_unit_test(test_bench_serve_looks_up_unlisted_model),
        cmocka_unit_test(test_bench_serve_refills_slots_at_once),
        cmocka_unit_test(test_bench_serve_text_report),
        cmocka_unit_test(test_bench_serve_http_error_counted),
        cmocka_unit_test(test_bench_serve_failed_streams_add_no_latency),
        cmocka_unit_test(test_bench_serve_connection_refused),
        cmocka_unit_test(test_bench_serve_missing_api_key),
        cmocka_unit_test(test_bench_serve_rejects_bad_arguments),
        cmocka_unit_test(test_bench_serve_help_exits_zero),
    };
    return cmocka_run_group_tests(tests, start_server, stop_server);
}
