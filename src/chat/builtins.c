/*
 * Built-in filters, tests, string/dict methods and global functions of the chat template
 * language, with the behaviour of Jinja2 3.1 and Python 3 str/dict. String results keep the
 * segments of their input bytes where the bytes are copied (strip, split, slices, replace,
 * join), so data stays marked as data after any transformation.
 *
 * NOTE: mutating methods (list.append, dict.update, ...) are refused, as in the immutable
 * sandbox that transformers renders with; templates written for it do not use them.
 */
#include "chat/interpreter.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

typedef quill_chat_value (*filter_function)(quill_chat_context *context, quill_chat_value operand,
                                            const quill_chat_args *args);

/* Argument helpers. */

static quill_chat_value argument(const quill_chat_args *args, size_t index, const char *name,
                                 quill_chat_value fallback) {
    bool is_present = false;
    quill_chat_value value = quill__chat_argument(args, index, name, &is_present);
    return is_present ? value : fallback;
}

static const quill_chat_string *require_string(quill_chat_context *context, quill_chat_value value,
                                               const char *what) {
    if (value.kind != QUILL_CHAT_STRING) {
        quill__chat_require_defined(context, value);
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: %s must be str, not %s", what,
                         quill__chat_type_name(value));
    }
    return value.as.string;
}

static int64_t require_integer(quill_chat_context *context, quill_chat_value value,
                               const char *what) {
    if (value.kind == QUILL_CHAT_INT) {
        return value.as.integer;
    }
    if (value.kind == QUILL_CHAT_BOOL) {
        return value.as.boolean;
    }
    quill__chat_require_defined(context, value);
    quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: %s must be an integer, not %s",
                     what, quill__chat_type_name(value));
}

static quill_chat_value finish(quill_chat_context *context, quill_chat_builder *builder) {
    return quill__chat_string_value(quill__chat_builder_finish(&context->arena, builder));
}

static quill_chat_value slice_string(quill_chat_context *context, const quill_chat_string *string,
                                     size_t offset, size_t n_bytes) {
    quill_chat_builder builder = {0};
    quill__chat_builder_append_slice(&context->arena, &builder, string, offset, n_bytes);
    return finish(context, &builder);
}

static quill_chat_value tuple2(quill_chat_context *context, quill_chat_value a,
                               quill_chat_value b) {
    quill_chat_value tuple = quill__chat_list_new(&context->arena, 2);
    tuple.as.list->is_tuple = true;
    quill__chat_list_append(&context->arena, tuple.as.list, a);
    quill__chat_list_append(&context->arena, tuple.as.list, b);
    return tuple;
}

static int32_t decode_at(const quill_chat_string *string, size_t offset, size_t *n_read) {
    utf8proc_int32_t code_point = 0;
    utf8proc_ssize_t n =
        utf8proc_iterate((const utf8proc_uint8_t *)string->bytes + offset,
                         (utf8proc_ssize_t)(string->n_bytes - offset), &code_point);
    if (n <= 0) {
        *n_read = 1;
        return (unsigned char)string->bytes[offset];
    }
    *n_read = (size_t)n;
    return code_point;
}

/* Python's str.isspace. */
static bool is_python_space(int32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static size_t code_point_length(const quill_chat_string *string) {
    size_t n = 0;
    for (size_t i = 0; i < string->n_bytes; i++) {
        if (((unsigned char)string->bytes[i] & 0xc0) != 0x80) {
            n++;
        }
    }
    return n;
}

/* String operations. */

static bool in_char_set(int32_t c, const quill_chat_string *chars) {
    if (chars == NULL) {
        return is_python_space(c);
    }
    size_t offset = 0;
    while (offset < chars->n_bytes) {
        size_t n_read = 0;
        if (decode_at(chars, offset, &n_read) == c) {
            return true;
        }
        offset += n_read;
    }
    return false;
}

/* Strips code points in chars (whitespace when chars is NULL) from the left and/or right. */
static quill_chat_value strip_string(quill_chat_context *context, const quill_chat_string *string,
                                     const quill_chat_string *chars, bool is_left, bool is_right) {
    size_t start = 0;
    size_t end = string->n_bytes;
    if (is_left) {
        while (start < end) {
            size_t n_read = 0;
            int32_t c = decode_at(string, start, &n_read);
            if (!in_char_set(c, chars)) {
                break;
            }
            start += n_read;
        }
    }
    if (is_right) {
        while (end > start) {
            size_t begin = end - 1;
            while (begin > start && ((unsigned char)string->bytes[begin] & 0xc0) == 0x80) {
                begin--;
            }
            size_t n_read = 0;
            int32_t c = decode_at(string, begin, &n_read);
            if (!in_char_set(c, chars)) {
                break;
            }
            end = begin;
        }
    }
    return slice_string(context, string, start, end - start);
}

static const quill_chat_string *optional_chars(quill_chat_context *context,
                                               const quill_chat_args *args) {
    quill_chat_value chars = argument(args, 0, "chars", quill__chat_none());
    if (chars.kind == QUILL_CHAT_NONE || chars.kind == QUILL_CHAT_UNDEFINED) {
        return NULL;
    }
    return require_string(context, chars, "strip argument");
}

static quill_chat_value split_string(quill_chat_context *context, const quill_chat_string *string,
                                     quill_chat_value separator, int64_t max_split) {
    quill_chat_value parts = quill__chat_list_new(&context->arena, 0);
    if (separator.kind == QUILL_CHAT_NONE || separator.kind == QUILL_CHAT_UNDEFINED) {
        /* Runs of whitespace separate; leading and trailing whitespace yields no parts. */
        size_t offset = 0;
        int64_t n_splits = 0;
        while (offset < string->n_bytes) {
            size_t n_read = 0;
            while (offset < string->n_bytes &&
                   is_python_space(decode_at(string, offset, &n_read))) {
                offset += n_read;
            }
            if (offset >= string->n_bytes) {
                break;
            }
            size_t start = offset;
            if (max_split >= 0 && n_splits >= max_split) {
                size_t end = string->n_bytes;
                while (end > start) {
                    size_t begin = end - 1;
                    while (begin > start && ((unsigned char)string->bytes[begin] & 0xc0) == 0x80) {
                        begin--;
                    }
                    if (!is_python_space(decode_at(string, begin, &n_read))) {
                        break;
                    }
                    end = begin;
                }
                quill__chat_list_append(&context->arena, parts.as.list,
                                        slice_string(context, string, start, end - start));
                break;
            }
            while (offset < string->n_bytes &&
                   !is_python_space(decode_at(string, offset, &n_read))) {
                offset += n_read;
            }
            quill__chat_list_append(&context->arena, parts.as.list,
                                    slice_string(context, string, start, offset - start));
            n_splits++;
        }
        return parts;
    }
    const quill_chat_string *sep = require_string(context, separator, "split separator");
    if (sep->n_bytes == 0) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "ValueError: empty separator");
    }
    size_t start = 0;
    int64_t n_splits = 0;
    for (;;) {
        const char *found = NULL;
        if (max_split < 0 || n_splits < max_split) {
            found =
                memmem(string->bytes + start, string->n_bytes - start, sep->bytes, sep->n_bytes);
        }
        if (found == NULL) {
            quill__chat_list_append(&context->arena, parts.as.list,
                                    slice_string(context, string, start, string->n_bytes - start));
            return parts;
        }
        size_t at = (size_t)(found - string->bytes);
        quill__chat_list_append(&context->arena, parts.as.list,
                                slice_string(context, string, start, at - start));
        start = at + sep->n_bytes;
        n_splits++;
    }
}

static quill_chat_value replace_string(quill_chat_context *context, const quill_chat_string *string,
                                       const quill_chat_string *old,
                                       const quill_chat_string *new_text, int64_t count) {
    quill_chat_builder builder = {0};
    size_t start = 0;
    int64_t n_replaced = 0;
    if (old->n_bytes == 0) {
        /* Python inserts new_text between every code point and at both ends. */
        size_t offset = 0;
        while (count < 0 || n_replaced < count) {
            quill__chat_builder_append_string(&context->arena, &builder, new_text);
            n_replaced++;
            if (offset >= string->n_bytes) {
                break;
            }
            size_t n_read = 0;
            decode_at(string, offset, &n_read);
            quill__chat_builder_append_slice(&context->arena, &builder, string, offset, n_read);
            offset += n_read;
        }
        quill__chat_builder_append_slice(&context->arena, &builder, string, offset,
                                         string->n_bytes - offset);
        return finish(context, &builder);
    }
    while (count < 0 || n_replaced < count) {
        const char *found =
            memmem(string->bytes + start, string->n_bytes - start, old->bytes, old->n_bytes);
        if (found == NULL) {
            break;
        }
        size_t at = (size_t)(found - string->bytes);
        quill__chat_builder_append_slice(&context->arena, &builder, string, start, at - start);
        quill__chat_builder_append_string(&context->arena, &builder, new_text);
        start = at + old->n_bytes;
        n_replaced++;
    }
    quill__chat_builder_append_slice(&context->arena, &builder, string, start,
                                     string->n_bytes - start);
    return finish(context, &builder);
}

typedef enum case_mode {
    CASE_UPPER,
    CASE_LOWER,
    CASE_TITLE,      /* Python str.title: upper after an uncased character */
    CASE_CAPITALIZE, /* first upper, rest lower */
    CASE_JINJA_TITLE /* Jinja's title filter: upper after whitespace, - ( { [ < */
} case_mode;

/* Maps case code point by code point, segment by segment, so taint survives. */
static quill_chat_value change_case(quill_chat_context *context, const quill_chat_string *string,
                                    case_mode mode) {
    quill_chat_builder builder = {0};
    bool is_word_start = true;
    bool is_first = true;
    for (size_t s = 0; s < string->n_segments; s++) {
        const quill_chat_segment *segment = &string->segments[s];
        size_t offset = segment->offset;
        size_t end = segment->offset + segment->n_bytes;
        while (offset < end) {
            size_t n_read = 0;
            int32_t c = decode_at(string, offset, &n_read);
            int32_t mapped = c;
            switch (mode) {
            case CASE_UPPER:
                mapped = utf8proc_toupper(c);
                break;
            case CASE_LOWER:
                mapped = utf8proc_tolower(c);
                break;
            case CASE_CAPITALIZE:
                mapped = is_first ? utf8proc_toupper(c) : utf8proc_tolower(c);
                break;
            case CASE_TITLE: {
                bool is_cased = utf8proc_toupper(c) != c || utf8proc_tolower(c) != c;
                mapped = is_word_start ? utf8proc_toupper(c) : utf8proc_tolower(c);
                is_word_start = !is_cased;
                break;
            }
            case CASE_JINJA_TITLE:
                mapped = is_word_start ? utf8proc_toupper(c) : utf8proc_tolower(c);
                is_word_start =
                    is_python_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
                break;
            }
            is_first = false;
            utf8proc_uint8_t encoded[4];
            utf8proc_ssize_t n_encoded = utf8proc_encode_char(mapped, encoded);
            if (n_encoded <= 0 || (n_read == 1 && (unsigned char)string->bytes[offset] >= 0x80)) {
                quill__chat_builder_append(&context->arena, &builder, string->bytes + offset,
                                           n_read, segment->is_template_text);
            } else {
                quill__chat_builder_append(&context->arena, &builder, (const char *)encoded,
                                           (size_t)n_encoded, segment->is_template_text);
            }
            offset += n_read;
        }
    }
    return finish(context, &builder);
}

static bool string_starts_with(const quill_chat_string *string, const quill_chat_string *prefix) {
    return prefix->n_bytes <= string->n_bytes &&
           memcmp(string->bytes, prefix->bytes, prefix->n_bytes) == 0;
}

static bool string_ends_with(const quill_chat_string *string, const quill_chat_string *suffix) {
    return suffix->n_bytes <= string->n_bytes &&
           memcmp(string->bytes + string->n_bytes - suffix->n_bytes, suffix->bytes,
                  suffix->n_bytes) == 0;
}

/* startswith/endswith take a string or a tuple of strings. */
static bool string_affix_matches(quill_chat_context *context, const quill_chat_string *string,
                                 quill_chat_value affix, bool is_prefix) {
    if (affix.kind == QUILL_CHAT_LIST) {
        for (size_t i = 0; i < affix.as.list->n_items; i++) {
            if (string_affix_matches(context, string, affix.as.list->items[i], is_prefix)) {
                return true;
            }
        }
        return false;
    }
    const quill_chat_string *text = require_string(context, affix, "startswith/endswith argument");
    return is_prefix ? string_starts_with(string, text) : string_ends_with(string, text);
}

static quill_chat_value join_values(quill_chat_context *context, const quill_chat_list *items,
                                    const quill_chat_string *separator) {
    quill_chat_builder builder = {0};
    for (size_t i = 0; i < items->n_items; i++) {
        if (i > 0 && separator != NULL) {
            quill__chat_builder_append_string(&context->arena, &builder, separator);
        }
        quill__chat_builder_append_string(&context->arena, &builder,
                                          quill__chat_to_string(&context->arena, items->items[i]));
    }
    return finish(context, &builder);
}

/* Methods. */

static const char *const string_methods[] = {
    "strip",  "lstrip",  "rstrip",  "split",   "startswith", "endswith",   "upper",
    "lower",  "replace", "find",    "rfind",   "title",      "capitalize", "join",
    "count",  "isdigit", "isalpha", "isspace", "isupper",    "islower",    "splitlines",
    "rsplit", "index",   "format",  NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};

static bool in_names(const char *const *names, const char *name) {
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], name) == 0) {
            return true;
        }
    }
    return false;
}

bool quill__chat_has_method(quill_chat_value value, const char *name) {
    switch (value.kind) {
    case QUILL_CHAT_STRING:
        return in_names(string_methods, name);
    case QUILL_CHAT_DICT:
        return in_names(dict_methods, name);
    default:
        return false;
    }
}

static quill_chat_value dict_items(quill_chat_context *context, const quill_chat_dict *dict) {
    quill_chat_value items = quill__chat_list_new(&context->arena, dict->n_items);
    for (size_t i = 0; i < dict->n_items; i++) {
        quill__chat_list_append(&context->arena, items.as.list,
                                tuple2(context, dict->keys[i], dict->values[i]));
    }
    return items;
}

static int64_t find_substring(const quill_chat_string *string, const quill_chat_string *needle,
                              bool is_reverse) {
    if (needle->n_bytes > string->n_bytes) {
        return -1;
    }
    int64_t found_at = -1;
    for (size_t i = 0; i + needle->n_bytes <= string->n_bytes; i++) {
        if (memcmp(string->bytes + i, needle->bytes, needle->n_bytes) == 0) {
            found_at = (int64_t)i;
            if (!is_reverse) {
                break;
            }
        }
    }
    if (found_at < 0) {
        return -1;
    }
    /* Python returns code point indices. */
    int64_t index = 0;
    for (int64_t i = 0; i < found_at; i++) {
        if (((unsigned char)string->bytes[i] & 0xc0) != 0x80) {
            index++;
        }
    }
    return index;
}

static bool all_code_points(const quill_chat_string *string, int kind) {
    if (string->n_bytes == 0) {
        return false;
    }
    size_t offset = 0;
    bool has_cased = false;
    while (offset < string->n_bytes) {
        size_t n_read = 0;
        int32_t c = decode_at(string, offset, &n_read);
        offset += n_read;
        utf8proc_category_t category = utf8proc_category(c);
        switch (kind) {
        case 0:
            if (category != UTF8PROC_CATEGORY_ND) {
                return false;
            }
            break;
        case 1:
            if (category < UTF8PROC_CATEGORY_LU || category > UTF8PROC_CATEGORY_LO) {
                return false;
            }
            break;
        case 2:
            if (!is_python_space(c)) {
                return false;
            }
            break;
        case 3:
            if (utf8proc_toupper(c) != c) {
                return false;
            }
            has_cased = has_cased || utf8proc_tolower(c) != c;
            break;
        default:
            if (utf8proc_tolower(c) != c) {
                return false;
            }
            has_cased = has_cased || utf8proc_toupper(c) != c;
            break;
        }
    }
    return kind < 3 || has_cased;
}

/* str.format with {} / {0} / {name} fields and {{ }} escapes; format specs are not supported. */
static quill_chat_value format_string(quill_chat_context *context, const quill_chat_string *format,
                                      const quill_chat_args *args) {
    quill_chat_builder builder = {0};
    size_t next_auto = 0;
    size_t run_start = 0;
    size_t i = 0;
    while (i < format->n_bytes) {
        char c = format->bytes[i];
        bool is_escape =
            (c == '{' || c == '}') && i + 1 < format->n_bytes && format->bytes[i + 1] == c;
        if (is_escape) {
            quill__chat_builder_append_slice(&context->arena, &builder, format, run_start,
                                             i + 1 - run_start);
            i += 2;
            run_start = i;
            continue;
        }
        if (c == '}') {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "ValueError: single '}' encountered in format string");
        }
        if (c != '{') {
            i++;
            continue;
        }
        const char *close = memchr(format->bytes + i, '}', format->n_bytes - i);
        if (close == NULL) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "ValueError: single '{' encountered in format string");
        }
        quill__chat_builder_append_slice(&context->arena, &builder, format, run_start,
                                         i - run_start);
        size_t field_start = i + 1;
        size_t field_end = (size_t)(close - format->bytes);
        char *field = quill__chat_arena_strndup(&context->arena, format->bytes + field_start,
                                                field_end - field_start);
        if (strpbrk(field, ":!") != NULL) {
            quill__chat_fail(context, QUILL_ERR_UNSUPPORTED,
                             "str.format specs and conversions ('%s') are not supported", field);
        }
        quill_chat_value value = quill__chat_undefined(NULL);
        bool is_present = false;
        if (field[0] == '\0') {
            value = quill__chat_argument(args, next_auto++, NULL, &is_present);
        } else if (field[0] >= '0' && field[0] <= '9') {
            value = quill__chat_argument(args, (size_t)strtoul(field, NULL, 10), NULL, &is_present);
        } else {
            value = quill__chat_argument(args, SIZE_MAX, field, &is_present);
        }
        if (!is_present) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "IndexError: str.format has no argument for field '{%s}'", field);
        }
        quill__chat_builder_append_string(&context->arena, &builder,
                                          quill__chat_to_string(&context->arena, value));
        i = field_end + 1;
        run_start = i;
    }
    quill__chat_builder_append_slice(&context->arena, &builder, format, run_start,
                                     format->n_bytes - run_start);
    return finish(context, &builder);
}

quill_chat_value quill__chat_percent_format(quill_chat_context *context,
                                            const quill_chat_string *format,
                                            quill_chat_value values) {
    const quill_chat_value *items = &values;
    size_t n_items = 1;
    if (values.kind == QUILL_CHAT_LIST && values.as.list->is_tuple) {
        items = values.as.list->items;
        n_items = values.as.list->n_items;
    }
    quill_chat_builder builder = {0};
    size_t next = 0;
    size_t run_start = 0;
    size_t i = 0;
    while (i < format->n_bytes) {
        if (format->bytes[i] != '%') {
            i++;
            continue;
        }
        quill__chat_builder_append_slice(&context->arena, &builder, format, run_start,
                                         i - run_start);

        /* %[flags][width][.precision]conversion */
        size_t spec_start = i;
        i++;
        while (i < format->n_bytes && strchr("-+ #0123456789.", format->bytes[i]) != NULL) {
            i++;
        }
        if (i >= format->n_bytes) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "ValueError: incomplete format");
        }
        char conversion = format->bytes[i++];
        run_start = i;
        if (conversion == '%') {
            quill__chat_builder_append(&context->arena, &builder, "%", 1, true);
            continue;
        }
        if (next >= n_items) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: not enough arguments for format string");
        }
        quill_chat_value value = items[next++];
        if (conversion == 's' || conversion == 'r') {
            /* Width pads to a number of code points; '-' pads on the right. */
            bool is_left_aligned = false;
            size_t width = 0;
            for (size_t k = spec_start + 1; k + 1 < i; k++) {
                char flag = format->bytes[k];
                if (flag == '-') {
                    is_left_aligned = true;
                } else if (flag >= '0' && flag <= '9' && width < 4096) {
                    width = width * 10 + (size_t)(flag - '0');
                } else if (flag == '.') {
                    break;
                }
            }
            quill_chat_builder piece = {0};
            if (conversion == 's') {
                quill__chat_builder_append_string(&context->arena, &piece,
                                                  quill__chat_to_string(&context->arena, value));
            } else {
                quill__chat_append_repr(&context->arena, &piece, value, 0);
            }
            const quill_chat_string *text = quill__chat_builder_finish(&context->arena, &piece);
            size_t length = code_point_length(text);
            for (size_t k = length; !is_left_aligned && k < width; k++) {
                quill__chat_builder_append(&context->arena, &builder, " ", 1, true);
            }
            quill__chat_builder_append_string(&context->arena, &builder, text);
            for (size_t k = length; is_left_aligned && k < width; k++) {
                quill__chat_builder_append(&context->arena, &builder, " ", 1, true);
            }
            continue;
        }
        char spec[32];
        size_t n_spec = i - spec_start;
        if (n_spec >= sizeof(spec) - 4 || !quill__chat_is_number(value) ||
            strchr("dixXfFeEg", conversion) == NULL) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: unsupported %% conversion '%c' for %s", conversion,
                             quill__chat_type_name(value));
        }
        /* Widths and precisions above 999 would only pad; reject them to bound the work. */
        size_t n_run_digits = 0;
        for (size_t k = spec_start; k < i; k++) {
            n_run_digits =
                (format->bytes[k] >= '0' && format->bytes[k] <= '9') ? n_run_digits + 1 : 0;
            if (n_run_digits > 3) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "%% format width or precision above 999 is not supported");
            }
        }
        char text[2400]; /* width 999 plus 309 integer digits plus precision 999 */
        memcpy(spec, format->bytes + spec_start, n_spec - 1);
        if (strchr("dixX", conversion) != NULL) {
            memcpy(spec + n_spec - 1, "ll", 2);
            spec[n_spec + 1] = conversion == 'i' ? 'd' : conversion;
            spec[n_spec + 2] = '\0';
            double number = quill__chat_to_double(value);
            if (value.kind == QUILL_CHAT_FLOAT && !(fabs(number) < 9.2e18)) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "OverflowError: %g does not fit in a 64-bit integer", number);
            }
            long long integer =
                value.kind == QUILL_CHAT_INT ? (long long)value.as.integer : (long long)number;
            snprintf(text, sizeof(text), spec, integer);
        } else {
            spec[n_spec - 1] = conversion;
            spec[n_spec] = '\0';
            snprintf(text, sizeof(text), spec, quill__chat_to_double(value));
        }
        quill__chat_builder_append(&context->arena, &builder, text, strlen(text),
                                   !quill__chat_has_data(value));
    }
    quill__chat_builder_append_slice(&context->arena, &builder, format, run_start,
                                     format->n_bytes - run_start);
    if (next < n_items) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: not all arguments converted during string formatting");
    }
    return finish(context, &builder);
}

static quill_chat_value call_string_method(quill_chat_context *context,
                                           const quill_chat_string *string, const char *name,
                                           const quill_chat_args *args) {
    if (strcmp(name, "strip") == 0 || strcmp(name, "lstrip") == 0 || strcmp(name, "rstrip") == 0) {
        const quill_chat_string *chars = optional_chars(context, args);
        return strip_string(context, string, chars, name[0] != 'r', name[0] != 'l');
    }
    if (strcmp(name, "split") == 0 || strcmp(name, "rsplit") == 0) {
        quill_chat_value separator = argument(args, 0, "sep", quill__chat_none());
        int64_t max_split = require_integer(
            context, argument(args, 1, "maxsplit", quill__chat_int(-1)), "maxsplit");
        if (name[0] == 'r' && max_split >= 0) {
            quill__chat_fail(context, QUILL_ERR_UNSUPPORTED,
                             "str.rsplit with maxsplit is not supported");
        }
        return split_string(context, string, separator, max_split);
    }
    if (strcmp(name, "splitlines") == 0) {
        quill_chat_value parts = quill__chat_list_new(&context->arena, 0);
        size_t start = 0;
        for (size_t i = 0; i < string->n_bytes; i++) {
            char c = string->bytes[i];
            if (c == '\n' || c == '\r') {
                quill__chat_list_append(&context->arena, parts.as.list,
                                        slice_string(context, string, start, i - start));
                if (c == '\r' && i + 1 < string->n_bytes && string->bytes[i + 1] == '\n') {
                    i++;
                }
                start = i + 1;
            }
        }
        if (start < string->n_bytes) {
            quill__chat_list_append(&context->arena, parts.as.list,
                                    slice_string(context, string, start, string->n_bytes - start));
        }
        return parts;
    }
    if (strcmp(name, "startswith") == 0 || strcmp(name, "endswith") == 0) {
        quill_chat_value affix = argument(args, 0, NULL, quill__chat_undefined(NULL));
        return quill__chat_bool(string_affix_matches(context, string, affix, name[0] == 's'));
    }
    if (strcmp(name, "upper") == 0) {
        return change_case(context, string, CASE_UPPER);
    }
    if (strcmp(name, "lower") == 0) {
        return change_case(context, string, CASE_LOWER);
    }
    if (strcmp(name, "title") == 0) {
        return change_case(context, string, CASE_TITLE);
    }
    if (strcmp(name, "capitalize") == 0) {
        return change_case(context, string, CASE_CAPITALIZE);
    }
    if (strcmp(name, "replace") == 0) {
        const quill_chat_string *old = require_string(
            context, argument(args, 0, "old", quill__chat_undefined(NULL)), "replace argument");
        const quill_chat_string *new_text = require_string(
            context, argument(args, 1, "new", quill__chat_undefined(NULL)), "replace argument");
        int64_t count =
            require_integer(context, argument(args, 2, "count", quill__chat_int(-1)), "count");
        return replace_string(context, string, old, new_text, count);
    }
    if (strcmp(name, "find") == 0 || strcmp(name, "rfind") == 0 || strcmp(name, "index") == 0) {
        const quill_chat_string *needle = require_string(
            context, argument(args, 0, "sub", quill__chat_undefined(NULL)), "find argument");
        int64_t index = find_substring(string, needle, name[0] == 'r');
        if (index < 0 && name[0] == 'i') {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "ValueError: substring not found");
        }
        return quill__chat_int(index);
    }
    if (strcmp(name, "count") == 0) {
        const quill_chat_string *needle = require_string(
            context, argument(args, 0, "sub", quill__chat_undefined(NULL)), "count argument");
        if (needle->n_bytes == 0) {
            return quill__chat_int((int64_t)code_point_length(string) + 1);
        }
        int64_t n = 0;
        size_t start = 0;
        const char *found = NULL;
        while ((found = memmem(string->bytes + start, string->n_bytes - start, needle->bytes,
                               needle->n_bytes)) != NULL) {
            n++;
            start = (size_t)(found - string->bytes) + needle->n_bytes;
        }
        return quill__chat_int(n);
    }
    if (strcmp(name, "join") == 0) {
        quill_chat_value items = argument(args, 0, "iterable", quill__chat_undefined(NULL));
        const quill_chat_list *list = quill__chat_iterate(context, items);
        for (size_t i = 0; i < list->n_items; i++) {
            require_string(context, list->items[i], "str.join item");
        }
        return join_values(context, list, string);
    }
    if (strcmp(name, "format") == 0) {
        return format_string(context, string, args);
    }
    if (strcmp(name, "isdigit") == 0) {
        return quill__chat_bool(all_code_points(string, 0));
    }
    if (strcmp(name, "isalpha") == 0) {
        return quill__chat_bool(all_code_points(string, 1));
    }
    if (strcmp(name, "isspace") == 0) {
        return quill__chat_bool(all_code_points(string, 2));
    }
    if (strcmp(name, "isupper") == 0) {
        return quill__chat_bool(all_code_points(string, 3));
    }
    return quill__chat_bool(all_code_points(string, 4));
}

quill_chat_value quill__chat_call_method(quill_chat_context *context,
                                         const quill_chat_method *method,
                                         const quill_chat_args *args) {
    quill_chat_value self = method->self;
    const char *name = method->name;
    if (self.kind == QUILL_CHAT_STRING) {
        return call_string_method(context, self.as.string, name, args);
    }
    if (self.kind == QUILL_CHAT_DICT) {
        const quill_chat_dict *dict = self.as.dict;
        if (strcmp(name, "items") == 0) {
            return dict_items(context, dict);
        }
        if (strcmp(name, "keys") == 0 || strcmp(name, "values") == 0) {
            quill_chat_value list = quill__chat_list_new(&context->arena, dict->n_items);
            for (size_t i = 0; i < dict->n_items; i++) {
                quill__chat_list_append(&context->arena, list.as.list,
                                        name[0] == 'k' ? dict->keys[i] : dict->values[i]);
            }
            return list;
        }
        quill_chat_value key = argument(args, 0, "key", quill__chat_undefined(NULL));
        quill_chat_value *found = quill__chat_dict_find(dict, key);
        return found != NULL ? *found : argument(args, 1, "default", quill__chat_none());
    }
    if (self.kind == QUILL_CHAT_LOOP && strcmp(name, "cycle") == 0) {
        if (args->n_positional == 0) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "loop.cycle() needs at least one value");
        }
        return args->positional[self.as.loop->index0 % args->n_positional];
    }
    quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "'%s' object has no method '%s'",
                     quill__chat_type_name(self), name);
}

/* Sorting: a stable merge sort, because the comparison can fail (and jump) mid-sort. */

typedef struct sort_key {
    quill_chat_value key;
    quill_chat_value item;
} sort_key;

static void merge_sort(quill_chat_context *context, sort_key *items, sort_key *scratch, size_t n,
                       bool is_reverse) {
    if (n < 2) {
        return;
    }
    size_t half = n / 2;
    merge_sort(context, items, scratch, half, is_reverse);
    merge_sort(context, items + half, scratch, n - half, is_reverse);
    size_t i = 0;
    size_t j = half;
    size_t k = 0;
    while (i < half && j < n) {
        int order = quill__chat_compare(&context->arena, items[j].key, items[i].key);
        bool takes_right = is_reverse ? order > 0 : order < 0;
        scratch[k++] = takes_right ? items[j++] : items[i++];
    }
    while (i < half) {
        scratch[k++] = items[i++];
    }
    while (j < n) {
        scratch[k++] = items[j++];
    }
    memcpy(items, scratch, n * sizeof(*items));
}

static quill_chat_value sort_key_of(quill_chat_context *context, quill_chat_value value,
                                    bool is_case_sensitive) {
    if (!is_case_sensitive && value.kind == QUILL_CHAT_STRING) {
        return change_case(context, value.as.string, CASE_LOWER);
    }
    return value;
}

/* Reads a dotted attribute path such as "function.name" or "0.id", as Jinja's attrgetter. */
static quill_chat_value get_path(quill_chat_context *context, quill_chat_value value,
                                 const quill_chat_string *path) {
    size_t start = 0;
    while (start <= path->n_bytes) {
        const char *dot = memchr(path->bytes + start, '.', path->n_bytes - start);
        size_t end = dot != NULL ? (size_t)(dot - path->bytes) : path->n_bytes;
        char *part = quill__chat_arena_strndup(&context->arena, path->bytes + start, end - start);
        char *end_of_number = NULL;
        errno = 0;
        long long index = strtoll(part, &end_of_number, 10);
        if (part[0] != '\0' && *end_of_number == '\0' && errno == 0) {
            value = quill__chat_get_item(context, value, quill__chat_int(index));
        } else {
            value = quill__chat_get_item(
                context, value, quill__chat_string_new(&context->arena, part, end - start, true));
        }
        if (dot == NULL) {
            break;
        }
        start = end + 1;
        if (value.kind == QUILL_CHAT_UNDEFINED) {
            break;
        }
    }
    return value;
}

static quill_chat_value sorted_list(quill_chat_context *context, const quill_chat_list *items,
                                    bool is_reverse, bool is_case_sensitive,
                                    quill_chat_value attribute) {
    size_t n = items->n_items;
    sort_key *keys = quill__chat_arena_alloc_array(&context->arena, n + 1, sizeof(*keys));
    sort_key *scratch = quill__chat_arena_alloc_array(&context->arena, n + 1, sizeof(*scratch));
    for (size_t i = 0; i < n; i++) {
        quill_chat_value key = items->items[i];
        if (attribute.kind == QUILL_CHAT_STRING) {
            key = get_path(context, key, attribute.as.string);
        }
        keys[i].key = sort_key_of(context, key, is_case_sensitive);
        keys[i].item = items->items[i];
    }
    merge_sort(context, keys, scratch, n, is_reverse);
    quill_chat_value result = quill__chat_list_new(&context->arena, n);
    for (size_t i = 0; i < n; i++) {
        quill__chat_list_append(&context->arena, result.as.list, keys[i].item);
    }
    return result;
}

/* Filters. */

/* tojson as transformers defines it: json.dumps(x, ensure_ascii=False, indent=None,
 * separators=None, sort_keys=False), in that positional order. */
static quill_chat_value filter_tojson(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    quill_chat_json_options options = {.indent = -1};
    options.ensure_ascii =
        quill__chat_is_truthy(argument(args, 0, "ensure_ascii", quill__chat_bool(false)));
    quill_chat_value indent = argument(args, 1, "indent", quill__chat_none());
    if (indent.kind != QUILL_CHAT_NONE && indent.kind != QUILL_CHAT_UNDEFINED) {
        int64_t n_spaces = require_integer(context, indent, "tojson indent");
        options.indent = n_spaces < 0 ? 0 : (n_spaces > 64 ? 64 : (int)n_spaces);
    }
    quill_chat_value separators = argument(args, 2, "separators", quill__chat_none());
    if (separators.kind == QUILL_CHAT_LIST && separators.as.list->n_items == 2) {
        options.item_separator =
            require_string(context, separators.as.list->items[0], "tojson separator")->bytes;
        options.key_separator =
            require_string(context, separators.as.list->items[1], "tojson separator")->bytes;
    }
    options.sort_keys =
        quill__chat_is_truthy(argument(args, 3, "sort_keys", quill__chat_bool(false)));
    quill_chat_builder builder = {0};
    quill__chat_append_json(&context->arena, &builder, operand, &options);
    return finish(context, &builder);
}

static quill_chat_value filter_trim(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    const quill_chat_string *chars = optional_chars(context, args);
    return strip_string(context, quill__chat_to_string(&context->arena, operand), chars, true,
                        true);
}

static quill_chat_value filter_lower(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    return change_case(context, quill__chat_to_string(&context->arena, operand), CASE_LOWER);
}

static quill_chat_value filter_upper(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    return change_case(context, quill__chat_to_string(&context->arena, operand), CASE_UPPER);
}

static quill_chat_value filter_title(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    return change_case(context, quill__chat_to_string(&context->arena, operand), CASE_JINJA_TITLE);
}

static quill_chat_value filter_capitalize(quill_chat_context *context, quill_chat_value operand,
                                          const quill_chat_args *args) {
    return change_case(context, quill__chat_to_string(&context->arena, operand), CASE_CAPITALIZE);
}

static quill_chat_value filter_length(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    switch (operand.kind) {
    case QUILL_CHAT_UNDEFINED:
        return quill__chat_int(0);
    case QUILL_CHAT_STRING:
        return quill__chat_int((int64_t)code_point_length(operand.as.string));
    case QUILL_CHAT_LIST:
        return quill__chat_int((int64_t)operand.as.list->n_items);
    case QUILL_CHAT_DICT:
    case QUILL_CHAT_NAMESPACE:
        return quill__chat_int((int64_t)operand.as.dict->n_items);
    default:
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: object of type '%s' has no len()",
                         quill__chat_type_name(operand));
    }
}

static quill_chat_value filter_first(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    return items->n_items > 0 ? items->items[0]
                              : quill__chat_undefined("No first item, sequence was empty.");
}

static quill_chat_value filter_last(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    return items->n_items > 0 ? items->items[items->n_items - 1]
                              : quill__chat_undefined("No last item, sequence was empty.");
}

static quill_chat_value filter_join(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    quill_chat_value separator = argument(args, 0, "d", quill__chat_undefined(NULL));
    quill_chat_value attribute = argument(args, 1, "attribute", quill__chat_none());
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    if (attribute.kind == QUILL_CHAT_STRING) {
        quill_chat_value mapped = quill__chat_list_new(&context->arena, items->n_items);
        for (size_t i = 0; i < items->n_items; i++) {
            quill__chat_list_append(&context->arena, mapped.as.list,
                                    get_path(context, items->items[i], attribute.as.string));
        }
        items = mapped.as.list;
    }
    const quill_chat_string *sep = separator.kind == QUILL_CHAT_UNDEFINED
                                       ? NULL
                                       : quill__chat_to_string(&context->arena, separator);
    return join_values(context, items, sep);
}

static quill_chat_value filter_default(quill_chat_context *context, quill_chat_value operand,
                                       const quill_chat_args *args) {
    quill_chat_value fallback =
        argument(args, 0, "default_value", quill__chat_string_new(&context->arena, "", 0, true));
    bool is_boolean = quill__chat_is_truthy(argument(args, 1, "boolean", quill__chat_bool(false)));
    if (operand.kind == QUILL_CHAT_UNDEFINED || (is_boolean && !quill__chat_is_truthy(operand))) {
        return fallback;
    }
    return operand;
}

static quill_chat_value filter_replace(quill_chat_context *context, quill_chat_value operand,
                                       const quill_chat_args *args) {
    const quill_chat_string *string = quill__chat_to_string(&context->arena, operand);
    const quill_chat_string *old = quill__chat_to_string(
        &context->arena, argument(args, 0, "old", quill__chat_undefined(NULL)));
    const quill_chat_string *new_text = quill__chat_to_string(
        &context->arena, argument(args, 1, "new", quill__chat_undefined(NULL)));
    quill_chat_value count = argument(args, 2, "count", quill__chat_none());
    int64_t n = count.kind == QUILL_CHAT_NONE ? -1 : require_integer(context, count, "count");
    return replace_string(context, string, old, new_text, n);
}

static quill_chat_value filter_list(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    quill_chat_value list = quill__chat_list_new(&context->arena, items->n_items);
    for (size_t i = 0; i < items->n_items; i++) {
        quill__chat_list_append(&context->arena, list.as.list, items->items[i]);
    }
    return list;
}

static quill_chat_value filter_string(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    return quill__chat_string_value(quill__chat_to_string(&context->arena, operand));
}

static quill_chat_value filter_int(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    quill_chat_value fallback = argument(args, 0, "default", quill__chat_int(0));
    switch (operand.kind) {
    case QUILL_CHAT_INT:
        return operand;
    case QUILL_CHAT_BOOL:
        return quill__chat_int(operand.as.boolean);
    case QUILL_CHAT_FLOAT:
        if (isfinite(operand.as.number) && fabs(operand.as.number) < 9.2e18) {
            return quill__chat_int((int64_t)operand.as.number);
        }
        return fallback;
    case QUILL_CHAT_STRING: {
        char *end = NULL;
        const char *text = operand.as.string->bytes;
        errno = 0;
        long long value = strtoll(text, &end, 10);
        while (end != NULL && *end != '\0' && is_python_space((unsigned char)*end)) {
            end++;
        }
        if (end != text && end != NULL && *end == '\0' && errno == 0) {
            return quill__chat_int(value);
        }
        double number = strtod(text, &end);
        if (end != text && *end == '\0' && isfinite(number) && fabs(number) < 9.2e18) {
            return quill__chat_int((int64_t)number);
        }
        return fallback;
    }
    default:
        return fallback;
    }
}

static quill_chat_value filter_float(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    quill_chat_value fallback = argument(args, 0, "default", quill__chat_float(0.0));
    if (quill__chat_is_number(operand)) {
        return quill__chat_float(quill__chat_to_double(operand));
    }
    if (operand.kind == QUILL_CHAT_STRING) {
        char *end = NULL;
        double number = strtod(operand.as.string->bytes, &end);
        if (end != operand.as.string->bytes && *end == '\0') {
            return quill__chat_float(number);
        }
    }
    return fallback;
}

static quill_chat_value filter_abs(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    if (operand.kind == QUILL_CHAT_FLOAT) {
        return quill__chat_float(fabs(operand.as.number));
    }
    int64_t value = require_integer(context, operand, "abs operand");
    if (value == INT64_MIN) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "OverflowError: abs of the smallest int64");
    }
    return quill__chat_int(value < 0 ? -value : value);
}

static quill_chat_value filter_round(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    int64_t precision =
        require_integer(context, argument(args, 0, "precision", quill__chat_int(0)), "precision");
    quill_chat_value method_value =
        argument(args, 1, "method", quill__chat_string_new(&context->arena, "common", 6, true));
    const char *method = require_string(context, method_value, "round method")->bytes;
    if (!quill__chat_is_number(operand)) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: round needs a number, not %s",
                         quill__chat_type_name(operand));
    }
    bool is_common = strcmp(method, "common") == 0;
    if (!is_common && strcmp(method, "floor") != 0 && strcmp(method, "ceil") != 0) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "round method must be common, ceil or floor, not '%s'", method);
    }
    if (precision < -20 || precision > 20) {
        precision = precision < 0 ? -20 : 20;
    }
    double scale = pow(10.0, (double)precision);
    double value = quill__chat_to_double(operand) * scale;
    if (strcmp(method, "floor") == 0) {
        value = floor(value);
    } else if (strcmp(method, "ceil") == 0) {
        value = ceil(value);
    } else {
        /* Python's round: ties go to the even neighbour, and ints stay ints. */
        value = rint(value);
        if (operand.kind != QUILL_CHAT_FLOAT) {
            double integral = value / scale;
            if (fabs(integral) < 9.2e18) {
                return quill__chat_int((int64_t)integral);
            }
        }
    }
    return quill__chat_float(value / scale);
}

/* map(attribute='x', default=...) or map('filter', args...). */
static quill_chat_value filter_map(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    quill_chat_value result = quill__chat_list_new(&context->arena, items->n_items);
    quill_chat_value attribute = argument(args, SIZE_MAX, "attribute", quill__chat_none());
    if (attribute.kind != QUILL_CHAT_NONE) {
        quill_chat_value fallback =
            argument(args, SIZE_MAX, "default", quill__chat_undefined(NULL));
        const quill_chat_string *path = quill__chat_to_string(&context->arena, attribute);
        for (size_t i = 0; i < items->n_items; i++) {
            quill_chat_value value = get_path(context, items->items[i], path);
            if (value.kind == QUILL_CHAT_UNDEFINED && fallback.kind != QUILL_CHAT_UNDEFINED) {
                value = fallback;
            }
            quill__chat_list_append(&context->arena, result.as.list, value);
        }
        return result;
    }
    if (args->n_positional == 0) {
        return result;
    }
    const char *name = require_string(context, args->positional[0], "map filter name")->bytes;
    quill_chat_args rest = *args;
    rest.positional++;
    rest.n_positional--;
    for (size_t i = 0; i < items->n_items; i++) {
        quill__chat_list_append(&context->arena, result.as.list,
                                quill__chat_apply_filter(context, name, items->items[i], &rest));
    }
    return result;
}

/* select/reject(test, args...) and selectattr/rejectattr(attribute, test, args...). */
static quill_chat_value select_items(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args, bool has_attribute,
                                     bool is_select) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    quill_chat_value result = quill__chat_list_new(&context->arena, 0);
    size_t next = 0;
    const quill_chat_string *path = NULL;
    if (has_attribute) {
        path = require_string(context, argument(args, 0, NULL, quill__chat_undefined(NULL)),
                              "attribute name");
        next = 1;
    }
    const char *test = NULL;
    if (next < args->n_positional) {
        test = require_string(context, args->positional[next], "test name")->bytes;
        next++;
    }
    quill_chat_args rest = *args;
    rest.positional += next;
    rest.n_positional -= next < args->n_positional ? next : args->n_positional;
    for (size_t i = 0; i < items->n_items; i++) {
        quill_chat_value value = items->items[i];
        if (path != NULL) {
            value = get_path(context, value, path);
        }
        bool passed = test != NULL ? quill__chat_apply_test(context, test, value, &rest)
                                   : quill__chat_is_truthy(value);
        if (passed == is_select) {
            quill__chat_list_append(&context->arena, result.as.list, items->items[i]);
        }
    }
    return result;
}

static quill_chat_value filter_select(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    return select_items(context, operand, args, false, true);
}

static quill_chat_value filter_reject(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    return select_items(context, operand, args, false, false);
}

static quill_chat_value filter_selectattr(quill_chat_context *context, quill_chat_value operand,
                                          const quill_chat_args *args) {
    return select_items(context, operand, args, true, true);
}

static quill_chat_value filter_rejectattr(quill_chat_context *context, quill_chat_value operand,
                                          const quill_chat_args *args) {
    return select_items(context, operand, args, true, false);
}

static quill_chat_value filter_items(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    if (operand.kind == QUILL_CHAT_UNDEFINED) {
        return quill__chat_list_new(&context->arena, 0);
    }
    if (operand.kind != QUILL_CHAT_DICT && operand.kind != QUILL_CHAT_NAMESPACE) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: can only get item pairs from a "
                         "mapping, not %s",
                         quill__chat_type_name(operand));
    }
    return dict_items(context, operand.as.dict);
}

static quill_chat_value filter_dictsort(quill_chat_context *context, quill_chat_value operand,
                                        const quill_chat_args *args) {
    if (operand.kind != QUILL_CHAT_DICT) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: dictsort needs a dict, not %s",
                         quill__chat_type_name(operand));
    }
    bool is_case_sensitive =
        quill__chat_is_truthy(argument(args, 0, "case_sensitive", quill__chat_bool(false)));
    quill_chat_value by = argument(args, 1, "by", quill__chat_none());
    bool is_reverse = quill__chat_is_truthy(argument(args, 2, "reverse", quill__chat_bool(false)));
    bool is_by_value = by.kind == QUILL_CHAT_STRING && strcmp(by.as.string->bytes, "value") == 0;
    const quill_chat_list *pairs = dict_items(context, operand.as.dict).as.list;
    quill_chat_value path =
        quill__chat_string_new(&context->arena, is_by_value ? "1" : "0", 1, true);
    return sorted_list(context, pairs, is_reverse, is_case_sensitive, path);
}

static quill_chat_value filter_unique(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    bool is_case_sensitive =
        quill__chat_is_truthy(argument(args, 0, "case_sensitive", quill__chat_bool(false)));
    quill_chat_value attribute = argument(args, 1, "attribute", quill__chat_none());
    quill_chat_value result = quill__chat_list_new(&context->arena, 0);
    quill_chat_value seen = quill__chat_list_new(&context->arena, 0);
    for (size_t i = 0; i < items->n_items; i++) {
        quill_chat_value key = items->items[i];
        if (attribute.kind == QUILL_CHAT_STRING) {
            key = get_path(context, key, attribute.as.string);
        }
        key = sort_key_of(context, key, is_case_sensitive);
        bool is_seen = false;
        for (size_t j = 0; j < seen.as.list->n_items && !is_seen; j++) {
            is_seen = quill__chat_equals(seen.as.list->items[j], key);
        }
        if (!is_seen) {
            quill__chat_list_append(&context->arena, seen.as.list, key);
            quill__chat_list_append(&context->arena, result.as.list, items->items[i]);
        }
    }
    return result;
}

static quill_chat_value filter_reverse(quill_chat_context *context, quill_chat_value operand,
                                       const quill_chat_args *args) {
    if (operand.kind == QUILL_CHAT_STRING) {
        const quill_chat_list *characters = quill__chat_iterate(context, operand);
        quill_chat_builder builder = {0};
        for (size_t i = characters->n_items; i > 0; i--) {
            quill__chat_builder_append_string(&context->arena, &builder,
                                              characters->items[i - 1].as.string);
        }
        return finish(context, &builder);
    }
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    quill_chat_value result = quill__chat_list_new(&context->arena, items->n_items);
    for (size_t i = items->n_items; i > 0; i--) {
        quill__chat_list_append(&context->arena, result.as.list, items->items[i - 1]);
    }
    return result;
}

static quill_chat_value filter_sort(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    bool is_reverse = quill__chat_is_truthy(argument(args, 0, "reverse", quill__chat_bool(false)));
    bool is_case_sensitive =
        quill__chat_is_truthy(argument(args, 1, "case_sensitive", quill__chat_bool(false)));
    quill_chat_value attribute = argument(args, 2, "attribute", quill__chat_none());
    return sorted_list(context, quill__chat_iterate(context, operand), is_reverse,
                       is_case_sensitive, attribute);
}

static quill_chat_value filter_safe(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    return operand;
}

static quill_chat_value filter_indent(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    quill_chat_value width = argument(args, 0, "width", quill__chat_int(4));
    bool is_first = quill__chat_is_truthy(argument(args, 1, "first", quill__chat_bool(false)));
    bool is_blank = quill__chat_is_truthy(argument(args, 2, "blank", quill__chat_bool(false)));
    const quill_chat_string *prefix = NULL;
    if (width.kind == QUILL_CHAT_STRING) {
        prefix = width.as.string;
    } else {
        int64_t n_spaces = require_integer(context, width, "indent width");
        n_spaces = n_spaces < 0 ? 0 : (n_spaces > 256 ? 256 : n_spaces);
        char spaces[257];
        memset(spaces, ' ', (size_t)n_spaces);
        prefix = quill__chat_string_new(&context->arena, spaces, (size_t)n_spaces, true).as.string;
    }
    const quill_chat_string *string = quill__chat_to_string(&context->arena, operand);
    quill_chat_builder builder = {0};
    size_t start = 0;
    bool is_line_first = true;
    while (start <= string->n_bytes) {
        const char *newline = memchr(string->bytes + start, '\n', string->n_bytes - start);
        size_t end = newline != NULL ? (size_t)(newline - string->bytes) : string->n_bytes;
        bool is_empty_line = end == start;
        bool indents = is_line_first ? is_first : (is_blank || !is_empty_line);
        if (indents && !(newline == NULL && is_empty_line && !is_line_first)) {
            quill__chat_builder_append_string(&context->arena, &builder, prefix);
        }
        quill__chat_builder_append_slice(&context->arena, &builder, string, start,
                                         end - start + (newline != NULL ? 1 : 0));
        if (newline == NULL) {
            break;
        }
        start = end + 1;
        is_line_first = false;
    }
    return finish(context, &builder);
}

static quill_chat_value filter_wordcount(quill_chat_context *context, quill_chat_value operand,
                                         const quill_chat_args *args) {
    const quill_chat_string *string = quill__chat_to_string(&context->arena, operand);
    int64_t n_words = 0;
    bool is_in_word = false;
    for (size_t i = 0; i < string->n_bytes; i++) {
        unsigned char c = (unsigned char)string->bytes[i];
        bool is_word_char = c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                            (c >= 'A' && c <= 'Z') || c == '_';
        if (is_word_char && !is_in_word) {
            n_words++;
        }
        is_in_word = is_word_char;
    }
    return quill__chat_int(n_words);
}

static quill_chat_value filter_batch(quill_chat_context *context, quill_chat_value operand,
                                     const quill_chat_args *args) {
    int64_t size = require_integer(
        context, argument(args, 0, "linecount", quill__chat_undefined(NULL)), "batch size");
    if (size <= 0) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "ValueError: batch size must be positive");
    }
    bool has_fill = false;
    quill_chat_value fill = quill__chat_argument(args, 1, "fill_with", &has_fill);
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    quill_chat_value result = quill__chat_list_new(&context->arena, 0);
    quill_chat_value batch = quill__chat_list_new(&context->arena, 0);
    for (size_t i = 0; i < items->n_items; i++) {
        quill__chat_list_append(&context->arena, batch.as.list, items->items[i]);
        if ((int64_t)batch.as.list->n_items == size) {
            quill__chat_list_append(&context->arena, result.as.list, batch);
            batch = quill__chat_list_new(&context->arena, 0);
        }
    }
    if (batch.as.list->n_items > 0) {
        while (has_fill && (int64_t)batch.as.list->n_items < size) {
            quill__chat_list_append(&context->arena, batch.as.list, fill);
        }
        quill__chat_list_append(&context->arena, result.as.list, batch);
    }
    return result;
}

static quill_chat_value filter_escape(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    const quill_chat_string *string = quill__chat_to_string(&context->arena, operand);
    quill_chat_builder builder = {0};
    for (size_t s = 0; s < string->n_segments; s++) {
        const quill_chat_segment *segment = &string->segments[s];
        for (size_t i = segment->offset; i < segment->offset + segment->n_bytes; i++) {
            const char *replacement = NULL;
            switch (string->bytes[i]) {
            case '&':
                replacement = "&amp;";
                break;
            case '<':
                replacement = "&lt;";
                break;
            case '>':
                replacement = "&gt;";
                break;
            case '"':
                replacement = "&#34;";
                break;
            case '\'':
                replacement = "&#39;";
                break;
            default:
                break;
            }
            if (replacement != NULL) {
                quill__chat_builder_append(&context->arena, &builder, replacement,
                                           strlen(replacement), segment->is_template_text);
            } else {
                quill__chat_builder_append(&context->arena, &builder, string->bytes + i, 1,
                                           segment->is_template_text);
            }
        }
    }
    return finish(context, &builder);
}

static quill_chat_value filter_center(quill_chat_context *context, quill_chat_value operand,
                                      const quill_chat_args *args) {
    int64_t width =
        require_integer(context, argument(args, 0, "width", quill__chat_int(80)), "center width");
    const quill_chat_string *string = quill__chat_to_string(&context->arena, operand);
    int64_t length = (int64_t)code_point_length(string);
    if (width > 4096) {
        width = 4096;
    }
    if (width <= length) {
        return quill__chat_string_value(string);
    }
    /* Python's str.center puts the extra space on the right when the padding is odd, unless
       the string length is odd. */
    int64_t padding = width - length;
    int64_t left = padding / 2 + (padding & width & 1);
    quill_chat_builder builder = {0};
    for (int64_t i = 0; i < left; i++) {
        quill__chat_builder_append(&context->arena, &builder, " ", 1, true);
    }
    quill__chat_builder_append_string(&context->arena, &builder, string);
    for (int64_t i = 0; i < padding - left; i++) {
        quill__chat_builder_append(&context->arena, &builder, " ", 1, true);
    }
    return finish(context, &builder);
}

static quill_chat_value filter_attr(quill_chat_context *context, quill_chat_value operand,
                                    const quill_chat_args *args) {
    const quill_chat_string *name = require_string(
        context, argument(args, 0, "name", quill__chat_undefined(NULL)), "attr name");
    return quill__chat_get_attribute(context, operand, name->bytes);
}

static quill_chat_value extreme(quill_chat_context *context, quill_chat_value operand,
                                const quill_chat_args *args, bool is_max) {
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    if (items->n_items == 0) {
        return quill__chat_undefined("No aggregated item, sequence was empty.");
    }
    bool is_case_sensitive =
        quill__chat_is_truthy(argument(args, 0, "case_sensitive", quill__chat_bool(false)));
    quill_chat_value attribute = argument(args, 1, "attribute", quill__chat_none());
    quill_chat_value best = items->items[0];
    quill_chat_value best_key = best;
    for (size_t i = 0; i < items->n_items; i++) {
        quill_chat_value key = items->items[i];
        if (attribute.kind == QUILL_CHAT_STRING) {
            key = get_path(context, key, attribute.as.string);
        }
        key = sort_key_of(context, key, is_case_sensitive);
        if (i == 0) {
            best_key = key;
            continue;
        }
        int order = quill__chat_compare(&context->arena, key, best_key);
        if (is_max ? order > 0 : order < 0) {
            best = items->items[i];
            best_key = key;
        }
    }
    return best;
}

static quill_chat_value filter_max(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    return extreme(context, operand, args, true);
}

static quill_chat_value filter_min(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    return extreme(context, operand, args, false);
}

static quill_chat_value filter_sum(quill_chat_context *context, quill_chat_value operand,
                                   const quill_chat_args *args) {
    quill_chat_value attribute = argument(args, 0, "attribute", quill__chat_none());
    quill_chat_value total = argument(args, 1, "start", quill__chat_int(0));
    const quill_chat_list *items = quill__chat_iterate(context, operand);
    for (size_t i = 0; i < items->n_items; i++) {
        quill_chat_value value = items->items[i];
        if (attribute.kind == QUILL_CHAT_STRING) {
            value = get_path(context, value, attribute.as.string);
        }
        if (!quill__chat_is_number(value) || !quill__chat_is_number(total)) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "TypeError: sum needs numbers, got %s",
                             quill__chat_type_name(value));
        }
        if (value.kind == QUILL_CHAT_FLOAT || total.kind == QUILL_CHAT_FLOAT) {
            total = quill__chat_float(quill__chat_to_double(total) + quill__chat_to_double(value));
        } else {
            int64_t sum = 0;
            int64_t a = total.kind == QUILL_CHAT_BOOL ? total.as.boolean : total.as.integer;
            int64_t b = value.kind == QUILL_CHAT_BOOL ? value.as.boolean : value.as.integer;
            if (__builtin_add_overflow(a, b, &sum)) {
                quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                                 "OverflowError: sum does not fit in 64 bits");
            }
            total = quill__chat_int(sum);
        }
    }
    return total;
}

typedef struct filter_entry {
    const char *name;
    filter_function function;
} filter_entry;

static const filter_entry filters[] = {
    {"tojson", filter_tojson},
    {"trim", filter_trim},
    {"lower", filter_lower},
    {"upper", filter_upper},
    {"title", filter_title},
    {"capitalize", filter_capitalize},
    {"length", filter_length},
    {"count", filter_length},
    {"first", filter_first},
    {"last", filter_last},
    {"join", filter_join},
    {"default", filter_default},
    {"d", filter_default},
    {"replace", filter_replace},
    {"list", filter_list},
    {"string", filter_string},
    {"int", filter_int},
    {"float", filter_float},
    {"abs", filter_abs},
    {"round", filter_round},
    {"map", filter_map},
    {"select", filter_select},
    {"reject", filter_reject},
    {"selectattr", filter_selectattr},
    {"rejectattr", filter_rejectattr},
    {"items", filter_items},
    {"dictsort", filter_dictsort},
    {"unique", filter_unique},
    {"reverse", filter_reverse},
    {"sort", filter_sort},
    {"safe", filter_safe},
    {"indent", filter_indent},
    {"wordcount", filter_wordcount},
    {"batch", filter_batch},
    {"escape", filter_escape},
    {"e", filter_escape},
    {"forceescape", filter_escape},
    {"center", filter_center},
    {"attr", filter_attr},
    {"max", filter_max},
    {"min", filter_min},
    {"sum", filter_sum},
};

/* Returns the filter table's entry for name, or NULL. */
static const filter_entry *find_filter(const char *name) {
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        if (strcmp(filters[i].name, name) == 0) {
            return &filters[i];
        }
    }
    return NULL;
}

bool quill__chat_filter_exists(const char *name) {
    return find_filter(name) != NULL;
}

quill_chat_value quill__chat_apply_filter(quill_chat_context *context, const char *name,
                                          quill_chat_value operand, const quill_chat_args *args) {
    const filter_entry *filter = find_filter(name);
    if (filter == NULL) {
        quill__chat_fail(context, QUILL_ERR_UNSUPPORTED, "no filter named '%s'", name);
    }
    return filter->function(context, operand, args);
}

/* Tests. */

bool quill__chat_apply_test(quill_chat_context *context, const char *name, quill_chat_value operand,
                            const quill_chat_args *args) {
    quill_chat_value other = argument(args, 0, NULL, quill__chat_undefined(NULL));
    if (strcmp(name, "defined") == 0) {
        return operand.kind != QUILL_CHAT_UNDEFINED;
    }
    if (strcmp(name, "undefined") == 0) {
        return operand.kind == QUILL_CHAT_UNDEFINED;
    }
    if (strcmp(name, "none") == 0) {
        return operand.kind == QUILL_CHAT_NONE;
    }
    if (strcmp(name, "string") == 0) {
        return operand.kind == QUILL_CHAT_STRING;
    }
    if (strcmp(name, "number") == 0) {
        return quill__chat_is_number(operand);
    }
    if (strcmp(name, "integer") == 0) {
        return operand.kind == QUILL_CHAT_INT;
    }
    if (strcmp(name, "float") == 0) {
        return operand.kind == QUILL_CHAT_FLOAT;
    }
    if (strcmp(name, "boolean") == 0) {
        return operand.kind == QUILL_CHAT_BOOL;
    }
    if (strcmp(name, "true") == 0) {
        return operand.kind == QUILL_CHAT_BOOL && operand.as.boolean;
    }
    if (strcmp(name, "false") == 0) {
        return operand.kind == QUILL_CHAT_BOOL && !operand.as.boolean;
    }
    if (strcmp(name, "mapping") == 0) {
        return operand.kind == QUILL_CHAT_DICT || operand.kind == QUILL_CHAT_NAMESPACE;
    }
    if (strcmp(name, "iterable") == 0) {
        return operand.kind == QUILL_CHAT_STRING || operand.kind == QUILL_CHAT_LIST ||
               operand.kind == QUILL_CHAT_DICT || operand.kind == QUILL_CHAT_UNDEFINED;
    }
    if (strcmp(name, "sequence") == 0) {
        return operand.kind == QUILL_CHAT_STRING || operand.kind == QUILL_CHAT_LIST ||
               operand.kind == QUILL_CHAT_DICT;
    }
    if (strcmp(name, "callable") == 0) {
        return operand.kind == QUILL_CHAT_MACRO || operand.kind == QUILL_CHAT_FUNCTION ||
               operand.kind == QUILL_CHAT_METHOD;
    }
    if (strcmp(name, "odd") == 0 || strcmp(name, "even") == 0) {
        int64_t value = require_integer(context, operand, "odd/even operand");
        return (value % 2 != 0) == (name[0] == 'o');
    }
    if (strcmp(name, "divisibleby") == 0) {
        int64_t divisor = require_integer(context, other, "divisibleby argument");
        if (divisor == 0) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "ZeroDivisionError: divisibleby 0");
        }
        return require_integer(context, operand, "divisibleby operand") % divisor == 0;
    }
    if (strcmp(name, "equalto") == 0 || strcmp(name, "eq") == 0 || strcmp(name, "==") == 0) {
        return quill__chat_equals(operand, other);
    }
    if (strcmp(name, "ne") == 0 || strcmp(name, "!=") == 0) {
        return !quill__chat_equals(operand, other);
    }
    if (strcmp(name, "sameas") == 0) {
        if (operand.kind != other.kind) {
            return false;
        }
        if (operand.kind == QUILL_CHAT_NONE || operand.kind == QUILL_CHAT_BOOL ||
            operand.kind == QUILL_CHAT_INT) {
            return quill__chat_equals(operand, other);
        }
        return memcmp(&operand.as, &other.as, sizeof(operand.as)) == 0;
    }
    if (strcmp(name, "lower") == 0 || strcmp(name, "upper") == 0) {
        if (operand.kind != QUILL_CHAT_STRING) {
            return false;
        }
        return all_code_points(operand.as.string, name[0] == 'u' ? 3 : 4);
    }
    if (strcmp(name, "in") == 0) {
        quill_chat_value list = other;
        if (list.kind == QUILL_CHAT_STRING && operand.kind == QUILL_CHAT_STRING) {
            return memmem(list.as.string->bytes, list.as.string->n_bytes, operand.as.string->bytes,
                          operand.as.string->n_bytes) != NULL ||
                   operand.as.string->n_bytes == 0;
        }
        const quill_chat_list *items = quill__chat_iterate(context, list);
        for (size_t i = 0; i < items->n_items; i++) {
            if (quill__chat_equals(items->items[i], operand)) {
                return true;
            }
        }
        return false;
    }
    if (strcmp(name, "gt") == 0 || strcmp(name, "lt") == 0 || strcmp(name, "ge") == 0 ||
        strcmp(name, "le") == 0 || strcmp(name, ">") == 0 || strcmp(name, "<") == 0 ||
        strcmp(name, ">=") == 0 || strcmp(name, "<=") == 0) {
        int order = quill__chat_compare(&context->arena, operand, other);
        bool is_greater = name[0] == 'g' || name[0] == '>';
        bool is_inclusive = name[1] == 'e' || name[1] == '=';
        if (is_greater) {
            return is_inclusive ? order >= 0 : order > 0;
        }
        return is_inclusive ? order <= 0 : order < 0;
    }
    quill__chat_fail(context, QUILL_ERR_UNSUPPORTED, "no test named '%s'", name);
}

/* Global functions. */

static const char *const global_functions[] = {"range",           "namespace",    "dict",
                                               "raise_exception", "strftime_now", NULL};

bool quill__chat_is_global_function(const char *name) {
    return in_names(global_functions, name);
}

static const char *const month_names[] = {"January",   "February", "March",    "April",
                                          "May",       "June",     "July",     "August",
                                          "September", "October",  "November", "December"};
static const char *const day_names[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                        "Thursday", "Friday", "Saturday"};

/* strftime in the C locale, written out so that the process locale cannot change it. */
static quill_chat_value format_time(quill_chat_context *context, const quill_chat_string *format,
                                    int64_t unix_seconds) {
    time_t seconds = (time_t)unix_seconds;
    struct tm tm;
    if (gmtime_r(&seconds, &tm) == NULL) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG, "strftime_now: time %lld is out of range",
                         (long long)unix_seconds);
    }
    quill_chat_builder builder = {0};
    for (size_t i = 0; i < format->n_bytes; i++) {
        char c = format->bytes[i];
        if (c != '%' || i + 1 >= format->n_bytes) {
            quill__chat_builder_append(&context->arena, &builder, &c, 1, true);
            continue;
        }
        char specifier = format->bytes[++i];
        char text[64];
        text[0] = '\0';
        switch (specifier) {
        case 'Y':
            snprintf(text, sizeof(text), "%d", tm.tm_year + 1900);
            break;
        case 'y':
            snprintf(text, sizeof(text), "%02d", (tm.tm_year + 1900) % 100);
            break;
        case 'm':
            snprintf(text, sizeof(text), "%02d", tm.tm_mon + 1);
            break;
        case 'd':
            snprintf(text, sizeof(text), "%02d", tm.tm_mday);
            break;
        case 'e':
            snprintf(text, sizeof(text), "%2d", tm.tm_mday);
            break;
        case 'j':
            snprintf(text, sizeof(text), "%03d", tm.tm_yday + 1);
            break;
        case 'H':
            snprintf(text, sizeof(text), "%02d", tm.tm_hour);
            break;
        case 'I':
            snprintf(text, sizeof(text), "%02d", tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12);
            break;
        case 'M':
            snprintf(text, sizeof(text), "%02d", tm.tm_min);
            break;
        case 'S':
            snprintf(text, sizeof(text), "%02d", tm.tm_sec);
            break;
        case 'p':
            snprintf(text, sizeof(text), "%s", tm.tm_hour < 12 ? "AM" : "PM");
            break;
        case 'B':
            snprintf(text, sizeof(text), "%s", month_names[tm.tm_mon]);
            break;
        case 'b':
        case 'h':
            snprintf(text, sizeof(text), "%.3s", month_names[tm.tm_mon]);
            break;
        case 'A':
            snprintf(text, sizeof(text), "%s", day_names[tm.tm_wday]);
            break;
        case 'a':
            snprintf(text, sizeof(text), "%.3s", day_names[tm.tm_wday]);
            break;
        case 'w':
            snprintf(text, sizeof(text), "%d", tm.tm_wday);
            break;
        case 'F':
            snprintf(text, sizeof(text), "%d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday);
            break;
        case 'T':
            snprintf(text, sizeof(text), "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
            break;
        case 'Z':
        case 'z':
            /* Python's datetime.now() is naive: %Z and %z print nothing. */
            break;
        case '%':
            snprintf(text, sizeof(text), "%%");
            break;
        default:
            snprintf(text, sizeof(text), "%%%c", specifier);
            break;
        }
        quill__chat_builder_append(&context->arena, &builder, text, strlen(text), true);
    }
    return finish(context, &builder);
}

static quill_chat_value make_range(quill_chat_context *context, const quill_chat_args *args) {
    int64_t start = 0;
    int64_t stop = 0;
    int64_t step = 1;
    if (args->n_positional == 1) {
        stop = require_integer(context, args->positional[0], "range stop");
    } else if (args->n_positional == 2 || args->n_positional == 3) {
        start = require_integer(context, args->positional[0], "range start");
        stop = require_integer(context, args->positional[1], "range stop");
        if (args->n_positional == 3) {
            step = require_integer(context, args->positional[2], "range step");
        }
    } else {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: range expects 1 to 3 "
                         "integer arguments, got %zu",
                         args->n_positional);
    }
    if (step == 0) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "ValueError: range() arg 3 must not be zero");
    }
    double n_items = ceil(((double)stop - (double)start) / (double)step);
    if (n_items > QUILL_CHAT_MAX_ITERATIONS) {
        quill__chat_fail(context, QUILL_ERR_FORMAT,
                         "range of %.0f items is longer than the limit of "
                         "%d",
                         n_items, QUILL_CHAT_MAX_ITERATIONS);
    }
    quill_chat_value list =
        quill__chat_list_new(&context->arena, n_items > 0 ? (size_t)n_items : 0);
    for (int64_t value = start; step > 0 ? value < stop : value > stop; value += step) {
        quill__chat_list_append(&context->arena, list.as.list, quill__chat_int(value));
    }
    return list;
}

quill_chat_value quill__chat_call_function(quill_chat_context *context, const char *name,
                                           const quill_chat_args *args) {
    if (strcmp(name, "raise_exception") == 0) {
        quill_chat_value message = argument(args, 0, "message", quill__chat_undefined(NULL));
        const quill_chat_string *text = quill__chat_to_string(&context->arena, message);
        quill__chat_arena_fail(&context->arena, QUILL_ERR_INVALID_ARG, "%s", text->bytes);
    }
    if (strcmp(name, "strftime_now") == 0) {
        const quill_chat_string *format = require_string(
            context, argument(args, 0, "format", quill__chat_undefined(NULL)), "strftime format");
        int64_t now =
            context->now_unix_seconds >= 0 ? context->now_unix_seconds : (int64_t)time(NULL);
        return format_time(context, format, now);
    }
    if (strcmp(name, "range") == 0) {
        return make_range(context, args);
    }

    /* namespace(...) and dict(...): an optional mapping, then keyword arguments. */
    quill_chat_value result = quill__chat_dict_new(&context->arena, args->n_keywords);
    if (strcmp(name, "namespace") == 0) {
        result.kind = QUILL_CHAT_NAMESPACE;
    }
    if (args->n_positional > 1) {
        quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                         "TypeError: %s expects at most 1 "
                         "positional argument, got %zu",
                         name, args->n_positional);
    }
    if (args->n_positional == 1) {
        quill_chat_value initial = args->positional[0];
        if (initial.kind != QUILL_CHAT_DICT && initial.kind != QUILL_CHAT_NAMESPACE) {
            quill__chat_fail(context, QUILL_ERR_INVALID_ARG,
                             "TypeError: %s needs a mapping, "
                             "not %s",
                             name, quill__chat_type_name(initial));
        }
        for (size_t i = 0; i < initial.as.dict->n_items; i++) {
            quill__chat_dict_set(&context->arena, result.as.dict, initial.as.dict->keys[i],
                                 initial.as.dict->values[i]);
        }
    }
    for (size_t i = 0; i < args->n_keywords; i++) {
        quill_chat_value key = quill__chat_string_new(&context->arena, args->keyword_names[i],
                                                      strlen(args->keyword_names[i]), true);
        quill__chat_dict_set(&context->arena, result.as.dict, key, args->keyword_values[i]);
    }
    return result;
}
