"""The run's false-alarm budget (Bonferroni over the run's tested comparisons), figures measured once per variant
judged directly, and gated metrics that were not measured."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binomtest, mannwhitneyu

from pytest_llmeff.gate.baseline import Baseline
from pytest_llmeff.gate.family import FamilyBudget
from pytest_llmeff.gate.thresholds import parse_thresholds
from pytest_llmeff.gate.two_sample import compare, compare_paired
from pytest_llmeff.gate.verdicts import DIRECT, is_tested, not_measured
from pytest_llmeff.metrics import METRICS
from pytest_llmeff.report.gate_text import failure_text
from pytest_llmeff.report.terminal import verdict_cell
from pytest_llmeff.results.schema import BenchmarkRecord, Metric, Run, VariantRecord

ALPHA = 0.01
GATED = "throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:5%"


def _record(nodeid: str, samples: dict[str, list[float]], name: str | None = None) -> BenchmarkRecord:
    return BenchmarkRecord(
        nodeid=nodeid, name=name or nodeid.rsplit("::", 1)[-1],
        variant=VariantRecord(id="m-fp32-b1", model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=4, device="cpu", prompts=1),
        rounds=max(len(v) for v in samples.values()), warmup=0, tokens_generated=4, prompt_tokens=3,
        metrics={k: Metric.from_samples(k, v) for k, v in samples.items()})


def _run(records) -> Run:
    return Run(started_at="2026-01-02T03:04:05+00:00", finished_at="2026-01-02T03:04:05+00:00",
               machine={"cpu": "x", "cores_logical": 2, "ram_bytes": 1, "gpus": [], "os": "Linux",
                        "python": "3.11", "hostname": "h"},
               versions={}, commit={"id": "0" * 16, "dirty": False}, benchmarks=list(records))


def _variant(thresholds=()) -> SimpleNamespace:
    """What ``Baseline`` reads of a ``variants.Variant``: its marker's thresholds and limits."""
    return SimpleNamespace(thresholds=tuple(thresholds), limits=())


# ---- the per-comparison level ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha, m, level", [(0.01, 1, 0.01), (0.01, 60, 0.01 / 60), (0.05, 20, 0.0025)])
def test_per_comparison_level_is_alpha_over_m(alpha, m, level):
    budget = FamilyBudget(alpha, m)
    assert budget.level == pytest.approx(level, rel=1e-12)
    # Holm's step-down (hand-computed here) tests the smallest p-value at alpha/m first, so Bonferroni's level is
    # Holm's first, strictest step: anything Bonferroni rejects, Holm rejects too
    holm_first_step = alpha / (m - 0)
    assert budget.level == pytest.approx(holm_first_step)
    assert f"over {m} tested comparison" in budget.describe() and f"{level:.3g}" in budget.describe()


def test_bonferroni_rejects_a_subset_of_a_hand_computed_holm_example():
    # p = .001, .004, .02, .3 with alpha .05, m 4: Holm compares .001 < .0125, .004 < .05/3, .02 >= .025 -> stops,
    # so Holm rejects the first two; Bonferroni (.0125 each) rejects .001 and .004 as well, nothing more
    p_values = [0.001, 0.004, 0.02, 0.3]
    level = FamilyBudget(0.05, 4).level
    assert [p < level for p in p_values] == [True, True, False, False]


@pytest.mark.parametrize("alpha, m, message", [
    (0.0, 3, "alpha=0.0 must be a number in (0, 1)"),
    (1.0, 3, "alpha=1.0 must be a number in (0, 1)"),
    (0.01, 0, "comparisons=0 must be a whole number >= 1"),
    (0.01, 2.5, "comparisons=2.5 must be a whole number >= 1"),
])
def test_bad_budget_is_one_clear_line(alpha, m, message):
    with pytest.raises(ValueError) as info:
        FamilyBudget(alpha, m)
    assert str(info.value) == message


# ---- m, counted before the first test runs ---------------------------------------------------------------------

def _stored(n_benchmarks=20):
    base = {"throughput_tok_s": [100.0] * 6, "ttft_s": [0.1] * 6, "peak_mem_bytes": [1e6] * 6,
            "model_bytes": [1e8]}
    return _run(_record(f"t.py::test_{i}", base) for i in range(n_benchmarks))


def test_family_size_counts_stored_benchmarks_times_tested_gated_metrics():
    thresholds = parse_thresholds(GATED + ",model_bytes:1%")  # model_bytes is judged directly: not counted
    baseline = Baseline(thresholds, ALPHA, stored=_stored(20), name="base")
    assert not is_tested("model_bytes") and is_tested("ttft_s")
    assert baseline.family_size()[0] == 20 * 3
    # the collection narrows it to what this run can compare, and a marker threshold adds to one test
    baseline.plan_family([("t.py::test_0", _variant()), ("t.py::test_1", _variant((("decode_tok_s", "5%"),))),
                          ("t.py::test_new", _variant())])
    # decode_tok_s is not in the stored records: no comparison possible; test_new has no stored record
    assert baseline.family_size()[0] == 2 * 3


def test_family_size_from_the_collection_alone_for_the_lockstep_candidate():
    baseline = Baseline(parse_thresholds(GATED), ALPHA)
    assert baseline.family_size()[0] is None
    baseline.plan_family([(f"t.py::test_{i}", None) for i in range(20)])
    assert baseline.family_size()[0] == 60
    assert baseline.budget(baseline.thresholds).level == pytest.approx(ALPHA / 60)


def test_judge_holds_each_comparison_at_alpha_over_m_and_says_so():
    stored = _stored(20)
    baseline = Baseline(parse_thresholds(GATED), ALPHA, stored=stored, name="base")
    # 6 vs 6 rounds, every current round 20% slower: exact one-sided Mann-Whitney p = 1/C(12,6) = 1/924 ~ 1.1e-3,
    # below alpha (0.01) but above alpha/20 (5e-4): significant alone, not after the run's correction
    base = [100.0 + i for i in range(6)]
    cur = [80.0 - i for i in range(6)]
    stored.benchmarks[0] = _record("t.py::test_0", {"throughput_tok_s": base})
    baseline = Baseline(parse_thresholds("throughput_tok_s:5%"), ALPHA, stored=stored, name="base")
    record = _record("t.py::test_0", {"throughput_tok_s": cur})
    baseline.judge(record, _variant())
    m = 1 + 19  # the other 19 stored records measured throughput too (_stored) -> m = 20
    (v,) = record.verdicts
    assert baseline.family_size()[0] == m
    p_expected = 1 / math.comb(12, 6)
    assert v.p_value == pytest.approx(p_expected)
    assert v.alpha == pytest.approx(ALPHA / m) and v.alpha_run == ALPHA and v.comparisons == m
    assert ALPHA / m < p_expected < ALPHA
    assert v.status == "near-miss"  # beyond the threshold but not significant at alpha/m
    assert "Bonferroni" in v.correction and f"{ALPHA / m:.3g}" in v.correction
    line = baseline.budget_line()
    assert f"Bonferroni over m = {m} tested comparisons" in line and f"{ALPHA / m:.3g}" in line
    assert any(line == text for text in baseline.comparison_lines(None))


def test_unknown_run_size_spends_per_test_and_warns():
    baseline = Baseline(parse_thresholds("throughput_tok_s:5%,ttft_s:10%"), ALPHA)
    baseline._index = {("t.py::test_0", "test_0"): _record("t.py::test_0", {"throughput_tok_s": [1.0] * 6,
                                                                             "ttft_s": [1.0] * 6})}
    record = _record("t.py::test_0", {"throughput_tok_s": [1.0] * 6, "ttft_s": [1.0] * 6})
    baseline.judge(record, _variant())
    assert {v.comparisons for v in record.verdicts} == {2}
    assert "WARNING the run's size was unknown" in baseline.budget_line()


# ---- simulation: the per-run false-alarm rate on A/A data ------------------------------------------------------

def _simulate(level: float, runs=1000, benchmarks=20, rounds=10, cv=0.05, slowdown=0.0, seed=7) -> np.ndarray:
    """Per run: whether any of benchmarks x 3 metrics came out regressed, with the gate's rule (change beyond a
    0% threshold, the worst case, and one-sided Mann-Whitney p < ``level``), rounds independent. ``slowdown``:
    throughput of benchmark 0 lower by that fraction in the current run."""
    rng = np.random.default_rng(seed)
    shape = (runs, benchmarks, 3, rounds)
    base = rng.lognormal(0.0, cv, shape)
    cur = rng.lognormal(0.0, cv, shape)
    cur[:, 0, 0, :] *= 1 - slowdown
    # metric 0: throughput (higher is better: worse is less); metrics 1, 2: ttft, peak memory (worse is greater)
    p = np.empty(shape[:3])
    p[:, :, 0] = mannwhitneyu(cur[:, :, 0], base[:, :, 0], alternative="less", axis=-1).pvalue
    p[:, :, 1:] = mannwhitneyu(cur[:, :, 1:], base[:, :, 1:], alternative="greater", axis=-1).pvalue
    change = np.median(cur, axis=-1) / np.median(base, axis=-1) - 1
    worse = np.concatenate([-change[:, :, :1], change[:, :, 1:]], axis=2) > 0.0
    return (worse & (p < level)).reshape(runs, -1)


def test_the_vectorised_rule_is_the_gates_rule():
    rng = np.random.default_rng(1)
    thresholds = parse_thresholds("throughput_tok_s:0%,ttft_s:0%")
    for _ in range(40):
        base, cur = rng.lognormal(0, 0.05, 10), rng.lognormal(0, 0.05, 10) * rng.choice([1.0, 0.93, 1.07])
        for metric, alt, sign in (("throughput_tok_s", "less", -1), ("ttft_s", "greater", 1)):
            v = compare(metric, base, cur, thresholds[metric], alpha=0.05)
            p = mannwhitneyu(cur, base, alternative=alt).pvalue
            mine = sign * (np.median(cur) / np.median(base) - 1) > 0 and p < 0.05
            assert (v.status == "regressed") == mine


def test_simulated_runs_keep_the_per_run_false_alarm_rate_within_alpha():
    m = 20 * 3
    before = _simulate(ALPHA).any(axis=1)           # every comparison at alpha: the old gate
    after = _simulate(FamilyBudget(ALPHA, m).level).any(axis=1)
    ci_before = binomtest(int(before.sum()), before.size).proportion_ci(0.95)
    ci_after = binomtest(int(after.sum()), after.size).proportion_ci(0.95)
    # before: about 1 - (1 - alpha/2)^60 (the test alone would give 1 - 0.99^60 = 45%; the median must move too)
    assert ci_before.low > ALPHA, (before.mean(), ci_before)
    # after: at most alpha, within the simulation's 95% interval
    assert ci_after.low <= ALPHA, (after.mean(), ci_after)
    assert after.mean() <= 2 * ALPHA


def test_a_strong_regression_is_still_caught_after_the_correction():
    level = FamilyBudget(ALPHA, 60).level
    caught = _simulate(level, runs=300, slowdown=0.30, seed=11)[:, 0]  # benchmark 0's throughput
    assert caught.mean() >= 0.99
    # and through compare itself: 10 vs 10 rounds, 30% slower, 5% noise
    rng = np.random.default_rng(3)
    v = compare("throughput_tok_s", rng.lognormal(0, 0.05, 10) * 100, rng.lognormal(0, 0.05, 10) * 70,
                parse_thresholds("throughput_tok_s:5%")["throughput_tok_s"], alpha=level)
    assert v.status == "regressed" and v.p_value < level


def test_paired_lockstep_rounds_take_the_corrected_level_too():
    level = FamilyBudget(ALPHA, 60).level  # 1.67e-4: 20 pairs reach it (smallest p 1/2^20)
    base = [100.0 + (i % 3) for i in range(20)]
    cur = [b * (0.85 - 0.001 * i) for i, b in enumerate(base)]  # distinct ratios: scipy's exact distribution
    v = compare_paired("throughput_tok_s", base, cur, parse_thresholds("throughput_tok_s:5%")["throughput_tok_s"],
                       alpha=level)
    assert v.status == "regressed" and v.alpha == level and v.p_value == pytest.approx(0.5 ** 20)


# ---- figures measured once per variant: judged directly ---------------------------------------------------------

@pytest.mark.parametrize("metric, threshold, before, after, status", [
    ("token_agreement", "5%", 1.0, 0.30, "regressed"),
    ("ppl_ratio", "10%", 1.0, 3.0, "regressed"),
    ("model_bytes", "64MB", 100e6, 400e6, "regressed"),
    ("kld_mean_nat", "50%", 0.02, 0.021, "ok"),
    ("top1_agreement", "2%", 0.90, 0.99, "improved"),
    ("model_bytes", "64MB", 100e6, 150e6, "ok"),
])
def test_once_per_variant_figures_are_judged_directly(metric, threshold, before, after, status):
    assert METRICS[metric].sampling == "once"
    t = parse_thresholds(f"{metric}:{threshold}")[metric]
    for judge in (compare, compare_paired):
        v = judge(metric, [before], [after], t, alpha=ALPHA)
        assert v.status == status and v.test == DIRECT and v.p_value is None
        assert v.change == pytest.approx((after - before) / before)
        assert "judged directly" in v.message


def test_a_direct_regression_fails_the_test_with_its_own_words():
    baseline = Baseline(parse_thresholds("token_agreement:5%,throughput_tok_s:5%"), ALPHA,
                        stored=_run([_record("t.py::test_0", {"token_agreement": [1.0],
                                                              "throughput_tok_s": [100.0] * 6})]), name="base")
    record = _record("t.py::test_0", {"token_agreement": [0.30], "throughput_tok_s": [100.0] * 6})
    baseline.judge(record, _variant())
    agreement = next(v for v in record.verdicts if v.metric == "token_agreement")
    assert agreement.status == "regressed" and agreement.correction.startswith("none: judged directly")
    assert baseline.family_size()[0] == 1  # only throughput is tested
    assert record.gate_failed
    assert "REGRESSED m-fp32-b1 token_agreement: baseline 1, current 0.3, change -70.0%, threshold 5%, judged " \
           "directly" in failure_text([record])
    assert "1 once-per-variant figure judged directly" in baseline.budget_line()


def test_a_direct_verdict_without_a_figure_is_inconclusive():
    t = parse_thresholds("ppl:5%")["ppl"]
    assert compare("ppl", [], [3.0], t).status == "inconclusive"


# ---- a gated metric that was not measured ----------------------------------------------------------------------

def test_a_gated_metric_not_measured_is_a_visible_verdict_and_a_warning():
    stored = _run([_record("t.py::test_0", {"throughput_tok_s": [100.0] * 6})])
    baseline = Baseline(parse_thresholds("throughput_tok_s:5%,energy_j_per_tok:5%"), ALPHA, stored=stored,
                        name="base")
    record = _record("t.py::test_0", {"throughput_tok_s": [100.0] * 6})
    baseline.judge(record, _variant())
    energy = next(v for v in record.verdicts if v.metric == "energy_j_per_tok")
    assert energy.status == "not-measured" and energy.p_value is None
    assert energy.message == "energy_j_per_tok not measured in either run: threshold 5% not checked"
    assert "gated metric energy_j_per_tok was not measured in either run: not compared" in record.warnings
    assert not record.gate_failed
    assert "not measured" in verdict_cell(record)
    assert "1 gated metric not measured" in baseline.budget_line()


def test_not_measured_names_the_side():
    t = parse_thresholds("ttft_s:5%")["ttft_s"]
    assert not_measured("ttft_s", t, "the baseline").message == \
        "ttft_s not measured in the baseline: threshold 5% not checked"
