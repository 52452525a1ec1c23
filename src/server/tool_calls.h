/*
 * Tool calls in model output: detects which tool-call format a chat template teaches the model,
 * then splits the generated text into content and OpenAI tool calls. The parser takes the text
 * piece by piece, as a stream arrives. It holds back any text that could still start a call and
 * releases it as content once it turns out not to be one. A streamed reply and a non-streamed
 * reply of the same text therefore yield the same content and calls. A call whose JSON does
 * not parse, or whose name is not one of the request's tools, stays in the content as text.
 * One thread at a time.
 */
#ifndef QUILL_SERVER_TOOL_CALLS_H
#define QUILL_SERVER_TOOL_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/status.h"

struct json_object;

/* Bytes of a tool call id, NUL included: "call_", the stem, '_' and the call's index. */
#define QUILL_TOOL_CALL_ID_BYTES 64

/* How a model writes its tool calls, detected from its chat template. */
typedef enum quill_tool_call_format {
    QUILL_TOOL_CALL_FORMAT_NONE = 0,    /* unknown: the text stays content */
    QUILL_TOOL_CALL_FORMAT_HERMES = 1,  /* Hermes 2 Pro, Qwen 2.5, Qwen 3: one or more
                                           <tool_call>{"name": ..., "arguments": {...}}</tool_call>
                                           blocks, with content before them */
    QUILL_TOOL_CALL_FORMAT_LLAMA3 = 2,  /* Llama 3.1 to 3.3: the whole reply is
                                           {"name": ..., "parameters": {...}}, possibly after
                                           <|python_tag|> */
    QUILL_TOOL_CALL_FORMAT_MISTRAL = 3, /* Mistral: [TOOL_CALLS][{"name": ..., "arguments":
                                           {...}}, ...] */
} quill_tool_call_format;

/* One parsed call. */
typedef struct quill_tool_call {
    char id[QUILL_TOOL_CALL_ID_BYTES]; /* "call_<id_stem>_<n>", unique when the stem is */
    char *name;                        /* one of the request's tool names; owned */
    char *arguments;                   /* the arguments object as compact JSON text; owned */
} quill_tool_call;

/* Splits one choice's text into content and calls. */
typedef struct quill_tool_call_parser {
    quill_tool_call_format format;
    struct json_object *tools;   /* the request's tools array; borrowed */
    bool is_parallel;            /* false keeps only the first call (parallel_tool_calls) */
    char id_stem[32];            /* middle part of each call id */
    quill_strbuf text;           /* every byte fed so far */
    size_t n_decided_bytes;      /* bytes of text released, dropped or parsed into a call */
    size_t block_body_offset;    /* in a call block: offset of its JSON after the marker */
    bool is_in_block;            /* text from n_decided_bytes on is a call block being read */
    bool is_block_to_end;        /* the block runs to the end of the reply (no close tag) */
    bool has_content;            /* content other than whitespace was released */
    bool is_after_call;          /* nothing but whitespace came since the last call */
    bool is_finished;            /* quill__tool_call_parser_finish ran */
    quill_tool_call *calls;      /* [n_calls], in output order */
    size_t n_calls;
    size_t calls_capacity;
} quill_tool_call_parser;

/* Returns the tool-call format that the chat template source (NUL-terminated, may be NULL)
 * teaches. Like llama.cpp's common/chat.cpp, it looks for the marker text the template writes:
 * "<tool_call>" for Hermes and "[TOOL_CALLS]" for Mistral. Llama 3 needs "<|start_header_id|>"
 * together with "<|python_tag|>" or the "ipython" role. */
quill_tool_call_format quill__tool_call_format_detect(const char *template_source);

/* Returns the format's name for logs ("none", "hermes", "llama3", "mistral"). */
const char *quill__tool_call_format_name(quill_tool_call_format format);

/* Initializes a parser. tools (an array of {"type": "function", "function": {"name": ...}},
 * borrowed until release) lists the names a call may use. id_stem (copied, at most 31 bytes)
 * makes the call ids unique across replies. is_parallel false keeps only the first call and
 * drops later ones. Release with quill__tool_call_parser_release. */
void quill__tool_call_parser_init(quill_tool_call_parser *parser, quill_tool_call_format format,
                                  struct json_object *tools, const char *id_stem,
                                  bool is_parallel);
void quill__tool_call_parser_release(quill_tool_call_parser *parser);

/* Feeds n_bytes of generated text. Appends to content the text now known not to belong to a
 * call, and adds the calls now complete to parser->calls. Fails with QUILL_ERR_NOMEM only. */
quill_status quill__tool_call_parser_feed(quill_tool_call_parser *parser, const char *bytes,
                                          size_t n_bytes, quill_strbuf *content);

/* Ends the reply: decides the text still held back, appending content and adding calls as
 * feed does. Whitespace right before or after a call is dropped. Fails with QUILL_ERR_NOMEM
 * only. */
quill_status quill__tool_call_parser_finish(quill_tool_call_parser *parser, quill_strbuf *content);

/* Appends a "tool_calls" array value ([{"id", "type": "function", "function": {"name",
 * "arguments"}}, ...]) of calls [first, first + n_calls) without a key. With is_delta each entry
 * also carries its "index" (its position in the reply), as streamed chunks do. */
quill_status quill__tool_calls_append_json(quill_strbuf *out, const quill_tool_call *calls,
                                           size_t first, size_t n_calls, bool is_delta);

#endif
