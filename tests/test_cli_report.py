"""``llmeff summary``, ``llmeff report`` and ``llmeff plot`` as users meet them, on stored run files: what they
print and write, and every bad input as one line on stderr with exit 2 (no traceback)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pytest_llmeff.cli import app as cli
from pytest_llmeff.results.runfile import write_run
from pytest_llmeff.results.schema import (BenchmarkRecord, CommitInfo, EnergyInfo, MachineInfo, Metric, Run,
    VariantRecord)

pytest.importorskip("plotly", reason='llmeff report and plot need the "report" extra (plotly)')


def _record(vid: str, tps: float, ttft: float, mem: float, ppl_ratio: float, energy: float,
            jitter: float = 0.01, slow_round: bool = False) -> BenchmarkRecord:
    """A benchmark of 8 rounds whose samples spread by ``jitter`` around the medians (one slow round if asked)."""
    spread = [1 + jitter * k for k in (-3, -2, -1, 0, 0, 1, 2, 3)]
    lat = [0.5 / s for s in spread]
    if slow_round:
        lat[5] *= 3
    metrics = {
        "throughput_tok_s": Metric.from_samples("throughput_tok_s", [tps * s for s in spread]),
        "ttft_s": Metric.from_samples("ttft_s", [ttft / s for s in spread]),
        "latency_s": Metric.from_samples("latency_s", lat),
        "itl_s": Metric.from_samples("itl_s", [0.02 / s for s in spread for _ in range(4)]),
        "peak_mem_bytes": Metric.from_samples("peak_mem_bytes", [mem] * 8),
        "energy_j_per_tok": Metric.from_samples("energy_j_per_tok", [energy / s for s in spread]),
        "ppl_ratio": Metric.from_samples("ppl_ratio", [ppl_ratio]),
    }
    return BenchmarkRecord(
        nodeid=f"benchmarks/test_m.py::test_gen[{vid}]", name=f"test_gen[{vid}]", group="m",
        variant=VariantRecord(id=vid, model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=8, device="cpu", prompts=1),
        rounds=8, warmup=1, tokens_generated=8, prompt_tokens=4, outcome="passed", metrics=metrics,
        energy=EnergyInfo(method="codecarbon:cpu=cpu_load", estimated=True),
        warnings=[f"{vid}: a warning of this variant"])


def _run(scale: float = 1.0) -> Run:
    return Run(started_at="2026-01-02T03:04:05+00:00", finished_at="2026-01-02T03:05:05+00:00",
               machine=MachineInfo(cpu="Test CPU", os="Linux", python="3.11"), versions={"torch": "2.13.0"},
               commit=CommitInfo(id="0123abc", dirty=False),
               benchmarks=[
                   # fast but drifting; exact but slow; dominated by "fast" (slower, drifts more, more memory)
                   _record("fast", 50 * scale, 0.05, 1.2e9, 1.10, 0.5, slow_round=True),
                   _record("exact", 20 * scale, 0.08, 1.0e9, 1.00, 1.2),
                   _record("worse", 40 * scale, 0.09, 1.3e9, 1.20, 0.9),
               ])


@pytest.fixture
def files(tmp_path):
    run = write_run(_run(), tmp_path / "run.json")
    base = write_run(_run(scale=1.25), tmp_path / "base.json")   # the baseline was 25% faster
    return run, base


def _one_line_error(capsys, argv) -> str:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmeff: error: ") and "Traceback" not in err, err
    return lines[0]


def _argparse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmeff: error: "), err
    return lines[0]


# --- summary ---------------------------------------------------------------------------------------------------
def test_summary_prints_rankings_the_front_scores_and_outliers(files, capsys):
    run, _ = files
    assert cli.main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front over throughput_tok_s (higher), ppl_ratio (lower): fast, exact" in out
    assert "dominated: worse (by fast)" in out
    tps = next(line for line in out.splitlines() if line.startswith("throughput_tok_s"))
    assert tps.index("fast") < tps.index("worse") < tps.index("exact") and "*" in tps   # clear winner
    assert "efficiency score" in out and "fast" in out
    assert "fast: rounds [5] (latency_s [5])" in out                                   # the slow round
    assert "across variants" in out
    assert cli.main(["summary", str(run), "--pareto", "throughput_tok_s,peak_mem_bytes,ppl_ratio",
                     "--weights", "throughput_tok_s:1"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front over throughput_tok_s (higher), peak_mem_bytes (lower), ppl_ratio (lower): fast, exact" \
        in out
    assert "weights throughput_tok_s:1)" in out


@pytest.mark.parametrize("argv, problem", [
    (["--pareto", "throughput_tok_s,speed"], "argument --pareto: 'speed' is not a metric"),
    (["--pareto", "throughput_tok_s,flops_counted"], "argument --pareto: 'flops_counted' has no direction"),
    (["--pareto", "throughput_tok_s"], "argument --pareto: --pareto='throughput_tok_s': give two or more"),
    (["--weights", "ttft_s:x"], "argument --weights: 'ttft_s:x' needs a weight >= 0"),
    (["--metrics", "speed"], "argument --metrics: 'speed' is not a metric"),
])
def test_summary_bad_options_are_one_line(files, capsys, argv, problem):
    run, _ = files
    assert _argparse_error(capsys, ["summary", str(run), *argv]).startswith(f"llmeff: error: {problem}")


def test_missing_corrupt_and_foreign_files_are_one_line(tmp_path, capsys):
    (tmp_path / "corrupt.json").write_text('{"schema": "pytest-llmeff/1.1", "started_at": ')
    (tmp_path / "foreign.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    for command in (["summary"], ["report", "-o", str(tmp_path / "r.html")],
                    ["plot", "--x", "ppl_ratio", "--y", "throughput_tok_s", "-o", str(tmp_path / "c.html")]):
        line = _one_line_error(capsys, command[:1] + [str(tmp_path / "missing.json")] + command[1:])
        assert line.endswith("missing.json: no such results file")
        line = _one_line_error(capsys, command[:1] + [str(tmp_path / "corrupt.json")] + command[1:])
        assert "corrupt.json: the JSON ends early" in line
        line = _one_line_error(capsys, command[:1] + [str(tmp_path / "foreign.json")] + command[1:])
        assert 'foreign.json: no "schema" field' in line


# --- report ----------------------------------------------------------------------------------------------------
def test_report_writes_a_self_contained_file(files, tmp_path, capsys):
    run, _ = files
    out = tmp_path / "sub" / "report.html"
    assert cli.main(["report", str(run), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "<script src" not in text and "<link" not in text and "url(http" not in text
    assert text.count('class="llmeff-chart"') == 6 and "Pareto front over throughput_tok_s" in text
    assert "fast: a warning of this variant" in text and "Test CPU" in text and "0123abc" in text
    assert "Baseline deltas" not in text


def test_report_against_a_baseline_shows_the_deltas_and_verdicts(files, tmp_path, capsys):
    run, base = files
    out = tmp_path / "report.html"
    assert cli.main(["report", str(run), "--baseline", str(base), "-o", str(out), "--fail",
                     "throughput_tok_s:5%,ppl_ratio:5%"]) == 0
    text = out.read_text()
    assert "Baseline deltas and gate verdicts" in text and "-20.0%" in text     # 1/1.25 - 1
    assert "false-alarm budget" in text


def test_report_to_a_path_that_cannot_be_written_is_one_line(files, tmp_path, capsys):
    run, _ = files
    (tmp_path / "afile").write_text("x")
    line = _one_line_error(capsys, ["report", str(run), "-o", str(tmp_path / "afile" / "r.html")])
    assert "r.html: cannot be written:" in line and "is a file, not a folder" in line
    line = _one_line_error(capsys, ["report", str(run), "-o", str(tmp_path)])
    assert line.endswith("is a directory; give a file path")


# --- plot ------------------------------------------------------------------------------------------------------
def test_plot_bad_metrics_and_suffixes_are_one_line(files, tmp_path, capsys):
    run, _ = files
    line = _one_line_error(capsys, ["plot", str(run), "--x", "speed", "--y", "throughput_tok_s",
                                    "-o", str(tmp_path / "c.svg")])
    assert "--x 'speed' is not a metric; the run holds: " in line
    line = _one_line_error(capsys, ["plot", str(run), "--x", "kld_mean_nat", "--y", "throughput_tok_s",
                                    "-o", str(tmp_path / "c.svg")])
    assert "run.json: --x 'kld_mean_nat' is not in this run; the run holds: energy_j_per_tok" in line
    line = _one_line_error(capsys, ["plot", str(run), "--x", "ppl_ratio", "--y", "throughput_tok_s",
                                    "-o", str(tmp_path / "c.jpg")])
    assert "the suffix '.jpg' is not allowed; give .svg, .png, .pdf, .html" in line
    line = _one_line_error(capsys, ["plot", str(run), "--x", "ppl_ratio", "--y", "throughput_tok_s",
                                    "--group", "nope", "-o", str(tmp_path / "c.svg")])
    assert "no benchmark in group 'nope'; groups: m" in line


def test_plot_to_html_needs_no_browser(files, tmp_path, capsys):
    run, _ = files
    out = tmp_path / "c.html"
    assert cli.main(["plot", str(run), "--x", "ppl_ratio", "--y", "throughput_tok_s", "-o", str(out)]) == 0
    text = out.read_text()
    assert "Pareto front" in text and "<script src" not in text


def _needs_chromium():
    if shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"):
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed, and CI must export static charts (.ci/run installs it)")
    pytest.skip("static export needs Chrome or Chromium for Kaleido (apt-get install -y chromium)")


@pytest.mark.slow
def test_plot_exports_svg_and_png(files, tmp_path, capsys):
    pytest.importorskip("kaleido", reason='static export needs the "report" extra (kaleido)')
    _needs_chromium()
    run, _ = files
    svg, png = tmp_path / "c.svg", tmp_path / "c.png"
    assert cli.main(["plot", str(run), "--x", "ppl_ratio", "--y", "throughput_tok_s", "-o", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<svg") and "fast" in text and "exact" in text
    assert cli.main(["plot", str(run), "--x", "peak_mem_bytes", "--y", "throughput_tok_s", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_without_a_browser_says_how_to_get_one(files, tmp_path, capsys, monkeypatch):
    pytest.importorskip("kaleido", reason='static export needs the "report" extra (kaleido)')
    import plotly.graph_objects as go

    def no_chrome(self, *args, **kwargs):
        raise RuntimeError("Kaleido requires Google Chrome to be installed.")  # what Kaleido 1.x says

    monkeypatch.setattr(go.Figure, "write_image", no_chrome)
    run, _ = files
    line = _one_line_error(capsys, ["plot", str(run), "--x", "ppl_ratio", "--y", "throughput_tok_s",
                                    "-o", str(tmp_path / "c.png")])
    assert "c.png: Kaleido needs Chrome or Chromium on this machine: apt-get install chromium" in line
    assert line.endswith("(or write .html)")
