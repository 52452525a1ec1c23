/*
 * Parser of the chat template language: turns lexer tokens into a tree of statement and
 * expression nodes in the arena. The tree is immutable once built, so one parsed template can
 * be rendered from many threads at once.
 */
#ifndef QUILL_CHAT_PARSER_H
#define QUILL_CHAT_PARSER_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/value.h"

typedef enum quill_chat_node_kind {
    /* Statements. */
    QUILL_CHAT_NODE_TEXT,         /* value: the literal text */
    QUILL_CHAT_NODE_OUTPUT,       /* {{ a }} */
    QUILL_CHAT_NODE_IF,           /* if a: body, else else_body (elif nests an IF there) */
    QUILL_CHAT_NODE_FOR,          /* for names in a [if b]: body, else else_body */
    QUILL_CHAT_NODE_SET,          /* names = a, or name.attribute = a */
    QUILL_CHAT_NODE_SET_BLOCK,    /* name = rendered body, through the filters in args */
    QUILL_CHAT_NODE_MACRO,        /* name(names = args defaults): body */
    QUILL_CHAT_NODE_CALL_BLOCK,   /* call a (a CALL node) with body as caller() */
    QUILL_CHAT_NODE_FILTER_BLOCK, /* body rendered through the filters in args */
    QUILL_CHAT_NODE_BREAK,
    QUILL_CHAT_NODE_CONTINUE,
    QUILL_CHAT_NODE_GENERATION, /* body, rendered as is */
    QUILL_CHAT_NODE_DO,         /* evaluate a, print nothing */
    /* Expressions. */
    QUILL_CHAT_NODE_LITERAL,   /* value */
    QUILL_CHAT_NODE_NAME,      /* name */
    QUILL_CHAT_NODE_LIST,      /* args */
    QUILL_CHAT_NODE_TUPLE,     /* args */
    QUILL_CHAT_NODE_DICT,      /* args: key, value, key, value ... */
    QUILL_CHAT_NODE_ATTRIBUTE, /* a.name */
    QUILL_CHAT_NODE_ITEM,      /* a[b] */
    QUILL_CHAT_NODE_SLICE,     /* a[b:c:d], each of b, c, d optional */
    QUILL_CHAT_NODE_CALL,      /* a(args, keyword names = keyword values) */
    QUILL_CHAT_NODE_FILTER,    /* a | name(args ...); a is NULL inside filter blocks */
    QUILL_CHAT_NODE_TEST,      /* a is [not] name(args ...); is_negated */
    QUILL_CHAT_NODE_UNARY,     /* operator a: "-", "+" */
    QUILL_CHAT_NODE_BINARY,    /* a operator b: + - * / // % ** ~ == != < <= > >= in, "not in" */
    QUILL_CHAT_NODE_AND,
    QUILL_CHAT_NODE_OR,
    QUILL_CHAT_NODE_NOT,
    QUILL_CHAT_NODE_CONDITIONAL /* b if a else c; c optional */
} quill_chat_node_kind;

typedef struct quill_chat_node quill_chat_node;

typedef struct quill_chat_node_list {
    quill_chat_node **items;
    size_t n_items;
} quill_chat_node_list;

struct quill_chat_node {
    quill_chat_node_kind kind;
    int line;                  /* 1-based source line, for messages */
    const char *name;          /* see the kinds above */
    const char *operator_text; /* UNARY, BINARY */
    const char **names;        /* FOR targets, SET targets, MACRO parameters */
    size_t n_names;
    quill_chat_value value; /* TEXT, LITERAL */
    quill_chat_node *a;
    quill_chat_node *b;
    quill_chat_node *c;
    quill_chat_node *d;
    quill_chat_node_list args;  /* positional arguments, items, or filters */
    const char **keyword_names; /* CALL, FILTER, TEST keyword arguments */
    quill_chat_node_list keyword_values;
    quill_chat_node_list body;
    quill_chat_node_list else_body;
    bool is_negated;       /* TEST: `is not` */
    bool is_recursive;     /* FOR: `recursive` */
    bool has_tuple_target; /* FOR, SET: `a, b` */
};

enum {
    QUILL_CHAT_MAX_PARSE_DEPTH = 200 /* nesting of blocks and expressions in the source */
};

/* Parses source into a statement list; errors jump with QUILL_ERR_FORMAT naming line and
 * column. */
quill_chat_node_list quill__chat_parse(quill_chat_arena *arena, const char *source, size_t n_bytes);

#endif
