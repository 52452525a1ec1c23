/*
 * Tokenizers read from a GGUF vocabulary: SentencePiece-style (`llama`), byte-level BPE
 * (`gpt2`, with the pre-tokenizer named by tokenizer.ggml.pre) and WordPiece (`bert`).
 * A quill_tokenizer is immutable after load: safe from any thread. A quill_detokenizer is one
 * stream's state: one thread at a time.
 */
#ifndef QUILL_TOKENIZER_H
#define QUILL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/gguf.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_tokenizer quill_tokenizer;

typedef enum quill_vocab_type {
    QUILL_VOCAB_SPM = 1,       /* tokenizer.ggml.model = llama */
    QUILL_VOCAB_BPE = 2,       /* tokenizer.ggml.model = gpt2 */
    QUILL_VOCAB_WORDPIECE = 3, /* tokenizer.ggml.model = bert */
} quill_vocab_type;

/* Token attributes from tokenizer.ggml.token_type. */
typedef enum quill_token_kind {
    QUILL_TOKEN_NORMAL = 1,
    QUILL_TOKEN_UNKNOWN = 2,
    QUILL_TOKEN_CONTROL = 3,
    QUILL_TOKEN_USER_DEFINED = 4,
    QUILL_TOKEN_UNUSED = 5,
    QUILL_TOKEN_BYTE = 6,
} quill_token_kind;

typedef enum quill_tokenize_flags {
    QUILL_TOKENIZE_ADD_SPECIAL = 1 << 0,   /* add BOS/EOS (and CLS/SEP) as the vocabulary says */
    QUILL_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* match control and user-defined token text */
} quill_tokenize_flags;

/* Loads the vocabulary from an open GGUF file. Returns a new tokenizer in *out; the caller
 * destroys it. It keeps no pointer into `file` after return. */
QUILL_API quill_status quill_tokenizer_load(const quill_gguf *file, quill_tokenizer **out);
QUILL_API void quill_tokenizer_destroy(quill_tokenizer *tokenizer);

QUILL_API quill_vocab_type quill_tokenizer_type(const quill_tokenizer *tokenizer);
/* The type's name as in tokenizer.ggml.model ("llama", "gpt2", "bert"), and the pre-tokenizer
 * name ("default" when absent). */
QUILL_API const char *quill_tokenizer_type_name(const quill_tokenizer *tokenizer);
QUILL_API const char *quill_tokenizer_pre_name(const quill_tokenizer *tokenizer);
QUILL_API int32_t quill_tokenizer_n_vocab(const quill_tokenizer *tokenizer);
/* Special ids; -1 when the vocabulary has none. */
QUILL_API int32_t quill_tokenizer_bos(const quill_tokenizer *tokenizer);
QUILL_API int32_t quill_tokenizer_eos(const quill_tokenizer *tokenizer);
/* True for every end-of-generation token: EOS, EOT, and control tokens such as <|im_end|>,
 * <|eot_id|>, <|endoftext|>, <end_of_turn> that the vocabulary defines. */
QUILL_API bool quill_tokenizer_is_eog(const quill_tokenizer *tokenizer, int32_t token);
QUILL_API bool quill_tokenizer_adds_bos(const quill_tokenizer *tokenizer);
QUILL_API bool quill_tokenizer_adds_eos(const quill_tokenizer *tokenizer);
QUILL_API quill_token_kind quill_tokenizer_token_kind(const quill_tokenizer *tokenizer,
                                                      int32_t token);
/* The token's text as stored in the vocabulary (e.g. "▁the", "Ġthe", "<0x0A>"). Borrowed:
 * valid until destroy. NULL for an id out of range. */
QUILL_API const char *quill_tokenizer_token_text(const quill_tokenizer *tokenizer, int32_t token);
/* Returns the id of a token whose stored text is exactly text, or -1. */
QUILL_API int32_t quill_tokenizer_find_token(const quill_tokenizer *tokenizer, const char *text);

/* Encodes n_bytes of UTF-8 text. Returns a new array in *tokens (free with quill_tokens_free)
 * of *n_tokens ids. */
QUILL_API quill_status quill_tokenizer_encode(const quill_tokenizer *tokenizer, const char *text,
                                              size_t n_bytes, uint32_t flags, int32_t **tokens,
                                              int64_t *n_tokens);
QUILL_API void quill_tokens_free(int32_t *tokens);

/* A byte range of the input where special tokens may be matched. */
typedef struct quill_special_range {
    size_t offset;  /* into the text */
    size_t n_bytes; /* length */
} quill_special_range;

/* Same as quill_tokenizer_encode with QUILL_TOKENIZE_PARSE_SPECIAL, except that special-token
 * text is matched only when it lies wholly inside one of the ranges (sorted, disjoint). Text
 * between matched special tokens is tokenized as one fragment whatever ranges it crosses. A chat
 * server passes the template's own text as the ranges, so that a user who types "<|im_start|>"
 * gets plain text tokens. */
QUILL_API quill_status quill_tokenizer_encode_ranges(const quill_tokenizer *tokenizer,
                                                     const char *text, size_t n_bytes,
                                                     uint32_t flags,
                                                     const quill_special_range *ranges,
                                                     size_t n_ranges, int32_t **tokens,
                                                     int64_t *n_tokens);

/* Writes the bytes that one token stands for in a decoded text (▁ becomes a space, <0xNN> the
 * byte, byte-level BPE characters their bytes; control tokens give their text only when
 * render_special is set, else nothing). Returns the number of bytes the piece has, which may be
 * more than buffer_bytes (then the buffer holds a truncated copy), or a negative status. */
QUILL_API int64_t quill_tokenizer_token_bytes(const quill_tokenizer *tokenizer, int32_t token,
                                              bool render_special, char *buffer,
                                              size_t buffer_bytes);

/* Decodes a whole sequence to text, applying the vocabulary's cleanups (SentencePiece removes
 * the leading space of the first piece when skip_leading_space is set). Invalid UTF-8 is kept
 * as raw bytes. Returns a new NUL-terminated string in *text (free it with quill_text_free)
 * and its length in *n_bytes. */
QUILL_API quill_status quill_tokenizer_decode(const quill_tokenizer *tokenizer,
                                              const int32_t *tokens, int64_t n_tokens,
                                              bool render_special, char **text, size_t *n_bytes);
QUILL_API void quill_text_free(char *text);

/* Streaming decoder: feed tokens one at a time; it releases only whole UTF-8 characters, holding
 * back an incomplete one until the next token completes it. A byte sequence that can no longer
 * become valid UTF-8 is released as U+FFFD when replace_invalid is set, else as the raw bytes.
 * Embed it and call init/release. */
typedef struct quill_detokenizer {
    const quill_tokenizer *tokenizer; /* borrowed */
    bool replace_invalid;             /* emit U+FFFD for invalid sequences */
    bool render_special;              /* emit the text of control tokens */
    bool is_first_piece;              /* the next piece is the first of the stream */
    bool skip_leading_space;          /* drop a leading space from the first piece (SPM) */
    char pending[8];                  /* bytes of an incomplete UTF-8 character */
    int n_pending;                    /* bytes used in pending */
} quill_detokenizer;

QUILL_API void quill_detokenizer_init(quill_detokenizer *decoder, const quill_tokenizer *tokenizer);

/* Upper bound on the bytes one feed or flush can release: the longest token piece plus the held
 * bytes, with room for U+FFFD replacements. */
QUILL_API size_t quill_detokenizer_max_bytes(const quill_tokenizer *tokenizer);

/* Writes the bytes released by token into out (out_capacity at least
 * quill_detokenizer_max_bytes) and stores their count in *n_out. */
QUILL_API quill_status quill_detokenizer_feed(quill_detokenizer *decoder, int32_t token, char *out,
                                              size_t out_capacity, size_t *n_out);

/* Releases what is still held at the end of the stream (as U+FFFD or raw bytes). */
QUILL_API quill_status quill_detokenizer_flush(quill_detokenizer *decoder, char *out,
                                               size_t out_capacity, size_t *n_out);

QUILL_EXTERN_C_END

#endif
