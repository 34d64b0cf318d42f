"""One stored run judged against another (``llmeff compare``, ``llmeff report --baseline``): ``compare_runs``.

The same judging as the plugin's (``judge.verdicts``), with the whole comparison's false-alarm budget split over
its tested comparisons, the stored runs before BASE as the history of sessions, and the two sides of one lockstep
pair compared round by round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from pytest_llmeff.gate.family import FamilyBudget
from pytest_llmeff.gate.judge import tested_count, verdicts
from pytest_llmeff.lockstep.partner import lockstep_pair
from pytest_llmeff.lockstep.turnstile import rounds_pair
from pytest_llmeff.results.schema import VerdictRecord
from pytest_llmeff.results.storage import Storage, match_benchmarks

if TYPE_CHECKING:
    from pytest_llmeff.gate.thresholds import Threshold
    from pytest_llmeff.results.schema import Run
    from pytest_llmeff.results.storage import Matching


@dataclass
class RunComparison:
    """One run judged against a stored one (``llmeff compare``, ``llmeff report --baseline``): ``base`` the run at
    BASE, ``sessions`` how many stored runs were judged against (BASE and those stored before it), ``skipped``
    the unreadable ones, ``matching`` the benchmarks paired by name, ``budget`` the false-alarm budget split over
    the tested comparisons, ``judged`` each current record with its ``verdicts.Verdict`` list (the record's
    ``verdicts`` are set to them too)."""
    base: "Run"
    sessions: int
    skipped: list
    matching: "Matching"
    budget: object
    judged: list


def compare_runs(base_path, current: "Run", thresholds: Mapping[str, "Threshold"], alpha: float, history: int,
                 storage) -> RunComparison:
    """Judge ``current`` against the run file ``base_path`` and the ``history - 1`` runs stored before it in its
    machine folder under ``storage`` (a ``StorageError`` for an unreadable BASE). ``alpha`` is the whole
    comparison's false-alarm budget (Bonferroni over its tested comparisons); the two sides of one lockstep pair
    compare round by round."""
    # the stored-baseline gate learns the spread between sessions from the runs stored before BASE (drift.py)
    sessions_runs, skipped = Storage(Path(storage).expanduser()).history(Path(base_path), history)
    base = sessions_runs[0]
    matching = match_benchmarks(base, current)
    lockstep = lockstep_pair(base, current)  # the two sides of one lockstep pair: rounds compare pair by pair
    m = sum(tested_count(t for t in thresholds if t in old.metrics and t in new.metrics)
            for old, new in matching.pairs)
    budget = FamilyBudget(alpha, max(1, m))
    judged = []
    for old, new in matching.pairs:
        paired = (lockstep and "latency_s" in old.metrics and "latency_s" in new.metrics and rounds_pair(old, new))
        sessions = [r for run in sessions_runs for r in run.benchmarks if (r.nodeid, r.name) == (old.nodeid, old.name)]
        found = verdicts(old, new, thresholds, budget.level, paired, None if paired else sessions)
        new.verdicts = [VerdictRecord.from_verdict(v) for v in found]
        judged.append((new, found))
    return RunComparison(base, len(sessions_runs), skipped, matching, budget, judged)
