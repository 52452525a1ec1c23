/*
 * Thread pool with a claimable work word. The driver publishes (task, context), then stores
 * `work` = generation << 32 | n_parts << 16 | next part. Every thread, the driver included,
 * claims parts by compare-and-swap on `work` until none is left, then adds the parts it
 * finished to `n_done`. The driver returns once n_done reaches n_parts. A worker that wakes
 * late finds no part left and goes back to waiting, so the driver waits only for parts that a
 * thread has claimed, not for a thread that has not started.
 *
 * Idle workers spin for spin_us before sleeping on the condition variable, so back-to-back ops
 * in a forward pass do not pay a wake-up, while an idle server does not burn CPU. The driver
 * signals the condition variable only when a worker sleeps. While it waits for claimed parts,
 * the driver spins for up to DRIVER_SPIN_US, then sleeps until the last part finishes: on a
 * machine whose cores are shared, a worker preempted inside its part sits in another core's
 * run queue, and an idle core is what lets the scheduler move it over, while yielding keeps
 * the driver's core busy.
 *
 * When a wait shows that a worker was preempted inside a part, the driver runs the next ops
 * alone for a while (record_wait), so 2 threads on a busy machine do not fall below 1.
 *
 * Why a compare-and-swap reads the right task: a thread reads `work`, then task and context,
 * then swaps next for next + 1 only if `work` is unchanged. The driver writes the next run's
 * task only after every part of this run has been claimed and finished, so a successful swap
 * (some part still unclaimed) means the task it read belongs to this run.
 */
#include "base/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
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

enum {
    MAX_TASKS_PER_THREAD = 64,
    MAX_PARTS = 0xffff,         /* n_parts and next share 16 bits each of `work` */
    DRIVER_SPIN_US = 50,        /* how long the waiting driver spins before it sleeps */
    STALL_MIN_NS = 1000 * 1000, /* shortest wait for other threads that counts as a stall */
    STALL_PENALTY = 4,          /* inline time bought by a stall, as a multiple of its wait */
    CACHE_LINE = 64,
};

typedef struct worker {
    quill_threadpool *pool; /* owning pool */
    pthread_t thread;       /* set by create */
} worker;

struct quill_threadpool {
    int n_threads;                       /* including the driver */
    int n_parts;                         /* parts per run: n_threads * tasks_per_thread */
    int spin_us;                         /* idle spin before sleeping */
    worker *workers;                     /* [n_threads - 1] */
    int n_started;                       /* workers successfully started */
    uint32_t generation;                 /* driver's count of runs; only it writes */
    int64_t inline_budget_ns;            /* parallel gain to give up by running on the driver */
    _Atomic(quill_threadpool_task) task; /* written before `work` is published */
    _Atomic(void *) context;             /* likewise */
    alignas(CACHE_LINE) atomic_uint_least64_t work; /* generation, n_parts, next part */
    alignas(CACHE_LINE) atomic_int n_done;          /* parts finished in the current run */
    atomic_int n_sleeping;                          /* workers blocked (or about to) on `wake` */
    atomic_bool is_driver_sleeping;                 /* the driver waits on `finished` */
    atomic_bool is_stopping;                        /* set by destroy */
    pthread_mutex_t mutex;                          /* guards both waits; the only lock */
    pthread_cond_t wake;                            /* broadcast under mutex after a publish */
    pthread_cond_t finished;                        /* signalled under mutex by the last part */
};

static uint32_t work_generation(uint64_t work) {
    return (uint32_t)(work >> 32);
}
static int work_n_parts(uint64_t work) {
    return (int)((work >> 16) & 0xffff);
}
static int work_next(uint64_t work) {
    return (int)(work & 0xffff);
}

quill_threadpool_params quill__threadpool_params_default(void) {
    quill_threadpool_params params = {
        .n_threads = 1, .use_pinning = false, .spin_us = 200, .tasks_per_thread = 1};
    return params;
}

void quill__threadpool_split(int64_t n_items, int thread_index, int n_threads, int64_t *begin,
                             int64_t *end) {
    int64_t per_thread = n_items / n_threads;
    int64_t remainder = n_items % n_threads;
    *begin = thread_index * per_thread + (thread_index < remainder ? thread_index : remainder);
    *end = *begin + per_thread + (thread_index < remainder ? 1 : 0);
}

/* Claims and runs parts of the run that `work` belongs to until none is left, then adds them
 * to n_done in one step. Every part claimed here belongs to that one run: the next run starts
 * only after n_done counts these parts. */
static void run_parts(quill_threadpool *pool, uint64_t work) {
    int n_finished = 0;
    while (work_next(work) < work_n_parts(work)) {
        quill_threadpool_task task = atomic_load_explicit(&pool->task, memory_order_relaxed);
        void *context = atomic_load_explicit(&pool->context, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&pool->work, &work, work + 1,
                                                  memory_order_acquire, memory_order_acquire)) {
            task(context, work_next(work), work_n_parts(work));
            n_finished++;
            work = atomic_load_explicit(&pool->work, memory_order_acquire);
        }
    }
    if (n_finished == 0) {
        return;
    }
    /* Sequentially consistent, so that either the driver loads the new count or this thread
     * loads is_driver_sleeping as set and wakes the driver. */
    if (atomic_fetch_add(&pool->n_done, n_finished) + n_finished == work_n_parts(work) &&
        atomic_load(&pool->is_driver_sleeping)) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_signal(&pool->finished);
        pthread_mutex_unlock(&pool->mutex);
    }
}

/* Waits until `work` belongs to a generation other than seen, or the pool stops. */
static uint64_t wait_for_work(quill_threadpool *pool, uint32_t seen) {
    int64_t spin_deadline_us = quill__clock_monotonic_us() + pool->spin_us;
    for (int i = 0;; i++) {
        uint64_t work = atomic_load_explicit(&pool->work, memory_order_acquire);
        if (work_generation(work) != seen || atomic_load(&pool->is_stopping)) {
            return work;
        }
        CPU_RELAX();
        if ((i & 255) == 255 && quill__clock_monotonic_us() > spin_deadline_us) {
            break;
        }
    }
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->n_sleeping, 1);
    uint64_t work = atomic_load(&pool->work);
    while (work_generation(work) == seen && !atomic_load(&pool->is_stopping)) {
        pthread_cond_wait(&pool->wake, &pool->mutex);
        work = atomic_load(&pool->work);
    }
    atomic_fetch_sub(&pool->n_sleeping, 1);
    pthread_mutex_unlock(&pool->mutex);
    return work;
}

static void *worker_main(void *argument) {
    worker *self = argument;
    quill_threadpool *pool = self->pool;
    /* Generation 0 is the state at creation, before any run. */
    uint32_t seen = 0;
    for (;;) {
        uint64_t work = wait_for_work(pool, seen);
        if (atomic_load(&pool->is_stopping)) {
            break;
        }
        seen = work_generation(work);
        run_parts(pool, work);
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
    if (params->tasks_per_thread < 1 || params->tasks_per_thread > MAX_TASKS_PER_THREAD) {
        return quill_error_set(QUILL_ERR_INVALID_ARG,
                               "threadpool: tasks_per_thread=%d is out of range; use 1 to %d",
                               params->tasks_per_thread, MAX_TASKS_PER_THREAD);
    }
    /* Aligned to the cache line like its counters: malloc guarantees 16 bytes only. */
    quill_threadpool *pool = quill__aligned_alloc(CACHE_LINE, sizeof(*pool));
    if (pool == NULL) {
        return quill_error_set(QUILL_ERR_NOMEM, "threadpool: out of memory");
    }
    memset(pool, 0, sizeof(*pool));
    pool->n_threads = params->n_threads;
    int n_parts = params->n_threads * params->tasks_per_thread;
    pool->n_parts = n_parts > MAX_PARTS ? MAX_PARTS : n_parts;
    pool->spin_us = params->spin_us < 0 ? 0 : params->spin_us;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->finished, NULL);
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
    pthread_cond_destroy(&pool->finished);
    pthread_mutex_destroy(&pool->mutex);
    quill__free(pool->workers);
    quill__free(pool);
}

int quill__threadpool_size(const quill_threadpool *pool) {
    return pool == NULL ? 1 : pool->n_threads;
}

int quill__threadpool_n_parts(const quill_threadpool *pool) {
    return pool == NULL || pool->n_threads == 1 ? 1 : pool->n_parts;
}

/* Sleeps until every part of the current run has finished. */
static void wait_until_finished(quill_threadpool *pool) {
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->is_driver_sleeping, true);
    while (atomic_load(&pool->n_done) < pool->n_parts) {
        pthread_cond_wait(&pool->finished, &pool->mutex);
    }
    atomic_store(&pool->is_driver_sleeping, false);
    pthread_mutex_unlock(&pool->mutex);
}

/* Records how long the driver waited for the other threads after its own parts. A wait
 * longer than STALL_MIN_NS and than a quarter of the driver's own time means a worker was
 * preempted inside a part, because its core is busy with another process. The pool then runs
 * ops on the driver alone until the parallel gain it gives up that way (an op's time times
 * (n_threads - 1) / n_threads) reaches STALL_PENALTY times the wait. So under steady contention
 * most runs stay on one thread, while after a rare stall the pool is soon parallel again. */
static void record_wait(quill_threadpool *pool, int64_t own_ns, int64_t wait_ns) {
    if (wait_ns > STALL_MIN_NS && wait_ns > own_ns / 4) {
        pool->inline_budget_ns += STALL_PENALTY * wait_ns;
    }
}

void quill__threadpool_run(quill_threadpool *pool, quill_threadpool_task task, void *context) {
    if (pool == NULL || pool->n_threads == 1) {
        task(context, 0, 1);
        return;
    }
    if (pool->inline_budget_ns > 0) {
        int64_t inline_start_ns = quill__clock_monotonic_ns();
        task(context, 0, 1);
        int64_t elapsed_ns = quill__clock_monotonic_ns() - inline_start_ns;
        pool->inline_budget_ns -= elapsed_ns * (pool->n_threads - 1) / pool->n_threads;
        return;
    }
    atomic_store_explicit(&pool->task, task, memory_order_relaxed);
    atomic_store_explicit(&pool->context, context, memory_order_relaxed);
    atomic_store_explicit(&pool->n_done, 0, memory_order_relaxed);

    /* Publish: sequentially consistent, so that either a worker about to sleep loads the new
     * generation, or this thread loads its n_sleeping count and wakes it. */
    pool->generation++;
    uint64_t work = (uint64_t)pool->generation << 32 | (uint64_t)pool->n_parts << 16;
    int64_t start_ns = quill__clock_monotonic_ns();
    atomic_store(&pool->work, work);
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }

    run_parts(pool, work);

    /* Wait for the parts other threads claimed: spin a little, then sleep. */
    if (atomic_load_explicit(&pool->n_done, memory_order_acquire) == pool->n_parts) {
        return;
    }
    int64_t own_end_ns = quill__clock_monotonic_ns();
    int64_t spin_deadline_ns = own_end_ns + (int64_t)DRIVER_SPIN_US * 1000;
    for (int i = 0; atomic_load_explicit(&pool->n_done, memory_order_acquire) < pool->n_parts;
         i++) {
        CPU_RELAX();
        if ((i & 63) == 63 && quill__clock_monotonic_ns() > spin_deadline_ns) {
            wait_until_finished(pool);
            break;
        }
    }
    record_wait(pool, own_end_ns - start_ns, quill__clock_monotonic_ns() - own_end_ns);
}
