/*
 * quill bench-serve: a load generator for a running OpenAI-compatible server. It keeps
 * --concurrency streamed POST /v1/completions requests in flight until --requests have
 * finished, on one thread with libcurl's multi interface, and parses each server-sent event
 * stream as it arrives. Per request it records the time to the first content chunk (TTFT),
 * the gaps between content chunks (inter-token latency, ITL) and the end-to-end time, then
 * prints throughput and P50/P95/P99/max of each. Traffic goes only to the --url given.
 *
 * Before any load it sends GET /v1/models to find the model name and vocabulary size and to
 * check the server. An unreachable server fails the run at once. An HTTP error, such as a 401
 * for a missing --api-key, is printed with the server's message.
 *
 * Prompts are token-id arrays: the first --shared-prefix ids are the same for every request
 * and the rest differ per request, drawn from a fixed seed, so two runs send the same prompts.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/strbuf.h"
#include "cli/args.h"
#include "cli/commands.h"

static const char *const command_name = "bench-serve";

enum {
    FIRST_SAFE_TOKEN_ID = 3,       /* ids 0..2 are often BOS, EOS and padding or unknown */
    FALLBACK_VOCAB_SIZE = 256,     /* when neither --vocab nor GET /v1/models gives one */
    MAX_ERROR_BODY_BYTES = 512,    /* kept from an HTTP error reply for the message */
    MAX_SSE_LINE_BYTES = 1 << 20,  /* a longer event line fails the request */
    PROMPT_SEED = 20261204,        /* fixed, so every run sends the same prompts */
};

typedef struct bench_options {
    const char *url;              /* server base URL, e.g. http://127.0.0.1:8080 */
    int concurrency;              /* requests in flight */
    int64_t n_requests;           /* requests to send in all */
    int64_t n_prompt_tokens;      /* prompt length */
    int64_t n_max_tokens;         /* max_tokens of every request */
    int64_t n_shared_prefix;      /* leading prompt tokens shared by all requests */
    int64_t vocab_size;           /* 0: ask GET /v1/models */
    const char *model;            /* NULL: the first model of GET /v1/models */
    const char *api_key;          /* sent as a bearer token; NULL: none */
    int64_t timeout_s;            /* per-request limit */
    bool use_ignore_eos;          /* send "ignore_eos": true */
    bool use_json;                /* print one JSON object */
} bench_options;

/* A growable array of microsecond samples. */
typedef struct sample_list {
    int64_t *values;
    size_t n_values;
    size_t capacity;
} sample_list;

typedef struct bench_run {
    bench_options options;
    char *completions_url;        /* <base>/v1/completions */
    int32_t *shared_prefix;       /* [n_shared_prefix] token ids */
    int64_t vocab_size;           /* ids are drawn from FIRST_SAFE_TOKEN_ID..vocab_size-1 */
    char *model;                  /* owned copy; NULL to omit the field */
    sample_list ttft_us;
    sample_list itl_us;
    sample_list e2e_us;
    int64_t n_completed;
    int64_t n_failed;
    int64_t n_output_tokens;
    int64_t n_decode_tokens;      /* tokens after each request's first content chunk */
    int64_t *decode_spans_us;     /* [n_decode_spans][2]: first and last content times */
    size_t n_decode_spans;
    size_t decode_spans_capacity;
    char first_error[1024];       /* "" until a request fails */
    bool is_out_of_memory;
} bench_run;

/* One request in flight. */
typedef struct transfer {
    bench_run *run;
    CURL *easy;
    struct curl_slist *headers;
    char *body;                   /* JSON request body, owned */
    char curl_error[CURL_ERROR_SIZE];
    int64_t start_us;
    int64_t first_content_us;     /* -1 until the first content chunk */
    int64_t last_content_us;
    int64_t n_tokens;             /* tokens counted from content chunks */
    int64_t n_decode_tokens;      /* of those, the tokens after the first chunk */
    sample_list itl_us;           /* this request's inter-token gaps, kept until it succeeds */
    int64_t n_usage_tokens;       /* usage.completion_tokens, -1 until seen */
    char *line;                   /* bytes of the unfinished SSE line */
    size_t n_line_bytes;
    size_t line_capacity;
    char error_body[MAX_ERROR_BODY_BYTES + 1]; /* start of an HTTP error reply */
    size_t n_error_body_bytes;
    int slot;                     /* index in the run's in-flight slots */
    bool has_done;                /* "data: [DONE]" arrived */
    char stream_error[256];       /* error from the stream itself; "" when none */
} transfer;

static void print_usage(FILE *stream) {
    fprintf(stream,
            "usage: quill bench-serve --url URL [options]\n"
            "\n"
            "Sends streamed POST /v1/completions requests to a running server and prints\n"
            "throughput and latency percentiles. Exits 1 when any request failed.\n"
            "\n"
            "options:\n"
            "  --url URL            server base URL, http:// or https:// (required)\n"
            "  --concurrency N      requests in flight (default 4)\n"
            "  --requests M         requests to send in all (default 32)\n"
            "  --prompt-tokens P    prompt length in tokens (default 128)\n"
            "  --max-tokens G       max_tokens of every request (default 64)\n"
            "  --shared-prefix K    leading prompt tokens shared by all requests, 0..P\n"
            "                       (default 0)\n"
            "  --model NAME         model field (default: the first of GET /v1/models)\n"
            "  --vocab N            vocabulary size; prompt ids are drawn from 3..N-1\n"
            "                       (default: from GET /v1/models, else 256)\n"
            "  --api-key KEY        sent as 'Authorization: Bearer KEY'\n"
            "  --timeout S          per-request limit in seconds (default 600)\n"
            "  --ignore-eos         send \"ignore_eos\": true, for servers that accept it, so\n"
            "                       every request generates max_tokens tokens\n"
            "  --json               print one JSON object instead of a table\n");
}

/* ---- samples and the first error ---- */

static void samples_add(bench_run *run, sample_list *list, int64_t value) {
    if (list->n_values == list->capacity) {
        size_t capacity = list->capacity * 2 + 256;
        int64_t *grown = quill__realloc_array(list->values, capacity, sizeof(*grown));
        if (grown == NULL) {
            run->is_out_of_memory = true;
            return;
        }
        list->values = grown;
        list->capacity = capacity;
    }
    list->values[list->n_values] = value;
    list->n_values += 1;
}

static int compare_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Returns the nearest-rank percentile (permille of 1000) of sorted values, 0 when empty. */
static int64_t percentile(const sample_list *list, int permille) {
    if (list->n_values == 0) {
        return 0;
    }
    size_t rank = ((size_t)permille * list->n_values + 999) / 1000;
    return list->values[rank == 0 ? 0 : rank - 1];
}

static void record_failure(bench_run *run, const char *message) {
    run->n_failed += 1;
    if (run->first_error[0] == '\0') {
        snprintf(run->first_error, sizeof(run->first_error), "%s", message);
    }
}

/* ---- prompts and request bodies ---- */

static uint64_t next_random(uint64_t *state) {
    /* splitmix64: a fixed, portable sequence for a given seed. */
    *state += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int32_t random_token(const bench_run *run, uint64_t *state) {
    uint64_t n_ids = (uint64_t)(run->vocab_size - FIRST_SAFE_TOKEN_ID);
    return (int32_t)(FIRST_SAFE_TOKEN_ID + (int64_t)(next_random(state) % n_ids));
}

/* Returns a new JSON body for request index, or NULL when allocation fails. */
static char *build_body(const bench_run *run, int64_t index) {
    const bench_options *options = &run->options;
    json_object *root = json_object_new_object();
    json_object *prompt = json_object_new_array_ext((int)options->n_prompt_tokens);
    uint64_t state = PROMPT_SEED + 1 + (uint64_t)index;
    for (int64_t i = 0; i < options->n_prompt_tokens; i++) {
        int32_t token = i < options->n_shared_prefix ? run->shared_prefix[i]
                                                     : random_token(run, &state);
        json_object_array_add(prompt, json_object_new_int(token));
    }
    if (run->model != NULL) {
        json_object_object_add(root, "model", json_object_new_string(run->model));
    }
    json_object_object_add(root, "prompt", prompt);
    json_object_object_add(root, "max_tokens", json_object_new_int64(options->n_max_tokens));
    json_object_object_add(root, "stream", json_object_new_boolean(true));
    json_object *stream_options = json_object_new_object();
    json_object_object_add(stream_options, "include_usage", json_object_new_boolean(true));
    json_object_object_add(root, "stream_options", stream_options);
    if (options->use_ignore_eos) {
        json_object_object_add(root, "ignore_eos", json_object_new_boolean(true));
    }
    const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    char *body = text != NULL ? quill__strdup(text) : NULL;
    json_object_put(root);
    return body;
}

/* ---- server-sent events ---- */

/* Returns the number of tokens in a completion chunk's choice: the length of
 * logprobs.tokens when the server sends it, else 1. */
static int64_t chunk_token_count(json_object *choice) {
    json_object *logprobs = NULL;
    json_object *tokens = NULL;
    if (json_object_object_get_ex(choice, "logprobs", &logprobs) &&
        json_object_object_get_ex(logprobs, "tokens", &tokens) &&
        json_object_is_type(tokens, json_type_array) && json_object_array_length(tokens) > 0) {
        return (int64_t)json_object_array_length(tokens);
    }
    return 1;
}

/* Records a completed request's decode phase: n_tokens tokens streamed after its first
 * content chunk, between first_us and last_us. */
static void add_decode_span(bench_run *run, int64_t first_us, int64_t last_us, int64_t n_tokens) {
    if (run->n_decode_spans == run->decode_spans_capacity) {
        size_t capacity = run->decode_spans_capacity == 0 ? 64 : 2 * run->decode_spans_capacity;
        int64_t *spans = quill__realloc_array(run->decode_spans_us, capacity, 2 * sizeof(int64_t));
        if (spans == NULL) {
            run->is_out_of_memory = true;
            return;
        }
        run->decode_spans_us = spans;
        run->decode_spans_capacity = capacity;
    }
    run->decode_spans_us[2 * run->n_decode_spans] = first_us;
    run->decode_spans_us[2 * run->n_decode_spans + 1] = last_us;
    run->n_decode_spans += 1;
    run->n_decode_tokens += n_tokens;
}

static int compare_span_starts(const void *a, const void *b) {
    int64_t first = *(const int64_t *)a;
    int64_t second = *(const int64_t *)b;
    return (first > second) - (first < second);
}

/* Aggregate decode rate: the tokens streamed after each request's first chunk, divided by the
 * time during which at least one request was in its decode phase (the union of the spans from
 * first to last content chunk). Prompt processing before any first token is left out, so the
 * figure compares decoding at different concurrencies. Returns 0 with no decode spans. */
static double decode_tokens_per_second(bench_run *run) {
    if (run->n_decode_spans == 0) {
        return 0.0; /* also keeps a NULL array away from qsort */
    }
    qsort(run->decode_spans_us, run->n_decode_spans, 2 * sizeof(int64_t), compare_span_starts);
    int64_t busy_us = 0;
    int64_t open_start = 0;
    int64_t open_end = -1;
    for (size_t i = 0; i < run->n_decode_spans; i++) {
        int64_t start = run->decode_spans_us[2 * i];
        int64_t end = run->decode_spans_us[2 * i + 1];
        if (start > open_end) {
            busy_us += open_end > open_start ? open_end - open_start : 0;
            open_start = start;
            open_end = end;
        } else if (end > open_end) {
            open_end = end;
        }
    }
    busy_us += open_end > open_start ? open_end - open_start : 0;
    return busy_us > 0 ? (double)run->n_decode_tokens * 1e6 / (double)busy_us : 0.0;
}

/* Records a content chunk of n_tokens that arrived at now_us. A later chunk's gap is split
 * evenly over its tokens, so a server that sends several tokens per chunk still gives one
 * inter-token sample per token; the extra tokens of the first chunk give none. The samples
 * join the run's only when the request succeeds, like its TTFT and end-to-end time. */
static void record_content(transfer *request, int64_t now_us, int64_t n_tokens) {
    if (request->first_content_us < 0) {
        request->first_content_us = now_us;
    } else {
        int64_t gap_us = now_us - request->last_content_us;
        for (int64_t i = 0; i < n_tokens; i++) {
            samples_add(request->run, &request->itl_us, gap_us / n_tokens);
        }
        request->n_decode_tokens += n_tokens;
    }
    request->last_content_us = now_us;
    request->n_tokens += n_tokens;
}

static void handle_event_data(transfer *request, const char *data, int64_t now_us) {
    if (strcmp(data, "[DONE]") == 0) {
        request->has_done = true;
        return;
    }
    json_object *chunk = json_tokener_parse(data);
    if (chunk == NULL) {
        snprintf(request->stream_error, sizeof(request->stream_error),
                 "the stream sent an event that is not JSON: %.80s", data);
        return;
    }
    json_object *error = NULL;
    json_object *message = NULL;
    if (json_object_object_get_ex(chunk, "error", &error)) {
        json_object_object_get_ex(error, "message", &message);
        snprintf(request->stream_error, sizeof(request->stream_error),
                 "the stream sent an error: %.200s",
                 message != NULL ? json_object_get_string(message)
                                 : json_object_to_json_string(error));
    }
    json_object *choices = NULL;
    if (json_object_object_get_ex(chunk, "choices", &choices) &&
        json_object_is_type(choices, json_type_array) && json_object_array_length(choices) > 0) {
        json_object *choice = json_object_array_get_idx(choices, 0);
        json_object *text = NULL;
        if (json_object_object_get_ex(choice, "text", &text) &&
            json_object_is_type(text, json_type_string) && json_object_get_string_len(text) > 0) {
            record_content(request, now_us, chunk_token_count(choice));
        }
    }
    json_object *usage = NULL;
    json_object *completion_tokens = NULL;
    if (json_object_object_get_ex(chunk, "usage", &usage) &&
        json_object_object_get_ex(usage, "completion_tokens", &completion_tokens) &&
        json_object_is_type(completion_tokens, json_type_int)) {
        request->n_usage_tokens = json_object_get_int64(completion_tokens);
    }
    json_object_put(chunk);
}

/* Handles one complete line of the event stream. Each "data:" line is taken as one event's
 * payload; servers send one JSON object per line. */
static void handle_line(transfer *request, char *line, size_t n_bytes, int64_t now_us) {
    if (n_bytes > 0 && line[n_bytes - 1] == '\r') {
        n_bytes -= 1;
    }
    line[n_bytes] = '\0';
    if (strncmp(line, "data:", 5) != 0) {
        return; /* blank separators, comments, event: and id: fields */
    }
    const char *data = line + 5;
    if (*data == ' ') {
        data += 1;
    }
    handle_event_data(request, data, now_us);
}

static void append_error_body(transfer *request, const char *bytes, size_t n_bytes) {
    size_t room = MAX_ERROR_BODY_BYTES - request->n_error_body_bytes;
    size_t n_copy = n_bytes < room ? n_bytes : room;
    memcpy(request->error_body + request->n_error_body_bytes, bytes, n_copy);
    request->n_error_body_bytes += n_copy;
    request->error_body[request->n_error_body_bytes] = '\0';
}

static bool append_line_bytes(transfer *request, const char *bytes, size_t n_bytes) {
    size_t needed = request->n_line_bytes + n_bytes + 1;
    if (needed > MAX_SSE_LINE_BYTES) {
        snprintf(request->stream_error, sizeof(request->stream_error),
                 "an event line is longer than %d bytes", MAX_SSE_LINE_BYTES);
        return false;
    }
    if (needed > request->line_capacity) {
        size_t capacity = needed * 2;
        char *grown = quill__realloc(request->line, capacity);
        if (grown == NULL) {
            request->run->is_out_of_memory = true;
            return false;
        }
        request->line = grown;
        request->line_capacity = capacity;
    }
    memcpy(request->line + request->n_line_bytes, bytes, n_bytes);
    request->n_line_bytes += n_bytes;
    return true;
}

/* libcurl's write callback: splits the body into lines as bytes arrive. Returning less than
 * n_bytes aborts the transfer. */
static size_t on_body_bytes(char *bytes, size_t size, size_t n_items, void *user_data) {
    transfer *request = user_data;
    size_t n_bytes = size * n_items;
    int64_t now_us = quill__clock_monotonic_us();
    long http_status = 0;
    curl_easy_getinfo(request->easy, CURLINFO_RESPONSE_CODE, &http_status);
    if (http_status >= 300) {
        append_error_body(request, bytes, n_bytes);
        return n_bytes;
    }

    size_t start = 0;
    for (size_t i = 0; i < n_bytes; i++) {
        if (bytes[i] != '\n') {
            continue;
        }
        if (!append_line_bytes(request, bytes + start, i - start)) {
            return 0;
        }
        handle_line(request, request->line, request->n_line_bytes, now_us);
        request->n_line_bytes = 0;
        start = i + 1;
    }
    if (start < n_bytes && !append_line_bytes(request, bytes + start, n_bytes - start)) {
        return 0;
    }
    return n_bytes;
}

/* ---- transfers ---- */

static void transfer_destroy(transfer *request) {
    if (request == NULL) {
        return;
    }
    if (request->easy != NULL) {
        curl_easy_cleanup(request->easy);
    }
    curl_slist_free_all(request->headers);
    quill__free(request->body);
    quill__free(request->line);
    quill__free(request->itl_us.values);
    quill__free(request);
}

/* Sets the options shared by every request: no redirects, HTTP(S) only, no signals. */
static void set_common_options(CURL *easy, const bench_options *options) {
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(options->timeout_s * 1000));
}

/* Returns a new transfer for request index, or NULL when allocation fails. */
static transfer *transfer_create(bench_run *run, int64_t index) {
    transfer *request = quill__calloc(1, sizeof(*request));
    if (request == NULL) {
        goto fail;
    }
    request->run = run;
    request->first_content_us = -1;
    request->n_usage_tokens = -1;
    request->body = build_body(run, index);
    request->easy = curl_easy_init();
    if (request->body == NULL || request->easy == NULL) {
        goto fail;
    }

    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = headers != NULL ? curl_slist_append(headers, "Accept: text/event-stream") : NULL;
    if (headers != NULL && run->options.api_key != NULL) {
        char authorization[1024];
        snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s",
                 run->options.api_key);
        headers = curl_slist_append(headers, authorization);
    }
    if (headers == NULL) {
        goto fail;
    }
    request->headers = headers;

    CURL *easy = request->easy;
    set_common_options(easy, &run->options);
    curl_easy_setopt(easy, CURLOPT_URL, run->completions_url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, request->headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request->body);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body_bytes);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, request);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, request->curl_error);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, request);
    return request;

fail:
    transfer_destroy(request);
    run->is_out_of_memory = true;
    return NULL;
}

/* Counts a finished transfer as completed or failed and adds its samples. */
static void finish_transfer(bench_run *run, transfer *request, CURLcode result) {
    int64_t end_us = quill__clock_monotonic_us();
    long http_status = 0;
    curl_easy_getinfo(request->easy, CURLINFO_RESPONSE_CODE, &http_status);
    char message[1024];

    if (result != CURLE_OK) {
        snprintf(message, sizeof(message), "request to %s failed: %s", run->completions_url,
                 request->curl_error[0] != '\0' ? request->curl_error
                                                 : curl_easy_strerror(result));
        record_failure(run, message);
        return;
    }
    if (http_status < 200 || http_status >= 300) {
        snprintf(message, sizeof(message), "server replied HTTP %ld: %s", http_status,
                 request->error_body);
        record_failure(run, message);
        return;
    }
    if (request->stream_error[0] != '\0') {
        record_failure(run, request->stream_error);
        return;
    }
    if (!request->has_done) {
        record_failure(run, "the stream ended without 'data: [DONE]'");
        return;
    }

    run->n_completed += 1;
    run->n_output_tokens += request->n_usage_tokens >= 0 ? request->n_usage_tokens
                                                         : request->n_tokens;
    if (request->first_content_us >= 0) {
        samples_add(run, &run->ttft_us, request->first_content_us - request->start_us);
    }
    samples_add(run, &run->e2e_us, end_us - request->start_us);
    for (size_t i = 0; i < request->itl_us.n_values; i++) {
        samples_add(run, &run->itl_us, request->itl_us.values[i]);
    }
    /* A server may merge several tokens into one chunk without a count (no logprobs). The
     * usage record then gives the total, and every token beyond the first chunk's was decoded
     * after the first token. */
    int64_t n_first_chunk = request->n_tokens - request->n_decode_tokens;
    int64_t n_produced = request->n_usage_tokens >= 0 ? request->n_usage_tokens
                                                      : request->n_tokens;
    if (request->first_content_us >= 0 && n_produced > n_first_chunk) {
        add_decode_span(run, request->first_content_us, request->last_content_us,
                        n_produced - n_first_chunk);
    }
}

/* Starts request index in a free slot. Returns false when allocation failed. */
static bool start_transfer(bench_run *run, CURLM *multi, transfer **slots, int64_t index) {
    transfer *request = transfer_create(run, index);
    if (request == NULL) {
        return false;
    }
    for (int i = 0; i < run->options.concurrency; i++) {
        if (slots[i] == NULL) {
            slots[i] = request;
            request->slot = i;
            break;
        }
    }
    request->start_us = quill__clock_monotonic_us();
    curl_multi_add_handle(multi, request->easy);
    return true;
}

/* Collects finished transfers; returns how many finished. */
static int64_t collect_finished(bench_run *run, CURLM *multi, transfer **slots) {
    int64_t n_finished = 0;
    int n_queued = 0;
    CURLMsg *message = NULL;
    for (;;) {
        message = curl_multi_info_read(multi, &n_queued);
        if (message == NULL) {
            break;
        }
        if (message->msg != CURLMSG_DONE) {
            continue;
        }
        transfer *request = NULL;
        curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **)&request);
        CURLcode result = message->data.result;
        curl_multi_remove_handle(multi, request->easy);
        finish_transfer(run, request, result);
        slots[request->slot] = NULL;
        transfer_destroy(request);
        n_finished += 1;
    }
    return n_finished;
}

/* Runs every request, keeping options.concurrency in flight. Returns false when libcurl or
 * allocation failed (not when requests failed). */
static bool run_requests(bench_run *run) {
    CURLM *multi = curl_multi_init();
    transfer **slots = quill__calloc((size_t)run->options.concurrency, sizeof(*slots));
    bool is_ok = multi != NULL && slots != NULL;
    int64_t n_started = 0;
    int64_t n_finished = 0;

    while (is_ok && !run->is_out_of_memory && n_finished < run->options.n_requests) {
        /* Top up the requests in flight. */
        while (is_ok && n_started - n_finished < run->options.concurrency &&
               n_started < run->options.n_requests) {
            is_ok = start_transfer(run, multi, slots, n_started);
            n_started += is_ok ? 1 : 0;
        }

        /* Move bytes and collect finished transfers. Slots that just came free are refilled
         * before any wait, because with no transfer left the socket wait (at most 100 ms)
         * would idle for its whole interval. Otherwise wait for socket activity. */
        int n_running = 0;
        if (is_ok && curl_multi_perform(multi, &n_running) != CURLM_OK) {
            is_ok = false;
        }
        int64_t n_collected = collect_finished(run, multi, slots);
        n_finished += n_collected;
        bool can_start = n_collected > 0 && n_started < run->options.n_requests;
        if (is_ok && n_finished < run->options.n_requests && !can_start) {
            curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
    }

    /* Transfers are still in flight only when setup failed; drop them. */
    for (int i = 0; slots != NULL && i < run->options.concurrency; i++) {
        if (slots[i] != NULL) {
            curl_multi_remove_handle(multi, slots[i]->easy);
            transfer_destroy(slots[i]);
        }
    }
    quill__free(slots);
    if (multi != NULL) {
        curl_multi_cleanup(multi);
    }
    return is_ok && !run->is_out_of_memory;
}

/* ---- server discovery ---- */

static size_t on_models_bytes(char *bytes, size_t size, size_t n_items, void *user_data) {
    quill_strbuf *buffer = user_data;
    size_t n_bytes = size * n_items;
    return quill__strbuf_append(buffer, bytes, n_bytes) == QUILL_OK ? n_bytes : 0;
}

/* Returns the vocabulary size that a /v1/models entry states, or 0. Servers put it in
 * different places, so several common keys are tried. */
static int64_t entry_vocab_size(json_object *entry) {
    static const char *const keys[] = {"vocab_size", "n_vocab"};
    json_object *meta = NULL;
    json_object_object_get_ex(entry, "meta", &meta);
    json_object *holders[2] = {entry, meta};
    for (size_t h = 0; h < 2; h++) {
        for (size_t k = 0; holders[h] != NULL && k < 2; k++) {
            json_object *value = NULL;
            if (json_object_object_get_ex(holders[h], keys[k], &value) &&
                json_object_is_type(value, json_type_int)) {
                return json_object_get_int64(value);
            }
        }
    }
    return 0;
}

/* Outcome of GET /v1/models. */
typedef enum discovery_result {
    DISCOVERY_OK,          /* a model list arrived (it may lack the model or a vocabulary size) */
    DISCOVERY_HTTP_ERROR,  /* the server replied with a non-200 status or no model list */
    DISCOVERY_KEY_REJECTED, /* 401 or 403: every completion would be rejected too */
    DISCOVERY_UNREACHABLE, /* no reply at all: refused, unresolved, reset or timed out */
    DISCOVERY_NO_MEMORY,
} discovery_result;

/* Writes the server's error message into message: OpenAI's {"error":{"message":...}} when the
 * body has it, else the start of the body. */
static void describe_error_body(const char *body, char *message, size_t message_bytes) {
    json_object *root = body != NULL ? json_tokener_parse(body) : NULL;
    json_object *error = NULL;
    json_object *text = NULL;
    if (root != NULL && json_object_object_get_ex(root, "error", &error) &&
        json_object_object_get_ex(error, "message", &text) &&
        json_object_is_type(text, json_type_string)) {
        snprintf(message, message_bytes, "%s", json_object_get_string(text));
    } else if (body != NULL && body[0] != '\0') {
        snprintf(message, message_bytes, "%.*s", MAX_ERROR_BODY_BYTES, body);
    } else {
        snprintf(message, message_bytes, "(empty reply)");
    }
    json_object_put(root);
}

/* Prints why GET /v1/models returned http_status, with the next step. */
static void report_models_status(const char *models_url, long http_status, const char *body,
                                 bool has_api_key) {
    char server_message[MAX_ERROR_BODY_BYTES + 1];
    describe_error_body(body, server_message, sizeof(server_message));
    const char *next_step = "check --url";
    if (http_status == 403 || (http_status == 401 && has_api_key)) {
        next_step = "the server rejected the key given with --api-key, check it";
    } else if (http_status == 401) {
        next_step = "the server requires an API key, pass it with --api-key";
    }
    fprintf(stderr, "quill %s: GET %s returned HTTP %ld: %s; %s\n", command_name, models_url,
            http_status, server_message, next_step);
}

/* Picks the entry of --model, else the first one, from a /v1/models reply, and fills
 * run->model and run->vocab_size where they are still unset. Sets *is_found to whether the
 * list has such an entry. Returns false when the reply contains no model list. */
static bool read_model_list(bench_run *run, const char *body, bool *is_found) {
    json_object *root = json_tokener_parse(body);
    json_object *data = NULL;
    if (root == NULL || !json_object_object_get_ex(root, "data", &data) ||
        !json_object_is_type(data, json_type_array)) {
        json_object_put(root);
        return false;
    }
    json_object *chosen = NULL;
    for (size_t i = 0; i < json_object_array_length(data) && chosen == NULL; i++) {
        json_object *entry = json_object_array_get_idx(data, i);
        json_object *id = NULL;
        json_object_object_get_ex(entry, "id", &id);
        if (run->options.model == NULL ||
            (id != NULL && strcmp(json_object_get_string(id), run->options.model) == 0)) {
            chosen = entry;
        }
    }
    json_object *id = NULL;
    if (chosen != NULL && run->model == NULL && json_object_object_get_ex(chosen, "id", &id)) {
        run->model = quill__strdup(json_object_get_string(id));
    }
    if (chosen != NULL && run->vocab_size == 0) {
        run->vocab_size = entry_vocab_size(chosen);
    }
    *is_found = chosen != NULL;
    json_object_put(root);
    return true;
}

/* Sends GET url with the run's API key into buffer (at most 1 MiB) and stores the HTTP status.
 * Returns DISCOVERY_OK when any reply arrived, else DISCOVERY_UNREACHABLE (after printing why)
 * or DISCOVERY_NO_MEMORY. */
static discovery_result http_get(const bench_run *run, const char *url, quill_strbuf *buffer,
                                 long *http_status) {
    char curl_error[CURL_ERROR_SIZE] = {0};
    struct curl_slist *headers = NULL;
    discovery_result result = DISCOVERY_NO_MEMORY;
    *http_status = 0;
    CURL *easy = curl_easy_init();
    if (easy == NULL) {
        fprintf(stderr, "quill %s: out of memory for a curl handle\n", command_name);
        goto cleanup;
    }
    if (run->options.api_key != NULL) {
        char authorization[1024];
        snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s",
                 run->options.api_key);
        headers = curl_slist_append(NULL, authorization);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    }
    set_common_options(easy, &run->options);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_models_bytes);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, buffer);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);

    /* No reply: every completion request would fail the same way, so none is sent. */
    CURLcode code = curl_easy_perform(easy);
    if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && buffer->is_failed)) {
        fprintf(stderr,
                "quill %s: cannot reach the server: GET %s failed: %s; start the server or fix "
                "--url\n",
                command_name, url, curl_error[0] != '\0' ? curl_error : curl_easy_strerror(code));
        result = DISCOVERY_UNREACHABLE;
        goto cleanup;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, http_status);
    result = DISCOVERY_OK;

cleanup:
    curl_slist_free_all(headers);
    if (easy != NULL) {
        curl_easy_cleanup(easy);
    }
    return result;
}

/* Looks up --model with GET /v1/models/{model} when the list does not name it: a server may
 * serve a model under names it does not list (Quill also accepts the model file's name).
 * Fills run->vocab_size from a 200 reply, and warns about any other status. */
static discovery_result look_up_model(bench_run *run, const char *models_url) {
    char *escaped = curl_easy_escape(NULL, run->options.model, 0);
    if (escaped == NULL) {
        return DISCOVERY_NO_MEMORY;
    }
    size_t n_bytes = strlen(models_url) + strlen(escaped) + 2;
    char *url = quill__malloc(n_bytes);
    if (url == NULL) {
        curl_free(escaped);
        return DISCOVERY_NO_MEMORY;
    }
    snprintf(url, n_bytes, "%s/%s", models_url, escaped);
    curl_free(escaped);
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    buffer.limit_bytes = 1 << 20;
    long http_status = 0;
    discovery_result result = http_get(run, url, &buffer, &http_status);
    if (result == DISCOVERY_OK && http_status != 200) {
        /* Some servers take any model name without listing it, and not every server has this
         * endpoint, so the run goes on. */
        char message[256];
        describe_error_body(buffer.data, message, sizeof(message));
        fprintf(stderr,
                "quill %s: warning: GET /v1/models does not list --model '%s' and GET %s "
                "returned HTTP %ld: %s; if the completions fail, pass a model id from GET "
                "/v1/models\n",
                command_name, run->options.model, url, http_status, message);
    } else if (result == DISCOVERY_OK && http_status == 200 && !buffer.is_failed &&
               buffer.data != NULL && run->vocab_size == 0) {
        json_object *entry = json_tokener_parse(buffer.data);
        if (entry != NULL && json_object_is_type(entry, json_type_object)) {
            run->vocab_size = entry_vocab_size(entry);
        }
        json_object_put(entry);
    }
    quill__free(url);
    quill__strbuf_release(&buffer);
    return result;
}

/* Sends GET /v1/models, which also checks that the server is reachable before any load is
 * sent, and fills run->model (unless --model) and run->vocab_size (unless --vocab) from the
 * reply, or from GET /v1/models/{model} for a --model the list does not name. Prints why a
 * request failed, unless the result is DISCOVERY_OK. */
static discovery_result discover_model(bench_run *run, const char *models_url) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    buffer.limit_bytes = 1 << 20;
    long http_status = 0;
    bool is_found = false;
    discovery_result result = http_get(run, models_url, &buffer, &http_status);
    if (result != DISCOVERY_OK) {
        goto cleanup;
    }

    /* A reply that is not a model list is reported, and the run goes on with the defaults. */
    result = DISCOVERY_HTTP_ERROR;
    bool is_list_needed = run->options.model == NULL || run->options.vocab_size == 0;
    bool is_key_rejected = http_status == 401 || http_status == 403;
    if (http_status != 200) {
        /* With --model and --vocab the list is not needed, so a server without the endpoint
         * only hears about a rejected key, which its completions will reject too. */
        if (is_list_needed || is_key_rejected) {
            report_models_status(models_url, http_status, buffer.data,
                                 run->options.api_key != NULL);
        }
        if (is_key_rejected) {
            result = DISCOVERY_KEY_REJECTED;
        }
    } else if (buffer.is_failed || buffer.data == NULL ||
               !read_model_list(run, buffer.data, &is_found)) {
        fprintf(stderr, "quill %s: GET %s returned no JSON model list ({\"data\": [...]})\n",
                command_name, models_url);
    } else if (run->options.model != NULL && !is_found && run->vocab_size == 0) {
        result = look_up_model(run, models_url);
    } else {
        result = DISCOVERY_OK;
    }

cleanup:
    quill__strbuf_release(&buffer);
    return result;
}

/* Returns a new URL of path appended to the base URL's API root: "<base>/v1/<path>", or
 * "<base>/<path>" when the base already ends in /v1. NULL when the base is not an http or
 * https URL (after printing why). */
static char *endpoint_url(const char *base, const char *path) {
    CURLU *parsed = curl_url();
    char *scheme = NULL;
    char *result = NULL;
    if (parsed == NULL) {
        return NULL;
    }
    CURLUcode status = curl_url_set(parsed, CURLUPART_URL, base, 0);
    if (status == CURLUE_OK) {
        status = curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0);
    }
    if (status != CURLUE_OK || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        fprintf(stderr,
                "quill %s: invalid --url '%s'; expected an http:// or https:// URL such as "
                "http://127.0.0.1:8080\n",
                command_name, base);
        goto cleanup;
    }

    size_t length = strlen(base);
    while (length > 0 && base[length - 1] == '/') {
        length -= 1;
    }
    bool has_v1 = length >= 3 && strncmp(base + length - 3, "/v1", 3) == 0;
    size_t n_bytes = length + strlen(path) + 8;
    result = quill__malloc(n_bytes);
    if (result != NULL) {
        snprintf(result, n_bytes, "%.*s%s/%s", (int)length, base, has_v1 ? "" : "/v1", path);
    }

cleanup:
    curl_free(scheme);
    curl_url_cleanup(parsed);
    return result;
}

/* ---- options ---- */

/* Stores the value of a flag that takes one. Returns false after printing a usage error. */
static bool parse_valued_option(const char *flag, const char *value, bench_options *options) {
    if (strcmp(flag, "--url") == 0) {
        options->url = value;
    } else if (strcmp(flag, "--model") == 0) {
        options->model = value;
    } else if (strcmp(flag, "--api-key") == 0) {
        options->api_key = value;
    } else if (strcmp(flag, "--concurrency") == 0) {
        return quill_cli_parse_int(command_name, flag, value, 1, 1024, &options->concurrency);
    } else if (strcmp(flag, "--requests") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, 1, 1000000,
                                     &options->n_requests);
    } else if (strcmp(flag, "--prompt-tokens") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, 1, 1000000,
                                     &options->n_prompt_tokens);
    } else if (strcmp(flag, "--max-tokens") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, 1, 1000000,
                                     &options->n_max_tokens);
    } else if (strcmp(flag, "--shared-prefix") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, 0, 1000000,
                                     &options->n_shared_prefix);
    } else if (strcmp(flag, "--vocab") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, FIRST_SAFE_TOKEN_ID + 1,
                                     INT32_MAX, &options->vocab_size);
    } else if (strcmp(flag, "--timeout") == 0) {
        return quill_cli_parse_int64(command_name, flag, value, 1, 86400, &options->timeout_s);
    }
    return true;
}

/* Parses argv into options. Returns 0 to run, 2 on a usage error (after printing it) or -1
 * after --help. */
static int parse_options(int argc, char **argv, bench_options *options) {
    static const char *const valued_flags[] = {
        "--url", "--concurrency", "--requests", "--prompt-tokens", "--max-tokens",
        "--shared-prefix", "--model", "--vocab", "--api-key", "--timeout", NULL,
    };
    memset(options, 0, sizeof(*options));
    options->concurrency = 4;
    options->n_requests = 32;
    options->n_prompt_tokens = 128;
    options->n_max_tokens = 64;
    options->timeout_s = 600;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_usage(stdout);
            return -1;
        }
        if (strcmp(arg, "--ignore-eos") == 0) {
            options->use_ignore_eos = true;
            continue;
        }
        if (strcmp(arg, "--json") == 0) {
            options->use_json = true;
            continue;
        }
        size_t k = 0;
        while (valued_flags[k] != NULL && strcmp(valued_flags[k], arg) != 0) {
            k += 1;
        }
        if (valued_flags[k] == NULL) {
            quill_cli_unknown_option(command_name, arg);
            return 2;
        }
        const char *value = quill_cli_take_value(command_name, argc, argv, &i);
        if (value == NULL || !parse_valued_option(arg, value, options)) {
            return 2;
        }
    }

    if (options->url == NULL) {
        fprintf(stderr, "quill %s: --url is required, e.g. --url http://127.0.0.1:8080\n",
                command_name);
        return 2;
    }
    if (options->n_shared_prefix > options->n_prompt_tokens) {
        fprintf(stderr,
                "quill %s: --shared-prefix %" PRId64 " exceeds --prompt-tokens %" PRId64
                "; the shared prefix is part of the prompt, so pass at most --shared-prefix %"
                PRId64 " or raise --prompt-tokens\n",
                command_name, options->n_shared_prefix, options->n_prompt_tokens,
                options->n_prompt_tokens);
        return 2;
    }
    return 0;
}

/* ---- report ---- */

static void sort_samples(bench_run *run) {
    sample_list *lists[3] = {&run->ttft_us, &run->itl_us, &run->e2e_us};
    for (size_t i = 0; i < 3; i++) {
        if (lists[i]->n_values > 0) {
            qsort(lists[i]->values, lists[i]->n_values, sizeof(int64_t), compare_int64);
        }
    }
}

/* A JSON number printed with n_decimals decimals. */
static json_object *new_number(double value, int n_decimals) {
    char text[64];
    snprintf(text, sizeof(text), "%.*f", n_decimals, value);
    return json_object_new_double_s(value, text);
}

static json_object *new_ms(int64_t value_us) {
    return new_number((double)value_us / 1000.0, 3);
}

static json_object *new_percentiles(const sample_list *list) {
    json_object *object = json_object_new_object();
    json_object_object_add(object, "count", json_object_new_int64((int64_t)list->n_values));
    json_object_object_add(object, "p50", new_ms(percentile(list, 500)));
    json_object_object_add(object, "p95", new_ms(percentile(list, 950)));
    json_object_object_add(object, "p99", new_ms(percentile(list, 990)));
    json_object_object_add(object, "max",
                           new_ms(list->n_values > 0 ? list->values[list->n_values - 1] : 0));
    return object;
}

/* Returns the most requests that ran at once: --concurrency, or fewer when fewer were sent. */
static int64_t effective_concurrency(const bench_run *run) {
    return run->options.concurrency < run->options.n_requests ? run->options.concurrency
                                                              : run->options.n_requests;
}

static void print_json(bench_run *run, int64_t duration_us) {
    double duration_s = (double)duration_us / 1e6;
    json_object *root = json_object_new_object();
    json_object_object_add(root, "requests", json_object_new_int64(run->options.n_requests));
    json_object_object_add(root, "completed", json_object_new_int64(run->n_completed));
    json_object_object_add(root, "failed", json_object_new_int64(run->n_failed));
    json_object_object_add(root, "concurrency", json_object_new_int64(effective_concurrency(run)));
    json_object_object_add(root, "duration_s", new_number(duration_s, 3));
    json_object_object_add(root, "output_tokens", json_object_new_int64(run->n_output_tokens));
    json_object_object_add(root, "output_tokens_per_second",
                           new_number((double)run->n_output_tokens / duration_s, 2));
    json_object_object_add(root, "requests_per_second",
                           new_number((double)run->n_completed / duration_s, 3));
    json_object_object_add(root, "decode_tokens", json_object_new_int64(run->n_decode_tokens));
    json_object_object_add(root, "decode_tokens_per_second",
                           new_number(decode_tokens_per_second(run), 2));
    json_object_object_add(root, "ttft_ms", new_percentiles(&run->ttft_us));
    json_object_object_add(root, "itl_ms", new_percentiles(&run->itl_us));
    json_object_object_add(root, "e2e_ms", new_percentiles(&run->e2e_us));
    json_object_object_add(root, "first_error",
                           run->first_error[0] != '\0'
                               ? json_object_new_string(run->first_error)
                               : NULL);
    printf("%s\n", json_object_to_json_string_ext(
                       root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
}

static void print_row(const char *name, const sample_list *list) {
    int64_t max_us = list->n_values > 0 ? list->values[list->n_values - 1] : 0;
    printf("%-6s %10.3f %10.3f %10.3f %10.3f %8zu\n", name,
           (double)percentile(list, 500) / 1000.0, (double)percentile(list, 950) / 1000.0,
           (double)percentile(list, 990) / 1000.0, (double)max_us / 1000.0, list->n_values);
}

static void print_table(bench_run *run, int64_t duration_us) {
    double duration_s = (double)duration_us / 1e6;
    printf("requests:   %" PRId64 " completed, %" PRId64 " failed, concurrency %" PRId64
           ", %.2f s\n",
           run->n_completed, run->n_failed, effective_concurrency(run), duration_s);
    printf("throughput: %.1f output tokens/s, %.2f requests/s (%" PRId64 " output tokens)\n",
           (double)run->n_output_tokens / duration_s, (double)run->n_completed / duration_s,
           run->n_output_tokens);
    printf("decode:     %.1f tokens/s while any request decodes (%" PRId64 " tokens)\n",
           decode_tokens_per_second(run), run->n_decode_tokens);
    printf("%-6s %10s %10s %10s %10s %8s\n", "ms", "p50", "p95", "p99", "max", "count");
    print_row("ttft", &run->ttft_us);
    print_row("itl", &run->itl_us);
    print_row("e2e", &run->e2e_us);
}

/* ---- entry point ---- */

static void run_release(bench_run *run) {
    quill__free(run->completions_url);
    quill__free(run->shared_prefix);
    quill__free(run->model);
    quill__free(run->ttft_us.values);
    quill__free(run->itl_us.values);
    quill__free(run->e2e_us.values);
    quill__free(run->decode_spans_us);
}

/* Resolves URLs, the model and the vocabulary, and draws the shared prefix. Returns the exit
 * code on failure, or 0. */
static int prepare_run(bench_run *run) {
    char *models_url = endpoint_url(run->options.url, "models");
    if (models_url == NULL) {
        return 2;
    }
    run->completions_url = endpoint_url(run->options.url, "completions");
    if (run->completions_url == NULL) {
        quill__free(models_url);
        return 1;
    }
    run->vocab_size = run->options.vocab_size;
    if (run->options.model != NULL) {
        run->model = quill__strdup(run->options.model);
    }
    discovery_result discovery = discover_model(run, models_url);
    quill__free(models_url);
    if (discovery == DISCOVERY_UNREACHABLE || discovery == DISCOVERY_NO_MEMORY ||
        discovery == DISCOVERY_KEY_REJECTED) {
        return 1;
    }
    if (run->vocab_size <= FIRST_SAFE_TOKEN_ID) {
        /* Names the model, because GET /v1/models may list other models with a size. */
        char known[320] = "no vocabulary size known";
        if (discovery == DISCOVERY_OK) {
            snprintf(known, sizeof(known), "the server gave no vocabulary size for %s%.200s%s",
                     run->model != NULL ? "model '" : "its model",
                     run->model != NULL ? run->model : "", run->model != NULL ? "'" : "");
        }
        fprintf(stderr, "quill %s: %s; drawing prompt ids from %d..%d, pass --vocab to change\n",
                command_name, known, FIRST_SAFE_TOKEN_ID, FALLBACK_VOCAB_SIZE - 1);
        run->vocab_size = FALLBACK_VOCAB_SIZE;
    }

    uint64_t state = PROMPT_SEED;
    size_t n_prefix = (size_t)run->options.n_shared_prefix;
    run->shared_prefix = quill__malloc_array(n_prefix, sizeof(int32_t));
    if (run->shared_prefix == NULL) {
        fprintf(stderr, "quill %s: out of memory for a %zu-token prefix\n", command_name,
                n_prefix);
        return 1;
    }
    for (size_t i = 0; i < n_prefix; i++) {
        run->shared_prefix[i] = random_token(run, &state);
    }
    return 0;
}

int quill_cli_bench_serve(int argc, char **argv) {
    bench_run run;
    memset(&run, 0, sizeof(run));
    int exit_code = parse_options(argc, argv, &run.options);
    if (exit_code != 0) {
        return exit_code < 0 ? 0 : exit_code;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "quill %s: curl_global_init failed\n", command_name);
        return 1;
    }

    exit_code = prepare_run(&run);
    if (exit_code == 0) {
        int64_t start_us = quill__clock_monotonic_us();
        bool is_ok = run_requests(&run);
        int64_t duration_us = quill__clock_monotonic_us() - start_us;
        if (duration_us < 1) {
            duration_us = 1;
        }
        sort_samples(&run);
        if (run.options.use_json) {
            print_json(&run, duration_us);
        } else {
            print_table(&run, duration_us);
        }
        if (!is_ok) {
            fprintf(stderr, "quill %s: stopped early: out of memory or a libcurl failure\n",
                    command_name);
        }
        if (run.first_error[0] != '\0') {
            fprintf(stderr, "quill %s: %" PRId64 " of %" PRId64 " requests failed; first error: %s\n",
                    command_name, run.n_failed, run.options.n_requests, run.first_error);
        }
        exit_code = is_ok && run.n_failed == 0 ? 0 : 1;
    }

    run_release(&run);
    curl_global_cleanup();
    return exit_code;
}
