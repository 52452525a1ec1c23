/*
 * Chat templates: a Jinja interpreter, written for the subset that real model templates use,
 * that renders an OpenAI-style message list into a prompt. Templates are untrusted data from
 * model files: parsing and rendering are bounded in recursion depth, loop iterations and output
 * size, and every failure is a status with a message, never a crash.
 *
 * The rendered text records which byte ranges came from the template's own literals and which
 * from data (message contents, tool definitions), so that the tokenizer can match special tokens
 * only in the template's text. A parsed template is immutable: safe from any thread.
 */
#ifndef QUILL_CHAT_H
#define QUILL_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

struct json_object;
typedef struct quill_chat_template quill_chat_template;

/* The template used when a model has none: ChatML (<|im_start|>role\ncontent<|im_end|>\n). */
QUILL_API const char *quill_chat_default_template(void);

/* Parses source (n_bytes of UTF-8). A syntax error fails with QUILL_ERR_FORMAT naming the line,
 * the column and what was expected. Returns a new template in *out; the caller destroys it. */
QUILL_API quill_status quill_chat_template_create(const char *source, size_t n_bytes,
                                                  quill_chat_template **out);
QUILL_API void quill_chat_template_destroy(quill_chat_template *chat_template);

/* Fails with QUILL_ERR_UNSUPPORTED, naming the line and the filter, when the template applies a
 * filter the interpreter lacks anywhere, even in a branch that rarely runs. Jinja rejects such
 * a template when it compiles it. Quill loads it anyway, and a render fails only when it
 * reaches the filter. A model's template with a rare unsupported branch can thus still serve plain
 * chats, and the caller decides whether to refuse it. */
QUILL_API quill_status quill_chat_template_check_filters(const quill_chat_template *chat_template);

/* True when the template itself iterates over content parts (a list content), so the caller
 * should pass part arrays through instead of joining them into one string. */
QUILL_API bool quill_chat_template_uses_content_parts(const quill_chat_template *chat_template);

typedef struct quill_chat_render_params {
    struct json_object *messages;    /* array of message objects (borrowed) */
    struct json_object *tools;       /* array, or NULL: then `tools` renders as none */
    struct json_object *extra_vars;  /* object of further variables (e.g. enable_thinking), or
                                        NULL */
    const char *bos_token;           /* NULL leaves bos_token undefined */
    const char *eos_token;           /* NULL leaves eos_token undefined */
    bool add_generation_prompt;      /* end with the assistant's turn header */
    int64_t now_unix_seconds;        /* the clock strftime_now reads; negative = current UTC */
    size_t max_output_bytes;         /* output limit; 0 = 4 MiB */
} quill_chat_render_params;

QUILL_API quill_chat_render_params quill_chat_render_params_default(void);

/* A byte range of the rendered text and where it came from. */
typedef struct quill_chat_segment {
    size_t offset;         /* into text */
    size_t n_bytes;        /* length */
    bool is_template_text; /* from a template literal: special tokens may be matched here */
} quill_chat_segment;

typedef struct quill_chat_rendered {
    char *text;                    /* NUL-terminated */
    size_t n_bytes;                /* bytes of text */
    quill_chat_segment *segments;  /* in order, covering text exactly */
    size_t n_segments;
} quill_chat_rendered;

/* Renders. raise_exception(msg) in the template fails with QUILL_ERR_INVALID_ARG and msg as the
 * message; limits exceeded fail with QUILL_ERR_FORMAT. Fills *out; release it with
 * quill_chat_rendered_release. */
QUILL_API quill_status quill_chat_template_render(const quill_chat_template *chat_template,
                                                  const quill_chat_render_params *params,
                                                  quill_chat_rendered *out);
QUILL_API void quill_chat_rendered_release(quill_chat_rendered *rendered);

/* Normalizes an OpenAI message array before rendering: the developer role becomes system;
 * text-part arrays are joined into one string unless keep_content_parts; tool-call `arguments`
 * given as a JSON string are parsed into an object. Unknown roles, missing content and
 * malformed parts fail with QUILL_ERR_INVALID_ARG naming the message index and field. Returns a
 * new array in *out (the caller drops it with json_object_put). */
QUILL_API quill_status quill_chat_messages_normalize(struct json_object *messages,
                                                     bool keep_content_parts,
                                                     struct json_object **out);

QUILL_EXTERN_C_END

#endif
