"""The deep linear network (model=dln), its regression data set (data=linear_gaussian) and the l2 loss: the DLN's
gradient against autograd of a hand-written float64 matrix product, the data set's determinism, and a regression
run end to end (it trains alone, its loss falls, its report draws loss curves, options that need labels are
refused)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import in_process_job, read_metrics, validated
from omegaconf import OmegaConf

from bnrepro.data.linear_gaussian import LinearGaussian, l2_loss
from bnrepro.models.dln import DLN
from bnrepro.parts import ConfigError
from bnrepro.run.job import group_key, train

DLN_RUN = ("model=dln", "data=linear_gaussian", "train.batch_size=1000", "train.shuffle=fixed", "optim.lr=1e-3")


def test_dln_gradient_matches_autograd_of_the_matrix_product() -> None:
    torch.manual_seed(0)
    model = DLN(depth=4, width=3, input_shape=(5,), num_classes=2).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    l2_loss(model(x), y).backward()
    params = dict(model.named_parameters())
    names = list(model.weight_params().values())  # every layer's weight, first to last
    weights = [params[name].detach().clone().requires_grad_() for name in names]
    assert [tuple(w.shape) for w in weights] == [(3, 5), (3, 3), (3, 3), (2, 3)]  # bias-free by default
    product = weights[3] @ weights[2] @ weights[1] @ weights[0]  # (2, 5): x -> W4 W3 W2 W1 x
    oracle = ((x @ product.T - y) ** 2).sum() / len(x)  # the mean over samples of the summed squared error
    oracle.backward()
    for name, w in zip(names, weights, strict=True):
        torch.testing.assert_close(params[name].grad, w.grad, rtol=1e-12, atol=1e-12)
    assert all(w.grad.abs().max() > 0 for w in weights)


def test_dln_with_bn_normalises_every_layer_but_the_last() -> None:
    model = DLN(bn="before")
    taps: list[torch.Tensor] = []
    model(torch.randn(64, 10) * 5 + 3, taps)
    assert len(taps) == 24 == len(model.norm_params()) and len(model.weight_params()) == 25
    for tap in taps:  # gamma 1, beta 0 at init: each unit of each layer standardised over the batch
        torch.testing.assert_close(tap.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    assert not any("bias" in name for name, _ in model.named_parameters() if "linear" in name or "out" in name)


def test_linear_gaussian_is_deterministic_and_the_same_task_for_every_run_seed() -> None:
    data = LinearGaussian(dim=4, outputs=3, train_size=7, test_size=5)
    assert (data.input_shape, data.num_classes, data.train_size) == ((4,), 3, 7)
    torch.manual_seed(1)  # a run's seed moves torch's global RNG; the task has generators of its own
    first = data.load()
    torch.manual_seed(2)
    again = LinearGaussian(dim=4, outputs=3, train_size=7, test_size=5).load()
    for split in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, split), getattr(again, split))
    a = data.matrix()
    assert a.shape == (3, 4)
    torch.testing.assert_close(first.train_y, first.train_x @ a.T)
    torch.testing.assert_close(first.test_y, first.test_x @ a.T)
    assert first.train_x.shape == (7, 4) and first.test_x.shape == (5, 4)
    assert not torch.equal(first.train_x[:5], first.test_x)  # the test split has samples of its own
    assert not torch.equal(LinearGaussian(dim=4, outputs=3, task_seed=1).matrix(), a)


def test_l2_loss_and_scores() -> None:
    outputs = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    loss = LinearGaussian.loss(outputs, targets)  # sample errors 1 + 4 and 1 + 1: mean 3.5
    assert loss.item() == 3.5
    loss.backward()
    torch.testing.assert_close(outputs.grad, (outputs - targets).detach())  # 2 (f - y) / B with B = 2
    accuracy, test_loss = LinearGaussian.scores(outputs.detach(), targets).tolist()
    assert math.isnan(accuracy) and test_loss == 3.5


def test_a_dln_run_trains_alone_its_loss_falls_and_its_report_draws_loss_curves(tmp_path: Path) -> None:
    from bnrepro.report.build import build_report

    job = in_process_job(tmp_path / "run", *DLN_RUN, "train.steps=60", "train.eval_every=30")
    assert group_key(job) is None  # a stacked step's loss is cross-entropy
    (summary,) = train([job])
    assert summary["status"] == "completed" and summary["final_test_acc"] is None
    rows = read_metrics(job.run_dir)
    assert [r["step"] for r in rows] == ["0", "30", "60"] and {r["test_acc"] for r in rows} == {"nan"}
    assert float(rows[-1]["test_loss"]) < 0.5 * float(rows[0]["test_loss"])
    # the config a CLI run keeps in .hydra/ (record_hydra_files), which the report reads
    (job.run_dir / ".hydra").mkdir()
    (job.run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job.cfg))
    report = build_report([job.run_dir], tmp_path / "report", formats=("png",)).read_text()
    assert "linear Gaussian: l2 loss over training (DLN)" in report
    assert (tmp_path / "report" / "loss_curves.png").exists()
    assert "the runs fit a regression task" in report


def test_an_mlp_on_a_regression_data_set_never_stacks(tmp_path: Path) -> None:
    assert group_key(in_process_job(tmp_path / "a", "data=linear_gaussian", "train.batch_size=100")) is None
    assert group_key(in_process_job(tmp_path / "b", "train.batch_size=100")) is not None


@pytest.mark.parametrize(("override", "key"), [
    ("train.batching=class_clustered", "train.batching"),
    ("tracking.gap_samples=1000", "tracking.gap_samples"),
    ("model.bn=after", "model.bn"),
    ("model.activation=relu", "model.activation"),
])
def test_what_a_regression_or_a_linear_network_lacks_is_refused_in_one_line(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        validated(*DLN_RUN, override)
    assert error.value.key == key and "\n" not in str(error.value)
