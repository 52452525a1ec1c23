/*
 * GGUF reader. Opens a file read-only with mmap, validates the whole header (metadata, tensor
 * table, alignment, every tensor inside the file) with overflow-safe arithmetic, and exposes the
 * metadata and tensors without copying tensor data. Versions 2 and 3 are read; version 1 and
 * big-endian files are rejected with a message that says so.
 *
 * A quill_gguf is immutable after open: safe from any thread for reading.
 */
#ifndef QUILL_GGUF_H
#define QUILL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quill/api.h"
#include "quill/status.h"

QUILL_EXTERN_C_BEGIN

typedef struct quill_gguf quill_gguf;

/* Metadata value types, numbered as in the file format. */
typedef enum quill_gguf_value_type {
    QUILL_GGUF_UINT8 = 0,
    QUILL_GGUF_INT8 = 1,
    QUILL_GGUF_UINT16 = 2,
    QUILL_GGUF_INT16 = 3,
    QUILL_GGUF_UINT32 = 4,
    QUILL_GGUF_INT32 = 5,
    QUILL_GGUF_FLOAT32 = 6,
    QUILL_GGUF_BOOL = 7,
    QUILL_GGUF_STRING = 8,
    QUILL_GGUF_ARRAY = 9,
    QUILL_GGUF_UINT64 = 10,
    QUILL_GGUF_INT64 = 11,
    QUILL_GGUF_FLOAT64 = 12,
} quill_gguf_value_type;

/* A borrowed view of an array value; valid while the quill_gguf is open. For fixed-size element
 * types `data` points at n_items packed little-endian values in the mapping (not necessarily
 * aligned: read them with the quill_gguf_array_* accessors). For strings and nested arrays use
 * quill_gguf_array_string / quill_gguf_array_array. */
typedef struct quill_gguf_array {
    const quill_gguf *file;              /* owner */
    quill_gguf_value_type item_type;     /* type of each element */
    uint64_t n_items;                    /* element count */
    const uint8_t *data;                 /* first element in the mapping */
    int64_t offsets_index;               /* internal: index of precomputed item offsets, or -1 */
} quill_gguf_array;

/* One tensor of the file. Dimensions are in GGUF order, innermost (contiguous) first: a matrix
 * of n_rows rows of n_cols elements has ne[0] = n_cols, ne[1] = n_rows. */
typedef struct quill_gguf_tensor {
    const char *name;      /* NUL-terminated copy */
    uint32_t type;         /* quill_type id */
    int n_dims;            /* 1..4 */
    int64_t ne[4];         /* elements per dimension; unused dimensions are 1 */
    uint64_t offset;       /* from the start of the data section */
    const void *data;      /* in the mapping, aligned to general.alignment */
    size_t n_bytes;        /* bytes of data */
} quill_gguf_tensor;

/* Opens and validates path. Returns a new reader in *out; the caller closes it. Errors name the
 * file, the field and the value (QUILL_ERR_IO, QUILL_ERR_FORMAT, QUILL_ERR_UNSUPPORTED). */
QUILL_API quill_status quill_gguf_open(const char *path, quill_gguf **out);

/* Same as quill_gguf_open over a caller's memory, which must stay valid and unchanged until
 * close; `name` is used in messages. */
QUILL_API quill_status quill_gguf_open_memory(const void *data, size_t n_bytes, const char *name,
                                              quill_gguf **out);

/* Unmaps and frees. Accepts NULL. */
QUILL_API void quill_gguf_close(quill_gguf *file);

QUILL_API const char *quill_gguf_path(const quill_gguf *file);
QUILL_API uint32_t quill_gguf_version(const quill_gguf *file);
QUILL_API size_t quill_gguf_file_bytes(const quill_gguf *file);
QUILL_API size_t quill_gguf_alignment(const quill_gguf *file);

/* Metadata by index in [0, n_kv). */
QUILL_API int64_t quill_gguf_n_kv(const quill_gguf *file);
QUILL_API const char *quill_gguf_key(const quill_gguf *file, int64_t index);
QUILL_API quill_gguf_value_type quill_gguf_kv_type(const quill_gguf *file, int64_t index);

/* Returns the index of key, or -1. */
QUILL_API int64_t quill_gguf_find_key(const quill_gguf *file, const char *key);

/* Typed getters by key. Return QUILL_ERR_NOT_FOUND when the key is absent (no message is set,
 * so callers can apply defaults) and QUILL_ERR_FORMAT, with a message naming the key, its type
 * and the expected type, when the value does not fit. Integer getters accept any integer type
 * whose value fits; the float getter accepts FLOAT32 and FLOAT64. */
QUILL_API quill_status quill_gguf_get_u32(const quill_gguf *file, const char *key, uint32_t *out);
QUILL_API quill_status quill_gguf_get_i64(const quill_gguf *file, const char *key, int64_t *out);
QUILL_API quill_status quill_gguf_get_u64(const quill_gguf *file, const char *key, uint64_t *out);
QUILL_API quill_status quill_gguf_get_f32(const quill_gguf *file, const char *key, float *out);
QUILL_API quill_status quill_gguf_get_f64(const quill_gguf *file, const char *key, double *out);
QUILL_API quill_status quill_gguf_get_bool(const quill_gguf *file, const char *key, bool *out);
/* Borrowed string, not NUL-terminated: bytes at *data, *n_bytes long; valid while open. */
QUILL_API quill_status quill_gguf_get_string(const quill_gguf *file, const char *key,
                                             const char **data, size_t *n_bytes);
QUILL_API quill_status quill_gguf_get_array(const quill_gguf *file, const char *key,
                                            quill_gguf_array *out);

/* The same getters by metadata index (for listing all keys). */
QUILL_API quill_status quill_gguf_kv_string(const quill_gguf *file, int64_t index,
                                            const char **data, size_t *n_bytes);
QUILL_API quill_status quill_gguf_kv_array(const quill_gguf *file, int64_t index,
                                           quill_gguf_array *out);
/* Converts any scalar numeric or bool value to double (for printing). */
QUILL_API quill_status quill_gguf_kv_number(const quill_gguf *file, int64_t index, double *out);

/* Array element accessors; index < n_items is the caller's duty. */
QUILL_API int64_t quill_gguf_array_int(const quill_gguf_array *array, uint64_t index);
QUILL_API double quill_gguf_array_float(const quill_gguf_array *array, uint64_t index);
QUILL_API void quill_gguf_array_string(const quill_gguf_array *array, uint64_t index,
                                       const char **data, size_t *n_bytes);
QUILL_API void quill_gguf_array_array(const quill_gguf_array *array, uint64_t index,
                                      quill_gguf_array *out);

/* Tensors by index in [0, n_tensors) or by name (NULL when absent). Borrowed: valid while
 * open. */
QUILL_API int64_t quill_gguf_n_tensors(const quill_gguf *file);
QUILL_API const quill_gguf_tensor *quill_gguf_tensor_at(const quill_gguf *file, int64_t index);
QUILL_API const quill_gguf_tensor *quill_gguf_find_tensor(const quill_gguf *file,
                                                          const char *name);

QUILL_EXTERN_C_END

#endif
