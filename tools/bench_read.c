/*
 * Read bandwidth of a few threads streaming one buffer, read the way decode reads its weights:
 * each thread sums its contiguous share with 64-byte vector loads, over memory advised for
 * transparent huge pages like the model's weight arena. It gives the most that these threads
 * can read, to set beside membw's copy and read figures. Run by hand:
 *
 *   cc -O3 -march=native -std=c11 -D_GNU_SOURCE tools/bench_read.c -lpthread -o /tmp/bench_read
 *   /tmp/bench_read [n_threads] [MiB] [trials] [prefetch_bytes]
 *
 * Defaults: 2 threads, 1024 MiB, 10 trials, no software prefetch. Prints one JSON object with the
 * best and median GB/s (10^9 bytes read per second).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { MAX_THREADS = 64, MAX_TRIALS = 1000, LINE_BYTES = 64 };

typedef struct reader {
    const uint8_t *begin;      /* this thread's share */
    size_t n_bytes;            /* a multiple of 8 lines */
    size_t prefetch_bytes;     /* software prefetch distance, 0 for none */
    pthread_barrier_t *start;  /* all readers and the timer */
    pthread_barrier_t *finish; /* likewise */
    int n_trials;
    uint64_t sink; /* keeps the sums live */
} reader;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sums the share 8 lines per step into 8 independent accumulators, so no add waits on another
 * and the loads stay many in flight. */
static uint64_t read_share(const reader *r) {
    __m512i acc[8];
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm512_setzero_si512();
    }
    for (size_t offset = 0; offset < r->n_bytes; offset += 8 * LINE_BYTES) {
        const uint8_t *p = r->begin + offset;
        if (r->prefetch_bytes > 0 && offset + r->prefetch_bytes < r->n_bytes) {
            for (int i = 0; i < 8; i++) {
                _mm_prefetch((const char *)p + r->prefetch_bytes + i * LINE_BYTES, _MM_HINT_T0);
            }
        }
        for (int i = 0; i < 8; i++) {
            acc[i] = _mm512_add_epi64(acc[i], _mm512_load_si512(p + i * LINE_BYTES));
        }
    }
    for (int i = 1; i < 8; i++) {
        acc[0] = _mm512_add_epi64(acc[0], acc[i]);
    }
    return (uint64_t)_mm512_reduce_add_epi64(acc[0]);
}

static void *reader_main(void *argument) {
    reader *r = argument;
    /* First touch from the thread that reads the share. */
    memset((void *)r->begin, 1, r->n_bytes);
    for (int t = 0; t < r->n_trials; t++) {
        pthread_barrier_wait(r->start);
        r->sink += read_share(r);
        pthread_barrier_wait(r->finish);
    }
    return NULL;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 1024;
    int n_trials = argc > 3 ? atoi(argv[3]) : 10;
    size_t prefetch_bytes = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    if (n_threads < 1 || n_threads > MAX_THREADS || mib < 1 || n_trials < 1 ||
        n_trials > MAX_TRIALS) {
        fprintf(stderr, "usage: bench_read [n_threads 1-%d] [MiB >= 1] [trials 1-%d] "
                        "[prefetch_bytes]\n",
                MAX_THREADS, MAX_TRIALS);
        return 2;
    }
    size_t n_bytes = mib << 20;
    size_t share = n_bytes / (size_t)n_threads / (8 * LINE_BYTES) * (8 * LINE_BYTES);
    uint8_t *buffer = mmap(NULL, n_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
    if (buffer == MAP_FAILED) {
        fprintf(stderr, "bench_read: cannot map %zu MiB; pass a smaller size as the second argument\n",
                mib);
        return 1;
    }
    (void)madvise(buffer, n_bytes, MADV_HUGEPAGE);

    pthread_barrier_t start;
    pthread_barrier_t finish;
    pthread_barrier_init(&start, NULL, (unsigned)n_threads + 1);
    pthread_barrier_init(&finish, NULL, (unsigned)n_threads + 1);
    reader readers[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    for (int i = 0; i < n_threads; i++) {
        readers[i] = (reader){.begin = buffer + (size_t)i * share,
                              .n_bytes = share,
                              .prefetch_bytes = prefetch_bytes,
                              .start = &start,
                              .finish = &finish,
                              .n_trials = n_trials};
        pthread_create(&threads[i], NULL, reader_main, &readers[i]);
    }
    double rates[MAX_TRIALS];
    for (int t = 0; t < n_trials; t++) {
        pthread_barrier_wait(&start);
        double begin = now_seconds();
        pthread_barrier_wait(&finish);
        rates[t] = (double)share * n_threads / (now_seconds() - begin) / 1e9;
    }
    uint64_t sink = 0;
    for (int i = 0; i < n_threads; i++) {
        pthread_join(threads[i], NULL);
        sink += readers[i].sink;
    }
    qsort(rates, (size_t)n_trials, sizeof(double), compare_double);
    printf("{\"threads\": %d, \"mib\": %zu, \"trials\": %d, \"prefetch_bytes\": %zu, "
           "\"read_best_GBs\": %.2f, \"read_median_GBs\": %.2f, \"sink\": %llu}\n",
           n_threads, mib, n_trials, prefetch_bytes, rates[n_trials - 1], rates[n_trials / 2],
           (unsigned long long)(sink & 1));
    munmap(buffer, n_bytes);
    return 0;
}
