/*
 * Public entry points of the chat template engine: parse once, render many times. A parsed
 * template owns an arena with its syntax tree and is never modified afterwards, so renders on
 * several threads may share it. Each render runs in its own context and arena and returns a
 * copy of the output allocated with quill__malloc.
 */
#include "quill/chat.h"

#include <json-c/json.h>
#include <string.h>

#include "base/alloc.h"
#include "chat/interpreter.h"
#include "chat/parser.h"

/* NOTE: the render arena frees nothing until the render ends, so a template that grows a string
 * step by step (ns.text = ns.text + part) uses memory quadratic in the number of steps and can
 * fail with the memory limit on very long conversations. */
enum {
    PARSE_ARENA_LIMIT_BYTES = 64 << 20, /* syntax tree of one template */
    RENDER_ARENA_MIN_BYTES = 256 << 20, /* values of one render; 16 x max_output_bytes if more */
    DEFAULT_MAX_OUTPUT_BYTES = 4 << 20
};

struct quill_chat_template {
    quill_chat_arena arena; /* owns the tree */
    quill_chat_node_list statements;
    bool uses_content_parts;
    const quill_chat_node *unknown_filter; /* first filter the interpreter lacks, or NULL */
};

/* ChatML. An assistant message that calls tools may have no content, and each of its calls is
 * written as a <tool_call> block with the function's JSON after the role line, as Qwen2.5's
 * ChatML does. */
static const char default_template[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] }}"
    "{%- if message['content'] is string %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{{- '\\n<tool_call>\\n' + call['function'] | tojson + '\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- elif message['content'] is not string %}{{- '\\n' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const char *quill_chat_default_template(void) {
    return default_template;
}

/* True when node reads an attribute or item named "content". */
static bool mentions_content(const quill_chat_node *node, int depth) {
    if (node == NULL || depth > QUILL_CHAT_MAX_PARSE_DEPTH) {
        return false;
    }
    if (node->kind == QUILL_CHAT_NODE_ATTRIBUTE && strcmp(node->name, "content") == 0) {
        return true;
    }
    if (node->kind == QUILL_CHAT_NODE_NAME && strcmp(node->name, "content") == 0) {
        return true;
    }
    if (node->kind == QUILL_CHAT_NODE_ITEM && node->b != NULL &&
        node->b->kind == QUILL_CHAT_NODE_LITERAL && node->b->value.kind == QUILL_CHAT_STRING &&
        strcmp(node->b->value.as.string->bytes, "content") == 0) {
        return true;
    }
    return mentions_content(node->a, depth + 1) ||
           (node->kind == QUILL_CHAT_NODE_ITEM ? false : mentions_content(node->b, depth + 1));
}

/* A test of one node, without its children. find_node applies it to a whole tree. */
typedef bool (*node_predicate)(const quill_chat_node *node);

static const quill_chat_node *find_in_list(const quill_chat_node_list *list,
                                           node_predicate matches, int depth);

/* Returns the first node of the tree under node, node included, that matches, or NULL. */
static const quill_chat_node *find_node(const quill_chat_node *node, node_predicate matches,
                                        int depth) {
    if (node == NULL || depth > QUILL_CHAT_MAX_PARSE_DEPTH) {
        return NULL;
    }
    if (matches(node)) {
        return node;
    }
    const quill_chat_node *children[] = {node->a, node->b, node->c, node->d};
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++) {
        const quill_chat_node *found = find_node(children[i], matches, depth + 1);
        if (found != NULL) {
            return found;
        }
    }
    const quill_chat_node_list *lists[] = {&node->args, &node->keyword_values, &node->body,
                                           &node->else_body};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        const quill_chat_node *found = find_in_list(lists[i], matches, depth + 1);
        if (found != NULL) {
            return found;
        }
    }
    return NULL;
}

static const quill_chat_node *find_in_list(const quill_chat_node_list *list,
                                           node_predicate matches, int depth) {
    for (size_t i = 0; i < list->n_items; i++) {
        const quill_chat_node *found = find_node(list->items[i], matches, depth);
        if (found != NULL) {
            return found;
        }
    }
    return NULL;
}

/* Matches `for part in message.content` or a selectattr/map/select over the content. */
static bool iterates_content_parts(const quill_chat_node *node) {
    if (node->kind == QUILL_CHAT_NODE_FOR && mentions_content(node->a, 0)) {
        return true;
    }
    return node->kind == QUILL_CHAT_NODE_FILTER &&
           (strcmp(node->name, "selectattr") == 0 || strcmp(node->name, "rejectattr") == 0 ||
            strcmp(node->name, "map") == 0 || strcmp(node->name, "select") == 0) &&
           mentions_content(node->a, 0);
}

/* Matches a filter that the interpreter lacks, for quill_chat_template_check_filters. */
static bool is_unknown_filter(const quill_chat_node *node) {
    return node->kind == QUILL_CHAT_NODE_FILTER && !quill__chat_filter_exists(node->name);
}

quill_status quill_chat_template_create(const char *source, size_t n_bytes,
                                        quill_chat_template **out) {
    if (out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "chat template: out must not be NULL");
    }
    *out = NULL;
    if (source == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "chat template: source must not be NULL");
    }
    quill_chat_template *chat_template = quill__calloc(1, sizeof(*chat_template));
    if (chat_template == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "chat template: out of memory");
    }
    jmp_buf recovery;
    quill__chat_arena_init(&chat_template->arena, PARSE_ARENA_LIMIT_BYTES, &recovery);
    int jumped = setjmp(recovery);
    if (jumped != 0) {
        quill__chat_arena_release(&chat_template->arena);
        quill__free(chat_template);
        return (quill_status)jumped;
    }
    chat_template->statements = quill__chat_parse(&chat_template->arena, source, n_bytes);
    chat_template->unknown_filter = find_in_list(&chat_template->statements, is_unknown_filter, 0);
    chat_template->uses_content_parts =
        find_in_list(&chat_template->statements, iterates_content_parts, 0) != NULL;
    chat_template->arena.recovery = NULL;
    *out = chat_template;
    return QUILL_OK;
}

void quill_chat_template_destroy(quill_chat_template *chat_template) {
    if (chat_template == NULL) {
        return;
    }
    quill__chat_arena_release(&chat_template->arena);
    quill__free(chat_template);
}

quill_status quill_chat_template_check_filters(const quill_chat_template *chat_template) {
    const quill_chat_node *unknown = chat_template->unknown_filter;
    if (unknown == NULL) {
        return QUILL_OK;
    }
    return quill_error_set(QUILL_ERR_UNSUPPORTED, "chat template: line %d: no filter named '%s'",
                           unknown->line, unknown->name);
}

bool quill_chat_template_uses_content_parts(const quill_chat_template *chat_template) {
    return chat_template != NULL && chat_template->uses_content_parts;
}

quill_chat_render_params quill_chat_render_params_default(void) {
    quill_chat_render_params params;
    memset(&params, 0, sizeof(params));
    params.now_unix_seconds = -1;
    return params;
}

static void set_json_variable(quill_chat_context *context, const char *name,
                              struct json_object *json) {
    quill__chat_frame_set(context, context->globals, name,
                          quill__chat_from_json(&context->arena, json, false));
}

static void set_token_variable(quill_chat_context *context, const char *name, const char *text) {
    if (text == NULL) {
        return;
    }
    /* Special-token texts come from the model, so the tokenizer may match them. */
    quill__chat_frame_set(context, context->globals, name,
                          quill__chat_string_new(&context->arena, text, strlen(text), true));
}

/* Runs the render inside the context; failures jump to context->recovery. */
static void render_into(quill_chat_context *context, const quill_chat_template *chat_template,
                        const quill_chat_render_params *params, quill_chat_builder *output) {
    context->globals = quill__chat_arena_alloc(&context->arena, sizeof(quill_chat_frame));
    context->frame = context->globals;
    context->output = output;

    /* Variables in the order transformers passes them; later ones replace earlier ones. */
    set_json_variable(context, "messages", params->messages);
    if (params->tools != NULL) {
        set_json_variable(context, "tools", params->tools);
    } else {
        quill__chat_frame_set(context, context->globals, "tools", quill__chat_none());
    }
    quill__chat_frame_set(context, context->globals, "documents", quill__chat_none());
    quill__chat_frame_set(context, context->globals, "add_generation_prompt",
                          quill__chat_bool(params->add_generation_prompt));
    set_token_variable(context, "bos_token", params->bos_token);
    set_token_variable(context, "eos_token", params->eos_token);
    if (params->extra_vars != NULL) {
        json_object_object_foreach(params->extra_vars, key, value) {
            char *name = quill__chat_arena_strndup(&context->arena, key, strlen(key));
            set_json_variable(context, name, value);
        }
    }

    quill__chat_execute(context, &chat_template->statements);
}

quill_status quill_chat_template_render(const quill_chat_template *chat_template,
                                        const quill_chat_render_params *params,
                                        quill_chat_rendered *out) {
    if (out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "chat template: out must not be NULL");
    }
    memset(out, 0, sizeof(*out));
    if (chat_template == NULL || params == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat template: template and params must not be NULL");
    }
    if (params->messages == NULL || !json_object_is_type(params->messages, json_type_array)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat template: messages must be a JSON array");
    }
    if (params->extra_vars != NULL && !json_object_is_type(params->extra_vars, json_type_object)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat template: extra_vars must be a JSON object or NULL");
    }

    quill_chat_context *context = quill__calloc(1, sizeof(*context));
    if (context == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "chat template: out of memory");
    }
    size_t max_output_bytes =
        params->max_output_bytes != 0 ? params->max_output_bytes : DEFAULT_MAX_OUTPUT_BYTES;
    size_t arena_limit = RENDER_ARENA_MIN_BYTES;
    if (max_output_bytes < SIZE_MAX / 16 && max_output_bytes * 16 > arena_limit) {
        arena_limit = max_output_bytes * 16;
    }
    quill__chat_arena_init(&context->arena, arena_limit, &context->recovery);
    context->arena.limit_string_bytes = max_output_bytes;
    context->now_unix_seconds = params->now_unix_seconds;
    quill_chat_builder output = {0};

    quill_status status = QUILL_OK;
    int jumped = setjmp(context->recovery);
    if (jumped != 0) {
        status = (quill_status)jumped;
        goto cleanup;
    }
    render_into(context, chat_template, params, &output);

    /* Copy the result out of the arena. */
    out->text = quill__malloc(output.n_bytes + 1);
    out->segments = quill__malloc_array(output.n_segments + 1, sizeof(*out->segments));
    if (out->text == NULL || out->segments == NULL) {
        quill__free(out->text);
        quill__free(out->segments);
        memset(out, 0, sizeof(*out));
        status = quill_error_set(QUILL_ERR_NOMEM, "chat template: out of memory copying %zu bytes",
                                 output.n_bytes);
        goto cleanup;
    }
    if (output.n_bytes > 0) {
        memcpy(out->text, output.bytes, output.n_bytes);
        memcpy(out->segments, output.segments, output.n_segments * sizeof(*out->segments));
    }
    out->text[output.n_bytes] = '\0';
    out->n_bytes = output.n_bytes;
    out->n_segments = output.n_segments;

cleanup:
    quill__chat_arena_release(&context->arena);
    quill__free(context);
    return status;
}

void quill_chat_rendered_release(quill_chat_rendered *rendered) {
    if (rendered == NULL) {
        return;
    }
    quill__free(rendered->text);
    quill__free(rendered->segments);
    memset(rendered, 0, sizeof(*rendered));
}
