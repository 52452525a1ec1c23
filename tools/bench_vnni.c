/*
 * Rate of the CPU's integer multiply pipes, as the packed quantized tiles use them: 512-bit
 * vpdpbusd alone, and mixed with the float products a tile needs per 32-weight block and token
 * (a scale product and an FMA). It gives the arithmetic ceiling of batched decode and prefill, to
 * set beside `quill bench` and `tools/bench_kernels.c`. Run by hand:
 *
 *   cc -O2 -march=native -std=c11 -D_GNU_SOURCE tools/bench_vnni.c -lpthread -o /tmp/bench_vnni
 *   /tmp/bench_vnni [n_threads] [seconds_per_mix]
 *
 * Defaults: 2 threads, 0.5 s per mix. Each thread runs 12 independent vpdpbusd chains, enough to
 * cover the instruction's latency, plus the mix's extra instructions on 3 more chains. Prints one
 * JSON object: per mix, the vpdpbusd executed per second over all threads (10^9/s) and the
 * int8 multiply-adds per second that makes (64 per instruction).
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if !defined(__AVX512VNNI__)
#error "bench_vnni needs AVX-512 VNNI: build with -march=native on a CPU that has it"
#endif

enum { MAX_THREADS = 64, N_CHAINS = 12, MACS_PER_INSTRUCTION = 64 };

/* What each loop iteration adds to its 12 vpdpbusd. */
typedef enum mix {
    MIX_VNNI,    /* nothing: the multiply pipes' own rate */
    MIX_FMA,     /* 3 float FMAs */
    MIX_MUL,     /* 3 float products */
    MIX_CONVERT, /* 3 int-to-float conversions and float adds */
    MIX_TILE,    /* per 8 vpdpbusd, 1 conversion, 1 product and 1 FMA, as a packed Q4_0 tile */
    MIX_COUNT
} mix;

static const char *const MIX_NAMES[MIX_COUNT] = {"vnni", "vnni_fma", "vnni_mul", "vnni_convert",
                                                 "tile"};

typedef struct worker {
    mix kind;
    double seconds;
    pthread_barrier_t *start;
    long iterations; /* loop iterations run, 12 vpdpbusd each */
    double elapsed;  /* seconds they took on this thread's clock */
    int sink;        /* keeps the chains live */
} worker;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One vpdpbusd on chain a. The chains start from different values, so the compiler cannot merge
 * them, and the empty asm on w and x keeps it from folding the products. */
#define DOT(a) a = _mm512_dpbusd_epi32(a, w, x)

/* Runs batches of iterations of the worker's mix until its time is up. */
static void *run_worker(void *argument) {
    worker *self = argument;
    __m512i w = _mm512_set1_epi8(3);
    __m512i x = _mm512_set1_epi8(5);
    __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2);
    __m512i a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5);
    __m512i a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8);
    __m512i a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11);
    __m512 f0 = _mm512_set1_ps(1.0f), f1 = _mm512_set1_ps(2.0f), f2 = _mm512_set1_ps(3.0f);
    __m512 s = _mm512_set1_ps(0.999f);
    __asm__ volatile("" : "+v"(w), "+v"(x), "+v"(s));
    const long batch = 1 << 16;
    pthread_barrier_wait(self->start);
    double start = now_seconds();
    long iterations = 0;
    /* One loop per mix, chosen outside it, so that each loop holds only its own instructions. */
#define RUN_LOOP(EXTRA)                                                                            \
    do {                                                                                           \
        for (long i = 0; i < batch; i++) {                                                         \
            DOT(a0), DOT(a1), DOT(a2), DOT(a3), DOT(a4), DOT(a5);                                  \
            DOT(a6), DOT(a7), DOT(a8), DOT(a9), DOT(a10), DOT(a11);                                \
            EXTRA;                                                                                 \
        }                                                                                          \
        iterations += batch;                                                                       \
    } while (now_seconds() - start < self->seconds)
    switch (self->kind) {
    case MIX_VNNI:
        RUN_LOOP((void)0);
        break;
    case MIX_FMA:
        RUN_LOOP(f0 = _mm512_fmadd_ps(f0, s, s); f1 = _mm512_fmadd_ps(f1, s, s);
                 f2 = _mm512_fmadd_ps(f2, s, s));
        break;
    case MIX_MUL:
        RUN_LOOP(f0 = _mm512_mul_ps(f0, s); f1 = _mm512_mul_ps(f1, s); f2 = _mm512_mul_ps(f2, s));
        break;
    case MIX_CONVERT:
        RUN_LOOP(f0 = _mm512_add_ps(_mm512_cvtepi32_ps(a0), f0);
                 f1 = _mm512_add_ps(_mm512_cvtepi32_ps(a1), f1);
                 f2 = _mm512_add_ps(_mm512_cvtepi32_ps(a2), f2));
        break;
    case MIX_TILE:
        /* 12 vpdpbusd are 1.5 blocks of one token, so two iterations take 3 of each: one in even
         * iterations, two in odd ones. The scale product takes a changing input, as the tile's
         * d_w times d_x does, so that it cannot move out of the loop. The conversion that makes
         * that input runs on other pipes. */
        RUN_LOOP(f0 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a3), s),
                                      _mm512_cvtepi32_ps(a0), f0);
                 if (i & 1) {
                     f2 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a4), s),
                                          _mm512_cvtepi32_ps(a1), f2);
                 });
        break;
    case MIX_COUNT:
        break;
    }
#undef RUN_LOOP
    self->iterations = iterations;
    self->elapsed = now_seconds() - start;
    __m512i all = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), a2),
                                   _mm512_add_epi32(_mm512_add_epi32(a3, a4), a5));
    all = _mm512_add_epi32(all, _mm512_add_epi32(_mm512_add_epi32(a6, a7), a8));
    all = _mm512_add_epi32(all, _mm512_add_epi32(_mm512_add_epi32(a9, a10), a11));
    __m512 floats = _mm512_add_ps(_mm512_add_ps(f0, f1), f2);
    self->sink = _mm512_reduce_add_epi32(all) + (int)_mm512_reduce_add_ps(floats);
    return NULL;
}

/* Runs one mix on n_threads threads at once and returns the vpdpbusd per second over all of
 * them. Each thread counts its own iterations over its own time, so a thread that starts late
 * does not lower the others' rate. Exits when a thread cannot start. */
static double run_mix(mix kind, int n_threads, double seconds) {
    pthread_t threads[MAX_THREADS];
    worker workers[MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n_threads);
    int n_started = 0;
    for (; n_started < n_threads; n_started++) {
        workers[n_started] = (worker){.kind = kind, .seconds = seconds, .start = &start};
        if (pthread_create(&threads[n_started], NULL, run_worker, &workers[n_started]) != 0) {
            break;
        }
    }
    if (n_started < n_threads) {
        fprintf(stderr, "bench_vnni: could not start thread %d of %d\n", n_started + 1, n_threads);
        exit(1); /* the started threads wait on the barrier for ever */
    }
    double total = 0.0;
    for (int t = 0; t < n_threads; t++) {
        pthread_join(threads[t], NULL);
        total += (double)workers[t].iterations * N_CHAINS / workers[t].elapsed;
    }
    pthread_barrier_destroy(&start);
    return total;
}

int main(int argc, char **argv) {
    int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    double seconds = argc > 2 ? atof(argv[2]) : 0.5;
    if (n_threads < 1 || n_threads > MAX_THREADS) {
        fprintf(stderr, "bench_vnni: invalid thread count '%s'; give 1 to %d\n", argv[1],
                MAX_THREADS);
        return 2;
    }
    if (!(seconds >= 0.05 && seconds <= 60.0)) {
        fprintf(stderr, "bench_vnni: invalid seconds per mix '%s'; give 0.05 to 60\n",
                argv[2]);
        return 2;
    }
    printf("{\"threads\": %d, \"seconds_per_mix\": %.2f", n_threads, seconds);
    for (int m = 0; m < MIX_COUNT; m++) {
        double rate = run_mix((mix)m, n_threads, seconds);
        printf(", \"%s_giga_vpdpbusd_per_second\": %.3f, \"%s_gmac_per_second\": %.1f",
               MIX_NAMES[m], rate * 1e-9, MIX_NAMES[m], rate * MACS_PER_INSTRUCTION * 1e-9);
    }
    printf("}\n");
    return 0;
}
