/*
 * Lexer of the chat template language. The whitespace rules follow Jinja 2/3 with
 * trim_blocks=True, lstrip_blocks=True and keep_trailing_newline=False, the environment that
 * transformers renders chat templates with:
 * - newlines (\r\n, \r) become \n and one trailing \n of the source is dropped;
 * - `{%-`, `{{-`, `{#-` strip all whitespace before the tag, `-%}`, `-}}`, `-#}` all after it;
 * - lstrip_blocks removes spaces and tabs between a line start and `{%` or `{#` (not `{%+`);
 * - trim_blocks removes the first newline after `%}` or `#}` (not `+%}`).
 */
#include "chat/lexer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct lexer {
    quill_chat_arena *arena;
    const char *source; /* normalized, NUL-terminated */
    size_t n_bytes;
    size_t position;
    int line;             /* of line_position */
    size_t line_start;    /* offset where line starts */
    size_t line_position; /* offset that line and line_start describe */
    quill_chat_token *tokens;
    size_t n_tokens;
    size_t capacity;
    int bracket_depth; /* open ( [ { inside the current tag */
} lexer;

static void locate(lexer *lex, size_t offset, int *line, int *column) {
    if (offset < lex->line_position) {
        lex->line = 1;
        lex->line_start = 0;
        lex->line_position = 0;
    }
    for (size_t i = lex->line_position; i < offset && i < lex->n_bytes; i++) {
        if (lex->source[i] == '\n') {
            lex->line++;
            lex->line_start = i + 1;
        }
    }
    lex->line_position = offset;
    *line = lex->line;
    *column = (int)(offset - lex->line_start) + 1;
}

static _Noreturn void lex_fail(lexer *lex, size_t offset, const char *message) {
    int line = 0;
    int column = 0;
    locate(lex, offset, &line, &column);
    quill__chat_arena_fail(lex->arena, QUILL_ERR_FORMAT,
                           "chat template: syntax error at line %d, column %d: %s", line, column,
                           message);
}

static quill_chat_token *push_token(lexer *lex, quill_chat_token_kind kind, size_t offset,
                                    const char *text, size_t n_text) {
    if (lex->n_tokens == lex->capacity) {
        size_t capacity = lex->capacity < 64 ? 64 : lex->capacity * 2;
        quill_chat_token *tokens =
            quill__chat_arena_alloc_array(lex->arena, capacity, sizeof(*tokens));
        if (lex->n_tokens > 0) {
            memcpy(tokens, lex->tokens, lex->n_tokens * sizeof(*tokens));
        }
        lex->tokens = tokens;
        lex->capacity = capacity;
    }
    quill_chat_token *token = &lex->tokens[lex->n_tokens++];
    memset(token, 0, sizeof(*token));
    token->kind = kind;
    token->text = quill__chat_arena_strndup(lex->arena, text, n_text);
    token->n_text = n_text;
    locate(lex, offset, &token->line, &token->column);
    return token;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static size_t encode_utf8(uint32_t code_point, char *out) {
    if (code_point < 0x80) {
        out[0] = (char)code_point;
        return 1;
    }
    if (code_point < 0x800) {
        out[0] = (char)(0xc0 | (code_point >> 6));
        out[1] = (char)(0x80 | (code_point & 0x3f));
        return 2;
    }
    if (code_point < 0x10000) {
        out[0] = (char)(0xe0 | (code_point >> 12));
        out[1] = (char)(0x80 | ((code_point >> 6) & 0x3f));
        out[2] = (char)(0x80 | (code_point & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (code_point >> 18));
    out[1] = (char)(0x80 | ((code_point >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((code_point >> 6) & 0x3f));
    out[3] = (char)(0x80 | (code_point & 0x3f));
    return 4;
}

/* Reads a quoted literal at lex->position with Python's escapes. */
static void lex_string(lexer *lex) {
    size_t start = lex->position;
    char quote = lex->source[start];
    size_t end = start + 1;
    while (end < lex->n_bytes && lex->source[end] != quote) {
        end += lex->source[end] == '\\' ? 2 : 1;
    }
    if (end >= lex->n_bytes) {
        lex_fail(lex, start, "unterminated string literal; add the closing quote");
    }

    /* The decoded text is never longer than the source text. */
    char *decoded = quill__chat_arena_alloc(lex->arena, end - start + 1);
    size_t n = 0;
    for (size_t i = start + 1; i < end; i++) {
        char c = lex->source[i];
        if (c != '\\') {
            decoded[n++] = c;
            continue;
        }
        char escape = lex->source[++i];
        int n_hex = 0;
        switch (escape) {
        case 'n':
            decoded[n++] = '\n';
            break;
        case 't':
            decoded[n++] = '\t';
            break;
        case 'r':
            decoded[n++] = '\r';
            break;
        case '0':
            decoded[n++] = '\0';
            break;
        case 'a':
            decoded[n++] = '\a';
            break;
        case 'b':
            decoded[n++] = '\b';
            break;
        case 'f':
            decoded[n++] = '\f';
            break;
        case 'v':
            decoded[n++] = '\v';
            break;
        case '\\':
        case '\'':
        case '"':
            decoded[n++] = escape;
            break;
        case '\n':
            break;
        case 'x':
            n_hex = 2;
            break;
        case 'u':
            n_hex = 4;
            break;
        case 'U':
            n_hex = 8;
            break;
        default:
            decoded[n++] = '\\';
            decoded[n++] = escape;
            break;
        }
        if (n_hex > 0) {
            uint32_t code_point = 0;
            for (int digit = 0; digit < n_hex; digit++) {
                int value = i + 1 < end ? hex_value(lex->source[i + 1]) : -1;
                if (value < 0) {
                    lex_fail(lex, i, "truncated \\x, \\u or \\U escape in a string literal");
                }
                code_point = code_point * 16 + (uint32_t)value;
                i++;
            }
            if (code_point > 0x10ffff) {
                lex_fail(lex, i, "escape names a code point above U+10FFFF");
            }
            /* An escape of n_hex digits takes n_hex + 2 source bytes and at most 4 encoded. */
            n += encode_utf8(code_point, decoded + n);
        }
    }
    quill_chat_token *token = push_token(lex, QUILL_CHAT_TOKEN_STRING, start, decoded, n);
    token->n_text = n;
    lex->position = end + 1;
}

static void lex_number(lexer *lex) {
    size_t start = lex->position;
    size_t end = start;
    bool is_float = false;
    while (end < lex->n_bytes && (is_digit(lex->source[end]) || lex->source[end] == '_')) {
        end++;
    }
    /* After a dot (`items.0.1`) digits are an index, not the start of a float, as in Jinja. */
    bool follows_dot = start > 0 && lex->source[start - 1] == '.';
    if (!follows_dot && end + 1 < lex->n_bytes && lex->source[end] == '.' &&
        is_digit(lex->source[end + 1])) {
        is_float = true;
        end++;
        while (end < lex->n_bytes && (is_digit(lex->source[end]) || lex->source[end] == '_')) {
            end++;
        }
    }
    if (end < lex->n_bytes && (lex->source[end] == 'e' || lex->source[end] == 'E')) {
        size_t exponent = end + 1;
        if (exponent < lex->n_bytes &&
            (lex->source[exponent] == '+' || lex->source[exponent] == '-')) {
            exponent++;
        }
        if (exponent < lex->n_bytes && is_digit(lex->source[exponent])) {
            is_float = true;
            end = exponent;
            while (end < lex->n_bytes && is_digit(lex->source[end])) {
                end++;
            }
        }
    }

    /* Copy without the digit separators before converting. */
    char digits[64];
    size_t n_digits = 0;
    for (size_t i = start; i < end; i++) {
        if (lex->source[i] == '_') {
            continue;
        }
        if (n_digits + 1 >= sizeof(digits)) {
            lex_fail(lex, start, "number literal longer than 62 digits");
        }
        digits[n_digits++] = lex->source[i];
    }
    digits[n_digits] = '\0';
    quill_chat_token *token = push_token(
        lex, is_float ? QUILL_CHAT_TOKEN_FLOAT : QUILL_CHAT_TOKEN_INT, start, digits, n_digits);
    errno = 0;
    if (is_float) {
        token->number = strtod(digits, NULL);
    } else {
        long long integer = strtoll(digits, NULL, 10);
        if (errno == ERANGE) {
            lex_fail(lex, start, "integer literal does not fit in 64 bits");
        }
        token->integer = integer;
    }
    lex->position = end;
}

static const char *const two_char_operators[] = {"**", "//", "==", "!=", "<=", ">="};
static const char single_char_operators[] = "+-*/%~<>=.,:|()[]{}";

/* Tokenizes the inside of a tag up to its closing delimiter; returns true when the closing
 * delimiter had a `-` modifier. *has_plus is set for `+%}`. */
static bool lex_tag(lexer *lex, char closer, bool *has_plus) {
    lex->bracket_depth = 0;
    *has_plus = false;
    for (;;) {
        while (lex->position < lex->n_bytes && is_space(lex->source[lex->position])) {
            lex->position++;
        }
        size_t at = lex->position;
        if (at >= lex->n_bytes) {
            lex_fail(lex, at,
                     closer == '}' ? "missing '}}' at the end of the template"
                                   : "missing '%}' at the end of the template");
        }
        const char *cursor = lex->source + at;

        /* Closing delimiter, with an optional modifier. */
        bool can_close = closer == '%' || lex->bracket_depth == 0;
        if (can_close) {
            if ((cursor[0] == '-' || cursor[0] == '+') && cursor[1] == closer && cursor[2] == '}') {
                *has_plus = cursor[0] == '+';
                lex->position = at + 3;
                return cursor[0] == '-';
            }
            if (cursor[0] == closer && cursor[1] == '}') {
                lex->position = at + 2;
                return false;
            }
        }

        if (is_name_start(cursor[0])) {
            size_t end = at;
            while (end < lex->n_bytes &&
                   (is_name_start(lex->source[end]) || is_digit(lex->source[end]))) {
                end++;
            }
            push_token(lex, QUILL_CHAT_TOKEN_NAME, at, cursor, end - at);
            lex->position = end;
            continue;
        }
        if (is_digit(cursor[0])) {
            lex_number(lex);
            continue;
        }
        if (cursor[0] == '\'' || cursor[0] == '"') {
            lex_string(lex);
            continue;
        }
        bool is_matched = false;
        for (size_t i = 0; i < sizeof(two_char_operators) / sizeof(two_char_operators[0]); i++) {
            if (cursor[0] == two_char_operators[i][0] && cursor[1] == two_char_operators[i][1]) {
                push_token(lex, QUILL_CHAT_TOKEN_OPERATOR, at, cursor, 2);
                lex->position = at + 2;
                is_matched = true;
                break;
            }
        }
        if (is_matched) {
            continue;
        }
        if (cursor[0] != '\0' && strchr(single_char_operators, cursor[0]) != NULL) {
            if (cursor[0] == '(' || cursor[0] == '[' || cursor[0] == '{') {
                lex->bracket_depth++;
            } else if ((cursor[0] == ')' || cursor[0] == ']' || cursor[0] == '}') &&
                       lex->bracket_depth > 0) {
                lex->bracket_depth--;
            }
            push_token(lex, QUILL_CHAT_TOKEN_OPERATOR, at, cursor, 1);
            lex->position = at + 1;
            continue;
        }
        lex_fail(lex, at, "unexpected character inside a tag");
    }
}

/* Returns true when source[at] starts `{%-? *name *-?%}`; stores the end of the tag and its
 * modifiers. */
static bool match_simple_tag(const lexer *lex, size_t at, const char *name, size_t *end,
                             bool *strips_before, bool *strips_after) {
    const char *s = lex->source;
    if (at + 1 >= lex->n_bytes || s[at] != '{' || s[at + 1] != '%') {
        return false;
    }
    size_t i = at + 2;
    *strips_before = false;
    if (s[i] == '-' || s[i] == '+') {
        *strips_before = s[i] == '-';
        i++;
    }
    while (i < lex->n_bytes && is_space(s[i])) {
        i++;
    }
    size_t n_name = strlen(name);
    if (strncmp(s + i, name, n_name) != 0) {
        return false;
    }
    i += n_name;
    while (i < lex->n_bytes && is_space(s[i])) {
        i++;
    }
    *strips_after = false;
    if (s[i] == '-' || s[i] == '+') {
        *strips_after = s[i] == '-';
        i++;
    }
    if (s[i] != '%' || s[i + 1] != '}') {
        return false;
    }
    *end = i + 2;
    return true;
}

static void emit_text(lexer *lex, size_t start, size_t end) {
    if (end > start) {
        push_token(lex, QUILL_CHAT_TOKEN_TEXT, start, lex->source + start, end - start);
    }
}

/* Normalizes newlines and drops one trailing newline (keep_trailing_newline=False). */
static char *normalize_source(quill_chat_arena *arena, const char *source, size_t n_bytes,
                              size_t *n_out) {
    char *normalized = quill__chat_arena_alloc(arena, n_bytes + 1);
    size_t n = 0;
    for (size_t i = 0; i < n_bytes; i++) {
        if (source[i] == '\r') {
            normalized[n++] = '\n';
            if (i + 1 < n_bytes && source[i + 1] == '\n') {
                i++;
            }
        } else {
            normalized[n++] = source[i];
        }
    }
    if (n > 0 && normalized[n - 1] == '\n') {
        n--;
    }
    normalized[n] = '\0';
    *n_out = n;
    return normalized;
}

void quill__chat_lex(quill_chat_arena *arena, const char *source, size_t n_bytes,
                     quill_chat_token **tokens, size_t *n_tokens) {
    lexer lex = {0};
    lex.arena = arena;
    lex.source = normalize_source(arena, source, n_bytes, &lex.n_bytes);
    lex.line = 1;
    const char *s = lex.source;
    bool strips_leading = false; /* the previous tag ended with a `-` modifier */

    while (lex.position < lex.n_bytes) {
        /* Find the next tag opener. */
        size_t text_start = lex.position;
        size_t tag = text_start;
        while (tag + 1 < lex.n_bytes &&
               !(s[tag] == '{' && (s[tag + 1] == '{' || s[tag + 1] == '%' || s[tag + 1] == '#'))) {
            tag++;
        }
        if (tag + 1 >= lex.n_bytes) {
            tag = lex.n_bytes;
        }
        if (strips_leading) {
            while (text_start < tag && is_space(s[text_start])) {
                text_start++;
            }
            strips_leading = false;
        }
        if (tag == lex.n_bytes) {
            emit_text(&lex, text_start, tag);
            break;
        }

        /* Apply the opener's whitespace rule to the text before it. */
        char opener = s[tag + 1];
        char modifier = tag + 2 < lex.n_bytes ? s[tag + 2] : '\0';
        size_t text_end = tag;
        if (modifier == '-') {
            while (text_end > text_start && is_space(s[text_end - 1])) {
                text_end--;
            }
        } else if (opener != '{' && modifier != '+') {
            size_t line_begin = text_end;
            while (line_begin > text_start &&
                   (s[line_begin - 1] == ' ' || s[line_begin - 1] == '\t')) {
                line_begin--;
            }
            bool at_line_start = line_begin == 0 || s[line_begin - 1] == '\n';
            if (at_line_start) {
                text_end = line_begin;
            }
        }
        emit_text(&lex, text_start, text_end);

        size_t inner = tag + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
        if (opener == '#') {
            const char *close = strstr(s + inner, "#}");
            if (close == NULL) {
                lex_fail(&lex, tag, "unterminated comment; close it with '#}'");
            }
            size_t close_at = (size_t)(close - s);
            lex.position = close_at + 2;
            if (close_at > inner && s[close_at - 1] == '-') {
                strips_leading = true;
            } else if (!(close_at > inner && s[close_at - 1] == '+') &&
                       lex.position < lex.n_bytes && s[lex.position] == '\n') {
                lex.position++;
            }
            continue;
        }

        if (opener == '%') {
            /* {% raw %}: everything up to {% endraw %} is text. */
            size_t raw_end = 0;
            bool raw_strips_before = false;
            bool raw_strips_after = false;
            if (match_simple_tag(&lex, tag, "raw", &raw_end, &raw_strips_before,
                                 &raw_strips_after)) {
                size_t body_start = raw_end;
                if (raw_strips_after) {
                    while (body_start < lex.n_bytes && is_space(s[body_start])) {
                        body_start++;
                    }
                } else if (body_start < lex.n_bytes && s[body_start] == '\n') {
                    body_start++;
                }
                size_t search = body_start;
                size_t end_tag_end = 0;
                bool end_strips_before = false;
                bool end_strips_after = false;
                while (search < lex.n_bytes &&
                       !match_simple_tag(&lex, search, "endraw", &end_tag_end, &end_strips_before,
                                         &end_strips_after)) {
                    search++;
                }
                if (search >= lex.n_bytes) {
                    lex_fail(&lex, tag, "{% raw %} without {% endraw %}");
                }
                size_t body_end = search;
                if (end_strips_before) {
                    while (body_end > body_start && is_space(s[body_end - 1])) {
                        body_end--;
                    }
                } else {
                    size_t line_begin = body_end;
                    while (line_begin > body_start &&
                           (s[line_begin - 1] == ' ' || s[line_begin - 1] == '\t')) {
                        line_begin--;
                    }
                    if (line_begin == 0 || s[line_begin - 1] == '\n') {
                        body_end = line_begin;
                    }
                }
                emit_text(&lex, body_start, body_end);
                lex.position = end_tag_end;
                if (end_strips_after) {
                    strips_leading = true;
                } else if (lex.position < lex.n_bytes && s[lex.position] == '\n') {
                    lex.position++;
                }
                continue;
            }
        }

        bool is_block = opener == '%';
        push_token(&lex, is_block ? QUILL_CHAT_TOKEN_BLOCK_BEGIN : QUILL_CHAT_TOKEN_VAR_BEGIN, tag,
                   s + tag, 2);
        lex.position = inner;
        bool has_plus = false;
        size_t close_at = lex.position;
        strips_leading = lex_tag(&lex, is_block ? '%' : '}', &has_plus);
        close_at = lex.position;
        push_token(&lex, is_block ? QUILL_CHAT_TOKEN_BLOCK_END : QUILL_CHAT_TOKEN_VAR_END,
                   close_at - 2, s + close_at - 2, 2);
        if (is_block && !strips_leading && !has_plus && lex.position < lex.n_bytes &&
            s[lex.position] == '\n') {
            lex.position++;
        }
    }
    push_token(&lex, QUILL_CHAT_TOKEN_END, lex.n_bytes, "", 0);
    *tokens = lex.tokens;
    *n_tokens = lex.n_tokens;
}
