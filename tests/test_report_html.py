"""The HTML report as users meet it: a pytester session on the tiny model with --llmeff-html writes one
self-contained file (provenance, sortable table with marks, Pareto plots, distributions, warnings per variant),
and a real browser (headless Chromium, offline) draws every chart of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason='the HTML report needs the "report" extra (plotly)')

SUITE = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], batch_size=[1, 2],
                            max_new_tokens=6, rounds=6, warmup=1, group="tiny")
def test_gen(llm_benchmark):
    llm_benchmark()
"""


class _Resources(HTMLParser):
    """Every script src, link href, and the charts (div[data-chart]) with the Plotly elements drawn inside each."""

    def __init__(self):
        super().__init__()
        self.external: list[str] = []
        self.charts: dict[str, dict[str, int]] = {}
        self.stack: list[str | None] = []  # the chart each open div belongs to

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.external.append(f"script src={a['src']}")
        if tag == "link" and a.get("href"):
            self.external.append(f"link href={a['href']}")
        if tag in ("img", "iframe") and a.get("src", "").startswith(("http:", "https:", "//")):
            self.external.append(f"{tag} src={a['src']}")
        current = next((c for c in reversed(self.stack) if c), None)
        if tag == "div":
            chart = a.get("data-chart")
            if chart:
                self.charts[chart] = {"main-svg": 0, "plot-container": 0, "points": 0}
            self.stack.append(chart or current)
            current = chart or current
        if current is not None:
            classes = (a.get("class") or "").split()
            for name in ("main-svg", "plot-container"):
                self.charts[current][name] += name in classes
            self.charts[current]["points"] += tag == "path" and ("point" in classes or "box" in classes
                                                                 or "violin" in classes)

    def handle_endtag(self, tag):
        if tag == "div" and self.stack:
            self.stack.pop()


def _resources(text: str) -> _Resources:
    parser = _Resources()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def report_session(tmp_path_factory, tiny_cache):
    """One pytester-like session in a subprocess (module scope: the browser tests reuse its report)."""
    import sys

    root = tmp_path_factory.mktemp("html-session")
    (root / "test_suite.py").write_text(SUITE)
    env = dict(os.environ, LLMEFF_CACHE_DIR=str(tiny_cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(root / "hf"), PYTEST_ADDOPTS="")
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_suite.py",
                           "--llmeff-html=out/report.html", "--llmeff-json=run.json",
                           "--llmeff-pareto=throughput_tok_s,ppl_ratio"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    return root, proc


@pytest.mark.slow
def test_a_session_writes_one_self_contained_report(report_session):
    root, proc = report_session
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = root / "out" / "report.html"
    assert f"HTML written to {report}" in proc.stdout
    text = report.read_text()
    found = _resources(text)
    assert found.external == []                                   # nothing fetched: no script/style/font source
    assert "url(http" not in text and "@import" not in text
    assert 'src="http' not in text and "<link" not in text
    assert text.count("<script") >= 2 and "Plotly" in text        # plotly.js embedded, then the charts
    run = json.loads((root / "run.json").read_text())
    ids = [b["variant"]["id"] for b in run["benchmarks"]]
    assert len(ids) == 4
    for vid in ids:
        assert vid in text
    # provenance: machine, versions, commit, energy method and whether estimated
    assert run["machine"]["cpu"] in text and "torch " in text and "transformers " in text
    methods = {b["energy"]["method"] for b in run["benchmarks"] if b.get("energy")}
    for method in methods:
        assert method in text
    assert "ESTIMATED" in text or "measured by a meter" in text
    # the table: sortable, with the precision marks and every warning in its variant's row
    assert 'class="sortable"' in text and "95% interval of the median" in text
    for b in run["benchmarks"]:
        for w in b["warnings"]:
            import html as _html
            assert _html.escape(w, quote=True) in text
    # the charts: three Pareto plots (quality drift, memory, energy) and three distributions
    assert set(found.charts) == {"pareto-0-0", "pareto-0-1", "pareto-0-2", "dist-0-latency_s", "dist-0-ttft_s",
                                 "dist-0-itl_s"}
    assert "Throughput vs quality drift" in text and "Pareto front over throughput_tok_s" in text
    # outlier rounds are stored in the record (possibly none)
    assert all(isinstance(b["outliers"], dict) for b in run["benchmarks"])


@pytest.mark.slow
def test_bad_pareto_objectives_stop_the_session_with_one_line(llmeff_pytester):
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    for value, problem in (("throughput_tok_s,speed", "'speed' is not a metric"),
                           ("throughput_tok_s,flops_per_tok", "'flops_per_tok' has no direction")):
        result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--llmeff-pareto={value}")
        assert result.ret == 4
        result.stderr.fnmatch_lines([f"*--llmeff-pareto: {problem}*"])
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-score-weights=ttft_s")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--llmeff-score-weights: 'ttft_s' needs a weight >= 0*"])


def test_an_unwritable_html_path_is_refused_before_any_benchmark(llmeff_pytester, tmp_path):
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    (llmeff_pytester.path / "afile").write_text("x")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-html=afile/report.html")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--llmeff-html=afile/report.html cannot be written*"])


# --- in a real browser -----------------------------------------------------------------------------------------
def _chromium() -> str:
    """The Chromium binary; skip when there is none, except in CI (CI=true), where it must be installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed, and CI must render the HTML report (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); the browser check needs it")
    return found


def _browse(browser: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with every host unresolvable (the page must draw offline), scripts run for 15 s of
    virtual time."""
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
                           "--window-size=1400,3000", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_every_chart_draws_in_headless_chromium_and_the_page_is_not_blank(report_session, tmp_path):
    browser = _chromium()
    root, proc = report_session
    assert proc.returncode == 0, proc.stdout[-3000:]
    page = root / "out" / "report.html"
    dom = _browse(browser, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = _resources(dom.stdout).charts
    assert len(charts) == 6
    for name, drawn in charts.items():
        # plotly drew it: its container and SVG layers exist, and data marks were drawn
        assert drawn["plot-container"] >= 1 and drawn["main-svg"] >= 2, (name, drawn)
        assert drawn["points"] >= 1, (name, drawn)
    print(f"chromium drew {len(charts)} charts: " + ", ".join(f"{n} ({d['main-svg']} svg layers, {d['points']} "
                                                              "marks)" for n, d in charts.items()))

    shot = tmp_path / "report.png"
    done = _browse(browser, page, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("RGB")
    stat = ImageStat.Stat(image)
    assert max(stat.stddev) > 20, stat.stddev                      # not a blank page
    colours = image.getcolors(maxcolors=1 << 20)
    front = sum(n for n, (r, g, b) in colours if abs(r - 0x1f) < 30 and abs(g - 0x6f) < 30 and abs(b - 0xb4) < 30)
    assert front > 500, front                                     # the charts' blue marks are on screen
    print(f"screenshot {image.size[0]}x{image.size[1]}: stddev {[round(s, 1) for s in stat.stddev]}, "
          f"{len(colours)} colours, {front} pixels of the front's blue")


def test_html_without_plotly_is_refused_before_any_benchmark(llmeff_pytester, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a))
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-html=r.html")
    assert result.ret == 4
    assert ('--llmeff-html=r.html needs Plotly, which is not installed: pip install "pytest-llmeff[report]"'
            in result.stderr.str())
