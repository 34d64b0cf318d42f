"""The report's charts as Plotly figures: Pareto scatter plots with the front drawn, and per-round / per-token
distributions. The HTML report (``report/html.py``) embeds them; ``llmeff plot`` exports one as SVG or PNG.

Plotly is the optional ``report`` extra: it is imported inside each function (``require_plotly`` says which
extra to install in one line), never when the plugin loads.

Scatter (``scatter_figure``): one point per passed benchmark holding both metrics, at its medians in the
display units of the metric table (``metrics.MetricSpec.display``), with error bars spanning the 95% intervals of
the medians (none for once-per-variant figures). When both metrics have a direction, the Pareto front of the two
(``analysis.pareto_front``: dominance only beyond noise) is drawn as a dashed line through the front's points;
dominated points are grey and dimmed, and their hover names who dominates them. Hover shows the variant, both
values with their intervals, and whether it is on the front.

Distributions (``distribution_figure``): a box per benchmark with every sample drawn (per-round metrics:
latency, TTFT), or a violin (per-token metrics: ITL, many samples); rounds flagged as outliers by
``analysis.outlier_rounds`` are red crosses.
"""

from __future__ import annotations

from typing import Optional, Sequence

from pytest_llmeff.report import analysis
from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.metrics import METRICS, header_for, scale_for
from pytest_llmeff.report.terminal import cell
from pytest_llmeff.results.schema import BenchmarkRecord

FRONT_COLOUR = "#1f6fb4"
DOMINATED_COLOUR = "#9aa0a6"
OUTLIER_COLOUR = "#d62728"
DOMINATED_OPACITY = 0.35

#: the report's Pareto plots: (title, x alternatives, y alternatives); the first metric the run holds is used
PARETO_PLOTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Throughput vs quality drift", ("ppl_ratio", "kld_mean_nat"), ("throughput_tok_s",)),
    ("Throughput vs peak memory", ("peak_mem_bytes",), ("throughput_tok_s",)),
    ("Energy per token vs throughput", ("throughput_tok_s",), ("energy_j_per_tok",)),
)
#: the distribution plots: (metric, kind)
DISTRIBUTIONS: tuple[tuple[str, str], ...] = (("latency_s", "box"), ("ttft_s", "box"), ("itl_s", "violin"))


def require_plotly():
    """``plotly`` itself; a UsageProblem naming the extra when it is not installed."""
    try:
        import plotly
    except ImportError:
        raise UsageProblem('the HTML report and plots need Plotly: pip install "pytest-llmeff[report]"') from None
    return plotly


def axis_title(metric: str) -> str:
    """The axis title: the column header with its unit, and which way is better."""
    way = analysis.direction(metric)
    hint = {"higher": "higher is better", "lower": "lower is better"}.get(way)
    return f"{header_for(metric)} ({hint})" if hint else header_for(metric)


def _value_text(record: BenchmarkRecord, metric: str) -> str:
    text = cell(record, metric)
    if analysis.sampled(metric) and record.metrics[metric].has_interval:
        m, scale = record.metrics[metric], scale_for(metric)
        text += f" [{m.ci_low * scale:.4g}, {m.ci_high * scale:.4g}]"
    return f"{header_for(metric)}: {text}"


def _error_bars(records: Sequence[BenchmarkRecord], metric: str) -> Optional[dict]:
    scale = scale_for(metric)
    plus, minus = [], []
    for r in records:
        m = r.metrics[metric]
        has = analysis.sampled(metric) and m.has_interval
        plus.append((m.ci_high - m.median) * scale if has else 0.0)
        minus.append((m.median - m.ci_low) * scale if has else 0.0)
    if not any(plus) and not any(minus):
        return None
    return dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1.2, width=4)


def scatter_figure(records: Sequence[BenchmarkRecord], x: str, y: str, title: Optional[str] = None):
    """One scatter of ``y`` against ``x`` over the passed records holding both (see the module docstring).
    Raises UsageProblem when no benchmark holds both metrics."""
    require_plotly()
    import plotly.graph_objects as go

    points = [r for r in records if r.outcome == "passed" and x in r.metrics and y in r.metrics]
    if not points:
        lacking = [m for m in (x, y) if not any(m in r.metrics for r in records)]
        why = f"no benchmark holds {' or '.join(lacking)}" if lacking else f"no benchmark holds both {x} and {y}"
        raise UsageProblem(f"cannot plot {y} against {x}: {why}")
    ranked = analysis.direction(x) != "none" and analysis.direction(y) != "none" and x != y
    pareto = analysis.pareto_front(points, (x, y)) if ranked else None
    labels = [analysis.label(r) for r in points]
    cut = len(analysis.common_prefix(points))
    short = [name[cut:] for name in labels]  # on the chart; the hover has the full id
    groups = [("front", [i for i in range(len(points)) if pareto is None or i in pareto.front])]
    if pareto is not None:
        groups.append(("dominated", sorted(pareto.dominated)))
    fig = go.Figure()
    for kind, idx in groups:
        if not idx:
            continue
        sub = [points[i] for i in idx]
        status = []
        for i in idx:
            if pareto is None:
                status.append("")
            elif i in pareto.front:
                status.append("on the Pareto front")
            else:
                status.append("dominated by " + ", ".join(labels[j] for j in pareto.dominated[i]))
        front = kind == "front"
        fig.add_trace(go.Scatter(
            x=[r.metrics[x].median * scale_for(x) for r in sub], y=[r.metrics[y].median * scale_for(y) for r in sub],
            mode="markers+text", text=[short[i] for i in idx], textposition="top center", cliponaxis=False,
            name="Pareto front" if front and pareto is not None else ("benchmarks" if front else "dominated"),
            marker=dict(size=12 if front else 10, color=FRONT_COLOUR if front else DOMINATED_COLOUR,
                        line=dict(width=1, color="#333" if front else DOMINATED_COLOUR)),
            opacity=1.0 if front else DOMINATED_OPACITY,
            error_x=_error_bars(sub, x), error_y=_error_bars(sub, y),
            customdata=[[labels[i], _value_text(points[i], x), _value_text(points[i], y), s]
                        for i, s in zip(idx, status)],
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<br>%{customdata[2]}<br>%{customdata[3]}"
                          "<extra></extra>"))
    if pareto is not None and len(pareto.front) > 1:
        line = sorted(pareto.front, key=lambda i: points[i].metrics[x].median)
        fig.add_trace(go.Scatter(
            x=[points[i].metrics[x].median * scale_for(x) for i in line],
            y=[points[i].metrics[y].median * scale_for(y) for i in line],
            mode="lines", name="front", line=dict(color=FRONT_COLOUR, dash="dash", width=1.5), hoverinfo="skip"))
    prefix = analysis.common_prefix(points)
    title = title or f"{header_for(y)} vs {header_for(x)}"
    fig.update_layout(title=title + (f" <span style='font-size:11px'>({prefix}…)</span>" if prefix else ""),
                      xaxis_title=axis_title(x),
                      yaxis_title=axis_title(y), template="plotly_white", height=420,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.2))
    return fig


def distribution_figure(records: Sequence[BenchmarkRecord], metric: str, kind: str = "box"):
    """Every passed benchmark's samples of ``metric`` as a box (all points shown) or a violin; None when no
    benchmark holds it."""
    require_plotly()
    import plotly.graph_objects as go

    held = [r for r in records if r.outcome == "passed" and metric in r.metrics]
    if not held:
        return None
    scale = scale_for(metric)
    fig = go.Figure()
    flagged_x, flagged_y, flagged_text = [], [], []
    cut = len(analysis.common_prefix(held))
    for r in held:
        name = analysis.label(r)[cut:]
        values = [v * scale for v in r.metrics[metric].samples]
        common = dict(y=values, name=name, customdata=list(range(len(values))), marker=dict(color=FRONT_COLOUR))
        if kind == "violin":
            fig.add_trace(go.Violin(**common, box_visible=True, meanline_visible=False, points=False,
                                    hovertemplate=f"<b>{name}</b><br>%{{y:.4g}}<extra></extra>"))
        else:
            fig.add_trace(go.Box(**common, boxpoints="all", jitter=0.3, pointpos=0,
                                 hovertemplate=f"<b>{name}</b><br>round %{{customdata}}: %{{y:.4g}}"
                                               "<extra></extra>"))
        for i in analysis.outliers_of(r).get(metric, []):
            flagged_x.append(name)
            flagged_y.append(values[i])
            flagged_text.append(f"{name}: round {i} is an outlier (MAD z > {analysis.OUTLIER_Z:g})")
    if flagged_x:
        fig.add_trace(go.Scatter(x=flagged_x, y=flagged_y, mode="markers", name="outlier round",
                                 marker=dict(symbol="x", size=11, color=OUTLIER_COLOUR), text=flagged_text,
                                 hovertemplate="%{text}: %{y:.4g}<extra></extra>"))
    spec = METRICS.get(metric)
    per = "per generated token" if spec is not None and spec.sampling == "token" else "per timed round"
    prefix = analysis.common_prefix(held)
    fig.update_layout(title=f"{header_for(metric)}, {per}" + (f" <span style='font-size:11px'>({prefix}…)</span>"
                                                              if prefix else ""), yaxis_title=axis_title(metric),
                      template="plotly_white", height=380, showlegend=bool(flagged_x),
                      margin=dict(l=60, r=20, t=50, b=80))
    return fig


def pareto_plots(records: Sequence[BenchmarkRecord], objectives: Optional[Sequence[str]] = None
                 ) -> list[tuple[str, str, str]]:
    """The (title, x, y) of each Pareto plot the records allow: ``PARETO_PLOTS`` with the first held metric of
    each alternative, then the chosen ``objectives`` when they are two and not one of those."""
    held = {m for r in records if r.outcome == "passed" for m in r.metrics}
    plots = []
    for title, xs, ys in PARETO_PLOTS:
        x = next((m for m in xs if m in held), None)
        y = next((m for m in ys if m in held), None)
        if x is not None and y is not None:
            plots.append((title, x, y))
    if objectives is not None and len(objectives) == 2:
        x, y = objectives[1], objectives[0]
        if x in held and y in held and not any({x, y} == {px, py} for _, px, py in plots):
            plots.append((f"Chosen objectives: {header_for(y)} vs {header_for(x)}", x, y))
    return plots
