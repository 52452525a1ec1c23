/*
 * Interpreter of parsed chat templates: scopes, evaluation of expressions, execution of
 * statements, and the built-in filters, tests, methods and global functions (builtins.c). One
 * render owns one context and runs on one thread. It allocates only from its arena, so a
 * failure anywhere can jump back to quill_chat_template_render, which frees everything at once.
 */
#ifndef QUILL_CHAT_INTERPRETER_H
#define QUILL_CHAT_INTERPRETER_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/parser.h"
#include "chat/value.h"

enum {
    QUILL_CHAT_MAX_EVAL_DEPTH = 200,    /* nested statements, expressions and calls */
    QUILL_CHAT_MAX_MACRO_DEPTH = 64,    /* nested macro calls */
    QUILL_CHAT_MAX_ITERATIONS = 1000000 /* loop iterations in one render, all loops */
};

/* A scope: the template's top level, one for-loop body or one macro call. */
typedef struct quill_chat_frame {
    struct quill_chat_frame *parent;
    const char **names;
    quill_chat_value *values;
    size_t n_variables;
    size_t capacity;
} quill_chat_frame;

struct quill_chat_loop {
    const quill_chat_list *items;       /* the items iterated, after the loop's `if` filter */
    size_t index0;                      /* current position in items */
    int64_t depth0;                     /* 0 for a loop, +1 per recursive call */
    const struct quill_chat_node *node; /* the FOR node, for loop(...) in recursive loops */
};

struct quill_chat_macro {
    const quill_chat_node *node; /* MACRO node, or the CALL_BLOCK node for caller() */
    quill_chat_frame *closure;   /* scope the macro was defined in */
    quill_chat_value caller;     /* caller() inside the body of a call block, or undefined */
};

typedef enum quill_chat_flow {
    QUILL_CHAT_FLOW_NORMAL,
    QUILL_CHAT_FLOW_BREAK,
    QUILL_CHAT_FLOW_CONTINUE
} quill_chat_flow;

typedef struct quill_chat_context {
    quill_chat_arena arena;
    jmp_buf recovery;           /* target of every failure during the render */
    quill_chat_builder *output; /* where statements print: the result or a capture */
    quill_chat_frame *frame;    /* innermost scope */
    quill_chat_frame *globals;  /* outermost scope: render variables */
    int depth;                  /* current nesting of evaluation */
    int macro_depth;
    int line;                 /* source line being run, for messages */
    uint64_t n_iterations;    /* loop iterations so far */
    int64_t now_unix_seconds; /* clock read by strftime_now */
    quill_chat_flow flow;
} quill_chat_context;

typedef struct quill_chat_args {
    const quill_chat_value *positional;
    size_t n_positional;
    const char *const *keyword_names;
    const quill_chat_value *keyword_values;
    size_t n_keywords;
} quill_chat_args;

/* Stores "chat template: line N: <message>" and jumps back to the render. */
_Noreturn void quill__chat_fail(quill_chat_context *context, quill_status status, const char *fmt,
                                ...) __attribute__((format(printf, 3, 4)));

void quill__chat_frame_set(quill_chat_context *context, quill_chat_frame *frame, const char *name,
                           quill_chat_value value);
quill_chat_value quill__chat_lookup(quill_chat_context *context, const char *name);

/* Runs statements into context->output. */
void quill__chat_execute(quill_chat_context *context, const quill_chat_node_list *statements);
quill_chat_value quill__chat_evaluate(quill_chat_context *context, const quill_chat_node *node);
/* Calls a macro, function or method value. */
quill_chat_value quill__chat_call(quill_chat_context *context, quill_chat_value callee,
                                  const quill_chat_args *args);
/* obj.name: a dict item, a method, a loop or namespace attribute; Undefined when absent. */
quill_chat_value quill__chat_get_attribute(quill_chat_context *context, quill_chat_value object,
                                           const char *name);
/* obj[key] with Python indexing (negative indices); Undefined when absent. */
quill_chat_value quill__chat_get_item(quill_chat_context *context, quill_chat_value object,
                                      quill_chat_value key);
/* The items a for loop visits: list items, dict keys, string characters; Undefined is empty. */
const quill_chat_list *quill__chat_iterate(quill_chat_context *context, quill_chat_value value);
/* Fails when value is Undefined, with its hint ("'x' is undefined"). */
void quill__chat_require_defined(quill_chat_context *context, quill_chat_value value);

/* Builtins (builtins.c). */
/* Returns true when the interpreter has a filter of this name. */
bool quill__chat_filter_exists(const char *name);
quill_chat_value quill__chat_apply_filter(quill_chat_context *context, const char *name,
                                          quill_chat_value operand, const quill_chat_args *args);
bool quill__chat_apply_test(quill_chat_context *context, const char *name, quill_chat_value operand,
                            const quill_chat_args *args);
quill_chat_value quill__chat_call_method(quill_chat_context *context,
                                         const quill_chat_method *method,
                                         const quill_chat_args *args);
quill_chat_value quill__chat_call_function(quill_chat_context *context, const char *name,
                                           const quill_chat_args *args);
/* Python's `format % values` for %s, %r, %d, %i, %x, %f, %e, %g and %%. */
quill_chat_value quill__chat_percent_format(quill_chat_context *context,
                                            const quill_chat_string *format,
                                            quill_chat_value values);
/* True when name is a global function (range, namespace, dict, raise_exception, strftime_now). */
bool quill__chat_is_global_function(const char *name);
/* True when value has a method called name (str, list and dict methods). */
bool quill__chat_has_method(quill_chat_value value, const char *name);
/* The argument at position index or with keyword name; Undefined with *is_present false when
 * neither is given. */
quill_chat_value quill__chat_argument(const quill_chat_args *args, size_t index, const char *name,
                                      bool *is_present);

#endif
