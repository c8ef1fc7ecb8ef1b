// Shared by every kernel: per-element arithmetic is written once as MCL_HD functions, so
// nvcc compiles it into the __global__ kernels and g++ compiles the very same code into the
// host driver (libmcl_host) that CI tests against the NumPy references without a GPU.
#pragma once

#if defined(__CUDACC__)
#define MCL_HD __host__ __device__ __forceinline__
#define MCL_GLOBAL __global__
#else
#define MCL_HD inline
#define MCL_GLOBAL
#endif
