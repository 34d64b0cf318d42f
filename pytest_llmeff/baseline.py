"""What a record is judged against: a stored run or the lockstep partner, and the judging itself.

One object, ``Baseline``, used by the plugin (per record, as it is made) and by ``llmeff compare`` (per pair of
records of two stored runs), so that both judge the same way, with the same thresholds, tests and words for
renamed, new and missing benchmarks. Pure logic over ``results`` models; no pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping, Optional

if TYPE_CHECKING:  # the gate (scipy's tests) loads only when something is judged
    from pytest_llmeff.gate import Threshold
    from pytest_llmeff.interleave import Turnstile
    from pytest_llmeff.results import BenchmarkRecord, Run
    from pytest_llmeff.storage import Matching


def verdicts(base: "BenchmarkRecord", current: "BenchmarkRecord", thresholds: Mapping[str, "Threshold"],
             alpha: float, paired: bool) -> list:
    """``gate.Verdict`` per threshold whose metric both records measured. ``paired``: rounds alternated in time
    (lockstep), so the Wilcoxon signed-rank test on per-pair ratios; else Mann-Whitney U on two samples."""
    from pytest_llmeff.gate import compare, compare_paired

    judge = compare_paired if paired else compare
    return [judge(metric, base.metrics[metric].samples, current.metrics[metric].samples, threshold, alpha=alpha)
            for metric, threshold in thresholds.items()
            if metric in base.metrics and metric in current.metrics]


def unmeasured(base: "BenchmarkRecord", current: "BenchmarkRecord", thresholds: Iterable[str]) -> list[str]:
    """Gated metrics that one side did not measure (said, never skipped silently)."""
    return [m for m in thresholds if m not in base.metrics or m not in current.metrics]


def matching_lines(matching: "Matching") -> list[str]:
    """The renamed, new and missing benchmarks of a comparison, one line each."""
    lines = [f"renamed: {old.nodeid} -> {new.nodeid} (not compared: give it its old name back, or store a new "
             "baseline)" for old, new in matching.renamed]
    lines += [f"new (no baseline): {rec.nodeid}" for rec in matching.new]
    lines += [f"missing (in the baseline only): {rec.nodeid}" for rec in matching.missing]
    return lines


def lockstep_pair(base: "Run", current: "Run") -> bool:
    """True when the two runs are the two sides of one ``--llmeff-interleave`` pair."""
    b, c = base.interleave or {}, current.interleave or {}
    return bool(b and c and b.get("dir") == c.get("dir") and b.get("role") != c.get("role"))


class Baseline:
    """This session's baseline and gate settings.

    ``thresholds``: metric -> tolerated worsening (``--llmeff-compare-fail``), extended per test by the marker's
    ``thresholds=``. ``alpha``: significance level of the one-sided tests. ``stored``: the run loaded by
    ``--llmeff-compare`` (None without one); ``name``: its file path. ``note``: why there is nothing to compare
    with yet (a first CI run). ``turnstile``: the lockstep pair under ``--llmeff-interleave``: as the candidate,
    each record is judged against the partner's record of the same benchmark, pair by pair; as the baseline,
    each record is handed to the candidate instead.
    """

    def __init__(self, thresholds: Optional[Mapping[str, "Threshold"]] = None, alpha: float = 0.01,
                 stored: Optional["Run"] = None, name: Optional[str] = None, note: Optional[str] = None,
                 turnstile: Optional["Turnstile"] = None):
        self.thresholds = dict(thresholds or {})
        self.alpha = alpha
        self.stored = stored
        self.name = name
        self.note = note
        self.turnstile = turnstile
        self._index = {(r.nodeid, r.name): r for r in stored.benchmarks} if stored is not None else {}

    @classmethod
    def from_options(cls, options, storage) -> "Baseline":
        """The baseline asked for by the options: ``--llmeff-compare=NAME|PATH`` or the latest stored run of
        this machine (``storage``: a ``storage.Storage`` with the current fingerprint). Raises
        ``StorageError``/``GateConfigError`` with one line. No stored run yet under ``latest``: a note."""
        from pytest_llmeff.gate import parse_thresholds

        thresholds = parse_thresholds(options.compare_fail) if options.compare_fail else {}
        name = options.compare
        if not name:
            return cls(thresholds, options.alpha)
        if name == "latest":
            path = storage.latest(storage.fingerprint) or storage.latest()
            if path is None:
                return cls(thresholds, options.alpha, note=f"no stored run in {storage.root} to compare with yet")
        else:
            path = storage.resolve(name)
        return cls(thresholds, options.alpha, stored=storage.load(path), name=str(path))

    @property
    def lockstep_role(self) -> Optional[str]:
        return self.turnstile.role if self.turnstile is not None else None

    def label(self) -> Optional[str]:
        """What the run file names as its baseline."""
        if self.lockstep_role == "candidate":
            return f"interleave partner ({self.turnstile.directory})"
        return self.name

    def judge(self, record: "BenchmarkRecord", variant) -> None:
        """Fill ``record.verdicts`` (against the baseline, per threshold) and ``record.limits`` (the marker's
        absolute limits). As the lockstep baseline, hand the record to the candidate first."""
        from pytest_llmeff.gate import check_limit, parse_limits, parse_thresholds
        from pytest_llmeff.results import LimitRecord, VerdictRecord

        if self.lockstep_role == "baseline":
            self.turnstile.publish(record.nodeid, record.name, record.model_dump_json())
        thresholds = dict(self.thresholds)
        if variant.thresholds:
            thresholds.update(parse_thresholds(",".join(f"{k}:{v}" for k, v in variant.thresholds)))
        base, paired = self._record_for(record)
        if base is not None:
            for v in verdicts(base, record, thresholds, self.alpha, paired):
                record.verdicts.append(VerdictRecord.from_verdict(v))
            for metric in unmeasured(base, record, thresholds):
                side = "this run" if metric not in record.metrics else "the baseline"
                record.warnings.append(f"gated metric {metric} was not measured in {side}: not compared")
        for limit in parse_limits(dict(variant.limits)) if variant.limits else []:
            r = check_limit(limit, record.metrics.get(limit.metric))
            record.limits.append(LimitRecord(metric=limit.metric, limit=limit.text, median=r.median,
                                             passed=r.passed, message=r.message))

    def _record_for(self, record: "BenchmarkRecord") -> tuple[Optional["BenchmarkRecord"], bool]:
        """(the baseline's record of this benchmark or None, whether its rounds pair with ``record``'s)."""
        if self.lockstep_role != "candidate":
            return self._index.get((record.nodeid, record.name)), False
        from pytest_llmeff.interleave import rounds_pair
        from pytest_llmeff.results import BenchmarkRecord

        text = self.turnstile.partner_record(record.nodeid, record.name)
        if text is None:
            record.warnings.append(f"the interleave baseline has no record of this benchmark "
                                   f"({self.turnstile.alone_reason or 'not published'}): not compared")
            return None, False
        base = BenchmarkRecord.model_validate_json(text)
        paired = rounds_pair(base, record)
        if not paired:
            record.warnings.append("rounds were not interleaved with the baseline's throughout (a side went on "
                                   "alone, or the round counts differ): compared as two runs (Mann-Whitney U)")
        return base, paired

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
        if self.stored is None or current is None:
            return lines
        from pytest_llmeff.storage import match_benchmarks, mismatch_warnings

        lines.append(f"compared with {self.name}")
        lines += matching_lines(match_benchmarks(self.stored, current))
        lines += [f"WARNING {w}" for w in mismatch_warnings(self.stored, current)]
        return lines
