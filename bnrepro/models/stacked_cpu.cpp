// One training step of K stacked MLPs (StackedMLP in bnrepro/models/mlp.py) in one call: batch gather, forward, the
// K cross-entropies and the whole backward, with each parameter's gradient left in its .grad.
//
// Why: a stacked step makes ~100 small torch calls, and from Python each costs a few us of argument parsing,
// plus autograd's bookkeeping per node: ~1/3 of a K = 3 step on this CPU. Here the same ATen ops run in the
// same order on the same tensors as StackedMLP's forward and autograd's backward (F.linear's orientation of
// the weight gradient, the padded activation outputs, BN's closed form from batchnorm_cpu.h), so every bit
// matches that path, and with it each model's own single run.
#include "../nn/batchnorm_cpu.h"

namespace bnrepro {
namespace {

// mlp.py's _PAD: a padded model stride keeps each slice's elementwise loop the loop it runs alone
constexpr int64_t kPad = 16;
enum Activation : int64_t { kSigmoid = 0, kTanh = 1, kRelu = 2 };

// one linear layer of the stack and what follows it; undefined tensors are absent
struct Layer {
  at::Tensor weight, bias;                                   // (K, out, in), (K, 1, out)
  at::Tensor gamma, beta, running_mean, running_var, count;  // its BN's, all (K, 1, out); count: 0-dim long
  bool has_norm() const { return gamma.defined() || running_mean.defined(); }
};

// what the backward needs of one layer's forward
struct Saved {
  at::Tensor input, act;  // the layer's input; the activation's output (sigmoid/tanh/relu backward reads it)
  Forward norm;           // BN's xhat and k
};

at::Tensor activate(const at::Tensor& z, Activation act) {
  if (act == kRelu) return at::relu(z);
  const at::Tensor x = z[0].is_contiguous() ? z : z.contiguous();
  const int64_t k = x.size(0), n = x[0].numel();
  auto y = at::empty({k, n + kPad}, x.options()).narrow(1, 0, n).view(x.sizes());
  return act == kSigmoid ? at::sigmoid_out(y, x) : at::tanh_out(y, x);
}

at::Tensor activation_backward(const at::Tensor& grad, const at::Tensor& y, Activation act) {
  if (act == kRelu) return at::threshold_backward(grad, y, 0);
  return act == kSigmoid ? at::sigmoid_backward(grad, y) : at::tanh_backward(grad, y);
}

// BN in training mode, as bnrepro/nn/batchnorm.py's _batch_norm: the shared count moves, then the statistics
Forward normalize(const Layer& layer, const at::Tensor& x, c10::optional<double> momentum, double eps) {
  TORCH_CHECK(x.size(1) > 1, "Expected more than 1 value per channel when training, got input size ", x.sizes());
  double factor = 0.0;
  if (layer.count.defined()) layer.count.add_(1);
  if (layer.running_mean.defined())  // momentum None: the cumulative average over the batches seen
    factor = momentum.has_value() ? *momentum : 1.0 / static_cast<double>(layer.count.item<int64_t>());
  const auto opt = [](const at::Tensor& t) { return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt; };
  return forward(x, opt(layer.gamma), opt(layer.beta), opt(layer.running_mean), opt(layer.running_var), true,
                 c10::ArrayRef<double>(factor), eps, true, c10::nullopt, true);
}

void set_grad(const at::Tensor& param, const at::Tensor& grad) {
  if (param.defined()) param.mutable_grad() = grad;
}

// normalize's closed-form backward: gamma's and beta's gradients into their .grad; returns dx
at::Tensor normalize_backward(const Layer& layer, const Forward& norm, const at::Tensor& grad) {
  const Grads bn = backward(grad, norm.xhat, norm.k, norm.rd, true, true);
  set_grad(layer.gamma, bn.dgamma);
  set_grad(layer.beta, bn.dbeta);
  return bn.dx;
}

}  // namespace

// layers: [weight, bias, gamma, beta, running_mean, running_var, num_batches_tracked] per linear layer, the
// output layer last (no BN, no activation). idx: (K * B,) rows of train_x, model-major. Returns each model's
// loss, (K,); the models in `active` whose loss is at most max_loss get their gradients (the others' slices
// are zero, as autograd gives them when their losses are left out), the rest of the models none.
at::Tensor train_step(const at::Tensor& train_x, const at::Tensor& train_y, const at::Tensor& idx,
                      const std::vector<std::vector<c10::optional<at::Tensor>>>& layer_tensors, int64_t activation,
                      bool bn_before, c10::optional<double> momentum, double eps, const std::vector<bool>& active,
                      double max_loss) {
  at::NoGradGuard no_grad;
  const auto act = static_cast<Activation>(activation);
  std::vector<Layer> layers;
  for (const auto& t : layer_tensors) {
    const auto get = [&](size_t i) { return t[i].has_value() ? *t[i] : at::Tensor(); };
    layers.push_back({get(0), get(1), get(2), get(3), get(4), get(5), get(6)});
  }
  const int64_t K = static_cast<int64_t>(active.size()), L = static_cast<int64_t>(layers.size());
  at::Tensor x = train_x.index_select(0, idx).view({K, -1, train_x.size(1)});  // (K, B, in)
  const at::Tensor y = train_y.index_select(0, idx).view({K, -1});             // (K, B)

  // forward, as StackedMLP.forward
  std::vector<Saved> saved(L);
  for (int64_t i = 0; i < L; ++i) {
    const Layer& layer = layers[i];
    saved[i].input = x;
    const at::Tensor wt = layer.weight.transpose(1, 2);  // (K, in, out)
    x = layer.bias.defined() ? at::baddbmm(layer.bias, x, wt) : at::bmm(x, wt);
    if (i == L - 1) break;  // the logits
    if (bn_before) {
      saved[i].norm = normalize(layer, x, momentum, eps);
      x = saved[i].norm.y;
    }
    x = saved[i].act = activate(x, act);
    if (layer.has_norm() && !bn_before) {
      saved[i].norm = normalize(layer, x, momentum, eps);
      x = saved[i].norm.y;
    }
  }

  // each model's F.cross_entropy (log_softmax, then nll_loss) and its gradient at 1, as autograd forms it
  const at::Tensor one = at::ones({}, x.options());
  std::vector<at::Tensor> losses(K), grads(K);
  bool any = false;
  for (int64_t k = 0; k < K; ++k) {
    const at::Tensor log_probs = at::_log_softmax(x[k], 1, false);
    const auto [loss, total_weight] = at::nll_loss_forward(log_probs, y[k], {}, at::Reduction::Mean, -100);
    losses[k] = loss;
    if (active[k] && loss.item<double>() <= max_loss) {  // not NaN, not past the bound
      any = true;
      const at::Tensor g = at::nll_loss_backward(one, log_probs, y[k], {}, at::Reduction::Mean, -100, total_weight);
      grads[k] = at::_log_softmax_backward_data(g, log_probs, 1, x.scalar_type());
    } else {
      grads[k] = at::zeros_like(x[k]);
    }
  }
  if (!any) return at::stack(losses);

  // backward, as autograd runs StackedMLP's graph: _StackedLinear's, the activation's and BN's backward
  at::Tensor g = at::stack(grads);  // (K, B, 10)
  for (int64_t i = L - 1; i >= 0; --i) {
    const Layer& layer = layers[i];
    if (i < L - 1) {
      if (layer.has_norm() && !bn_before) {
        g = normalize_backward(layer, saved[i].norm, g);
      }
      g = activation_backward(g, saved[i].act, act);
      if (bn_before) {
        g = normalize_backward(layer, saved[i].norm, g);
      }
    }
    set_grad(layer.weight, at::bmm(g.transpose(1, 2), saved[i].input));
    if (layer.bias.defined()) set_grad(layer.bias, g.sum(1, true));
    if (i > 0) g = at::bmm(g, layer.weight);
  }
  return at::stack(losses);
}

}  // namespace bnrepro

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("train_step", &bnrepro::train_step, "one training step of K stacked MLPs; each model's loss");
}
