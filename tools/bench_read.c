/*
 * Read bandwidth of a few threads streaming one buffer, read the way decode reads its weights.
 * Each thread sums its contiguous share with 32- or 64-byte vector loads (AVX2 or AVX-512, as the
 * compiler targets). The buffer is advised for transparent huge pages, like the model's weight
 * arena. It gives what these threads can read, to set beside membw's copy and read figures. Run
 * by hand:
 *
 *   cc -O3 -march=native -std=c11 -D_GNU_SOURCE tools/bench_read.c -lpthread -o /tmp/bench_read
 *   /tmp/bench_read [n_threads] [MiB] [trials] [prefetch_bytes]
 *
 * Defaults: 2 threads, 1024 MiB, 10 trials, no software prefetch. A trial lasts from the first
 * reader's start to the last reader's end, each read on the reader's own clock, so a timing
 * thread that wakes late cannot shorten it. Prints one JSON object with the median and best GB/s
 * (10^9 bytes read per second). Buffers smaller than the last-level cache measure the cache.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if !defined(__AVX2__)
#error "bench_read needs AVX2 or AVX-512: build with -march=native on an x86-64 CPU that has them"
#endif

enum { MAX_THREADS = 64, MAX_TRIALS = 1000, STEP_BYTES = 512, PREFETCH_LINE = 64 };

typedef struct reader {
    const uint8_t *begin;      /* this thread's share */
    size_t n_bytes;            /* a multiple of STEP_BYTES */
    size_t prefetch_bytes;     /* software prefetch distance, 0 for none */
    pthread_barrier_t *start;  /* all readers and the main thread */
    pthread_barrier_t *finish; /* likewise */
    int n_trials;
    double start_s[MAX_TRIALS]; /* each trial's start and end on this reader's clock */
    double end_s[MAX_TRIALS];
    uint64_t sink; /* keeps the sums live */
} reader;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sums the share STEP_BYTES per step into independent accumulators, so no add waits on another
 * and many loads stay in flight. */
static uint64_t read_share(const reader *r) {
#if defined(__AVX512F__)
    __m512i acc[8];
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm512_setzero_si512();
    }
#else
    __m256i acc[16];
    for (int i = 0; i < 16; i++) {
        acc[i] = _mm256_setzero_si256();
    }
#endif
    for (size_t offset = 0; offset < r->n_bytes; offset += STEP_BYTES) {
        const uint8_t *p = r->begin + offset;
        if (r->prefetch_bytes > 0 && offset + r->prefetch_bytes < r->n_bytes) {
            for (int i = 0; i < STEP_BYTES / PREFETCH_LINE; i++) {
                _mm_prefetch((const char *)p + r->prefetch_bytes + i * PREFETCH_LINE,
                             _MM_HINT_T0);
            }
        }
#if defined(__AVX512F__)
        for (int i = 0; i < 8; i++) {
            acc[i] = _mm512_add_epi64(acc[i], _mm512_load_si512(p + i * 64));
        }
#else
        for (int i = 0; i < 16; i++) {
            acc[i] = _mm256_add_epi64(acc[i], _mm256_load_si256((const __m256i *)(p + i * 32)));
        }
#endif
    }
    uint64_t lanes[8] = {0};
#if defined(__AVX512F__)
    for (int i = 1; i < 8; i++) {
        acc[0] = _mm512_add_epi64(acc[0], acc[i]);
    }
    _mm512_storeu_si512(lanes, acc[0]);
#else
    for (int i = 1; i < 16; i++) {
        acc[0] = _mm256_add_epi64(acc[0], acc[i]);
    }
    _mm256_storeu_si256((__m256i *)lanes, acc[0]);
#endif
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

static void *reader_main(void *argument) {
    reader *r = argument;
    /* First touch from the thread that reads the share. */
    memset((void *)r->begin, 1, r->n_bytes);
    for (int t = 0; t < r->n_trials; t++) {
        pthread_barrier_wait(r->start);
        r->start_s[t] = now_seconds();
        r->sink += read_share(r);
        r->end_s[t] = now_seconds();
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
        fprintf(stderr,
                "usage: bench_read [n_threads 1-%d] [MiB >= 1] [trials 1-%d] [prefetch_bytes]\n",
                MAX_THREADS, MAX_TRIALS);
        return 2;
    }
    size_t n_bytes = mib << 20;
    size_t share = n_bytes / (size_t)n_threads / STEP_BYTES * STEP_BYTES;
    uint8_t *buffer =
        mmap(NULL, n_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED) {
        fprintf(stderr,
                "bench_read: failed to map %zu MiB; pass a smaller size as the second argument\n",
                mib);
        return 1;
    }
    (void)madvise(buffer, n_bytes, MADV_HUGEPAGE);

    pthread_barrier_t start;
    pthread_barrier_t finish;
    pthread_barrier_init(&start, NULL, (unsigned)n_threads + 1);
    pthread_barrier_init(&finish, NULL, (unsigned)n_threads + 1);
    reader *readers = calloc((size_t)n_threads, sizeof(reader));
    pthread_t threads[MAX_THREADS];
    if (readers == NULL) {
        fprintf(stderr, "bench_read: out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_threads; i++) {
        readers[i].begin = buffer + (size_t)i * share;
        readers[i].n_bytes = share;
        readers[i].prefetch_bytes = prefetch_bytes;
        readers[i].start = &start;
        readers[i].finish = &finish;
        readers[i].n_trials = n_trials;
        if (pthread_create(&threads[i], NULL, reader_main, &readers[i]) != 0) {
            fprintf(stderr, "bench_read: failed to start reader thread %d; pass fewer threads\n",
                    i);
            return 1;
        }
    }
    for (int t = 0; t < n_trials; t++) {
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&finish);
    }
    double rates[MAX_TRIALS];
    uint64_t sink = 0;
    for (int i = 0; i < n_threads; i++) {
        pthread_join(threads[i], NULL);
        sink += readers[i].sink;
    }
    for (int t = 0; t < n_trials; t++) {
        double first_start = readers[0].start_s[t];
        double last_end = readers[0].end_s[t];
        for (int i = 1; i < n_threads; i++) {
            first_start = readers[i].start_s[t] < first_start ? readers[i].start_s[t] : first_start;
            last_end = readers[i].end_s[t] > last_end ? readers[i].end_s[t] : last_end;
        }
        rates[t] = (double)share * n_threads / (last_end - first_start) / 1e9;
    }
    qsort(rates, (size_t)n_trials, sizeof(double), compare_double);
    printf("{\"threads\": %d, \"mib\": %zu, \"trials\": %d, \"prefetch_bytes\": %zu, "
           "\"read_median_GBs\": %.2f, \"read_best_GBs\": %.2f, \"sink\": %llu}\n",
           n_threads, mib, n_trials, prefetch_bytes, rates[n_trials / 2], rates[n_trials - 1],
           (unsigned long long)(sink & 1));
    free(readers);
    munmap(buffer, n_bytes);
    return 0;
}
