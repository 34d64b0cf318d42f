"""The text of a gate failure, shown as the failed test's report section (no traceback)."""

from __future__ import annotations


def _num(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def failure_text(records) -> str:
    """One line per regressed metric or failed limit: metric, baseline, current, change, threshold, and the
    p-value with the per-comparison level it was held against and the run's correction (or ``judged directly``
    for a figure measured once per variant)."""
    lines = []
    for record in records:
        for v in record.verdicts:
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
