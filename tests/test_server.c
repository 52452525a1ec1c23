/*
 * Tests of the HTTP server: a tiny random model is written to the scratch folder, loaded into an
 * engine, and served on 127.0.0.1 with port 0; libcurl (and, where a test must stop reading or
 * drop the connection mid-stream, a raw socket) drives it. Covers chat and completions, streamed
 * and not, usage and cost against the tokenizer and the configured prices, every error shape,
 * UTF-8 split across byte tokens, stop strings across tokens, client disconnects, special-token
 * text typed by a user, and the ChatML default template.
 */
#include "test_support.h"
#include "test_http.h"
#include "engine_gate.h"
#include "tiny_model.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "base/alloc.h"
#include "quill/engine.h"
#include "quill/model.h"
#include "quill/server.h"
#include "quill/tokenizer.h"
#include "server/completion.h"
#include "server/cost.h"
#include "server/openai_request.h"
#include "server/server_internal.h"

#define API_KEY "test-key"
#define MAX_BODY_BYTES 65536

/* Prices: $0.15, $0.075 and $0.60 per million tokens. */
#define PRICE_INPUT_PICOUSD 150000
#define PRICE_CACHED_PICOUSD 75000
#define PRICE_OUTPUT_PICOUSD 600000

typedef struct fixture {
    char *model_path;
    quill_model *model;
    quill_engine *engine;
    quill_server *server;
} fixture;

static fixture the_fixture;

static void http_post(const char *path, const char *body, quill_test_http_reply *reply) {
    quill_test_http_send(quill_server_port(the_fixture.server), "POST", path, "application/json",
                         API_KEY, body, strlen(body), reply);
}

static struct json_object *parse_json(const char *text) {
    struct json_object *root = json_tokener_parse(text);
    assert_non_null(root);
    return root;
}

/* Returns the value at a dotted path ("usage.prompt_tokens", "choices.0.text"), or NULL. */
static struct json_object *json_at(struct json_object *root, const char *path) {
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", path);
    struct json_object *node = root;
    char *saveptr = NULL;
    for (char *part = strtok_r(copy, ".", &saveptr); part != NULL && node != NULL;
         part = strtok_r(NULL, ".", &saveptr)) {
        if (json_object_is_type(node, json_type_array)) {
            node = json_object_array_get_idx(node, (size_t)strtol(part, NULL, 10));
        } else if (!json_object_object_get_ex(node, part, &node)) {
            node = NULL;
        }
    }
    return node;
}

static const char *json_string_at(struct json_object *root, const char *path) {
    struct json_object *node = json_at(root, path);
    return node != NULL ? json_object_get_string(node) : NULL;
}

static int64_t json_int_at(struct json_object *root, const char *path) {
    struct json_object *node = json_at(root, path);
    assert_non_null(node);
    return json_object_get_int64(node);
}

/* Checks an OpenAI error body: status, param (NULL for JSON null) and code (NULL: any). */
static void assert_error(const quill_test_http_reply *reply, long status, const char *param,
                         const char *code) {
    assert_int_equal(reply->status, status);
    struct json_object *root = parse_json(reply->body);
    assert_non_null(json_string_at(root, "error.message"));
    assert_non_null(json_string_at(root, "error.type"));
    if (param != NULL) {
        assert_non_null(json_string_at(root, "error.param"));
        assert_string_equal(json_string_at(root, "error.param"), param);
    } else {
        assert_null(json_at(root, "error.param"));
    }
    if (code != NULL) {
        assert_non_null(json_string_at(root, "error.code"));
        assert_string_equal(json_string_at(root, "error.code"), code);
    }
    json_object_put(root);
}

/* Splits an SSE body into its data payloads; returns how many (at most max_events). */
static int split_sse(char *body, char **events, int max_events) {
    int n_events = 0;
    char *cursor = body;
    while (cursor != NULL && *cursor != '\0' && n_events < max_events) {
        char *end = strstr(cursor, "\n\n");
        if (end == NULL) {
            break;
        }
        *end = '\0';
        assert_true(strncmp(cursor, "data: ", 6) == 0);
        events[n_events++] = cursor + 6;
        cursor = end + 2;
    }
    return n_events;
}

/* Appends every content delta of a streamed chat (or text of a completion) to out. */
static void join_stream_text(char **events, int n_events, bool is_chat, char *out,
                             size_t out_bytes, const char **finish_reason_out,
                             struct json_object **usage_root) {
    out[0] = '\0';
    static char finish_reason[32];
    finish_reason[0] = '\0';
    for (int i = 0; i < n_events - 1; i++) {
        struct json_object *root = parse_json(events[i]);
        struct json_object *choices = json_at(root, "choices");
        assert_non_null(choices);
        if (json_object_array_length(choices) == 0) {
            *usage_root = root;
            continue;
        }
        const char *text = json_string_at(root, is_chat ? "choices.0.delta.content"
                                                        : "choices.0.text");
        if (text != NULL) {
            strncat(out, text, out_bytes - strlen(out) - 1);
        }
        const char *reason = json_string_at(root, "choices.0.finish_reason");
        if (reason != NULL) {
            snprintf(finish_reason, sizeof(finish_reason), "%s", reason);
        }
        json_object_put(root);
    }
    *finish_reason_out = finish_reason;
}

/* A logit_bias object banning ids [0, n_ids). */
static char *ban_ids(int n_ids) {
    size_t capacity = 16 * (size_t)n_ids + 16;
    char *json = malloc(capacity);
    assert_non_null(json);
    size_t length = (size_t)snprintf(json, capacity, "{");
    for (int id = 0; id < n_ids; id++) {
        length += (size_t)snprintf(json + length, capacity - length, "%s\"%d\":-100",
                                   id > 0 ? "," : "", id);
    }
    snprintf(json + length, capacity - length, "}");
    return json;
}

/* A logit_bias object banning <unk>, <s>, </s> and the byte tokens, so generation runs to
 * max_tokens over letter pieces only. */
static char *ban_special_and_bytes(void) {
    return ban_ids(QUILL_TEST_TINY_FIRST_PIECE);
}

static int group_setup(void **state) {
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    quill_test_tiny_model_params model_params = quill_test_tiny_model_params_default();
    if (quill_test_load_tiny_model("server-tiny.gguf", &model_params, &the_fixture.model_path,
                                   &the_fixture.model) != 0) {
        return -1;
    }

    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_threads = 1;
    engine_params.n_parallel = 4;
    engine_params.queue_limit = 16;
    if (quill_engine_create(the_fixture.model, &engine_params, &the_fixture.engine) !=
        QUILL_OK) {
        return -1;
    }

    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    params.api_key = API_KEY;
    params.model_alias = "tiny";
    params.price_input_picousd = PRICE_INPUT_PICOUSD;
    params.price_cached_input_picousd = PRICE_CACHED_PICOUSD;
    params.price_output_picousd = PRICE_OUTPUT_PICOUSD;
    params.max_body_bytes = MAX_BODY_BYTES;
    if (quill_server_create(&params, &the_fixture.server) != QUILL_OK) {
        return -1;
    }
    if (quill_server_set_model_path(the_fixture.server, the_fixture.model_path) != QUILL_OK) {
        return -1;
    }
    return quill_server_set_engine(the_fixture.server, the_fixture.engine) == QUILL_OK ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    quill_server_destroy(the_fixture.server);
    quill_engine_destroy(the_fixture.engine);
    quill_model_destroy(the_fixture.model);
    if (the_fixture.model_path != NULL) {
        remove(the_fixture.model_path);
    }
    free(the_fixture.model_path);
    curl_global_cleanup();
    return 0;
}

static void test_health_loading_then_ready(void **state) {
    (void)state;
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 1;
    quill_server *loading = NULL;
    assert_int_equal(quill_server_create(&params, &loading), QUILL_OK);
    quill_test_http_reply reply;
    quill_test_http_send(quill_server_port(loading), "GET", "/health", NULL, NULL, NULL, 0, &reply);
    assert_int_equal(reply.status, 503);
    quill_test_http_reply_release(&reply);
    quill_test_http_send(quill_server_port(loading), "POST", "/v1/completions", "application/json",
                         NULL, "{\"prompt\":\"a\"}", 14, &reply);
    assert_error(&reply, 503, NULL, "model_loading");
    assert_string_equal(reply.retry_after, "1");
    quill_test_http_reply_release(&reply);
    quill_server_destroy(loading);

    quill_test_http_send(quill_server_port(the_fixture.server), "GET", "/health", NULL, NULL, NULL,
                         0, &reply);
    assert_int_equal(reply.status, 200);
    assert_non_null(strstr(reply.body, "\"ok\""));
    quill_test_http_reply_release(&reply);
}

static void test_models_lists_alias(void **state) {
    (void)state;
    quill_test_http_reply reply;
    quill_test_http_send(quill_server_port(the_fixture.server), "GET", "/v1/models", NULL, API_KEY,
                         NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "object"), "list");
    assert_string_equal(json_string_at(root, "data.0.id"), "tiny");
    assert_int_equal(json_int_at(root, "data.0.context_length"), 256);
    assert_int_equal(json_int_at(root, "data.0.vocab_size"), 320);
    /* "created" is when the model started serving, the same in every call. */
    assert_int_equal(json_int_at(root, "data.0.created"), the_fixture.server->model_created_unix);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static int64_t count_prompt_tokens(const char *text, uint32_t flags) {
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    assert_int_equal(quill_tokenizer_encode(quill_model_tokenizer(the_fixture.model), text,
                                            strlen(text), flags, &tokens, &n_tokens),
                     QUILL_OK);
    quill_tokens_free(tokens);
    return n_tokens;
}

/* Checks usage against the token counts and the configured prices, exactly. */
static void assert_usage_and_cost(const char *body, struct json_object *root,
                                  int64_t n_prompt_expected) {
    int64_t n_prompt = json_int_at(root, "usage.prompt_tokens");
    int64_t n_completion = json_int_at(root, "usage.completion_tokens");
    int64_t n_cached = json_int_at(root, "usage.prompt_tokens_details.cached_tokens");
    assert_int_equal(n_prompt, n_prompt_expected);
    assert_int_equal(json_int_at(root, "usage.total_tokens"), n_prompt + n_completion);
    assert_true(n_cached >= 0);
    assert_true(n_cached <= n_prompt);

    quill_prices prices = {PRICE_INPUT_PICOUSD, PRICE_CACHED_PICOUSD, PRICE_OUTPUT_PICOUSD};
    quill_cost cost;
    assert_int_equal(quill__cost_compute(&prices, n_prompt, n_cached, n_completion, &cost),
                     QUILL_OK);
    char usd[QUILL_COST_USD_TEXT_BYTES];
    char expected[160];
    snprintf(expected, sizeof(expected), "\"cost\":{\"input\":%s,",
             quill__cost_format_usd(cost.input_picousd, usd, sizeof(usd)));
    assert_non_null(strstr(body, expected));
    snprintf(expected, sizeof(expected), "\"output\":%s,",
             quill__cost_format_usd(cost.output_picousd, usd, sizeof(usd)));
    assert_non_null(strstr(body, expected));
    snprintf(expected, sizeof(expected), "\"total\":%s,",
             quill__cost_format_usd(cost.total_picousd, usd, sizeof(usd)));
    assert_non_null(strstr(body, expected));
    assert_non_null(json_at(root, "usage.timings.ttft_ms"));
    assert_non_null(json_at(root, "usage.timings.decode_tokens_per_second"));
}

static void test_completion_usage_and_cost(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"model\":\"tiny\",\"prompt\":\"hello world\",\"max_tokens\":8,"
              "\"temperature\":0}",
              &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "object"), "text_completion");
    assert_non_null(json_string_at(root, "choices.0.text"));
    assert_non_null(json_string_at(root, "choices.0.finish_reason"));
    assert_true(json_int_at(root, "usage.completion_tokens") <= 8);
    int64_t n_prompt = count_prompt_tokens("hello world", QUILL_TOKENIZE_ADD_SPECIAL |
                                                              QUILL_TOKENIZE_PARSE_SPECIAL);
    assert_usage_and_cost(reply.body, root, n_prompt);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_chat_usage_and_cost(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}],"
              "\"max_completion_tokens\":6,\"temperature\":0,\"metadata\":{\"feature\":\"t\"}}",
              &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "object"), "chat.completion");
    assert_string_equal(json_string_at(root, "model"), "tiny");
    assert_string_equal(json_string_at(root, "choices.0.message.role"), "assistant");
    assert_non_null(json_string_at(root, "choices.0.message.content"));

    /* The prompt is the ChatML rendering (developer as system), tokenized without specials in
     * the user's text; the model has no BOS flag, so the count is the rendering's. */
    int64_t n_prompt = count_prompt_tokens(
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n",
        0);
    int64_t n_with_bos = n_prompt + 1;
    int64_t n_reported = json_int_at(root, "usage.prompt_tokens");
    assert_true(n_reported == n_prompt || n_reported == n_with_bos);
    assert_usage_and_cost(reply.body, root, n_reported);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_chat_stream_matches_plain(void **state) {
    (void)state;
    const char *request_plain =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"tell\"}],\"max_tokens\":10,"
        "\"temperature\":0}";
    quill_test_http_reply plain;
    http_post("/v1/chat/completions", request_plain, &plain);
    assert_int_equal(plain.status, 200);
    struct json_object *plain_root = parse_json(plain.body);

    quill_test_http_reply streamed;
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"tell\"}],\"max_tokens\":10,"
              "\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
              &streamed);
    assert_int_equal(streamed.status, 200);
    assert_non_null(strstr(streamed.content_type, "text/event-stream"));

    char *events[256];
    int n_events = split_sse(streamed.body, events, 256);
    assert_true(n_events >= 3);
    assert_string_equal(events[n_events - 1], "[DONE]");
    struct json_object *first = parse_json(events[0]);
    assert_string_equal(json_string_at(first, "object"), "chat.completion.chunk");
    assert_string_equal(json_string_at(first, "choices.0.delta.role"), "assistant");
    json_object_put(first);

    char text[4096];
    const char *finish_reason = NULL;
    struct json_object *usage_root = NULL;
    join_stream_text(events, n_events, true, text, sizeof(text), &finish_reason, &usage_root);
    assert_string_equal(text, json_string_at(plain_root, "choices.0.message.content"));
    assert_string_equal(finish_reason, json_string_at(plain_root, "choices.0.finish_reason"));
    assert_non_null(usage_root);
    assert_int_equal(json_int_at(usage_root, "usage.prompt_tokens"),
                     json_int_at(plain_root, "usage.prompt_tokens"));
    assert_int_equal(json_int_at(usage_root, "usage.completion_tokens"),
                     json_int_at(plain_root, "usage.completion_tokens"));
    assert_non_null(json_at(usage_root, "usage.cost.total"));
    json_object_put(usage_root);
    json_object_put(plain_root);
    quill_test_http_reply_release(&streamed);
    quill_test_http_reply_release(&plain);
}

static void test_completion_stream_n_choices(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"prompt\":\"abc\",\"max_tokens\":4,\"n\":2,\"seed\":7,\"stream\":true}",
              &reply);
    assert_int_equal(reply.status, 200);
    char *events[256];
    int n_events = split_sse(reply.body, events, 256);
    assert_string_equal(events[n_events - 1], "[DONE]");
    int n_finished[2] = {0, 0};
    for (int i = 0; i < n_events - 1; i++) {
        struct json_object *root = parse_json(events[i]);
        assert_string_equal(json_string_at(root, "object"), "text_completion");
        int64_t index = json_int_at(root, "choices.0.index");
        assert_true(index == 0 || index == 1);
        if (json_string_at(root, "choices.0.finish_reason") != NULL) {
            n_finished[index]++;
        }
        json_object_put(root);
    }
    assert_int_equal(n_finished[0], 1);
    assert_int_equal(n_finished[1], 1);
    quill_test_http_reply_release(&reply);
}

static void test_ignore_eos_runs_to_max(void **state) {
    (void)state;
    int32_t eos = quill_tokenizer_eos(quill_model_tokenizer(the_fixture.model));
    char body[256];

    /* EOS is forced by its bias; without ignore_eos the first token ends the completion. */
    for (int ignore = 0; ignore <= 1; ignore++) {
        snprintf(body, sizeof(body),
                 "{\"prompt\":\"a\",\"max_tokens\":5,\"ignore_eos\":%s,"
                 "\"logit_bias\":{\"%d\":100}}",
                 ignore ? "true" : "false", eos);
        quill_test_http_reply reply;
        http_post("/v1/completions", body, &reply);
        assert_int_equal(reply.status, 200);
        struct json_object *root = parse_json(reply.body);
        assert_int_equal(json_int_at(root, "usage.completion_tokens"), ignore ? 5 : 1);
        assert_string_equal(json_string_at(root, "choices.0.finish_reason"),
                            ignore ? "length" : "stop");
        json_object_put(root);
        quill_test_http_reply_release(&reply);
    }
}

/* Asserts that the error message of reply contains part. */
static void assert_error_mentions(const quill_test_http_reply *reply, const char *part) {
    struct json_object *root = parse_json(reply->body);
    const char *message = json_string_at(root, "error.message");
    assert_non_null(message);
    if (strstr(message, part) == NULL) {
        fail_msg("message '%s' lacks '%s'", message, part);
    }
    json_object_put(root);
}

static void test_errors_bad_json_and_content_type(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/chat/completions", "{\"messages\": [", &reply);
    assert_error(&reply, 400, NULL, "invalid_json");
    quill_test_http_reply_release(&reply);

    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    quill_test_http_send(quill_server_port(the_fixture.server), "POST", "/v1/chat/completions",
                         "text/plain", API_KEY, body, strlen(body), &reply);
    assert_error(&reply, 415, NULL, "invalid_content_type");
    assert_error_mentions(&reply, "'text/plain'");
    quill_test_http_reply_release(&reply);
}

/* user and metadata become usage-metrics tags, so their sizes are capped: a 257-byte user, a
 * 513-byte metadata value, a 65-byte metadata key and 17 metadata pairs are refused, and the
 * largest allowed ones pass. */
static void test_errors_cap_usage_tags(void **state) {
    (void)state;
    char long_text[600];
    char body[2048];
    quill_test_http_reply reply;

    memset(long_text, 'u', 257);
    long_text[257] = '\0';
    snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"max_tokens\":1,\"user\":\"%s\"}", long_text);
    http_post("/v1/completions", body, &reply);
    assert_error(&reply, 400, "user", NULL);
    assert_error_mentions(&reply, "257 bytes");
    quill_test_http_reply_release(&reply);

    long_text[256] = '\0';
    snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"max_tokens\":1,\"user\":\"%s\"}", long_text);
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);

    memset(long_text, 'f', 513);
    long_text[513] = '\0';
    snprintf(body, sizeof(body),
             "{\"prompt\":\"x\",\"max_tokens\":1,\"metadata\":{\"feature\":\"%s\"}}", long_text);
    http_post("/v1/completions", body, &reply);
    assert_error(&reply, 400, "metadata.feature", NULL);
    assert_error_mentions(&reply, "513 bytes");
    quill_test_http_reply_release(&reply);

    long_text[65] = '\0';
    snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"max_tokens\":1,\"metadata\":{\"%s\":\"v\"}}",
             long_text);
    http_post("/v1/completions", body, &reply);
    assert_error(&reply, 400, "metadata", NULL);
    quill_test_http_reply_release(&reply);

    size_t used = (size_t)snprintf(body, sizeof(body), "{\"prompt\":\"x\",\"metadata\":{");
    for (int i = 0; i < 17; i++) {
        used += (size_t)snprintf(body + used, sizeof(body) - used, "%s\"k%d\":\"v\"",
                                 i > 0 ? "," : "", i);
    }
    snprintf(body + used, sizeof(body) - used, "}}");
    http_post("/v1/completions", body, &reply);
    assert_error(&reply, 400, "metadata", NULL);
    assert_error_mentions(&reply, "at most 16");
    quill_test_http_reply_release(&reply);
}

static void test_errors_name_the_parameter(void **state) {
    (void)state;
    static const struct {
        const char *path;
        const char *body;
        const char *param;
    } cases[] = {
        {"/v1/chat/completions", "{}", "messages"},
        {"/v1/chat/completions", "{\"messages\":[]}", "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
         "messages[0].role"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0}", "top_p"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":0}",
         "n"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\","
         "\"d\",\"e\"]}",
         "stop"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"99999\":1}}",
         "logit_bias"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}",
         "top_logprobs"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":"
         "\"json_object\"}}",
         "response_format.type"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
         "\"retrieval\"}]}",
         "tools[0].type"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
         "\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\",\"function\":"
         "{\"parameters\":{}}}]}",
         "tools[1].function.name"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
         "\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]}",
         "tools[0].function.parameters"},
        {"/v1/completions", "{\"prompt\":\"x\",\"echo\":true}", "echo"},
        {"/v1/completions", "{\"prompt\":[1,2,99999]}", "prompt"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}",
         "stream_options"},
        {"/v1/completions",
         "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usgae\":true}}",
         "stream_options"},
        {"/v1/completions", "{\"prompt\":\"x\",\"user\":\"_other\"}", "user"},
        {"/v1/completions", "{\"prompt\":\"x\",\"metadata\":{\"feature\":\"none\"}}",
         "metadata.feature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"metadata\":{\"feature\":\"_other\"}}",
         "metadata.feature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"metadata\":{\"feature\":5}}", "metadata.feature"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        quill_test_http_reply reply;
        http_post(cases[i].path, cases[i].body, &reply);
        assert_error(&reply, 400, cases[i].param, NULL);
        quill_test_http_reply_release(&reply);
    }
}

/* What json-c's strict mode lets through is still rejected as invalid JSON, each message naming
 * the problem, while the same characters written legally pass. */
static void test_errors_strict_json(void **state) {
    (void)state;
    static const struct {
        const char *body;
        const char *mention;
    } cases[] = {
        {"{\"prompt\":\"x\",\"max_tokens\":1,\"store\":NaN}", "'NaN'"},
        {"{\"prompt\":\"x\",\"max_tokens\":1,\"temperature\":-Infinity}", "'Infinity'"},
        {"{\"prompt\":\"x\",\"max_tokens\":1,\"temperature\":1.}", "ends with '.'"},
        {"{\"prompt\":\"a\tb\",\"max_tokens\":1}", "control character 0x09"},
        {"{\"prompt\":\"a\\u0000b\",\"max_tokens\":1}", "\\u0000"},
        {"{\"prompt\":\"x\",\"max_tokens\":1,\"stop\":\"e\\u0000zzz\"}", "NUL"},
        {"{\"prompt\":\"x\",\"max_tokens\":1,\"model\":\"m\\u0000evil\"}", "NUL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        quill_test_http_reply reply;
        http_post("/v1/completions", cases[i].body, &reply);
        assert_error(&reply, 400, NULL, "invalid_json");
        assert_error_mentions(&reply, cases[i].mention);
        quill_test_http_reply_release(&reply);
    }

    /* An escaped backslash before "u0000", an exponent and an escaped tab are JSON. */
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"prompt\":\"a\\\\u0000\\tb\",\"max_tokens\":1,\"temperature\":1e0}", &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
}

/* Seeds span both signed and unsigned 64-bit integers, a negative one standing for its two's
 * complement. Numbers past either end are rejected with the value as sent. Tiny values that
 * single precision turns into an open minimum, a key with a leading space and a value that %g
 * would round are rejected with messages that show them. */
static void test_errors_number_edges(void **state) {
    (void)state;
    static const char *const accepted[] = {"9223372036854775807", "-9223372036854775808",
                                           "18446744073709551615", "-1"};
    char *texts[4] = {NULL};
    for (size_t i = 0; i < 4; i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"prompt\":\"Once\",\"max_tokens\":8,\"temperature\":1.5,\"seed\":%s}",
                 accepted[i]);
        quill_test_http_reply reply;
        http_post("/v1/completions", body, &reply);
        assert_int_equal(reply.status, 200);
        struct json_object *root = parse_json(reply.body);
        texts[i] = strdup(json_string_at(root, "choices.0.text"));
        json_object_put(root);
        quill_test_http_reply_release(&reply);
    }
    assert_string_equal(texts[2], texts[3]); /* UINT64_MAX and -1 are the same seed */
    for (size_t i = 0; i < 4; i++) {
        free(texts[i]);
    }

    static const struct {
        const char *body;
        const char *param;
        const char *mention;
    } refused[] = {
        {"{\"prompt\":\"x\",\"seed\":18446744073709551616}", "seed", "18446744073709551616"},
        {"{\"prompt\":\"x\",\"seed\":-9223372036854775809}", "seed", "-9223372036854775809"},
        {"{\"prompt\":\"x\",\"top_p\":1e-300}", "top_p", "single precision"},
        {"{\"prompt\":\"x\",\"repetition_penalty\":1e-300}", "repetition_penalty",
         "single precision"},
        {"{\"prompt\":\"x\",\"temperature\":2.0000001}", "temperature", "2.0000001"},
        {"{\"prompt\":\"x\",\"logit_bias\":{\" 5\":1}}", "logit_bias", "' 5'"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        quill_test_http_reply reply;
        http_post("/v1/completions", refused[i].body, &reply);
        assert_error(&reply, 400, refused[i].param, NULL);
        assert_error_mentions(&reply, refused[i].mention);
        quill_test_http_reply_release(&reply);
    }
}

/* A prompt may be a batch of one, of text or of token ids, and gives what the prompt alone
 * gives. A batch of two is rejected. */
static void test_completion_prompt_batch_of_one(void **state) {
    (void)state;
    static const char *const bodies[] = {
        "{\"prompt\":[1,300,301],\"max_tokens\":6,\"temperature\":0}",
        "{\"prompt\":[[1,300,301]],\"max_tokens\":6,\"temperature\":0}",
        "{\"prompt\":\"ab\",\"max_tokens\":6,\"temperature\":0}",
        "{\"prompt\":[\"ab\"],\"max_tokens\":6,\"temperature\":0}",
    };
    char *texts[4] = {NULL};
    for (size_t i = 0; i < 4; i++) {
        quill_test_http_reply reply;
        http_post("/v1/completions", bodies[i], &reply);
        assert_int_equal(reply.status, 200);
        struct json_object *root = parse_json(reply.body);
        texts[i] = strdup(json_string_at(root, "choices.0.text"));
        json_object_put(root);
        quill_test_http_reply_release(&reply);
    }
    assert_string_equal(texts[0], texts[1]);
    assert_string_equal(texts[2], texts[3]);
    for (size_t i = 0; i < 4; i++) {
        free(texts[i]);
    }

    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"prompt\":[[1,300],[1,301]],\"max_tokens\":1}", &reply);
    assert_error(&reply, 400, "prompt", NULL);
    assert_error_mentions(&reply, "one prompt per request");
    quill_test_http_reply_release(&reply);
}

static void test_errors_ignored_hints_accepted(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"prompt\":\"x\",\"max_tokens\":1,\"store\":false,\"service_tier\":\"auto\","
              "\"user\":\"u1\",\"suffix\":null}",
              &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
}

static void test_errors_api_key(void **state) {
    (void)state;
    const char *body = "{\"prompt\":\"x\",\"max_tokens\":1}";
    quill_test_http_reply reply;
    quill_test_http_send(quill_server_port(the_fixture.server), "POST", "/v1/completions",
                         "application/json", NULL, body, strlen(body), &reply);
    assert_error(&reply, 401, NULL, "invalid_api_key");
    quill_test_http_reply_release(&reply);
    quill_test_http_send(quill_server_port(the_fixture.server), "POST", "/v1/completions",
                         "application/json", "wrong-key", body, strlen(body), &reply);
    assert_error(&reply, 401, NULL, "invalid_api_key");
    quill_test_http_reply_release(&reply);

    /* Extra spaces or tabs after "Bearer" and at the end of the header value are not part of
     * the key, but a key that only starts like the right one is wrong. */
    static const char *const padded[] = {API_KEY " ", " " API_KEY, "\t" API_KEY " \t"};
    for (size_t i = 0; i < sizeof(padded) / sizeof(padded[0]); i++) {
        quill_test_http_send(quill_server_port(the_fixture.server), "POST", "/v1/completions",
                             "application/json", padded[i], body, strlen(body), &reply);
        assert_int_equal(reply.status, 200);
        quill_test_http_reply_release(&reply);
    }
    quill_test_http_send(quill_server_port(the_fixture.server), "POST", "/v1/completions",
                         "application/json", API_KEY "x", body, strlen(body), &reply);
    assert_error(&reply, 401, NULL, "invalid_api_key");
    quill_test_http_reply_release(&reply);
}

static void test_errors_unknown_model_and_path(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"model\":\"gpt-9\",\"prompt\":\"x\"}", &reply);
    assert_error(&reply, 404, "model", "model_not_found");
    quill_test_http_reply_release(&reply);
    http_post("/v1/embeddings", "{}", &reply);
    assert_error(&reply, 404, NULL, "not_found");
    quill_test_http_reply_release(&reply);
}

static void test_errors_body_too_large(void **state) {
    (void)state;
    size_t n_bytes = MAX_BODY_BYTES + 100;
    char *body = malloc(n_bytes + 1);
    assert_non_null(body);
    memset(body, ' ', n_bytes);
    body[n_bytes] = '\0';
    quill_test_http_reply reply;
    http_post("/v1/completions", body, &reply);
    assert_error(&reply, 413, NULL, "request_too_large");
    quill_test_http_reply_release(&reply);
    free(body);
}

static void test_errors_context_length_exceeded(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":300}", &reply);
    assert_error(&reply, 400, "prompt", "context_length_exceeded");
    quill_test_http_reply_release(&reply);

    /* Streamed requests fail the same way, before any chunk. */
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":300,"
              "\"stream\":true}",
              &reply);
    assert_error(&reply, 400, "messages", "context_length_exceeded");
    assert_null(strstr(reply.body, "data:"));
    quill_test_http_reply_release(&reply);
}

/* Opens a raw connection with a tiny receive buffer, sends a streamed request and reads until
 * the first SSE event arrived. Returns the socket; the caller stops reading or closes it. */
static int open_stalled_stream(uint16_t port, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    /* A small window and a small segment size keep the server's socket buffers small (on
     * loopback the segment size is about 64 KiB, and Linux sizes send buffers by segments), so
     * a long stream cannot be written out completely while this client does not read. */
    int receive_bytes = 2048;
    int segment_bytes = 536;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_bytes, sizeof(receive_bytes));
    setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &segment_bytes, sizeof(segment_bytes));
    quill_test_loopback_connect(fd, port);

    char request[16384];
    int n_request = snprintf(request, sizeof(request),
                             "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Authorization: Bearer " API_KEY "\r\n"
                             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                             strlen(body), body);
    assert_true(n_request > 0 && (size_t)n_request < sizeof(request));
    assert_int_equal(send(fd, request, (size_t)n_request, 0), n_request);

    char received[4096];
    size_t n_received = 0;
    while (n_received < sizeof(received) - 1) {
        ssize_t n_read = recv(fd, received + n_received, sizeof(received) - 1 - n_received, 0);
        assert_true(n_read > 0);
        n_received += (size_t)n_read;
        received[n_received] = '\0';
        if (strstr(received, "data: ") != NULL) {
            break;
        }
    }
    assert_non_null(strstr(received, "200 OK"));
    return fd;
}

/* A streamed request for n_choices x 200 tokens with 20 logprobs each: about 500 KiB of SSE
 * for 4 choices, far more than the socket buffers of open_stalled_stream hold. */
static char *long_stream_body(int n_choices) {
    char *ban = ban_special_and_bytes();
    size_t capacity = strlen(ban) + 256;
    char *body = malloc(capacity);
    assert_non_null(body);
    snprintf(body, capacity,
             "{\"prompt\":\"go\",\"max_tokens\":200,\"n\":%d,\"stream\":true,"
             "\"logprobs\":20,\"logit_bias\":%s}",
             n_choices, ban);
    free(ban);
    return body;
}

static void wait_until_idle(void) {
    /* Bounded wait for the engine to drop the cancelled sequence (no timing is asserted). */
    for (int i = 0; i < 1000; i++) {
        quill_engine_stats engine_stats;
        quill_server_stats server_stats;
        quill_engine_get_stats(the_fixture.engine, &engine_stats);
        quill_server_get_stats(the_fixture.server, &server_stats);
        if (engine_stats.n_running == 0 && engine_stats.n_waiting == 0 &&
            server_stats.n_generations_in_flight == 0) {
            return;
        }
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}

static void test_disconnect_frees_slot(void **state) {
    (void)state;
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);
    char *body = long_stream_body(4);
    int fd = open_stalled_stream(quill_server_port(the_fixture.server), body);
    free(body);

    /* Drop the connection mid-stream, with unread data, so the kernel resets it. */
    struct linger reset = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    close(fd);
    wait_until_idle();

    quill_engine_stats engine_stats;
    quill_server_stats after;
    quill_engine_get_stats(the_fixture.engine, &engine_stats);
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(engine_stats.n_running, 0);
    assert_int_equal(after.n_generations_in_flight, 0);
    assert_int_equal(after.n_client_disconnects, before.n_client_disconnects + 1);
}

static void test_busy_answers_429(void **state) {
    (void)state;
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    params.api_key = API_KEY;
    params.max_requests_in_flight = 4;
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);

    /* The stalled stream keeps all four slots: the server cannot finish writing it. */
    char *body = long_stream_body(4);
    int fd = open_stalled_stream(quill_server_port(server), body);
    free(body);
    const char *second = "{\"prompt\":\"x\",\"max_tokens\":1}";
    quill_test_http_reply reply;
    quill_test_http_send(quill_server_port(server), "POST", "/v1/completions", "application/json",
                         API_KEY, second, strlen(second), &reply);
    assert_error(&reply, 429, NULL, "rate_limit_exceeded");
    assert_string_equal(reply.retry_after, "1");
    quill_test_http_reply_release(&reply);

    /* More choices than the limit could ever hold is the client's error, not a busy server. */
    const char *too_many = "{\"prompt\":\"x\",\"max_tokens\":1,\"n\":5}";
    quill_test_http_send(quill_server_port(server), "POST", "/v1/completions", "application/json",
                         API_KEY, too_many, strlen(too_many), &reply);
    assert_error(&reply, 400, "n", NULL);
    quill_test_http_reply_release(&reply);

    close(fd);
    quill_server_destroy(server);
    wait_until_idle();
}

static void test_utf8_split_across_byte_tokens(void **state) {
    (void)state;
    const quill_tokenizer *tokenizer = quill_model_tokenizer(the_fixture.model);
    int32_t e2 = quill_tokenizer_find_token(tokenizer, "<0xE2>");
    int32_t x82 = quill_tokenizer_find_token(tokenizer, "<0x82>");
    int32_t xac = quill_tokenizer_find_token(tokenizer, "<0xAC>");
    assert_true(e2 >= 0 && x82 >= 0 && xac >= 0);

    /* Biases 30 > 20 > 10 pick E2 first; the repetition penalty (divide by 10) then lets 82
     * win, then AC: the three byte tokens of U+20AC, one character split over three tokens. */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"prompt\":\"a\",\"max_tokens\":3,\"temperature\":0,\"stream\":true,"
             "\"repetition_penalty\":10,\"logit_bias\":{\"%d\":30,\"%d\":20,\"%d\":10}}",
             e2, x82, xac);
    quill_test_http_reply reply;
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    char *events[64];
    int n_events = split_sse(reply.body, events, 64);
    char text[256];
    const char *finish_reason = NULL;
    struct json_object *usage_root = NULL;
    join_stream_text(events, n_events, false, text, sizeof(text), &finish_reason, &usage_root);
    assert_string_equal(text, "\xe2\x82\xac");
    assert_string_equal(finish_reason, "length");
    quill_test_http_reply_release(&reply);
}

static void test_invalid_utf8_becomes_replacement(void **state) {
    (void)state;
    const quill_tokenizer *tokenizer = quill_model_tokenizer(the_fixture.model);
    int32_t x82 = quill_tokenizer_find_token(tokenizer, "<0x82>");
    char body[256];
    snprintf(body, sizeof(body),
             "{\"prompt\":\"a\",\"max_tokens\":2,\"temperature\":0,\"logit_bias\":{\"%d\":100}}",
             x82);
    quill_test_http_reply reply;
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    const char *text = json_string_at(root, "choices.0.text");
    assert_non_null(text);
    assert_non_null(strstr(text, "\xef\xbf\xbd"));
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_bias_ban_all_is_client_error(void **state) {
    (void)state;
    char *ban = ban_ids(quill_model_get_info(the_fixture.model)->n_vocab);
    size_t capacity = strlen(ban) + 512;
    char *body = malloc(capacity);
    assert_non_null(body);
    snprintf(body, capacity,
             "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0.8,"
             "\"logit_bias\":%s}",
             ban);
    quill_test_http_reply reply;
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 400);
    assert_non_null(strstr(reply.body, "logit_bias bans every token"));
    quill_test_http_reply_release(&reply);

    /* An ordinary request still succeeds afterwards. */
    http_post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":2}", &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
    free(body);
    free(ban);
}

static void test_stop_string_across_tokens(void **state) {
    (void)state;
    char *ban = ban_special_and_bytes();
    size_t capacity = strlen(ban) + 512;
    char *body = malloc(capacity);
    assert_non_null(body);
    snprintf(body, capacity,
             "{\"prompt\":\"hello\",\"max_tokens\":12,\"temperature\":0,\"logit_bias\":%s}", ban);
    quill_test_http_reply reply;
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    char full[256];
    snprintf(full, sizeof(full), "%s", json_string_at(root, "choices.0.text"));
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    /* Pieces are one or two letters (with or without a leading space), so three characters
     * from offset 2 span at least two tokens. */
    assert_true(strlen(full) >= 6);
    char stop[4];
    memcpy(stop, full + 2, 3);
    stop[3] = '\0';
    char *first_stop = strstr(full, stop);
    size_t n_expected = (size_t)(first_stop - full);

    for (int is_stream = 0; is_stream <= 1; is_stream++) {
        snprintf(body, capacity,
                 "{\"prompt\":\"hello\",\"max_tokens\":12,\"temperature\":0,\"stop\":\"%s\","
                 "\"stream\":%s,\"logit_bias\":%s}",
                 stop, is_stream ? "true" : "false", ban);
        http_post("/v1/completions", body, &reply);
        assert_int_equal(reply.status, 200);
        char text[256];
        const char *finish_reason = NULL;
        if (is_stream) {
            char *events[256];
            int n_events = split_sse(reply.body, events, 256);
            struct json_object *usage_root = NULL;
            join_stream_text(events, n_events, false, text, sizeof(text), &finish_reason,
                             &usage_root);
        } else {
            root = parse_json(reply.body);
            snprintf(text, sizeof(text), "%s", json_string_at(root, "choices.0.text"));
            static char reason[32];
            snprintf(reason, sizeof(reason), "%s",
                     json_string_at(root, "choices.0.finish_reason"));
            finish_reason = reason;
            json_object_put(root);
        }
        assert_int_equal(strlen(text), n_expected);
        assert_memory_equal(text, full, n_expected);
        assert_string_equal(finish_reason, "stop");
        quill_test_http_reply_release(&reply);
    }
    free(body);
    free(ban);
}

static void test_chat_logprobs_and_choices(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3,"
              "\"n\":2,\"seed\":3,\"logprobs\":true,\"top_logprobs\":2}",
              &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_int_equal(json_object_array_length(json_at(root, "choices")), 2);
    assert_int_equal(json_int_at(root, "choices.1.index"), 1);
    struct json_object *content = json_at(root, "choices.0.logprobs.content");
    assert_non_null(content);
    assert_int_equal(json_object_array_length(content),
                     json_int_at(root, "usage.completion_tokens") -
                         json_object_array_length(json_at(root, "choices.1.logprobs.content")));
    assert_non_null(json_at(root, "choices.0.logprobs.content.0.token"));
    assert_true(json_object_get_double(json_at(root, "choices.0.logprobs.content.0.logprob")) <=
                0.0);
    assert_int_equal(
        json_object_array_length(json_at(root, "choices.0.logprobs.content.0.top_logprobs")), 2);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_completion_logprobs_shape(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"prompt\":\"ab\",\"max_tokens\":3,\"temperature\":0,\"logprobs\":1}", &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    int64_t n_tokens = json_int_at(root, "usage.completion_tokens");
    assert_int_equal(json_object_array_length(json_at(root, "choices.0.logprobs.tokens")),
                     n_tokens);
    assert_int_equal(json_object_array_length(json_at(root, "choices.0.logprobs.token_logprobs")),
                     n_tokens);
    assert_int_equal(json_object_array_length(json_at(root, "choices.0.logprobs.text_offset")),
                     n_tokens);
    assert_int_equal(json_object_object_length(json_at(root, "choices.0.logprobs.top_logprobs.0")),
                     1);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

typedef struct drain_call {
    quill_server *server;
    quill_status status;
} drain_call;

static void *run_drain(void *argument) {
    drain_call *call = argument;
    call->status = quill_server_drain(call->server, 30000);
    return NULL;
}

static void test_drain_finishes_streams(void **state) {
    (void)state;
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);

    /* A stream is in flight when the drain starts; it still ends with [DONE]. */
    char *body = long_stream_body(1);
    int fd = open_stalled_stream(quill_server_port(server), body);
    free(body);
    drain_call call = {server, QUILL_ERR_IO};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, run_drain, &call), 0);

    char *received = malloc(1 << 22);
    assert_non_null(received);
    size_t n_received = 0;
    for (;;) {
        ssize_t n_read = recv(fd, received + n_received, (1 << 22) - 1 - n_received, 0);
        if (n_read <= 0) {
            break;
        }
        n_received += (size_t)n_read;
        received[n_received] = '\0';
        if (strstr(received + (n_received > 64 ? n_received - 64 : 0), "[DONE]") != NULL) {
            break;
        }
    }
    received[n_received] = '\0';
    assert_non_null(strstr(received, "data: [DONE]"));
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(call.status, QUILL_OK);

    free(received);
    close(fd);
    quill_server_destroy(server);
}

typedef struct post_call {
    uint16_t port;
    const char *body;
    quill_test_http_reply reply;
} post_call;

static void *run_post(void *argument) {
    post_call *call = argument;
    quill_test_http_send(call->port, "POST", "/v1/completions", "application/json", NULL,
                         call->body, strlen(call->body), &call->reply);
    return NULL;
}

static void *stop_engine(void *engine) {
    quill_engine_stop(engine);
    return NULL;
}

/* A plain (not streamed) request that a forced shutdown cancels gets the shutdown's 503, with
 * Retry-After, rather than a 500. A gate blocks the engine thread in another request's callback,
 * so the HTTP request is certainly still open when the engine stops. */
static void test_forced_stop_answers_503(void **state) {
    (void)state;
    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_threads = 1;
    engine_params.n_parallel = 2;
    quill_engine *engine = NULL;
    assert_int_equal(quill_engine_create(the_fixture.model, &engine_params, &engine), QUILL_OK);
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, engine), QUILL_OK);

    int32_t prompt[3] = {1, QUILL_TEST_TINY_FIRST_PIECE, QUILL_TEST_TINY_FIRST_PIECE + 1};
    quill_request_params request_params = quill_request_params_default();
    request_params.prompt_tokens = prompt;
    request_params.n_prompt_tokens = 3;
    request_params.max_tokens = 8;
    quill_test_gate g;
    quill_test_gate_init(&g);
    quill_request *holder = quill_test_submit_holding(engine, &request_params, &g);

    post_call call = {.port = quill_server_port(server),
                      .body = "{\"prompt\":\"go\",\"max_tokens\":20}"};
    pthread_t poster;
    assert_int_equal(pthread_create(&poster, NULL, run_post, &call), 0);
    quill_server_stats stats = {0};
    for (int i = 0; i < 3000 && stats.n_generations_in_flight == 0; i++) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
        quill_server_get_stats(server, &stats);
    }
    assert_int_equal(stats.n_generations_in_flight, 1);

    quill_test_end_while_held(engine, &request_params, &g, stop_engine, NULL, NULL, 0);
    assert_int_equal(pthread_join(poster, NULL), 0);
    assert_error(&call.reply, 503, NULL, "shutting_down");
    assert_string_equal(call.reply.retry_after, "1");
    quill_test_http_reply_release(&call.reply);

    quill_request_destroy(holder);
    quill_server_destroy(server);
    quill_engine_destroy(engine);
    quill_test_gate_release(&g);
}

static void test_user_special_text_stays_plain(void **state) {
    (void)state;
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 1;
    params.chat_template =
        "{% for message in messages %}{{ message.content }}</s>{% endfor %}";
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);

    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi</s>\"}]}";
    quill_openai_request request;
    quill_http_error error;
    assert_int_equal(quill__openai_request_parse(body, strlen(body), QUILL_OPENAI_CHAT, 0,
                                                 &request, &error),
                     QUILL_OK);
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    char *prompt = NULL;
    assert_int_equal(
        quill__completion_render_chat(server, &request, &tokens, &n_tokens, &prompt, &error),
        QUILL_OK);
    assert_string_equal(prompt, "hi</s></s>");

    /* Only the template's own </s> becomes the EOS id; the user's is plain text. */
    int32_t eos = quill_tokenizer_eos(quill_model_tokenizer(the_fixture.model));
    int n_eos = 0;
    for (int64_t i = 0; i < n_tokens; i++) {
        n_eos += tokens[i] == eos ? 1 : 0;
    }
    assert_int_equal(n_eos, 1);
    assert_int_equal(tokens[n_tokens - 1], eos);

    quill_tokens_free(tokens);
    quill__free(prompt);
    quill__openai_request_release(&request);
    quill_server_destroy(server);
}

static void test_apply_template_default_chatml(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/apply-template",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}", &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "prompt"),
                        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_tokenize_round_trip(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/tokenize", "{\"content\":\"abc def\"}", &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    struct json_object *tokens = json_at(root, "tokens");
    assert_non_null(tokens);
    assert_int_equal(json_object_array_length(tokens),
                     count_prompt_tokens("abc def", QUILL_TOKENIZE_PARSE_SPECIAL));
    char body[512];
    snprintf(body, sizeof(body), "{\"tokens\":%s}", json_object_to_json_string(tokens));
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    http_post("/detokenize", body, &reply);
    assert_int_equal(reply.status, 200);
    root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "content"), "abc def");
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static double json_double_at(struct json_object *root, const char *path) {
    struct json_object *node = json_at(root, path);
    assert_non_null(node);
    return json_object_get_double(node);
}

static void test_usage_n_choices_counts_prompt_once(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions",
              "{\"prompt\":\"hello world\",\"max_tokens\":3,\"n\":3,\"seed\":1}", &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    int64_t n_prompt = count_prompt_tokens("hello world", QUILL_TOKENIZE_ADD_SPECIAL |
                                                              QUILL_TOKENIZE_PARSE_SPECIAL);
    assert_usage_and_cost(reply.body, root, n_prompt);
    assert_true(json_int_at(root, "usage.prompt_tokens_details.cached_tokens") <= n_prompt);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_usage_ttft_within_request_for_plain_reply(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"prompt\":\"abc\",\"max_tokens\":6,\"ignore_eos\":true}",
              &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);

    /* TTFT ends at the engine's first text, which comes before the request finished: queue,
     * prefill and generation together span arrival to the final event. Each field is rounded
     * to 1 us, hence the slack. */
    double ttft_ms = json_double_at(root, "usage.timings.ttft_ms");
    double finished_ms = json_double_at(root, "usage.timings.queue_ms") +
                         json_double_at(root, "usage.timings.prefill_ms") +
                         json_double_at(root, "usage.timings.generation_ms");
    assert_true(ttft_ms > 0.0);
    assert_true(ttft_ms <= finished_ms + 0.005);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_errors_body_shapes(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/chat/completions", "null", &reply);
    assert_error(&reply, 400, NULL, "invalid_json");
    assert_error_mentions(&reply, "the request body must be a JSON object");
    quill_test_http_reply_release(&reply);

    http_post("/v1/chat/completions", "", &reply);
    assert_error(&reply, 400, NULL, "invalid_json");
    assert_error_mentions(&reply, "the request body is empty");
    quill_test_http_reply_release(&reply);

    http_post("/v1/chat/completions", "[1]", &reply);
    assert_error_mentions(&reply, "must be a JSON object");
    quill_test_http_reply_release(&reply);

    http_post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\"", &reply);
    assert_error_mentions(&reply, "not valid JSON");
    quill_test_http_reply_release(&reply);
}

static void test_errors_quote_overflowing_numbers(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":99999999999999999999999}",
              &reply);
    assert_error(&reply, 400, "max_tokens", NULL);
    assert_error_mentions(&reply, "'max_tokens' is 99999999999999999999999 but");
    quill_test_http_reply_release(&reply);
}

static void test_errors_point_to_the_other_endpoint(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
              &reply);
    assert_error(&reply, 400, "messages", "unsupported_parameter");
    assert_error_mentions(&reply, "/v1/chat/completions");
    quill_test_http_reply_release(&reply);

    http_post("/v1/chat/completions", "{\"prompt\":\"x\"}", &reply);
    assert_error(&reply, 400, "prompt", "unsupported_parameter");
    assert_error_mentions(&reply, "/v1/completions");
    quill_test_http_reply_release(&reply);
}

static void test_errors_response_format(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1,"
              "\"response_format\":{\"type\":\"text\"}}",
              &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);

    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"response_format\":{\"type\":\"json_schema\"}}",
              &reply);
    assert_error(&reply, 400, "response_format.type", "unsupported_parameter");
    quill_test_http_reply_release(&reply);
}

static void test_tokenize_fields_checked(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/tokenize", "{}", &reply);
    assert_error(&reply, 400, "content", NULL);
    assert_error_mentions(&reply, "'content' is required");
    quill_test_http_reply_release(&reply);

    http_post("/tokenize", "{\"text\":\"Hello\"}", &reply);
    assert_error(&reply, 400, "content", NULL);
    assert_error_mentions(&reply, "'content' is required");
    quill_test_http_reply_release(&reply);

    http_post("/tokenize", "{\"content\":\"Hello\",\"text\":\"Hello\"}", &reply);
    assert_error(&reply, 400, "text", "unsupported_parameter");
    quill_test_http_reply_release(&reply);

    http_post("/tokenize", "{\"content\":5}", &reply);
    assert_error(&reply, 400, "content", NULL);
    quill_test_http_reply_release(&reply);

    http_post("/detokenize", "{\"tokens\":[1],\"skip\":true}", &reply);
    assert_error(&reply, 400, "skip", "unsupported_parameter");
    quill_test_http_reply_release(&reply);

    http_post("/detokenize", "{}", &reply);
    assert_error(&reply, 400, "tokens", NULL);
    quill_test_http_reply_release(&reply);

    http_post("/apply-template",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"extra\":1}", &reply);
    assert_error(&reply, 400, "extra", "unsupported_parameter");
    quill_test_http_reply_release(&reply);
}

static void test_apply_template_generation_prompt_and_kwargs(void **state) {
    (void)state;
    quill_test_http_reply reply;
    http_post("/apply-template",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],"
              "\"add_generation_prompt\":false,"
              "\"chat_template_kwargs\":{\"enable_thinking\":false}}",
              &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "prompt"), "<|im_start|>user\nhello<|im_end|>\n");
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    http_post("/apply-template",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"add_generation_prompt\":\"yes\"}",
              &reply);
    assert_error(&reply, 400, "add_generation_prompt", NULL);
    quill_test_http_reply_release(&reply);

    http_post("/apply-template",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"chat_template_kwargs\":{\"messages\":[]}}",
              &reply);
    assert_error(&reply, 400, "chat_template_kwargs", NULL);
    quill_test_http_reply_release(&reply);

    /* Chat completions take the same kwargs, but not add_generation_prompt. */
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1,"
              "\"chat_template_kwargs\":{\"enable_thinking\":true}}",
              &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
    http_post("/v1/chat/completions",
              "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"add_generation_prompt\":false}",
              &reply);
    assert_error(&reply, 400, "add_generation_prompt", "unsupported_parameter");
    quill_test_http_reply_release(&reply);
}

static void test_models_retrieve_by_id_and_file_name(void **state) {
    (void)state;
    uint16_t port = quill_server_port(the_fixture.server);
    quill_test_http_reply reply;
    quill_test_http_send(port, "GET", "/v1/models/tiny", NULL, API_KEY, NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "id"), "tiny");
    assert_string_equal(json_string_at(root, "object"), "model");
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    /* The file's base name without .gguf names the same model. */
    const char *base = strrchr(the_fixture.model_path, '/');
    base = base != NULL ? base + 1 : the_fixture.model_path;
    char file_id[256];
    snprintf(file_id, sizeof(file_id), "%.*s", (int)(strlen(base) - strlen(".gguf")), base);
    char path[320];
    snprintf(path, sizeof(path), "/v1/models/%s", file_id);
    quill_test_http_send(port, "GET", path, NULL, API_KEY, NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
    char body[320];
    snprintf(body, sizeof(body), "{\"model\":\"%s\",\"prompt\":\"x\",\"max_tokens\":1}",
             file_id);
    http_post("/v1/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "model"), "tiny");
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    quill_test_http_send(port, "GET", "/v1/models/gpt-9", NULL, API_KEY, NULL, 0, &reply);
    assert_error(&reply, 404, "model", "model_not_found");
    quill_test_http_reply_release(&reply);
}

static void test_methods_head_and_allow(void **state) {
    (void)state;
    uint16_t port = quill_server_port(the_fixture.server);
    quill_test_http_reply reply;
    quill_test_http_send(port, "HEAD", "/health", NULL, NULL, NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    assert_int_equal(reply.n_body_bytes, 0);
    quill_test_http_reply_release(&reply);
    quill_test_http_send(port, "HEAD", "/v1/models", NULL, API_KEY, NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);

    quill_test_http_send(port, "POST", "/health", "application/json", NULL, "{}", 2, &reply);
    assert_error(&reply, 405, NULL, "method_not_allowed");
    assert_string_equal(reply.allow, "GET, HEAD");
    quill_test_http_reply_release(&reply);
    quill_test_http_send(port, "GET", "/v1/chat/completions", NULL, API_KEY, NULL, 0, &reply);
    assert_error(&reply, 405, NULL, "method_not_allowed");
    assert_string_equal(reply.allow, "POST");
    quill_test_http_reply_release(&reply);
}

static void test_bad_template_message_whole(void **state) {
    (void)state;
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 1;
    params.chat_template = "{{ messages[0].content ";
    quill_server *server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_not_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);
    const char *message = quill_error_message();
    const char *prefix = "server: the chat template (from file) does not parse: ";
    assert_true(strncmp(message, prefix, strlen(prefix)) == 0);
    assert_null(strstr(message + strlen(prefix), "does not parse"));
    assert_non_null(strstr(message, "'}}'"));
    quill_server_destroy(server);

    /* A template that parses but cannot render is caught before the first request, because it
     * would fail every chat request. */
    params.chat_template = "{{ no_such_function(messages[0].content) }}";
    server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_not_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);
    assert_non_null(strstr(quill_error_message(), "cannot serve chats"));
    assert_non_null(strstr(quill_error_message(), "no_such_function"));
    quill_server_destroy(server);

    /* So is a filter the interpreter lacks, even in a branch a plain chat never takes. */
    params.chat_template = "{% if tools %}{{ tools | no_such_filter }}{% endif %}ok";
    server = NULL;
    assert_int_equal(quill_server_create(&params, &server), QUILL_OK);
    assert_int_not_equal(quill_server_set_engine(server, the_fixture.engine), QUILL_OK);
    assert_non_null(strstr(quill_error_message(), "no filter named 'no_such_filter'"));
    quill_server_destroy(server);
}

/* Opens a connection to the server that sends only part of a request's headers. */
static int open_partial_request(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    quill_test_loopback_connect(fd, port);
    const char *partial = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    assert_int_equal(send(fd, partial, strlen(partial), 0), (ssize_t)strlen(partial));
    return fd;
}

static void test_idle_connections_do_not_block_health(void **state) {
    (void)state;
    enum { N_IDLE = 200 };
    int fds[N_IDLE];
    uint16_t port = quill_server_port(the_fixture.server);
    for (int i = 0; i < N_IDLE; i++) {
        fds[i] = open_partial_request(port);
    }
    quill_test_http_reply reply;
    quill_test_http_send(port, "GET", "/health", NULL, NULL, NULL, 0, &reply);
    assert_int_equal(reply.status, 200);
    quill_test_http_reply_release(&reply);
    for (int i = 0; i < N_IDLE; i++) {
        close(fds[i]);
    }
}

/* Sends raw bytes and reads the whole response until the server closes the connection. */
static void raw_exchange(uint16_t port, const char *request, char *response,
                         size_t response_bytes) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval timeout = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    quill_test_loopback_connect(fd, port);
    assert_int_equal(send(fd, request, strlen(request), 0), (ssize_t)strlen(request));
    size_t n_received = 0;
    while (n_received < response_bytes - 1) {
        ssize_t n_read = recv(fd, response + n_received, response_bytes - 1 - n_received, 0);
        if (n_read <= 0) {
            break;
        }
        n_received += (size_t)n_read;
    }
    response[n_received] = '\0';
    close(fd);
}

static int count_occurrences(const char *text, const char *part) {
    int n_found = 0;
    for (const char *at = strstr(text, part); at != NULL; at = strstr(at + 1, part)) {
        n_found++;
    }
    return n_found;
}

/* libmicrohttpd rejects a negative Content-Length itself, before Quill sees the request; its
 * 0.9.75 error path writes the status line and headers twice (see http_server.c). This checks
 * only what Quill can promise: a 400 and a closed connection, with no Quill handler involved. */
static void test_negative_content_length_rejected_by_library(void **state) {
    (void)state;
    quill_server_stats before;
    quill_server_get_stats(the_fixture.server, &before);
    char response[8192];
    raw_exchange(quill_server_port(the_fixture.server),
                 "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\nContent-Length: -5\r\n\r\n{}",
                 response, sizeof(response));
    assert_true(strncmp(response, "HTTP/1.1 400", 12) == 0);
    assert_true(count_occurrences(response, "HTTP/1.1 400") >= 1);
    quill_server_stats after;
    quill_server_get_stats(the_fixture.server, &after);
    assert_int_equal(after.n_requests, before.n_requests);
}

/* Tool calls. The tiny model's vocabulary cannot spell a tool call, so a second server loads a
 * copy whose pieces "▁q" and "▁x" are rewritten to the two halves of a Hermes call. Logit biases
 * then force those two pieces and the end-of-sequence token, in that order. */

/* A Hermes-style template: "<tool_call>" in it selects the Hermes format. Only the tool names
 * are rendered, which keeps prompts short for the tiny model's context. */
static const char tool_template[] =
    "{%- if tools %}{{- '<|im_start|>system\\nTools for <tool_call>:' }}"
    "{%- for tool in tools %}{{- ' ' + tool.function.name }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>' + message.content + "
    "'</tool_response><|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- for call in message.tool_calls %}"
    "{{- '<tool_call>{\"name\": \"' + call.function.name + '\", \"arguments\": ' + "
    "(call.function.arguments | tojson) + '}</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/* The two halves of the forced reply, padded with JSON whitespace by tool_piece_text. */
#define TOOL_FIRST_HEAD "Let me check.\n<tool_call>\n{"
#define TOOL_FIRST_TAIL "\"name\": \"get_weather\", \"argu"
#define TOOL_SECOND_HEAD "ments\": {\"city\": \"Paris\"}"
#define TOOL_SECOND_TAIL "}\n</tool_call>"
#define TOOL_REPLY_TEXT "Let me check."
#define GGUF_ALIGNMENT_BYTES 32

typedef struct tool_fixture {
    char *model_path;
    quill_model *model;
    quill_engine *engine;
    quill_server *server;
    char first_text[160];  /* text of the first forced piece */
    char second_text[160]; /* text of the second forced piece */
    int32_t first_token;
    int32_t second_token;
    int32_t eos_token;
} tool_fixture;

static tool_fixture the_tool_fixture;

/* Writes head, spaces and tail into out so that its length exceeds old_length by a multiple of
 * the GGUF alignment. */
static void tool_piece_text(const char *head, const char *tail, size_t old_length, char *out,
                            size_t out_bytes) {
    size_t n_text = strlen(head) + strlen(tail);
    size_t n_spaces = (GGUF_ALIGNMENT_BYTES - (n_text - old_length) % GGUF_ALIGNMENT_BYTES) %
                      GGUF_ALIGNMENT_BYTES;
    assert_true(n_text + n_spaces < out_bytes);
    snprintf(out, out_bytes, "%s%*s%s", head, (int)n_spaces, "", tail);
}

/* Replaces the text of one vocabulary piece in a GGUF file. A string is stored as its u64
 * little-endian length and its bytes, and the piece must occur once. The new text is longer by
 * a multiple of the 32-byte alignment, so the tensor data after the metadata moves by whole
 * alignment units and its offsets, relative to the data section, stay valid. */
static void replace_piece(const char *path, const char *piece, const char *text) {
    size_t n_file = 0;
    char *file = quill_test_read_file(path, &n_file);
    assert_non_null(file);
    size_t n_piece = strlen(piece);
    size_t n_text = strlen(text);
    assert_int_equal((n_text - n_piece) % GGUF_ALIGNMENT_BYTES, 0);
    unsigned char needle[64];
    assert_true(n_piece + 8 <= sizeof(needle));
    for (int i = 0; i < 8; i++) {
        needle[i] = (unsigned char)(((uint64_t)n_piece >> (8 * i)) & 0xff);
    }
    memcpy(needle + 8, piece, n_piece);

    size_t found = SIZE_MAX;
    for (size_t at = 0; at + n_piece + 8 <= n_file; at++) {
        if (memcmp(file + at, needle, n_piece + 8) == 0) {
            assert_true(found == SIZE_MAX);
            found = at;
        }
    }
    assert_true(found != SIZE_MAX);

    size_t n_out = n_file + n_text - n_piece;
    char *out = malloc(n_out);
    assert_non_null(out);
    memcpy(out, file, found);
    for (int i = 0; i < 8; i++) {
        out[found + (size_t)i] = (char)(((uint64_t)n_text >> (8 * i)) & 0xff);
    }
    memcpy(out + found + 8, text, n_text);
    memcpy(out + found + 8 + n_text, file + found + 8 + n_piece, n_file - found - 8 - n_piece);
    assert_int_equal(quill_test_write_file(path, out, n_out), 0);
    free(out);
    free(file);
}

static int tool_group_setup(void **state) {
    (void)state;
    tool_fixture *f = &the_tool_fixture;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    f->model_path = quill_test_tmp_path("server-tools-tiny.gguf");
    quill_test_tiny_model_params model_params = quill_test_tiny_model_params_default();
    model_params.chat_template = tool_template;
    model_params.n_ctx = 1024;
    if (quill_test_write_tiny_model(f->model_path, &model_params) != 0) {
        return -1;
    }
    tool_piece_text(TOOL_FIRST_HEAD, TOOL_FIRST_TAIL, strlen("\xe2\x96\x81q"), f->first_text,
                    sizeof(f->first_text));
    tool_piece_text(TOOL_SECOND_HEAD, TOOL_SECOND_TAIL, strlen("\xe2\x96\x81x"),
                    f->second_text, sizeof(f->second_text));
    replace_piece(f->model_path, "\xe2\x96\x81q", f->first_text);
    replace_piece(f->model_path, "\xe2\x96\x81x", f->second_text);

    quill_model_params load_params = quill_model_params_default();
    if (quill_model_load(f->model_path, &load_params, &f->model) != QUILL_OK) {
        return -1;
    }
    const quill_tokenizer *tokenizer = quill_model_tokenizer(f->model);
    f->first_token = quill_tokenizer_find_token(tokenizer, f->first_text);
    f->second_token = quill_tokenizer_find_token(tokenizer, f->second_text);
    f->eos_token = quill_tokenizer_eos(tokenizer);
    if (f->first_token < 0 || f->second_token < 0 || f->eos_token < 0) {
        return -1;
    }

    quill_engine_params engine_params = quill_engine_params_default();
    engine_params.n_threads = 1;
    engine_params.n_parallel = 2;
    if (quill_engine_create(f->model, &engine_params, &f->engine) != QUILL_OK) {
        return -1;
    }
    quill_server_params params = quill_server_params_default();
    params.port = 0;
    params.n_http_threads = 2;
    params.model_alias = "tiny-tools";
    if (quill_server_create(&params, &f->server) != QUILL_OK) {
        return -1;
    }
    return quill_server_set_engine(f->server, f->engine) == QUILL_OK ? 0 : -1;
}

static int tool_group_teardown(void **state) {
    (void)state;
    tool_fixture *f = &the_tool_fixture;
    quill_server_destroy(f->server);
    quill_engine_destroy(f->engine);
    quill_model_destroy(f->model);
    if (f->model_path != NULL) {
        remove(f->model_path);
    }
    free(f->model_path);
    curl_global_cleanup();
    return 0;
}

static void tool_http_post(const char *path, const char *body, quill_test_http_reply *reply) {
    quill_test_http_send(quill_server_port(the_tool_fixture.server), "POST", path,
                         "application/json", NULL, body, strlen(body), reply);
}

/* A chat body that forces the two call pieces and then end-of-sequence: biases 100 > 90 > 50
 * pick the first piece, then (the repetition penalty dividing its logit by 10) the second, then
 * EOS. extra is spliced in as further fields, e.g. "\"stream\":true,". */
static void forced_call_body(const char *tool_name, const char *extra, char *body,
                             size_t body_bytes) {
    const tool_fixture *f = &the_tool_fixture;
    snprintf(body, body_bytes,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s"
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"%s\","
             "\"parameters\":{\"type\":\"object\"}}}],"
             "\"max_tokens\":8,\"temperature\":0,\"repetition_penalty\":10,"
             "\"logit_bias\":{\"%d\":100,\"%d\":90,\"%d\":50}}",
             extra, tool_name, f->first_token, f->second_token, f->eos_token);
}

static void test_tool_call_plain_reply(void **state) {
    (void)state;
    char body[1024];
    forced_call_body("get_weather", "", body, sizeof(body));
    quill_test_http_reply reply;
    tool_http_post("/v1/chat/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_string_equal(json_string_at(root, "choices.0.message.content"), TOOL_REPLY_TEXT);
    assert_string_equal(json_string_at(root, "choices.0.finish_reason"), "tool_calls");
    struct json_object *calls = json_at(root, "choices.0.message.tool_calls");
    assert_non_null(calls);
    assert_int_equal(json_object_array_length(calls), 1);
    assert_string_equal(json_string_at(root, "choices.0.message.tool_calls.0.type"), "function");
    assert_string_equal(json_string_at(root, "choices.0.message.tool_calls.0.function.name"),
                        "get_weather");
    assert_string_equal(json_string_at(root, "choices.0.message.tool_calls.0.function.arguments"),
                        "{\"city\":\"Paris\"}");
    const char *id = json_string_at(root, "choices.0.message.tool_calls.0.id");
    assert_non_null(id);
    assert_true(strncmp(id, "call_", 5) == 0);
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_tool_call_stream_chunks(void **state) {
    (void)state;
    char body[1024];
    forced_call_body("get_weather", "\"stream\":true,", body, sizeof(body));
    quill_test_http_reply reply;
    tool_http_post("/v1/chat/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    char *events[64];
    int n_events = split_sse(reply.body, events, 64);
    assert_true(n_events >= 3);
    assert_string_equal(events[n_events - 1], "[DONE]");

    /* Content deltas carry only the text before the call, and one delta carries the whole call. */
    char content[256] = "";
    int n_call_chunks = 0;
    const char *finish_reason = NULL;
    struct json_object *roots[64];
    for (int i = 0; i < n_events - 1; i++) {
        roots[i] = parse_json(events[i]);
        const char *text = json_string_at(roots[i], "choices.0.delta.content");
        if (text != NULL) {
            strncat(content, text, sizeof(content) - strlen(content) - 1);
        }
        if (json_at(roots[i], "choices.0.delta.tool_calls") != NULL) {
            n_call_chunks++;
            assert_int_equal(json_int_at(roots[i], "choices.0.delta.tool_calls.0.index"), 0);
            assert_non_null(json_string_at(roots[i], "choices.0.delta.tool_calls.0.id"));
            assert_string_equal(json_string_at(roots[i], "choices.0.delta.tool_calls.0.type"),
                                "function");
            assert_string_equal(
                json_string_at(roots[i], "choices.0.delta.tool_calls.0.function.name"),
                "get_weather");
            assert_string_equal(
                json_string_at(roots[i], "choices.0.delta.tool_calls.0.function.arguments"),
                "{\"city\":\"Paris\"}");
        }
        const char *reason = json_string_at(roots[i], "choices.0.finish_reason");
        if (reason != NULL) {
            finish_reason = reason;
        }
    }
    assert_string_equal(content, TOOL_REPLY_TEXT);
    assert_int_equal(n_call_chunks, 1);
    assert_non_null(finish_reason);
    assert_string_equal(finish_reason, "tool_calls");
    for (int i = 0; i < n_events - 1; i++) {
        json_object_put(roots[i]);
    }
    quill_test_http_reply_release(&reply);
}

static void test_tool_call_unknown_name_stays_content(void **state) {
    (void)state;
    char body[1024];
    forced_call_body("get_time", "", body, sizeof(body));
    quill_test_http_reply reply;
    tool_http_post("/v1/chat/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    char expected[512];
    snprintf(expected, sizeof(expected), "%s%s", the_tool_fixture.first_text,
             the_tool_fixture.second_text);
    assert_string_equal(json_string_at(root, "choices.0.message.content"), expected);
    assert_null(json_at(root, "choices.0.message.tool_calls"));
    assert_string_equal(json_string_at(root, "choices.0.finish_reason"), "stop");
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

static void test_tool_choice_none_and_required(void **state) {
    (void)state;
    char body[1024];
    forced_call_body("get_weather", "\"tool_choice\":\"none\",", body, sizeof(body));
    quill_test_http_reply reply;
    tool_http_post("/v1/chat/completions", body, &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    assert_non_null(strstr(json_string_at(root, "choices.0.message.content"), "<tool_call>"));
    assert_null(json_at(root, "choices.0.message.tool_calls"));
    assert_string_equal(json_string_at(root, "choices.0.finish_reason"), "stop");
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    /* "none" also keeps the tools out of the prompt. */
    tool_http_post("/apply-template",
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tool_choice\":"
                   "\"none\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
                   &reply);
    assert_int_equal(reply.status, 200);
    root = parse_json(reply.body);
    assert_null(strstr(json_string_at(root, "prompt"), "Tools for"));
    json_object_put(root);
    quill_test_http_reply_release(&reply);

    const char *rejected[] = {"\"required\"", "{\"type\":\"function\",\"function\":{\"name\":"
                                              "\"get_weather\"}}"};
    for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
        char extra[160];
        snprintf(extra, sizeof(extra), "\"tool_choice\":%s,", rejected[i]);
        forced_call_body("get_weather", extra, body, sizeof(body));
        tool_http_post("/v1/chat/completions", body, &reply);
        assert_error(&reply, 400, "tool_choice", NULL);
        assert_non_null(strstr(reply.body, "only \\\"auto\\\" and \\\"none\\\""));
        quill_test_http_reply_release(&reply);
    }
}

static void test_tool_messages_reach_template(void **state) {
    (void)state;
    quill_test_http_reply reply;
    tool_http_post("/apply-template",
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},"
                   "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
                   "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                   "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"22 C\"}],"
                   "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}",
                   &reply);
    assert_int_equal(reply.status, 200);
    struct json_object *root = parse_json(reply.body);
    const char *prompt = json_string_at(root, "prompt");
    assert_non_null(prompt);
    assert_non_null(strstr(prompt, "Tools for <tool_call>: get_weather"));
    assert_non_null(strstr(prompt, "<tool_call>{\"name\": \"get_weather\", \"arguments\": "
                                   "{\"city\": \"Paris\"}}</tool_call>"));
    assert_non_null(strstr(prompt, "<tool_response>22 C</tool_response>"));
    json_object_put(root);
    quill_test_http_reply_release(&reply);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_loading_then_ready),
        cmocka_unit_test(test_models_lists_alias),
        cmocka_unit_test(test_completion_usage_and_cost),
        cmocka_unit_test(test_chat_usage_and_cost),
        cmocka_unit_test(test_chat_stream_matches_plain),
        cmocka_unit_test(test_completion_stream_n_choices),
        cmocka_unit_test(test_ignore_eos_runs_to_max),
        cmocka_unit_test(test_errors_bad_json_and_content_type),
        cmocka_unit_test(test_errors_name_the_parameter),
        cmocka_unit_test(test_errors_cap_usage_tags),
        cmocka_unit_test(test_errors_strict_json),
        cmocka_unit_test(test_errors_number_edges),
        cmocka_unit_test(test_completion_prompt_batch_of_one),
        cmocka_unit_test(test_errors_ignored_hints_accepted),
        cmocka_unit_test(test_errors_api_key),
        cmocka_unit_test(test_errors_unknown_model_and_path),
        cmocka_unit_test(test_errors_body_too_large),
        cmocka_unit_test(test_errors_context_length_exceeded),
        cmocka_unit_test(test_disconnect_frees_slot),
        cmocka_unit_test(test_busy_answers_429),
        cmocka_unit_test(test_utf8_split_across_byte_tokens),
        cmocka_unit_test(test_invalid_utf8_becomes_replacement),
        cmocka_unit_test(test_bias_ban_all_is_client_error),
        cmocka_unit_test(test_stop_string_across_tokens),
        cmocka_unit_test(test_chat_logprobs_and_choices),
        cmocka_unit_test(test_completion_logprobs_shape),
        cmocka_unit_test(test_drain_finishes_streams),
        cmocka_unit_test(test_forced_stop_answers_503),
        cmocka_unit_test(test_user_special_text_stays_plain),
        cmocka_unit_test(test_apply_template_default_chatml),
        cmocka_unit_test(test_tokenize_round_trip),
        cmocka_unit_test(test_usage_n_choices_counts_prompt_once),
        cmocka_unit_test(test_usage_ttft_within_request_for_plain_reply),
        cmocka_unit_test(test_errors_body_shapes),
        cmocka_unit_test(test_errors_quote_overflowing_numbers),
        cmocka_unit_test(test_errors_point_to_the_other_endpoint),
        cmocka_unit_test(test_errors_response_format),
        cmocka_unit_test(test_tokenize_fields_checked),
        cmocka_unit_test(test_apply_template_generation_prompt_and_kwargs),
        cmocka_unit_test(test_models_retrieve_by_id_and_file_name),
        cmocka_unit_test(test_methods_head_and_allow),
        cmocka_unit_test(test_bad_template_message_whole),
        cmocka_unit_test(test_idle_connections_do_not_block_health),
        cmocka_unit_test(test_negative_content_length_rejected_by_library),
    };
    const struct CMUnitTest tool_tests[] = {
        cmocka_unit_test(test_tool_call_plain_reply),
        cmocka_unit_test(test_tool_call_stream_chunks),
        cmocka_unit_test(test_tool_call_unknown_name_stays_content),
        cmocka_unit_test(test_tool_choice_none_and_required),
        cmocka_unit_test(test_tool_messages_reach_template),
    };
    int n_failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    return n_failed + cmocka_run_group_tests(tool_tests, tool_group_setup, tool_group_teardown);
}
