"""llmeff merge: shard runs of one collection become one run that reads, shows and compares; overlapping shards
and foreign runs are refused with one line."""

from __future__ import annotations

import json

import pytest

from pytest_llmeff.cli.app import main
from pytest_llmeff.results.runfile import read_run

from test_shard import SHARDED


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory, tiny_cache):
    """Three real runs of SHARDED: shard 0/2, shard 1/2 and the unsharded run (one pytest subprocess each)."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("shards")
    (root / "test_sharded.py").write_text(SHARDED)
    env = dict(os.environ, LLMEFF_CACHE_DIR=str(tiny_cache), HF_HUB_OFFLINE="1", PYTEST_ADDOPTS="")
    env.pop("GITHUB_STEP_SUMMARY", None)
    paths = {}
    for label in ("0/2", "1/2", "all"):
        out = root / f"{label.replace('/', '-')}.json"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--llmeff-json={out}",
                "--llmeff-max-time=0.5", "test_sharded.py"] + ([f"--llmeff-shard={label}"] if label != "all" else [])
        proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        if label != "all":
            assert f"llmeff: shard {label} (--llmeff-shard): " in proc.stdout
        paths[label] = out
    return paths


def test_two_shards_together_are_the_unsharded_run_with_each_variant_loaded_once_per_shard(shard_runs):
    runs = {k: json.loads(p.read_text()) for k, p in shard_runs.items()}
    whole = {b["nodeid"] for b in runs["all"]["benchmarks"]}
    parts = [{b["nodeid"] for b in runs[k]["benchmarks"]} for k in ("0/2", "1/2")]
    assert len(whole) == 6 and not parts[0] & parts[1] and parts[0] | parts[1] == whole
    for k in ("0/2", "1/2"):
        keys = [load["key"] for load in runs[k]["loads"]]
        assert len(keys) == len(set(keys)) >= 1  # each variant of the shard loaded once
        assert runs[k]["shard"]["index"] == int(k[0]) and runs[k]["shard"]["count"] == 2
        assert set(runs[k]["shard"]["units"]) == set(keys)
    assert runs["0/2"]["shard"]["plan"] == runs["1/2"]["shard"]["plan"]
    assert runs["all"].get("shard") is None


def test_merged_shards_hold_the_unsharded_runs_benchmarks_and_read_show_and_compare(shard_runs, tmp_path, capsys):
    merged_path = tmp_path / "merged.json"
    assert main(["merge", str(shard_runs["1/2"]), str(shard_runs["0/2"]), "-o", str(merged_path)]) == 0
    out = capsys.readouterr().out
    assert "merged 2 run(s) (shard(s) 0, 1 of 2): 6 benchmark(s)" in out and "1 machine(s)" in out
    merged, whole = read_run(merged_path), read_run(shard_runs["all"])  # schema-valid: it reads back
    assert sorted(b.nodeid for b in merged.benchmarks) == sorted(b.nodeid for b in whole.benchmarks)
    assert merged.complete and merged.merged.missing == [] and [s.index for s in merged.merged.shards] == [0, 1]
    assert sorted(e.key for e in merged.loads) == sorted(e.key for e in whole.loads)  # 3 variants, once each
    assert {e.shard for e in merged.loads} == {0, 1}
    assert all(b.machine is None for b in merged.benchmarks)  # one machine: no per-record copy
    import jsonschema

    from pytest_llmeff.results.runfile import schema_dict
    jsonschema.validate(json.loads(merged_path.read_text()), schema_dict())
    assert main(["show", str(merged_path)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("tiny-random-llama") >= 6 and "fp16" not in shown.split("\n")[0]
    assert main(["compare", str(shard_runs["all"]), str(merged_path), "--fail", "throughput_tok_s:1000%"]) == 0
    table = capsys.readouterr().out
    assert "new (no baseline)" not in table and "missing (in the baseline only)" not in table
    assert main(["report", str(merged_path), "-o", str(tmp_path / "merged.html")]) == 0  # the HTML report too
    assert (tmp_path / "merged.html").stat().st_size > 0


def _shifted(path, tmp_path, name, **changes):
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        where = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            where = where[p]
        where[leaf] = value
    target = tmp_path / name
    target.write_text(json.dumps(data))
    return target


def test_a_merge_of_overlapping_shards_or_other_collections_is_one_line(shard_runs, tmp_path, capsys):
    out = str(tmp_path / "m.json")
    assert main(["merge", str(shard_runs["0/2"]), str(shard_runs["0/2"]), "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmeff: error: overlapping shards:") and "are both shard 0/2" in err and "\n" not in err
    assert main(["merge", str(shard_runs["0/2"]), str(shard_runs["all"]), "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "overlapping shards: test_sharded.py::test_gen[tiny-random-llama-fp" in err
    other = _shifted(shard_runs["1/2"], tmp_path, "other.json", **{"shard.collection": "f" * 64})
    assert main(["merge", str(shard_runs["0/2"]), str(other), "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "ran different collections" in err and "--force" in err and "\n" not in err
    moved = _shifted(shard_runs["1/2"], tmp_path, "moved.json", **{"commit.id": "0" * 40})
    assert main(["merge", str(shard_runs["0/2"]), str(moved), "-o", out]) == 2
    assert "ran commit" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
    assert main(["merge", str(shard_runs["0/2"]), str(moved), "-o", out, "--force"]) == 0
    assert read_run(tmp_path / "m.json").merged.forced[0].startswith("0-2.json ran commit") or \
        "ran commit" in read_run(tmp_path / "m.json").merged.forced[0]


def test_a_missing_shard_is_said_and_the_merged_run_is_incomplete(shard_runs, tmp_path, capsys):
    out = tmp_path / "half.json"
    assert main(["merge", str(shard_runs["1/2"]), "-o", str(out)]) == 0
    assert "WARNING shard(s) 0 missing" in capsys.readouterr().out
    half = read_run(out)
    assert not half.complete and half.merged.missing == [0] and "missing" in half.stop_reason


def test_shards_from_two_machines_keep_each_records_machine(shard_runs, tmp_path, capsys):
    elsewhere = _shifted(shard_runs["1/2"], tmp_path, "elsewhere.json",
                         **{"machine.hostname": "node-b", "machine.cpu": "Other CPU"})
    out = tmp_path / "two.json"
    assert main(["merge", str(shard_runs["0/2"]), str(elsewhere), "-o", str(out)]) == 0
    assert "2 machine(s)" in capsys.readouterr().out
    run = read_run(out)
    hosts = {b.machine.cpu for b in run.benchmarks}
    assert len(hosts) == 2 and "Other CPU" in hosts and run.merged.machines == 2
    assert {s.hostname for s in run.merged.shards} >= {"node-b"}


def test_a_merge_without_runs_or_of_a_damaged_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["merge", str(bad), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmeff: error:") and "bad.json" in err and "\n" not in err
    with pytest.raises(SystemExit) as info:
        main(["merge", str(bad)])
    assert info.value.code == 2 and "-o" in capsys.readouterr().err


def test_a_previous_runs_times_balance_the_shards_and_every_shard_agrees(shard_runs, tmp_path):
    """--llmeff-shard-costs with the unsharded run: costs are its measured seconds, and both shards compute the
    same split from it (one split digest), still whole variants and disjoint."""
    import os
    import subprocess
    import sys

    root = shard_runs["all"].parent
    runs = []
    for k in (0, 1):
        out = tmp_path / f"c{k}.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                               f"--llmeff-json={out}", f"--llmeff-shard={k}/2",
                               f"--llmeff-shard-costs={shard_runs['all']}", "test_sharded.py"],
                              cwd=root, env=dict(os.environ, PYTEST_ADDOPTS=""), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        runs.append(json.loads(out.read_text())["shard"])
    assert all(r["cost_method"].startswith("measured: time_s.total of 6 test(s)") for r in runs)
    assert not runs[0]["estimated"] and runs[0]["plan"] == runs[1]["plan"]
    assert runs[0]["shard_costs"] == runs[1]["shard_costs"] and all(c > 0 for c in runs[0]["shard_costs"])
    assert not set(runs[0]["units"]) & set(runs[1]["units"]) and len(runs[0]["units"]) + len(runs[1]["units"]) == 3
