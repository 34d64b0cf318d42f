"""analysis.py against hand-computed answers and scipy: rankings that never rank noise, the Pareto front with
interval-aware dominance, the efficiency score, MAD outlier rounds, the spread across variants."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pytest
from scipy import stats as sps

from pytest_llmeff.report import analysis
from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.results.schema import BenchmarkRecord, Metric, VariantRecord


def _metric(name: str, median: float, rel: Optional[float] = 0.01, n: int = 12) -> Metric:
    """``n`` samples at ``median``; the interval ``median * (1 ± rel)`` (None: no interval)."""
    base = Metric.from_samples(name, [median] * n)
    if rel is None:
        return base.model_copy(update={"ci_low": None, "ci_high": None, "ci_rel": None, "ci_level": None})
    return base.model_copy(update={"ci_low": median * (1 - rel), "ci_high": median * (1 + rel), "ci_rel": rel,
                                   "ci_level": 0.95})


def _rec(vid: str, outcome: str = "passed", **metrics) -> BenchmarkRecord:
    """A record whose metrics are given as name=median (1% interval) or name=(median, rel) or a Metric."""
    built = {}
    for name, value in metrics.items():
        if isinstance(value, Metric):
            built[name] = value
        elif isinstance(value, tuple):
            built[name] = _metric(name, *value)
        else:
            built[name] = _metric(name, value, rel=0.01 if analysis.sampled(name) else None,
                                  n=12 if analysis.sampled(name) else 1)
    return BenchmarkRecord(
        nodeid=f"b/t.py::test_gen[{vid}]", name=f"test_gen[{vid}]", group="g",
        variant=VariantRecord(id=vid, model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=8, device="cpu", prompts=1),
        rounds=12, warmup=1, tokens_generated=8, prompt_tokens=4, outcome=outcome, metrics=built)


# --- rankings --------------------------------------------------------------------------------------------------
def test_rankings_follow_each_metrics_direction_and_mark_only_a_clear_winner():
    recs = [_rec("a", throughput_tok_s=50, ttft_s=0.10), _rec("b", throughput_tok_s=30, ttft_s=0.05),
            _rec("c", throughput_tok_s=40, ttft_s=0.0502)]
    tps = analysis.rank(recs, "throughput_tok_s")
    assert [e.record.variant.id for e in tps.entries] == ["a", "c", "b"]          # higher is better
    assert tps.best.record.variant.id == "a" and tps.tied == ()
    ttft = analysis.rank(recs, "ttft_s")
    assert [e.record.variant.id for e in ttft.entries] == ["b", "c", "a"]          # lower is better
    assert ttft.best is None                                                      # b and c overlap: tied
    assert {e.record.variant.id for e in ttft.tied} == {"b", "c"}


def test_rankings_skip_metrics_without_direction_failed_records_and_once_figures_get_no_mark():
    recs = [_rec("a", throughput_tok_s=50, flops_per_tok=1e6, ppl_ratio=1.0),
            _rec("b", throughput_tok_s=60, flops_per_tok=1e6, ppl_ratio=1.2, outcome="failed"),
            _rec("c", throughput_tok_s=40, flops_per_tok=1e6, ppl_ratio=1.1)]
    assert analysis.rank(recs, "flops_per_tok") is None
    ppl = analysis.rank(recs, "ppl_ratio")
    assert [e.record.variant.id for e in ppl.entries] == ["a", "c"] and ppl.best is None  # no interval: no mark
    assert [r.metric for r in analysis.rankings(recs)] == ["throughput_tok_s", "ppl_ratio"]
    assert analysis.rank(recs, "throughput_tok_s").best.record.variant.id == "a"   # b failed: not ranked


def test_the_table_uses_the_same_marks():
    from pytest_llmeff.report.terminal import column_marks

    assert column_marks is analysis.best_marks


# --- Pareto front ----------------------------------------------------------------------------------------------
def test_pareto_front_by_hand():
    # throughput higher, ppl_ratio lower.  a: fast, drifts; b: slow, exact; c: dominated by a and by d (slower,
    # drifts more); d: ties a on speed (overlapping interval) but drifts more -> dominated by a; e: lacks ppl_ratio
    recs = [_rec("a", throughput_tok_s=50, ppl_ratio=1.10), _rec("b", throughput_tok_s=20, ppl_ratio=1.00),
            _rec("c", throughput_tok_s=40, ppl_ratio=1.20), _rec("d", throughput_tok_s=50.4, ppl_ratio=1.15),
            _rec("e", throughput_tok_s=90)]
    front = analysis.pareto_front(recs, ["throughput_tok_s", "ppl_ratio"])
    assert front.front == (0, 1)
    assert front.dominated == {2: (0, 3), 3: (0,)}
    assert front.missing == {4: ("ppl_ratio",)}


def test_noise_never_dims_a_variant():
    # b's throughput is lower only within the intervals and its drift is equal: not dominated
    recs = [_rec("a", throughput_tok_s=(50, 0.05), peak_mem_bytes=(1e9, 0.01)),
            _rec("b", throughput_tok_s=(48, 0.05), peak_mem_bytes=(1e9, 0.01))]
    assert analysis.pareto_front(recs, ["throughput_tok_s", "peak_mem_bytes"]).front == (0, 1)
    # without intervals on a sampled metric nothing can be told apart either
    recs = [_rec("a", throughput_tok_s=(50, None)), _rec("b", throughput_tok_s=(20, None))]
    assert analysis.pareto_front(recs, ["throughput_tok_s", "ttft_s"]).missing == {0: ("ttft_s",), 1: ("ttft_s",)}
    recs = [_rec("a", throughput_tok_s=(50, None), ppl_ratio=1.0), _rec("b", throughput_tok_s=(20, None),
                                                                        ppl_ratio=1.0)]
    assert analysis.pareto_front(recs, ["throughput_tok_s", "ppl_ratio"]).front == (0, 1)


def test_pareto_front_matches_brute_force_on_points_without_noise():
    rng = np.random.default_rng(7)
    pts = rng.random((40, 2))
    recs = [_rec(f"v{i}", throughput_tok_s=(float(x) + 1, 1e-9), ttft_s=(float(y) + 1, 1e-9))
            for i, (x, y) in enumerate(pts)]
    front = set(analysis.pareto_front(recs, ["throughput_tok_s", "ttft_s"]).front)
    brute = {i for i, (x, y) in enumerate(pts)
             if not any(x2 >= x and y2 <= y and (x2 > x or y2 < y) for x2, y2 in pts)}
    assert front == brute and 1 <= len(front) < 40


@pytest.mark.parametrize("text, problem", [
    ("throughput_tok_s,speed", "'speed' is not a metric"),
    ("throughput_tok_s,flops_per_tok", "'flops_per_tok' has no direction"),
    ("throughput_tok_s", "give two or more different metrics"),
    ("ttft_s,ttft_s", "give two or more different metrics"),
])
def test_bad_objectives_are_one_line(text, problem):
    with pytest.raises(UsageProblem, match=problem) as info:
        analysis.parse_objectives(text)
    assert "\n" not in str(info.value)


def test_default_objectives_follow_the_quality_drift_the_run_has():
    assert analysis.default_objectives([_rec("a", throughput_tok_s=1, ppl_ratio=1.0)]) == \
        ("throughput_tok_s", "ppl_ratio")
    assert analysis.default_objectives([_rec("a", throughput_tok_s=1, kld_mean_nat=0.1)]) == \
        ("throughput_tok_s", "kld_mean_nat")
    assert analysis.default_objectives([_rec("a", throughput_tok_s=1, peak_mem_bytes=1e9)]) == \
        ("throughput_tok_s", "peak_mem_bytes")


# --- efficiency score ------------------------------------------------------------------------------------------
def test_efficiency_score_is_the_weighted_geometric_mean_of_ratios_to_the_best():
    recs = [_rec("a", throughput_tok_s=50, peak_mem_bytes=2e9), _rec("b", throughput_tok_s=25, peak_mem_bytes=1e9)]
    s = analysis.efficiency_scores(recs, {"throughput_tok_s": 3, "peak_mem_bytes": 1, "ppl_ratio": 1})
    # a: tps 1, mem 0.5 -> (1^3 * 0.5)^(1/4); b: tps 0.5, mem 1 -> (0.5^3)^(1/4)
    assert s.scores[0] == pytest.approx(100 * 0.5 ** 0.25) and s.scores[1] == pytest.approx(100 * 0.5 ** 0.75)
    assert s.scores[0] == pytest.approx(100 * sps.gmean([1, 0.5], weights=[3, 1]))
    assert s.dropped == {"ppl_ratio": "no benchmark holds it"} and s.weights == {"throughput_tok_s": 3,
                                                                                 "peak_mem_bytes": 1}
    lone = analysis.efficiency_scores(recs + [_rec("c", throughput_tok_s=60)],
                                      {"throughput_tok_s": 1, "peak_mem_bytes": 1})
    assert lone.missing == {2: ("peak_mem_bytes",)} and 2 not in lone.scores


@pytest.mark.parametrize("text, problem", [
    ("throughput_tok_s", "needs a weight >= 0"), ("throughput_tok_s:-1", "needs a weight >= 0"),
    ("speed:1", "'speed' is not a metric"), ("flops_counted:1", "has no direction"),
    ("throughput_tok_s:0", "at least one metric with a weight above 0"),
])
def test_bad_weights_are_one_line(text, problem):
    with pytest.raises(UsageProblem, match=problem):
        analysis.parse_weights(text)


def test_weights_parse():
    assert analysis.parse_weights("throughput_tok_s:2, ppl_ratio:0.5") == {"throughput_tok_s": 2.0,
                                                                          "ppl_ratio": 0.5}


# --- outliers --------------------------------------------------------------------------------------------------
def test_outlier_rounds_use_the_normal_scaled_mad():
    samples = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.60, 1.00]
    m = Metric.from_samples("latency_s", samples)
    mad = sps.median_abs_deviation(samples, scale="normal")
    expected = [i for i, x in enumerate(samples) if abs(x - np.median(samples)) / mad > 3.5]
    assert expected == [7]
    assert analysis.outlier_rounds({"latency_s": m}) == {"latency_s": [7]}


def test_outliers_need_enough_rounds_a_spread_and_a_per_round_metric():
    few = Metric.from_samples("latency_s", [1.0, 1.0, 1.0, 9.0])
    flat = Metric.from_samples("latency_s", [1.0] * 8 + [5.0])            # MAD 0: nothing flagged
    itl = Metric.from_samples("itl_s", [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 9.0])  # per token, not a round
    assert analysis.outlier_rounds({"latency_s": few}) == {}
    assert analysis.outlier_rounds({"latency_s": flat}) == {}
    assert analysis.outlier_rounds({"itl_s": itl}) == {}


def test_outliers_of_an_old_record_are_computed_and_a_new_records_are_read():
    r = _rec("a", latency_s=Metric.from_samples("latency_s", [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 3.0]))
    assert r.outliers is None and analysis.outliers_of(r) == {"latency_s": [6]}
    assert analysis.outliers_of(r.model_copy(update={"outliers": {}})) == {}


# --- spread ----------------------------------------------------------------------------------------------------
def test_spread_across_variants():
    recs = [_rec("a", throughput_tok_s=10), _rec("b", throughput_tok_s=40), _rec("c", throughput_tok_s=20)]
    (s,) = analysis.spread(recs)
    assert (s.low, s.low_index, s.high, s.high_index, s.median, s.n) == (10, 0, 40, 1, 20, 3)
    assert s.ratio == 4 and s.cv == pytest.approx(sps.variation([10, 40, 20]))
    assert math.isclose(s.cv, np.std([10, 40, 20]) / np.mean([10, 40, 20]))


def test_sections_compare_models_within_a_group():
    a, b = _rec("a", throughput_tok_s=1), _rec("b", throughput_tok_s=2)
    c = _rec("c", throughput_tok_s=3).model_copy(update={"group": None})
    assert analysis.sections([a, c, b]) == [("g", [a, b]), (None, [c])]
