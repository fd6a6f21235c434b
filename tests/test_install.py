"""bnrepro as a user outside the repository gets it: a wheel in a fresh virtual environment, its configs inside
the package, and the user's own model and experiment added from a folder of theirs with --config-dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# a model part of the user's own: a linear classifier, keeping the model contract
USER_MODEL = '''
from dataclasses import dataclass

from torch import nn

from bnrepro.models import Model


@dataclass
class LinearConfig:
    bias: bool = True


class Linear(Model):
    Config = LinearConfig

    def __init__(self, cfg=None, *, input_shape=(1, 28, 28), num_classes=10, **settings):
        super().__init__(cfg, input_shape=input_shape, num_classes=num_classes, **settings)
        self.fc = nn.Linear(28 * 28, num_classes, bias=self.cfg.bias)
        self.tap_names = []

    def forward(self, x, taps=None, unit=None):
        return self.fc(x.flatten(1))
'''
USER_FILES = {
    "user_parts.py": USER_MODEL,
    "conf/model/linear.yaml": "_target_: user_parts.Linear\nbias: true\n",
    "conf/experiment/mine.yaml": textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /model: linear
        name: mine
        train:
          steps: 200
          eval_every: 100
        """),
}


def test_a_wheel_in_a_fresh_venv_runs_with_the_users_own_model_and_experiment(tmp_path: Path,
                                                                            data_root: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("bnrepro-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    # the dependencies (torch, hydra, ...) from this environment's site-packages, as a plain path: its .pth
    # files, the editable install of this checkout among them, are not read from there
    (site,) = (venv / "lib").glob("python*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    user = tmp_path / "user"
    for name, text in USER_FILES.items():
        (user / name).parent.mkdir(parents=True, exist_ok=True)
        (user / name).write_text(text)
    env = {**os.environ, "BNREPRO_DATA": str(data_root), "WANDB_SILENT": "true", "PYTHONPATH": str(user)}
    run_dir = tmp_path / "run"
    proc = subprocess.run([venv / "bin" / "bnrepro-train", "--config-dir", str(user / "conf"), "experiment=mine",
                           "train.progress=false", "wandb.mode=disabled", f"hydra.run.dir={run_dir}"],
                          cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["model_name"] == "Linear"
    assert summary["final_test_acc"] > 0.5  # a linear classifier learns MNIST in 200 steps
    import_path = subprocess.run([venv / "bin" / "python", "-c", "import bnrepro; print(bnrepro.__file__)"],
                                 cwd=user, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(import_path.strip()).is_relative_to(site)  # the wheel's copy ran, not this checkout
