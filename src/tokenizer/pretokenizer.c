/*
 * Pre-tokenizers of byte-level BPE vocabularies, chosen by tokenizer.ggml.pre. Each is a list of
 * regular expressions applied in sequence as llama.cpp's unicode_regex_split does: every
 * expression splits each current piece into its matches and the text between them, and the
 * next expression works on those pieces. The expressions are llama.cpp's (llama-vocab.cpp,
 * llm_tokenizer_bpe), compiled with PCRE2 (UTF, UCP, JIT).
 *
 * A compiled pre-tokenizer is immutable; each split call makes its own match data, so splitting
 * is safe from any thread.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "tokenizer/tokenizer_internal.h"

#include <pcre2.h>
#include <string.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "quill/status.h"

enum { MAX_EXPRESSIONS = 6 };

/* The contraction and word expression shared by GPT-2 and its relatives. */
#define GPT2_WORDS                                                                          \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"

/* Llama 3's expression; the original "(?i:'s|...)" group is spelled out case by case as
 * llama.cpp does. */
#define LLAMA3_WORDS                                                                        \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#define QWEN2_WORDS                                                                         \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Han, Hiragana/Katakana ranges and Hangul of the DeepSeek expressions. */
#define DEEPSEEK_CJK                                                                        \
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"

/* DeepSeek LLM's letter class: Latin, Greek, Cyrillic, Armenian, Georgian and other cased
 * scripts, exactly as in its tokenizer.json. */
#define DEEPSEEK_LETTERS                                                                        \
    "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf"    \
    "\xc7\x84-\xca\x93\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd"      \
    "\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-"      \
    "\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85\xe1\x8e\xa0-"          \
    "\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf"   \
    "\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-"  \
    "\xe1\xbc\x95\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d"   \
    "\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd"    \
    "\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe\xe1\xbf\x82-\xe1\xbf\x84"   \
    "\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b\xe1\xbf\xa0-"  \
    "\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87"    \
    "\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6"    \
    "\xe2\x84\xa8\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-"  \
    "\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-"  \
    "\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae\xe2\xb3\xb2\xe2\xb3\xb3"    \
    "\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf\xea\x9d\xb1-"  \
    "\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"   \
    "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a"              \
    "\xf0\x90\x90\x80-\xf0\x90\x91\x8f\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-"      \
    "\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2"        \
    "\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+"

/* Poro, BLOOM and GPT-3 Finnish: runs of anything but whitespace and these punctuation marks. */
#define PORO_WORDS                                                                          \
    " ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"

/* One family of names that share expressions and settings. */
typedef struct pretokenizer_family {
    const char *names[16];                     /* tokenizer.ggml.pre values, NULL-terminated */
    const char *expressions[MAX_EXPRESSIONS];  /* applied in order, NULL-terminated */
    bool ignore_merges;                        /* a pre-token in the vocabulary is one token */
    bool add_bos;                              /* default of tokenizer.ggml.add_bos_token */
} pretokenizer_family;

static const pretokenizer_family families[] = {
    {{"default"},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_WORDS, "\\p{N}+", "[0-9][0-9][0-9]"},
     false,
     false},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe"},
     {LLAMA3_WORDS},
     true,
     true},
    {{"deepseek-llm"},
     {"[\r\n]", DEEPSEEK_LETTERS,
      "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f"
      "\xe3\x80\x80-\xe3\x80\x82]+",
      "\\s+$", DEEPSEEK_CJK, "\\p{N}+"},
     false,
     false},
    {{"deepseek-v3"},
     {"\\p{N}{1,3}",
      "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
      "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     false,
     false},
    {{"deepseek-coder"},
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", DEEPSEEK_CJK, "\\p{N}"},
     false,
     false},
    {{"falcon"},
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_WORDS, "[0-9][0-9][0-9]"},
     false,
     false},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
     {"\\p{N}", GPT2_WORDS},
     false,
     false},
    {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es",
      "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo"},
     {GPT2_WORDS},
     false,
     false},
    {{"jais"}, {GPT2_WORDS}, false, false},
    {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, {QWEN2_WORDS}, false, false},
    {{"poro-chat", "bloom", "gpt3-finnish"},
     {PORO_WORDS},
     false,
     false},
    {{"viking"},
     {PORO_WORDS,
      "\\p{N}"},
     false,
     false},
    {{"tekken"},
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]"
      "?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     true,
     true},
    {{"chameleon"},
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", GPT2_WORDS},
     false,
     true},
};

struct quill__pretokenizer {
    pcre2_code *codes[MAX_EXPRESSIONS]; /* compiled expressions, n_codes used */
    int n_codes;                        /* expressions in order */
};

static const pretokenizer_family *find_family(const char *pre_name) {
    const char *name = pre_name != NULL ? pre_name : "default";
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        for (size_t j = 0; families[i].names[j] != NULL; j++) {
            if (strcmp(families[i].names[j], name) == 0) {
                return &families[i];
            }
        }
    }
    return NULL;
}

bool quill__pretokenizer_ignores_merges(const char *pre_name) {
    const pretokenizer_family *family = find_family(pre_name);
    return family != NULL && family->ignore_merges;
}

bool quill__pretokenizer_adds_bos(const char *pre_name) {
    const pretokenizer_family *family = find_family(pre_name);
    return family != NULL && family->add_bos;
}

static quill_status unknown_name_error(const char *pre_name) {
    quill_strbuf known;
    quill__strbuf_init(&known);
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        for (size_t j = 0; families[i].names[j] != NULL; j++) {
            quill__strbuf_appendf(&known, "%s%s", known.length > 0 ? ", " : "",
                                  families[i].names[j]);
        }
    }
    quill_status status = quill_error_set(QUILL_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer "
                                          "'%s' (tokenizer.ggml.pre) is unknown; known ones: %s",
                                          pre_name, known.data != NULL ? known.data : "");
    quill__strbuf_release(&known);
    return status;
}

quill_status quill__pretokenizer_create(const char *pre_name, quill__pretokenizer **out) {
    quill__pretokenizer *pretokenizer = NULL;
    quill_status status = QUILL_OK;
    *out = NULL;

    const pretokenizer_family *family = find_family(pre_name);
    if (family == NULL) {
        return unknown_name_error(pre_name);
    }
    pretokenizer = quill__calloc(1, sizeof(*pretokenizer));
    if (pretokenizer == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory");
    }

    for (int i = 0; i < MAX_EXPRESSIONS && family->expressions[i] != NULL; i++) {
        int error_code = 0;
        PCRE2_SIZE error_offset = 0;
        /* DOLLAR_ENDONLY: "$" means the end of the piece, as in std::regex. */
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)family->expressions[i], PCRE2_ZERO_TERMINATED,
                                         PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY,
                                         &error_code, &error_offset, NULL);
        if (code == NULL) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(error_code, message, sizeof(message));
            status = quill_error_set(QUILL_ERR_UNSUPPORTED, "tokenizer: expression %d of "
                                     "pre-tokenizer '%s' does not compile at offset %zu: %s", i,
                                     pre_name, (size_t)error_offset, (const char *)message);
            goto cleanup;
        }
        pretokenizer->codes[pretokenizer->n_codes++] = code;
        /* Without JIT support pcre2_match interprets the pattern; only speed differs. */
        (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    }

    *out = pretokenizer;
    pretokenizer = NULL;

cleanup:
    quill__pretokenizer_destroy(pretokenizer);
    return status;
}

void quill__pretokenizer_destroy(quill__pretokenizer *pretokenizer) {
    if (pretokenizer == NULL) {
        return;
    }
    for (int i = 0; i < pretokenizer->n_codes; i++) {
        pcre2_code_free(pretokenizer->codes[i]);
    }
    quill__free(pretokenizer);
}

/* A list of (offset, length) pieces. */
typedef struct span_list {
    size_t *items;    /* pairs: offset, length */
    size_t n_spans;   /* pairs used */
    size_t capacity;  /* pairs allocated */
} span_list;

static quill_status span_push(span_list *list, size_t offset, size_t n_bytes) {
    if (list->n_spans == list->capacity) {
        size_t capacity = list->capacity > 0 ? list->capacity * 2 : 256;
        size_t *items = quill__realloc_array(list->items, capacity * 2, sizeof(size_t));
        if (items == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu "
                                   "pre-tokens", capacity);
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->n_spans * 2] = offset;
    list->items[list->n_spans * 2 + 1] = n_bytes;
    list->n_spans++;
    return QUILL_OK;
}

/* Splits one piece (valid UTF-8) with one expression: matches and the gaps between them. */
static quill_status split_piece(const pcre2_code *code, pcre2_match_data *match_data,
                                const char *text, size_t offset, size_t n_bytes,
                                span_list *out) {
    quill_status status = QUILL_OK;
    PCRE2_SPTR subject = (PCRE2_SPTR)(text + offset);
    size_t position = 0;
    size_t gap_start = 0;

    /* The caller checked the UTF-8, so PCRE2 skips its own check, which would rescan the
     * whole subject on every call and make the split quadratic. */
    while (status == QUILL_OK && position < n_bytes) {
        int rc = pcre2_match(code, subject, n_bytes, position, PCRE2_NO_UTF_CHECK, match_data,
                             NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(rc, message, sizeof(message));
            return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: pre-tokenizer match "
                                   "failed at byte %zu: %s", offset + position,
                                   (const char *)message);
        }
        PCRE2_SIZE *vector = pcre2_get_ovector_pointer(match_data);
        size_t start = vector[0];
        size_t end = vector[1];
        if (end == start) {
            /* An empty match: step over one character. */
            position = start + 1;
            while (position < n_bytes && ((uint8_t)subject[position] & 0xC0) == 0x80) {
                position++;
            }
            continue;
        }
        if (start > gap_start) {
            status = span_push(out, offset + gap_start, start - gap_start);
        }
        if (status == QUILL_OK) {
            status = span_push(out, offset + start, end - start);
        }
        gap_start = end;
        position = end;
    }
    if (status == QUILL_OK && gap_start < n_bytes) {
        status = span_push(out, offset + gap_start, n_bytes - gap_start);
    }
    return status;
}

/* Length of the valid UTF-8 prefix of text (RFC 3629). */
static size_t valid_utf8_prefix(const char *text, size_t n_bytes) {
    const uint8_t *bytes = (const uint8_t *)text;
    size_t i = 0;
    while (i < n_bytes) {
        uint8_t lead = bytes[i];
        if (lead < 0x80) {
            i++;
            continue;
        }
        size_t length = 0;
        uint8_t low = 0x80;
        uint8_t high = 0xBF;
        if (lead >= 0xC2 && lead <= 0xDF) {
            length = 2;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            length = 3;
            low = lead == 0xE0 ? 0xA0 : 0x80;
            high = lead == 0xED ? 0x9F : 0xBF;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            length = 4;
            low = lead == 0xF0 ? 0x90 : 0x80;
            high = lead == 0xF4 ? 0x8F : 0xBF;
        } else {
            return i;
        }
        if (length > n_bytes - i || bytes[i + 1] < low || bytes[i + 1] > high) {
            return i;
        }
        for (size_t k = 2; k < length; k++) {
            if ((bytes[i + k] & 0xC0) != 0x80) {
                return i;
            }
        }
        i += length;
    }
    return i;
}

static quill_status split_valid(const quill__pretokenizer *pretokenizer,
                                pcre2_match_data *match_data, const char *text, size_t offset,
                                size_t n_bytes, span_list *lists, quill__pretoken_fn emit,
                                void *context) {
    quill_status status = QUILL_OK;
    span_list *current = &lists[0];
    span_list *next = &lists[1];
    current->n_spans = 0;
    status = span_push(current, offset, n_bytes);

    for (int i = 0; status == QUILL_OK && i < pretokenizer->n_codes; i++) {
        next->n_spans = 0;
        for (size_t j = 0; status == QUILL_OK && j < current->n_spans; j++) {
            status = split_piece(pretokenizer->codes[i], match_data, text,
                                 current->items[j * 2], current->items[j * 2 + 1], next);
        }
        span_list *swap = current;
        current = next;
        next = swap;
    }
    for (size_t j = 0; status == QUILL_OK && j < current->n_spans; j++) {
        status = emit(context, text + current->items[j * 2], current->items[j * 2 + 1]);
    }
    return status;
}

quill_status quill__pretokenizer_split(const quill__pretokenizer *pretokenizer, const char *text,
                                       size_t n_bytes, quill__pretoken_fn emit, void *context) {
    quill_status status = QUILL_OK;
    span_list lists[2] = {{0}, {0}};
    pcre2_match_data *match_data = NULL;

    /* One match data serves every expression; 32 pairs cover their capture groups. */
    match_data = pcre2_match_data_create(32, NULL);
    if (match_data == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for regex match data");
    }

    /* NOTE: a byte that is not part of valid UTF-8 becomes a pre-token of its own. llama.cpp
     * replaces it with U+FFFD before splitting, so pieces next to invalid bytes may differ. */
    size_t offset = 0;
    while (status == QUILL_OK && offset < n_bytes) {
        size_t n_valid = valid_utf8_prefix(text + offset, n_bytes - offset);
        if (n_valid > 0) {
            status = split_valid(pretokenizer, match_data, text, offset, n_valid, lists, emit,
                                 context);
            offset += n_valid;
        } else {
            status = emit(context, text + offset, 1);
            offset++;
        }
    }

    pcre2_match_data_free(match_data);
    quill__free(lists[0].items);
    quill__free(lists[1].items);
    return status;
}
