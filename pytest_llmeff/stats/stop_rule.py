"""When to stop timing a benchmark: the precision-driven stop rule.

A benchmark runs timed rounds until one of these holds, checked after every round (first match wins):

1. ``fixed_rounds``: an explicit ``rounds=`` (marker, ``--llmeff-rounds`` or its ini twin), or a lockstep A/B run,
   asks for exactly that many rounds; nothing else stops it.
2. Fewer than ``min_rounds`` rounds: go on (a minimum is a minimum, whatever the clock says).
3. ``max_rounds`` rounds done.
4. ``target_ci``: every precision metric's 95% interval of the median (``stats.median_ci``) is within
   ``target_ci_rel`` of its median (relative larger half-width, e.g. 0.05 = ±5%).
5. ``max_time``: another round, as long as the average round so far, would end past ``max_time_s`` of timed
   rounds. The rule stops before overrunning the budget rather than after.

Pure: no clock, no torch. The runner passes the samples and the elapsed timed seconds, so tests drive it with a
fake clock. Warm-up is not adaptive: a fixed number of untimed rounds (see the README for why).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from pytest_llmeff.defaults import DEFAULT_MAX_ROUNDS, DEFAULT_MAX_TIME_S, DEFAULT_TARGET_CI_PCT  # noqa: F401
from pytest_llmeff.stats import intervals as stats

DEFAULT_MIN_ROUNDS = stats.MIN_CI_SAMPLES
DEFAULT_PRECISION_METRICS = ("throughput_tok_s",)


@dataclass(frozen=True)
class StopRule:
    """The stop rule of one benchmark.

    target_ci_rel: the precision target, relative half-width of the 95% median interval (0.05 = ±5%).
    max_time_s: budget of the timed rounds in seconds (wall time of the rounds, warm-up and extras excluded).
    min_rounds / max_rounds: bounds on the timed round count.
    metrics: the precision metrics whose intervals must meet the target (per-round or per-token metrics).
    fixed_rounds: when set, exactly that many rounds and nothing else decides.
    """

    target_ci_rel: float = DEFAULT_TARGET_CI_PCT / 100
    max_time_s: float = DEFAULT_MAX_TIME_S
    min_rounds: int = DEFAULT_MIN_ROUNDS
    max_rounds: int = DEFAULT_MAX_ROUNDS
    metrics: tuple[str, ...] = DEFAULT_PRECISION_METRICS
    fixed_rounds: Optional[int] = None

    def achieved(self, samples: Mapping[str, Sequence[float]]) -> dict[str, Optional[float]]:
        """Each precision metric's relative half-width now (None: no interval yet, or no samples)."""
        out: dict[str, Optional[float]] = {}
        for name in self.metrics:
            values = samples.get(name) or []
            ci = stats.median_ci(values) if values else None
            out[name] = stats.relative_half_width(statistics.median(values), ci) if values else None
        return out

    def decide(self, samples: Mapping[str, Sequence[float]], rounds_done: int, elapsed_s: float) -> Optional[str]:
        """None to time another round, else why to stop: ``fixed_rounds``, ``max_rounds``, ``target_ci`` or
        ``max_time``. ``samples``: per-metric samples so far; ``elapsed_s``: seconds spent in timed rounds."""
        if self.fixed_rounds is not None:
            return "fixed_rounds" if rounds_done >= self.fixed_rounds else None
        if rounds_done < self.min_rounds:
            return None
        if rounds_done >= self.max_rounds:
            return "max_rounds"
        measured = {k: v for k, v in self.achieved(samples).items() if samples.get(k)}
        if measured and all(rel is not None and rel <= self.target_ci_rel for rel in measured.values()):
            return "target_ci"
        per_round = elapsed_s / rounds_done if rounds_done else 0.0
        if elapsed_s + per_round > self.max_time_s:
            return "max_time"
        return None
