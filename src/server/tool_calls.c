/*
 * Tool-call parsing, as described in tool_calls.h.
 *
 * The parser keeps every byte fed and a count of the bytes already decided. Each feed scans the
 * undecided tail. Outside a call block, text before a marker (or before the longest tail that
 * could still grow into one) is released as content, except trailing whitespace, which waits to
 * see whether a call follows. A marker opens a block that ends at its close tag (Hermes) or at the
 * end of the reply (Llama 3 and Mistral). A complete block that holds valid calls becomes calls.
 * Any other block is released verbatim as content. Because every decision depends only on bytes
 * already fed and on whether the reply has ended, the result does not depend on how the text was
 * split into pieces.
 */
#include "server/tool_calls.h"

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "base/alloc.h"

typedef struct format_markers {
    const char *open;       /* opens a block anywhere in the reply */
    const char *close;      /* ends a block, or NULL: the block runs to the end of the reply */
    const char *open_first; /* opens a block when it is the reply's first non-space text (the
                               bare JSON that remains when the template's marker is a control
                               token that the detokenizer leaves out), or NULL */
} format_markers;

static const format_markers hermes_markers = {"<tool_call>", "</tool_call>", NULL};
static const format_markers llama3_markers = {"<|python_tag|>", NULL, "{"};
static const format_markers mistral_markers = {"[TOOL_CALLS]", NULL, "["};

static const format_markers *markers_of(quill_tool_call_format format) {
    switch (format) {
    case QUILL_TOOL_CALL_FORMAT_HERMES:
        return &hermes_markers;
    case QUILL_TOOL_CALL_FORMAT_LLAMA3:
        return &llama3_markers;
    case QUILL_TOOL_CALL_FORMAT_MISTRAL:
        return &mistral_markers;
    case QUILL_TOOL_CALL_FORMAT_NONE:
    default:
        return NULL;
    }
}

static bool is_space(char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Returns the offset of the first occurrence of needle in text[from, n_bytes), or SIZE_MAX. */
static size_t find_text(const char *text, size_t n_bytes, size_t from, const char *needle) {
    size_t n_needle = strlen(needle);
    for (size_t at = from; at + n_needle <= n_bytes; at++) {
        if (memcmp(text + at, needle, n_needle) == 0) {
            return at;
        }
    }
    return SIZE_MAX;
}

/* Returns the offset of the first tail of text[from, n_bytes) that is a proper prefix of marker
 * (and so could still become it), or n_bytes when there is none. */
static size_t find_partial_marker(const char *text, size_t n_bytes, size_t from,
                                  const char *marker) {
    size_t n_marker = strlen(marker);
    size_t start = n_bytes - from >= n_marker ? n_bytes - n_marker + 1 : from;
    for (size_t at = start; at < n_bytes; at++) {
        if (memcmp(text + at, marker, n_bytes - at) == 0) {
            return at;
        }
    }
    return n_bytes;
}

quill_tool_call_format quill__tool_call_format_detect(const char *template_source) {
    if (template_source == NULL) {
        return QUILL_TOOL_CALL_FORMAT_NONE;
    }
    if (strstr(template_source, "<tool_call>") != NULL) {
        return QUILL_TOOL_CALL_FORMAT_HERMES;
    }
    if (strstr(template_source, "[TOOL_CALLS]") != NULL) {
        return QUILL_TOOL_CALL_FORMAT_MISTRAL;
    }
    bool is_llama3 = strstr(template_source, "<|start_header_id|>") != NULL;
    bool has_tools = strstr(template_source, "<|python_tag|>") != NULL ||
                     strstr(template_source, "ipython") != NULL;
    if (is_llama3 && has_tools) {
        return QUILL_TOOL_CALL_FORMAT_LLAMA3;
    }
    return QUILL_TOOL_CALL_FORMAT_NONE;
}

const char *quill__tool_call_format_name(quill_tool_call_format format) {
    switch (format) {
    case QUILL_TOOL_CALL_FORMAT_HERMES:
        return "hermes";
    case QUILL_TOOL_CALL_FORMAT_LLAMA3:
        return "llama3";
    case QUILL_TOOL_CALL_FORMAT_MISTRAL:
        return "mistral";
    case QUILL_TOOL_CALL_FORMAT_NONE:
    default:
        return "none";
    }
}

void quill__tool_call_parser_init(quill_tool_call_parser *parser, quill_tool_call_format format,
                                  struct json_object *tools, const char *id_stem,
                                  bool is_parallel) {
    memset(parser, 0, sizeof(*parser));
    parser->format = format;
    parser->tools = tools;
    parser->is_parallel = is_parallel;
    snprintf(parser->id_stem, sizeof(parser->id_stem), "%s", id_stem != NULL ? id_stem : "");
    quill__strbuf_init(&parser->text);
}

static void call_release(quill_tool_call *call) {
    quill__free(call->name);
    quill__free(call->arguments);
    memset(call, 0, sizeof(*call));
}

void quill__tool_call_parser_release(quill_tool_call_parser *parser) {
    if (parser == NULL) {
        return;
    }
    for (size_t i = 0; i < parser->n_calls; i++) {
        call_release(&parser->calls[i]);
    }
    quill__free(parser->calls);
    quill__strbuf_release(&parser->text);
    memset(parser, 0, sizeof(*parser));
}

/* True when name is the function name of one of tools' entries. */
static bool is_tool_name(struct json_object *tools, const char *name) {
    if (tools == NULL || !json_object_is_type(tools, json_type_array)) {
        return false;
    }
    size_t n_tools = json_object_array_length(tools);
    for (size_t i = 0; i < n_tools; i++) {
        struct json_object *function = NULL;
        struct json_object *tool_name = NULL;
        struct json_object *tool = json_object_array_get_idx(tools, i);
        if (json_object_object_get_ex(tool, "function", &function) &&
            json_object_object_get_ex(function, "name", &tool_name) &&
            json_object_is_type(tool_name, json_type_string) &&
            strcmp(json_object_get_string(tool_name), name) == 0) {
            return true;
        }
    }
    return false;
}

/* Parses one JSON value at the start of text[0, n_bytes) and sets *n_used to its length.
 * Returns a new value, or NULL when the text does not start with a complete value. */
static struct json_object *parse_json_prefix(const char *text, size_t n_bytes, size_t *n_used) {
    *n_used = 0;
    if (n_bytes == 0 || n_bytes > INT32_MAX) {
        return NULL;
    }
    json_tokener *tokener = json_tokener_new();
    if (tokener == NULL) {
        return NULL;
    }
    json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *value = json_tokener_parse_ex(tokener, text, (int)n_bytes);
    if (value != NULL && json_tokener_get_error(tokener) == json_tokener_success) {
        *n_used = json_tokener_get_parse_end(tokener);
    } else {
        json_object_put(value);
        value = NULL;
    }
    json_tokener_free(tokener);
    return value;
}

/* Fills call from a call object {"name": ..., "arguments" or "parameters": {...}}. The
 * arguments may also come as a string of JSON text, which is kept as it is. Returns false when
 * the object is not a call to one of tools, or on NOMEM (with *is_nomem set). */
static bool call_from_object(struct json_object *object, struct json_object *tools,
                             quill_tool_call *call, bool *is_nomem) {
    struct json_object *name = NULL;
    struct json_object *arguments = NULL;
    memset(call, 0, sizeof(*call));
    if (!json_object_is_type(object, json_type_object) ||
        !json_object_object_get_ex(object, "name", &name) ||
        !json_object_is_type(name, json_type_string) ||
        !is_tool_name(tools, json_object_get_string(name))) {
        return false;
    }
    if (!json_object_object_get_ex(object, "arguments", &arguments)) {
        json_object_object_get_ex(object, "parameters", &arguments);
    }

    const char *arguments_text = "{}";
    if (json_object_is_type(arguments, json_type_string)) {
        arguments_text = json_object_get_string(arguments);
    } else if (json_object_is_type(arguments, json_type_object)) {
        arguments_text = json_object_to_json_string_ext(
            arguments, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    } else if (arguments != NULL) {
        return false;
    }
    call->name = quill__strdup(json_object_get_string(name));
    call->arguments = quill__strdup(arguments_text);
    if (call->name == NULL || call->arguments == NULL) {
        call_release(call);
        *is_nomem = true;
        return false;
    }
    return true;
}

/* Parses a block body into calls: one call object (Hermes), call objects separated by
 * whitespace or ';' (Llama 3), or an array of call objects (Mistral). Every call must be valid,
 * or none is taken. Returns QUILL_OK with *n_parsed 0 when the body is not calls. */
static quill_status parse_block_calls(const quill_tool_call_parser *parser, const char *body,
                                      size_t n_body_bytes, quill_tool_call *calls,
                                      size_t max_calls, size_t *n_parsed) {
    *n_parsed = 0;
    const char *open = markers_of(parser->format)->open;
    size_t n_open = strlen(open);
    size_t n_calls = 0;
    size_t at = 0;
    bool is_nomem = false;
    bool is_valid = true;
    while (is_valid && at < n_body_bytes) {
        while (at < n_body_bytes && (is_space(body[at]) || (at > 0 && body[at] == ';'))) {
            at++;
        }
        /* A block opened by its first character ("[" of Mistral) may still start with the
         * marker itself. */
        if (n_body_bytes - at >= n_open && memcmp(body + at, open, n_open) == 0) {
            at += n_open;
            continue;
        }
        if (at == n_body_bytes) {
            break;
        }
        size_t n_used = 0;
        struct json_object *value = parse_json_prefix(body + at, n_body_bytes - at, &n_used);
        bool is_array = json_object_is_type(value, json_type_array);
        size_t n_items = is_array ? json_object_array_length(value) : 1;
        is_valid = value != NULL && n_items > 0 && n_calls + n_items <= max_calls &&
                   (is_array || parser->format != QUILL_TOOL_CALL_FORMAT_MISTRAL);
        for (size_t i = 0; is_valid && i < n_items; i++) {
            struct json_object *item = is_array ? json_object_array_get_idx(value, i) : value;
            is_valid = call_from_object(item, parser->tools, &calls[n_calls], &is_nomem);
            n_calls += is_valid ? 1 : 0;
        }
        json_object_put(value);
        at += n_used;
        /* Hermes puts exactly one call in each block. */
        is_valid = is_valid && (parser->format != QUILL_TOOL_CALL_FORMAT_HERMES ||
                                n_calls == 1);
    }
    if (!is_valid || n_calls == 0) {
        for (size_t i = 0; i < n_calls; i++) {
            call_release(&calls[i]);
        }
        n_calls = 0;
    }
    *n_parsed = n_calls;
    return is_nomem ? quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for a tool call")
                    : QUILL_OK;
}

/* Appends a parsed call to the parser's list with its id, or drops it when parallel calls are
 * off and a call is already listed. Takes ownership of call. */
static quill_status add_call(quill_tool_call_parser *parser, quill_tool_call *call) {
    if (!parser->is_parallel && parser->n_calls > 0) {
        call_release(call);
        return QUILL_OK;
    }
    if (parser->n_calls == parser->calls_capacity) {
        size_t capacity = parser->calls_capacity > 0 ? parser->calls_capacity * 2 : 4;
        quill_tool_call *grown = quill__realloc_array(parser->calls, capacity, sizeof(*grown));
        if (grown == NULL) {
            call_release(call);
            return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for %zu tool calls",
                                   capacity);
        }
        parser->calls = grown;
        parser->calls_capacity = capacity;
    }
    snprintf(call->id, sizeof(call->id), "call_%s_%zu", parser->id_stem, parser->n_calls);
    parser->calls[parser->n_calls++] = *call;
    memset(call, 0, sizeof(*call));
    return QUILL_OK;
}

/* Releases text[from, to) as content. */
static quill_status release_content(quill_tool_call_parser *parser, size_t from, size_t to,
                                    quill_strbuf *content) {
    for (size_t i = from; i < to; i++) {
        if (!is_space(parser->text.data[i])) {
            parser->has_content = true;
            parser->is_after_call = false;
            break;
        }
    }
    return to > from ? quill__strbuf_append(content, parser->text.data + from, to - from)
                     : QUILL_OK;
}

/* Maximum calls in one block. A longer Mistral array stays content. */
enum { MAX_CALLS_PER_BLOCK = 64 };

/* Decides the block that starts at n_decided_bytes and whose body is [block_body_offset,
 * body_end). Its calls are added, or else the whole block up to block_end is content. */
static quill_status decide_block(quill_tool_call_parser *parser, size_t body_end,
                                 size_t block_end, quill_strbuf *content) {
    quill_tool_call *calls = quill__calloc(MAX_CALLS_PER_BLOCK, sizeof(*calls));
    if (calls == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "server: out of memory for tool calls");
    }
    size_t n_parsed = 0;
    const char *body = parser->text.data + parser->block_body_offset;
    quill_status status = parse_block_calls(parser, body, body_end - parser->block_body_offset,
                                            calls, MAX_CALLS_PER_BLOCK, &n_parsed);
    for (size_t i = 0; status == QUILL_OK && i < n_parsed; i++) {
        status = add_call(parser, &calls[i]);
    }
    for (size_t i = 0; i < n_parsed; i++) {
        call_release(&calls[i]); /* those left after a failed add_call */
    }
    quill__free(calls);
    if (status == QUILL_OK && n_parsed > 0) {
        parser->is_after_call = true;
    } else if (status == QUILL_OK) {
        status = release_content(parser, parser->n_decided_bytes, block_end, content);
    }
    parser->n_decided_bytes = block_end;
    parser->is_in_block = false;
    return status;
}

/* Reads the open block: decides it when its close tag arrived or the reply ended. Sets
 * *is_waiting when it needs more text. */
static quill_status scan_block(quill_tool_call_parser *parser, bool is_end, quill_strbuf *content,
                               bool *is_waiting) {
    const format_markers *markers = markers_of(parser->format);
    size_t n_text = parser->text.length;
    *is_waiting = false;
    if (!parser->is_block_to_end) {
        size_t close = find_text(parser->text.data, n_text, parser->block_body_offset,
                                 markers->close);
        if (close != SIZE_MAX) {
            return decide_block(parser, close, close + strlen(markers->close), content);
        }
    }
    if (!is_end) {
        *is_waiting = true;
        return QUILL_OK;
    }
    /* The reply ended inside the block: a Hermes call whose close tag never came still counts
     * when its JSON is complete. */
    return decide_block(parser, n_text, n_text, content);
}

/* Opens a block whose marker starts at marker_offset. The content before it was released up to
 * n_decided_bytes, and the whitespace between stays undecided. It is dropped if the block holds
 * calls and released as content if not. */
static void open_block(quill_tool_call_parser *parser, size_t marker_offset, size_t n_marker,
                       bool is_to_end) {
    parser->is_in_block = true;
    parser->is_block_to_end = is_to_end;
    parser->block_body_offset = marker_offset + n_marker;
}

/* Scans text outside a block: releases content and opens the next block. Sets *is_waiting when
 * it needs more text. */
static quill_status scan_text(quill_tool_call_parser *parser, bool is_end, quill_strbuf *content,
                              bool *is_waiting) {
    const format_markers *markers = markers_of(parser->format);
    const char *text = parser->text.data;
    size_t n_text = parser->text.length;
    size_t start = parser->n_decided_bytes;
    *is_waiting = true;

    /* Leading whitespace waits until the first other character shows what follows it. */
    size_t first = start;
    while (first < n_text && is_space(text[first])) {
        first++;
    }
    /* NOTE: a Llama 3 or Mistral reply whose first character is "{" or "[" is held back until
     * the reply ends, so a plain-text reply that starts that way is not streamed. */
    bool is_reply_start = !parser->has_content && parser->n_calls == 0;
    if (first < n_text && is_reply_start && markers->open_first != NULL &&
        text[first] == markers->open_first[0]) {
        open_block(parser, first, 0, true);
        *is_waiting = false;
        return QUILL_OK;
    }

    /* Content runs to the next marker, or to a tail that could still grow into one. */
    size_t marker = find_text(text, n_text, first, markers->open);
    size_t content_end = marker;
    if (marker == SIZE_MAX) {
        content_end = is_end ? n_text : find_partial_marker(text, n_text, first, markers->open);
    }
    size_t trimmed_end = content_end;
    while (trimmed_end > first && is_space(text[trimmed_end - 1])) {
        trimmed_end--;
    }
    /* Whitespace after a call is dropped; other text keeps its leading whitespace. */
    size_t content_start = parser->is_after_call ? first : start;
    if (trimmed_end > first) {
        quill_status status = release_content(parser, content_start, trimmed_end, content);
        if (status != QUILL_OK) {
            return status;
        }
        parser->n_decided_bytes = trimmed_end;
    }

    if (marker != SIZE_MAX) {
        open_block(parser, marker, strlen(markers->open), markers->close == NULL);
        *is_waiting = false;
        return QUILL_OK;
    }
    if (is_end) {
        /* Trailing whitespace of a reply without calls is content, and beside calls it is
         * dropped. */
        size_t from = parser->n_decided_bytes;
        quill_status status = QUILL_OK;
        if (parser->n_calls == 0 && !parser->is_after_call) {
            status = release_content(parser, from, n_text, content);
        }
        parser->n_decided_bytes = n_text;
        return status;
    }
    return QUILL_OK;
}

/* Decides as much of the undecided text as the bytes so far allow. */
static quill_status scan(quill_tool_call_parser *parser, bool is_end, quill_strbuf *content) {
    const format_markers *markers = markers_of(parser->format);
    if (markers == NULL) {
        size_t from = parser->n_decided_bytes;
        parser->n_decided_bytes = parser->text.length;
        return release_content(parser, from, parser->text.length, content);
    }
    quill_status status = QUILL_OK;
    bool is_waiting = false;
    while (status == QUILL_OK && !is_waiting &&
           (parser->n_decided_bytes < parser->text.length || parser->is_in_block)) {
        if (parser->is_in_block) {
            status = scan_block(parser, is_end, content, &is_waiting);
        } else {
            status = scan_text(parser, is_end, content, &is_waiting);
        }
    }
    return status;
}

quill_status quill__tool_call_parser_feed(quill_tool_call_parser *parser, const char *bytes,
                                          size_t n_bytes, quill_strbuf *content) {
    if (n_bytes == 0 || parser->is_finished) {
        return QUILL_OK;
    }
    quill_status status = quill__strbuf_append(&parser->text, bytes, n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    return scan(parser, false, content);
}

quill_status quill__tool_call_parser_finish(quill_tool_call_parser *parser,
                                            quill_strbuf *content) {
    if (parser->is_finished) {
        return QUILL_OK;
    }
    parser->is_finished = true;
    return scan(parser, true, content);
}

quill_status quill__tool_calls_append_json(quill_strbuf *out, const quill_tool_call *calls,
                                           size_t first, size_t n_calls, bool is_delta) {
    quill__strbuf_append_char(out, '[');
    for (size_t i = first; i < first + n_calls; i++) {
        quill__strbuf_append_cstr(out, i > first ? ",{" : "{");
        if (is_delta) {
            quill__strbuf_appendf(out, "\"index\":%zu,", i);
        }
        quill__strbuf_appendf(out, "\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
                              calls[i].id);
        quill__strbuf_append_json_string(out, calls[i].name, strlen(calls[i].name));
        quill__strbuf_append_cstr(out, ",\"arguments\":");
        quill__strbuf_append_json_string(out, calls[i].arguments, strlen(calls[i].arguments));
        quill__strbuf_append_cstr(out, "}}");
    }
    quill__strbuf_append_char(out, ']');
    return out->is_failed ? QUILL_ERR_NOMEM : QUILL_OK;
}
