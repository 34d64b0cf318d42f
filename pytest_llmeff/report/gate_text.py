"""The text of a gate failure, shown as the failed test's report section (no traceback)."""

from __future__ import annotations


def _num(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def failure_text(records, inconclusive: bool = False) -> str:
    """One line per regressed metric or failed limit: metric, baseline, current, change, threshold, and the
    p-value with the per-comparison level it was held against and the run's correction (or ``judged directly``
    for a figure measured once per variant). ``inconclusive``: also one line per comparison that could not
    resolve its threshold (it fails the test under a lockstep pair), with what was measured and what to do."""
    lines = []
    for record in records:
        for v in record.verdicts:
            if inconclusive and v.status == "inconclusive":
                lines.append(inconclusive_line(record.variant.id, v))
                continue
            if v.status != "regressed":
                continue
            change = "n/a" if v.change is None else f"{v.change:+.1%}"
            head = (f"REGRESSED {record.variant.id} {v.metric}: baseline {_num(v.baseline_median)}, current "
                    f"{_num(v.current_median)}, change {change}, threshold {v.threshold}, ")
            if v.p_value is None:  # a figure measured once per variant: no test
                lines.append(head + f"judged directly ({v.test or 'one figure per variant'})")
                continue
            level = f" < {v.alpha:.3g}" if v.alpha is not None else ""
            correction = f", {v.correction}" if v.correction else ""
            lines.append(head + f"p={_num(v.p_value)}{level} ({v.test or 'one-sided Mann-Whitney U'}){correction}")
        for lim in record.limits:
            if not lim.passed:
                lines.append(f"LIMIT FAILED {record.variant.id} {lim.metric}: median {_num(lim.median)}, "
                             f"limit {lim.limit} ({lim.message})")
    return "\n".join(lines)


def inconclusive_line(variant_id: str, v) -> str:
    """``INCONCLUSIVE <variant> <metric>: change -51.3% against 5%, resolves about 51% (MDE); ...``: one line."""
    change = "n/a" if v.change is None else f"{v.change:+.1%}"
    mde = f", resolves about {v.mde * 100:.0f}% (minimum detectable effect)" if v.mde is not None else ""
    return (f"INCONCLUSIVE {variant_id} {v.metric}: change {change} against threshold {v.threshold}{mde}; allow "
            "more pairs (--llmeff-max-rounds, --llmeff-max-time), quiet the machine, or --llmeff-inconclusive=warn")
