/*
 * Internal layout of quill_tokenizer, shared by the files of the tokenizer area: the token table
 * (vocab.c), the encoders (spm.c, bpe.c, wordpiece.c), the pre-tokenizer (pretokenizer.c) and
 * the decoders (detokenizer.c). A tokenizer is immutable after quill__tokenizer_create, so every
 * function here is safe from any thread on a finished tokenizer.
 */
#ifndef QUILL_TOKENIZER_INTERNAL_H
#define QUILL_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "quill/tokenizer.h"

/* Open-addressing hash map from a byte string (plus a small tag) to an int32 value. The keys
 * are borrowed: they must outlive the map. */
typedef struct quill__string_map_entry {
    const char *key;   /* borrowed key bytes; NULL marks an empty slot */
    uint32_t n_bytes;  /* key length */
    uint32_t tag;      /* extra key part compared with the bytes (0 when unused) */
    int32_t value;     /* mapped value */
} quill__string_map_entry;

typedef struct quill__string_map {
    quill__string_map_entry *slots; /* n_slots entries, a power of two */
    size_t n_slots;                 /* capacity */
    size_t n_used;                  /* filled slots */
} quill__string_map;

quill_status quill__string_map_init(quill__string_map *map, size_t n_expected);
void quill__string_map_release(quill__string_map *map);
/* Inserts or replaces key -> value. */
quill_status quill__string_map_put(quill__string_map *map, const char *key, uint32_t n_bytes,
                                   uint32_t tag, int32_t value);
/* Returns the value stored for key, or -1. */
int32_t quill__string_map_get(const quill__string_map *map, const char *key, uint32_t n_bytes,
                              uint32_t tag);

typedef struct quill__pretokenizer quill__pretokenizer;

/* A vocabulary description that quill__tokenizer_create copies: what quill_tokenizer_load reads
 * from GGUF, and what unit tests build from arrays. */
typedef struct quill__vocab_spec {
    const char *model_name;          /* tokenizer.ggml.model: "llama", "gpt2" or "bert" */
    const char *pre_name;            /* tokenizer.ggml.pre, or NULL */
    int32_t n_tokens;                /* entries in the arrays below */
    const char *const *texts;        /* token texts, NUL-free, n_bytes in text_bytes */
    const uint32_t *text_bytes;      /* length of each text */
    const float *scores;             /* SPM merge scores, or NULL (all 0) */
    const int32_t *kinds;            /* quill_token_kind values, or NULL (all NORMAL) */
    int64_t n_merges;                /* BPE merges in rank order */
    const char *const *merges;       /* "left right" strings */
    const uint32_t *merge_bytes;     /* length of each merge string */
    int32_t bos, eos, eot, eom, unk, sep, pad; /* ids from the file; -2 when absent */
    int add_bos, add_eos, add_space_prefix;    /* 0 or 1 from the file; -1 when absent */
} quill__vocab_spec;

/* Fills spec with "absent" markers (ids -2, flags -1) and NULL arrays. */
void quill__vocab_spec_init(quill__vocab_spec *spec);

struct quill_tokenizer {
    quill_vocab_type type;          /* encoder family */
    char *type_name;                /* tokenizer.ggml.model */
    char *pre_name;                 /* tokenizer.ggml.pre, "default" when absent */
    int32_t n_vocab;                /* tokens */
    char **texts;                   /* [n_vocab] NUL-terminated token texts (in text_storage) */
    uint32_t *text_bytes;           /* [n_vocab] text lengths */
    char *text_storage;             /* all texts, each followed by a NUL */
    float *scores;                  /* [n_vocab] SPM scores */
    uint8_t *kinds;                 /* [n_vocab] quill_token_kind */
    uint8_t *is_eog;                /* [n_vocab] 1 for end-of-generation tokens */
    quill__string_map token_ids;    /* text -> id */
    int32_t bos, eos, eot, eom, unk, sep, pad; /* special ids, -1 when none */
    bool add_bos;                   /* ADD_SPECIAL prepends BOS (CLS for WordPiece) */
    bool add_eos;                   /* ADD_SPECIAL appends EOS */
    bool add_space_prefix;          /* SPM: prepend a space to text after a special token */
    bool ignore_merges;             /* BPE: a pre-token found in the vocabulary is one token */
    int32_t byte_tokens[256];       /* SPM: id of <0xNN>; -1 when absent */
    int32_t *special_ids;           /* control, user-defined and unknown tokens, longest first */
    int32_t n_special;              /* entries in special_ids */
    uint32_t max_token_bytes;       /* maximum token text length in bytes */
    uint32_t max_piece_bytes;       /* maximum decoded piece length in bytes */
    /* BPE */
    char *merge_storage;            /* "leftright" keys of the merge map */
    quill__string_map merge_ranks;  /* key "leftright" with tag = left length -> rank */
    quill__pretokenizer *pretokenizer; /* regex splitter */
};

/* Builds a tokenizer from spec (copied). Returns a new tokenizer in *out; the caller destroys
 * it. Errors name the offending token or setting. */
quill_status quill__tokenizer_create(const quill__vocab_spec *spec, quill_tokenizer **out);

/* Token lookup by text bytes; -1 when absent. */
int32_t quill__tokenizer_lookup(const quill_tokenizer *tokenizer, const char *text,
                                size_t n_bytes);

/* Growable id array used by the encoders. */
typedef struct quill__token_list {
    int32_t *ids;      /* n_ids used of capacity */
    int64_t n_ids;     /* ids stored */
    int64_t capacity;  /* ids allocated */
} quill__token_list;

quill_status quill__token_list_push(quill__token_list *list, int32_t id);

/* Encoders for one text fragment that contains no special token. */
quill_status quill__spm_encode(const quill_tokenizer *tokenizer, const char *text,
                               size_t n_bytes, bool add_prefix_space, quill__token_list *out);
quill_status quill__bpe_encode(const quill_tokenizer *tokenizer, const char *text,
                               size_t n_bytes, quill__token_list *out);
quill_status quill__wordpiece_encode(const quill_tokenizer *tokenizer, const char *text,
                                     size_t n_bytes, quill__token_list *out);

/* BPE set-up: merge map and pre-tokenizer. */
quill_status quill__bpe_init(quill_tokenizer *tokenizer, const quill__vocab_spec *spec);
void quill__bpe_release(quill_tokenizer *tokenizer);

/* Pre-tokenizer named by tokenizer.ggml.pre. Calls emit for each pre-token in order. */
typedef quill_status (*quill__pretoken_fn)(void *context, const char *text, size_t n_bytes);
quill_status quill__pretokenizer_create(const char *pre_name, quill__pretokenizer **out);
void quill__pretokenizer_destroy(quill__pretokenizer *pretokenizer);
quill_status quill__pretokenizer_split(const quill__pretokenizer *pretokenizer, const char *text,
                                       size_t n_bytes, quill__pretoken_fn emit, void *context);
/* Settings that a pre-tokenizer name implies (llama.cpp's per-name flags). */
bool quill__pretokenizer_ignores_merges(const char *pre_name);
bool quill__pretokenizer_adds_bos(const char *pre_name);

/* GPT-2 byte-level mapping: the code point that stands for byte b, and its inverse (-1 when
 * the code point stands for no byte). */
uint32_t quill__bpe_byte_to_codepoint(uint8_t byte);
int quill__bpe_codepoint_to_byte(uint32_t codepoint);

/* UTF-8 helpers. */
/* Length of the UTF-8 sequence that lead byte starts (1 for invalid lead bytes). */
size_t quill__utf8_sequence_length(uint8_t lead);
/* Decodes one code point at text[0..n_bytes); stores the bytes used (at least 1). Invalid
 * sequences give U+FFFD. */
uint32_t quill__utf8_decode(const char *text, size_t n_bytes, size_t *n_used);
/* Encodes a code point; returns the bytes written (1..4) to out[4]. */
size_t quill__utf8_encode(uint32_t codepoint, char *out);

#endif
