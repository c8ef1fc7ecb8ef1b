// Batched crop-box selection: B maps (H, W) float32, K candidate boxes (y0, x0, h, w) int64 each.
// Four launches: percentile -> summed-area rows -> columns -> pick. Thin wrappers over
// select_box.cuh (shared with kernels/host/select_box_host.cpp). Plus batched clip scores.
#include "select_box.cuh"

#define MCL_SELECT_THREADS 256

// threshold[b] = numpy.percentile(maps[b], percentile) (as a double; NaN when the map has a NaN).
// One block of MCL_SELECT_THREADS per map; radix select of both order statistics at once.
extern "C" __global__ void mcl_select_box_percentile(const float* __restrict__ maps, double* __restrict__ threshold,
                                                     int batch, long long pixels, double percentile, int weak_q) {
  __shared__ unsigned int hist[2][256];
  __shared__ unsigned int prefix[2];
  __shared__ long long rank[2];
  const int b = blockIdx.x;
  if (b >= batch) return;
  const float* m = maps + (long long)b * pixels;
  const MclPercentileRank r = mcl_percentile_rank(pixels, percentile);
  if (threadIdx.x == 0) {
    prefix[0] = prefix[1] = 0u;
    rank[0] = r.lo;
    rank[1] = r.hi;
  }
  int has_nan = 0;  // any NaN in the map: this thread's pixels, then the whole block's (barrier-OR)
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = threadIdx.x; i < 512; i += blockDim.x) (&hist[0][0])[i] = 0u;
    __syncthreads();
    const unsigned int p0 = prefix[0], p1 = prefix[1];
    for (long long i = threadIdx.x; i < pixels; i += blockDim.x) {
      const float v = m[i];
      if (pass == 0 && mcl_is_nan(v)) has_nan = 1;
      const unsigned int key = mcl_float_key(v);
      const unsigned int digit = mcl_radix_digit(key, pass);
      if (mcl_radix_in_prefix(key, p0, pass)) atomicAdd(&hist[0][digit], 1u);
      if (mcl_radix_in_prefix(key, p1, pass)) atomicAdd(&hist[1][digit], 1u);
    }
    if (pass == 0)
      has_nan = __syncthreads_or(has_nan);  // the barrier that ends the histogram, and the OR of the flags
    else
      __syncthreads();
    if (threadIdx.x < 2) {
      long long k = rank[threadIdx.x];
      unsigned int p = prefix[threadIdx.x];
      mcl_radix_choose(hist[threadIdx.x], pass, &k, &p);
      rank[threadIdx.x] = k;
      prefix[threadIdx.x] = p;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double nan = __longlong_as_double(0x7ff8000000000000ll);
    threshold[b] = has_nan ? nan
                           : mcl_lerp_numpy(mcl_key_float(prefix[0]), mcl_key_float(prefix[1]), r.gamma, weak_q != 0);
  }
}

// sat[b] rows: sat[b, 0, :] = 0 and sat[b, y+1, x+1] = hot pixels of row y up to x.
// One thread per (b, y) with y in [0, H]; y == 0 writes the zero row.
extern "C" __global__ void mcl_select_box_sat_rows(const float* __restrict__ maps, const double* __restrict__ threshold,
                                                   int* __restrict__ sat, int batch, int height, int width) {
  const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= (long long)batch * (height + 1)) return;
  const int b = (int)(i / (height + 1)), row = (int)(i - (long long)b * (height + 1));
  int* s = sat + ((long long)b * (height + 1) + row) * (width + 1);
  s[0] = 0;
  if (row == 0) {
    for (int x = 0; x < width; ++x) s[x + 1] = 0;
    return;
  }
  const float* m = maps + ((long long)b * height + (row - 1)) * width;
  const double thr = threshold[b];
  int run = 0;
  for (int x = 0; x < width; ++x) {
    run += mcl_is_hot(m[x], thr) ? 1 : 0;
    s[x + 1] = run;
  }
}

// sat[b] columns: cumulative sum down each column. One thread per (b, x) with x in [1, W].
extern "C" __global__ void mcl_select_box_sat_cols(int* __restrict__ sat, int batch, int height, int width) {
  const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= (long long)batch * width) return;
  const int b = (int)(i / width), x = (int)(i - (long long)b * width) + 1;
  int* s = sat + (long long)b * (height + 1) * (width + 1) + x;
  int run = 0;
  for (int y = 1; y <= height; ++y) {
    run += s[(long long)y * (width + 1)];
    s[(long long)y * (width + 1)] = run;
  }
}

// index[b] = select_box_index(maps[b], boxes[b]); one block of MCL_SELECT_THREADS per map.
// Boxes (B, K, 4) int64 must lie inside the map (the Python wrapper checks).
extern "C" __global__ void mcl_select_box_pick(const int* __restrict__ sat, const long long* __restrict__ boxes,
                                               long long* __restrict__ index, int batch, int height, int width,
                                               int num_boxes, double coverage) {
  __shared__ MclBoxChoice choices[MCL_SELECT_THREADS];
  const int b = blockIdx.x;
  if (b >= batch) return;
  const int* s = sat + (long long)b * (height + 1) * (width + 1);
  const long long total = s[(long long)height * (width + 1) + width];
  MclBoxChoice c = mcl_box_choice_empty();
  for (int k = threadIdx.x; k < num_boxes; k += blockDim.x) {
    const long long* box = boxes + ((long long)b * num_boxes + k) * 4;
    c = mcl_box_choice_add(c, k, mcl_box_count(s, width, box[0], box[1], box[2], box[3]), total, coverage);
  }
  choices[threadIdx.x] = c;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half)
      choices[threadIdx.x] = mcl_box_choice_combine(choices[threadIdx.x], choices[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) index[b] = mcl_box_choice_result(choices[0], total);
}

// scores[b, k] = mean of m_t[b] over the clip starting at k * step (see mcl_clip_score).
extern "C" __global__ void mcl_select_box_clip_scores(const double* __restrict__ m_t, double* __restrict__ scores,
                                                      int batch, int frames, int num_starts, int clip_len,
                                                      int stride, int step) {
  const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= (long long)batch * num_starts) return;
  const int b = (int)(i / num_starts), k = (int)(i - (long long)b * num_starts);
  scores[i] = mcl_clip_score(m_t + (long long)b * frames, frames, k * step, clip_len, stride);
}
