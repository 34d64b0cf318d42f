"""Baselines and the CI gate as users meet them: save, compare, fail the regressed test itself, CI outputs."""

from __future__ import annotations

import json

import pytest

def _run(pytester, *args):
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-energy=off", *args)


def test_a_real_regression_fails_the_test_itself_with_a_section(llmeff_pytester, monkeypatch, slowable_source):
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    for _ in range(4):  # the gate judges against the spread between stored sessions: store a few
        _run(llmeff_pytester, "--llmeff-autosave").assert_outcomes(passed=1)
    stored = list((llmeff_pytester.path / ".llmeff" / "baselines").glob("*/000?_*.json"))
    assert len(stored) == 4

    # 151x slower: beyond the drift between sessions of this millisecond model even on a loaded machine (there a
    # 61x slowdown was once inside what 3 stored sessions could resolve)
    monkeypatch.setenv("LLMEFF_TEST_SLOWDOWN", "150.0")
    result = _run(llmeff_pytester, "-rA", "--llmeff-compare", "--llmeff-compare-fail=throughput_tok_s:5%",
                  "--junitxml=junit.xml", "--llmeff-json=cur.json")
    out = result.stdout.str()
    assert result.ret == 1, out
    assert "INTERNALERROR" not in out and "Traceback" not in out
    result.stdout.fnmatch_lines(["*REGRESSED tiny-random-llama-fp32-b1 throughput_tok_s: baseline *, current *, "
                                 "change -*%, threshold 5%, p=* (one-sided t prediction test over stored session "
                                 "medians (log scale))*"])
    result.stdout.fnmatch_lines(["*1 regressed*"])
    result.stdout.fnmatch_lines(["*compared with *0004_*.json and the 3 stored runs before it*",
                                 "*minimum detectable effect (90% power) tiny-random-llama-fp32-b1: throughput_tok_s "
                                 "*% (4 stored sessions, spread *%)*"])
    data = json.loads((llmeff_pytester.path / "cur.json").read_text())
    verdict = data["benchmarks"][0]["verdicts"][0]
    assert verdict["status"] == "regressed" and verdict["change"] < -0.5 and verdict["p_value"] < 0.01
    assert verdict["history_runs"] == 4 and 0 < verdict["mde"] < 1 and verdict["spread_rel"] >= 0
    assert data["benchmarks"][0]["outcome"] == "failed"
    assert "0004_" in data["baseline"]
    result.stdout.fnmatch_lines(["*vs baseline*", "*tok/s -*% !*"])
    # the key metrics are junit-xml properties
    junit = (llmeff_pytester.path / "junit.xml").read_text()
    assert 'name="llmeff_tiny-random-llama-fp32-b1_throughput_tok_s"' in junit


def test_one_stored_session_is_inconclusive_about_a_regression(llmeff_pytester, monkeypatch, slowable_source):
    """Against one stored session the drift between sessions is unknown: a big drop is said, not failed."""
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    _run(llmeff_pytester, "--llmeff-save=base").assert_outcomes(passed=1)
    monkeypatch.setenv("LLMEFF_TEST_SLOWDOWN", "30.0")
    result = _run(llmeff_pytester, "--llmeff-compare=base", "--llmeff-compare-fail=throughput_tok_s:5%",
                  "--llmeff-json=cur.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*compared with *base.json alone: one stored session*--llmeff-ab*",
                                 "*minimum detectable effect (90% power) *: throughput_tok_s unknown (1 stored "
                                 "session)*"])
    verdict = json.loads((llmeff_pytester.path / "cur.json").read_text())["benchmarks"][0]["verdicts"][0]
    assert verdict["status"] == "inconclusive" and verdict["mde"] is None and verdict["history_runs"] == 1
    assert "cannot be told from the drift between sessions" in verdict["message"]


def test_unchanged_code_passes_the_gate(llmeff_pytester, monkeypatch, slowable_source):
    """Against 4 stored sessions, where the gate can say ``regressed`` (one session could only say ok or
    inconclusive), the unchanged code passes; the same stored sessions and threshold do catch a real slowdown, so
    the pass is the gate's judgement and not the only possible outcome."""
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    for _ in range(4):
        _run(llmeff_pytester, "--llmeff-autosave").assert_outcomes(passed=1)
    # a generous threshold: two unchanged sessions can differ by >40% about once in 100 on the 2-core dev VM
    # (benchmarks/results/); gate quality is benchmarked separately, in benchmarks/gate_quality.py
    gate = ("--llmeff-compare", "--llmeff-compare-fail=throughput_tok_s:80%")
    result = _run(llmeff_pytester, *gate, "--llmeff-json=cur.json")
    result.assert_outcomes(passed=1)
    verdict = json.loads((llmeff_pytester.path / "cur.json").read_text())["benchmarks"][0]["verdicts"][0]
    assert verdict["history_runs"] == 4 and verdict["mde"] is not None, verdict
    assert verdict["status"] in ("ok", "near-miss", "improved"), verdict

    monkeypatch.setenv("LLMEFF_TEST_SLOWDOWN", "150.0")  # the first test's slowdown: far beyond the drift
    result = _run(llmeff_pytester, *gate, "--llmeff-json=slow.json")
    assert result.ret == 1, result.stdout.str()
    verdict = json.loads((llmeff_pytester.path / "slow.json").read_text())["benchmarks"][0]["verdicts"][0]
    assert verdict["status"] == "regressed" and verdict["history_runs"] == 4, verdict


def test_absolute_limits_apply_without_a_baseline(llmeff_pytester):
    llmeff_pytester.makepyfile(test_l="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=3, rounds=2, warmup=0, quality=False,
                                    limits={"throughput_tok_s": ">= 1e12", "peak_mem_bytes": "<= 64GB"})
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result = _run(llmeff_pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*LIMIT FAILED tiny-random-llama-fp32-b1 throughput_tok_s: median *, limit >= 1e12*"])
    assert "peak_mem_bytes: median" not in result.stdout.str()


def test_first_run_without_stored_baseline_is_a_note(llmeff_pytester, slowable_source):
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    result = _run(llmeff_pytester, "--llmeff-compare", "--llmeff-compare-fail=throughput_tok_s:5%")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmeff: no stored run in * to compare with yet"])


def test_autosave_and_ci_outputs(llmeff_pytester, monkeypatch, slowable_source):
    pb = pytest.importorskip("pytest_benchmark")
    assert pb
    summary = llmeff_pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    result = _run(llmeff_pytester, "--llmeff-autosave", "--llmeff-markdown=r.md", "--llmeff-csv=r.csv",
                  "--llmeff-benchmark-json=pb.json")
    result.assert_outcomes(passed=1)
    stored = list((llmeff_pytester.path / ".llmeff" / "baselines").glob("*/0001_*.json"))
    assert len(stored) == 1
    _run(llmeff_pytester, "--llmeff-autosave").assert_outcomes(passed=1)
    assert len(list((llmeff_pytester.path / ".llmeff" / "baselines").glob("*/0002_*.json"))) == 1
    md = (llmeff_pytester.path / "r.md").read_text()
    assert "tiny-random-llama" in md and summary.read_text() == md
    assert "throughput_tok_s" in (llmeff_pytester.path / "r.csv").read_text()
    data = json.loads((llmeff_pytester.path / "pb.json").read_text())
    assert data["benchmarks"][0]["stats"]["rounds"] == 5


@pytest.mark.parametrize("setup, args, message", [
    (None, ["--llmeff-compare-fail=throughput_tok_s:5%"], "--llmeff-compare-fail='throughput_tok_s:5%' needs a baseline"),
    (None, ["--llmeff-compare", "--llmeff-compare-fail=throughput_tok_s:5parsecs"], "unit 'parsecs' does not fit"),
    (None, ["--llmeff-compare", "--llmeff-compare-fail=speed:5%"], "unknown metric 'speed'"),
    (None, ["--llmeff-save=../escape"], "../escape"),
    (None, ["--llmeff-compare=nope"], "nope"),
    ("empty", ["--llmeff-compare=BASE"], "empty"),
    ("truncated", ["--llmeff-compare=BASE"], "BASE"),
    ("notjson", ["--llmeff-compare=BASE"], "BASE"),
    ("newer", ["--llmeff-compare=BASE"], "pytest-llmeff/2"),
    (None, ["--llmeff-alpha=2"], "--llmeff-alpha=2 is not allowed"),
])
def test_bad_gate_input_is_one_clear_usage_error(llmeff_pytester, setup, args, message):
    base = llmeff_pytester.path / "base.json"
    if setup == "empty":
        base.write_text("")
    elif setup == "truncated":
        base.write_text('{"schema": "pytest-llmeff/1", "started_at": "x", "bench')
    elif setup == "notjson":
        base.write_text("this is not json")
    elif setup == "newer":
        base.write_text(json.dumps({"schema": "pytest-llmeff/2"}))
    args = [a.replace("BASE", str(base)) for a in args]
    message = message.replace("BASE", "base.json")
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert "pytest-llmeff: " in err and message in err
    assert "Traceback" not in err and "INTERNALERROR" not in err


@pytest.mark.parametrize("kwargs, message", [
    ('thresholds={"ttft_s": "5 parsecs"}', "unit 'parsecs' does not fit ttft_s"),
    ('thresholds={"speed": "5%"}', "unknown metric 'speed'"),
    ('limits={"throughput_tok_s": "about 20"}', "limit throughput_tok_s='about 20' is malformed"),
])
def test_bad_marker_thresholds_and_limits(llmeff_pytester, kwargs, message):
    llmeff_pytester.makepyfile(test_m=f"""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", {kwargs})
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result = _run(llmeff_pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*llm_efficiency marker on test_m.py::test_x*{message}*"])


def test_a_gated_metric_not_measured_is_a_verdict_and_the_budget_is_printed(llmeff_pytester, slowable_source):
    llmeff_pytester.makepyfile(test_s=slowable_source(rounds=5))
    _run(llmeff_pytester, "--llmeff-save=base").assert_outcomes(passed=1)
    result = _run(llmeff_pytester, "--llmeff-compare=base",
                  "--llmeff-compare-fail=throughput_tok_s:80%,energy_j_per_tok:5%", "--llmeff-json=cur.json")
    result.assert_outcomes(passed=1)  # not measured is said, never a failure
    out = result.stdout.str()
    assert "gated metric energy_j_per_tok was not measured in either run: not compared" in out
    assert "false-alarm budget: --llmeff-alpha 0.01" in out and "Bonferroni over m = 1 tested comparisons" in out
    verdicts = {v["metric"]: v for v in json.loads((llmeff_pytester.path / "cur.json").read_text())
                ["benchmarks"][0]["verdicts"]}
    assert verdicts["energy_j_per_tok"]["status"] == "not-measured"
    assert verdicts["throughput_tok_s"]["alpha"] == 0.01 and verdicts["throughput_tok_s"]["comparisons"] == 1
