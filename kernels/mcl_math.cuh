// Arithmetic that must round exactly like NumPy on both sides of the build.
// nvcc and NVRTC contract a*b+c into one FMA (one rounding instead of two); g++ on x86-64
// without -mfma does not. The _rn intrinsics are never contracted, so a kernel written with
// these helpers gives the host twin's (and NumPy's) result bit for bit.
#pragma once
#include "common.cuh"

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

#if defined(__CUDA_ARCH__)
MCL_HD float mcl_fmul(float a, float b) { return __fmul_rn(a, b); }
MCL_HD float mcl_fadd(float a, float b) { return __fadd_rn(a, b); }
MCL_HD float mcl_fsub(float a, float b) { return __fsub_rn(a, b); }
MCL_HD double mcl_dmul(double a, double b) { return __dmul_rn(a, b); }
MCL_HD double mcl_dadd(double a, double b) { return __dadd_rn(a, b); }
MCL_HD double mcl_dsub(double a, double b) { return __dsub_rn(a, b); }
#else
MCL_HD float mcl_fmul(float a, float b) { return a * b; }
MCL_HD float mcl_fadd(float a, float b) { return a + b; }
MCL_HD float mcl_fsub(float a, float b) { return a - b; }
MCL_HD double mcl_dmul(double a, double b) { return a * b; }
MCL_HD double mcl_dadd(double a, double b) { return a + b; }
MCL_HD double mcl_dsub(double a, double b) { return a - b; }
#endif
