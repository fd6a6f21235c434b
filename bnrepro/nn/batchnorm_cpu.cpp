// The fused BN kernels of batchnorm_cpu.h as one autograd Function, for bnrepro/nn/batchnorm.py.
#include "batchnorm_cpu.h"

#include <torch/csrc/autograd/functions/basic_ops.h>

namespace bnrepro {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct BatchNormFunction : public torch::autograd::Function<BatchNormFunction> {
  // running statistics move in place when batch_stats (training); factor: the weight of this batch
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                            const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                            const c10::optional<at::Tensor>& running_var, bool batch_stats, double factor, double eps,
                            bool grouped, bool record) {
    // record: a backward may follow, which needs xhat
    auto [y, xhat, k] = bnrepro::forward(input, weight, bias, running_mean, running_var, batch_stats, factor, eps,
                                         grouped, record);
    ctx->save_for_backward({xhat, k});
    ctx->saved_data["batch_stats"] = batch_stats;
    ctx->saved_data["grouped"] = grouped;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto outputs = closed_form_grads(ctx, grads[0]);
    if (!at::GradMode::is_enabled()) return outputs;
    // create_graph=True: like Python's @once_differentiable, the gradients are returned, and differentiating
    // them again raises (the closed form is not written in differentiable ops)
    variable_list detached;
    for (const auto& g : outputs) detached.push_back(g.defined() ? g.detach().requires_grad_(true) : g);
    return std::make_shared<torch::autograd::DelayedError>(
               "bnrepro's BatchNormFunction is once_differentiable: its closed-form backward is not "
               "differentiated again (double backward)",
               static_cast<int64_t>(detached.size()))
        ->apply(std::move(detached));
  }

  static variable_list closed_form_grads(AutogradContext* ctx, const at::Tensor& grad) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &xhat = saved[0], &k = saved[1];
    const auto [dx, dgamma, dbeta] = bnrepro::backward(grad, xhat, k, ctx->saved_data["batch_stats"].toBool(),
                                                       ctx->saved_data["grouped"].toBool());
    const bool affine_w = ctx->needs_input_grad(1), affine_b = ctx->needs_input_grad(2);
    return {dx, affine_w ? dgamma : at::Tensor(), affine_b ? dbeta : at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor batch_norm(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                      const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                      const c10::optional<at::Tensor>& running_var, bool batch_stats, double factor, double eps,
                      bool grouped) {
  TORCH_CHECK(x.device().is_cpu(), "bnrepro's BN kernel runs on CPU tensors");
  const auto needs_grad = [](const c10::optional<at::Tensor>& t) { return t.has_value() && t->requires_grad(); };
  const bool record = at::GradMode::is_enabled() && (x.requires_grad() || needs_grad(weight) || needs_grad(bias));
  return BatchNormFunction::apply(x, weight, bias, running_mean, running_var, batch_stats, factor, eps, grouped,
                                  record);
}

// Batch Renormalization's per-channel constants (Ioffe 2017; bnrepro/nn/renorm.py) for a training batch x
// (N, C, *spatial): r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mu_B - mu) / sigma, -d_max, d_max), with
// the batch mean mu_B and biased std sigma_B = sqrt(var_B + eps) (two passes in double, as BN's forward computes
// them), and sigma = sqrt(running_var + eps). One call in place of a dozen torch ops on (C,) tensors.
std::vector<at::Tensor> renorm_constants(const at::Tensor& input, const at::Tensor& running_mean,
                                         const at::Tensor& running_var, double eps, double r_max, double d_max) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() >= 2, "renorm_constants takes a CPU (N, C, *spatial) batch");
  const at::Tensor x = input.detach().contiguous();
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(N * C, 1);
  at::Tensor r = at::empty({C}, x.options()), d = at::empty({C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bnrepro_renorm_constants", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t *rm = flat_or_null<scalar_t>(running_mean, C), *rv = flat_or_null<scalar_t>(running_var, C);
    scalar_t *rp = r.data_ptr<scalar_t>(), *dp = d.data_ptr<scalar_t>();
    std::vector<double> mean(C, 0.0), sumsq(C, 0.0);
    const double m = double(N * S);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t s = 0; s < S; ++s) mean[c] += xp[(n * C + c) * S + s];
    for (int64_t c = 0; c < C; ++c) mean[c] /= m;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t s = 0; s < S; ++s) {
          const double v = xp[(n * C + c) * S + s] - mean[c];
          sumsq[c] += v * v;
        }
    for (int64_t c = 0; c < C; ++c) {
      const double sigma = std::sqrt(double(rv[c]) + eps), sigma_b = std::sqrt(sumsq[c] / m + eps);
      rp[c] = scalar_t(std::clamp(sigma_b / sigma, 1.0 / r_max, r_max));
      dp[c] = scalar_t(std::clamp((mean[c] - double(rm[c])) / sigma, -d_max, d_max));
    }
  });
  return {r, d};
}

}  // namespace bnrepro

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("batch_norm", &bnrepro::batch_norm, "y = BN(x); x (N, C, *spatial), or (K, N, C) stacked models when grouped");
  m.def("renorm_constants", &bnrepro::renorm_constants, "Batch Renormalization's (r, d) per channel of a batch");
}
