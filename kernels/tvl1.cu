// TV-L1 optical flow on the GPU: thin kernels over the MCL_HD arithmetic of tvl1.cuh,
// batched over many frame pairs per launch (blockIdx.z = pair, or image for per-image steps).
// Load with load_module("tvl1", options=("--fmad=false",)) so the rounding equals the host
// twin's (kernels/host/tvl1_host.cpp); mcl_fast/gpu/flow.py is the driver.
//
// Launch schedule for a batch of P pairs built from F frames (F = P + 1 for one video's
// consecutive frames: the pyramid is built once per frame, not once per pair), with
// C = inner iterations per launch (`chunk`, default 6, at most MCL_TVL1_MAX_CHUNK):
//   once:        to_float (F images)                                           1 launch
//   per level:   resize (pyramid, F images)                        (nscales - 1) launches
//   per scale s (coarsest first):
//     gradient (centred) of the P target images at level s                     1 launch
//     memset p := 0 (cupy)
//     per warp (5):
//       warp: cubic remap of I1, I1x, I1y + rho_c, fused                        1 launch
//       per outer iteration (10):
//         [host: are all pairs stopped? (one small reduction + sync) then skip the rest]
//         median 5x5 of u1, u2                                                  1 launch
//         per chunk of C inner iterations (30 / C):
//           iterate: C x (estimateV + divergence + estimateU + forward gradient +
//                    estimateDualVariables) on a shared-memory tile, + error partials
//           decide:  per-pair stopping rule (one warp per pair)
//           iterate (redo mode): only pairs that stopped inside the chunk recompute it
//                    with fewer iterations; other blocks exit at once            3 launches
//     resize (upsample u to the next finer level, x 1/scale_step)              1 launch
//   once:        pack (P, 2, H, W) planar u -> (P, H, W, 2) flow                1 launch
// i.e. at most 5 x 5 x (2 + 10 x (1 + 3 x 30 / C)) ~ 4.5k launches per batch (C = 6), each
// covering every pair, so launch cost is amortised over the batch.
//
// Memory traffic: one iteration touches 15 floats per pixel (u 2, p 4, I1wx, I1wy, rho_c read;
// u, p written) = 60 B. The iterate kernel loads a 32x16 tile with a C-pixel halo into shared
// memory once (9 planes), runs C iterations there (the valid region shrinks by one pixel per
// iteration and side) and writes the tile back: at C = 6, ~(44 x 28 x 9 + 32 x 16 x 6) x 4 B per
// 6 iterations of 512 pixels, ~3x less DRAM traffic than one launch per iteration, for ~1.6x
// redundant arithmetic on the halo. 46.8 KB of static shared memory: 3-4 blocks (of 512 threads)
// per SM on A100/H100. The result does not depend on C (tests/test_tvl1_emulated.py).
// OpenCV's stopping rule (error <= epsilon^2 * area after an iteration) is kept exactly: each
// iteration's per-pair error is a deterministic reduction (warp shuffle trees per tile, then
// lane sums + a shuffle tree over tiles) that the host twin replays, and a pair that stops
// inside a chunk redoes that chunk from its intact input with exactly the iterations it needs.
// Not done (would need timing on a GPU): CUDA-graph capture of an outer iteration.
#include "tvl1.cuh"

#define TX MCL_TVL1_TILE_X
#define TY MCL_TVL1_TILE_Y

// ------------------------------------------------------------------ input and pyramid

// uint8 frames (gray, or RGB converted exactly as cv::cvtColor) -> float32, n_px pixels.
extern "C" __global__ void mcl_tvl1_to_float(const unsigned char* src, int channels,
                                             long long n_px, float* dst) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_px;
       i += (long long)gridDim.x * blockDim.x) {
    if (channels == 3)
      dst[i] = (float)mcl_tvl1_gray(src[3 * i], src[3 * i + 1], src[3 * i + 2]);
    else
      dst[i] = (float)src[i];
  }
}

// cv::resize INTER_LINEAR of n_imgs planar images (blockIdx.z = image), times `mult`.
extern "C" __global__ void mcl_tvl1_resize(const float* src, int sw, int sh, float* dst, int dw,
                                           int dh, double scale_x, double scale_y, float mult) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= dw || y >= dh) return;
  const long long img = blockIdx.z;
  dst[img * dw * dh + (long long)y * dw + x] =
      mcl_tvl1_resize_px(src + img * sw * sh, sw, sh, x, y, scale_x, scale_y, mult);
}

// Centred gradient of n_imgs images; image i is read at src + i * src_stride.
extern "C" __global__ void mcl_tvl1_gradient(const float* src, long long src_stride, int w,
                                          int h, float* gx, float* gy) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= w || y >= h) return;
  const long long img = blockIdx.z;
  const long long o = img * w * h + (long long)y * w + x;
  mcl_tvl1_centered_grad(src + img * src_stride, w, h, x, y, gx + o, gy + o);
}

// ------------------------------------------------------------------ warping

// One warp step: I1w, I1wx, I1wy by cubic remap at x + u, then rho_c.
// i0/i1: image i at base + i * img_stride; i1x/i1y: (P, h, w); u: (P, 2, h, w);
// wd out: (P, 3, h, w) = I1wx, I1wy, rho_c.
extern "C" __global__ void mcl_tvl1_warp(const float* i0, const float* i1, long long img_stride,
                                         const float* i1x, const float* i1y, const float* u,
                                         float* wd, int w, int h) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= w || y >= h) return;
  const long long hw = (long long)w * h, pair = blockIdx.z, o = (long long)y * w + x;
  const float u1 = u[pair * 2 * hw + o], u2 = u[pair * 2 * hw + hw + o];
  const float mx = (float)x + u1, my = (float)y + u2;
  const float w1 = mcl_tvl1_remap_cubic(i1 + pair * img_stride, w, h, mx, my);
  const float wx = mcl_tvl1_remap_cubic(i1x + pair * hw, w, h, mx, my);
  const float wy = mcl_tvl1_remap_cubic(i1y + pair * hw, w, h, mx, my);
  float* out = wd + pair * 3 * hw + o;
  out[0] = wx;
  out[hw] = wy;
  out[2 * hw] = mcl_tvl1_rho_c(i0[pair * img_stride + o], w1, wx, wy, u1, u2);
}

// ------------------------------------------------------------------ median

// 5x5 median of u1 and u2 at the start of an outer iteration (blockIdx.z = 2 * pair + comp);
// a stopped pair copies (first time) or does nothing.
extern "C" __global__ void mcl_tvl1_median(const float* u_in, float* u_out, int w, int h,
                                           const int* state) {
  const int st = state[blockIdx.z >> 1];
  if (st == MCL_TVL1_STOP_IDLE) return;
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= w || y >= h) return;
  const long long plane = (long long)blockIdx.z * w * h;
  const long long o = plane + (long long)y * w + x;
  u_out[o] = st == MCL_TVL1_RUN ? mcl_tvl1_median5_px(u_in + plane, w, h, x, y) : u_in[o];
}

// ------------------------------------------------------------------ fused iterations

#define RXM (TX + 2 * MCL_TVL1_MAX_CHUNK)
#define RYM (TY + 2 * MCL_TVL1_MAX_CHUNK)
#define NWARPS (TX * TY / 32)

__device__ __forceinline__ float tvl1_tree32(float v) {
  MCL_TVL1_UNROLL
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// A chunk of `iters` inner iterations on one TX x TY tile of one pair (blockIdx.z), entirely in
// shared memory: the tile is loaded with a halo of `iters` pixels, and each iteration
//   A: v = TH(u); u' = v + theta div p      on the region shrunk by 1 at the left/top
//   B: p' = (p + taut grad u') / (1 + taut |grad u'|)   shrunk by 1 more at the right/bottom
// so after `iters` iterations the tile itself is exact (halo cells outside the image keep
// p = 0, which is the divergence's boundary rule; the forward gradient's rule uses global
// coordinates). u and p are updated in place: each is read at other pixels only in the phase
// that does not write it.
// mode 0: run k iterations of a running pair and write each iteration's tile error to
//   err[(pair * MCL_TVL1_MAX_CHUNK + t) * n_tiles + tile]; a just-stopped pair copies u, p.
// mode 1 (redo): run redo[pair] iterations (0: nothing), from the same intact input.
// wd: (P, 3, h, w) from mcl_tvl1_warp; u: (P, 2, h, w); p: (P, 4, h, w) = p11, p12, p21, p22.
extern "C" __global__ void __launch_bounds__(TX * TY)
mcl_tvl1_iterate(const float* wd, const float* u_in, float* u_out, const float* p_in,
                 float* p_out, int w, int h, int k, const int* state, const int* redo, int mode,
                 float* err, int n_tiles, float l_t, float theta, float taut) {
  __shared__ float s_wd[3][RYM * RXM];
  __shared__ float s_u[2][RYM * RXM];
  __shared__ float s_p[4][RYM * RXM];
  __shared__ float s_err[TX * TY];
  __shared__ float s_warp[MCL_TVL1_MAX_CHUNK][NWARPS];

  const int pair = blockIdx.z;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TX + tx, lane = tid & 31;
  const int x0 = blockIdx.x * TX, y0 = blockIdx.y * TY;
  const int x = x0 + tx, y = y0 + ty;
  const bool inside = x < w && y < h;
  const long long hw = (long long)w * h, o = (long long)y * w + x;
  const float* wdp = wd + pair * 3 * hw;
  const float* uin = u_in + pair * 2 * hw;
  const float* pin = p_in + pair * 4 * hw;
  float* uout = u_out + pair * 2 * hw;
  float* pout = p_out + pair * 4 * hw;

  int iters;  // uniform over the block: every early return happens before any barrier
  if (mode == 0) {
    const int st = state[pair];
    if (st == MCL_TVL1_STOP_IDLE) return;
    if (st == MCL_TVL1_STOP_COPY) {
      if (inside) {
        uout[o] = uin[o];
        uout[hw + o] = uin[hw + o];
        for (int c = 0; c < 4; ++c) pout[c * hw + o] = pin[c * hw + o];
      }
      return;
    }
    iters = k;
  } else {
    iters = redo[pair];
    if (iters <= 0) return;
  }

  const int hl = iters, rx = TX + 2 * hl, ry = TY + 2 * hl;
  const int gx0 = x0 - hl, gy0 = y0 - hl;
  for (int i = tid; i < rx * ry; i += TX * TY) {
    const int gx = gx0 + i % rx, gy = gy0 + i / rx;
    const bool in = gx >= 0 && gy >= 0 && gx < w && gy < h;
    const long long go = (long long)gy * w + gx;
    MCL_TVL1_UNROLL
    for (int c = 0; c < 4; ++c) s_p[c][i] = in ? pin[c * hw + go] : 0.f;
    MCL_TVL1_UNROLL
    for (int c = 0; c < 2; ++c) s_u[c][i] = in ? uin[c * hw + go] : 0.f;
    MCL_TVL1_UNROLL
    for (int c = 0; c < 3; ++c) s_wd[c][i] = in ? wdp[c * hw + go] : 0.f;
  }
  __syncthreads();

  for (int t = 0; t < iters; ++t) {
    // A: primal step on local [t + 1, rx - t) x [t + 1, ry - t).
    const int ax = rx - 2 * t - 1, ay = ry - 2 * t - 1;
    for (int i = tid; i < ax * ay; i += TX * TY) {
      const int lx = t + 1 + i % ax, ly = t + 1 + i / ax;
      const int gx = gx0 + lx, gy = gy0 + ly;
      const int ox = lx - hl, oy = ly - hl;
      const bool own = ox >= 0 && ox < TX && oy >= 0 && oy < TY;
      if (gx >= w || gy >= h || gx < 0 || gy < 0) {
        if (own) s_err[oy * TX + ox] = 0.f;
        continue;
      }
      const int j = ly * rx + lx;
      const float div1 = mcl_tvl1_div(s_p[0][j], s_p[0][j - 1], s_p[1][j], s_p[1][j - rx]);
      const float div2 = mcl_tvl1_div(s_p[2][j], s_p[2][j - 1], s_p[3][j], s_p[3][j - rx]);
      float n1, n2;
      const float e = mcl_tvl1_primal(s_wd[0][j], s_wd[1][j], s_wd[2][j], s_u[0][j], s_u[1][j],
                                      div1, div2, l_t, theta, &n1, &n2);
      s_u[0][j] = n1;
      s_u[1][j] = n2;
      if (own) s_err[oy * TX + ox] = e;
    }
    __syncthreads();
    // B: dual step on local [t + 1, rx - t - 1) x [t + 1, ry - t - 1), and the tile's error
    // of this iteration (warp trees now, the tree over warps at the end).
    const int bx = rx - 2 * t - 2, by = ry - 2 * t - 2;
    for (int i = tid; i < bx * by; i += TX * TY) {
      const int lx = t + 1 + i % bx, ly = t + 1 + i / bx;
      const int gx = gx0 + lx, gy = gy0 + ly;
      if (gx >= w || gy >= h || gx < 0 || gy < 0) continue;
      const int j = ly * rx + lx;
      const float a1 = s_u[0][j], a2 = s_u[1][j];
      const bool has_r = gx < w - 1, has_d = gy < h - 1;
      const float u1x = has_r ? s_u[0][j + 1] - a1 : 0.f;
      const float u1y = has_d ? s_u[0][j + rx] - a1 : 0.f;
      const float u2x = has_r ? s_u[1][j + 1] - a2 : 0.f;
      const float u2y = has_d ? s_u[1][j + rx] - a2 : 0.f;
      mcl_tvl1_dual(u1x, u1y, taut, &s_p[0][j], &s_p[1][j]);
      mcl_tvl1_dual(u2x, u2y, taut, &s_p[2][j], &s_p[3][j]);
    }
    if (mode == 0) {
      const float v = tvl1_tree32(s_err[tid]);
      if (lane == 0) s_warp[t][tid >> 5] = v;
    }
    __syncthreads();
  }

  if (inside) {
    const int j = (ty + hl) * rx + (tx + hl);
    uout[o] = s_u[0][j];
    uout[hw + o] = s_u[1][j];
    MCL_TVL1_UNROLL
    for (int c = 0; c < 4; ++c) pout[c * hw + o] = s_p[c][j];
  }
  if (mode == 0 && tid < 32) {
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    for (int t = 0; t < iters; ++t) {
      const float v = tvl1_tree32(lane < NWARPS ? s_warp[t][lane] : 0.f);
      if (lane == 0) err[((long long)pair * MCL_TVL1_MAX_CHUNK + t) * n_tiles + tile] = v;
    }
  }
}

// After a chunk of k iterations: each pair's stopping decision (one warp per pair), see
// mcl_tvl1_after_chunk. Updates state[pair] and redo[pair].
extern "C" __global__ void mcl_tvl1_decide(const float* err, int k, int n_tiles, float eps,
                                           int* state, int* redo, int n_pairs) {
  const int pair = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (pair >= n_pairs) return;
  const int st = state[pair];
  float e[MCL_TVL1_MAX_CHUNK];
  for (int t = 0; t < k; ++t) {
    e[t] = 0.f;
    if (st == MCL_TVL1_RUN)
      e[t] = tvl1_tree32(mcl_tvl1_error_lane(
          err + ((long long)pair * MCL_TVL1_MAX_CHUNK + t) * n_tiles, n_tiles, lane));
  }
  if (lane == 0) {
    int r;
    state[pair] = mcl_tvl1_after_chunk(st, e, k, eps, &r);
    redo[pair] = r;
  }
}

// (P, 2, h, w) planar flow -> (P, h, w, 2) interleaved.
extern "C" __global__ void mcl_tvl1_pack(const float* u, long long hw, long long n_pairs,
                                         float* flow) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_pairs * hw;
       i += (long long)gridDim.x * blockDim.x) {
    const long long pair = i / hw, o = i - pair * hw;
    flow[2 * i] = u[pair * 2 * hw + o];
    flow[2 * i + 1] = u[pair * 2 * hw + hw + o];
  }
}
