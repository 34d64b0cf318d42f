"""The result schema, its shipped JSON Schema, reading run files, the table, and the llmeff CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llmeff.cli import app as cli
from pytest_llmeff.errors import StorageError
from pytest_llmeff.metrics import BUILTIN_METRICS, METRICS
from pytest_llmeff.report.terminal import render
from pytest_llmeff.results.runfile import SCHEMA_FILE, read_run, schema_text, write_run
from pytest_llmeff.results.schema import BenchmarkRecord, EnergyInfo, Metric, Run, VariantRecord


def test_shipped_schema_is_generated_from_the_models():
    assert SCHEMA_FILE.read_text() == schema_text(), "regenerate with: llmeff schema --write"


def test_metric_stats_from_samples():
    m = Metric.from_samples("ttft_s", [0.3, 0.1, 0.2, 0.4])
    assert (m.unit, m.direction, m.n) == ("s", "lower", 4)
    assert m.median == pytest.approx(0.25) and m.mean == pytest.approx(0.25)
    assert m.min == 0.1 and m.max == 0.4
    assert m.stdev == pytest.approx(0.1290994, rel=1e-6)  # sample stdev (n-1)
    # 4 samples hold no p90 or p99 (an interpolated p99 of 4 samples is the maximum in disguise), nor a 95% interval
    assert m.p90 is None and m.p99 is None and "p90 needs at least 10 samples, there are 4" in m.percentile_note
    assert m.ci_low is None and m.ci_rel is None
    ten = Metric.from_samples("ttft_s", [float(i) for i in range(1, 11)])
    assert ten.p90 == pytest.approx(9.1) and ten.p99 is None and "p99 needs at least 100" in ten.percentile_note
    assert ten.ci_low < 5.5 < ten.ci_high and ten.ci_level == 0.95
    rate = Metric.from_samples("throughput_tok_s", [10.0, 40.0])  # 1 s for 10 tokens, 0.25 s for 10 more
    assert rate.mean == pytest.approx(20 / 1.25)  # total tokens / total time, not (10 + 40) / 2
    one = Metric.from_samples("load_s", [2.0])
    assert one.stdev == 0.0 and one.p99 is None and one.percentile_note is None
    with pytest.raises(KeyError, match="unknown metric 'speed'; known metrics: .*throughput_tok_s"):
        Metric.from_samples("speed", [1.0])


def test_every_metric_name_carries_its_unit():
    unit_in_name = {"s": "_s", "tok/s": "_tok_s", "B": "_bytes", "J": "_j", "J/tok": "_j_per_tok", "g": "_g",
                    "FLOP/tok": "flops_per_tok", "FLOP": "flops_", "TFLOP/s": "tflops", "ratio": "", "ppl": "ppl", "nat": "_nat"}
    assert {spec.name for spec in BUILTIN_METRICS} <= set(METRICS)
    for spec in BUILTIN_METRICS:
        marker = unit_in_name[spec.unit]
        assert spec.name.endswith(marker) or spec.name.startswith(marker), (spec.name, spec.unit)


def _record(precision, tps, estimated=True, outcome="passed"):
    return BenchmarkRecord(
        nodeid=f"t.py::test[{precision}]", name=f"test[{precision}]", group="g",
        variant=VariantRecord(id=f"m-{precision}-b1", model="m", model_source="alias", precision=precision,
                              batch_size=1, max_new_tokens=4, device="cpu", prompts=1),
        rounds=2, warmup=0, tokens_generated=4, prompt_tokens=3, outcome=outcome,
        metrics={"throughput_tok_s": Metric.from_samples("throughput_tok_s", tps),
                 "energy_j_per_tok": Metric.from_samples("energy_j_per_tok", [0.5, 0.7])},
        energy=EnergyInfo(method="codecarbon:cpu=cpu_load", estimated=estimated),
    )


def test_table_marks_the_best_by_direction_and_estimates():
    text = render([_record("float32", [10.0, 12.0]), _record("bfloat16", [20.0, 22.0])])
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("test ")}
    assert "21.0 ?" in rows["bfloat16"] and "*" not in rows["bfloat16"]  # 2 rounds: no interval, never "best"
    assert "~0.600 ?" in rows["float32"]
    precise = render([_record("float32", [10.0, 10.1, 10.0, 10.1, 10.0, 10.1]),
                      _record("bfloat16", [20.0, 20.2, 20.0, 20.2, 20.0, 20.2])])
    rows = {line.split()[1]: line for line in precise.splitlines() if line.startswith("test ")}
    assert "20.1 ±0.5% *" in rows["bfloat16"] and "*" not in rows["float32"]
    assert "model: m   group: g" in text
    measured = render([_record("float32", [10.0, 12.0], estimated=False)])
    assert "~" not in measured.split("median")[0]


def test_write_read_roundtrip_and_bad_files(tmp_path):
    run = Run(started_at="a", finished_at="b", machine={"cpu": "x", "os": "y", "python": "3"}, versions={},
              commit={"id": None}, benchmarks=[_record("float32", [1.0, 2.0])])
    path = write_run(run, tmp_path / "deep" / "run.json")
    assert read_run(path) == run
    assert json.loads(path.read_text())["schema"] == "pytest-llmeff/1.1"
    (tmp_path / "bad.json").write_text("{not json}")
    with pytest.raises(StorageError, match="bad.json: not valid JSON"):
        read_run(tmp_path / "bad.json")
    # a schema 1.0 file (written before intervals existed: p90/p99 numbers, no ci fields) still reads
    old = json.loads(path.read_text())
    old["schema"] = "pytest-llmeff/1"
    for metric in old["benchmarks"][0]["metrics"].values():
        for key in ("ci_low", "ci_high", "ci_level", "ci_rel", "percentile_note"):
            metric.pop(key)
        metric["p90"] = metric["p99"] = metric["max"]
    (tmp_path / "v1.json").write_text(json.dumps(old))
    assert read_run(tmp_path / "v1.json").benchmarks[0].metrics["throughput_tok_s"].p99 == 2.0
    (tmp_path / "minor.json").write_text(json.dumps({"schema": "pytest-llmeff/1.7"}))
    with pytest.raises(StorageError, match="schema 'pytest-llmeff/1.7' is newer than this pytest-llmeff reads"):
        read_run(tmp_path / "minor.json")
    (tmp_path / "future.json").write_text(json.dumps({"schema": "pytest-llmeff/9"}))
    with pytest.raises(StorageError, match="schema 'pytest-llmeff/9' is newer than this pytest-llmeff reads"):
        read_run(tmp_path / "future.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "pytest-benchmark/4"}))
    with pytest.raises(StorageError, match="schema 'pytest-benchmark/4' is not supported; this version reads"):
        read_run(tmp_path / "other.json")
    with pytest.raises(StorageError, match="no such results file"):
        read_run(tmp_path / "missing.json")


def test_cli_show_list_and_schema(tmp_path, capsys):
    run = Run(started_at="2026-01-01", finished_at="2026-01-01", machine={"cpu": "x", "os": "y", "python": "3"},
              versions={}, commit={"id": "abc", "dirty": True}, benchmarks=[_record("float32", [1.0, 2.0])])
    write_run(run, tmp_path / "runs" / "r1.json")
    assert cli.main(["show", str(tmp_path / "runs" / "r1.json")]) == 0
    out = capsys.readouterr().out
    assert "commit abc (dirty)" in out and "float32" in out and "tok/s" in out
    assert cli.main(["list", str(tmp_path / "runs")]) == 0
    assert "1 benchmark(s)" in capsys.readouterr().out
    assert cli.main(["show", str(tmp_path / "nope.json")]) == 2
    assert "no such results file" in capsys.readouterr().err
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Run"


def test_ci_runs_the_readme_test_command_verbatim():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    test_cmd = readme.split("**The tests**", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    assert test_cmd.startswith("python3 -m venv")
    assert test_cmd in ci, "the README's test command must appear verbatim in .ci/run"


def test_cli_compare_gives_verdicts_and_exit_1_on_a_regression(tmp_path, capsys):
    def run_with(tps):
        return Run(started_at="2026-01-01", finished_at="2026-01-01", machine={"cpu": "x", "os": "y", "python": "3"},
                   versions={}, commit={"id": "abc"}, benchmarks=[_record("float32", tps)])

    store = tmp_path / "store"
    for i, tps in enumerate(([99.0, 100.0, 98.0, 99.5, 98.5], [101.5, 102.0, 100.0, 101.0, 100.5],
                             [100.0, 101.0, 99.0, 100.5, 99.5]), 1):
        write_run(run_with(tps), store / "machine" / f"000{i}_abc_2026010{i}T000000Z.json")
    base = str(store / "machine" / "0003_abc_20260103T000000Z.json")
    write_run(run_with([40.0, 41.0, 39.0, 40.5, 39.5]), tmp_path / "slow.json")
    write_run(run_with([100.2, 100.9, 99.1, 100.4, 99.6]), tmp_path / "same.json")
    gate = ["--fail", "throughput_tok_s:5%", "--storage", str(store)]
    assert cli.main(["compare", base, str(tmp_path / "slow.json"), *gate]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "-60.0%" in out and "t prediction test over stored session medians" in out
    assert "minimum detectable effect (90% power) m-float32-b1: throughput_tok_s" in out
    assert cli.main(["compare", base, str(tmp_path / "same.json"), *gate]) == 0
    # BASE alone (--history 1): the drift between sessions is unknown, so the drop is inconclusive, not a failure
    assert cli.main(["compare", base, str(tmp_path / "slow.json"), *gate, "--history", "1"]) == 0
    out = capsys.readouterr().out
    assert "inconclusive" in out and "regressed" not in out.replace("inconclusive", "")
    assert cli.main(["compare", base, str(tmp_path / "nope.json")]) == 2


def test_the_readme_metric_table_is_the_metric_table():
    """Every built-in metric is a README row with its unit, direction and sampling, and no row is extra."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("| name | unit | better | sampled | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:5] for line in section.splitlines()[2:]]
    arrow = {"higher": "higher", "lower": "lower", "none": "–"}
    kind = {"round": "per round", "token": "per token", "once": "once"}
    assert [[c.strip() for c in row] for row in rows] == [
        [m.name, m.unit, arrow[m.direction], kind[m.sampling]] for m in BUILTIN_METRICS]


def test_cli_compare_spends_alpha_over_the_whole_comparison_and_judges_fixed_figures_directly(tmp_path, capsys):
    def run(tps_by_precision, agreement):
        records = []
        for precision, tps in tps_by_precision.items():
            rec = _record(precision, tps)
            rec.metrics["token_agreement"] = Metric.from_samples("token_agreement", [agreement])
            records.append(rec)
        return Run(started_at="a", finished_at="b", machine={"cpu": "x", "os": "y", "python": "3"}, versions={},
                   commit={"id": None}, benchmarks=records)

    quick = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.1]
    slow = [40.0, 41.0, 39.0, 40.5, 39.5, 40.2, 39.8, 40.1]  # -60%: beyond what 3 stored sessions can resolve
    folder = tmp_path / "store" / "machine"  # BASE after two stored runs, so throughput can be judged
    for i, factor in enumerate((1.005, 0.995, 1.0), 1):
        scaled = [v * factor for v in quick]
        base = write_run(run({"float32": scaled, "bfloat16": scaled, "float16": scaled}, 1.0),
                         folder / f"000{i}_abc_2026010{i}T000000Z.json")
    cur = write_run(run({"float32": slow, "bfloat16": quick, "float16": quick}, 0.3), tmp_path / "cur.json")
    rc = cli.main(["compare", str(base), str(cur), "--fail", "throughput_tok_s:5%,token_agreement:5%",
                   "--storage", str(tmp_path / "store")])
    out = capsys.readouterr().out
    assert rc == 1
    # 3 benchmarks x 1 tested metric: alpha 0.01 / 3 each; token_agreement is judged directly (no test, no budget)
    assert "false-alarm budget: Bonferroni: alpha 0.01 over 3 tested comparisons" in out and "0.00333 each" in out
    lines = [line for line in out.splitlines() if "test[" in line]
    assert sum("throughput_tok_s" in line and line.rstrip().endswith("regressed") for line in lines) == 1
    assert sum("token_agreement" in line and line.rstrip().endswith("regressed") for line in lines) == 3


def test_the_readme_documents_every_option_and_its_ini_twin():
    from pytest_llmeff.config.options import _OPTIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `--llmeff-")}
    for opt, ini, *_ in _OPTIONS:
        row = next((line for cell, line in rows.items()
                    if any(cell.startswith(f"`{opt}{end}") for end in ("`", "=", "["))), None)
        assert row is not None, f"{opt} has no row in the README's options table"
        assert f"`{ini}`" in row or f"`{ini} " in row, f"{opt}: its ini twin {ini} is not in its README row"


def test_the_results_floors_errors_live_in_the_error_family_and_keep_their_old_homes():
    from pytest_llmeff import errors
    from pytest_llmeff.results import history, merge

    assert history.HistoryError is errors.HistoryError and merge.MergeRefused is errors.MergeRefused
    for cls in (errors.HistoryError, errors.MergeRefused):
        assert cls.__module__ == "pytest_llmeff.errors"
        assert issubclass(cls, errors.LlmeffUsageError) and issubclass(cls, ValueError)  # the CLI: one line, exit 2
