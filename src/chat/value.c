/*
 * Values of the chat template interpreter: the arena, string builders with segments, equality
 * and ordering as Python defines them, and the str(), repr() and json.dumps() formats that
 * templates print. All memory comes from the arena; failures jump to arena->recovery.
 */
#include "chat/value.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/alloc.h"

enum {
    ARENA_BLOCK_BYTES = 64 * 1024, /* a block holds many small values; bigger requests get
                                      a block of their own */
    ARENA_ALIGNMENT = 16
};

struct quill_chat_arena_block {
    quill_chat_arena_block *next;
    size_t capacity; /* bytes in data */
    size_t n_used;   /* bytes handed out */
    _Alignas(16) unsigned char data[];
};

void quill__chat_arena_init(quill_chat_arena *arena, size_t limit_bytes, jmp_buf *recovery) {
    memset(arena, 0, sizeof(*arena));
    arena->limit_bytes = limit_bytes;
    arena->recovery = recovery;
}

void quill__chat_arena_release(quill_chat_arena *arena) {
    if (arena == NULL) {
        return;
    }
    quill_chat_arena_block *block = arena->blocks;
    while (block != NULL) {
        quill_chat_arena_block *next = block->next;
        quill__free(block);
        block = next;
    }
    arena->blocks = NULL;
    arena->n_bytes_allocated = 0;
}

void quill__chat_arena_fail(quill_chat_arena *arena, quill_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    quill_error_setv(status, fmt, args);
    va_end(args);
    longjmp(*arena->recovery, (int)status);
}

void *quill__chat_arena_alloc(quill_chat_arena *arena, size_t n_bytes) {
    size_t rounded = (n_bytes + ARENA_ALIGNMENT - 1) & ~(size_t)(ARENA_ALIGNMENT - 1);
    if (rounded < n_bytes) {
        quill__chat_arena_fail(arena, QUILL_ERR_NOMEM, "chat template: allocation size overflow");
    }
    quill_chat_arena_block *block = arena->blocks;
    if (block == NULL || block->capacity - block->n_used < rounded) {
        size_t capacity = rounded > ARENA_BLOCK_BYTES ? rounded : ARENA_BLOCK_BYTES;
        if (arena->limit_bytes != 0 && (capacity > arena->limit_bytes ||
                                        arena->n_bytes_allocated > arena->limit_bytes - capacity)) {
            quill__chat_arena_fail(arena, QUILL_ERR_FORMAT,
                                   "chat template: memory use would exceed the limit of %zu bytes; "
                                   "the template or its input is too large",
                                   arena->limit_bytes);
        }
        block = quill__malloc(sizeof(*block) + capacity);
        if (block == NULL) {
            quill__chat_arena_fail(arena, QUILL_ERR_NOMEM,
                                   "chat template: out of memory allocating %zu bytes", capacity);
        }
        block->capacity = capacity;
        block->n_used = 0;
        block->next = arena->blocks;
        arena->blocks = block;
        arena->n_bytes_allocated += capacity;
    }
    void *memory = block->data + block->n_used;
    block->n_used += rounded;
    memset(memory, 0, n_bytes);
    return memory;
}

void *quill__chat_arena_alloc_array(quill_chat_arena *arena, size_t n_items, size_t item_bytes) {
    size_t n_bytes = 0;
    if (!quill__size_mul(n_items, item_bytes, &n_bytes)) {
        quill__chat_arena_fail(arena, QUILL_ERR_NOMEM, "chat template: allocation size overflow");
    }
    return quill__chat_arena_alloc(arena, n_bytes);
}

char *quill__chat_arena_strndup(quill_chat_arena *arena, const char *text, size_t n_bytes) {
    char *copy = quill__chat_arena_alloc(arena, n_bytes + 1);
    if (n_bytes > 0) {
        memcpy(copy, text, n_bytes);
    }
    copy[n_bytes] = '\0';
    return copy;
}

/* Builder. */

static void builder_reserve(quill_chat_arena *arena, quill_chat_builder *builder, size_t n_more) {
    size_t needed = builder->n_bytes + n_more;
    if (needed < n_more || (arena->limit_string_bytes != 0 && needed > arena->limit_string_bytes)) {
        quill__chat_arena_fail(arena, QUILL_ERR_FORMAT,
                               "chat template: a rendered string would exceed the limit of %zu "
                               "bytes; raise max_output_bytes or shorten the input",
                               arena->limit_string_bytes);
    }
    if (needed + 1 <= builder->capacity) {
        return;
    }
    size_t capacity = builder->capacity < 64 ? 64 : builder->capacity * 2;
    while (capacity < needed + 1) {
        capacity *= 2;
    }
    char *bytes = quill__chat_arena_alloc(arena, capacity);
    if (builder->n_bytes > 0) {
        memcpy(bytes, builder->bytes, builder->n_bytes);
    }
    builder->bytes = bytes;
    builder->capacity = capacity;
}

static void builder_add_segment(quill_chat_arena *arena, quill_chat_builder *builder,
                                size_t n_bytes, bool is_template_text) {
    if (n_bytes == 0) {
        return;
    }
    if (builder->n_segments > 0) {
        quill_chat_segment *last = &builder->segments[builder->n_segments - 1];
        if (last->is_template_text == is_template_text) {
            last->n_bytes += n_bytes;
            return;
        }
    }
    if (builder->n_segments == builder->capacity_segments) {
        size_t capacity = builder->capacity_segments < 4 ? 4 : builder->capacity_segments * 2;
        quill_chat_segment *segments =
            quill__chat_arena_alloc_array(arena, capacity, sizeof(*segments));
        if (builder->n_segments > 0) {
            memcpy(segments, builder->segments, builder->n_segments * sizeof(*segments));
        }
        builder->segments = segments;
        builder->capacity_segments = capacity;
    }
    quill_chat_segment *segment = &builder->segments[builder->n_segments++];
    segment->offset = builder->n_bytes - n_bytes;
    segment->n_bytes = n_bytes;
    segment->is_template_text = is_template_text;
}

void quill__chat_builder_append(quill_chat_arena *arena, quill_chat_builder *builder,
                                const char *bytes, size_t n_bytes, bool is_template_text) {
    if (n_bytes == 0) {
        return;
    }
    builder_reserve(arena, builder, n_bytes);
    memcpy(builder->bytes + builder->n_bytes, bytes, n_bytes);
    builder->n_bytes += n_bytes;
    builder->bytes[builder->n_bytes] = '\0';
    builder_add_segment(arena, builder, n_bytes, is_template_text);
}

void quill__chat_builder_append_slice(quill_chat_arena *arena, quill_chat_builder *builder,
                                      const quill_chat_string *string, size_t offset,
                                      size_t n_bytes) {
    size_t end = offset + n_bytes;
    for (size_t i = 0; i < string->n_segments && offset < end; i++) {
        const quill_chat_segment *segment = &string->segments[i];
        size_t segment_end = segment->offset + segment->n_bytes;
        if (segment_end <= offset) {
            continue;
        }
        size_t piece_end = segment_end < end ? segment_end : end;
        quill__chat_builder_append(arena, builder, string->bytes + offset, piece_end - offset,
                                   segment->is_template_text);
        offset = piece_end;
    }
}

void quill__chat_builder_append_string(quill_chat_arena *arena, quill_chat_builder *builder,
                                       const quill_chat_string *string) {
    quill__chat_builder_append_slice(arena, builder, string, 0, string->n_bytes);
}

const quill_chat_string *quill__chat_builder_finish(quill_chat_arena *arena,
                                                    quill_chat_builder *builder) {
    quill_chat_string *string = quill__chat_arena_alloc(arena, sizeof(*string));
    string->bytes = builder->bytes != NULL ? builder->bytes : "";
    string->n_bytes = builder->n_bytes;
    string->segments = builder->segments;
    string->n_segments = builder->n_segments;
    memset(builder, 0, sizeof(*builder));
    return string;
}

/* Constructors. */

quill_chat_value quill__chat_undefined(const char *hint) {
    quill_chat_value value = {.kind = QUILL_CHAT_UNDEFINED};
    value.as.undefined_hint = hint;
    return value;
}

quill_chat_value quill__chat_none(void) {
    quill_chat_value value = {.kind = QUILL_CHAT_NONE};
    return value;
}

quill_chat_value quill__chat_bool(bool boolean) {
    quill_chat_value value = {.kind = QUILL_CHAT_BOOL};
    value.as.boolean = boolean;
    return value;
}

quill_chat_value quill__chat_int(int64_t integer) {
    quill_chat_value value = {.kind = QUILL_CHAT_INT};
    value.as.integer = integer;
    return value;
}

quill_chat_value quill__chat_float(double number) {
    quill_chat_value value = {.kind = QUILL_CHAT_FLOAT};
    value.as.number = number;
    return value;
}

quill_chat_value quill__chat_string_value(const quill_chat_string *string) {
    quill_chat_value value = {.kind = QUILL_CHAT_STRING};
    value.as.string = string;
    return value;
}

quill_chat_value quill__chat_string_new(quill_chat_arena *arena, const char *bytes, size_t n_bytes,
                                        bool is_template_text) {
    quill_chat_builder builder = {0};
    quill__chat_builder_append(arena, &builder, bytes, n_bytes, is_template_text);
    return quill__chat_string_value(quill__chat_builder_finish(arena, &builder));
}

quill_chat_value quill__chat_list_new(quill_chat_arena *arena, size_t capacity) {
    quill_chat_value value = {.kind = QUILL_CHAT_LIST};
    value.as.list = quill__chat_arena_alloc(arena, sizeof(quill_chat_list));
    if (capacity > 0) {
        value.as.list->items =
            quill__chat_arena_alloc_array(arena, capacity, sizeof(quill_chat_value));
        value.as.list->capacity = capacity;
    }
    return value;
}

void quill__chat_list_append(quill_chat_arena *arena, quill_chat_list *list,
                             quill_chat_value item) {
    if (list->n_items == list->capacity) {
        size_t capacity = list->capacity < 4 ? 4 : list->capacity * 2;
        quill_chat_value *items = quill__chat_arena_alloc_array(arena, capacity, sizeof(*items));
        if (list->n_items > 0) {
            memcpy(items, list->items, list->n_items * sizeof(*items));
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->n_items++] = item;
}

quill_chat_value quill__chat_dict_new(quill_chat_arena *arena, size_t capacity) {
    quill_chat_value value = {.kind = QUILL_CHAT_DICT};
    value.as.dict = quill__chat_arena_alloc(arena, sizeof(quill_chat_dict));
    if (capacity > 0) {
        value.as.dict->keys =
            quill__chat_arena_alloc_array(arena, capacity, sizeof(quill_chat_value));
        value.as.dict->values =
            quill__chat_arena_alloc_array(arena, capacity, sizeof(quill_chat_value));
        value.as.dict->capacity = capacity;
    }
    return value;
}

quill_chat_value *quill__chat_dict_find(const quill_chat_dict *dict, quill_chat_value key) {
    for (size_t i = 0; i < dict->n_items; i++) {
        if (quill__chat_equals(dict->keys[i], key)) {
            return &dict->values[i];
        }
    }
    return NULL;
}

quill_chat_value *quill__chat_dict_find_cstr(const quill_chat_dict *dict, const char *key) {
    size_t n_key = strlen(key);
    for (size_t i = 0; i < dict->n_items; i++) {
        const quill_chat_value *candidate = &dict->keys[i];
        if (candidate->kind == QUILL_CHAT_STRING && candidate->as.string->n_bytes == n_key &&
            memcmp(candidate->as.string->bytes, key, n_key) == 0) {
            return &dict->values[i];
        }
    }
    return NULL;
}

void quill__chat_dict_set(quill_chat_arena *arena, quill_chat_dict *dict, quill_chat_value key,
                          quill_chat_value value) {
    quill_chat_value *existing = quill__chat_dict_find(dict, key);
    if (existing != NULL) {
        *existing = value;
        return;
    }
    quill__chat_dict_push(arena, dict, key, value);
}

void quill__chat_dict_push(quill_chat_arena *arena, quill_chat_dict *dict, quill_chat_value key,
                           quill_chat_value value) {
    if (dict->n_items == dict->capacity) {
        size_t capacity = dict->capacity < 4 ? 4 : dict->capacity * 2;
        quill_chat_value *keys = quill__chat_arena_alloc_array(arena, capacity, sizeof(*keys));
        quill_chat_value *values = quill__chat_arena_alloc_array(arena, capacity, sizeof(*values));
        if (dict->n_items > 0) {
            memcpy(keys, dict->keys, dict->n_items * sizeof(*keys));
            memcpy(values, dict->values, dict->n_items * sizeof(*values));
        }
        dict->keys = keys;
        dict->values = values;
        dict->capacity = capacity;
    }
    dict->keys[dict->n_items] = key;
    dict->values[dict->n_items] = value;
    dict->n_items++;
}

/* Queries. */

bool quill__chat_is_truthy(quill_chat_value value) {
    switch (value.kind) {
    case QUILL_CHAT_UNDEFINED:
    case QUILL_CHAT_NONE:
        return false;
    case QUILL_CHAT_BOOL:
        return value.as.boolean;
    case QUILL_CHAT_INT:
        return value.as.integer != 0;
    case QUILL_CHAT_FLOAT:
        return value.as.number != 0.0;
    case QUILL_CHAT_STRING:
        return value.as.string->n_bytes > 0;
    case QUILL_CHAT_LIST:
        return value.as.list->n_items > 0;
    case QUILL_CHAT_DICT:
        return value.as.dict->n_items > 0;
    default:
        return true;
    }
}

bool quill__chat_is_string(quill_chat_value value) {
    return value.kind == QUILL_CHAT_STRING;
}

bool quill__chat_is_number(quill_chat_value value) {
    return value.kind == QUILL_CHAT_BOOL || value.kind == QUILL_CHAT_INT ||
           value.kind == QUILL_CHAT_FLOAT;
}

double quill__chat_to_double(quill_chat_value value) {
    switch (value.kind) {
    case QUILL_CHAT_BOOL:
        return value.as.boolean ? 1.0 : 0.0;
    case QUILL_CHAT_INT:
        return (double)value.as.integer;
    case QUILL_CHAT_FLOAT:
        return value.as.number;
    default:
        return 0.0;
    }
}

static int64_t as_integer(quill_chat_value value) {
    return value.kind == QUILL_CHAT_BOOL ? (int64_t)value.as.boolean : value.as.integer;
}

/* Templates can build arbitrarily nested lists, so the walk stops at a depth bound: deeper
 * values compare unequal instead of exhausting the stack. */
static bool equals_at(quill_chat_value a, quill_chat_value b, int depth) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        return false;
    }
    if (quill__chat_is_number(a) && quill__chat_is_number(b)) {
        if (a.kind == QUILL_CHAT_FLOAT || b.kind == QUILL_CHAT_FLOAT) {
            return quill__chat_to_double(a) == quill__chat_to_double(b);
        }
        return as_integer(a) == as_integer(b);
    }
    if (a.kind != b.kind) {
        return false;
    }
    switch (a.kind) {
    case QUILL_CHAT_UNDEFINED:
    case QUILL_CHAT_NONE:
        return true;
    case QUILL_CHAT_STRING:
        return a.as.string->n_bytes == b.as.string->n_bytes &&
               memcmp(a.as.string->bytes, b.as.string->bytes, a.as.string->n_bytes) == 0;
    case QUILL_CHAT_LIST:
        if (a.as.list == b.as.list) {
            return true; /* Python compares items by identity first as well */
        }
        if (a.as.list->is_tuple != b.as.list->is_tuple ||
            a.as.list->n_items != b.as.list->n_items) {
            return false;
        }
        for (size_t i = 0; i < a.as.list->n_items; i++) {
            if (!equals_at(a.as.list->items[i], b.as.list->items[i], depth + 1)) {
                return false;
            }
        }
        return true;
    case QUILL_CHAT_DICT:
        if (a.as.dict == b.as.dict) {
            return true;
        }
        if (a.as.dict->n_items != b.as.dict->n_items) {
            return false;
        }
        for (size_t i = 0; i < a.as.dict->n_items; i++) {
            quill_chat_value *other = quill__chat_dict_find(b.as.dict, a.as.dict->keys[i]);
            if (other == NULL || !equals_at(a.as.dict->values[i], *other, depth + 1)) {
                return false;
            }
        }
        return true;
    case QUILL_CHAT_NAMESPACE:
        return a.as.dict == b.as.dict;
    case QUILL_CHAT_LOOP:
        return a.as.loop == b.as.loop;
    case QUILL_CHAT_MACRO:
        return a.as.macro == b.as.macro;
    case QUILL_CHAT_FUNCTION:
        return strcmp(a.as.function_name, b.as.function_name) == 0;
    case QUILL_CHAT_METHOD:
        return a.as.method == b.as.method;
    default:
        return false;
    }
}

bool quill__chat_equals(quill_chat_value a, quill_chat_value b) {
    return equals_at(a, b, 0);
}

static int compare_at(quill_chat_arena *arena, quill_chat_value a, quill_chat_value b, int depth) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        quill__chat_arena_fail(arena, QUILL_ERR_FORMAT,
                               "chat template: value nested deeper than %d levels",
                               QUILL_CHAT_MAX_VALUE_DEPTH);
    }
    if (quill__chat_is_number(a) && quill__chat_is_number(b)) {
        if (a.kind == QUILL_CHAT_FLOAT || b.kind == QUILL_CHAT_FLOAT) {
            double x = quill__chat_to_double(a);
            double y = quill__chat_to_double(b);
            return x < y ? -1 : (x > y ? 1 : 0);
        }
        int64_t x = as_integer(a);
        int64_t y = as_integer(b);
        return x < y ? -1 : (x > y ? 1 : 0);
    }
    if (a.kind == QUILL_CHAT_STRING && b.kind == QUILL_CHAT_STRING) {
        size_t n = a.as.string->n_bytes < b.as.string->n_bytes ? a.as.string->n_bytes
                                                               : b.as.string->n_bytes;
        /* UTF-8 byte order equals code point order, which is Python's str order. */
        int order = n > 0 ? memcmp(a.as.string->bytes, b.as.string->bytes, n) : 0;
        if (order != 0) {
            return order < 0 ? -1 : 1;
        }
        return a.as.string->n_bytes < b.as.string->n_bytes
                   ? -1
                   : (a.as.string->n_bytes > b.as.string->n_bytes ? 1 : 0);
    }
    if (a.kind == QUILL_CHAT_LIST && b.kind == QUILL_CHAT_LIST) {
        size_t n =
            a.as.list->n_items < b.as.list->n_items ? a.as.list->n_items : b.as.list->n_items;
        for (size_t i = 0; i < n; i++) {
            if (!quill__chat_equals(a.as.list->items[i], b.as.list->items[i])) {
                return compare_at(arena, a.as.list->items[i], b.as.list->items[i], depth + 1);
            }
        }
        return a.as.list->n_items < b.as.list->n_items
                   ? -1
                   : (a.as.list->n_items > b.as.list->n_items ? 1 : 0);
    }
    quill__chat_arena_fail(arena, QUILL_ERR_INVALID_ARG,
                           "chat template: TypeError: '<' not supported between instances of "
                           "'%s' and '%s'",
                           quill__chat_type_name(a), quill__chat_type_name(b));
}

int quill__chat_compare(quill_chat_arena *arena, quill_chat_value a, quill_chat_value b) {
    return compare_at(arena, a, b, 0);
}

const char *quill__chat_type_name(quill_chat_value value) {
    switch (value.kind) {
    case QUILL_CHAT_UNDEFINED:
        return "Undefined";
    case QUILL_CHAT_NONE:
        return "NoneType";
    case QUILL_CHAT_BOOL:
        return "bool";
    case QUILL_CHAT_INT:
        return "int";
    case QUILL_CHAT_FLOAT:
        return "float";
    case QUILL_CHAT_STRING:
        return "str";
    case QUILL_CHAT_LIST:
        return value.as.list->is_tuple ? "tuple" : "list";
    case QUILL_CHAT_DICT:
        return "dict";
    case QUILL_CHAT_NAMESPACE:
        return "Namespace";
    case QUILL_CHAT_LOOP:
        return "LoopContext";
    case QUILL_CHAT_MACRO:
        return "Macro";
    case QUILL_CHAT_FUNCTION:
    case QUILL_CHAT_METHOD:
        return "builtin_function_or_method";
    }
    return "object";
}

bool quill__chat_string_has_data(const quill_chat_string *string) {
    for (size_t i = 0; i < string->n_segments; i++) {
        if (!string->segments[i].is_template_text) {
            return true;
        }
    }
    return false;
}

static bool has_data_at(quill_chat_value value, int depth) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        return true;
    }
    switch (value.kind) {
    case QUILL_CHAT_STRING:
        return quill__chat_string_has_data(value.as.string);
    case QUILL_CHAT_LIST:
        for (size_t i = 0; i < value.as.list->n_items; i++) {
            if (has_data_at(value.as.list->items[i], depth + 1)) {
                return true;
            }
        }
        return false;
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE:
        for (size_t i = 0; i < value.as.dict->n_items; i++) {
            if (has_data_at(value.as.dict->keys[i], depth + 1) ||
                has_data_at(value.as.dict->values[i], depth + 1)) {
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}

bool quill__chat_has_data(quill_chat_value value) {
    return has_data_at(value, 0);
}

/* Conversions. */

void quill__chat_format_float(double number, char *text, size_t n_text) {
    if (isnan(number)) {
        snprintf(text, n_text, "nan");
        return;
    }
    if (isinf(number)) {
        snprintf(text, n_text, "%s", number < 0 ? "-inf" : "inf");
        return;
    }

    /* Find the shortest precision that reads back to the same double, as Python's repr. */
    char scientific[40];
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(scientific, sizeof(scientific), "%.*e", precision - 1, number);
        if (strtod(scientific, NULL) == number) {
            break;
        }
    }

    /* Split "-d.ddde+XX" into sign, digits and exponent. */
    char digits[24];
    size_t n_digits = 0;
    const char *cursor = scientific;
    bool is_negative = false;
    if (*cursor == '-') {
        is_negative = true;
        cursor++;
    }
    while (*cursor != '\0' && *cursor != 'e' && n_digits < sizeof(digits) - 1) {
        if (*cursor != '.') {
            digits[n_digits++] = *cursor;
        }
        cursor++;
    }
    digits[n_digits] = '\0';
    int exponent = *cursor == 'e' ? atoi(cursor + 1) : 0;
    while (n_digits > 1 && digits[n_digits - 1] == '0') {
        digits[--n_digits] = '\0';
    }

    /* Python uses fixed notation for exponents in [-4, 16), scientific otherwise. */
    size_t n = 0;
    char out[64];
    if (is_negative) {
        out[n++] = '-';
    }
    if (exponent >= -4 && exponent < 16) {
        if (exponent < 0) {
            out[n++] = '0';
            out[n++] = '.';
            for (int i = 0; i < -exponent - 1; i++) {
                out[n++] = '0';
            }
            memcpy(out + n, digits, n_digits);
            n += n_digits;
        } else {
            size_t n_integer = (size_t)exponent + 1;
            for (size_t i = 0; i < n_integer; i++) {
                out[n++] = i < n_digits ? digits[i] : '0';
            }
            out[n++] = '.';
            if (n_digits > n_integer) {
                memcpy(out + n, digits + n_integer, n_digits - n_integer);
                n += n_digits - n_integer;
            } else {
                out[n++] = '0';
            }
        }
        out[n] = '\0';
    } else {
        out[n++] = digits[0];
        if (n_digits > 1) {
            out[n++] = '.';
            memcpy(out + n, digits + 1, n_digits - 1);
            n += n_digits - 1;
        }
        snprintf(out + n, sizeof(out) - n, "e%c%02d", exponent < 0 ? '-' : '+',
                 exponent < 0 ? -exponent : exponent);
    }
    snprintf(text, n_text, "%s", out);
}

static void append_cstr(quill_chat_arena *arena, quill_chat_builder *builder, const char *text,
                        bool is_template_text) {
    quill__chat_builder_append(arena, builder, text, strlen(text), is_template_text);
}

static void append_scalar(quill_chat_arena *arena, quill_chat_builder *builder,
                          quill_chat_value value, bool is_template_text) {
    char text[64];
    switch (value.kind) {
    case QUILL_CHAT_NONE:
        append_cstr(arena, builder, "None", is_template_text);
        break;
    case QUILL_CHAT_BOOL:
        append_cstr(arena, builder, value.as.boolean ? "True" : "False", is_template_text);
        break;
    case QUILL_CHAT_INT:
        snprintf(text, sizeof(text), "%lld", (long long)value.as.integer);
        append_cstr(arena, builder, text, is_template_text);
        break;
    case QUILL_CHAT_FLOAT:
        quill__chat_format_float(value.as.number, text, sizeof(text));
        append_cstr(arena, builder, text, is_template_text);
        break;
    default:
        break;
    }
}

/* Decodes one UTF-8 code point at bytes[*index]; invalid bytes decode as themselves (< 0x100). */
static int32_t next_code_point(const char *bytes, size_t n_bytes, size_t *index) {
    utf8proc_int32_t code_point = 0;
    utf8proc_ssize_t n_read = utf8proc_iterate((const utf8proc_uint8_t *)bytes + *index,
                                               (utf8proc_ssize_t)(n_bytes - *index), &code_point);
    if (n_read <= 0) {
        code_point = (unsigned char)bytes[*index];
        n_read = 1;
        code_point = -code_point - 1; /* marks a raw byte */
    }
    *index += (size_t)n_read;
    return code_point;
}

static bool is_printable(int32_t code_point) {
    if (code_point < 0x20 || code_point == 0x7f) {
        return false;
    }
    if (code_point < 0x7f) {
        return true;
    }
    /* Python's str.isprintable: false for control, format, surrogate, private use,
       unassigned and separator categories other than the ASCII space. */
    switch (utf8proc_category(code_point)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
        return false;
    default:
        return true;
    }
}

static void append_string_repr(quill_chat_arena *arena, quill_chat_builder *builder,
                               const quill_chat_string *string, bool is_template_text) {
    bool has_single = memchr(string->bytes, '\'', string->n_bytes) != NULL;
    bool has_double = memchr(string->bytes, '"', string->n_bytes) != NULL;
    char quote = has_single && !has_double ? '"' : '\'';
    quill__chat_builder_append(arena, builder, &quote, 1, is_template_text);
    size_t index = 0;
    while (index < string->n_bytes) {
        size_t start = index;
        int32_t code_point = next_code_point(string->bytes, string->n_bytes, &index);
        char escape[16];
        escape[0] = '\0';
        if (code_point < 0) {
            snprintf(escape, sizeof(escape), "\\x%02x", (unsigned)(-code_point - 1));
        } else if (code_point == '\\' || code_point == quote) {
            snprintf(escape, sizeof(escape), "\\%c", (char)code_point);
        } else if (code_point == '\n') {
            snprintf(escape, sizeof(escape), "\\n");
        } else if (code_point == '\r') {
            snprintf(escape, sizeof(escape), "\\r");
        } else if (code_point == '\t') {
            snprintf(escape, sizeof(escape), "\\t");
        } else if (!is_printable(code_point)) {
            if (code_point < 0x100) {
                snprintf(escape, sizeof(escape), "\\x%02x", (unsigned)code_point);
            } else if (code_point < 0x10000) {
                snprintf(escape, sizeof(escape), "\\u%04x", (unsigned)code_point);
            } else {
                snprintf(escape, sizeof(escape), "\\U%08x", (unsigned)code_point);
            }
        }
        if (escape[0] != '\0') {
            append_cstr(arena, builder, escape, is_template_text);
        } else {
            quill__chat_builder_append(arena, builder, string->bytes + start, index - start,
                                       is_template_text);
        }
    }
    quill__chat_builder_append(arena, builder, &quote, 1, is_template_text);
}

static void append_repr_at(quill_chat_arena *arena, quill_chat_builder *builder,
                           quill_chat_value value, int depth, bool is_template_text) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        quill__chat_arena_fail(arena, QUILL_ERR_FORMAT,
                               "chat template: value nested deeper than %d levels",
                               QUILL_CHAT_MAX_VALUE_DEPTH);
    }
    switch (value.kind) {
    case QUILL_CHAT_STRING:
        append_string_repr(arena, builder, value.as.string, is_template_text);
        break;
    case QUILL_CHAT_LIST: {
        const quill_chat_list *list = value.as.list;
        append_cstr(arena, builder, list->is_tuple ? "(" : "[", is_template_text);
        for (size_t i = 0; i < list->n_items; i++) {
            if (i > 0) {
                append_cstr(arena, builder, ", ", is_template_text);
            }
            append_repr_at(arena, builder, list->items[i], depth + 1, is_template_text);
        }
        if (list->is_tuple && list->n_items == 1) {
            append_cstr(arena, builder, ",", is_template_text);
        }
        append_cstr(arena, builder, list->is_tuple ? ")" : "]", is_template_text);
        break;
    }
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE: {
        const quill_chat_dict *dict = value.as.dict;
        append_cstr(arena, builder, value.kind == QUILL_CHAT_DICT ? "{" : "<Namespace {",
                    is_template_text);
        for (size_t i = 0; i < dict->n_items; i++) {
            if (i > 0) {
                append_cstr(arena, builder, ", ", is_template_text);
            }
            append_repr_at(arena, builder, dict->keys[i], depth + 1, is_template_text);
            append_cstr(arena, builder, ": ", is_template_text);
            append_repr_at(arena, builder, dict->values[i], depth + 1, is_template_text);
        }
        append_cstr(arena, builder, value.kind == QUILL_CHAT_DICT ? "}" : "}>", is_template_text);
        break;
    }
    case QUILL_CHAT_UNDEFINED:
        append_cstr(arena, builder, "Undefined", is_template_text);
        break;
    case QUILL_CHAT_NONE:
    case QUILL_CHAT_BOOL:
    case QUILL_CHAT_INT:
    case QUILL_CHAT_FLOAT:
        append_scalar(arena, builder, value, is_template_text);
        break;
    default:
        append_cstr(arena, builder, "<", is_template_text);
        append_cstr(arena, builder, quill__chat_type_name(value), is_template_text);
        append_cstr(arena, builder, ">", is_template_text);
        break;
    }
}

void quill__chat_append_repr(quill_chat_arena *arena, quill_chat_builder *builder,
                             quill_chat_value value, int depth) {
    append_repr_at(arena, builder, value, depth, !quill__chat_has_data(value));
}

const quill_chat_string *quill__chat_to_string(quill_chat_arena *arena, quill_chat_value value) {
    if (value.kind == QUILL_CHAT_STRING) {
        return value.as.string;
    }
    quill_chat_builder builder = {0};
    if (value.kind != QUILL_CHAT_UNDEFINED) {
        quill__chat_append_repr(arena, &builder, value, 0);
    }
    return quill__chat_builder_finish(arena, &builder);
}

/* JSON. */

static void append_json_string(quill_chat_arena *arena, quill_chat_builder *builder,
                               const char *bytes, size_t n_bytes, bool ensure_ascii,
                               bool is_template_text) {
    quill__chat_builder_append(arena, builder, "\"", 1, is_template_text);
    size_t run_start = 0;
    for (size_t i = 0; i < n_bytes; i++) {
        unsigned char c = (unsigned char)bytes[i];
        char escape[16];
        escape[0] = '\0';
        if (ensure_ascii && c >= 0x80) {
            size_t next = i;
            int32_t code_point = next_code_point(bytes, n_bytes, &next);
            if (code_point < 0) {
                code_point = -code_point - 1;
            }
            if (code_point >= 0x10000) {
                uint32_t offset = (uint32_t)code_point - 0x10000;
                snprintf(escape, sizeof(escape), "\\u%04x\\u%04x", 0xd800 + (offset >> 10),
                         0xdc00 + (offset & 0x3ff));
            } else {
                snprintf(escape, sizeof(escape), "\\u%04x", (unsigned)code_point);
            }
            quill__chat_builder_append(arena, builder, bytes + run_start, i - run_start,
                                       is_template_text);
            append_cstr(arena, builder, escape, is_template_text);
            i = next - 1;
            run_start = next;
            continue;
        }
        switch (c) {
        case '"':
            memcpy(escape, "\\\"", 3);
            break;
        case '\\':
            memcpy(escape, "\\\\", 3);
            break;
        case '\n':
            memcpy(escape, "\\n", 3);
            break;
        case '\r':
            memcpy(escape, "\\r", 3);
            break;
        case '\t':
            memcpy(escape, "\\t", 3);
            break;
        case '\b':
            memcpy(escape, "\\b", 3);
            break;
        case '\f':
            memcpy(escape, "\\f", 3);
            break;
        default:
            if (c < 0x20) {
                snprintf(escape, sizeof(escape), "\\u%04x", (unsigned)c);
            }
            break;
        }
        if (escape[0] != '\0') {
            quill__chat_builder_append(arena, builder, bytes + run_start, i - run_start,
                                       is_template_text);
            append_cstr(arena, builder, escape, is_template_text);
            run_start = i + 1;
        }
    }
    quill__chat_builder_append(arena, builder, bytes + run_start, n_bytes - run_start,
                               is_template_text);
    quill__chat_builder_append(arena, builder, "\"", 1, is_template_text);
}

static void append_json_newline(quill_chat_arena *arena, quill_chat_builder *builder,
                                const quill_chat_json_options *options, int depth,
                                bool is_template_text) {
    if (options->indent < 0) {
        return;
    }
    append_cstr(arena, builder, "\n", is_template_text);
    for (int level = 0; level < depth; level++) {
        for (int i = 0; i < options->indent; i++) {
            append_cstr(arena, builder, " ", is_template_text);
        }
    }
}

static void append_json_key(quill_chat_arena *arena, quill_chat_builder *builder,
                            quill_chat_value key, bool ensure_ascii, bool is_template_text) {
    /* json.dumps converts str, int, float, bool and None keys to strings. */
    char text[64];
    switch (key.kind) {
    case QUILL_CHAT_STRING:
        append_json_string(arena, builder, key.as.string->bytes, key.as.string->n_bytes,
                           ensure_ascii, is_template_text);
        return;
    case QUILL_CHAT_NONE:
        snprintf(text, sizeof(text), "\"null\"");
        break;
    case QUILL_CHAT_BOOL:
        snprintf(text, sizeof(text), "\"%s\"", key.as.boolean ? "true" : "false");
        break;
    case QUILL_CHAT_INT:
        snprintf(text, sizeof(text), "\"%lld\"", (long long)key.as.integer);
        break;
    case QUILL_CHAT_FLOAT: {
        char number[48];
        quill__chat_format_float(key.as.number, number, sizeof(number));
        snprintf(text, sizeof(text), "\"%s\"", number);
        break;
    }
    default:
        quill__chat_arena_fail(arena, QUILL_ERR_INVALID_ARG,
                               "chat template: TypeError: keys must be str, int, float, bool or "
                               "None, not %s",
                               quill__chat_type_name(key));
    }
    append_cstr(arena, builder, text, is_template_text);
}

typedef struct json_entry {
    quill_chat_value key;
    quill_chat_value value;
} json_entry;

static int compare_json_entries(const void *left, const void *right) {
    const quill_chat_string *a = ((const json_entry *)left)->key.as.string;
    const quill_chat_string *b = ((const json_entry *)right)->key.as.string;
    size_t n = a->n_bytes < b->n_bytes ? a->n_bytes : b->n_bytes;
    int order = n > 0 ? memcmp(a->bytes, b->bytes, n) : 0;
    if (order != 0) {
        return order;
    }
    return a->n_bytes < b->n_bytes ? -1 : (a->n_bytes > b->n_bytes ? 1 : 0);
}

static void append_json_at(quill_chat_arena *arena, quill_chat_builder *builder,
                           quill_chat_value value, const quill_chat_json_options *options,
                           int depth, bool is_template_text) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        quill__chat_arena_fail(arena, QUILL_ERR_FORMAT,
                               "chat template: value nested deeper than %d levels",
                               QUILL_CHAT_MAX_VALUE_DEPTH);
    }
    const char *item_separator = options->item_separator;
    if (item_separator == NULL) {
        item_separator = options->indent >= 0 ? "," : ", ";
    }
    const char *key_separator = options->key_separator != NULL ? options->key_separator : ": ";
    char text[64];
    switch (value.kind) {
    case QUILL_CHAT_NONE:
        append_cstr(arena, builder, "null", is_template_text);
        return;
    case QUILL_CHAT_BOOL:
        append_cstr(arena, builder, value.as.boolean ? "true" : "false", is_template_text);
        return;
    case QUILL_CHAT_INT:
        snprintf(text, sizeof(text), "%lld", (long long)value.as.integer);
        append_cstr(arena, builder, text, is_template_text);
        return;
    case QUILL_CHAT_FLOAT:
        if (isnan(value.as.number)) {
            append_cstr(arena, builder, "NaN", is_template_text);
        } else if (isinf(value.as.number)) {
            append_cstr(arena, builder, value.as.number < 0 ? "-Infinity" : "Infinity",
                        is_template_text);
        } else {
            quill__chat_format_float(value.as.number, text, sizeof(text));
            append_cstr(arena, builder, text, is_template_text);
        }
        return;
    case QUILL_CHAT_STRING:
        append_json_string(arena, builder, value.as.string->bytes, value.as.string->n_bytes,
                           options->ensure_ascii, is_template_text);
        return;
    case QUILL_CHAT_LIST: {
        const quill_chat_list *list = value.as.list;
        if (list->n_items == 0) {
            append_cstr(arena, builder, "[]", is_template_text);
            return;
        }
        append_cstr(arena, builder, "[", is_template_text);
        for (size_t i = 0; i < list->n_items; i++) {
            if (i > 0) {
                append_cstr(arena, builder, item_separator, is_template_text);
            }
            append_json_newline(arena, builder, options, depth + 1, is_template_text);
            append_json_at(arena, builder, list->items[i], options, depth + 1, is_template_text);
        }
        append_json_newline(arena, builder, options, depth, is_template_text);
        append_cstr(arena, builder, "]", is_template_text);
        return;
    }
    case QUILL_CHAT_DICT: {
        const quill_chat_dict *dict = value.as.dict;
        if (dict->n_items == 0) {
            append_cstr(arena, builder, "{}", is_template_text);
            return;
        }
        json_entry *entries = quill__chat_arena_alloc_array(arena, dict->n_items, sizeof(*entries));
        bool are_keys_strings = true;
        for (size_t i = 0; i < dict->n_items; i++) {
            entries[i].key = dict->keys[i];
            entries[i].value = dict->values[i];
            are_keys_strings = are_keys_strings && dict->keys[i].kind == QUILL_CHAT_STRING;
        }
        if (options->sort_keys) {
            if (!are_keys_strings) {
                quill__chat_arena_fail(arena, QUILL_ERR_INVALID_ARG,
                                       "chat template: tojson with sort_keys needs string keys");
            }
            qsort(entries, dict->n_items, sizeof(*entries), compare_json_entries);
        }
        append_cstr(arena, builder, "{", is_template_text);
        for (size_t i = 0; i < dict->n_items; i++) {
            if (i > 0) {
                append_cstr(arena, builder, item_separator, is_template_text);
            }
            append_json_newline(arena, builder, options, depth + 1, is_template_text);
            append_json_key(arena, builder, entries[i].key, options->ensure_ascii,
                            is_template_text);
            append_cstr(arena, builder, key_separator, is_template_text);
            append_json_at(arena, builder, entries[i].value, options, depth + 1, is_template_text);
        }
        append_json_newline(arena, builder, options, depth, is_template_text);
        append_cstr(arena, builder, "}", is_template_text);
        return;
    }
    default:
        quill__chat_arena_fail(arena, QUILL_ERR_INVALID_ARG,
                               "chat template: TypeError: Object of type %s is not JSON "
                               "serializable",
                               quill__chat_type_name(value));
    }
}

void quill__chat_append_json(quill_chat_arena *arena, quill_chat_builder *builder,
                             quill_chat_value value, const quill_chat_json_options *options) {
    append_json_at(arena, builder, value, options, 0, !quill__chat_has_data(value));
}

static quill_chat_value from_json_at(quill_chat_arena *arena, struct json_object *json,
                                     bool is_template_text, int depth) {
    if (depth > QUILL_CHAT_MAX_VALUE_DEPTH) {
        quill__chat_arena_fail(arena, QUILL_ERR_INVALID_ARG,
                               "chat template: input JSON nested deeper than %d levels",
                               QUILL_CHAT_MAX_VALUE_DEPTH);
    }
    switch (json_object_get_type(json)) {
    case json_type_null:
        return quill__chat_none();
    case json_type_boolean:
        return quill__chat_bool(json_object_get_boolean(json));
    case json_type_int:
        return quill__chat_int(json_object_get_int64(json));
    case json_type_double:
        return quill__chat_float(json_object_get_double(json));
    case json_type_string:
        return quill__chat_string_new(arena, json_object_get_string(json),
                                      (size_t)json_object_get_string_len(json), is_template_text);
    case json_type_array: {
        size_t n_items = json_object_array_length(json);
        quill_chat_value list = quill__chat_list_new(arena, n_items);
        for (size_t i = 0; i < n_items; i++) {
            quill__chat_list_append(arena, list.as.list,
                                    from_json_at(arena, json_object_array_get_idx(json, i),
                                                 is_template_text, depth + 1));
        }
        return list;
    }
    case json_type_object: {
        quill_chat_value dict =
            quill__chat_dict_new(arena, (size_t)json_object_object_length(json));
        json_object_object_foreach(json, key, member) {
            quill_chat_value key_value =
                quill__chat_string_new(arena, key, strlen(key), is_template_text);
            quill__chat_dict_push(arena, dict.as.dict, key_value,
                                  from_json_at(arena, member, is_template_text, depth + 1));
        }
        return dict;
    }
    }
    return quill__chat_none();
}

quill_chat_value quill__chat_from_json(quill_chat_arena *arena, struct json_object *json,
                                       bool is_template_text) {
    return from_json_at(arena, json, is_template_text, 0);
}
