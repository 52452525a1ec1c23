/*
 * Entry functions of the fuzz targets (see fuzz_entries.h). Each one feeds its input to the
 * library's public parser, then walks whatever the parser returned so that a bad offset or
 * length inside the result is read and the sanitizers see it. Inputs that the parser rejects
 * end there.
 *
 * The tokenizer target's vocabularies are built once under pthread_once with the GGUF writer
 * and are read-only afterwards. That is the only shared state.
 */
#include "fuzz_entries.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gguf/gguf_writer.h"
#include "quill/chat.h"
#include "quill/gguf.h"
#include "quill/status.h"
#include "quill/tokenizer.h"
#include "server/openai_request.h"

enum {
    MAX_ARRAY_ITEMS_WALKED = 1 << 16, /* per array: bounds the walk of a huge vocabulary */
    MAX_ARRAY_DEPTH = 8,              /* nested arrays walked */
    MAX_RENDER_BYTES = 256 << 10,     /* rendered prompt limit, small to keep runs fast */
    MAX_IDS_DECODED = 256,            /* token ids read from a tokenizer input */
    N_BUILTIN_VOCABS = 6,             /* vocabularies built in-process */
    N_VOCAB_SLOTS = 8,                /* selector values: builtins, then QUILL_FUZZ_VOCABS */
    MAX_PIECE_BYTES = 256,            /* buffer for one token's bytes */
    BYTE_TOKEN_COUNT = 256
};

/* The fixed conversation rendered by the chat and GGUF targets: every role, a tool call with
 * object arguments, a tool result and a last user turn. */
static const char chat_messages_json[] =
    "[{\"role\": \"system\", \"content\": \"You are terse.\"},"
    " {\"role\": \"user\", \"content\": \"Weather in Paris? <|im_start|>\"},"
    " {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"call_1\","
    "   \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    "   \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"12 C, rain\"},"
    " {\"role\": \"assistant\", \"content\": \"It rains, 12 C.\"},"
    " {\"role\": \"user\", \"content\": \"Thanks \\u00e9\\u4e2d\\ud83d\\ude00\"}]";

static const char chat_tools_json[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    " \"description\": \"Current weather\", \"parameters\": {\"type\": \"object\","
    " \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": {\"type\": \"integer\"}},"
    " \"required\": [\"city\"]}}}]";

static const char chat_extra_vars_json[] =
    "{\"enable_thinking\": false, \"date_string\": \"04 Dec 2026\"}";

/* The text encoded with a tokenizer loaded from a fuzzed GGUF file. */
static const char gguf_probe_text[] = "Hello world! <|im_end|> 12345 \xe4\xb8\xad\xf0\x9f\x98\x80";

/* Vocabularies of the tokenizer target, in selector order; NULL where one failed to build. */
static quill_tokenizer *fuzz_vocabs[N_VOCAB_SLOTS];
static pthread_once_t fuzz_vocabs_once = PTHREAD_ONCE_INIT;

/* ---- GGUF ---- */

/* Reads every element of an array, recursing into nested arrays. */
static double walk_array(const quill_gguf_array *array, int depth) {
    double sum = 0.0;
    uint64_t n_walked =
        array->n_items < MAX_ARRAY_ITEMS_WALKED ? array->n_items : MAX_ARRAY_ITEMS_WALKED;

    for (uint64_t i = 0; i < n_walked; i++) {
        switch (array->item_type) {
        case QUILL_GGUF_STRING: {
            const char *text = NULL;
            size_t n_bytes = 0;
            quill_gguf_array_string(array, i, &text, &n_bytes);
            if (n_bytes > 0) {
                sum += (unsigned char)text[0] + (unsigned char)text[n_bytes - 1];
            }
            break;
        }
        case QUILL_GGUF_ARRAY: {
            if (depth < MAX_ARRAY_DEPTH) {
                quill_gguf_array nested;
                quill_gguf_array_array(array, i, &nested);
                sum += walk_array(&nested, depth + 1);
            }
            break;
        }
        case QUILL_GGUF_FLOAT32:
        case QUILL_GGUF_FLOAT64:
            sum += quill_gguf_array_float(array, i);
            break;
        default:
            sum += (double)quill_gguf_array_int(array, i);
            break;
        }
    }
    return sum;
}

/* Reads every metadata value through the by-index and by-key getters. */
static double walk_metadata(const quill_gguf *file) {
    double sum = 0.0;
    int64_t n_kv = quill_gguf_n_kv(file);

    for (int64_t i = 0; i < n_kv; i++) {
        const char *key = quill_gguf_key(file, i);
        quill_gguf_value_type type = quill_gguf_kv_type(file, i);
        sum += (double)quill_gguf_find_key(file, key);

        if (type == QUILL_GGUF_STRING) {
            const char *text = NULL;
            size_t n_bytes = 0;
            if (quill_gguf_kv_string(file, i, &text, &n_bytes) == QUILL_OK && n_bytes > 0) {
                sum += (unsigned char)text[n_bytes - 1];
            }
        } else if (type == QUILL_GGUF_ARRAY) {
            quill_gguf_array array;
            if (quill_gguf_kv_array(file, i, &array) == QUILL_OK) {
                sum += walk_array(&array, 0);
            }
        } else {
            double number = 0.0;
            if (quill_gguf_kv_number(file, i, &number) == QUILL_OK) {
                sum += number;
            }
        }

        /* The typed getters convert or reject each type; their results are only summed. */
        uint32_t value_u32 = 0;
        int64_t value_i64 = 0;
        uint64_t value_u64 = 0;
        float value_f32 = 0.0f;
        double value_f64 = 0.0;
        bool value_bool = false;
        (void)quill_gguf_get_u32(file, key, &value_u32);
        (void)quill_gguf_get_i64(file, key, &value_i64);
        (void)quill_gguf_get_u64(file, key, &value_u64);
        (void)quill_gguf_get_f32(file, key, &value_f32);
        (void)quill_gguf_get_f64(file, key, &value_f64);
        (void)quill_gguf_get_bool(file, key, &value_bool);
        sum += (double)value_u32 + (double)value_i64 + (double)value_u64 + value_f32 + value_f64 +
               (value_bool ? 1.0 : 0.0);
    }
    return sum;
}

/* Reads each tensor's name and the first and last byte of its data. */
static double walk_tensors(const quill_gguf *file) {
    double sum = 0.0;
    int64_t n_tensors = quill_gguf_n_tensors(file);

    for (int64_t i = 0; i < n_tensors; i++) {
        const quill_gguf_tensor *tensor = quill_gguf_tensor_at(file, i);
        if (tensor == NULL) {
            continue;
        }
        const quill_gguf_tensor *found = quill_gguf_find_tensor(file, tensor->name);
        sum += found == tensor ? 1.0 : 0.0;
        for (int d = 0; d < tensor->n_dims && d < 4; d++) {
            sum += (double)tensor->ne[d];
        }
        if (tensor->n_bytes > 0) {
            const uint8_t *bytes = tensor->data;
            sum += bytes[0] + bytes[tensor->n_bytes - 1];
        }
    }
    return sum;
}

/* Encodes and decodes a fixed text with the file's tokenizer. */
static void probe_tokenizer(const quill_tokenizer *tokenizer) {
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;
    char *text = NULL;
    size_t n_text_bytes = 0;
    uint32_t flags = QUILL_TOKENIZE_ADD_SPECIAL | QUILL_TOKENIZE_PARSE_SPECIAL;

    if (quill_tokenizer_encode(tokenizer, gguf_probe_text, sizeof(gguf_probe_text) - 1, flags,
                               &tokens, &n_tokens) != QUILL_OK) {
        return;
    }
    if (quill_tokenizer_decode(tokenizer, tokens, n_tokens, true, &text, &n_text_bytes) ==
        QUILL_OK) {
        quill_text_free(text);
    }
    quill_tokens_free(tokens);
}

static void render_chat_template(const char *source, size_t n_bytes, bool is_tool_turn);

void quill_fuzz_gguf(const uint8_t *data, size_t n_bytes) {
    quill_gguf *file = NULL;
    quill_tokenizer *tokenizer = NULL;
    volatile double sink = 0.0;

    if (quill_gguf_open_memory(data, n_bytes, "fuzz.gguf", &file) != QUILL_OK) {
        return;
    }
    sink += (double)quill_gguf_version(file) + (double)quill_gguf_alignment(file) +
            (double)quill_gguf_file_bytes(file) + (double)strlen(quill_gguf_path(file));
    sink += walk_metadata(file);
    sink += walk_tensors(file);

    /* NOTE: quill_model_load reads only from a path, so model loading is not fuzzed here. */
    if (quill_tokenizer_load(file, &tokenizer) == QUILL_OK) {
        probe_tokenizer(tokenizer);
        quill_tokenizer_destroy(tokenizer);
    }

    const char *source = NULL;
    size_t n_source_bytes = 0;
    if (quill_gguf_get_string(file, "tokenizer.chat_template", &source, &n_source_bytes) ==
        QUILL_OK) {
        render_chat_template(source, n_source_bytes, false);
    }
    quill_gguf_close(file);
    (void)sink;
}

/* ---- chat templates ---- */

/* Parses source and renders the fixed conversation; with is_tool_turn the tools, the extra
 * variables and the generation prompt are passed as well. */
static void render_chat_template(const char *source, size_t n_bytes, bool is_tool_turn) {
    quill_chat_template *chat_template = NULL;
    json_object *messages = NULL;
    json_object *normalized = NULL;
    json_object *tools = NULL;
    json_object *extra_vars = NULL;

    if (quill_chat_template_create(source, n_bytes, &chat_template) != QUILL_OK) {
        goto cleanup;
    }
    messages = json_tokener_parse(chat_messages_json);
    tools = json_tokener_parse(chat_tools_json);
    extra_vars = json_tokener_parse(chat_extra_vars_json);
    if (messages == NULL || tools == NULL || extra_vars == NULL) {
        goto cleanup;
    }
    bool keeps_parts = quill_chat_template_uses_content_parts(chat_template);
    if (quill_chat_messages_normalize(messages, keeps_parts, &normalized) != QUILL_OK) {
        goto cleanup;
    }

    for (int pass = 0; pass < (is_tool_turn ? 2 : 1); pass++) {
        quill_chat_render_params params = quill_chat_render_params_default();
        params.messages = normalized;
        params.bos_token = "<s>";
        params.eos_token = "</s>";
        params.now_unix_seconds = 1796428800; /* 2026-12-04 00:00 UTC: renders repeat exactly */
        params.max_output_bytes = MAX_RENDER_BYTES;
        if (pass == 1) {
            params.tools = tools;
            params.extra_vars = extra_vars;
            params.add_generation_prompt = true;
        }

        quill_chat_rendered rendered = {0};
        if (quill_chat_template_render(chat_template, &params, &rendered) == QUILL_OK) {
            /* Segments must cover the text exactly; read each one's ends. */
            volatile unsigned sink = 0;
            for (size_t s = 0; s < rendered.n_segments; s++) {
                const quill_chat_segment *segment = &rendered.segments[s];
                if (segment->n_bytes > 0) {
                    sink += (unsigned char)rendered.text[segment->offset];
                    sink += (unsigned char)rendered.text[segment->offset + segment->n_bytes - 1];
                }
            }
            (void)sink;
        }
        quill_chat_rendered_release(&rendered);
    }

cleanup:
    json_object_put(extra_vars);
    json_object_put(tools);
    json_object_put(normalized);
    json_object_put(messages);
    quill_chat_template_destroy(chat_template);
}

void quill_fuzz_chat_template(const uint8_t *data, size_t n_bytes) {
    render_chat_template((const char *)data, n_bytes, true);
}

/* ---- tokenizer ---- */

/* Writes the text of GPT-2's byte-level character for byte b: printable Latin-1 bytes stand
 * for themselves, the other 68 are shifted to U+0100 and up, in byte order. */
static void byte_level_text(int b, char text[4]) {
    int codepoint = b;
    bool is_printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    if (!is_printable) {
        int n_before = 0;
        for (int other = 0; other < b; other++) {
            bool is_other_printable =
                (other >= 33 && other <= 126) || (other >= 161 && other <= 172) || (other >= 174);
            n_before += is_other_printable ? 0 : 1;
        }
        codepoint = 256 + n_before;
    }
    if (codepoint < 0x80) {
        text[0] = (char)codepoint;
        text[1] = '\0';
    } else {
        text[0] = (char)(0xc0 | (codepoint >> 6));
        text[1] = (char)(0x80 | (codepoint & 0x3f));
        text[2] = '\0';
    }
}

/* Loads a tokenizer from a writer's in-memory file; returns NULL when any step fails. Takes
 * ownership of writer, also on failure. */
static quill_tokenizer *load_from_writer(quill_gguf_writer *writer) {
    void *data = NULL;
    size_t n_bytes = 0;
    quill_gguf *file = NULL;
    quill_tokenizer *tokenizer = NULL;

    if (writer == NULL) {
        goto cleanup;
    }
    if (quill__gguf_writer_write_memory(writer, &data, &n_bytes) != QUILL_OK) {
        goto cleanup;
    }
    if (quill_gguf_open_memory(data, n_bytes, "fuzz-vocab.gguf", &file) != QUILL_OK) {
        goto cleanup;
    }
    if (quill_tokenizer_load(file, &tokenizer) != QUILL_OK) {
        tokenizer = NULL;
    }

cleanup:
    quill_gguf_close(file);
    quill__free(data);
    quill__gguf_writer_destroy(writer);
    return tokenizer;
}

/* A SentencePiece vocabulary: <unk>, <s>, </s>, then (with has_byte_tokens) <0x00>..<0xFF>,
 * then pieces that merge "hello world" and a control and a user-defined token. */
static quill_gguf_writer *spm_writer(bool has_byte_tokens) {
    static const char *const words[] = {
        "\xe2\x96\x81",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "\xe2\x96\x81h",
        "ll",
        "\xe2\x96\x81he",
        "llo",
        "\xe2\x96\x81hello",
        "\xe2\x96\x81w",
        "or",
        "\xe2\x96\x81wor",
        "\xe2\x96\x81world",
        "<|im_end|>",
        "<tool>",
        "\xe4\xb8\xad",
        "\xe2\x96\x81\xe2\x96\x81",
    };
    enum { N_WORDS = sizeof(words) / sizeof(words[0]) };
    const char *texts[3 + BYTE_TOKEN_COUNT + N_WORDS];
    float scores[3 + BYTE_TOKEN_COUNT + N_WORDS];
    int32_t kinds[3 + BYTE_TOKEN_COUNT + N_WORDS];
    char byte_texts[BYTE_TOKEN_COUNT][8];
    int32_t n_tokens = 0;
    quill_gguf_writer *writer = NULL;

    texts[n_tokens] = "<unk>";
    kinds[n_tokens++] = QUILL_TOKEN_UNKNOWN;
    texts[n_tokens] = "<s>";
    kinds[n_tokens++] = QUILL_TOKEN_CONTROL;
    texts[n_tokens] = "</s>";
    kinds[n_tokens++] = QUILL_TOKEN_CONTROL;
    for (int b = 0; has_byte_tokens && b < BYTE_TOKEN_COUNT; b++) {
        snprintf(byte_texts[b], sizeof(byte_texts[b]), "<0x%02X>", b);
        texts[n_tokens] = byte_texts[b];
        kinds[n_tokens++] = QUILL_TOKEN_BYTE;
    }
    for (int i = 0; i < N_WORDS; i++) {
        texts[n_tokens] = words[i];
        kinds[n_tokens++] = QUILL_TOKEN_NORMAL;
    }
    for (int32_t i = 0; i < n_tokens; i++) {
        /* Longer pieces score higher, so they merge first. */
        scores[i] = kinds[i] == QUILL_TOKEN_NORMAL ? (float)strlen(texts[i]) - 10.0f : 0.0f;
        if (strcmp(texts[i], "<|im_end|>") == 0) {
            kinds[i] = QUILL_TOKEN_CONTROL;
        } else if (strcmp(texts[i], "<tool>") == 0) {
            kinds[i] = QUILL_TOKEN_USER_DEFINED;
        }
    }

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "llama") != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts,
                                            (uint64_t)n_tokens) != QUILL_OK ||
        quill__gguf_writer_set_f32_array(writer, "tokenizer.ggml.scores", scores,
                                         (uint64_t)n_tokens) != QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds,
                                         (uint64_t)n_tokens) != QUILL_OK ||
        quill__gguf_writer_set_bool(writer, "tokenizer.ggml.add_eos_token", true) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* A byte-level BPE vocabulary: the 256 byte characters, a few merges, and control tokens. */
static quill_gguf_writer *bpe_writer(const char *pre) {
    static const char *const words[] = {
        "\304\240a", "ab",  "\304\240ab",       "\304\240t",     "he",           "\304\240the",
        "12",        "123", "\xc4\x8a\xc4\x8a", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    };
    static const char *const merges[] = {
        "\xc4\xa0 a",   "a b", "\304\240a b", "\xc4\xa0 t",        "h e",
        "\304\240t he", "1 2", "12 3",        "\xc4\x8a \xc4\x8a",
    };
    enum { N_WORDS = sizeof(words) / sizeof(words[0]) };
    enum { N_MERGES = sizeof(merges) / sizeof(merges[0]) };
    const char *texts[BYTE_TOKEN_COUNT + N_WORDS];
    int32_t kinds[BYTE_TOKEN_COUNT + N_WORDS];
    char byte_texts[BYTE_TOKEN_COUNT][4];
    int32_t n_tokens = 0;
    quill_gguf_writer *writer = NULL;

    for (int b = 0; b < BYTE_TOKEN_COUNT; b++) {
        byte_level_text(b, byte_texts[b]);
        texts[n_tokens] = byte_texts[b];
        kinds[n_tokens++] = QUILL_TOKEN_NORMAL;
    }
    for (int i = 0; i < N_WORDS; i++) {
        texts[n_tokens] = words[i];
        kinds[n_tokens++] = words[i][0] == '<' ? QUILL_TOKEN_CONTROL : QUILL_TOKEN_NORMAL;
    }

    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "gpt2") != QUILL_OK ||
        quill__gguf_writer_set_string(writer, "tokenizer.ggml.pre", pre) != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts,
                                            (uint64_t)n_tokens) != QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds,
                                         (uint64_t)n_tokens) != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.merges", merges, N_MERGES) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.eos_token_id",
                                   (uint32_t)(BYTE_TOKEN_COUNT + 9)) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* A WordPiece vocabulary with continuation pieces, CJK and punctuation. */
static quill_gguf_writer *wordpiece_writer(void) {
    static const char *const texts[] = {
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "\xe2\x96\x81hello",
        "\342\226\201cafe",
        "\xe2\x96\x81,",
        "ing",
        "\xe2\x96\x81sing",
        "\xe2\x96\x81\xe4\xb8\xad",
        "\xe2\x96\x81!",
        "\342\226\201a",
        "a",
        "b",
        "\342\226\201b",
    };
    enum { N_TOKENS = sizeof(texts) / sizeof(texts[0]) };
    int32_t kinds[N_TOKENS];
    quill_gguf_writer *writer = NULL;

    for (int i = 0; i < N_TOKENS; i++) {
        kinds[i] = texts[i][0] == '[' ? QUILL_TOKEN_CONTROL : QUILL_TOKEN_NORMAL;
    }
    if (quill__gguf_writer_create(&writer) != QUILL_OK) {
        return NULL;
    }
    if (quill__gguf_writer_set_string(writer, "tokenizer.ggml.model", "bert") != QUILL_OK ||
        quill__gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", texts, N_TOKENS) !=
            QUILL_OK ||
        quill__gguf_writer_set_i32_array(writer, "tokenizer.ggml.token_type", kinds, N_TOKENS) !=
            QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.bos_token_id", 2) != QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.seperator_token_id", 3) != QUILL_OK ||
        quill__gguf_writer_set_u32(writer, "tokenizer.ggml.unknown_token_id", 1) != QUILL_OK) {
        quill__gguf_writer_destroy(writer);
        return NULL;
    }
    return writer;
}

/* Loads a tokenizer from a GGUF file named in QUILL_FUZZ_VOCABS; NULL when it fails. */
static quill_tokenizer *load_from_path(const char *path) {
    quill_gguf *file = NULL;
    quill_tokenizer *tokenizer = NULL;

    if (quill_gguf_open(path, &file) != QUILL_OK) {
        fprintf(stderr, "fuzz: failed to open vocabulary %s: %s\n", path, quill_error_message());
        return NULL;
    }
    if (quill_tokenizer_load(file, &tokenizer) != QUILL_OK) {
        fprintf(stderr, "fuzz: failed to load the tokenizer of %s: %s\n", path,
                quill_error_message());
        tokenizer = NULL;
    }
    quill_gguf_close(file);
    return tokenizer;
}

/* Builds the vocabularies once. The tokenizers live until the process exits. */
static void build_vocabs(void) {
    fuzz_vocabs[0] = load_from_writer(spm_writer(true));
    fuzz_vocabs[1] = load_from_writer(spm_writer(false));
    fuzz_vocabs[2] = load_from_writer(bpe_writer("gpt-2"));
    fuzz_vocabs[3] = load_from_writer(bpe_writer("llama-bpe"));
    fuzz_vocabs[4] = load_from_writer(bpe_writer("qwen2"));
    fuzz_vocabs[5] = load_from_writer(wordpiece_writer());

    const char *paths = getenv(QUILL_FUZZ_VOCABS_ENV);
    if (paths == NULL) {
        return;
    }
    char *copy = strdup(paths);
    char *save = NULL;
    int slot = N_BUILTIN_VOCABS;
    for (char *path = copy == NULL ? NULL : strtok_r(copy, ":", &save);
         path != NULL && slot < N_VOCAB_SLOTS; path = strtok_r(NULL, ":", &save)) {
        fuzz_vocabs[slot++] = load_from_path(path);
    }
    free(copy);
}

/* Returns the vocabulary for a selector; an empty slot falls back to a built-in one, so the
 * same input selects the same vocabulary whether or not QUILL_FUZZ_VOCABS is set. */
static const quill_tokenizer *select_vocab(unsigned selector) {
    unsigned slot = selector % N_VOCAB_SLOTS;
    if (fuzz_vocabs[slot] == NULL) {
        slot %= N_BUILTIN_VOCABS;
    }
    return fuzz_vocabs[slot];
}

/* Decodes tokens in one call and through the streaming decoder, one token at a time. */
static void decode_tokens(const quill_tokenizer *tokenizer, const int32_t *tokens, int64_t n_tokens,
                          bool render_special, bool replace_invalid) {
    char *text = NULL;
    size_t n_text_bytes = 0;
    if (quill_tokenizer_decode(tokenizer, tokens, n_tokens, render_special, &text, &n_text_bytes) ==
        QUILL_OK) {
        quill_text_free(text);
    }

    size_t capacity = quill_detokenizer_max_bytes(tokenizer);
    char *out = malloc(capacity);
    if (out == NULL) {
        return;
    }
    quill_detokenizer decoder;
    quill_detokenizer_init(&decoder, tokenizer);
    decoder.render_special = render_special;
    decoder.replace_invalid = replace_invalid;
    size_t n_out = 0;
    for (int64_t i = 0; i < n_tokens; i++) {
        if (quill_detokenizer_feed(&decoder, tokens[i], out, capacity, &n_out) != QUILL_OK) {
            break;
        }
    }
    (void)quill_detokenizer_flush(&decoder, out, capacity, &n_out);
    free(out);
}

void quill_fuzz_tokenizer(const uint8_t *data, size_t n_bytes) {
    int32_t *tokens = NULL;
    int64_t n_tokens = 0;

    if (n_bytes == 0) {
        return;
    }
    pthread_once(&fuzz_vocabs_once, build_vocabs);
    unsigned selector = data[0];
    const quill_tokenizer *tokenizer = select_vocab(selector & 7u);
    if (tokenizer == NULL) {
        return;
    }
    const char *text = (const char *)data + 1;
    size_t n_text_bytes = n_bytes - 1;
    uint32_t flags = 0;
    if (selector & (1u << 3)) {
        flags |= QUILL_TOKENIZE_ADD_SPECIAL;
    }
    if (selector & (1u << 4)) {
        flags |= QUILL_TOKENIZE_PARSE_SPECIAL;
    }
    bool uses_ranges = (selector & (1u << 5)) != 0;
    bool render_special = (selector & (1u << 6)) != 0;
    bool replace_invalid = (selector & (1u << 7)) != 0;

    /* Encode, with special tokens allowed only in the first and last third when ranges are on,
     * as a chat server does with template text around user text. */
    quill_status status;
    if (uses_ranges) {
        quill_special_range ranges[2] = {
            {.offset = 0, .n_bytes = n_text_bytes / 3},
            {.offset = n_text_bytes - n_text_bytes / 3, .n_bytes = n_text_bytes / 3},
        };
        status = quill_tokenizer_encode_ranges(tokenizer, text, n_text_bytes, flags, ranges, 2,
                                               &tokens, &n_tokens);
    } else {
        status = quill_tokenizer_encode(tokenizer, text, n_text_bytes, flags, &tokens, &n_tokens);
    }
    if (status == QUILL_OK) {
        decode_tokens(tokenizer, tokens, n_tokens, render_special, replace_invalid);
        quill_tokens_free(tokens);
    }

    /* Decode the same bytes read as token ids: any value, in range or not. */
    int32_t ids[MAX_IDS_DECODED];
    int64_t n_ids = 0;
    for (size_t offset = 0; offset + 4 <= n_text_bytes && n_ids < MAX_IDS_DECODED; offset += 4) {
        uint32_t raw = (uint32_t)(uint8_t)text[offset] | (uint32_t)(uint8_t)text[offset + 1] << 8 |
                       (uint32_t)(uint8_t)text[offset + 2] << 16 |
                       (uint32_t)(uint8_t)text[offset + 3] << 24;
        int32_t id = 0;
        memcpy(&id, &raw, sizeof(id));
        ids[n_ids++] = id;
    }
    volatile int64_t sink = 0;
    for (int64_t i = 0; i < n_ids; i++) {
        char piece[MAX_PIECE_BYTES];
        sink +=
            quill_tokenizer_token_bytes(tokenizer, ids[i], render_special, piece, sizeof(piece));
        sink += quill_tokenizer_token_kind(tokenizer, ids[i]);
        sink += quill_tokenizer_is_eog(tokenizer, ids[i]) ? 1 : 0;
        const char *token_text = quill_tokenizer_token_text(tokenizer, ids[i]);
        if (token_text != NULL) {
            sink += quill_tokenizer_find_token(tokenizer, token_text);
        }
    }
    (void)sink;
    decode_tokens(tokenizer, ids, n_ids, render_special, replace_invalid);
}

/* ---- OpenAI requests ---- */

void quill_fuzz_openai_request(const uint8_t *data, size_t n_bytes) {
    quill_openai_request request;
    quill_http_error error;
    json_object *object = NULL;
    json_object *normalized = NULL;

    if (n_bytes == 0) {
        return;
    }
    memset(&request, 0, sizeof(request));
    memset(&error, 0, sizeof(error));
    quill_openai_kind kind = (data[0] & 1u) ? QUILL_OPENAI_COMPLETION : QUILL_OPENAI_CHAT;
    int32_t n_vocab = (data[0] & 2u) ? 32000 : 0;
    const char *body = (const char *)data + 1;
    size_t n_body_bytes = n_bytes - 1;

    if (quill__openai_parse_json_object(body, n_body_bytes, &object, &error) == QUILL_OK) {
        json_object_put(object);
    }

    memset(&error, 0, sizeof(error));
    if (quill__openai_request_parse(body, n_body_bytes, kind, n_vocab, &request, &error) !=
        QUILL_OK) {
        return;
    }

    /* A chat request goes on as the server takes it: normalized, then rendered. */
    if (kind == QUILL_OPENAI_CHAT && request.messages != NULL &&
        quill_chat_messages_normalize(request.messages, (data[0] & 4u) != 0, &normalized) ==
            QUILL_OK) {
        quill_chat_template *chat_template = NULL;
        const char *source = quill_chat_default_template();
        if (quill_chat_template_create(source, strlen(source), &chat_template) == QUILL_OK) {
            quill_chat_render_params params = quill_chat_render_params_default();
            params.messages = normalized;
            params.tools = request.tools;
            params.add_generation_prompt = true;
            params.now_unix_seconds = 1796428800;
            params.max_output_bytes = MAX_RENDER_BYTES;
            quill_chat_rendered rendered = {0};
            (void)quill_chat_template_render(chat_template, &params, &rendered);
            quill_chat_rendered_release(&rendered);
            quill_chat_template_destroy(chat_template);
        }
        json_object_put(normalized);
    }
    quill__openai_request_release(&request);
}
