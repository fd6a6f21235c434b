"""lp normalisation (Santurkar et al. 2018, Sec. 4; experiment=lp_norms): BN's division by the batch's standard
deviation replaced by the centred batch's mean absolute deviation (l1), root mean square (l2) or largest absolute
value (linf), against BN and the network without BN.

The paper's claim, in our words (PAPER.md quotes only Ioffe & Szegedy): each lp normalisation trains as well as BN.
"As well as" is tested as no loss: the Welch interval of (lp - BN) in final test accuracy lies wholly above
-thresholds.AS_WELL_MARGIN (claims.as_well_as); one claim per lp variant present.
"""

from __future__ import annotations

import pandas as pd

from bnrepro.report import claims, draw
from bnrepro.report.markdown import Section, Skipped
from bnrepro.report.names import accuracy_title, data_name, model_name
from bnrepro.report.sections import Context, section
from bnrepro.report.sections._shared import BAND, named_study, variant_row
from bnrepro.report.stats import difference
from bnrepro.report.thresholds import CONFIDENCE

NO_BN, BN = "no BN", "BN"
LP = ("l1 norm", "l2 norm", "linf norm")
VARIANTS = (NO_BN, BN, *LP)
CURVES = "lp_norms_accuracy"
TITLE = "lp normalisation"
WHERE = "Santurkar et al. 2018, Sec. 4"
FINDING = ("Normalising by the l1, l2 or l-infinity norm of the centred activations instead of their standard "
           "deviation trains as well as BN.")


@section(order=92, stems=(CURVES,))
def lp_norms(ctx: Context) -> Section | Skipped | None:
    try:
        study = named_study(ctx, VARIANTS, LP)
    except ValueError as e:
        return Skipped(TITLE, str(e))
    if not study:
        return None
    runs = next(iter(study.values()))
    finals = {v: g["final_test_acc"].dropna().astype(float).tolist() for v, g in study.items()}
    bn = finals.get(BN, [])
    found = [claims.as_well_as(WHERE, FINDING, v, BN, finals[v], bn, f"{v.split()[0]} normalisation ends at least "
                               "about as high as BN") for v in LP if v in study]
    rows = []
    for v, g in study.items():
        delta = difference(finals[v], bn) if v != BN else None
        rows.append({"configuration": v, **variant_row(g),
                     "- BN (points, Welch)": delta.points() if delta is not None else "–"})
    what = f"{model_name(runs)} on {data_name(runs)}"
    groups = [("none" if v == NO_BN else "before", v, g) for v, g in study.items()]
    figure = draw.variants_figure(ctx.metrics, groups, f"{accuracy_title(runs)}: lp normalisation", zoom_from=0.9)
    caption = (f"{what}: the network without BN, with BN before each nonlinearity, and with BN's standard deviation "
               "replaced by the centred batch's average l1, l2 or l-infinity norm (model.norm; inference uses running "
               f"estimates of the mean and of that scale). {BAND} Table: final test accuracy, mean and "
               f"{CONFIDENCE:.0%} interval over seeds; - BN: the difference of the seed means from BN's with its "
               "Welch interval; stalled: completed but never above chance.")
    return Section(f"{TITLE}: {what}", caption, found, files=ctx.save(figure, CURVES),
                   table=pd.DataFrame(rows))
