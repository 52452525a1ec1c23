/* AVX2 dot products of F32, F16 and BF16 rows; the code is in dot_float_impl.h. */
#include "kernels/avx2/kernels_avx2.h"

#define QUILL_X86_NAME(stem) stem##_avx2
#include "kernels/avx2/dot_float_impl.h"
