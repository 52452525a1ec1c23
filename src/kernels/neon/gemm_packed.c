/*
 * The NEON packed tiles (gemm_packed_impl.h) for the build's target: the widening-multiply path
 * on the ARMv8.0 base set, SDOT when the build targets the dot-product extension.
 */
#define NEON_PACKED_NAME(name) name
#include "kernels/neon/gemm_packed_impl.h"
