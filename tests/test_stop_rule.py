"""The stop rule: quiet data stops early on the precision target, noisy data runs to the budget (a fake clock, no
sleeps), explicit rounds are exact; and every bad setting is one usage line naming the value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_llmeff.stats import intervals as stats
from pytest_llmeff.stats.stop_rule import StopRule


def _simulate(rule: StopRule, draw, round_s: float = 1.0):
    """Time rounds on a fake clock (``round_s`` per round) until the rule stops; (reason, rounds, elapsed_s)."""
    samples: dict[str, list[float]] = {"throughput_tok_s": []}
    elapsed = 0.0
    while True:
        samples["throughput_tok_s"].append(float(draw()))
        elapsed += round_s
        reason = rule.decide(samples, len(samples["throughput_tok_s"]), elapsed)
        if reason:
            return reason, len(samples["throughput_tok_s"]), elapsed, samples


def test_quiet_data_stops_on_the_target_as_soon_as_it_has_an_interval():
    rng = np.random.default_rng(0)
    rule = StopRule(target_ci_rel=0.05, max_time_s=60.0, min_rounds=6, max_rounds=100)
    reason, rounds, elapsed, samples = _simulate(rule, lambda: rng.normal(100.0, 1.0))  # CV 1%
    assert (reason, rounds) == ("target_ci", 6)
    values = samples["throughput_tok_s"]
    # independent check of the stop: scipy's interval of what was measured is within 5% of the median
    rel = stats.relative_half_width(float(np.median(values)), stats.median_ci(values))
    assert rel <= 0.05


def test_noisy_data_runs_to_the_budget_and_never_past_it():
    rng = np.random.default_rng(1)
    rule = StopRule(target_ci_rel=0.01, max_time_s=30.0, min_rounds=6, max_rounds=1000)
    reason, rounds, elapsed, samples = _simulate(rule, lambda: rng.lognormal(3.0, 1.0))  # CV > 100%
    assert reason == "max_time"
    assert elapsed <= 30.0 and rounds == 30  # each round takes 1 s on the fake clock: the 31st would overrun
    assert rule.achieved(samples)["throughput_tok_s"] > 0.01  # it stopped imprecise, and the record says so


def test_the_minimum_holds_even_past_the_budget_and_the_maximum_caps():
    slow = StopRule(target_ci_rel=0.05, max_time_s=1.0, min_rounds=6, max_rounds=100)
    reason, rounds, elapsed, _ = _simulate(slow, lambda: 50.0, round_s=2.0)
    assert rounds == 6  # 12 s > 1 s budget, but a minimum is a minimum
    assert reason in ("target_ci", "max_time")
    capped = StopRule(target_ci_rel=0.001, max_time_s=1e9, min_rounds=2, max_rounds=9)
    rng = np.random.default_rng(2)
    assert _simulate(capped, lambda: rng.lognormal(0, 1))[:2] == ("max_rounds", 9)


def test_explicit_rounds_are_exact_whatever_the_noise_or_the_clock():
    rule = StopRule(fixed_rounds=3, max_time_s=0.001, min_rounds=50)
    rng = np.random.default_rng(3)
    assert _simulate(rule, lambda: rng.lognormal(0, 2))[:2] == ("fixed_rounds", 3)


def test_a_metric_without_samples_does_not_block_the_others():
    rule = StopRule(target_ci_rel=0.05, metrics=("throughput_tok_s", "energy_j"), min_rounds=6)
    samples = {"throughput_tok_s": [100.0] * 6}  # no energy meter: energy_j never gets samples
    assert rule.decide(samples, 6, 1.0) == "target_ci"


BENCH = """
import pytest
@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, warmup=1, quality=False{extra})
def test_x(llm_benchmark):
    llm_benchmark()
"""


def _record(llmeff_pytester, *args, extra=""):
    llmeff_pytester.makepyfile(test_s=BENCH.format(extra=extra))
    out = llmeff_pytester.path / "out.json"
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--llmeff-json={out}", *args)
    result.assert_outcomes(passed=1)
    return json.loads(out.read_text())["benchmarks"][0]


def test_a_session_records_why_it_stopped_and_the_precision_it_reached(llmeff_pytester):
    bench = _record(llmeff_pytester, "--llmeff-target-ci=50", "--llmeff-max-time=5")
    stop = bench["stop"]
    assert stop["reason"] in ("target_ci", "max_time") and stop["rounds"] == bench["rounds"] >= 6
    assert stop["target_ci_rel"] == pytest.approx(0.5) and stop["max_time_s"] == 5.0
    assert stop["precision_metrics"] == ["throughput_tok_s"]
    tps = bench["metrics"]["throughput_tok_s"]
    assert len(tps["samples"]) == stop["rounds"] and tps["ci_low"] <= tps["median"] <= tps["ci_high"]
    assert stop["achieved_ci_rel"]["throughput_tok_s"] == pytest.approx(tps["ci_rel"])
    if stop["reason"] == "target_ci":
        assert tps["ci_rel"] <= 0.5
    assert set(bench["time_s"]) >= {"warmup", "timed", "flops", "total"}
    assert bench["time_s"]["timed"] == pytest.approx(stop["timed_s"])


def test_explicit_rounds_and_marker_settings_reach_the_record(llmeff_pytester):
    fixed = _record(llmeff_pytester, "--llmeff-rounds=3")
    assert (fixed["rounds"], fixed["stop"]["reason"], fixed["stop"]["target_ci_rel"]) == (3, "fixed_rounds", None)
    # (a generous budget: the tests' default of 0.5 s, given on the command line, would beat the marker's rounds)
    capped = _record(llmeff_pytester, "--llmeff-max-time=120", extra=", min_rounds=2, max_rounds=4, target_ci_pct=0.001")
    assert (capped["rounds"], capped["stop"]["reason"]) == (4, "max_rounds")
    # the command line beats the marker
    cli = _record(llmeff_pytester, "--llmeff-max-time=120", "--llmeff-max-rounds=7", "--llmeff-min-rounds=7",
                  extra=", min_rounds=2, max_rounds=4, target_ci_pct=0.001")
    assert (cli["rounds"], cli["stop"]["max_rounds"]) == (7, 7)


@pytest.mark.parametrize("args, line", [
    (["--llmeff-target-ci=0"], "--llmeff-target-ci=0 is not allowed; give a percentage between 0 and 100"),
    (["--llmeff-target-ci=100%"], "--llmeff-target-ci=100% is not allowed; give a percentage between 0 and 100"),
    (["--llmeff-target-ci=abc"], "--llmeff-target-ci='abc' is not a number; give a percentage between 0 and 100"),
    (["--llmeff-max-time=0"], "--llmeff-max-time=0 is not allowed; give a number > 0"),
    (["--llmeff-max-time=soon"], "--llmeff-max-time='soon' is not a number; give a number > 0"),
    (["--llmeff-min-rounds=10", "--llmeff-max-rounds=5"], "--llmeff-min-rounds=10 is above --llmeff-max-rounds=5"),
    (["--llmeff-min-rounds=0"], "--llmeff-min-rounds=0 is not allowed; give an integer >= 1"),
    (["--llmeff-precision-metrics=speed"], "--llmeff-precision-metrics: 'speed' is not a per-round or per-token "
                                           "metric; allowed: throughput_tok_s"),
    (["--llmeff-precision-metrics=load_s"], "'load_s' is not a per-round or per-token metric"),
    (["--llmeff-columns=tok/s"], "--llmeff-columns: 'tok/s' is not a metric; allowed: throughput_tok_s"),
])
def test_bad_stop_settings_are_one_usage_line(llmeff_pytester, args, line):
    llmeff_pytester.makepyfile(test_s=BENCH.format(extra=""))
    result = llmeff_pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*{line}*"])
    assert "Traceback" not in result.stderr.str() and "INTERNALERROR" not in result.stdout.str()


@pytest.mark.parametrize("extra, line", [
    (", target_ci_pct=0", "target_ci_pct=0 is not allowed; give a percentage between 0 and 100"),
    (", max_time_s=-1.0", "max_time_s=-1 is not allowed; give seconds > 0"),
    (", min_rounds=9, max_rounds=3", "min_rounds=9 is above max_rounds=3"),
    (", precision_metrics=['ppl']", "'ppl' is not a per-round or per-token metric"),
])
def test_bad_marker_stop_settings_fail_the_test_in_one_line(llmeff_pytester, extra, line):
    llmeff_pytester.makepyfile(test_s=BENCH.format(extra=extra))
    result = llmeff_pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines([f"*{line}*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_pytest_help_prints_every_option(pytester):
    """argparse %-formats help texts: a bare '%' in one (e.g. 'METRIC:N% or') used to crash `pytest --help`."""
    from pytest_llmeff.config.options import _OPTIONS

    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0, result.stderr.str()
    text = result.stdout.str()
    for opt, *_ in _OPTIONS:
        assert opt in text, opt
    assert "METRIC:N% or" in text and "'%' optional" in text


def test_the_run_says_where_the_time_went(llmeff_pytester):
    llmeff_pytester.makepyfile(test_s=BENCH.format(extra=""))
    out = llmeff_pytester.path / "out.json"
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-report", f"--llmeff-json={out}")
    result.assert_outcomes(passed=1)
    data = json.loads(out.read_text())
    bench, run = data["benchmarks"][0]["time_s"], data["time_s"]
    phases = {k: v for k, v in bench.items() if k != "total"}
    assert {"load", "warmup", "timed", "flops", "custom"} <= set(phases)
    assert bench["total"] == pytest.approx(sum(phases.values()))
    assert run["benchmarks"] == pytest.approx(bench["total"]) and run["timed"] == pytest.approx(bench["timed"])
    # independent clock: the session's start and end stamps in the same file
    from datetime import datetime
    wall = (datetime.fromisoformat(data["finished_at"]) - datetime.fromisoformat(data["started_at"])).total_seconds()
    assert run["session"] == pytest.approx(wall, abs=0.01) and run["benchmarks"] <= wall
    result.stdout.fnmatch_lines(["llmeff: where the time went: *timed * s*(benchmarks * s of a * s session)"])
