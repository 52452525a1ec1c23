/*
 * OpenAI request parsing, as described in openai_request.h. Each field has its own small parser
 * that checks the JSON type and the range and names the field on failure. A JSON null counts as
 * absent, because SDKs send null for unset optional fields.
 */
#include "server/openai_request.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/alloc.h"

/* Fields Quill honours, per endpoint. ignore_eos is an extension that llama.cpp also accepts. */
static const char *const chat_fields[] = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "seed", "stop", "n",
    "logprobs", "top_logprobs", "logit_bias", "stream", "stream_options", "user", "metadata",
    "tools", "tool_choice", "parallel_tool_calls", "ignore_eos", "response_format",
    "chat_template_kwargs", NULL,
};
/* /apply-template takes a chat body and, as llama.cpp's server does, add_generation_prompt. */
static const char *const template_only_fields[] = {"add_generation_prompt", NULL};

/* Template variables that chat_template_kwargs may not replace, as other fields set them. */
static const char *const reserved_template_variables[] = {
    "messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "tool_choice",
    "parallel_tool_calls", NULL,
};
static const char *const completion_fields[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "seed", "stop", "n",
    "logprobs", "logit_bias", "stream", "stream_options", "user", "metadata", "echo", "suffix",
    "best_of", "ignore_eos", NULL,
};

/* Fields accepted and ignored because they only hint at how OpenAI's service should handle the
 * request and cannot change the generated text. They are store (keeping the completion for OpenAI's
 * dashboard, while Quill stores nothing), service_tier (OpenAI's capacity class), prompt_cache_key
 * (a routing hint for OpenAI's prompt cache, which Quill's prefix cache does not need) and
 * safety_identifier (an end-user id for abuse reports). Every other unknown field, such as
 * reasoning_effort, changes the output, so it is rejected by name. */
static const char *const ignored_hint_fields[] = {
    "store", "service_tier", "prompt_cache_key", "safety_identifier", NULL,
};

static const char *const message_roles[] = {"system", "developer", "user", "assistant", "tool",
                                            NULL};

static bool is_listed(const char *const *list, const char *name) {
    for (size_t i = 0; list[i] != NULL; i++) {
        if (strcmp(list[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

static bool is_letter(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static quill_status reject(quill_http_error *error, const char *param, const char *fmt,
                           const char *detail) {
    quill__http_error_set(error, 400, param, NULL, fmt, param, detail);
    return QUILL_ERR_INVALID_ARG;
}

static struct json_object *field(const quill_openai_request *request, const char *name) {
    struct json_object *value = NULL;
    if (!json_object_object_get_ex(request->root, name, &value)) {
        return NULL;
    }
    return value; /* NULL for a JSON null */
}

static quill_status parse_double(const quill_openai_request *request, const char *name,
                                 double min, double max, bool is_min_open, double *out,
                                 quill_http_error *error) {
    struct json_object *value = field(request, name);
    if (value == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(value, json_type_double) &&
        !json_object_is_type(value, json_type_int)) {
        return reject(error, name, "'%s' must be a number%s", "");
    }
    double number = json_object_get_double(value);
    bool is_below = is_min_open ? !(number > min) : !(number >= min);
    if (!isfinite(number) || is_below || number > max) {
        quill__http_error_set(error, 400, name, NULL, "'%s' is %.15g but must be in %s%g, %g]",
                              name, number, is_min_open ? "(" : "[", min, max);
        return QUILL_ERR_INVALID_ARG;
    }
    /* The sampler stores single precision, where a tiny value above an open minimum becomes
     * the minimum itself. */
    if (is_min_open && !((float)number > (float)min)) {
        quill__http_error_set(error, 400, name, NULL,
                              "'%s' is %.15g, which is %g in single precision; give at least "
                              "%g",
                              name, number, (double)(float)number,
                              (double)nextafterf((float)min, INFINITY));
        return QUILL_ERR_INVALID_ARG;
    }
    *out = number;
    return QUILL_OK;
}

/* Copies the text of the top-level number field name as it appears in the raw body into
 * text, for numbers json-c could not hold. Returns false when it cannot be found (the key also
 * appears elsewhere, or the text does not look like an integer), and the caller then prints the
 * parsed value. */
static bool find_number_text(const quill_openai_request *request, const char *name, char *text,
                             size_t n_text_bytes) {
    if (request->body == NULL) {
        return false;
    }
    char key[72];
    snprintf(key, sizeof(key), "\"%s\"", name);
    size_t n_key = strlen(key);
    const char *end = request->body + request->n_body_bytes;
    const char *found = NULL;
    for (const char *at = request->body; at + n_key <= end; at++) {
        if (memcmp(at, key, n_key) != 0 || (at > request->body && at[-1] == '\\')) {
            continue;
        }
        if (found != NULL) {
            return false; /* more than one place: nested objects may use the same key */
        }
        found = at;
    }
    if (found == NULL) {
        return false;
    }
    const char *at = found + n_key;
    while (at < end && (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r' || *at == ':')) {
        at++;
    }
    size_t n_digits = 0;
    while (at + n_digits < end && (at[n_digits] == '-' || (at[n_digits] >= '0' &&
                                                            at[n_digits] <= '9'))) {
        n_digits++;
    }
    if (n_digits == 0 || n_digits + 1 > n_text_bytes) {
        return false;
    }
    memcpy(text, at, n_digits);
    text[n_digits] = '\0';
    return true;
}

static quill_status parse_int(const quill_openai_request *request, const char *name, int64_t min,
                              int64_t max, int64_t *out, quill_http_error *error) {
    struct json_object *value = field(request, name);
    if (value == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(value, json_type_int)) {
        return reject(error, name, "'%s' must be an integer%s", "");
    }
    errno = 0;
    int64_t number = json_object_get_int64(value);
    /* json-c clamps integers beyond int64 to its limits, so those are quoted as sent. */
    bool is_clamped = errno != 0 || number == INT64_MAX || number == INT64_MIN;
    char sent[48];
    if (is_clamped && find_number_text(request, name, sent, sizeof(sent))) {
        quill__http_error_set(error, 400, name, NULL, "'%s' is %s but must be between %lld and "
                              "%lld", name, sent, (long long)min, (long long)max);
        return QUILL_ERR_INVALID_ARG;
    }
    if (errno != 0 || number < min || number > max) {
        quill__http_error_set(error, 400, name, NULL,
                              "'%s' is %lld but must be between %lld and %lld", name,
                              (long long)number, (long long)min, (long long)max);
        return QUILL_ERR_INVALID_ARG;
    }
    *out = number;
    return QUILL_OK;
}

/* seed: any integer from INT64_MIN to UINT64_MAX, since SDKs send both signed and unsigned 64-bit
 * seeds. A negative seed is used as its two's complement. json-c clamps integers beyond those
 * limits without a sign, so a value at a limit is checked against the text as sent. */
static quill_status parse_seed(const quill_openai_request *request, uint64_t *out,
                               quill_http_error *error) {
    struct json_object *value = field(request, "seed");
    if (value == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(value, json_type_int)) {
        return reject(error, "seed", "'%s' must be an integer%s", "");
    }
    int64_t signed_seed = json_object_get_int64(value);
    uint64_t seed = signed_seed < 0 ? (uint64_t)signed_seed : json_object_get_uint64(value);
    const char *limit = signed_seed == INT64_MIN                 ? "-9223372036854775808"
                        : signed_seed >= 0 && seed == UINT64_MAX ? "18446744073709551615"
                                                                 : NULL;
    char sent[48];
    if (limit != NULL && find_number_text(request, "seed", sent, sizeof(sent)) &&
        strcmp(sent, limit) != 0) {
        quill__http_error_set(error, 400, "seed", NULL,
                              "'seed' is %s but must be between -9223372036854775808 and "
                              "18446744073709551615",
                              sent);
        return QUILL_ERR_INVALID_ARG;
    }
    *out = seed;
    return QUILL_OK;
}

static quill_status parse_bool(const quill_openai_request *request, const char *name, bool *out,
                               quill_http_error *error) {
    struct json_object *value = field(request, name);
    if (value == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(value, json_type_boolean)) {
        return reject(error, name, "'%s' must be true or false%s", "");
    }
    *out = json_object_get_boolean(value);
    return QUILL_OK;
}

static quill_status parse_string(const quill_openai_request *request, const char *name,
                                 const char **out, quill_http_error *error) {
    struct json_object *value = field(request, name);
    if (value == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(value, json_type_string)) {
        return reject(error, name, "'%s' must be a string%s", "");
    }
    *out = json_object_get_string(value);
    return QUILL_OK;
}

/* Rejects fields that are neither honoured nor ignorable hints. */
static quill_status check_known_fields(const quill_openai_request *request,
                                       quill_http_error *error) {
    const char *const *known = request->kind == QUILL_OPENAI_CHAT ? chat_fields
                                                                  : completion_fields;
    json_object_object_foreach(request->root, key, value) {
        (void)value;
        bool is_template_field = request->is_template_only &&
                                 is_listed(template_only_fields, key);
        if (request->kind == QUILL_OPENAI_COMPLETION && strcmp(key, "messages") == 0) {
            quill__http_error_set(error, 400, key, "unsupported_parameter",
                                  "'messages' belongs to chat requests; send this body to "
                                  "/v1/chat/completions, or give 'prompt' here");
            return QUILL_ERR_INVALID_ARG;
        }
        if (request->kind == QUILL_OPENAI_CHAT && strcmp(key, "prompt") == 0) {
            quill__http_error_set(error, 400, key, "unsupported_parameter",
                                  "'prompt' belongs to text completions; send this body to "
                                  "/v1/completions, or give 'messages' here");
            return QUILL_ERR_INVALID_ARG;
        }
        if (!is_listed(known, key) && !is_listed(ignored_hint_fields, key) &&
            !is_template_field) {
            quill__http_error_set(error, 400, key, "unsupported_parameter",
                                  "'%s' is not supported by Quill; remove it from the request",
                                  key);
            return QUILL_ERR_INVALID_ARG;
        }
    }
    return QUILL_OK;
}

static quill_status parse_message(struct json_object *message, size_t index,
                                  quill_http_error *error) {
    char param[64];
    snprintf(param, sizeof(param), "messages[%zu]", index);
    if (!json_object_is_type(message, json_type_object)) {
        quill__http_error_set(error, 400, param, NULL, "'%s' must be an object", param);
        return QUILL_ERR_INVALID_ARG;
    }

    struct json_object *role = NULL;
    snprintf(param, sizeof(param), "messages[%zu].role", index);
    if (!json_object_object_get_ex(message, "role", &role) ||
        !json_object_is_type(role, json_type_string)) {
        quill__http_error_set(error, 400, param, NULL, "'%s' is missing or not a string", param);
        return QUILL_ERR_INVALID_ARG;
    }
    if (!is_listed(message_roles, json_object_get_string(role))) {
        quill__http_error_set(error, 400, param, NULL,
                              "'%s' is '%.64s', which is not a known role; use system, "
                              "developer, user, assistant or tool",
                              param, json_object_get_string(role));
        return QUILL_ERR_INVALID_ARG;
    }

    /* Content: a string, an array of parts, or null/absent only beside assistant tool calls. */
    struct json_object *content = NULL;
    struct json_object *tool_calls = NULL;
    bool has_content = json_object_object_get_ex(message, "content", &content) && content != NULL;
    bool has_tool_calls = json_object_object_get_ex(message, "tool_calls", &tool_calls) &&
                          tool_calls != NULL;
    snprintf(param, sizeof(param), "messages[%zu].content", index);
    if (!has_content && !has_tool_calls) {
        quill__http_error_set(error, 400, param, NULL, "'%s' is missing", param);
        return QUILL_ERR_INVALID_ARG;
    }
    if (has_content && !json_object_is_type(content, json_type_string) &&
        !json_object_is_type(content, json_type_array)) {
        quill__http_error_set(error, 400, param, NULL,
                              "'%s' must be a string or an array of text parts", param);
        return QUILL_ERR_INVALID_ARG;
    }
    if (has_content && json_object_is_type(content, json_type_array)) {
        size_t n_parts = json_object_array_length(content);
        for (size_t i = 0; i < n_parts; i++) {
            struct json_object *part = json_object_array_get_idx(content, i);
            struct json_object *type = NULL;
            struct json_object *text = NULL;
            bool is_text_part = json_object_is_type(part, json_type_object) &&
                                json_object_object_get_ex(part, "type", &type) &&
                                json_object_is_type(type, json_type_string) &&
                                strcmp(json_object_get_string(type), "text") == 0 &&
                                json_object_object_get_ex(part, "text", &text) &&
                                json_object_is_type(text, json_type_string);
            if (!is_text_part) {
                snprintf(param, sizeof(param), "messages[%zu].content[%zu]", index, i);
                quill__http_error_set(error, 400, param, NULL,
                                      "'%s' must be a text part {\"type\": \"text\", \"text\": "
                                      "...}; Quill does not support other content types",
                                      param);
                return QUILL_ERR_INVALID_ARG;
            }
        }
    }
    return QUILL_OK;
}

static quill_status parse_messages(quill_openai_request *request, quill_http_error *error) {
    struct json_object *messages = field(request, "messages");
    if (messages == NULL) {
        return reject(error, "messages", "'%s' is required%s", "");
    }
    if (!json_object_is_type(messages, json_type_array)) {
        return reject(error, "messages", "'%s' must be an array of messages%s", "");
    }
    size_t n_messages = json_object_array_length(messages);
    if (n_messages == 0) {
        return reject(error, "messages", "'%s' is empty; send at least one message%s", "");
    }
    for (size_t i = 0; i < n_messages; i++) {
        quill_status status = parse_message(json_object_array_get_idx(messages, i), i, error);
        if (status != QUILL_OK) {
            return status;
        }
    }
    request->messages = messages;
    return QUILL_OK;
}

static quill_status parse_prompt_tokens(quill_openai_request *request, struct json_object *prompt,
                                        int32_t n_vocab, quill_http_error *error) {
    size_t n_tokens = json_object_array_length(prompt);
    request->prompt_tokens = quill__malloc_array(n_tokens, sizeof(int32_t));
    if (request->prompt_tokens == NULL) {
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for %zu prompt tokens",
                              n_tokens);
        return QUILL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n_tokens; i++) {
        struct json_object *item = json_object_array_get_idx(prompt, i);
        int64_t token = json_object_get_int64(item);
        int64_t limit = n_vocab > 0 ? n_vocab : INT32_MAX;
        if (!json_object_is_type(item, json_type_int) || token < 0 || token >= limit) {
            quill__http_error_set(error, 400, "prompt", NULL,
                                  "'prompt[%zu]' is not a token id in [0, %lld)", i,
                                  (long long)limit);
            return QUILL_ERR_INVALID_ARG;
        }
        request->prompt_tokens[i] = (int32_t)token;
    }
    request->n_prompt_tokens = (int64_t)n_tokens;
    return QUILL_OK;
}

/* prompt: a string or an array of token ids, alone or as the one element of a batch. */
static quill_status parse_prompt(quill_openai_request *request, int32_t n_vocab,
                                 quill_http_error *error) {
    struct json_object *prompt = field(request, "prompt");
    if (prompt == NULL) {
        return reject(error, "prompt", "'%s' is required%s", "");
    }
    if (json_object_is_type(prompt, json_type_array) && json_object_array_length(prompt) == 1) {
        struct json_object *only = json_object_array_get_idx(prompt, 0);
        if (json_object_is_type(only, json_type_string) ||
            json_object_is_type(only, json_type_array)) {
            prompt = only;
        }
    }
    if (json_object_is_type(prompt, json_type_string)) {
        request->prompt_text = json_object_get_string(prompt);
        request->n_prompt_text_bytes = (size_t)json_object_get_string_len(prompt);
        return QUILL_OK;
    }
    if (!json_object_is_type(prompt, json_type_array) || json_object_array_length(prompt) == 0 ||
        !json_object_is_type(json_object_array_get_idx(prompt, 0), json_type_int)) {
        return reject(error, "prompt",
                      "'%s' must be a string or a non-empty array of token ids, alone or as "
                      "the only element of an array; Quill takes one prompt per request%s",
                      "");
    }
    return parse_prompt_tokens(request, prompt, n_vocab, error);
}

static quill_status parse_stop(quill_openai_request *request, quill_http_error *error) {
    struct json_object *stop = field(request, "stop");
    if (stop == NULL) {
        return QUILL_OK;
    }
    if (json_object_is_type(stop, json_type_string)) {
        if (json_object_get_string_len(stop) > 0) {
            request->stop[request->n_stop++] = json_object_get_string(stop);
        }
        return QUILL_OK;
    }
    if (!json_object_is_type(stop, json_type_array) ||
        json_object_array_length(stop) > QUILL_OPENAI_MAX_STOP) {
        return reject(error, "stop", "'%s' must be a string or an array of up to 4 strings%s",
                      "");
    }
    for (size_t i = 0; i < json_object_array_length(stop); i++) {
        struct json_object *item = json_object_array_get_idx(stop, i);
        if (!json_object_is_type(item, json_type_string) ||
            json_object_get_string_len(item) == 0) {
            return reject(error, "stop", "'%s' entries must be non-empty strings%s", "");
        }
        request->stop[request->n_stop++] = json_object_get_string(item);
    }
    return QUILL_OK;
}

static quill_status parse_logit_bias(quill_openai_request *request, int32_t n_vocab,
                                     quill_http_error *error) {
    struct json_object *biases = field(request, "logit_bias");
    if (biases == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(biases, json_type_object) ||
        json_object_object_length(biases) > QUILL_OPENAI_MAX_LOGIT_BIAS) {
        return reject(error, "logit_bias",
                      "'%s' must be an object of at most 1024 token ids to biases%s", "");
    }
    size_t n_biases = (size_t)json_object_object_length(biases);
    request->logit_biases = quill__calloc(n_biases > 0 ? n_biases : 1, sizeof(quill_logit_bias));
    if (request->logit_biases == NULL) {
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for logit_bias");
        return QUILL_ERR_NOMEM;
    }

    json_object_object_foreach(biases, key, value) {
        char *end = NULL;
        errno = 0;
        long token = strtol(key, &end, 10);
        int64_t limit = n_vocab > 0 ? n_vocab : INT32_MAX;
        bool is_number = json_object_is_type(value, json_type_int) ||
                         json_object_is_type(value, json_type_double);
        double bias = is_number ? json_object_get_double(value) : NAN;
        if (!is_digit(key[0]) || errno != 0 || *end != '\0' || token >= limit) {
            quill__http_error_set(error, 400, "logit_bias", NULL,
                                  "'logit_bias' key '%.32s' is not a token id in [0, %lld)", key,
                                  (long long)limit);
            return QUILL_ERR_INVALID_ARG;
        }
        if (!(bias >= -100.0 && bias <= 100.0)) {
            quill__http_error_set(error, 400, "logit_bias", NULL,
                                  "'logit_bias' value for token %ld must be a number in [-100, "
                                  "100]",
                                  token);
            return QUILL_ERR_INVALID_ARG;
        }

        /* -100 bans the token, as in OpenAI's API. */
        quill_logit_bias *entry = &request->logit_biases[request->sampling.n_logit_biases++];
        entry->token = (int32_t)token;
        entry->bias = bias <= -100.0 ? -INFINITY : (float)bias;
    }
    request->sampling.logit_biases = request->logit_biases;
    return QUILL_OK;
}

static quill_status parse_logprobs(quill_openai_request *request, quill_http_error *error) {
    int64_t n_top = 0;
    quill_status status = QUILL_OK;
    if (request->kind == QUILL_OPENAI_CHAT) {
        status = parse_bool(request, "logprobs", &request->wants_logprobs, error);
        if (status == QUILL_OK) {
            status = parse_int(request, "top_logprobs", 0, QUILL_MAX_TOP_LOGPROBS, &n_top, error);
        }
        if (status == QUILL_OK && field(request, "top_logprobs") != NULL &&
            !request->wants_logprobs) {
            return reject(error, "top_logprobs", "'%s' needs 'logprobs': true%s", "");
        }
    } else {
        /* Completions: logprobs is the number of alternatives to report per token. */
        request->wants_logprobs = field(request, "logprobs") != NULL;
        status = parse_int(request, "logprobs", 0, QUILL_MAX_TOP_LOGPROBS, &n_top, error);
    }
    request->n_top_logprobs = (int32_t)n_top;
    return status;
}

static quill_status parse_stream(quill_openai_request *request, quill_http_error *error) {
    quill_status status = parse_bool(request, "stream", &request->is_stream, error);
    struct json_object *options = field(request, "stream_options");
    if (status != QUILL_OK || options == NULL) {
        return status;
    }
    if (!request->is_stream) {
        return reject(error, "stream_options", "'%s' is only allowed with 'stream': true%s", "");
    }
    struct json_object *include_usage = NULL;
    if (!json_object_is_type(options, json_type_object)) {
        return reject(error, "stream_options", "'%s' must be an object%s", "");
    }
    /* OpenAI's include_obfuscation pads streamed chunks with random characters against
     * side-channel attacks on the network link. Quill sends no padding, so the key is accepted
     * and ignored. Other keys are rejected, as unknown top-level fields are. */
    json_object_object_foreach(options, key, value) {
        (void)value;
        if (strcmp(key, "include_usage") != 0 && strcmp(key, "include_obfuscation") != 0) {
            quill__http_error_set(error, 400, "stream_options", "unsupported_parameter",
                                  "'stream_options.%.64s' is not supported; 'stream_options' "
                                  "takes include_usage",
                                  key);
            return QUILL_ERR_INVALID_ARG;
        }
    }
    if (json_object_object_get_ex(options, "include_usage", &include_usage) &&
        include_usage != NULL) {
        if (!json_object_is_type(include_usage, json_type_boolean)) {
            return reject(error, "stream_options", "'%s.include_usage' must be true or false%s",
                          "");
        }
        request->wants_stream_usage = json_object_get_boolean(include_usage);
    }
    return QUILL_OK;
}

/* Rejects a metrics tag (user or metadata.feature) that names one of the registry's own buckets:
 * "_other" collects the tags beyond the caps, and "none" the requests without a feature. */
static quill_status check_tag(const char *param, const char *tag, bool is_feature,
                              quill_http_error *error) {
    if (strcmp(tag, "_other") == 0 || (is_feature && strcmp(tag, "none") == 0)) {
        quill__http_error_set(error, 400, param, NULL,
                              "'%s' may not be \"%s\", which the usage metrics reserve for %s; "
                              "choose another name",
                              param, tag,
                              tag[0] == '_' ? "names beyond their caps" : "requests without one");
        return QUILL_ERR_INVALID_ARG;
    }
    return QUILL_OK;
}

/* metadata: OpenAI's limits of 16 pairs, keys up to 64 characters and values up to 512, checked
 * in bytes. metadata.feature becomes a metrics label, so an unbounded value would grow every
 * series it appears in. */
static quill_status parse_metadata(quill_openai_request *request, quill_http_error *error) {
    struct json_object *metadata = field(request, "metadata");
    if (metadata == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(metadata, json_type_object)) {
        return reject(error, "metadata", "'%s' must be an object of string values%s", "");
    }
    if (json_object_object_length(metadata) > QUILL_OPENAI_MAX_METADATA_PAIRS) {
        quill__http_error_set(error, 400, "metadata", NULL,
                              "'metadata' has %d pairs; send at most %d",
                              json_object_object_length(metadata), QUILL_OPENAI_MAX_METADATA_PAIRS);
        return QUILL_ERR_INVALID_ARG;
    }
    json_object_object_foreach(metadata, key, value) {
        if (strlen(key) > QUILL_OPENAI_MAX_METADATA_KEY_BYTES) {
            quill__http_error_set(error, 400, "metadata", NULL,
                                  "a 'metadata' key of %zu bytes ('%.32s...') is too long; use at "
                                  "most %d",
                                  strlen(key), key, QUILL_OPENAI_MAX_METADATA_KEY_BYTES);
            return QUILL_ERR_INVALID_ARG;
        }
        /* The key's length was checked above, so the name fits. */
        char param[16 + QUILL_OPENAI_MAX_METADATA_KEY_BYTES];
        snprintf(param, sizeof(param), "metadata.%s", key);
        if (!json_object_is_type(value, json_type_string)) {
            quill__http_error_set(error, 400, param, NULL, "'%s' must be a string", param);
            return QUILL_ERR_INVALID_ARG;
        }
        if (json_object_get_string_len(value) > QUILL_OPENAI_MAX_METADATA_VALUE_BYTES) {
            quill__http_error_set(error, 400, param, NULL, "'%s' has %d bytes; use at most %d",
                                  param, json_object_get_string_len(value),
                                  QUILL_OPENAI_MAX_METADATA_VALUE_BYTES);
            return QUILL_ERR_INVALID_ARG;
        }
        if (strcmp(key, "feature") == 0) {
            request->feature = json_object_get_string(value);
            quill_status status = check_tag("metadata.feature", request->feature, true, error);
            if (status != QUILL_OK) {
                return status;
            }
        }
    }
    return QUILL_OK;
}

/* user: a string of at most QUILL_OPENAI_MAX_USER_BYTES; the usage metrics track it. */
static quill_status parse_user(quill_openai_request *request, quill_http_error *error) {
    quill_status status = parse_string(request, "user", &request->user, error);
    if (status != QUILL_OK || request->user == NULL) {
        return status;
    }
    size_t n_bytes = strlen(request->user);
    if (n_bytes > QUILL_OPENAI_MAX_USER_BYTES) {
        quill__http_error_set(error, 400, "user", NULL,
                              "'user' has %zu bytes; use an id of at most %d", n_bytes,
                              QUILL_OPENAI_MAX_USER_BYTES);
        return QUILL_ERR_INVALID_ARG;
    }
    return check_tag("user", request->user, false, error);
}

/* Checks one entry of tools: {"type": "function", "function": {"name", "description",
 * "parameters"}}, the only kind that chat templates render. A bad entry would otherwise fail
 * inside the template, with an error that names no field. */
static quill_status check_tool(struct json_object *tool, size_t index, quill_http_error *error) {
    char param[64];
    struct json_object *type = NULL;
    struct json_object *function = NULL;
    struct json_object *member = NULL;
    snprintf(param, sizeof(param), "tools[%zu].type", index);
    if (!json_object_is_type(tool, json_type_object) ||
        !json_object_object_get_ex(tool, "type", &type) ||
        !json_object_is_type(type, json_type_string) ||
        strcmp(json_object_get_string(type), "function") != 0) {
        quill__http_error_set(error, 400, param, NULL,
                              "'%s' must be \"function\", the only tool type chat completions "
                              "support",
                              param);
        return QUILL_ERR_INVALID_ARG;
    }
    snprintf(param, sizeof(param), "tools[%zu].function", index);
    if (!json_object_object_get_ex(tool, "function", &function) ||
        !json_object_is_type(function, json_type_object)) {
        quill__http_error_set(error, 400, param, NULL,
                              "'%s' must be an object with the function's name", param);
        return QUILL_ERR_INVALID_ARG;
    }
    snprintf(param, sizeof(param), "tools[%zu].function.name", index);
    if (!json_object_object_get_ex(function, "name", &member) ||
        !json_object_is_type(member, json_type_string) || json_object_get_string_len(member) == 0) {
        quill__http_error_set(error, 400, param, NULL, "'%s' must be a non-empty string", param);
        return QUILL_ERR_INVALID_ARG;
    }
    snprintf(param, sizeof(param), "tools[%zu].function.parameters", index);
    if (json_object_object_get_ex(function, "parameters", &member) && member != NULL &&
        !json_object_is_type(member, json_type_object)) {
        quill__http_error_set(error, 400, param, NULL, "'%s' must be a JSON Schema object", param);
        return QUILL_ERR_INVALID_ARG;
    }
    snprintf(param, sizeof(param), "tools[%zu].function.description", index);
    if (json_object_object_get_ex(function, "description", &member) && member != NULL &&
        !json_object_is_type(member, json_type_string)) {
        quill__http_error_set(error, 400, param, NULL, "'%s' must be a string", param);
        return QUILL_ERR_INVALID_ARG;
    }
    return QUILL_OK;
}

static quill_status parse_tools(quill_openai_request *request, quill_http_error *error) {
    request->tools = field(request, "tools");
    request->tool_choice = field(request, "tool_choice");
    if (request->tools != NULL && !json_object_is_type(request->tools, json_type_array)) {
        return reject(error, "tools", "'%s' must be an array of tool definitions%s", "");
    }
    size_t n_tools = request->tools != NULL ? json_object_array_length(request->tools) : 0;
    for (size_t i = 0; i < n_tools; i++) {
        quill_status status = check_tool(json_object_array_get_idx(request->tools, i), i, error);
        if (status != QUILL_OK) {
            return status;
        }
    }
    if (request->tool_choice != NULL &&
        !json_object_is_type(request->tool_choice, json_type_string) &&
        !json_object_is_type(request->tool_choice, json_type_object)) {
        return reject(error, "tool_choice", "'%s' must be a string or an object%s", "");
    }
    /* "required" and a named function need decoding constrained to a call, which Quill lacks,
     * and a free-text reply would silently break the caller's contract. */
    const char *choice = json_object_is_type(request->tool_choice, json_type_string)
                             ? json_object_get_string(request->tool_choice)
                             : NULL;
    bool is_supported = request->tool_choice == NULL ||
                        (choice != NULL &&
                         (strcmp(choice, "auto") == 0 || strcmp(choice, "none") == 0));
    if (!is_supported) {
        char shown[80] = "a named function";
        if (choice != NULL) {
            snprintf(shown, sizeof(shown), "\"%.64s\"", choice);
        }
        quill__http_error_set(error, 400, "tool_choice", NULL,
                              "'tool_choice' is %s, but only \"auto\" and \"none\" are "
                              "supported because Quill has no constrained decoding to force a "
                              "tool call; send \"auto\" or leave it out",
                              shown);
        return QUILL_ERR_INVALID_ARG;
    }
    bool parallel = false;
    quill_status status = parse_bool(request, "parallel_tool_calls", &parallel, error);
    if (status == QUILL_OK && field(request, "parallel_tool_calls") != NULL) {
        request->parallel_tool_calls = parallel ? 1 : 0;
    }
    return status;
}

/* response_format: only {"type": "text"}, the default; Quill has no constrained decoding. */
static quill_status parse_response_format(quill_openai_request *request,
                                          quill_http_error *error) {
    struct json_object *format = field(request, "response_format");
    struct json_object *type = NULL;
    if (format == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(format, json_type_object) ||
        !json_object_object_get_ex(format, "type", &type) ||
        !json_object_is_type(type, json_type_string)) {
        quill__http_error_set(error, 400, "response_format", NULL,
                              "'response_format' must be an object with a string 'type'");
        return QUILL_ERR_INVALID_ARG;
    }
    if (strcmp(json_object_get_string(type), "text") != 0) {
        quill__http_error_set(error, 400, "response_format.type", "unsupported_parameter",
                              "'response_format.type' is '%.32s', but Quill supports only "
                              "'text'; it has no JSON mode or schema-constrained output",
                              json_object_get_string(type));
        return QUILL_ERR_INVALID_ARG;
    }
    return QUILL_OK;
}

/* chat_template_kwargs (llama.cpp's name): extra template variables such as enable_thinking. */
static quill_status parse_template_kwargs(quill_openai_request *request,
                                          quill_http_error *error) {
    struct json_object *kwargs = field(request, "chat_template_kwargs");
    if (kwargs == NULL) {
        return QUILL_OK;
    }
    if (!json_object_is_type(kwargs, json_type_object)) {
        return reject(error, "chat_template_kwargs",
                      "'%s' must be an object of template variables%s", "");
    }
    json_object_object_foreach(kwargs, key, value) {
        (void)value;
        if (is_listed(reserved_template_variables, key)) {
            quill__http_error_set(error, 400, "chat_template_kwargs", NULL,
                                  "'chat_template_kwargs.%s' is set by the request's own field "
                                  "of that name; remove it from chat_template_kwargs",
                                  key);
            return QUILL_ERR_INVALID_ARG;
        }
    }
    request->template_kwargs = kwargs;
    return QUILL_OK;
}

/* Completion-only fields that Quill accepts only at their neutral value. */
static quill_status check_completion_neutral_fields(quill_openai_request *request,
                                                    quill_http_error *error) {
    bool echo = false;
    quill_status status = parse_bool(request, "echo", &echo, error);
    if (status == QUILL_OK && echo) {
        return reject(error, "echo", "'%s': true is not supported by Quill%s", "");
    }
    if (status == QUILL_OK && field(request, "suffix") != NULL) {
        return reject(error, "suffix", "'%s' is not supported by Quill%s", "");
    }
    int64_t best_of = 1;
    if (status == QUILL_OK) {
        status = parse_int(request, "best_of", 1, 1, &best_of, error);
    }
    return status;
}

static quill_status parse_sampling(quill_openai_request *request, int32_t n_vocab,
                                   quill_http_error *error) {
    quill_sampling_params *sampling = &request->sampling;
    double temperature = 1.0; /* OpenAI's default */
    double top_p = 1.0;
    double min_p = 0.0;
    double presence = 0.0;
    double frequency = 0.0;
    double repetition = 1.0;
    int64_t top_k = 0;
    uint64_t seed = 0;
    quill_status status = parse_double(request, "temperature", 0.0, 2.0, false, &temperature,
                                       error);
    if (status == QUILL_OK) {
        status = parse_double(request, "top_p", 0.0, 1.0, true, &top_p, error);
    }
    if (status == QUILL_OK) {
        status = parse_double(request, "min_p", 0.0, 1.0, false, &min_p, error);
    }
    if (status == QUILL_OK) {
        status = parse_double(request, "presence_penalty", -2.0, 2.0, false, &presence, error);
    }
    if (status == QUILL_OK) {
        status = parse_double(request, "frequency_penalty", -2.0, 2.0, false, &frequency, error);
    }
    if (status == QUILL_OK) {
        status = parse_double(request, "repetition_penalty", 0.0, 10.0, true, &repetition, error);
    }
    if (status == QUILL_OK) {
        status = parse_int(request, "top_k", 0, n_vocab > 0 ? n_vocab : INT32_MAX, &top_k, error);
    }
    if (status == QUILL_OK) {
        status = parse_seed(request, &seed, error);
    }
    if (status == QUILL_OK) {
        status = parse_logit_bias(request, n_vocab, error);
    }
    if (status != QUILL_OK) {
        return status;
    }

    sampling->temperature = (float)temperature;
    sampling->top_p = (float)top_p;
    sampling->min_p = (float)min_p;
    sampling->presence_penalty = (float)presence;
    sampling->frequency_penalty = (float)frequency;
    sampling->repetition_penalty = (float)repetition;
    sampling->top_k = (int32_t)top_k;
    sampling->has_seed = field(request, "seed") != NULL;
    sampling->seed = seed;
    return QUILL_OK;
}

static quill_status parse_limits(quill_openai_request *request, quill_http_error *error) {
    int64_t n_choices = 1;
    quill_status status = parse_int(request, "max_tokens", 1, INT32_MAX, &request->max_tokens,
                                    error);
    if (status == QUILL_OK && request->kind == QUILL_OPENAI_CHAT) {
        /* max_completion_tokens is the newer name, so it wins when both are given. */
        status = parse_int(request, "max_completion_tokens", 1, INT32_MAX, &request->max_tokens,
                           error);
    }
    if (status == QUILL_OK) {
        status = parse_int(request, "n", 1, QUILL_OPENAI_MAX_CHOICES, &n_choices, error);
    }
    request->n_choices = (int32_t)n_choices;
    return status;
}

static quill_status parse_fields(quill_openai_request *request, int32_t n_vocab,
                                 quill_http_error *error) {
    quill_status status = check_known_fields(request, error);
    if (status == QUILL_OK) {
        status = parse_string(request, "model", &request->model, error);
    }
    if (status == QUILL_OK) {
        status = request->kind == QUILL_OPENAI_CHAT ? parse_messages(request, error)
                                                    : parse_prompt(request, n_vocab, error);
    }
    if (status == QUILL_OK && request->kind == QUILL_OPENAI_CHAT) {
        status = parse_tools(request, error);
    }
    if (status == QUILL_OK && request->kind == QUILL_OPENAI_CHAT) {
        status = parse_response_format(request, error);
    }
    if (status == QUILL_OK && request->kind == QUILL_OPENAI_CHAT) {
        status = parse_template_kwargs(request, error);
    }
    if (status == QUILL_OK && request->is_template_only) {
        status = parse_bool(request, "add_generation_prompt", &request->add_generation_prompt,
                            error);
    }
    if (status == QUILL_OK && request->kind == QUILL_OPENAI_COMPLETION) {
        status = check_completion_neutral_fields(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_limits(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_sampling(request, n_vocab, error);
    }
    if (status == QUILL_OK) {
        status = parse_stop(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_logprobs(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_stream(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_user(request, error);
    }
    if (status == QUILL_OK) {
        status = parse_bool(request, "ignore_eos", &request->ignore_eos, error);
    }
    if (status == QUILL_OK) {
        status = parse_metadata(request, error);
    }
    return status;
}

/* Finds what json-c's strict mode still lets through in the n_bytes of a parsed body: raw
 * control characters inside strings, NaN and Infinity, numbers that end with a point, and the
 * escape \u0000. Quill rejects a NUL inside a string, because model names, stop strings and
 * templates are C strings that would silently end there. Writes the problem into problem and
 * returns its byte offset, or returns -1 when there is none. */
static int64_t find_non_json(const char *body, size_t n_bytes, char *problem,
                             size_t problem_bytes) {
    bool is_in_string = false;
    for (size_t i = 0; i < n_bytes; i++) {
        char c = body[i];
        if (is_in_string) {
            if ((unsigned char)c < 0x20) {
                snprintf(problem, problem_bytes,
                         "a raw control character 0x%02x inside a string; escape it as \\u%04x",
                         (unsigned)c, (unsigned)c);
                return (int64_t)i;
            }
            if (c == '"') {
                is_in_string = false;
            } else if (c == '\\') {
                if (i + 5 < n_bytes && memcmp(body + i + 1, "u0000", 5) == 0) {
                    snprintf(problem, problem_bytes,
                             "the escape \\u0000 (a NUL character), which Quill does not accept "
                             "inside a string; remove it");
                    return (int64_t)i;
                }
                i++; /* the escaped character cannot end the string */
            }
            continue;
        }
        if (c == '"') {
            is_in_string = true;
        } else if (c == '.' && (i + 1 >= n_bytes || !is_digit(body[i + 1]))) {
            snprintf(problem, problem_bytes, "a number that ends with '.'");
            return (int64_t)i;
        } else if (is_letter(c)) {
            size_t n = 1;
            while (i + n < n_bytes && is_letter(body[i + n])) {
                n++;
            }
            bool is_literal = (n == 4 && (memcmp(body + i, "true", 4) == 0 ||
                                          memcmp(body + i, "null", 4) == 0)) ||
                              (n == 5 && memcmp(body + i, "false", 5) == 0);
            bool is_exponent = n == 1 && (c == 'e' || c == 'E') && i > 0 && is_digit(body[i - 1]);
            if (!is_literal && !is_exponent) {
                snprintf(problem, problem_bytes, "'%.*s', which is not a JSON value",
                         (int)(n < 16 ? n : 16), body + i);
                return (int64_t)i;
            }
            i += n - 1;
        }
    }
    return -1;
}

quill_status quill__openai_parse_json_object(const char *body, size_t n_bytes,
                                             struct json_object **out, quill_http_error *error) {
    *out = NULL;
    if (n_bytes > INT32_MAX) {
        quill__http_error_set(error, 413, NULL, "request_too_large",
                              "the request body of %zu bytes is too large", n_bytes);
        return QUILL_ERR_INVALID_ARG;
    }

    /* Strict parsing with UTF-8 validation, so every string handed on is valid UTF-8. */
    json_tokener *tokener = json_tokener_new();
    if (tokener == NULL) {
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for the JSON parser");
        return QUILL_ERR_NOMEM;
    }
    json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    bool is_blank = true;
    for (size_t i = 0; i < n_bytes && is_blank; i++) {
        is_blank = body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t';
    }
    struct json_object *root = NULL;
    enum json_tokener_error parse_error = json_tokener_success;
    size_t n_parsed = 0;
    if (!is_blank) {
        root = json_tokener_parse_ex(tokener, body, (int)n_bytes);
        parse_error = json_tokener_get_error(tokener);
        n_parsed = json_tokener_get_parse_end(tokener);
    }
    /* A bare literal or number at the very end (such as "null") stays open until json-c reads
     * a terminator, so one NUL byte ends the input. A body cut inside a string or an object
     * still reports continue. */
    if (!is_blank && root == NULL && parse_error == json_tokener_continue) {
        root = json_tokener_parse_ex(tokener, "", 1);
        parse_error = json_tokener_get_error(tokener);
        if (parse_error != json_tokener_success) {
            parse_error = json_tokener_continue;
        }
    }
    json_tokener_free(tokener);

    if (is_blank) {
        quill__http_error_set(error, 400, NULL, "invalid_json",
                              "the request body is empty; send one JSON object");
        return QUILL_ERR_INVALID_ARG;
    }
    bool has_trailing = false;
    for (size_t i = n_parsed; root != NULL && i < n_bytes; i++) {
        has_trailing = has_trailing || (body[i] != ' ' && body[i] != '\n' && body[i] != '\r' &&
                                        body[i] != '\t');
    }
    bool is_null = root == NULL && parse_error == json_tokener_success;
    if (!is_null && (root == NULL || parse_error != json_tokener_success || has_trailing)) {
        quill__http_error_set(error, 400, NULL, "invalid_json",
                              "the request body is not valid JSON (%s at byte %zu); send one JSON "
                              "object",
                              parse_error == json_tokener_continue
                                  ? "the body ends inside a value"
                              : parse_error != json_tokener_success
                                  ? json_tokener_error_desc(parse_error)
                                  : "unexpected data after the value",
                              n_parsed);
        json_object_put(root);
        return QUILL_ERR_INVALID_ARG;
    }
    char problem[128];
    int64_t at = find_non_json(body, n_parsed, problem, sizeof(problem));
    if (at >= 0) {
        quill__http_error_set(error, 400, NULL, "invalid_json",
                              "the request body is not valid JSON (%s, at byte %lld); send one "
                              "JSON object",
                              problem, (long long)at);
        json_object_put(root);
        return QUILL_ERR_INVALID_ARG;
    }
    if (is_null || !json_object_is_type(root, json_type_object)) {
        quill__http_error_set(error, 400, NULL, "invalid_json",
                              "the request body must be a JSON object, not %s",
                              is_null ? "null" : json_type_to_name(json_object_get_type(root)));
        json_object_put(root);
        return QUILL_ERR_INVALID_ARG;
    }
    *out = root;
    return QUILL_OK;
}

quill_status quill__openai_request_parse(const char *body, size_t n_bytes, quill_openai_kind kind,
                                         int32_t n_vocab, quill_openai_request *out,
                                         quill_http_error *error) {
    memset(out, 0, sizeof(*out));
    out->kind = kind == QUILL_OPENAI_TEMPLATE ? QUILL_OPENAI_CHAT : kind;
    out->is_template_only = kind == QUILL_OPENAI_TEMPLATE;
    out->add_generation_prompt = true;
    out->body = body;
    out->n_body_bytes = n_bytes;
    out->max_tokens = -1;
    out->parallel_tool_calls = -1;
    out->n_choices = 1;
    out->sampling = quill_sampling_params_default();

    quill_status status = quill__openai_parse_json_object(body, n_bytes, &out->root, error);
    if (status == QUILL_OK) {
        status = parse_fields(out, n_vocab, error);
    }
    out->body = NULL;
    out->n_body_bytes = 0;
    if (status != QUILL_OK) {
        quill__openai_request_release(out);
    }
    return status;
}

void quill__openai_request_release(quill_openai_request *request) {
    json_object_put(request->root);
    quill__free(request->prompt_tokens);
    quill__free(request->logit_biases);
    memset(request, 0, sizeof(*request));
}
