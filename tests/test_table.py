"""The comparison table's cells and marks (intervals, no interval, imprecise, best, tied), its default columns and
width, ``--llmeff-columns``, and the markdown report's use of the same rules."""

from __future__ import annotations

from typing import Optional

import pytest

from pytest_llmeff.report.markdown import render_markdown
from pytest_llmeff.report.terminal import (DEFAULT_COLUMNS, TABLE_WIDTH, cell, column_marks, interval_text,
                                           render)
from pytest_llmeff.results.schema import (BenchmarkRecord, EnergyInfo, Metric, StopInfo, VariantRecord,
                                   VerdictRecord)


def _metric(name: str, median: float, rel: Optional[float] = None, n: int = 12) -> Metric:
    """A metric of ``n`` samples at ``median`` whose 95% interval is ``median * (1 ± rel)`` (None: no interval)."""
    base = Metric.from_samples(name, [median] * n)
    if rel is None:
        return base.model_copy(update={"ci_low": None, "ci_high": None, "ci_rel": None, "ci_level": None})
    return base.model_copy(update={"ci_low": median * (1 - rel), "ci_high": median * (1 + rel), "ci_rel": rel,
                                   "ci_level": 0.95})


def _record(precision: str, metrics: dict[str, Metric], *, quant: Optional[str] = None, test: str = "test_gen",
            outcome: str = "passed", verdicts=(), estimated: bool = True, target_rel: Optional[float] = None,
            warnings=()) -> BenchmarkRecord:
    vid = f"m-{precision}-{quant or 'none'}-b1"
    stop = None if target_rel is None else StopInfo(reason="target_ci", rounds=12, timed_s=1.0,
                                                     target_ci_rel=target_rel)
    return BenchmarkRecord(
        nodeid=f"bench/t.py::{test}[{vid}]", name=f"{test}[{vid}]", group="g",
        variant=VariantRecord(id=vid, model="m", model_source="alias", precision=precision, quantization=quant,
                              batch_size=1, max_new_tokens=32, device="cpu", prompts=4),
        rounds=12, warmup=1, tokens_generated=32, prompt_tokens=20, outcome=outcome, metrics=metrics,
        energy=EnergyInfo(method="codecarbon:cpu=cpu_load", estimated=estimated), verdicts=list(verdicts),
        stop=stop, warnings=list(warnings))


def _tps(precision: str, median: float, rel: Optional[float], **kw) -> BenchmarkRecord:
    return _record(precision, {"throughput_tok_s": _metric("throughput_tok_s", median, rel)}, **kw)


# --- cells ----------------------------------------------------------------------------------------------
def test_cells_show_the_interval_no_interval_imprecision_and_bare_once_figures():
    r = _record("float32", {
        "throughput_tok_s": _metric("throughput_tok_s", 38.43, 0.012),
        "ttft_s": _metric("ttft_s", 0.1834, 0.123),                       # wider than the 5% target
        "itl_s": _metric("itl_s", 0.0359, None, n=4),                     # too few samples for an interval
        "energy_j_per_tok": _metric("energy_j_per_tok", 0.6123, 0.031),
        "load_s": _metric("load_s", 12.34, n=1),                          # once per variant: no interval
        "top1_agreement": _metric("top1_agreement", 0.9871, n=1),
        "latency_s": _metric("latency_s", 0.0, 0.0).model_copy(update={"ci_low": -0.001, "ci_high": 0.002,
                                                                       "ci_rel": None}),
    })
    assert cell(r, "throughput_tok_s") == "38.4 ±1.2%"
    assert cell(r, "ttft_s") == "183 ±12%!"
    assert cell(r, "ttft_s", target_ci_pct=15) == "183 ±12%"           # within a looser target
    assert cell(r, "itl_s") == "35.9 ?"
    assert cell(r, "energy_j_per_tok") == "~0.612 ±3.1%"                # estimated energy
    assert cell(r.model_copy(update={"energy": None}), "energy_j_per_tok") == "0.612 ±3.1%"
    assert cell(r, "load_s") == "12.3" and cell(r, "top1_agreement") == "98.7"
    assert cell(r, "latency_s") == "0 ±0.00200"                          # zero median: the absolute half-width
    assert cell(r, "kld_mean_nat") == "-"
    assert cell(r, "throughput_tok_s", mark="*") == "38.4 ±1.2% *"
    assert [interval_text(x) for x in (0.0, 0.0123, 0.0996, 0.1, 0.456, 9.99, 828.0)] == [
        "±0.0%", "±1.2%", "±10%", "±10%", "±46%", "±999%", "±>999%"]


def test_a_records_own_stop_target_decides_its_imprecision():
    metrics = {"throughput_tok_s": _metric("throughput_tok_s", 30.0, 0.03)}
    assert cell(_record("float32", metrics, target_rel=0.02), "throughput_tok_s") == "30.0 ±3.0%!"
    assert cell(_record("float32", metrics, target_rel=0.02), "throughput_tok_s", target_ci_pct=10) == \
        "30.0 ±3.0%!"                                                   # its own target wins
    assert cell(_record("float32", metrics), "throughput_tok_s", target_ci_pct=2) == "30.0 ±3.0%!"
    assert cell(_record("float32", metrics), "throughput_tok_s") == "30.0 ±3.0%"


# --- best and tied --------------------------------------------------------------------------------------
def test_best_only_when_the_leaders_interval_is_clear_of_every_other():
    rows = [_tps("float32", 30.0, 0.02), _tps("bfloat16", 20.0, 0.02), _tps("float16", 10.0, 0.02)]
    assert column_marks(rows, "throughput_tok_s") == {0: "*"}
    # lower is better: the smallest TTFT
    ttft = [_record(p, {"ttft_s": _metric("ttft_s", v, 0.01)}) for p, v in (("a", 0.3), ("b", 0.1), ("c", 0.2))]
    assert column_marks(ttft, "ttft_s") == {1: "*"}


def test_overlapping_leaders_are_tied_never_best():
    # 30 ±4% = [28.8, 31.2] overlaps 29 ±2% = [28.42, 29.58]; 20 is clear of both
    rows = [_tps("float32", 30.0, 0.04), _tps("bfloat16", 29.0, 0.02), _tps("float16", 20.0, 0.02)]
    assert column_marks(rows, "throughput_tok_s") == {0: "=", 1: "="}
    text = render(rows)
    assert "30.0 ±4.0% =" in text and "29.0 ±2.0% =" in text and "20.0 ±2.0%  " in text
    assert "*" not in text.split("\n\n")[0]                            # no best mark in the table itself


def test_no_best_for_an_imprecise_or_interval_less_leader_nor_against_an_interval_less_runner_up():
    imprecise = [_tps("float32", 30.0, 0.08), _tps("bfloat16", 10.0, 0.01)]
    assert column_marks(imprecise, "throughput_tok_s") == {}
    no_interval = [_tps("float32", 30.0, None), _tps("bfloat16", 10.0, 0.01)]
    assert column_marks(no_interval, "throughput_tok_s") == {}
    # the runner-up has no interval: the leader cannot be shown to be ahead of it
    runner_up_unknown = [_tps("float32", 30.0, 0.01), _tps("bfloat16", 10.0, None)]
    assert column_marks(runner_up_unknown, "throughput_tok_s") == {0: "="}
    # an imprecise runner-up that overlaps is tied with the leader
    wide = [_tps("float32", 30.0, 0.01), _tps("bfloat16", 25.0, 0.3)]
    assert column_marks(wide, "throughput_tok_s") == {0: "=", 1: "="}
    assert "25.0 ±30%! =" in render(wide)


def test_no_marks_for_once_figures_failed_rows_or_a_single_row():
    once = [_record(p, {"load_s": _metric("load_s", v, n=1)}) for p, v in (("a", 1.0), ("b", 5.0))]
    assert column_marks(once, "load_s") == {}
    rows = [_tps("float32", 30.0, 0.01, outcome="failed"), _tps("bfloat16", 10.0, 0.01),
            _tps("float16", 5.0, 0.01)]
    assert column_marks(rows, "throughput_tok_s") == {1: "*"}          # the failed row is not ranked
    assert column_marks(rows[:1], "throughput_tok_s") == {}


# --- columns and width ----------------------------------------------------------------------------------
def _realistic(precision: str, quant: Optional[str], test: str, tps: float, tps_rel: Optional[float],
               verdicts=()) -> BenchmarkRecord:
    """A record holding every built-in metric, with figures like SmolLM2-135M's on a small CPU."""
    m = {
        "throughput_tok_s": _metric("throughput_tok_s", tps, tps_rel),
        "decode_tok_s": _metric("decode_tok_s", tps * 1.1, 0.02), "prefill_tok_s": _metric("prefill_tok_s", 812, 0.03),
        "ttft_s": _metric("ttft_s", 0.1834, 0.123), "tpot_s": _metric("tpot_s", 0.03612, 0.021),
        "itl_s": _metric("itl_s", 0.03588 * 30 / tps, 0.004, n=600), "latency_s": _metric("latency_s", 1.234, 0.02),
        "peak_mem_bytes": _metric("peak_mem_bytes", 852 * 2**20, 0.001),
        "peak_mem_delta_bytes": _metric("peak_mem_delta_bytes", 163.4 * 2**20 * 30 / tps, 0.002),
        "model_bytes": _metric("model_bytes", 258 * 2**20, n=1), "energy_j": _metric("energy_j", 12.3, 0.031),
        "energy_j_per_tok": _metric("energy_j_per_tok", 0.6123, 0.1234),
        "energy_net_j": _metric("energy_net_j", 10.1, 0.05), "energy_prefill_j": _metric("energy_prefill_j", 1.1, 0.05),
        "energy_decode_j_per_tok": _metric("energy_decode_j_per_tok", 0.5, 0.05),
        "co2_g": _metric("co2_g", 0.0012, 0.03), "flops_per_tok": _metric("flops_per_tok", 2.7e8, n=1),
        "flops_counted": _metric("flops_counted", 8.6e9, n=1), "flops_analytic": _metric("flops_analytic", 8.6e9, n=1),
        "tflops": _metric("tflops", 0.0123, 0.03), "mfu": _metric("mfu", 0.0123, 0.03),
        "load_s": _metric("load_s", 12.34, n=1), "token_agreement": _metric("token_agreement", 0.64, n=1),
        "prefix_agreement": _metric("prefix_agreement", 0.56, n=1),
        "top1_agreement": _metric("top1_agreement", 0.9871, n=1), "kld_mean_nat": _metric("kld_mean_nat", 0.01234, n=1),
        "kld_p99_nat": _metric("kld_p99_nat", 0.2345, n=1), "ppl": _metric("ppl", 12.34, n=1),
        "ppl_ratio": _metric("ppl_ratio", 1.012, n=1),
    }
    return _record(precision, m, quant=quant, test=test, verdicts=verdicts,
                   outcome="failed" if any(v.status == "regressed" for v in verdicts) else "passed",
                   warnings=["throughput varies: coefficient of variation 11%"])


def _verdicts(tps_status: str, tps_change: Optional[float], ttft_status: str, ttft_change: float):
    return [VerdictRecord(metric="throughput_tok_s", status=tps_status, change=tps_change, threshold="5%", message="-"),
            VerdictRecord(metric="ttft_s", status=ttft_status, change=ttft_change, threshold="10%", message="-")]


SIX = [("float32", None, "test_smollm2_precisions", 30.2, 0.012),
       ("bfloat16", None, "test_smollm2_precisions", 24.6, 0.061),
       ("float16", None, "test_smollm2_precisions", 123.4, 0.123),
       ("float32", "dynamic-int8", "test_smollm2_dynamic_int8", 31.0, 0.015),
       ("float32", "int8", "test_smollm2_int8", 12.3, None),
       ("bfloat16", "nf4", "test_smollm2_4bit", 9.87, 0.2)]


def _table_lines(text: str) -> list[str]:
    """The table of the first group (title excluded) up to its footer."""
    lines = text.split("\n\n")[0].splitlines()[1:]
    return [line for line in lines if not line.startswith(("warning:", "vs baseline:"))]


def test_the_default_table_of_six_variants_with_every_metric_and_verdicts_fits_160_columns():
    kinds = [("regressed", -0.123, "near-miss", 0.061), ("ok", -0.01, "ok", 0.01), ("inconclusive", None,
             "improved", -0.2), ("improved", 0.123, "ok", 0.0), ("ok", 0.02, "regressed", 0.5), ("ok", 0.02, "ok", 0.0)]
    records = [_realistic(*spec, verdicts=_verdicts(*kind)) for spec, kind in zip(SIX, kinds)]
    text = render(records)
    table = _table_lines(text)
    assert max(len(line) for line in text.splitlines()) <= TABLE_WIDTH, text
    assert table[0].split() == ["test", "precision", "quant", "batch", "tok/s", "TTFT", "ms", "ITL", "ms", "gen",
                                "peak", "MiB", "J/tok", "top1", "%", "load", "s", "outcome"]
    assert len(DEFAULT_COLUMNS) == 7 and "dynamic-int8" in text and len(table) == 2 + 6
    # the verdicts did not fit beside the metrics: one line each under the table, naming the benchmark
    assert ("vs baseline: test_smollm2_precisions[m-float32-none-b1]: tok/s -12.3% !, TTFT +6.1% ~"
            in text.splitlines())
    assert "vs baseline: test_smollm2_precisions[m-float16-none-b1]: tok/s n/a ?, TTFT -20.0% +" in text
    # the imprecise leader (float16, ±12%) is never marked best; the interval-less int8 shows "?"
    row = {line.split()[1] + (line.split()[2] if line.split()[2] != "-" else ""): line for line in table[2:]}
    assert "  123 ±12%!  " in row["float16"] and "  12.3 ?  " in row["float32int8"]
    # a warning every row raised is printed once, for all of them
    assert "warning: all 6 variants: throughput varies: coefficient of variation 11%" in text.splitlines()


def test_warnings_name_their_variants_and_tell_two_tests_of_one_variant_apart():
    from pytest_llmeff.report.terminal import warning_lines

    a = _realistic("float32", None, "test_a", 30.0, 0.01)
    b = _realistic("float32", None, "test_b", 30.0, 0.01)
    c = _realistic("bfloat16", None, "test_a", 30.0, 0.01)
    a.warnings, b.warnings, c.warnings = ["slow round"], ["noisy"], ["slow round", "noisy"]
    assert warning_lines([a, b, c]) == [
        "warning: m-float32-none-b1 (test_a), m-bfloat16-none-b1: slow round",
        "warning: m-float32-none-b1 (test_b), m-bfloat16-none-b1: noisy",
    ]


def test_the_vs_baseline_column_stays_while_the_table_fits_160():
    records = [_realistic(*spec, verdicts=_verdicts("ok", -0.01, "ok", 0.0)) for spec in SIX]
    text = render(records, columns=("throughput_tok_s", "ttft_s", "energy_j_per_tok"))
    header = _table_lines(text)[0]
    assert header.split()[-3:] == ["vs", "baseline", "outcome"] and "tok/s -1.0%, TTFT +0.0%" in text
    assert "vs baseline: test_" not in text and max(len(line) for line in text.splitlines()) <= TABLE_WIDTH


def test_columns_pick_other_metrics_in_their_order_and_keep_missing_ones():
    records = [_realistic(*spec) for spec in SIX[:2]]
    text = render(records, columns=("kld_mean_nat", "throughput_tok_s", "model_bytes", "mfu"))
    header = _table_lines(text)[0]
    assert header.split()[4:] == ["KLD", "nat", "tok/s", "model", "MiB", "MFU", "%", "outcome"]
    assert "0.0123" in text and "258" in text and "TTFT" not in text
    older = [_tps("float32", 30.0, 0.01)]
    assert "-" in _table_lines(render(older, columns=("kld_mean_nat",)))[2].split()   # asked for, not held
    assert _table_lines(render(older))[0].split()[4:] == ["tok/s", "outcome"]           # default: only what is held


def test_older_runs_fall_back_to_tpot_and_process_peak():
    r = _record("float32", {"tpot_s": _metric("tpot_s", 0.036, 0.01),
                            "peak_mem_bytes": _metric("peak_mem_bytes", 852 * 2**20, 0.01)})
    assert _table_lines(render([r]))[0].split()[4:] == ["TPOT", "ms", "peak", "MiB", "outcome"]


def test_the_legend_explains_every_mark_and_the_target():
    text = render([_tps("float32", 30.0, 0.01)], target_ci_pct=2.5)
    assert "median ±X%: 95% interval of the median" in text and "? no interval (under 6 samples)" in text
    assert "! imprecise (wider than the ±2.5% target)" in text
    assert "* best, its interval clear of all others; = tied for best (intervals overlap)" in text
    assert "~ estimated energy" in text


# --- markdown -------------------------------------------------------------------------------------------
def test_markdown_has_every_metric_the_same_marks_and_named_warnings():
    records = [_realistic(*spec) for spec in SIX[:2]] + [_tps("float16", 5.0, 0.01)]
    text = render_markdown(records)
    header = [line for line in text.splitlines() if line.startswith("| test")][0]
    for h in ("tok/s", "KLD nat", "KLD p99 nat", "counted GFLOP", "ppl ratio", "MFU %", "decode J/tok"):
        assert f"| {h} " in header
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in text.splitlines() if line.startswith("| test_"))}
    assert rows["float32"][4] == "30.2 ±1.2% *" and rows["bfloat16"][4] == "24.6 ±6.1%!"
    assert rows["float16"][4] == "5.00 ±1.0%" and rows["float16"][5] == "-"
    assert "`!` imprecise (wider than the ±5% target)" in text and "`=` tied for best" in text
    warnings = text.split("### Warnings\n\n", 1)[1].splitlines()
    assert warnings == ["- m-float32-none-b1: throughput varies: coefficient of variation 11%",
                        "- m-bfloat16-none-b1: throughput varies: coefficient of variation 11%"]


# --- a real session -------------------------------------------------------------------------------------
COLUMNS_TEST = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], max_new_tokens=4,
                            quality=False)
def test_cols(llm_benchmark):
    llm_benchmark()
"""


def test_a_session_shows_the_columns_it_is_given(llmeff_pytester):
    llmeff_pytester.makepyfile(test_cols=COLUMNS_TEST)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-report", "--llmeff-energy=off",
                                                 "--llmeff-rounds=6", "--llmeff-warmup=0",
                                                 "--llmeff-columns=model_bytes,ttft_s,throughput_tok_s")
    result.assert_outcomes(passed=2)
    out = result.stdout.str().splitlines()
    header = next(line for line in out if line.startswith("test "))
    assert header.split() == ["test", "precision", "quant", "batch", "model", "MiB", "TTFT", "ms", "tok/s",
                              "outcome"]
    rows = [line for line in out if line.startswith("test_cols ")]
    assert len(rows) == 2
    for row in rows:
        assert row.split()[5] != "±" and "±" in row.split()[6]     # weights bare, TTFT with its 6-round interval
    assert any(line.startswith("median ±X%: 95% interval of the median") for line in out)
    bad = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-columns=tok_s")
    assert bad.ret == 4 and "tok_s" in bad.stderr.str() + bad.stdout.str()


def test_the_metric_table_is_the_only_description_of_a_metric():
    """Every built-in metric says its column label, display unit and scale in metrics.py; the terminal holds no
    table of its own, and a user metric without a display is shown by its name in its stored unit."""
    import pytest_llmeff.report.terminal as terminal
    from pytest_llmeff.metrics import BUILTIN_METRICS, Display, MetricSpec, header_for, is_energy_metric, scale_for

    assert not hasattr(terminal, "DISPLAY")
    assert all(spec.display is not None for spec in BUILTIN_METRICS)
    assert header_for("ttft_s") == "TTFT ms" and scale_for("ttft_s") == 1e3
    assert header_for("peak_mem_delta_bytes") == "gen peak MiB" and scale_for("peak_mem_delta_bytes") == 1 / 2**20
    assert header_for("throughput_tok_s") == "tok/s"
    assert header_for("my_metric_ms") == "my_metric_ms" and scale_for("my_metric_ms") == 1.0
    assert is_energy_metric("co2_g") and is_energy_metric("energy_user_j") and not is_energy_metric("ttft_s")
    custom = MetricSpec("swap_bytes", "B", "lower", "swap used", display=Display("swap", "MiB", 1 / 2**20))
    assert custom.header == "swap MiB" and custom.label == "swap" and custom.scale == 1 / 2**20
