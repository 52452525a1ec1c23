/*
 * Batches: parallel arrays of (token, position, sequence id, logits wanted) entries, allocated
 * once at init. One thread at a time.
 */
#include "quill/model.h"

#include <string.h>

#include "base/alloc.h"

quill_status quill_batch_init(quill_batch *batch, int32_t capacity) {
    if (batch == NULL) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "batch: batch is NULL");
    }
    memset(batch, 0, sizeof(*batch));
    if (capacity < 1) {
        return quill_error_set(QUILL_ERR_INVALID_ARG, "batch: capacity %d must be >= 1", capacity);
    }
    batch->tokens = quill__malloc_array((size_t)capacity, sizeof(int32_t));
    batch->positions = quill__malloc_array((size_t)capacity, sizeof(int32_t));
    batch->seq_ids = quill__malloc_array((size_t)capacity, sizeof(int32_t));
    batch->wants_logits = quill__malloc_array((size_t)capacity, sizeof(bool));
    if (batch->tokens == NULL || batch->positions == NULL || batch->seq_ids == NULL ||
        batch->wants_logits == NULL) {
        quill_batch_release(batch);
        return quill_error_set(QUILL_ERR_NOMEM, "batch: out of memory for %d entries", capacity);
    }
    batch->capacity = capacity;
    return QUILL_OK;
}

void quill_batch_release(quill_batch *batch) {
    if (batch == NULL) {
        return;
    }
    quill__free(batch->tokens);
    quill__free(batch->positions);
    quill__free(batch->seq_ids);
    quill__free(batch->wants_logits);
    memset(batch, 0, sizeof(*batch));
}

void quill_batch_clear(quill_batch *batch) {
    if (batch != NULL) {
        batch->n_tokens = 0;
    }
}

quill_status quill_batch_add(quill_batch *batch, int32_t token, int32_t position, int32_t seq_id,
                             bool wants_logits) {
    if (batch == NULL || batch->n_tokens >= batch->capacity) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "batch: the batch is full at %d entries; run it and clear it "
                               "first",
                               batch == NULL ? 0 : batch->capacity);
    }
    int32_t index = batch->n_tokens;
    batch->tokens[index] = token;
    batch->positions[index] = position;
    batch->seq_ids[index] = seq_id;
    batch->wants_logits[index] = wants_logits;
    batch->n_tokens++;
    return QUILL_OK;
}
