/*
 * Interpreter of parsed chat templates, with Jinja's semantics as a sandboxed Python Jinja2
 * renders them. A for-loop body and a macro call open a scope, but `if` does not. Undefined is
 * lenient: it is falsy, prints as "" and iterates as empty, but reading its attributes or
 * calling it fails. Operators and indexing follow Python. Every step checks the evaluation depth,
 * and loops count iterations, so a hostile template ends with an error instead of exhausting the
 * stack or running forever.
 */
#include "chat/interpreter.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    MAX_ARGUMENTS = 32 /* positional, and separately keyword, arguments of one call */
};

void quill__chat_fail(quill_chat_context *context, quill_status status, const char *fmt, ...) {
    char message[768];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    quill__chat_arena_fail(&context->arena, status, "chat template: line %d: %s", context->line,
                           message);
}

static void enter(quill_chat_context *context, const quill_chat_node *node) {
    if (++context->depth > QUILL_CHAT_MAX_EVAL_DEPTH) {
        quill__chat_fail(context, QUILL_ERR_FORMAT,
                         "evaluation nested deeper than %d levels (recursive macro or loop?)",
                         QUILL_CHAT_MAX_EVAL_DEPTH);
    }
    context->line = node->line;
}

static void leave(quill_chat_context *context) {
    context->depth--;
}

/* Scopes. */

static quill_chat_frame *frame_new(quill_chat_context *context, quill_chat_frame *parent) {
    quill_chat_frame *frame = quill__chat_arena_alloc(&context->arena, sizeof(*frame));
    frame->parent = parent;
    return frame;
}

void quill__chat_frame_set(quill_chat_context *context, quill_chat_frame *frame, const char *name,
                           quill_chat_value value) {
    for (size_t i = 0; i < frame->n_variables; i++) {
        if (strcmp(frame->names[i], name) == 0) {
            frame->values[i] = value;
            return;
        }
    }
    if (frame->n_variables == frame->capacity) {
        size_t capacity = frame->capacity < 8 ? 8 : frame->capacity * 2;
        const char **names =
            quill__chat_arena_alloc_array(&context->arena, capacity, sizeof(*names));
        quill_chat_value *values =
            quill__chat_arena_alloc_array(&context->arena, capacity, sizeof(*values));
        if (frame->n_variables > 0) {
            memcpy(names, frame->names, frame->n_variables * sizeof(*names));
            memcpy(values, frame->values, frame->n_variables * sizeof(*values));
        }
        frame->names = names;
        frame->values = values;
        frame->capacity = capacity;
    }
    frame->names[frame->n_variables] = name;
    frame->values[frame->n_variables] = value;
    frame->n_variables++;
}

static char *format_hint(quill_chat_context *context, const char *fmt, const char *a,
                         const char *b) {
    char hint[256];
    snprintf(hint, sizeof(hint), fmt, a, b);
    return quill__chat_arena_strndup(&context->arena, hint, strlen(hint));
}

quill_chat_value quill__chat_lookup(quill_chat_context *context, const char *name) {
    for (quill_chat_frame *frame = context->frame; frame != NULL; frame = frame->parent) {
        for (size_t i = frame->n_variables; i > 0; i--) {
            if (strcmp(frame->names[i - 1], name) == 0) {
                return frame->values[i - 1];
            }
        }
    }
    if (quill__chat_is_global_function(name)) {
        quill_chat_value function = {.kind = QUILL_CHAT_FUNCTION};
        function.as.function_name = name;
        return function;
    }
    return quill__chat_undefined(format_hint(context, "'%s' is undefined", name, ""));
}

void quill__chat_require_defined(quill_chat_context *context, quill_chat_value value) {
    if (value.kind == QUILL_CHAT_UNDEFINED) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "UndefinedError: %s",
                         value.as.undefined_hint != NULL ? value.as.undefined_hint
                                                         : "value is undefined");
    }
}

/* Strings: Python indexes str by code point, so non-ASCII strings need offsets. */

static bool is_ascii(const quill_chat_string *string) {
    for (size_t i = 0; i < string->n_bytes; i++) {
        if ((unsigned char)string->bytes[i] >= 0x80) {
            return false;
        }
    }
    return true;
}

/* Returns the byte offset of each code point plus one past the end; *n_points gets the count. */
static size_t *code_point_offsets(quill_chat_context *context, const quill_chat_string *string,
                                  size_t *n_points) {
    size_t n = 0;
    for (size_t i = 0; i < string->n_bytes; i++) {
        if (((unsigned char)string->bytes[i] & 0xc0) != 0x80) {
            n++;
        }
    }
    size_t *offsets = quill__chat_arena_alloc_array(&context->arena, n + 1, sizeof(*offsets));
    size_t k = 0;
    for (size_t i = 0; i < string->n_bytes; i++) {
        if (((unsigned char)string->bytes[i] & 0xc0) != 0x80) {
            offsets[k++] = i;
        }
    }
    offsets[k] = string->n_bytes;
    *n_points = n;
    return offsets;
}

static quill_chat_value substring(quill_chat_context *context, const quill_chat_string *string,
                                  size_t offset, size_t n_bytes) {
    quill_chat_builder builder = {0};
    quill__chat_builder_append_slice(&context->arena, &builder, string, offset, n_bytes);
    return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
}

const quill_chat_list *quill__chat_iterate(quill_chat_context *context, quill_chat_value value) {
    switch (value.kind) {
    case QUILL_CHAT_UNDEFINED:
        return quill__chat_list_new(&context->arena, 0).as.list;
    case QUILL_CHAT_LIST:
        return value.as.list;
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE: {
        quill_chat_value keys = quill__chat_list_new(&context->arena, value.as.dict->n_items);
        for (size_t i = 0; i < value.as.dict->n_items; i++) {
            quill__chat_list_append(&context->arena, keys.as.list, value.as.dict->keys[i]);
        }
        return keys.as.list;
    }
    case QUILL_CHAT_STRING: {
        size_t n_points = 0;
        size_t *offsets = code_point_offsets(context, value.as.string, &n_points);
        quill_chat_value characters = quill__chat_list_new(&context->arena, n_points);
        for (size_t i = 0; i < n_points; i++) {
            quill__chat_list_append(
                &context->arena, characters.as.list,
                substring(context, value.as.string, offsets[i], offsets[i + 1] - offsets[i]));
        }
        return characters.as.list;
    }
    default:
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: '%s' object is not iterable",
                         quill__chat_type_name(value));
    }
}

/* Attribute and item access. */

static quill_chat_value make_method(quill_chat_context *context, quill_chat_value self,
                                    const char *name) {
    quill_chat_method *method = quill__chat_arena_alloc(&context->arena, sizeof(*method));
    method->self = self;
    method->name = name;
    quill_chat_value value = {.kind = QUILL_CHAT_METHOD};
    value.as.method = method;
    return value;
}

static quill_chat_value missing_attribute(quill_chat_context *context, quill_chat_value object,
                                          const char *name) {
    return quill__chat_undefined(format_hint(context, "'%s object' has no attribute '%s'",
                                             quill__chat_type_name(object), name));
}

static quill_chat_value loop_attribute(quill_chat_context *context, quill_chat_value object,
                                       const char *name) {
    const quill_chat_loop *loop = object.as.loop;
    int64_t length = (int64_t)loop->items->n_items;
    int64_t index0 = (int64_t)loop->index0;
    if (strcmp(name, "index") == 0) {
        return quill__chat_int(index0 + 1);
    }
    if (strcmp(name, "index0") == 0) {
        return quill__chat_int(index0);
    }
    if (strcmp(name, "revindex") == 0) {
        return quill__chat_int(length - index0);
    }
    if (strcmp(name, "revindex0") == 0) {
        return quill__chat_int(length - index0 - 1);
    }
    if (strcmp(name, "first") == 0) {
        return quill__chat_bool(index0 == 0);
    }
    if (strcmp(name, "last") == 0) {
        return quill__chat_bool(index0 == length - 1);
    }
    if (strcmp(name, "length") == 0) {
        return quill__chat_int(length);
    }
    if (strcmp(name, "depth") == 0) {
        return quill__chat_int(loop->depth0 + 1);
    }
    if (strcmp(name, "depth0") == 0) {
        return quill__chat_int(loop->depth0);
    }
    if (strcmp(name, "previtem") == 0) {
        if (index0 == 0) {
            return quill__chat_undefined("there is no previous item");
        }
        return loop->items->items[index0 - 1];
    }
    if (strcmp(name, "nextitem") == 0) {
        if (index0 + 1 >= length) {
            return quill__chat_undefined("there is no next item");
        }
        return loop->items->items[index0 + 1];
    }
    if (strcmp(name, "cycle") == 0) {
        return make_method(context, object, "cycle");
    }
    return missing_attribute(context, object, name);
}

quill_chat_value quill__chat_get_attribute(quill_chat_context *context, quill_chat_value object,
                                           const char *name) {
    quill__chat_require_defined(context, object);
    switch (object.kind) {
    case QUILL_CHAT_DICT: {
        if (quill__chat_has_method(object, name)) {
            return make_method(context, object, name);
        }
        quill_chat_value *found = quill__chat_dict_find_cstr(object.as.dict, name);
        return found != NULL ? *found : missing_attribute(context, object, name);
    }
    case QUILL_CHAT_NAMESPACE: {
        quill_chat_value *found = quill__chat_dict_find_cstr(object.as.dict, name);
        return found != NULL ? *found : missing_attribute(context, object, name);
    }
    case QUILL_CHAT_LOOP:
        return loop_attribute(context, object, name);
    default:
        if (quill__chat_has_method(object, name)) {
            return make_method(context, object, name);
        }
        return missing_attribute(context, object, name);
    }
}

/* Resolves a Python index (negative counts from the end); false when out of range. */
static bool resolve_index(int64_t index, size_t length, size_t *out) {
    if (index < 0) {
        index += (int64_t)length;
    }
    if (index < 0 || (uint64_t)index >= length) {
        return false;
    }
    *out = (size_t)index;
    return true;
}

quill_chat_value quill__chat_get_item(quill_chat_context *context, quill_chat_value object,
                                      quill_chat_value key) {
    quill__chat_require_defined(context, object);
    bool is_integer_key = key.kind == QUILL_CHAT_INT || key.kind == QUILL_CHAT_BOOL;
    int64_t index = key.kind == QUILL_CHAT_BOOL ? key.as.boolean : key.as.integer;
    size_t position = 0;
    switch (object.kind) {
    case QUILL_CHAT_LIST:
        if (is_integer_key) {
            if (resolve_index(index, object.as.list->n_items, &position)) {
                return object.as.list->items[position];
            }
            return quill__chat_undefined("list index out of range");
        }
        break;
    case QUILL_CHAT_STRING:
        if (is_integer_key) {
            const quill_chat_string *string = object.as.string;
            if (is_ascii(string)) {
                if (resolve_index(index, string->n_bytes, &position)) {
                    return substring(context, string, position, 1);
                }
            } else {
                size_t n_points = 0;
                size_t *offsets = code_point_offsets(context, string, &n_points);
                if (resolve_index(index, n_points, &position)) {
                    return substring(context, string, offsets[position],
                                     offsets[position + 1] - offsets[position]);
                }
            }
            return quill__chat_undefined("string index out of range");
        }
        break;
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE: {
        quill_chat_value *found = quill__chat_dict_find(object.as.dict, key);
        if (found != NULL) {
            return *found;
        }
        break;
    }
    default:
        break;
    }
    /* Jinja falls back to the attribute of that name for string keys. */
    if (key.kind == QUILL_CHAT_STRING) {
        return quill__chat_get_attribute(context, object, key.as.string->bytes);
    }
    const quill_chat_string *text = quill__chat_to_string(&context->arena, key);
    return missing_attribute(context, object, text->bytes);
}

/* Python slice indices for a sequence of length n. */
static void slice_indices(quill_chat_context *context, quill_chat_value start_value,
                          quill_chat_value stop_value, quill_chat_value step_value, size_t n,
                          int64_t *start, int64_t *stop, int64_t *step) {
    int64_t length = (int64_t)n;
    *step = 1;
    if (step_value.kind != QUILL_CHAT_NONE && step_value.kind != QUILL_CHAT_UNDEFINED) {
        if (step_value.kind != QUILL_CHAT_INT) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: slice indices must be integers or None");
        }
        *step = step_value.as.integer;
        if (*step == 0) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "ValueError: slice step cannot be zero");
        }
    }
    int64_t lower = *step < 0 ? -1 : 0;
    int64_t upper = *step < 0 ? length - 1 : length;
    const quill_chat_value bounds[2] = {start_value, stop_value};
    int64_t *results[2] = {start, stop};
    for (int i = 0; i < 2; i++) {
        quill_chat_value bound = bounds[i];
        if (bound.kind == QUILL_CHAT_NONE || bound.kind == QUILL_CHAT_UNDEFINED) {
            if (i == 0) {
                *results[i] = *step < 0 ? upper : lower;
            } else {
                *results[i] = *step < 0 ? lower : upper;
            }
            continue;
        }
        if (bound.kind != QUILL_CHAT_INT && bound.kind != QUILL_CHAT_BOOL) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: slice indices must be integers or None");
        }
        int64_t value = bound.kind == QUILL_CHAT_BOOL ? bound.as.boolean : bound.as.integer;
        if (value < 0) {
            value = value < -length ? lower : value + length;
            if (value < lower) {
                value = lower;
            }
        } else if (value > upper) {
            value = upper;
        }
        *results[i] = value;
    }
}

static quill_chat_value slice_value(quill_chat_context *context, quill_chat_value object,
                                    quill_chat_value start_value, quill_chat_value stop_value,
                                    quill_chat_value step_value) {
    quill__chat_require_defined(context, object);
    int64_t start = 0;
    int64_t stop = 0;
    int64_t step = 1;
    if (object.kind == QUILL_CHAT_LIST) {
        const quill_chat_list *list = object.as.list;
        slice_indices(context, start_value, stop_value, step_value, list->n_items, &start, &stop,
                      &step);
        quill_chat_value result = quill__chat_list_new(&context->arena, 0);
        result.as.list->is_tuple = list->is_tuple;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            quill__chat_list_append(&context->arena, result.as.list, list->items[i]);
        }
        return result;
    }
    if (object.kind == QUILL_CHAT_STRING) {
        const quill_chat_string *string = object.as.string;
        size_t n_points = 0;
        size_t *offsets = code_point_offsets(context, string, &n_points);
        slice_indices(context, start_value, stop_value, step_value, n_points, &start, &stop, &step);
        quill_chat_builder builder = {0};
        if (step == 1) {
            if (stop > start) {
                quill__chat_builder_append_slice(&context->arena, &builder, string, offsets[start],
                                                 offsets[stop] - offsets[start]);
            }
        } else {
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                quill__chat_builder_append_slice(&context->arena, &builder, string, offsets[i],
                                                 offsets[i + 1] - offsets[i]);
            }
        }
        return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
    }
    quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: '%s' object is not subscriptable",
                     quill__chat_type_name(object));
}

/* Operators. */

static quill_chat_value concatenate(quill_chat_context *context, const quill_chat_string *left,
                                    const quill_chat_string *right) {
    quill_chat_builder builder = {0};
    quill__chat_builder_append_string(&context->arena, &builder, left);
    quill__chat_builder_append_string(&context->arena, &builder, right);
    return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
}

static _Noreturn void fail_operands(quill_chat_context *context, const char *operator_text,
                                    quill_chat_value left, quill_chat_value right) {
    quill__chat_require_defined(context, left);
    quill__chat_require_defined(context, right);
    if (strcmp(operator_text, "+") == 0 &&
        (left.kind == QUILL_CHAT_STRING || left.kind == QUILL_CHAT_LIST)) {
        quill__chat_fail(
            context, QUILL_ERR_INVALID_ARG, "TypeError: can only concatenate %s (not \"%s\") to %s",
            quill__chat_type_name(left), quill__chat_type_name(right), quill__chat_type_name(left));
    }
    quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                     "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", operator_text,
                     quill__chat_type_name(left), quill__chat_type_name(right));
}

static bool is_integral(quill_chat_value value) {
    return value.kind == QUILL_CHAT_INT || value.kind == QUILL_CHAT_BOOL;
}

static int64_t integer_of(quill_chat_value value) {
    return value.kind == QUILL_CHAT_BOOL ? value.as.boolean : value.as.integer;
}

static quill_chat_value repeat(quill_chat_context *context, quill_chat_value sequence,
                               int64_t count) {
    if (sequence.kind == QUILL_CHAT_STRING) {
        quill_chat_builder builder = {0};
        for (int64_t i = 0; i < count; i++) {
            quill__chat_builder_append_string(&context->arena, &builder, sequence.as.string);
        }
        return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
    }
    quill_chat_value list = quill__chat_list_new(&context->arena, 0);
    list.as.list->is_tuple = sequence.as.list->is_tuple;
    for (int64_t i = 0; i < count; i++) {
        if (list.as.list->n_items > (size_t)QUILL_CHAT_MAX_ITERATIONS) {
            quill__chat_fail(context, QUILL_ERR_FORMAT, "list repetition longer than %d items",
                             QUILL_CHAT_MAX_ITERATIONS);
        }
        for (size_t j = 0; j < sequence.as.list->n_items; j++) {
            quill__chat_list_append(&context->arena, list.as.list, sequence.as.list->items[j]);
        }
        if (sequence.as.list->n_items == 0) {
            break;
        }
    }
    return list;
}

static bool contains(quill_chat_context *context, quill_chat_value container,
                     quill_chat_value item) {
    switch (container.kind) {
    case QUILL_CHAT_UNDEFINED:
        return false;
    case QUILL_CHAT_STRING:
        if (item.kind != QUILL_CHAT_STRING) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: 'in <string>' requires string as left operand, not %s",
                             quill__chat_type_name(item));
        }
        if (item.as.string->n_bytes == 0) {
            return true;
        }
        return memmem(container.as.string->bytes, container.as.string->n_bytes,
                      item.as.string->bytes, item.as.string->n_bytes) != NULL;
    case QUILL_CHAT_LIST:
        for (size_t i = 0; i < container.as.list->n_items; i++) {
            if (quill__chat_equals(container.as.list->items[i], item)) {
                return true;
            }
        }
        return false;
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE:
        return quill__chat_dict_find(container.as.dict, item) != NULL;
    default:
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: argument of type '%s' is not iterable",
                         quill__chat_type_name(container));
    }
}

static double floor_modulo(double a, double b) {
    double result = fmod(a, b);
    if (result != 0.0 && ((result < 0) != (b < 0))) {
        result += b;
    }
    return result;
}

static quill_chat_value arithmetic(quill_chat_context *context, const char *operator_text,
                                   quill_chat_value left, quill_chat_value right) {
    char op = operator_text[0];
    bool is_double_char = operator_text[1] != '\0';

    if (!quill__chat_is_number(left) || !quill__chat_is_number(right)) {
        if (op == '+' && left.kind == QUILL_CHAT_STRING && right.kind == QUILL_CHAT_STRING) {
            return concatenate(context, left.as.string, right.as.string);
        }
        if (op == '+' && left.kind == QUILL_CHAT_LIST && right.kind == QUILL_CHAT_LIST &&
            left.as.list->is_tuple == right.as.list->is_tuple) {
            quill_chat_value list = quill__chat_list_new(
                &context->arena, left.as.list->n_items + right.as.list->n_items);
            list.as.list->is_tuple = left.as.list->is_tuple;
            for (size_t i = 0; i < left.as.list->n_items; i++) {
                quill__chat_list_append(&context->arena, list.as.list, left.as.list->items[i]);
            }
            for (size_t i = 0; i < right.as.list->n_items; i++) {
                quill__chat_list_append(&context->arena, list.as.list, right.as.list->items[i]);
            }
            return list;
        }
        if (op == '%' && left.kind == QUILL_CHAT_STRING) {
            return quill__chat_percent_format(context, left.as.string, right);
        }
        if (op == '*' && !is_double_char) {
            if ((left.kind == QUILL_CHAT_STRING || left.kind == QUILL_CHAT_LIST) &&
                is_integral(right)) {
                return repeat(context, left, integer_of(right));
            }
            if ((right.kind == QUILL_CHAT_STRING || right.kind == QUILL_CHAT_LIST) &&
                is_integral(left)) {
                return repeat(context, right, integer_of(left));
            }
        }
        fail_operands(context, operator_text, left, right);
    }

    /* Integer arithmetic where Python keeps ints; overflow past 64 bits is an error here. */
    if (is_integral(left) && is_integral(right) && !(op == '/' && !is_double_char)) {
        int64_t a = integer_of(left);
        int64_t b = integer_of(right);
        int64_t result = 0;
        bool is_overflow = false;
        if (op == '+') {
            is_overflow = __builtin_add_overflow(a, b, &result);
        } else if (op == '-') {
            is_overflow = __builtin_sub_overflow(a, b, &result);
        } else if (op == '*' && !is_double_char) {
            is_overflow = __builtin_mul_overflow(a, b, &result);
        } else if (op == '*') {
            if (b < 0) {
                return quill__chat_float(pow((double)a, (double)b));
            }
            result = 1;
            for (int64_t i = 0; i < b && !is_overflow; i++) {
                is_overflow = __builtin_mul_overflow(result, a, &result);
            }
        } else {
            if (b == 0) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "ZeroDivisionError: integer division or modulo by zero");
            }
            if (a == INT64_MIN && b == -1) {
                is_overflow = true;
            } else if (op == '/') {
                result = a / b;
                if ((a % b != 0) && ((a < 0) != (b < 0))) {
                    result--;
                }
            } else {
                result = a % b;
                if (result != 0 && ((result < 0) != (b < 0))) {
                    result += b;
                }
            }
        }
        if (is_overflow) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "OverflowError: integer result does not fit in 64 bits");
        }
        return quill__chat_int(result);
    }

    double a = quill__chat_to_double(left);
    double b = quill__chat_to_double(right);
    if (op == '+') {
        return quill__chat_float(a + b);
    }
    if (op == '-') {
        return quill__chat_float(a - b);
    }
    if (op == '*') {
        return quill__chat_float(is_double_char ? pow(a, b) : a * b);
    }
    if (b == 0.0) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "ZeroDivisionError: float division by zero");
    }
    if (op == '/') {
        return quill__chat_float(is_double_char ? floor(a / b) : a / b);
    }
    return quill__chat_float(floor_modulo(a, b));
}

static quill_chat_value binary(quill_chat_context *context, const quill_chat_node *node) {
    const char *op = node->operator_text;
    quill_chat_value left = quill__chat_evaluate(context, node->a);
    quill_chat_value right = quill__chat_evaluate(context, node->b);
    context->line = node->line;
    if (strcmp(op, "~") == 0) {
        return concatenate(context, quill__chat_to_string(&context->arena, left),
                           quill__chat_to_string(&context->arena, right));
    }
    if (strcmp(op, "==") == 0) {
        return quill__chat_bool(quill__chat_equals(left, right));
    }
    if (strcmp(op, "!=") == 0) {
        return quill__chat_bool(!quill__chat_equals(left, right));
    }
    if (strcmp(op, "in") == 0) {
        return quill__chat_bool(contains(context, right, left));
    }
    if (strcmp(op, "not in") == 0) {
        return quill__chat_bool(!contains(context, right, left));
    }
    if (op[0] == '<' || op[0] == '>') {
        quill__chat_require_defined(context, left);
        quill__chat_require_defined(context, right);
        int order = quill__chat_compare(&context->arena, left, right);
        if (strcmp(op, "<") == 0) {
            return quill__chat_bool(order < 0);
        }
        if (strcmp(op, "<=") == 0) {
            return quill__chat_bool(order <= 0);
        }
        if (strcmp(op, ">") == 0) {
            return quill__chat_bool(order > 0);
        }
        return quill__chat_bool(order >= 0);
    }
    return arithmetic(context, op, left, right);
}

/* Calls. */

typedef struct evaluated_args {
    quill_chat_value positional[MAX_ARGUMENTS];
    quill_chat_value keyword_values[MAX_ARGUMENTS];
    quill_chat_args args;
} evaluated_args;

static void evaluate_arguments(quill_chat_context *context, const quill_chat_node *node,
                               quill_chat_value *first, evaluated_args *out) {
    size_t n_positional = node->args.n_items + (first != NULL ? 1 : 0);
    if (n_positional > MAX_ARGUMENTS || node->keyword_values.n_items > MAX_ARGUMENTS) {
        quill__chat_fail(context, QUILL_ERR_FORMAT, "more than %d arguments in one call",
                         MAX_ARGUMENTS);
    }
    size_t n = 0;
    if (first != NULL) {
        out->positional[n++] = *first;
    }
    for (size_t i = 0; i < node->args.n_items; i++) {
        out->positional[n++] = quill__chat_evaluate(context, node->args.items[i]);
    }
    for (size_t i = 0; i < node->keyword_values.n_items; i++) {
        out->keyword_values[i] = quill__chat_evaluate(context, node->keyword_values.items[i]);
    }
    out->args.positional = out->positional;
    out->args.n_positional = n;
    out->args.keyword_names = node->keyword_names;
    out->args.keyword_values = out->keyword_values;
    out->args.n_keywords = node->keyword_values.n_items;
    context->line = node->line;
}

quill_chat_value quill__chat_argument(const quill_chat_args *args, size_t index, const char *name,
                                      bool *is_present) {
    if (index < args->n_positional) {
        *is_present = true;
        return args->positional[index];
    }
    for (size_t i = 0; name != NULL && i < args->n_keywords; i++) {
        if (strcmp(args->keyword_names[i], name) == 0) {
            *is_present = true;
            return args->keyword_values[i];
        }
    }
    *is_present = false;
    return quill__chat_undefined(NULL);
}

static quill_chat_value capture(quill_chat_context *context, const quill_chat_node_list *body) {
    quill_chat_builder builder = {0};
    quill_chat_builder *saved = context->output;
    context->output = &builder;
    quill__chat_execute(context, body);
    context->output = saved;
    return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
}

static quill_chat_value call_macro(quill_chat_context *context, const quill_chat_macro *macro,
                                   const quill_chat_args *args) {
    const quill_chat_node *node = macro->node;
    if (context->macro_depth >= QUILL_CHAT_MAX_MACRO_DEPTH) {
        quill__chat_fail(context, QUILL_ERR_FORMAT, "macro calls nested deeper than %d levels",
                         QUILL_CHAT_MAX_MACRO_DEPTH);
    }
    if (args->n_positional > node->n_names) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: macro '%s' takes not more than %zu argument(s)",
                         node->name != NULL ? node->name : "caller", node->n_names);
    }
    for (size_t i = 0; i < args->n_keywords; i++) {
        bool is_known = false;
        for (size_t j = 0; j < node->n_names; j++) {
            is_known = is_known || strcmp(node->names[j], args->keyword_names[i]) == 0;
        }
        if (!is_known) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: macro '%s' takes no keyword argument '%s'",
                             node->name != NULL ? node->name : "caller", args->keyword_names[i]);
        }
    }

    /* Bind parameters in a scope over the macro's defining scope. */
    quill_chat_frame *frame = frame_new(context, macro->closure);
    quill_chat_frame *saved_frame = context->frame;
    context->frame = frame;
    size_t first_default = node->n_names - node->args.n_items;
    for (size_t i = 0; i < node->n_names; i++) {
        bool is_present = false;
        quill_chat_value value = quill__chat_argument(args, i, node->names[i], &is_present);
        if (!is_present) {
            if (i >= first_default) {
                value = quill__chat_evaluate(context, node->args.items[i - first_default]);
            } else {
                value = quill__chat_undefined(
                    format_hint(context, "'%s' is undefined", node->names[i], ""));
            }
        }
        quill__chat_frame_set(context, frame, node->names[i], value);
    }
    if (macro->caller.kind != QUILL_CHAT_UNDEFINED) {
        quill__chat_frame_set(context, frame, "caller", macro->caller);
    }

    context->macro_depth++;
    quill_chat_value result = capture(context, &node->body);
    context->macro_depth--;
    context->flow = QUILL_CHAT_FLOW_NORMAL;
    context->frame = saved_frame;
    return result;
}

static quill_chat_value run_for(quill_chat_context *context, const quill_chat_node *node,
                                quill_chat_value iterable, int64_t depth0);

quill_chat_value quill__chat_call(quill_chat_context *context, quill_chat_value callee,
                                  const quill_chat_args *args) {
    switch (callee.kind) {
    case QUILL_CHAT_MACRO:
        return call_macro(context, callee.as.macro, args);
    case QUILL_CHAT_FUNCTION:
        return quill__chat_call_function(context, callee.as.function_name, args);
    case QUILL_CHAT_METHOD:
        return quill__chat_call_method(context, callee.as.method, args);
    case QUILL_CHAT_LOOP: {
        /* loop(children) inside a recursive for loop. */
        const quill_chat_loop *loop = callee.as.loop;
        if (!loop->node->is_recursive || args->n_positional != 1) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "loop() needs one argument and a `recursive` for loop");
        }
        quill_chat_builder builder = {0};
        quill_chat_builder *saved = context->output;
        context->output = &builder;
        run_for(context, loop->node, args->positional[0], loop->depth0 + 1);
        context->output = saved;
        return quill__chat_string_value(quill__chat_builder_finish(&context->arena, &builder));
    }
    case QUILL_CHAT_UNDEFINED:
        quill__chat_require_defined(context, callee);
        break;
    default:
        break;
    }
    quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: '%s' object is not callable",
                     quill__chat_type_name(callee));
}

static quill_chat_value apply_filter_node(quill_chat_context *context, const quill_chat_node *node,
                                          quill_chat_value operand) {
    evaluated_args arguments;
    evaluate_arguments(context, node, NULL, &arguments);
    return quill__chat_apply_filter(context, node->name, operand, &arguments.args);
}

quill_chat_value quill__chat_evaluate(quill_chat_context *context, const quill_chat_node *node) {
    enter(context, node);
    quill_chat_value result = quill__chat_undefined(NULL);
    switch (node->kind) {
    case QUILL_CHAT_NODE_LITERAL:
        result = node->value;
        break;
    case QUILL_CHAT_NODE_NAME:
        result = quill__chat_lookup(context, node->name);
        break;
    case QUILL_CHAT_NODE_LIST:
    case QUILL_CHAT_NODE_TUPLE:
        result = quill__chat_list_new(&context->arena, node->args.n_items);
        result.as.list->is_tuple = node->kind == QUILL_CHAT_NODE_TUPLE;
        for (size_t i = 0; i < node->args.n_items; i++) {
            quill__chat_list_append(&context->arena, result.as.list,
                                    quill__chat_evaluate(context, node->args.items[i]));
        }
        break;
    case QUILL_CHAT_NODE_DICT:
        result = quill__chat_dict_new(&context->arena, node->args.n_items / 2);
        for (size_t i = 0; i + 1 < node->args.n_items; i += 2) {
            quill_chat_value key = quill__chat_evaluate(context, node->args.items[i]);
            quill_chat_value value = quill__chat_evaluate(context, node->args.items[i + 1]);
            quill__chat_dict_set(&context->arena, result.as.dict, key, value);
        }
        break;
    case QUILL_CHAT_NODE_ATTRIBUTE: {
        quill_chat_value object = quill__chat_evaluate(context, node->a);
        context->line = node->line;
        result = quill__chat_get_attribute(context, object, node->name);
        break;
    }
    case QUILL_CHAT_NODE_ITEM: {
        quill_chat_value object = quill__chat_evaluate(context, node->a);
        quill_chat_value key = quill__chat_evaluate(context, node->b);
        context->line = node->line;
        result = quill__chat_get_item(context, object, key);
        break;
    }
    case QUILL_CHAT_NODE_SLICE: {
        quill_chat_value object = quill__chat_evaluate(context, node->a);
        quill_chat_value none = quill__chat_none();
        quill_chat_value start = node->b != NULL ? quill__chat_evaluate(context, node->b) : none;
        quill_chat_value stop = node->c != NULL ? quill__chat_evaluate(context, node->c) : none;
        quill_chat_value step = node->d != NULL ? quill__chat_evaluate(context, node->d) : none;
        context->line = node->line;
        result = slice_value(context, object, start, stop, step);
        break;
    }
    case QUILL_CHAT_NODE_CALL: {
        quill_chat_value callee = quill__chat_evaluate(context, node->a);
        evaluated_args arguments;
        evaluate_arguments(context, node, NULL, &arguments);
        result = quill__chat_call(context, callee, &arguments.args);
        break;
    }
    case QUILL_CHAT_NODE_FILTER: {
        quill_chat_value operand = quill__chat_evaluate(context, node->a);
        result = apply_filter_node(context, node, operand);
        break;
    }
    case QUILL_CHAT_NODE_TEST: {
        quill_chat_value operand = quill__chat_evaluate(context, node->a);
        evaluated_args arguments;
        evaluate_arguments(context, node, NULL, &arguments);
        bool passed = quill__chat_apply_test(context, node->name, operand, &arguments.args);
        result = quill__chat_bool(node->is_negated ? !passed : passed);
        break;
    }
    case QUILL_CHAT_NODE_UNARY: {
        quill_chat_value operand = quill__chat_evaluate(context, node->a);
        context->line = node->line;
        if (operand.kind == QUILL_CHAT_FLOAT) {
            result = quill__chat_float(node->operator_text[0] == '-' ? -operand.as.number
                                                                     : operand.as.number);
        } else if (is_integral(operand)) {
            int64_t value = integer_of(operand);
            if (node->operator_text[0] == '-' && value == INT64_MIN) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "OverflowError: integer result does not fit in 64 bits");
            }
            result = quill__chat_int(node->operator_text[0] == '-' ? -value : value);
        } else {
            quill__chat_require_defined(context, operand);
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: bad operand type for unary %s: '%s'", node->operator_text,
                             quill__chat_type_name(operand));
        }
        break;
    }
    case QUILL_CHAT_NODE_BINARY:
        result = binary(context, node);
        break;
    case QUILL_CHAT_NODE_AND: {
        quill_chat_value left = quill__chat_evaluate(context, node->a);
        result = quill__chat_is_truthy(left) ? quill__chat_evaluate(context, node->b) : left;
        break;
    }
    case QUILL_CHAT_NODE_OR: {
        quill_chat_value left = quill__chat_evaluate(context, node->a);
        result = quill__chat_is_truthy(left) ? left : quill__chat_evaluate(context, node->b);
        break;
    }
    case QUILL_CHAT_NODE_NOT:
        result = quill__chat_bool(!quill__chat_is_truthy(quill__chat_evaluate(context, node->a)));
        break;
    case QUILL_CHAT_NODE_CONDITIONAL:
        if (quill__chat_is_truthy(quill__chat_evaluate(context, node->a))) {
            result = quill__chat_evaluate(context, node->b);
        } else if (node->c != NULL) {
            result = quill__chat_evaluate(context, node->c);
        } else {
            result = quill__chat_undefined("the conditional expression has no else branch");
        }
        break;
    default:
        quill__chat_fail(context, QUILL_ERR_FORMAT, "a statement where an expression belongs");
    }
    leave(context);
    return result;
}

/* Statements. */

static void append_output(quill_chat_context *context, quill_chat_value value) {
    const quill_chat_string *text = quill__chat_to_string(&context->arena, value);
    quill__chat_builder_append_string(&context->arena, context->output, text);
}

static void bind_targets(quill_chat_context *context, const quill_chat_node *node,
                         quill_chat_frame *frame, quill_chat_value value) {
    if (!node->has_tuple_target) {
        quill__chat_frame_set(context, frame, node->names[0], value);
        return;
    }
    const quill_chat_list *items = quill__chat_iterate(context, value);
    if (items->n_items != node->n_names) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "ValueError: cannot unpack %zu values into %zu names", items->n_items,
                         node->n_names);
    }
    for (size_t i = 0; i < node->n_names; i++) {
        quill__chat_frame_set(context, frame, node->names[i], items->items[i]);
    }
}

static void count_iteration(quill_chat_context *context) {
    if (++context->n_iterations > QUILL_CHAT_MAX_ITERATIONS) {
        quill__chat_fail(context, QUILL_ERR_FORMAT,
                         "more than %d loop iterations in one render; the template or its input "
                         "is too large",
                         QUILL_CHAT_MAX_ITERATIONS);
    }
}

static quill_chat_value run_for(quill_chat_context *context, const quill_chat_node *node,
                                quill_chat_value iterable, int64_t depth0) {
    const quill_chat_list *items = quill__chat_iterate(context, iterable);
    quill_chat_frame *saved_frame = context->frame;
    quill_chat_frame *frame = frame_new(context, saved_frame);
    context->frame = frame;

    /* `for x in xs if cond` filters before the loop starts, so loop.length counts kept items. */
    if (node->b != NULL) {
        quill_chat_value kept = quill__chat_list_new(&context->arena, 0);
        for (size_t i = 0; i < items->n_items; i++) {
            count_iteration(context);
            frame->n_variables = 0;
            bind_targets(context, node, frame, items->items[i]);
            if (quill__chat_is_truthy(quill__chat_evaluate(context, node->b))) {
                quill__chat_list_append(&context->arena, kept.as.list, items->items[i]);
            }
        }
        items = kept.as.list;
    }

    quill_chat_loop *loop = quill__chat_arena_alloc(&context->arena, sizeof(*loop));
    loop->items = items;
    loop->depth0 = depth0;
    loop->node = node;
    quill_chat_value loop_value = {.kind = QUILL_CHAT_LOOP};
    loop_value.as.loop = loop;
    for (size_t i = 0; i < items->n_items; i++) {
        count_iteration(context);
        loop->index0 = i;
        frame->n_variables = 0;
        bind_targets(context, node, frame, items->items[i]);
        quill__chat_frame_set(context, frame, "loop", loop_value);
        quill__chat_execute(context, &node->body);
        if (context->flow == QUILL_CHAT_FLOW_BREAK) {
            context->flow = QUILL_CHAT_FLOW_NORMAL;
            break;
        }
        context->flow = QUILL_CHAT_FLOW_NORMAL;
    }
    context->frame = saved_frame;
    if (items->n_items == 0 && node->else_body.n_items > 0) {
        quill__chat_execute(context, &node->else_body);
    }
    return quill__chat_none();
}

static quill_chat_value apply_filter_list(quill_chat_context *context,
                                          const quill_chat_node_list *filters,
                                          quill_chat_value value) {
    for (size_t i = 0; i < filters->n_items; i++) {
        value = apply_filter_node(context, filters->items[i], value);
    }
    return value;
}

static void execute_statement(quill_chat_context *context, const quill_chat_node *node) {
    enter(context, node);
    switch (node->kind) {
    case QUILL_CHAT_NODE_TEXT:
        quill__chat_builder_append_string(&context->arena, context->output, node->value.as.string);
        break;
    case QUILL_CHAT_NODE_OUTPUT:
        append_output(context, quill__chat_evaluate(context, node->a));
        break;
    case QUILL_CHAT_NODE_IF:
        if (quill__chat_is_truthy(quill__chat_evaluate(context, node->a))) {
            quill__chat_execute(context, &node->body);
        } else {
            quill__chat_execute(context, &node->else_body);
        }
        break;
    case QUILL_CHAT_NODE_FOR:
        run_for(context, node, quill__chat_evaluate(context, node->a), 0);
        break;
    case QUILL_CHAT_NODE_SET: {
        quill_chat_value value = quill__chat_evaluate(context, node->a);
        context->line = node->line;
        if (node->name != NULL) {
            quill_chat_value target = quill__chat_lookup(context, node->name);
            if (target.kind != QUILL_CHAT_NAMESPACE) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "TemplateRuntimeError: cannot assign attribute on non-namespace "
                                 "object '%s'",
                                 node->name);
            }
            quill_chat_value key = quill__chat_string_new(&context->arena, node->names[0],
                                                          strlen(node->names[0]), true);
            quill__chat_dict_set(&context->arena, target.as.dict, key, value);
        } else {
            bind_targets(context, node, context->frame, value);
        }
        break;
    }
    case QUILL_CHAT_NODE_SET_BLOCK: {
        quill_chat_value value = capture(context, &node->body);
        value = apply_filter_list(context, &node->args, value);
        quill__chat_frame_set(context, context->frame, node->name, value);
        break;
    }
    case QUILL_CHAT_NODE_MACRO: {
        quill_chat_macro *macro = quill__chat_arena_alloc(&context->arena, sizeof(*macro));
        macro->node = node;
        macro->closure = context->frame;
        macro->caller = quill__chat_undefined(NULL);
        quill_chat_value value = {.kind = QUILL_CHAT_MACRO};
        value.as.macro = macro;
        quill__chat_frame_set(context, context->frame, node->name, value);
        break;
    }
    case QUILL_CHAT_NODE_CALL_BLOCK: {
        const quill_chat_node *call = node->a;
        quill_chat_value callee = quill__chat_evaluate(context, call->a);
        if (callee.kind != QUILL_CHAT_MACRO) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "{%% call %%} needs a macro, got '%s'",
                             quill__chat_type_name(callee));
        }
        quill_chat_macro *caller = quill__chat_arena_alloc(&context->arena, sizeof(*caller));
        caller->node = node;
        caller->closure = context->frame;
        caller->caller = quill__chat_undefined(NULL);
        quill_chat_macro *with_caller =
            quill__chat_arena_alloc(&context->arena, sizeof(*with_caller));
        *with_caller = *callee.as.macro;
        with_caller->caller.kind = QUILL_CHAT_MACRO;
        with_caller->caller.as.macro = caller;
        evaluated_args arguments;
        evaluate_arguments(context, call, NULL, &arguments);
        append_output(context, call_macro(context, with_caller, &arguments.args));
        break;
    }
    case QUILL_CHAT_NODE_FILTER_BLOCK: {
        quill_chat_value value = capture(context, &node->body);
        append_output(context, apply_filter_list(context, &node->args, value));
        break;
    }
    case QUILL_CHAT_NODE_BREAK:
        context->flow = QUILL_CHAT_FLOW_BREAK;
        break;
    case QUILL_CHAT_NODE_CONTINUE:
        context->flow = QUILL_CHAT_FLOW_CONTINUE;
        break;
    case QUILL_CHAT_NODE_GENERATION:
        quill__chat_execute(context, &node->body);
        break;
    case QUILL_CHAT_NODE_DO:
        quill__chat_evaluate(context, node->a);
        break;
    default:
        quill__chat_fail(context, QUILL_ERR_FORMAT, "an expression where a statement belongs");
    }
    leave(context);
}

void quill__chat_execute(quill_chat_context *context, const quill_chat_node_list *statements) {
    for (size_t i = 0; i < statements->n_items; i++) {
        execute_statement(context, statements->items[i]);
        if (context->flow != QUILL_CHAT_FLOW_NORMAL) {
            return;
        }
    }
}
