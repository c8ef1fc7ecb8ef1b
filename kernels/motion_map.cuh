// Motion maps, eq. (1) of the paper, per pixel:  m = sqrt(u_x^2 + u_y^2 + v_x^2 + v_y^2)
// with numpy.gradient's derivatives (central inside, one-sided at the borders, unit spacing),
// in NumPy's float32 operation order so the result equals mcl_fast.motion.maps.motion_map bit
// for bit. Plus the block-mean downsample of maps.downsample_mean and the store's uint8 quantisation.
//
// Layout: a frame's flow is (H, W, 2) float32, C-contiguous, channel 0 = u (x), 1 = v (y).
#pragma once
#include "common.cuh"
#include "mcl_math.cuh"

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

// numpy.gradient of samples f[lo], f[hi] around index i of an axis of n >= 2 samples:
// the neighbours it reads, and whether the difference is halved (central) or not (one-sided).
MCL_HD void mcl_gradient_taps(int i, int n, int* lo, int* hi, bool* central) {
  *central = (i > 0 && i < n - 1);
  *lo = (i > 0) ? i - 1 : 0;
  *hi = (i < n - 1) ? i + 1 : n - 1;
}

MCL_HD float mcl_gradient(float f_lo, float f_hi, bool central) {
  const float d = mcl_fsub(f_hi, f_lo);
  return central ? mcl_fmul(d, 0.5f) : d;  // x*0.5 rounds exactly like NumPy's x/2.0
}

// One flow vector (u, v). On the device an 8-byte vector load (flow rows are 8-byte aligned:
// CuPy allocations are 256-byte aligned and every pixel holds two floats), so a warp reading 32
// neighbouring pixels reads 256 contiguous bytes.
struct MclFlowVec {
  float u, v;
};

MCL_HD MclFlowVec mcl_flow_vec(const float* frame_flow, int width, int y, int x) {
  const long long i = ((long long)y * width + x) * 2;
  MclFlowVec f;
#if defined(__CUDA_ARCH__)
  const float2 g = *reinterpret_cast<const float2*>(frame_flow + i);
  f.u = g.x;
  f.v = g.y;
#else
  f.u = frame_flow[i];
  f.v = frame_flow[i + 1];
#endif
  return f;
}

// Eq. (1) at pixel (y, x) of one frame's flow (H, W, 2). H, W >= 2.
MCL_HD float mcl_motion_pixel(const float* frame_flow, int height, int width, int y, int x) {
  int y_lo, y_hi, x_lo, x_hi;
  bool y_central, x_central;
  mcl_gradient_taps(y, height, &y_lo, &y_hi, &y_central);
  mcl_gradient_taps(x, width, &x_lo, &x_hi, &x_central);
  const MclFlowVec up = mcl_flow_vec(frame_flow, width, y_lo, x), down = mcl_flow_vec(frame_flow, width, y_hi, x);
  const MclFlowVec left = mcl_flow_vec(frame_flow, width, y, x_lo), right = mcl_flow_vec(frame_flow, width, y, x_hi);
  const float du_dy = mcl_gradient(up.u, down.u, y_central), du_dx = mcl_gradient(left.u, right.u, x_central);
  const float dv_dy = mcl_gradient(up.v, down.v, y_central), dv_dx = mcl_gradient(left.v, right.v, x_central);
  // NumPy: (d_dy * d_dy + d_dx * d_dx).sum(axis=-1), channel u then v
  const float sum_u = mcl_fadd(mcl_fmul(du_dy, du_dy), mcl_fmul(du_dx, du_dx));
  const float sum_v = mcl_fadd(mcl_fmul(dv_dy, dv_dy), mcl_fmul(dv_dx, dv_dx));
  return sqrtf(mcl_fadd(sum_u, sum_v));
}

// Block sums for the downsample, in ONE order shared by the kernel and the host twin (so they agree
// bit for bit): down each column of the cell (rows in order), then the column sums left to right.
// Rows of cell row cy: [cy*f, min((cy+1)*f, H)) -- a partial bottom cell sums what it has.
MCL_HD float mcl_motion_column_sum(const float* frame_flow, int height, int width, int factor, int cy, int x) {
  const int y_end = (cy + 1) * factor < height ? (cy + 1) * factor : height;
  float sum = 0.0f;
  for (int y = cy * factor; y < y_end; ++y) sum = mcl_fadd(sum, mcl_motion_pixel(frame_flow, height, width, y, x));
  return sum;
}

// The factor x factor cell (cy, cx): its columns' sums added left to right (columns past the
// frame's right edge are left out; the kernel adds +0.0 for them, which changes nothing).
MCL_HD float mcl_motion_block_sum(const float* frame_flow, int height, int width, int factor, int cy, int cx) {
  const int x_end = (cx + 1) * factor < width ? (cx + 1) * factor : width;
  float sum = 0.0f;
  for (int x = cx * factor; x < x_end; ++x)
    sum = mcl_fadd(sum, mcl_motion_column_sum(frame_flow, height, width, factor, cy, x));
  return sum;
}

// A block's mean as maps.downsample_mean writes it: float32 sum / (f*f) in float32.
MCL_HD float mcl_block_mean(float block_sum, int factor) {
  return block_sum / (float)(factor * factor);
}

// The store's uint8 code of a map value (mcl_fast.motion.store.quantize_maps):
//   q = rint(double(m) * gain) clipped to [0, 255], gain = 255.0 / scale in double,
//   scale = the video's largest map value. Half-way values round to even, as np.rint.
MCL_HD unsigned char mcl_quantize(float m, double gain) {
  const double q = rint(mcl_dmul((double)m, gain));
  if (!(q > 0.0)) return 0;  // negative or NaN (the store refuses NaN maps before this)
  return (unsigned char)(q > 255.0 ? 255.0 : q);
}
