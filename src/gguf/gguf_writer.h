/*
 * GGUF writer (version 3): collects metadata and tensors in memory and writes a file that
 * quill_gguf_open reads back. Tests use it to build tiny models; the quantizer and the download
 * tests use it to produce files. One thread at a time.
 */
#ifndef QUILL_GGUF_WRITER_H
#define QUILL_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/gguf.h"
#include "quill/status.h"

typedef struct quill_gguf_writer quill_gguf_writer;

/* Returns a new writer in *out; the caller destroys it. Alignment defaults to 32 bytes. */
quill_status quill__gguf_writer_create(quill_gguf_writer **out);
void quill__gguf_writer_destroy(quill_gguf_writer *writer);

/* Metadata setters. Keys are copied; setting a key twice replaces its value. */
quill_status quill__gguf_writer_set_u32(quill_gguf_writer *writer, const char *key, uint32_t value);
quill_status quill__gguf_writer_set_i32(quill_gguf_writer *writer, const char *key, int32_t value);
quill_status quill__gguf_writer_set_u64(quill_gguf_writer *writer, const char *key, uint64_t value);
quill_status quill__gguf_writer_set_f32(quill_gguf_writer *writer, const char *key, float value);
quill_status quill__gguf_writer_set_bool(quill_gguf_writer *writer, const char *key, bool value);
quill_status quill__gguf_writer_set_string(quill_gguf_writer *writer, const char *key,
                                           const char *value);
quill_status quill__gguf_writer_set_string_array(quill_gguf_writer *writer, const char *key,
                                                 const char *const *values, uint64_t n_values);
quill_status quill__gguf_writer_set_f32_array(quill_gguf_writer *writer, const char *key,
                                              const float *values, uint64_t n_values);
quill_status quill__gguf_writer_set_i32_array(quill_gguf_writer *writer, const char *key,
                                              const int32_t *values, uint64_t n_values);
/* Any value type, for tests of the reader: `payload` is the value's encoded bytes exactly as they
 * follow the type field in the file. */
quill_status quill__gguf_writer_set_raw(quill_gguf_writer *writer, const char *key,
                                        quill_gguf_value_type type, const void *payload,
                                        size_t n_bytes);

/* Adds a tensor with ne in GGUF order (innermost first); data (n_bytes, which must equal the
 * size the type and shape give) is copied. */
quill_status quill__gguf_writer_add_tensor(quill_gguf_writer *writer, const char *name,
                                           uint32_t type, int n_dims, const int64_t *ne,
                                           const void *data, size_t n_bytes);

/* Writes the file. */
quill_status quill__gguf_writer_write_file(const quill_gguf_writer *writer, const char *path);

/* Writes into a new buffer in *data (free with quill__free) of *n_bytes bytes. */
quill_status quill__gguf_writer_write_memory(const quill_gguf_writer *writer, void **data,
                                             size_t *n_bytes);

#endif
