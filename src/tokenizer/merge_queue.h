/*
 * Queue of candidate symbol pairs for the merging encoders (bpe.c, spm.c): a binary min-heap
 * that pops the pair with the lowest priority first and, on a tie, the leftmost pair. The
 * encoders differ only in the priority they store: BPE its merge rank, SPM its negated token
 * score. A queue belongs to one encode call, so one thread at a time.
 */
#ifndef QUILL_TOKENIZER_MERGE_QUEUE_H
#define QUILL_TOKENIZER_MERGE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "quill/status.h"

typedef struct quill__merge_candidate {
    int32_t left;     /* symbol index */
    int32_t right;    /* symbol index */
    double priority;  /* lower merges first, exact for every int32 rank and float score */
    size_t n_bytes;   /* bytes of the pair when queued, to detect stale entries */
} quill__merge_candidate;

/* Queue of merge candidates. A zero-initialised queue is empty, and
 * quill__merge_queue_release frees it. */
typedef struct quill__merge_queue {
    quill__merge_candidate *items;  /* binary min-heap by (priority, left) */
    size_t n_items;                 /* entries used */
    size_t capacity;                /* entries allocated */
} quill__merge_queue;

/* Adds item and grows the queue. On QUILL_ERR_NOMEM the queue is left as it was. */
quill_status quill__merge_queue_push(quill__merge_queue *queue, quill__merge_candidate item);
/* Removes and returns the first candidate. The queue must not be empty. */
quill__merge_candidate quill__merge_queue_pop(quill__merge_queue *queue);
/* Empties the queue and keeps its memory for the next fragment. */
void quill__merge_queue_clear(quill__merge_queue *queue);
/* Frees the queue's memory. Accepts NULL and a queue that was never used. */
void quill__merge_queue_release(quill__merge_queue *queue);

#endif
