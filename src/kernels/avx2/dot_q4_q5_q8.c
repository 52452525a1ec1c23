/* AVX2 dot products of the legacy block formats; the code is in dot_q4_q5_q8_impl.h. */
#include "kernels/avx2/kernels_avx2.h"

#define QUILL_X86_NAME(stem) stem##_avx2
#include "kernels/avx2/dot_q4_q5_q8_impl.h"
