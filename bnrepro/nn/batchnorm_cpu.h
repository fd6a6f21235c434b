// BN forward (Algorithm 1 / 2) and the paper's closed-form backward as two fused CPU loops: the kernels
// behind batchnorm_cpu.cpp's autograd Function and bnrepro/vectorized/stacked_cpu.cpp's training step.
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

// f(i, c) for every element i of x, in memory order, c its channel. Flat (S == 1) is its own loop:
// with the channel innermost, the compiler vectorises across channels.
template <bool Flat, typename F>
inline void for_each(int64_t N, int64_t C, int64_t S, F f) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      if constexpr (Flat) {
        f(n * C + c, c);
      } else {
        for (int64_t s = 0; s < S; ++s) f((n * C + c) * S + s, c);
      }
}

// sum[c] = the sum over (n, s) of f(i, c), in double
template <bool Flat, typename F>
inline void channel_sums(int64_t N, int64_t C, int64_t S, std::vector<double>& sum, F f) {
  std::fill(sum.begin(), sum.end(), 0.0);
  double* acc = sum.data();
  for_each<Flat>(N, C, S, [&](int64_t i, int64_t c) { acc[c] += f(i, c); });
}

template <typename T, bool Flat>
void forward_kernel(const T* x, T* y, T* xhat, T* k, const T* weight, const T* bias, T* running_mean,
                    T* running_var, int64_t G, int64_t N, int64_t C, int64_t S, bool batch_stats, double factor,
                    double eps) {
  const int64_t m = N * S, group = N * C * S;
  std::vector<double> sum(C), sumsq(C);
  std::vector<T> mean(C), invstd(C), scale(C), shift(C);
  for (int64_t g = 0; g < G; ++g) {
    const T* xg = x + g * group;
    const int64_t p = g * C;
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = batch_stats ? T(0) : running_mean[p + c];
    }
    if (batch_stats) {  // two passes: the mean, then the centred sum of squares (Algorithm 1)
      channel_sums<Flat>(N, C, S, sum, [&](int64_t i, int64_t) { return double(xg[i]); });
      for (int64_t c = 0; c < C; ++c) {
        sum[c] /= m;  // now the mean, in double
        mean[c] = T(sum[c]);
      }
      const double* mean_d = sum.data();
      channel_sums<Flat>(N, C, S, sumsq, [&](int64_t i, int64_t c) {
        const double d = double(xg[i]) - mean_d[c];
        return d * d;
      });
    }
    for (int64_t c = 0; c < C; ++c) {
      // normalise with the biased batch variance, or the running one (Algorithm 2)
      const double var = batch_stats ? sumsq[c] / m : double(running_var[p + c]);
      invstd[c] = T(1.0 / std::sqrt(var + eps));
      if (batch_stats && running_mean != nullptr) {  // torch's convention: running_var is the unbiased variance
        running_mean[p + c] = T((1 - factor) * running_mean[p + c] + factor * sum[c]);
        running_var[p + c] = T((1 - factor) * running_var[p + c] + factor * (sumsq[c] / (m - 1)));
      }
      scale[c] = weight != nullptr ? weight[p + c] : T(1);
      shift[c] = bias != nullptr ? bias[p + c] : T(0);
      k[p + c] = invstd[c] * scale[c];  // dy/dx at fixed statistics
    }
    T* yg = y + g * group;
    if (xhat == nullptr) {  // no backward to come (evaluation): y alone
      for_each<Flat>(N, C, S,
                     [&](int64_t i, int64_t c) { yg[i] = (xg[i] - mean[c]) * invstd[c] * scale[c] + shift[c]; });
      continue;
    }
    T* xhat_g = xhat + g * group;
    for_each<Flat>(N, C, S, [&](int64_t i, int64_t c) {
      const T h = (xg[i] - mean[c]) * invstd[c];
      xhat_g[i] = h;
      yg[i] = h * scale[c] + shift[c];
    });
  }
}

template <typename T, bool Flat>
void backward_kernel(const T* dy, const T* xhat, const T* k, T* dx, T* dgamma, T* dbeta, int64_t G, int64_t N,
                     int64_t C, int64_t S, bool batch_stats) {
  const int64_t m = N * S, group = N * C * S;
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  std::vector<T> a(C), b(C);
  for (int64_t g = 0; g < G; ++g) {
    const T* dy_g = dy + g * group;
    const T* xhat_g = xhat + g * group;
    const int64_t p = g * C;
    channel_sums<Flat>(N, C, S, sum_dy, [&](int64_t i, int64_t) { return double(dy_g[i]); });
    channel_sums<Flat>(N, C, S, sum_dy_xhat, [&](int64_t i, int64_t) { return double(dy_g[i]) * xhat_g[i]; });
    for (int64_t c = 0; c < C; ++c) {
      dbeta[p + c] = T(sum_dy[c]);
      dgamma[p + c] = T(sum_dy_xhat[c]);
      // dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m); with running statistics only the first term
      a[c] = batch_stats ? T(sum_dy[c] / m) : T(0);
      b[c] = batch_stats ? T(sum_dy_xhat[c] / m) : T(0);
    }
    T* dx_g = dx + g * group;
    const T* k_g = k + p;
    for_each<Flat>(N, C, S, [&](int64_t i, int64_t c) { dx_g[i] = k_g[c] * (dy_g[i] - a[c] - xhat_g[i] * b[c]); });
  }
}

// (G, N, C, S) of x: grouped (K, N, C) or (N, C, *spatial)
inline std::array<int64_t, 4> dims(const at::Tensor& x, bool grouped) {
  if (grouped) return {x.size(0), x.size(1), x.size(2), 1};
  return {1, x.size(0), x.size(1), x.dim() > 2 ? x.numel() / std::max<int64_t>(x.size(0) * x.size(1), 1) : 1};
}

// BN of x in training (batch_stats: Algorithm 1, moving the running statistics by `factor`) or with the
// running statistics (Algorithm 2). record: keep xhat and k for a backward.
struct Forward {
  at::Tensor y, xhat, k;  // k: gamma * invstd per (group, channel), dy/dx at fixed statistics
};

inline Forward forward(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                       const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                       const c10::optional<at::Tensor>& running_var, bool batch_stats, double factor, double eps,
                       bool grouped, bool record) {
  const at::Tensor x = input.contiguous();
  const auto [G, N, C, S] = dims(x, grouped);
  Forward out{at::empty_like(x), record ? at::empty_like(x) : at::Tensor(), at::empty({G * C}, x.options())};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bnrepro_bn_forward", [&] {
    const int64_t GC = G * C;
    auto kernel = S == 1 ? forward_kernel<scalar_t, true> : forward_kernel<scalar_t, false>;
    kernel(x.data_ptr<scalar_t>(), out.y.data_ptr<scalar_t>(), record ? out.xhat.data_ptr<scalar_t>() : nullptr,
           out.k.data_ptr<scalar_t>(), flat_or_null<scalar_t>(weight, GC), flat_or_null<scalar_t>(bias, GC),
           flat_or_null<scalar_t>(running_mean, GC), flat_or_null<scalar_t>(running_var, GC), G, N, C, S,
           batch_stats, factor, eps);
  });
  return out;
}

struct Grads {
  at::Tensor dx, dgamma, dbeta;  // dgamma, dbeta: the parameters' shape, (C,) or (K, 1, C) grouped
};

// the closed-form backward of a forward that recorded xhat and k
inline Grads backward(const at::Tensor& grad, const at::Tensor& xhat, const at::Tensor& k, bool batch_stats,
                      bool grouped) {
  const at::Tensor dy = grad.contiguous();
  const auto [G, N, C, S] = dims(xhat, grouped);
  const std::vector<int64_t> param_shape = grouped ? std::vector<int64_t>{G, 1, C} : std::vector<int64_t>{C};
  Grads out{at::empty_like(xhat), at::empty(param_shape, xhat.options()), at::empty(param_shape, xhat.options())};
  AT_DISPATCH_FLOATING_TYPES(xhat.scalar_type(), "bnrepro_bn_backward", [&] {
    auto kernel = S == 1 ? backward_kernel<scalar_t, true> : backward_kernel<scalar_t, false>;
    kernel(dy.data_ptr<scalar_t>(), xhat.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), out.dx.data_ptr<scalar_t>(),
           out.dgamma.data_ptr<scalar_t>(), out.dbeta.data_ptr<scalar_t>(), G, N, C, S, batch_stats);
  });
  return out;
}

}  // namespace bnrepro
