// CPU twin of kernels/tvl1.cu: the same MCL_HD functions (tvl1.cuh) over whole images in plain
// loops, in the same order of operations, so it computes the GPU's flow on machines without a
// GPU (the tests compare it with OpenCV's DualTVL1 and, on a GPU, with the kernels).
// The GPU's per-iteration error reduction (shuffle trees per tile, then lane sums and a shuffle
// tree over the tiles) is replayed exactly, so both sides stop iterating at the same step. The
// GPU runs several iterations per launch on shared-memory tiles; the result is that of this
// one-iteration-at-a-time loop (a pair that stops inside a chunk redoes it, see tvl1.cu).
#include <cstring>
#include <vector>

#include "mcl_host.h"
#include "tvl1.cuh"

namespace {

struct Level {
  int w, h;
};

// Levels of OpenCV's pyramid: round(prev * step) per axis, stopping before a side < 16.
std::vector<Level> pyramid_levels(int h, int w, int nscales, double step) {
  std::vector<Level> lv{{w, h}};
  for (int s = 1; s < nscales; ++s) {
    Level n{mcl_tvl1_scaled_size(lv.back().w, step), mcl_tvl1_scaled_size(lv.back().h, step)};
    if (n.w < 16 || n.h < 16) break;
    lv.push_back(n);
  }
  return lv;
}

void resize_image(const float* src, int sw, int sh, float* dst, int dw, int dh, double scale_x,
                  double scale_y, float mult) {
  for (int y = 0; y < dh; ++y)
    for (int x = 0; x < dw; ++x)
      dst[(long long)y * dw + x] = mcl_tvl1_resize_px(src, sw, sh, x, y, scale_x, scale_y, mult);
}

bool params_ok(const MclTvl1Params& p) {
  return p.tau > 0 && p.lambda > 0 && p.theta > 0 && p.nscales >= 1 && p.warps >= 1 &&
         p.epsilon >= 0 && p.inner >= 1 && p.outer >= 1 && p.scale_step > 0 &&
         p.scale_step < 1 && (p.median <= 1 || p.median == 5);
}

// Work buffers of one pair at one level.
struct Scratch {
  std::vector<float> i1x, i1y, wd, un, p, e;
  void resize(long long hw) {
    i1x.resize(hw);
    i1y.resize(hw);
    wd.resize(3 * hw);
    un.resize(2 * hw);
    p.resize(4 * hw);
    e.resize(hw);
  }
};

// One inner iteration for one pair (one of mcl_tvl1_iterate's chunk); returns the stopping error.
float iterate(const float* wd, float* u, float* p, Scratch& sc, int w, int h, float l_t,
              float theta, float taut) {
  const long long hw = (long long)w * h;
  float* un = sc.un.data();
  float* e = sc.e.data();
  const float *p11 = p, *p12 = p + hw, *p21 = p + 2 * hw, *p22 = p + 3 * hw;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const long long o = (long long)y * w + x;
      const float div1 = mcl_tvl1_div(p11[o], x > 0 ? p11[o - 1] : 0.f, p12[o], y > 0 ? p12[o - w] : 0.f);
      const float div2 = mcl_tvl1_div(p21[o], x > 0 ? p21[o - 1] : 0.f, p22[o], y > 0 ? p22[o - w] : 0.f);
      e[o] = mcl_tvl1_primal(wd[o], wd[hw + o], wd[2 * hw + o], u[o], u[hw + o], div1, div2, l_t,
                             theta, un + o, un + hw + o);
    }
  // Error partials per tile, reduced exactly as the GPU block does.
  const int tiles_x = (w + MCL_TVL1_TILE_X - 1) / MCL_TVL1_TILE_X;
  const int tiles_y = (h + MCL_TVL1_TILE_Y - 1) / MCL_TVL1_TILE_Y;
  std::vector<float> partials((size_t)tiles_x * tiles_y);
  float vals[MCL_TVL1_THREADS];
  for (int by = 0; by < tiles_y; ++by)
    for (int bx = 0; bx < tiles_x; ++bx) {
      for (int ty = 0; ty < MCL_TVL1_TILE_Y; ++ty)
        for (int tx = 0; tx < MCL_TVL1_TILE_X; ++tx) {
          const int x = bx * MCL_TVL1_TILE_X + tx, y = by * MCL_TVL1_TILE_Y + ty;
          vals[ty * MCL_TVL1_TILE_X + tx] = (x < w && y < h) ? e[(long long)y * w + x] : 0.f;
        }
      partials[(size_t)by * tiles_x + bx] = mcl_tvl1_block_sum(vals);
    }
  const float err = mcl_tvl1_error_total(partials.data(), (int)partials.size());
  // Dual step from the forward differences of the new u.
  float *q11 = p, *q12 = p + hw, *q21 = p + 2 * hw, *q22 = p + 3 * hw;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const long long o = (long long)y * w + x;
      const float a1 = un[o], a2 = un[hw + o];
      const bool has_r = x < w - 1, has_d = y < h - 1;
      const float u1x = has_r ? un[o + 1] - a1 : 0.f;
      const float u1y = has_d ? un[o + w] - a1 : 0.f;
      const float u2x = has_r ? un[hw + o + 1] - a2 : 0.f;
      const float u2y = has_d ? un[hw + o + w] - a2 : 0.f;
      mcl_tvl1_dual(u1x, u1y, taut, q11 + o, q12 + o);
      mcl_tvl1_dual(u2x, u2y, taut, q21 + o, q22 + o);
    }
  std::memcpy(u, un, sizeof(float) * 2 * hw);
  return err;
}

// OpenCV's procOneScale for one pair; u (2, h, w) holds the initial flow and receives the
// result. Returns the number of inner iterations run.
long long one_scale(const float* i0, const float* i1, float* u, int w, int h,
                    const MclTvl1Params& prm, Scratch& sc) {
  const long long hw = (long long)w * h;
  sc.resize(hw);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      mcl_tvl1_centered_grad(i1, w, h, x, y, &sc.i1x[(long long)y * w + x], &sc.i1y[(long long)y * w + x]);
  std::fill(sc.p.begin(), sc.p.end(), 0.f);
  const float l_t = (float)(prm.lambda * prm.theta);
  const float taut = (float)(prm.tau / prm.theta);
  const float theta = (float)prm.theta;
  const float eps = (float)(prm.epsilon * prm.epsilon * (double)hw);
  std::vector<float> med(prm.median > 1 ? hw : 0);
  long long iters = 0;
  for (int warp = 0; warp < prm.warps; ++warp) {
    float* wd = sc.wd.data();
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const long long o = (long long)y * w + x;
        const float mx = (float)x + u[o], my = (float)y + u[hw + o];
        const float w1 = mcl_tvl1_remap_cubic(i1, w, h, mx, my);
        wd[o] = mcl_tvl1_remap_cubic(sc.i1x.data(), w, h, mx, my);
        wd[hw + o] = mcl_tvl1_remap_cubic(sc.i1y.data(), w, h, mx, my);
        wd[2 * hw + o] = mcl_tvl1_rho_c(i0[o], w1, wd[o], wd[hw + o], u[o], u[hw + o]);
      }
    // OpenCV: both loops run while the last iteration's error is > eps (reset every warp).
    bool running = true;
    for (int outer = 0; outer < prm.outer && running; ++outer) {
      if (prm.median > 1)
        for (int c = 0; c < 2; ++c) {
          float* uc = u + c * hw;
          for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) med[(long long)y * w + x] = mcl_tvl1_median5_px(uc, w, h, x, y);
          std::memcpy(uc, med.data(), sizeof(float) * hw);
        }
      for (int inner = 0; inner < prm.inner && running; ++inner) {
        const float err = iterate(wd, u, sc.p.data(), sc, w, h, l_t, theta, taut);
        ++iters;
        running = err > eps;
      }
    }
  }
  return iters;
}

bool read_params(const double* v, int n, MclTvl1Params* p) {
  if (v == nullptr || n != 11) return false;
  p->tau = v[0];
  p->lambda = v[1];
  p->theta = v[2];
  p->nscales = (int)v[3];
  p->warps = (int)v[4];
  p->epsilon = v[5];
  p->inner = (int)v[6];
  p->outer = (int)v[7];
  p->scale_step = v[8];
  if (v[9] != 0.0) return false;  // gamma (illumination term) is not implemented
  p->median = (int)v[10];
  return params_ok(*p);
}

}  // namespace

// TV-L1 flow of n_pairs pairs (i0[k] -> i1[k]), each (h, w) gray or (h, w, 3) RGB uint8.
// params: tau, lambda, theta, nscales, warps, epsilon, inner, outer, scale_step, gamma (must
// be 0), median (0/1 = off, 5). flow_out: (n_pairs, h, w, 2) float32. iters_out (nullable):
// inner iterations run per pair, summed over scales and warps.
MCL_EXPORT int mcl_host_tvl1_flow(const unsigned char* i0, const unsigned char* i1, int n_pairs,
                                  int h, int w, int channels, const double* params, int n_params,
                                  float* flow_out, long long* iters_out) {
  if (n_pairs < 0 || h < 3 || w < 3 || (channels != 1 && channels != 3)) return MCL_BAD_SIZE;
  MclTvl1Params prm;
  if (!read_params(params, n_params, &prm)) return MCL_BAD_ARGUMENT;
  const long long hw = (long long)w * h;
  const std::vector<Level> lv = pyramid_levels(h, w, prm.nscales, prm.scale_step);
  const int nl = (int)lv.size();
  std::vector<std::vector<float>> p0(nl), p1(nl), u(nl);
  Scratch sc;
  for (int k = 0; k < n_pairs; ++k) {
    const unsigned char* a = i0 + (long long)k * hw * channels;
    const unsigned char* b = i1 + (long long)k * hw * channels;
    p0[0].resize(hw);
    p1[0].resize(hw);
    for (long long i = 0; i < hw; ++i) {
      p0[0][i] = channels == 3 ? (float)mcl_tvl1_gray(a[3 * i], a[3 * i + 1], a[3 * i + 2]) : (float)a[i];
      p1[0][i] = channels == 3 ? (float)mcl_tvl1_gray(b[3 * i], b[3 * i + 1], b[3 * i + 2]) : (float)b[i];
    }
    const double inv = 1.0 / prm.scale_step;  // OpenCV: scale = 1 / fx
    for (int s = 1; s < nl; ++s) {
      p0[s].resize((size_t)lv[s].w * lv[s].h);
      p1[s].resize((size_t)lv[s].w * lv[s].h);
      resize_image(p0[s - 1].data(), lv[s - 1].w, lv[s - 1].h, p0[s].data(), lv[s].w, lv[s].h, inv, inv, 1.f);
      resize_image(p1[s - 1].data(), lv[s - 1].w, lv[s - 1].h, p1[s].data(), lv[s].w, lv[s].h, inv, inv, 1.f);
    }
    u[nl - 1].assign((size_t)2 * lv[nl - 1].w * lv[nl - 1].h, 0.f);
    long long iters = 0;
    for (int s = nl - 1; s >= 0; --s) {
      iters += one_scale(p0[s].data(), p1[s].data(), u[s].data(), lv[s].w, lv[s].h, prm, sc);
      if (s == 0) break;
      // Upsample to the next finer level (dsize given: scale = 1 / (dst / src)) and rescale.
      const Level f = lv[s - 1], c = lv[s];
      const double sx = 1.0 / ((double)f.w / c.w), sy = 1.0 / ((double)f.h / c.h);
      const long long fhw = (long long)f.w * f.h, chw = (long long)c.w * c.h;
      u[s - 1].resize((size_t)2 * fhw);
      for (int comp = 0; comp < 2; ++comp)
        resize_image(u[s].data() + comp * chw, c.w, c.h, u[s - 1].data() + comp * fhw, f.w, f.h, sx,
                     sy, (float)(1.0 / prm.scale_step));
    }
    float* out = flow_out + (long long)k * hw * 2;
    for (long long i = 0; i < hw; ++i) {
      out[2 * i] = u[0][i];
      out[2 * i + 1] = u[0][hw + i];
    }
    if (iters_out) iters_out[k] = iters;
  }
  return MCL_OK;
}

// ------------------------------------------------------------------ pieces, for unit tests

// Number of pyramid levels (<= nscales) and their sizes: sizes[2 s] = h, sizes[2 s + 1] = w.
MCL_EXPORT int mcl_host_tvl1_pyramid(int h, int w, int nscales, double step, int* sizes) {
  if (h < 1 || w < 1 || nscales < 1) return MCL_BAD_SIZE;
  if (!(step > 0 && step < 1)) return MCL_BAD_ARGUMENT;
  const std::vector<Level> lv = pyramid_levels(h, w, nscales, step);
  for (size_t s = 0; s < lv.size(); ++s) {
    sizes[2 * s] = lv[s].h;
    sizes[2 * s + 1] = lv[s].w;
  }
  return (int)lv.size();
}

// cv::resize INTER_LINEAR of n float images (sh, sw) -> (dh, dw), result times mult.
MCL_EXPORT int mcl_host_tvl1_resize(const float* src, int n, int sh, int sw, float* dst, int dh,
                                    int dw, double scale_x, double scale_y, float mult) {
  if (n < 0 || sh < 1 || sw < 1 || dh < 1 || dw < 1) return MCL_BAD_SIZE;
  for (int k = 0; k < n; ++k)
    resize_image(src + (long long)k * sh * sw, sw, sh, dst + (long long)k * dh * dw, dw, dh, scale_x,
                 scale_y, mult);
  return MCL_OK;
}

// cv::remap(INTER_CUBIC, BORDER_CONSTANT 0) of one (h, w) float image at maps (h, w).
MCL_EXPORT int mcl_host_tvl1_remap_cubic(const float* src, int h, int w, const float* mx,
                                         const float* my, float* dst) {
  if (h < 1 || w < 1) return MCL_BAD_SIZE;
  for (long long i = 0; i < (long long)h * w; ++i) dst[i] = mcl_tvl1_remap_cubic(src, w, h, mx[i], my[i]);
  return MCL_OK;
}

// cv::medianBlur(ksize 5) of one (h, w) float image.
MCL_EXPORT int mcl_host_tvl1_median5(const float* src, int h, int w, float* dst) {
  if (h < 1 || w < 1) return MCL_BAD_SIZE;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) dst[(long long)y * w + x] = mcl_tvl1_median5_px(src, w, h, x, y);
  return MCL_OK;
}

// OpenCV's centeredGradient of one (h, w) float image.
MCL_EXPORT int mcl_host_tvl1_centered_grad(const float* src, int h, int w, float* gx, float* gy) {
  if (h < 2 || w < 2) return MCL_BAD_SIZE;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const long long o = (long long)y * w + x;
      mcl_tvl1_centered_grad(src, w, h, x, y, gx + o, gy + o);
    }
  return MCL_OK;
}

// cv::cvtColor(RGB2GRAY) of n_px RGB uint8 pixels.
MCL_EXPORT int mcl_host_tvl1_gray(const unsigned char* rgb, long long n_px, unsigned char* out) {
  if (n_px < 0) return MCL_BAD_SIZE;
  for (long long i = 0; i < n_px; ++i) out[i] = mcl_tvl1_gray(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
  return MCL_OK;
}
