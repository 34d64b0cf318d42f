"""The report writers: markdown (+ GitHub step summary), CSV, and the pytest-benchmark JSON export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from pytest_llmeff.gate.thresholds import parse_thresholds
from pytest_llmeff.gate.two_sample import compare
from pytest_llmeff.gate.verdicts import Verdict
from pytest_llmeff.report.benchmark_json import to_pytest_benchmark, write_pytest_benchmark_json
from pytest_llmeff.report.csv_table import CSV_COLUMNS, write_csv
from pytest_llmeff.report.markdown import append_github_step_summary, delta_cell, render_markdown
from pytest_llmeff.results.schema import BenchmarkRecord, EnergyInfo, Metric, Run, VariantRecord


def _record(precision="float32", batch=1, *, group="g", model="m", name=None, nodeid=None, metrics=None,
            outcome="passed", warnings=(), quantization=None, params=None):
    vid = f"{model}-{precision}-b{batch}"
    test_name = f"test_gen[{vid}]"
    if metrics is None:
        metrics = {"throughput_tok_s": Metric.from_samples("throughput_tok_s", [10.0, 12.0, 14.0]),
                   "ttft_s": Metric.from_samples("ttft_s", [0.1, 0.2, 0.3]),
                   "latency_s": Metric.from_samples("latency_s", [0.5, 0.25, 0.75]),
                   "energy_j_per_tok": Metric.from_samples("energy_j_per_tok", [0.5, 0.7])}
    return BenchmarkRecord(
        nodeid=nodeid or f"bench/t.py::{test_name}", name=name or test_name, group=group,
        variant=VariantRecord(id=vid, model=model, model_source="alias", precision=precision,
                              quantization=quantization, batch_size=batch, max_new_tokens=4, device="cpu",
                              prompts=1),
        params=params or {}, rounds=3, warmup=1, tokens_generated=4 * batch, prompt_tokens=3, outcome=outcome,
        metrics=metrics, energy=EnergyInfo(method="codecarbon:cpu=cpu_load", estimated=True),
        warnings=list(warnings),
    )


def _verdict(metric, status, change, p=0.004, base=10.0):
    current = None if change is None else base * (1 + change)
    return Verdict(metric=metric, status=status, baseline_median=base, current_median=current, change=change,
                   worse_by=None, p_value=p, threshold="5%", message=f"{metric} {status}: msg", unit="")


def _table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The first GFM table in ``markdown`` as (headers, rows of cells)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert set(cells[1][0]) <= set("-:"), "second table line must be the GFM separator"
    return cells[0], cells[2:]


# --- markdown -----------------------------------------------------------------------------------------
def test_markdown_table_without_verdicts_matches_the_terminal_columns():
    text = render_markdown([_record("float32"), _record("bfloat16", metrics={
        "throughput_tok_s": Metric.from_samples("throughput_tok_s", [20.0, 22.0])})])
    assert text.startswith("## LLM inference efficiency (pytest-llmeff)\n")
    assert "### model: `m` · group: `g`" in text
    headers, rows = _table_rows(text)
    assert headers == ["test", "precision", "quant", "batch", "tok/s", "TTFT ms", "e2e s", "J/tok", "outcome"]
    by_precision = {row[1]: row for row in rows}
    # 2-3 rounds hold no 95% interval: "?", and no best mark (tests/test_table.py covers intervals and marks)
    assert by_precision["bfloat16"][4] == "21.0 ?"
    assert by_precision["float32"][4] == "12.0 ?"
    assert by_precision["float32"][5] == "200 ?"                   # ms, like the terminal table
    assert by_precision["float32"][7] == "~0.600 ?"                # estimated energy
    assert by_precision["bfloat16"][5] == "-" and by_precision["float32"][8] == "ok"
    assert "Δ" not in text and "Gate" not in text


def test_markdown_marks_every_verdict_kind_with_signed_change():
    kinds = [("float32", "improved", 0.2), ("bfloat16", "near-miss", -0.06), ("float16", "regressed", -0.1),
             ("fp8", "ok", -0.01), ("int8", "inconclusive", None)]
    records = [_record(p) for p, _, _ in kinds]
    verdicts = {(r.nodeid, r.name): {"throughput_tok_s": _verdict("throughput_tok_s", status, change)}
                for r, (_, status, change) in zip(records, kinds)}
    # a gated metric without a display column, and a lower-is-better metric beside its column
    verdicts[(records[0].nodeid, records[0].name)]["prefill_tok_s"] = _verdict("prefill_tok_s", "ok", 0.015)
    verdicts[(records[2].nodeid, records[2].name)]["ttft_s"] = _verdict("ttft_s", "regressed", 0.5, base=0.2)
    text = render_markdown(records, verdicts=verdicts)
    headers, rows = _table_rows(text)
    assert headers == ["test", "precision", "quant", "batch", "tok/s", "Δ tok/s", "TTFT ms", "Δ TTFT ms", "e2e s",
                       "J/tok", "Δ prefill_tok_s", "outcome"]
    delta = {row[1]: row[headers.index("Δ tok/s")] for row in rows}
    assert delta == {"float32": "+20.0% +", "bfloat16": "-6.0% ~", "float16": "-10.0% !", "fp8": "-1.0%",
                     "int8": "?"}
    ttft = {row[1]: row[headers.index("Δ TTFT ms")] for row in rows}
    assert ttft["float16"] == "+50.0% !" and ttft["float32"] == "-"
    assert {row[1]: row[headers.index("Δ prefill_tok_s")] for row in rows}["float32"] == "+1.5%"
    assert "**Gate:** 2 regressed, 1 near-miss, 1 improved, 1 inconclusive, 2 ok" in text
    assert ("Δ: change of the median against the baseline; `+` improved, `~` near-miss, `!` regressed, "
            "`?` inconclusive, no mark: within the threshold") in text
    assert "`throughput_tok_s` (tok/s, higher is better)" in text and "`ttft_s` (s, lower is better)" in text
    # the verdicts section lists the non-ok verdicts, worst first, with the gate's message
    section = text.split("### Verdicts\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(section) == 5
    assert section[0].startswith("- `!` `test_gen` (m-float16-b1): ")
    assert section[-1] == "- `+` `test_gen` (m-float32-b1): throughput_tok_s improved: msg"


def test_markdown_with_a_real_gate_verdict_and_warnings():
    record = _record("float32")
    threshold = parse_thresholds("throughput_tok_s:5%")["throughput_tok_s"]
    verdict = compare("throughput_tok_s", [20.0, 20.5, 21.0, 20.2, 20.8], [10.0, 12.0, 14.0, 11.0, 13.0], threshold)
    assert verdict.status == "regressed"
    text = render_markdown([_record("float32", warnings=["energy is an estimate"])],
                           verdicts={(record.nodeid, record.name): {"throughput_tok_s": verdict}},
                           warnings=["baseline missing for 1 benchmark", "energy is an estimate"])
    headers, rows = _table_rows(text)
    assert rows[0][headers.index("Δ tok/s")] == "-41.5% !"   # median 20.5 -> 12.0
    # the session's warnings first, then each record's, named by its variant
    assert text.endswith("### Warnings\n\n- baseline missing for 1 benchmark\n- energy is an estimate\n"
                         "- m-float32-b1: energy is an estimate\n")
    assert render_markdown([]) == ""


def test_markdown_escapes_pipes_in_cells():
    text = render_markdown([_record(params={"mode": "a|b"})])
    headers, _ = _table_rows(text)
    row = [line for line in text.splitlines() if line.startswith("| test_gen")][0]
    assert "test_gen[mode=a\\|b]" in row
    assert len(headers) == 9


def test_delta_cell_edge_cases():
    assert delta_cell(None) == "-"
    assert delta_cell(_verdict("throughput_tok_s", "regressed", float("-inf"))) == "-inf% !"
    assert delta_cell(_verdict("throughput_tok_s", "ok", 0.0)) == "+0.0%"


def test_github_step_summary_is_appended(tmp_path, monkeypatch):
    summary = tmp_path / "step" / "summary.md"
    assert append_github_step_summary("# x", environ={}) is None
    assert append_github_step_summary("# x", environ={"GITHUB_STEP_SUMMARY": ""}) is None
    assert append_github_step_summary("first", environ={"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    assert summary.read_text() == "first\n"  # created, with its parent
    summary.write_text("earlier step")  # no trailing newline
    text = render_markdown([_record()])
    assert append_github_step_summary(text, environ={"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    assert summary.read_text() == "earlier step\n\n" + text
    # the default environment is the process's
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_github_step_summary("last") == summary
    assert summary.read_text() == "earlier step\n\n" + text + "\nlast\n"
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert append_github_step_summary("more") is None


# --- CSV ----------------------------------------------------------------------------------------------
def test_csv_rows_columns_and_exact_values(tmp_path):
    rates = [10.0, 12.0, 14.0, 16.0, 18.0, 11.0, 13.0, 15.0, 17.0, 19.0]  # 10 rounds: an interval and a p90
    tps = Metric.from_samples("throughput_tok_s", rates)
    custom = Metric(unit="widget", direction="higher", samples=[3.0], n=1, mean=3.0, median=3.0, stdev=0.0,
                    min=3.0, max=3.0, p90=3.0, p99=3.0)  # a user metric not registered in this process
    # dict order deliberately not the table order
    rec = _record("bfloat16", batch=4, quantization="nf4", metrics={
        "zz_widgets": custom, "ttft_s": Metric.from_samples("ttft_s", [0.5, 0.25]), "throughput_tok_s": tps,
        "energy_j": Metric.from_samples("energy_j", [2.0, 2.5])})
    rec.energy = EnergyInfo(method="rapl:package-0", estimated=False)  # a physical meter
    other = _record("float32", group=None)  # CodeCarbon: estimated
    no_meter = _record("float16", metrics={"energy_j_per_tok": Metric.from_samples("energy_j_per_tok", [0.5])})
    no_meter.energy = None
    verdicts = {(rec.nodeid, rec.name): {"throughput_tok_s": _verdict("throughput_tok_s", "improved", 0.2,
                                                                        p=0.003968253968253968, base=10.0)}}
    path = write_csv(tmp_path / "out" / "llmeff.csv", [rec, other, no_meter], verdicts)
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert CSV_COLUMNS[-4:] == ("baseline_median", "change_pct", "verdict", "p_value")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 4 + 4 + 1
    assert [r["metric"] for r in rows[:4]] == ["throughput_tok_s", "ttft_s", "energy_j", "zz_widgets"]
    # figures computed here, independently of results.py: median of 10, harmonic mean (total tokens / total
    # time when every round does the same work), sample stdev, linear-interpolated p90; no p99 below 100 samples
    ordered = sorted(rates)
    harmonic = len(rates) / sum(1.0 / r for r in rates)
    stdev = (sum((r - 14.5) ** 2 for r in rates) / 9) ** 0.5
    p90 = ordered[8] + 0.1 * (ordered[9] - ordered[8])
    low, high = float(rows[0]["ci_low"]), float(rows[0]["ci_high"])
    assert rows[0] == {
        "nodeid": "bench/t.py::test_gen[m-bfloat16-b4]", "name": "test_gen[m-bfloat16-b4]", "group": "g",
        "variant_id": "m-bfloat16-b4", "model": "m", "precision": "bfloat16", "quantization": "nf4",
        "batch_size": "4", "metric": "throughput_tok_s", "unit": "tok/s", "direction": "higher", "n": "10",
        "median": "14.5", "ci_low": repr(low), "ci_high": repr(high), "ci_rel": rows[0]["ci_rel"],
        "mean": rows[0]["mean"], "stdev": rows[0]["stdev"], "min": "10.0", "max": "19.0",
        "p90": rows[0]["p90"], "p99": "", "energy_method": "", "estimated": "",
        "baseline_median": "10.0", "change_pct": "20.0", "verdict": "improved", "p_value": "0.003968253968253968",
    }
    assert float(rows[0]["mean"]) == pytest.approx(harmonic, rel=1e-12) and harmonic < 14.5  # not the 14.5 mean
    assert float(rows[0]["stdev"]) == pytest.approx(stdev, rel=1e-12)
    assert float(rows[0]["p90"]) == pytest.approx(p90, rel=1e-12)
    # the interval: around the median, inside the sample range, and ci_rel is its larger half-width / median
    assert 10.0 <= low < 14.5 < high <= 19.0
    assert float(rows[0]["ci_rel"]) == pytest.approx(max(14.5 - low, high - 14.5) / 14.5, rel=1e-12)
    # two samples: no interval, no percentiles, the arithmetic mean of a non-rate
    assert rows[1]["median"] == "0.375" and rows[1]["mean"] == "0.375"
    assert (rows[1]["ci_low"], rows[1]["ci_high"], rows[1]["ci_rel"], rows[1]["p90"]) == ("", "", "", "")
    assert rows[1]["verdict"] == "" and rows[1]["change_pct"] == ""
    # energy rows carry the meter's method and whether it is an estimate; other rows leave both empty
    assert (rows[2]["energy_method"], rows[2]["estimated"]) == ("rapl:package-0", "false")
    assert (rows[1]["energy_method"], rows[1]["estimated"], rows[3]["estimated"]) == ("", "", "")
    assert (rows[3]["unit"], rows[3]["direction"], rows[3]["n"]) == ("widget", "higher", "1")
    # the second record: no group, no quantization, no verdicts; metrics in table order; CodeCarbon = estimated
    assert [r["metric"] for r in rows[4:8]] == ["throughput_tok_s", "ttft_s", "latency_s", "energy_j_per_tok"]
    assert all(r["group"] == "" and r["quantization"] == "" and r["p_value"] == "" for r in rows[4:8])
    assert [(r["energy_method"], r["estimated"]) for r in rows[4:8]] == [("", "")] * 3 + [
        ("codecarbon:cpu=cpu_load", "true")]
    # a record without energy info: its energy row says nothing rather than guessing
    assert (rows[8]["metric"], rows[8]["energy_method"], rows[8]["estimated"]) == ("energy_j_per_tok", "", "")
    assert not list(path.parent.glob(".*.tmp")), "atomic write leaves no temp file"


# --- pytest-benchmark JSON ----------------------------------------------------------------------------
def _run():
    lat = {"latency_s": Metric.from_samples("latency_s", [0.5, 0.25, 0.75]),
           "throughput_tok_s": Metric.from_samples("throughput_tok_s", [8.0, 16.0, 5.0]),
           "peak_mem_bytes": Metric.from_samples("peak_mem_bytes", [1000.0, 3000.0])}
    records = [
        _record("float32", metrics=dict(lat)),
        _record("bfloat16", metrics=dict(lat), params={"temperature": "0"}),
        # one test calling llm_benchmark(name="long") for two variants: names must stay apart
        _record("float32", name="long", nodeid="bench/t.py::test_gen[m-float32-b1]", metrics=dict(lat)),
        _record("bfloat16", name="long", nodeid="bench/t.py::test_gen[m-bfloat16-b1]", metrics=dict(lat)),
        # the same name twice in one test
        _record("float32", name="long", nodeid="bench/t.py::test_gen[m-float32-b1]", metrics=dict(lat)),
        # no latency samples: not exportable
        _record("float16", metrics={"ttft_s": Metric.from_samples("ttft_s", [0.1])}),
    ]
    return Run(started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00",
               machine={"cpu": "Test CPU", "os": "Linux", "python": "3.11.0", "hostname": "box",
                        "cores_logical": 2},
               versions={}, commit={"id": "abc123", "dirty": True, "branch": "main"}, benchmarks=records)


EXPECTED_NAMES = ["test_gen[m-float32-b1]", "test_gen[m-bfloat16-b1]", "long[m-float32-b1]", "long[m-bfloat16-b1]",
                  "long[m-float32-b1] #2"]


def test_pytest_benchmark_document_fields():
    doc = to_pytest_benchmark(_run())
    assert [b["name"] for b in doc["benchmarks"]] == EXPECTED_NAMES
    assert [b["fullname"] for b in doc["benchmarks"]] == [
        "bench/t.py::test_gen[m-float32-b1]", "bench/t.py::test_gen[m-bfloat16-b1]",
        "bench/t.py::test_gen[m-float32-b1]::long", "bench/t.py::test_gen[m-bfloat16-b1]::long",
        "bench/t.py::test_gen[m-float32-b1]::long #2"]
    first = doc["benchmarks"][0]
    stats = first["stats"]
    assert stats["data"] == [0.5, 0.25, 0.75] and stats["iterations"] == 1 and stats["rounds"] == 3
    assert (stats["min"], stats["max"], stats["mean"], stats["median"]) == (0.25, 0.75, 0.5, 0.5)
    assert stats["ops"] == pytest.approx(3 / 1.5) and stats["total"] == 1.5
    assert first["group"] == "g" and first["param"] == "m-float32-b1"
    assert first["params"] == {"model": "m", "precision": "float32", "quantization": None, "batch_size": 1,
                               "max_new_tokens": 4}
    assert doc["benchmarks"][1]["params"]["temperature"] == "0"
    assert first["extra_info"]["throughput_tok_s"] == 8.0 and first["extra_info"]["peak_mem_bytes"] == 2000.0
    assert "latency_s" not in first["extra_info"] and first["extra_info"]["llmeff_variant"] == "m-float32-b1"
    assert first["extra_info"]["energy_estimated"] is True
    assert doc["commit_info"]["id"] == "abc123" and doc["commit_info"]["dirty"] is True
    assert doc["machine_info"]["node"] == "box" and doc["machine_info"]["cpu"]["brand_raw"] == "Test CPU"
    assert doc["datetime"] == "2026-01-01T00:01:00+00:00"


def test_pytest_benchmark_storage_loads_the_export(tmp_path):
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    path = write_pytest_benchmark_json(tmp_path / "export" / "llmeff-pb.json", _run())
    json.loads(path.read_text())  # strict JSON (no NaN)
    storage = FileStorage(tmp_path / "storage", logger=Logger(Logger.QUIET))
    loaded = list(storage.load_benchmarks(str(path)))
    assert [b["name"] for b in loaded] == EXPECTED_NAMES
    assert [b["rounds"] for b in loaded] == [3] * 5
    assert loaded[0]["min"] == 0.25 and loaded[0]["max"] == 0.75 and loaded[0]["path"] == str(path)


@pytest.mark.slow
def test_pytest_benchmark_compare_cli_reads_the_export(tmp_path):
    path = write_pytest_benchmark_json(tmp_path / "llmeff-pb.json", _run())
    result = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(path), "--columns=min,max,mean"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in EXPECTED_NAMES:
        assert name in result.stdout
    assert "Min" in result.stdout and "Mean" in result.stdout and "Median" not in result.stdout
    assert "(time in ms)" in result.stdout  # seconds were read as seconds
