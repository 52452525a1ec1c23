/*
 * Tests of the server's metrics and of its disconnect watchdog: a tiny random model with a long
 * context is served on 127.0.0.1 port 0, driven by libcurl and raw sockets. The counters in GET
 * /metrics are checked against the usage the responses reported, and rejected requests against
 * the histograms. promtool lints the text when it is installed. GET /v1/stats is checked
 * against the requests sent. Clients that close their socket while their request runs or waits
 * in the queue are checked against the engine's counts.
 *
 * A "long" request asks for LONG_MAX_TOKENS tokens with ignore_eos, which takes the tiny model
 * many seconds as its attention grows, so it is still running when the test closes its socket;
 * no assertion depends on how long it takes.
 */
#include "test_support.h"
#include "test_http.h"
#include "tiny_model.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "quill/engine.h"
#include "quill/model.h"
#include "quill/server.h"
#include "quill/tokenizer.h"
#include "server/server_internal.h"

#define API_KEY "metrics-key"
#define MODEL_ALIAS "tiny"
#define MODEL_N_CTX 32768
#define LONG_MAX_TOKENS 32000

/* Prices: $0.15, $0.075 and $0.60 per million tokens, so costs are not zero. */
#define PRICE_INPUT_PICOUSD 150000
#define PRICE_CACHED_PICOUSD 75000
#define PRICE_OUTPUT_PICOUSD 600000

#define PICOUSD_PER_USD 1000000000000LL

typedef struct fixture {
    char *model_path;
    quill_model *model;
    quill_engine *engine;
} fixture;

static fixture the_fixture;

/* Token and cost totals over a set of responses. */
typedef struct usage_sum {
    int64_t n_prompt_tokens;
    int64_t n_cached_tokens;
    int64_t n_completion_tokens;
    int64_t cost_picousd;
} usage_sum;

/* Sends one request with a JSON content type: a POST when body is set, else a GET. api_key
 * NULL sends no Authorization. */
static void http_send(uint16_t port, const char *path, const char *api_key, const char *body,
                      quill_test_http_reply *reply) {
    const char *method = body != NULL ? "POST" : "GET";
    size_t n_body_bytes = body != NULL ? strlen(body) : 0;
    quill_test_http_send(port, method, path, "application/json", api_key, body, n_body_bytes,
                         reply);
}

/* Sends a POST on a raw socket and returns the socket without reading the response. */
static int send_raw_request(uint16_t port, const char *path, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    quill_test_loopback_connect(fd, port);

    char request[4096];
    int n_request = snprintf(request, sizeof(request),
                             "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                             path, strlen(body), body);
    assert_true(n_request > 0 && (size_t)n_request < sizeof(request));
    assert_int_equal(send(fd, request, (size_t)n_request, 0), n_request);
    return fd;
}

/* A request that runs far longer than any test step (see the top of this file). */
static const char *long_request_body(bool is_stream, int n_choices) {
    static char body[256];
    snprintf(body, sizeof(body),
             "{\"prompt\":\"go\",\"max_tokens\":%d,\"ignore_eos\":true,\"stream\":%s,"
             "\"n\":%d}",
             LONG_MAX_TOKENS, is_stream ? "true" : "false", n_choices);
    return body;
}

typedef enum engine_condition {
    ENGINE_RUNNING_ONE,  /* one sequence running */
    ENGINE_WAITING_ONE,  /* one request queued */
    ENGINE_WAITING_NONE, /* nothing queued */
    ENGINE_IDLE,         /* nothing running or queued, and server has nothing in flight */
} engine_condition;

static bool engine_meets(quill_server *server, engine_condition condition) {
    quill_engine_stats stats;
    quill_server_stats server_stats;
    quill_engine_get_stats(the_fixture.engine, &stats);
    quill_server_get_stats(server, &server_stats);
    switch (condition) {
    case ENGINE_RUNNING_ONE:
        return stats.n_running == 1 && server_stats.n_generations_in_flight >= 1;
    case ENGINE_WAITING_ONE:
        return stats.n_waiting == 1;
    case ENGINE_WAITING_NONE:
        return stats.n_waiting == 0;
    case ENGINE_IDLE:
        return stats.n_running == 0 && stats.n_waiting == 0 &&
               server_stats.n_generations_in_flight == 0;
    }
    return false;
}

/* Waits, bounded at 30 s, for an engine condition; the caller asserts it afterwards. */
static void wait_for(quill_server *server, engine_condition condition) {
    for (int i = 0; i < 3000 && !engine_meets(server, condition); i++) {
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* Waits, bounded at 30 s, until the server has n_open HTTP requests open. The server records
 * a request after its last byte went out, so a client can hold its response a moment before
 * the record exists; the counters are read only after this. */
static void wait_for_open_requests(quill_server *server, int64_t n_open) {
    for (int i = 0; i < 30000; i++) {
        pthread_mutex_lock(&server->mutex);
        int64_t n_exchanges = server->n_exchanges;
        pthread_mutex_unlock(&server->mutex);
        if (n_exchanges == n_open) {
            return;
        }
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

static quill_server *start_server(int32_t max_requests_in_flight) {
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    params.api_key = API_KEY;
    params.model_alias = MODEL_ALIAS;
    params.price_input_picousd = PRICE_INPUT_PICOUSD;
    params.price_cached_input_picousd = PRICE_CACHED_PICOUSD;
    params.price_output_picousd = PRICE_OUTPUT_PICOUSD;
    params.max_requests_in_flight = max_requests_in_flight;
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);
    return server;
}

/* Parses the decimal USD text at text ("0.0000021") into picodollars, exactly. */
static int64_t parse_usd_picousd(const char *text) {
    char *end = NULL;
    int64_t whole = strtoll(text, &end, 10);
    int64_t fraction = 0;
    int64_t scale = PICOUSD_PER_USD;
    if (*end == '.') {
        for (const char *digit = end + 1; *digit >= '0' && *digit <= '9'; digit++) {
            scale /= 10;
            assert_true(scale >= 1);
            fraction += (*digit - '0') * scale;
        }
    }
    return whole * PICOUSD_PER_USD + fraction;
}

static int64_t json_int_at(struct json_object *usage, const char *key) {
    struct json_object *value = NULL;
    assert_true(json_object_object_get_ex(usage, key, &value));
    return json_object_get_int64(value);
}

/* Adds the usage of a response body (JSON, or SSE whose usage chunk has "usage") to sum. The
 * cost is read from the body's text, as the JSON parser would turn it into a double. */
static void add_usage(const char *body, usage_sum *sum) {
    const char *usage_text = strstr(body, "\"usage\":{");
    assert_non_null(usage_text);
    const char *object_start = usage_text + strlen("\"usage\":");
    struct json_tokener *tokener = json_tokener_new();
    struct json_object *usage =
        json_tokener_parse_ex(tokener, object_start, (int)strlen(object_start));
    json_tokener_free(tokener);
    assert_non_null(usage);
    sum->n_prompt_tokens += json_int_at(usage, "prompt_tokens");
    sum->n_completion_tokens += json_int_at(usage, "completion_tokens");
    struct json_object *details = NULL;
    assert_true(json_object_object_get_ex(usage, "prompt_tokens_details", &details));
    sum->n_cached_tokens += json_int_at(details, "cached_tokens");
    json_object_put(usage);

    const char *total = strstr(usage_text, "\"total\":");
    assert_non_null(total);
    sum->cost_picousd += parse_usd_picousd(total + strlen("\"total\":"));
}

/* Returns the value of the series whose line starts with series + " ", or -1 when absent. */
static double metric_value(const char *text, const char *series) {
    size_t n_series = strlen(series);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, series, n_series) == 0 && line[n_series] == ' ') {
            return strtod(line + n_series + 1, NULL);
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return -1;
}

/* Sums the integer values of every series of family with model MODEL_ALIAS (any feature). */
static int64_t metric_sum_int(const char *text, const char *family) {
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s{model=\"" MODEL_ALIAS "\"", family);
    int64_t sum = 0;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            const char *value = strchr(line, ' ');
            assert_non_null(value);
            sum += strtoll(value + 1, NULL, 10);
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return sum;
}

/* Sums the exact USD values of quill_cost_usd_total for MODEL_ALIAS, in picodollars. */
static int64_t metric_cost_picousd(const char *text) {
    const char *prefix = "quill_cost_usd_total{model=\"" MODEL_ALIAS "\"";
    int64_t sum = 0;
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            const char *value = strchr(line, ' ');
            assert_non_null(value);
            sum += parse_usd_picousd(value + 1);
        }
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return sum;
}

static double requests_total(const char *text, const char *status, const char *reason) {
    char series[160];
    snprintf(series, sizeof(series),
             "quill_requests_total{model=\"" MODEL_ALIAS "\",status=\"%s\",finish_reason=\"%s\"}",
             status, reason);
    return metric_value(text, series);
}

static double histogram_count(const char *text, const char *family) {
    char series[160];
    snprintf(series, sizeof(series), "%s_count{model=\"" MODEL_ALIAS "\"}", family);
    double value = metric_value(text, series);
    return value < 0 ? 0 : value;
}

/* Returns the model's sample of a gauge family, or -1 when the text has none. */
static double gauge_value(const char *text, const char *family) {
    char series[160];
    snprintf(series, sizeof(series), "%s{model=\"" MODEL_ALIAS "\"}", family);
    return metric_value(text, series);
}

static char *scrape_metrics(uint16_t port) {
    quill_test_http_reply reply;
    http_send(port, "/metrics", API_KEY, NULL, &reply);
    assert_int_equal(reply.status, 200);
    assert_string_equal(reply.content_type, "text/plain; version=0.0.4; charset=utf-8");
    return reply.body;
}

/* Runs promtool's linter on the text when /usr/bin/promtool exists, else prints a skip. */
static void check_with_promtool(const char *text) {
    if (access("/usr/bin/promtool", X_OK) != 0) {
        printf("skip: /usr/bin/promtool is not installed; the exposition text is unchecked\n");
        return;
    }
    char *path = quill_test_tmp_path("server-metrics.prom");
    assert_int_equal(quill_test_write_file(path, text, strlen(text)), 0);
    char command[1024];
    snprintf(command, sizeof(command), "/usr/bin/promtool check metrics < '%s' 2>&1", path);
    int exit_status = -1;
    char *output = quill_test_run_capture(command, &exit_status);
    if (exit_status != 0) {
        printf("promtool output:\n%s\n", output != NULL ? output : "");
    }
    assert_int_equal(exit_status, 0);
    free(output);
    remove(path);
    free(path);
}

static int group_setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    quill_test_tiny_model_params model_params = quill_test_tiny_model_params_default();
    model_params.n_ctx = MODEL_N_CTX;
    if (quill_test_load_tiny_model("server-metrics-tiny.gguf", &model_params,
                                   &the_fixture.model_path, &the_fixture.model) != 0) {
        return -1;
    }

    /* One sequence at a time, so that a second long request waits in the queue. */
    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_threads = 1;
    engine_params.n_parallel = 1;
    engine_params.n_ctx = MODEL_N_CTX;
    engine_params.queue_limit = 8;
    return quill_engine_create(the_fixture.model, &engine_params, &the_fixture.engine) == QUILL_OK
               ? 0
               : -1;
}

static int group_teardown(void **state) {
    (void)state;
    quill_engine_destroy(the_fixture.engine);
    quill_model_destroy(the_fixture.model);
    if (the_fixture.model_path != NULL) {
        remove(the_fixture.model_path);
    }
    free(the_fixture.model_path);
    curl_global_cleanup();
    return 0;
}

/* Successful requests, streamed and not, each ending at max_tokens ("length"). */
static const char *const successful_requests[][2] = {
    {"/v1/completions",
     "{\"prompt\":\"hello world\",\"max_tokens\":5,\"ignore_eos\":true,\"user\":\"ann\","
     "\"metadata\":{\"feature\":\"search\"}}"},
    {"/v1/completions",
     "{\"prompt\":\"hello world again\",\"max_tokens\":3,\"ignore_eos\":true,\"n\":2}"},
    {"/v1/chat/completions",
     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4,"
     "\"ignore_eos\":true,\"user\":\"bob\",\"metadata\":{\"feature\":\"chat\"}}"},
    {"/v1/completions",
     "{\"prompt\":\"stream me\",\"max_tokens\":6,\"ignore_eos\":true,\"stream\":true,"
     "\"stream_options\":{\"include_usage\":true}}"},
    {"/v1/chat/completions",
     "{\"messages\":[{\"role\":\"user\",\"content\":\"stream\"}],\"max_tokens\":5,"
     "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
     "\"metadata\":{\"feature\":\"chat\"}}"},
};
enum { N_SUCCESSFUL = sizeof(successful_requests) / sizeof(successful_requests[0]) };

static void test_metrics_counters_match_responses(void **state) {
    (void)state;
    quill_server *server = start_server(2);
    uint16_t port = quill_server_port(server);

    /* Successful requests, summing the usage each response reported. */
    usage_sum sum;
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < N_SUCCESSFUL; i++) {
        quill_test_http_reply reply;
        http_send(port, successful_requests[i][0], API_KEY, successful_requests[i][1], &reply);
        assert_int_equal(reply.status, 200);
        add_usage(reply.body, &sum);
        quill_test_http_reply_release(&reply);
        wait_for_open_requests(server, 0); /* also frees the slots for the next request */
    }
    assert_true(sum.cost_picousd > 0);

    /* Rejections: bad JSON, a wrong key, and a request beyond the two slots that a long request
     * with two choices holds. */
    quill_test_http_reply reply;
    http_send(port, "/v1/completions", API_KEY, "{\"prompt\":", &reply);
    assert_int_equal(reply.status, 400);
    quill_test_http_reply_release(&reply);
    http_send(port, "/v1/chat/completions", "wrong-key", "{}", &reply);
    assert_int_equal(reply.status, 401);
    quill_test_http_reply_release(&reply);
    int held_fd = send_raw_request(port, "/v1/completions", long_request_body(false, 2));
    wait_for(server, ENGINE_RUNNING_ONE);
    assert_true(engine_meets(server, ENGINE_RUNNING_ONE));
    http_send(port, "/v1/completions", API_KEY, "{\"prompt\":\"x\",\"max_tokens\":1}", &reply);
    assert_int_equal(reply.status, 429);
    quill_test_http_reply_release(&reply);
    wait_for_open_requests(server, 1); /* the long request */

    /* Counters match the responses exactly; rejections are absent from the histograms. */
    char *text = scrape_metrics(port);
    assert_true(requests_total(text, "200", "length") == N_SUCCESSFUL);
    assert_true(requests_total(text, "400", "none") == 1);
    assert_true(requests_total(text, "401", "none") == 1);
    assert_true(requests_total(text, "429", "none") == 1);
    assert_int_equal(metric_sum_int(text, "quill_prompt_tokens_total"), sum.n_prompt_tokens);
    assert_int_equal(metric_sum_int(text, "quill_cached_prompt_tokens_total"), sum.n_cached_tokens);
    assert_int_equal(metric_sum_int(text, "quill_completion_tokens_total"),
                     sum.n_completion_tokens);
    assert_int_equal(metric_cost_picousd(text), sum.cost_picousd);
    assert_true(histogram_count(text, "quill_time_to_first_token_seconds") == N_SUCCESSFUL);
    assert_true(histogram_count(text, "quill_e2e_request_latency_seconds") == N_SUCCESSFUL);
    assert_true(histogram_count(text, "quill_queue_seconds") == N_SUCCESSFUL);
    /* Gaps come from streams only, at most one per token; a stream whose tokens all went out
     * in one write has none, so the count depends on timing and only its bound is checked. */
    assert_true(histogram_count(text, "quill_inter_token_latency_seconds") <=
                (double)sum.n_completion_tokens);
    assert_non_null(strstr(text, "quill_requests_running{model=\"" MODEL_ALIAS "\"} 1"));
    assert_non_null(strstr(text, "quill_preemptions_total{model=\"" MODEL_ALIAS "\"} 0"));
    check_with_promtool(text);
    free(text);

    /* /v1/stats keeps the client's mistakes and the capacity rejection out of errors. */
    http_send(port, "/v1/stats", API_KEY, NULL, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *stats = json_tokener_parse(reply.body);
    assert_non_null(stats);
    struct json_object *since_start = NULL;
    assert_true(json_object_object_get_ex(stats, "models", &since_start));
    assert_true(json_object_object_get_ex(since_start, MODEL_ALIAS, &since_start));
    assert_true(json_object_object_get_ex(since_start, "since_start", &since_start));
    static const struct {
        const char *key;
        int64_t count;
    } outcomes[] = {{"errors", 0}, {"client_errors", 2}, {"rejections", 1}};
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
        struct json_object *count = NULL;
        assert_true(json_object_object_get_ex(since_start, outcomes[i].key, &count));
        assert_int_equal(json_object_get_int64(count), outcomes[i].count);
    }
    json_object_put(stats);
    quill_test_http_reply_release(&reply);

    /* The client of the long request leaves: it counts as 499 "cancelled", with its prompt
     * tokens, and stays out of the latency histograms. */
    close(held_fd);
    wait_for(server, ENGINE_IDLE);
    assert_true(engine_meets(server, ENGINE_IDLE));
    text = scrape_metrics(port);
    assert_true(requests_total(text, "499", "cancelled") == 1);
    assert_true(metric_sum_int(text, "quill_prompt_tokens_total") > sum.n_prompt_tokens);
    assert_true(histogram_count(text, "quill_time_to_first_token_seconds") == N_SUCCESSFUL);
    assert_true(histogram_count(text, "quill_e2e_request_latency_seconds") == N_SUCCESSFUL);
    assert_non_null(strstr(text, "quill_requests_running{model=\"" MODEL_ALIAS "\"} 0"));
    check_with_promtool(text);
    free(text);
    quill_server_destroy(server);
}

static void test_metrics_need_api_key(void **state) {
    (void)state;
    quill_server *server = start_server(0);
    quill_test_http_reply reply;
    http_send(quill_server_port(server), "/metrics", NULL, NULL, &reply);
    assert_int_equal(reply.status, 401);
    quill_test_http_reply_release(&reply);
    http_send(quill_server_port(server), "/v1/stats", "wrong-key", NULL, &reply);
    assert_int_equal(reply.status, 401);
    quill_test_http_reply_release(&reply);
    quill_server_destroy(server);
}

static struct json_object *json_get(struct json_object *object, const char *key) {
    struct json_object *value = NULL;
    assert_non_null(object);
    assert_true(json_object_object_get_ex(object, key, &value));
    return value;
}

static void test_stats_counts_and_cache_hits(void **state) {
    (void)state;
    quill_server *server = start_server(0);
    uint16_t port = quill_server_port(server);

    /* Two prompts sharing a prefix of many KV blocks. */
    char prefix[1024];
    size_t n_prefix = 0;
    while (n_prefix + 40 < sizeof(prefix)) {
        n_prefix += (size_t)snprintf(prefix + n_prefix, sizeof(prefix) - n_prefix,
                                     "the quick brown fox jumps over a dog ");
    }
    const char *const endings[] = {"one", "two"};
    int64_t n_cached_second = 0;
    for (int i = 0; i < 2; i++) {
        char body[1400];
        snprintf(body, sizeof(body),
                 "{\"prompt\":\"%s%s\",\"max_tokens\":2,\"ignore_eos\":true,\"user\":\"carol\"}",
                 prefix, endings[i]);
        quill_test_http_reply reply;
        http_send(port, "/v1/completions", API_KEY, body, &reply);
        assert_int_equal(reply.status, 200);
        usage_sum sum;
        memset(&sum, 0, sizeof(sum));
        add_usage(reply.body, &sum);
        n_cached_second = sum.n_cached_tokens;
        quill_test_http_reply_release(&reply);
        wait_for_open_requests(server, 0);
    }
    assert_true(n_cached_second > 0);

    quill_test_http_reply reply;
    http_send(port, "/v1/stats", API_KEY, NULL, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = json_tokener_parse(reply.body);
    assert_non_null(root);
    struct json_object *model = json_get(json_get(root, "models"), MODEL_ALIAS);
    struct json_object *since_start = json_get(model, "since_start");
    assert_int_equal(json_object_get_int64(json_get(since_start, "requests")), 2);
    assert_int_equal(json_object_get_int64(json_get(since_start, "errors")), 0);
    assert_true(json_object_get_double(json_get(since_start, "cache_hit_rate")) > 0.0);
    struct json_object *engine = json_get(model, "engine");
    assert_true(json_object_get_int64(json_get(engine, "prefix_cache_hits")) > 0);
    assert_non_null(json_get(json_get(root, "users"), "carol"));
    json_object_put(root);
    quill_test_http_reply_release(&reply);
    quill_server_destroy(server);
}

/* A running non-streamed request and a queued streamed one lose their clients; the watchdog
 * cancels both without any other request waking their connections. */
static void test_disconnect_cancels_running_and_queued(void **state) {
    (void)state;
    quill_server *server = start_server(0);
    uint16_t port = quill_server_port(server);
    quill_server_stats before;
    quill_server_get_stats(server, &before);

    int running_fd = send_raw_request(port, "/v1/completions", long_request_body(false, 1));
    wait_for(server, ENGINE_RUNNING_ONE);
    assert_true(engine_meets(server, ENGINE_RUNNING_ONE));
    int queued_fd = send_raw_request(port, "/v1/completions", long_request_body(true, 1));
    wait_for(server, ENGINE_WAITING_ONE);
    assert_true(engine_meets(server, ENGINE_WAITING_ONE));

    close(queued_fd);
    wait_for(server, ENGINE_WAITING_NONE);
    assert_true(engine_meets(server, ENGINE_WAITING_NONE));

    close(running_fd);
    wait_for(server, ENGINE_IDLE);
    quill_engine_stats stats;
    quill_engine_get_stats(the_fixture.engine, &stats);
    assert_int_equal(stats.n_running, 0);
    assert_int_equal(stats.n_waiting, 0);
    assert_int_equal(stats.n_blocks_used, 0);
    quill_server_stats after;
    quill_server_get_stats(server, &after);
    assert_int_equal(after.n_generations_in_flight, 0);
    assert_int_equal(after.n_client_disconnects, before.n_client_disconnects + 2);

    char *text = scrape_metrics(port);
    assert_true(requests_total(text, "499", "cancelled") == 2);
    /* With nothing running, every used block is one the prefix cache keeps. */
    assert_true(gauge_value(text, "quill_kv_cache_blocks_cached") >= 0.0);
    assert_true(gauge_value(text, "quill_kv_cache_blocks_cached") ==
                gauge_value(text, "quill_kv_cache_blocks_used"));
    assert_true(histogram_count(text, "quill_time_to_first_token_seconds") == 0);
    free(text);
    quill_server_destroy(server);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_counters_match_responses),
        cmocka_unit_test(test_metrics_need_api_key),
        cmocka_unit_test(test_stats_counts_and_cache_hits),
        cmocka_unit_test(test_disconnect_cancels_running_and_queued),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
