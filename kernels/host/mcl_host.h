// Shared by every kernels/host/*_host.cpp: the export macro and error codes of libmcl_host.so.
// The host twin runs the kernels' MCL_HD arithmetic on the CPU so CI tests it without a GPU.
#pragma once

#define MCL_EXPORT extern "C" __attribute__((visibility("default")))

// Return codes of every exported function (mcl_fast/gpu/host.py turns them into errors).
enum MclHostStatus {
  MCL_OK = 0,
  MCL_BAD_SIZE = -1,      // a size or count is out of range
  MCL_BAD_ARGUMENT = -2,  // another argument is out of range (factor, percentile, box, ...)
};
