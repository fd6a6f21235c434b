"""BN's dependence on the batch, as run settings: class-clustered (non-i.i.d.) batches, Batch Renormalization in the
networks (model.norm=brn), and BN's inference statistics measured at every evaluation (precise statistics, each
test batch's own, the train/eval gap)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import in_process_job, read_metrics, validated

from bnrepro import nn as bnn
from bnrepro.config import ConfigError
from bnrepro.models import MLP
from bnrepro.run.job import group_key, train
from bnrepro.training.batches import ClassClusteredOrder, batch_order
from bnrepro.training.bn_inference import batch_statistics, norm_layers, precise_statistics

SHORT = ("train.steps=200", "train.eval_every=100", "train.progress=false", "wandb.mode=disabled")




# --- class-clustered batches ----------------------------------------------------------------------------------------


def test_class_clustered_batches_hold_at_most_k_classes_and_an_epoch_sees_each_sample_at_most_once() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (997,), generator=gen)  # uneven class sizes
    order = _clustered(labels)
    assert isinstance(order, ClassClusteredOrder)
    per_class = torch.bincount(labels, minlength=10)
    assert order.steps_per_epoch == int((per_class // 4).sum()) // 3
    for epoch in range(2):
        seen = torch.cat([order.batch(epoch * order.steps_per_epoch + t + 1)
                          for t in range(order.steps_per_epoch)])
        assert len(seen.unique()) == len(seen)  # no sample twice in an epoch
        assert len(seen) >= len(labels) - 10 * 4 - 3 * 4  # only partial shards and left-over shards sit out
        for batch in seen.split(12):
            counts = torch.bincount(labels[batch], minlength=10)
            assert (counts > 0).sum() <= 3 and (counts % 4 == 0).all()  # whole shards of 12 / 3 samples
    # classes meet at random: not always the same groups
    groups = {tuple(labels[b].unique().tolist()) for b in seen.split(12)}
    assert len(groups) > 10
    # the same seed gives the same batches; a checkpointed order goes on as the uninterrupted one
    again, fresh = _clustered(labels), _clustered(labels)
    for t in range(1, 40):
        assert torch.equal(again.batch(t), fresh.batch(t))
    resumed = _clustered(labels)
    resumed.load(again.state())
    assert torch.equal(resumed.batch(40), again.batch(40))


def _clustered(labels: torch.Tensor) -> ClassClusteredOrder:
    """Batches of 12 from 3 classes each, seed 5."""
    return batch_order("epoch", len(labels), 12, seed=5, device=torch.device("cpu"), batching="class_clustered",
                       labels=labels, batch_classes=3)


# --- configuration ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, key, allowed", [
    ("train.batching=sorted", "train.batching", "iid"),
    ("train.batching=class_clustered train.shuffle=shards", "train.shuffle", "epoch with train.batching"),
    ("train.batching=class_clustered train.batch_classes=7", "train.batch_classes", "a divisor of"),
    ("train.batching=class_clustered train.batch_classes=11 train.batch_size=66", "train.batch_classes", "10 classes"),
    ("model.norm=brn", "model.norm", "bn before or after"),  # the default network has no BN
    ("model.norm=layer", "model.norm", "brn"),
    ("model.bn=before model.norm=brn model.bn_ghost=10", "model.norm", "no bn_ghost"),
    ("model.bn=before model.norm=brn model.bn_impl=torch", "model.norm", "bn_impl=bnrepro"),
    ("model.bn=before model.norm=brn model.brn_r_max=0.5", "model.brn_r_max", "r_max >= 1"),
    ("model.bn=before model.norm=brn model.brn_d_max=-1", "model.brn_d_max", "d_max >= 0"),
    ("model.bn=before model.brn_warmup_steps=50000", "model.brn_r_max_steps", ">= brn_warmup_steps (50000)"),
    ("model.bn=before tracking.precise_bn_batches=1001", "tracking.precise_bn_batches", "60000 training samples"),
    ("model.bn=before tracking.gap_samples=10", "tracking.gap_samples", "from train.batch_size (60)"),
    ("train.epochs=0", "train.epochs", "a positive number of epochs"),
    ("train.eval_every_epochs=-1", "train.eval_every_epochs", "a positive number of epochs"),
    ("optim.lr_scaling=cubic", "optim.lr_scaling", "sqrt"),
    ("optim.base_batch_size=0", "optim.base_batch_size", "a positive integer"),
])
def test_bad_values_are_refused_naming_key_value_and_what_is_allowed(overrides: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as e:
        validated(*overrides.split())
    message = str(e.value)
    assert f"{key}=" in message and allowed in message and "\n" not in message


def test_brn_and_bn_measurements_train_alone_class_clustered_batches_stack(tmp_path: Path) -> None:
    assert group_key(in_process_job(tmp_path / "a", "model.bn=before", "train.batching=class_clustered")) is not None
    assert group_key(in_process_job(tmp_path / "b", "model.bn=before", "model.norm=brn")) is None
    assert group_key(in_process_job(tmp_path / "c", "model.bn=before", "tracking.gap_samples=600")) is None
    assert group_key(in_process_job(tmp_path / "d", "model.bn=before", "tracking.batch_stats_eval=true")) is None
    net = MLP(bn="before", norm="brn", brn_r_max=2.0)
    assert {type(m) for m in net.modules() if isinstance(m, bnn.BatchNorm1d)} == {bnn.BatchRenorm1d}
    assert all(m.r_max == 2.0 and m.warmup_steps == 5000 for m in net.modules() if isinstance(m, bnn.BatchRenorm1d))


def test_epochs_decide_steps_and_evaluations_and_the_rate_scales_with_the_batch() -> None:
    from bnrepro.training.optim import effective_lr

    for batch, steps, every in ((2, 45_000, 7500), (60, 1500, 250), (1024, 87, 14)):  # 60000 // batch steps an epoch
        cfg = validated("train.epochs=1.5", "train.eval_every_epochs=0.25", f"train.batch_size={batch}")
        assert (cfg.train.steps, cfg.train.eval_every) == (steps, every)
        assert validated(*(f"train.{k}={v}" for k, v in cfg.train.items() if k in ("steps", "eval_every")),
                         f"train.batch_size={batch}").train.steps == steps  # idempotent: what a run folder records
        for scaling, factor in (("constant", 1.0), ("linear", batch / 60), ("sqrt", math.sqrt(batch / 60))):
            optim = validated(f"optim.lr_scaling={scaling}", "optim.lr=0.3").optim
            assert effective_lr(optim, batch) == pytest.approx(0.3 * factor)
    assert effective_lr(validated("optim.lr_scaling=sqrt", "optim.lr=0.3").optim, 60) == 0.3  # exactly, at the base
    # the batch-size study: every batch size gets the same 3 epochs, the rate sqrt-scaled from the paper's batch
    study = validated("experiment=batch_size", "recipe=batch_renorm", "train.batch_size=4")
    assert study.train.steps == 45_000 and study.variant == "BRN" and study.model.norm == "brn"
    assert effective_lr(study.optim, 4) == pytest.approx(5.0 * math.sqrt(4 / 60))


# --- BN's inference statistics ---------------------------------------------------------------------------------------


def test_precise_statistics_are_the_mean_of_the_chosen_batches_statistics() -> None:
    torch.manual_seed(0)
    net = MLP(bn="before", hidden=[16, 8])
    gen = torch.Generator().manual_seed(1)
    batches = [torch.rand(20, 784, generator=gen) for _ in range(4)]
    before = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norm_layers(net)]
    stats = precise_statistics(net, batches)
    # by hand: the first BN layer's input is the first linear layer's output on each batch
    z = [torch.nn.functional.linear(x, net.hidden[0].linear.weight, net.hidden[0].linear.bias) for x in batches]
    assert torch.allclose(stats[0][0], torch.stack([b.mean(0) for b in z]).mean(0), atol=1e-6)
    assert torch.allclose(stats[0][1], torch.stack([b.var(0, unbiased=True) for b in z]).mean(0), atol=1e-6)
    # the second's input comes from the first normalised by each batch's own statistics
    layer = net.hidden[0].norm
    a = [torch.sigmoid(torch.nn.functional.batch_norm(b, None, None, layer.weight, layer.bias, True, 0.0, layer.eps))
         for b in z]
    z2 = [torch.nn.functional.linear(x, net.hidden[1].linear.weight, net.hidden[1].linear.bias) for x in a]
    assert torch.allclose(stats[1][0], torch.stack([b.mean(0) for b in z2]).mean(0), atol=1e-5)
    assert torch.allclose(stats[1][1], torch.stack([b.var(0) for b in z2]).mean(0), atol=1e-5)
    # nothing the layers keep moved, and their modes are back
    for m, (mean, var, count) in zip(norm_layers(net), before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert torch.equal(m.num_batches_tracked, count) and m.training and m.track_running_stats


def test_batch_statistics_normalise_by_the_batch_and_move_nothing() -> None:
    torch.manual_seed(0)
    net = MLP(bn="before", hidden=[16, 8], dropout=0.5)
    x = torch.rand(30, 784)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    with batch_statistics(net):
        assert not net.training and all(m.training for m in norm_layers(net))
        out = net(x)
        again = net(x)
    assert torch.equal(out, again)  # dropout off: the same output twice, no random number drawn
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    net.train()
    # the same as a training step's forward without dropout, and different from inference with running statistics
    net.cfg.dropout = 0.0
    assert torch.allclose(out, net(x), atol=1e-6)
    net.eval()
    assert not torch.allclose(out, net(x), atol=1e-3)


@pytest.fixture(scope="module")
def measured(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """BRN on class-clustered batches, with and without every BN inference measurement: one real run each."""
    root = tmp_path_factory.mktemp("measured")
    common = ("model.bn=before", "model.norm=brn", "model.brn_warmup_steps=50", "model.brn_r_max_steps=150",
              "model.brn_d_max_steps=100", "train.batching=class_clustered", "train.batch_classes=2", "optim.lr=0.5",
              f"data.root={data_root}", *SHORT)
    plain = in_process_job(root / "plain", *common)
    probed = in_process_job(root / "probed", *common, "tracking.precise_bn_batches=10",
                            "tracking.batch_stats_eval=true", "tracking.gap_samples=600")
    train([plain])
    train([probed])
    return plain.run_dir, probed.run_dir


def test_measurements_add_their_columns_and_leave_the_run_bit_for_bit(measured: tuple[Path, Path]) -> None:
    plain, probed = (read_metrics(d) for d in measured)
    assert [r["step"] for r in plain] == ["0", "100", "200"]
    extra = ["test_acc_precise", "test_loss_precise", "test_acc_batch", "test_loss_batch", "train_acc",
             "train_acc_batch", "train_eval_gap"]
    assert list(probed[0]) == [*list(plain[0])[:3], *extra, *list(plain[0])[3:]]
    for a, b in zip(plain, probed):
        assert all(a[k] == b[k] for k in a)  # every column of the run without them, to the last digit
        values = {k: float(b[k]) for k in extra}
        assert all(0 <= values[k] <= 1 for k in extra if "acc" in k) and math.isfinite(values["test_loss_batch"])
        assert values["train_eval_gap"] == pytest.approx(values["train_acc_batch"] - values["train_acc"])
    # after training, the inference statistics give a trained network, whichever of the three
    last = {k: float(probed[-1][k]) for k in ("test_acc", "test_acc_precise", "test_acc_batch")}
    assert all(v > 0.5 for v in last.values()), last
