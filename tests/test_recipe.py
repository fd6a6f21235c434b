"""Sec. 4.2's training recipe as config: momentum (Nesterov too), L2 weight decay, dropout, a learning-rate schedule,
a weaker shuffle and image distortions; each checked where it acts, end to end through the real training code, and
its bad values through the real CLI."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import in_process_job, read_metrics, validated
from omegaconf import OmegaConf

from bnrepro.config import ConfigError
from bnrepro.data import MNIST
from bnrepro.data.base import random_shift
from bnrepro.interrupt import StopRequest
from bnrepro.models import MLP
from bnrepro.run.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from bnrepro.run.job import group_key, train
from bnrepro.training.batches import batch_order
from bnrepro.training.evaluation import Evaluator
from bnrepro.training.loop import LoopState, Member, train_loop
from bnrepro.training.optim import SGD, StackedSGD, build_optimizer, lr_schedule
from bnrepro.training.trainers import SingleTrainer

SHORT = ("train.steps=300", "train.eval_every=100", "train.progress=false", "wandb.mode=disabled")




# --- learning-rate schedules ----------------------------------------------------------------------------------------


def test_schedules_give_each_update_its_rate() -> None:
    assert lr_schedule(OmegaConf.create({"schedule": "constant", "gamma": 0.5})) is None
    exponential = lr_schedule(OmegaConf.create({"schedule": "exponential", "gamma": 0.5, "every": 100}))
    # the first `every` updates at the configured rate, then one factor of gamma per `every` updates
    assert [exponential(t) for t in (1, 100, 101, 200, 201, 1000, 1001)] == [1, 1, 0.5, 0.5, 0.25, 0.5 ** 9, 0.5 ** 10]
    step = lr_schedule(OmegaConf.create({"schedule": "step", "gamma": 0.1, "milestones": [100, 250]}))
    # after m updates (a milestone) the rate drops
    assert [step(t) for t in (1, 100, 101, 250, 251, 10_000)] == [1, 1, 0.1, 0.1, 0.1 ** 2, 0.1 ** 2]


# one run through the real CLI with every feature of the recipe on
RECIPE = ("model.bn=before", "optim.lr=0.5", "optim.momentum=0.9", "optim.nesterov=true", "optim.weight_decay=1e-4",
          "optim.schedule=exponential", "optim.gamma=0.5", "optim.every=100", "model.dropout=0.2", "data.augment=true",
          "data.shift=2", "train.shuffle=shards", "train.shard_size=600")


@pytest.fixture(scope="module")
def recipe_run(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("recipe") / "all"
    cli(*RECIPE, *SHORT, f"hydra.run.dir={run_dir}")
    return run_dir


def test_a_scheduled_run_logs_the_rate_of_each_update(recipe_run: Path) -> None:
    rows = read_metrics(recipe_run)
    assert [int(r["step"]) for r in rows] == [0, 100, 200, 300]
    assert list(rows[0])[:5] == ["step", "test_acc", "test_loss", "train_loss", "lr"]
    # the update of step t runs at 0.5 * 0.5 ** floor((t - 1) / 100); the step-0 row has the first update's rate
    assert [float(r["lr"]) for r in rows] == [0.5, 0.5, 0.25, 0.125]
    assert float(rows[-1]["test_acc"]) > 0.5  # it trains with all of the recipe on
    config = OmegaConf.load(recipe_run / ".hydra" / "config.yaml")
    assert (config.optim.weight_decay, config.optim.nesterov, config.optim.schedule, config.model.dropout,
            config.data.augment, config.train.shuffle) == (1e-4, True, "exponential", 0.2, True, "shards")


def test_augmentation_and_shuffle_reach_the_run(recipe_run: Path, data_root: Path, tmp_path: Path) -> None:
    """The same run without distortions, and with the epoch shuffle, each trains on other batches."""
    for override in ("data.augment=false", "train.shuffle=epoch"):
        job = in_process_job(tmp_path / override.replace("=", "_"), *RECIPE, override, *SHORT, f"data.root={data_root}")
        train([job])
        assert read_metrics(job.run_dir)[1]["train_loss"] != read_metrics(recipe_run)[1]["train_loss"], override


def test_stacked_models_follow_momentum_weight_decay_and_schedule_as_alone(data_root: Path, tmp_path: Path) -> None:
    common = ("optim.momentum=0.9", "optim.nesterov=true", "optim.weight_decay=1e-3", "optim.schedule=step",
              "optim.gamma=0.5", "optim.milestones=[150,250]", f"data.root={data_root}", *SHORT)
    settings = [("seed=0", "optim.lr=0.1"), ("seed=1", "optim.lr=0.5")]
    stacked = [in_process_job(tmp_path / f"stacked{i}", *common, *s) for i, s in enumerate(settings)]
    assert group_key(stacked[0]) is not None and group_key(stacked[0]) == group_key(stacked[1])
    train(stacked)
    for i, s in enumerate(settings):
        alone = in_process_job(tmp_path / f"alone{i}", *common, *s)
        train([alone])
        rows = read_metrics(alone.run_dir)
        assert (alone.run_dir / "metrics.csv").read_text() == (stacked[i].run_dir / "metrics.csv").read_text()
        lr = alone.cfg.optim.lr
        assert [float(r["lr"]) for r in rows] == [lr, lr, lr * 0.5, lr * 0.25]


# --- weight decay ----------------------------------------------------------------------------------------------------


def test_one_stacked_sgd_step_with_weight_decay_is_torch_sgd() -> None:
    lrs, shapes = [0.1, 0.5, 3.0], [(100, 784), (1, 100), (7, 13)]
    gen = torch.Generator().manual_seed(0)
    params = [[torch.randn(*s, generator=gen) for s in shapes] for _ in lrs]  # per model
    stacked = [torch.stack([p[i] for p in params]).requires_grad_() for i in range(len(shapes))]
    alone = [[p.clone().requires_grad_() for p in ps] for ps in params]
    optimizers = [torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=0.01, nesterov=True)
                  for ps, lr in zip(alone, lrs)]
    stacked_sgd = StackedSGD(stacked, lrs, momentum=0.9, weight_decay=0.01, nesterov=True)
    for _ in range(3):  # the first step creates the momentum buffers, the next ones use them
        grads = [torch.randn(len(lrs), *s, generator=gen) for s in shapes]
        for t, g in zip(stacked, grads):
            t.grad = g.clone()
        stacked_sgd.step()
        for k, (ps, opt) in enumerate(zip(alone, optimizers)):
            for p, g in zip(ps, grads):
                p.grad = g[k].clone()
            opt.step()
    for i in range(len(shapes)):
        for k, ps in enumerate(alone):
            assert torch.equal(stacked[i][k], ps[i])
    # and it is L2 decay: p - lr (g + wd p), up to the rounding of torch's fused multiply-add
    p, g = torch.randn(5, 5, generator=gen), torch.randn(5, 5, generator=gen)
    param = p.clone().requires_grad_()
    param.grad = g
    build_optimizer([param], OmegaConf.create({"lr": 0.1, "momentum": 0.0, "weight_decay": 0.01,
                                               "nesterov": False})).step()
    assert torch.allclose(param, p - 0.1 * (g + 0.01 * p), rtol=0, atol=1e-7) and not torch.equal(param, p - 0.1 * g)


@pytest.mark.parametrize("settings", [{"momentum": 0.0}, {"momentum": 0.9, "weight_decay": 0.01},
                                      {"momentum": 0.5, "weight_decay": 0.001, "nesterov": True}],
                         ids=["plain", "momentum_l2", "nesterov"])
def test_sgd_is_torch_sgd_bit_for_bit_and_their_checkpoints_load_into_each_other(settings: dict) -> None:
    shapes, gen = [(100, 784), (100,), (8, 1, 3, 3), (7, 13)], torch.Generator().manual_seed(1)
    start = [torch.randn(*s, generator=gen) for s in shapes]
    ours, theirs = ([p.clone().requires_grad_() for p in start] for _ in range(2))
    opt, oracle = SGD(ours, lr=0.3, **settings), torch.optim.SGD(theirs, lr=0.3, **settings)

    def steps(n: int, skip: int | None = None) -> None:
        for _ in range(n):
            grads = [torch.randn(*s, generator=gen) for s in shapes]
            for params in (ours, theirs):
                for i, (p, g) in enumerate(zip(params, grads)):
                    p.grad = None if i == skip else g.clone()  # a parameter without a gradient stays put
            opt.step()
            oracle.step()

    steps(3)
    steps(2, skip=1)
    for group in (*opt.param_groups, *oracle.param_groups):  # a schedule's change of rate
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * 0.5
    steps(2)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    saved, torch_saved = opt.state_dict(), oracle.state_dict()
    assert saved["param_groups"] == torch_saved["param_groups"]
    assert saved["state"].keys() == torch_saved["state"].keys()
    assert all(torch.equal(saved["state"][i][k], v) for i, s in torch_saved["state"].items() for k, v in s.items())
    # each resumes from the other's checkpoint and both go on as one
    opt_from_torch, torch_from_ours = SGD(ours, lr=1.0), torch.optim.SGD(theirs, lr=1.0, **settings)
    opt_from_torch.load_state_dict(torch_saved)
    torch_from_ours.load_state_dict(saved)
    opt, oracle = opt_from_torch, torch_from_ours
    assert opt.param_groups[0]["lr"] == 0.15 and oracle.param_groups[0]["initial_lr"] == 0.3
    steps(2)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    with pytest.raises(ValueError, match="different number"):
        SGD(ours[:2], lr=0.1).load_state_dict(saved)


def _images(n: int, seed: int, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """n (1, side, side) images with no zero pixel (so that any shift shows) and labels a small MLP can learn."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=gen) + 0.1
    return x, (x[:, 0, :, : side // 2].sum((1, 2)) > x[:, 0, :, side // 2:].sum((1, 2))).long()


def _loop(model: MLP, optimizer: torch.optim.Optimizer, members: list[Member], steps: int, **options) -> None:
    x, y = _images(240, 0)
    test_x, test_y = _images(60, 1)
    evaluator = Evaluator(model, test_x, test_y, unit=0, percentiles=[50.0])
    trainer = SingleTrainer(model, optimizer, x, y, evaluator)
    train_loop(trainer, members, steps=steps, batch_size=12, eval_every=10, max_loss=1e3, progress=False, **options)


def _small_mlp(seed: int, **settings) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=(1, 8, 8), num_classes=2, hidden=[16, 16], **settings)


def test_weight_decay_shrinks_the_weights() -> None:
    norms = {}
    for wd in (0.0, 0.01):
        model = _small_mlp(0)
        optimizer = build_optimizer(model.parameters(), OmegaConf.create(
            {"lr": 0.5, "momentum": 0.0, "weight_decay": wd, "nesterov": False}))
        _loop(model, optimizer, [Member(seed=0, on_row=lambda *_: None, on_checkpoint=None)], steps=200)
        norms[wd] = sum(p.square().sum() for name, p in model.named_parameters() if name.endswith("weight")).item()
    assert norms[0.01] < 0.8 * norms[0.0], norms


# --- dropout ---------------------------------------------------------------------------------------------------------


def test_dropout_acts_in_training_only_and_keeps_the_mlp_from_stacking() -> None:
    model, plain = _small_mlp(0, dropout=0.5), _small_mlp(0)
    x = _images(32, 2)[0].flatten(1)
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x)) and torch.equal(model(x), plain(x))  # off in eval mode
        model.train()
        plain.train()
        first, second = model(x), model(x)
        assert not torch.equal(first, second) and not torch.equal(first, plain(x))  # on in training
        assert torch.equal(plain(x), plain(x))  # and the only randomness there
    assert MLP.stackable(MLP.Config(dropout=0.5)) is False and MLP.stackable(MLP.Config()) is True


def test_jobs_with_dropout_or_augmentation_train_alone(tmp_path: Path) -> None:
    assert group_key(in_process_job(tmp_path / "plain")) is not None
    assert group_key(in_process_job(tmp_path / "dropout", "model.dropout=0.1")) is None
    assert group_key(in_process_job(tmp_path / "augment", "data.augment=true")) is None


# --- batch orders ----------------------------------------------------------------------------------------------------


def _epochs(shuffle: str, epochs: int = 3, **options) -> list[list[list[int]]]:
    """Each epoch's batches (sample indices) of 120 samples in batches of 6."""
    order = batch_order(shuffle, 120, 6, seed=3, device=torch.device("cpu"), **options)
    return [[order.batch(e * 20 + b + 1).tolist() for b in range(20)] for e in range(epochs)]


def test_fixed_order_repeats_its_batches_where_epoch_order_reshuffles() -> None:
    fixed, epoch = _epochs("fixed"), _epochs("epoch")
    assert fixed[0] == fixed[1] == fixed[2]
    assert epoch[0] != epoch[1] and epoch[1] != epoch[2]
    assert fixed[0] == epoch[0]  # the one permutation is the epoch order's first
    assert sorted(i for batch in fixed[0] for i in batch) == list(range(120))


def test_shards_keep_their_batches_and_reorder_them() -> None:
    epochs = _epochs("shards", shard_size=12)  # 10 shards of 2 batches each
    assert all(sorted(batches) == sorted(epochs[0]) for batches in epochs)  # the same batches every epoch
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # in another order
    # a shard's two batches stay next to each other
    pairs = {tuple(epochs[0][i]): epochs[0][i + 1] for i in range(0, 20, 2)}
    assert all(pairs[tuple(e[i])] == e[i + 1] for e in epochs for i in range(0, 20, 2))


@pytest.mark.parametrize("shuffle", ["epoch", "fixed", "shards"])
def test_an_order_restored_from_its_state_goes_on_with_the_same_batches(shuffle: str) -> None:
    def order():
        return batch_order(shuffle, 120, 6, seed=3, device=torch.device("cpu"), shard_size=12)

    original = order()
    for step in range(1, 28):  # into the second epoch
        original.batch(step)
    restored = order()
    restored.load(original.state())
    assert [restored.batch(s).tolist() for s in range(28, 70)] == [original.batch(s).tolist() for s in range(28, 70)]


# --- augmentation ----------------------------------------------------------------------------------------------------


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """image (C, H, W) moved down dy and right dx pixels, zeros filling in."""
    _, h, w = image.shape
    out = torch.zeros_like(image)
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_augmentation_shifts_each_image_by_at_most_shift_pixels() -> None:
    x = _images(64, 0, side=12)[0]
    dataset = MNIST(augment=True, shift=3)
    augmented = dataset.augment(x, torch.Generator().manual_seed(7))
    assert augmented.shape == x.shape and not torch.equal(augmented, x)
    moves = []
    for image, moved in zip(x, augmented):
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if torch.equal(_shifted(image, dy, dx), moved)]
        assert len(found) == 1  # each image is its original moved by at most 3 pixels along each axis
        moves.append(found[0])
    assert len(set(moves)) > 10  # each its own move
    assert torch.equal(dataset.augment(x, torch.Generator().manual_seed(7)), augmented)  # the same seed, the same
    assert not torch.equal(random_shift(x, 3, torch.Generator().manual_seed(8)), augmented)


# --- resume ----------------------------------------------------------------------------------------------------------


def _comparable(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: repr(v) for k, v in row.items()} for row in rows]  # NaN (step 0's train_loss) equal to itself


def test_resume_with_dropout_augmentation_shards_and_schedule_is_bit_identical(tmp_path: Path) -> None:
    """A run stopped mid-way (as SIGTERM stops it) and resumed from its checkpoint ends as the uninterrupted run,
    though dropout and noisy BN's noise (torch's global RNG), the distortions (their own generator), the shard order
    and the schedule all draw or change along the way."""
    optim = OmegaConf.create({"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": False,
                              "schedule": "exponential", "gamma": 0.5, "every": 30})
    options = {"shuffle": "shards", "shard_size": 36, "lr_scale": lr_schedule(optim),
               "augment": MNIST(augment=True, shift=2).augment}

    def start() -> tuple[MLP, torch.optim.Optimizer]:
        model = _small_mlp(5, dropout=0.3, bn="before", bn_noise=True)  # a run's start: its seed, then its constructor
        return model, build_optimizer(model.parameters(), optim)

    model, optimizer = start()
    rows: list[dict] = []
    _loop(model, optimizer, [Member(seed=5, on_row=lambda s, row, taps: rows.append(row), on_checkpoint=None)],
          steps=100, **options)

    stop = StopRequest()
    first, second = start()
    resumed_rows: list[dict] = []

    def on_row(step: int, row: dict, taps: dict) -> None:
        resumed_rows.append(row)
        if step == 40:
            stop.signum = signal.SIGTERM  # the loop stops before step 41 and checkpoints

    def on_checkpoint(state: LoopState) -> None:
        save_checkpoint(tmp_path, first, second, state, resumed_rows, digest="test", bn_path="none")

    _loop(first, second, [Member(seed=5, on_row=on_row, on_checkpoint=on_checkpoint)], steps=100, stop=stop,
          **options)
    model_b, optimizer_b = start()
    state, saved_rows = load_checkpoint(read_checkpoint(tmp_path), model_b, optimizer_b)
    assert state.step == 40 and state.augment is not None and len(saved_rows) == 5
    _loop(model_b, optimizer_b, [Member(seed=5, on_row=lambda s, row, taps: saved_rows.append(row),
                                        on_checkpoint=None, state=state, fresh=False)], steps=100, **options)
    assert _comparable(saved_rows) == _comparable(rows)
    assert [float(r["lr"]) for r in rows[::3]] == [0.5, 0.5, 0.25, 0.125]  # steps 0, 30, 60, 90
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model_b.state_dict().values()))


# --- bad values ------------------------------------------------------------------------------------------------------


BAD = [
    ("optim.weight_decay=-0.1", "optim.weight_decay"), ("optim.nesterov=true", "optim.nesterov"),
    ("optim.schedule=cosine", "optim.schedule"), ("optim.gamma=0", "optim.gamma"), ("optim.every=0", "optim.every"),
    ("optim.milestones=[200,100]", "optim.milestones"), ("optim.schedule=step", "optim.milestones"),
    ("model.dropout=1.0", "model.dropout"), ("train.shuffle=never", "train.shuffle"),
    ("train.shard_size=0", "train.shard_size"), ("data.shift=0", "data.shift"),
    ("data.augment=true data.shift=28", "data.shift"),
    ("model.bn=before model.bn_ghost=7", "model.bn_ghost"),  # 7 does not divide the batch of 60
]


@pytest.mark.parametrize("overrides, key", BAD)
def test_bad_recipe_value_is_refused_naming_key_and_value(overrides: str, key: str) -> None:
    # validate's one line; the CLI's exit 2 before any training is test_train_cli's, for every kind of key
    with pytest.raises(ConfigError) as e:
        validated(*overrides.split())
    message = str(e.value)
    assert f"{key}=" in message and "allowed" in message and "\n" not in message

