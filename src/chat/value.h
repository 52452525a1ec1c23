/*
 * Values of the chat template interpreter, the arena they live in, and their Python-style
 * conversions (str(), repr(), json.dumps). Every value, string and container of a parse or a
 * render is allocated from one arena that is freed at once, so values are passed by value and
 * never freed one by one. A failure (allocation, size limit, type error) jumps to the arena's
 * recovery point with longjmp after storing the error message; the arena owns every byte that
 * such a jump could leak. One thread at a time per arena.
 *
 * Strings carry segments that say which bytes came from the template's own literals and which
 * from data (messages, tools, variables), so that the tokenizer can match special tokens only in
 * template text.
 */
#ifndef QUILL_CHAT_VALUE_H
#define QUILL_CHAT_VALUE_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/chat.h"
#include "quill/status.h"

struct json_object;

/* Arena: a list of blocks from quill__malloc, freed together. */
typedef struct quill_chat_arena_block quill_chat_arena_block;
typedef struct quill_chat_arena {
    quill_chat_arena_block *blocks; /* newest first */
    size_t n_bytes_allocated;       /* sum of block sizes */
    size_t limit_bytes;             /* allocations past this total fail with QUILL_ERR_FORMAT */
    size_t limit_string_bytes;      /* longest string or output buffer; 0 = no limit */
    jmp_buf *recovery;              /* where failures jump; set before any allocation */
} quill_chat_arena;

typedef enum quill_chat_kind {
    QUILL_CHAT_UNDEFINED,
    QUILL_CHAT_NONE,
    QUILL_CHAT_BOOL,
    QUILL_CHAT_INT,
    QUILL_CHAT_FLOAT,
    QUILL_CHAT_STRING,
    QUILL_CHAT_LIST, /* also tuples: list->is_tuple */
    QUILL_CHAT_DICT,
    QUILL_CHAT_NAMESPACE, /* a dict whose attributes the template may set */
    QUILL_CHAT_LOOP,      /* the `loop` variable of a for loop */
    QUILL_CHAT_MACRO,
    QUILL_CHAT_FUNCTION, /* a global function such as range or raise_exception */
    QUILL_CHAT_METHOD    /* a method bound to a value, such as "abc".strip */
} quill_chat_kind;

typedef struct quill_chat_string {
    const char *bytes; /* n_bytes of UTF-8, NUL-terminated */
    size_t n_bytes;
    const quill_chat_segment *segments; /* cover bytes in order; none when n_bytes is 0 */
    size_t n_segments;
} quill_chat_string;

typedef struct quill_chat_list quill_chat_list;
typedef struct quill_chat_dict quill_chat_dict;
typedef struct quill_chat_loop quill_chat_loop;
typedef struct quill_chat_macro quill_chat_macro;
typedef struct quill_chat_method quill_chat_method;

typedef struct quill_chat_value {
    quill_chat_kind kind;
    union {
        bool boolean;
        int64_t integer;
        double number;
        const quill_chat_string *string;
        quill_chat_list *list;
        quill_chat_dict *dict; /* DICT and NAMESPACE */
        quill_chat_loop *loop;
        const quill_chat_macro *macro;
        const char *function_name; /* FUNCTION */
        const quill_chat_method *method;
        const char *undefined_hint; /* UNDEFINED: why, for the error when it is used; or NULL */
    } as;
} quill_chat_value;

struct quill_chat_list {
    quill_chat_value *items;
    size_t n_items;
    size_t capacity;
    bool is_tuple;
};

struct quill_chat_dict {
    quill_chat_value *keys; /* insertion order */
    quill_chat_value *values;
    size_t n_items;
    size_t capacity;
};

struct quill_chat_method {
    quill_chat_value self;
    const char *name;
};

/* A growable string with segments, in the arena. */
typedef struct quill_chat_builder {
    char *bytes;
    size_t n_bytes;
    size_t capacity;
    quill_chat_segment *segments;
    size_t n_segments;
    size_t capacity_segments;
} quill_chat_builder;

/* Arena. */
void quill__chat_arena_init(quill_chat_arena *arena, size_t limit_bytes, jmp_buf *recovery);
void quill__chat_arena_release(quill_chat_arena *arena);
/* Returns n_bytes of zeroed memory aligned for any value; jumps on failure. */
void *quill__chat_arena_alloc(quill_chat_arena *arena, size_t n_bytes);
void *quill__chat_arena_alloc_array(quill_chat_arena *arena, size_t n_items, size_t item_bytes);
char *quill__chat_arena_strndup(quill_chat_arena *arena, const char *text, size_t n_bytes);
/* Stores the message and jumps to arena->recovery with status. */
_Noreturn void quill__chat_arena_fail(quill_chat_arena *arena, quill_status status, const char *fmt,
                                      ...) __attribute__((format(printf, 3, 4)));

/* Builder. */
void quill__chat_builder_append(quill_chat_arena *arena, quill_chat_builder *builder,
                                const char *bytes, size_t n_bytes, bool is_template_text);
void quill__chat_builder_append_string(quill_chat_arena *arena, quill_chat_builder *builder,
                                       const quill_chat_string *string);
/* Appends the bytes [offset, offset + n_bytes) of string with their segments. */
void quill__chat_builder_append_slice(quill_chat_arena *arena, quill_chat_builder *builder,
                                      const quill_chat_string *string, size_t offset,
                                      size_t n_bytes);
const quill_chat_string *quill__chat_builder_finish(quill_chat_arena *arena,
                                                    quill_chat_builder *builder);

/* Constructors. */
quill_chat_value quill__chat_undefined(const char *hint);
quill_chat_value quill__chat_none(void);
quill_chat_value quill__chat_bool(bool boolean);
quill_chat_value quill__chat_int(int64_t integer);
quill_chat_value quill__chat_float(double number);
quill_chat_value quill__chat_string_value(const quill_chat_string *string);
/* A string of n_bytes copied from bytes, all template text or all data. */
quill_chat_value quill__chat_string_new(quill_chat_arena *arena, const char *bytes, size_t n_bytes,
                                        bool is_template_text);
quill_chat_value quill__chat_list_new(quill_chat_arena *arena, size_t capacity);
void quill__chat_list_append(quill_chat_arena *arena, quill_chat_list *list, quill_chat_value item);
quill_chat_value quill__chat_dict_new(quill_chat_arena *arena, size_t capacity);
/* Inserts or replaces the value of key. */
void quill__chat_dict_set(quill_chat_arena *arena, quill_chat_dict *dict, quill_chat_value key,
                          quill_chat_value value);
/* Appends key without looking for it first: for keys known to be new (JSON object members). */
void quill__chat_dict_push(quill_chat_arena *arena, quill_chat_dict *dict, quill_chat_value key,
                           quill_chat_value value);
/* Returns the value of key, or NULL. */
quill_chat_value *quill__chat_dict_find(const quill_chat_dict *dict, quill_chat_value key);
quill_chat_value *quill__chat_dict_find_cstr(const quill_chat_dict *dict, const char *key);

/* Queries. */
bool quill__chat_is_truthy(quill_chat_value value);
bool quill__chat_is_string(quill_chat_value value);
bool quill__chat_is_number(quill_chat_value value); /* bool, int or float */
double quill__chat_to_double(quill_chat_value value);
bool quill__chat_equals(quill_chat_value a, quill_chat_value b);
/* Orders a and b as Python does; fails with a TypeError message for unorderable kinds. */
int quill__chat_compare(quill_chat_arena *arena, quill_chat_value a, quill_chat_value b);
/* The Python type name, for messages: "str", "list", "NoneType" ... */
const char *quill__chat_type_name(quill_chat_value value);
/* True when some string inside value (keys included) has data bytes. */
bool quill__chat_has_data(quill_chat_value value);
bool quill__chat_string_has_data(const quill_chat_string *string);

/* Conversions. str() as Jinja prints a value (Undefined prints as ""). */
const quill_chat_string *quill__chat_to_string(quill_chat_arena *arena, quill_chat_value value);
/* Python repr(). */
void quill__chat_append_repr(quill_chat_arena *arena, quill_chat_builder *builder,
                             quill_chat_value value, int depth);
/* Python float repr: shortest round-trip digits, "1.0", "1e+16", "inf". */
void quill__chat_format_float(double number, char *text, size_t n_text);

typedef struct quill_chat_json_options {
    int indent;                 /* spaces per level; negative = no newlines */
    const char *item_separator; /* NULL = ", " (or "," with an indent) */
    const char *key_separator;  /* NULL = ": " */
    bool sort_keys;
    bool ensure_ascii; /* escape non-ASCII as \uXXXX (surrogate pairs above U+FFFF) */
} quill_chat_json_options;

/* json.dumps(value, ensure_ascii=False, ...) into builder, all as one taint. */
void quill__chat_append_json(quill_chat_arena *arena, quill_chat_builder *builder,
                             quill_chat_value value, const quill_chat_json_options *options);

/* Converts a json-c value to a template value; strings are data unless is_template_text. */
quill_chat_value quill__chat_from_json(quill_chat_arena *arena, struct json_object *json,
                                       bool is_template_text);

enum {
    QUILL_CHAT_MAX_VALUE_DEPTH = 128 /* nesting of lists and dicts walked by repr and tojson */
};

#endif
