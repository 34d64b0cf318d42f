"""Regression verdicts: threshold and limit parsing, the Mann-Whitney comparison and its direction handling."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from pytest_llmeff.errors import GateConfigError
from pytest_llmeff.gate.thresholds import Limit, Threshold, check_limit, parse_limits, parse_thresholds
from pytest_llmeff.gate.two_sample import compare, min_exact_p, min_rounds_for_alpha
from pytest_llmeff.metrics import METRICS
from pytest_llmeff.results.schema import Metric

# Five tight rounds around 1.0, no ties: any uniform shift beyond the spread separates the samples completely.
BASE = [1.000, 1.002, 0.998, 1.001, 0.999]


def scaled(samples, factor):
    return [v * factor for v in samples]


def rel(metric, fraction):
    return Threshold(metric, "relative", fraction, "%", f"{fraction * 100:g}%")


# ---- parsing thresholds ---------------------------------------------------------------------------------------

def test_parse_thresholds_relative_and_absolute_units():
    got = parse_thresholds("throughput_tok_s:5%, ttft_s:10%,peak_mem_bytes:64MB,")
    assert got == {
        "throughput_tok_s": Threshold("throughput_tok_s", "relative", 0.05, "%", "5%"),
        "ttft_s": Threshold("ttft_s", "relative", pytest.approx(0.10), "%", "10%"),
        "peak_mem_bytes": Threshold("peak_mem_bytes", "absolute", 64e6, "MB", "64MB"),
    }
    assert parse_thresholds("peak_mem_bytes:64MiB")["peak_mem_bytes"].value == 64 * 2**20
    assert parse_thresholds("model_bytes:1.5GB")["model_bytes"].value == 1.5e9
    assert parse_thresholds("model_bytes:2KiB")["model_bytes"].value == 2048
    assert parse_thresholds("model_bytes:3KB")["model_bytes"].value == 3000
    assert parse_thresholds("model_bytes:1GiB")["model_bytes"].value == 2**30
    assert parse_thresholds("model_bytes:10B")["model_bytes"].value == 10
    assert parse_thresholds("ttft_s:20ms")["ttft_s"].value == pytest.approx(0.020)
    assert parse_thresholds("tpot_s:500us")["tpot_s"].value == pytest.approx(0.0005)
    assert parse_thresholds("latency_s:0.5s")["latency_s"].value == 0.5
    assert parse_thresholds("throughput_tok_s:2tok/s")["throughput_tok_s"].value == 2.0
    assert parse_thresholds("energy_j:500mJ")["energy_j"].value == pytest.approx(0.5)
    assert parse_thresholds("energy_j:2kJ")["energy_j"].value == 2000.0
    assert parse_thresholds("energy_j:3J")["energy_j"].value == 3.0
    assert parse_thresholds("") == {}


@pytest.mark.parametrize("text, message", [
    ("speed:5%", "threshold 'speed:5%': unknown metric 'speed'; known metrics: "),
    ("ttft_s:5MB", "threshold 'ttft_s:5MB': unit 'MB' does not fit ttft_s (measured in s); allowed: %, s, ms, us"),
    ("peak_mem_bytes:64mb", "threshold 'peak_mem_bytes:64mb': unit 'mb' does not fit peak_mem_bytes (measured in B);"
                            " allowed: %, B, KB, MB, GB, KiB, MiB, GiB"),
    ("energy_j:5MJ", "unit 'MJ' does not fit energy_j (measured in J); allowed: %, J, mJ, kJ"),
    ("throughput_tok_s:5tok", "unit 'tok' does not fit throughput_tok_s (measured in tok/s); allowed: %, tok/s"),
    ("ttft_s", "threshold 'ttft_s' is malformed; expected METRIC:N% or METRIC:N<unit>, comma separated, "
               "e.g. throughput_tok_s:5%,peak_mem_bytes:64MB"),
    ("ttft_s:", "threshold 'ttft_s:' is malformed; expected METRIC:N%"),
    (":5%", "threshold ':5%' is malformed; expected METRIC:N%"),
    ("ttft_s:fast", "threshold 'ttft_s:fast' is malformed; expected METRIC:N%"),
    ("ttft_s:5%%", "unit '%%' does not fit ttft_s"),
    ("flops_per_tok:5%", "threshold 'flops_per_tok:5%': flops_per_tok has no better direction (a property, "
                         "not a score) and cannot be gated; gateable metrics: "),
    ("ttft_s:0.1", "threshold 'ttft_s:0.1': a bare number is ambiguous; write N% for a relative change or N<unit> "
                   "with unit one of s, ms, us"),
    ("ttft_s:-5%", "threshold 'ttft_s:-5%': a threshold is a tolerated worsening and must be >= 0"),
    ("ttft_s:5%,ttft_s:10%", "threshold 'ttft_s:10%': ttft_s is given twice (first as '5%')"),
])
def test_parse_threshold_errors_are_one_clear_line(text, message):
    with pytest.raises(GateConfigError) as info:
        parse_thresholds(text)
    assert str(info.value).startswith(message) or message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_metric_message_lists_every_known_metric():
    with pytest.raises(GateConfigError) as info:
        parse_thresholds("speed:5%")
    assert str(info.value).endswith("known metrics: " + ", ".join(sorted(METRICS)))
    assert "throughput_tok_s, " in str(info.value) and "flops_per_tok" in str(info.value)


def test_ungateable_metric_is_not_offered_as_gateable():
    with pytest.raises(GateConfigError) as info:
        parse_thresholds("flops_per_tok:1%")
    gateable = sorted(name for name, spec in METRICS.items() if spec.direction != "none")
    assert str(info.value).endswith("gateable metrics: " + ", ".join(gateable))
    assert "flops_per_tok" not in str(info.value).split("gateable metrics:")[1]


# ---- limits -----------------------------------------------------------------------------------------------------

def test_parse_limits_operators_and_units():
    got = parse_limits({"throughput_tok_s": ">= 20", "peak_mem_bytes": "<= 1.5GB", "ttft_s": "<250ms",
                        "flops_per_tok": "> 1e6"})
    assert got == [
        Limit("throughput_tok_s", ">=", 20.0, "", ">= 20"),
        Limit("peak_mem_bytes", "<=", 1.5e9, "GB", "<= 1.5GB"),
        Limit("ttft_s", "<", pytest.approx(0.25), "ms", "<250ms"),
        Limit("flops_per_tok", ">", 1e6, "", "> 1e6"),
    ]


@pytest.mark.parametrize("limits, message", [
    ({"throughput_tok_s": "=> 20"}, "limit throughput_tok_s='=> 20' is malformed; expected 'OP VALUE[unit]' with OP "
                                    "one of >=, <=, >, <, e.g. '>= 20' or '<= 1.5GB'"),
    ({"throughput_tok_s": "20"}, "limit throughput_tok_s='20' is malformed; expected 'OP VALUE[unit]'"),
    ({"throughput_tok_s": ">= fast"}, "limit throughput_tok_s='>= fast' is malformed"),
    ({"throughput_tok_s": 20}, "limit throughput_tok_s=20 is malformed; expected 'OP VALUE[unit]'"),
    ({"peak_mem_bytes": "<= 1.5 parsecs"}, "limit peak_mem_bytes='<= 1.5 parsecs': unit 'parsecs' does not fit "
                                           "peak_mem_bytes (measured in B); allowed: B, KB, MB, GB, KiB, MiB, GiB, "
                                           "or none for B"),
    ({"speed": ">= 1"}, "limit speed='>= 1': unknown metric 'speed'; known metrics: "),
])
def test_parse_limit_errors_are_one_clear_line(limits, message):
    with pytest.raises(GateConfigError) as info:
        parse_limits(limits)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_check_limit_uses_the_median():
    mem = Metric.from_samples("peak_mem_bytes", [1.2e9, 1.3e9, 1.9e9])  # median 1.3e9, max above the limit
    ok = check_limit(parse_limits({"peak_mem_bytes": "<= 1.5GB"})[0], mem)
    assert (ok.passed, ok.median) == (True, 1.3e9)
    assert ok.message == "peak_mem_bytes median 1.3 GB <= 1.5 GB: ok"

    tps = Metric.from_samples("throughput_tok_s", [18.0, 19.0, 25.0])  # median 19
    bad = check_limit(parse_limits({"throughput_tok_s": ">= 20"})[0], tps)
    assert (bad.passed, bad.median) == (False, 19.0)
    assert bad.message == "throughput_tok_s median 19 tok/s is not >= 20 tok/s"

    strict = check_limit(parse_limits({"throughput_tok_s": "> 19"})[0], tps)
    assert strict.passed is False
    assert check_limit(parse_limits({"throughput_tok_s": ">= 19"})[0], tps).passed is True

    bare = check_limit(parse_limits({"peak_mem_bytes": "<= 2000000000"})[0], mem)
    assert bare.message == "peak_mem_bytes median 1.3e+09 B <= 2e+09 B: ok"

    missing = check_limit(parse_limits({"ttft_s": "< 1s"})[0], None)
    assert missing.passed is False and missing.median is None
    assert missing.message == "ttft_s was not measured; limit < 1s not checked"


# ---- the comparison ---------------------------------------------------------------------------------------------

def test_twenty_percent_slower_with_low_noise_regresses():
    v = compare("ttft_s", BASE, scaled(BASE, 1.2), rel("ttft_s", 0.10))
    assert v.status == "regressed"
    assert v.baseline_median == 1.0 and v.current_median == pytest.approx(1.2)
    assert v.change == pytest.approx(0.2) and v.worse_by == pytest.approx(0.2)
    assert v.p_value == pytest.approx(1 / 252)  # exact test, complete separation of 5 vs 5
    assert v.threshold == "10%"
    assert v.message == ("ttft_s regressed: median 1 s -> 1.2 s (+20.0%), worse by 20.0% > 10%, "
                         "p=0.00397 < 0.01")


def test_two_samples_each_is_inconclusive():
    v = compare("ttft_s", BASE[:2], scaled(BASE[:2], 1.2), rel("ttft_s", 0.10))
    assert v.status == "inconclusive" and v.p_value is None
    assert v.change == pytest.approx(0.2)
    assert v.message == "ttft_s inconclusive: 2 baseline and 2 current samples; need at least 3 each"
    empty = compare("ttft_s", [], BASE, rel("ttft_s", 0.10))
    assert empty.status == "inconclusive" and empty.baseline_median is None and empty.change is None


def test_significant_but_within_threshold_is_a_near_miss():
    v = compare("ttft_s", BASE, scaled(BASE, 1.03), rel("ttft_s", 0.05))
    assert v.status == "near-miss"
    assert v.worse_by == pytest.approx(0.03)
    assert v.p_value == pytest.approx(1 / 252)
    assert v.message.endswith("significantly worse (p=0.00397 < 0.01) but within 5%")


def test_beyond_threshold_but_noisy_is_a_near_miss():
    base = [0.80, 1.00, 1.25, 0.90, 1.15]          # median 1.00
    cur = [0.85, 1.08, 1.30, 0.95, 1.20]           # median 1.08: 8% slower, samples interleaved
    v = compare("ttft_s", base, cur, rel("ttft_s", 0.05))
    assert v.status == "near-miss"
    assert v.worse_by == pytest.approx(0.08)
    assert v.p_value > 0.2
    assert "worse by 8.0% > 5% but not significant (p=" in v.message


def test_twenty_percent_faster_improves():
    v = compare("ttft_s", BASE, scaled(BASE, 0.8), rel("ttft_s", 0.10))
    assert v.status == "improved"
    assert v.change == pytest.approx(-0.2) and v.worse_by == pytest.approx(-0.2)
    assert v.p_value == pytest.approx(1 / 252)
    assert "better by 20.0% > 10%" in v.message


def test_identical_distributions_are_ok():
    v = compare("throughput_tok_s", scaled(BASE, 100), scaled(BASE, 100), rel("throughput_tok_s", 0.05))
    assert v.status == "ok"
    assert v.change == 0.0 and v.worse_by == 0.0
    assert v.p_value > 0.4
    assert v.message.startswith("throughput_tok_s ok: median 100 tok/s -> 100 tok/s (+0.0%), within 5% (p=")


def test_direction_lower_is_better_vs_higher_is_better():
    # The same numbers, 20% larger: worse for a time, better for a throughput.
    smaller, larger = scaled(BASE, 50), scaled(BASE, 60)
    ttft = compare("ttft_s", smaller, larger, rel("ttft_s", 0.10))
    tps = compare("throughput_tok_s", smaller, larger, rel("throughput_tok_s", 0.10))
    assert (ttft.status, tps.status) == ("regressed", "improved")
    assert ttft.change == pytest.approx(0.2) and tps.change == pytest.approx(0.2)
    assert ttft.worse_by == pytest.approx(0.2) and tps.worse_by == pytest.approx(-0.2)
    # 20% lower throughput is a regression of 20%
    drop = compare("throughput_tok_s", larger, scaled(larger, 0.8), rel("throughput_tok_s", 0.10))
    assert drop.status == "regressed" and drop.worse_by == pytest.approx(0.2)
    assert drop.p_value == pytest.approx(1 / 252)


def test_absolute_threshold_in_mb_on_peak_memory():
    threshold = parse_thresholds("peak_mem_bytes:64MB")["peak_mem_bytes"]
    base = [1000e6 + i * 1e5 for i in range(5)]     # median 1000.2 MB
    up80 = [v + 80e6 for v in base]
    up50 = [v + 50e6 for v in base]
    down80 = [v - 80e6 for v in base]
    regressed = compare("peak_mem_bytes", base, up80, threshold)
    assert regressed.status == "regressed"
    assert regressed.worse_by == pytest.approx(80e6 / 1000.2e6)
    assert "worse by 80 MB > 64MB" in regressed.message
    assert compare("peak_mem_bytes", base, up50, threshold).status == "near-miss"   # significant, within 64 MB
    assert compare("peak_mem_bytes", base, down80, threshold).status == "improved"
    # a relative 5% threshold is crossed by +60 MB (6.0%), which the absolute 64 MB tolerates
    up60 = [v + 60e6 for v in base]
    assert compare("peak_mem_bytes", base, up60, rel("peak_mem_bytes", 0.05)).status == "regressed"
    assert compare("peak_mem_bytes", base, up60, threshold).status == "near-miss"
    assert regressed.message.startswith("peak_mem_bytes regressed: median 1000 MB -> 1080 MB (+8.0%)")
    relative = compare("peak_mem_bytes", base, up60, rel("peak_mem_bytes", 0.05))
    assert relative.message.startswith("peak_mem_bytes regressed: median 953.9 MiB -> 1011 MiB (+6.0%)")


def test_constant_identical_samples_are_ok_not_nan():
    v = compare("peak_mem_bytes", [5e8] * 5, [5e8] * 5, rel("peak_mem_bytes", 0.01))
    assert v.status == "ok" and v.p_value == 1.0


def test_too_few_rounds_to_reach_alpha_say_so():
    v = compare("ttft_s", BASE[:3], scaled(BASE[:3], 1.2), rel("ttft_s", 0.10))
    assert v.status == "near-miss"
    assert v.p_value == pytest.approx(1 / 20)
    assert v.message.endswith("; 3 vs 3 samples cannot reach p < 0.01 (use >= 5 rounds)")


def test_compare_rejects_wrong_inputs():
    with pytest.raises(GateConfigError, match="flops_per_tok has no better direction"):
        compare("flops_per_tok", BASE, BASE, rel("flops_per_tok", 0.1))
    with pytest.raises(ValueError, match="threshold for 'ttft_s' given to compare 'latency_s'"):
        compare("latency_s", BASE, BASE, rel("ttft_s", 0.1))
    with pytest.raises(ValueError, match="samples must be finite"):
        compare("ttft_s", BASE, BASE + [math.nan], rel("ttft_s", 0.1))


def test_min_rounds_for_alpha_matches_scipy_exact_test():
    from scipy.stats import mannwhitneyu

    def best_p(n):  # every current sample above every baseline sample
        return mannwhitneyu(list(range(n, 2 * n)), list(range(n)), alternative="greater", method="exact").pvalue

    assert best_p(4) == pytest.approx(1 / 70) and best_p(4) > 0.01
    assert best_p(5) == pytest.approx(1 / 252) and best_p(5) < 0.01
    assert min_exact_p(5, 5) == pytest.approx(best_p(5))
    assert min_rounds_for_alpha(0.01) == 5
    assert min_rounds_for_alpha(0.05) == 4    # 1/70 < 0.05, 1/20 is not
    assert min_rounds_for_alpha(0.001) == 7   # 1/3432 < 0.001 <= 1/924
    with pytest.raises(ValueError):
        min_rounds_for_alpha(0)


def test_gate_and_storage_do_not_import_scipy():
    code = ("import sys, pytest_llmeff.gate.verdicts, pytest_llmeff.gate.two_sample, pytest_llmeff.gate.drift, "
            "pytest_llmeff.gate.family, pytest_llmeff.results.storage; "
            "print(sorted(m for m in ('scipy', 'torch', 'pytest_llmeff.plugin', 'pytest_llmeff.session.state') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- a gate never fails open (issue 21): what the evidence cannot resolve is inconclusive, never ok ------------
def _paired_verdict(drop: float, noise: float, pairs: int):
    """Lockstep rounds of a candidate ``drop`` slower (fraction) with multiplicative noise ``noise`` per round."""
    import random

    from pytest_llmeff.gate.drift import paired_mde
    from pytest_llmeff.gate.two_sample import compare_paired

    rng = random.Random(7)
    base = [100.0 * (1 + rng.uniform(-noise, noise)) for _ in range(pairs)]
    cur = [b * (1 - drop) * (1 + rng.uniform(-noise, noise)) for b in base]
    threshold = parse_thresholds("throughput_tok_s:5%")["throughput_tok_s"]
    v = compare_paired("throughput_tok_s", base, cur, threshold, alpha=0.01)
    from dataclasses import replace

    return replace(v, mde=paired_mde(base, cur, 0.01, "higher")), threshold


def test_a_near_miss_the_pairs_cannot_resolve_becomes_inconclusive():
    from pytest_llmeff.gate.judge import unresolved

    v, threshold = _paired_verdict(drop=0.15, noise=0.5, pairs=12)  # a 15% drop drowned in noise
    assert v.status in ("near-miss", "ok") and v.mde > threshold.value
    judged = unresolved(v, threshold)
    assert judged.status == "inconclusive" and "resolves changes of about" in judged.message


def test_a_resolved_verdict_stands():
    from pytest_llmeff.gate.judge import unresolved

    quiet, threshold = _paired_verdict(drop=0.0, noise=0.005, pairs=20)  # unchanged code on a quiet machine
    assert quiet.mde < threshold.value and unresolved(quiet, threshold).status == quiet.status == "ok"
    slow, _ = _paired_verdict(drop=0.5, noise=0.05, pairs=20)
    assert unresolved(slow, threshold).status == "regressed"


def test_broken_pairing_leaves_only_a_regression_standing():
    from pytest_llmeff.gate.judge import pairing_broke

    slow, _ = _paired_verdict(drop=0.5, noise=0.05, pairs=20)
    quiet, _ = _paired_verdict(drop=0.0, noise=0.005, pairs=20)
    assert pairing_broke(slow, "pairing broke").status == "regressed"
    broken = pairing_broke(quiet, "pairing broke")
    assert broken.status == "inconclusive" and broken.message.endswith("inconclusive: pairing broke")


@pytest.mark.parametrize("policy, role, fails", [
    (None, "candidate", True), (None, None, False), ("warn", "candidate", False), ("fail", None, True)])
def test_inconclusive_fails_by_default_only_under_a_lockstep_pair(policy, role, fails):
    from types import SimpleNamespace

    from pytest_llmeff.gate.baseline import Baseline

    b = Baseline(inconclusive=policy)
    b.turnstile = SimpleNamespace(role=role) if role else None
    assert b.fails_inconclusive is fails
