// CPU twin of kernels/select_box.cu: the same MCL_HD arithmetic (radix select, NumPy's lerp,
// summed-area table, the box-choice rule), looped on the host.
#include <cmath>
#include <limits>
#include <vector>

#include "mcl_host.h"
#include "select_box.cuh"

namespace {

double percentile_of(const float* m, long long pixels, double percentile, bool weak_q) {
  const MclPercentileRank r = mcl_percentile_rank(pixels, percentile);
  for (long long i = 0; i < pixels; ++i)
    if (mcl_is_nan(m[i])) return std::numeric_limits<double>::quiet_NaN();
  unsigned int prefix[2] = {0u, 0u};
  long long rank[2] = {r.lo, r.hi};
  unsigned int hist[2][256];
  for (int pass = 0; pass < 4; ++pass) {
    for (int t = 0; t < 2; ++t)
      for (int d = 0; d < 256; ++d) hist[t][d] = 0u;
    for (long long i = 0; i < pixels; ++i) {
      const unsigned int key = mcl_float_key(m[i]);
      for (int t = 0; t < 2; ++t)
        if (mcl_radix_in_prefix(key, prefix[t], pass)) ++hist[t][mcl_radix_digit(key, pass)];
    }
    for (int t = 0; t < 2; ++t) mcl_radix_choose(hist[t], pass, &rank[t], &prefix[t]);
  }
  return mcl_lerp_numpy(mcl_key_float(prefix[0]), mcl_key_float(prefix[1]), r.gamma, weak_q);
}

}  // namespace

// threshold[b] = numpy.percentile(maps[b], percentile) for B maps of `pixels` float32 each.
MCL_EXPORT int mcl_host_select_box_percentile(const float* maps, double* threshold, int batch, long long pixels,
                                              double percentile, int weak_q) {
  if (batch < 0 || pixels < 1) return MCL_BAD_SIZE;
  if (!(percentile >= 0.0 && percentile <= 100.0)) return MCL_BAD_ARGUMENT;
  for (int b = 0; b < batch; ++b) threshold[b] = percentile_of(maps + (long long)b * pixels, pixels, percentile, weak_q != 0);
  return MCL_OK;
}

// index[b] = select_box_index(maps[b], boxes[b], percentile, coverage); maps (B, H, W) float32,
// boxes (B, K, 4) int64 inside the map; threshold (B,) is written too.
MCL_EXPORT int mcl_host_select_box_index(const float* maps, const long long* boxes, long long* index, double* threshold,
                                         int batch, int height, int width, int num_boxes, double percentile,
                                         int weak_q, double coverage) {
  if (batch < 0 || height < 1 || width < 1 || num_boxes < 1) return MCL_BAD_SIZE;
  const int rc = mcl_host_select_box_percentile(maps, threshold, batch, (long long)height * width, percentile, weak_q);
  if (rc != MCL_OK) return rc;
  std::vector<int> sat((size_t)(height + 1) * (width + 1), 0);
  for (int b = 0; b < batch; ++b) {
    const float* m = maps + (long long)b * height * width;
    const long long* bx = boxes + (long long)b * num_boxes * 4;
    for (int k = 0; k < num_boxes; ++k) {
      const long long* box = bx + 4 * k;
      if (box[0] < 0 || box[1] < 0 || box[2] < 1 || box[3] < 1 || box[0] + box[2] > height || box[1] + box[3] > width)
        return MCL_BAD_ARGUMENT;
    }
    for (int y = 1; y <= height; ++y) {  // rows, then columns, as the two GPU passes do
      int run = 0;
      for (int x = 1; x <= width; ++x) {
        run += mcl_is_hot(m[(long long)(y - 1) * width + (x - 1)], threshold[b]) ? 1 : 0;
        sat[(size_t)y * (width + 1) + x] = run;
      }
    }
    for (int x = 1; x <= width; ++x) {
      int run = 0;
      for (int y = 1; y <= height; ++y) {
        run += sat[(size_t)y * (width + 1) + x];
        sat[(size_t)y * (width + 1) + x] = run;
      }
    }
    const long long total = sat[(size_t)height * (width + 1) + width];
    // Two interleaved partial choices combined at the end: exercises combine() like the GPU's reduction.
    MclBoxChoice part[2] = {mcl_box_choice_empty(), mcl_box_choice_empty()};
    for (int k = 0; k < num_boxes; ++k) {
      const long long* box = bx + 4 * k;
      part[k & 1] = mcl_box_choice_add(part[k & 1], k, mcl_box_count(sat.data(), width, box[0], box[1], box[2], box[3]),
                                       total, coverage);
    }
    index[b] = mcl_box_choice_result(mcl_box_choice_combine(part[1], part[0]), total);
  }
  return MCL_OK;
}

// scores (B, S) with S = num_starts starts k * step of clips over m_t (B, frames) double.
MCL_EXPORT int mcl_host_clip_scores(const double* m_t, double* scores, int batch, int frames, int num_starts,
                                    int clip_len, int stride, int step) {
  if (batch < 0 || frames < 1 || num_starts < 1 || clip_len < 1 || stride < 1 || step < 1) return MCL_BAD_SIZE;
  for (int b = 0; b < batch; ++b)
    for (int k = 0; k < num_starts; ++k)
      scores[(long long)b * num_starts + k] = mcl_clip_score(m_t + (long long)b * frames, frames, k * step, clip_len, stride);
  return MCL_OK;
}
