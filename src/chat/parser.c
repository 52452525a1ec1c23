/*
 * Recursive-descent parser of the chat template language, following Jinja's grammar. Operator
 * precedence, lowest first: `x if c else y`, or, and, not, comparisons and `in`, + and -, ~,
 * * / // %, **, unary - and +, then postfix access, calls, filters and tests. So
 * `a + b | trim` filters only b. Nesting is bounded by QUILL_CHAT_MAX_PARSE_DEPTH so
 * that a hostile template cannot exhaust the stack.
 */
#include "chat/parser.h"

#include <stdio.h>
#include <string.h>

#include "chat/lexer.h"

typedef struct parser {
    quill_chat_arena *arena;
    quill_chat_token *tokens;
    size_t n_tokens;
    size_t position;
    int depth;
    int n_open_loops; /* for-loop bodies around the current statement, for break/continue */
} parser;

typedef struct node_vector {
    quill_chat_node **items;
    size_t n_items;
    size_t capacity;
} node_vector;

static quill_chat_node_list parse_statements(parser *p, const char *const *end_names);
static quill_chat_node *parse_expression(parser *p, bool with_conditional);
static quill_chat_node *parse_tuple(parser *p, bool with_conditional, bool is_parenthesized);
static quill_chat_node *parse_unary(parser *p, bool with_filter);
static quill_chat_node *parse_primary(parser *p);
static quill_chat_node *parse_postfix(parser *p, quill_chat_node *node);
static quill_chat_node *parse_filter_chain(parser *p, quill_chat_node *node);

static const quill_chat_token *current(const parser *p) {
    return &p->tokens[p->position];
}

static const quill_chat_token *peek(const parser *p, size_t offset) {
    size_t index = p->position + offset;
    return &p->tokens[index < p->n_tokens ? index : p->n_tokens - 1];
}

static void advance(parser *p) {
    if (p->position + 1 < p->n_tokens) {
        p->position++;
    }
}

static const char *describe(const quill_chat_token *token) {
    switch (token->kind) {
    case QUILL_CHAT_TOKEN_TEXT:
        return "template text";
    case QUILL_CHAT_TOKEN_END:
        return "the end of the template";
    case QUILL_CHAT_TOKEN_STRING:
        return "a string";
    default:
        return token->text;
    }
}

static _Noreturn void parse_fail(parser *p, const char *expected) {
    const quill_chat_token *token = current(p);
    quill__chat_arena_fail(p->arena, QUILL_ERR_FORMAT,
                           "chat template: syntax error at line %d, column %d: expected %s, got "
                           "'%s'",
                           token->line, token->column, expected, describe(token));
}

static void enter(parser *p) {
    if (++p->depth > QUILL_CHAT_MAX_PARSE_DEPTH) {
        const quill_chat_token *token = current(p);
        quill__chat_arena_fail(p->arena, QUILL_ERR_FORMAT,
                               "chat template: line %d, column %d: nesting deeper than %d levels",
                               token->line, token->column, QUILL_CHAT_MAX_PARSE_DEPTH);
    }
}

static void leave(parser *p) {
    p->depth--;
}

static bool is_operator(const quill_chat_token *token, const char *text) {
    return token->kind == QUILL_CHAT_TOKEN_OPERATOR && strcmp(token->text, text) == 0;
}

static bool is_name(const quill_chat_token *token, const char *text) {
    return token->kind == QUILL_CHAT_TOKEN_NAME && strcmp(token->text, text) == 0;
}

static bool accept_operator(parser *p, const char *text) {
    if (is_operator(current(p), text)) {
        advance(p);
        return true;
    }
    return false;
}

static bool accept_name(parser *p, const char *text) {
    if (is_name(current(p), text)) {
        advance(p);
        return true;
    }
    return false;
}

static void expect_operator(parser *p, const char *text) {
    if (!accept_operator(p, text)) {
        char expected[16];
        expected[0] = '\'';
        size_t n = strlen(text);
        memcpy(expected + 1, text, n);
        expected[n + 1] = '\'';
        expected[n + 2] = '\0';
        parse_fail(p, expected);
    }
}

static const char *expect_identifier(parser *p) {
    const quill_chat_token *token = current(p);
    if (token->kind != QUILL_CHAT_TOKEN_NAME) {
        parse_fail(p, "a name");
    }
    advance(p);
    return token->text;
}

static void expect_block_end(parser *p) {
    if (current(p)->kind != QUILL_CHAT_TOKEN_BLOCK_END) {
        parse_fail(p, "'%}'");
    }
    advance(p);
}

static quill_chat_node *new_node(parser *p, quill_chat_node_kind kind) {
    quill_chat_node *node = quill__chat_arena_alloc(p->arena, sizeof(*node));
    node->kind = kind;
    node->line = current(p)->line;
    return node;
}

static void vector_push(parser *p, node_vector *vector, quill_chat_node *node) {
    if (vector->n_items == vector->capacity) {
        size_t capacity = vector->capacity < 4 ? 4 : vector->capacity * 2;
        quill_chat_node **items = quill__chat_arena_alloc_array(p->arena, capacity, sizeof(*items));
        if (vector->n_items > 0) {
            memcpy(items, vector->items, vector->n_items * sizeof(*items));
        }
        vector->items = items;
        vector->capacity = capacity;
    }
    vector->items[vector->n_items++] = node;
}

static quill_chat_node_list vector_list(node_vector *vector) {
    quill_chat_node_list list = {vector->items, vector->n_items};
    return list;
}

/* Expressions. */

/* Parses `(args, name=value)` after the opening parenthesis has been seen. */
static void parse_call_arguments(parser *p, quill_chat_node *node) {
    expect_operator(p, "(");
    node_vector positional = {0};
    node_vector keyword_values = {0};
    const char **keyword_names = NULL;
    size_t n_keywords = 0;
    size_t capacity_keywords = 0;
    while (!is_operator(current(p), ")")) {
        if (positional.n_items + n_keywords > 0) {
            expect_operator(p, ",");
            if (is_operator(current(p), ")")) {
                break;
            }
        }
        if (current(p)->kind == QUILL_CHAT_TOKEN_NAME && is_operator(peek(p, 1), "=")) {
            const char *name = current(p)->text;
            advance(p);
            advance(p);
            if (n_keywords == capacity_keywords) {
                size_t capacity = capacity_keywords < 4 ? 4 : capacity_keywords * 2;
                const char **names =
                    quill__chat_arena_alloc_array(p->arena, capacity, sizeof(*names));
                if (n_keywords > 0) {
                    memcpy(names, keyword_names, n_keywords * sizeof(*names));
                }
                keyword_names = names;
                capacity_keywords = capacity;
            }
            keyword_names[n_keywords++] = name;
            vector_push(p, &keyword_values, parse_expression(p, true));
        } else {
            if (n_keywords > 0) {
                parse_fail(p, "a keyword argument (positional arguments come first)");
            }
            vector_push(p, &positional, parse_expression(p, true));
        }
    }
    expect_operator(p, ")");
    node->args = vector_list(&positional);
    node->keyword_names = keyword_names;
    node->keyword_values = vector_list(&keyword_values);
}

static quill_chat_node *parse_subscript(parser *p, quill_chat_node *target) {
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_ITEM);
    node->a = target;
    expect_operator(p, "[");
    quill_chat_node *start = NULL;
    if (!is_operator(current(p), ":")) {
        start = parse_expression(p, true);
        if (accept_operator(p, "]")) {
            node->b = start;
            return node;
        }
    }
    node->kind = QUILL_CHAT_NODE_SLICE;
    node->b = start;
    expect_operator(p, ":");
    if (!is_operator(current(p), "]") && !is_operator(current(p), ":")) {
        node->c = parse_expression(p, true);
    }
    if (accept_operator(p, ":") && !is_operator(current(p), "]")) {
        node->d = parse_expression(p, true);
    }
    expect_operator(p, "]");
    return node;
}

static quill_chat_node *parse_postfix(parser *p, quill_chat_node *node) {
    for (;;) {
        if (is_operator(current(p), ".")) {
            advance(p);
            const quill_chat_token *token = current(p);
            if (token->kind == QUILL_CHAT_TOKEN_INT) {
                quill_chat_node *item = new_node(p, QUILL_CHAT_NODE_ITEM);
                item->a = node;
                item->b = new_node(p, QUILL_CHAT_NODE_LITERAL);
                item->b->value = quill__chat_int(token->integer);
                advance(p);
                node = item;
                continue;
            }
            quill_chat_node *attribute = new_node(p, QUILL_CHAT_NODE_ATTRIBUTE);
            attribute->a = node;
            attribute->name = expect_identifier(p);
            node = attribute;
        } else if (is_operator(current(p), "[")) {
            node = parse_subscript(p, node);
        } else if (is_operator(current(p), "(")) {
            quill_chat_node *call = new_node(p, QUILL_CHAT_NODE_CALL);
            call->a = node;
            parse_call_arguments(p, call);
            node = call;
        } else {
            return node;
        }
    }
}

/* A test argument without parentheses: `x is divisibleby 3`, `x is equalto 'a'`. */
static bool starts_bare_test_argument(const quill_chat_token *token) {
    switch (token->kind) {
    case QUILL_CHAT_TOKEN_STRING:
    case QUILL_CHAT_TOKEN_INT:
    case QUILL_CHAT_TOKEN_FLOAT:
        return true;
    case QUILL_CHAT_TOKEN_NAME:
        return strcmp(token->text, "else") != 0 && strcmp(token->text, "or") != 0 &&
               strcmp(token->text, "and") != 0 && strcmp(token->text, "is") != 0 &&
               strcmp(token->text, "in") != 0 && strcmp(token->text, "not") != 0 &&
               strcmp(token->text, "if") != 0;
    case QUILL_CHAT_TOKEN_OPERATOR:
        return strcmp(token->text, "[") == 0 || strcmp(token->text, "{") == 0;
    default:
        return false;
    }
}

static quill_chat_node *parse_filter(parser *p, quill_chat_node *operand) {
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_FILTER);
    node->a = operand;
    node->name = expect_identifier(p);
    while (is_operator(current(p), ".")) {
        /* Dotted filter names are not used by chat templates; reject them clearly. */
        parse_fail(p, "a filter name without dots");
    }
    if (is_operator(current(p), "(")) {
        parse_call_arguments(p, node);
    }
    return node;
}

static quill_chat_node *parse_filter_chain(parser *p, quill_chat_node *node) {
    for (;;) {
        if (accept_operator(p, "|")) {
            node = parse_filter(p, node);
        } else if (is_name(current(p), "is")) {
            advance(p);
            quill_chat_node *test = new_node(p, QUILL_CHAT_NODE_TEST);
            test->a = node;
            test->is_negated = accept_name(p, "not");
            test->name = expect_identifier(p);
            if (is_operator(current(p), "(")) {
                parse_call_arguments(p, test);
            } else if (starts_bare_test_argument(current(p))) {
                node_vector arguments = {0};
                vector_push(p, &arguments, parse_postfix(p, parse_primary(p)));
                test->args = vector_list(&arguments);
            }
            node = test;
        } else if (is_operator(current(p), "(")) {
            quill_chat_node *call = new_node(p, QUILL_CHAT_NODE_CALL);
            call->a = node;
            parse_call_arguments(p, call);
            node = call;
        } else {
            return node;
        }
    }
}

/* Parses a list literal `[a, b]` (kind QUILL_CHAT_NODE_LIST) or a dict literal `{k: v}` (kind
 * QUILL_CHAT_NODE_DICT, args alternate key and value) from its opening bracket up to and
 * including close. A trailing comma is allowed. */
static quill_chat_node *parse_collection(parser *p, quill_chat_node_kind kind, const char *close) {
    quill_chat_node *node = new_node(p, kind);
    advance(p);
    node_vector items = {0};
    while (!is_operator(current(p), close)) {
        if (items.n_items > 0) {
            expect_operator(p, ",");
            if (is_operator(current(p), close)) {
                break;
            }
        }
        vector_push(p, &items, parse_expression(p, true));
        if (kind == QUILL_CHAT_NODE_DICT) {
            expect_operator(p, ":");
            vector_push(p, &items, parse_expression(p, true));
        }
    }
    expect_operator(p, close);
    node->args = vector_list(&items);
    return node;
}

static quill_chat_node *parse_primary(parser *p) {
    const quill_chat_token *token = current(p);
    quill_chat_node *node = NULL;
    switch (token->kind) {
    case QUILL_CHAT_TOKEN_NAME:
        node = new_node(p, QUILL_CHAT_NODE_LITERAL);
        if (strcmp(token->text, "true") == 0 || strcmp(token->text, "True") == 0) {
            node->value = quill__chat_bool(true);
        } else if (strcmp(token->text, "false") == 0 || strcmp(token->text, "False") == 0) {
            node->value = quill__chat_bool(false);
        } else if (strcmp(token->text, "none") == 0 || strcmp(token->text, "None") == 0) {
            node->value = quill__chat_none();
        } else {
            node->kind = QUILL_CHAT_NODE_NAME;
            node->name = token->text;
        }
        advance(p);
        return node;
    case QUILL_CHAT_TOKEN_STRING: {
        /* Adjacent literals concatenate, as in Python. */
        quill_chat_builder builder = {0};
        node = new_node(p, QUILL_CHAT_NODE_LITERAL);
        while (current(p)->kind == QUILL_CHAT_TOKEN_STRING) {
            quill__chat_builder_append(p->arena, &builder, current(p)->text, current(p)->n_text,
                                       true);
            advance(p);
        }
        node->value = quill__chat_string_value(quill__chat_builder_finish(p->arena, &builder));
        return node;
    }
    case QUILL_CHAT_TOKEN_INT:
        node = new_node(p, QUILL_CHAT_NODE_LITERAL);
        node->value = quill__chat_int(token->integer);
        advance(p);
        return node;
    case QUILL_CHAT_TOKEN_FLOAT:
        node = new_node(p, QUILL_CHAT_NODE_LITERAL);
        node->value = quill__chat_float(token->number);
        advance(p);
        return node;
    case QUILL_CHAT_TOKEN_OPERATOR:
        if (is_operator(token, "(")) {
            advance(p);
            node = parse_tuple(p, true, true);
            expect_operator(p, ")");
            return node;
        }
        if (is_operator(token, "[")) {
            return parse_collection(p, QUILL_CHAT_NODE_LIST, "]");
        }
        if (is_operator(token, "{")) {
            return parse_collection(p, QUILL_CHAT_NODE_DICT, "}");
        }
        break;
    default:
        break;
    }
    parse_fail(p, "an expression");
}

static quill_chat_node *parse_unary(parser *p, bool with_filter) {
    enter(p);
    quill_chat_node *node = NULL;
    if (is_operator(current(p), "-") || is_operator(current(p), "+")) {
        node = new_node(p, QUILL_CHAT_NODE_UNARY);
        node->operator_text = current(p)->text;
        advance(p);
        node->a = parse_unary(p, false);
    } else {
        node = parse_primary(p);
    }
    node = parse_postfix(p, node);
    if (with_filter) {
        node = parse_filter_chain(p, node);
    }
    leave(p);
    return node;
}

static quill_chat_node *make_binary(parser *p, const char *operator_text, quill_chat_node *left,
                                    quill_chat_node *right) {
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_BINARY);
    node->operator_text = operator_text;
    node->a = left;
    node->b = right;
    return node;
}

static quill_chat_node *parse_power(parser *p) {
    quill_chat_node *node = parse_unary(p, true);
    while (is_operator(current(p), "**")) {
        advance(p);
        node = make_binary(p, "**", node, parse_unary(p, true));
    }
    return node;
}

static quill_chat_node *parse_product(parser *p) {
    quill_chat_node *node = parse_power(p);
    for (;;) {
        const quill_chat_token *token = current(p);
        if (is_operator(token, "*") || is_operator(token, "/") || is_operator(token, "//") ||
            is_operator(token, "%")) {
            advance(p);
            node = make_binary(p, token->text, node, parse_power(p));
        } else {
            return node;
        }
    }
}

static quill_chat_node *parse_concatenation(parser *p) {
    quill_chat_node *node = parse_product(p);
    while (is_operator(current(p), "~")) {
        advance(p);
        node = make_binary(p, "~", node, parse_product(p));
    }
    return node;
}

static quill_chat_node *parse_sum(parser *p) {
    quill_chat_node *node = parse_concatenation(p);
    for (;;) {
        const quill_chat_token *token = current(p);
        if (is_operator(token, "+") || is_operator(token, "-")) {
            advance(p);
            node = make_binary(p, token->text, node, parse_concatenation(p));
        } else {
            return node;
        }
    }
}

static quill_chat_node *parse_comparison(parser *p) {
    static const char *const operators[] = {"==", "!=", "<", "<=", ">", ">="};
    quill_chat_node *node = parse_sum(p);
    quill_chat_node *previous_right = NULL;
    for (;;) {
        const char *operator_text = NULL;
        const quill_chat_token *token = current(p);
        for (size_t i = 0; i < sizeof(operators) / sizeof(operators[0]); i++) {
            if (is_operator(token, operators[i])) {
                operator_text = operators[i];
            }
        }
        if (operator_text != NULL) {
            advance(p);
        } else if (is_name(token, "in")) {
            advance(p);
            operator_text = "in";
        } else if (is_name(token, "not") && is_name(peek(p, 1), "in")) {
            advance(p);
            advance(p);
            operator_text = "not in";
        } else {
            return node;
        }
        quill_chat_node *right = parse_sum(p);
        if (previous_right == NULL) {
            node = make_binary(p, operator_text, node, right);
        } else {
            /* a < b < c means a < b and b < c. */
            quill_chat_node *both = new_node(p, QUILL_CHAT_NODE_AND);
            both->a = node;
            both->b = make_binary(p, operator_text, previous_right, right);
            node = both;
        }
        previous_right = right;
    }
}

static quill_chat_node *parse_not(parser *p) {
    if (is_name(current(p), "not")) {
        enter(p);
        quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_NOT);
        advance(p);
        node->a = parse_not(p);
        leave(p);
        return node;
    }
    return parse_comparison(p);
}

static quill_chat_node *parse_and(parser *p) {
    quill_chat_node *node = parse_not(p);
    while (is_name(current(p), "and")) {
        quill_chat_node *both = new_node(p, QUILL_CHAT_NODE_AND);
        advance(p);
        both->a = node;
        both->b = parse_not(p);
        node = both;
    }
    return node;
}

static quill_chat_node *parse_or(parser *p) {
    quill_chat_node *node = parse_and(p);
    while (is_name(current(p), "or")) {
        quill_chat_node *either = new_node(p, QUILL_CHAT_NODE_OR);
        advance(p);
        either->a = node;
        either->b = parse_and(p);
        node = either;
    }
    return node;
}

static quill_chat_node *parse_expression(parser *p, bool with_conditional) {
    enter(p);
    quill_chat_node *node = parse_or(p);
    while (with_conditional && is_name(current(p), "if")) {
        quill_chat_node *conditional = new_node(p, QUILL_CHAT_NODE_CONDITIONAL);
        advance(p);
        conditional->b = node;
        conditional->a = parse_or(p);
        if (accept_name(p, "else")) {
            conditional->c = parse_expression(p, true);
        }
        node = conditional;
    }
    leave(p);
    return node;
}

static bool ends_tuple(const quill_chat_token *token) {
    return token->kind == QUILL_CHAT_TOKEN_VAR_END || token->kind == QUILL_CHAT_TOKEN_BLOCK_END ||
           token->kind == QUILL_CHAT_TOKEN_END || is_operator(token, ")") ||
           is_operator(token, "]") || is_operator(token, "}") || is_name(token, "if") ||
           is_name(token, "recursive");
}

static quill_chat_node *parse_tuple(parser *p, bool with_conditional, bool is_parenthesized) {
    if (is_parenthesized && is_operator(current(p), ")")) {
        quill_chat_node *empty = new_node(p, QUILL_CHAT_NODE_TUPLE);
        return empty;
    }
    quill_chat_node *first = parse_expression(p, with_conditional);
    if (!is_operator(current(p), ",")) {
        return first;
    }
    quill_chat_node *tuple = new_node(p, QUILL_CHAT_NODE_TUPLE);
    node_vector items = {0};
    vector_push(p, &items, first);
    while (accept_operator(p, ",")) {
        if (ends_tuple(current(p))) {
            break;
        }
        vector_push(p, &items, parse_expression(p, with_conditional));
    }
    tuple->args = vector_list(&items);
    return tuple;
}

/* Statements. */

static void parse_target_names(parser *p, quill_chat_node *node) {
    const char *names[64];
    size_t n_names = 0;
    bool has_parenthesis = accept_operator(p, "(");
    do {
        if (n_names == sizeof(names) / sizeof(names[0])) {
            parse_fail(p, "at most 64 names to unpack");
        }
        names[n_names++] = expect_identifier(p);
    } while (accept_operator(p, ",") && current(p)->kind == QUILL_CHAT_TOKEN_NAME);
    if (has_parenthesis) {
        expect_operator(p, ")");
    }
    node->names = quill__chat_arena_alloc_array(p->arena, n_names, sizeof(*node->names));
    memcpy(node->names, names, n_names * sizeof(*names));
    node->n_names = n_names;
    node->has_tuple_target = n_names > 1 || has_parenthesis;
}

static quill_chat_node *parse_if(parser *p) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_IF);
    node->a = parse_tuple(p, true, false);
    expect_block_end(p);
    node->body = parse_statements(p, ends);
    /* parse_statements stops at a block tag named in ends. */
    advance(p);
    if (accept_name(p, "elif")) {
        enter(p);
        node_vector else_body = {0};
        vector_push(p, &else_body, parse_if(p));
        node->else_body = vector_list(&else_body);
        leave(p);
        return node;
    }
    if (accept_name(p, "else")) {
        static const char *const else_ends[] = {"endif", NULL};
        expect_block_end(p);
        node->else_body = parse_statements(p, else_ends);
        advance(p);
    }
    if (!accept_name(p, "endif")) {
        parse_fail(p, "'endif'");
    }
    expect_block_end(p);
    return node;
}

static quill_chat_node *parse_for(parser *p) {
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const else_ends[] = {"endfor", NULL};
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_FOR);
    parse_target_names(p, node);
    if (!accept_name(p, "in")) {
        parse_fail(p, "'in'");
    }
    node->a = parse_tuple(p, false, false);
    if (accept_name(p, "if")) {
        node->b = parse_expression(p, true);
    }
    node->is_recursive = accept_name(p, "recursive");
    expect_block_end(p);
    p->n_open_loops++;
    node->body = parse_statements(p, ends);
    p->n_open_loops--;
    advance(p);
    if (accept_name(p, "else")) {
        expect_block_end(p);
        node->else_body = parse_statements(p, else_ends);
        advance(p);
    }
    if (!accept_name(p, "endfor")) {
        parse_fail(p, "'endfor'");
    }
    expect_block_end(p);
    return node;
}

static void parse_filter_list(parser *p, quill_chat_node *node, bool needs_first_pipe) {
    node_vector filters = {0};
    if (!needs_first_pipe) {
        vector_push(p, &filters, parse_filter(p, NULL));
    }
    while (accept_operator(p, "|")) {
        vector_push(p, &filters, parse_filter(p, NULL));
    }
    node->args = vector_list(&filters);
}

static quill_chat_node *parse_set(parser *p) {
    static const char *const ends[] = {"endset", NULL};
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_SET);
    if (current(p)->kind == QUILL_CHAT_TOKEN_NAME && is_operator(peek(p, 1), ".")) {
        node->name = expect_identifier(p);
        advance(p);
        const char *attribute = expect_identifier(p);
        node->names = quill__chat_arena_alloc_array(p->arena, 1, sizeof(*node->names));
        node->names[0] = attribute;
        node->n_names = 1;
        expect_operator(p, "=");
        node->a = parse_tuple(p, true, false);
        expect_block_end(p);
        return node;
    }

    parse_target_names(p, node);
    if (accept_operator(p, "=")) {
        node->a = parse_tuple(p, true, false);
        expect_block_end(p);
        return node;
    }
    if (node->has_tuple_target) {
        parse_fail(p, "'=' after several names");
    }

    node->kind = QUILL_CHAT_NODE_SET_BLOCK;
    node->name = node->names[0];
    parse_filter_list(p, node, true);
    expect_block_end(p);
    node->body = parse_statements(p, ends);
    advance(p);
    advance(p);
    expect_block_end(p);
    return node;
}

static quill_chat_node *parse_macro(parser *p) {
    static const char *const ends[] = {"endmacro", NULL};
    quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_MACRO);
    node->name = expect_identifier(p);

    expect_operator(p, "(");
    const char *names[64];
    node_vector defaults = {0};
    size_t n_names = 0;
    while (!is_operator(current(p), ")")) {
        if (n_names > 0) {
            expect_operator(p, ",");
        }
        if (n_names == sizeof(names) / sizeof(names[0])) {
            parse_fail(p, "at most 64 macro parameters");
        }
        names[n_names++] = expect_identifier(p);
        if (accept_operator(p, "=")) {
            vector_push(p, &defaults, parse_expression(p, true));
        } else {
            if (defaults.n_items > 0) {
                parse_fail(p, "a default value (parameters with defaults come last)");
            }
        }
    }
    expect_operator(p, ")");
    expect_block_end(p);

    node->names = quill__chat_arena_alloc_array(p->arena, n_names + 1, sizeof(*node->names));
    if (n_names > 0) {
        memcpy(node->names, names, n_names * sizeof(*names));
    }
    node->n_names = n_names;
    node->args = vector_list(&defaults);

    int saved_open_loops = p->n_open_loops;
    p->n_open_loops = 0; /* a macro body cannot break out of the caller's loop */
    node->body = parse_statements(p, ends);
    p->n_open_loops = saved_open_loops;

    advance(p);
    advance(p);
    if (current(p)->kind == QUILL_CHAT_TOKEN_NAME) {
        advance(p);
    }
    expect_block_end(p);
    return node;
}

static quill_chat_node *parse_statement_tag(parser *p) {
    const quill_chat_token *token = current(p);
    if (token->kind != QUILL_CHAT_TOKEN_NAME) {
        parse_fail(p, "a statement name after '{%'");
    }
    const char *name = token->text;
    quill_chat_node *node = NULL;
    advance(p);

    if (strcmp(name, "if") == 0) {
        return parse_if(p);
    }
    if (strcmp(name, "for") == 0) {
        return parse_for(p);
    }
    if (strcmp(name, "set") == 0) {
        return parse_set(p);
    }
    if (strcmp(name, "macro") == 0) {
        return parse_macro(p);
    }

    if (strcmp(name, "break") == 0 || strcmp(name, "continue") == 0) {
        if (p->n_open_loops == 0) {
            quill__chat_arena_fail(p->arena, QUILL_ERR_FORMAT,
                                   "chat template: syntax error at line %d, column %d: '%s' "
                                   "outside a for loop",
                                   token->line, token->column, name);
        }
        node = new_node(p, strcmp(name, "break") == 0 ? QUILL_CHAT_NODE_BREAK
                                                      : QUILL_CHAT_NODE_CONTINUE);
        expect_block_end(p);
        return node;
    }

    if (strcmp(name, "do") == 0) {
        node = new_node(p, QUILL_CHAT_NODE_DO);
        node->a = parse_tuple(p, true, false);
        expect_block_end(p);
        return node;
    }

    if (strcmp(name, "generation") == 0) {
        static const char *const ends[] = {"endgeneration", NULL};
        node = new_node(p, QUILL_CHAT_NODE_GENERATION);
        expect_block_end(p);
        node->body = parse_statements(p, ends);
        advance(p);
        advance(p);
        expect_block_end(p);
        return node;
    }

    if (strcmp(name, "filter") == 0) {
        static const char *const ends[] = {"endfilter", NULL};
        node = new_node(p, QUILL_CHAT_NODE_FILTER_BLOCK);
        parse_filter_list(p, node, false);
        expect_block_end(p);
        node->body = parse_statements(p, ends);
        advance(p);
        advance(p);
        expect_block_end(p);
        return node;
    }

    if (strcmp(name, "call") == 0) {
        static const char *const ends[] = {"endcall", NULL};
        node = new_node(p, QUILL_CHAT_NODE_CALL_BLOCK);
        node->a = parse_expression(p, true);
        if (node->a->kind != QUILL_CHAT_NODE_CALL) {
            parse_fail(p, "a macro call after 'call'");
        }
        expect_block_end(p);
        node->body = parse_statements(p, ends);
        advance(p);
        advance(p);
        expect_block_end(p);
        return node;
    }

    p->position--;
    parse_fail(p, "a known statement (if, for, set, macro, call, filter, break, continue, "
                  "generation, do, raw)");
}

/* Parses statements until a block tag whose name is in end_names (left current, on the
 * BLOCK_BEGIN token) or, when end_names is NULL, the end of the template. */
static quill_chat_node_list parse_statements(parser *p, const char *const *end_names) {
    enter(p);
    node_vector statements = {0};
    for (;;) {
        const quill_chat_token *token = current(p);
        if (token->kind == QUILL_CHAT_TOKEN_END) {
            if (end_names != NULL) {
                /* The last name closes the block: endif, endfor, endset ... */
                size_t last = 0;
                while (end_names[last + 1] != NULL) {
                    last++;
                }
                char expected[64];
                snprintf(expected, sizeof(expected), "'%s'", end_names[last]);
                parse_fail(p, expected);
            }
            break;
        }
        if (token->kind == QUILL_CHAT_TOKEN_TEXT) {
            quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_TEXT);
            node->value = quill__chat_string_new(p->arena, token->text, token->n_text, true);
            vector_push(p, &statements, node);
            advance(p);
            continue;
        }
        if (token->kind == QUILL_CHAT_TOKEN_VAR_BEGIN) {
            advance(p);
            quill_chat_node *node = new_node(p, QUILL_CHAT_NODE_OUTPUT);
            node->a = parse_tuple(p, true, false);
            if (current(p)->kind != QUILL_CHAT_TOKEN_VAR_END) {
                parse_fail(p, "'}}'");
            }
            advance(p);
            vector_push(p, &statements, node);
            continue;
        }
        if (token->kind == QUILL_CHAT_TOKEN_BLOCK_BEGIN) {
            const quill_chat_token *name = peek(p, 1);
            if (end_names != NULL && name->kind == QUILL_CHAT_TOKEN_NAME) {
                for (size_t i = 0; end_names[i] != NULL; i++) {
                    if (strcmp(name->text, end_names[i]) == 0) {
                        leave(p);
                        return vector_list(&statements);
                    }
                }
            }
            advance(p);
            vector_push(p, &statements, parse_statement_tag(p));
            continue;
        }
        parse_fail(p, "template text, '{{' or '{%'");
    }
    leave(p);
    return vector_list(&statements);
}

quill_chat_node_list quill__chat_parse(quill_chat_arena *arena, const char *source,
                                       size_t n_bytes) {
    parser p = {0};
    p.arena = arena;
    quill__chat_lex(arena, source, n_bytes, &p.tokens, &p.n_tokens);
    return parse_statements(&p, NULL);
}
