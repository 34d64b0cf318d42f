"""``llmeff history``: the series of stored runs and its change points (ruptures), on real run files.

The truth is built in: the series are written with a known step (or none), with noise from a fixed seed, so the
detector is judged against the place where the step was put, not against its own output.
"""

from __future__ import annotations

import random
import sys

import pytest

from pytest_llmeff.cli import app as cli
from pytest_llmeff.results import history
from pytest_llmeff.results.runfile import write_run
from pytest_llmeff.results.schema import BenchmarkRecord, Metric, Run, VariantRecord
from pytest_llmeff.results.storage import Storage, machine_fingerprint

pytest.importorskip("ruptures")

MACHINE = {"cpu": "x", "os": "Linux-6", "python": "3.11.2", "cores_logical": 2}
NODEID = "t.py::test_gen[m-float32-b1]"


def _record(tps: list[float], nodeid: str = NODEID, name: str = "test_gen[m-float32-b1]") -> BenchmarkRecord:
    return BenchmarkRecord(
        nodeid=nodeid, name=name, group="g",
        variant=VariantRecord(id="m-float32-b1", model="m", model_source="alias", precision="float32",
                              batch_size=1, max_new_tokens=4, device="cpu", prompts=1),
        rounds=len(tps), warmup=0, tokens_generated=4, prompt_tokens=3, outcome="passed",
        metrics={"throughput_tok_s": Metric.from_samples("throughput_tok_s", tps),
                 "latency_s": Metric.from_samples("latency_s", [4 / t for t in tps])})


def _store(root, medians: list[float], seed: int = 0, extra_benchmark: bool = False) -> list:
    """One autosaved run per median: 8 rounds around it (±1% jitter), commit ``c<i>``."""
    rng = random.Random(seed)
    storage, paths = Storage(root), []
    for i, med in enumerate(medians):
        rounds = [med * (1 + rng.uniform(-0.01, 0.01)) for _ in range(8)]
        records = [_record(rounds)]
        if extra_benchmark:
            records.append(_record(rounds, nodeid="t.py::test_other", name="test_other"))
        run = Run(started_at=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}", finished_at="2026-01-01T01:00:00",
                  machine=MACHINE, versions={}, commit={"id": f"c{i:07d}abcdef", "dirty": False},
                  benchmarks=records)
        paths.append(storage.autosave(run))
    return paths


def _noisy(rng: random.Random, level: float, count: int, cv: float = 0.03) -> list[float]:
    return [level * (1 + rng.gauss(0, cv)) for _ in range(count)]


def test_an_injected_step_is_found_at_the_step(tmp_path, capsys):
    rng = random.Random(11)
    _store(tmp_path, _noisy(rng, 100.0, 20) + _noisy(rng, 85.0, 20))
    series = history.detect(history.load_history(tmp_path))
    assert len(series.points) == 40 and series.points[0].n == 8 and series.points[0].ci_low is not None
    assert [cp.index for cp in series.change_points] and all(abs(cp.index - 20) <= 1
                                                             for cp in series.change_points)
    (cp,) = series.change_points
    assert cp.before_median == pytest.approx(100, rel=0.03) and cp.after_median == pytest.approx(85, rel=0.03)
    assert cp.change == pytest.approx(-0.15, abs=0.03) and cp.p_value < 1e-6

    assert cli.main(["history", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    marked = [line for line in out.splitlines() if line.startswith(">>")]
    assert len(marked) == 1 and marked[0].split()[1] in {"20", "21", "22"}  # 1-based row of the first run after
    assert "regression between #" in out and "(-1" in out and "ci_low" in out and "c000000" in out


def test_several_steps_and_a_rise_are_found_and_named(tmp_path):
    rng = random.Random(5)
    _store(tmp_path, _noisy(rng, 100.0, 15) + _noisy(rng, 70.0, 15) + _noisy(rng, 95.0, 15))
    series = history.detect(history.load_history(tmp_path))
    assert [round(cp.index / 15) for cp in series.change_points] == [1, 2]
    assert all(abs(cp.index - want) <= 1 for cp, want in zip(series.change_points, (15, 30)))
    text = history.render(series)
    assert "regression between" in text and "improvement between" in text


def test_a_lower_is_better_metric_reads_a_rise_as_a_regression(tmp_path):
    rng = random.Random(3)
    _store(tmp_path, _noisy(rng, 100.0, 12) + _noisy(rng, 80.0, 12))  # latency_s = 4 / tps rises
    series = history.detect(history.load_history(tmp_path, metric="latency_s"))
    assert [cp.index for cp in series.change_points] in ([11], [12], [13])
    assert series.change_points[0].change > 0 and "regression between" in history.render(series)


def test_an_unchanged_series_has_few_false_change_points():
    """A/A: 40 runs from one distribution, one fixed seed shows none; over 100 more series the documented
    false-alarm rate (0-5% of series with any change point at the default penalty) holds, with and without a few
    40%-slow sessions mixed in."""
    rng = random.Random(1)
    assert history.change_point_indices(_noisy(rng, 100.0, 40)) == []
    with_any = sum(bool(history.change_point_indices(_noisy(rng, 100.0, 40))) for _ in range(100))
    assert with_any <= 5, f"{with_any}/100 unchanged series got a change point"
    slow_runs = sum(bool(history.change_point_indices([v * (0.6 if rng.random() < 0.05 else 1.0)
                                                       for v in _noisy(rng, 100.0, 40)])) for _ in range(100))
    assert slow_runs <= 10, f"{slow_runs}/100 unchanged series with a few slow sessions got a change point"


def test_the_detector_can_fail():
    """The same check on a series whose step is elsewhere must not pass: the step at 10 is not at 20."""
    rng = random.Random(2)
    found = history.change_point_indices(_noisy(rng, 100.0, 10) + _noisy(rng, 85.0, 30))
    assert found and not any(abs(i - 20) <= 1 for i in found)
    assert history.change_point_indices([100.0] * 5) == []  # too short to search


def test_short_series_and_a_constant_one(tmp_path, capsys):
    _store(tmp_path, [100.0, 101.0, 99.0])
    assert cli.main(["history", "--storage", str(tmp_path)]) == 0
    assert "3 run(s): too few to look for change points" in capsys.readouterr().out
    assert history.change_point_indices([50.0] * 10) == []
    assert history.change_point_indices([50.0] * 6 + [40.0] * 6) == [6]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    def fails(*args):
        assert cli.main(["history", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("llmeff: error: ")
        return err

    assert "no such storage directory" in fails("--storage", str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    assert "no stored runs under" in fails("--storage", str(tmp_path / "empty"))
    store = tmp_path / "s"
    _store(store, [100.0] * 8, extra_benchmark=True)
    err = fails("--storage", str(store))
    assert "2 benchmarks are stored; choose one with --benchmark" in err and "t.py::test_other" in err
    assert "no benchmark 'test_nope'" in fails("--storage", str(store), "--benchmark", "test_nope")
    err = fails("--storage", str(store), "--benchmark", "test_other", "--metric", "ttft_s")
    assert "no metric 'ttft_s' in benchmark t.py::test_other; recorded: latency_s, throughput_tok_s" in err
    assert "no stored runs for machine 'other'" in fails("--storage", str(store), "--machine", "other")
    with pytest.raises(SystemExit) as exited:  # argparse's own errors exit through SystemExit, one line too
        cli.main(["history", "--storage", str(store), "--penalty", "-1"])
    assert exited.value.code == 2 and "--penalty: '-1' is not allowed" in capsys.readouterr().err
    # by name, by node id, by the end of a node id
    for name in ("test_other", "t.py::test_other", "test_gen[m-float32-b1]"):
        assert cli.main(["history", "--storage", str(store), "--benchmark", name]) == 0
        capsys.readouterr()


def test_a_damaged_run_file_is_skipped_with_a_note(tmp_path, capsys):
    rng = random.Random(11)
    paths = _store(tmp_path, _noisy(rng, 100.0, 10) + _noisy(rng, 85.0, 10))
    paths[3].write_text('{"schema": "pytest-llmeff/1.1", "started_at": ')  # truncated
    (paths[0].parent / "0099_zz.json").write_bytes(b"\x00\x01binary")
    assert cli.main(["history", "--storage", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    notes = captured.err.strip().splitlines()
    assert len(notes) == 2 and all(n.startswith("llmeff: skipped unreadable run file ") for n in notes)
    assert "truncated" in captured.err and "binary" in captured.err
    assert "19 run(s)" in captured.out and ">>" in captured.out
    for p in paths:
        p.write_text("[]")
    assert cli.main(["history", "--storage", str(tmp_path)]) == 2
    assert "none of the 21 run file(s)" in capsys.readouterr().err


def test_several_machines_need_a_choice(tmp_path, capsys):
    _store(tmp_path, [100.0] * 6)
    other = dict(MACHINE, cpu="y")
    Storage(tmp_path).autosave(Run(started_at="2026-01-02", finished_at="2026-01-02", machine=other, versions={},
                                   commit={"id": None}, benchmarks=[_record([50.0] * 6)]))
    assert cli.main(["history", "--storage", str(tmp_path)]) == 2
    assert "runs of several machines are stored" in capsys.readouterr().err
    fp = machine_fingerprint(other)
    assert cli.main(["history", "--storage", str(tmp_path), "--machine", fp]) == 0
    assert f"machine {fp}: 1 run(s)" in capsys.readouterr().out


def test_without_the_library_one_line_names_the_extra(tmp_path, capsys, monkeypatch):
    _store(tmp_path, [100.0] * 6)
    monkeypatch.setitem(sys.modules, "ruptures", None)  # import fails as if not installed
    assert cli.main(["history", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and 'pip install "pytest-llmeff[history]"' in err
