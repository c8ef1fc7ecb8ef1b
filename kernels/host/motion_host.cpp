// CPU twin of kernels/motion_map.cu: the same MCL_HD arithmetic, looped on the host.

#include "mcl_host.h"
#include "motion_map.cuh"

// out (N, H, W) = eq. (1) of flow (N, H, W, 2).
MCL_EXPORT int mcl_host_motion_map(const float* flow, float* out, int frames, int height, int width) {
  if (frames < 0 || height < 2 || width < 2) return MCL_BAD_SIZE;
  const long long plane = (long long)height * width;
  for (int n = 0; n < frames; ++n)
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        out[n * plane + (long long)y * width + x] = mcl_motion_pixel(flow + n * plane * 2, height, width, y, x);
  return MCL_OK;
}

// The fused kernel's results: small (N, H/f, W/f) block means, m_t (N,) double spatial means of
// the full-size map, codes (N, H/f, W/f) uint8 (gain = 255.0 / scale) when codes != nullptr.
MCL_EXPORT int mcl_host_motion_map_fused(const float* flow, float* small, unsigned char* codes, double* m_t,
                                         int frames, int height, int width, int factor, double gain) {
  if (frames < 0 || height < 2 || width < 2) return MCL_BAD_SIZE;
  if (factor < 1 || factor > height || factor > width) return MCL_BAD_ARGUMENT;
  const int cells_y = (height + factor - 1) / factor, cells_x = (width + factor - 1) / factor;
  const int small_h = height / factor, small_w = width / factor;
  for (int n = 0; n < frames; ++n) {
    const float* frame_flow = flow + (long long)n * height * width * 2;
    double total = 0.0;
    for (int cy = 0; cy < cells_y; ++cy)
      for (int cx = 0; cx < cells_x; ++cx) {
        const float s = mcl_motion_block_sum(frame_flow, height, width, factor, cy, cx);
        total += (double)s;
        if (cy < small_h && cx < small_w) {
          const long long o = ((long long)n * small_h + cy) * small_w + cx;
          small[o] = mcl_block_mean(s, factor);
          if (codes != nullptr) codes[o] = mcl_quantize(small[o], gain);
        }
      }
    m_t[n] = total / ((double)height * width);
  }
  return MCL_OK;
}

MCL_EXPORT int mcl_host_motion_quantize(const float* maps, unsigned char* codes, long long count, double gain) {
  if (count < 0) return MCL_BAD_SIZE;
  for (long long i = 0; i < count; ++i) codes[i] = mcl_quantize(maps[i], gain);
  return MCL_OK;
}
