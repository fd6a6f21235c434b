"""Sec. 3.3's scale invariance, measured on trained networks.

The paper: BN(W u) = BN((aW) u) for a scalar a, so d BN((aW)u)/du = d BN(Wu)/du and
d BN((aW)u)/d(aW) = (1/a) d BN(Wu)/dW. Run folders keep no weights, so this check trains the paper's MLP
itself (the default config's init, learning rate and batch size; plain SGD on shuffled epochs, as bnrepro-train
does), with BN before each sigmoid and without BN, and at chosen steps replaces one hidden layer's weight W by
aW (a = 0.5, 2, 10) on a training batch, BN in training mode (batch statistics, the regime the paper's
gradients are about). It measures, relative to a = 1:
- the layer's output, the input to its activation (with BN the BN output);
- the gradient of the loss w.r.t. the layer's input u: back-propagation through the layer;
- a times the gradient w.r.t. the scaled weight aW against the gradient w.r.t. W;
and the ratio of the two weight-gradient norms, 1/a in the paper. Without BN nothing is invariant, which is
the contrast: the same numbers for the network without BN are of order one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from matplotlib.figure import Figure
from torch import Tensor

from bnrepro.models.mlp import MLP, mlp_forward
from bnrepro.report import claims
from bnrepro.report.thresholds import SCALE_TOLERANCE
from bnrepro.training.optim import SGD

FACTORS = (0.5, 2.0, 10.0)
NETWORKS = {"BN": "before", "no BN": "none"}
QUANTITIES = ("output", "input_grad", "weight_grad")


@dataclass
class Deviation:
    network: str  # "BN" (before each sigmoid) or "no BN"
    seed: int
    step: int  # training steps taken before the measurement
    layer: str  # h1, h2, ...
    factor: float  # a
    output: float  # ||z(aW) - z(W)|| / ||z(W)||, z the input to the layer's activation
    input_grad: float  # ||dL/du at aW - dL/du at W|| / ||dL/du at W||
    weight_grad: float  # ||a dL/d(aW) - dL/dW|| / ||dL/dW||
    grad_ratio: float  # ||dL/d(aW)|| / ||dL/dW||: 1/a with BN


def default_settings() -> dict[str, Any]:
    """The packaged default config's init, learning rate and batch size: what bnrepro-train trains with."""
    conf = resources.files("bnrepro.conf")
    model = yaml.safe_load((conf / "model" / "mlp.yaml").read_text())
    optim = yaml.safe_load((conf / "optim" / "sgd.yaml").read_text())
    train = yaml.safe_load((conf / "train" / "default.yaml").read_text())
    return {"init_std": float(model["init_std"]), "lr": float(optim["lr"]), "batch_size": int(train["batch_size"])}


def _relative(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _pass(model: MLP, x: Tensor, y: Tensor, layer: int, factor: float) -> tuple[Tensor, Tensor, Tensor]:
    """(the layer's activation input, dL/du, dL/d(aW)) with hidden layer `layer`'s weight replaced by aW.

    BN layers are copies, so their running statistics stay as training left them.
    """
    weight = model.hidden[layer].linear.weight
    scaled = (weight.detach() * factor).requires_grad_(True)
    inputs: list[Tensor] = []

    def linear(u: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        if w is weight:
            u = u.detach().requires_grad_(True)
            inputs.append(u)
            w = scaled
        return F.linear(u, w, bias)

    norms = [copy.deepcopy(h.norm) for h in model.hidden]
    layers = [(h.linear.weight, h.linear.bias, norm) for h, norm in zip(model.hidden, norms, strict=True)]
    taps: list[Tensor] = []
    logits = mlp_forward(x, layers, (model.out.weight, model.out.bias), linear, model.act, model.bn_before, taps,
                         None)
    grad_u, grad_w = torch.autograd.grad(F.cross_entropy(logits, y), [inputs[0], scaled])
    return taps[layer].detach(), grad_u, grad_w


def measure(model: MLP, x: Tensor, y: Tensor, factors: Sequence[float] = FACTORS) -> list[dict[str, float | str]]:
    """One row per (hidden layer, factor): the relative deviations listed in the module docstring."""
    model.train()
    rows: list[dict[str, float | str]] = []
    for layer, name in enumerate(model.tap_names):
        z1, gu1, gw1 = _pass(model, x, y, layer, 1.0)
        for a in factors:
            z, gu, gw = _pass(model, x, y, layer, a)
            rows.append({"layer": name, "factor": a, "output": _relative(z, z1), "input_grad": _relative(gu, gu1),
                         "weight_grad": _relative(a * gw, gw1),
                         "grad_ratio": float(torch.linalg.vector_norm(gw) / torch.linalg.vector_norm(gw1))})
    return rows


def train(bn: str, seed: int, steps: Sequence[int], train_x: Tensor, train_y: Tensor, settings: dict[str, Any],
          ) -> Iterator[tuple[int, MLP]]:
    """The paper's MLP trained with plain SGD on shuffled epochs; yields (step, model) at each of `steps`."""
    torch.manual_seed(seed)
    model = MLP(bn=bn, init_std=settings["init_std"])
    x = model.prepare_inputs(train_x, evaluation=False)
    optimizer = SGD(model.parameters(), lr=settings["lr"])
    order = torch.Generator().manual_seed(seed)
    batch, perm, at = settings["batch_size"], torch.randperm(len(train_y), generator=order), 0
    model.train()
    for step in range(max(steps) + 1):
        if step in steps:
            yield step, model
        if step == max(steps):
            return
        if at + batch > len(perm):
            perm, at = torch.randperm(len(train_y), generator=order), 0
        idx = perm[at:at + batch]
        at += batch
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), train_y[idx]).backward()
        optimizer.step()


def run(train_x: Tensor, train_y: Tensor, seeds: Sequence[int], steps: Sequence[int], batches: int = 5,
        factors: Sequence[float] = FACTORS, settings: dict[str, Any] | None = None) -> list[Deviation]:
    """Train each network on each seed and measure at each step: the largest deviation over `batches` fixed
    training batches, per layer and factor."""
    settings = settings or default_settings()
    pick = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(12345))
    batch = settings["batch_size"]
    probes = [pick[i * batch:(i + 1) * batch] for i in range(batches)]
    out = []
    for network, bn in NETWORKS.items():
        for seed in seeds:
            for step, model in train(bn, seed, steps, train_x, train_y, settings):
                x = model.prepare_inputs(train_x, evaluation=False)
                per_batch = [measure(model, x[idx], train_y[idx], factors) for idx in probes]
                for i, row in enumerate(per_batch[0]):
                    worst = {q: max(float(b[i][q]) for b in per_batch) for q in QUANTITIES}
                    ratio = sum(float(b[i]["grad_ratio"]) for b in per_batch) / len(per_batch)
                    out.append(Deviation(network, seed, step, str(row["layer"]), float(row["factor"]), **worst,
                                         grad_ratio=ratio))
    return out


def claim(rows: list[Deviation]) -> claims.Claim:
    """Sec. 3.3 on these measurements: invariant with BN to SCALE_TOLERANCE, and not invariant without BN."""
    where, quote = "Sec. 3.3", claims.QUOTES["scale"]
    what = ("with BN, scaling a layer's weights by a leaves its output and the gradient reaching its input "
            "unchanged and scales its weight gradient by 1/a; without BN it does not")
    rule = (f"reproduced only if every BN deviation (output, input gradient, a x weight gradient; every layer, "
            f"factor, seed and step) is at most thresholds.SCALE_TOLERANCE ({SCALE_TOLERANCE:g}) relative, and "
            "every deviation of the network without BN after training exceeds it")
    bn = [r for r in rows if r.network == "BN"]
    base = [r for r in rows if r.network == "no BN" and r.step > 0]
    if not bn:
        return claims.untestable(where, quote, what, "measurements with BN")
    worst = max(max(getattr(r, q) for q in QUANTITIES) for r in bn)
    ratio_dev = max(abs(r.grad_ratio * r.factor - 1) for r in bn)
    found = (f"with BN the largest relative deviation is {worst:.1e} over {len(bn)} layer x factor x seed x step "
             f"measurements, and ||dL/d(aW)|| / ||dL/dW|| is 1/a to {ratio_dev:.1e}")
    if worst > SCALE_TOLERANCE:
        return claims.Claim(where, quote, what, found, claims.NOT_REPRODUCED, rule)
    if not base:
        return claims.Claim(where, quote, what, found + ". The BN part holds; there is no trained network without "
                            "BN to contrast with", claims.PARTLY, rule)
    # the smallest of each measurement's largest deviation: any invariant quantity without BN would show here
    least = min(max(r.input_grad, r.weight_grad) for r in base)
    found += f"; without BN the smallest gradient deviation is {least:.2f}"
    if least > SCALE_TOLERANCE:
        return claims.Claim(where, quote, what, found, claims.REPRODUCED, rule)
    return claims.Claim(where, quote, what, found + ". The BN part holds, but some layer without BN is as invariant",
                        claims.PARTLY, rule)


def table(rows: list[Deviation]) -> pd.DataFrame:
    """Per network, step, layer and factor: the largest deviation over seeds, the mean gradient ratio."""
    df = pd.DataFrame([asdict(r) for r in rows])
    agg = df.groupby(["network", "step", "layer", "factor"], sort=False).agg(
        output=("output", "max"), input_grad=("input_grad", "max"), weight_grad=("weight_grad", "max"),
        grad_ratio=("grad_ratio", "mean"))
    return agg.reset_index()


def figure(rows: list[Deviation]) -> Figure:
    """||dL/d(aW)|| / ||dL/dW|| against a, per network, at the last step, with the paper's 1/a."""
    df = pd.DataFrame([asdict(r) for r in rows])
    last = df[df["step"] == df["step"].max()]
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    factors = sorted(last["factor"].unique())
    ax.plot(factors, [1 / a for a in factors], "k:", label="1/a (Sec. 3.3)")
    for (network, layer), g in last.groupby(["network", "layer"]):
        mean = g.groupby("factor")["grad_ratio"].mean()
        ax.plot(mean.index, mean.to_numpy(), "o-" if network == "BN" else "x--", label=f"{network}, {layer}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight scale a")
    ax.set_ylabel("||dL/d(aW)|| / ||dL/dW||")
    ax.set_title(f"Weight-gradient scale after {int(last['step'].max())} steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def fmt(x: float) -> str:
    return f"{x:.1e}" if x < 0.01 else f"{x:.3f}"

