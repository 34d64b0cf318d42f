"""No result and no baseline is ever lost: the fault matrix of the house issue, tried as a user would (pytester
sessions on the tiny model, then the files and the terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ONE = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, rounds=2, warmup=0, quality=False)
def test_a(llm_benchmark):
    llm_benchmark()
"""

TWO = ONE + """

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, rounds=2, warmup=0, quality=False,
                            batch_size=2)
def test_b(llm_benchmark):
    llm_benchmark()
"""


def _stored(pytester, name="main") -> list[Path]:
    return list((pytester.path / ".llmeff" / "baselines").glob(f"*/{name}.json"))


def _store_main(pytester) -> bytes:
    pytester.makepyfile(test_bench=TWO)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-save=main").assert_outcomes(passed=2)
    [path] = _stored(pytester)
    return path.read_bytes()


@pytest.mark.parametrize("args", [["--collect-only"], ["-k", "nomatch"], ["--llmeff-skip"]],
                         ids=["collect-only", "k-nomatch", "llmeff-skip"])
def test_a_run_without_benchmarks_never_replaces_a_stored_baseline(llmeff_pytester, args):
    before = _store_main(llmeff_pytester)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-save=main", *args)
    assert result.ret in (0, 5)
    [path] = _stored(llmeff_pytester)
    assert path.read_bytes() == before, "the stored baseline was replaced"
    result.stdout.fnmatch_lines(["llmeff: not stored as 'main': *; the stored 'main' is kept*"])


def test_ctrl_c_keeps_the_complete_baseline_and_the_run_file_says_interrupted(llmeff_pytester):
    before = _store_main(llmeff_pytester)
    llmeff_pytester.makepyfile(test_bench=TWO.replace("def test_b(llm_benchmark):\n    llm_benchmark()",
                                                      "def test_b(llm_benchmark):\n    raise KeyboardInterrupt"))
    out = llmeff_pytester.path / "partial.json"
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-save=main",
                                                 f"--llmeff-json={out}", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    [path] = _stored(llmeff_pytester)
    assert path.read_bytes() == before
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["complete"] is False
    assert data["stop_reason"] == "interrupted (Ctrl-C)"
    assert [b["nodeid"] for b in data["benchmarks"]] == ["test_bench.py::test_a[tiny-random-llama-fp32-b1]"]
    assert data["unfinished"] == ["test_bench.py::test_b[tiny-random-llama-fp32-b2]"]
    result.stdout.fnmatch_lines(["llmeff: not stored as 'main': the run did not finish (interrupted (Ctrl-C); 1 "
                                 "benchmark test(s) unfinished); the stored 'main' is kept*"])


def test_stopping_early_with_x_is_not_stored_either(llmeff_pytester):
    before = _store_main(llmeff_pytester)
    llmeff_pytester.makepyfile(test_bench=TWO.replace("def test_a(llm_benchmark):\n    llm_benchmark()",
                                                      "def test_a(llm_benchmark):\n    assert False"))
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-save=main", "-x")
    assert result.ret == 1
    [path] = _stored(llmeff_pytester)
    assert path.read_bytes() == before
    result.stdout.fnmatch_lines(["llmeff: not stored as 'main': the run measured no benchmark*"])


@pytest.mark.slow
def test_sigterm_writes_the_finished_benchmarks_and_exits_like_ctrl_c(llmeff_pytester):
    llmeff_pytester.makepyfile(test_bench=TWO.replace(
        "def test_b(llm_benchmark):\n    llm_benchmark()",
        "def test_b(llm_benchmark):\n    import os, signal, time\n    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)"))
    out = llmeff_pytester.path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--llmeff-json={out}",
                           "test_bench.py"], cwd=llmeff_pytester.path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["stop_reason"] == "interrupted (SIGTERM)"
    assert len(data["benchmarks"]) == 1 and data["benchmarks"][0]["name"] == "test_a[tiny-random-llama-fp32-b1]"
    assert oct(out.stat().st_mode & 0o777) != "0o600"


@pytest.mark.slow
def test_concurrent_sessions_never_share_a_results_file(llmeff_pytester):
    llmeff_pytester.makepyfile(test_bench=ONE)
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--llmeff-report",
                               "--llmeff-autosave", "test_bench.py"], cwd=llmeff_pytester.path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    runs = list((llmeff_pytester.path / ".llmeff" / "runs").glob("*.json"))
    stored = list((llmeff_pytester.path / ".llmeff" / "baselines").glob("*/*.json"))
    assert len(runs) == 3, runs
    assert len(stored) == 3 and len({p.name.split("_")[0] for p in stored}) == 3, stored


def test_default_results_names_are_unique_within_one_microsecond(tmp_path):
    from pytest_llmeff.report.outputs import default_json_path
    from pytest_llmeff.results.schema import CommitInfo, MachineInfo, Run

    run = Run(started_at="x", finished_at="x", machine=MachineInfo(cpu="c", os="Linux", python="3.11"), versions={},
              commit=CommitInfo())
    names = {default_json_path(run, tmp_path).name for _ in range(200)}
    assert len(names) == 200
    assert all(f"_{os.getpid()}-" in n for n in names)


@pytest.mark.parametrize("option, make, expect", [
    ("--llmeff-json", lambda p: p.mkdir(), "--llmeff-json=* is a directory; give a file path"),
    ("--llmeff-json", lambda p: None, None),
    ("--llmeff-markdown", lambda p: p.mkdir(), "--llmeff-markdown=* is a directory; give a file path"),
    ("--llmeff-csv", lambda p: (p.parent / "afile").write_text("x"), "--llmeff-csv=* cannot be written: * is a file,"
                                                                      " not a folder"),
], ids=["json-dir", "json-ok", "markdown-dir", "csv-under-file"])
def test_output_paths_are_checked_before_any_benchmark_runs(llmeff_pytester, option, make, expect):
    llmeff_pytester.makepyfile(test_bench=ONE)
    target = llmeff_pytester.path / "out" / "report.x"
    target.parent.mkdir()
    make(target)
    path = target.parent / "afile" / "report.x" if option == "--llmeff-csv" else target
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", f"{option}={path}")
    if expect is None:
        result.assert_outcomes(passed=1)
        return
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-llmeff: {expect}"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "passed" not in result.stdout.str()


def test_storage_root_that_is_a_file_is_a_usage_error(llmeff_pytester):
    llmeff_pytester.makepyfile(test_bench=ONE)
    (llmeff_pytester.path / "store").write_text("not a folder")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-storage=store",
                                                 "--llmeff-save=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-llmeff: --llmeff-storage=store is a file; give a folder for stored runs"])


def test_a_results_file_that_fails_at_the_end_goes_to_a_printed_fallback(llmeff_pytester, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    llmeff_pytester.makepyfile(test_bench=ONE + """

def test_z_break_the_folder():
    import os, shutil
    shutil.rmtree("out")
    open("out", "w").write("now a file")
""")
    (llmeff_pytester.path / "out").mkdir()
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-json=out/run.json",
                                                 "--llmeff-no-reorder")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["llmeff: ERROR could not write the results file */out/run.json: *; the results "
                                 f"were written to {tmp_path}/llmeff-results-*.json instead"])
    [fallback] = tmp_path.glob("llmeff-results-*.json")
    assert len(json.loads(fallback.read_text())["benchmarks"]) == 1


@pytest.mark.parametrize("option", ["--llmeff-json=", "--llmeff-save=", "--llmeff-compare=", "--llmeff-rounds=",
                                    "--llmeff-storage=", "--llmeff-compare-fail= "])
def test_an_empty_option_value_is_a_usage_error_naming_the_option(llmeff_pytester, option):
    llmeff_pytester.makepyfile(test_bench=ONE)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    name = option.split("=")[0]
    result.stderr.fnmatch_lines([f"ERROR: pytest-llmeff: {name}=* is empty; give a value or leave the option out"])


def test_an_empty_ini_value_is_a_usage_error_too(llmeff_pytester):
    llmeff_pytester.makepyfile(test_bench=ONE)
    llmeff_pytester.makeini("[pytest]\nllmeff_save =\n")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-llmeff: llmeff_save (ini) is set but empty; *"])


def test_two_unnamed_benchmarks_in_one_test_ask_for_a_name(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_bench=ONE.replace("    llm_benchmark()", "    llm_benchmark()\n    llm_benchmark()")
                               + """

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, rounds=2, warmup=0, quality=False)
def test_named(llm_benchmark):
    llm_benchmark(name="short")
    llm_benchmark(name="long", max_new_tokens=6)
""")
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*llm_benchmark() already recorded a benchmark named 'test_a?*?' in this test; "
                                 "give each call its own name=*"])
    keys = [(b["nodeid"], b["name"]) for b in data["benchmarks"]]
    assert len(keys) == len(set(keys)) == 3


def test_two_markers_on_one_test_are_an_error_not_a_silent_pick(llmeff_pytester):
    llmeff_pytester.makepyfile(test_bench="""
import pytest

pytestmark = pytest.mark.llm_efficiency(model="tiny-random-llama", precision="bfloat16")

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, rounds=1, warmup=0)
def test_a(llm_benchmark):
    llm_benchmark()

def test_plain():
    pass
""")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*llm_efficiency marker on test_bench.py::test_a?llmeff-invalid?: 2 "
                                 "@pytest.mark.llm_efficiency markers apply to this test*give one marker*"])


def test_an_unwritable_step_summary_is_its_own_error_and_the_markdown_is_written(llmeff_pytester, monkeypatch):
    llmeff_pytester.makepyfile(test_bench=ONE)
    (llmeff_pytester.path / "afile").write_text("x")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(llmeff_pytester.path / "afile" / "summary.md"))
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-markdown=report.md")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert (llmeff_pytester.path / "report.md").read_text().strip()
    result.stdout.fnmatch_lines(["llmeff: markdown written to */report.md",
                                 "llmeff: ERROR could not append to $GITHUB_STEP_SUMMARY (*afile/summary.md): *"])
    assert "could not write the markdown report" not in result.stdout.str()


def test_output_files_are_readable_by_others_under_umask_022(llmeff_pytester, run_with_json):
    old = os.umask(0o022)
    try:
        llmeff_pytester.makepyfile(test_bench=ONE)
        run_with_json(llmeff_pytester, "--llmeff-csv=t.csv", "--llmeff-save=main")[0].assert_outcomes(passed=1)
    finally:
        os.umask(old)
    for path in [llmeff_pytester.path / "out.json", llmeff_pytester.path / "t.csv", *_stored(llmeff_pytester)]:
        assert path.stat().st_mode & 0o777 == 0o644, path
