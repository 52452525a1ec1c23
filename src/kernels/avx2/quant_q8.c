/* AVX2 activation quantization to Q8_0, Q8_1 and Q8_K; the code is in quant_q8_impl.h. */
#include "kernels/avx2/kernels_avx2.h"

#define QUILL_X86_NAME(stem) stem##_avx2
#include "kernels/avx2/quant_q8_impl.h"
