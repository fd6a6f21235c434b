"""metrics.csv as the run writes it: appended row by row, rewritten when cut back, synced before the summary."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import pytest

from bnrepro.run.runlog import METRICS_FILE, write_metrics, write_summary


def rows_csv(rows: list[dict[str, float]]) -> str:
    """The oracle: the whole file written in one go, as write_metrics always did."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def row(step: int) -> dict[str, float]:
    return {"step": step, "test_acc": step / 1000, "train_loss": math.nan if step == 0 else 1 / (step + 1)}


def test_each_write_leaves_exactly_the_rows_given(tmp_path: Path) -> None:
    rows: list[dict[str, float]] = []
    for step in range(0, 2000, 500):
        rows.append(row(step))
        write_metrics(tmp_path, rows)
        assert (tmp_path / METRICS_FILE).read_bytes() == rows_csv(rows).encode()
    write_metrics(tmp_path, rows)  # nothing new: nothing written twice
    assert (tmp_path / METRICS_FILE).read_bytes() == rows_csv(rows).encode()


def test_rows_cut_back_to_a_checkpoint_rewrite_the_file(tmp_path: Path) -> None:
    rows = [row(0), row(500), row(1000)]
    write_metrics(tmp_path, rows)
    rows[:] = [row(0), row(500)]  # a resumed run's rows: new objects, fewer of them
    write_metrics(tmp_path, rows)
    assert (tmp_path / METRICS_FILE).read_bytes() == rows_csv(rows).encode()
    rows[-1] = row(600)  # same length, another last row
    write_metrics(tmp_path, rows)
    assert (tmp_path / METRICS_FILE).read_bytes() == rows_csv(rows).encode()


def test_appended_rows_are_synced_before_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []  # every fsync's file; atomic writes fsync their temporary files
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    metrics = str(tmp_path / METRICS_FILE)
    rows = [row(0)]
    write_metrics(tmp_path, rows)  # the first write is a rewrite: a temporary file, fsynced, renamed
    rows.append(row(500))
    write_metrics(tmp_path, rows)
    assert metrics not in synced  # no fsync per evaluation
    write_summary(tmp_path, {"status": "completed"})
    assert synced.count(metrics) == 1 and synced.index(metrics) < len(synced) - 1  # then the summary's
    rows.append(row(1000))  # after the summary the file is written afresh, as by a new process
    write_metrics(tmp_path, rows)
    assert (tmp_path / METRICS_FILE).read_bytes() == rows_csv(rows).encode()
