"""`hydra/launcher=vectorized`: a sweep's prepared jobs, those that stack (bnrepro.run.job.group_key) trained as
stacked models in groups, the groups spread over worker processes; jobs that cannot stack (a conv net, torch's
BN layer, a probe that needs the model alone) train alone, side by side in the same processes.

Workers run in their own process group, so a terminal's Ctrl-C reaches them once, through this process, which
forwards SIGINT and SIGTERM: every group checkpoints and records `interrupted`, as single runs do. A signal
that comes while a worker is still starting waits in shared memory until its handlers are in place. A worker
whose launcher ends any other way (SIGKILL included) gets SIGTERM from the kernel and does the same, holding its
jobs' folder locks (handed over with the jobs) until it is done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from bnrepro.errors import EXIT_BUG, describe
from bnrepro.interrupt import SIGNALS, Interrupted, StopRequest
from bnrepro.launch.lifeline import die_with_parent
from bnrepro.run.job import Job, group_key, train
from bnrepro.run.runlog import read_summary

log = logging.getLogger(__name__)


def plan(jobs: Sequence[Job], max_models: int, n_workers: int) -> list[list[Job]]:
    """Stackable jobs in groups of at most max_models (jobs that cannot stack alone), in sweep order.

    While there are fewer groups than workers, the largest group is halved: two processes with K/2 models
    each beat one with K on two cores, and a model's numbers do not depend on its group.
    """
    keys = {id(job): group_key(job) for job in jobs}
    groups: list[list[Job]] = []
    for key, members in groupby(sorted(jobs, key=lambda j: keys[id(j)] or ""), key=lambda j: keys[id(j)]):
        members = list(members)
        if key is None:
            groups += [[job] for job in members]
        else:
            groups += [members[i:i + max_models] for i in range(0, len(members), max_models)]
    while len(groups) < n_workers and max(len(g) for g in groups) > 1:
        largest = max(groups, key=len)
        groups.remove(largest)
        half = (len(largest) + 1) // 2
        groups += [largest[:half], largest[half:]]
    order = {id(job): i for i, job in enumerate(jobs)}
    return sorted(groups, key=lambda g: order[id(g[0])])


def train_jobs(jobs: Sequence[Job], n_jobs: int, max_models: int) -> list[dict[str, Any] | None]:
    """Each job's final summary (None: skipped, its folder's run had finished), in the order given."""
    pending = [job for job in jobs if not job.finished]
    n_workers = n_jobs if n_jobs > 0 else os.cpu_count() or 1
    groups = plan(pending, max_models, n_workers) if pending else []
    log.info("training %d jobs as %d groups of %s models in %d processes", len(pending), len(groups),
             [len(g) for g in groups], min(n_workers, len(groups)))
    if n_workers == 1 or len(groups) <= 1:
        _train_all(groups)
    else:
        _in_workers(groups, n_workers)
    return [None if job.finished else read_summary(job.run_dir) for job in jobs]


def _in_workers(groups: list[list[Job]], n_workers: int) -> None:
    """Spread the groups over n_workers spawned processes, largest first onto the least loaded."""
    shares: list[list[list[Job]]] = [[] for _ in range(min(n_workers, len(groups)))]
    load = [0] * len(shares)
    for group in sorted(groups, key=lambda g: -len(g) * g[0].cfg.train.steps):
        i = load.index(min(load))
        shares[i].append(group)
        load[i] += len(group) * group[0].cfg.train.steps
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch and W&B threads
    pending = context.Value("i", 0)  # the first signal received, for workers not yet listening
    workers = [context.Process(target=_worker, args=(share, pending, os.getpid())) for share in shares]
    # workers inherit "ignore" until their own handlers are in place, so a signal cannot kill one mid-start
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    for w in workers:
        w.start()

    def forward(signum: int, frame: object) -> None:
        pending.value = pending.value or signum
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signum)

    for s in SIGNALS:
        signal.signal(s, forward)
    try:
        for w in workers:
            w.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [w.exitcode for w in workers if w.exitcode not in (0, None)]
    if failed:
        log.warning("%d worker(s) ended with exit codes %s; their jobs' summary.json say how", len(failed), failed)


def _worker(groups: list[list[Job]], pending: Any, launcher: int) -> None:
    os.setpgrp()  # signals come from the launcher only, once each (see the module docstring)
    with StopRequest() as stop:
        die_with_parent(launcher)
        stop.signum = stop.signum or pending.value or None
        try:
            ok = _train_all(groups, stop)
        except Interrupted as e:  # a second signal: the groups recorded it; the launcher says how to continue
            raise SystemExit(e.exit_code) from None
        if not ok:
            raise SystemExit(EXIT_BUG)


def _train_all(groups: list[list[Job]], stop: StopRequest | None = None) -> bool:
    """Train the groups one after another; a group that fails (its summaries say why) does not stop the rest."""
    ok = True
    for group in groups:
        try:
            train(group, stop)
        except Exception as e:
            if describe(e) is None:  # a bug: its traceback; an anticipated failure is one line, from the launcher
                log.exception("a group of %d jobs failed; their summary.json record the error", len(group))
            ok = False
    return ok
