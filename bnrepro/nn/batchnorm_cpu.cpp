// The fused BN kernels of batchnorm_cpu.h as one autograd Function, for bnrepro/nn/batchnorm.py.
#include "batchnorm_cpu.h"

#include <torch/csrc/autograd/functions/basic_ops.h>

namespace bnrepro {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct BatchNormFunction : public torch::autograd::Function<BatchNormFunction> {
  // running statistics move in place when batch_stats (training); factors, renorm: see forward in batchnorm_cpu.h
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                            const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                            const c10::optional<at::Tensor>& running_var, bool batch_stats,
                            const std::vector<double>& factors, double eps, bool grouped,
                            const c10::optional<std::array<double, 2>>& renorm, bool record) {
    // record: a backward may follow, which needs xhat
    auto [y, xhat, k, rd] = bnrepro::forward(input, weight, bias, running_mean, running_var, batch_stats, factors, eps,
                                             grouped, renorm, record);
    ctx->save_for_backward({xhat, k, rd});
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
    const at::Tensor &xhat = saved[0], &k = saved[1], &rd = saved[2];
    const auto [dx, dgamma, dbeta] = bnrepro::backward(grad, xhat, k, rd, ctx->saved_data["batch_stats"].toBool(),
                                                       ctx->saved_data["grouped"].toBool());
    const bool affine_w = ctx->needs_input_grad(1), affine_b = ctx->needs_input_grad(2);
    return {dx, affine_w ? dgamma : at::Tensor(), affine_b ? dbeta : at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// factors: the weight of each sub-batch in the running statistics' update, one per sub-batch of x's batch (ghost
// BN), or one; renorm: (r_max, d_max) for Batch Renormalization, or None. See forward in batchnorm_cpu.h.
at::Tensor batch_norm(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                      const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& running_mean,
                      const c10::optional<at::Tensor>& running_var, bool batch_stats, const std::vector<double>& factors,
                      double eps, bool grouped, const c10::optional<std::array<double, 2>>& renorm) {
  TORCH_CHECK(x.device().is_cpu(), "bnrepro's BN kernel runs on CPU tensors");
  const auto needs_grad = [](const c10::optional<at::Tensor>& t) { return t.has_value() && t->requires_grad(); };
  const bool record = at::GradMode::is_enabled() && (x.requires_grad() || needs_grad(weight) || needs_grad(bias));
  return BatchNormFunction::apply(x, weight, bias, running_mean, running_var, batch_stats, factors, eps, grouped,
                                  renorm, record);
}

}  // namespace bnrepro

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("batch_norm", &bnrepro::batch_norm,
        "y = BN(x); x (N, C, *spatial), or (K, N, C) stacked models when grouped; ghost batches, Batch Renormalization");
}
