"""The result records: the pydantic models of a run file, and nothing else.

Schema ``pytest-llmeff/1.1`` (1.1 added intervals, percentile reasons, the stop rule, the time breakdown and the
per-round CPU contention; every 1.1 field is optional, so ``pytest-llmeff/1`` files still read). Every number here is a measurement or is labelled an estimate.
The JSON Schema shipped in ``pytest_llmeff/schema/run-1.schema.json`` is generated from ``Run``; reading,
writing and that shipped schema live in ``results/runfile.py``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from pytest_llmeff.config.engine_catalog import DEFAULT_ENGINE
from pytest_llmeff.metrics import spec_for
from pytest_llmeff.stats import intervals as stats

SCHEMA_ID = "pytest-llmeff/1.1"
READABLE_SCHEMAS = ("pytest-llmeff/1", "pytest-llmeff/1.1")


class Metric(BaseModel):
    """One metric of one benchmark: its raw samples (one per timed round, one per generated token for
    ``itl_s``, or one for a once-per-variant figure such as ``load_s``) and their summary statistics, all in
    ``unit``.

    ``stdev`` is the sample standard deviation (n-1), 0.0 when n == 1. ``mean`` of a rate (unit ending ``/s``) is
    total work / total time (the harmonic mean of the per-round rates). ``ci_low``/``ci_high``: the distribution-
    free ``ci_level`` interval of the median (``stats.median_ci``), None with fewer than 6 samples; ``ci_rel``: its
    larger half-width as a fraction of the median. ``p90`` needs n >= 10 and ``p99`` n >= 100; otherwise they are
    None and ``percentile_note`` says why.
    """

    model_config = ConfigDict(extra="forbid")

    unit: str
    direction: Literal["higher", "lower", "none"]
    samples: list[float] = Field(min_length=1)
    n: int
    mean: float
    median: float
    stdev: float
    min: float
    max: float
    p90: Optional[float] = None
    p99: Optional[float] = None
    percentile_note: Optional[str] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    ci_level: Optional[float] = None
    ci_rel: Optional[float] = None

    @classmethod
    def from_samples(cls, name: str, samples: list[float]) -> "Metric":
        """Summarise ``samples`` for the declared metric ``name`` (unit and direction come from the table)."""
        if not samples:
            raise ValueError(f"metric {name!r} has no samples")
        import statistics as st

        spec = spec_for(name)
        values = [float(v) for v in samples]
        median = st.median(values)
        sampled = spec.sampling != "once"  # a once-per-variant figure has no distribution to summarise
        p90, why90 = stats.percentile(values, 0.90) if sampled else (None, None)
        p99, why99 = stats.percentile(values, 0.99) if sampled else (None, None)
        ci = stats.median_ci(values) if sampled else None
        return cls(
            unit=spec.unit,
            direction=spec.direction,
            samples=values,
            n=len(values),
            mean=stats.mean(values, spec.unit),
            median=median,
            stdev=st.stdev(values) if len(values) > 1 else 0.0,
            min=min(values),
            max=max(values),
            p90=p90,
            p99=p99,
            percentile_note="; ".join(w for w in (why90, why99) if w) or None,
            ci_low=ci[0] if ci else None,
            ci_high=ci[1] if ci else None,
            ci_level=stats.CONFIDENCE if ci else None,
            ci_rel=stats.relative_half_width(median, ci),
        )

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


class EnergyInfo(BaseModel):
    """How the energy figures were obtained.

    method: backend and mode, e.g. ``codecarbon:cpu_load+ram_constant``.
    estimated: True when no physical meter was read (a model of power, not a measurement).
    country_iso_code: grid whose carbon intensity gave ``co2_g``.
    devices: joules per device over all timed rounds; None for a device that could not be read.
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    estimated: bool
    country_iso_code: Optional[str] = None
    devices: dict[str, Optional[float]] = Field(default_factory=dict)
    note: Optional[str] = None


class VariantRecord(BaseModel):
    """Every field of the variant that was measured."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    model_source: str
    resolved_path: Optional[str] = None
    precision: str
    quantization: Optional[str] = None
    quantization_config: Optional[dict[str, Any]] = None
    reference: Optional[str] = None
    batch_size: int
    max_new_tokens: int
    device: str
    device_map: Optional[str] = None
    prompts: int
    trust_remote_code: bool = False
    engine: str = DEFAULT_ENGINE  # the inference engine (config/engine_catalog.py ENGINES)
    engine_type: Optional[str] = None  # the weights' type as the engine ran them: q4_1, int8_float32, fp32, int4


def _finite(value: Optional[float]) -> Optional[float]:
    """``value`` when it is a finite number; None otherwise (JSON has no inf/nan)."""
    return value if value is not None and math.isfinite(value) else None


class VerdictRecord(BaseModel):
    """One metric compared with the baseline (see gate.py): status ok | improved | near-miss | regressed |
    inconclusive | not-measured (a gated metric one side did not measure); medians in the metric's unit;
    change = (current - baseline) / baseline of the medians, or for paired (lockstep) rounds the median per-pair
    ratio - 1; p_value of the one-sided ``test`` (Mann-Whitney U on two runs, Wilcoxon signed-rank on paired
    rounds, or none for a figure measured once per variant, judged directly).

    The run's false-alarm budget (optional, schema 1.1): ``alpha`` the per-comparison level the p-value was held
    against, ``alpha_run`` the chance of any false regression in the whole run (``--llmeff-alpha``),
    ``comparisons`` the m it was split over, ``correction`` the words for it.

    What the comparison could resolve (optional, schema 1.1): ``mde`` the minimum detectable effect, the smallest
    worsening (a fraction: 0.12 = 12% worse) caught with 90% probability at ``alpha`` (None: unknown, e.g. one
    stored session); ``history_runs`` how many stored sessions the verdict was judged against (stored-baseline
    gate; the test is then the prediction test over their medians when >= 2, see drift.py); ``spread_rel`` the
    spread between those sessions' medians, as a fraction."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    status: Literal["ok", "improved", "near-miss", "regressed", "inconclusive", "not-measured"]
    baseline_median: Optional[float] = None
    current_median: Optional[float] = None
    change: Optional[float] = None
    p_value: Optional[float] = None
    threshold: str
    message: str
    test: Optional[str] = None
    alpha: Optional[float] = None
    alpha_run: Optional[float] = None
    comparisons: Optional[int] = None
    correction: Optional[str] = None
    mde: Optional[float] = None
    history_runs: Optional[int] = None
    spread_rel: Optional[float] = None

    @classmethod
    def from_verdict(cls, verdict) -> "VerdictRecord":
        """From a ``gate.Verdict``; an infinite change (baseline median 0) is stored as None (JSON has no inf)."""
        change = verdict.change
        if change is not None and (change != change or abs(change) == float("inf")):
            change = None
        return cls(metric=verdict.metric, status=verdict.status, baseline_median=verdict.baseline_median,
                   current_median=verdict.current_median, change=change, p_value=verdict.p_value,
                   threshold=verdict.threshold, message=verdict.message, test=verdict.test or None,
                   mde=_finite(verdict.mde), history_runs=verdict.history_runs or None,
                   spread_rel=_finite(verdict.spread_rel))


class LimitRecord(BaseModel):
    """An absolute limit from the marker checked on this run's median."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    limit: str
    median: Optional[float] = None
    passed: bool
    message: str


class StopInfo(BaseModel):
    """Why the timed rounds of a benchmark stopped.

    reason: ``target_ci`` (every precision metric's 95% median interval within ``target_ci_rel`` of its median),
    ``max_time`` (the timed rounds reached ``max_time_s``), ``max_rounds``, ``fixed_rounds`` (an explicit
    ``rounds=``), or ``paired_ci`` (lockstep A/B: the 95% interval of each paired metric's median per-pair log
    ratio within ``paired_target_rel``; ``paired_achieved_rel`` what each reached, about a relative half-width of
    the ratio candidate/baseline). ``achieved_ci_rel``: each precision metric's relative half-width when it
    stopped (None without an interval).
    """

    model_config = ConfigDict(extra="forbid")

    reason: Literal["target_ci", "max_time", "max_rounds", "fixed_rounds", "paired_ci"]
    rounds: int
    timed_s: float
    target_ci_rel: Optional[float] = None
    max_time_s: Optional[float] = None
    min_rounds: Optional[int] = None
    max_rounds: Optional[int] = None
    precision_metrics: list[str] = Field(default_factory=list)
    achieved_ci_rel: dict[str, Optional[float]] = Field(default_factory=dict)
    paired_target_rel: Optional[float] = None
    paired_achieved_rel: dict[str, Optional[float]] = Field(default_factory=dict)


class RoundContention(BaseModel):
    """What else used the CPU during one timed round (from ``/proc``).

    load_avg_1m: the 1-minute load average at the round's end; other_cpu_s: CPU seconds the rest of the machine
    (every process but this one) used during the round; steal_s: CPU seconds the hypervisor took; competed: True
    when the other processes' CPU or the steal exceeded the threshold of ``measure/contention.py``.
    """

    model_config = ConfigDict(extra="forbid")

    round: int
    load_avg_1m: Optional[float] = None
    other_cpu_s: Optional[float] = None
    steal_s: Optional[float] = None
    competed: bool = False


class BenchmarkRecord(BaseModel):
    """One benchmark: one ``llm_benchmark()`` call of one test variant."""

    model_config = ConfigDict(extra="forbid")

    nodeid: str
    name: str
    group: Optional[str] = None
    variant: VariantRecord
    params: dict[str, str] = Field(default_factory=dict)
    rounds: int
    warmup: int
    metrics: dict[str, Metric]
    energy: Optional[EnergyInfo] = None
    tokens_generated: int
    prompt_tokens: int
    outcome: Literal["passed", "failed", "error", "skipped", "unknown"] = "unknown"
    warnings: list[str] = Field(default_factory=list)
    verdicts: list[VerdictRecord] = Field(default_factory=list)
    limits: list[LimitRecord] = Field(default_factory=list)
    extra_info: dict[str, Any] = Field(default_factory=dict)
    stop: Optional[StopInfo] = None  # why the timed rounds stopped (schema 1.1)
    time_s: dict[str, float] = Field(default_factory=dict)  # where the benchmark's time went, seconds per phase
    contention: list[RoundContention] = Field(default_factory=list)  # other CPU work during each timed round
    interleaved: bool = False  # every timed round alternated with a lockstep partner's (--llmeff-interleave)
    machine: Optional["MachineInfo"] = None  # where it ran, when a merged run's shards ran on several machines
    rank: Optional[int] = None  # the rank that measured it, under torchrun / accelerate launch
    # outlier rounds per per-round metric (0-based), robust modified z-score > 3.5 (analysis.outlier_rounds);
    # None in files written before it was stored (schema 1.1, optional)
    outliers: Optional[dict[str, list[int]]] = None

    @property
    def gate_failed(self) -> bool:
        """True when a metric regressed against the baseline or a marker limit failed."""
        return any(v.status == "regressed" for v in self.verdicts) or any(not lim.passed for lim in self.limits)

    @property
    def gate_inconclusive(self) -> bool:
        """True when a gated metric's comparison could not resolve its threshold (``inconclusive``)."""
        return any(v.status == "inconclusive" for v in self.verdicts)


class LoadEvent(BaseModel):
    """One model load in the session (each variant load key should appear once)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    load_s: float
    converted_s: Optional[float] = None
    worker: Optional[str] = None  # pytest-xdist worker id; None in a plain session
    shard: Optional[int] = None  # the shard index of the run it came from (a merged run)
    ok: bool = True
    error: Optional[str] = None
    threads: Optional[int] = None  # the thread count the variant computed with (--llmeff-threads, else torch's)


class CommitInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: Optional[str] = None
    dirty: Optional[bool] = None
    branch: Optional[str] = None


class MachineInfo(BaseModel):
    """Where the run happened. Hooks may add fields (extra is allowed)."""

    model_config = ConfigDict(extra="allow")

    cpu: str
    cores_logical: Optional[int] = None
    ram_bytes: Optional[int] = None
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    os: str
    python: str
    hostname: Optional[str] = None


BenchmarkRecord.model_rebuild()  # its ``machine`` field names MachineInfo, defined above


class RankAggregate(BaseModel):
    """One benchmark over the ranks of a launch: ``throughput_tok_s_sum`` the sum of the ranks' median
    throughputs (tok/s; data-parallel replicas started together; None under tensor parallelism, where the ranks
    generate the same tokens together), ``throughput_tok_s_group`` under tensor parallelism the group's throughput
    (tok/s: the slowest rank's median, since the group is done when its last rank is), ``latency_s_slowest`` the
    largest median latency (s), ``energy_j_sum`` the summed median energy (J) of the ``energy_ranks`` ranks that
    read a meter (one per physical device)."""

    model_config = ConfigDict(extra="forbid")

    nodeid: str
    name: str
    ranks: list[int] = Field(default_factory=list)
    throughput_tok_s_sum: Optional[float] = None
    throughput_tok_s_group: Optional[float] = None
    latency_s_slowest: Optional[float] = None
    energy_j_sum: Optional[float] = None
    energy_ranks: int = 0


class DistributedInfo(BaseModel):
    """A run of several ranks (torchrun, accelerate launch; schema 1.1, optional): the launcher, the world size,
    ``parallel`` (``replicas``: each rank its own model copy and batch; ``tensor``: one model split over the ranks
    by transformers' tensor-parallel plan), the backend(s) of the process group, each rank's host, and the
    per-benchmark aggregate."""

    model_config = ConfigDict(extra="forbid")

    launcher: str
    world_size: int
    parallel: str = "replicas"
    backend: str = "gloo"
    hosts: list[str] = Field(default_factory=list)
    aggregate: list[RankAggregate] = Field(default_factory=list)


class ShardInfo(BaseModel):
    """The shard a run was (``--llmeff-shard``, schema 1.1, optional): ``index`` of ``count`` (0-based),
    ``source`` (the option or the environment variables read), ``units`` (the load keys this shard ran),
    ``cost_method`` and ``estimated`` (how the split's costs were got), ``shard_costs`` (the cost of each shard
    in the split: seconds when measured, else parameter x token units, ratios only), ``collection`` and
    ``plan`` (sha256 of the whole collection's node ids and of the split: shards of one split agree on both)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    source: str = "--llmeff-shard"
    units: list[str] = Field(default_factory=list)
    cost_method: Optional[str] = None
    estimated: bool = True
    shard_costs: list[float] = Field(default_factory=list)
    collection: Optional[str] = None
    plan: Optional[str] = None


class MergedShard(BaseModel):
    """One shard run inside a merged run: its file, shard, machine (hostname and fingerprint), times and
    number of benchmarks."""

    model_config = ConfigDict(extra="forbid")

    file: str
    index: Optional[int] = None
    count: Optional[int] = None
    hostname: Optional[str] = None
    machine_fingerprint: Optional[str] = None
    started_at: str
    finished_at: str
    benchmarks: int = 0
    commit: Optional[str] = None


class MergeInfo(BaseModel):
    """How a run was merged (``llmeff merge``, schema 1.1, optional): the shard runs, the shard indices that
    were missing, what ``--force`` let through, and whether the shards ran on several machines (then every
    record carries its own ``machine``)."""

    model_config = ConfigDict(extra="forbid")

    shards: list[MergedShard] = Field(default_factory=list)
    missing: list[int] = Field(default_factory=list)
    forced: list[str] = Field(default_factory=list)
    machines: int = 1


class Run(BaseModel):
    """A whole pytest session's results."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_id: Literal["pytest-llmeff/1", "pytest-llmeff/1.1"] = Field(SCHEMA_ID, alias="schema")
    started_at: str
    finished_at: str
    machine: MachineInfo
    versions: dict[str, Optional[str]]
    commit: CommitInfo
    pytest_args: list[str] = Field(default_factory=list)
    baseline: Optional[str] = None
    interleave: Optional[dict[str, Any]] = None  # lockstep A/B: dir, role, turns passed, why it went on alone
    loads: list[LoadEvent] = Field(default_factory=list)
    benchmarks: list[BenchmarkRecord] = Field(default_factory=list)
    # how the session ended: a run that did not finish every benchmark test it collected is never stored as a
    # baseline over a complete one (see report/outputs.py)
    interrupted: bool = False  # Ctrl-C or SIGTERM ended the session
    complete: bool = True  # every collected benchmark test ran to its end
    stop_reason: Optional[str] = None  # why it ended early, e.g. "interrupted (SIGTERM)", "stopped early (-x)"
    unfinished: list[str] = Field(default_factory=list)  # node ids of benchmark tests that did not run to the end
    time_s: dict[str, float] = Field(default_factory=dict)  # the benchmarks' time per phase, summed, and "total"
    shard: Optional[ShardInfo] = None  # this run is one shard of a split collection (--llmeff-shard)
    merged: Optional[MergeInfo] = None  # this run was merged from shard runs (llmeff merge)
    distributed: Optional[DistributedInfo] = None  # the ranks of torchrun / accelerate launch, gathered by rank 0

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
