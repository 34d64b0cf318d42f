"""The run's false-alarm budget (``FamilyBudget``): ``--llmeff-alpha`` split over the run's tested comparisons.

``--llmeff-alpha`` is the chance of at least one false ``regressed`` among all tested comparisons of the run, not
per comparison. Verdicts are made test by test while the tests run, so Holm's step-down over all p-values of the
run is not available when the first is judged; each tested comparison is held at Bonferroni's level alpha / m
instead, m being the number of tested comparisons the run can make, counted before the first test runs
(``Baseline.family_size``). By the union bound the chance of any false alarm is then at most m * alpha / m =
alpha, whatever the dependence between the comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyBudget:
    """The run's false-alarm budget split over its tested comparisons (Bonferroni).

    alpha: the chance of at least one false ``regressed`` in the whole run (``--llmeff-alpha``), in (0, 1).
    comparisons: m, the number of tested (benchmark, gated metric) comparisons the run can make, >= 1.
    scope: what m counts, for humans (``"the run"``, or ``"this test only"`` when the run's size is unknown).
    """

    alpha: float
    comparisons: int
    scope: str = "the run"

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"alpha={self.alpha!r} must be a number in (0, 1)")
        if isinstance(self.comparisons, bool) or not isinstance(self.comparisons, int) or self.comparisons < 1:
            raise ValueError(f"comparisons={self.comparisons!r} must be a whole number >= 1")

    @property
    def level(self) -> float:
        """The per-comparison significance level: alpha / m."""
        return self.alpha / self.comparisons

    def describe(self) -> str:
        """One phrase: which correction, over how many comparisons, and the per-comparison level."""
        return (f"Bonferroni: alpha {self.alpha:g} over {self.comparisons} tested comparison"
                f"{'s' if self.comparisons != 1 else ''} of {self.scope} -> {self.level:.3g} each")
