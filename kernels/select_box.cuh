// Crop-box selection (paper sec. 3.2) exactly as mcl_fast.sampling.select_box_index computes it:
//   thr  = numpy.percentile(m_s, percentile)       (method "linear": NumPy's _lerp, bit for bit)
//   hot  = m_s > thr
//   pick = the first box holding >= coverage * hot.sum(), else the first holding the most
//          (np.argmax), else (no hot pixel at all) box 0.
// The percentile's two order statistics come from a 4-pass radix select over order-preserving
// 32-bit keys; box counts come from a summed-area table in O(1) per box.
// Plus the clip scores of mcl_fast.sampling.clip_scores.
#pragma once
#include "common.cuh"
#include "mcl_math.cuh"

#if !defined(__CUDACC_RTC__)
#include <cmath>
#include <cstring>
#endif

// ---------------------------------------------------------------- order-preserving keys
MCL_HD unsigned int mcl_float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  unsigned int u;
  memcpy(&u, &v, sizeof u);
  return u;
#endif
}

MCL_HD float mcl_bits_float(unsigned int u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float v;
  memcpy(&v, &u, sizeof v);
  return v;
#endif
}

// Unsigned key with key(a) < key(b) iff a < b for non-NaN floats (-0.0 sorts just below +0.0,
// which NumPy treats as equal: the percentile's value compares equal either way).
MCL_HD unsigned int mcl_float_key(float v) {
  const unsigned int u = mcl_float_bits(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

MCL_HD float mcl_key_float(unsigned int key) {
  return mcl_bits_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

MCL_HD bool mcl_is_nan(float v) { return v != v; }

// ---------------------------------------------------------------- radix select (4 x 8 bits)
// Pass p (0..3) looks at bits [31-8p .. 24-8p]; a key takes part in pass p when its higher
// digits equal the prefix chosen so far.
MCL_HD unsigned int mcl_radix_digit(unsigned int key, int pass) { return (key >> (24 - 8 * pass)) & 0xffu; }

MCL_HD bool mcl_radix_in_prefix(unsigned int key, unsigned int prefix, int pass) {
  if (pass == 0) return true;
  const unsigned int mask = 0xffffffffu << (32 - 8 * pass);
  return (key & mask) == prefix;
}

// After a pass's 256-bin histogram of the keys in the prefix: choose the digit whose bin holds
// the rank-`*rank` key (0-based among those keys), append it to *prefix, make *rank relative to it.
MCL_HD void mcl_radix_choose(const unsigned int* hist, int pass, long long* rank, unsigned int* prefix) {
  long long before = 0;
  for (int d = 0; d < 256; ++d) {
    if (before + (long long)hist[d] > *rank) {
      *prefix |= (unsigned int)d << (24 - 8 * pass);
      *rank -= before;
      return;
    }
    before += hist[d];
  }
}

// ---------------------------------------------------------------- numpy.percentile, linear
// The ranks of the two order statistics numpy.percentile interpolates between, and its weight:
//   q = percentile / 100;  vi = (n - 1) * q;  prev = floor(vi)
//   vi >= n - 1: both ranks n - 1 and NumPy's index is -1, so gamma = vi - (-1)
struct MclPercentileRank {
  long long lo, hi;
  double gamma;
};

MCL_HD MclPercentileRank mcl_percentile_rank(long long n, double percentile) {
  MclPercentileRank r;
  const double q = percentile / 100.0;
  const double vi = mcl_dmul((double)(n - 1), q);
  const double prev = floor(vi);
  if (vi >= (double)(n - 1)) {
    r.lo = r.hi = n - 1;
    r.gamma = mcl_dsub(vi, -1.0);
  } else {
    r.lo = (long long)prev;
    r.hi = r.lo + 1;
    r.gamma = mcl_dsub(vi, prev);
  }
  return r;
}

// NumPy's _lerp(a, b, t) for float32 data:
//  weak_q (percentile passed as a Python int/float): t is cast to float32, all float32 maths;
//  otherwise (a NumPy float64 percentile): b - a in float32, the rest in float64.
// The result is returned as double (exactly the float32 value in the weak case).
MCL_HD double mcl_lerp_numpy(float a, float b, double t, bool weak_q) {
  const float diff = mcl_fsub(b, a);
  if (weak_q) {
    if (t >= 0.5) return (double)mcl_fsub(b, mcl_fmul(diff, (float)(1.0 - t)));
    return (double)mcl_fadd(a, mcl_fmul(diff, (float)t));
  }
  if (t >= 0.5) return mcl_dsub((double)b, mcl_dmul((double)diff, 1.0 - t));
  return mcl_dadd((double)a, mcl_dmul((double)diff, t));
}

// A pixel is hot when strictly above the threshold (NaN is never hot; a NaN threshold, which
// numpy.percentile returns when the map has a NaN, makes no pixel hot).
MCL_HD bool mcl_is_hot(float m, double threshold) { return (double)m > threshold; }

// ---------------------------------------------------------------- boxes
// sat: (H+1, W+1) int summed-area table, row 0 and column 0 zero. Box (y0, x0, h, w) in pixels.
MCL_HD long long mcl_box_count(const int* sat, int width, long long y0, long long x0, long long h,
                               long long w) {
  const long long stride = width + 1, y1 = y0 + h, x1 = x0 + w;
  return (long long)sat[y1 * stride + x1] - sat[y0 * stride + x1] - sat[y1 * stride + x0] +
         sat[y0 * stride + x0];
}

MCL_HD bool mcl_box_covers(long long count, long long total, double coverage) {
  return (double)count >= mcl_dmul(coverage, (double)total);  // NumPy: counts >= coverage * total
}

// The running choice over boxes; combine() is associative and commutative, so any split of the
// boxes over threads reduces to the reference's sequential answer.
struct MclBoxChoice {
  int first_ok;          // smallest index of a box meeting the coverage, or MCL_NO_BOX
  long long best_count;  // the largest count seen
  int best_index;        // the smallest index with that count
};

#define MCL_NO_BOX 0x7fffffff

MCL_HD MclBoxChoice mcl_box_choice_empty() {
  MclBoxChoice c;
  c.first_ok = MCL_NO_BOX;
  c.best_count = -1;
  c.best_index = MCL_NO_BOX;
  return c;
}

MCL_HD MclBoxChoice mcl_box_choice_add(MclBoxChoice c, int index, long long count, long long total,
                                       double coverage) {
  if (mcl_box_covers(count, total, coverage) && index < c.first_ok) c.first_ok = index;
  if (count > c.best_count || (count == c.best_count && index < c.best_index)) {
    c.best_count = count;
    c.best_index = index;
  }
  return c;
}

MCL_HD MclBoxChoice mcl_box_choice_combine(MclBoxChoice a, MclBoxChoice b) {
  MclBoxChoice c = a;
  if (b.first_ok < c.first_ok) c.first_ok = b.first_ok;
  if (b.best_count > c.best_count || (b.best_count == c.best_count && b.best_index < c.best_index)) {
    c.best_count = b.best_count;
    c.best_index = b.best_index;
  }
  return c;
}

// The index select_box_index returns.
MCL_HD int mcl_box_choice_result(MclBoxChoice c, long long total) {
  if (total == 0) return 0;
  return c.first_ok != MCL_NO_BOX ? c.first_ok : c.best_index;
}

// ---------------------------------------------------------------- clip scores
// NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src, pairwise_sum) of n doubles
// a[0], a[stride], ...: what `windows.mean(axis=1)` adds in, so the clip scores equal the reference's
// bit for bit. Recursive only for n > 128 (clips longer than 128 frames).
#if defined(__CUDACC__)
#define MCL_HD_RECURSIVE __host__ __device__
#else
#define MCL_HD_RECURSIVE inline
#endif

MCL_HD_RECURSIVE double mcl_pairwise_sum(const double* a, long long n, long long stride) {
  if (n < 8) {
    double res = 0.0;
    for (long long i = 0; i < n; ++i) res = mcl_dadd(res, a[i * stride]);
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j * stride];
    long long i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] = mcl_dadd(r[j], a[(i + j) * stride]);
    double res = mcl_dadd(mcl_dadd(mcl_dadd(r[0], r[1]), mcl_dadd(r[2], r[3])),
                          mcl_dadd(mcl_dadd(r[4], r[5]), mcl_dadd(r[6], r[7])));
    for (; i < n; ++i) res = mcl_dadd(res, a[i * stride]);
    return res;
  }
  long long n2 = n / 2;
  n2 -= n2 % 8;
  return mcl_dadd(mcl_pairwise_sum(a, n2, stride), mcl_pairwise_sum(a + n2 * stride, n - n2, stride));
}

// Mean of m_t over the frames start, start+stride, ... (clip_len of them, or fewer when the video
// ends first: the single start of a video shorter than the span), summed as NumPy sums.
MCL_HD double mcl_clip_score(const double* m_t, int n, int start, int clip_len, int stride) {
  long long count = 0;
  if (start < n) count = ((long long)(n - 1 - start)) / stride + 1;
  if (count > clip_len) count = clip_len;
  return mcl_pairwise_sum(m_t + start, count, stride) / (double)count;
}
