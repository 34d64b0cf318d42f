"""What a record is judged against in a pytest session: ``Baseline``, the stored run or the lockstep partner.

One object per session, built from the options (``Baseline.from_options``): the thresholds, the run's
false-alarm budget (``family.FamilyBudget`` over the tested comparisons it can make), the stored run and the
sessions before it, or the lockstep partner (``lockstep/partner.py`` carries its records). ``judge`` fills each
record's verdicts (``judge.verdicts``, the same judging ``llmeff compare`` uses) and limits. Pure logic over
``results`` models; no pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

from pytest_llmeff.defaults import DEFAULT_ALPHA
from pytest_llmeff.gate.comparison_lines import matching_lines, resolution_lines
from pytest_llmeff.gate.family import FamilyBudget
from pytest_llmeff.gate.judge import missing_side, pairing_broke, tested_count, verdicts
from pytest_llmeff.gate.thresholds import check_limit, parse_limits, parse_thresholds
from pytest_llmeff.gate.verdicts import DIRECT
from pytest_llmeff.lockstep.partner import PAIRING_BROKE, partner_record, publish_record
from pytest_llmeff.results.schema import LimitRecord, VerdictRecord
from pytest_llmeff.results.storage import match_benchmarks, mismatch_warnings

if TYPE_CHECKING:
    from pytest_llmeff.gate.thresholds import Threshold
    from pytest_llmeff.lockstep.turnstile import Turnstile
    from pytest_llmeff.results.schema import BenchmarkRecord, Run


class Baseline:
    """This session's baseline and gate settings.

    ``thresholds``: metric -> tolerated worsening (``--llmeff-compare-fail``), extended per test by the marker's
    ``thresholds=``. ``alpha``: significance level of the one-sided tests. ``stored``: the run loaded by
    ``--llmeff-compare`` (None without one); ``name``: its file path. ``note``: why there is nothing to compare
    with yet (a first CI run). ``turnstile``: the lockstep pair under ``--llmeff-interleave``: as the candidate,
    each record is judged against the partner's record of the same benchmark, pair by pair; as the baseline,
    each record is handed to the candidate instead.

    The false-alarm budget: ``alpha`` holds for the whole run. Each tested comparison (a gated metric with rounds,
    of one benchmark) is held at alpha / m (Bonferroni, ``gate.FamilyBudget``), m from ``family_size``: counted
    before the first test runs, from the collected benchmark tests (``plan_family``) and the stored run.
    """

    def __init__(self, thresholds: Optional[Mapping[str, "Threshold"]] = None, alpha: float = DEFAULT_ALPHA,
                 stored: Optional["Run"] = None, name: Optional[str] = None, note: Optional[str] = None,
                 turnstile: Optional["Turnstile"] = None, history: Optional[Sequence["Run"]] = None,
                 history_skipped: Sequence[str] = (), inconclusive: Optional[str] = None):
        self.thresholds = dict(thresholds or {})
        self.inconclusive = inconclusive  # --llmeff-inconclusive: fail | warn | None (by the kind of baseline)
        self.alpha = alpha
        self.stored = stored
        self.name = name
        self.note = note
        self.turnstile = turnstile
        self._index = {(r.nodeid, r.name): r for r in stored.benchmarks} if stored is not None else {}
        # the stored sessions judged against (drift.py): the baseline first, then older stored runs
        self.history: list["Run"] = list(history) if history else ([stored] if stored is not None else [])
        self.history_skipped = list(history_skipped)
        self._sessions: dict[tuple[str, str], list["BenchmarkRecord"]] = {}
        for run in self.history:
            for r in run.benchmarks:
                self._sessions.setdefault((r.nodeid, r.name), []).append(r)
        self._planned: Optional[dict[str, tuple[str, ...]]] = None  # collected nodeid -> its gated metrics
        self.tested = 0  # tested comparisons made so far (verdicts with a p-value or an inconclusive test)
        self.direct = 0  # comparisons judged directly (figures measured once per variant)
        self.not_measured = 0  # gated metrics a side did not measure

    def plan_family(self, tests: Iterable[tuple[str, object]]) -> None:
        """Tell the baseline which benchmark tests this run collected, before any runs: ``(nodeid, variant)``
        pairs, ``variant`` a ``variants.Variant`` (its marker ``thresholds`` add to the command line's) or None.
        Call it from ``pytest_collection_finish`` on every process that judges (xdist workers too)."""
        planned: dict[str, tuple[str, ...]] = {}
        for nodeid, variant in tests:
            gated = dict.fromkeys(self.thresholds)
            for metric, _ in getattr(variant, "thresholds", None) or ():
                gated[metric] = None
            planned[str(nodeid)] = tuple(gated)
        self._planned = planned

    def family_size(self) -> tuple[Optional[int], str]:
        """(m, what it counts): the number of tested (benchmark, gated metric) comparisons this run can make.

        With a stored run: its benchmarks (only those collected now, when the collection is known) times their
        gated metrics that it measured (a comparison needs a stored figure). Otherwise (the lockstep candidate):
        the collected benchmark tests times their gated metrics. None when neither is known (then each test
        spends the budget alone, and the report says so). Figures measured once per variant are not counted:
        they are judged directly, with no test to false-alarm."""
        planned = self._planned
        if self.stored is not None:
            m, benchmarks = 0, 0
            for r in self.stored.benchmarks:
                if planned is not None and r.nodeid not in planned:
                    continue
                gated = planned[r.nodeid] if planned is not None else tuple(self.thresholds)
                benchmarks += 1
                m += tested_count(metric for metric in gated if metric in r.metrics)
            return m, f"{benchmarks} stored benchmark{'s' if benchmarks != 1 else ''} x gated metrics"
        if planned is not None:
            m = sum(tested_count(gated) for gated in planned.values())
            return m, f"{len(planned)} collected benchmark test{'s' if len(planned) != 1 else ''} x gated metrics"
        return None, ""

    def budget(self, thresholds: Mapping[str, "Threshold"]):
        """The ``gate.FamilyBudget`` for one test's comparisons (``thresholds``: its gated metrics)."""
        m, _ = self.family_size()
        if m is None or m < 1:
            return FamilyBudget(self.alpha, max(1, tested_count(thresholds)), "this test only: the run's size "
                                "is unknown")
        return FamilyBudget(self.alpha, max(m, 1), "the run")

    def budget_line(self) -> Optional[str]:
        """The correction used and the per-comparison level, for the report; None before anything was judged."""
        if not (self.tested or self.direct or self.not_measured):
            return None
        m, counts = self.family_size()
        parts = [f"false-alarm budget: --llmeff-alpha {self.alpha:g} is the chance of any false 'regressed' in "
                 "the whole run"]
        if m:
            parts.append(f"Bonferroni over m = {m} tested comparisons ({counts}): each at alpha/m = "
                         f"{self.alpha / m:.3g}; {self.tested} made")
            if self.tested > m:
                parts.append(f"WARNING more comparisons were made than counted before the run (named benchmarks "
                             f"or marker thresholds): the run's bound is {self.alpha:g} x {self.tested}/{m} = "
                             f"{self.alpha * self.tested / m:.3g}")
        else:
            parts.append(f"WARNING the run's size was unknown before the tests ran: Bonferroni over each test's "
                         f"own gated metrics only ({self.tested} tested comparisons made), so the whole run is "
                         f"not held to {self.alpha:g}")
        if self.direct:
            parts.append(f"{self.direct} once-per-variant figure{'s' if self.direct != 1 else ''} judged directly "
                         "against the threshold (no test)")
        if self.not_measured:
            parts.append(f"{self.not_measured} gated metric{'s' if self.not_measured != 1 else ''} not measured")
        return "; ".join(parts)

    @classmethod
    def from_options(cls, options, storage) -> "Baseline":
        """The baseline asked for by the options: ``--llmeff-compare=NAME|PATH`` or the latest stored run of
        this machine (``storage``: a ``storage.Storage`` with the current fingerprint). Raises
        ``StorageError``/``GateConfigError`` with one line. No stored run yet under ``latest``: a note."""
        thresholds = parse_thresholds(options.compare_fail) if options.compare_fail else {}
        name = options.compare
        policy = options.inconclusive
        if not name:
            return cls(thresholds, options.alpha, inconclusive=policy)
        if name == "latest":
            path = storage.latest(storage.fingerprint) or storage.latest()
            if path is None:
                return cls(thresholds, options.alpha, note=f"no stored run in {storage.root} to compare with yet",
                           inconclusive=policy)
        else:
            path = storage.resolve(name)
        runs, skipped = storage.history(path, options.compare_history)
        return cls(thresholds, options.alpha, stored=runs[0], name=str(path), history=runs,
                   history_skipped=skipped, inconclusive=policy)

    @property
    def fails_inconclusive(self) -> bool:
        """Whether an inconclusive gated comparison fails its test: ``--llmeff-inconclusive`` when given; else yes
        as a lockstep candidate (``--llmeff-ab``, ``--llmeff-interleave``: pairs were the unit and more were
        possible) and no against a stored baseline (a visible ``?`` and a warning)."""
        if self.inconclusive is not None:
            return self.inconclusive == "fail"
        return self.lockstep_role == "candidate"

    @property
    def lockstep_role(self) -> Optional[str]:
        return self.turnstile.role if self.turnstile is not None else None

    def label(self) -> Optional[str]:
        """What the run file names as its baseline."""
        if self.lockstep_role == "candidate":
            return f"interleave partner ({self.turnstile.directory})"
        return self.name

    def thresholds_for(self, variant) -> dict[str, "Threshold"]:
        """The thresholds that judge ``variant``: the command line's, extended by the marker's ``thresholds=``."""
        thresholds = dict(self.thresholds)
        if getattr(variant, "thresholds", None):
            thresholds.update(parse_thresholds(",".join(f"{k}:{v}" for k, v in variant.thresholds)))
        return thresholds

    def judge(self, record: "BenchmarkRecord", variant) -> None:
        """Fill ``record.verdicts`` (against the baseline, per threshold) and ``record.limits`` (the marker's
        absolute limits). As the lockstep baseline, hand the record to the candidate first."""
        if self.lockstep_role == "baseline":
            publish_record(self.turnstile, record)
        thresholds = self.thresholds_for(variant)
        base, paired = self._record_for(record)
        if base is not None:
            budget = self.budget(thresholds)
            sessions = None if paired else self._sessions.get((record.nodeid, record.name))
            stop = record.stop
            precise = [m for m, rel in ((stop.paired_achieved_rel or {}) if stop is not None else {}).items()
                       if paired and rel is not None and stop.paired_target_rel is not None
                       and rel <= stop.paired_target_rel]
            found = verdicts(base, record, thresholds, budget.level, paired, sessions, precise)
            if self.lockstep_role == "candidate" and not paired:
                found = [pairing_broke(v, PAIRING_BROKE) for v in found]
            for v in found:
                vr = VerdictRecord.from_verdict(v)
                if v.status == "not-measured":
                    self.not_measured += 1
                    record.warnings.append(f"gated metric {v.metric} was not measured in "
                                           f"{missing_side(base, record, v.metric)}: not compared")
                elif v.test == DIRECT:
                    self.direct += 1
                    vr.correction = "none: judged directly (one figure per variant)"
                else:
                    self.tested += 1
                    vr.alpha, vr.alpha_run, vr.comparisons = budget.level, budget.alpha, budget.comparisons
                    vr.correction = budget.describe()
                record.verdicts.append(vr)
        for limit in parse_limits(dict(variant.limits)) if variant.limits else []:
            r = check_limit(limit, record.metrics.get(limit.metric))
            record.limits.append(LimitRecord(metric=limit.metric, limit=limit.text, median=r.median,
                                             passed=r.passed, message=r.message))

    def _record_for(self, record: "BenchmarkRecord") -> tuple[Optional["BenchmarkRecord"], bool]:
        """(the baseline's record of this benchmark or None, whether its rounds pair with ``record``'s)."""
        if self.lockstep_role != "candidate":
            return self._index.get((record.nodeid, record.name)), False
        return partner_record(self.turnstile, record)

    def comparison_lines(self, current: Optional["Run"]) -> list[str]:
        """What the comparison found beyond the verdicts: the lockstep state, renamed/new/missing benchmarks
        and machine or library mismatches."""
        lines = []
        if self.turnstile is not None:
            t = self.turnstile
            alone = f"; went on alone: {t.alone_reason}" if t.alone_reason else ""
            lines.append(f"interleaved as the {t.role} with {t.directory}: {t.turns} turns passed{alone}")
        if self.note:
            lines.append(self.note)
        budget = self.budget_line()
        if budget:
            lines.append(budget)
        if self.stored is None or current is None:
            return lines + (resolution_lines(current.benchmarks) if current is not None else [])
        k = len(self.history)
        lines.append(f"compared with {self.name}" + (f" and the {k - 1} stored run{'s' if k != 2 else ''} before "
                                                     f"it (the spread between sessions)" if k > 1 else
                                                     " alone: one stored session, so a change cannot be told from "
                                                     "drift between sessions (store more runs, or use --llmeff-ab)"))
        lines += [f"history: skipped {line}" for line in self.history_skipped]
        lines += resolution_lines(current.benchmarks)
        lines += matching_lines(match_benchmarks(self.stored, current))
        lines += [f"WARNING {w}" for w in mismatch_warnings(self.stored, current)]
        return lines
