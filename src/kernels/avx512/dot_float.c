/* AVX-512 dot products of F32, F16 and BF16 rows; the code is in avx2/dot_float_impl.h, built here with AVX-512 flags:
 * the int8 dot products use VNNI and tiles are larger (32 vector registers). */
#include "kernels/avx512/kernels_avx512.h"

#define QUILL_X86_USE_VNNI 1
#define QUILL_X86_NAME(stem) stem##_avx512
#include "kernels/avx2/dot_float_impl.h"
