/*
 * Golden test of the chat template engine against real model templates: renders every
 * template x conversation of chat_templates/cases.json and compares with the outputs that
 * Python Jinja2 (as transformers configures it) produced, byte for byte. Where the reference
 * failed, the engine must fail too, and a raise_exception message must match exactly. Prints
 * the pass count per template. Skips (exit 77) when the fixture folder is absent.
 */
#include "test_support.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quill/chat.h"

static char *data_dir;

static char *join_path(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *path = malloc(n);
    snprintf(path, n, "%s/%s", a, b);
    return path;
}

static struct json_object *read_json(const char *path) {
    size_t n_bytes = 0;
    char *text = quill_test_read_file(path, &n_bytes);
    if (text == NULL) {
        return NULL;
    }
    struct json_object *json = json_tokener_parse(text);
    free(text);
    return json;
}

static int64_t fixed_now(void) {
    /* 2026-01-15 00:00:00, the clock the reference renders used. */
    struct tm tm = {0};
    tm.tm_year = 2026 - 1900;
    tm.tm_mon = 0;
    tm.tm_mday = 15;
    return (int64_t)timegm(&tm);
}

/* Checks that segments cover text in order without gaps. */
static bool segments_cover(const quill_chat_rendered *rendered) {
    size_t offset = 0;
    for (size_t i = 0; i < rendered->n_segments; i++) {
        if (rendered->segments[i].offset != offset || rendered->segments[i].n_bytes == 0) {
            return false;
        }
        offset += rendered->segments[i].n_bytes;
    }
    return offset == rendered->n_bytes;
}

typedef struct case_result {
    bool is_pass;
    char detail[2600];
} case_result;

static case_result run_case(const char *template_name, struct json_object *template_vars,
                            struct json_object *test_case, struct json_object *entry) {
    case_result result = {.is_pass = false};
    char relative[512];
    snprintf(relative, sizeof(relative), "%s.jinja", template_name);
    char *template_path = join_path(data_dir, relative);
    size_t n_source = 0;
    char *source = quill_test_read_file(template_path, &n_source);
    free(template_path);
    if (source == NULL) {
        snprintf(result.detail, sizeof(result.detail), "cannot read %s", relative);
        return result;
    }

    quill_chat_template *chat_template = NULL;
    quill_status status = quill_chat_template_create(source, n_source, &chat_template);
    free(source);
    if (status != QUILL_OK) {
        snprintf(result.detail, sizeof(result.detail), "parse failed: %s", quill_error_message());
        return result;
    }

    /* Extra variables: the case's vars after the template's bos/eos. */
    struct json_object *extra = NULL;
    struct json_object *case_vars = NULL;
    if (json_object_object_get_ex(test_case, "vars", &case_vars)) {
        extra = case_vars;
    }
    struct json_object *bos = NULL;
    struct json_object *eos = NULL;
    quill_chat_render_params params = quill_chat_render_params_default();
    struct json_object *messages = NULL;
    struct json_object *tools = NULL;
    struct json_object *add_generation_prompt = NULL;
    json_object_object_get_ex(test_case, "messages", &messages);
    json_object_object_get_ex(test_case, "tools", &tools);
    json_object_object_get_ex(test_case, "add_generation_prompt", &add_generation_prompt);
    if (json_object_object_get_ex(template_vars, "bos_token", &bos)) {
        params.bos_token = json_object_get_string(bos);
    }
    if (json_object_object_get_ex(template_vars, "eos_token", &eos)) {
        params.eos_token = json_object_get_string(eos);
    }
    params.messages = messages;
    params.tools = tools;
    params.extra_vars = extra;
    params.add_generation_prompt = json_object_get_boolean(add_generation_prompt);
    params.now_unix_seconds = fixed_now();

    quill_chat_rendered rendered;
    status = quill_chat_template_render(chat_template, &params, &rendered);
    char message[1024];
    snprintf(message, sizeof(message), "%s", quill_error_message());
    quill_chat_template_destroy(chat_template);

    const char *file = json_object_get_string(json_object_object_get(entry, "file"));
    const char *expected_status = json_object_get_string(json_object_object_get(entry, "status"));
    char expected_relative[512];
    snprintf(expected_relative, sizeof(expected_relative), "expected/%s", file);
    char *expected_path = join_path(data_dir, expected_relative);
    size_t n_expected = 0;
    char *expected = quill_test_read_file(expected_path, &n_expected);
    free(expected_path);
    if (expected == NULL) {
        snprintf(result.detail, sizeof(result.detail), "cannot read %s", expected_relative);
        quill_chat_rendered_release(&rendered);
        return result;
    }

    if (strcmp(expected_status, "ok") == 0) {
        if (status != QUILL_OK) {
            snprintf(result.detail, sizeof(result.detail), "render failed: %s", message);
        } else if (rendered.n_bytes != n_expected ||
                   memcmp(rendered.text, expected, n_expected) != 0) {
            size_t at = 0;
            while (at < n_expected && at < rendered.n_bytes && rendered.text[at] == expected[at]) {
                at++;
            }
            snprintf(result.detail, sizeof(result.detail),
                     "output differs at byte %zu (got %zu bytes, expected %zu): got '%.40s' "
                     "expected '%.40s'",
                     at, rendered.n_bytes, n_expected, rendered.text + at, expected + at);
        } else if (!segments_cover(&rendered)) {
            snprintf(result.detail, sizeof(result.detail), "segments do not cover the output");
        } else {
            result.is_pass = true;
        }
    } else {
        struct json_object *kind = NULL;
        json_object_object_get_ex(entry, "error_kind", &kind);
        bool is_raise =
            kind != NULL && strcmp(json_object_get_string(kind), "raise_exception") == 0;
        if (status == QUILL_OK) {
            snprintf(result.detail, sizeof(result.detail), "rendered but the reference failed: %s",
                     expected);
        } else if (is_raise && strcmp(message, expected) != 0) {
            snprintf(result.detail, sizeof(result.detail), "message '%s', expected '%s'", message,
                     expected);
        } else {
            result.is_pass = true;
        }
    }
    free(expected);
    quill_chat_rendered_release(&rendered);
    return result;
}

static void test_golden_all_outputs_match(void **state) {
    (void)state;
    char *cases_path = join_path(data_dir, "cases.json");
    char *index_path = join_path(data_dir, "expected/index.json");
    struct json_object *cases = read_json(cases_path);
    struct json_object *index = read_json(index_path);
    free(cases_path);
    free(index_path);
    assert_non_null(cases);
    assert_non_null(index);

    struct json_object *templates = json_object_object_get(cases, "templates");
    struct json_object *case_list = json_object_object_get(cases, "cases");
    struct json_object *outputs = json_object_object_get(index, "outputs");
    size_t n_total = 0;
    size_t n_passed_total = 0;
    json_object_object_foreach(templates, template_name, template_entry) {
        struct json_object *template_vars = json_object_object_get(template_entry, "vars");
        size_t n_cases = 0;
        size_t n_passed = 0;
        for (size_t i = 0; i < json_object_array_length(outputs); i++) {
            struct json_object *entry = json_object_array_get_idx(outputs, i);
            if (strcmp(json_object_get_string(json_object_object_get(entry, "template")),
                       template_name) != 0) {
                continue;
            }
            const char *case_id = json_object_get_string(json_object_object_get(entry, "case"));
            struct json_object *test_case = NULL;
            for (size_t j = 0; j < json_object_array_length(case_list); j++) {
                struct json_object *candidate = json_object_array_get_idx(case_list, j);
                if (strcmp(json_object_get_string(json_object_object_get(candidate, "id")),
                           case_id) == 0) {
                    test_case = candidate;
                }
            }
            assert_non_null(test_case);
            case_result result = run_case(template_name, template_vars, test_case, entry);
            n_cases++;
            if (result.is_pass) {
                n_passed++;
            } else {
                printf("FAIL %s / %s: %s\n", template_name, case_id, result.detail);
            }
        }
        printf("%-45s %zu/%zu passed\n", template_name, n_passed, n_cases);
        n_total += n_cases;
        n_passed_total += n_passed;
    }
    printf("all templates: %zu/%zu passed\n", n_passed_total, n_total);
    json_object_put(cases);
    json_object_put(index);
    assert_int_equal(n_total, 120);
    assert_int_equal(n_passed_total, n_total);
}

int main(void) {
    char *cases = quill_test_data_path_or_skip("testdata/chat_templates/cases.json");
    free(cases);
    data_dir = quill_test_data_path_or_skip("testdata/chat_templates");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_all_outputs_match),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    free(data_dir);
    return failures;
}
