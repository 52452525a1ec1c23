/*
 * The compute thread pool: a fixed set of worker threads created once, which every heavy op
 * uses by splitting its rows by (thread_index, n_threads). The calling thread takes part as
 * thread 0, so a pool of n threads starts n - 1 workers. Only one thread drives a pool (the
 * engine thread, or the CLI's main thread); quill__threadpool_run is not reentrant.
 *
 * A run may split into more parts than there are threads (tasks_per_thread): the threads then
 * claim parts one at a time, so a thread whose core is busy with another process takes fewer
 * parts instead of holding up the whole op.
 */
#ifndef QUILL_THREADPOOL_H
#define QUILL_THREADPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "quill/status.h"

typedef struct quill_threadpool quill_threadpool;

/* A task: called once for each part index in [0, n_threads), where n_threads is the number of
 * parts of the run (quill__threadpool_n_parts). Parts run on any of the pool's threads, at most
 * one at a time per thread, so a task must use thread_index only to choose its share of the
 * work (for example with quill__threadpool_split), never to pick per-thread state. */
typedef void (*quill_threadpool_task)(void *context, int thread_index, int n_threads);

typedef struct quill_threadpool_params {
    int n_threads;        /* threads including the caller; 1 runs everything inline */
    bool use_pinning;     /* pin thread i to CPU i (of the process's allowed set) */
    int spin_us;          /* how long idle workers spin before sleeping, in microseconds */
    int tasks_per_thread; /* parts per thread in each run, 1 to 64; 1 splits work statically */
} quill_threadpool_params;

quill_threadpool_params quill__threadpool_params_default(void);

/* Creates a pool. Returns a new pool in *out; the caller destroys it. */
quill_status quill__threadpool_create(const quill_threadpool_params *params,
                                      quill_threadpool **out);

/* Stops and joins the workers. Accepts NULL. */
void quill__threadpool_destroy(quill_threadpool *pool);

/* Returns the number of threads, including the caller. A NULL pool counts as 1. */
int quill__threadpool_size(const quill_threadpool *pool);

/* Returns the number of parts each run splits into: n_threads * tasks_per_thread, or 1 for a
 * NULL or one-thread pool. */
int quill__threadpool_n_parts(const quill_threadpool *pool);

/* Runs task on every part and returns when all have finished. A NULL or one-thread pool runs
 * the task inline as part 0 of 1. */
void quill__threadpool_run(quill_threadpool *pool, quill_threadpool_task task, void *context);

/* Splits n_items into n_threads contiguous ranges and stores thread_index's [*begin, *end). */
void quill__threadpool_split(int64_t n_items, int thread_index, int n_threads, int64_t *begin,
                             int64_t *end);

#endif
