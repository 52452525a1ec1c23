/*
 * Binary min-heap of merge candidates shared by the BPE and SPM encoders. Order: lower
 * priority first, then the lower left symbol index, so equal candidates merge leftmost first as
 * llama.cpp does. Push and pop cost O(log n).
 */
#include "tokenizer/merge_queue.h"

#include <stdbool.h>

#include "base/alloc.h"
#include "quill/status.h"

/* True when a pops before b. */
static bool candidate_before(const quill__merge_candidate *a, const quill__merge_candidate *b) {
    if (a->priority != b->priority) {
        return a->priority < b->priority;
    }
    return a->left < b->left;
}

quill_status quill__merge_queue_push(quill__merge_queue *queue, quill__merge_candidate item) {
    if (queue->n_items == queue->capacity) {
        size_t capacity = queue->capacity > 0 ? queue->capacity * 2 : 64;
        quill__merge_candidate *items = quill__realloc_array(queue->items, capacity,
                                                             sizeof(*items));
        if (items == NULL) {
            return quill_error_set(QUILL_ERR_NOMEM, "tokenizer: out of memory for %zu merge "
                                   "candidates", capacity);
        }
        queue->items = items;
        queue->capacity = capacity;
    }
    size_t index = queue->n_items++;
    while (index > 0) {
        size_t parent = (index - 1) / 2;
        if (!candidate_before(&item, &queue->items[parent])) {
            break;
        }
        queue->items[index] = queue->items[parent];
        index = parent;
    }
    queue->items[index] = item;
    return QUILL_OK;
}

quill__merge_candidate quill__merge_queue_pop(quill__merge_queue *queue) {
    quill__merge_candidate *items = queue->items;
    quill__merge_candidate top = items[0];
    quill__merge_candidate last = items[--queue->n_items];
    size_t n_items = queue->n_items;
    size_t index = 0;
    for (;;) {
        size_t child = index * 2 + 1;
        if (child >= n_items) {
            break;
        }
        if (child + 1 < n_items && candidate_before(&items[child + 1], &items[child])) {
            child++;
        }
        if (!candidate_before(&items[child], &last)) {
            break;
        }
        items[index] = items[child];
        index = child;
    }
    if (n_items > 0) {
        items[index] = last;
    }
    return top;
}

void quill__merge_queue_clear(quill__merge_queue *queue) {
    queue->n_items = 0;
}

void quill__merge_queue_release(quill__merge_queue *queue) {
    if (queue == NULL) {
        return;
    }
    quill__free(queue->items);
    *queue = (quill__merge_queue){0};
}
