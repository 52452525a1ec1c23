/*
 * Allocation wrappers. The failure-injection counter is the only state: -1 means disabled.
 */
#include "base/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_llong alloc_failures_countdown = -1;

static int should_fail(void) {
    long long remaining = atomic_load(&alloc_failures_countdown);
    while (remaining >= 0) {
        if (atomic_compare_exchange_weak(&alloc_failures_countdown, &remaining, remaining - 1)) {
            return remaining == 0;
        }
    }
    return 0;
}

void quill__alloc_fail_after(int64_t n_successes) {
    atomic_store(&alloc_failures_countdown, (long long)n_successes);
}

void *quill__malloc(size_t n_bytes) {
    if (should_fail()) {
        return NULL;
    }
    return malloc(n_bytes == 0 ? 1 : n_bytes);
}

void *quill__calloc(size_t n_items, size_t item_bytes) {
    if (should_fail()) {
        return NULL;
    }
    if (n_items == 0 || item_bytes == 0) {
        return calloc(1, 1);
    }
    return calloc(n_items, item_bytes);
}

void *quill__realloc(void *pointer, size_t n_bytes) {
    if (should_fail()) {
        return NULL;
    }
    return realloc(pointer, n_bytes == 0 ? 1 : n_bytes);
}

void *quill__malloc_array(size_t n_items, size_t item_bytes) {
    size_t n_bytes = 0;
    if (!quill__size_mul(n_items, item_bytes, &n_bytes)) {
        return NULL;
    }
    return quill__malloc(n_bytes);
}

void *quill__realloc_array(void *pointer, size_t n_items, size_t item_bytes) {
    size_t n_bytes = 0;
    if (!quill__size_mul(n_items, item_bytes, &n_bytes)) {
        return NULL;
    }
    return quill__realloc(pointer, n_bytes);
}

void *quill__aligned_alloc(size_t alignment, size_t n_bytes) {
    if (should_fail()) {
        return NULL;
    }
    void *pointer = NULL;
    if (posix_memalign(&pointer, alignment, n_bytes == 0 ? alignment : n_bytes) != 0) {
        return NULL;
    }
    return pointer;
}

char *quill__strdup(const char *text) {
    return quill__strndup(text, strlen(text));
}

char *quill__strndup(const char *text, size_t n_bytes) {
    size_t length = strnlen(text, n_bytes);
    char *copy = quill__malloc(length + 1);
    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, text, length);
    copy[length] = '\0';
    return copy;
}

void quill__free(void *pointer) {
    free(pointer);
}
