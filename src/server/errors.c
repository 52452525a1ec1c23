/*
 * OpenAI-shaped error bodies, as described in errors.h.
 */
#include "server/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *type_for_status(int http_status) {
    switch (http_status) {
    case 401:
        return "authentication_error";
    case 429:
        return "rate_limit_error";
    case 500:
    case 503:
        return "server_error";
    default:
        return "invalid_request_error";
    }
}

void quill__http_error_set(quill_http_error *error, int http_status, const char *param,
                           const char *code, const char *fmt, ...) {
    memset(error, 0, sizeof(*error));
    error->http_status = http_status;
    error->type = type_for_status(http_status);
    snprintf(error->param, sizeof(error->param), "%s", param != NULL ? param : "");
    snprintf(error->code, sizeof(error->code), "%s", code != NULL ? code : "");

    va_list args;
    va_start(args, fmt);
    vsnprintf(error->message, sizeof(error->message), fmt, args);
    va_end(args);
}

void quill__http_error_from_status(quill_http_error *error, quill_status status,
                                   const char *param) {
    const char *message = quill_error_message();
    switch (status) {
    case QUILL_ERR_INVALID_ARG:
        quill__http_error_set(error, 400, param, NULL, "%s", message);
        break;
    case QUILL_ERR_NOT_FOUND:
        quill__http_error_set(error, 404, param, NULL, "%s", message);
        break;
    case QUILL_ERR_BUSY:
        quill__http_error_set(error, 429, NULL, "rate_limit_exceeded", "%s", message);
        error->retry_after_s = 1;
        break;
    default:
        quill__http_error_set(error, 500, NULL, NULL, "%s (%s)", message,
                              quill_status_name(status));
        break;
    }
}

static quill_status append_nullable_string(quill_strbuf *buffer, const char *text) {
    if (text[0] == '\0') {
        return quill__strbuf_append_cstr(buffer, "null");
    }
    return quill__strbuf_append_json_string(buffer, text, strlen(text));
}

quill_status quill__http_error_write_json(const quill_http_error *error, quill_strbuf *buffer) {
    quill__strbuf_append_cstr(buffer, "{\"error\":{\"message\":");
    quill__strbuf_append_json_string(buffer, error->message, strlen(error->message));
    quill__strbuf_append_cstr(buffer, ",\"type\":");
    quill__strbuf_append_json_string(buffer, error->type, strlen(error->type));
    quill__strbuf_append_cstr(buffer, ",\"param\":");
    append_nullable_string(buffer, error->param);
    quill__strbuf_append_cstr(buffer, ",\"code\":");
    append_nullable_string(buffer, error->code);
    return quill__strbuf_append_cstr(buffer, "}}\n");
}
