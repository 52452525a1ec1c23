/*
 * Thread pool with a generation counter. The driver publishes (task, context), bumps
 * `generation` and wakes sleepers; each worker runs the task once per generation and bumps
 * `n_finished`. Idle workers spin for spin_us before sleeping on the condition variable, so
 * back-to-back ops in a forward pass do not pay a wake-up, while an idle server does not burn
 * CPU. The driver also spins briefly, then yields, while it waits for the workers: on a machine
 * whose cores are shared, pure spinning by both sides would starve the thread being waited on.
 */
#include "base/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct worker {
    quill_threadpool *pool; /* owning pool */
    pthread_t thread;       /* set by create */
    int index;              /* 1..n_threads-1 */
} worker;

struct quill_threadpool {
    int n_threads;                    /* including the driver */
    int spin_us;                      /* idle spin before sleeping */
    worker *workers;                  /* [n_threads - 1] */
    int n_started;                    /* workers successfully started */
    quill_threadpool_task task;       /* published before generation is bumped */
    void *context;                    /* likewise */
    atomic_uint generation;           /* bumped once per run */
    atomic_int n_finished;            /* workers done with the current generation */
    atomic_bool is_stopping;          /* set by destroy */
    pthread_mutex_t mutex;            /* guards sleeping workers' wait; lock order: only lock */
    pthread_cond_t wake;              /* signalled with mutex held after a bump */
};

quill_threadpool_params quill__threadpool_params_default(void) {
    quill_threadpool_params params = {.n_threads = 1, .use_pinning = false, .spin_us = 200};
    return params;
}

void quill__threadpool_split(int64_t n_items, int thread_index, int n_threads, int64_t *begin,
                             int64_t *end) {
    int64_t per_thread = n_items / n_threads;
    int64_t remainder = n_items % n_threads;
    *begin = thread_index * per_thread + (thread_index < remainder ? thread_index : remainder);
    *end = *begin + per_thread + (thread_index < remainder ? 1 : 0);
}

static unsigned wait_for_generation(quill_threadpool *pool, unsigned seen) {
    int64_t spin_deadline_us = quill__clock_monotonic_us() + pool->spin_us;
    for (int i = 0;; i++) {
        unsigned current = atomic_load(&pool->generation);
        if (current != seen || atomic_load(&pool->is_stopping)) {
            return current;
        }
        CPU_RELAX();
        if ((i & 255) == 255 && quill__clock_monotonic_us() > spin_deadline_us) {
            break;
        }
    }
    pthread_mutex_lock(&pool->mutex);
    unsigned current = atomic_load(&pool->generation);
    while (current == seen && !atomic_load(&pool->is_stopping)) {
        pthread_cond_wait(&pool->wake, &pool->mutex);
        current = atomic_load(&pool->generation);
    }
    pthread_mutex_unlock(&pool->mutex);
    return current;
}

static void *worker_main(void *argument) {
    worker *self = argument;
    quill_threadpool *pool = self->pool;
    /* Generation 0 is the state at creation, before any run: a worker that starts late must
     * still run the first task, so it must not read the counter as its starting point. */
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_generation(pool, seen);
        if (atomic_load(&pool->is_stopping)) {
            break;
        }
        pool->task(pool->context, self->index, pool->n_threads);
        atomic_fetch_add(&pool->n_finished, 1);
    }
    return NULL;
}

static void pin_to_cpu(pthread_t thread, int index) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
        return;
    }
    int n_allowed = CPU_COUNT(&allowed);
    if (n_allowed == 0) {
        return;
    }
    int wanted = index % n_allowed;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed)) {
            continue;
        }
        if (wanted-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_setaffinity_np(thread, sizeof(one), &one);
            return;
        }
    }
}

quill_status quill__threadpool_create(const quill_threadpool_params *params,
                                      quill_threadpool **out) {
    *out = NULL;
    if (params->n_threads < 1 || params->n_threads > 1024) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "threadpool: n_threads=%d is out of range; use 1 to 1024",
                               params->n_threads);
    }
    quill_threadpool *pool = quill__calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "threadpool: out of memory");
    }
    pool->n_threads = params->n_threads;
    pool->spin_us = params->spin_us < 0 ? 0 : params->spin_us;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = quill__calloc((size_t)params->n_threads, sizeof(worker));
    if (pool->workers == NULL) {
        quill__threadpool_destroy(pool);
        return quill_error_set(QUILL_ERR_NOMEM, "threadpool: out of memory");
    }
    if (params->use_pinning) {
        pin_to_cpu(pthread_self(), 0);
    }
    for (int i = 1; i < params->n_threads; i++) {
        worker *w = &pool->workers[i - 1];
        w->pool = pool;
        w->index = i;
        int error = pthread_create(&w->thread, NULL, worker_main, w);
        if (error != 0) {
            quill__threadpool_destroy(pool);
            return quill_error_set(QUILL_ERR_IO, "threadpool: pthread_create failed: %s",
                                   strerror(error));
        }
        pool->n_started++;
        if (params->use_pinning) {
            pin_to_cpu(w->thread, i);
        }
    }
    *out = pool;
    return QUILL_OK;
}

void quill__threadpool_destroy(quill_threadpool *pool) {
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->is_stopping, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 0; i < pool->n_started; i++) {
        pthread_join(pool->workers[i].thread, NULL);
    }
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    quill__free(pool->workers);
    quill__free(pool);
}

int quill__threadpool_size(const quill_threadpool *pool) {
    return pool == NULL ? 1 : pool->n_threads;
}

void quill__threadpool_run(quill_threadpool *pool, quill_threadpool_task task, void *context) {
    if (pool == NULL || pool->n_threads == 1) {
        task(context, 0, 1);
        return;
    }
    pool->task = task;
    pool->context = context;
    atomic_store(&pool->n_finished, 0);

    /* Publish: the bump is sequentially consistent, so workers that see it also see task. */
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);

    task(context, 0, pool->n_threads);

    /* Wait for the workers: spin a little, then yield the core to them. */
    for (int i = 0; atomic_load(&pool->n_finished) < pool->n_threads - 1; i++) {
        if (i < 2000) {
            CPU_RELAX();
        } else {
            sched_yield();
        }
    }
}
