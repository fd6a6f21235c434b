"""The README's result numbers, written from the committed reports: every block between
`<!-- numbers:NAME -->` and `<!-- /numbers:NAME -->` in README.md is regenerated from reports/*/numbers.json.

    python scripts/readme_numbers.py            # rewrite README.md's blocks
    python scripts/readme_numbers.py --check    # exit 1 and show the difference when README.md is stale

tests/test_readme_numbers.py runs the check, so a README that disagrees with the reports fails the tests.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bnrepro.report.stats import t_quantile  # noqa: E402
from bnrepro.report.thresholds import CONFIDENCE, STALL_ACC  # noqa: E402

BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers:(?P=name) -->)", re.DOTALL)
ACCURACY = "Accuracy per configuration"
TUNED = "Tuned comparison: each configuration at its own best learning rate"
STEPS = "Steps to reach the baseline's best accuracy (Sec. 4.2's table, small)"
DIVERGENCE = "Divergence per learning rate"
CI = f"{CONFIDENCE:.0%} CI (%)"
BN_NAMES = {"none": "no BN", "before": "BN before the activation", "after": "BN after the activation"}
REPORTS = ("fig1", "lr_sweep", "bn_placement")


def load(reports: Path, name: str) -> dict[str, Any]:
    return json.loads((reports / name / "numbers.json").read_text())


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # a norm's bars stay in its cell
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def pct_range(ci: str) -> str:
    """'97.44 to 97.74' -> '97.44% to 97.74%'."""
    return "–" if ci == "–" else "% to ".join(ci.split(" to ")) + "%"


def pct(value: str) -> str:
    return "–" if value == "–" else value + "%"


def _same_lr(a: str, b: float | None) -> bool:
    return b is not None and abs(float(a) - b) <= 1e-9 * b


def selection(reports: Path) -> str:
    n = load(reports, "selection")
    init_rows = n["tables"]["init"]
    header = list(init_rows[0])
    init = md_table(header, [[str(r[h]) + ("%" if h.startswith("lr ") else "") for h in header] for r in init_rows])
    lr_rows = n["tables"]["lr"]
    lr = md_table(["lr", "diverged/stalled of n", "final test accuracy, mean", CI.replace(" (%)", ""),
                   "vs chosen, points (95% Welch)"],
                  [[r["lr"], f"{r['diverged']}/{r['stalled']} of {r['n']}", pct(r["final mean (%)"]),
                    pct_range(r[f"final {CI}"]), r["vs chosen (points)"]] for r in lr_rows])
    inside = ", ".join(f"{v:g}" for v in n["inside_spread"]) or "none"
    first = ", ".join(f"{100 * a:.2f}%" for a in n["first_eval_at_choice"])
    return "\n".join([
        f"Chosen: **init N(0, {n['init_std']:g}), lr {n['lr']:g}** ([reports/selection](reports/selection/report.md)).",
        "", "Lowest test accuracy over 3 seeds after 500 steps, no BN (init std x candidate learning rate):", "",
        init, "", "Full-length runs without BN at the chosen init (50,000 steps, 3 seeds):", "", lr, "",
        f"Inside the chosen rate's seed spread: lr {inside}. At the chosen setting the network without BN is at "
        f"{first} after its first 500 steps."])


def _accuracy_row(n: dict[str, Any], bn: str, lr: float | None) -> dict[str, str] | None:
    """The accuracy table's row of BN mode `bn` at learning rate `lr` (a table without an lr column has one)."""
    return next((r for r in n["tables"][ACCURACY] if r["bn"] == bn and ("lr" not in r or _same_lr(r["lr"], lr))),
                None)


def fig1(reports: Path) -> str:
    n = load(reports, "fig1")
    base_lr = n["base_lr"]
    steps = {r["row"]: r for r in n["tables"].get(STEPS, [])}
    rows = []
    for label, bn in (("Baseline", "none"), ("BN", "before")):
        acc, st = _accuracy_row(n, bn, base_lr), steps.get(label, {})
        if acc:
            rows.append([f"shared lr {base_lr:g}", BN_NAMES[bn], f"{base_lr:g}", pct(acc["final mean (%)"]),
                         pct_range(acc[f"final {CI}"]), st.get("steps to target", "–"), st.get("per seed", "–")])
    for r in n["tables"].get(TUNED, []):
        rows.append(["tuned", BN_NAMES[r["bn"]], r["best lr"], pct(r["final mean (%)"]),
                     pct_range(r[f"final {CI}"]), r["steps to target (seed mean)"], r["steps to target (per seed)"]])
    return md_table(["comparison", "network", "lr", "final test accuracy (mean of 3 seeds)", f"{CI[:-4]}",
                     "steps to the baseline's best (seed mean)", "per seed"], rows)


def lr_sweep(reports: Path) -> str:
    n = load(reports, "lr_sweep")
    base = n["base_lr"]
    acc = n["tables"][ACCURACY]
    lrs = sorted({float(r["lr"]) for r in acc})
    outcome = {(r["lr"], bn): r.get(f"bn={bn} diverged/stalled/total", "–") for r in n["tables"].get(DIVERGENCE, [])
               for bn in BN_NAMES}
    rows = []
    for bn in ("none", "before"):
        cells = []
        for lr in lrs:
            r = next((r for r in acc if r["bn"] == bn and _same_lr(r["lr"], lr)), None)
            text = "–" if r is None else pct(r["final mean (%)"])
            d, s, total = (outcome.get((f"{lr:g}", bn), "–/–/–").split("/") + ["", "", ""])[:3]
            if d not in ("0", "–", ""):
                text += f" ({d} of {total} diverged)"
            if s not in ("0", "–", ""):
                text += f" ({s} of {total} stalled)"
            cells.append(text)
        rows.append([BN_NAMES[bn], *cells])
    return md_table(["lr (x base)", *(f"{lr:g} ({lr / base:g}x)" for lr in lrs)], rows)


def bn_placement(reports: Path) -> str:
    """Each placement and activation at its own best learning rate (the report's tuned table)."""
    n = load(reports, "bn_placement")
    tuned = n["tables"].get(TUNED, [])
    acts = list(dict.fromkeys(r["activation"] for r in n["tables"][ACCURACY]))

    def cell_of(bn: str, act: str) -> str:
        r = next((x for x in tuned if x["bn"] == bn and x["activation"] == act), None)
        if r is None:
            return "no rate at which every seed trained"
        return f"{pct(r['final mean (%)'])} ({pct_range(r[f'final {CI}'])}) at lr {r['best lr']}"

    rows = [[BN_NAMES[bn], *(cell_of(bn, act) for act in acts)] for bn in ("none", "before", "after")]
    return md_table(["placement", *(f"{act}: final accuracy (95% CI) at its best lr" for act in acts)], rows)


def _comparison_kind(comparison: str) -> str:
    return "tuned" if comparison.startswith("tuned") else "shared lr" if comparison.startswith("shared") else "–"


def verdicts(reports: Path) -> str:
    """Every claim of every report: claim x report -> verdict."""
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for name in (*REPORTS, "scale_invariance"):
        for c in load(reports, name)["claims"]:
            key = (c["where"], c["claim"], _comparison_kind(c["comparison"]))
            found.setdefault(key, {})[name] = c["verdict"]
    rows = [[where, claim, kind, *(by.get(r, "–") for r in (*REPORTS, "scale_invariance"))]
            for (where, claim, kind), by in found.items()]
    return md_table(["paper", "claim tested", "comparison", *REPORTS, "scale_invariance"], rows)


def noise(reports: Path) -> str:
    """How large seed-to-seed noise is, from every configuration that trained on every seed, and which of the
    reports' comparisons lie inside it."""
    finals: dict[tuple[str, str, float], list[float]] = {}  # reports share runs: each (configuration, seed) once
    for name in REPORTS:
        n = load(reports, name)
        by_config: dict[tuple[str, str, float], dict[int, Any]] = {}
        for run in n["runs"]:
            key = (run.get("model.activation", "sigmoid"), run["model.bn"], float(run.get("optim.lr", n["base_lr"])))
            by_config.setdefault(key, {})[run["seed"]] = run
        for key, by_seed in by_config.items():
            ended = [r["final_test_acc"] for r in by_seed.values()]
            # noise of networks that trained: every seed completed and ended above chance (thresholds.STALL_ACC)
            if len(ended) > 1 and all(r["status"] == "completed" for r in by_seed.values()) \
                    and all(a is not None and a > STALL_ACC for a in ended):
                finals[key] = ended
    stds = [100 * statistics.stdev(v) for v in finals.values()]
    halves = [t_quantile(len(v) - 1) * s / len(v) ** 0.5 for v, s in zip(finals.values(), stds, strict=True)]
    inside = []
    for name in (*REPORTS, "scale_invariance"):
        for c in load(reports, name)["claims"]:
            if c["verdict"] == "inconclusive":
                at = f", {c['comparison']}" if c["comparison"] else ""
                inside.append(f"{c['claim']} ({name}{at})")
    lines = [f"Seed-to-seed noise: over the {len(stds)} configurations of the fig1, lr_sweep and bn_placement reports "
             "in which every seed trained (completed and ended above chance), the standard deviation of final test "
             f"accuracy over seeds ({'/'.join(sorted({str(len(v)) for v in finals.values()}))} each) has median "
             f"{statistics.median(stds):.2f} points (largest {max(stds):.2f}); the {CONFIDENCE:.0%} t-interval of a "
             f"3-seed mean spans ±{statistics.median(halves):.2f} points at the median (±{max(halves):.2f} at most). "
             "A difference between two configurations counts only when the Welch interval of the difference excludes "
             "0, as every verdict in the reports requires."]
    if inside:
        lines += ["", "Inside the noise (verdict inconclusive; the reports give each interval):", "",
                  *(f"- {x}" for x in inside)]
    return "\n".join(lines)


def _titled(n: dict[str, Any], start: str) -> list[dict[str, Any]]:
    """The rows of the report table whose title starts with `start`."""
    return next((rows for title, rows in n["tables"].items() if title.startswith(start)), [])


def sec42_tuning(reports: Path) -> str:
    rows = _titled(load(reports, "sec42_tuning"), "The Baseline's learning rate")
    return md_table(["lr", "seeds trained", "best test accuracy (mean)", CI[:-4], "chosen"],
                    [[r["lr"], f"{r['trained']} of {r['n']}", pct(r["best mean (%)"]), pct_range(r[f"best {CI}"]),
                      r["chosen"]] for r in rows])


def sec42(reports: Path) -> str:
    n = load(reports, "sec42")
    table = md_table(
        ["configuration", "lr", "steps to the Baseline's best (seed mean)", "per seed", "vs Baseline",
         "best test accuracy (mean)", CI[:-4], "paper: steps to 72.2%", "paper: best"],
        [[r["configuration"], r["lr"], r["steps to target"], r["per seed"], r["vs Baseline"], pct(r["best mean (%)"]),
          pct_range(r[f"best {CI}"]), r["paper: steps to 72.2%"], r["paper: best (%)"]]
         for r in _titled(n, "Sec. 4.2, Figure 3")])
    claims = md_table(["claim tested", "this run set", "verdict"],
                      [[c["claim"], c["found"], f"**{c['verdict']}**"] for c in n["claims"]
                       if c["where"].startswith("Sec. 4.2")])
    return f"{table}\n\n{claims}"


def sec42_ablation(reports: Path) -> str:
    rows = _titled(load(reports, "sec42"), "Sec. 4.2.1's changes")
    return md_table(["configuration", "setting put back", "steps to the Baseline's best (per seed)", "vs BN-x5",
                     "best test accuracy (mean)", "best - BN-x5, points (95% Welch)", ""],
                    [[r["configuration"], r["setting put back"], r["per seed"], r["steps vs BN-x5"],
                      pct(r["best mean (%)"]), r["best - BN-x5 (points)"], r["best vs BN-x5"]] for r in rows])


def _claims(n: dict[str, Any], where: tuple[str, ...]) -> str:
    return md_table(["claim tested", "this run set", "verdict"],
                    [[c["claim"], c["found"], f"**{c['verdict']}**"] for c in n["claims"]
                     if c["where"].startswith(where)])


def batch_size(reports: Path, name: str = "batch_size") -> str:
    """The batch-size study of one report: reports/batch_size (the MLP) or reports/batch_size_cnn (the conv net)."""
    n = load(reports, name)
    rows = _titled(n, "BN's dependence on the batch size")
    table = md_table(["configuration", "batch size", "final test accuracy (mean)", CI[:-4], "diverged",
                      "precise statistics", "test batch's own statistics", "train/eval gap (points)"],
                     [[r["configuration"], r["batch size"], pct(r["final mean (%)"]), pct_range(r[f"final {CI}"]),
                       f"{r['diverged']} of {r['n']}", pct(r["precise stats (%)"]), pct(r["batch stats (%)"]),
                       r["train/eval gap (points)"]] for r in rows])
    return f"{table}\n\n{_claims(n, ('Ioffe 2017', 'Hoffer'))}"


def bn_inference(reports: Path) -> str:
    n = load(reports, "bn_inference")
    rows = _titled(n, "Which statistics at inference")
    table = md_table(["batch size", "momentum", "EMA (running statistics)", "precise statistics",
                      "test batch's own", "precise - EMA, points (95% Welch)", "train/eval gap (points)"],
                     [[r["batch size"], r["momentum"], pct(r["EMA (%)"]), pct(r["precise (%)"]),
                       pct(r["batch stats (%)"]), r["precise - EMA (points)"], r["train/eval gap (points)"]]
                      for r in rows])
    return f"{table}\n\n{_claims(n, ('Wu & Johnson',))}"


def non_iid(reports: Path) -> str:
    n = load(reports, "non_iid")
    rows = _titled(n, "Non-i.i.d. batches")
    table = md_table(["configuration", "batches", "final test accuracy (mean)", CI[:-4], "precise statistics",
                      "test batch's own statistics"],
                     [[r["configuration"], r["batching"], pct(r["final mean (%)"]), pct_range(r[f"final {CI}"]),
                       pct(r["precise stats (%)"]), pct(r["batch stats (%)"])] for r in rows])
    return f"{table}\n\n{_claims(n, ('Ioffe 2017',))}"


PARTS_SHOWN = 6  # a claim tested in more parts (a deep network's layers) shows its first ones here, all in the report


def _shortened(found: str, name: str) -> str:
    """A claim's numbers, at most PARTS_SHOWN of its '; '-separated parts (its closing sentence kept)."""
    parts, tail = found.split("; "), ""
    if len(parts) <= PARTS_SHOWN:
        return found
    last = parts[-1]
    if "(" in last:  # the last part carries the interval's legend, e.g. "(95% Welch intervals of BN - no BN)..."
        tail = " " + last[last.index("(", last.index("]") if "]" in last else 0):]
        if (held := re.search(r"\. It holds at (.*), not at (.*)$", tail)) is not None:
            tail = tail[:held.start()] + f". It holds at {len(_names(held[1]))} of {len(parts)} parts"
    return "; ".join(parts[:PARTS_SHOWN]) + f"; … ({len(parts)} parts in all: reports/{name}/report.md)" + tail


def _names(listed: str) -> list[str]:
    """'h2 -cos(G, G'), h3 ||G - G'||' -> its items: commas inside parentheses belong to an item."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(listed):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if listed.startswith(", ", i) and depth == 0:
            items.append(listed[start:i])
            start = i + 2
    return [*items, listed[start:]]


def study(reports: Path, name: str, where: tuple[str, ...] = ("Santurkar", "Yang"), layers: bool = True) -> str:
    """The claims of one of the why-BN-helps reports (reports/<name>), as its report states them; for an ICS study,
    first its per-layer medians (layers=False: a deep network's many layers only in the report)."""
    n = load(reports, name)
    n = {**n, "claims": [{**c, "found": _shortened(c["found"], name)} for c in n["claims"]]}
    rows = _titled(n, "Internal covariate shift per layer") if layers else []
    if not rows:
        return _claims(n, where)
    table = md_table(["network", "layer", "||G - G'|| (median over training, mean of the seeds)", "cos(G, G') (same)"],
                     [[r["network"], r["layer"], r["||G - G'|| median (mean)"], r["cos(G, G') median (mean)"]]
                      for r in rows])
    return f"{table}\n\n{_claims(n, where)}"


def speed(reports: Path) -> str:
    """The Speed section's measurements, from reports/bench/bench.json (scripts/bench.py)."""
    b = json.loads((reports / "bench" / "bench.json").read_text())
    pairs = [basic / vectorized for basic, vectorized in b["fig1_pairs"]]
    times = ", ".join(f"{basic:.0f} s vs {vectorized:.0f} s" for basic, vectorized in b["fig1_pairs"])
    eval_target = "within" if b["eval_share"] <= 0.05 else "above"
    return "\n".join([
        f"- a run costs what the bare loop costs ({b['run_vs_bare']:.2f}x with BN, {b['run_vs_bare_nobn']:.2f}x "
        "without; the bare loop evaluates at the run's evaluation points);",
        f"- our BN layer's training step is {b['bn_step_vs_torch']:.3f}x torch's fused layer: on CPU each direction "
        "is one call into `bnrepro/nn/batchnorm_cpu.cpp`. The same formulas as ~20 torch ops in a Python "
        f"`autograd.Function` (the CUDA path) cost {b['bn_step_torch_ops_vs_torch']:.2f}x: at 60 x 100 an op's "
        "dispatch costs more than its arithmetic;",
        f"- ghost BN (ghost batches of 15) costs {b['ghost_step_vs_ours']:.2f}x our BN's training step and Batch "
        f"Renormalization {b['brn_step_vs_ours']:.2f}x (target 1.15x each): on CPU each is the same single kernel "
        "call as BN, the ghost batches normalised one after another inside it, and BRN's r and d computed and folded "
        "into gamma and beta there too (their torch-op paths, a call per ghost batch and two more autograd nodes, "
        "run on CUDA);",
        f"- a stacked step of 3 BN networks (a vectorized sweep's, one call into `bnrepro/models/stacked_cpu.cpp`) "
        f"costs {b['stacked_per_model_vs_single']:.2f}x a single network's step per network "
        f"({b['stacked_step_us_per_model']:.0f} vs {b['step_us_ours']:.0f} us); the same step as torch ops with "
        f"autograd costs {b['stacked_torch_ops_vs_cpp']:.2f}x the C++ one;",
        f"- evaluation plus tracking is {100 * b['eval_share']:.1f}% of a default run ({eval_target} the 5% target "
        "in this bench run; the share moves by about half a point from one run to the next), most of it the "
        f"test-set forward pass that the bare loop makes too ({100 * b['test_forward_share']:.1f}%);",
        f"- the conv net (`model=cnn`, BN before each ReLU): a full run costs {b['cnn_run_vs_bare']:.2f}x a bare loop "
        f"of the same net with torch's BatchNorm2d (target 1.10x); its training step with our BN is "
        f"{b['cnn_step_vs_torch']:.2f}x the step with torch's ({b['cnn_step_ms_ours']:.1f} vs "
        f"{b['cnn_step_ms_torch']:.1f} ms; {b['cnn_step_ms_nobn']:.1f} ms without BN), and our BatchNorm2d's "
        f"forward and backward alone {b['bn2d_step_vs_torch']:.2f}x torch's at 60 x 8 x 28 x 28, channels-last as "
        "the net keeps its feature maps;",
        f"- Sec. 4.2's conv net on Fashion-MNIST (`experiment=sec42`): {b['sec42_step_ms_baseline']:.1f} ms a "
        f"training step for the Baseline (dropout, shifts), {b['sec42_step_ms_bn_x5']:.1f} ms for BN-x5; "
        f"`experiment=sec42` and its ablation, {b['sec42_runs']} runs of {b['sec42_steps']:,} steps on 2 cores with "
        f"the vectorized launcher, took {b['sec42_elapsed_s'] / 60:.1f} min from the first run's start to the last "
        "one's end;",
        f"- the probes that replay a step: `ics` costs {b['probe_ics_steps']:.1f} training steps of the paper's MLP "
        f"per probed step, `landscape` (8 step sizes) {b['probe_landscape_steps']:.1f}; at their default intervals "
        f"(every {b['probe_ics_every']} and {b['probe_landscape_every']} steps) a probed run's steps cost "
        f"{b['probe_ics_run_vs_plain']:.2f}x and {b['probe_landscape_run_vs_plain']:.2f}x the unprobed ones "
        "(target 1.5x), in the steps' own CPU time;",
        f"- Figure 1's whole sweep as `make reproduce` runs it (6 runs x 50,000 steps), timed end to end in "
        f"back-to-back pairs in alternating order: the basic launcher against `hydra/launcher=vectorized`, {times}, "
        f"a median speed-up of **{statistics.median(pairs):.2f}x** (target 2.5x);",
        f"- a {b['sweep_jobs']}-job sweep of {b['sweep_steps']:,} steps runs {b['sweep_speedup_vectorized']:.2f}x "
        f"faster vectorized than with the basic launcher (joblib, one process per core: "
        f"{b['sweep_speedup_joblib']:.2f}x; vectorized in one process: {b['sweep_speedup_vectorized_1proc']:.2f}x): "
        "start-up costs weigh more in a sweep this short than in Figure 1's, and the basic launcher's jobs share "
        "one process's start-up.",
    ])


WHY_BN_HELPS = ("noisy_bn", "noisy_bn_cnn", "lp_norms", "lp_norms_cnn", "ics", "ics_cnn", "ics_dln", "landscape",
                "init_gradients")
WRITERS: dict[str, Callable[[Path], str]] = {"selection": selection, "fig1": fig1, "lr_sweep": lr_sweep,
                                             "bn_placement": bn_placement, "verdicts": verdicts, "noise": noise,
                                             "sec42_tuning": sec42_tuning, "sec42": sec42,
                                             "sec42_ablation": sec42_ablation, "batch_size": batch_size,
                                             "batch_size_cnn": partial(batch_size, name="batch_size_cnn"),
                                             "bn_inference": bn_inference, "non_iid": non_iid, "speed": speed,
                                             **{name: partial(study, name=name, layers=name != "ics_dln")
                                                for name in WHY_BN_HELPS}}


def regenerate(readme: str, reports: Path) -> str:
    """README text with every numbers block rewritten from `reports`; an unknown block name is an error."""
    def fill(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in WRITERS:
            raise KeyError(f"README block numbers:{name} has no writer in {Path(__file__).name}")
        return f"{m[1]}{WRITERS[name](reports)}\n{m[4]}"
    return BLOCK.sub(fill, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when README.md is stale")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    args = parser.parse_args(argv)
    old = args.readme.read_text()
    new = regenerate(old, args.reports)
    if args.check:
        if new != old:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README.md",
                                                       "README.md from reports/"))
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
