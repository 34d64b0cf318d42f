"""``llmeff merge``: the run files of one sharded collection combined into one run, which reads, shows, compares
and gates like any other.

Refused, one line each (``MergeRefused``): the same shard twice or a benchmark in two runs (overlapping shards,
never forced); runs of different collections, splits, shard counts or commits (``--force`` lets these through
and the merged run lists what was forced). Missing shards are allowed and said: the merged run is then
``complete: false``, so it is never stored as a baseline over a complete run.

Where the shards ran on several machines (by ``storage.machine_fingerprint``), every record carries its own
``machine``; the run's ``machine`` is the first shard's either way.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

from pytest_llmeff.errors import MergeRefused, StorageError  # MergeRefused: defined in errors.py
from pytest_llmeff.results.runfile import read_run, shown_path
from pytest_llmeff.results.schema import MergedShard, MergeInfo, Run
from pytest_llmeff.results.storage import machine_fingerprint


def _seconds(start: str, end: str) -> float:
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return 0.0


def _label(run: Run) -> str:
    return f"shard {run.shard.index}/{run.shard.count}" if run.shard is not None else "an unsharded run"


def _refusals(named: list[tuple[str, Run]]) -> tuple[list[str], list[str]]:
    """(never allowed, allowed with --force) problems of merging ``named`` (file label, run) pairs."""
    hard, soft = [], []
    seen_index: dict[int, str] = {}
    for name, run in named:
        if run.shard is None:
            continue
        if run.shard.index in seen_index:
            hard.append(f"overlapping shards: {seen_index[run.shard.index]} and {name} are both {_label(run)}")
        seen_index.setdefault(run.shard.index, name)
    owner: dict[tuple[str, str], str] = {}
    for name, run in named:
        for record in run.benchmarks:
            key = (record.nodeid, record.name)
            if key in owner and owner[key] != name:
                hard.append(f"overlapping shards: {record.nodeid} is in both {owner[key]} and {name}")
                break
            owner[key] = name
    first_name, first = named[0]
    for name, run in named[1:]:
        a, b = first.shard, run.shard
        if a is not None and b is not None:
            if a.count != b.count:
                soft.append(f"{first_name} is {_label(first)} but {name} is {_label(run)}: different shard counts")
            elif a.collection != b.collection:
                soft.append(f"{first_name} and {name} ran different collections (collection digests "
                            f"{str(a.collection)[:12]} and {str(b.collection)[:12]}): other tests or -k/-m selections")
            elif a.plan != b.plan:
                soft.append(f"{first_name} and {name} split the collection differently (split digests "
                            f"{str(a.plan)[:12]} and {str(b.plan)[:12]}): different model files or "
                            "--llmeff-shard-costs on the nodes")
        elif (a is None) != (b is None):
            soft.append(f"{first_name} is {_label(first)} but {name} is {_label(run)}")
        ca, cb = first.commit, run.commit
        if (ca.id, ca.dirty) != (cb.id, cb.dirty):
            def said(c):
                return f"{(c.id or 'unknown')[:12]}{' (dirty)' if c.dirty else ''}"

            soft.append(f"{first_name} ran commit {said(ca)} but {name} ran {said(cb)}")
    return hard, soft


def merge_runs(paths: Sequence[Path], force: bool = False) -> tuple[Run, list[str]]:
    """The merged run of the run files ``paths`` and the lines to tell the user. Raises StorageError (a file
    that does not read) or MergeRefused."""
    if not paths:
        raise MergeRefused("no run files given; give the shard runs to merge")
    named = [(shown_path(p), read_run(Path(p))) for p in paths]
    named.sort(key=lambda item: (item[1].shard.index if item[1].shard is not None else -1, item[0]))
    hard, soft = _refusals(named)
    if hard:
        raise MergeRefused(hard[0])
    if soft and not force:
        raise MergeRefused(f"{soft[0]}; merge the runs of one sharded collection, or give --force")
    lines = [f"forced: {s}" for s in soft]
    first = named[0][1]
    fingerprints = {machine_fingerprint(run.machine.model_dump()) for _, run in named}
    several = len(fingerprints) > 1
    benchmarks, loads, shards, unfinished = [], [], [], []
    time_s: dict[str, float] = {}
    for name, run in named:
        index = run.shard.index if run.shard is not None else None
        for record in run.benchmarks:
            copy = record.model_copy(deep=True)
            if several and copy.machine is None:
                copy.machine = run.machine
            benchmarks.append(copy)
        for event in run.loads:
            loads.append(event.model_copy(update={"shard": index}))
        for phase, seconds in run.time_s.items():
            if phase != "session":
                time_s[phase] = time_s.get(phase, 0.0) + seconds
        unfinished += run.unfinished
        shards.append(MergedShard(file=name, index=index, count=run.shard.count if run.shard else None,
                                  hostname=run.machine.hostname,
                                  machine_fingerprint=machine_fingerprint(run.machine.model_dump()),
                                  started_at=run.started_at, finished_at=run.finished_at,
                                  benchmarks=len(run.benchmarks), commit=run.commit.id))
    counts = {run.shard.count for _, run in named if run.shard is not None}
    missing: list[int] = []
    if len(counts) == 1:
        have = {run.shard.index for _, run in named if run.shard is not None}
        missing = [i for i in range(counts.pop()) if i not in have]
    started = min(run.started_at for _, run in named)
    finished = max(run.finished_at for _, run in named)
    time_s["session"] = _seconds(started, finished)  # the merged run's wall time, first start to last end
    for _, run in named[1:]:
        changed = sorted(k for k in set(run.versions) | set(first.versions)
                         if run.versions.get(k) != first.versions.get(k))
        if changed:
            lines.append(f"note: the shards ran different versions of {', '.join(changed)} (the run keeps the "
                         "first shard's; each shard's file has its own)")
            break
    interrupted = any(run.interrupted for _, run in named)
    complete = all(run.complete for _, run in named) and not missing
    reason = None
    if not complete:
        reason = (f"shard(s) {', '.join(map(str, missing))} missing from the merge" if missing else
                  next((run.stop_reason for _, run in named if not run.complete and run.stop_reason),
                       "a shard did not finish"))
    merged = Run(started_at=started, finished_at=finished, machine=first.machine, versions=first.versions,
                 commit=first.commit, pytest_args=first.pytest_args, loads=loads, benchmarks=benchmarks,
                 interrupted=interrupted, complete=complete, stop_reason=reason,
                 unfinished=unfinished, time_s=time_s,
                 merged=MergeInfo(shards=shards, missing=missing, forced=soft, machines=len(fingerprints)))
    done = [str(s.index) for s in shards if s.index is not None]
    of = f" of {next(iter({s.count for s in shards if s.count}), '?')}" if done else ""
    lines.insert(0, f"merged {len(named)} run(s) (shard(s) {', '.join(done) or '-'}{of}): {len(benchmarks)} "
                    f"benchmark(s), {len(loads)} load(s), {len(fingerprints)} machine(s)")
    if missing:
        lines.append(f"WARNING shard(s) {', '.join(map(str, missing))} missing: the merged run is incomplete "
                     "(never stored as a baseline)")
    return merged, lines


def write_merged(paths: Sequence[str], output: str, force: bool) -> int:
    """``llmeff merge``: merge, write ``output`` atomically, print what was merged. Exit status 0; errors raise
    (the CLI prints them as one line, exit 2)."""
    from pytest_llmeff.results.runfile import write_run

    merged, lines = merge_runs([Path(p) for p in paths], force)
    target = Path(output).expanduser()
    if target.is_dir():
        raise MergeRefused(f"-o {output} is a directory; give a file path")
    try:
        write_run(merged, target)
    except OSError as exc:
        raise StorageError(f"{output}: cannot be written ({exc.strerror or exc})") from None
    for line in lines:
        print(line)
    print(f"written to {shown_path(target)}")
    return 0
