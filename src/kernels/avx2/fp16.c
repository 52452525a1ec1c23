/* AVX2 + F16C row conversions of F16 and BF16; the code is in fp16_impl.h. */
#include "kernels/avx2/kernels_avx2.h"

#define QUILL_X86_NAME(stem) stem##_avx2
#include "kernels/avx2/fp16_impl.h"
