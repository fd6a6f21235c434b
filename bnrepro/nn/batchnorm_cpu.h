// BN forward (Algorithm 1 / 2) and the paper's closed-form backward as two fused CPU loops: the kernels
// behind batchnorm_cpu.cpp's autograd Function and bnrepro/models/stacked_cpu.cpp's training step.
//
// Why C++: at the paper's size (60 x 100) every torch op costs ~2 us of dispatch for ~0.1 us of
// arithmetic, and a Python autograd.Function adds ~15 us a call, so a BN made of torch ops costs
// 1.15x a training step with torch's fused layer. Here each direction is one call, with the formulas
// of bnrepro/nn/batchnorm.py's torch-op path (which CUDA uses).
//
// x is viewed as (G, N, C, S): G independent groups (the K models of a stacked network, else 1),
// statistics per (group, channel) over the N samples and S positions (S = 1, L or H*W).
// Per-(group, channel) tensors are read flat (G * C). Loops are single-threaded and run every group
// the same way, so results depend neither on the thread count nor on the group's neighbours:
// a stacked model's slice gets, bit for bit, what the model alone gets.
//
// Two modes ride on these loops (bnrepro/nn/batchnorm.py's _batch_norm passes them): ghost BN (ghost.py), x's batch
// split into B consecutive sub-batches, each normalised as BN on it alone, in turn; and Batch Renormalization
// (renorm.py), BN with the affine map corrected by r and d (see Renorm).
//
// Three kernels, by memory layout: flat (S == 1: the MLP's (N, C) and the stacked (K, N, C)); spatial (S > 1,
// a contiguous (N, C, H, W) or (N, C, L): rows of S values of one (n, c)); channels-last (S > 1, a channels-last
// (N, C, H, W): rows of C values of one (n, h, w), the flat layout with N * H * W rows). Each sums in its own
// fixed order, so the layouts agree to float rounding, and each layout gives the same bits on every run.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

namespace bnrepro {

// a per-(group, channel) tensor read as flat (G * C,), or nullptr when absent
template <typename T>
T* flat_or_null(const c10::optional<at::Tensor>& t, int64_t numel) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->is_contiguous() && t->numel() == numel && t->scalar_type() == c10::CppTypeToScalarType<T>::value,
              "BN parameters and buffers must be contiguous, of the input's dtype, with one value per channel");
  return t->data_ptr<T>();
}

// Batch Renormalization (Ioffe 2017; bnrepro/nn/renorm.py): the normalisation applies gamma' = gamma * r and
// beta' = beta + gamma * d, with r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mu_B - mu) / sigma, -d_max,
// d_max) from the batch's statistics and the running ones (sigma = sqrt(running_var + eps)) before this batch moves
// them. The kernels write r and d to rd = [r | d] (2C) for the backward's chain rule to gamma and beta.
template <typename T>
struct Renorm {
  double r_max, d_max;
  T* rd;
};

// Batch Renormalization's correction of channel c's affine map (scale, shift) = (gamma, beta) to (gamma', beta').
// mean and sumsq (m times the biased variance) are the batch's, in double, as the normalisation uses them.
template <typename T>
inline void renormalize(const Renorm<T>& renorm, int64_t c, int64_t C, double mean, double sumsq, int64_t m,
                        double eps, T running_mean, T running_var, T& scale, T& shift) {
  const double sigma = std::sqrt(double(running_var) + eps), sigma_b = std::sqrt(sumsq / m + eps);
  const T r = T(std::clamp(sigma_b / sigma, 1.0 / renorm.r_max, renorm.r_max));
  const T d = T(std::clamp((mean - double(running_mean)) / sigma, -renorm.d_max, renorm.d_max));
  renorm.rd[c] = r;
  renorm.rd[C + c] = d;
  // rounded in T as renorm.py's torch ops round them: beta + gamma * d, then gamma * r
  shift = shift + scale * d;
  scale = scale * r;
}

// ---- flat kernel (S == 1) ----

// f(i, c) for every element i of an (N, C) x, in memory order, c its channel: with the channel innermost,
// the compiler vectorises across channels.
template <typename F>
inline void for_each(int64_t N, int64_t C, F f) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) f(n * C + c, c);
}

// sum[c] = the sum over n of f(i, c), in double
template <typename F>
inline void channel_sums(int64_t N, int64_t C, std::vector<double>& sum, F f) {
  std::fill(sum.begin(), sum.end(), 0.0);
  double* acc = sum.data();
  for_each(N, C, [&](int64_t i, int64_t c) { acc[c] += f(i, c); });
}

template <typename T>
void forward_flat(const T* x, T* y, T* xhat, T* k, const T* weight, const T* bias, T* running_mean,
                  T* running_var, int64_t G, int64_t N, int64_t C, bool batch_stats, double factor, double eps,
                  const Renorm<T>* renorm) {
  const int64_t m = N, group = N * C;
  std::vector<double> sum(C), sumsq(C);
  std::vector<T> mean(C), invstd(C), scale(C), shift(C);
  for (int64_t g = 0; g < G; ++g) {
    const T* xg = x + g * group;
    const int64_t p = g * C;
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = batch_stats ? T(0) : running_mean[p + c];
    }
    if (batch_stats) {  // two passes: the mean, then the centred sum of squares (Algorithm 1)
      channel_sums(N, C, sum, [&](int64_t i, int64_t) { return double(xg[i]); });
      for (int64_t c = 0; c < C; ++c) {
        sum[c] /= m;  // now the mean, in double
        mean[c] = T(sum[c]);
      }
      const double* mean_d = sum.data();
      channel_sums(N, C, sumsq, [&](int64_t i, int64_t c) {
        const double d = double(xg[i]) - mean_d[c];
        return d * d;
      });
    }
    for (int64_t c = 0; c < C; ++c) {
      // normalise with the biased batch variance, or the running one (Algorithm 2)
      const double var = batch_stats ? sumsq[c] / m : double(running_var[p + c]);
      invstd[c] = T(1.0 / std::sqrt(var + eps));
      scale[c] = weight != nullptr ? weight[p + c] : T(1);
      shift[c] = bias != nullptr ? bias[p + c] : T(0);
      if (renorm != nullptr)  // before the running statistics move
        renormalize(*renorm, c, C, sum[c], sumsq[c], m, eps, running_mean[p + c], running_var[p + c], scale[c],
                    shift[c]);
      if (batch_stats && running_mean != nullptr) {  // torch's convention: running_var is the unbiased variance
        running_mean[p + c] = T((1 - factor) * running_mean[p + c] + factor * sum[c]);
        running_var[p + c] = T((1 - factor) * running_var[p + c] + factor * (sumsq[c] / (m - 1)));
      }
      k[p + c] = invstd[c] * scale[c];  // dy/dx at fixed statistics
    }
    T* yg = y + g * group;
    if (xhat == nullptr) {  // no backward to come (evaluation): y alone
      for_each(N, C, [&](int64_t i, int64_t c) { yg[i] = (xg[i] - mean[c]) * invstd[c] * scale[c] + shift[c]; });
      continue;
    }
    T* xhat_g = xhat + g * group;
    for_each(N, C, [&](int64_t i, int64_t c) {
      const T h = (xg[i] - mean[c]) * invstd[c];
      xhat_g[i] = h;
      yg[i] = h * scale[c] + shift[c];
    });
  }
}

template <typename T>
void backward_flat(const T* dy, const T* xhat, const T* k, T* dx, T* dgamma, T* dbeta, int64_t G, int64_t N,
                   int64_t C, bool batch_stats) {
  const int64_t m = N, group = N * C;
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  std::vector<T> a(C), b(C);
  for (int64_t g = 0; g < G; ++g) {
    const T* dy_g = dy + g * group;
    const T* xhat_g = xhat + g * group;
    const int64_t p = g * C;
    channel_sums(N, C, sum_dy, [&](int64_t i, int64_t) { return double(dy_g[i]); });
    channel_sums(N, C, sum_dy_xhat, [&](int64_t i, int64_t) { return double(dy_g[i]) * xhat_g[i]; });
    for (int64_t c = 0; c < C; ++c) {
      dbeta[p + c] = T(sum_dy[c]);
      dgamma[p + c] = T(sum_dy_xhat[c]);
      // dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m); with running statistics only the first term
      a[c] = batch_stats ? T(sum_dy[c] / m) : T(0);
      b[c] = batch_stats ? T(sum_dy_xhat[c] / m) : T(0);
    }
    T* dx_g = dx + g * group;
    const T* k_g = k + p;
    for_each(N, C, [&](int64_t i, int64_t c) { dx_g[i] = k_g[c] * (dy_g[i] - a[c] - xhat_g[i] * b[c]); });
  }
}

// ---- spatial kernel (S > 1; S > 1 is never grouped) ----
//
// Each row (S contiguous values, a few KB) is summed while it sits in L1, and each sum runs in kLanes
// independent double accumulators that are added up in a fixed order at the end. Independent lanes let the
// compiler vectorise without reassociating anything (no -ffast-math), so the result is one fixed sum order:
// deterministic, and the same on every machine. One accumulator would make every add wait for the previous
// one, a chain that costs more than the memory traffic.
//
// For S > 1 a backward keeps x itself (no copy) and k = [gamma * invstd | mean | invstd] (3C values), and
// recomputes xhat = (x - mean) * invstd in float, as the forward computes it on its way to y: no feature map of
// its own is written or held per BN layer (torch's BN keeps x too). So, as with torch's, x must not be changed
// in place before the backward (autograd's version check says so if it is).

constexpr int64_t kLanes = 8;

// (the sum over s of f(s), the sum over s of g(s)) for s in [0, S), each in double
template <typename F, typename G>
inline std::array<double, 2> row_sums(int64_t S, F f, G g) {
  double lane_f[kLanes] = {}, lane_g[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= S; s += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      lane_f[j] += f(s + j);
      lane_g[j] += g(s + j);
    }
  double total_f = 0, total_g = 0;
  for (; s < S; ++s) {
    total_f += f(s);
    total_g += g(s);
  }
  for (int64_t j = 0; j < kLanes; ++j) {
    total_f += lane_f[j];
    total_g += lane_g[j];
  }
  return {total_f, total_g};
}

template <typename F>
inline double row_sum(int64_t S, F f) {
  return row_sums(S, f, [](int64_t) { return 0.0; })[0];
}

// The per-channel constants of normalising: k (= gamma * invstd, 3C: then mean, invstd, see above), and
// scale/shift (gamma, beta, or 1, 0; renorm: gamma', beta'); the running statistics move when batch_stats. mean
// and sumsq (m times the biased variance) are the batch's, in double, or unused with the running statistics
// (Algorithm 2).
template <typename T>
void channel_constants(const double* mean, const double* sumsq, T* k, T* scale, T* shift, const T* weight,
                       const T* bias, T* running_mean, T* running_var, int64_t C, int64_t m, bool batch_stats,
                       double factor, double eps, const Renorm<T>* renorm) {
  T *mean_out = k + C, *invstd = k + 2 * C;
  for (int64_t c = 0; c < C; ++c) {
    mean_out[c] = batch_stats ? T(mean[c]) : running_mean[c];
    // normalise with the biased batch variance, or the running one (Algorithm 2)
    const double var = batch_stats ? sumsq[c] / m : double(running_var[c]);
    invstd[c] = T(1.0 / std::sqrt(var + eps));
    scale[c] = weight != nullptr ? weight[c] : T(1);
    shift[c] = bias != nullptr ? bias[c] : T(0);
    if (renorm != nullptr)  // before the running statistics move
      renormalize(*renorm, c, C, mean[c], sumsq[c], m, eps, running_mean[c], running_var[c], scale[c], shift[c]);
    if (batch_stats && running_mean != nullptr) {  // torch's convention: running_var is the unbiased variance
      running_mean[c] = T((1 - factor) * running_mean[c] + factor * mean[c]);
      running_var[c] = T((1 - factor) * running_var[c] + factor * (sumsq[c] / (m - 1)));
    }
    k[c] = invstd[c] * scale[c];  // dy/dx at fixed statistics
  }
}

template <typename T>
void forward_spatial(const T* x, T* y, T* k, const T* weight, const T* bias, T* running_mean, T* running_var,
                     int64_t N, int64_t C, int64_t S, bool batch_stats, double factor, double eps,
                     const Renorm<T>* renorm) {
  const int64_t m = N * S;
  std::vector<double> mean(C, 0.0), sumsq(C, 0.0), row_mean(batch_stats ? N * C : 0), row_m2(batch_stats ? N * C : 0);
  std::vector<T> scale(C), shift(C);
  if (batch_stats) {
    // Two passes over each row while it is in L1: its mean, then its centred sum of squares. Rows combine
    // exactly (the parallel-variance identity): sumsq[c] = sum_n row_m2 + S * (row_mean - mean[c])^2, the
    // centred sum of squares of Algorithm 1, so x is read from memory once for both statistics.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const T* row = x + (n * C + c) * S;
        const double row_total = row_sum(S, [&](int64_t s) { return double(row[s]); });
        const double mu = row_total / S;
        row_mean[n * C + c] = mu;
        row_m2[n * C + c] = row_sum(S, [&](int64_t s) {
          const double d = double(row[s]) - mu;
          return d * d;
        });
        mean[c] += row_total;
      }
    for (int64_t c = 0; c < C; ++c) mean[c] /= m;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        const double d = row_mean[n * C + c] - mean[c];
        sumsq[c] += row_m2[n * C + c] + double(S) * d * d;
      }
  }
  channel_constants(mean.data(), sumsq.data(), k, scale.data(), shift.data(), weight, bias, running_mean,
                    running_var, C, m, batch_stats, factor, eps, renorm);
  // y row by row: per-row constants, a loop the compiler vectorises
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const T mu = k[C + c], is = k[2 * C + c], sc = scale[c], sh = shift[c];
      const T* xr = x + (n * C + c) * S;
      T* yr = y + (n * C + c) * S;
      for (int64_t s = 0; s < S; ++s) yr[s] = (xr[s] - mu) * is * sc + sh;
    }
}

template <typename T>
void backward_spatial(const T* dy, const T* x, const T* k, T* dx, T* dgamma, T* dbeta, int64_t N, int64_t C,
                      int64_t S, bool batch_stats) {
  const int64_t m = N * S;
  std::vector<double> sum_dy(C, 0.0), sum_dy_xhat(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {  // both sums in one pass over the row
      const T *dyr = dy + (n * C + c) * S, *xr = x + (n * C + c) * S;
      const T mu = k[C + c], is = k[2 * C + c];
      const auto [s_dy, s_dy_xhat] = row_sums(
          S, [&](int64_t s) { return double(dyr[s]); },
          [&](int64_t s) {
            const T h = (xr[s] - mu) * is;  // xhat, as the forward computed it
            return double(dyr[s]) * h;
          });
      sum_dy[c] += s_dy;
      sum_dy_xhat[c] += s_dy_xhat;
    }
  for (int64_t c = 0; c < C; ++c) {
    dbeta[c] = T(sum_dy[c]);
    dgamma[c] = T(sum_dy_xhat[c]);
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      // dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m); with running statistics only the first term
      const T a = batch_stats ? T(sum_dy[c] / m) : T(0), b = batch_stats ? T(sum_dy_xhat[c] / m) : T(0);
      const T kc = k[c], mu = k[C + c], is = k[2 * C + c];
      const T *dyr = dy + (n * C + c) * S, *xr = x + (n * C + c) * S;
      T* dxr = dx + (n * C + c) * S;
      for (int64_t s = 0; s < S; ++s) dxr[s] = kc * (dyr[s] - a - ((xr[s] - mu) * is) * b);
    }
}

// ---- channels-last kernel (S > 1, x channels-last: R = N * H * W rows of C channels in memory) ----
//
// The channel is innermost, so each loop runs across channels (vectorised) with one accumulator per channel.
// Statistics take one pass over x: the sums of d = x - x[row 0] and of d^2, in double. The shift, a sample of
// the channel, is typically within a few standard deviations of the mean, so sum d^2 - (sum d)^2 / m loses
// nothing that matters to cancellation (in double, about as accurate as the two-pass form for float x).
// A backward keeps x and k = [gamma * invstd | mean | invstd], as the spatial kernel's.
//
// The row loops are functions with __restrict__ parameters: with this many pointers the compiler would
// otherwise give up on runtime alias checks and leave them scalar.

// y = (x - mean) * invstd * scale + shift over one row of C channels
template <typename T>
inline void normalize_row(const T* __restrict__ x_row, T* __restrict__ y_row, const T* __restrict__ mean,
                          const T* __restrict__ invstd, const T* __restrict__ scale, const T* __restrict__ shift,
                          int64_t C) {
  for (int64_t c = 0; c < C; ++c) y_row[c] = (x_row[c] - mean[c]) * invstd[c] * scale[c] + shift[c];
}

// sum_dy[c] += dy, sum_dy_xhat[c] += dy * xhat over one row, xhat recomputed as the forward computed it
template <typename T>
inline void backward_sums_row(const T* __restrict__ dy_row, const T* __restrict__ x_row, const T* __restrict__ mean,
                              const T* __restrict__ invstd, double* __restrict__ sum_dy,
                              double* __restrict__ sum_dy_xhat, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T h = (x_row[c] - mean[c]) * invstd[c];
    sum_dy[c] += double(dy_row[c]);
    sum_dy_xhat[c] += double(dy_row[c]) * h;
  }
}

// dx = k * (dy - a - xhat * b) over one row
template <typename T>
inline void backward_dx_row(const T* __restrict__ dy_row, const T* __restrict__ x_row, T* __restrict__ dx_row,
                            const T* __restrict__ k, const T* __restrict__ mean, const T* __restrict__ invstd,
                            const T* __restrict__ a, const T* __restrict__ b, int64_t C) {
  for (int64_t c = 0; c < C; ++c) dx_row[c] = k[c] * (dy_row[c] - a[c] - ((x_row[c] - mean[c]) * invstd[c]) * b[c]);
}

template <typename T>
void forward_rows(const T* x, T* y, T* k, const T* weight, const T* bias, T* running_mean, T* running_var, int64_t R,
                  int64_t C, bool batch_stats, double factor, double eps, const Renorm<T>* renorm) {
  const int64_t m = R;
  std::vector<double> shift(C), mean(C, 0.0), sumsq(C, 0.0);
  std::vector<T> scale(C), shift_out(C);
  if (batch_stats && R > 0) {
    for (int64_t c = 0; c < C; ++c) shift[c] = double(x[c]);
    double *s1 = mean.data(), *s2 = sumsq.data();
    const double* sh = shift.data();
    for (int64_t r = 0; r < R; ++r) {
      const T* row = x + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const double d = double(row[c]) - sh[c];
        s1[c] += d;
        s2[c] += d * d;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      sumsq[c] = std::max(sumsq[c] - mean[c] * mean[c] / m, 0.0);  // m * biased variance
      mean[c] = shift[c] + mean[c] / m;
    }
  }
  channel_constants(mean.data(), sumsq.data(), k, scale.data(), shift_out.data(), weight, bias, running_mean,
                    running_var, C, m, batch_stats, factor, eps, renorm);
  for (int64_t r = 0; r < R; ++r)
    normalize_row(x + r * C, y + r * C, k + C, k + 2 * C, scale.data(), shift_out.data(), C);
}

template <typename T>
void backward_rows(const T* dy, const T* x, const T* k, T* dx, T* dgamma, T* dbeta, int64_t R, int64_t C,
                   bool batch_stats) {
  const int64_t m = R;
  std::vector<double> sum_dy(C, 0.0), sum_dy_xhat(C, 0.0);
  std::vector<T> a(C), b(C);
  for (int64_t r = 0; r < R; ++r)  // both sums in one pass
    backward_sums_row(dy + r * C, x + r * C, k + C, k + 2 * C, sum_dy.data(), sum_dy_xhat.data(), C);
  for (int64_t c = 0; c < C; ++c) {
    dbeta[c] = T(sum_dy[c]);
    dgamma[c] = T(sum_dy_xhat[c]);
    // dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m); with running statistics only the first term
    a[c] = batch_stats ? T(sum_dy[c] / m) : T(0);
    b[c] = batch_stats ? T(sum_dy_xhat[c] / m) : T(0);
  }
  for (int64_t r = 0; r < R; ++r)
    backward_dx_row(dy + r * C, x + r * C, dx + r * C, k, k + C, k + 2 * C, a.data(), b.data(), C);
}

// Whether x is a channels-last (N, C, H, W), which in memory is (N * H * W, C). (Where both layouts are the same
// memory, C == 1 or H == W == 1, x counts as contiguous.)
inline bool channels_last(const at::Tensor& x, bool grouped) {
  return !grouped && x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// (G, N, C, S) of x: grouped (K, N, C) or (N, C, *spatial) (a channels-last x's rows are N * S)
inline std::array<int64_t, 4> dims(const at::Tensor& x, bool grouped) {
  if (grouped) return {x.size(0), x.size(1), x.size(2), 1};
  return {1, x.size(0), x.size(1), x.dim() > 2 ? x.numel() / std::max<int64_t>(x.size(0) * x.size(1), 1) : 1};
}

// BN of x in training (batch_stats: Algorithm 1) or with the running statistics (Algorithm 2). factors: one per
// sub-batch, B = factors.size() consecutive sub-batches of x's batch (ghost BN; B = 1 is BN), each normalised on its
// own and, in training, moving the running statistics in turn with its weight factors[b]. renorm: (r_max, d_max),
// Batch Renormalization (training, B = 1). record: keep what a backward needs.
struct Forward {
  at::Tensor y;
  // For a backward: S == 1, xhat itself and k = gamma * invstd per (sub-batch, group, channel); S > 1, x (the input,
  // or its contiguous copy) in place of xhat and k = [gamma * invstd | mean | invstd] per sub-batch (see the spatial
  // kernel). With renorm, gamma is gamma' and rd = [r | d] (2C); else rd is undefined.
  at::Tensor xhat, k, rd;
};

inline Forward forward(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                       const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                       const c10::optional<at::Tensor>& running_var, bool batch_stats, c10::ArrayRef<double> factors,
                       double eps, bool grouped, const c10::optional<std::array<double, 2>>& renorm, bool record) {
  // a channels-last input stays so (and so does y, empty_like keeping x's layout): no transposing copies
  const at::Tensor x = channels_last(input, grouped) ? input : input.contiguous();
  const auto [G, N, C, S] = dims(x, grouped);
  const int64_t B = static_cast<int64_t>(factors.size());
  TORCH_CHECK(B >= 1 && N % B == 0 && (B == 1 || (batch_stats && !grouped)),
              "BN's sub-batches split an ungrouped training batch evenly");
  TORCH_CHECK(!renorm.has_value() || (batch_stats && !grouped && B == 1 && running_mean.has_value() &&
                                      running_var.has_value() && weight.has_value()),
              "Batch Renormalization takes a training batch, gamma and the running statistics");
  const bool flat = S == 1;
  // a sub-batch of n samples is one contiguous block of x in every layout: sub values, k_sub constants
  const int64_t n = N / B, sub = n * C * S, k_sub = (flat ? 1 : 3) * G * C;
  Forward out{at::empty_like(x), !record ? at::Tensor() : flat ? at::empty_like(x) : x,
              at::empty({B * k_sub}, x.options()),
              renorm.has_value() ? at::empty({2 * C}, x.options()) : at::Tensor()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bnrepro_bn_forward", [&] {
    const int64_t GC = G * C;
    const scalar_t *xp = x.data_ptr<scalar_t>(), *w = flat_or_null<scalar_t>(weight, GC),
                   *b = flat_or_null<scalar_t>(bias, GC);
    scalar_t *y = out.y.data_ptr<scalar_t>(), *k = out.k.data_ptr<scalar_t>(),
             *rm = flat_or_null<scalar_t>(running_mean, GC), *rv = flat_or_null<scalar_t>(running_var, GC),
             *xhat = record && flat ? out.xhat.data_ptr<scalar_t>() : nullptr;
    const Renorm<scalar_t> rn{renorm ? (*renorm)[0] : 0.0, renorm ? (*renorm)[1] : 0.0,
                              renorm ? out.rd.data_ptr<scalar_t>() : nullptr};
    const Renorm<scalar_t>* rnp = renorm ? &rn : nullptr;
    for (int64_t s = 0; s < B; ++s) {
      const int64_t o = s * sub;
      scalar_t* ks = k + s * k_sub;
      if (flat)
        forward_flat(xp + o, y + o, xhat ? xhat + o : nullptr, ks, w, b, rm, rv, G, n, C, batch_stats, factors[s],
                     eps, rnp);
      else if (channels_last(x, grouped))
        forward_rows(xp + o, y + o, ks, w, b, rm, rv, n * S, C, batch_stats, factors[s], eps, rnp);
      else
        forward_spatial(xp + o, y + o, ks, w, b, rm, rv, n, C, S, batch_stats, factors[s], eps, rnp);
    }
  });
  return out;
}

struct Grads {
  at::Tensor dx, dgamma, dbeta;  // dgamma, dbeta: the parameters' shape, (C,) or (K, 1, C) grouped
};

// the closed-form backward of a forward that recorded `saved` (its xhat), k and rd
inline Grads backward(const at::Tensor& grad, const at::Tensor& saved, const at::Tensor& k, const at::Tensor& rd,
                      bool batch_stats, bool grouped) {
  const at::Tensor dy = grad.contiguous(channels_last(saved, grouped) ? at::MemoryFormat::ChannelsLast
                                                                      : at::MemoryFormat::Contiguous);
  const auto [G, N, C, S] = dims(saved, grouped);
  // k holds each sub-batch's constants in turn, so its size gives the forward's sub-batch count B
  const int64_t k_sub = (S == 1 ? 1 : 3) * G * C, B = k_sub > 0 ? k.numel() / k_sub : 1, n = N / B, sub = n * C * S,
                GC = G * C;
  const std::vector<int64_t> param_shape = grouped ? std::vector<int64_t>{G, 1, C} : std::vector<int64_t>{C};
  Grads out{at::empty_like(saved), at::empty(param_shape, saved.options()), at::empty(param_shape, saved.options())};
  AT_DISPATCH_FLOATING_TYPES(saved.scalar_type(), "bnrepro_bn_backward", [&] {
    const scalar_t *dyp = dy.data_ptr<scalar_t>(), *sp = saved.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    scalar_t *dx = out.dx.data_ptr<scalar_t>(), *dgamma = out.dgamma.data_ptr<scalar_t>(),
             *dbeta = out.dbeta.data_ptr<scalar_t>();
    // each sub-batch's dgamma and dbeta, B > 1: [dgamma of each | dbeta of each]
    std::vector<scalar_t> parts(B > 1 ? 2 * B * GC : 0);
    for (int64_t s = 0; s < B; ++s) {
      const int64_t o = s * sub;
      const scalar_t* ks = kp + s * k_sub;
      scalar_t *dg = B > 1 ? parts.data() + s * GC : dgamma, *db = B > 1 ? parts.data() + (B + s) * GC : dbeta;
      if (S == 1)
        backward_flat(dyp + o, sp + o, ks, dx + o, dg, db, G, n, C, batch_stats);
      else if (channels_last(saved, grouped))
        backward_rows(dyp + o, sp + o, ks, dx + o, dg, db, n * S, C, batch_stats);
      else
        backward_spatial(dyp + o, sp + o, ks, dx + o, dg, db, n, C, S, batch_stats);
    }
    if (B > 1) {
      // The sub-batches' gradients added last first, in their dtype: so autograd adds those of BN applied to each
      // sub-batch by hand (its engine runs the later nodes first), and ghost BN gives their bits.
      for (int64_t c = 0; c < GC; ++c) {
        scalar_t sum_g = parts[(B - 1) * GC + c], sum_b = parts[(2 * B - 1) * GC + c];
        for (int64_t s = B - 2; s >= 0; --s) {
          sum_g = sum_g + parts[s * GC + c];
          sum_b = sum_b + parts[(B + s) * GC + c];
        }
        dgamma[c] = sum_g;
        dbeta[c] = sum_b;
      }
    }
    if (rd.defined()) {  // Batch Renormalization: gamma' = gamma * r and beta' = beta + gamma * d, r and d constants
      const scalar_t* r = rd.data_ptr<scalar_t>();
      for (int64_t c = 0; c < C; ++c) dgamma[c] = r[c] * dgamma[c] + r[C + c] * dbeta[c];
    }
  });
  return out;
}

}  // namespace bnrepro
