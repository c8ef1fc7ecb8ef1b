// Motion-map kernels (eq. 1, with the store's downsample, per-frame mean and quantisation).
// Thin wrappers: the arithmetic is in motion_map.cuh, shared with the CPU twin
// (kernels/host/motion_host.cpp). Flow (N, H, W, 2) float32, maps (N, H, W) float32, C order.
#include "motion_map.cuh"

// out[n, y, x] = eq. (1) of flow[n]; one thread per pixel (grid-stride).
extern "C" __global__ void mcl_motion_map(const float* __restrict__ flow, float* __restrict__ out,
                                          int frames, int height, int width) {
  const long long plane = (long long)height * width;
  const long long total = plane * frames;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long n = i / plane, p = i - n * plane;
    const int y = (int)(p / width), x = (int)(p - (long long)y * width);
    out[i] = mcl_motion_pixel(flow + n * plane * 2, height, width, y, x);
  }
}

// Fused: eq. (1) never stored at full size. Block = MCL_MOTION_THREADS threads in a row; a block
// owns one cell row cy (blockIdx.y) of frame n (blockIdx.z) and a tile of `cells_per_tile` =
// MCL_MOTION_THREADS / factor whole cells (blockIdx.x). Thread t owns pixel column x of the tile:
// it sums eq. (1) down the cell row (coalesced 8-byte loads across the warp); the column sums go
// to shared memory and thread c < cells_per_tile adds its cell's columns left to right, which is
// the host twin's order (mcl_motion_block_sum), so both agree bit for bit. Then:
//   small[n, cy, cx] = cell mean (whole cells only: maps.downsample_mean drops partial edge cells),
//   codes[n, cy, cx] = its uint8 code when with_codes (gain = 255.0 / scale, double),
//   partial[n, cy, blockIdx.x] = the block's sum of the map (partial cells included) in double,
// so m_t = partial[n].sum() / (H * W) deterministically (no atomics).
#define MCL_MOTION_THREADS 256

extern "C" __global__ void __launch_bounds__(MCL_MOTION_THREADS)
mcl_motion_map_fused(const float* __restrict__ flow, float* __restrict__ small, unsigned char* __restrict__ codes,
                     double* __restrict__ partial, int frames, int height, int width, int factor, int with_codes,
                     double gain) {
  __shared__ float column_sums[MCL_MOTION_THREADS];
  __shared__ double block_sums[MCL_MOTION_THREADS];
  const int t = threadIdx.x;
  const int n = blockIdx.z, cy = blockIdx.y;
  const int cells_per_tile = MCL_MOTION_THREADS / factor;
  const int cells_x = (width + factor - 1) / factor;
  const int small_h = height / factor, small_w = width / factor;
  const float* frame_flow = flow + (long long)n * height * width * 2;

  const int x = blockIdx.x * cells_per_tile * factor + t;
  float column = 0.0f;
  if (n < frames && t < cells_per_tile * factor && x < width)
    column = mcl_motion_column_sum(frame_flow, height, width, factor, cy, x);
  column_sums[t] = column;
  __syncthreads();

  double cell_total = 0.0;
  const int cx = blockIdx.x * cells_per_tile + t;
  if (n < frames && t < cells_per_tile && cx < cells_x) {
    float sum = 0.0f;
    for (int j = 0; j < factor; ++j) sum = mcl_fadd(sum, column_sums[t * factor + j]);
    cell_total = (double)sum;
    if (cy < small_h && cx < small_w) {
      const long long o = ((long long)n * small_h + cy) * small_w + cx;
      const float mean = mcl_block_mean(sum, factor);
      small[o] = mean;
      if (with_codes) codes[o] = mcl_quantize(mean, gain);
    }
  }
  block_sums[t] = cell_total;
  __syncthreads();
  for (int half = MCL_MOTION_THREADS / 2; half > 0; half >>= 1) {
    if (t < half) block_sums[t] += block_sums[t + half];
    __syncthreads();
  }
  if (t == 0 && n < frames) partial[((long long)n * gridDim.y + cy) * gridDim.x + blockIdx.x] = block_sums[0];
}

// codes[i] = the store's uint8 code of maps[i], gain = 255.0 / scale in double (grid-stride).
extern "C" __global__ void mcl_motion_quantize(const float* __restrict__ maps, unsigned char* __restrict__ codes,
                                               long long count, double gain) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
       i += (long long)gridDim.x * blockDim.x)
    codes[i] = mcl_quantize(maps[i], gain);
}
