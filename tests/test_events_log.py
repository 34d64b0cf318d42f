"""--llmeff-log-json: one JSON object per line per event, from a real session on the tiny model; and the live
progress lines on the terminal while a benchmark times its rounds."""

from __future__ import annotations

import json

import pytest

SOURCE = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=[1, 2], max_new_tokens=4, quality=False,
                            limits={"throughput_tok_s": ">= 0.001"})
def test_speed(llm_benchmark):
    llm_benchmark()
"""


def _events(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_every_event_of_a_session_is_one_json_line(llmeff_pytester):
    llmeff_pytester.makepyfile(test_b=SOURCE)
    log = llmeff_pytester.path / "logs" / "events.jsonl"  # its folder does not exist yet
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-json=run.json",
                                                 f"--llmeff-log-json={log}")
    result.assert_outcomes(passed=2)
    events = _events(log)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    assert {"load", "benchmark_start", "round", "stop", "record", "warning", "limit", "output"} <= set(kinds)
    for e in events:
        assert {"ts", "t_s", "pid", "nodeid", "variant"} <= set(e)
    run = json.loads((llmeff_pytester.path / "run.json").read_text())
    assert len(run["benchmarks"]) == 2
    for rec in run["benchmarks"]:
        mine = [e for e in events if e["nodeid"] == rec["nodeid"]]
        rounds = [e for e in mine if e["event"] == "round"]
        assert len(rounds) == rec["rounds"]  # one event per timed round, no more, no less
        assert [e["round"] for e in rounds] == list(range(1, rec["rounds"] + 1))
        assert {e["variant"] for e in mine} == {rec["variant"]["id"]}
        stop = [e for e in mine if e["event"] == "stop"]
        assert len(stop) == 1 and stop[0]["reason"] == rec["stop"]["reason"] and stop[0]["rounds"] == rec["rounds"]
        record = [e for e in mine if e["event"] == "record"]
        assert record[0]["metrics"]["throughput_tok_s"]["median"] == rec["metrics"]["throughput_tok_s"]["median"]
        assert len([e for e in mine if e["event"] == "warning"]) == len(rec["warnings"])
        assert [e["passed"] for e in mine if e["event"] == "limit"] == [True]
    outputs = [e for e in events if e["event"] == "output"]
    assert [o["what"] for o in outputs] == ["run file"]
    assert outputs[0]["path"] == str(llmeff_pytester.path / "run.json")


def test_verdicts_are_events(llmeff_pytester):
    llmeff_pytester.makepyfile(test_b=SOURCE)
    first = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-save=base")
    first.assert_outcomes(passed=2)
    log = llmeff_pytester.path / "events.jsonl"
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-compare=base",
                                                 "--llmeff-compare-fail=model_bytes:1%,throughput_tok_s:900%",
                                                 "--llmeff-json=run.json", f"--llmeff-log-json={log}")
    result.assert_outcomes(passed=2)
    events = _events(log)
    run = json.loads((llmeff_pytester.path / "run.json").read_text())
    for rec in run["benchmarks"]:
        verdicts = [e for e in events if e["event"] == "verdict" and e["nodeid"] == rec["nodeid"]]
        assert sorted((e["metric"], e["status"]) for e in verdicts) == \
            sorted((v["metric"], v["status"]) for v in rec["verdicts"])
        assert {"model_bytes", "throughput_tok_s"} == {e["metric"] for e in verdicts}


@pytest.mark.slow
def test_xdist_workers_append_to_the_same_log(llmeff_pytester):
    pytest.importorskip("xdist")
    llmeff_pytester.makepyfile(test_b=SOURCE)
    log = llmeff_pytester.path / "events.jsonl"
    log.write_text("left over from an earlier run\n")  # the session starts the log afresh
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--llmeff-json=run.json",
                                                  f"--llmeff-log-json={log}")
    result.assert_outcomes(passed=2)
    events = _events(log)  # concurrent appends from two workers: still one whole object per line
    run = json.loads((llmeff_pytester.path / "run.json").read_text())
    for rec in run["benchmarks"]:
        rounds = [e for e in events if e["event"] == "round" and e["nodeid"] == rec["nodeid"]]
        assert len(rounds) == rec["rounds"] and {e["worker"] for e in rounds} <= {"gw0", "gw1"}
    assert [e["event"] for e in events].count("session_start") == 1


def test_an_unwritable_log_path_is_a_usage_error(llmeff_pytester):
    llmeff_pytester.makepyfile(test_b=SOURCE)
    (llmeff_pytester.path / "adir").mkdir()
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-log-json=adir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmeff-log-json=adir is a directory; give a file path*"])


def test_ini_twin(llmeff_pytester):
    llmeff_pytester.makepyfile(test_b=SOURCE)
    llmeff_pytester.makeini("[pytest]\nllmeff_log_json = from-ini.jsonl\n")
    llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert "round" in {e["event"] for e in _events(llmeff_pytester.path / "from-ini.jsonl")}


SLOW_ROUNDS = """
import time, pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, quality=False, rounds=24)
def test_slow(llm_benchmark, llm_model):
    original = llm_model.generate_ids
    def slow(*args, **kwargs):
        out = original(*args, **kwargs)
        time.sleep(0.125)  # every round lasts at least this long: 24 rounds > 3 s
        return out
    llm_model.generate_ids = slow
    llm_benchmark()
"""


def test_progress_lines_while_rounds_run(llmeff_pytester):
    llmeff_pytester.makepyfile(test_slow=SLOW_ROUNDS)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["llmeff: tiny-random-llama-fp32-b1: round *, throughput_tok_s * timed",
                                 "llmeff: tiny-random-llama-fp32-b1: stopped after 24 rounds (fixed_rounds)*"])


def test_progress_lines_only_for_long_benchmarks_and_throttled():
    """The listener on a fake clock: nothing before 10 s (2 s with -v), then at most one line per 10 s (2 s),
    and a stop line only for a benchmark that showed progress."""
    from pytest_llmeff.report.progress import ProgressLines

    def rounds(listener, seconds):
        listener({"event": "benchmark_start", "t_s": 100.0})
        for n, t in enumerate(seconds, 1):
            listener({"event": "round", "t_s": 100.0 + t, "round": n, "variant": "v", "elapsed_s": t,
                      "median": {"throughput_tok_s": 10.0}, "achieved_ci_rel": {"throughput_tok_s": 0.08},
                      "target_ci_rel": 0.05, "max_time_s": 20.0, "fixed_rounds": None})
        listener({"event": "stop", "t_s": 100.0 + seconds[-1], "variant": "v", "rounds": len(seconds),
                  "reason": "target_ci", "median": {"throughput_tok_s": 10.0},
                  "achieved_ci_rel": {"throughput_tok_s": 0.04}, "target_ci_rel": 0.05})

    quiet, verbose = [], []
    rounds(ProgressLines(quiet.append), [0.5 * i for i in range(1, 19)])  # 9 s: quiet says nothing
    assert quiet == []
    rounds(ProgressLines(quiet.append), [1.0 * i for i in range(1, 26)])  # 25 s: lines at 10 s and 20 s
    assert quiet == ["v: round 10, throughput_tok_s 10 ±8.0% (target ±5%), 10 s of 20 s timed",
                     "v: round 20, throughput_tok_s 10 ±8.0% (target ±5%), 20 s of 20 s timed",
                     "v: stopped after 25 rounds (target_ci), throughput_tok_s 10 ±4.0% (target ±5%)"]
    rounds(ProgressLines(verbose.append, verbose=True), [1.0 * i for i in range(1, 6)])  # -v: from 2 s, every 2 s
    assert [line.split(",")[0] for line in verbose] == ["v: round 2", "v: round 4", "v: stopped after 5 rounds (target_ci)"]


def test_a_failing_listener_is_dropped_and_said():
    from pytest_llmeff.events import EventLog

    seen = []

    def broken(event):
        raise OSError(28, "No space left on device")

    log = EventLog([broken, seen.append])
    with pytest.warns(RuntimeWarning, match=r"listener broken failed on a 'round' event .*No space left"):
        log.emit("round")
    log.emit("round")  # dropped: no second warning, the other listener goes on
    assert log.listeners == [seen.append] and len(seen) == 2
