"""The history of one benchmark's metric across stored runs, and its change points.

Pure logic, no pytest. ``load_history`` reads the run files of one machine fingerprint folder under the storage
root (oldest first, ``Storage.runs`` order: autosave counter, then mtime), takes one benchmark's metric from each
(median, 95% interval of the median where the file has it, n), and ``detect`` marks change points with the
PELT search of `ruptures <https://centre-borelli.github.io/ruptures-docs/>`_ (Truong, Oudre & Vayatis, *Signal
Processing* 167, 2020), not a detector of our own.

How the detector is set up, and why:

- The series is the per-run **medians**, on a log scale for a positive metric (so a step is a relative change and
  the noise of a rate does not grow with its level).
- Cost ``l1`` (least absolute deviation around each segment's median): one slow session (a busy shared runner)
  moves an ``l2`` mean far enough to open a segment around it; a median does not.
- Penalty per change point ``penalty * b * ln(n)`` (a BIC-style penalty for a Laplace likelihood), with ``b`` the
  noise scale estimated from the series itself, robustly: MAD of the first differences / (0.6745 * sqrt 2), times
  sqrt(2/pi) (the mean absolute deviation of a normal). A step changes one difference only, so it barely moves
  ``b``. ``min_size`` 3: a segment has at least 3 runs.
- Default ``penalty`` 3, chosen by simulation (300 series each, ``ruptures`` 1.1.10): 40 runs with no change
  gave a series with any change point 0% of the time at 3% noise and 0.7% at 12% noise, with 5% of runs 40%
  slow on top 4.7% and 0.7%; 20 runs then a 15% drop was found at the step (+-1 run) 100% of the time at 3% noise
  (90% with the slow runs), and 31% at 12% noise (a shared VM's session-to-session spread; more runs help).
  A smaller ``penalty`` finds more and false-alarms more (2: 1.0-13.7% of no-change series).

Each change point is reported with the medians of the runs before and after it (back to the previous change point
and on to the next), their relative change, and the two-sided Mann-Whitney U p-value of the two
segments' medians (scipy) as a check of how clear the step is.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytest_llmeff.errors import HistoryError, LlmeffUsageError, StorageError  # HistoryError: defined in errors.py
from pytest_llmeff.metrics import spec_for

DEFAULT_METRIC = "throughput_tok_s"
DEFAULT_PENALTY = 3.0
MIN_SIZE = 3  # runs per segment, at least
EXTRA = "history"  # pip install "pytest-llmeff[history]"


@dataclass
class Point:
    """One stored run's value of the metric."""

    path: Path
    label: str  # the file's stem, e.g. 0007_1a2b3c4d_20260101T120000Z
    started_at: str
    commit: Optional[str]
    dirty: Optional[bool]
    median: float
    ci_low: Optional[float]
    ci_high: Optional[float]
    n: int


@dataclass
class ChangePoint:
    """A change between ``points[index - 1]`` and ``points[index]``."""

    index: int  # the first run after the change (0-based in History.points)
    before_median: float  # median of the per-run medians of the segment before
    after_median: float  # ... and of the segment after
    before_runs: int
    after_runs: int
    change: Optional[float]  # (after - before) / before; None when before is 0
    p_value: Optional[float]  # two-sided Mann-Whitney U of the two segments' per-run medians


@dataclass
class History:
    fingerprint: str
    nodeid: str
    name: str
    metric: str
    unit: str
    direction: str
    points: list[Point]
    skipped: list[str] = field(default_factory=list)  # one line per run file that could not be read
    change_points: list[ChangePoint] = field(default_factory=list)
    penalty: float = DEFAULT_PENALTY
    note: Optional[str] = None  # why no change point search was made


def require_library():
    """``ruptures``, imported here (never at module import); HistoryError with the extra to install."""
    try:
        import ruptures
    except ImportError:
        raise HistoryError(f'the change point library "ruptures" is not installed; '
                           f'install the extra: pip install "pytest-llmeff[{EXTRA}]"') from None
    return ruptures


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def _pick_folder(storage, machine: Optional[str], current):
    """The fingerprint whose runs form the series: ``machine`` if given; else the current machine's when it has
    runs; else the only folder with runs. HistoryError otherwise."""
    from pytest_llmeff.results.storage import json_files

    root = storage.root
    if not root.is_dir():
        raise HistoryError(f"{root}: no such storage directory (runs are stored there with --llmeff-autosave)")
    folders = [d.name for d in storage.folders() if json_files(d)]
    if machine is not None:
        if machine not in folders:
            hint = f"; machines with stored runs: {_listing(folders)}" if folders else ""
            raise HistoryError(f"no stored runs for machine {machine!r} under {root}{hint}")
        return machine
    if not folders:
        raise HistoryError(f"no stored runs under {root} (store runs with --llmeff-autosave)")
    if len(folders) == 1:
        return folders[0]
    current = current() if callable(current) else current
    if current in folders:
        return current
    raise HistoryError(f"runs of several machines are stored under {root} and none is this one: give --machine, "
                       f"one of {_listing(folders)}")


def load_history(root, benchmark: Optional[str] = None, metric: str = DEFAULT_METRIC,
                 machine: Optional[str] = None, current_fingerprint=None) -> History:
    """The series of ``metric`` of one benchmark over the runs stored under ``root`` for one machine.

    ``current_fingerprint``: this machine's fingerprint (or a function giving it, called only when several machines'
    runs are stored); its folder is chosen then.
    ``benchmark``: a node id, a benchmark name or the end of a node id after ``::``; None when the runs hold one
    benchmark only. A run file that cannot be read is skipped and named in ``History.skipped``. Unknown
    benchmark or metric, nothing stored, or an ambiguous choice: HistoryError (one line, listing what exists).
    """
    from pytest_llmeff.results.runfile import read_run, shown_path
    from pytest_llmeff.results.storage import Storage

    storage = Storage(root)
    fingerprint = _pick_folder(storage, machine, current_fingerprint)
    runs, skipped = [], []
    for path in storage.runs(fingerprint):
        try:
            runs.append((path, read_run(path)))
        except StorageError as exc:
            skipped.append(f"{shown_path(path)}: {getattr(exc, 'problem', exc)}")
    if not runs:
        raise HistoryError(f"none of the {len(skipped)} run file(s) under {storage.folder(fingerprint)} can be read "
                           f"(first: {skipped[0]})")

    keys: dict[tuple[str, str], int] = {}  # (nodeid, name) -> how many runs hold it, in first-seen order
    for _, run in runs:
        for rec in run.benchmarks:
            keys[(rec.nodeid, rec.name)] = keys.get((rec.nodeid, rec.name), 0) + 1
    if not keys:
        raise HistoryError(f"the runs stored under {storage.folder(fingerprint)} hold no benchmarks")
    known = [nodeid if nodeid.rsplit("::", 1)[-1] == name else f"{nodeid} ({name})" for nodeid, name in keys]
    if benchmark is None:
        if len(keys) > 1:
            raise HistoryError(f"{len(keys)} benchmarks are stored; choose one with --benchmark: {_listing(known)}")
        chosen = next(iter(keys))
    else:
        exact = [k for k in keys if benchmark in k]
        found = exact or [k for k in keys if k[0].endswith("::" + benchmark)]
        if not found:
            raise HistoryError(f"no benchmark {benchmark!r} in the runs stored under {storage.folder(fingerprint)}; "
                               f"stored: {_listing(known)}")
        if len(found) > 1:
            raise HistoryError(f"benchmark {benchmark!r} is ambiguous: {_listing([k[0] for k in found])}; "
                               "give the full node id")
        chosen = found[0]

    points, unit, direction, metrics_seen = [], None, None, set()
    for path, run in runs:
        rec = next((r for r in run.benchmarks if (r.nodeid, r.name) == chosen), None)
        if rec is None:
            continue
        metrics_seen.update(rec.metrics)
        m = rec.metrics.get(metric)
        if m is None:
            continue
        unit, direction = m.unit, m.direction
        points.append(Point(path=path, label=path.stem, started_at=run.started_at, commit=run.commit.id,
                            dirty=run.commit.dirty, median=m.median, ci_low=m.ci_low, ci_high=m.ci_high, n=m.n))
    if not points:
        raise HistoryError(f"no metric {metric!r} in benchmark {chosen[0]}; recorded: "
                           f"{_listing(sorted(metrics_seen)) or 'none'}")
    try:
        spec = spec_for(metric)
        unit, direction = spec.unit, spec.direction
    except (KeyError, ValueError, LlmeffUsageError):  # a user metric not registered in this process
        pass
    return History(fingerprint=fingerprint, nodeid=chosen[0], name=chosen[1], metric=metric, unit=unit or "",
                   direction=direction or "none", points=points, skipped=skipped)


def _noise_scale(values: list[float]) -> float:
    """Mean absolute deviation of the noise, from the MAD of first differences (robust to a few steps)."""
    diffs = [b - a for a, b in zip(values, values[1:])]
    mid = statistics.median(diffs)
    sigma = statistics.median(abs(d - mid) for d in diffs) / 0.6745 / math.sqrt(2)
    return sigma * math.sqrt(2 / math.pi)


def change_point_indices(values: list[float], penalty: float = DEFAULT_PENALTY,
                         min_size: int = MIN_SIZE) -> list[int]:
    """Indices ``i`` where a new segment starts (``values[i-1] | values[i]``), by ruptures' PELT, cost l1, with a
    penalty of ``penalty * b * ln(n)`` (see the module doc). Fewer than ``2 * min_size`` values: none."""
    ruptures = require_library()
    import numpy as np

    n = len(values)
    if n < 2 * min_size:
        return []
    y = np.array([math.log(v) for v in values] if min(values) > 0 else values, dtype=float)
    scale = _noise_scale(list(y))
    spread = float(np.max(y) - np.min(y))
    if spread == 0:
        return []
    scale = max(scale, spread * 1e-9)  # a noiseless series: any step is a change
    bkps = ruptures.Pelt(model="l1", min_size=min_size, jump=1).fit(y.reshape(-1, 1)).predict(
        pen=penalty * scale * math.log(n))
    return [int(b) for b in bkps[:-1]]  # the last breakpoint is the series' end


def detect(history: History, penalty: float = DEFAULT_PENALTY) -> History:
    """Fill ``history.change_points`` (and ``history.note`` when the series is too short to search)."""
    from scipy.stats import mannwhitneyu

    history.penalty = penalty
    values = [p.median for p in history.points]
    if len(values) < 2 * MIN_SIZE:
        history.note = (f"{len(values)} run(s): too few to look for change points (at least {2 * MIN_SIZE}, "
                        f"{MIN_SIZE} on each side)")
        history.change_points = []
        return history
    cuts = change_point_indices(values, penalty)
    bounds = [0, *cuts, len(values)]
    found = []
    for k, cut in enumerate(cuts):
        before, after = values[bounds[k]:cut], values[cut:bounds[k + 2]]
        b, a = statistics.median(before), statistics.median(after)
        p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
        found.append(ChangePoint(index=cut, before_median=b, after_median=a, before_runs=len(before),
                                 after_runs=len(after), change=(a - b) / b if b else None, p_value=p))
    history.change_points = found
    return history


def _fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4g}"


def _verdict(history: History, change: Optional[float]) -> str:
    if change is None or history.direction == "none" or change == 0:
        return "change"
    better = (change > 0) == (history.direction == "higher")
    return "improvement" if better else "regression"


def render(history: History) -> str:
    """The series as a table (one row per run, ``>>`` on the first run after a change point) and one line per
    change point."""
    from tabulate import tabulate

    starts = {cp.index for cp in history.change_points}
    rows = []
    for i, p in enumerate(history.points):
        commit = (p.commit or "")[:8] + ("+" if p.dirty else "")
        rows.append([">>" if i in starts else "", i + 1, p.label, p.started_at[:19], commit or "-", _fmt(p.median),
                     _fmt(p.ci_low), _fmt(p.ci_high), p.n])
    unit = f" [{history.unit}]" if history.unit else ""
    lines = [f"{history.nodeid}  {history.metric}{unit}  ({history.direction} is better)"
             if history.direction != "none" else f"{history.nodeid}  {history.metric}{unit}",
             f"machine {history.fingerprint}: {len(history.points)} run(s), oldest first",
             tabulate(rows, headers=["", "#", "run", "started", "commit", "median", "ci_low", "ci_high", "n"],
                      disable_numparse=True)]
    if history.note:
        lines.append(history.note)
    elif not history.change_points:
        lines.append(f"no change point (ruptures PELT, cost l1, penalty {history.penalty:g})")
    else:
        lines.append(f"{len(history.change_points)} change point(s) (ruptures PELT, cost l1, penalty "
                     f"{history.penalty:g}; >> marks the first run after each):")
        for cp in history.change_points:
            before, after = history.points[cp.index - 1], history.points[cp.index]
            change = "n/a" if cp.change is None else f"{cp.change:+.1%}"
            lines.append(f"  {_verdict(history, cp.change)} between #{cp.index} ({before.label}) and "
                         f"#{cp.index + 1} ({after.label}): median {cp.before_median:.4g} -> {cp.after_median:.4g}"
                         f"{' ' + history.unit if history.unit else ''} ({change}; {cp.before_runs} vs "
                         f"{cp.after_runs} runs, Mann-Whitney p={cp.p_value:.2g})")
    return "\n".join(lines)
