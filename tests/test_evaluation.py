"""The evaluator against a plain dense computation: the sparse first layer, the partial-sort percentiles and
the transposed log-softmax must give what F.linear, torch.quantile and F.cross_entropy give."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import in_process_job, read_metrics

from bnrepro.models import MLP
from bnrepro.probes import norms_of
from bnrepro.run.job import train
from bnrepro.training.evaluation import Evaluator, Percentiles, accuracy_and_loss
from bnrepro.training.trainers import bn_columns

PERCENTILES = [15, 50, 85]


def binary_images(n: int, density: float = 0.13, seed: int = 0) -> torch.Tensor:
    """(n, 784) of 0/1 like the paper's MNIST input, a few rows all zero."""
    x = (torch.rand(n, 784, generator=torch.Generator().manual_seed(seed)) < density).float()
    x[::17] = 0
    return x


def grayscale_images(n: int) -> torch.Tensor:
    """(n, 784) in [0, 1], about 80% zeros, as MNIST's pixel/255."""
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1)) * binary_images(n, density=0.2)


def evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor, unit: int,
             percentiles: list[float]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The evaluator's metrics (scores, then percentiles) and tracked tap values for one model."""
    (result,) = Evaluator(model, x, y, unit=unit, percentiles=percentiles)(model)
    return result.scores | result.percentiles, result.taps


def bn_grad_norms(model: MLP) -> dict[str, float]:
    return norms_of({name: p.grad for name, p in model.named_parameters()}, bn_columns(model))


def trained(bn: str, x: torch.Tensor, y: torch.Tensor, steps: int = 30) -> MLP:
    """A model some SGD steps away from its init, so accuracy, loss and BN statistics are not trivial."""
    torch.manual_seed(0)
    model = MLP(bn=bn)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(steps):
        batch = slice(60 * step % len(x), 60 * step % len(x) + 60)
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model


def dense_metrics(model: MLP, x: torch.Tensor, y: torch.Tensor, unit: int,
                  percentiles: list[float]) -> dict[str, float]:
    """The oracle: the evaluation written the plain way, dense input, torch.quantile, F.cross_entropy."""
    model.eval()
    with torch.no_grad():
        acts: list[torch.Tensor] = []
        logits = model(x, acts)
    model.train()
    metrics = {"test_acc": (logits.argmax(dim=1) == y).float().mean().item(),
               "test_loss": F.cross_entropy(logits, y).item()}
    q = torch.tensor([p / 100 for p in percentiles])
    for name, a in zip(model.tap_names, acts, strict=True):
        for p, v in zip(percentiles, torch.quantile(a[:, unit], q).tolist(), strict=True):
            metrics[f"act/{name}/p{p:g}"] = v
    return metrics


@pytest.mark.parametrize("bn", ["none", "before", "after"])
@pytest.mark.parametrize("make", [binary_images, grayscale_images])
def test_metrics_equal_the_dense_computation(bn: str, make) -> None:
    x = make(3001)  # N - 1 = 3000: ranks q (N - 1) fall between order statistics
    y = torch.randint(0, 10, (3001,), generator=torch.Generator().manual_seed(2))
    model = trained(bn, x, y)
    metrics, units = evaluate(model, x, y, unit=3, percentiles=PERCENTILES)
    expected = dense_metrics(model, x, y, unit=3, percentiles=PERCENTILES)
    assert list(metrics) == list(expected)
    assert metrics["test_acc"] == expected["test_acc"]
    for key in expected:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-5), key
    assert model.training  # the evaluator puts the model back as it found it
    assert list(units) == model.tap_names and all(u.shape == (3001,) for u in units.values())


def test_percentiles_are_torch_quantile_of_the_tracked_inputs_exactly() -> None:
    # float32 ranks here, float64 ranks in torch.quantile: the weights differ unless computed its way
    x = binary_images(10000)
    y = torch.randint(0, 10, (10000,), generator=torch.Generator().manual_seed(2))
    percentiles = [0, 1, 15, 33.3, 50, 85, 99.9, 100]
    metrics, units = evaluate(trained("before", x, y), x, y, unit=0, percentiles=percentiles)
    q = torch.tensor([p / 100 for p in percentiles])
    for name, values in units.items():
        assert [metrics[f"act/{name}/p{p:g}"] for p in percentiles] == torch.quantile(values, q).tolist()


@pytest.mark.parametrize("n", [1, 2, 7, 10000])
def test_percentiles_of_many_rows_are_torch_quantile_exactly(n: int) -> None:
    # M = 6 rows: K = 2 stacked models' 3 layers in one call
    g = torch.Generator().manual_seed(n)
    values = torch.randn(6, n, generator=g) * torch.rand(6, 1, generator=g) * 10
    values[4] = values[4].round()  # ties
    values[5, n // 2] = math.nan
    percentiles = [0, 15, 50, 85, 100, 2.5]
    q = torch.tensor([p / 100 for p in percentiles])
    torch.testing.assert_close(Percentiles(n, percentiles)(values), torch.quantile(values, q, dim=1).T,
                               rtol=0, atol=0, equal_nan=True)


def test_accuracy_and_loss_equal_argmax_and_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 10, generator=g) * 4
    logits[:100, 3] = logits[:100, 7] = 50.0  # ties: the first maximum counts, as argmax's
    y = torch.randint(0, 10, (5000,), generator=g)
    accuracy, loss = accuracy_and_loss(logits, y).tolist()
    assert accuracy == (logits.argmax(dim=1) == y).float().mean().item()
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_a_nan_input_gives_nan_percentiles_as_torch_quantile() -> None:
    x = binary_images(200)
    model = MLP(bn="none")
    with torch.no_grad():
        model.hidden[1].linear.weight[0, 0] = math.nan  # unit 0 of h2, and all of h3 after it
    metrics, _ = evaluate(model, x, torch.zeros(200, dtype=torch.long), unit=0, percentiles=PERCENTILES)
    assert all(not math.isnan(metrics[f"act/h1/p{p}"]) for p in PERCENTILES)
    assert all(math.isnan(metrics[f"act/{h}/p{p}"]) for h in ("h2", "h3") for p in PERCENTILES)


def test_bn_grad_norms_are_the_gradients_norms() -> None:
    x = binary_images(120)
    y = torch.randint(0, 10, (120,), generator=torch.Generator().manual_seed(2))
    model = MLP(bn="before")
    assert all(math.isnan(v) for v in bn_grad_norms(model).values())  # before the first backward pass
    F.cross_entropy(model(x), y).backward()
    norms = bn_grad_norms(model)
    assert list(norms) == [f"grad_norm/{k}/{h}" for k in ("gamma", "beta") for h in ("h1", "h2", "h3")]
    for h, layer in zip(("h1", "h2", "h3"), model.hidden, strict=True):
        assert norms[f"grad_norm/gamma/{h}"] == pytest.approx(layer.norm.weight.grad.norm().item(), rel=1e-6)
        assert norms[f"grad_norm/beta/{h}"] == pytest.approx(layer.norm.bias.grad.norm().item(), rel=1e-6)
    assert bn_grad_norms(MLP(bn="none")) == {}


def test_a_run_evaluates_on_the_first_test_samples_it_is_given(data_root: Path, tmp_path: Path) -> None:
    common = ("model.bn=before", "train.steps=20", "train.eval_every=20", "train.progress=false",
              f"data.root={data_root}")
    few, whole = in_process_job(tmp_path / "few", *common, "tracking.test_samples=300"), in_process_job(
        tmp_path / "all", *common)
    train([few])
    train([whole])
    rows_few, rows_all = read_metrics(few.run_dir), read_metrics(whole.run_dir)
    assert [r["train_loss"] for r in rows_few] == [r["train_loss"] for r in rows_all]  # the same training
    for row_few, row_all in zip(rows_few, rows_all, strict=True):
        assert float(row_few["test_acc"]) * 300 == pytest.approx(round(float(row_few["test_acc"]) * 300), abs=1e-3)
        assert row_few["test_acc"] != row_all["test_acc"]  # 300 of the 10,000 images
