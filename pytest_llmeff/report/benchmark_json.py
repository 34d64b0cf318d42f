"""Export a run in pytest-benchmark's JSON format, for the tools that read it.

Readers: ``pytest-benchmark compare FILE`` (its ``FileStorage`` loader and table), github-action-benchmark with
``tool: 'pytest'`` (reads ``fullname``, ``stats.ops``, ``stats.mean``, ``stats.stddev``, ``stats.rounds``) and
Bencher's pytest adapter. The layout is pytest-benchmark's ``--benchmark-json`` layout:

    {"machine_info": {...}, "commit_info": {...}, "benchmarks": [ENTRY, ...], "datetime": ISO, "version": V}

One ENTRY per llmeff benchmark that has ``latency_s`` samples:

- ``stats``: pytest-benchmark's own ``Stats`` over the per-round generate latencies (``latency_s``, seconds; one
  generate() of the whole batch is one round, ``iterations`` is 1), its raw ``data`` included. So ``ops`` is
  batched generate() calls per second, not tokens per second: ``throughput_tok_s`` is in ``extra_info``.
- ``name``: the record's name; ``fullname``: its nodeid (with ``::<name>`` when ``llm_benchmark(name=...)``
  gave a custom name). A custom name gets ``[<variant id>]`` appended, so that one test's variants stay apart;
  names or fullnames that still repeat in the file get `` #2``, `` #3``, ... (github-action-benchmark keys its
  history by ``fullname``).
- ``group``; ``param``: the test id in brackets (else the variant id); ``params``: the test's parametrize params
  plus the variant fields ``model``, ``precision``, ``quantization``, ``batch_size``, ``max_new_tokens`` (so that
  ``--group-by=param:precision`` works); ``options``: rounds, warm-up and timer of the llmeff protocol.
- ``extra_info``: the median of every other metric, under the metric's name (names carry units:
  ``throughput_tok_s``, ``ttft_s``, ``tpot_s``, ``peak_mem_bytes``, ``energy_j_per_tok``, ``token_agreement``,
  ...), plus ``llmeff_variant``, ``llmeff_outcome``, ``tokens_generated`` and the energy provenance.

Non-finite numbers are written as null (JavaScript readers reject ``NaN``/``Infinity``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.results.schema import BenchmarkRecord, Run

TIMED_METRIC = "latency_s"
TIMER_NAME = "time.perf_counter"


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None, recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _stats(samples_s: list[float]) -> dict[str, Any]:
    """pytest-benchmark's statistics of per-round durations in seconds, with the raw data, one iteration a round."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for duration_s in samples_s:
        stats.update(float(duration_s))
    out = stats.as_dict()
    out["data"] = list(stats.data)
    out["iterations"] = 1
    return out


def _param(record: BenchmarkRecord) -> str:
    """The test id in brackets (``test[smollm2-135m-fp32-b1]`` gives ``smollm2-135m-fp32-b1``)."""
    test_name = record.nodeid.rsplit("::", 1)[-1]
    if "[" in test_name and test_name.endswith("]"):
        return test_name.split("[", 1)[1][:-1]
    return record.variant.id


def _params(record: BenchmarkRecord) -> dict[str, Any]:
    params: dict[str, Any] = dict(record.params)
    v = record.variant
    for key, value in (("model", v.model), ("precision", v.precision), ("quantization", v.quantization),
                       ("batch_size", v.batch_size), ("max_new_tokens", v.max_new_tokens)):
        params.setdefault(key, value)  # a test's own parametrize param of the same name wins
    return params


def _extra_info(record: BenchmarkRecord) -> dict[str, Any]:
    info: dict[str, Any] = {name: metric.median for name, metric in record.metrics.items() if name != TIMED_METRIC}
    info["llmeff_variant"] = record.variant.id
    info["llmeff_outcome"] = record.outcome
    info["tokens_generated"] = record.tokens_generated
    info["prompt_tokens"] = record.prompt_tokens
    if record.energy is not None:
        info["energy_method"] = record.energy.method
        info["energy_estimated"] = record.energy.estimated
    return info


def _base_names(record: BenchmarkRecord) -> tuple[str, str]:
    """(name, fullname) before de-duplication."""
    test_name = record.nodeid.rsplit("::", 1)[-1]
    if record.name == test_name:
        return record.name, record.nodeid
    # a custom llm_benchmark(name=...): keep the test in fullname and the variant in name
    name = record.name if record.variant.id in record.name else f"{record.name}[{record.variant.id}]"
    return name, f"{record.nodeid}::{record.name}"


def _entry(record: BenchmarkRecord, name: str, fullname: str) -> dict[str, Any]:
    return {
        "group": record.group,
        "name": name,
        "fullname": fullname,
        "params": _params(record),
        "param": _param(record),
        "extra_info": _extra_info(record),
        "options": {"min_rounds": record.rounds, "warmup": record.warmup > 0, "warmup_iterations": record.warmup,
                    "timer": TIMER_NAME, "disable_gc": False},
        "stats": _stats(record.metrics[TIMED_METRIC].samples),
    }


def _machine_info(run: Run) -> dict[str, Any]:
    """The run's machine info, with the keys pytest-benchmark writes where the run knows them."""
    machine = run.machine.model_dump()
    cpu_name = machine.pop("cpu")
    info: dict[str, Any] = {
        "node": machine.get("hostname"),
        "processor": cpu_name,
        "python_version": machine.get("python"),
        "system": machine.get("os"),
        "cpu": {"brand_raw": cpu_name, "count": machine.get("cores_logical")},
    }
    for key, value in machine.items():
        info.setdefault(key, value)
    return info


def _commit_info(run: Run) -> dict[str, Any]:
    commit = run.commit.model_dump()
    return {"id": commit.pop("id", None) or "unversioned", "dirty": bool(commit.pop("dirty", False)),
            "branch": commit.pop("branch", None) or "(unknown)", **commit}


def to_pytest_benchmark(run: Run) -> dict[str, Any]:
    """The run as a pytest-benchmark JSON document (a dict ready for ``json.dumps``; see the module docstring)."""
    try:
        from pytest_benchmark import __version__ as pb_version
    except ImportError:  # the format is pytest-benchmark 5's
        pb_version = "5"
    entries = []
    seen_names: set[str] = set()
    seen_fullnames: set[str] = set()
    for record in run.benchmarks:
        metric = record.metrics.get(TIMED_METRIC)
        if metric is None or not metric.samples:
            continue
        base_name, base_fullname = _base_names(record)
        name, fullname, k = base_name, base_fullname, 1
        while name in seen_names or fullname in seen_fullnames:
            k += 1
            name, fullname = f"{base_name} #{k}", f"{base_fullname} #{k}"
        seen_names.add(name)
        seen_fullnames.add(fullname)
        entries.append(_entry(record, name, fullname))
    document = {
        "machine_info": _machine_info(run),
        "commit_info": _commit_info(run),
        "benchmarks": entries,
        "datetime": run.finished_at,
        "version": pb_version,
    }
    return _finite(document)


def render_pytest_benchmark_json(run: Run) -> str:
    """``to_pytest_benchmark(run)`` as the text of a file (4-space indent, ASCII, newline at the end)."""
    return json.dumps(to_pytest_benchmark(run), indent=4, allow_nan=False, ensure_ascii=True, default=str) + "\n"


def write_pytest_benchmark_json(path: Path, run: Run) -> Path:
    """Write ``to_pytest_benchmark(run)`` to ``path`` atomically (parents created) and return the path."""
    path = Path(path)
    atomic_write_text(path, render_pytest_benchmark_json(run))
    return path
