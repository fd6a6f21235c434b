#!/usr/bin/env bash
# Run one experiment's sweep and write its report to reports/<experiment>/.
#   scripts/make_report.sh fig1 [more bnrepro-train overrides, e.g. hydra/launcher=joblib]
set -euo pipefail
experiment=${1:?usage: scripts/make_report.sh EXPERIMENT [bnrepro-train overrides...]}
shift
cd "$(dirname "$0")/.."
# the checkout's venv when there is one, else whatever is on PATH
bin=$([ -x .venv/bin/bnrepro-train ] && echo .venv/bin/ || true)
sweep="multirun/$(date +%Y-%m-%d)/$(date +%H-%M-%S)_${experiment}"
"${bin}bnrepro-train" -m "experiment=${experiment}" "hydra.sweep.dir=${sweep}" "$@"
"${bin}bnrepro-report" "${sweep}" --out "reports/${experiment}"
