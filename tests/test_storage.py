"""Baseline storage: fingerprints, safe names, autosave counters, resolving and loading, matching benchmarks."""

from __future__ import annotations

import json
import os
import re

import pytest

from pytest_llmeff.results.schema import BenchmarkRecord, Metric, Run, VariantRecord
from pytest_llmeff.results.storage import (Storage, StorageError, load_run, machine_fingerprint, match_benchmarks,
                                   mismatch_warnings)

MACHINE = {"cpu": "AMD EPYC 7B13", "cores_logical": 16, "ram_bytes": 125 * 2**30 + 12345,
           "gpus": [{"index": 0, "name": "NVIDIA H100", "memory_bytes": 80 * 2**30}],
           "os": "Linux-6.1.0-x86_64-with-glibc2.36", "python": "3.11.7", "hostname": "box-1"}
VERSIONS = {"python": "3.11.7", "torch": "2.13.0", "transformers": "4.60.0", "accelerate": "1.2.0",
            "bitsandbytes": None, "codecarbon": "3.0.0"}


def record(nodeid, variant_id="m-fp32-b1", name=None):
    return BenchmarkRecord(
        nodeid=nodeid, name=name or nodeid.rsplit("::", 1)[-1],
        variant=VariantRecord(id=variant_id, model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=4, device="cpu", prompts=1),
        rounds=3, warmup=0, tokens_generated=4, prompt_tokens=3,
        metrics={"ttft_s": Metric.from_samples("ttft_s", [0.1, 0.2, 0.3])},
    )


def make_run(benchmarks=(), machine=None, versions=None, commit="0123456789abcdef",
             started="2026-01-02T03:04:05+00:00"):
    return Run(started_at=started, finished_at=started, machine=machine or MACHINE,
               versions=VERSIONS if versions is None else versions, commit={"id": commit, "dirty": False},
               benchmarks=list(benchmarks))


# ---- fingerprints -----------------------------------------------------------------------------------------------

def test_fingerprint_is_stable_readable_and_folder_safe():
    fp = machine_fingerprint(MACHINE)
    assert re.fullmatch(r"linux-16c-125gib-1gpu-py3\.11-[0-9a-f]{8}", fp), fp
    assert machine_fingerprint(dict(MACHINE)) == fp
    assert machine_fingerprint(make_run().machine) == fp           # a MachineInfo gives the same id
    # ignored: hostname, patch versions, a few bytes of RAM, the os kernel version, extra fields
    same = dict(MACHINE, hostname="other", python="3.11.9", ram_bytes=125 * 2**30 - 999,
                os="Linux-5.15.0-generic-x86_64", site="lab")
    assert machine_fingerprint(same) == fp


@pytest.mark.parametrize("change", [
    {"cpu": "Intel Xeon Platinum 8480+"}, {"cores_logical": 8}, {"ram_bytes": 64 * 2**30},
    {"gpus": []}, {"gpus": [{"name": "NVIDIA H200"}]}, {"os": "Darwin-23.1.0-arm64"}, {"python": "3.12.1"},
])
def test_fingerprint_differs_when_the_machine_does(change):
    assert machine_fingerprint(dict(MACHINE, **change)) != machine_fingerprint(MACHINE)


def test_fingerprint_of_a_sparse_machine_and_gpu_order():
    fp = machine_fingerprint({"cpu": "x", "os": "Windows 11", "python": "3.10.2"})
    assert re.fullmatch(r"windows-xc-xgib-py3\.10-[0-9a-f]{8}", fp), fp
    two = dict(MACHINE, gpus=[{"name": "A"}, {"name": "B"}])
    assert machine_fingerprint(two) == machine_fingerprint(dict(MACHINE, gpus=[{"name": "B"}, {"name": "A"}]))


# ---- save, load, names ------------------------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    store = Storage(tmp_path)
    run = make_run([record("t.py::test[m-fp32-b1]")])
    path = store.save(run, "main")
    assert path == tmp_path / machine_fingerprint(MACHINE) / "main.json"
    assert store.load("main") == run
    assert store.load(path) == run
    assert store.load(str(path)) == run
    assert store.save(run, "main.json") == path           # a trailing .json is not doubled
    assert sorted(p.name for p in path.parent.iterdir()) == ["main.json"]  # no temp files left behind


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "a\\b", "..", "", "a b", "x..y", "/abs"])
def test_unsafe_names_are_rejected(tmp_path, name):
    with pytest.raises(StorageError) as info:
        Storage(tmp_path).save(make_run(), name)
    assert str(info.value) == (f"run name {name!r} is not allowed: use only the characters [A-Za-z0-9._-], "
                               "no '..', no leading '.', no path separators")
    assert not any(tmp_path.rglob("*.json"))


def test_autosave_counter_increments_per_fingerprint(tmp_path):
    store = Storage(tmp_path)
    run = make_run()
    first = store.autosave_name(run)
    assert first == "0001_01234567_20260102T030405Z"
    store.save(run, first)
    assert store.autosave_name(run) == "0002_01234567_20260102T030405Z"
    store.save(run, "0009_manual_20250101T000000Z")
    store.save(run, "named-baseline")
    assert store.autosave_name(run) == "0010_01234567_20260102T030405Z"
    other_machine = make_run(machine=dict(MACHINE, cpu="other"), commit=None,
                             started="2026-01-02T05:04:05+02:00")
    assert store.autosave_name(other_machine) == "0001_nocommit_20260102T030405Z"   # its own counter, in UTC


def test_latest_picks_the_highest_counter_then_mtime(tmp_path):
    store = Storage(tmp_path)
    assert store.latest() is None
    run = make_run()
    p2 = store.save(run, "0002_a_20260101T000000Z")
    p10 = store.save(run, "0010_a_20260101T000000Z")
    p3 = store.save(run, "0003_a_20260101T000000Z")
    named = store.save(run, "zzz-named")
    os.utime(p10, ns=(10**18, 10**18))          # older mtime than the others: the counter still wins
    assert store.latest() == p10
    assert store.latest(machine_fingerprint(MACHINE)) == p10
    assert store.latest("nowhere") is None
    assert {p2, p3, named} < set(store.runs())
    # without counters, the newest mtime wins
    bare = Storage(tmp_path / "bare")
    old, new = bare.save(run, "old"), bare.save(run, "new")
    os.utime(old, ns=(2 * 10**18, 2 * 10**18))
    os.utime(new, ns=(1 * 10**18, 1 * 10**18))
    assert bare.latest() == old


def test_latest_prefers_the_current_fingerprint(tmp_path):
    here = make_run()
    elsewhere = make_run(machine=dict(MACHINE, cpu="other"))
    writer = Storage(tmp_path)
    mine = writer.save(here, "0001_a_20260101T000000Z")
    writer.save(elsewhere, "0005_a_20260101T000000Z")
    assert Storage(tmp_path, fingerprint=machine_fingerprint(MACHINE)).latest() == mine
    assert Storage(tmp_path).latest().name == "0005_a_20260101T000000Z.json"


def test_resolve_paths_names_counters_and_other_fingerprints(tmp_path):
    here_fp = machine_fingerprint(MACHINE)
    elsewhere = make_run(machine=dict(MACHINE, cpu="other"))
    store = Storage(tmp_path, fingerprint=here_fp)
    mine = store.save(make_run(), "0003_a_20260101T000000Z")
    theirs = store.save(elsewhere, "their-baseline")
    also_theirs = store.save(elsewhere, "0003_b_20260101T000000Z")
    assert store.resolve("0003_a_20260101T000000Z") == mine
    assert store.resolve("0003_a_20260101T000000Z.json") == mine
    assert store.resolve("3") == mine                      # current fingerprint first
    assert store.resolve("their-baseline") == theirs       # then any fingerprint
    assert store.resolve(str(also_theirs)) == also_theirs  # an existing path as is
    with pytest.raises(StorageError, match=r"run name '3' is ambiguous under .*: .*/0003_a_20260101T000000Z, "
                                           r".*/0003_b_20260101T000000Z; give the file path"):
        Storage(tmp_path).resolve("3")


def test_resolve_unknown_name_lists_what_is_available(tmp_path):
    store = Storage(tmp_path, fingerprint=machine_fingerprint(MACHINE))
    with pytest.raises(StorageError) as info:
        store.resolve("main")
    assert str(info.value) == f"no stored run 'main': nothing is stored under {tmp_path} yet"
    store.save(make_run(), "0001_a_20260101T000000Z")
    store.save(make_run(), "0002_a_20260101T000000Z")
    fp = machine_fingerprint(MACHINE)
    with pytest.raises(StorageError) as info:
        store.resolve("main")
    assert str(info.value) == (f"no stored run 'main' under {tmp_path}; available (newest first): "
                               f"{fp}/0002_a_20260101T000000Z, {fp}/0001_a_20260101T000000Z")
    with pytest.raises(StorageError, match=r"nope/missing.json: no such results file$"):
        store.resolve(str(tmp_path / "nope" / "missing.json"))


def _bad(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StorageError) as info:
        Storage(tmp_path / "store").load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_load_errors_are_one_clear_line(tmp_path):
    full = make_run([record("t.py::test[m-fp32-b1]")]).to_json()
    assert _bad(tmp_path, "empty.json", b"").endswith(": the file is empty (0 bytes); not a results file")
    assert _bad(tmp_path, "blank.json", b"  \n").endswith(": the file is empty (3 bytes); not a results file")
    for i, cut in enumerate([len(full) // 10, len(full) // 2, len(full) * 9 // 10, len(full) - 2]):
        truncated = _bad(tmp_path, f"cut{i}.json", full[:cut].encode())
        assert re.search(r": the JSON ends early at line \d+ \(truncated file\?\)$", truncated), truncated
    assert _bad(tmp_path, "text.json", b"hello world").endswith(
        ": not valid JSON (Expecting value at line 1 column 1)")
    assert _bad(tmp_path, "binary.json", b"\xff\xfe\x00garbage").endswith(
        ": binary content (NUL bytes); not a results file")
    assert _bad(tmp_path, "latin1.json", b'{"schema": "caf\xe9"}').endswith(
        ": binary content (not UTF-8 text at byte 15); not a results file")
    newer = json.dumps(dict(json.loads(full), schema="pytest-llmeff/2")).encode()
    assert _bad(tmp_path, "newer.json", newer).endswith(
        ": schema 'pytest-llmeff/2' is newer than this pytest-llmeff reads ('pytest-llmeff/1.1'); "
        "upgrade pytest-llmeff to read it")
    foreign = _bad(tmp_path, "foreign.json", json.dumps({"benchmarks": []}).encode())
    assert foreign.endswith(': no "schema" field; not a pytest-llmeff/1.1 run file')
    invalid = json.loads(full)
    del invalid["machine"]
    assert _bad(tmp_path, "invalid.json", json.dumps(invalid).encode()).endswith(
        ": not a valid pytest-llmeff/1.1 run: machine: Field required")
    invalid["started_at"], invalid["extra"] = 3, True
    assert _bad(tmp_path, "invalid2.json", json.dumps(invalid).encode()).endswith(
        ": not a valid pytest-llmeff/1.1 run: started_at: Input should be a valid string (and 2 more)")
    with pytest.raises(StorageError, match=r"gone.json: no such results file$"):
        load_run(tmp_path / "gone.json")


# ---- matching ---------------------------------------------------------------------------------------------------

def test_match_pairs_new_missing_and_renamed():
    baseline = make_run([
        record("bench/test_a.py::test_gen[m-fp32-b1]"),
        record("bench/test_a.py::test_gen[m-fp32-b4]", "m-fp32-b4"),
        record("bench/test_a.py::test_old[m-fp32-b1]"),
        record("bench/test_move.py::test_moved[m-bf16-b1]", "m-bf16-b1"),
    ])
    current = make_run([
        record("bench/test_a.py::test_gen[m-fp32-b1]"),
        record("bench/test_a.py::test_gen[m-fp32-b4]", "m-fp32-b4"),
        record("bench/test_a.py::test_brand_new[m-fp32-b1]"),
        record("bench/sub/test_moved_here.py::TestX::test_moved[m-bf16-b1]", "m-bf16-b1"),
    ])
    m = match_benchmarks(baseline, current)
    assert [(b.nodeid, c.nodeid) for b, c in m.pairs] == [
        ("bench/test_a.py::test_gen[m-fp32-b1]",) * 2, ("bench/test_a.py::test_gen[m-fp32-b4]",) * 2]
    assert [r.nodeid for r in m.new] == ["bench/test_a.py::test_brand_new[m-fp32-b1]"]
    assert [r.nodeid for r in m.missing] == ["bench/test_a.py::test_old[m-fp32-b1]"]
    assert [(b.nodeid, c.nodeid) for b, c in m.renamed] == [
        ("bench/test_move.py::test_moved[m-bf16-b1]", "bench/sub/test_moved_here.py::TestX::test_moved[m-bf16-b1]")]


def test_renamed_needs_the_same_variant_and_an_unambiguous_candidate():
    baseline = make_run([record("a.py::test_x[m-fp32-b1]"), record("a.py::test_y[v1]", "v1"),
                         record("b.py::test_y[v1]", "v1")])
    current = make_run([record("c.py::test_x[m-fp16-b1]", "m-fp16-b1"), record("c.py::test_y[v1]", "v1")])
    m = match_benchmarks(baseline, current)
    assert m.renamed == [] and m.pairs == []
    assert [r.nodeid for r in m.new] == ["c.py::test_x[m-fp16-b1]", "c.py::test_y[v1]"]
    assert [r.nodeid for r in m.missing] == ["a.py::test_x[m-fp32-b1]", "a.py::test_y[v1]", "b.py::test_y[v1]"]


def test_several_named_benchmarks_in_one_test_pair_one_by_one():
    nodeid = "t.py::test_phases[m-fp32-b1]"
    baseline = make_run([record(nodeid, name="prefill"), record(nodeid, name="decode")])
    current = make_run([record(nodeid, name="decode"), record(nodeid, name="prefill")])
    m = match_benchmarks(baseline, current)
    assert [(b.name, c.name) for b, c in m.pairs] == [("decode", "decode"), ("prefill", "prefill")]
    assert m.new == [] and m.missing == [] and m.renamed == []


# ---- warnings ---------------------------------------------------------------------------------------------------

def test_mismatch_warnings_name_old_and_new():
    assert mismatch_warnings(make_run(), make_run()) == []
    newer = dict(VERSIONS, torch="2.14.0", transformers="4.61.0", bitsandbytes="0.45.0", python="3.11.9",
                 codecarbon="9.9.9")
    other = dict(MACHINE, cpu="Intel Xeon")
    warnings = mismatch_warnings(make_run(), make_run(machine=other, versions=newer))
    assert warnings == [
        f"baseline was measured on another machine ({machine_fingerprint(MACHINE)}; this run: "
        f"{machine_fingerprint(other)}); timings may not be comparable",
        "python differs from the baseline: 3.11.7 -> 3.11.9",
        "torch differs from the baseline: 2.13.0 -> 2.14.0",
        "transformers differs from the baseline: 4.60.0 -> 4.61.0",
        "bitsandbytes differs from the baseline: not installed -> 0.45.0",
    ]
    unrecorded = {k: v for k, v in VERSIONS.items() if k != "accelerate"}
    assert mismatch_warnings(make_run(versions=unrecorded), make_run(versions=dict(VERSIONS, accelerate="9"))) == []
