"""One benchmark record judged against a baseline record: the verdict of each gated metric.

Used by ``Baseline.judge`` (the plugin, per record as it is made) and ``compare_runs`` (``llmeff compare`` and
``llmeff report --baseline``, per pair of stored records), so that both judge the same way: paired rounds by the
Wilcoxon test, stored sessions by the prediction test of ``drift.py``, figures measured once per variant directly,
and a metric a side did not measure as ``not-measured``. Pure logic over ``results`` models; no pytest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

from pytest_llmeff.gate.drift import judge_stored, paired_mde
from pytest_llmeff.gate.two_sample import compare_paired
from pytest_llmeff.gate.verdicts import is_tested, not_measured
from pytest_llmeff.metrics import METRICS

if TYPE_CHECKING:
    from pytest_llmeff.gate.thresholds import Threshold
    from pytest_llmeff.gate.verdicts import Verdict
    from pytest_llmeff.results.schema import BenchmarkRecord


def verdicts(base: "BenchmarkRecord", current: "BenchmarkRecord", thresholds: Mapping[str, "Threshold"],
             alpha: float, paired: bool, history: Optional[Sequence["BenchmarkRecord"]] = None,
             precise: Iterable[str] = ()) -> list:
    """``verdicts.Verdict`` per threshold, in the thresholds' order. ``alpha`` is the per-comparison level (after the
    run's correction).

    ``paired``: rounds alternated in time (lockstep), so the Wilcoxon signed-rank test on per-pair ratios, with
    the paired test's minimum detectable effect. Otherwise the stored-baseline gate (``drift.judge_stored``):
    against the medians of the stored sessions in ``history`` (this benchmark's records of earlier stored runs on
    this machine, ``base`` first; None means ``[base]``) when there are >= 2, else against ``base``'s rounds,
    where a regression cannot be told from drift between sessions and is inconclusive. A figure measured once per
    variant is judged directly against its threshold; a metric that a side did not measure is ``not-measured``.
    ``precise``: paired metrics whose median per-pair ratio met the lockstep precision target (half the smallest
    threshold, ``paired_stop.py``): the robust interval resolves them, so the SD-based MDE does not overrule it."""
    precise = set(precise)
    sessions = list(history) if history else [base]
    found = []
    for metric, threshold in thresholds.items():
        if metric not in base.metrics or metric not in current.metrics:
            found.append(not_measured(metric, threshold, missing_side(base, current, metric)))
        elif paired:
            v = compare_paired(metric, base.metrics[metric].samples, current.metrics[metric].samples, threshold,
                               alpha=alpha)
            spec = METRICS.get(metric)
            if spec is not None and spec.sampling != "once":
                v = replace(v, mde=paired_mde(base.metrics[metric].samples, current.metrics[metric].samples,
                                              alpha, spec.direction))
            found.append(v if metric in precise else unresolved(v, threshold))
        else:
            samples = [r.metrics[metric].samples for r in sessions if metric in r.metrics]
            found.append(unresolved(judge_stored(metric, samples, current.metrics[metric].samples, threshold,
                                                 alpha), threshold))
    return found


UNRESOLVED = ("ok", "near-miss")  # the statuses that would pass a change the evidence cannot see


def unresolved(v: "Verdict", threshold: "Threshold") -> "Verdict":
    """``v`` made ``inconclusive`` when its evidence cannot resolve ``threshold``: an ``ok`` or ``near-miss``
    whose minimum detectable effect (``v.mde``, a fraction) is above a relative threshold. Such a verdict would
    pass a worsening as large as the threshold most of the time, so the gate never calls it ``ok`` (it says what
    it could resolve instead). ``regressed`` and ``improved`` stand: their evidence was enough."""
    if (v.status not in UNRESOLVED or v.mde is None or threshold.kind != "relative"
            or v.mde <= threshold.value):
        return v
    return replace(v, status="inconclusive",
                   message=f"{v.message}; inconclusive: this evidence resolves changes of about {v.mde * 100:.0f}%, "
                           f"above the threshold {threshold.text}")


def pairing_broke(v: "Verdict", reason: str) -> "Verdict":
    """``v`` made ``inconclusive`` because the lockstep rounds did not pair (``reason``): two runs compared as if
    paired would hide the machine's drift, so only a verdict that fails (``regressed``) stands."""
    if v.status in ("regressed", "not-measured", "inconclusive") or v.p_value is None:
        return v
    return replace(v, status="inconclusive", message=f"{v.message}; inconclusive: {reason}")


def missing_side(base: "BenchmarkRecord", current: "BenchmarkRecord", metric: str) -> str:
    """Which side did not measure ``metric``: ``"this run"``, ``"the baseline"`` or ``"either run"``."""
    if metric not in base.metrics and metric not in current.metrics:
        return "either run"
    return "this run" if metric not in current.metrics else "the baseline"


def unmeasured(base: "BenchmarkRecord", current: "BenchmarkRecord", thresholds: Iterable[str]) -> list[str]:
    """Gated metrics that one side did not measure (said, never skipped silently)."""
    return [m for m in thresholds if m not in base.metrics or m not in current.metrics]


def tested_count(metrics: Iterable[str]) -> int:
    """How many of ``metrics`` are judged by a statistical test (so spend the run's false-alarm budget)."""
    return sum(1 for m in metrics if is_tested(m))
