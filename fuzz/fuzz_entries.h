/*
 * Entry functions of Quill's fuzz targets. Each takes one input of any bytes, drives the real
 * parser with it and releases everything it made. The libFuzzer mains in fuzz/ and the
 * regression test tests/test_fuzz_regressions.c call these same functions, so a saved crash
 * replays through exactly the code that found it.
 *
 * The functions return nothing: a rejected input is a normal outcome. A bug shows up as a
 * sanitizer report, a crash or a QUILL_ASSERT. Safe from any thread, because the shared
 * vocabularies are built once under pthread_once and never modified.
 */
#ifndef QUILL_FUZZ_ENTRIES_H
#define QUILL_FUZZ_ENTRIES_H

#include <stddef.h>
#include <stdint.h>

/* Environment variable with up to two GGUF paths, separated by ':', whose vocabularies the
 * tokenizer target uses besides its built-in ones (for example a real Llama or GPT-2 vocab). */
#define QUILL_FUZZ_VOCABS_ENV "QUILL_FUZZ_VOCABS"

/* Opens data as a GGUF file from memory and reads every metadata value and tensor. When the
 * file opens, it also loads the tokenizer (encoding and decoding a fixed text) and parses and
 * renders tokenizer.chat_template. */
void quill_fuzz_gguf(const uint8_t *data, size_t n_bytes);

/* Parses data as a chat template and renders it twice with a fixed conversation: without tools
 * and without the generation prompt, then with tools, extra variables and the prompt. */
void quill_fuzz_chat_template(const uint8_t *data, size_t n_bytes);

/* Encodes and decodes arbitrary bytes with one of the fuzz vocabularies. Byte 0 selects the
 * vocabulary (bits 0-2), the encode flags (bits 3-4), special ranges (bit 5) and the decode
 * options (bits 6-7). The remaining bytes are the text, and are also read as little-endian
 * int32 token ids for decoding. */
void quill_fuzz_tokenizer(const uint8_t *data, size_t n_bytes);

/* Parses data as an OpenAI request body. Byte 0 selects the endpoint (bit 0) and the
 * vocabulary size bound (bit 1). The rest is the JSON body. A parsed chat request's messages
 * are normalized and rendered with the default template. */
void quill_fuzz_openai_request(const uint8_t *data, size_t n_bytes);

#endif
