/*
 * The public quill_server API and the endpoints that respond at once: /health, /v1/models,
 * /tokenize, /detokenize, /apply-template, /metrics and /v1/stats, plus the checks every
 * request passes (API key, content type, readiness) before a completion starts. See
 * quill/server.h.
 */
#include "quill/server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>
#include <microhttpd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "quill/chat.h"
#include "quill/model.h"
#include "quill/tokenizer.h"
#include "server/completion.h"
#include "server/http_server.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/server_internal.h"

#define DEFAULT_MAX_BODY_BYTES ((size_t)8 << 20)
#define DEFAULT_HTTP_THREADS 4
#define MAX_HTTP_THREADS 256

quill_server_params quill_server_params_default(void) {
    quill_server_params params;
    memset(&params, 0, sizeof(params));
    params.host = "127.0.0.1";
    params.port = 8080;
    params.n_http_threads = DEFAULT_HTTP_THREADS;
    params.max_body_bytes = DEFAULT_MAX_BODY_BYTES;
    return params;
}

static quill_status copy_optional(const char *text, char **out) {
    *out = NULL;
    if (text == NULL) {
        return QUILL_OK;
    }
    *out = quill__strdup(text);
    if (*out == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory copying settings");
    }
    return QUILL_OK;
}

static quill_status check_params(const quill_server_params *params) {
    bool has_bad_price = params->price_input_picousd < 0 ||
                         params->price_cached_input_picousd < 0 ||
                         params->price_output_picousd < 0;
    if (has_bad_price) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "server: prices must not be negative");
    }
    if (params->n_http_threads < 1 || params->n_http_threads > MAX_HTTP_THREADS) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "server: n_http_threads is %d but must be between 1 and %d",
                               params->n_http_threads, MAX_HTTP_THREADS);
    }
    if (params->max_requests_in_flight < 0 || params->max_body_bytes == 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "server: max_requests_in_flight must be >= 0 and max_body_bytes "
                               "> 0");
    }
    if (params->api_key != NULL && params->api_key[0] == '\0') {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "server: the API key is empty; give a key or none");
    }
    return QUILL_OK;
}

quill_status quill_server_create(const quill_server_params *params, quill_server **out) {
    *out = NULL;
    quill_status status = check_params(params);
    if (status != QUILL_OK) {
        return status;
    }
    quill_server *server = quill__calloc(1, sizeof(*server));
    if (server == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory");
    }
    pthread_mutex_init(&server->mutex, NULL);
    pthread_cond_init(&server->idle_cond, NULL);
    pthread_condattr_t watchdog_cond_attributes;
    pthread_condattr_init(&watchdog_cond_attributes);
    pthread_condattr_setclock(&watchdog_cond_attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&server->watchdog_cond, &watchdog_cond_attributes);
    pthread_condattr_destroy(&watchdog_cond_attributes);
    atomic_init(&server->is_ready, false);
    atomic_init(&server->is_stopping, false);
    atomic_init(&server->is_quiesced, false);
    atomic_init(&server->next_id, 1);
    server->port = params->port;
    server->prices.input_picousd = params->price_input_picousd;
    server->prices.cached_input_picousd = params->price_cached_input_picousd;
    server->prices.output_picousd = params->price_output_picousd;
    server->max_requests_in_flight = params->max_requests_in_flight;
    server->max_body_bytes = params->max_body_bytes;

    status = copy_optional(params->host != NULL ? params->host : "127.0.0.1", &server->host);
    if (status == QUILL_OK) {
        status = copy_optional(params->api_key, &server->api_key);
    }
    if (status == QUILL_OK) {
        status = copy_optional(params->model_alias, &server->model_alias);
    }
    if (status == QUILL_OK) {
        status = copy_optional(params->chat_template, &server->chat_template_source);
    }
    if (status == QUILL_OK) {
        status = quill_metrics_create(NULL, &server->metrics);
    }
    if (status == QUILL_OK) {
        status = quill__http_server_start(server, params->n_http_threads);
    }
    if (status == QUILL_OK) {
        status = quill__watchdog_start(server);
    }
    if (status != QUILL_OK) {
        quill_server_destroy(server);
        return status;
    }
    *out = server;
    return QUILL_OK;
}

/* Renders a one-message conversation with the server's template and returns the status. A
 * template that fails on it (calling an undefined function, say) fails every chat request. */
static quill_status probe_template(const quill_server *server, const quill_model *model) {
    const quill_tokenizer *tokenizer = quill_model_tokenizer(model);
    struct json_object *messages =
        json_tokener_parse("[{\"role\":\"user\",\"content\":\"Hello\"}]");
    if (messages == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory");
    }
    quill_chat_render_params params = quill_chat_render_params_default();
    int32_t bos = quill_tokenizer_bos(tokenizer);
    int32_t eos = quill_tokenizer_eos(tokenizer);
    params.messages = messages;
    params.bos_token = bos >= 0 ? quill_tokenizer_token_text(tokenizer, bos) : NULL;
    params.eos_token = eos >= 0 ? quill_tokenizer_token_text(tokenizer, eos) : NULL;
    params.add_generation_prompt = true;
    params.now_unix_seconds = -1;
    quill_chat_rendered rendered = {0};
    quill_status status = quill_chat_template_render(server->chat_template, &params, &rendered);
    if (status == QUILL_OK) {
        quill_chat_rendered_release(&rendered);
    }
    json_object_put(messages);
    return status;
}

quill_status quill_server_set_engine(quill_server *server, quill_engine *engine) {
    if (atomic_load(&server->is_ready)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "server: an engine is already attached");
    }
    const quill_model *model = quill_engine_model(engine);
    const quill_model_info *info = quill_model_get_info(model);

    /* The template: --chat-template-file, else the model's, else ChatML with a log line. */
    const char *source = server->chat_template_source;
    const char *origin = "file";
    if (source == NULL) {
        source = quill_model_chat_template(model);
        origin = "model";
    }
    if (source == NULL) {
        source = quill_chat_default_template();
        origin = "default";
        char quoted_name[256];
        QUILL_LOG_INFO("server", "the model has no chat template; using ChatML", "model=%s",
                       quill__log_quote(info->name, quoted_name, (int)sizeof(quoted_name)));
    }
    quill_status status = quill_chat_template_create(source, strlen(source),
                                                     &server->chat_template);
    if (status != QUILL_OK) {
        /* quill_error_set writes the thread's message buffer, which quill_error_message()
         * points into, so the parser's message is copied before it is quoted. */
        char detail[1024];
        snprintf(detail, sizeof(detail), "%s", quill_error_message());
        return quill_error_set(status, "server: the chat template (from %s) does not parse: %s",
                               origin, detail);
    }
    /* A filter the interpreter lacks, even in a rare branch, or a failure on the simplest
     * conversation, would fail chat requests for a reason that is the server's, not the
     * client's. */
    server->tool_call_format = quill__tool_call_format_detect(source);
    status = quill_chat_template_check_filters(server->chat_template);
    if (status == QUILL_OK) {
        status = probe_template(server, model);
    }
    if (status != QUILL_OK) {
        char detail[1024];
        snprintf(detail, sizeof(detail), "%s", quill_error_message());
        if (server->chat_template_source != NULL) {
            quill_chat_template_destroy(server->chat_template);
            server->chat_template = NULL;
            return quill_error_set(status,
                                   "server: the chat template (from file) cannot serve chats: %s; "
                                   "fix the --chat-template-file",
                                   detail);
        }
        /* The model's own template: plain chats may still work, and completions do, so the
         * server starts. */
        char quoted_name[256];
        char quoted_detail[1100];
        QUILL_LOG_WARN("server", "the model's chat template may fail chat requests",
                       "model=%s error=%s hint=\"pass --chat-template-file\"",
                       quill__log_quote(info->name, quoted_name, (int)sizeof(quoted_name)),
                       quill__log_quote(detail, quoted_detail, (int)sizeof(quoted_detail)));
    }

    server->model_id = quill__strdup(server->model_alias != NULL ? server->model_alias
                                                                 : info->name);
    if (server->model_id == NULL) {
        quill_chat_template_destroy(server->chat_template);
        server->chat_template = NULL;
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory");
    }
    server->model_created_unix = quill__clock_unix_seconds();
    server->engine = engine;
    server->model = model;
    atomic_store(&server->is_ready, true);
    return QUILL_OK;
}

quill_status quill_server_set_model_path(quill_server *server, const char *path) {
    if (atomic_load(&server->is_ready)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "server: set the model path before quill_server_set_engine");
    }
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    size_t n_bytes = strlen(base);
    size_t n_suffix = strlen(".gguf");
    if (n_bytes > n_suffix && strcasecmp(base + n_bytes - n_suffix, ".gguf") == 0) {
        n_bytes -= n_suffix;
    }
    if (n_bytes == 0) {
        return QUILL_OK;
    }
    char *id = quill__strndup(base, n_bytes);
    if (id == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory copying the model path");
    }
    quill__free(server->model_file_id);
    server->model_file_id = id;
    return QUILL_OK;
}

uint16_t quill_server_port(const quill_server *server) {
    return server->port;
}

quill_status quill_server_drain(quill_server *server, int64_t timeout_ms) {
    quill__http_server_quiesce(server);

    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += (time_t)(timeout_ms / 1000);
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }

    quill_status status = QUILL_OK;
    pthread_mutex_lock(&server->mutex);
    while (server->n_exchanges > 0 && status == QUILL_OK) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&server->idle_cond, &server->mutex);
        } else if (pthread_cond_timedwait(&server->idle_cond, &server->mutex, &deadline) ==
                   ETIMEDOUT) {
            status = quill_error_set(QUILL_ERR_TIMEOUT,
                                     "server: %lld requests still in flight after %lld ms",
                                     (long long)server->n_exchanges, (long long)timeout_ms);
        }
    }
    pthread_mutex_unlock(&server->mutex);
    return status;
}

void quill_server_destroy(quill_server *server) {
    if (server == NULL) {
        return;
    }
    quill__watchdog_stop(server);
    quill__http_server_stop(server);

    quill_waker *waker = server->wakers_all;
    while (waker != NULL) {
        quill_waker *next = waker->next_all;
        pthread_mutex_destroy(&waker->mutex);
        quill__free(waker);
        waker = next;
    }
    quill_chat_template_destroy(server->chat_template);
    quill_metrics_destroy(server->metrics);
    pthread_cond_destroy(&server->watchdog_cond);
    pthread_cond_destroy(&server->idle_cond);
    pthread_mutex_destroy(&server->mutex);
    quill__free(server->model_id);
    quill__free(server->chat_template_source);
    quill__free(server->model_alias);
    quill__free(server->model_file_id);
    quill__free(server->api_key);
    quill__free(server->host);
    quill__free(server);
}

void quill_server_get_stats(quill_server *server, quill_server_stats *stats) {
    pthread_mutex_lock(&server->mutex);
    *stats = server->stats;
    pthread_mutex_unlock(&server->mutex);
}

void quill__server_count_generation_end(quill_server *server, int64_t n_generations,
                                        bool is_disconnect) {
    pthread_mutex_lock(&server->mutex);
    server->stats.n_generations_in_flight -= n_generations;
    if (is_disconnect) {
        server->stats.n_client_disconnects++;
    }
    pthread_mutex_unlock(&server->mutex);
}

/* Compares the n_token bytes at token with expected without an early exit, so the time taken
 * does not reveal the key's prefix. token is NUL-terminated at or after n_token. */
static bool equals_constant_time(const char *token, size_t n_token, const char *expected) {
    size_t n_expected = strlen(expected);
    unsigned char difference = n_token == n_expected ? 0 : 1;
    for (size_t i = 0; i < n_expected; i++) {
        difference |= (unsigned char)(expected[i] ^ token[i < n_token ? i : 0]);
    }
    return difference == 0;
}

static bool is_authorized(quill_exchange *exchange) {
    const char *expected = exchange->server->api_key;
    if (expected == NULL || exchange->endpoint == QUILL_ENDPOINT_HEALTH) {
        return true;
    }
    const char *header = MHD_lookup_connection_value(exchange->connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION);
    if (header == NULL || strncasecmp(header, "Bearer", 6) != 0 ||
        (header[6] != ' ' && header[6] != '\t')) {
        return false;
    }
    /* The scheme and the token are separated by one or more spaces, and a header value ends
     * without whitespace (RFC 9110), which proxies and clients sometimes leave in. */
    const char *token = header + 6;
    while (*token == ' ' || *token == '\t') {
        token++;
    }
    size_t n_token = strlen(token);
    while (n_token > 0 && (token[n_token - 1] == ' ' || token[n_token - 1] == '\t')) {
        n_token--;
    }
    return equals_constant_time(token, n_token, expected);
}

static bool is_json_content(quill_exchange *exchange) {
    const char *type = MHD_lookup_connection_value(exchange->connection, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_CONTENT_TYPE);
    if (type == NULL) {
        return false;
    }
    size_t n_media = strcspn(type, "; ");
    return n_media == strlen("application/json") &&
           strncasecmp(type, "application/json", n_media) == 0;
}

static void answer_health(quill_server *server, int *http_status, quill_strbuf *body) {
    bool is_ready = atomic_load(&server->is_ready);
    *http_status = is_ready ? 200 : 503;
    quill__strbuf_append_cstr(body, is_ready ? "{\"status\":\"ok\"}\n"
                                             : "{\"status\":\"loading\"}\n");
}

/* Appends one model object of /v1/models. */
static void append_model(quill_server *server, quill_strbuf *body) {
    const quill_model_info *info = quill_model_get_info(server->model);
    quill__strbuf_append_cstr(body, "{\"id\":");
    quill__openai_append_text(body, server->model_id, strlen(server->model_id));
    quill__strbuf_appendf(body,
                          ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"quill\","
                          "\"context_length\":%lld,\"vocab_size\":%d,\"architecture\":",
                          (long long)server->model_created_unix,
                          (long long)quill_engine_n_ctx(server->engine), info->n_vocab);
    quill__openai_append_text(body, info->arch_name, strlen(info->arch_name));
    quill__strbuf_append_char(body, '}');
}

static void answer_models(quill_server *server, int *http_status, quill_strbuf *body) {
    quill__strbuf_append_cstr(body, "{\"object\":\"list\",\"data\":[");
    append_model(server, body);
    quill__strbuf_append_cstr(body, "]}\n");
    *http_status = 200;
}

/* True when id names the served model: its id, or the model file's base name. */
static bool is_served_model(const quill_server *server, const char *id) {
    return strcmp(id, server->model_id) == 0 ||
           (server->model_file_id != NULL && strcmp(id, server->model_file_id) == 0);
}

static void set_model_not_found(quill_server *server, const char *id, quill_http_error *error) {
    quill__http_error_set(error, 404, "model", "model_not_found",
                          "the model '%.128s' does not exist; this server serves '%s' (see "
                          "GET /v1/models)",
                          id, server->model_id);
}

/* GET /v1/models/{id}, which the OpenAI SDK's models.retrieve calls. The response always carries
 * the served id, also when the request named the file's base name. */
static void answer_model(quill_exchange *exchange, int *http_status, quill_strbuf *body) {
    quill_server *server = exchange->server;
    if (!is_served_model(server, exchange->path_model_id)) {
        set_model_not_found(server, exchange->path_model_id, &exchange->error);
        return;
    }
    append_model(server, body);
    quill__strbuf_append_char(body, '\n');
    *http_status = 200;
}

/* Rejects fields outside known (a NULL-terminated list), naming the first, as the chat
 * endpoints do. */
static bool check_fields(struct json_object *root, const char *const *known, const char *usage,
                         quill_http_error *error) {
    json_object_object_foreach(root, key, value) {
        (void)value;
        bool is_known = false;
        for (size_t i = 0; known[i] != NULL && !is_known; i++) {
            is_known = strcmp(known[i], key) == 0;
        }
        if (!is_known) {
            quill__http_error_set(error, 400, key, "unsupported_parameter",
                                  "'%.64s' is not a field of this endpoint; it takes %s", key,
                                  usage);
            return false;
        }
    }
    return true;
}

static bool read_bool_field(struct json_object *root, const char *name, bool fallback,
                            quill_http_error *error, bool *out) {
    struct json_object *value = NULL;
    *out = fallback;
    if (!json_object_object_get_ex(root, name, &value) || value == NULL) {
        return true;
    }
    if (!json_object_is_type(value, json_type_boolean)) {
        quill__http_error_set(error, 400, name, NULL, "'%s' must be true or false", name);
        return false;
    }
    *out = json_object_get_boolean(value);
    return true;
}

static const char *const tokenize_fields[] = {"content", "add_special", "parse_special", NULL};
static const char *const detokenize_fields[] = {"tokens", NULL};

/* POST /tokenize {"content": TEXT, "add_special": false, "parse_special": true} */
static void answer_tokenize(quill_exchange *exchange, int *http_status, quill_strbuf *body) {
    struct json_object *root = NULL;
    struct json_object *content = NULL;
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    bool add_special = false;
    bool parse_special = true;
    quill_http_error *error = &exchange->error;
    if (quill__openai_parse_json_object(exchange->body.data, exchange->body.length, &root,
                                        error) != QUILL_OK) {
        return;
    }
    /* The missing required field is named first: it is what a client sending the wrong
     * field name (such as "text") needs to hear. */
    if (!json_object_object_get_ex(root, "content", &content) || content == NULL) {
        quill__http_error_set(error, 400, "content", NULL,
                              "'content' is required: the text to tokenize");
        goto cleanup;
    }
    if (!check_fields(root, tokenize_fields, "content, add_special and parse_special", error)) {
        goto cleanup;
    }
    if (!json_object_is_type(content, json_type_string)) {
        quill__http_error_set(error, 400, "content", NULL, "'content' must be a string");
        goto cleanup;
    }
    if (!read_bool_field(root, "add_special", false, error, &add_special) ||
        !read_bool_field(root, "parse_special", true, error, &parse_special)) {
        goto cleanup;
    }

    uint32_t flags = (add_special ? QUILL_TOKENIZE_ADD_SPECIAL : 0) |
                     (parse_special ? QUILL_TOKENIZE_PARSE_SPECIAL : 0);
    quill_status status = quill_tokenizer_encode(
        quill_model_tokenizer(exchange->server->model), json_object_get_string(content),
        (size_t)json_object_get_string_len(content), flags, &tokens, &n_tokens);
    if (status != QUILL_OK) {
        quill__http_error_from_status(error, status, "content");
        goto cleanup;
    }
    quill__strbuf_append_cstr(body, "{\"tokens\":[");
    for (int64_t i = 0; i < n_tokens; i++) {
        quill__strbuf_appendf(body, "%s%d", i > 0 ? "," : "", tokens[i]);
    }
    quill__strbuf_append_cstr(body, "]}\n");
    *http_status = 200;

cleanup:
    quill_tokens_free(tokens);
    json_object_put(root);
}

/* POST /detokenize {"tokens": [ID, ...]} */
static void answer_detokenize(quill_exchange *exchange, int *http_status, quill_strbuf *body) {
    struct json_object *root = NULL;
    struct json_object *array = NULL;
    int32_t *tokens = NULL;
    char *text = NULL;
    size_t n_text_bytes = 0;
    quill_http_error *error = &exchange->error;
    const quill_tokenizer *tokenizer = quill_model_tokenizer(exchange->server->model);
    if (quill__openai_parse_json_object(exchange->body.data, exchange->body.length, &root,
                                        error) != QUILL_OK) {
        return;
    }
    if (!json_object_object_get_ex(root, "tokens", &array) || array == NULL) {
        quill__http_error_set(error, 400, "tokens", NULL,
                              "'tokens' is required: an array of token ids");
        goto cleanup;
    }
    if (!check_fields(root, detokenize_fields, "only tokens", error)) {
        goto cleanup;
    }
    if (!json_object_is_type(array, json_type_array)) {
        quill__http_error_set(error, 400, "tokens", NULL, "'tokens' must be an array of ids");
        goto cleanup;
    }

    size_t n_tokens = json_object_array_length(array);
    tokens = quill__malloc_array(n_tokens > 0 ? n_tokens : 1, sizeof(int32_t));
    if (tokens == NULL) {
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for %zu tokens", n_tokens);
        goto cleanup;
    }
    for (size_t i = 0; i < n_tokens; i++) {
        struct json_object *item = json_object_array_get_idx(array, i);
        int64_t token = json_object_get_int64(item);
        if (!json_object_is_type(item, json_type_int) || token < 0 ||
            token >= quill_tokenizer_n_vocab(tokenizer)) {
            quill__http_error_set(error, 400, "tokens",
                                  NULL, "'tokens[%zu]' is not a token id in [0, %d)", i,
                                  quill_tokenizer_n_vocab(tokenizer));
            goto cleanup;
        }
        tokens[i] = (int32_t)token;
    }
    quill_status status = quill_tokenizer_decode(tokenizer, tokens, (int64_t)n_tokens, false,
                                                 &text, &n_text_bytes);
    if (status != QUILL_OK) {
        quill__http_error_from_status(error, status, "tokens");
        goto cleanup;
    }
    quill__strbuf_append_cstr(body, "{\"content\":");
    quill__openai_append_text(body, text, n_text_bytes);
    quill__strbuf_append_cstr(body, "}\n");
    *http_status = 200;

cleanup:
    quill_text_free(text);
    quill__free(tokens);
    json_object_put(root);
}

/* POST /apply-template: a chat request body, plus add_generation_prompt (default true), as
 * llama.cpp's server accepts it. Returns the rendered prompt and its token count. Fields outside
 * the chat body are rejected by name, as on /v1/chat/completions. */
static void answer_apply_template(quill_exchange *exchange, int *http_status,
                                  quill_strbuf *body) {
    quill_openai_request request;
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    char *prompt = NULL;
    quill_server *server = exchange->server;
    int32_t n_vocab = quill_tokenizer_n_vocab(quill_model_tokenizer(server->model));
    if (quill__openai_request_parse(exchange->body.data, exchange->body.length,
                                    QUILL_OPENAI_TEMPLATE, n_vocab, &request,
                                    &exchange->error) != QUILL_OK) {
        return;
    }
    if (request.model != NULL && !is_served_model(server, request.model)) {
        set_model_not_found(server, request.model, &exchange->error);
        quill__openai_request_release(&request);
        return;
    }
    if (quill__completion_render_chat(server, &request, &tokens, &n_tokens, &prompt,
                                      &exchange->error) == QUILL_OK) {
        quill__strbuf_append_cstr(body, "{\"prompt\":");
        quill__openai_append_text(body, prompt, strlen(prompt));
        quill__strbuf_appendf(body, ",\"n_tokens\":%lld}\n", (long long)n_tokens);
        *http_status = 200;
    }
    quill__free(prompt);
    quill_tokens_free(tokens);
    quill__openai_request_release(&request);
}

static void start_completion(quill_exchange *exchange, quill_openai_kind kind) {
    quill_server *server = exchange->server;
    quill_openai_request request;
    int32_t n_vocab = quill_tokenizer_n_vocab(quill_model_tokenizer(server->model));
    if (quill__openai_request_parse(exchange->body.data, exchange->body.length, kind, n_vocab,
                                    &request, &exchange->error) != QUILL_OK) {
        return;
    }
    /* Copies for the metrics record, which outlives a request rejected below. */
    if (request.user != NULL) {
        exchange->user = quill__strdup(request.user);
    }
    if (request.feature != NULL) {
        exchange->feature = quill__strdup(request.feature);
    }
    if (request.model != NULL && !is_served_model(server, request.model)) {
        set_model_not_found(server, request.model, &exchange->error);
        quill__openai_request_release(&request);
        return;
    }

    exchange->waker = quill__waker_acquire(server, exchange->connection);
    if (exchange->waker == NULL) {
        quill__http_error_set(&exchange->error, 500, NULL, NULL, "out of memory for a request");
        quill__openai_request_release(&request);
        return;
    }
    quill__completion_start(server, &request, exchange->arrival_us, exchange->waker,
                            &exchange->completion, &exchange->error);
}

bool quill__server_check_headers(quill_exchange *exchange) {
    quill_server *server = exchange->server;
    quill_http_error *error = &exchange->error;

    if (exchange->endpoint == QUILL_ENDPOINT_NOT_FOUND) {
        quill__http_error_set(error, 404, NULL, "not_found",
                              "no such endpoint; see /v1/chat/completions, /v1/completions, "
                              "/v1/models, /health, /tokenize, /detokenize, /apply-template, "
                              "/metrics, /v1/stats");
        return false;
    }
    if (exchange->endpoint == QUILL_ENDPOINT_METHOD_NOT_ALLOWED) {
        quill__http_error_set(error, 405, NULL, "method_not_allowed",
                              "this endpoint takes only %s (see the Allow header)",
                              exchange->allowed_methods != NULL ? exchange->allowed_methods
                                                                : "other methods");
        return false;
    }
    if (exchange->endpoint == QUILL_ENDPOINT_HEALTH) {
        return true;
    }
    if (!is_authorized(exchange)) {
        quill__http_error_set(error, 401, NULL, "invalid_api_key",
                              "missing or incorrect API key; send it as 'Authorization: Bearer "
                              "KEY'");
        return false;
    }
    /* The metrics endpoints respond while the model loads too. Engine gauges appear once ready. */
    bool is_metrics = exchange->endpoint == QUILL_ENDPOINT_METRICS ||
                      exchange->endpoint == QUILL_ENDPOINT_STATS;
    if (is_metrics) {
        return true;
    }
    if (!atomic_load(&server->is_ready)) {
        quill__http_error_set(error, 503, NULL, "model_loading",
                              "the model is still loading; retry shortly");
        error->retry_after_s = 1;
        return false;
    }
    if (quill__router_takes_body(exchange->endpoint) && !is_json_content(exchange)) {
        const char *type = MHD_lookup_connection_value(exchange->connection, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_CONTENT_TYPE);
        quill__http_error_set(error, 415, NULL, "invalid_content_type",
                              "the request's Content-Type is %s%.64s%s; send the JSON body as "
                              "application/json",
                              type != NULL ? "'" : "", type != NULL ? type : "missing",
                              type != NULL ? "'" : "");
        return false;
    }
    return true;
}

void quill__server_handle(quill_exchange *exchange, int *http_status, quill_strbuf *body) {
    quill_server *server = exchange->server;
    *http_status = 0;
    if (!quill__server_check_headers(exchange)) {
        return;
    }
    if (exchange->endpoint == QUILL_ENDPOINT_HEALTH) {
        answer_health(server, http_status, body);
        return;
    }
    if (exchange->endpoint == QUILL_ENDPOINT_METRICS ||
        exchange->endpoint == QUILL_ENDPOINT_STATS) {
        quill__server_metrics_answer(exchange, http_status, body);
        return;
    }

    switch (exchange->endpoint) {
    case QUILL_ENDPOINT_MODELS:
        answer_models(server, http_status, body);
        break;
    case QUILL_ENDPOINT_MODEL:
        answer_model(exchange, http_status, body);
        break;
    case QUILL_ENDPOINT_TOKENIZE:
        answer_tokenize(exchange, http_status, body);
        break;
    case QUILL_ENDPOINT_DETOKENIZE:
        answer_detokenize(exchange, http_status, body);
        break;
    case QUILL_ENDPOINT_APPLY_TEMPLATE:
        answer_apply_template(exchange, http_status, body);
        break;
    case QUILL_ENDPOINT_CHAT:
        start_completion(exchange, QUILL_OPENAI_CHAT);
        break;
    case QUILL_ENDPOINT_COMPLETIONS:
        start_completion(exchange, QUILL_OPENAI_COMPLETION);
        break;
    default:
        break;
    }
}
