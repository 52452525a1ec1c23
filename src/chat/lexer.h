/*
 * Lexer of the chat template language: splits a Jinja source into text and tag tokens, applying
 * the whitespace rules that Hugging Face renders with (trim_blocks, lstrip_blocks, `-` and `+`
 * modifiers, one trailing newline of the source dropped). Tokens live in the arena.
 */
#ifndef QUILL_CHAT_LEXER_H
#define QUILL_CHAT_LEXER_H

#include <stddef.h>
#include <stdint.h>

#include "chat/value.h"

typedef enum quill_chat_token_kind {
    QUILL_CHAT_TOKEN_TEXT,        /* literal template text, whitespace rules applied */
    QUILL_CHAT_TOKEN_VAR_BEGIN,   /* {{ */
    QUILL_CHAT_TOKEN_VAR_END,     /* }} */
    QUILL_CHAT_TOKEN_BLOCK_BEGIN, /* {% */
    QUILL_CHAT_TOKEN_BLOCK_END,   /* %} */
    QUILL_CHAT_TOKEN_NAME,
    QUILL_CHAT_TOKEN_STRING, /* text is the decoded literal */
    QUILL_CHAT_TOKEN_INT,
    QUILL_CHAT_TOKEN_FLOAT,
    QUILL_CHAT_TOKEN_OPERATOR, /* text is the operator: "+", "//", "==", "(" ... */
    QUILL_CHAT_TOKEN_END       /* end of the source */
} quill_chat_token_kind;

typedef struct quill_chat_token {
    quill_chat_token_kind kind;
    const char *text; /* NUL-terminated, in the arena or the normalized source */
    size_t n_text;
    int64_t integer; /* INT */
    double number;   /* FLOAT */
    int line;        /* 1-based */
    int column;      /* 1-based, in bytes */
} quill_chat_token;

/* Tokenizes source; a lexical error jumps with QUILL_ERR_FORMAT naming line and column. */
void quill__chat_lex(quill_chat_arena *arena, const char *source, size_t n_bytes,
                     quill_chat_token **tokens, size_t *n_tokens);

#endif
