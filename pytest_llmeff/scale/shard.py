"""Splitting a collection into shards: whole variants (load keys) per shard, balanced by estimated cost with the
greedy longest-processing-time rule (Graham 1969: largest unit first, onto the least loaded shard; within 4/3 of
the best split). Pure apart from reading model files' headers: no torch, no pytest.

The unit is a load key (``Variant.load_key``): every test of a variant, whatever its batch size, lands in one
shard, so a variant loads once per shard. Tests without a variant (not benchmarks) all go to shard 0.

Cost of one benchmark test, in this order:
1. measured: the ``time_s.total`` seconds of its records in a previous run given with ``--llmeff-shard-costs``
   (tests that run did not have are estimated and scaled to seconds by the ratio measured / estimated of the
   tests it did have);
2. estimated: parameters x batch size x new tokens per sequence (the dense work of one generate call). The
   parameter count is read before loading: the safetensors headers of a local model directory or of the hub
   cache snapshot; the tensor shapes of a GGUF file (its size in bytes x 2, as 4-bit weights, when the ``gguf``
   reader is missing); the nominal size of a built-in alias. A model whose count cannot be read counts as the
   median of those that could (1 when none could).

Every shard must compute the same split: the split depends only on the collection, the model files and the
costs file, never on the time a shard starts. ``plan_digest`` fingerprints the split so ``llmeff merge`` can
refuse shards that split differently.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from pytest_llmeff.engines.sources.memory_fit import gguf_params, safetensors_tensors
from pytest_llmeff.config.shard_spec import ShardSpec
from pytest_llmeff.config.variants import Variant

# nominal parameter counts of the built-in aliases (the same on every node, built or not)
ALIAS_PARAMS = {"smollm2-135m": 134_515_008, "tiny-random-llama": 186_000}
ESTIMATE_METHOD = "estimated: parameters x batch size x new tokens (no previous run given)"


@dataclass(frozen=True)
class Entry:
    """One collected test as the splitter sees it: node id, its variant (None when it has none) and whether it
    is a benchmark test (a benchmark without a variant is a unit of its own)."""

    nodeid: str
    variant: Optional[Variant]
    benchmark: bool


@dataclass
class Unit:
    """Tests that must run in one shard: ``key`` (a load key, or a node id), their node ids, ``cost`` (seconds
    when measured, else parameter-tokens; only ratios matter)."""

    key: str
    nodeids: list[str] = field(default_factory=list)
    cost: float = 0.0


@dataclass
class Split:
    """The result: ``keep`` (node ids of this shard), ``shard_of`` (unit key -> shard), ``loads`` (cost per
    shard), ``method`` (how costs were got), ``estimated`` (False only when every unit cost was measured),
    ``collection`` and ``plan`` (sha256 digests of the whole collection and of the split)."""

    spec: ShardSpec
    keep: list[str]
    units: list[str]
    shard_of: dict[str, int]
    loads: list[float]
    method: str
    estimated: bool
    collection: str
    plan: str


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def collection_digest(nodeids: Iterable[str]) -> str:
    """sha256 of the sorted node ids: two shards of one collection agree, whatever their order."""
    return _digest(sorted(nodeids))


def plan_digest(shard_of: dict[str, int], count: int) -> str:
    return _digest([f"count={count}"] + [f"{shard}\t{key}" for key, shard in sorted(shard_of.items())])


def lpt(units: Sequence[Unit], count: int) -> dict[str, int]:
    """Greedy longest-processing-time: units by cost descending (ties by key), each onto the shard with the least
    cost so far (ties: the lowest index). Deterministic."""
    loads = [0.0] * count
    shard_of: dict[str, int] = {}
    for unit in sorted(units, key=lambda u: (-u.cost, u.key)):
        target = min(range(count), key=lambda i: (loads[i], i))
        shard_of[unit.key] = target
        loads[target] += unit.cost
    return shard_of


def _safetensors_params(directory: Path) -> Optional[int]:
    tensors = safetensors_tensors(directory)
    return sum(count for _, _, count, _ in tensors) if tensors else None


def _hub_snapshot(repo_id: str, revision: Optional[str]) -> Optional[Path]:
    """The local hub cache snapshot of ``repo_id`` without importing huggingface_hub (None when absent)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                  os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"),
        "hub")
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    ref = revision or "main"
    ref_file = repo / "refs" / ref
    try:
        commit = ref_file.read_text().strip() if ref_file.is_file() else ref
    except OSError:
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def parameter_count(variant: Variant) -> tuple[Optional[int], str]:
    """(parameters, how) of the variant's model, read without loading it; (None, why) when it cannot be."""
    model = variant.model
    if model in ALIAS_PARAMS:
        return ALIAS_PARAMS[model], "nominal size of the built-in alias"
    path = Path(os.path.expanduser(model))
    if path.suffix == ".gguf" and path.is_file():
        params = gguf_params(path)
        if params:
            return params, "GGUF tensor shapes"
        return path.stat().st_size * 2, "GGUF file size x 2 (as 4-bit weights)"
    if path.is_dir():
        params = _safetensors_params(path)
        return (params, "safetensors headers") if params else (None, "no safetensors headers in the directory")
    snapshot = _hub_snapshot(model, variant.revision) if "/" in model else None
    if snapshot is not None:
        params = _safetensors_params(snapshot)
        if params:
            return params, "safetensors headers of the hub cache"
    return None, "model files not found before loading"


def estimates(entries: Sequence[Entry]) -> dict[str, float]:
    """Estimated cost per benchmark node id: parameters x batch x new tokens."""
    counts: dict[str, Optional[int]] = {}
    for e in entries:
        if e.variant is not None and e.variant.model not in counts:
            counts[e.variant.model] = parameter_count(e.variant)[0]
    known = [c for c in counts.values() if c]
    fallback = statistics.median(known) if known else 1.0
    out = {}
    for e in entries:
        if not e.benchmark:
            continue
        if e.variant is None:
            out[e.nodeid] = fallback
        else:
            params = counts.get(e.variant.model) or fallback
            out[e.nodeid] = float(params) * e.variant.batch_size * e.variant.max_new_tokens
    return out


def _measured(previous) -> dict[str, float]:
    """Seconds per node id in a previous ``Run`` (its records' ``time_s.total``, summed per test)."""
    seconds: dict[str, float] = {}
    for record in getattr(previous, "benchmarks", None) or []:
        total = record.time_s.get("total")
        if total is not None and total > 0:
            seconds[record.nodeid] = seconds.get(record.nodeid, 0.0) + total
    return seconds


def split(spec: ShardSpec, entries: Sequence[Entry], previous=None, previous_label: str = "") -> Split:
    """Split ``entries`` (the collection, in order) into ``spec.count`` shards and return this shard's part.

    ``previous``: a ``results.Run`` whose measured times are the costs (see the module doc)."""
    estimated_cost = estimates(entries)
    measured = _measured(previous) if previous is not None else {}
    hits = [n for n in estimated_cost if n in measured]
    if hits:
        scale = sum(measured[n] for n in hits) / max(sum(estimated_cost[n] for n in hits), 1e-300)
        costs = {n: measured.get(n, estimated_cost[n] * scale) for n in estimated_cost}
        missing = len(estimated_cost) - len(hits)
        method = (f"measured: time_s.total of {len(hits)} test(s) in {previous_label}"
                  + (f"; {missing} other(s) estimated (parameters x batch x tokens, scaled)" if missing else ""))
        estimated = bool(missing)
    else:
        costs, estimated = estimated_cost, True
        method = ESTIMATE_METHOD if previous is None else (
            f"estimated: parameters x batch size x new tokens ({previous_label} has none of these tests)")
    units: dict[str, Unit] = {}
    for e in entries:
        if not e.benchmark:
            continue
        key = e.variant.load_key if e.variant is not None else e.nodeid
        unit = units.setdefault(key, Unit(key))
        unit.nodeids.append(e.nodeid)
        unit.cost += costs[e.nodeid]
    shard_of = lpt(list(units.values()), spec.count)
    loads = [0.0] * spec.count
    for unit in units.values():
        loads[shard_of[unit.key]] += unit.cost
    mine = {key for key, shard in shard_of.items() if shard == spec.index}
    keep = []
    for e in entries:
        if not e.benchmark:
            if spec.index == 0:
                keep.append(e.nodeid)
        elif (e.variant.load_key if e.variant is not None else e.nodeid) in mine:
            keep.append(e.nodeid)
    return Split(spec=spec, keep=keep, units=sorted(mine), shard_of=shard_of, loads=loads, method=method,
                 estimated=estimated, collection=collection_digest(e.nodeid for e in entries),
                 plan=plan_digest(shard_of, spec.count))
