"""The state of one pytest session under pytest-llmeff: what the hooks and fixtures share. State only: the
work is done by the rooms it points to (``bench``, ``record``, ``baseline``, ``report.outputs``).

Records travel on test reports (``report.llmeff_records``), so the same code gathers them in a plain session
and on the pytest-xdist controller.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from pytest_llmeff.gate.baseline import Baseline
from pytest_llmeff.config.options import LlmeffConfig
from pytest_llmeff.measure.meter_set import MeterSet

if TYPE_CHECKING:  # pydantic models load only when a benchmark is recorded
    from pytest_llmeff.lockstep.ab import AbRun
    from pytest_llmeff.engines.cache import ModelCache
    from pytest_llmeff.events import EventLog
    from pytest_llmeff.lockstep.turnstile import Turnstile
    from pytest_llmeff.report.outputs import Outputs
    from pytest_llmeff.results.schema import BenchmarkRecord, LoadEvent


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Ending:
    """How the session ended, for the run file: ``interrupted`` by Ctrl-C or SIGTERM (``reason`` says which);
    ``expected``: node ids of the benchmark tests collected (None where this process did not collect, as on the
    pytest-xdist controller); ``finished``: node ids of benchmark tests that ran to their teardown."""

    interrupted: bool = False
    reason: Optional[str] = None
    expected: Optional[list[str]] = None
    finished: set[str] = field(default_factory=set)

    @property
    def unfinished(self) -> list[str]:
        return [n for n in self.expected or [] if n not in self.finished]

    @property
    def complete(self) -> bool:
        return not self.interrupted and not self.unfinished


@dataclass
class LlmeffSession:
    """Everything one session shares between its hooks and fixtures.

    options: the resolved ``--llmeff-*`` options. progress: writes one ``llmeff:`` line to the terminal at once.
    rootdir: pytest's rootdir, against which relative output paths resolve. started_at: ISO 8601 UTC.
    records / loads: what the tests measured and loaded (gathered from test reports). meters: energy meters by
    device kind. baseline: what records are judged against (and the gate settings). turnstile: the lockstep
    pair under ``--llmeff-interleave`` (also held by ``baseline``). quality_cache: the reference variants'
    quality probes, by (reference load key, prompts, length). flops_cache: counted FLOPs shared by the variants of
    one shape. loads_timed: the load keys already counted in a record's time breakdown. ab: the ``--llmeff-ab``
    baseline (its worktree and process), None otherwise. gate_failures: (node id, text) of regressed
    tests. ending: how the session ended. outputs: what was written at the end (None before). events: the event
    log (``events.EventLog``) the session's rooms emit to.
    """

    options: LlmeffConfig
    progress: Callable[[str], None]
    rootdir: Path = Path(".")
    started_at: str = field(default_factory=utc_now)
    records: list["BenchmarkRecord"] = field(default_factory=list)
    loads: list["LoadEvent"] = field(default_factory=list)
    meters: MeterSet = None  # type: ignore[assignment]  (made in __post_init__ from the options)
    baseline: Baseline = field(default_factory=Baseline)
    turnstile: Optional["Turnstile"] = None
    quality_cache: dict = field(default_factory=dict)
    flops_cache: dict = field(default_factory=dict)  # counted FLOPs by (model, revision, batch, prompt len, steps)
    loads_timed: set = field(default_factory=set)
    ab: Optional["AbRun"] = None  # --llmeff-ab: the baseline side this session started  # load keys whose load time a record's time_s already holds
    gate_failures: list[tuple[str, str]] = field(default_factory=list)
    ending: Ending = field(default_factory=Ending)
    shard_previous: Optional[tuple] = None  # --llmeff-shard-costs: (path, Run) whose times balance the shards
    shard_info: Optional[Any] = None  # --llmeff-shard: this shard (results.ShardInfo), for the run file
    shard_sent: bool = False  # an xdist worker handed its shard_info to the controller
    launch: Optional[Any] = None  # torchrun / accelerate launch: this rank (launcher.Launch), else None
    distributed: Optional[Any] = None  # rank 0 after the gather: results.DistributedInfo
    # --llmeff-parallel=tensor: takes a decision and returns rank 0's (ranks.agree), so that every rank makes the
    # same generate calls; None otherwise
    agree: Optional[Callable[[Any], Any]] = None
    rank_group_owned: bool = False  # the plugin made the torch.distributed process group (and leaves it)
    outputs: Optional["Outputs"] = None
    events: Optional["EventLog"] = None  # the event stream (--llmeff-log-json, live progress); startup opens it
    _models: Optional["ModelCache"] = None

    def __post_init__(self) -> None:
        self.rootdir = Path(self.rootdir)
        if self.meters is None:
            o = self.options
            self.meters = MeterSet(o.energy, o.country_iso_code, o.powercap_root, o.idle_s, self.progress)

    @property
    def models(self) -> "ModelCache":
        """The model cache (one variant loaded at a time), made on first use: torch loads only then."""
        if self._models is None:
            from pytest_llmeff.engines.cache import ModelCache

            self._models = ModelCache(self.options.cache_dir, self.progress, getattr(self.options, "threads", None),
                                      tensor_parallel=getattr(self.options, "parallel", "replicas") == "tensor")
        return self._models

    def take_new_loads(self) -> list["LoadEvent"]:
        """Load events not yet handed to a report (each is reported once)."""
        if self._models is None:
            return []
        events, self._models.loads = self._models.loads, []
        return events

    def close(self) -> None:
        """Close the meters and free the loaded variant."""
        self.meters.close()
        if self._models is not None:
            self._models.release()
