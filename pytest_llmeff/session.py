"""Session state: options, the model cache, the energy meter, collected records, and the run file.

Records travel on test reports (``report.llmeff_records``), so the same code gathers them in a plain
session and on the pytest-xdist controller.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from pytest_llmeff.config import DEFAULT_STORAGE, LlmeffConfig
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic models load only when a benchmark is recorded
    from pytest_llmeff.results import BenchmarkRecord, LoadEvent, Run
from pytest_llmeff.variants import Variant, sanitize_id


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class LlmeffSession:
    def __init__(self, options: LlmeffConfig, progress: Callable[[str], None]):
        self.options = options
        self.progress = progress
        self.started_at = utc_now()
        self.records: list[BenchmarkRecord] = []
        self.loads: list[LoadEvent] = []
        self._models = None
        self._meters: dict = {}
        self.idle_power_w: dict = {}
        self.quality_cache: dict = {}  # (reference load key, prompts, max_new_tokens) -> QualityData
        self.json_written: Optional[Path] = None
        self.write_error: Optional[str] = None

    # --- lazily built heavy parts -------------------------------------------------------------------
    @property
    def models(self):
        if self._models is None:
            from pytest_llmeff.backends.cache import ModelCache

            self._models = ModelCache(self.options.cache_dir, self.progress)
        return self._models

    @property
    def meter(self):
        """The meter for CPU work (the ``energy_tracker`` fixture's)."""
        return self.meter_for("cpu")

    def meter_for(self, device: str):
        """The session's energy meter for ``device`` (one per device kind), with its idle power measured once
        when ``--llmeff-idle-s`` asks for it and the meter is a real one."""
        from pytest_llmeff.measure.meters import make_meter

        key = "cuda" if device.startswith("cuda") else "cpu"
        if key not in self._meters:
            meter = make_meter(self.options.energy, device, self.options.country_iso_code,
                               self.options.powercap_root)
            self._meters[key] = meter
            self.idle_power_w[key] = self._measure_idle(meter)
        return self._meters[key]

    def _measure_idle(self, meter):
        from pytest_llmeff.runner import _is_real

        if self.options.idle_s <= 0 or not _is_real(meter):
            return None
        self.progress(f"measuring idle power for {self.options.idle_s:g} s ({meter.method})...")
        start = meter.begin()
        time.sleep(self.options.idle_s)
        m = meter.end(start)
        if m.energy_j is None or m.duration_s <= 0:
            return None
        power = m.energy_j / m.duration_s
        self.progress(f"idle power {power:.2f} W")
        return power

    def close(self) -> None:
        for meter in self._meters.values():
            meter.close()
        if self._models is not None:
            self._models.release()

    def take_new_loads(self) -> list[LoadEvent]:
        """Load events not yet handed to a report (each is reported once)."""
        if self._models is None:
            return []
        events = self._models.loads
        self._models.loads = []
        return events

    # --- records ------------------------------------------------------------------------------------
    def add_report_payload(self, report) -> None:
        raws, loads = getattr(report, "llmeff_records", None), getattr(report, "llmeff_loads", None)
        if not raws and not loads:
            return
        from pytest_llmeff.results import BenchmarkRecord, LoadEvent

        for raw in getattr(report, "llmeff_records", None) or []:
            record = BenchmarkRecord.model_validate_json(raw)
            record.outcome = report.outcome if report.outcome in ("passed", "failed", "skipped") else "unknown"
            self.records.append(record)
        for raw in getattr(report, "llmeff_loads", None) or []:
            self.loads.append(LoadEvent.model_validate_json(raw))

    def default_json_path(self) -> Path:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        ident = sanitize_id(self.records[0].variant.model) if self.records else "empty"
        return Path(DEFAULT_STORAGE) / "runs" / f"{stamp}_{ident}.json"

    def build_run(self, machine: dict[str, Any], versions: dict, commit: dict, args: list[str]) -> Run:
        from pytest_llmeff.results import CommitInfo, MachineInfo, Run

        return Run(
            started_at=self.started_at, finished_at=utc_now(), machine=MachineInfo(**machine),
            versions=versions, commit=CommitInfo(**commit), pytest_args=list(args), loads=self.loads,
            benchmarks=self.records,
        )

    def write(self, run: Run, rootdir: Path) -> Path:
        from pytest_llmeff.results import write_run

        path = self.options.json_path or self.default_json_path()
        if not path.is_absolute():
            path = Path(rootdir) / path
        self.json_written = write_run(run, path)
        return self.json_written


def build_record(*, nodeid: str, name: str, variant: Variant, params: dict[str, Any], rounds: int, warmup: int,
                 measured, loaded, prompts_count: int, extra_metrics: dict[str, list[float]],
                 resolved_path: Optional[str], country: Optional[str] = None) -> BenchmarkRecord:
    """Turn the runner's raw samples into a ``BenchmarkRecord`` (stats computed per metric)."""
    from pytest_llmeff.results import BenchmarkRecord, EnergyInfo, Metric, VariantRecord

    samples = dict(measured.samples)
    samples["model_bytes"] = [float(loaded.model_bytes)]
    samples["load_s"] = [float(loaded.load_s)]
    samples.update(extra_metrics)
    metrics = {name_: Metric.from_samples(name_, vals) for name_, vals in samples.items() if vals}
    energy = None
    if measured.energy is not None:
        read = any(v is not None for v in measured.energy_devices.values()) or "energy_j" in measured.samples
        energy = EnergyInfo(method=measured.energy.method,
                            # never "not estimated" unless a meter was actually read
                            estimated=bool(measured.energy.estimated or not read),
                            country_iso_code=country, devices=measured.energy_devices,
                            note=(f"{measured.energy_repeats} generates per energy window"
                                  if measured.energy_repeats > 1 else None))
    return BenchmarkRecord(
        nodeid=nodeid, name=name, group=variant.group,
        variant=VariantRecord(
            id=variant.id, model=variant.model, model_source=variant.model_source, resolved_path=resolved_path,
            precision=variant.precision, quantization=variant.quant_label,
            quantization_config=asdict(variant.quantization) if variant.quantization else None,
            reference=variant.reference().id if variant.quality else None, batch_size=variant.batch_size,
            max_new_tokens=variant.max_new_tokens, device=loaded.device, device_map=variant.device_map,
            prompts=prompts_count,
            trust_remote_code=variant.trust_remote_code,
        ),
        params={k: str(v) for k, v in params.items()}, rounds=rounds, warmup=warmup, metrics=metrics,
        energy=energy, tokens_generated=measured.tokens_generated, prompt_tokens=measured.prompt_tokens,
        warnings=list(measured.warnings),
        extra_info={"memory_method": measured.memory_method, "flops_total": measured.flops_total,
                    "steps": measured.steps},
    )


def one_line(record: BenchmarkRecord) -> str:
    """The ``-v`` line printed under a benchmark test."""
    m = record.metrics

    def med(name, scale=1.0, fmt="{:.1f}"):
        return fmt.format(m[name].median * scale) if name in m else "n/a"

    energy = ""
    if "energy_j_per_tok" in m:
        tilde = "~" if record.energy and record.energy.estimated else ""
        energy = f", {tilde}{m['energy_j_per_tok'].median:.3g} J/tok"
    return (f"{record.variant.id}: {med('throughput_tok_s')} tok/s, ttft {med('ttft_s', 1e3)} ms, "
            f"tpot {med('tpot_s', 1e3)} ms, peak {med('peak_mem_bytes', 1 / 2**20, '{:.0f}')} MiB{energy}")


def payload(records: list[BenchmarkRecord]) -> list[str]:
    return [r.model_dump_json() for r in records]

