/*
 * Allocation wrappers with a failure-injection hook for tests. All of Quill allocates through
 * these so that a test can make the Nth allocation fail and check that the caller returns
 * QUILL_ERR_NOMEM and leaks nothing. Safe from any thread; the hook counter is atomic.
 */
#ifndef QUILL_ALLOC_H
#define QUILL_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *quill__malloc(size_t n_bytes);
void *quill__calloc(size_t n_items, size_t item_bytes);
void *quill__realloc(void *pointer, size_t n_bytes);
/* Allocates n_items * item_bytes, returning NULL on overflow as on failure. */
void *quill__malloc_array(size_t n_items, size_t item_bytes);
void *quill__realloc_array(void *pointer, size_t n_items, size_t item_bytes);
/* Allocates n_bytes aligned to alignment (a power of two, at least sizeof(void *)). */
void *quill__aligned_alloc(size_t alignment, size_t n_bytes);
char *quill__strdup(const char *text);
char *quill__strndup(const char *text, size_t n_bytes);
void quill__free(void *pointer);

/* Makes the allocation after n_successes more succeed fail, once; a negative value disables
 * injection. For tests only. */
void quill__alloc_fail_after(int64_t n_successes);

/* Returns true and stores the product when a * b fits in size_t. */
static inline int quill__size_mul(size_t a, size_t b, size_t *product) {
    return !__builtin_mul_overflow(a, b, product);
}

/* Returns true and stores the sum when a + b fits in size_t. */
static inline int quill__size_add(size_t a, size_t b, size_t *sum) {
    return !__builtin_add_overflow(a, b, sum);
}

#endif
