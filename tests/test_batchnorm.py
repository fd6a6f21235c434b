"""bnrepro.nn.BatchNorm1d/2d against torch.nn's (the oracle) and against the paper's own claims."""

import math

import pytest
import torch
from torch import nn

from bnrepro.nn import BatchNorm1d, BatchNorm2d, batch_norm_stacked, cpu_kernel

# (ours, torch's, input shape): (N, C), (N, C, L) and (N, C, H, W)
CASES = [
    (BatchNorm1d, nn.BatchNorm1d, (16, 7)),
    (BatchNorm1d, nn.BatchNorm1d, (5, 4, 6)),
    (BatchNorm2d, nn.BatchNorm2d, (4, 3, 5, 6)),
]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-11, rtol=1e-9)}


@pytest.fixture(autouse=True, params=["cpu_kernel", "torch_ops"])
def bn_path(request, monkeypatch):
    """Every test runs on both implementations: the fused C++ kernel (CPU) and the torch ops (CUDA's path)."""
    if request.param == "cpu_kernel":
        assert cpu_kernel.kernel() is not None, "the C++ kernel did not build"
    monkeypatch.setattr(cpu_kernel, "enabled", request.param == "cpu_kernel")
    return request.param


def pair(ours_cls, torch_cls, c, dtype=torch.float64, seed=0, **kwargs):
    """Our layer and torch's with the same random gamma/beta (not the 1/0 init, which hides mistakes)."""
    torch.manual_seed(seed)
    ours = ours_cls(c, dtype=dtype, **kwargs)
    with torch.no_grad():
        if ours.weight is not None:
            ours.weight.uniform_(0.5, 2.0)
        if ours.bias is not None:
            ours.bias.normal_()
    ref = torch_cls(c, dtype=dtype, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def batch(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    # non-zero mean and non-unit spread per channel, so a missing centring or scaling shows
    c = shape[1]
    loc = torch.randn(c, generator=g, dtype=dtype).view(1, c, *([1] * (len(shape) - 2)))
    return (torch.randn(shape, generator=g, dtype=dtype) * 3 + 2 * loc).requires_grad_()


def grads(layer, x, dy):
    x.grad = None
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, *[p.grad for p in layer.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES)
def test_matches_torch(ours_cls, torch_cls, shape, affine, momentum, eps, dtype):
    ours, ref = pair(ours_cls, torch_cls, shape[1], dtype, affine=affine, momentum=momentum, eps=eps)
    tol = TOL[dtype]
    for step in range(3):  # training: outputs, all gradients and the running statistics, step by step
        x, dy = batch(shape, dtype, seed=step), torch.randn(shape, dtype=dtype)
        for a, b in zip(grads(ours, x, dy), grads(ref, x, dy), strict=True):
            torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **tol)
        torch.testing.assert_close(ours.running_var, ref.running_var, **tol)
        assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == step + 1
    ours.eval(), ref.eval()  # inference (Algorithm 2): running statistics, gradients included
    x, dy = batch(shape, dtype, seed=10), torch.randn(shape, dtype=dtype)
    for a, b in zip(grads(ours, x, dy), grads(ref, x, dy), strict=True):
        torch.testing.assert_close(a, b, **tol)
    assert ours.num_batches_tracked.item() == 3  # eval leaves the statistics alone
    torch.testing.assert_close(ours.running_var, ref.running_var, **tol)


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES)
def test_no_running_stats_like_torch(ours_cls, torch_cls, shape):
    ours, ref = pair(ours_cls, torch_cls, shape[1], track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    for training in (True, False):  # batch statistics in both modes
        ours.train(training), ref.train(training)
        x, dy = batch(shape, torch.float64, seed=1), torch.randn(shape, dtype=torch.float64)
        for a, b in zip(grads(ours, x, dy), grads(ref, x, dy), strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_cumulative_average_is_algorithm_2():
    """momentum=None: E[x] = mean of the batch means, Var[x] = mean of the unbiased batch variances."""
    bn = BatchNorm1d(5, momentum=None, dtype=torch.float64)
    xs = [batch((8, 5), torch.float64, seed=s).detach() for s in range(4)]
    for x in xs:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in xs]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0, unbiased=True) for x in xs]).mean(0))


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES)
def test_partial_gradients(ours_cls, torch_cls, shape):
    """Only some of x, gamma, beta need a gradient: those that do still match torch's."""
    for frozen_params, x_grad in ((True, True), (False, False)):
        ours, ref = pair(ours_cls, torch_cls, shape[1])
        for p in (*ours.parameters(), *ref.parameters()):
            p.requires_grad_(not frozen_params)
        x = batch(shape, torch.float64, seed=2).requires_grad_(x_grad)
        dy = torch.randn(shape, dtype=torch.float64)
        ours_in, ref_in = ([x], [x]) if x_grad else (list(ours.parameters()), list(ref.parameters()))
        got, want = torch.autograd.grad(ours(x), ours_in, dy), torch.autograd.grad(ref(x), ref_in, dy)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def test_bias_false_like_torch():
    ours, ref = pair(BatchNorm1d, nn.BatchNorm1d, 6, bias=False)
    assert ours.bias is None and ours.state_dict().keys() == ref.state_dict().keys()
    x, dy = batch((10, 6), torch.float64, seed=3), torch.randn(10, 6, dtype=torch.float64)
    for a, b in zip(grads(ours, x, dy), grads(ref, x, dy), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES)
def test_state_dict_round_trip(ours_cls, torch_cls, shape):
    ours, _ = pair(ours_cls, torch_cls, shape[1], momentum=0.3)
    for s in range(3):
        ours(batch(shape, torch.float64, seed=s))
    ref = torch_cls(shape[1], dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())  # ours -> torch
    back = ours_cls(shape[1], dtype=torch.float64)
    back.load_state_dict(ref.state_dict())  # torch -> ours
    assert list(ours.state_dict()) == list(ref.state_dict()) == list(back.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert back.num_batches_tracked.item() == 3
    x = batch(shape, torch.float64, seed=9).detach()
    for m in (ours, ref, back):
        m.eval()
    torch.testing.assert_close(back(x), ref(x))
    torch.testing.assert_close(ours(x), ref(x))


def test_module_api_like_torch():
    kwargs = dict(eps=1e-3, momentum=None, affine=False)
    assert repr(BatchNorm2d(3, **kwargs)) == repr(nn.BatchNorm2d(3, **kwargs))
    assert repr(BatchNorm1d(4)) == repr(nn.BatchNorm1d(4))
    assert [n for n, _ in BatchNorm1d(4).named_parameters()] == ["weight", "bias"]
    buffers = ["running_mean", "running_var", "num_batches_tracked"]
    assert [n for n, _ in BatchNorm1d(4).named_buffers()] == buffers
    bn = BatchNorm1d(4, dtype=torch.float64)
    assert bn.weight.dtype == bn.running_var.dtype == torch.float64 and bn.num_batches_tracked.dtype == torch.long
    bn(batch((6, 4), torch.float64, seed=0))
    with torch.no_grad():
        bn.weight.fill_(3)
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(4, dtype=torch.float64)) and bn.num_batches_tracked.item() == 0
    assert torch.equal(bn.running_mean, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(bn.running_var, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(shape, training):
    bn = (BatchNorm1d if len(shape) == 2 else BatchNorm2d)(shape[1], dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0), bn.bias.normal_()
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0)
    bn.train(training)
    x, w, b = batch(shape, torch.float64, seed=4), bn.weight.detach().clone(), bn.bias.detach().clone()
    # (in training the running buffers move with every call; the function checked does not use them)
    assert torch.autograd.gradcheck(
        lambda x, w, b: torch.func.functional_call(bn, {"weight": w, "bias": b}, (x,)),
        (x, w.requires_grad_(), b.requires_grad_()))


def test_backward_is_the_hand_written_one(monkeypatch, bn_path):
    bn = BatchNorm1d(5)
    x = batch((8, 5), torch.float32, seed=0)
    # torch's own BN kernels are never called, and the whole layer is one autograd node whose
    # inputs are x, gamma and beta directly (no autograd graph recorded through the forward)
    monkeypatch.setattr(torch, "batch_norm", None)
    monkeypatch.setattr(torch, "native_batch_norm", None)
    monkeypatch.setattr(torch.nn.functional, "batch_norm", None)
    y = bn(x)
    # the C++ Function's node, or the Python one's
    assert y.grad_fn.name() == {"cpu_kernel": "torch::autograd::CppNode<bnrepro::BatchNormFunction>",
                                 "torch_ops": "BatchNormFunctionBackward"}[bn_path]
    leaves = [f.variable for f, _ in y.grad_fn.next_functions if f is not None]
    assert all(any(v is t for v in leaves) for t in (x, bn.weight, bn.bias))
    y.sum().backward()
    assert x.grad.abs().max() < 1e-5  # d(sum y)/dx = 0: the mean subtraction removes any shift


def test_double_backward_refused():
    bn = BatchNorm1d(3, dtype=torch.float64)
    x = batch((5, 3), torch.float64, seed=0)
    (g,) = torch.autograd.grad((bn(x) ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


ONE_PER_CHANNEL = [(BatchNorm1d, nn.BatchNorm1d, (1, 4)), (BatchNorm1d, nn.BatchNorm1d, (1, 4, 1)),
                   (BatchNorm2d, nn.BatchNorm2d, (1, 4, 1, 1))]


@pytest.mark.parametrize("ours_cls,torch_cls,shape", ONE_PER_CHANNEL)
def test_one_value_per_channel(ours_cls, torch_cls, shape):
    ours, ref = pair(ours_cls, torch_cls, 4)
    x = torch.randn(shape, dtype=torch.float64)
    for layer in (ours, ref):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input"):
            layer(x)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()  # torch counts the try too
    torch.testing.assert_close(ours.running_mean, torch.zeros(4, dtype=torch.float64))  # untouched
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x))  # inference needs no batch statistics


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES)
def test_empty_batch_like_torch(ours_cls, torch_cls, shape):
    ours, ref = pair(ours_cls, torch_cls, shape[1])
    x, dy = batch((0, *shape[1:]), torch.float64, seed=0), torch.randn(0, *shape[1:], dtype=torch.float64)
    for a, b in zip(grads(ours, x, dy), grads(ref, x, dy), strict=True):
        torch.testing.assert_close(a, b)  # empty output and input gradient, zero parameter gradients
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # counted, statistics untouched


@pytest.mark.parametrize("cls,bad", [(BatchNorm1d, (2, 3, 4, 5)), (BatchNorm1d, (3,)), (BatchNorm2d, (4, 3))])
def test_wrong_dims(cls, bad):
    with pytest.raises(ValueError, match=f"got {len(bad)}D input"):
        cls(3)(torch.randn(bad))


@pytest.mark.parametrize("a", [0.2, 7.0])
def test_scale_invariance_sec_3_3(a):
    """BN(W u) = BN((aW) u); d/du unchanged; d/d(aW) = (1/a) d/dW: larger weights, smaller gradients."""
    torch.manual_seed(0)
    u = torch.randn(32, 10, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(32, 6, dtype=torch.float64)  # a fixed random linear read-out of BN's output

    def run(scale):
        linear = nn.Linear(10, 6, bias=False, dtype=torch.float64)
        torch.manual_seed(1)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(6, 10, dtype=torch.float64) * scale)
        bn = BatchNorm1d(6, eps=0.0, dtype=torch.float64)  # the paper's argument ignores eps (var >> eps)
        y = bn(linear(u))
        du, dw = torch.autograd.grad((y * probe).sum(), (u, linear.weight))
        return y, du, dw

    y1, du1, dw1 = run(1.0)
    ya, dua, dwa = run(a)
    torch.testing.assert_close(ya, y1)
    torch.testing.assert_close(dua, du1)
    torch.testing.assert_close(dwa, dw1 / a)
    assert dw1.abs().max() > 1e-3  # the gradients compared are not trivially zero




def stacked_models(k, c, affine, momentum):
    """K BatchNorm1d(c) with random gamma/beta and running statistics, and the same K models stacked as
    batch_norm_stacked takes them: (K, 1, C) tensors, gamma/beta leaves so their gradients come back (K, 1, C)."""
    singles = [pair(BatchNorm1d, nn.BatchNorm1d, c, torch.float32, seed=s, affine=affine, momentum=momentum)[0]
               for s in range(k)]
    with torch.no_grad():
        for s in singles:  # distinct running statistics, so eval mode tells the models apart
            s.running_mean.normal_(), s.running_var.uniform_(0.5, 2.0)
    stacked = {}
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(singles[0], name) is None:
            stacked[name] = None
        else:
            t = torch.stack([getattr(s, name).detach() for s in singles]).unsqueeze(1)
            stacked[name] = t.requires_grad_(name in ("weight", "bias"))
    return singles, stacked


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_stacked_is_bitwise_batchnorm1d_per_model(affine, momentum):
    """Slice k of batch_norm_stacked is BatchNorm1d on x[k] alone, bit for bit: output, dx, dgamma, dbeta and
    running statistics over 3 training steps, then in eval mode (running statistics used)."""
    k, n, c = 3, 60, 7
    singles, stacked = stacked_models(k, c, affine, momentum)
    params = ("weight", "bias") if affine else ()
    num_batches = torch.tensor(0)
    g = torch.Generator().manual_seed(0)
    for training in (True, True, True, False):
        x = (torch.randn(k, n, c, generator=g) * 3 + 2 * torch.randn(c, generator=g)).requires_grad_()
        dy = torch.randn(k, n, c, generator=g)
        for name in params:
            stacked[name].grad = None
        y = batch_norm_stacked(x, **stacked, training=training, momentum=momentum, num_batches_tracked=num_batches,
                               eps=1e-5)
        y.backward(dy)
        for i, single in enumerate(singles):
            single.train(training).zero_grad(set_to_none=True)
            xi = x[i].detach().requires_grad_()
            yi = single(xi)
            yi.backward(dy[i])
            assert torch.equal(y[i], yi) and torch.equal(x.grad[i], xi.grad)
            for name in ("running_mean", "running_var"):
                assert torch.equal(stacked[name][i, 0], getattr(single, name)), name
            for name in params:
                assert torch.equal(stacked[name].grad[i, 0], getattr(single, name).grad), name
            assert single.num_batches_tracked.item() == num_batches.item()
    assert num_batches.item() == 3  # counted once a training call, for all K models


@pytest.mark.parametrize("shape", [(60, 100), (4, 3, 5, 6)])
def test_same_bits_on_any_thread_count(shape):
    """A run's numbers must not depend on torch's thread count: a sequential sweep runs jobs with torch's
    default threads, the vectorized launcher with one per process, and their reports must be identical."""
    outs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            bn = (BatchNorm1d if len(shape) == 2 else BatchNorm2d)(shape[1])
            dy = torch.linspace(-1, 1, math.prod(shape)).view(shape)
            outs.append((*grads(bn, batch(shape, torch.float32, seed=0), dy), bn.running_var))
        finally:
            torch.set_num_threads(before)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)
