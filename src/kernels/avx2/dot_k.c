/* AVX2 dot products of the K-quants; the code is in dot_k_impl.h. */
#include "kernels/avx2/kernels_avx2.h"

#define QUILL_X86_NAME(stem) stem##_avx2
#include "kernels/avx2/dot_k_impl.h"
