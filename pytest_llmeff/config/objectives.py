"""What the analysis weighs: the Pareto objectives and the efficiency score's weights, their defaults and their
parsers. On the lowest floor (metric table and errors only) so that ``config.py`` can validate
``--llmeff-pareto`` and ``--llmeff-score-weights`` in every pytest run without loading the analysis.
"""

from __future__ import annotations

from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.metrics import METRICS

#: the Pareto objectives when none are chosen: speed against quality drift
DEFAULT_PARETO: tuple[str, ...] = ("throughput_tok_s", "ppl_ratio")
#: the efficiency score's weights when none are given (metric -> weight >= 0)
DEFAULT_WEIGHTS: dict[str, float] = {"throughput_tok_s": 1.0, "peak_mem_bytes": 1.0, "energy_j_per_tok": 1.0,
                                     "ppl_ratio": 1.0}


def parse_objectives(text: str, what: str = "--llmeff-pareto") -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``: two or more distinct metrics that have a direction, else UsageProblem."""
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    ranked = sorted(m for m, spec in METRICS.items() if spec.direction != "none")
    for n in names:
        spec = METRICS.get(n)
        if spec is None:
            raise UsageProblem(f"{what}: {n!r} is not a metric; give two or more of: {', '.join(ranked)}")
        if spec.direction == "none":
            raise UsageProblem(f"{what}: {n!r} has no direction (neither higher nor lower is better), so it "
                               f"cannot be an objective; give two or more of: {', '.join(ranked)}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise UsageProblem(f"{what}={text!r}: give two or more different metrics, comma separated, e.g. "
                           f"{','.join(DEFAULT_PARETO)}")
    return names


def parse_weights(text: str, what: str = "--llmeff-score-weights") -> dict[str, float]:
    """``"throughput_tok_s:2,ppl_ratio:1"`` -> ``{metric: weight}``: metrics with a direction, weights >= 0, at
    least one above 0, else UsageProblem."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        name, sep, raw = part.partition(":")
        name = name.strip()
        spec = METRICS.get(name)
        if spec is None or spec.direction == "none":
            why = "is not a metric" if spec is None else "has no direction"
            raise UsageProblem(f"{what}: {name!r} {why}; give metric:weight pairs such as "
                               "throughput_tok_s:2,peak_mem_bytes:1 with metrics that have a direction")
        try:
            weight = float(raw) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not weight >= 0 or weight == float("inf"):
            raise UsageProblem(f"{what}: {part!r} needs a weight >= 0 after the colon, e.g. {name}:1")
        weights[name] = weight
    if not any(w > 0 for w in weights.values()):
        raise UsageProblem(f"{what}={text!r}: give at least one metric with a weight above 0, e.g. "
                           "throughput_tok_s:1")
    return weights
