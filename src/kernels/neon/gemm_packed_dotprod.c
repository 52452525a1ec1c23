/*
 * The NEON packed tiles (gemm_packed_impl.h) compiled for the dot-product extension, as
 * quill__gemm_packed_*_neon_dotprod. The build compiles this file alone with
 * -march=armv8.2-a+dotprod, and the kernel table takes these entry points only on CPUs that
 * report SDOT, so a build for the ARMv8.0 base set still uses SDOT where it exists.
 */
#if !defined(__ARM_FEATURE_DOTPROD)
#error "compile gemm_packed_dotprod.c with -march=armv8.2-a+dotprod"
#endif

#define NEON_PACKED_NAME(name) name##_dotprod
#include "kernels/neon/gemm_packed_impl.h"
