/*
 * A completion's life: prompt, submission, events, output. See completion.h.
 *
 * Usage of a request with n choices follows OpenAI: the prompt is counted once, although each
 * choice is its own engine request, and completion_tokens is the sum over the choices.
 * prompt_tokens and cached_tokens are those of the first choice that reported usage (choice 0
 * unless it never finished). The later choices usually find the prompt in the prefix cache, and
 * that reuse is not billed. Cost is computed from these counts, and the metrics record carries
 * the same counts, so /metrics agrees with the usage returned.
 *
 * TTFT (usage.timings.ttft_ms and the metrics) is arrival until the first content reached the
 * client side:
 * - streamed replies: the moment the first SSE chunk with content text was handed to the
 *   socket (quill__completion_mark_content_sent);
 * - non-streamed replies, whose body is written only at the end: the moment the engine
 *   released the first content text of any choice (quill_usage.first_text_us), or sampled its
 *   first token when no text came (first_token_us). This is what `quill run` reports.
 */
#include "server/completion.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "quill/tokenizer.h"
#include "server/openai_response.h"
#include "server/sse.h"
#include "server/tool_calls.h"

typedef struct completion_choice {
    quill_request *request;          /* NULL once destroyed */
    bool is_finished;                /* the final event was read */
    quill_finish_reason finish_reason;
    quill_status status;             /* QUILL_OK unless the engine failed the choice */
    char error_message[256];
    quill_usage usage;               /* from the final event */
    quill_strbuf text;               /* non-streamed: every released byte */
    quill_generated_token *tokens;   /* logprobs not yet written: all (non-streamed) or since
                                        the last chunk with text (streamed) */
    int32_t n_tokens;
    int32_t tokens_capacity;
    bool has_sent_role;              /* streamed chat: the role chunk went out */
    int64_t text_offset_bytes;       /* completions logprobs: bytes of text before tokens */
    quill_tool_call_parser tool_parser; /* chat with tools: splits the text into content and
                                           calls; initialized when the completion's
                                           tool_call_format is not NONE */
    size_t n_calls_written;          /* streams: tool calls already sent in chunks */
} completion_choice;

struct quill_completion {
    quill_server *server;
    quill_openai_request request;    /* owned */
    const quill_tokenizer *tokenizer;
    char id[48];                     /* "chatcmpl-..." or "cmpl-..." */
    int64_t created_unix_seconds;
    int64_t arrival_us;              /* monotonic */
    int64_t first_content_us;        /* monotonic end of TTFT (see the top of this file); 0
                                        until known */
    size_t pending_content_offset;   /* see quill__completion_pending_content_offset */
    int32_t n_choices;
    int32_t n_finished;
    completion_choice *choices;      /* [n_choices] */
    bool has_written_end;            /* streams: usage and [DONE] are written */
    int64_t last_content_write_us;   /* streams: monotonic time the last content was handed to
                                        the socket; 0 before the first */
    int64_t n_tokens_unwritten;      /* streams: tokens of every choice whose events reached the
                                        stream since the last content write */
    bool has_unwritten_content;      /* streams: text was added since the last content write */
    int64_t *inter_token_us;         /* streams: gaps between content writes, one per token (see
                                        quill__completion_mark_stream_written) */
    size_t n_inter_token;            /* entries in inter_token_us */
    size_t inter_token_capacity;     /* allocated entries of inter_token_us */
    bool has_reserved;               /* n_choices slots are counted as in flight */
    bool has_failed;                 /* a choice finished with an error */
    quill_tool_call_format tool_call_format; /* NONE unless the chat request has tools, its
                                                tool_choice is not "none" and the template's
                                                format is known */
};

static const char *finish_reason_text(quill_finish_reason reason) {
    return reason == QUILL_FINISH_LENGTH ? "length" : "stop";
}

/* The finish reason a choice reports: "tool_calls" when its text contained a call. */
static const char *choice_finish_reason(const completion_choice *choice) {
    return choice->tool_parser.n_calls > 0 ? "tool_calls"
                                           : finish_reason_text(choice->finish_reason);
}

/* True for tool_choice "none". The request parser accepts only "auto" and "none". */
static bool is_tool_choice_none(const quill_openai_request *request) {
    return request->tool_choice != NULL &&
           strcmp(json_object_get_string(request->tool_choice), "none") == 0;
}

/* True when the chat request sent tools and left tool_choice at "auto", so the reply's calls
 * are parsed. */
static bool wants_tool_calls(const quill_openai_request *request) {
    bool has_tools = request->tools != NULL && json_object_array_length(request->tools) > 0;
    return request->kind == QUILL_OPENAI_CHAT && has_tools && !is_tool_choice_none(request);
}

static quill_status add_special_range(quill_special_range **ranges, size_t *n_ranges,
                                      const quill_chat_segment *segment) {
    /* Adjacent template segments merge, so a special token split across two literals matches. */
    if (*n_ranges > 0) {
        quill_special_range *last = &(*ranges)[*n_ranges - 1];
        if (last->offset + last->n_bytes == segment->offset) {
            last->n_bytes += segment->n_bytes;
            return QUILL_OK;
        }
    }
    (*ranges)[*n_ranges].offset = segment->offset;
    (*ranges)[*n_ranges].n_bytes = segment->n_bytes;
    (*n_ranges)++;
    return QUILL_OK;
}

/* Tokenizes the rendered prompt. A leading BOS is added when the vocabulary expects one and the
 * template did not write it. */
static quill_status tokenize_rendered(const quill_tokenizer *tokenizer,
                                      const quill_chat_rendered *rendered, int32_t **tokens,
                                      int64_t *n_tokens) {
    quill_special_range *ranges = NULL;
    size_t n_ranges = 0;
    int32_t *encoded = NULL;
    int64_t n_encoded = 0;
    quill_status status = QUILL_OK;

    ranges = quill__malloc_array(rendered->n_segments > 0 ? rendered->n_segments : 1,
                                 sizeof(*ranges));
    if (ranges == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for %zu segments",
                                 rendered->n_segments);
        goto cleanup;
    }
    for (size_t i = 0; i < rendered->n_segments; i++) {
        if (rendered->segments[i].is_template_text && rendered->segments[i].n_bytes > 0) {
            add_special_range(&ranges, &n_ranges, &rendered->segments[i]);
        }
    }
    status = quill_tokenizer_encode_ranges(tokenizer, rendered->text, rendered->n_bytes, 0, ranges,
                                           n_ranges, &encoded, &n_encoded);
    if (status != QUILL_OK) {
        goto cleanup;
    }

    int32_t bos = quill_tokenizer_bos(tokenizer);
    bool needs_bos = quill_tokenizer_adds_bos(tokenizer) && bos >= 0 &&
                     (n_encoded == 0 || encoded[0] != bos);
    *tokens = quill__malloc_array((size_t)n_encoded + 1, sizeof(int32_t));
    if (*tokens == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for %lld tokens",
                                 (long long)n_encoded);
        goto cleanup;
    }
    if (needs_bos) {
        (*tokens)[0] = bos;
    }
    memcpy(*tokens + (needs_bos ? 1 : 0), encoded, (size_t)n_encoded * sizeof(int32_t));
    *n_tokens = n_encoded + (needs_bos ? 1 : 0);

cleanup:
    quill_tokens_free(encoded);
    quill__free(ranges);
    return status;
}

/* Builds the extra template variables: chat_template_kwargs, tool_choice and
 * parallel_tool_calls, or NULL when there are none. The parser keeps kwargs from naming the
 * other two. */
static struct json_object *template_extra_vars(const quill_openai_request *request) {
    if (request->tool_choice == NULL && request->parallel_tool_calls < 0 &&
        request->template_kwargs == NULL) {
        return NULL;
    }
    struct json_object *vars = json_object_new_object();
    if (vars == NULL) {
        return NULL;
    }
    if (request->template_kwargs != NULL) {
        json_object_object_foreach(request->template_kwargs, key, value) {
            json_object_object_add(vars, key, json_object_get(value));
        }
    }
    if (request->tool_choice != NULL) {
        json_object_object_add(vars, "tool_choice", json_object_get(request->tool_choice));
    }
    if (request->parallel_tool_calls >= 0) {
        json_object_object_add(vars, "parallel_tool_calls",
                               json_object_new_boolean(request->parallel_tool_calls == 1));
    }
    return vars;
}

quill_status quill__completion_render_chat(quill_server *server,
                                           const quill_openai_request *request,
                                           int32_t **tokens, int64_t *n_tokens,
                                           char **rendered_text, quill_http_error *error) {
    *tokens = NULL;
    *n_tokens = 0;
    if (rendered_text != NULL) {
        *rendered_text = NULL;
    }
    const quill_tokenizer *tokenizer = quill_model_tokenizer(server->model);
    struct json_object *messages = NULL;
    struct json_object *extra_vars = NULL;
    quill_chat_rendered rendered = {0};

    /* Normalize: developer becomes system, parts are joined, tool-call arguments parsed. */
    bool keep_parts = quill_chat_template_uses_content_parts(server->chat_template);
    quill_status status = quill_chat_messages_normalize(request->messages, keep_parts, &messages);
    if (status != QUILL_OK) {
        quill__http_error_from_status(error, status, "messages");
        goto cleanup;
    }

    /* Render with the vocabulary's BOS and EOS texts, ending with the assistant's header unless
     * /apply-template asked for add_generation_prompt false. */
    quill_chat_render_params params = quill_chat_render_params_default();
    int32_t bos = quill_tokenizer_bos(tokenizer);
    int32_t eos = quill_tokenizer_eos(tokenizer);
    extra_vars = template_extra_vars(request);
    params.messages = messages;
    /* With tool_choice "none" the model is not shown the tools, so it does not try to call
     * them. */
    params.tools = is_tool_choice_none(request) ? NULL : request->tools;
    params.extra_vars = extra_vars;
    params.bos_token = bos >= 0 ? quill_tokenizer_token_text(tokenizer, bos) : NULL;
    params.eos_token = eos >= 0 ? quill_tokenizer_token_text(tokenizer, eos) : NULL;
    params.add_generation_prompt = request->add_generation_prompt;
    params.now_unix_seconds = -1;
    status = quill_chat_template_render(server->chat_template, &params, &rendered);
    if (status != QUILL_OK) {
        /* raise_exception and exceeded limits both come from what the request sent. */
        quill__http_error_set(error, 400, "messages", NULL, "the chat template failed: %s",
                              quill_error_message());
        status = QUILL_ERR_INVALID_ARG;
        goto cleanup;
    }

    status = tokenize_rendered(tokenizer, &rendered, tokens, n_tokens);
    if (status != QUILL_OK) {
        quill__http_error_from_status(error, status, "messages");
        goto cleanup;
    }
    if (rendered_text != NULL) {
        *rendered_text = quill__strndup(rendered.text, rendered.n_bytes);
        if (*rendered_text == NULL) {
            quill__http_error_set(error, 500, NULL, NULL, "out of memory for the prompt");
            status = QUILL_ERR_NOMEM;
            quill_tokens_free(*tokens);
            *tokens = NULL;
            *n_tokens = 0;
        }
    }

cleanup:
    quill_chat_rendered_release(&rendered);
    json_object_put(extra_vars);
    json_object_put(messages);
    return status;
}

/* Produces the prompt's token ids for either kind of request. */
static quill_status prepare_prompt(quill_completion *completion, int32_t **tokens,
                                   int64_t *n_tokens, quill_http_error *error) {
    quill_openai_request *request = &completion->request;
    if (request->kind == QUILL_OPENAI_CHAT) {
        return quill__completion_render_chat(completion->server, request, tokens, n_tokens, NULL,
                                             error);
    }
    if (request->prompt_tokens != NULL) {
        *tokens = quill__malloc_array((size_t)request->n_prompt_tokens, sizeof(int32_t));
        if (*tokens == NULL) {
            quill__http_error_set(error, 500, NULL, NULL, "out of memory for the prompt");
            return QUILL_ERR_NOMEM;
        }
        memcpy(*tokens, request->prompt_tokens, (size_t)request->n_prompt_tokens * sizeof(int32_t));
        *n_tokens = request->n_prompt_tokens;
        return QUILL_OK;
    }

    /* A raw prompt is the user's own text, control tokens included, as in llama.cpp. */
    int32_t *encoded = NULL;
    int64_t n_encoded = 0;
    quill_status status = quill_tokenizer_encode(
        completion->tokenizer, request->prompt_text, request->n_prompt_text_bytes,
        QUILL_TOKENIZE_ADD_SPECIAL | QUILL_TOKENIZE_PARSE_SPECIAL, &encoded, &n_encoded);
    if (status != QUILL_OK) {
        quill__http_error_from_status(error, status, "prompt");
        return status;
    }
    if (n_encoded == 0) {
        quill_tokens_free(encoded);
        quill__http_error_set(error, 400, "prompt", NULL, "'prompt' is empty after tokenizing");
        return QUILL_ERR_INVALID_ARG;
    }
    *tokens = quill__malloc_array((size_t)n_encoded, sizeof(int32_t));
    if (*tokens == NULL) {
        quill_tokens_free(encoded);
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for the prompt");
        return QUILL_ERR_NOMEM;
    }
    memcpy(*tokens, encoded, (size_t)n_encoded * sizeof(int32_t));
    quill_tokens_free(encoded);
    *n_tokens = n_encoded;
    return QUILL_OK;
}

/* Rejects prompts that leave no room for max_tokens within the context, and fills in the
 * default max_tokens (up to the context). */
static quill_status check_context(quill_completion *completion, int64_t n_prompt_tokens,
                                  quill_http_error *error) {
    int64_t n_ctx = quill_engine_n_ctx(completion->server->engine);
    int64_t max_tokens = completion->request.max_tokens;
    const char *param = completion->request.kind == QUILL_OPENAI_CHAT ? "messages" : "prompt";
    bool is_too_long = max_tokens > 0 ? n_prompt_tokens + max_tokens > n_ctx
                                      : n_prompt_tokens >= n_ctx;
    if (is_too_long && max_tokens > 0) {
        quill__http_error_set(error, 400, param, "context_length_exceeded",
                              "this server's context length is %lld tokens, but the prompt has "
                              "%lld tokens and max_tokens is %lld; shorten the prompt or lower "
                              "max_tokens",
                              (long long)n_ctx, (long long)n_prompt_tokens, (long long)max_tokens);
        return QUILL_ERR_INVALID_ARG;
    }
    if (is_too_long) {
        quill__http_error_set(error, 400, param, "context_length_exceeded",
                              "this server's context length is %lld tokens, but the prompt has "
                              "%lld tokens, which leaves no room for output; shorten the prompt",
                              (long long)n_ctx, (long long)n_prompt_tokens);
        return QUILL_ERR_INVALID_ARG;
    }
    if (max_tokens <= 0) {
        completion->request.max_tokens = n_ctx - n_prompt_tokens;
    }
    return QUILL_OK;
}

/* Reserves n engine slots under the server-side limit: 429 beyond it, and 400 when n alone
 * exceeds the limit, which no retry would change. */
static quill_status reserve_slots(quill_server *server, int32_t n_slots, quill_http_error *error) {
    if (server->max_requests_in_flight > 0 && n_slots > server->max_requests_in_flight) {
        quill__http_error_set(error, 400, "n", NULL,
                              "'n' is %d but this server runs or queues at most %d generations "
                              "at once (its --parallel plus --queue-limit); lower 'n'",
                              n_slots, server->max_requests_in_flight);
        return QUILL_ERR_INVALID_ARG;
    }
    pthread_mutex_lock(&server->mutex);
    int64_t in_flight = server->stats.n_generations_in_flight;
    bool is_full = server->max_requests_in_flight > 0 &&
                   in_flight + n_slots > server->max_requests_in_flight;
    if (!is_full) {
        server->stats.n_generations_in_flight += n_slots;
        server->stats.n_generations_started += n_slots;
    }
    pthread_mutex_unlock(&server->mutex);
    if (is_full) {
        quill__http_error_set(error, 429, NULL, "rate_limit_exceeded",
                              "all %d generation slots and queue places are busy (%lld in "
                              "flight, %d requested); retry after the Retry-After delay",
                              server->max_requests_in_flight, (long long)in_flight, n_slots);
        error->retry_after_s = 1;
        return QUILL_ERR_BUSY;
    }
    return QUILL_OK;
}

static quill_status submit_choices(quill_completion *completion, const int32_t *tokens,
                                   int64_t n_tokens, quill_waker *waker,
                                   quill_http_error *error) {
    quill_openai_request *request = &completion->request;
    for (int32_t i = 0; i < completion->n_choices; i++) {
        quill_request_params params = quill_request_params_default();
        params.prompt_tokens = tokens;
        params.n_prompt_tokens = n_tokens;
        params.max_tokens = request->max_tokens;
        params.sampling = request->sampling;
        /* Choices with a fixed seed still differ from each other, reproducibly. */
        params.sampling.seed = request->sampling.seed + (uint64_t)i;
        for (int32_t s = 0; s < request->n_stop; s++) {
            params.stop_strings[s] = request->stop[s];
        }
        params.n_stop_strings = request->n_stop;
        params.ignore_eos = request->ignore_eos;
        params.wants_logprobs = request->wants_logprobs;
        params.n_top_logprobs = request->n_top_logprobs;
        /* Llama 3's <|python_tag|> and Mistral's [TOOL_CALLS] are control tokens, which the
         * detokenizer leaves out unless asked. The tool-call parser needs them to tell the
         * content before a call from the call. End-of-generation tokens never reach the text. */
        params.render_special = completion->tool_call_format == QUILL_TOOL_CALL_FORMAT_LLAMA3 ||
                                completion->tool_call_format == QUILL_TOOL_CALL_FORMAT_MISTRAL;
        params.arrival_us = completion->arrival_us;
        params.on_event = quill__waker_on_event;
        params.user_data = waker;

        quill_status status = quill_engine_submit(completion->server->engine, &params,
                                                  &completion->choices[i].request);
        if (status != QUILL_OK) {
            quill__http_error_from_status(error, status, NULL);
            if (status == QUILL_ERR_CANCELLED) {
                quill__http_error_set(error, 503, NULL, "shutting_down",
                                      "the server is shutting down; retry on another server");
            }
            return status;
        }
    }
    return QUILL_OK;
}

/* Prepares one tool-call parser per choice, in the template's format, when the request wants
 * calls parsed. */
static void start_tool_parsers(quill_completion *completion) {
    quill_server *server = completion->server;
    if (!wants_tool_calls(&completion->request)) {
        return;
    }
    completion->tool_call_format = server->tool_call_format;
    QUILL_LOG_DEBUG("server", "tool calls requested", "id=%s format=%s", completion->id,
                    quill__tool_call_format_name(completion->tool_call_format));
    if (completion->tool_call_format == QUILL_TOOL_CALL_FORMAT_NONE) {
        return;
    }
    /* Call ids reuse the completion id's unique hex digits, after "chatcmpl-". */
    const char *hex = strchr(completion->id, '-');
    bool is_parallel = completion->request.parallel_tool_calls != 0;
    for (int32_t i = 0; i < completion->n_choices; i++) {
        char stem[48];
        snprintf(stem, sizeof(stem), "%.24s_%d", hex != NULL ? hex + 1 : completion->id, i);
        quill__tool_call_parser_init(&completion->choices[i].tool_parser,
                                     completion->tool_call_format, completion->request.tools,
                                     stem, is_parallel);
    }
}

static void format_id(quill_completion *completion) {
    uint64_t counter = atomic_fetch_add(&completion->server->next_id, 1);
    uint64_t stamp = (uint64_t)quill__clock_monotonic_ns();
    snprintf(completion->id, sizeof(completion->id), "%s-%016" PRIx64 "%08" PRIx64,
             completion->request.kind == QUILL_OPENAI_CHAT ? "chatcmpl" : "cmpl",
             stamp ^ (counter << 40), counter);
}

quill_status quill__completion_start(quill_server *server, quill_openai_request *request,
                                     int64_t arrival_us, quill_waker *waker,
                                     quill_completion **out, quill_http_error *error) {
    *out = NULL;
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    quill_status status = QUILL_OK;
    quill_completion *completion = quill__calloc(1, sizeof(*completion));
    if (completion == NULL) {
        quill__openai_request_release(request);
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for a completion");
        return QUILL_ERR_NOMEM;
    }
    completion->server = server;
    completion->request = *request;
    memset(request, 0, sizeof(*request));
    completion->tokenizer = quill_model_tokenizer(server->model);
    completion->arrival_us = arrival_us;
    completion->created_unix_seconds = quill__clock_unix_seconds();
    completion->pending_content_offset = SIZE_MAX;
    completion->n_choices = completion->request.n_choices;
    format_id(completion);

    completion->choices = quill__calloc((size_t)completion->n_choices, sizeof(completion_choice));
    if (completion->choices == NULL) {
        quill__http_error_set(error, 500, NULL, NULL, "out of memory for %d choices",
                              completion->n_choices);
        status = QUILL_ERR_NOMEM;
        goto cleanup;
    }
    for (int32_t i = 0; i < completion->n_choices; i++) {
        quill__strbuf_init(&completion->choices[i].text);
    }
    start_tool_parsers(completion);

    status = prepare_prompt(completion, &tokens, &n_tokens, error);
    if (status == QUILL_OK) {
        status = check_context(completion, n_tokens, error);
    }
    if (status == QUILL_OK) {
        status = reserve_slots(server, completion->n_choices, error);
    }
    if (status != QUILL_OK) {
        goto cleanup;
    }
    completion->has_reserved = true;
    status = submit_choices(completion, tokens, n_tokens, waker, error);

cleanup:
    quill__free(tokens);
    if (status != QUILL_OK) {
        quill__completion_destroy(completion, false);
        return status;
    }
    *out = completion;
    return QUILL_OK;
}

bool quill__completion_is_stream(const quill_completion *completion) {
    return completion->request.is_stream;
}

size_t quill__completion_pending_content_offset(const quill_completion *completion) {
    return completion->pending_content_offset;
}

void quill__completion_mark_content_sent(quill_completion *completion, int64_t now_us) {
    if (completion->first_content_us == 0) {
        completion->first_content_us = now_us;
    }
    completion->pending_content_offset = SIZE_MAX;
}

/* Appends n_gaps gaps that share gap_us evenly, the remainder going to the first. Drops them
 * when memory runs out, because a missing latency sample is better than a failed response. */
static void add_inter_token_gaps(quill_completion *completion, int64_t gap_us, int64_t n_gaps) {
    size_t n_needed = completion->n_inter_token + (size_t)n_gaps;
    if (n_needed > completion->inter_token_capacity) {
        size_t capacity = completion->inter_token_capacity > 0
                              ? completion->inter_token_capacity * 2
                              : 64;
        while (capacity < n_needed) {
            capacity *= 2;
        }
        int64_t *grown = quill__realloc_array(completion->inter_token_us, capacity,
                                              sizeof(*grown));
        if (grown == NULL) {
            return;
        }
        completion->inter_token_us = grown;
        completion->inter_token_capacity = capacity;
    }
    for (int64_t i = 0; i < n_gaps; i++) {
        int64_t share_us = gap_us / n_gaps + (i == 0 ? gap_us % n_gaps : 0);
        completion->inter_token_us[completion->n_inter_token++] = share_us;
    }
}

void quill__completion_mark_stream_written(quill_completion *completion, int64_t now_us) {
    if (!completion->has_unwritten_content) {
        return;
    }
    /* The first write has no earlier write to measure from; TTFT covers it. */
    if (completion->last_content_write_us > 0) {
        int64_t gap_us = now_us - completion->last_content_write_us;
        int64_t n_gaps = completion->n_tokens_unwritten > 0 ? completion->n_tokens_unwritten : 1;
        add_inter_token_gaps(completion, gap_us > 0 ? gap_us : 0, n_gaps);
    }
    completion->last_content_write_us = now_us;
    completion->n_tokens_unwritten = 0;
    completion->has_unwritten_content = false;
}

static quill_status keep_tokens(completion_choice *choice, const quill_generated_token *tokens,
                                int32_t n_tokens) {
    if (n_tokens == 0) {
        return QUILL_OK;
    }
    if (choice->n_tokens + n_tokens > choice->tokens_capacity) {
        int32_t capacity = choice->tokens_capacity > 0 ? choice->tokens_capacity * 2 : 16;
        while (capacity < choice->n_tokens + n_tokens) {
            capacity *= 2;
        }
        quill_generated_token *grown = quill__realloc_array(choice->tokens, (size_t)capacity,
                                                            sizeof(*grown));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for %d logprobs",
                                   capacity);
        }
        choice->tokens = grown;
        choice->tokens_capacity = capacity;
    }
    memcpy(choice->tokens + choice->n_tokens, tokens, (size_t)n_tokens * sizeof(*tokens));
    choice->n_tokens += n_tokens;
    return QUILL_OK;
}

/* Appends a response or stream chunk up to and including "choices":[ . chat_object is the
 * "object" value of a chat reply ("chat.completion" or "chat.completion.chunk"), and completions
 * use "text_completion" for both. */
static void append_response_head(quill_completion *completion, const char *chat_object,
                                 quill_strbuf *json) {
    bool is_chat = completion->request.kind == QUILL_OPENAI_CHAT;
    quill__strbuf_appendf(json, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                          completion->id, is_chat ? chat_object : "text_completion",
                          (long long)completion->created_unix_seconds);
    quill__openai_append_text(json, completion->server->model_id,
                              strlen(completion->server->model_id));
    quill__strbuf_append_cstr(json, ",\"choices\":[");
}

static void append_logprobs(quill_completion *completion, completion_choice *choice,
                            quill_strbuf *json) {
    if (!completion->request.wants_logprobs) {
        quill__strbuf_append_cstr(json, "null");
        return;
    }
    if (completion->request.kind == QUILL_OPENAI_CHAT) {
        quill__strbuf_append_cstr(json, "{\"content\":[");
        quill__openai_append_chat_logprobs(json, completion->tokenizer, choice->tokens,
                                           choice->n_tokens, 0);
        quill__strbuf_append_cstr(json, "],\"refusal\":null}");
    } else {
        quill__openai_append_completion_logprobs(json, completion->tokenizer, choice->tokens,
                                                 choice->n_tokens, &choice->text_offset_bytes);
    }
    choice->n_tokens = 0;
}

/* Writes one SSE chunk for a choice: text (may be empty) and, when final, the finish reason. */
static void write_chunk(quill_completion *completion, int32_t index, const char *text,
                        size_t n_text_bytes, const char *finish_reason, quill_strbuf *stream) {
    completion_choice *choice = &completion->choices[index];
    bool is_chat = completion->request.kind == QUILL_OPENAI_CHAT;
    quill_strbuf json;
    quill__strbuf_init(&json);
    append_response_head(completion, "chat.completion.chunk", &json);
    quill__strbuf_appendf(&json, "{\"index\":%d,", index);
    if (is_chat) {
        quill__strbuf_append_cstr(&json, "\"delta\":{");
        if (!choice->has_sent_role) {
            quill__strbuf_append_cstr(&json, "\"role\":\"assistant\"");
            choice->has_sent_role = true;
            if (finish_reason == NULL || n_text_bytes > 0) {
                quill__strbuf_append_char(&json, ',');
            }
        }
        if (finish_reason == NULL || n_text_bytes > 0) {
            quill__strbuf_append_cstr(&json, "\"content\":");
            quill__openai_append_text(&json, text, n_text_bytes);
        }
        quill__strbuf_append_char(&json, '}');
    } else {
        quill__strbuf_append_cstr(&json, "\"text\":");
        quill__openai_append_text(&json, text, n_text_bytes);
    }
    quill__strbuf_append_cstr(&json, ",\"logprobs\":");
    append_logprobs(completion, choice, &json);
    if (finish_reason != NULL) {
        quill__strbuf_appendf(&json, ",\"finish_reason\":\"%s\"}]}", finish_reason);
    } else {
        quill__strbuf_append_cstr(&json, ",\"finish_reason\":null}]}");
    }

    if (n_text_bytes > 0 && completion->first_content_us == 0 &&
        completion->pending_content_offset == SIZE_MAX) {
        completion->pending_content_offset = stream->length;
    }
    quill__sse_append_event(stream, json.data, json.length);
    quill__strbuf_release(&json);
}

/* Writes one SSE chunk with the tool calls of a choice not yet sent, each whole: its index, id,
 * type, function name and arguments. */
static void write_tool_calls_chunk(quill_completion *completion, int32_t index,
                                   quill_strbuf *stream) {
    completion_choice *choice = &completion->choices[index];
    const quill_tool_call_parser *parser = &choice->tool_parser;
    quill_strbuf json;
    quill__strbuf_init(&json);
    append_response_head(completion, "chat.completion.chunk", &json);
    quill__strbuf_appendf(&json, "{\"index\":%d,\"delta\":{", index);
    if (!choice->has_sent_role) {
        quill__strbuf_append_cstr(&json, "\"role\":\"assistant\",");
        choice->has_sent_role = true;
    }
    quill__strbuf_append_cstr(&json, "\"tool_calls\":");
    quill__tool_calls_append_json(&json, parser->calls, choice->n_calls_written,
                                  parser->n_calls - choice->n_calls_written, true);
    quill__strbuf_append_cstr(&json, "},\"logprobs\":");
    append_logprobs(completion, choice, &json);
    quill__strbuf_append_cstr(&json, ",\"finish_reason\":null}]}");
    choice->n_calls_written = parser->n_calls;

    /* A call is the reply's first content when no text came before it. */
    if (completion->first_content_us == 0 && completion->pending_content_offset == SIZE_MAX) {
        completion->pending_content_offset = stream->length;
    }
    quill__sse_append_event(stream, json.data, json.length);
    quill__strbuf_release(&json);
}

/* Streams an event's text through the choice's tool-call parser. Text known not to be a call
 * goes out as content, each call completed as a tool_calls chunk, and the final event flushes
 * what the parser held back. */
static quill_status stream_tool_text(quill_completion *completion, int32_t index,
                                     const quill_request_event *event, quill_strbuf *stream) {
    completion_choice *choice = &completion->choices[index];
    quill_strbuf released;
    quill__strbuf_init(&released);
    quill_status status = quill__tool_call_parser_feed(&choice->tool_parser, event->text,
                                                       event->n_text_bytes, &released);
    if (status == QUILL_OK && event->is_final) {
        status = quill__tool_call_parser_finish(&choice->tool_parser, &released);
    }
    if (status == QUILL_OK && (released.length > 0 || !choice->has_sent_role)) {
        write_chunk(completion, index, released.data != NULL ? released.data : "",
                    released.length, NULL, stream);
    }
    if (status == QUILL_OK && choice->tool_parser.n_calls > choice->n_calls_written) {
        write_tool_calls_chunk(completion, index, stream);
    }
    quill__strbuf_release(&released);
    return status;
}

/* Fills error for a choice that failed in the engine. A request that the engine finds invalid only
 * while generating is the client's error: a logit_bias that bans every token the model can
 * produce. One cancelled by a forced shutdown gets the shutdown's 503, so that the client retries
 * elsewhere. Others are 500. With several choices, the message names the failed one. */
static void choice_error(const quill_completion *completion, int32_t index,
                         quill_http_error *error) {
    const completion_choice *choice = &completion->choices[index];
    char prefix[32] = "";
    if (completion->n_choices > 1) {
        snprintf(prefix, sizeof(prefix), "choice %d: ", (int)index);
    }
    if (choice->status == QUILL_ERR_CANCELLED) {
        quill__http_error_set(error, 503, NULL, "shutting_down", "%s%s", prefix,
                              choice->error_message);
        return;
    }
    int status_code = choice->status == QUILL_ERR_INVALID_ARG ? 400 : 500;
    quill__http_error_set(error, status_code, NULL, NULL, "%s%s", prefix, choice->error_message);
}

static void write_error_event(const quill_completion *completion, int32_t index,
                              quill_strbuf *stream) {
    quill_http_error error;
    quill_strbuf json;
    quill__strbuf_init(&json);
    choice_error(completion, index, &error);
    quill__http_error_write_json(&error, &json);
    /* The error writer ends with a newline meant for plain bodies; SSE frames its own lines. */
    if (json.length > 0 && json.data[json.length - 1] == '\n') {
        json.length--;
    }
    quill__sse_append_event(stream, json.data, json.length);
    quill__strbuf_release(&json);
}

/* Sums the usage of every choice and prices it. */
static void total_usage(quill_completion *completion, quill_usage *total, quill_cost *cost,
                        quill_timings *timings) {
    memset(total, 0, sizeof(*total));
    bool has_prompt = false;
    for (int32_t i = 0; i < completion->n_choices; i++) {
        const quill_usage *usage = &completion->choices[i].usage;
        if (!has_prompt && usage->n_prompt_tokens > 0) {
            total->n_prompt_tokens = usage->n_prompt_tokens;
            total->n_cached_tokens = usage->n_cached_tokens;
            has_prompt = true;
        }
        total->n_completion_tokens += usage->n_completion_tokens;
    }
    if (quill__cost_compute(&completion->server->prices, total->n_prompt_tokens,
                            total->n_cached_tokens, total->n_completion_tokens,
                            cost) != QUILL_OK) {
        memset(cost, 0, sizeof(*cost));
    }

    /* Timings describe the first choice. With n > 1 the others ran alongside it. */
    quill_usage first = completion->choices[0].usage;
    quill__openai_timings_compute(&first, completion->arrival_us, completion->first_content_us,
                                  timings);
}

static void write_stream_end(quill_completion *completion, quill_strbuf *stream) {
    if (completion->request.wants_stream_usage) {
        /* Content already produced but not yet written is about to be: stamp it now. */
        if (completion->first_content_us == 0 &&
            completion->pending_content_offset != SIZE_MAX) {
            completion->first_content_us = quill__clock_monotonic_us();
        }
        quill_usage total;
        quill_cost cost;
        quill_timings timings;
        total_usage(completion, &total, &cost, &timings);
        quill_strbuf json;
        quill__strbuf_init(&json);
        append_response_head(completion, "chat.completion.chunk", &json);
        quill__strbuf_append_cstr(&json, "],");
        quill__openai_append_usage(&json, total.n_prompt_tokens, total.n_cached_tokens,
                                   total.n_completion_tokens, &cost, &timings);
        quill__strbuf_append_char(&json, '}');
        quill__sse_append_event(stream, json.data, json.length);
        quill__strbuf_release(&json);
    }
    quill__sse_append_done(stream);
    completion->has_written_end = true;
}

static void record_final(quill_completion *completion, completion_choice *choice,
                         const quill_request_event *event) {
    choice->is_finished = true;
    choice->finish_reason = event->finish_reason;
    choice->status = event->status;
    choice->usage = event->usage;
    if (event->finish_reason == QUILL_FINISH_CANCELLED && event->status == QUILL_OK) {
        choice->status = QUILL_ERR_CANCELLED;
        snprintf(choice->error_message, sizeof(choice->error_message),
                 "the engine cancelled the request (it is shutting down)");
    } else if (event->status != QUILL_OK) {
        snprintf(choice->error_message, sizeof(choice->error_message), "%s",
                 event->error_message);
    }
    completion->has_failed = completion->has_failed || choice->status != QUILL_OK;
    completion->n_finished++;
}

static quill_status handle_event(quill_completion *completion, int32_t index,
                                 const quill_request_event *event, quill_strbuf *stream) {
    completion_choice *choice = &completion->choices[index];
    quill_status status = QUILL_OK;
    if (completion->request.wants_logprobs) {
        status = keep_tokens(choice, event->tokens, event->n_tokens);
    }
    if (status != QUILL_OK) {
        return status;
    }

    if (!completion->request.is_stream) {
        if (event->n_text_bytes > 0) {
            status = quill__strbuf_append(&choice->text, event->text, event->n_text_bytes);
        }
        if (event->is_final) {
            record_final(completion, choice, event);
        }
        return status;
    }

    /* Streams: text (or a pending role) makes a chunk, and the final event makes another. */
    completion->n_tokens_unwritten += event->n_tokens;
    completion->has_unwritten_content = completion->has_unwritten_content ||
                                        event->n_text_bytes > 0;
    bool is_chat = completion->request.kind == QUILL_OPENAI_CHAT;
    if (completion->tool_call_format != QUILL_TOOL_CALL_FORMAT_NONE) {
        status = stream_tool_text(completion, index, event, stream);
    } else if (event->n_text_bytes > 0 || (is_chat && !choice->has_sent_role)) {
        write_chunk(completion, index, event->text, event->n_text_bytes, NULL, stream);
    }
    if (status != QUILL_OK) {
        return status;
    }
    if (event->is_final) {
        record_final(completion, choice, event);
        if (choice->status != QUILL_OK) {
            write_error_event(completion, index, stream);
        } else {
            write_chunk(completion, index, "", 0, choice_finish_reason(choice), stream);
        }
    }
    return stream->is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
}

quill_status quill__completion_poll(quill_completion *completion, quill_strbuf *stream,
                                    bool *is_finished) {
    quill_status status = QUILL_OK;
    for (int32_t i = 0; i < completion->n_choices && status == QUILL_OK; i++) {
        completion_choice *choice = &completion->choices[i];
        while (!choice->is_finished && status == QUILL_OK) {
            quill_request_event event;
            memset(&event, 0, sizeof(event));
            quill_status next = quill_request_next_event(choice->request, false, &event);
            if (next != QUILL_OK) {
                break; /* QUILL_ERR_BUSY: nothing pending */
            }
            status = handle_event(completion, i, &event, stream);
            quill_request_event_release(&event);
        }
    }

    bool is_done = completion->n_finished == completion->n_choices;
    if (is_done && completion->request.is_stream && !completion->has_written_end) {
        write_stream_end(completion, stream);
    }
    *is_finished = is_done;
    return status;
}

/* Non-streamed TTFT end (see the top of this file): the earliest first text of any choice, or
 * its first sampled token when it released no text; 0 when no choice produced a token. */
static int64_t first_engine_content_us(const quill_completion *completion) {
    int64_t earliest_us = 0;
    for (int32_t i = 0; i < completion->n_choices; i++) {
        const quill_usage *usage = &completion->choices[i].usage;
        int64_t content_us = usage->first_text_us > 0 ? usage->first_text_us
                                                      : usage->first_token_us;
        if (content_us > 0 && (earliest_us == 0 || content_us < earliest_us)) {
            earliest_us = content_us;
        }
    }
    return earliest_us;
}

/* Appends a chat message whose text goes through the tool-call parser: the content outside the
 * calls (null when empty) and the tool_calls array when there are calls. */
static void append_message_with_tool_calls(completion_choice *choice, quill_strbuf *body) {
    quill_tool_call_parser *parser = &choice->tool_parser;
    quill_strbuf content;
    quill__strbuf_init(&content);
    quill_status status = quill__tool_call_parser_feed(
        parser, choice->text.data != NULL ? choice->text.data : "", choice->text.length, &content);
    if (status == QUILL_OK) {
        status = quill__tool_call_parser_finish(parser, &content);
    }
    if (status != QUILL_OK) {
        /* Out of memory: the whole text goes back as content, as without tools. */
        quill__strbuf_clear(&content);
        quill__strbuf_append(&content, choice->text.data != NULL ? choice->text.data : "",
                             choice->text.length);
        quill__tool_call_parser_release(parser);
    }

    quill__strbuf_append_cstr(body, "\"message\":{\"role\":\"assistant\",\"content\":");
    if (content.length > 0) {
        quill__openai_append_text(body, content.data, content.length);
    } else {
        quill__strbuf_append_cstr(body, "null");
    }
    if (parser->n_calls > 0) {
        quill__strbuf_append_cstr(body, ",\"tool_calls\":");
        quill__tool_calls_append_json(body, parser->calls, 0, parser->n_calls, false);
    }
    quill__strbuf_append_cstr(body, ",\"refusal\":null}");
    quill__strbuf_release(&content);
}

static void write_choice(quill_completion *completion, int32_t index, quill_strbuf *body) {
    completion_choice *choice = &completion->choices[index];
    quill__strbuf_appendf(body, "%s{\"index\":%d,", index > 0 ? "," : "", index);
    if (completion->tool_call_format != QUILL_TOOL_CALL_FORMAT_NONE) {
        append_message_with_tool_calls(choice, body);
    } else if (completion->request.kind == QUILL_OPENAI_CHAT) {
        quill__strbuf_append_cstr(body, "\"message\":{\"role\":\"assistant\",\"content\":");
        quill__openai_append_text(body, choice->text.data != NULL ? choice->text.data : "",
                                  choice->text.length);
        quill__strbuf_append_cstr(body, ",\"refusal\":null}");
    } else {
        quill__strbuf_append_cstr(body, "\"text\":");
        quill__openai_append_text(body, choice->text.data != NULL ? choice->text.data : "",
                                  choice->text.length);
    }
    quill__strbuf_append_cstr(body, ",\"logprobs\":");
    append_logprobs(completion, choice, body);
    quill__strbuf_appendf(body, ",\"finish_reason\":\"%s\"}", choice_finish_reason(choice));
}

void quill__completion_write_response(quill_completion *completion, int *http_status,
                                      quill_strbuf *body) {
    if (completion->has_failed) {
        quill_http_error error;
        quill__http_error_set(&error, 500, NULL, NULL, "the engine failed the request");
        for (int32_t i = 0; i < completion->n_choices; i++) {
            if (completion->choices[i].status != QUILL_OK) {
                choice_error(completion, i, &error);
                break;
            }
        }
        quill__http_error_write_json(&error, body);
        *http_status = error.http_status;
        return;
    }

    completion->first_content_us = first_engine_content_us(completion);
    append_response_head(completion, "chat.completion", body);
    for (int32_t i = 0; i < completion->n_choices; i++) {
        write_choice(completion, i, body);
    }
    quill__strbuf_append_cstr(body, "],");

    quill_usage total;
    quill_cost cost;
    quill_timings timings;
    total_usage(completion, &total, &cost, &timings);
    quill__openai_append_usage(body, total.n_prompt_tokens, total.n_cached_tokens,
                               total.n_completion_tokens, &cost, &timings);
    quill__strbuf_append_cstr(body, "}\n");
    *http_status = 200;
}

static const char *outcome_name(const quill_completion *completion, bool is_disconnect) {
    if (is_disconnect) {
        return "client_disconnected";
    }
    if (completion->has_failed) {
        return "error";
    }
    for (int32_t i = 0; i < completion->n_choices; i++) {
        if (completion->choices[i].finish_reason == QUILL_FINISH_CANCELLED) {
            return "cancelled";
        }
    }
    return "ok";
}

/* Logs the accounting line of a request that reached the engine. */
static void log_accounting(quill_completion *completion, bool is_disconnect) {
    /* A plain request that ended without a response (client gone, shutdown) still had its
     * first text released by the engine. */
    if (!completion->request.is_stream && completion->first_content_us == 0) {
        completion->first_content_us = first_engine_content_us(completion);
    }
    quill_usage total;
    quill_cost cost;
    quill_timings timings;
    total_usage(completion, &total, &cost, &timings);
    char usd[QUILL_COST_USD_TEXT_BYTES];
    char model[256];
    char user[96];
    char feature[96];
    QUILL_LOG_INFO(
        "server", "completion finished",
        "id=%s model=%s n_choices=%d prompt_tokens=%lld cached_tokens=%lld "
        "completion_tokens=%lld cost_usd=%s ttft_ms=%.3f user=%s feature=%s "
        "outcome=%s",
        completion->id, quill__log_quote(completion->server->model_id, model, (int)sizeof(model)),
        completion->n_choices, (long long)total.n_prompt_tokens, (long long)total.n_cached_tokens,
        (long long)total.n_completion_tokens,
        quill__cost_format_usd(cost.total_picousd, usd, sizeof(usd)),
        (double)timings.ttft_us / 1000.0,
        quill__log_quote(completion->request.user != NULL ? completion->request.user : "", user,
                         (int)sizeof(user)),
        quill__log_quote(completion->request.feature != NULL ? completion->request.feature : "",
                         feature, (int)sizeof(feature)),
        outcome_name(completion, is_disconnect));
}

/* Cancels a running choice and waits for its final event, which the engine queues at its next
 * step, so that the accounting line has the tokens the choice really used. */
static void cancel_choice(completion_choice *choice) {
    quill_request_cancel(choice->request);
    while (!choice->is_finished) {
        quill_request_event event;
        memset(&event, 0, sizeof(event));
        if (quill_request_next_event(choice->request, true, &event) != QUILL_OK) {
            break;
        }
        if (event.is_final) {
            choice->is_finished = true;
            choice->finish_reason = event.finish_reason;
            choice->usage = event.usage;
        }
        quill_request_event_release(&event);
    }
}

void quill__completion_stop(quill_completion *completion) {
    for (int32_t i = 0; completion != NULL && completion->choices != NULL &&
                        i < completion->n_choices;
         i++) {
        completion_choice *choice = &completion->choices[i];
        if (choice->request != NULL && !choice->is_finished) {
            cancel_choice(choice);
        }
    }
}

/* The finish reason of the whole request: the worst over its choices, in the order error,
 * cancelled, length, stop. A choice without a final event counts as cancelled. */
static const char *summary_finish_reason(const quill_completion *completion) {
    static const quill_finish_reason worst_first[] = {QUILL_FINISH_ERROR,
                                                      QUILL_FINISH_CANCELLED,
                                                      QUILL_FINISH_LENGTH};
    for (size_t r = 0; r < sizeof(worst_first) / sizeof(worst_first[0]); r++) {
        for (int32_t i = 0; i < completion->n_choices; i++) {
            quill_finish_reason reason = completion->choices[i].finish_reason;
            if (reason == QUILL_FINISH_NONE) {
                reason = QUILL_FINISH_CANCELLED;
            }
            if (reason == worst_first[r]) {
                return quill_finish_reason_name(reason);
            }
        }
    }
    return quill_finish_reason_name(QUILL_FINISH_STOP);
}

void quill__completion_fill_record(quill_completion *completion, quill_request_record *record) {
    quill_usage total;
    quill_cost cost;
    quill_timings timings;
    total_usage(completion, &total, &cost, &timings);
    record->finish_reason = summary_finish_reason(completion);
    record->user = completion->request.user;
    record->feature = completion->request.feature;
    record->n_prompt_tokens = total.n_prompt_tokens;
    record->n_cached_tokens = total.n_cached_tokens;
    record->n_completion_tokens = total.n_completion_tokens;
    record->cost_picousd = cost.total_picousd;

    /* Times follow the response's timings: the first choice's, as the others ran alongside. */
    const quill_usage *first = &completion->choices[0].usage;
    int64_t arrival_us = completion->arrival_us;
    record->queue_us = first->scheduled_us > 0 ? first->scheduled_us - arrival_us : -1;
    record->ttft_us = completion->first_content_us > 0 ? completion->first_content_us - arrival_us
                                                       : -1;
    record->generation_us = first->first_token_us > 0 ? first->generation_us : -1;
    /* Inter-token latency comes from streams only (the metric's HELP text states this). A
     * non-streamed reply writes nothing until the end, and the engine reports only its first and
     * last token times. The one figure it could give is therefore an average, which hides the
     * stalls the metric is there to show. */
    record->inter_token_us = completion->inter_token_us;
    record->n_inter_token = completion->n_inter_token;
}

void quill__completion_destroy(quill_completion *completion, bool is_disconnect) {
    if (completion == NULL) {
        return;
    }

    /* Choices still running stop now. Their final events carry the tokens they used. */
    bool was_submitted = false;
    for (int32_t i = 0; completion->choices != NULL && i < completion->n_choices; i++) {
        was_submitted = was_submitted || completion->choices[i].request != NULL;
    }
    quill__completion_stop(completion);
    if (completion->has_reserved) {
        quill__server_count_generation_end(completion->server, completion->n_choices,
                                           is_disconnect);
    }
    if (was_submitted) {
        log_accounting(completion, is_disconnect);
    }

    for (int32_t i = 0; completion->choices != NULL && i < completion->n_choices; i++) {
        completion_choice *choice = &completion->choices[i];
        quill_request_destroy(choice->request);
        quill__strbuf_release(&choice->text);
        quill__free(choice->tokens);
        quill__tool_call_parser_release(&choice->tool_parser);
    }
    quill__free(completion->choices);
    quill__free(completion->inter_token_us);
    quill__openai_request_release(&completion->request);
    quill__free(completion);
}
