"""The noisy-BN and lp-normalisation report sections (bnrepro/report/sections/noisy_bn.py, lp_norms.py) on one tiny
run set trained in this process (every configuration of experiment=noisy_bn and lp_norms, 2 seeds): each table cell
and verdict recomputed here from the runs' own files, and the non-inferiority rule on made-up numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import in_process_job, read_metrics
from omegaconf import OmegaConf

from bnrepro.report import claims
from bnrepro.report.build import build_report
from bnrepro.report.load import CONFIG
from bnrepro.report.stats import difference
from bnrepro.report.thresholds import AS_WELL_MARGIN
from bnrepro.run.job import train

RECIPES = {"no_norm": "no BN", "batch_norm": "BN", "noisy_bn": "noisy BN", "noise_no_bn": "noise without BN",
           "l1_norm": "l1 norm", "l2_norm": "l2 norm", "linf_norm": "linf norm"}
TINY = ("name=norms", "train.steps=20", "train.eval_every=10", "tracking.test_samples=200", "train.progress=false",
        "model.hidden=[16,16]", "probes=[train_acts]", "probes.train_acts.every=5")


@pytest.fixture(scope="module")
def report(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("norms")
    for recipe in RECIPES:
        for seed in (0, 1):
            job = in_process_job(root / "runs" / f"{recipe}-{seed}", f"recipe={recipe}", f"seed={seed}",
                                 f"data.root={data_root}", *TINY)
            (job.run_dir / CONFIG).parent.mkdir()
            OmegaConf.save(job.cfg, job.run_dir / CONFIG)  # what Hydra writes for a run from the command line
            train([job])
    out = build_report([root / "runs"], root / "report", formats=("png",)).parent
    return root / "runs", json.loads((out / "numbers.json").read_text())


def _runs(root: Path, recipe: str) -> list[Path]:
    return [root / f"{recipe}-{seed}" for seed in (0, 1)]


def _acc(run: Path, step: int | None = None) -> float:
    rows = [r for r in read_metrics(run) if r["test_acc"]]
    return float(rows[-1]["test_acc"] if step is None else next(r for r in rows if int(r["step"]) == step)["test_acc"])


def _non_inferior(a: list[float], b: list[float]) -> str:
    iv = difference(a, b)
    return "reproduced" if iv.low > -AS_WELL_MARGIN else "not reproduced" if iv.high < -AS_WELL_MARGIN else \
        "inconclusive"


def test_the_noisy_bn_section_has_its_figures_table_and_verdicts(report: tuple[Path, dict]) -> None:
    runs, numbers = report
    out = runs.parent / "report"
    assert (out / "noisy_bn_accuracy.png").stat().st_size and (out / "noisy_bn_percentiles.png").stat().st_size
    table = {r["configuration"]: r for r in numbers["tables"]["Noisy BN: MLP on MNIST"]}
    assert list(table) == ["no BN", "BN", "noisy BN", "noise without BN"]  # the lp runs stay out
    for recipe in ("no_norm", "batch_norm", "noisy_bn", "noise_no_bn"):
        finals = [_acc(r) for r in _runs(runs, recipe)]
        assert table[RECIPES[recipe]]["final mean (%)"] == f"{100 * sum(finals) / 2:.2f}"
    found = {c["claim"]: c for c in numbers["claims"] if c["where"].startswith("Santurkar et al. 2018, Sec. 2.1")}
    as_well = found["noisy BN loses no more than the margin to BN, early and at the end"]
    parts = [_non_inferior([_acc(r, step) for r in _runs(runs, "noisy_bn")],
                           [_acc(r, step) for r in _runs(runs, "batch_norm")])
             for step in (10, None)]  # the first evaluation at 20% of training or later, and the last
    assert as_well["verdict"] == ("reproduced" if parts == ["reproduced"] * 2 else "partly reproduced"
                                  if "reproduced" in parts else "not reproduced" if "not reproduced" in parts
                                  else "inconclusive")
    slows = next(c for claim, c in found.items() if claim.startswith("the noise slows"))
    iv = difference([_acc(r, 10) for r in _runs(runs, "no_norm")], [_acc(r, 10) for r in _runs(runs, "noise_no_bn")])
    assert slows["verdict"] == {"above": "reproduced", "below": "not reproduced", "inside": "inconclusive"}[iv.side()]
    assert iv.points() in slows["found"] and as_well["paraphrased"] and slows["paraphrased"]
    # the training-mode percentiles (train_acts probe): each run's drift of its median, noisy BN against no BN
    assert (out / "noisy_bn_train_percentiles.png").stat().st_size
    stability = next(c for claim, c in found.items() if claim.startswith("noisy BN's tracked units drift more"))
    drifts = {recipe: [max(m) - min(m) for m in ([float(r["train_act/h1/p50"]) for r in read_metrics(run)
                                                  if r["train_act/h1/p50"]] for run in _runs(runs, recipe))]
              for recipe in ("noisy_bn", "no_norm")}
    h1 = difference(drifts["noisy_bn"], drifts["no_norm"])
    assert f"h1 median: {h1.points(1.0, 3)}" in stability["found"] and stability["verdict"] in claims.VERDICTS


def test_the_lp_section_has_one_verdict_per_norm_from_the_runs(report: tuple[Path, dict]) -> None:
    runs, numbers = report
    table = {r["configuration"]: r for r in numbers["tables"]["lp normalisation: MLP on MNIST"]}
    assert list(table) == ["no BN", "BN", "l1 norm", "l2 norm", "linf norm"]
    bn = [_acc(r) for r in _runs(runs, "batch_norm")]
    found = [c for c in numbers["claims"] if c["where"] == "Santurkar et al. 2018, Sec. 4"]
    assert len(found) == 3
    for claim, recipe in zip(found, ("l1_norm", "l2_norm", "linf_norm"), strict=True):
        finals = [_acc(r) for r in _runs(runs, recipe)]
        assert table[RECIPES[recipe]]["- BN (points, Welch)"] == difference(finals, bn).points()
        assert claim["verdict"] == _non_inferior(finals, bn), claim


@pytest.mark.parametrize("values, verdict", [
    ([0.970, 0.971, 0.972], "reproduced"),  # within a tenth of a point of the reference
    ([0.950, 0.951, 0.952], "not reproduced"),  # two points below, beyond the spread
    ([0.960, 0.975, 0.990], "inconclusive"),  # spread too wide to tell
])
def test_as_well_as_is_non_inferiority_by_the_named_margin(values: list[float], verdict: str) -> None:
    claim = claims.as_well_as("here", "quote", "new", "BN", values, [0.970, 0.9705, 0.9715], "claim")
    assert claim.verdict == verdict and f"{100 * AS_WELL_MARGIN:.2g} points" in claim.rule
