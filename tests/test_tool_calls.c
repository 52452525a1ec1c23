/*
 * Tests of the tool-call parser. They cover format detection, each format's calls, several
 * calls, content before and after calls, and malformed JSON and unknown names staying content.
 * The streaming hold-back is tested by feeding every reply split at each byte position and one
 * byte at a time.
 */
#include "test_support.h"

#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "base/strbuf.h"
#include "quill/chat.h"
#include "server/tool_calls.h"

#define HERMES_WEATHER                                                                     \
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n" \
    "</tool_call>"
#define HERMES_TIME "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"

/* The parsed result of one reply. */
typedef struct parsed_reply {
    quill_tool_call_parser parser;
    quill_strbuf content;
} parsed_reply;

static struct json_object *weather_and_time_tools(void) {
    const char *json = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                       "\"parameters\":{\"type\":\"object\"}}},"
                       "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]";
    struct json_object *tools = json_tokener_parse(json);
    assert_non_null(tools);
    return tools;
}

/* Parses text fed in pieces that end at the offsets in splits (ascending), then finishes. */
static void parse_split(parsed_reply *reply, quill_tool_call_format format,
                        struct json_object *tools, bool is_parallel, const char *text,
                        const size_t *splits, size_t n_splits) {
    quill__tool_call_parser_init(&reply->parser, format, tools, "test", is_parallel);
    quill__strbuf_init(&reply->content);
    size_t n_text = strlen(text);
    size_t from = 0;
    for (size_t i = 0; i <= n_splits; i++) {
        size_t to = i < n_splits ? splits[i] : n_text;
        assert_int_equal(
            quill__tool_call_parser_feed(&reply->parser, text + from, to - from, &reply->content),
            QUILL_OK);
        from = to;
    }
    assert_int_equal(quill__tool_call_parser_finish(&reply->parser, &reply->content), QUILL_OK);
}

static void parse_whole(parsed_reply *reply, quill_tool_call_format format,
                        struct json_object *tools, const char *text) {
    parse_split(reply, format, tools, true, text, NULL, 0);
}

static const char *content_of(const parsed_reply *reply) {
    return reply->content.data != NULL ? reply->content.data : "";
}

static void reply_release(parsed_reply *reply) {
    quill__tool_call_parser_release(&reply->parser);
    quill__strbuf_release(&reply->content);
}

/* Parses text whole and checks that it yields no call and comes back as content unchanged. */
static void assert_stays_content(quill_tool_call_format format, struct json_object *tools,
                                 const char *text) {
    parsed_reply reply;
    parse_whole(&reply, format, tools, text);
    assert_int_equal(reply.parser.n_calls, 0);
    assert_string_equal(content_of(&reply), text);
    reply_release(&reply);
}

/* Checks that feeding text split at every byte position, and one byte at a time, gives the
 * same content and calls as feeding it whole. The content released after each piece must be a
 * prefix of the final content, so text that becomes a call is never streamed. */
static void check_every_split(quill_tool_call_format format, const char *text) {
    struct json_object *tools = weather_and_time_tools();
    parsed_reply whole;
    parse_whole(&whole, format, tools, text);
    size_t n_text = strlen(text);

    for (size_t split = 0; split <= n_text; split++) {
        parsed_reply pieces;
        parse_split(&pieces, format, tools, true, text, &split, 1);
        assert_string_equal(content_of(&pieces), content_of(&whole));
        assert_int_equal(pieces.parser.n_calls, whole.parser.n_calls);
        for (size_t i = 0; i < whole.parser.n_calls; i++) {
            assert_string_equal(pieces.parser.calls[i].name, whole.parser.calls[i].name);
            assert_string_equal(pieces.parser.calls[i].arguments,
                                whole.parser.calls[i].arguments);
            assert_string_equal(pieces.parser.calls[i].id, whole.parser.calls[i].id);
        }
        reply_release(&pieces);
    }

    quill_tool_call_parser parser;
    quill_strbuf content;
    quill__tool_call_parser_init(&parser, format, tools, "test", true);
    quill__strbuf_init(&content);
    const char *final_content = content_of(&whole);
    for (size_t i = 0; i < n_text; i++) {
        assert_int_equal(quill__tool_call_parser_feed(&parser, text + i, 1, &content), QUILL_OK);
        assert_true(content.length <= strlen(final_content));
        assert_true(content.length == 0 ||
                    memcmp(content.data, final_content, content.length) == 0);
        assert_true(parser.n_calls <= whole.parser.n_calls);
    }
    assert_int_equal(quill__tool_call_parser_finish(&parser, &content), QUILL_OK);
    assert_string_equal(content.data != NULL ? content.data : "", final_content);
    assert_int_equal(parser.n_calls, whole.parser.n_calls);
    quill__tool_call_parser_release(&parser);
    quill__strbuf_release(&content);

    reply_release(&whole);
    json_object_put(tools);
}

static void test_format_detect_markers(void **state) {
    (void)state;
    assert_int_equal(quill__tool_call_format_detect("{{ '<tool_call>\\n' }}{{ tools }}"),
                     QUILL_TOOL_CALL_FORMAT_HERMES);
    assert_int_equal(quill__tool_call_format_detect("{{ '[TOOL_CALLS]' }}"),
                     QUILL_TOOL_CALL_FORMAT_MISTRAL);
    assert_int_equal(quill__tool_call_format_detect(
                         "<|start_header_id|>ipython<|end_header_id|>{{ '<|python_tag|>' }}"),
                     QUILL_TOOL_CALL_FORMAT_LLAMA3);
    assert_int_equal(quill__tool_call_format_detect("<|start_header_id|>user<|end_header_id|>"),
                     QUILL_TOOL_CALL_FORMAT_NONE);
    /* The default ChatML writes earlier calls as <tool_call> blocks, so it parses them too. */
    assert_int_equal(quill__tool_call_format_detect(quill_chat_default_template()),
                     QUILL_TOOL_CALL_FORMAT_HERMES);
    assert_int_equal(quill__tool_call_format_detect(NULL), QUILL_TOOL_CALL_FORMAT_NONE);
}

static void test_hermes_content_then_call(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools, "Let me check.\n" HERMES_WEATHER);
    assert_string_equal(content_of(&reply), "Let me check.");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(reply.parser.calls[0].name, "get_weather");
    assert_string_equal(reply.parser.calls[0].arguments, "{\"city\":\"Paris\"}");
    assert_string_equal(reply.parser.calls[0].id, "call_test_0");
    reply_release(&reply);
    json_object_put(tools);
}

static void test_hermes_several_calls(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools,
                HERMES_WEATHER "\n" HERMES_TIME "\n");
    assert_string_equal(content_of(&reply), "");
    assert_int_equal(reply.parser.n_calls, 2);
    assert_string_equal(reply.parser.calls[0].name, "get_weather");
    assert_string_equal(reply.parser.calls[1].name, "get_time");
    assert_string_equal(reply.parser.calls[1].arguments, "{}");
    assert_string_equal(reply.parser.calls[1].id, "call_test_1");
    reply_release(&reply);
    json_object_put(tools);
}

static void test_hermes_parallel_off_keeps_first(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_split(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools, false, HERMES_TIME HERMES_WEATHER,
                NULL, 0);
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(reply.parser.calls[0].name, "get_time");
    assert_string_equal(content_of(&reply), "");
    reply_release(&reply);
    json_object_put(tools);
}

static void test_hermes_malformed_json_stays_content(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    assert_stays_content(QUILL_TOOL_CALL_FORMAT_HERMES, tools,
                         "A<tool_call>{\"name\": \"get_time\", \"arguments\": {</tool_call>B");
    json_object_put(tools);
}

static void test_hermes_unknown_name_stays_content(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    const char *bad = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools, HERMES_TIME "\nand " "x");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(content_of(&reply), "and x");
    reply_release(&reply);

    assert_stays_content(QUILL_TOOL_CALL_FORMAT_HERMES, tools, bad);
    json_object_put(tools);
}

static void test_hermes_unclosed_block(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools,
                "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(content_of(&reply), "");
    reply_release(&reply);

    assert_stays_content(QUILL_TOOL_CALL_FORMAT_HERMES, tools,
                         "Hi <tool_call>\n{\"name\": \"get_time\", \"argu");
    json_object_put(tools);
}

static void test_hermes_text_without_calls(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    assert_stays_content(QUILL_TOOL_CALL_FORMAT_HERMES, tools,
                         "  Use <b>bold</b> and a <tool_ tag.\n");
    json_object_put(tools);
}

static void test_llama3_whole_reply_call(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_LLAMA3, tools,
                "\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(reply.parser.calls[0].arguments, "{\"city\":\"Oslo\"}");
    assert_string_equal(content_of(&reply), "");
    reply_release(&reply);

    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_LLAMA3, tools,
                "<|python_tag|>{\"name\": \"get_time\", \"arguments\": {}}");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(reply.parser.calls[0].name, "get_time");
    reply_release(&reply);
    json_object_put(tools);
}

static void test_llama3_not_a_call_stays_content(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    const char *texts[] = {
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": ",
        "{\"answer\": 42}",
        "{\"name\": \"unknown\", \"parameters\": {}}",
        "The weather is {\"name\": \"get_time\"}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        assert_stays_content(QUILL_TOOL_CALL_FORMAT_LLAMA3, tools, texts[i]);
    }
    json_object_put(tools);
}

static void test_mistral_calls_array(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_MISTRAL, tools,
                "Checking.[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                "\"Rome\"}}, {\"name\": \"get_time\", \"arguments\": {}}]");
    assert_string_equal(content_of(&reply), "Checking.");
    assert_int_equal(reply.parser.n_calls, 2);
    assert_string_equal(reply.parser.calls[0].arguments, "{\"city\":\"Rome\"}");
    assert_string_equal(reply.parser.calls[1].name, "get_time");
    reply_release(&reply);

    /* Without the marker, which the detokenizer drops when it is a control token. */
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_MISTRAL, tools,
                "[{\"name\": \"get_time\", \"arguments\": {}}]");
    assert_int_equal(reply.parser.n_calls, 1);
    assert_string_equal(content_of(&reply), "");
    reply_release(&reply);

    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_MISTRAL, tools,
                "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}]");
    assert_int_equal(reply.parser.n_calls, 1);
    reply_release(&reply);
    json_object_put(tools);
}

static void test_mistral_bad_array_stays_content(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    const char *texts[] = {
        "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"nope\"}]",
        "[1, 2, 3]",
        "[TOOL_CALLS]{\"name\": \"get_time\", \"arguments\": {}}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        assert_stays_content(QUILL_TOOL_CALL_FORMAT_MISTRAL, tools, texts[i]);
    }
    json_object_put(tools);
}

static void test_format_none_passes_text(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_NONE, tools, HERMES_TIME);
    assert_string_equal(content_of(&reply), HERMES_TIME);
    assert_int_equal(reply.parser.n_calls, 0);
    reply_release(&reply);
    json_object_put(tools);
}

static void test_stream_every_split_point(void **state) {
    (void)state;
    check_every_split(QUILL_TOOL_CALL_FORMAT_HERMES, "Let me check.\n" HERMES_WEATHER);
    check_every_split(QUILL_TOOL_CALL_FORMAT_HERMES, HERMES_WEATHER "\n" HERMES_TIME "\nDone.");
    check_every_split(QUILL_TOOL_CALL_FORMAT_HERMES,
                      "a <tool_call>{\"name\": 1}</tool_call> b " HERMES_TIME);
    check_every_split(QUILL_TOOL_CALL_FORMAT_HERMES, "<tool_cal> is not a tag \xc3\xa9\n");
    check_every_split(QUILL_TOOL_CALL_FORMAT_LLAMA3,
                      " {\"name\": \"get_time\", \"parameters\": {}}");
    check_every_split(QUILL_TOOL_CALL_FORMAT_LLAMA3, "Sure <|python_tag|>{\"name\": \"get_time\"}");
    check_every_split(QUILL_TOOL_CALL_FORMAT_LLAMA3, "{not json} at all");
    check_every_split(QUILL_TOOL_CALL_FORMAT_MISTRAL,
                      "Ok [TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}]");
    check_every_split(QUILL_TOOL_CALL_FORMAT_MISTRAL, "[TOOL_CALLS] broken [");
}

/* Returns the next value of a xorshift64 generator, so the random replies are the same on
 * every run. */
static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static void test_stream_random_replies(void **state) {
    (void)state;
    /* Fragments that make up replies close to the formats' edges. */
    static const char *const fragments[] = {
        "<tool_call>", "</tool_call>", "{\"name\": \"get_time\", \"arguments\": {}}",
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", "{", "}", "[",
        "]", "[TOOL_CALLS]", "<|python_tag|>", " ", "\n", "a", "\"", "<tool_", "</tool",
        "\xc3\xa9", ";", ",", HERMES_TIME, HERMES_WEATHER,
        "[{\"name\": \"get_time\", \"arguments\": {}}]",
    };
    static const quill_tool_call_format formats[] = {
        QUILL_TOOL_CALL_FORMAT_HERMES,
        QUILL_TOOL_CALL_FORMAT_LLAMA3,
        QUILL_TOOL_CALL_FORMAT_MISTRAL,
    };
    size_t n_fragments = sizeof(fragments) / sizeof(fragments[0]);
    struct json_object *tools = weather_and_time_tools();
    uint64_t random_state = 0x9e3779b97f4a7c15ULL;
    int n_rounds_with_calls = 0;

    for (int round = 0; round < 600; round++) {
        char text[1024] = "";
        int n_pieces = 1 + (int)(next_random(&random_state) % 12);
        for (int i = 0; i < n_pieces; i++) {
            const char *fragment = fragments[next_random(&random_state) % n_fragments];
            strncat(text, fragment, sizeof(text) - strlen(text) - 1);
        }
        size_t n_text = strlen(text);
        quill_tool_call_format format = formats[round % 3];

        parsed_reply whole;
        parse_whole(&whole, format, tools, text);
        /* A reply without calls comes back byte for byte. */
        if (whole.parser.n_calls == 0) {
            assert_string_equal(content_of(&whole), text);
        }
        n_rounds_with_calls += whole.parser.n_calls > 0 ? 1 : 0;

        size_t splits[3];
        for (size_t i = 0; i < 3; i++) {
            splits[i] = (size_t)(next_random(&random_state) % (n_text + 1));
        }
        for (size_t i = 1; i < 3; i++) {
            for (size_t j = i; j > 0 && splits[j - 1] > splits[j]; j--) {
                size_t swap = splits[j];
                splits[j] = splits[j - 1];
                splits[j - 1] = swap;
            }
        }
        parsed_reply pieces;
        parse_split(&pieces, format, tools, true, text, splits, 3);
        assert_string_equal(content_of(&pieces), content_of(&whole));
        assert_int_equal(pieces.parser.n_calls, whole.parser.n_calls);
        reply_release(&pieces);
        reply_release(&whole);
    }
    /* The fragments make calls often enough that both outcomes are exercised. */
    assert_true(n_rounds_with_calls >= 60);
    json_object_put(tools);
}

static void test_stream_releases_content_early(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    quill_tool_call_parser parser;
    quill_strbuf content;
    quill__tool_call_parser_init(&parser, QUILL_TOOL_CALL_FORMAT_HERMES, tools, "s", true);
    quill__strbuf_init(&content);

    /* Plain text goes out at once, but a tail that may open a call waits. */
    assert_int_equal(quill__tool_call_parser_feed(&parser, "Hello <tool", 11, &content), QUILL_OK);
    assert_int_equal(content.length, 5);
    assert_memory_equal(content.data, "Hello", 5);
    assert_int_equal(quill__tool_call_parser_feed(&parser, "box>", 4, &content), QUILL_OK);
    assert_string_equal(content.data, "Hello <toolbox>");

    /* A call appears as soon as its close tag arrives. */
    const char *call = HERMES_TIME;
    assert_int_equal(quill__tool_call_parser_feed(&parser, call, strlen(call), &content),
                     QUILL_OK);
    assert_int_equal(parser.n_calls, 1);
    assert_string_equal(content.data, "Hello <toolbox>");
    assert_int_equal(quill__tool_call_parser_finish(&parser, &content), QUILL_OK);
    assert_string_equal(content.data, "Hello <toolbox>");

    quill__tool_call_parser_release(&parser);
    quill__strbuf_release(&content);
    json_object_put(tools);
}

static void test_calls_json_shapes(void **state) {
    (void)state;
    struct json_object *tools = weather_and_time_tools();
    parsed_reply reply;
    parse_whole(&reply, QUILL_TOOL_CALL_FORMAT_HERMES, tools, HERMES_WEATHER);
    quill_strbuf json;
    quill__strbuf_init(&json);
    assert_int_equal(quill__tool_calls_append_json(&json, reply.parser.calls, 0, 1, false),
                     QUILL_OK);
    assert_string_equal(json.data, "[{\"id\":\"call_test_0\",\"type\":\"function\",\"function\":"
                                   "{\"name\":\"get_weather\",\"arguments\":"
                                   "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]");
    quill__strbuf_clear(&json);
    assert_int_equal(quill__tool_calls_append_json(&json, reply.parser.calls, 0, 1, true),
                     QUILL_OK);
    assert_non_null(strstr(json.data, "[{\"index\":0,\"id\":\"call_test_0\""));
    quill__strbuf_release(&json);
    reply_release(&reply);
    json_object_put(tools);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_detect_markers),
        cmocka_unit_test(test_hermes_content_then_call),
        cmocka_unit_test(test_hermes_several_calls),
        cmocka_unit_test(test_hermes_parallel_off_keeps_first),
        cmocka_unit_test(test_hermes_malformed_json_stays_content),
        cmocka_unit_test(test_hermes_unknown_name_stays_content),
        cmocka_unit_test(test_hermes_unclosed_block),
        cmocka_unit_test(test_hermes_text_without_calls),
        cmocka_unit_test(test_llama3_whole_reply_call),
        cmocka_unit_test(test_llama3_not_a_call_stays_content),
        cmocka_unit_test(test_mistral_calls_array),
        cmocka_unit_test(test_mistral_bad_array_stays_content),
        cmocka_unit_test(test_format_none_passes_text),
        cmocka_unit_test(test_stream_every_split_point),
        cmocka_unit_test(test_stream_random_replies),
        cmocka_unit_test(test_stream_releases_content_early),
        cmocka_unit_test(test_calls_json_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
