"""Sec. 3.3's scale invariance on trained networks: with BN, scaling a layer's weights by a changes neither its
output nor the gradient reaching its input, and scales its weight gradient by 1/a; without BN it changes all
three. The same measurement writes reports/scale_invariance/ (scripts/scale_invariance.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnrepro.data import load_mnist
from bnrepro.report import claims
from bnrepro.report import scale_invariance as si
from bnrepro.report.thresholds import SCALE_TOLERANCE


@pytest.fixture(scope="module")
def rows(data_root: Path) -> list[si.Deviation]:
    torch.set_num_threads(1)
    data = load_mnist(data_root)
    return si.run(data.train_x, data.train_y, seeds=[0], steps=[0, 300], batches=2)


def test_bn_is_scale_invariant_and_no_bn_is_not(rows: list[si.Deviation]) -> None:
    bn = [r for r in rows if r.network == "BN"]
    base = [r for r in rows if r.network == "no BN"]
    assert {r.layer for r in bn} == {"h1", "h2", "h3"} and {r.factor for r in bn} == set(si.FACTORS)
    assert max(max(r.output, r.input_grad, r.weight_grad) for r in bn) <= SCALE_TOLERANCE
    assert all(abs(r.grad_ratio * r.factor - 1) <= SCALE_TOLERANCE for r in bn)  # |dL/d(aW)| = |dL/dW| / a
    assert min(max(r.input_grad, r.weight_grad) for r in base) > 100 * SCALE_TOLERANCE
    assert si.claim(rows).verdict == claims.REPRODUCED


def test_the_claim_fails_when_a_bn_layer_is_not_invariant(rows: list[si.Deviation]) -> None:
    broken = [si.Deviation(**{**vars(r), "input_grad": 0.3}) if r.network == "BN" and r.layer == "h2" else r
              for r in rows]
    assert si.claim(broken).verdict == claims.NOT_REPRODUCED
    bn_only = [r for r in rows if r.network == "BN"]
    assert si.claim(bn_only).verdict == claims.PARTLY


def test_training_moves_the_weights_and_measuring_does_not(data_root: Path) -> None:
    data = load_mnist(data_root)
    settings = si.default_settings()
    snapshots = {}
    for step, model in si.train("before", 0, [0, 50], data.train_x, data.train_y, settings):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = model.prepare_inputs(data.train_x[:60], evaluation=False)
        si.measure(model, x, data.train_y[:60])
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics kept
        snapshots[step] = before["hidden.0.linear.weight"]
    assert not torch.equal(snapshots[0], snapshots[50])
