// CPU kernels for MindSpore's CPU backend, called through ops.Custom(func_type="aot"): GELU, LayerNorm,
// the attention's head swap and masked softmax, the MSE losses' masked sums, StatelessDropout's mask.
//
// Why our own GELU and LayerNorm: on the CPU MindSpore runs the exact GELU as six kernels (Erf among
// them, 4.5x PyTorch's time) and its LayerNorm at 10-20x PyTorch's time. These single-pass loops are 13x
// (GELU) and 5x (LayerNorm) faster than MindSpore's kernels, the GELU 2.6x faster than PyTorch's and the
// LayerNorm at half its speed (bench/GD_STEP.md, "Fused GELU and LayerNorm kernels"). Why the others: the
// buffers MindSpore's CPU backend keeps alive (each kernel's comment says which). Built by
// src/fused_ops.py with g++ -O3; the loops are written so that the compiler vectorises them
// (-fno-trapping-math, `omp simd`).
//
// MindSpore's AOT calling convention: params holds the inputs then the outputs, each a contiguous buffer
// (float32 unless a kernel's comment says otherwise) whose shape is shapes[i][0..ndims[i]). Every
// function returns 0.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

int64_t element_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// exp(x) for x <= 0 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, times 2^n). Written out
// because std::exp does not vectorise without -ffast-math.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_to_n;
  std::memcpy(&two_to_n, &bits, sizeof two_to_n);
  return p * two_to_n;
}

// erf(a) for a >= 0 given e = exp(-a * a): Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), the same
// formula as the model's gelu_poly.
inline float erf_nonnegative(float a, float e) {
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  return 1.0f - poly * e;
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

}  // namespace

// y = x * Phi(x) = 0.5 * (x + |x| erf(|x| / sqrt 2)): the exact GELU (Hendrycks & Gimpel 2016).
// params: x -> y, same shape.
extern "C" int GeluForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = element_count(ndims[0], shapes[0]);
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]) * kSqrtHalf;
    y[i] = 0.5f * (x[i] + std::fabs(x[i]) * erf_nonnegative(a, exp_nonpositive(-a * a)));
  }
  return 0;
}

// dx = dy * (Phi(x) + x phi(x)), phi the standard normal density. params: x, dy -> dx.
extern "C" int GeluBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = element_count(ndims[0], shapes[0]);
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]) * kSqrtHalf;
    const float e = exp_nonpositive(-a * a);
    const float erf_x = std::copysign(erf_nonnegative(a, e), x[i]);
    dx[i] = dy[i] * (0.5f * (1.0f + erf_x) + x[i] * e * kInvSqrt2Pi);
  }
  return 0;
}

// LayerNorm over the last axis (Ba et al. 2016): y = (x - mean) * rstd * gamma + beta, with
// rstd = 1 / sqrt(var + eps) and the biased variance. params: x (..., W), gamma (W), beta (W),
// eps (1) -> y (..., W), mean (...), rstd (...); mean and rstd are kept for the backward pass.
extern "C" int LayerNormForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean_out = static_cast<float *>(params[5]);
  float *rstd_out = static_cast<float *>(params[6]);
  const int64_t width = shapes[0][ndims[0] - 1];
  const int64_t rows = element_count(ndims[0], shapes[0]) / width;
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * width;
    float *yr = y + r * width;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < width; ++j) sum += xr[j];
    const float mean = sum / width;
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < width; ++j) squares += (xr[j] - mean) * (xr[j] - mean);
    const float rstd = 1.0f / std::sqrt(squares / width + eps);
    for (int64_t j = 0; j < width; ++j) yr[j] = (xr[j] - mean) * rstd * gamma[j] + beta[j];
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
  return 0;
}

// The gradients of LayerNormForward. With xhat = (x - mean) * rstd and g = dy * gamma, per row:
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dgamma = sum over rows of dy * xhat; dbeta = sum of dy.
// params: dy (..., W), x (..., W), gamma (W), mean (...), rstd (...) -> dx (..., W), dgamma (W), dbeta (W).
extern "C" int LayerNormBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]);
  const float *mean = static_cast<const float *>(params[3]);
  const float *rstd = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *dgamma = static_cast<float *>(params[6]);
  float *dbeta = static_cast<float *>(params[7]);
  const int64_t width = shapes[0][ndims[0] - 1];
  const int64_t rows = element_count(ndims[0], shapes[0]) / width;
  for (int64_t j = 0; j < width; ++j) dgamma[j] = dbeta[j] = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * width;
    const float *dyr = dy + r * width;
    float *dxr = dx + r * width;
    const float m = mean[r], s = rstd[r];
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_g_xhat)
    for (int64_t j = 0; j < width; ++j) {
      const float xhat = (xr[j] - m) * s, g = dyr[j] * gamma[j];
      sum_g += g;
      sum_g_xhat += g * xhat;
      dgamma[j] += dyr[j] * xhat;
      dbeta[j] += dyr[j];
    }
    const float mean_g = sum_g / width, mean_g_xhat = sum_g_xhat / width;
    for (int64_t j = 0; j < width; ++j) dxr[j] = s * (dyr[j] * gamma[j] - mean_g - (xr[j] - m) * s * mean_g_xhat);
  }
  return 0;
}

// (A, B, C, D) -> (A, C, B, D): attention's head split (B = tokens, C = heads) and merge (B = heads,
// C = tokens); its own gradient, with the roles swapped. Ours rather than MindSpore's Transpose
// because the CPU backend keeps a Transpose's buffers alive to the end of the graph (bench/GD_STEP.md,
// "Memory: what MindSpore's CPU backend kept"). params: x (A, B, C, D) -> y (A, C, B, D).
extern "C" int SwapMiddleAxes(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t a_size = shapes[0][0], b_size = shapes[0][1], c_size = shapes[0][2], d_size = shapes[0][3];
  for (int64_t a = 0; a < a_size; ++a)
    for (int64_t b = 0; b < b_size; ++b)
      for (int64_t c = 0; c < c_size; ++c)
        std::memcpy(y + ((a * c_size + c) * b_size + b) * d_size, x + ((a * b_size + b) * c_size + c) * d_size,
                    d_size * sizeof(float));
  return 0;
}

// Attention probabilities: softmax over keys of scores + mask_bias, the bias broadcast over heads and
// queries. Ours because MindSpore's CPU backend keeps the buffers of that broadcasting Add alive to
// the end of the graph (about 4 score-sized tensors a layer, bench/GD_STEP.md). exp of x - max <= 0
// is exp_nonpositive. params: scores (B, H, T, K), mask_bias (B, 1, 1, K) -> probs (B, H, T, K).
extern "C" int MaskedSoftmaxForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *scores = static_cast<const float *>(params[0]);
  const float *mask_bias = static_cast<const float *>(params[1]);
  float *probs = static_cast<float *>(params[2]);
  const int64_t batch = shapes[0][0], rows = shapes[0][1] * shapes[0][2], keys = shapes[0][3];
  for (int64_t b = 0; b < batch; ++b) {
    const float *bias = mask_bias + b * keys;
    for (int64_t r = 0; r < rows; ++r) {
      const float *s = scores + (b * rows + r) * keys;
      float *p = probs + (b * rows + r) * keys;
      float top = s[0] + bias[0];
#pragma omp simd reduction(max : top)
      for (int64_t k = 0; k < keys; ++k) {  // not std::fmax: g++ calls libm's fmaxf for it, one element at a time
        const float x = s[k] + bias[k];
        top = top > x ? top : x;
      }
      float total = 0.0f;
#pragma omp simd reduction(+ : total)
      for (int64_t k = 0; k < keys; ++k) {
        p[k] = exp_nonpositive(s[k] + bias[k] - top);
        total += p[k];
      }
      const float inverse = 1.0f / total;
      for (int64_t k = 0; k < keys; ++k) p[k] *= inverse;
    }
  }
  return 0;
}

// The gradients of MaskedSoftmaxForward: dscores = p * (dp - sum_k dp_k p_k) per row, and the bias's
// gradient the sum of dscores over heads and queries. params: probs, dprobs (B, H, T, K) ->
// dscores (B, H, T, K), dmask_bias (B, 1, 1, K).
extern "C" int MaskedSoftmaxBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *probs = static_cast<const float *>(params[0]);
  const float *dprobs = static_cast<const float *>(params[1]);
  float *dscores = static_cast<float *>(params[2]);
  float *dmask_bias = static_cast<float *>(params[3]);
  const int64_t batch = shapes[0][0], rows = shapes[0][1] * shapes[0][2], keys = shapes[0][3];
  for (int64_t b = 0; b < batch; ++b) {
    float *dbias = dmask_bias + b * keys;
    for (int64_t k = 0; k < keys; ++k) dbias[k] = 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const float *p = probs + (b * rows + r) * keys;
      const float *dp = dprobs + (b * rows + r) * keys;
      float *ds = dscores + (b * rows + r) * keys;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t k = 0; k < keys; ++k) dot += dp[k] * p[k];
      for (int64_t k = 0; k < keys; ++k) {
        ds[k] = p[k] * (dp[k] - dot);
        dbias[k] += ds[k];
      }
    }
  }
  return 0;
}

// sum of (x - y)^2 * mask, the mask broadcast over the middle axis: the masked sums of the MSE
// distillation losses (attention maps: A = batch, M = heads, C = query x key pairs; hidden states:
// A = batch x tokens, M = width, C = 1). One pass, nothing kept for the backward but the inputs; ours
// because the broadcasting Mul keeps its buffers alive on MindSpore's CPU backend, as the softmax's Add
// does. params: x (A, M, C), y (A, M, C), mask (A, 1, C) -> total (1).
extern "C" int MaskedSquaredErrorSumForward(int, void **params, int *, int64_t **shapes, const char **, void *,
                                            void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *mask = static_cast<const float *>(params[2]);
  float *total = static_cast<float *>(params[3]);
  const int64_t a_size = shapes[0][0], m_size = shapes[0][1], c_size = shapes[0][2];
  double sum = 0.0;  // float64 across rows: millions of terms
  for (int64_t a = 0; a < a_size; ++a)
    for (int64_t m = 0; m < m_size; ++m) {
      const float *xr = x + (a * m_size + m) * c_size, *yr = y + (a * m_size + m) * c_size, *mr = mask + a * c_size;
      float row = 0.0f;
#pragma omp simd reduction(+ : row)
      for (int64_t c = 0; c < c_size; ++c) row += (xr[c] - yr[c]) * (xr[c] - yr[c]) * mr[c];
      sum += row;
    }
  total[0] = static_cast<float>(sum);
  return 0;
}

// The gradients of MaskedSquaredErrorSumForward for an upstream gradient g (1): dx = 2 g (x - y) mask and
// dmask = g * sum over M of (x - y)^2 (dy = -dx is left to the caller: y is usually the teacher's, and a
// gradient nobody reads should not take a buffer). params: x, y, mask, g -> dx, dmask.
extern "C" int MaskedSquaredErrorSumBackward(int, void **params, int *, int64_t **shapes, const char **, void *,
                                             void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *mask = static_cast<const float *>(params[2]);
  const float g = *static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dmask = static_cast<float *>(params[5]);
  const int64_t a_size = shapes[0][0], m_size = shapes[0][1], c_size = shapes[0][2];
  for (int64_t a = 0; a < a_size; ++a) {
    float *dmr = dmask + a * c_size;
    const float *mr = mask + a * c_size;
    for (int64_t c = 0; c < c_size; ++c) dmr[c] = 0.0f;
    for (int64_t m = 0; m < m_size; ++m) {
      const int64_t offset = (a * m_size + m) * c_size;
      for (int64_t c = 0; c < c_size; ++c) {
        const float diff = x[offset + c] - y[offset + c];
        dx[offset + c] = 2.0f * g * diff * mr[c];
        dmr[c] += g * diff * diff;
      }
    }
  }
  return 0;
}

// StatelessDropout's mask applied in one pass (src/dropout.py says how the masks are drawn): unit i of
// window w = i / window_size is kept, and scaled by `scale`, when
// (table[offsets[2w] + i % window_size] + table[offsets[2w + 1] + i % window_size]) mod 2^16 < threshold.
// The mask is never stored: the backward pass applies the same function to the incoming gradient.
// params: x (N...), table (T) uint16, offsets (2 x windows) int32, threshold (1) int32, scale (1), window
// size (1) int32 -> y, like x.
extern "C" int ApplyDropoutMask(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const uint16_t *table = static_cast<const uint16_t *>(params[1]);
  const int32_t *offsets = static_cast<const int32_t *>(params[2]);
  const int32_t threshold = *static_cast<const int32_t *>(params[3]);
  const float scale = *static_cast<const float *>(params[4]);
  const int64_t window = *static_cast<const int32_t *>(params[5]);
  float *y = static_cast<float *>(params[6]);
  const int64_t n = element_count(ndims[0], shapes[0]);
  for (int64_t start = 0, w = 0; start < n; start += window, ++w) {
    const uint16_t *first = table + offsets[2 * w], *second = table + offsets[2 * w + 1];
    const int64_t length = n - start < window ? n - start : window;
    for (int64_t i = 0; i < length; ++i) {
      const int32_t uniform = static_cast<uint16_t>(first[i] + second[i]);
      y[start + i] = uniform < threshold ? x[start + i] * scale : 0.0f;
    }
  }
  return 0;
}
