/*
 * GGUF writer: keeps every metadata value as its encoded payload bytes and every tensor as a
 * copy of its data, then lays the file out in one pass (header, metadata, tensor table, padding,
 * data section with each tensor aligned). All multi-byte fields are written little-endian
 * whatever the host order. One thread at a time.
 */
#include "gguf/gguf_writer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/strbuf.h"
#include "quill/tensor_type.h"

enum {
    GGUF_WRITER_VERSION = 3,
    GGUF_WRITER_DEFAULT_ALIGNMENT = 32,
};

typedef struct writer_kv {
    char *key;                  /* NUL-terminated copy */
    quill_gguf_value_type type; /* value type written before the payload */
    uint8_t *payload;           /* encoded value bytes as they follow the type field */
    size_t n_payload_bytes;     /* bytes of payload */
} writer_kv;

typedef struct writer_tensor {
    char *name;       /* NUL-terminated copy */
    uint32_t type;    /* quill_type id */
    int n_dims;       /* 1..4 */
    int64_t ne[4];    /* GGUF order, innermost first */
    uint8_t *data;    /* copy of the tensor bytes */
    size_t n_bytes;   /* bytes of data */
} writer_tensor;

struct quill_gguf_writer {
    writer_kv *kvs;            /* metadata in insertion order */
    size_t n_kvs;              /* entries used */
    size_t capacity_kvs;       /* entries allocated */
    writer_tensor *tensors;    /* tensors in insertion order */
    size_t n_tensors;          /* entries used */
    size_t capacity_tensors;   /* entries allocated */
};

static void put_u32_le(uint8_t *out, uint32_t value) {
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(value >> (8 * i));
    }
}

static void put_u64_le(uint8_t *out, uint64_t value) {
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(value >> (8 * i));
    }
}

static quill_status append_u32(quill_strbuf *buffer, uint32_t value) {
    uint8_t bytes[4];
    put_u32_le(bytes, value);
    return quill__strbuf_append(buffer, (const char *)bytes, sizeof(bytes));
}

static quill_status append_u64(quill_strbuf *buffer, uint64_t value) {
    uint8_t bytes[8];
    put_u64_le(bytes, value);
    return quill__strbuf_append(buffer, (const char *)bytes, sizeof(bytes));
}

/* A GGUF string: u64 byte count, then the bytes without a NUL. */
static quill_status append_string(quill_strbuf *buffer, const char *text, size_t n_bytes) {
    quill_status status = append_u64(buffer, (uint64_t)n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    return quill__strbuf_append(buffer, text, n_bytes);
}

static quill_status append_padding(quill_strbuf *buffer, size_t alignment) {
    static const char zeros[64] = {0};
    quill_status status = QUILL_OK;
    while (status == QUILL_OK && buffer->length % alignment != 0) {
        size_t n_pad = alignment - buffer->length % alignment;
        status = quill__strbuf_append(buffer, zeros, n_pad < sizeof(zeros) ? n_pad : sizeof(zeros));
    }
    return status;
}

static quill_status check_key(const char *key) {
    if (key == NULL || key[0] == '\0') {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "gguf writer: empty metadata key; pass a key such as "
                               "'general.architecture'");
    }
    return QUILL_OK;
}

static writer_kv *find_kv(const quill_gguf_writer *writer, const char *key) {
    for (size_t i = 0; i < writer->n_kvs; i++) {
        if (strcmp(writer->kvs[i].key, key) == 0) {
            return &writer->kvs[i];
        }
    }
    return NULL;
}

/* Stores a copy of the payload under key, replacing an earlier value of the same key. */
static quill_status set_payload(quill_gguf_writer *writer, const char *key,
                                quill_gguf_value_type type, const void *payload, size_t n_bytes) {
    quill_status status = check_key(key);
    if (status != QUILL_OK) {
        return status;
    }
    uint8_t *copy = quill__malloc(n_bytes);
    if (copy == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory for key '%s' (%zu bytes)",
                               key, n_bytes);
    }
    if (n_bytes > 0) {
        memcpy(copy, payload, n_bytes);
    }

    writer_kv *existing = find_kv(writer, key);
    if (existing != NULL) {
        quill__free(existing->payload);
        existing->type = type;
        existing->payload = copy;
        existing->n_payload_bytes = n_bytes;
        return QUILL_OK;
    }

    if (writer->n_kvs == writer->capacity_kvs) {
        size_t capacity = writer->capacity_kvs == 0 ? 16 : writer->capacity_kvs * 2;
        writer_kv *grown = quill__realloc_array(writer->kvs, capacity, sizeof(*grown));
        if (grown == NULL) {
            quill__free(copy);
            return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory for %zu keys",
                                   capacity);
        }
        writer->kvs = grown;
        writer->capacity_kvs = capacity;
    }
    char *key_copy = quill__strdup(key);
    if (key_copy == NULL) {
        quill__free(copy);
        return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    writer->kvs[writer->n_kvs] = (writer_kv){key_copy, type, copy, n_bytes};
    writer->n_kvs++;
    return QUILL_OK;
}

quill_status quill__gguf_writer_create(quill_gguf_writer **out) {
    *out = NULL;
    quill_gguf_writer *writer = quill__calloc(1, sizeof(*writer));
    if (writer == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory");
    }
    *out = writer;
    return QUILL_OK;
}

void quill__gguf_writer_destroy(quill_gguf_writer *writer) {
    if (writer == NULL) {
        return;
    }
    for (size_t i = 0; i < writer->n_kvs; i++) {
        quill__free(writer->kvs[i].key);
        quill__free(writer->kvs[i].payload);
    }
    for (size_t i = 0; i < writer->n_tensors; i++) {
        quill__free(writer->tensors[i].name);
        quill__free(writer->tensors[i].data);
    }
    quill__free(writer->kvs);
    quill__free(writer->tensors);
    quill__free(writer);
}

quill_status quill__gguf_writer_set_u32(quill_gguf_writer *writer, const char *key,
                                        uint32_t value) {
    uint8_t bytes[4];
    put_u32_le(bytes, value);
    return set_payload(writer, key, QUILL_GGUF_UINT32, bytes, sizeof(bytes));
}

quill_status quill__gguf_writer_set_i32(quill_gguf_writer *writer, const char *key,
                                        int32_t value) {
    uint8_t bytes[4];
    put_u32_le(bytes, (uint32_t)value);
    return set_payload(writer, key, QUILL_GGUF_INT32, bytes, sizeof(bytes));
}

quill_status quill__gguf_writer_set_u64(quill_gguf_writer *writer, const char *key,
                                        uint64_t value) {
    uint8_t bytes[8];
    put_u64_le(bytes, value);
    return set_payload(writer, key, QUILL_GGUF_UINT64, bytes, sizeof(bytes));
}

quill_status quill__gguf_writer_set_f32(quill_gguf_writer *writer, const char *key, float value) {
    uint32_t bits = 0;
    memcpy(&bits, &value, sizeof(bits));
    uint8_t bytes[4];
    put_u32_le(bytes, bits);
    return set_payload(writer, key, QUILL_GGUF_FLOAT32, bytes, sizeof(bytes));
}

quill_status quill__gguf_writer_set_bool(quill_gguf_writer *writer, const char *key, bool value) {
    uint8_t byte = value ? 1 : 0;
    return set_payload(writer, key, QUILL_GGUF_BOOL, &byte, 1);
}

/* Stores the payload encoded in buffer under key and takes ownership of buffer, also on
 * failure. encode_status is the result of encoding it. Encoding fails only when the buffer
 * cannot grow, so any failed encode_status is reported as QUILL_ERR_NOMEM for the key. */
static quill_status set_encoded_payload(quill_gguf_writer *writer, const char *key,
                                        quill_gguf_value_type type, quill_strbuf *buffer,
                                        quill_status encode_status) {
    quill_status status = encode_status;
    if (status == QUILL_OK) {
        status = set_payload(writer, key, type, buffer->data, buffer->length);
    } else {
        status = quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    quill__strbuf_release(buffer);
    return status;
}

quill_status quill__gguf_writer_set_string(quill_gguf_writer *writer, const char *key,
                                           const char *value) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill_status status = append_string(&buffer, value, strlen(value));
    return set_encoded_payload(writer, key, QUILL_GGUF_STRING, &buffer, status);
}

/* Array payload: u32 item type, u64 item count, then the items. */
static quill_status append_array_header(quill_strbuf *buffer, quill_gguf_value_type item_type,
                                        uint64_t n_items) {
    quill_status status = append_u32(buffer, (uint32_t)item_type);
    if (status == QUILL_OK) {
        status = append_u64(buffer, n_items);
    }
    return status;
}

quill_status quill__gguf_writer_set_string_array(quill_gguf_writer *writer, const char *key,
                                                 const char *const *values, uint64_t n_values) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill_status status = append_array_header(&buffer, QUILL_GGUF_STRING, n_values);
    for (uint64_t i = 0; i < n_values && status == QUILL_OK; i++) {
        status = append_string(&buffer, values[i], strlen(values[i]));
    }
    return set_encoded_payload(writer, key, QUILL_GGUF_ARRAY, &buffer, status);
}

quill_status quill__gguf_writer_set_f32_array(quill_gguf_writer *writer, const char *key,
                                              const float *values, uint64_t n_values) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill_status status = append_array_header(&buffer, QUILL_GGUF_FLOAT32, n_values);
    for (uint64_t i = 0; i < n_values && status == QUILL_OK; i++) {
        uint32_t bits = 0;
        memcpy(&bits, &values[i], sizeof(bits));
        status = append_u32(&buffer, bits);
    }
    return set_encoded_payload(writer, key, QUILL_GGUF_ARRAY, &buffer, status);
}

quill_status quill__gguf_writer_set_i32_array(quill_gguf_writer *writer, const char *key,
                                              const int32_t *values, uint64_t n_values) {
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill_status status = append_array_header(&buffer, QUILL_GGUF_INT32, n_values);
    for (uint64_t i = 0; i < n_values && status == QUILL_OK; i++) {
        status = append_u32(&buffer, (uint32_t)values[i]);
    }
    return set_encoded_payload(writer, key, QUILL_GGUF_ARRAY, &buffer, status);
}

quill_status quill__gguf_writer_set_raw(quill_gguf_writer *writer, const char *key,
                                        quill_gguf_value_type type, const void *payload,
                                        size_t n_bytes) {
    return set_payload(writer, key, type, payload, n_bytes);
}

/* Checks a tensor's shape and returns its byte size from the type's block layout. */
static quill_status tensor_expected_bytes(const char *name, uint32_t type, int n_dims,
                                          const int64_t *ne, size_t *n_bytes) {
    *n_bytes = 0;
    if (n_dims < 1 || n_dims > 4) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "gguf writer: tensor '%s' has %d dimensions; expected 1 to 4", name,
                               n_dims);
    }
    size_t n_rows = 1;
    for (int d = 1; d < n_dims; d++) {
        if (ne[d] <= 0 || !quill__size_mul(n_rows, (size_t)ne[d], &n_rows)) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "gguf writer: tensor '%s' has invalid dimension %d = %lld", name,
                                   d, (long long)ne[d]);
        }
    }
    size_t row_bytes = 0;
    if (ne[0] <= 0 || !quill_type_row_bytes(type, ne[0], &row_bytes)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "gguf writer: tensor '%s' of type %s (id %u) cannot have rows of "
                               "%lld elements; use a known type and a multiple of its block size",
                               name, quill_type_name(type), type, (long long)ne[0]);
    }
    if (!quill__size_mul(row_bytes, n_rows, n_bytes)) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "gguf writer: tensor '%s' is too large",
                               name);
    }
    return QUILL_OK;
}

quill_status quill__gguf_writer_add_tensor(quill_gguf_writer *writer, const char *name,
                                           uint32_t type, int n_dims, const int64_t *ne,
                                           const void *data, size_t n_bytes) {
    if (name == NULL || name[0] == '\0') {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "gguf writer: empty tensor name");
    }
    size_t expected_bytes = 0;
    quill_status status = tensor_expected_bytes(name, type, n_dims, ne, &expected_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    if (expected_bytes != n_bytes) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "gguf writer: tensor '%s' has %zu bytes of data but its type and "
                               "shape need %zu",
                               name, n_bytes, expected_bytes);
    }
    for (size_t i = 0; i < writer->n_tensors; i++) {
        if (strcmp(writer->tensors[i].name, name) == 0) {
            return quill_error_set(QUILL_ERR_INVALID_ARG,
                                   "gguf writer: tensor '%s' was already added", name);
        }
    }

    if (writer->n_tensors == writer->capacity_tensors) {
        size_t capacity = writer->capacity_tensors == 0 ? 16 : writer->capacity_tensors * 2;
        writer_tensor *grown = quill__realloc_array(writer->tensors, capacity, sizeof(*grown));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory for %zu tensors",
                                   capacity);
        }
        writer->tensors = grown;
        writer->capacity_tensors = capacity;
    }
    writer_tensor tensor = {.type = type, .n_dims = n_dims, .n_bytes = n_bytes};
    for (int d = 0; d < 4; d++) {
        tensor.ne[d] = d < n_dims ? ne[d] : 1;
    }
    tensor.name = quill__strdup(name);
    tensor.data = quill__malloc(n_bytes);
    if (tensor.name == NULL || tensor.data == NULL) {
        quill__free(tensor.name);
        quill__free(tensor.data);
        return quill_error_set(QUILL_ERR_NOMEM,
                               "gguf writer: out of memory for tensor '%s' (%zu bytes)", name,
                               n_bytes);
    }
    if (n_bytes > 0) {
        memcpy(tensor.data, data, n_bytes);
    }
    writer->tensors[writer->n_tensors] = tensor;
    writer->n_tensors++;
    return QUILL_OK;
}

/* Uses general.alignment when the caller set it as a u32 power of two, else 32 bytes. */
static size_t writer_alignment(const quill_gguf_writer *writer) {
    const writer_kv *kv = find_kv(writer, "general.alignment");
    if (kv == NULL || kv->type != QUILL_GGUF_UINT32 || kv->n_payload_bytes != 4) {
        return GGUF_WRITER_DEFAULT_ALIGNMENT;
    }
    uint32_t value = (uint32_t)kv->payload[0] | (uint32_t)kv->payload[1] << 8 |
                     (uint32_t)kv->payload[2] << 16 | (uint32_t)kv->payload[3] << 24;
    if (value == 0 || (value & (value - 1)) != 0) {
        return GGUF_WRITER_DEFAULT_ALIGNMENT;
    }
    return value;
}

static quill_status serialize(const quill_gguf_writer *writer, quill_strbuf *buffer) {
    size_t alignment = writer_alignment(writer);

    /* Header: magic "GGUF", version, tensor count, metadata count. */
    quill_status status = quill__strbuf_append(buffer, "GGUF", 4);
    if (status == QUILL_OK) {
        status = append_u32(buffer, GGUF_WRITER_VERSION);
    }
    if (status == QUILL_OK) {
        status = append_u64(buffer, (uint64_t)writer->n_tensors);
    }
    if (status == QUILL_OK) {
        status = append_u64(buffer, (uint64_t)writer->n_kvs);
    }

    /* Metadata: key, value type, payload. */
    for (size_t i = 0; i < writer->n_kvs && status == QUILL_OK; i++) {
        const writer_kv *kv = &writer->kvs[i];
        status = append_string(buffer, kv->key, strlen(kv->key));
        if (status == QUILL_OK) {
            status = append_u32(buffer, (uint32_t)kv->type);
        }
        if (status == QUILL_OK) {
            status = quill__strbuf_append(buffer, (const char *)kv->payload, kv->n_payload_bytes);
        }
    }

    /* Tensor table: each offset is relative to the data section and aligned. */
    size_t offset = 0;
    for (size_t i = 0; i < writer->n_tensors && status == QUILL_OK; i++) {
        const writer_tensor *tensor = &writer->tensors[i];
        status = append_string(buffer, tensor->name, strlen(tensor->name));
        if (status == QUILL_OK) {
            status = append_u32(buffer, (uint32_t)tensor->n_dims);
        }
        for (int d = 0; d < tensor->n_dims && status == QUILL_OK; d++) {
            status = append_u64(buffer, (uint64_t)tensor->ne[d]);
        }
        if (status == QUILL_OK) {
            status = append_u32(buffer, tensor->type);
        }
        if (status == QUILL_OK) {
            status = append_u64(buffer, (uint64_t)offset);
        }
        offset += (tensor->n_bytes + alignment - 1) / alignment * alignment;
    }

    /* Data section: starts aligned, each tensor padded to the alignment. */
    if (status == QUILL_OK) {
        status = append_padding(buffer, alignment);
    }
    for (size_t i = 0; i < writer->n_tensors && status == QUILL_OK; i++) {
        const writer_tensor *tensor = &writer->tensors[i];
        status = quill__strbuf_append(buffer, (const char *)tensor->data, tensor->n_bytes);
        if (status == QUILL_OK) {
            status = append_padding(buffer, alignment);
        }
    }
    if (status != QUILL_OK) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory after %zu bytes",
                               buffer->length);
    }
    return QUILL_OK;
}

quill_status quill__gguf_writer_write_memory(const quill_gguf_writer *writer, void **data,
                                             size_t *n_bytes) {
    *data = NULL;
    *n_bytes = 0;
    quill_strbuf buffer;
    quill__strbuf_init(&buffer);
    quill_status status = serialize(writer, &buffer);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    size_t length = buffer.length;
    char *taken = quill__strbuf_take(&buffer);
    if (taken == NULL) {
        status = quill_error_set(QUILL_ERR_NOMEM, "gguf writer: out of memory");
        goto cleanup;
    }
    *data = taken;
    *n_bytes = length;

cleanup:
    quill__strbuf_release(&buffer);
    return status;
}

quill_status quill__gguf_writer_write_file(const quill_gguf_writer *writer, const char *path) {
    void *data = NULL;
    size_t n_bytes = 0;
    FILE *stream = NULL;
    quill_status status = quill__gguf_writer_write_memory(writer, &data, &n_bytes);
    if (status != QUILL_OK) {
        goto cleanup;
    }
    stream = fopen(path, "wb");
    if (stream == NULL) {
        int saved_errno = errno;
        char reason[128];
        status = quill_error_set(QUILL_ERR_IO, "gguf writer: cannot create '%s': %s", path,
                                 strerror_r(saved_errno, reason, sizeof(reason)));
        goto cleanup;
    }
    size_t n_written = fwrite(data, 1, n_bytes, stream);
    int close_result = fclose(stream);
    stream = NULL;
    if (n_written != n_bytes || close_result != 0) {
        int saved_errno = errno;
        char reason[128];
        status = quill_error_set(QUILL_ERR_IO,
                                 "gguf writer: writing %zu bytes to '%s' failed: %s; check the "
                                 "free disk space",
                                 n_bytes, path, strerror_r(saved_errno, reason, sizeof(reason)));
        goto cleanup;
    }

cleanup:
    quill__free(data);
    return status;
}
