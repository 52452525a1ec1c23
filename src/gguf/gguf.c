/*
 * GGUF reader. The whole header is parsed and validated once at open: every read is checked
 * against the bytes left in the mapping with overflow-safe arithmetic, so that after a
 * successful open every accessor can read the mapping without further checks. String arrays
 * and arrays of arrays get a table of item offsets at open, so item i is found in O(1). Keys and
 * tensor names are indexed in open-addressing hash tables.
 *
 * File layout, with every field little-endian:
 *   magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
 *   n_kv entries of (string key, u32 value type, value)
 *   n_tensors entries of (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset)
 *   padding to general.alignment, then the data section that tensor offsets count from.
 * A string is a u64 byte count followed by the bytes; an array is u32 item type, u64 count,
 * items.
 *
 * A quill_gguf is immutable after open, so it is safe from any thread for reading.
 */
#include "quill/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "quill/tensor_type.h"

enum {
    GGUF_DEFAULT_ALIGNMENT = 32,
    /* Arrays of arrays deeper than this are rejected, which bounds the parser's recursion. */
    GGUF_MAX_ARRAY_DEPTH = 8,
    /* Smallest encodings, used to reject counts that the remaining bytes cannot hold. */
    GGUF_MIN_KV_BYTES = 8 + 4 + 1,           /* key length, type, one-byte value */
    GGUF_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8, /* name length, n_dims, ne[0], type, offset */
};

/* The magic "GGUF" read as a little-endian u32, and as a big-endian reader would see it. */
#define GGUF_MAGIC_LE 0x46554747u
#define GGUF_MAGIC_SWAPPED 0x47475546u

/* Item offsets of one string array or array of arrays. */
typedef struct offset_table {
    uint64_t *item_offsets; /* [n_items] byte offset of item i from the array's data */
    int64_t *item_tables;   /* [n_items] offsets_index of each inner array, or NULL */
} offset_table;

typedef struct gguf_kv {
    char *key;                  /* NUL-terminated copy */
    quill_gguf_value_type type; /* value type */
    const uint8_t *value;       /* value bytes in the mapping */
    quill_gguf_array array;     /* the array view when type is ARRAY */
} gguf_kv;

/* Open-addressing hash table of indices into the kv or tensor list. -1 marks a free slot. */
typedef struct name_index {
    int64_t *slots; /* [mask + 1] */
    size_t mask;    /* slot count minus one, with a power-of-two slot count */
} name_index;

struct quill_gguf {
    char *path;                 /* path or caller's name, for messages */
    const uint8_t *bytes;       /* mapping or caller's memory */
    size_t n_bytes;             /* bytes of the file */
    bool is_mapped;             /* bytes come from mmap and are unmapped at close */
    uint32_t version;           /* 2 or 3 */
    size_t alignment;           /* general.alignment, a power of two */
    size_t data_offset;         /* start of the data section from the file start */
    int64_t n_kv;               /* metadata entries */
    gguf_kv *kvs;               /* [n_kv] */
    int64_t n_tensors;          /* tensors */
    quill_gguf_tensor *tensors; /* [n_tensors] */
    offset_table *tables;       /* [n_tables] */
    int64_t n_tables;           /* tables used */
    int64_t capacity_tables;    /* tables allocated */
    name_index kv_index;        /* keys */
    name_index tensor_index;    /* tensor names */
};

/* A read position in the file being opened. */
typedef struct parser {
    quill_gguf *file; /* the file being built */
    size_t position;  /* next byte to read */
} parser;

static uint16_t load_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p) {
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static float load_f32(const uint8_t *p) {
    uint32_t bits = load_u32(p);
    float value = 0.0f;
    memcpy(&value, &bits, sizeof(value));
    return value;
}

static double load_f64(const uint8_t *p) {
    uint64_t bits = load_u64(p);
    double value = 0.0;
    memcpy(&value, &bits, sizeof(value));
    return value;
}

static const char *value_type_name(uint32_t type) {
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32",
                                        "i32",  "f32",    "bool",  "string", "array",
                                        "u64",  "i64",    "f64"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

/* Bytes of one item of a fixed-size type, or 0 for string, array and unknown types. */
static size_t value_type_bytes(uint32_t type) {
    switch (type) {
    case QUILL_GGUF_UINT8:
    case QUILL_GGUF_INT8:
    case QUILL_GGUF_BOOL:
        return 1;
    case QUILL_GGUF_UINT16:
    case QUILL_GGUF_INT16:
        return 2;
    case QUILL_GGUF_UINT32:
    case QUILL_GGUF_INT32:
    case QUILL_GGUF_FLOAT32:
        return 4;
    case QUILL_GGUF_UINT64:
    case QUILL_GGUF_INT64:
    case QUILL_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static bool is_integer_type(quill_gguf_value_type type) {
    return type == QUILL_GGUF_UINT8 || type == QUILL_GGUF_INT8 || type == QUILL_GGUF_UINT16 ||
           type == QUILL_GGUF_INT16 || type == QUILL_GGUF_UINT32 || type == QUILL_GGUF_INT32 ||
           type == QUILL_GGUF_UINT64 || type == QUILL_GGUF_INT64;
}

/* Reads an integer item as a signed value. A u64 above INT64_MAX is reported in *is_huge. */
static int64_t load_integer(quill_gguf_value_type type, const uint8_t *p, bool *is_huge) {
    *is_huge = false;
    switch (type) {
    case QUILL_GGUF_UINT8:
    case QUILL_GGUF_BOOL:
        return p[0];
    case QUILL_GGUF_INT8:
        return (int8_t)p[0];
    case QUILL_GGUF_UINT16:
        return load_u16(p);
    case QUILL_GGUF_INT16:
        return (int16_t)load_u16(p);
    case QUILL_GGUF_UINT32:
        return load_u32(p);
    case QUILL_GGUF_INT32:
        return (int32_t)load_u32(p);
    case QUILL_GGUF_UINT64: {
        uint64_t value = load_u64(p);
        *is_huge = value > (uint64_t)INT64_MAX;
        return (int64_t)value;
    }
    case QUILL_GGUF_INT64:
        return (int64_t)load_u64(p);
    default:
        return 0;
    }
}

static double load_number(quill_gguf_value_type type, const uint8_t *p) {
    if (type == QUILL_GGUF_FLOAT32) {
        return load_f32(p);
    }
    if (type == QUILL_GGUF_FLOAT64) {
        return load_f64(p);
    }
    if (type == QUILL_GGUF_UINT64) {
        return (double)load_u64(p);
    }
    bool is_huge = false;
    return (double)load_integer(type, p, &is_huge);
}

/* ---- Name index ---------------------------------------------------------------------------- */

static uint64_t hash_name(const char *name) {
    /* FNV-1a, 64 bits. */
    uint64_t hash = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        hash ^= *p;
        hash *= 0x100000001b3ull;
    }
    return hash;
}

typedef const char *(*name_at_fn)(const quill_gguf *file, int64_t index);

static const char *kv_name_at(const quill_gguf *file, int64_t index) {
    return file->kvs[index].key;
}

static const char *tensor_name_at(const quill_gguf *file, int64_t index) {
    return file->tensors[index].name;
}

static int64_t index_find(const quill_gguf *file, const name_index *index, name_at_fn name_at,
                          const char *name) {
    if (index->slots == NULL || name == NULL) {
        return -1;
    }
    size_t slot = (size_t)hash_name(name) & index->mask;
    while (index->slots[slot] >= 0) {
        if (strcmp(name_at(file, index->slots[slot]), name) == 0) {
            return index->slots[slot];
        }
        slot = (slot + 1) & index->mask;
    }
    return -1;
}

/* Builds the index of n names and reports the first duplicate by its two indices. */
static quill_status index_build(quill_gguf *file, name_index *index, int64_t n, name_at_fn name_at,
                                const char *what) {
    size_t n_slots = 8;
    while (n_slots < (size_t)n * 2) {
        n_slots *= 2;
    }
    index->slots = quill__malloc_array(n_slots, sizeof(*index->slots));
    if (index->slots == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for the index of %lld %ss",
                               file->path, (long long)n, what);
    }
    index->mask = n_slots - 1;
    for (size_t i = 0; i < n_slots; i++) {
        index->slots[i] = -1;
    }
    for (int64_t i = 0; i < n; i++) {
        const char *name = name_at(file, i);
        int64_t existing = index_find(file, index, name_at, name);
        if (existing >= 0) {
            return quill_error_set(QUILL_ERR_FORMAT,
                                   "gguf: %s: %s '%s' appears twice (entries %lld and %lld); the "
                                   "file is corrupt, convert or download it again",
                                   file->path, what, name, (long long)existing, (long long)i);
        }
        size_t slot = (size_t)hash_name(name) & index->mask;
        while (index->slots[slot] >= 0) {
            slot = (slot + 1) & index->mask;
        }
        index->slots[slot] = i;
    }
    return QUILL_OK;
}

/* ---- Parser -------------------------------------------------------------------------------- */

static quill_status truncated(const parser *p, const char *what, uint64_t n_needed) {
    return quill_error_set(QUILL_ERR_FORMAT,
                           "gguf: %s: %s at byte %zu needs %llu bytes but the file has %zu bytes; "
                           "the file is truncated, download it again",
                           p->file->path, what, p->position, (unsigned long long)n_needed,
                           p->file->n_bytes);
}

static size_t bytes_left(const parser *p) {
    return p->file->n_bytes - p->position;
}

/* Returns a pointer to the next n bytes and advances, or NULL when fewer remain. */
static const uint8_t *take(parser *p, uint64_t n) {
    if (n > bytes_left(p)) {
        return NULL;
    }
    const uint8_t *at = p->file->bytes + p->position;
    p->position += (size_t)n;
    return at;
}

static quill_status read_u32(parser *p, const char *what, uint32_t *out) {
    const uint8_t *at = take(p, 4);
    if (at == NULL) {
        return truncated(p, what, 4);
    }
    *out = load_u32(at);
    return QUILL_OK;
}

static quill_status read_u64(parser *p, const char *what, uint64_t *out) {
    const uint8_t *at = take(p, 8);
    if (at == NULL) {
        return truncated(p, what, 8);
    }
    *out = load_u64(at);
    return QUILL_OK;
}

/* Reads a string's length and bytes, which stay in the mapping. */
static quill_status read_string(parser *p, const char *what, const uint8_t **data,
                                uint64_t *n_bytes) {
    quill_status status = read_u64(p, what, n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    *data = take(p, *n_bytes);
    if (*data == NULL) {
        return truncated(p, what, *n_bytes);
    }
    return QUILL_OK;
}

/* Reads a key or tensor name into a new NUL-terminated copy. */
static quill_status read_name(parser *p, const char *what, int64_t index, char **out) {
    *out = NULL;
    const uint8_t *data = NULL;
    uint64_t n_bytes = 0;
    quill_status status = read_string(p, what, &data, &n_bytes);
    if (status != QUILL_OK) {
        return status;
    }
    if (memchr(data, '\0', (size_t)n_bytes) != NULL) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: %s %lld contains a NUL byte; the file is corrupt, "
                               "convert or download it again",
                               p->file->path, what, (long long)index);
    }
    *out = quill__strndup((const char *)data, (size_t)n_bytes);
    if (*out == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for %s %lld",
                               p->file->path, what, (long long)index);
    }
    return QUILL_OK;
}

static quill_status check_value_type(const parser *p, const char *key, uint32_t type) {
    if (type > QUILL_GGUF_FLOAT64) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: key '%s' has unknown value type %u (valid: 0 to 12); "
                               "the file is corrupt or from a newer GGUF version",
                               p->file->path, key, type);
    }
    return QUILL_OK;
}

/* Checks a fixed-size value at the current position and skips it. */
static quill_status skip_fixed(parser *p, const char *key, quill_gguf_value_type type,
                               uint64_t n_items) {
    size_t item_bytes = value_type_bytes(type);
    const uint8_t *at = take(p, n_items * item_bytes); /* n_items was bounded by the caller */
    if (at == NULL) {
        return truncated(p, key, n_items * item_bytes);
    }
    if (type == QUILL_GGUF_BOOL) {
        for (uint64_t i = 0; i < n_items; i++) {
            if (at[i] > 1) {
                return quill_error_set(QUILL_ERR_FORMAT,
                                       "gguf: %s: key '%s' has invalid bool value %u (item %llu); "
                                       "expected 0 or 1, the file is corrupt",
                                       p->file->path, key, at[i], (unsigned long long)i);
            }
        }
    }
    return QUILL_OK;
}

static quill_status register_table(parser *p, offset_table table, int64_t *index) {
    quill_gguf *file = p->file;
    if (file->n_tables == file->capacity_tables) {
        int64_t capacity = file->capacity_tables == 0 ? 8 : file->capacity_tables * 2;
        offset_table *grown =
            quill__realloc_array(file->tables, (size_t)capacity, sizeof(*grown));
        if (grown == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for array tables",
                                   file->path);
        }
        file->tables = grown;
        file->capacity_tables = capacity;
    }
    file->tables[file->n_tables] = table;
    *index = file->n_tables;
    file->n_tables++;
    return QUILL_OK;
}

static quill_status parse_array(parser *p, const char *key, int depth, quill_gguf_array *out);

/* Records the offset of each string or inner array of an array and validates the items. */
static quill_status parse_array_items(parser *p, const char *key, int depth,
                                      quill_gguf_array *array) {
    offset_table table = {NULL, NULL};
    quill_status status = QUILL_OK;
    size_t data_position = p->position;

    table.item_offsets = quill__malloc_array((size_t)array->n_items, sizeof(uint64_t));
    if (array->item_type == QUILL_GGUF_ARRAY) {
        table.item_tables = quill__malloc_array((size_t)array->n_items, sizeof(int64_t));
    }
    if (table.item_offsets == NULL ||
        (array->item_type == QUILL_GGUF_ARRAY && table.item_tables == NULL)) {
        status = quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for the %llu items "
                                 "of key '%s'", p->file->path,
                                 (unsigned long long)array->n_items, key);
        goto cleanup;
    }
    for (uint64_t i = 0; i < array->n_items; i++) {
        table.item_offsets[i] = p->position - data_position;
        if (array->item_type == QUILL_GGUF_STRING) {
            const uint8_t *data = NULL;
            uint64_t n_bytes = 0;
            status = read_string(p, key, &data, &n_bytes);
        } else {
            quill_gguf_array inner;
            status = parse_array(p, key, depth + 1, &inner);
            table.item_tables[i] = inner.offsets_index;
        }
        if (status != QUILL_OK) {
            goto cleanup;
        }
    }
    status = register_table(p, table, &array->offsets_index);
    if (status == QUILL_OK) {
        table = (offset_table){NULL, NULL};
    }

cleanup:
    quill__free(table.item_offsets);
    quill__free(table.item_tables);
    return status;
}

/* Parses an array value (item type, count, items) at the current position. */
static quill_status parse_array(parser *p, const char *key, int depth, quill_gguf_array *out) {
    *out = (quill_gguf_array){p->file, QUILL_GGUF_UINT8, 0, NULL, -1};
    if (depth > GGUF_MAX_ARRAY_DEPTH) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: key '%s' nests arrays deeper than %d levels; the file "
                               "is corrupt",
                               p->file->path, key, GGUF_MAX_ARRAY_DEPTH);
    }
    uint32_t item_type = 0;
    uint64_t n_items = 0;
    quill_status status = read_u32(p, key, &item_type);
    if (status == QUILL_OK) {
        status = check_value_type(p, key, item_type);
    }
    if (status == QUILL_OK) {
        status = read_u64(p, key, &n_items);
    }
    if (status != QUILL_OK) {
        return status;
    }

    /* Each item takes at least its fixed size, a string length or an array header. */
    size_t min_item_bytes = value_type_bytes(item_type);
    if (item_type == QUILL_GGUF_STRING) {
        min_item_bytes = 8;
    } else if (item_type == QUILL_GGUF_ARRAY) {
        min_item_bytes = 12;
    }
    if (n_items > bytes_left(p) / min_item_bytes) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: key '%s' claims %llu items of type %s at byte %zu but "
                               "only %zu bytes remain; the file is corrupt or truncated, download "
                               "it again",
                               p->file->path, key, (unsigned long long)n_items,
                               value_type_name(item_type), p->position, bytes_left(p));
    }
    out->item_type = (quill_gguf_value_type)item_type;
    out->n_items = n_items;
    out->data = p->file->bytes + p->position;
    if (item_type == QUILL_GGUF_STRING || item_type == QUILL_GGUF_ARRAY) {
        return parse_array_items(p, key, depth, out);
    }
    return skip_fixed(p, key, (quill_gguf_value_type)item_type, n_items);
}

static quill_status parse_kv(parser *p, int64_t index) {
    gguf_kv *kv = &p->file->kvs[index];
    quill_status status = read_name(p, "metadata key", index, &kv->key);
    uint32_t type = 0;
    if (status == QUILL_OK) {
        status = read_u32(p, kv->key, &type);
    }
    if (status == QUILL_OK) {
        status = check_value_type(p, kv->key, type);
    }
    if (status != QUILL_OK) {
        return status;
    }
    kv->type = (quill_gguf_value_type)type;
    kv->value = p->file->bytes + p->position;
    kv->array = (quill_gguf_array){p->file, QUILL_GGUF_UINT8, 0, NULL, -1};
    if (type == QUILL_GGUF_STRING) {
        const uint8_t *data = NULL;
        uint64_t n_bytes = 0;
        return read_string(p, kv->key, &data, &n_bytes);
    }
    if (type == QUILL_GGUF_ARRAY) {
        return parse_array(p, kv->key, 0, &kv->array);
    }
    return skip_fixed(p, kv->key, kv->type, 1);
}

static quill_status parse_header(parser *p, uint64_t *n_tensors, uint64_t *n_kv) {
    quill_gguf *file = p->file;
    uint32_t magic = 0;
    uint32_t version = 0;
    if (file->n_bytes < 8) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: file has %zu bytes, too short for a GGUF header; the "
                               "file is truncated or not a GGUF model",
                               file->path, file->n_bytes);
    }
    magic = load_u32(file->bytes);
    version = load_u32(file->bytes + 4);
    p->position = 8;
    if (magic == GGUF_MAGIC_SWAPPED ||
        (magic == GGUF_MAGIC_LE && (version & 0xffffu) == 0 && version != 0)) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "gguf: %s: the file is big-endian, which Quill does not read; "
                               "convert it to a little-endian GGUF with llama.cpp",
                               file->path);
    }
    if (magic != GGUF_MAGIC_LE) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: bad magic 0x%08x (expected \"GGUF\"); the file is not a "
                               "GGUF model",
                               file->path, magic);
    }
    if (version == 1) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "gguf: %s: unsupported version 1; convert the file with a current "
                               "llama.cpp",
                               file->path);
    }
    if (version != 2 && version != 3) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "gguf: %s: unsupported version %u; Quill reads GGUF versions 2 and "
                               "3",
                               file->path, version);
    }
    file->version = version;

    quill_status status = read_u64(p, "tensor count", n_tensors);
    if (status == QUILL_OK) {
        status = read_u64(p, "metadata count", n_kv);
    }
    if (status != QUILL_OK) {
        return status;
    }
    if (*n_kv > bytes_left(p) / GGUF_MIN_KV_BYTES) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: header claims %llu metadata entries but the file has "
                               "%zu bytes; the file is corrupt or truncated, download it again",
                               file->path, (unsigned long long)*n_kv, file->n_bytes);
    }
    if (*n_tensors > bytes_left(p) / GGUF_MIN_TENSOR_INFO_BYTES) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: header claims %llu tensors but the file has %zu bytes; "
                               "the file is corrupt or truncated, download it again",
                               file->path, (unsigned long long)*n_tensors, file->n_bytes);
    }
    return QUILL_OK;
}

/* Reads general.alignment when present: a u32 power of two. */
static quill_status parse_alignment(quill_gguf *file) {
    file->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t index = index_find(file, &file->kv_index, kv_name_at, "general.alignment");
    if (index < 0) {
        return QUILL_OK;
    }
    const gguf_kv *kv = &file->kvs[index];
    if (kv->type != QUILL_GGUF_UINT32) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: general.alignment has type %s; expected u32, the file "
                               "is corrupt",
                               file->path, value_type_name(kv->type));
    }
    uint32_t alignment = load_u32(kv->value);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: general.alignment is %u; expected a power of two, the "
                               "file is corrupt",
                               file->path, alignment);
    }
    file->alignment = alignment;
    return QUILL_OK;
}

/* Checks a tensor's dimensions and type and computes its byte size. */
static quill_status check_tensor_shape(parser *p, quill_gguf_tensor *tensor, uint32_t n_dims) {
    const char *path = p->file->path;
    if (n_dims < 1 || n_dims > 4) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: tensor '%s' has %u dimensions; expected 1 to 4, the "
                               "file is corrupt",
                               path, tensor->name, n_dims);
    }
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (tensor->ne[d] <= 0 || __builtin_mul_overflow(n_elements, tensor->ne[d], &n_elements)) {
            return quill_error_set(QUILL_ERR_FORMAT,
                                   "gguf: %s: tensor '%s' has invalid dimension ne[%u] = %lld "
                                   "(elements must be positive and their product fit in 63 "
                                   "bits); the file is corrupt",
                                   path, tensor->name, d, (long long)tensor->ne[d]);
        }
    }
    const quill_type_traits *traits = quill_type_traits_get(tensor->type);
    if (traits == NULL) {
        return quill_error_set(QUILL_ERR_UNSUPPORTED,
                               "gguf: %s: tensor '%s' has unknown type id %u; the file is "
                               "corrupt or uses a type Quill does not know, requantize it",
                               path, tensor->name, tensor->type);
    }
    size_t row_bytes = 0;
    if (!quill_type_row_bytes(tensor->type, tensor->ne[0], &row_bytes)) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: tensor '%s' of type %s has rows of %lld elements, not "
                               "a multiple of the block size %lld; the file is corrupt",
                               path, tensor->name, traits->name, (long long)tensor->ne[0],
                               (long long)traits->block_elements);
    }
    if (!quill__size_mul(row_bytes, (size_t)(n_elements / tensor->ne[0]), &tensor->n_bytes)) {
        return quill_error_set(QUILL_ERR_FORMAT, "gguf: %s: tensor '%s' is too large to address",
                               path, tensor->name);
    }
    return QUILL_OK;
}

static quill_status parse_tensor_info(parser *p, int64_t index) {
    quill_gguf_tensor *tensor = &p->file->tensors[index];
    char *name = NULL;
    quill_status status = read_name(p, "tensor name", index, &name);
    tensor->name = name;
    uint32_t n_dims = 0;
    if (status == QUILL_OK) {
        status = read_u32(p, "tensor dimension count", &n_dims);
    }
    if (status == QUILL_OK && (n_dims < 1 || n_dims > 4)) {
        return check_tensor_shape(p, tensor, n_dims);
    }

    /* Dimensions in GGUF order, innermost first. A value above INT64_MAX becomes -1 so that the
     * shape check rejects it. */
    tensor->n_dims = (int)n_dims;
    for (int d = 0; d < 4; d++) {
        tensor->ne[d] = 1;
    }
    for (uint32_t d = 0; d < n_dims && status == QUILL_OK; d++) {
        uint64_t ne = 0;
        status = read_u64(p, "tensor dimension", &ne);
        tensor->ne[d] = ne > (uint64_t)INT64_MAX ? -1 : (int64_t)ne;
    }

    if (status == QUILL_OK) {
        status = read_u32(p, "tensor type", &tensor->type);
    }
    if (status == QUILL_OK) {
        status = read_u64(p, "tensor offset", &tensor->offset);
    }
    if (status == QUILL_OK) {
        status = check_tensor_shape(p, tensor, n_dims);
    }
    if (status == QUILL_OK && tensor->offset % p->file->alignment != 0) {
        status = quill_error_set(QUILL_ERR_FORMAT,
                                 "gguf: %s: tensor '%s' starts at data offset %llu, not a "
                                 "multiple of the alignment %zu; the file is corrupt",
                                 p->file->path, tensor->name,
                                 (unsigned long long)tensor->offset, p->file->alignment);
    }
    return status;
}

/* Places the data section and checks that every tensor lies inside the file. */
static quill_status place_tensors(parser *p) {
    quill_gguf *file = p->file;
    size_t data_offset = 0;
    if (!quill__size_add(p->position, file->alignment - 1, &data_offset)) {
        return quill_error_set(QUILL_ERR_FORMAT, "gguf: %s: data section offset overflows",
                               file->path);
    }
    data_offset -= data_offset % file->alignment;
    file->data_offset = data_offset;

    for (int64_t i = 0; i < file->n_tensors; i++) {
        quill_gguf_tensor *tensor = &file->tensors[i];
        uint64_t end = 0;
        bool is_overflow = __builtin_add_overflow((uint64_t)data_offset, tensor->offset, &end) ||
                           __builtin_add_overflow(end, (uint64_t)tensor->n_bytes, &end);
        if (is_overflow || end > file->n_bytes) {
            return quill_error_set(QUILL_ERR_FORMAT,
                                   "gguf: %s: tensor '%s' ends at byte %llu but the file has %zu "
                                   "bytes; the file is truncated, download it again",
                                   file->path, tensor->name,
                                   is_overflow ? (unsigned long long)UINT64_MAX
                                               : (unsigned long long)end,
                                   file->n_bytes);
        }
        tensor->data = file->bytes + data_offset + tensor->offset;
    }
    return QUILL_OK;
}

static quill_status parse_file(quill_gguf *file) {
    parser p = {file, 0};
    uint64_t n_tensors = 0;
    uint64_t n_kv = 0;
    quill_status status = parse_header(&p, &n_tensors, &n_kv);
    if (status != QUILL_OK) {
        return status;
    }

    /* Metadata. */
    file->kvs = quill__calloc((size_t)n_kv, sizeof(*file->kvs));
    if (file->kvs == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for %llu metadata "
                               "entries", file->path, (unsigned long long)n_kv);
    }
    for (uint64_t i = 0; i < n_kv && status == QUILL_OK; i++) {
        file->n_kv = (int64_t)i + 1;
        status = parse_kv(&p, (int64_t)i);
    }
    if (status == QUILL_OK) {
        status = index_build(file, &file->kv_index, file->n_kv, kv_name_at, "metadata key");
    }
    if (status == QUILL_OK) {
        status = parse_alignment(file);
    }
    if (status != QUILL_OK) {
        return status;
    }

    /* Tensor table and data. */
    file->tensors = quill__calloc((size_t)n_tensors, sizeof(*file->tensors));
    if (file->tensors == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory for %llu tensors",
                               file->path, (unsigned long long)n_tensors);
    }
    for (uint64_t i = 0; i < n_tensors && status == QUILL_OK; i++) {
        file->n_tensors = (int64_t)i + 1;
        status = parse_tensor_info(&p, (int64_t)i);
    }
    if (status == QUILL_OK) {
        status = index_build(file, &file->tensor_index, file->n_tensors, tensor_name_at,
                             "tensor");
    }
    if (status == QUILL_OK) {
        status = place_tensors(&p);
    }
    return status;
}

/* Builds a reader over bytes; on failure frees everything but the bytes. */
static quill_status open_bytes(const uint8_t *bytes, size_t n_bytes, const char *name,
                               quill_gguf **out) {
    *out = NULL;
    quill_gguf *file = quill__calloc(1, sizeof(*file));
    if (file == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory", name);
    }
    file->path = quill__strdup(name);
    if (file->path == NULL) {
        quill__free(file);
        return quill_error_set(QUILL_ERR_NOMEM, "gguf: %s: out of memory", name);
    }
    file->bytes = bytes;
    file->n_bytes = n_bytes;
    quill_status status = parse_file(file);
    if (status != QUILL_OK) {
        quill_gguf_close(file);
        return status;
    }
    *out = file;
    return QUILL_OK;
}

quill_status quill_gguf_open_memory(const void *data, size_t n_bytes, const char *name,
                                    quill_gguf **out) {
    *out = NULL;
    if (data == NULL && n_bytes > 0) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "gguf: %s: NULL data of %zu bytes",
                               name == NULL ? "(memory)" : name, n_bytes);
    }
    return open_bytes(data, n_bytes, name == NULL ? "(memory)" : name, out);
}

static quill_status io_error(const char *call, const char *path, int saved_errno) {
    char reason[128];
    return quill_error_set(QUILL_ERR_IO, "gguf: %s: %s failed: %s", path, call,
                           strerror_r(saved_errno, reason, sizeof(reason)));
}

quill_status quill_gguf_open(const char *path, quill_gguf **out) {
    *out = NULL;
    void *mapping = MAP_FAILED;
    size_t n_bytes = 0;
    quill_status status = QUILL_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int saved_errno = errno;
        status = saved_errno == ENOENT
                     ? quill_error_set(QUILL_ERR_NOT_FOUND,
                                       "gguf: %s: no such file; check the model path", path)
                     : io_error("open", path, saved_errno);
        goto cleanup;
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        status = io_error("fstat", path, errno);
        goto cleanup;
    }
    if (!S_ISREG(info.st_mode)) {
        status = quill_error_set(QUILL_ERR_IO, "gguf: %s: not a regular file; pass a .gguf file",
                                 path);
        goto cleanup;
    }
    if (info.st_size < 8) {
        status = quill_error_set(QUILL_ERR_FORMAT,
                                 "gguf: %s: file has %lld bytes, too short for a GGUF header; the "
                                 "file is truncated or not a GGUF model",
                                 path, (long long)info.st_size);
        goto cleanup;
    }
    n_bytes = (size_t)info.st_size;
    mapping = mmap(NULL, n_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
        status = io_error("mmap", path, errno);
        goto cleanup;
    }

    status = open_bytes(mapping, n_bytes, path, out);
    if (status == QUILL_OK) {
        (*out)->is_mapped = true;
        mapping = MAP_FAILED;
    }

cleanup:
    if (mapping != MAP_FAILED) {
        munmap(mapping, n_bytes);
    }
    if (fd >= 0) {
        close(fd);
    }
    return status;
}

void quill_gguf_close(quill_gguf *file) {
    if (file == NULL) {
        return;
    }
    for (int64_t i = 0; i < file->n_kv; i++) {
        quill__free(file->kvs[i].key);
    }
    for (int64_t i = 0; i < file->n_tensors; i++) {
        quill__free((char *)file->tensors[i].name);
    }
    for (int64_t i = 0; i < file->n_tables; i++) {
        quill__free(file->tables[i].item_offsets);
        quill__free(file->tables[i].item_tables);
    }
    quill__free(file->kvs);
    quill__free(file->tensors);
    quill__free(file->tables);
    quill__free(file->kv_index.slots);
    quill__free(file->tensor_index.slots);
    if (file->is_mapped) {
        munmap((void *)file->bytes, file->n_bytes);
    }
    quill__free(file->path);
    quill__free(file);
}

/* ---- Accessors ----------------------------------------------------------------------------- */

const char *quill_gguf_path(const quill_gguf *file) {
    return file->path;
}

uint32_t quill_gguf_version(const quill_gguf *file) {
    return file->version;
}

size_t quill_gguf_file_bytes(const quill_gguf *file) {
    return file->n_bytes;
}

size_t quill_gguf_alignment(const quill_gguf *file) {
    return file->alignment;
}

int64_t quill_gguf_n_kv(const quill_gguf *file) {
    return file->n_kv;
}

const char *quill_gguf_key(const quill_gguf *file, int64_t index) {
    if (index < 0 || index >= file->n_kv) {
        return NULL;
    }
    return file->kvs[index].key;
}

quill_gguf_value_type quill_gguf_kv_type(const quill_gguf *file, int64_t index) {
    if (index < 0 || index >= file->n_kv) {
        return QUILL_GGUF_UINT8;
    }
    return file->kvs[index].type;
}

int64_t quill_gguf_find_key(const quill_gguf *file, const char *key) {
    return index_find(file, &file->kv_index, kv_name_at, key);
}

static quill_status kv_lookup(const quill_gguf *file, const char *key, const gguf_kv **out) {
    int64_t index = quill_gguf_find_key(file, key);
    *out = index < 0 ? NULL : &file->kvs[index];
    return index < 0 ? QUILL_ERR_NOT_FOUND : QUILL_OK;
}

static quill_status type_mismatch(const quill_gguf *file, const gguf_kv *kv, const char *expected) {
    return quill_error_set(QUILL_ERR_FORMAT,
                           "gguf: %s: key '%s' has type %s; expected %s, the file does not match "
                           "what its architecture requires",
                           file->path, kv->key, value_type_name(kv->type), expected);
}

/* Reads an integer kv and checks it lies in [min, max]. A u64 value above INT64_MAX skips the
 * range check and sets *is_huge, so that each caller decides whether it fits. */
static quill_status kv_integer(const quill_gguf *file, const gguf_kv *kv, int64_t min, int64_t max,
                               const char *expected, int64_t *out, bool *is_huge) {
    if (!is_integer_type(kv->type)) {
        return type_mismatch(file, kv, expected);
    }
    *out = load_integer(kv->type, kv->value, is_huge);
    if (*is_huge) {
        return QUILL_OK;
    }
    if (*out < min || *out > max) {
        return quill_error_set(QUILL_ERR_FORMAT,
                               "gguf: %s: key '%s' has value %lld, outside the range of %s; the "
                               "file is corrupt",
                               file->path, kv->key, (long long)*out, expected);
    }
    return QUILL_OK;
}

/* Looks up key and reads it as an integer in [min, max], where a u64 above INT64_MAX is out of
 * range too. expected names the type in messages. Leaves *out 0 on failure. */
static quill_status get_integer_in_range(const quill_gguf *file, const char *key, int64_t min,
                                         int64_t max, const char *expected, int64_t *out) {
    *out = 0;
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    int64_t value = 0;
    bool is_huge = false;
    if (status == QUILL_OK) {
        status = kv_integer(file, kv, min, max, expected, &value, &is_huge);
    }
    if (status == QUILL_OK && is_huge) {
        status = quill_error_set(QUILL_ERR_FORMAT,
                                 "gguf: %s: key '%s' has value %llu, outside the range of %s; "
                                 "the file is corrupt",
                                 file->path, key, (unsigned long long)load_u64(kv->value),
                                 expected);
    }
    if (status == QUILL_OK) {
        *out = value;
    }
    return status;
}

quill_status quill_gguf_get_u32(const quill_gguf *file, const char *key, uint32_t *out) {
    *out = 0;
    int64_t value = 0;
    quill_status status = get_integer_in_range(file, key, 0, UINT32_MAX, "u32", &value);
    if (status == QUILL_OK) {
        *out = (uint32_t)value;
    }
    return status;
}

quill_status quill_gguf_get_i64(const quill_gguf *file, const char *key, int64_t *out) {
    return get_integer_in_range(file, key, INT64_MIN, INT64_MAX, "i64", out);
}

quill_status quill_gguf_get_u64(const quill_gguf *file, const char *key, uint64_t *out) {
    *out = 0;
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    int64_t value = 0;
    bool is_huge = false;
    if (status == QUILL_OK) {
        status = kv_integer(file, kv, 0, INT64_MAX, "u64", &value, &is_huge);
    }
    if (status == QUILL_OK) {
        *out = is_huge ? load_u64(kv->value) : (uint64_t)value;
    }
    return status;
}

quill_status quill_gguf_get_f64(const quill_gguf *file, const char *key, double *out) {
    *out = 0.0;
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    if (status != QUILL_OK) {
        return status;
    }
    if (kv->type != QUILL_GGUF_FLOAT32 && kv->type != QUILL_GGUF_FLOAT64) {
        return type_mismatch(file, kv, "f32 or f64");
    }
    *out = load_number(kv->type, kv->value);
    return QUILL_OK;
}

quill_status quill_gguf_get_f32(const quill_gguf *file, const char *key, float *out) {
    *out = 0.0f;
    double value = 0.0;
    quill_status status = quill_gguf_get_f64(file, key, &value);
    if (status == QUILL_OK) {
        *out = (float)value;
    }
    return status;
}

quill_status quill_gguf_get_bool(const quill_gguf *file, const char *key, bool *out) {
    *out = false;
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    if (status != QUILL_OK) {
        return status;
    }
    if (kv->type != QUILL_GGUF_BOOL) {
        return type_mismatch(file, kv, "bool");
    }
    *out = kv->value[0] != 0;
    return QUILL_OK;
}

static quill_status kv_string(const quill_gguf *file, const gguf_kv *kv, const char **data,
                              size_t *n_bytes) {
    if (kv->type != QUILL_GGUF_STRING) {
        return type_mismatch(file, kv, "string");
    }
    *n_bytes = (size_t)load_u64(kv->value);
    *data = (const char *)kv->value + 8;
    return QUILL_OK;
}

quill_status quill_gguf_get_string(const quill_gguf *file, const char *key, const char **data,
                                   size_t *n_bytes) {
    *data = NULL;
    *n_bytes = 0;
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    if (status != QUILL_OK) {
        return status;
    }
    return kv_string(file, kv, data, n_bytes);
}

quill_status quill_gguf_get_array(const quill_gguf *file, const char *key, quill_gguf_array *out) {
    *out = (quill_gguf_array){file, QUILL_GGUF_UINT8, 0, NULL, -1};
    const gguf_kv *kv = NULL;
    quill_status status = kv_lookup(file, key, &kv);
    if (status != QUILL_OK) {
        return status;
    }
    if (kv->type != QUILL_GGUF_ARRAY) {
        return type_mismatch(file, kv, "array");
    }
    *out = kv->array;
    return QUILL_OK;
}

static quill_status index_out_of_range(const quill_gguf *file, int64_t index) {
    return quill_error_set(QUILL_ERR_INVALID_ARG,
                           "gguf: %s: metadata index %lld is outside [0, %lld)", file->path,
                           (long long)index, (long long)file->n_kv);
}

quill_status quill_gguf_kv_string(const quill_gguf *file, int64_t index, const char **data,
                                  size_t *n_bytes) {
    *data = NULL;
    *n_bytes = 0;
    if (index < 0 || index >= file->n_kv) {
        return index_out_of_range(file, index);
    }
    return kv_string(file, &file->kvs[index], data, n_bytes);
}

quill_status quill_gguf_kv_array(const quill_gguf *file, int64_t index, quill_gguf_array *out) {
    *out = (quill_gguf_array){file, QUILL_GGUF_UINT8, 0, NULL, -1};
    if (index < 0 || index >= file->n_kv) {
        return index_out_of_range(file, index);
    }
    const gguf_kv *kv = &file->kvs[index];
    if (kv->type != QUILL_GGUF_ARRAY) {
        return type_mismatch(file, kv, "array");
    }
    *out = kv->array;
    return QUILL_OK;
}

quill_status quill_gguf_kv_number(const quill_gguf *file, int64_t index, double *out) {
    *out = 0.0;
    if (index < 0 || index >= file->n_kv) {
        return index_out_of_range(file, index);
    }
    const gguf_kv *kv = &file->kvs[index];
    if (kv->type == QUILL_GGUF_STRING || kv->type == QUILL_GGUF_ARRAY) {
        return type_mismatch(file, kv, "a number or bool");
    }
    *out = kv->type == QUILL_GGUF_BOOL ? (double)kv->value[0] : load_number(kv->type, kv->value);
    return QUILL_OK;
}

/* NOTE: a u64 item above INT64_MAX wraps to a negative value, and float items are truncated
 * toward zero; callers that need the exact value check item_type first. */
int64_t quill_gguf_array_int(const quill_gguf_array *array, uint64_t index) {
    size_t item_bytes = value_type_bytes(array->item_type);
    const uint8_t *item = array->data + index * item_bytes;
    if (array->item_type == QUILL_GGUF_FLOAT32 || array->item_type == QUILL_GGUF_FLOAT64) {
        double value = load_number(array->item_type, item);
        return isfinite(value) && fabs(value) < 9.2e18 ? (int64_t)value : 0;
    }
    bool is_huge = false;
    return load_integer(array->item_type, item, &is_huge);
}

double quill_gguf_array_float(const quill_gguf_array *array, uint64_t index) {
    size_t item_bytes = value_type_bytes(array->item_type);
    if (item_bytes == 0) {
        return 0.0;
    }
    return load_number(array->item_type, array->data + index * item_bytes);
}

void quill_gguf_array_string(const quill_gguf_array *array, uint64_t index, const char **data,
                             size_t *n_bytes) {
    *data = NULL;
    *n_bytes = 0;
    if (array->item_type != QUILL_GGUF_STRING || array->offsets_index < 0) {
        return;
    }
    const offset_table *table = &array->file->tables[array->offsets_index];
    const uint8_t *item = array->data + table->item_offsets[index];
    *n_bytes = (size_t)load_u64(item);
    *data = (const char *)item + 8;
}

void quill_gguf_array_array(const quill_gguf_array *array, uint64_t index, quill_gguf_array *out) {
    *out = (quill_gguf_array){array->file, QUILL_GGUF_UINT8, 0, NULL, -1};
    if (array->item_type != QUILL_GGUF_ARRAY || array->offsets_index < 0) {
        return;
    }
    const offset_table *table = &array->file->tables[array->offsets_index];
    const uint8_t *item = array->data + table->item_offsets[index];
    out->item_type = (quill_gguf_value_type)load_u32(item);
    out->n_items = load_u64(item + 4);
    out->data = item + 12;
    out->offsets_index = table->item_tables[index];
}

int64_t quill_gguf_n_tensors(const quill_gguf *file) {
    return file->n_tensors;
}

const quill_gguf_tensor *quill_gguf_tensor_at(const quill_gguf *file, int64_t index) {
    if (index < 0 || index >= file->n_tensors) {
        return NULL;
    }
    return &file->tensors[index];
}

const quill_gguf_tensor *quill_gguf_find_tensor(const quill_gguf *file, const char *name) {
    int64_t index = index_find(file, &file->tensor_index, tensor_name_at, name);
    return index < 0 ? NULL : &file->tensors[index];
}
