"""The ics and landscape report sections (bnrepro/report/sections/ics.py, landscape.py) on tiny in-process runs of
both probes: every section, figure and verdict present, the verdicts recomputed from the runs' own metrics."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import in_process_job, read_metrics
from omegaconf import OmegaConf

from bnrepro.report import claims
from bnrepro.report.build import build_report
from bnrepro.report.sections._probed import parts_claim
from bnrepro.report.stats import Interval, difference
from bnrepro.run.job import train

TINY = ("probes=[ics,landscape]", "probes.ics.every=10", "probes.landscape.every=10", "probes.landscape.points=2",
        "model.hidden=[16,16]", "train.steps=30", "train.eval_every=30", "train.progress=false")
LRS = (0.5, 2.0)


@pytest.fixture(scope="module")
def report(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Without and with BN at two learning rates, two seeds each: the landscape experiment's design in miniature."""
    runs = tmp_path_factory.mktemp("probed") / "runs"
    for bn in ("none", "before"):
        for lr in LRS:
            for seed in (0, 1):
                job = in_process_job(runs / f"{bn}_{lr}_{seed}", *TINY, f"model.bn={bn}", f"optim.lr={lr}",
                                     f"seed={seed}", f"data.root={data_root}")
                train([job])
                # what the CLI records of a run (bnrepro.run.checkpoint.record_hydra_files), for the report's loader
                (job.run_dir / ".hydra").mkdir()
                (job.run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job.cfg))
    out = runs.parent / "report"
    return runs, build_report([runs], out, base_lr=LRS[0], formats=("png",))


def _medians(runs: Path, pattern: str, column: str) -> list[float]:
    return [statistics.median(float(r[column]) for r in read_metrics(d) if r[column] and int(r["step"]) > 0)
            for d in sorted(runs.glob(pattern))]


def test_both_sections_make_their_figures_and_verdicts(report: tuple[Path, Path]) -> None:
    runs, path = report
    text = path.read_text()
    for title, stem in (("Internal covariate shift per layer (Santurkar et al. Definition 2.1; MLP on MNIST)",
                         "ics_per_layer"),
                        ("The loss landscape along the gradient (Santurkar et al. Sec. 3.2; MLP on MNIST)",
                         "landscape")):
        assert title in text
        assert (path.parent / f"{stem}.png").stat().st_size > 0 and not (path.parent / f"{stem}.pdf").exists()
    found = json.loads((path.parent / "numbers.json").read_text())["claims"]
    santurkar = [c for c in found if c["where"].startswith("Santurkar")]
    assert len(santurkar) == 4 and all(c["verdict"] in claims.VERDICTS for c in santurkar)
    # the ICS claim at the base lr: the second layer's ||G - G'|| interval is the runs' medians' Welch interval
    ics = next(c for c in santurkar if "ICS" in c["claim"])
    iv = difference(_medians(runs, f"before_{LRS[0]}_*", "ics/l2/h2"), _medians(runs, f"none_{LRS[0]}_*", "ics/l2/h2"))
    assert f"h2 ||G - G'||: {iv.points(1.0, 3)}" in ics["found"]
    beta = next(c for c in santurkar if "beta" in c["claim"])
    assert beta["found"].count("lr ") == len(LRS)  # one part per learning rate


def test_a_claim_in_parts_holds_only_where_every_part_is_beyond_the_spread() -> None:
    above, inside, below = Interval(1, 0.5, 1.5), Interval(0, -1, 1), Interval(-1, -1.5, -0.5)

    def verdict(*parts: Interval | None) -> str:
        named = [(f"part {i}", iv) for i, iv in enumerate(parts)]
        return parts_claim("where", "quote", "claim", named, "above", "rule", "").verdict

    assert verdict(above, above) == claims.REPRODUCED
    assert verdict(above, inside) == verdict(above, None) == claims.PARTLY
    assert verdict(inside, below) == claims.NOT_REPRODUCED
    assert verdict(inside, inside) == claims.INCONCLUSIVE
    assert verdict(None) == claims.UNTESTABLE
    assert not math.isnan(above.estimate)
