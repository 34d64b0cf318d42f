"""A session that runs one shard (``--llmeff-shard``): the costs run read at start, the collection cut down to
this shard's tests, the shard's description for the run file, and an empty shard that is not a failure.

The pytest-facing side of ``shard.py`` (which is pure). Raises only ``errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.errors import StorageError, UsageProblem
from pytest_llmeff.scale.shard import Entry, split


def load_costs(options, rootdir: Path):
    """The ``--llmeff-shard-costs`` run (a file path, or a stored name searched in every machine folder of the
    storage root, so every node finds the same one), or None. UsageProblem naming the option when unreadable."""
    if not options.shard_costs:
        return None
    from pytest_llmeff.results.storage import Storage, load_run

    root = options.storage if options.storage.is_absolute() else Path(rootdir) / options.storage
    try:
        path = Storage(root).resolve(options.shard_costs)
        return path, load_run(path)
    except StorageError as exc:
        raise UsageProblem(f"--llmeff-shard-costs={options.shard_costs}: {exc}") from None


def apply(state, items: list, variant_of: Callable, is_benchmark: Callable, deselect: Callable) -> None:
    """Keep this shard's tests in ``items`` (in place), hand the others to ``deselect``, and remember the split in
    ``state.shard_info`` (a ``results.ShardInfo``) for the run file."""
    from pytest_llmeff.results.schema import ShardInfo

    spec = state.options.shard
    previous, label = None, ""
    if state.shard_previous is not None:
        path, previous = state.shard_previous
        label = str(path)
    entries = [Entry(item.nodeid, variant_of(item), is_benchmark(item)) for item in items]
    result = split(spec, entries, previous, label)
    keep = set(result.keep)
    dropped = [i for i in items if i.nodeid not in keep]
    if dropped:
        deselect(dropped)
        items[:] = [i for i in items if i.nodeid in keep]
    state.shard_info = ShardInfo(index=spec.index, count=spec.count, source=spec.source, units=result.units,
                                 cost_method=result.method, estimated=result.estimated,
                                 shard_costs=[float(f"{c:.6g}") for c in result.loads],
                                 collection=result.collection, plan=result.plan)
    benchmarks = sum(1 for e in entries if e.benchmark and e.nodeid in keep)
    variants = len(result.units)
    others = sum(1 for e in entries if not e.benchmark)
    state.progress(
        f"shard {spec.label} ({spec.source}): {variants} of {len(result.shard_of)} variant(s), {benchmarks} "
        f"benchmark test(s)" + (f", {others} other test(s)" if spec.index == 0 and others else
                                (f"; the {others} other test(s) run in shard 0" if others else ""))
        + f"; costs {result.method.split(':')[0]}")


def info_payload(state) -> Optional[str]:
    """The shard description as JSON, once per process (an xdist worker hands it to the controller on its first
    report)."""
    info = getattr(state, "shard_info", None)
    if info is None or getattr(state, "shard_sent", False):
        return None
    state.shard_sent = True
    return info.model_dump_json()


def empty_shard_ok(state, exitstatus) -> bool:
    """True when pytest would exit 5 (no tests) only because this shard got no tests by design: a shard count
    above the number of variants must not fail its array task (the merge job depends on every task's success)."""
    return getattr(state, "shard_info", None) is not None and int(exitstatus) == 5
