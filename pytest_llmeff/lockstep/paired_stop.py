"""How many pairs a lockstep benchmark times: the candidate decides from the pairs themselves, the baseline obeys.

A fixed 20 pairs is too few on a noisy machine (measured here: per-pair spread of the log ratio 5% on a quiet VM,
11-16% with other work on it, where a 10% slowdown against a 5% threshold was caught in 9 of 20 runs) and more than
needed on a quiet one. So, like the stop rule of a single run (``stop_rule.py``), lockstep times pairs until the
PAIRED figure is precise enough: the 95% interval (``stats.median_ci``, Hettmansperger-Sheather) of the median
per-pair log ratio candidate/baseline of each paired metric has a half-width within ``target_rel``, with at least
``min_pairs`` pairs, at most ``max_pairs``, and no more pairs when the next checkpoint's pairs would end past
``max_time_s`` of wall time. The target is half the smallest relative threshold gated on a per-round metric (a change of
twice the threshold is then caught nearly always, and one within it never called beyond it), or the stop rule's
precision target without a gate.

Only the candidate can decide: it alone holds the thresholds (the baseline side runs ungated) and both sides'
figures. It decides at checkpoints, after pair 20 (``DEFAULT_INTERLEAVED_ROUNDS``) and every 10 pairs after it:
at a checkpoint the baseline writes its figures so far (``baseline.round``) and passes the turn; the candidate
reads them on waking, times its round, decides, writes the decision (``candidate.decision``) and passes the turn;
the baseline reads it on waking. Both files name the benchmark and the round, so a stale one is never taken for
the current. Why checkpoints, not every pair: any work a side does between its rounds that the other does not
shows in the next round (measured here in A/A on the 3.6 M model: a candidate that read and decided after every
round had a TTFT 7% above the baseline's in every run; with both sides reading on waking, 2-4% was left); at
checkpoints nine pairs in ten are the plain turn-taking, which showed no such bias.
A partner that writes no such files (an older plugin under ``--llmeff-ab-python``) is met with the fixed count,
``DEFAULT_INTERLEAVED_ROUNDS``, which is what it times; a partner that goes away leaves each side its own rule.
Explicit ``rounds=`` (marker, option or ini) still fixes the count on both sides: nothing is decided then.

Pure but for the two small files, written atomically through the turnstile's directory.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from pytest_llmeff.stats import intervals as stats
from pytest_llmeff.lockstep.turnstile import Turnstile

PAIRED_CI = "paired_ci"  #: stop reason: every paired metric's interval met the target
PAIRED_MAX_ROUNDS = "max_rounds"
PAIRED_MAX_TIME = "max_time"
CHECK_EVERY_PAIRS = 10  #: pairs between two decisions after the first (messages only then: see the module doc)
FIXED = "fixed_rounds"  #: the fixed count met with a partner that sends no figures or decisions


def paired_target(target_ci_rel: float, relative_thresholds: Sequence[float]) -> float:
    """The paired precision target (relative half-width): half the smallest relative threshold, or the stop
    rule's target when no relative threshold is gated (the tighter of the two when both are given)."""
    halves = [t / 2 for t in relative_thresholds if t > 0]
    return min([target_ci_rel] + halves) if halves else target_ci_rel


def paired_half_width(base: Sequence[float], cur: Sequence[float]) -> Optional[float]:
    """The 95% interval's larger half-width of the median per-pair log ratio (about the relative half-width of
    the paired ratio); None with too few pairs or a value <= 0."""
    n = min(len(base), len(cur))
    if n < stats.MIN_CI_SAMPLES:
        return None
    pairs = list(zip(base[:n], cur[:n]))
    if not all(b > 0 and c > 0 for b, c in pairs):
        return None
    logs = [math.log(c / b) for b, c in pairs]
    ci = stats.median_ci(logs)
    if ci is None:
        return None
    median = statistics.median(logs)
    return max(median - ci[0], ci[1] - median)


@dataclass
class PairedDecider:
    """The candidate's rule: after pair ``n`` (both sides' per-round figures so far), stop or go on.

    metrics: the paired metrics whose intervals must meet ``target_rel``. min_pairs / max_pairs: bounds on the
    pair count. max_time_s: the candidate's timed-round budget (s)."""

    metrics: tuple[str, ...]
    target_rel: float
    min_pairs: int
    max_pairs: int
    max_time_s: float
    achieved: dict[str, Optional[float]] = field(default_factory=dict)

    def decide(self, base: Mapping[str, Sequence[float]], cur: Mapping[str, Sequence[float]], pairs: int,
               elapsed_s: float) -> Optional[str]:
        """The stop reason after ``pairs`` pairs (None: time another). ``base``/``cur``: each side's per-round
        figures by metric, round by round; a metric without one figure per round on both sides is not used.
        ``elapsed_s``: the wall time of the pairs so far."""
        self.achieved = {m: paired_half_width(base[m], cur[m]) for m in self.metrics
                         if len(base.get(m) or []) == pairs and len(cur.get(m) or []) == pairs}
        if pairs < self.min_pairs:
            return None
        if pairs >= self.max_pairs:
            return PAIRED_MAX_ROUNDS
        if self.achieved and all(v is not None and v <= self.target_rel for v in self.achieved.values()):
            return PAIRED_CI
        if pairs and elapsed_s * (pairs + CHECK_EVERY_PAIRS) / pairs > self.max_time_s:  # the next checkpoint
            return PAIRED_MAX_TIME
        return None


def is_checkpoint(pairs: int, first: int, every: int = CHECK_EVERY_PAIRS) -> bool:
    """Whether the pair count is decided after pair ``pairs``: at ``first`` and every ``every`` pairs after it."""
    return pairs >= first and (pairs - first) % every == 0


class PairedRounds:
    """One lockstep benchmark's turn-taking, as the runner's ``before_rounds`` and ``after_round`` hooks.

    turnstile: this side's ``interleave.Turnstile``. key: the benchmark (node id and name, the same on both
    sides). decider: the candidate's ``PairedDecider``; None on the baseline side, and on both sides when the
    count is fixed (``fixed``: explicit rounds). fallback_pairs: the first checkpoint, and the count to stop at
    when the partner sends no figures or decisions (an older plugin, which times exactly that many)."""

    def __init__(self, turnstile: Turnstile, key: str, decider: Optional[PairedDecider], fixed: bool,
                 fallback_pairs: int):
        self.turnstile = turnstile
        self.key = key
        self.decider = decider
        self.fixed = fixed
        self.fallback_pairs = fallback_pairs
        self.fallback = False  # the partner sent nothing at a checkpoint: the fixed count from then on
        self._pending: Optional[dict] = None  # the candidate: the baseline's figures, read at a checkpoint

    @property
    def _round_path(self):
        return self.turnstile.directory / "baseline.round"

    @property
    def _decision_path(self):
        return self.turnstile.directory / "candidate.decision"

    def _checkpoint(self, pairs: int) -> bool:
        return not self.fixed and is_checkpoint(pairs, self.fallback_pairs)

    def before_rounds(self) -> None:
        self.turnstile.step()
        self._on_wake(1)

    def _on_wake(self, next_round: int) -> None:
        """The candidate, on getting the turn before a checkpoint round: read the baseline's figures (the baseline
        reads the decision on waking likewise, so both sides do the same small work at the same place)."""
        t = self.turnstile
        if t.role == "candidate" and not t.alone and not self.fallback and self._checkpoint(next_round):
            self._pending = self._read(self._round_path, next_round)

    def after_round(self, samples: Mapping[str, Sequence[float]], rounds_done: int, elapsed_s: float,
                    reason: Optional[str]) -> Optional[str]:
        """Pass the turn (at a checkpoint with this side's figures or decision) and wait for it; the stop reason
        to follow. Between checkpoints only a count-based reason of this side's own rule (``max_rounds``, the same
        on both sides) stops the pair."""
        t = self.turnstile
        if t.alone or self.fixed:
            t.step()
            return reason
        if not self._checkpoint(rounds_done):
            t.step()
            if t.alone:
                return reason
            self._on_wake(rounds_done + 1)
            return reason if reason == PAIRED_MAX_ROUNDS else None
        if t.role == "baseline":
            figures = {m: [float(x) for x in v] for m, v in samples.items() if len(v) == rounds_done}
            t.write_message(self._round_path, json.dumps({"key": self.key, "round": rounds_done, "figures": figures}))
            t.step()
            if t.alone:  # the candidate went away: this side's own rule from here on
                return reason
            decision = None if self.fallback else self._read(self._decision_path, rounds_done)
            if decision is None:  # no decision: an older candidate, timing the fixed count
                self.fallback = True
                return self._fallback(rounds_done)
            return decision.get("stop")
        # the candidate: the baseline's figures up to this round, read on waking
        figures, self._pending = self._pending, None
        if figures is None or self.decider is None:
            self.fallback = True  # an older baseline (or a lost message): the fixed count from then on
            decision = self._fallback(rounds_done)
        else:
            base = {m: [float(x) for x in v] for m, v in (figures.get("figures") or {}).items()}
            decision = self.decider.decide(base, samples, rounds_done, elapsed_s)
        t.write_message(self._decision_path, json.dumps({"key": self.key, "round": rounds_done, "stop": decision}))
        t.step()
        if decision is None:
            self._on_wake(rounds_done + 1)
        return decision

    def _fallback(self, rounds_done: int) -> Optional[str]:
        return FIXED if rounds_done >= self.fallback_pairs else None

    def _read(self, path, rounds_done: int) -> Optional[dict]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != self.key or data.get("round") != rounds_done:
            return None
        return data
