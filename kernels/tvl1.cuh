// TV-L1 optical flow (Zach, Pock, Bischof 2007; the duality-based scheme of OpenCV's
// cv::optflow::DualTVL1OpticalFlow, itself after Sanchez Perez et al., IPOL 2013).
//
// Every per-pixel formula of the solver lives here as an MCL_HD function. kernels/tvl1.cu
// calls them from thin __global__ kernels; kernels/host/tvl1_host.cpp calls the very same
// functions in plain C++ loops. The GPU module is compiled with --fmad=false and the host
// library with -ffp-contract=off, so both sides round every operation identically and the
// host twin reproduces the GPU flow bit for bit. Tests: tests/test_tvl1_host.py (host twin vs
// OpenCV and ground truth), tests/test_tvl1_emulated.py (the .cu kernels and the Python driver
// run on a CPU CUDA emulator: equal to the host twin bit for bit), tests/gpu/test_gpu_tvl1.py.
//
// Images are planar float32, row-major, `w` columns by `h` rows; (x, y) = (column, row).
// Flow (u1, u2) is the displacement (x, y) in pixels from I0 to I1: I0(x) ~ I1(x + u).
// Only gamma = 0 (OpenCV's default: no illumination term) is implemented.
#pragma once
#include "common.cuh"

#if !defined(__CUDACC_RTC__)
#include <cmath>
#endif

// Tile of one block of the fused iteration kernel; the host twin reduces the per-iteration
// error over the same tiles in the same order, so both sides take the same stopping decision.
// MCL_TVL1_MAX_CHUNK: most iterations one launch may run on a tile (its halo in pixels).
#define MCL_TVL1_TILE_X 32
#define MCL_TVL1_TILE_Y 16
#define MCL_TVL1_THREADS (MCL_TVL1_TILE_X * MCL_TVL1_TILE_Y)
#define MCL_TVL1_MAX_CHUNK 6

#if defined(__CUDACC__)
#define MCL_TVL1_UNROLL _Pragma("unroll")
#else
#define MCL_TVL1_UNROLL
#endif

// Solver settings in OpenCV's names and types (doubles, as cv::optflow::DualTVL1OpticalFlow
// stores them); the drivers derive the float constants exactly as OpenCV does:
// l_t = (float)(lambda * theta), taut = (float)(tau / theta),
// scaled epsilon = (float)(epsilon * epsilon * w * h) per pyramid level.
struct MclTvl1Params {
  double tau, lambda, theta;
  int nscales, warps;
  double epsilon;
  int inner, outer;
  double scale_step;
  int median;
};

// ---------------------------------------------------------------- input conversion

// cv::cvtColor(RGB2GRAY) on uint8, bit exact: BT.601 weights in 14-bit fixed point.
MCL_HD unsigned char mcl_tvl1_gray(unsigned char r, unsigned char g, unsigned char b) {
  return (unsigned char)((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14);
}

// ---------------------------------------------------------------- pyramid

// cv::resize(src, dst, Size(), f, f) picks round(n * f) (cvRound: half to even).
MCL_HD int mcl_tvl1_scaled_size(int n, double f) { return (int)rint((double)n * f); }

// Source tap and weight of OpenCV's INTER_LINEAR resize along one axis (half-pixel centres,
// clamped at the borders): dst[d] = src[i0] * (1 - a) + src[min(i0 + 1, n - 1)] * a.
// `scale` = src size / dst size, computed as OpenCV does: 1 / (dst / src) in double.
MCL_HD void mcl_tvl1_linear_tap(int d, double scale, int n, int* i0, float* a) {
  float f = (float)((d + 0.5) * scale - 0.5);
  int i = (int)floorf(f);
  f -= (float)i;
  if (i < 0) { i = 0; f = 0.f; }
  if (i >= n - 1) { i = n - 1; f = 0.f; }
  *i0 = i;
  *a = f;
}

// One output pixel of cv::resize(INTER_LINEAR) on a float image: horizontal pass per row,
// then the vertical blend, in OpenCV's order. `mult` scales the result (flow upsampling
// multiplies by 1 / scale_step; 1 for the image pyramid).
MCL_HD float mcl_tvl1_resize_px(const float* src, int sw, int sh, int dx, int dy,
                                double scale_x, double scale_y, float mult) {
  int x0, y0;
  float ax, ay;
  mcl_tvl1_linear_tap(dx, scale_x, sw, &x0, &ax);
  mcl_tvl1_linear_tap(dy, scale_y, sh, &y0, &ay);
  int x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
  int y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
  const float* r0 = src + (long long)y0 * sw;
  const float* r1 = src + (long long)y1 * sw;
  float h0 = r0[x0] * (1.f - ax) + r0[x1] * ax;
  float h1 = r1[x0] * (1.f - ax) + r1[x1] * ax;
  float v = h0 * (1.f - ay) + h1 * ay;
  return mult == 1.f ? v : v * mult;
}

// ---------------------------------------------------------------- derivatives

// OpenCV's centeredGradient: central differences inside, one-sided halves at the borders.
MCL_HD void mcl_tvl1_centered_grad(const float* img, int w, int h, int x, int y,
                                   float* dx, float* dy) {
  const float* row = img + (long long)y * w;
  int xl = x > 0 ? x - 1 : 0, xr = x < w - 1 ? x + 1 : w - 1;
  int yu = y > 0 ? y - 1 : 0, yd = y < h - 1 ? y + 1 : h - 1;
  *dx = 0.5f * (row[xr] - row[xl]);
  *dy = 0.5f * (img[(long long)yd * w + x] - img[(long long)yu * w + x]);
}

// ---------------------------------------------------------------- warping

// Keys' cubic convolution weights with A = -0.75 (OpenCV's interpolateCubic) for the taps
// at offsets -1, 0, 1, 2 from floor(x); t = x - floor(x).
MCL_HD void mcl_tvl1_cubic_weights(float t, float c[4]) {
  const float A = -0.75f;
  c[0] = ((A * (t + 1.f) - 5.f * A) * (t + 1.f) + 8.f * A) * (t + 1.f) - 4.f * A;
  c[1] = ((A + 2.f) * t - (A + 3.f)) * t * t + 1.f;
  c[2] = ((A + 2.f) * (1.f - t) - (A + 3.f)) * (1.f - t) * (1.f - t) + 1.f;
  c[3] = 1.f - c[0] - c[1] - c[2];
}

// cv::remap(src, mx, my, INTER_CUBIC, BORDER_CONSTANT 0): taps outside the image count as 0.
MCL_HD float mcl_tvl1_remap_cubic(const float* src, int w, int h, float mx, float my) {
  // Far outside (or NaN): every tap is outside; also keeps floorf's int conversion in range.
  if (!(mx > -4.f && mx < (float)w + 3.f && my > -4.f && my < (float)h + 3.f)) return 0.f;
  float fx = floorf(mx), fy = floorf(my);
  int ix = (int)fx - 1, iy = (int)fy - 1;
  float cx[4], cy[4];
  mcl_tvl1_cubic_weights(mx - fx, cx);
  mcl_tvl1_cubic_weights(my - fy, cy);
  float sum = 0.f;
  for (int i = 0; i < 4; ++i) {
    int yy = iy + i;
    if (yy < 0 || yy >= h) continue;
    const float* row = src + (long long)yy * w;
    float rs = 0.f;
    for (int j = 0; j < 4; ++j) {
      int xx = ix + j;
      if (xx >= 0 && xx < w) rs += row[xx] * cx[j];
    }
    sum += rs * cy[i];
  }
  return sum;
}

// OpenCV's calcGradRho at one pixel: the constant part of the linearised residual
// rho(u) = rho_c + I1wx * u1 + I1wy * u2. (|grad I1w|^2, OpenCV's `grad`, is recomputed from
// I1wx, I1wy where needed, bit for bit the same, so the iteration reads 3 planes, not 4.)
MCL_HD float mcl_tvl1_rho_c(float i0, float i1w, float i1wx, float i1wy, float u1, float u2) {
  return i1w - i1wx * u1 - i1wy * u2 - i0;
}

// ---------------------------------------------------------------- primal-dual iteration

// Divergence of the dual field at one pixel (backward differences; the neighbour left of
// column 0 / above row 0 counts as 0): OpenCV's divergence().
MCL_HD float mcl_tvl1_div(float px, float px_left, float py, float py_up) {
  return (px - px_left) + (py - py_up);
}

// estimateV (thresholding of the data term) then estimateU (u = v + theta div p) at one pixel.
// Returns the squared update |u_new - u|^2 that OpenCV sums into the stopping error.
MCL_HD float mcl_tvl1_primal(float i1wx, float i1wy, float rho_c, float u1, float u2,
                             float div1, float div2, float l_t, float theta,
                             float* u1_new, float* u2_new) {
  const float grad = i1wx * i1wx + i1wy * i1wy;  // OpenCV's calcGradRho
  const float rho = rho_c + (i1wx * u1 + i1wy * u2);
  float d1 = 0.f, d2 = 0.f;
  if (rho < -l_t * grad) {
    d1 = l_t * i1wx;
    d2 = l_t * i1wy;
  } else if (rho > l_t * grad) {
    d1 = -l_t * i1wx;
    d2 = -l_t * i1wy;
  } else if (grad > 1.1920928955078125e-07f) {  // FLT_EPSILON
    const float fi = -rho / grad;
    d1 = fi * i1wx;
    d2 = fi * i1wy;
  }
  const float v1 = u1 + d1, v2 = u2 + d2;
  const float n1 = v1 + theta * div1, n2 = v2 + theta * div2;
  *u1_new = n1;
  *u2_new = n2;
  return (n1 - u1) * (n1 - u1) + (n2 - u2) * (n2 - u2);
}

// estimateDualVariables for one flow component: p = (p + taut grad u) / (1 + taut |grad u|),
// with grad u from forward differences (0 past the last column / row).
MCL_HD void mcl_tvl1_dual(float ux, float uy, float taut, float* p1, float* p2) {
  const float g = sqrtf(ux * ux + uy * uy);
  const float ng = 1.f + taut * g;
  *p1 = (*p1 + taut * ux) / ng;
  *p2 = (*p2 + taut * uy) / ng;
}

// ---------------------------------------------------------------- median filter

// Exact median of 25 values (cv::medianBlur ksize 5 is an exact median too): 13 passes of
// an unrolled bubble sort push the 13 largest values to the end; v[12] is then the median.
// Fixed indices keep `v` in registers on the GPU.
MCL_HD float mcl_tvl1_median25(float v[25]) {
MCL_TVL1_UNROLL
  for (int pass = 0; pass < 13; ++pass) {
MCL_TVL1_UNROLL
    for (int j = 0; j < 24 - pass; ++j) {
      const float a = v[j], b = v[j + 1];
      v[j] = a < b ? a : b;
      v[j + 1] = a < b ? b : a;
    }
  }
  return v[12];
}

// Median of the 5x5 window of `src` at (x, y) with replicated borders (cv::medianBlur).
MCL_HD float mcl_tvl1_median5_px(const float* src, int w, int h, int x, int y) {
  float v[25];
MCL_TVL1_UNROLL
  for (int i = 0; i < 5; ++i) {
    int yy = y + i - 2;
    yy = yy < 0 ? 0 : (yy >= h ? h - 1 : yy);
    const float* row = src + (long long)yy * w;
MCL_TVL1_UNROLL
    for (int j = 0; j < 5; ++j) {
      int xx = x + j - 2;
      xx = xx < 0 ? 0 : (xx >= w ? w - 1 : xx);
      v[i * 5 + j] = row[xx];
    }
  }
  return mcl_tvl1_median25(v);
}

// ---------------------------------------------------------------- stopping error

// Number of tiles of the iteration kernel over a w x h image (one error partial per tile).
MCL_HD int mcl_tvl1_tiles(int w, int h) {
  return ((w + MCL_TVL1_TILE_X - 1) / MCL_TVL1_TILE_X) * ((h + MCL_TVL1_TILE_Y - 1) / MCL_TVL1_TILE_Y);
}

// The error of one iteration is summed in a fixed order that both sides follow:
//   tile partial: per warp (32 consecutive threads, thread = ty * TILE_X + tx) a shuffle-down
//     tree (offsets 16, 8, 4, 2, 1), then the warp sums (zero-padded to 32) by the same tree;
//   pair total: lane l sums tiles l, l + 32, ... in order, then the same tree over the lanes.
// A shuffle-down tree leaves in lane 0: v[l] += v[l + off] for off = 16 .. 1 (lanes < off).
MCL_HD float mcl_tvl1_error_lane(const float* partials, int n_tiles, int lane) {
  float s = 0.f;
  for (int t = lane; t < n_tiles; t += 32) s += partials[t];
  return s;
}

#if !defined(__CUDA_ARCH__)
// Host replay of a shuffle-down tree over 32 values (modifies v; returns lane 0).
inline float mcl_tvl1_tree32(float* v) {
  for (int off = 16; off > 0; off >>= 1)
    for (int l = 0; l < off; ++l) v[l] += v[l + off];
  return v[0];
}

// Host replay of the GPU's per-pair error total from its tile partials.
inline float mcl_tvl1_error_total(const float* partials, int n_tiles) {
  float lanes[32];
  for (int l = 0; l < 32; ++l) lanes[l] = mcl_tvl1_error_lane(partials, n_tiles, l);
  return mcl_tvl1_tree32(lanes);
}

// Host replay of one tile's partial over its MCL_TVL1_THREADS per-thread values.
inline float mcl_tvl1_block_sum(float* vals) {
  float warps[32] = {0.f};
  for (int w = 0; w < MCL_TVL1_THREADS / 32; ++w) warps[w] = mcl_tvl1_tree32(vals + 32 * w);
  return mcl_tvl1_tree32(warps);
}
#endif

// Per-pair solver state within one warp (OpenCV: iterate while error > scaled epsilon).
enum MclTvl1PairState {
  MCL_TVL1_RUN = 0,        // iterating
  MCL_TVL1_STOP_COPY = 1,  // just stopped: the next step copies its input to its output buffer
  MCL_TVL1_STOP_IDLE = 2,  // stopped, and both ping-pong buffers hold the final state
};

// After a chunk of k iterations with errors err[0..k-1] (err_stride apart): the pair's next
// state and how many iterations the chunk must be redone with (0: its output stands).
// OpenCV stops after the first iteration whose error is <= eps; if that is inside the chunk
// (not its last iteration), the chunk is recomputed from its intact input with exactly that
// many iterations, so the result equals iterating one step at a time.
MCL_HD int mcl_tvl1_after_chunk(int state, const float* err, int k, float eps, int* redo) {
  *redo = 0;
  if (state != MCL_TVL1_RUN) return MCL_TVL1_STOP_IDLE;  // the chunk copied (or idled)
  for (int t = 0; t < k; ++t)
    if (!(err[t] > eps)) {
      if (t < k - 1) *redo = t + 1;
      return MCL_TVL1_STOP_COPY;
    }
  return MCL_TVL1_RUN;
}
