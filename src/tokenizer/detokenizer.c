/*
 * Decoding: the bytes each token stands for (quill_tokenizer_token_bytes), whole sequences
 * (quill_tokenizer_decode) and the streaming quill_detokenizer, which releases only complete
 * UTF-8 characters and holds back at most three bytes of an unfinished one between calls.
 */
#include "quill/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "quill/status.h"
#include "tokenizer/tokenizer_internal.h"

/* U+FFFD REPLACEMENT CHARACTER in UTF-8. */
static const char replacement[] = "\xef\xbf\xbd";

/* Pieces up to this size are decoded on the stack. */
enum { PIECE_STACK_BYTES = 512 };

/* Copies what fits of the piece into a caller's buffer and counts its full length. */
typedef struct piece_writer {
    char *buffer;      /* destination */
    size_t capacity;   /* bytes available */
    size_t n_bytes;    /* bytes of the piece so far (may exceed capacity) */
} piece_writer;

static void writer_put(piece_writer *writer, const char *bytes, size_t n_bytes) {
    if (writer->n_bytes < writer->capacity) {
        size_t n_copy = writer->capacity - writer->n_bytes;
        if (n_copy > n_bytes) {
            n_copy = n_bytes;
        }
        memcpy(writer->buffer + writer->n_bytes, bytes, n_copy);
    }
    writer->n_bytes += n_bytes;
}

/* SentencePiece and WordPiece text: U+2581 stands for a space. */
static void write_unescaped(piece_writer *writer, const char *text, size_t n_bytes) {
    size_t start = 0;
    for (size_t i = 0; i + 3 <= n_bytes; i++) {
        if (memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            writer_put(writer, text + start, i - start);
            writer_put(writer, " ", 1);
            start = i + 3;
            i += 2;
        }
    }
    writer_put(writer, text + start, n_bytes - start);
}

/* Byte-level BPE text: each code point stands for one byte (GPT-2 mapping); a code point
 * outside the mapping is kept as its UTF-8 bytes. */
static void write_byte_level(piece_writer *writer, const char *text, size_t n_bytes) {
    for (size_t offset = 0; offset < n_bytes;) {
        size_t n_used = 0;
        uint32_t codepoint = quill__utf8_decode(text + offset, n_bytes - offset, &n_used);
        int byte = quill__bpe_codepoint_to_byte(codepoint);
        if (byte >= 0) {
            char value = (char)byte;
            writer_put(writer, &value, 1);
        } else {
            writer_put(writer, text + offset, n_used);
        }
        offset += n_used;
    }
}

/* "<0xNN>" gives byte NN; returns -1 for any other text. */
static int parse_byte_token(const char *text, size_t n_bytes) {
    if (n_bytes != 6 || memcmp(text, "<0x", 3) != 0 || text[5] != '>') {
        return -1;
    }
    char digits[3] = {text[3], text[4], '\0'};
    char *end = NULL;
    long value = strtol(digits, &end, 16);
    if (end != digits + 2 || value < 0 || value > 255) {
        return -1;
    }
    return (int)value;
}

int64_t quill_tokenizer_token_bytes(const quill_tokenizer *tokenizer, int32_t token,
                                    bool render_special, char *buffer, size_t buffer_bytes) {
    if (token < 0 || token >= tokenizer->n_vocab) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "tokenizer: token id %d is out of range; "
                               "the vocabulary has %d tokens", (int)token,
                               (int)tokenizer->n_vocab);
    }
    piece_writer writer = {.buffer = buffer, .capacity = buffer != NULL ? buffer_bytes : 0};
    const char *text = tokenizer->texts[token];
    size_t n_bytes = tokenizer->text_bytes[token];

    switch ((quill_token_kind)tokenizer->kinds[token]) {
    case QUILL_TOKEN_CONTROL:
    case QUILL_TOKEN_UNKNOWN:
        if (render_special) {
            writer_put(&writer, text, n_bytes);
        }
        break;
    case QUILL_TOKEN_USER_DEFINED:
        writer_put(&writer, text, n_bytes);
        break;
    case QUILL_TOKEN_BYTE: {
        int byte = parse_byte_token(text, n_bytes);
        if (byte >= 0) {
            char value = (char)byte;
            writer_put(&writer, &value, 1);
        }
        break;
    }
    case QUILL_TOKEN_NORMAL:
        if (tokenizer->type == QUILL_VOCAB_BPE) {
            write_byte_level(&writer, text, n_bytes);
        } else {
            write_unescaped(&writer, text, n_bytes);
        }
        break;
    case QUILL_TOKEN_UNUSED:
        break;
    }
    return (int64_t)writer.n_bytes;
}

/* Gets a token's piece into stack storage, or into a new allocation when it is longer. */
static quill_status get_piece(const quill_tokenizer *tokenizer, int32_t token,
                              bool render_special, char *stack, char **piece, size_t *n_bytes) {
    *piece = stack;
    int64_t n_piece = quill_tokenizer_token_bytes(tokenizer, token, render_special, stack,
                                                  PIECE_STACK_BYTES);
    if (n_piece < 0) {
        return (quill_status)n_piece;
    }
    if (n_piece > PIECE_STACK_BYTES) {
        *piece = quill__malloc((size_t)n_piece);
        if (*piece == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for a piece of "
                                   "%lld bytes", (long long)n_piece);
        }
        quill_tokenizer_token_bytes(tokenizer, token, render_special, *piece, (size_t)n_piece);
    }
    *n_bytes = (size_t)n_piece;
    return QUILL_OK;
}

quill_status quill_tokenizer_decode(const quill_tokenizer *tokenizer, const int32_t *tokens,
                                    int64_t n_tokens, bool render_special, char **text,
                                    size_t *n_bytes) {
    quill_strbuf result;
    quill_status status = QUILL_OK;
    char stack[PIECE_STACK_BYTES];
    /* NOTE: llama.cpp's clean_up_tokenization_spaces pass (" ," to ",", " 's" to "'s") is not
     * applied, so decoding returns the pieces exactly. */
    /* SentencePiece's dummy prefix: the first piece after an optional leading BOS loses one
     * leading space. NOTE: llama.cpp's llama_detokenize keeps that space when the sequence
     * starts with BOS. Quill removes it, so decode(encode(text)) gives the text back. */
    bool strip_space = tokenizer->type == QUILL_VOCAB_SPM && tokenizer->add_space_prefix;

    *text = NULL;
    *n_bytes = 0;
    quill__strbuf_init(&result);
    for (int64_t i = 0; status == QUILL_OK && i < n_tokens; i++) {
        char *piece = NULL;
        size_t n_piece = 0;
        status = get_piece(tokenizer, tokens[i], render_special, stack, &piece, &n_piece);
        if (status != QUILL_OK) {
            break;
        }
        const char *start = piece;
        if (strip_space && !(i == 0 && tokens[i] == tokenizer->bos)) {
            if (n_piece > 0 && piece[0] == ' ') {
                start++;
                n_piece--;
            }
            strip_space = false;
        }
        status = quill__strbuf_append(&result, start, n_piece);
        if (piece != stack) {
            quill__free(piece);
        }
    }
    if (status == QUILL_OK) {
        size_t length = result.length;
        *text = quill__strbuf_take(&result);
        if (*text == NULL) {
            status = quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for decoded text");
        } else {
            *n_bytes = length;
        }
    }
    quill__strbuf_release(&result);
    return status;
}

void quill_detokenizer_init(quill_detokenizer *decoder, const quill_tokenizer *tokenizer) {
    memset(decoder, 0, sizeof(*decoder));
    decoder->tokenizer = tokenizer;
    decoder->is_first_piece = true;
}

size_t quill_detokenizer_max_bytes(const quill_tokenizer *tokenizer) {
    /* Every held or piece byte can turn into a 3-byte U+FFFD. */
    return 3 * ((size_t)tokenizer->max_piece_bytes + sizeof(((quill_detokenizer *)0)->pending));
}

/* Output cursor of one feed or flush. */
typedef struct stream_output {
    char *out;        /* destination */
    size_t capacity;  /* bytes available */
    size_t n_bytes;   /* bytes written */
} stream_output;

static quill_status output_put(stream_output *output, const char *bytes, size_t n_bytes) {
    if (n_bytes > output->capacity - output->n_bytes) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "detokenizer: output buffer of %zu bytes "
                               "is too small; size it with quill_detokenizer_max_bytes",
                               output->capacity);
    }
    memcpy(output->out + output->n_bytes, bytes, n_bytes);
    output->n_bytes += n_bytes;
    return QUILL_OK;
}

/* Releases the held bytes as an invalid sequence: one U+FFFD, or the raw bytes. */
static quill_status release_invalid(quill_detokenizer *decoder, stream_output *output) {
    quill_status status = decoder->replace_invalid
                              ? output_put(output, replacement, 3)
                              : output_put(output, decoder->pending, (size_t)decoder->n_pending);
    decoder->n_pending = 0;
    return status;
}

/* The range allowed for the continuation byte at position `index` (1..3) of the sequence that
 * lead starts (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static bool continuation_ok(uint8_t lead, int index, uint8_t byte) {
    if (index == 1) {
        switch (lead) {
        case 0xE0:
            return byte >= 0xA0 && byte <= 0xBF;
        case 0xED:
            return byte >= 0x80 && byte <= 0x9F;
        case 0xF0:
            return byte >= 0x90 && byte <= 0xBF;
        case 0xF4:
            return byte >= 0x80 && byte <= 0x8F;
        default:
            break;
        }
    }
    return byte >= 0x80 && byte <= 0xBF;
}

static int expected_length(uint8_t lead) {
    if (lead < 0x80) {
        return 1;
    }
    if (lead >= 0xC2 && lead <= 0xDF) {
        return 2;
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        return 3;
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        return 4;
    }
    return 0; /* never valid as a first byte */
}

static quill_status stream_byte(quill_detokenizer *decoder, uint8_t byte,
                                stream_output *output) {
    quill_status status = QUILL_OK;
    if (decoder->n_pending > 0) {
        uint8_t lead = (uint8_t)decoder->pending[0];
        if (continuation_ok(lead, decoder->n_pending, byte)) {
            decoder->pending[decoder->n_pending++] = (char)byte;
            if (decoder->n_pending == expected_length(lead)) {
                status = output_put(output, decoder->pending, (size_t)decoder->n_pending);
                decoder->n_pending = 0;
            }
            return status;
        }
        /* The held bytes can no longer complete; this byte starts afresh. */
        status = release_invalid(decoder, output);
        if (status != QUILL_OK) {
            return status;
        }
    }

    int length = expected_length(byte);
    if (length == 1) {
        char value = (char)byte;
        return output_put(output, &value, 1);
    }
    decoder->pending[0] = (char)byte;
    decoder->n_pending = 1;
    if (length == 0) {
        return release_invalid(decoder, output);
    }
    return QUILL_OK;
}

quill_status quill_detokenizer_feed(quill_detokenizer *decoder, int32_t token, char *out,
                                    size_t out_capacity, size_t *n_out) {
    char stack[PIECE_STACK_BYTES];
    char *piece = NULL;
    size_t n_piece = 0;
    stream_output output = {.out = out, .capacity = out_capacity};
    const quill_tokenizer *tokenizer = decoder->tokenizer;

    *n_out = 0;
    quill_status status = get_piece(tokenizer, token, decoder->render_special, stack, &piece,
                                    &n_piece);
    if (status != QUILL_OK) {
        return status;
    }

    /* The first piece after an optional BOS may lose its leading space. */
    size_t start = 0;
    if (decoder->is_first_piece && !(token == tokenizer->bos && tokenizer->bos >= 0)) {
        if (decoder->skip_leading_space && n_piece > 0 && piece[0] == ' ') {
            start = 1;
        }
        decoder->is_first_piece = false;
    }

    for (size_t i = start; status == QUILL_OK && i < n_piece; i++) {
        status = stream_byte(decoder, (uint8_t)piece[i], &output);
    }
    if (piece != stack) {
        quill__free(piece);
    }
    *n_out = output.n_bytes;
    return status;
}

quill_status quill_detokenizer_flush(quill_detokenizer *decoder, char *out, size_t out_capacity,
                                     size_t *n_out) {
    stream_output output = {.out = out, .capacity = out_capacity};
    quill_status status = QUILL_OK;
    *n_out = 0;
    if (decoder->n_pending > 0) {
        status = release_invalid(decoder, &output);
    }
    *n_out = output.n_bytes;
    return status;
}
