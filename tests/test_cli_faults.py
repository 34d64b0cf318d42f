"""The ``llmeff`` CLI on bad input: one line on stderr naming the file (or option) and the problem, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmeff.cli import app as cli
from pytest_llmeff.config.options import DEFAULT_RESULTS_DIR, DEFAULT_STORAGE
from pytest_llmeff.results.runfile import write_run
from pytest_llmeff.results.schema import BenchmarkRecord, Metric, Run, VariantRecord
from pytest_llmeff.results.storage import Storage, machine_fingerprint

NODEID = "bench/test_gen.py::test_gen[m-fp32-b1]"


def make_run(tps=(100.0, 101.0, 99.0, 100.5, 99.5), nodeid=NODEID, started="2026-01-02T03:04:05+00:00"):
    record = BenchmarkRecord(
        nodeid=nodeid, name=nodeid.rsplit("::", 1)[-1],
        variant=VariantRecord(id="m-fp32-b1", model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=4, device="cpu", prompts=1),
        rounds=len(tps), warmup=0, tokens_generated=4, prompt_tokens=3, outcome="passed",
        metrics={"throughput_tok_s": Metric.from_samples("throughput_tok_s", list(tps))})
    return Run(started_at=started, finished_at=started, machine={"cpu": "x", "os": "Linux", "python": "3.11.7"},
               versions={}, commit={"id": "abc"}, benchmarks=[record])


@pytest.fixture
def files(tmp_path):
    """A good run file and one of each kind of bad input, by name."""
    good = write_run(make_run(), tmp_path / "good.json")
    text = good.read_text()
    data = json.loads(text)
    data["benchmarks"][0]["metrics"]["throughput_tok_s"]["samples"] = []
    bad = {
        "missing": (tmp_path / "missing.json", "no such results file"),
        "directory": (tmp_path / "adir", "is a directory, not a results file"),
        "empty": (tmp_path / "empty.json", "the file is empty (0 bytes); not a results file"),
        "binary": (tmp_path / "binary.json", "binary content (NUL bytes); not a results file"),
        "truncated": (tmp_path / "truncated.json", "the JSON ends early at line {} (truncated file?)".format(
            text[: len(text) // 2].count("\n") + 1)),
        "malformed": (tmp_path / "malformed.json", "not valid JSON (Expecting value at line 1 column 12)"),
        "empty-samples": (tmp_path / "empty-samples.json",
                          "not a valid pytest-llmeff/1.1 run: benchmarks.0.metrics.throughput_tok_s.samples: "
                          "List should have at least 1 item after validation, not 0"),
    }
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "truncated.json").write_text(text[: len(text) // 2])
    (tmp_path / "malformed.json").write_text('{"schema": , "x": 1}')
    (tmp_path / "empty-samples.json").write_text(json.dumps(data))
    return good, bad


def _one_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.out, lines[0]


KINDS = ["missing", "directory", "empty", "binary", "truncated", "malformed", "empty-samples"]


@pytest.mark.parametrize("kind", KINDS)
def test_show_a_bad_file_is_one_line_and_exit_2(files, capsys, kind):
    _, bad = files
    path, problem = bad[kind]
    assert cli.main(["show", str(path)]) == 2
    _, line = _one_line(capsys)
    hint = f" (llmeff list {path} lists the run files in it)" if kind == "directory" else ""
    assert line == f"llmeff: error: {path}: {problem}{hint}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["base", "current"])
def test_compare_with_a_bad_file_is_one_line_and_exit_2(files, capsys, kind, side):
    good, bad = files
    path, problem = bad[kind]
    args = [str(path), str(good)] if side == "base" else [str(good), str(path)]
    assert cli.main(["compare", *args]) == 2
    out, line = _one_line(capsys)
    assert line == f"llmeff: error: {path}: {problem}"
    assert out == ""  # no half-printed table


def test_show_goes_on_after_a_bad_file(files, capsys):
    good, bad = files
    assert cli.main(["show", str(bad["binary"][0]), str(good)]) == 2
    out, line = _one_line(capsys)
    assert line.startswith(f"llmeff: error: {bad['binary'][0]}: binary content")
    assert out.startswith(f"{good}: 2026-01-02T03:04:05+00:00") and "float32" in out


@pytest.mark.parametrize("alpha", ["5", "0", "1", "-0.1", "nan", "x", ""])
def test_compare_alpha_must_be_a_probability(files, capsys, alpha):
    good, _ = files
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", str(good), str(good), "--alpha", alpha])
    assert info.value.code == 2
    _, line = _one_line(capsys)
    assert line == (f"llmeff: error: argument --alpha: {alpha!r} is not allowed; give a probability between 0 "
                    "and 1, exclusive (e.g. 0.01)")


@pytest.mark.parametrize("spec, problem", [
    ("bogus", "threshold 'bogus' is malformed; expected METRIC:N% or METRIC:N<unit>, comma separated, "
              "e.g. throughput_tok_s:5%,peak_mem_bytes:64MB"),
    ("throughput_tok_s:5", "threshold 'throughput_tok_s:5': a bare number is ambiguous; write N% for a relative "
                           "change or N<unit> with unit one of tok/s"),
    ("speed:5%", None),
    (",", "',' gives no threshold; e.g. --fail throughput_tok_s:5%,ttft_s:10%"),
    ("", "'' gives no threshold; e.g. --fail throughput_tok_s:5%,ttft_s:10%"),
])
def test_compare_bad_fail_spec_is_one_line(files, capsys, spec, problem):
    good, _ = files
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", str(good), str(good), "--fail", spec])
    assert info.value.code == 2
    _, line = _one_line(capsys)
    assert line.startswith("llmeff: error: argument --fail: ")
    if problem is not None:
        assert line == f"llmeff: error: argument --fail: {problem}"
    else:
        assert "unknown metric 'speed'" in line


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: command"),
    (["frob"], "argument command: invalid choice: 'frob' (choose from {commands})"),  # every command, in order
    (["show"], "the following arguments are required: paths"),
    (["compare", "a.json"], "the following arguments are required: current"),
    (["compare", "a.json", "b.json", "--bogus"], "unrecognized arguments: --bogus"),
    (["list", "a", "b"], "unrecognized arguments: b"),
])
def test_argparse_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    out, line = _one_line(capsys)
    commands = ", ".join(repr(name) for name in cli._parser()._subparsers._group_actions[0].choices)
    assert line == f"llmeff: error: {message.format(commands=commands)}" and out == ""
    assert "'show', 'list'" in commands and "'compare'" in commands and "'schema'" in commands


def test_compare_reports_renamed_benchmarks(tmp_path, capsys):
    base = write_run(make_run(), tmp_path / "base.json")
    moved = "bench/sub/test_moved.py::TestX::test_gen[m-fp32-b1]"
    current = write_run(make_run(nodeid=moved), tmp_path / "current.json")
    assert cli.main(["compare", str(base), str(current)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (f"renamed: {NODEID} -> {moved} (not compared: give it its old name back, or store a new baseline)"
            in out)
    assert not any(line.startswith(("new (no baseline)", "missing (in the baseline only)")) for line in out)


def test_compare_still_judges_and_lists_new_and_missing(tmp_path, capsys):
    folder = tmp_path / "store" / "machine"  # BASE in a storage folder, after two stored runs: a history of 3
    write_run(make_run(tps=(99.0, 100.0, 98.0, 99.5, 98.5)), folder / "0001_abc_20260101T000000Z.json")
    write_run(make_run(tps=(101.0, 102.0, 100.0, 101.5, 100.5)), folder / "0002_abc_20260101T000001Z.json")
    base = write_run(make_run(), folder / "0003_abc_20260101T000002Z.json")
    slow = make_run(tps=(40.0, 41.0, 39.0, 40.5, 39.5))
    slow.benchmarks.append(make_run(nodeid="bench/test_gen.py::test_other[m-fp32-b4]").benchmarks[0])
    current = write_run(slow, tmp_path / "slow.json")
    args = ["compare", str(base), str(current), "--fail", "throughput_tok_s:5%", "--storage", str(tmp_path / "store")]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "-60.0%" in out
    assert "new (no baseline): bench/test_gen.py::test_other[m-fp32-b4]" in out.splitlines()
    assert "and the 2 stored runs before it" in out


@pytest.mark.parametrize("history, message", [("0", "0 is not allowed; give N >= 1"),
                                              ("x", "'x' is not a whole number; give N >= 1")])
def test_compare_history_must_be_a_whole_number(tmp_path, capsys, history, message):
    base = write_run(make_run(), tmp_path / "base.json")
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", str(base), str(base), "--history", history])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---- list -------------------------------------------------------------------------------------------------------

def test_list_without_argument_lists_results_and_stored_baselines(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    session_file = write_run(make_run(), Path(DEFAULT_RESULTS_DIR) / "20260102T030405Z_123_ab.json")
    stored = Storage(DEFAULT_STORAGE).save(make_run(), "main")
    autosaved = Storage(DEFAULT_STORAGE).autosave(make_run())
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [str(session_file), str(autosaved), str(stored)]
    assert all(line.endswith("2026-01-02T03:04:05+00:00  1 benchmark(s)") for line in out)


def test_list_nothing_found_is_exit_1_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["list"]) == 1
    _, line = _one_line(capsys)
    assert line == f"llmeff: no run files in {DEFAULT_RESULTS_DIR} or {DEFAULT_STORAGE}"
    (tmp_path / "empty").mkdir()
    assert cli.main(["list", str(tmp_path / "empty")]) == 1
    _, line = _one_line(capsys)
    assert line == f"llmeff: no run files in {tmp_path / 'empty'}"


def test_list_a_storage_root_finds_runs_in_fingerprint_folders(tmp_path, capsys):
    store = Storage(tmp_path / "store")
    first = store.autosave(make_run())
    (first.parent / ".hidden.json").write_text("{}")  # hidden files are skipped
    (tmp_path / "store" / ".git").mkdir()
    (tmp_path / "store" / ".git" / "x.json").write_text("{}")  # and hidden folders
    (first.parent / "broken.json").write_bytes(b"\x00\x01")
    assert first.parent.name == machine_fingerprint(make_run().machine)
    assert cli.main(["list", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{first}  2026-01-02T03:04:05+00:00  1 benchmark(s)",
                   f"{first.parent / 'broken.json'}  unreadable: binary content (NUL bytes); not a results file"]


def test_list_a_path_that_is_not_a_directory_is_exit_2(tmp_path, capsys, files):
    good, _ = files
    assert cli.main(["list", str(tmp_path / "nowhere")]) == 2
    _, line = _one_line(capsys)
    assert line == f"llmeff: error: {tmp_path / 'nowhere'}: no such directory"
    assert cli.main(["list", str(good)]) == 2
    _, line = _one_line(capsys)
    assert line == f"llmeff: error: {good}: is a file, not a directory (llmeff show prints it)"


# ---- the real command -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["show", "{dir}"],
    ["show", "{dir}/binary.json"],
    ["compare", "{dir}/good.json", "{dir}/truncated.json"],
    ["compare", "{dir}/good.json", "{dir}/good.json", "--alpha", "5"],
    ["compare", "{dir}/good.json"],
    ["list", "{dir}/good.json"],
])
def test_the_command_prints_one_line_and_no_traceback(files, tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "pytest_llmeff.cli", *(a.format(dir=tmp_path) for a in argv)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("llmeff: error: "), proc.stderr
    assert proc.stdout == ""
