/*
 * Parsing and validation of OpenAI request bodies for /v1/chat/completions and /v1/completions.
 * Every field Quill honours is checked for type and range here, before any model work, and a bad
 * or unsupported field becomes a 400 that names it. The parsed request borrows its strings from
 * the JSON document it owns. One thread at a time.
 */
#ifndef QUILL_SERVER_OPENAI_REQUEST_H
#define QUILL_SERVER_OPENAI_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/engine.h"
#include "quill/sampler.h"
#include "server/errors.h"

struct json_object;

/* Most choices one request may ask for with n. */
#define QUILL_OPENAI_MAX_CHOICES 16
/* Most stop strings, as in OpenAI's API. */
#define QUILL_OPENAI_MAX_STOP 4
/* Most logit_bias entries. */
#define QUILL_OPENAI_MAX_LOGIT_BIAS 1024
/* metadata limits, as in OpenAI's API: pairs, key bytes and value bytes. */
#define QUILL_OPENAI_MAX_METADATA_PAIRS 16
#define QUILL_OPENAI_MAX_METADATA_KEY_BYTES 64
#define QUILL_OPENAI_MAX_METADATA_VALUE_BYTES 512
/* Maximum user id length, in bytes: enough for a UUID or an e-mail address, and small enough
 * that the usage metrics, which keep one entry per user, stay small. */
#define QUILL_OPENAI_MAX_USER_BYTES 256

typedef enum quill_openai_kind {
    QUILL_OPENAI_CHAT = 1,       /* POST /v1/chat/completions */
    QUILL_OPENAI_COMPLETION = 2, /* POST /v1/completions */
    QUILL_OPENAI_TEMPLATE = 3,   /* POST /apply-template: a chat body plus
                                    add_generation_prompt; parsed into kind QUILL_OPENAI_CHAT */
} quill_openai_kind;

typedef struct quill_openai_request {
    quill_openai_kind kind;
    struct json_object *root;         /* the parsed body; owned */
    const char *model;                /* NULL when absent */
    struct json_object *messages;     /* chat: array of messages (borrowed from root) */
    struct json_object *tools;        /* chat: array or NULL */
    struct json_object *tool_choice;  /* chat: string or object, or NULL */
    int parallel_tool_calls;          /* chat: -1 absent, else 0 or 1 */
    struct json_object *template_kwargs; /* chat: chat_template_kwargs, an object of extra
                                            template variables (e.g. enable_thinking), or NULL */
    bool is_template_only;            /* parsed for /apply-template */
    bool add_generation_prompt;       /* chat: end the prompt with the assistant's header; true
                                         unless /apply-template sends false */
    const char *prompt_text;          /* completion: prompt as text, or NULL */
    size_t n_prompt_text_bytes;       /* bytes of prompt_text */
    int32_t *prompt_tokens;           /* completion: prompt as token ids (owned), or NULL */
    int64_t n_prompt_tokens;          /* entries in prompt_tokens */
    int64_t max_tokens;               /* -1 when absent: up to the context */
    quill_sampling_params sampling;   /* logit_biases points into logit_biases below */
    quill_logit_bias *logit_biases;   /* owned, n_logit_biases entries */
    const char *stop[QUILL_OPENAI_MAX_STOP]; /* borrowed from root */
    int32_t n_stop;
    int32_t n_choices;                /* n, 1 by default */
    bool wants_logprobs;              /* chat: logprobs true; completion: logprobs given */
    int32_t n_top_logprobs;           /* alternatives per token, 0..QUILL_MAX_TOP_LOGPROBS */
    bool is_stream;                   /* stream: true */
    bool wants_stream_usage;          /* stream_options.include_usage */
    bool ignore_eos;                  /* Quill extension (as in llama.cpp): generate past
                                         end-of-generation tokens, for benchmarks */
    const char *user;                 /* NULL when absent */
    const char *feature;              /* metadata.feature, or NULL */
    const char *body;                 /* the raw body, only while parsing (to quote numbers
                                         json-c cannot hold); NULL afterwards */
    size_t n_body_bytes;
} quill_openai_request;

/* Parses body (n_bytes of JSON) as a request of the given kind. On failure fills error with a
 * 400 naming the field and returns QUILL_ERR_INVALID_ARG; out is then released. On success the
 * caller releases out with quill__openai_request_release. n_vocab bounds token ids and
 * logit_bias keys (0 skips those checks). */
quill_status quill__openai_request_parse(const char *body, size_t n_bytes, quill_openai_kind kind,
                                         int32_t n_vocab, quill_openai_request *out,
                                         quill_http_error *error);
void quill__openai_request_release(quill_openai_request *request);

/* Parses body as a JSON object (for /tokenize and friends): invalid JSON or a non-object fills
 * error with a 400 and returns QUILL_ERR_INVALID_ARG. Returns a new object in *out, which the
 * caller drops with json_object_put. */
quill_status quill__openai_parse_json_object(const char *body, size_t n_bytes,
                                             struct json_object **out, quill_http_error *error);

#endif
