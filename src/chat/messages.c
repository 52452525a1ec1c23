/*
 * Normalization of OpenAI chat messages before a template renders them. Templates expect the
 * shapes that transformers passes: roles system/user/assistant/tool, string contents, and
 * tool-call arguments as objects. Clients send the OpenAI wire format, so this maps:
 * - role "developer" to "system";
 * - content arrays of {"type": "text", "text": ...} parts to one string, parts joined with "\n"
 *   (what llama.cpp does for templates without typed content), unless the caller keeps parts;
 * - tool_calls[].function.arguments given as a JSON string to the parsed object;
 * - an assistant message with tool_calls and no content to content null.
 * The result shares unchanged members with the input (json-c reference counts).
 */
#include "quill/chat.h"

#include <json-c/json.h>
#include <string.h>

#include "base/strbuf.h"

static const char *const known_roles[] = {"system", "developer", "user", "assistant", "tool"};

static bool is_known_role(const char *role) {
    for (size_t i = 0; i < sizeof(known_roles) / sizeof(known_roles[0]); i++) {
        if (strcmp(known_roles[i], role) == 0) {
            return true;
        }
    }
    return false;
}

/* Returns the member key of object when it exists and has the given type, else NULL (also when
 * object is no JSON object). Borrowed: valid while object is. */
static struct json_object *member_of_type(struct json_object *object, const char *key,
                                          json_type type) {
    struct json_object *member = NULL;
    if (!json_object_object_get_ex(object, key, &member) || !json_object_is_type(member, type)) {
        return NULL;
    }
    return member;
}

/* Validates a content array; stores the joined text in *joined unless keep_parts. */
static quill_status normalize_parts(struct json_object *parts, size_t message_index,
                                    bool keep_parts, struct json_object **out) {
    quill_strbuf text;
    quill__strbuf_init(&text);
    quill_status status = QUILL_OK;
    *out = NULL;
    size_t n_parts = json_object_array_length(parts);
    for (size_t i = 0; i < n_parts; i++) {
        struct json_object *part = json_object_array_get_idx(parts, i);
        struct json_object *type = member_of_type(part, "type", json_type_string);
        if (type == NULL) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].content[%zu] must be an object "
                                     "with a string 'type'",
                                     message_index, i);
            goto cleanup;
        }
        if (strcmp(json_object_get_string(type), "text") != 0) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].content[%zu].type '%s' is not "
                                     "supported; only 'text' parts can be rendered",
                                     message_index, i, json_object_get_string(type));
            goto cleanup;
        }
        struct json_object *part_text = member_of_type(part, "text", json_type_string);
        if (part_text == NULL) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].content[%zu].text is missing or "
                                     "not a string",
                                     message_index, i);
            goto cleanup;
        }
        if (i > 0) {
            quill__strbuf_append_char(&text, '\n');
        }
        quill__strbuf_append(&text, json_object_get_string(part_text),
                             (size_t)json_object_get_string_len(part_text));
    }
    if (text.is_failed) {
        status = quill_error_set(QUILL_ERR_NOMEM,
                                 "chat messages: out of memory joining "
                                 "messages[%zu].content",
                                 message_index);
        goto cleanup;
    }
    if (keep_parts) {
        *out = json_object_get(parts);
    } else {
        *out = json_object_new_string_len(text.data != NULL ? text.data : "", (int)text.length);
        if (*out == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "chat messages: out of memory");
        }
    }

cleanup:
    quill__strbuf_release(&text);
    return status;
}

static quill_status normalize_tool_calls(struct json_object *tool_calls, size_t message_index,
                                         struct json_object **out) {
    *out = NULL;
    quill_status status = QUILL_OK;
    struct json_object *result = json_object_new_array();
    if (result == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "chat messages: out of memory");
    }
    size_t n_calls = json_object_array_length(tool_calls);
    for (size_t i = 0; i < n_calls; i++) {
        struct json_object *call = json_object_array_get_idx(tool_calls, i);
        struct json_object *arguments = NULL;
        struct json_object *function = member_of_type(call, "function", json_type_object);
        if (function == NULL) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].tool_calls[%zu] needs a "
                                     "'function' object",
                                     message_index, i);
            goto cleanup;
        }
        if (member_of_type(function, "name", json_type_string) == NULL) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].tool_calls[%zu].function.name "
                                     "is missing or not a string",
                                     message_index, i);
            goto cleanup;
        }
        struct json_object *parsed = NULL;
        if (json_object_object_get_ex(function, "arguments", &arguments) &&
            json_object_is_type(arguments, json_type_string)) {
            parsed = json_tokener_parse(json_object_get_string(arguments));
            if (!json_object_is_type(parsed, json_type_object)) {
                json_object_put(parsed);
                status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                         "chat messages: messages[%zu].tool_calls[%zu].function."
                                         "arguments is not a JSON object string",
                                         message_index, i);
                goto cleanup;
            }
        } else if (arguments != NULL && !json_object_is_type(arguments, json_type_object)) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].tool_calls[%zu].function."
                                     "arguments must be an object or a JSON string",
                                     message_index, i);
            goto cleanup;
        }

        /* Copy the call, replacing only function.arguments. */
        struct json_object *new_call = json_object_new_object();
        struct json_object *new_function = json_object_new_object();
        if (new_call == NULL || new_function == NULL) {
            json_object_put(new_call);
            json_object_put(new_function);
            json_object_put(parsed);
            status = quill_error_set(QUILL_ERR_NOMEM, "chat messages: out of memory");
            goto cleanup;
        }
        json_object_object_foreach(call, call_key, call_value) {
            if (strcmp(call_key, "function") != 0) {
                json_object_object_add(new_call, call_key, json_object_get(call_value));
            }
        }
        json_object_object_foreach(function, function_key, function_value) {
            if (strcmp(function_key, "arguments") == 0 && parsed != NULL) {
                json_object_object_add(new_function, function_key, parsed);
                parsed = NULL;
            } else {
                json_object_object_add(new_function, function_key, json_object_get(function_value));
            }
        }
        json_object_object_add(new_call, "function", new_function);
        json_object_array_add(result, new_call);
    }
    *out = result;
    result = NULL;

cleanup:
    json_object_put(result);
    return status;
}

static quill_status normalize_message(struct json_object *message, size_t index,
                                      bool keep_content_parts, struct json_object **out) {
    *out = NULL;
    quill_status status = QUILL_OK;
    struct json_object *role = NULL;
    struct json_object *content = NULL;
    struct json_object *tool_calls = NULL;
    struct json_object *new_content = NULL;
    struct json_object *new_tool_calls = NULL;
    struct json_object *result = NULL;

    if (!json_object_is_type(message, json_type_object)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat messages: messages[%zu] must be an object", index);
    }
    role = member_of_type(message, "role", json_type_string);
    if (role == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat messages: messages[%zu].role is missing or not a string",
                               index);
    }
    const char *role_name = json_object_get_string(role);
    if (!is_known_role(role_name)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "chat messages: messages[%zu].role '%s' is not one of system, "
                               "developer, user, assistant, tool",
                               index, role_name);
    }
    bool is_assistant = strcmp(role_name, "assistant") == 0;
    bool has_content = json_object_object_get_ex(message, "content", &content);
    bool has_tool_calls =
        json_object_object_get_ex(message, "tool_calls", &tool_calls) && tool_calls != NULL;

    /* Tool calls: only assistants make them. */
    if (has_tool_calls) {
        if (!is_assistant || !json_object_is_type(tool_calls, json_type_array)) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "chat messages: messages[%zu].tool_calls must be an array on an "
                                   "assistant message",
                                   index);
        }
        status = normalize_tool_calls(tool_calls, index, &new_tool_calls);
        if (status != QUILL_OK) {
            goto cleanup;
        }
    }

    /* Content: a string, an array of text parts, or null on an assistant with tool calls. */
    if (!has_content || content == NULL) {
        if (!(is_assistant && has_tool_calls)) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].content is missing; only an "
                                     "assistant message with tool_calls may omit it",
                                     index);
            goto cleanup;
        }
    } else if (json_object_is_type(content, json_type_array)) {
        status = normalize_parts(content, index, keep_content_parts, &new_content);
        if (status != QUILL_OK) {
            goto cleanup;
        }
    } else if (!json_object_is_type(content, json_type_string)) {
        status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                 "chat messages: messages[%zu].content must be a string or an "
                                 "array of text parts",
                                 index);
        goto cleanup;
    }
    if (strcmp(role_name, "tool") == 0) {
        struct json_object *tool_call_id = NULL;
        if (json_object_object_get_ex(message, "tool_call_id", &tool_call_id) &&
            !json_object_is_type(tool_call_id, json_type_string)) {
            status = quill_error_set(QUILL_ERR_INVALID_ARG,
                                     "chat messages: messages[%zu].tool_call_id must be a string",
                                     index);
            goto cleanup;
        }
    }

    /* Build the normalized copy in the input's key order. */
    result = json_object_new_object();
    if (result == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "chat messages: out of memory");
        goto cleanup;
    }
    bool is_content_written = false;
    json_object_object_foreach(message, key, value) {
        if (strcmp(key, "role") == 0) {
            const char *mapped = strcmp(role_name, "developer") == 0 ? "system" : role_name;
            json_object_object_add(result, key, json_object_new_string(mapped));
        } else if (strcmp(key, "content") == 0) {
            json_object_object_add(result, key,
                                   new_content != NULL ? json_object_get(new_content)
                                                       : json_object_get(value));
            is_content_written = true;
        } else if (strcmp(key, "tool_calls") == 0 && new_tool_calls != NULL) {
            json_object_object_add(result, key, json_object_get(new_tool_calls));
        } else {
            json_object_object_add(result, key, json_object_get(value));
        }
    }
    if (!is_content_written) {
        json_object_object_add(result, "content", NULL);
    }
    *out = result;
    result = NULL;

cleanup:
    json_object_put(result);
    json_object_put(new_content);
    json_object_put(new_tool_calls);
    return status;
}

quill_status quill_chat_messages_normalize(struct json_object *messages, bool keep_content_parts,
                                           struct json_object **out) {
    if (out == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "chat messages: out must not be NULL");
    }
    *out = NULL;
    if (!json_object_is_type(messages, json_type_array)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "chat messages: messages must be an array");
    }
    quill_status status = QUILL_OK;
    struct json_object *result = json_object_new_array();
    if (result == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "chat messages: out of memory");
    }
    size_t n_messages = json_object_array_length(messages);
    for (size_t i = 0; i < n_messages; i++) {
        struct json_object *normalized = NULL;
        status = normalize_message(json_object_array_get_idx(messages, i), i, keep_content_parts,
                                   &normalized);
        if (status != QUILL_OK) {
            goto cleanup;
        }
        json_object_array_add(result, normalized);
    }
    *out = result;
    result = NULL;

cleanup:
    json_object_put(result);
    return status;
}
