"""Noisy BN (Santurkar et al. 2018, Sec. 2.1 and Algorithm 1; experiment=noisy_bn): the network without BN, with BN,
with BN followed by per-step random noise, and with that noise where BN would sit in the network without BN.

Two claims of the paper, restated in our words (PAPER.md quotes only Ioffe & Szegedy) and tested by the project's
rules: noisy BN trains about as well as BN (no loss beyond thresholds.AS_WELL_MARGIN, early in training and at its
end), and the same noise without BN stops or slows training (behind the network without noise early in training,
beyond the seeds' spread). The evaluation's percentiles are each network's tracked unit in inference mode, where
the noise is off: they show what the noise did to the weights and statistics. What a training step sees, the noise
included, is the train_acts probe's (train_act/<tap>/p<q>, on the step's batch in training mode): from it the third
claim, noisy BN's distributions less stable than the standard network's, is tested as Figure 1(b, c)'s stability is,
by each run's drift of its tracked unit (the change of the median, and of the outer percentiles' spread, over
training), per layer.
"""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title, data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._probed import parts_claim
from bnrepro.report.sections._shared import BAND, named_study, variant_row
from bnrepro.report.sections.fig1a import accuracies_at, early_step
from bnrepro.report.sections.fig1bc import chosen_seed
from bnrepro.report.slices import SEED
from bnrepro.report.stats import Drift, difference, drift, percentiles, taps
from bnrepro.report.thresholds import CONFIDENCE, EARLY_FRACTION

NO_BN, BN, NOISY, NOISE_ONLY = "no BN", "BN", "noisy BN", "noise without BN"
VARIANTS = (NO_BN, BN, NOISY, NOISE_ONLY)
CURVES, PERCENTILES, TRAINING = "noisy_bn_accuracy", "noisy_bn_percentiles", "noisy_bn_train_percentiles"
TITLE = "Noisy BN"
WHERE = "Santurkar et al. 2018, Sec. 2.1, Fig. 2"
FINDINGS = {
    "noisy": "BN with random noise added after each BN layer at every step (noisy BN) trains about as well as BN.",
    "no_bn": "The same noise in the network without BN stops it from training.",
    "stability": "With noisy BN the activation distributions are less stable than in the standard network (without "
                 "BN).",
}


def _stability(ctx: Context, study: dict[str, pd.DataFrame], layers: dict[str, list[str]]) -> claims.Claim:
    """Noisy BN drifts more than the network without BN, per layer, in the median and the spread."""
    parts = []
    for layer, columns in layers.items():
        noisy, plain = (drift(ctx.metrics, study.get(v, pd.DataFrame({"run": []})), columns) for v in (NOISY, NO_BN))
        for measure in ("median", "spread"):
            values = [getattr(d, measure).tolist() if isinstance(d, Drift) else [] for d in (noisy, plain)]
            parts.append((f"{layer} {measure}", difference(*values)))
    rule = (f"each layer's drift over training (max - min of the median; of p_high - p_low) of the train_acts probe's "
            f"percentiles, per run: the {CONFIDENCE:.0%} Welch interval of noisy BN - no BN wholly above 0 in every "
            "layer and for both is reproduced; partly if in some; not reproduced if in none and some lie below 0")
    return parts_claim(WHERE, FINDINGS["stability"], "noisy BN's tracked units drift more over training than the "
                       "network without BN's, in the training-mode distributions the noise acts on", parts, "above",
                       rule, "", contrast="noisy BN - no BN")


@section(order=90, stems=(CURVES, PERCENTILES, TRAINING))
def noisy_bn(ctx: Context) -> Section | Skipped | None:
    try:
        study = named_study(ctx, VARIANTS, (NOISY, NOISE_ONLY))
    except ValueError as e:
        return Skipped(TITLE, str(e))
    if not study:
        return None
    runs = next(iter(study.values()))
    step = early_step(ctx.metrics, *study.values())
    at = {v: accuracies_at(ctx.metrics, g, step) if step is not None else [] for v, g in study.items()}
    finals = {v: g["final_test_acc"].dropna().astype(float).tolist() for v, g in study.items()}

    def get(table: dict[str, list[float]], variant: str) -> list[float]:
        return table.get(variant, [])

    early = f"test accuracy at step {step}"
    found = [
        claims.joint(WHERE, FINDINGS["noisy"], "noisy BN loses no more than the margin to BN, early and at the end", [
            (f"at {EARLY_FRACTION:.0%} of training", claims.as_well_as(
                WHERE, FINDINGS["noisy"], NOISY, BN, get(at, NOISY), get(at, BN), "early", early)),
            ("final", claims.as_well_as(WHERE, FINDINGS["noisy"], NOISY, BN, get(finals, NOISY), get(finals, BN),
                                        "final")),
        ]),
        claims.ends_higher(WHERE, FINDINGS["no_bn"], NO_BN, NOISE_ONLY, get(at, NO_BN), get(at, NOISE_ONLY),
                           f"the noise slows the network without BN: at {EARLY_FRACTION:.0%} of training it is "
                           "behind the same network without noise", early),
    ]
    mine = ctx.metrics[ctx.metrics["run"].isin(pd.concat(study.values())["run"])]
    training = {layer: percentiles(mine, layer, "train_act") for layer in taps(mine, "train_act")}
    if training:
        found.append(_stability(ctx, study, training))
    for claim in found:
        claim.paraphrased = True
    groups = [("none" if v in (NO_BN, NOISE_ONLY) else "before", v, g) for v, g in study.items()]
    what = f"{model_name(runs)} on {data_name(runs)}"
    figure = draw.variants_figure(ctx.metrics, groups, f"{accuracy_title(runs)}: noisy BN", zoom_from=0.9)
    seed = chosen_seed(groups, ctx.figure_seed)
    layers = taps(ctx.metrics[ctx.metrics["run"].isin(runs["run"])]) if len(runs) else []
    panels = [([(f"{v}, {layer}", g[g[SEED] == seed]["run"].iloc[0]) for v, g in study.items()
                if (g[SEED] == seed).any()],
               percentiles(ctx.metrics, layer)) for layer in layers]
    files = ctx.save(figure, CURVES)
    if panels:
        files += ctx.save(draw.percentile_figure(
            ctx.metrics, panels, f"{what}: activation-input percentiles, seed {seed} (rows: {', '.join(layers)})"),
            PERCENTILES)
    if training:
        files += ctx.save(draw.percentile_figure(
            ctx.metrics, [([(f"{v}, {layer}", g[g[SEED] == seed]["run"].iloc[0]) for v, g in study.items()
                            if (g[SEED] == seed).any()], columns) for layer, columns in training.items()],
            f"{what}: activation-input percentiles in training (the step's batch, noise on), seed {seed}"), TRAINING)
    caption = (f"{what}: the network without BN, with BN before each nonlinearity, with BN followed by noisy BN's "
               "noise (model.bn_noise: per unit and step a random shift and scale, per sample a random spread "
               "around them), and with the noise alone where BN would sit. " + BAND + " Table: final test accuracy, "
               "mean and interval over seeds; stalled: completed but never above chance. Percentiles (second figure): "
               f"one network per panel (seed {seed}), the tracked unit's activation input over the test set in "
               "inference mode, where the noise is off; one row per hidden layer. Third figure, where the runs have "
               "the train_acts probe: the same unit on each probed step's training batch in training mode, as the step "
               "saw it (BN by the batch's statistics, the noise on).")
    rows = [{"configuration": v, **variant_row(g)} for v, g in study.items()]
    return Section(f"{TITLE}: {what}", caption, found, files=files, table=pd.DataFrame(rows))
