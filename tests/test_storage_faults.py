"""Faults of run files and stored baselines: the one reader and its one-line errors, file modes, autosave races."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from pytest_llmeff import files
from pytest_llmeff.results import runfile, storage
from pytest_llmeff.errors import StorageError
from pytest_llmeff.results.runfile import read_run, write_run
from pytest_llmeff.results.schema import BenchmarkRecord, Metric, Run, VariantRecord
from pytest_llmeff.results.storage import Storage, load_run, machine_fingerprint

MACHINE = {"cpu": "AMD EPYC 7B13", "cores_logical": 16, "ram_bytes": 125 * 2**30, "os": "Linux-6.1.0-x86_64",
           "python": "3.11.7"}


def make_run(samples=(0.1, 0.2, 0.3), commit="0123456789abcdef"):
    record = BenchmarkRecord(
        nodeid="t.py::test_gen[m-fp32-b1]", name="test_gen[m-fp32-b1]",
        variant=VariantRecord(id="m-fp32-b1", model="m", model_source="alias", precision="float32", batch_size=1,
                              max_new_tokens=4, device="cpu", prompts=1),
        rounds=len(samples), warmup=0, tokens_generated=4, prompt_tokens=3,
        metrics={"ttft_s": Metric.from_samples("ttft_s", list(samples))})
    return Run(started_at="2026-01-02T03:04:05+00:00", finished_at="2026-01-02T03:04:09+00:00", machine=MACHINE,
               versions={"python": "3.11.7"}, commit={"id": commit, "dirty": False}, benchmarks=[record])


FULL = make_run().to_json()


def _edited(**changes) -> bytes:
    data = json.loads(FULL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return json.dumps(data, indent=2).encode()


# (file content, the problem after "<path>: ")
BAD_CONTENT = {
    "empty": (b"", "the file is empty (0 bytes); not a results file"),
    "blank": (b" \n\t\n", "the file is empty (4 bytes); not a results file"),
    "binary-nul": (bytes(range(256)), "binary content (NUL bytes); not a results file"),
    "binary-gzip": (b"\x1f\x8b\x08\x08garbage\x93\xff", "binary content (not UTF-8 text at byte 1); not a results file"),
    "utf16": (FULL.encode("utf-16"), "UTF-16 text, not UTF-8; not a results file (re-save it as UTF-8)"),
    "truncated-half": (FULL[: len(FULL) // 2].encode(), None),
    "truncated-end": (FULL[:-1].encode(), None),
    "truncated-in-string": (FULL[: FULL.index('"m-fp32-b1"') + 4].encode(), None),
    "malformed": (FULL.replace('"rounds": 3,', '"rounds": 3,,', 1).encode(),
                  "not valid JSON (Expecting property name enclosed in double quotes at line {line} column 19)"),
    "text": (b"hello world", "not valid JSON (Expecting value at line 1 column 1)"),
    "nan": (FULL.replace('"rounds": 3,', '"rounds": NaN,', 1).encode(),
            "not valid JSON: it contains NaN, which JSON does not allow"),
    "huge-number": (FULL.replace('"rounds": 3,', '"rounds": 1e999,', 1).encode(),
                    "not valid JSON: the number 1e999 is too large for a float"),
    "array": (b"[1, 2, 3]", "the JSON is an array, not an object; not a pytest-llmeff/1.1 run file"),
    "string": (b'"pytest-llmeff/1"', "the JSON is a string, not an object; not a pytest-llmeff/1.1 run file"),
    "null": (b"null", "the JSON is null, not an object; not a pytest-llmeff/1.1 run file"),
    "no-schema": (b'{"benchmarks": []}', 'no "schema" field; not a pytest-llmeff/1.1 run file'),
    "other-schema": (_edited(schema="pytest-benchmark/4"),
                     "schema 'pytest-benchmark/4' is not supported; this version reads 'pytest-llmeff/1.1'"),
    "newer-schema": (_edited(schema="pytest-llmeff/2"),
                     "schema 'pytest-llmeff/2' is newer than this pytest-llmeff reads ('pytest-llmeff/1.1'); "
                     "upgrade pytest-llmeff to read it"),
    "missing-field": (_edited(machine=KeyError), "not a valid pytest-llmeff/1.1 run: machine: Field required"),
    "empty-samples": (_edited(benchmarks__0__metrics__ttft_s__samples=[]),
                      "not a valid pytest-llmeff/1.1 run: benchmarks.0.metrics.ttft_s.samples: List should have at "
                      "least 1 item after validation, not 0"),
    "many-problems": (_edited(machine=KeyError, started_at=5, surprise=1),
                      "not a valid pytest-llmeff/1.1 run: started_at: Input should be a valid string (and 2 more)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_read_run_gives_one_storage_error_line_naming_the_file(tmp_path, case):
    content, problem = BAD_CONTENT[case]
    path = tmp_path / f"{case}.json"
    path.write_bytes(content)
    with pytest.raises(StorageError) as info:
        read_run(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    got = message[len(f"{path}: "):]
    if problem is None:  # truncated: where it ends depends on the cut
        assert re.fullmatch(r"the JSON ends early at line \d+ \(truncated file\?\)", got), got
    else:
        line = FULL[: FULL.index('"rounds": 3,')].count("\n") + 1
        assert got == problem.format(line=line)
    assert (info.value.path, info.value.problem) == (path, got)
    # storage.load_run is the same reader: the same error, word for word
    with pytest.raises(StorageError) as again:
        load_run(path)
    assert str(again.value) == message


def test_read_run_missing_directory_and_unreadable(tmp_path, monkeypatch):
    with pytest.raises(StorageError) as info:
        read_run(tmp_path / "gone.json")
    assert str(info.value) == f"{tmp_path / 'gone.json'}: no such results file"
    with pytest.raises(StorageError) as info:
        read_run(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a results file"
    path = write_run(make_run(), tmp_path / "run.json")

    def fail(self):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", fail)
    with pytest.raises(StorageError) as info:
        read_run(path)
    assert str(info.value) == f"{path}: cannot be read (Input/output error)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a mode-000 file")
def test_read_run_permission_denied(tmp_path):
    path = write_run(make_run(), tmp_path / "run.json")
    path.chmod(0)
    try:
        with pytest.raises(StorageError) as info:
            read_run(path)
    finally:
        path.chmod(0o644)
    assert str(info.value) == f"{path}: cannot be read (Permission denied)"


def test_read_run_accepts_a_utf8_bom_and_a_good_file(tmp_path):
    run = make_run()
    assert read_run(write_run(run, tmp_path / "run.json")) == run
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + FULL.encode())
    assert read_run(tmp_path / "bom.json") == run


def test_a_path_with_a_newline_still_gives_one_line(tmp_path):
    path = tmp_path / "two\nlines.json"
    path.write_bytes(b"")
    with pytest.raises(StorageError) as info:
        read_run(path)
    assert "\n" not in str(info.value)
    assert str(info.value) == f"{ascii(str(path))}: the file is empty (0 bytes); not a results file"


def test_storage_load_run_has_no_reader_of_its_own(monkeypatch):
    """One reader: ``storage.load_run`` hands every path to ``runfile.read_run``."""
    seen = []

    def spy(path):
        seen.append(path)
        return runfile.read_run(path)

    monkeypatch.setattr(storage, "read_run", spy)
    with pytest.raises(StorageError):
        storage.load_run(Path("/nonexistent/x.json"))
    assert seen == [Path("/nonexistent/x.json")]


# ---- file modes -------------------------------------------------------------------------------------------------

@pytest.fixture
def umask():
    """Set the process umask for one test; the old one comes back after it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert files.current_umask() == mask
    assert files.current_umask() == mask  # reading it does not change it
    run_file = write_run(make_run(), tmp_path / "out" / "run.json")
    assert _mode(run_file) == expected
    store = Storage(tmp_path / "store")
    assert _mode(store.save(make_run(), "main")) == expected
    assert _mode(store.save(make_run(), "main")) == expected  # the replacing write too
    assert _mode(store.autosave(make_run())) == expected
    text_file = tmp_path / "report.md"
    files.atomic_write_text(text_file, "# report\n")
    assert _mode(text_file) == expected and text_file.read_text() == "# report\n"
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []


# ---- saving -----------------------------------------------------------------------------------------------------

def test_save_into_an_unusable_root_is_one_storage_error(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("a file where the storage root should be")
    target = root / machine_fingerprint(MACHINE) / "main.json"
    with pytest.raises(StorageError) as info:
        Storage(root).save(make_run(), "main")
    assert str(info.value) == f"{target}: cannot be written (Not a directory)"
    with pytest.raises(StorageError) as info:
        Storage(root).autosave(make_run())
    assert str(info.value) == f"{target.parent}: cannot be created (Not a directory)"


def test_named_save_replaces_atomically(tmp_path):
    store = Storage(tmp_path)
    first = store.save(make_run(samples=(1.0, 2.0)), "main")
    inode = first.stat().st_ino
    second = store.save(make_run(samples=(3.0, 4.0)), "main")
    assert second == first and first.stat().st_ino != inode  # a new file renamed over the old one
    assert store.load("main").benchmarks[0].metrics["ttft_s"].samples == [3.0, 4.0]
    assert [p.name for p in first.parent.iterdir()] == ["main.json"]


# ---- autosave counters ------------------------------------------------------------------------------------------

def test_autosave_writes_under_the_next_name_and_leaves_no_reservation(tmp_path):
    store = Storage(tmp_path)
    run = make_run()
    expected = store.autosave_name(run)
    path = store.autosave(run)
    assert path == tmp_path / machine_fingerprint(MACHINE) / f"{expected}.json"
    assert path.name == "0001_01234567_20260102T030405Z.json"
    assert store.load(path.stem) == run
    assert store.autosave(run).name.startswith("0002_")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "0001_01234567_20260102T030405Z.json", "0002_01234567_20260102T030405Z.json"]


def test_autosave_skips_reserved_counters(tmp_path):
    store = Storage(tmp_path)
    run = make_run()
    store.autosave(run)
    folder = tmp_path / machine_fingerprint(MACHINE)
    (folder / ".0002.reserved").touch()  # another session is writing 0002 (or crashed while doing so)
    assert store.autosave_name(run).startswith("0003_")
    assert store.autosave(run).name.startswith("0003_")
    assert store.autosave(run).name.startswith("0004_")
    assert [p.name[:4] for p in store.runs()] == ["0001", "0003", "0004"]  # reservations are never listed
    assert (folder / ".0002.reserved").exists()  # not ours to remove


def test_autosave_looks_again_after_reserving(tmp_path, monkeypatch):
    """A session that listed before another one finished may reserve a number whose run was just written (the
    other session dropped its reservation): it must take the next number, never replace that run."""
    store = Storage(tmp_path)
    run = make_run()
    written_by_the_other = store.autosave(make_run(commit="ffffffffffffffff"))
    stale = iter([1])
    real = Storage._next_counter
    monkeypatch.setattr(Storage, "_next_counter", lambda self, folder: next(stale, None) or real(self, folder))
    mine = store.autosave(run)
    assert mine.name == "0002_01234567_20260102T030405Z.json"
    assert store.load(written_by_the_other.stem).commit.id == "ffffffffffffffff"
    assert [p.name for p in mine.parent.iterdir() if p.name.startswith(".")] == []


def _autosave_in_process(root: str, barrier, index: int, times: int, out) -> None:
    run = make_run(commit=str(index) * 16)
    barrier.wait()
    names = [Storage(root).autosave(run).name for _ in range(times)]
    out.put(names)


def test_concurrent_autosave_processes_get_distinct_counters(tmp_path):
    processes, times = 8, 3
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_autosave_in_process, args=(str(tmp_path), barrier, i, times, out))
               for i in range(processes)]
    for w in workers:
        w.start()
    names = [name for _ in workers for name in out.get(timeout=60)]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    counters = sorted(int(n[:4]) for n in names)
    assert counters == list(range(1, processes * times + 1))  # all distinct, none lost, no gaps
    folder = tmp_path / machine_fingerprint(MACHINE)
    on_disk = sorted(p.name for p in folder.iterdir())
    assert on_disk == sorted(names)  # every run is there, and no reservation or temp file is left
    for i in range(processes):  # each session's runs are its own
        mine = [n for n in names if f"_{str(i) * 8}_" in n]
        assert len(mine) == times and all(Storage(tmp_path).load(n[:-5]).commit.id == str(i) * 16 for n in mine)


def test_concurrent_autosave_threads_get_distinct_counters(tmp_path):
    threads, barrier, names, lock = 8, threading.Barrier(8), [], threading.Lock()

    def work(index):
        run = make_run(commit=str(index) * 16)
        barrier.wait()
        for _ in range(3):
            name = Storage(tmp_path).autosave(run).name
            with lock:
                names.append(name)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert sorted(int(n[:4]) for n in names) == list(range(1, 25))
    assert len(list((tmp_path / machine_fingerprint(MACHINE)).iterdir())) == 24
