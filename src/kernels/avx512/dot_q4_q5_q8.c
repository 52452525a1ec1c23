/*
 * AVX-512 dot products of the legacy block formats. The code is avx2/dot_q4_q5_q8_impl.h,
 * built here with AVX-512 flags: its int8 dot products use VNNI (vpdpbusd, the same lane sums
 * as AVX2's maddubs) and its tiles are larger because there are 32 vector registers.
 */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/dot_q4_q5_q8_impl.h"
