"""The HTML report: one self-contained file that opens offline (``--llmeff-html=PATH``, ``llmeff report``).

Plotly's JavaScript is embedded once in the page (``plotly.offline.get_plotlyjs``, as ``include_plotlyjs=True``
does); no script, style sheet or font is fetched from the network, and the page's own styles and its table
sorter are inline. What it holds, per group of benchmarks (``analysis.sections``; models of one group are
compared with each other):

- provenance: machine, versions, commit, how the run ended, energy method and whether it is estimated;
- the comparison table: every metric the group holds, cells as in the terminal (``median ±X%``, ``*`` best with
  its interval clear of all others, ``=`` tied, ``!`` imprecise, ``?`` no interval, ``~`` estimated energy),
  sortable by clicking a header (by the median), with the Pareto status, the efficiency score, outlier rounds,
  the change against the baseline and every warning in the variant's own row;
- the Pareto plots (``figures.pareto_plots``), the front over the chosen objectives, the efficiency score with
  its weights, and the rankings;
- distributions of latency and TTFT per round and ITL per token (``figures.DISTRIBUTIONS``);
- baseline deltas and gate verdicts: the records' own (``--llmeff-compare``, lockstep) or those given
  (``llmeff report --baseline``);
- the spread of each metric across variants.

Plotly is imported only inside ``render_html`` (the ``report`` extra).
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pytest_llmeff.report import analysis
from pytest_llmeff.metrics import METRICS, header_for, scale_for
from pytest_llmeff.report import figures
from pytest_llmeff.report.markdown import table_metrics
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.report.terminal import cell, legend_lines, verdict_cell
from pytest_llmeff.results.schema import BenchmarkRecord, Run, VerdictRecord

#: (nodeid, benchmark name) -> the verdicts of that benchmark against a baseline
Verdicts = Mapping[tuple[str, str], Sequence[VerdictRecord]]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1d1d1f;
background:#fff;max-width:1500px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f3f4f6;white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e5e7eb}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}.best{font-weight:700;color:#0b6e2e}.tied{color:#7a5c00}
.dominated{color:#888}.warn{color:#8a4b00;font-size:12px}td.warn{min-width:980px}table.sortable td:first-child{white-space:nowrap}ul.warnings li{margin:0}.bad{color:#b00020;font-weight:700}
.note{color:#555;font-size:13px}.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px}@media (max-width:1100px){.grid{grid-template-columns:minmax(0,1fr)}}
.llmeff-chart{border:1px solid #eee;min-height:380px;min-width:0;overflow:hidden}ul.warnings{margin:2px 0;padding-left:18px}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}dl.prov dt{font-weight:600}
dl.prov dd{margin:0}code{font-size:12px}
"""

# click a header: sort the body rows by that column (data-sort holds the median; text otherwise), again: reverse
_SORTER = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.dataset.dir!=='asc';
      t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir;});th.dataset.dir=asc?'asc':'desc';
      function key(r){var c=r.cells[col];var s=c?c.getAttribute('data-sort'):null;
        if(s!==null&&s!==''&&!isNaN(parseFloat(s)))return parseFloat(s);return c?c.textContent.trim():'';}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x==='number'&&typeof y==='number')return asc?x-y:y-x;
        if(typeof x==='number')return -1;if(typeof y==='number')return 1;
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _provenance(run: Run, source: Optional[str], baseline_label: Optional[str]) -> str:
    m = run.machine
    ram = f"{m.ram_bytes / 2**30:.1f} GiB" if m.ram_bytes else "unknown"
    gpus = ", ".join(str(g.get("name", g)) for g in m.gpus) or "none"
    energies = sorted({(r.energy.method, r.energy.estimated) for r in run.benchmarks if r.energy is not None})
    energy = "; ".join(f"{method} ({'ESTIMATED: a model of power, no meter read' if est else 'measured by a meter'})"
                       for method, est in energies) or "not measured"
    ending = "complete" if run.complete and not run.interrupted else \
        f"NOT complete: {run.stop_reason or 'stopped early'} ({len(run.unfinished)} benchmark test(s) unfinished)"
    commit = run.commit
    rows = [
        ("run", f"{run.started_at} .. {run.finished_at}" + (f" · {source}" if source else "")),
        ("ended", ending),
        ("machine", f"{m.cpu}, {m.cores_logical or '?'} logical cores, {ram} RAM, GPUs: {gpus}"),
        ("system", f"{m.os}, Python {m.python}" + (f", host {m.hostname}" if m.hostname else "")),
        ("commit", f"{commit.id or 'unknown'}{' (dirty)' if commit.dirty else ''}"
                   + (f" on {commit.branch}" if commit.branch else "")),
        ("versions", ", ".join(f"{k} {v}" for k, v in run.versions.items() if v)),
        ("energy", energy),
        ("pytest", " ".join(run.pytest_args) or "-"),
    ]
    if baseline_label or run.baseline:
        rows.append(("baseline", baseline_label or run.baseline))
    if run.interleave:
        rows.append(("lockstep", ", ".join(f"{k}={v}" for k, v in run.interleave.items())))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<h2>Provenance</h2><dl class="prov">{body}</dl>'


def _chart(fig, name: str) -> str:
    div = fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
    return f'<div class="llmeff-chart" data-chart="{_e(name)}">{div}</div>'


def _mark_class(mark: str) -> str:
    return {analysis.BEST: "best", analysis.TIED: "tied"}.get(mark, "")


def _table(rows: list[BenchmarkRecord], pareto: analysis.Pareto, scores: analysis.Scores,
           verdicts: Optional[Verdicts], target_ci_pct: Optional[float]) -> str:
    metrics = table_metrics(rows)
    marks = {m: analysis.best_marks(rows, m, target_ci_pct) for m in metrics}
    head = ["benchmark", "model", "precision", "quant", "batch"] + [header_for(m) for m in metrics] + [
        "Pareto", "score", "outlier rounds (from 0)", "vs baseline", "outcome", "warnings"]
    titles = [""] * 5 + [f"{m} ({METRICS[m].unit}, {METRICS[m].direction} is better)" if m in METRICS else m
                         for m in metrics] + [""] * 6
    out = ['<div class="scroll"><table class="sortable"><thead><tr>']
    out += [f'<th title="{_e(t)}">{_e(h)}</th>' for h, t in zip(head, titles)]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        v = r.variant
        cells = [f"<td>{_e(analysis.label(r))}</td>", f"<td>{_e(v.model)}</td>", f"<td>{_e(v.precision)}</td>",
                 f"<td>{_e(v.quantization or '-')}</td>", f'<td class="num" data-sort="{v.batch_size}">'
                                                            f"{v.batch_size}</td>"]
        for m in metrics:
            mark = marks[m].get(i, "")
            sort = r.metrics[m].median * scale_for(m) if m in r.metrics else ""
            cls = " ".join(c for c in ("num", _mark_class(mark)) if c)
            cells.append(f'<td class="{cls}" data-sort="{sort}">{_e(cell(r, m, target_ci_pct, mark))}</td>')
        if i in pareto.front:
            status = '<td class="best">front</td>'
        elif i in pareto.dominated:
            by = ", ".join(analysis.label(rows[j]) for j in pareto.dominated[i])
            status = f'<td class="dominated" title="dominated by {_e(by)}">dominated</td>'
        else:
            status = f'<td class="note">lacks {_e(", ".join(pareto.missing.get(i, ())) or "-")}</td>'
        cells.append(status)
        score = scores.scores.get(i)
        cells.append(f'<td class="num" data-sort="{"" if score is None else f"{score:.3f}"}">'
                     f'{"-" if score is None else f"{score:.0f}"}</td>')
        outl = analysis.outliers_of(r)  # the rounds here, which metric flagged which in the tooltip
        rounds = sorted({i for found in outl.values() for i in found})
        detail = "; ".join(f"{m}: {found}" for m, found in outl.items())
        cells.append(f'<td title="{_e(detail)}" data-sort="{len(rounds)}">'
                     f"{_e(', '.join(map(str, rounds)) if rounds else '-')}</td>")
        mine = _verdicts_of(r, verdicts)
        shown = r.model_copy(update={"verdicts": list(mine)}) if mine is not r.verdicts else r
        vtext = verdict_cell(shown)
        vcls = ' class="bad"' if any(x.status == "regressed" for x in mine) or any(
            not lim.passed for lim in r.limits) else ""
        cells.append(f"<td{vcls}>{_e(vtext)}</td>")
        cells.append(f'<td{"" if r.outcome == "passed" else " class=bad"}>'
                     f'{_e("ok" if r.outcome == "passed" else r.outcome)}</td>')
        warns = "".join(f"<li>{_e(w)}</li>" for w in r.warnings)
        cells.append(f'<td class="warn">{f"<ul class=warnings>{warns}</ul>" if warns else "-"}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    legend = legend_lines(rows, target_ci_pct)
    out.append('<p class="note">' + "<br>".join(_e(line) for line in legend) +
               "<br>Click a header to sort by it (by the median). Pareto: front = no other benchmark is better "
               "beyond noise in one objective without being worse in another.</p>")
    return "".join(out)


def _verdicts_of(record: BenchmarkRecord, verdicts: Optional[Verdicts]) -> Sequence[VerdictRecord]:
    if verdicts is None:
        return record.verdicts
    return verdicts.get((record.nodeid, record.name), [])


def _analysis_text(rows: list[BenchmarkRecord], pareto: analysis.Pareto, scores: analysis.Scores,
                   target_ci_pct: Optional[float]) -> str:
    objs = ", ".join(f"{o} ({analysis.direction(o)} is better)" for o in pareto.objectives)
    front = ", ".join(analysis.label(rows[i]) for i in pareto.front) or "none"
    out = [f"<h3>Pareto front over {_e(objs)}</h3><p>front: <b>{_e(front)}</b></p><ul>"]
    for i, by in pareto.dominated.items():
        out.append(f"<li class=dominated>{_e(analysis.label(rows[i]))}: dominated by "
                   f"{_e(', '.join(analysis.label(rows[j]) for j in by))}</li>")
    for i, lacks in pareto.missing.items():
        out.append(f"<li class=note>{_e(analysis.label(rows[i]))}: not ranked, lacks {_e(', '.join(lacks))}</li>")
    out.append("</ul>")
    weights = ", ".join(f"{m} ×{w:g}" for m, w in scores.weights.items()) or "none usable"
    out.append(f"<h3>Efficiency score</h3><p class=note>weighted geometric mean of each benchmark's ratio to the "
               f"best median, ×100 (100 = best in every weighted metric); weights: {_e(weights)}"
               + "".join(f"; {_e(m)} left out: {_e(why)}" for m, why in scores.dropped.items())
               + ". A summary of medians without an interval: read the table for what is resolved.</p>")
    ordered = sorted(scores.scores.items(), key=lambda kv: -kv[1])
    out.append("<ol>" + "".join(f"<li>{_e(analysis.label(rows[i]))}: {s:.0f}</li>" for i, s in ordered) + "</ol>")
    out.append("<h3>Rankings</h3><p class=note>best first; * best with its interval clear of all others, "
               "= tied for best (overlapping intervals)</p><ul>")
    for rk in analysis.rankings(rows, target_ci_pct=target_ci_pct):
        items = ", ".join(f"{analysis.label(e.record)}{' ' + e.mark if e.mark else ''}" for e in rk.entries)
        out.append(f"<li><b>{_e(rk.metric)}</b> ({_e(rk.direction)} is better): {_e(items)}</li>")
    out.append("</ul>")
    return "".join(out)


def _verdict_table(rows: list[BenchmarkRecord], verdicts: Optional[Verdicts]) -> str:
    lines = []
    for r in rows:
        for v in _verdicts_of(r, verdicts):
            change = "n/a" if v.change is None else f"{v.change:+.1%}"
            p = "-" if v.p_value is None else f"{v.p_value:.3g}"
            cls = ' class="bad"' if v.status == "regressed" else ""
            lines.append(f"<tr><td>{_e(analysis.label(r))}</td><td>{_e(v.metric)}</td>"
                         f'<td class="num">{_e("-" if v.baseline_median is None else f"{v.baseline_median:.4g}")}'
                         f'</td><td class="num">{_e("-" if v.current_median is None else f"{v.current_median:.4g}")}'
                         f'</td><td class="num">{_e(change)}</td><td>{_e(v.threshold)}</td><td class="num">{p}</td>'
                         f"<td>{_e(v.test or '-')}</td><td{cls}>{_e(v.status)}</td><td class=note>{_e(v.message)}"
                         "</td></tr>")
        for lim in r.limits:
            cls = "" if lim.passed else ' class="bad"'
            lines.append(f"<tr><td>{_e(analysis.label(r))}</td><td>{_e(lim.metric)}</td><td>limit</td>"
                         f'<td class="num">{_e("-" if lim.median is None else f"{lim.median:.4g}")}</td><td></td>'
                         f"<td>{_e(lim.limit)}</td><td></td><td></td><td{cls}>{'ok' if lim.passed else 'failed'}"
                         f"</td><td class=note>{_e(lim.message)}</td></tr>")
    if not lines:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("benchmark", "metric", "baseline", "current", "change", "threshold",
                                             "p", "test", "verdict", "message"))
    return (f'<h3>Baseline deltas and gate verdicts</h3><div class="scroll"><table class="sortable"><thead><tr>'
            f"{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>")


def _spread_table(rows: list[BenchmarkRecord]) -> str:
    spreads = analysis.spread(rows)
    if not spreads:
        return ""
    out = ['<h3>Across variants</h3><div class="scroll"><table class="sortable"><thead><tr><th>metric</th>'
           "<th>n</th><th>lowest</th><th>median of medians</th><th>highest</th><th>max/min</th><th>CV</th>"
           "</tr></thead><tbody>"]
    for s in spreads:
        scale = scale_for(s.metric)
        out.append(f"<tr><td>{_e(header_for(s.metric))}</td><td class=num>{s.n}</td>"
                   f"<td class=num>{s.low * scale:.4g} ({_e(analysis.label(rows[s.low_index]))})</td>"
                   f"<td class=num>{s.median * scale:.4g}</td>"
                   f"<td class=num>{s.high * scale:.4g} ({_e(analysis.label(rows[s.high_index]))})</td>"
                   f"<td class=num>{'-' if s.ratio is None else f'{s.ratio:.3g}'}</td>"
                   f"<td class=num>{'-' if s.cv is None else f'{s.cv:.1%}'}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _section(group: Optional[str], rows: list[BenchmarkRecord], objectives: Optional[Sequence[str]],
             weights: Optional[Mapping[str, float]], verdicts: Optional[Verdicts],
             target_ci_pct: Optional[float], n: int) -> str:
    objs = tuple(objectives) if objectives else analysis.default_objectives(rows)
    pareto = analysis.pareto_front(rows, objs)
    scores = analysis.efficiency_scores(rows, weights)
    out = [f"<h2>{'group: ' + _e(group) if group else 'benchmarks'} ({len(rows)})</h2>",
           _table(rows, pareto, scores, verdicts, target_ci_pct)]
    plots = figures.pareto_plots(rows, objs)
    charts = [_chart(figures.scatter_figure(rows, x, y, title), f"pareto-{n}-{k}")
              for k, (title, x, y) in enumerate(plots)]
    if charts:
        out.append(f"<h3>Pareto plots</h3><p class=note>each point a benchmark at its medians, bars its 95% "
                   "intervals; the dashed line joins the front of the two metrics, dominated points are grey "
                   f"and dimmed; hover for the variant</p><div class=grid>{''.join(charts)}</div>")
    out.append(_analysis_text(rows, pareto, scores, target_ci_pct))
    dists = []
    for metric, kind in figures.DISTRIBUTIONS:
        fig = figures.distribution_figure(rows, metric, kind)
        if fig is not None:
            dists.append(_chart(fig, f"dist-{n}-{metric}"))
    if dists:
        out.append(f"<h3>Distributions</h3><div class=grid>{''.join(dists)}</div>")
    out.append(_verdict_table(rows, verdicts))
    out.append(_spread_table(rows))
    return "".join(out)


def render_html(run: Run, *, source: Optional[str] = None, verdicts: Optional[Verdicts] = None,
                baseline_label: Optional[str] = None, objectives: Optional[Sequence[str]] = None,
                weights: Optional[Mapping[str, float]] = None, target_ci_pct: Optional[float] = None,
                notes: Sequence[str] = ()) -> str:
    """The whole report as one HTML document.

    source: where the run came from (a file name), shown in the provenance. verdicts: baseline verdicts per
    (nodeid, name) replacing the records' own (``llmeff report --baseline``). objectives: the Pareto objectives
    (None: ``analysis.default_objectives``). weights: the efficiency score's (None: ``analysis.DEFAULT_WEIGHTS``).
    target_ci_pct: the precision target for records whose stop rule names none. notes: lines shown at the top
    (e.g. the comparison's renamed or missing benchmarks).
    """
    figures.require_plotly()
    from plotly.offline import get_plotlyjs

    title = f"pytest-llmeff report: {run.started_at}"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p class=note>written {_e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))} by "
            f"pytest-llmeff {_e(run.versions.get('pytest-llmeff') or '')}; every sampled figure is the median with "
            "its 95% interval; ~ marks estimated energy</p>"]
    body += [f"<p class=warn>{_e(n)}</p>" for n in notes]
    body.append(_provenance(run, source, baseline_label))
    if not run.benchmarks:
        body.append("<p>This run holds no benchmark.</p>")
    for n, (group, rows) in enumerate(analysis.sections(run.benchmarks)):
        body.append(_section(group, rows, objectives, weights, verdicts, target_ci_pct, n))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
            + "".join(body) + f"<script>{_SORTER}</script></body></html>\n")


def write_html(path: Path, run: Run, **kwargs) -> Path:
    """Render the report (``render_html``'s keywords) and write it atomically to ``path``."""
    atomic_write_text(Path(path), render_html(run, **kwargs))
    return Path(path)
