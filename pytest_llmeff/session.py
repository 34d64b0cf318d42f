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


def _verdicts(run) -> dict:
    """(nodeid, name) -> {metric: verdict} from the records, as the report writers take them."""
    return {(r.nodeid, r.name): {v.metric: v for v in r.verdicts} for r in run.benchmarks if r.verdicts}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class LlmeffSession:
    def __init__(self, options: LlmeffConfig, progress: Callable[[str], None], rootdir: Path = Path(".")):
        self.options = options
        self.rootdir = Path(rootdir)
        self.progress = progress
        self.started_at = utc_now()
        self.records: list[BenchmarkRecord] = []
        self.loads: list[LoadEvent] = []
        self._models = None
        self._meters: dict = {}
        self.idle_power_w: dict = {}
        self.quality_cache: dict = {}
        self.thresholds: dict = {}
        self.baseline = None
        self.baseline_name: Optional[str] = None
        self.baseline_note: Optional[str] = None
        self.baseline_index: dict = {}
        self.turnstile = None  # interleave.Turnstile under --llmeff-interleave
        self.outputs: list[str] = []
        self.output_errors: list[str] = []
        self.gate_failures: list[tuple[str, str]] = []
        self.current_run = None  # (reference load key, prompts, max_new_tokens) -> QualityData
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

    # --- baseline and gate -----------------------------------------------------------------------------
    def storage(self, machine: Optional[dict] = None):
        from pytest_llmeff.storage import Storage, machine_fingerprint

        fingerprint = machine_fingerprint(machine) if machine is not None else None
        root = self.options.storage if self.options.storage.is_absolute() else self.rootdir / self.options.storage
        return Storage(root, fingerprint)

    def load_baseline(self, machine: dict) -> None:
        """Load the run named by --llmeff-compare (raises StorageError with one clear line). With no name and
        no stored run yet, there is nothing to compare: a note, not an error (a first CI run)."""
        from pytest_llmeff.gate import parse_thresholds

        self.thresholds = parse_thresholds(self.options.compare_fail) if self.options.compare_fail else {}
        name = self.options.compare
        if not name:
            return
        store = self.storage(machine)
        if name == "latest":
            path = store.latest(store.fingerprint) or store.latest()
            if path is None:
                self.baseline_note = f"no stored run in {self.options.storage} to compare with yet"
                return
        else:
            path = store.resolve(name)
        self.baseline = store.load(path)
        self.baseline_name = str(path)
        self.baseline_index = {(r.nodeid, r.name): r for r in self.baseline.benchmarks}

    def evaluate_gate(self, record, variant) -> None:
        """Fill ``record.verdicts`` (against the baseline, per threshold) and ``record.limits`` (marker limits)."""
        from pytest_llmeff.gate import check_limit, compare, compare_paired, parse_limits, parse_thresholds
        from pytest_llmeff.results import LimitRecord, VerdictRecord

        thresholds = dict(self.thresholds)
        if variant.thresholds:
            thresholds.update(parse_thresholds(",".join(f"{k}:{v}" for k, v in variant.thresholds)))
        base, paired = self._baseline_record(record)
        if base is not None:
            judge = compare_paired if paired else compare
            for metric, threshold in thresholds.items():
                if metric not in record.metrics or metric not in base.metrics:
                    continue
                v = judge(metric, base.metrics[metric].samples, record.metrics[metric].samples, threshold,
                          alpha=self.options.alpha)
                record.verdicts.append(VerdictRecord.from_verdict(v))
        if variant.limits:
            for limit in parse_limits(dict(variant.limits)):
                r = check_limit(limit, record.metrics.get(limit.metric))
                record.limits.append(LimitRecord(metric=limit.metric, limit=limit.text, median=r.median,
                                                 passed=r.passed, message=r.message))

    def _baseline_record(self, record) -> tuple[Optional[BenchmarkRecord], bool]:
        """(the baseline's record of this benchmark or None, whether its rounds pair with ``record``'s).

        Under --llmeff-interleave as the candidate, the baseline is the lockstep partner's record of the same
        benchmark; rounds pair when both sides were interleaved throughout with the same number of rounds."""
        turnstile = self.turnstile
        if turnstile is None or turnstile.role != "candidate":
            if self.baseline is None:
                return None, False
            return self.baseline_index.get((record.nodeid, record.name)), False
        from pytest_llmeff.interleave import rounds_pair
        from pytest_llmeff.results import BenchmarkRecord

        text = turnstile.partner_record(record.nodeid, record.name)
        if text is None:
            record.warnings.append(f"the interleave baseline has no record of this benchmark "
                                   f"({turnstile.alone_reason or 'not published'}): not compared")
            return None, False
        base = BenchmarkRecord.model_validate_json(text)
        paired = rounds_pair(base, record)
        if not paired:
            record.warnings.append("rounds were not interleaved with the baseline's throughout (a side went on "
                                   "alone, or the round counts differ): compared as two runs (Mann-Whitney U)")
        return base, paired

    def publish_for_partner(self, record) -> None:
        """As the interleave baseline: hand the finished record to the candidate."""
        if self.turnstile is not None and self.turnstile.role == "baseline":
            self.turnstile.publish(record.nodeid, record.name, record.model_dump_json())

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
            baseline=self.baseline_name or (f"interleave partner ({self.turnstile.directory})"
                                            if self.turnstile is not None and self.turnstile.role == "candidate"
                                            else None),
            interleave=None if self.turnstile is None else {
                "dir": str(self.turnstile.directory), "role": self.turnstile.role, "turns": self.turnstile.turns,
                "alone_reason": self.turnstile.alone_reason},
            benchmarks=self.records,
        )

    def write_outputs(self, run: Run, rootdir: Path) -> list[str]:
        """Store the run (--llmeff-save/--llmeff-autosave) and write the CI reports; returns problems."""
        from pytest_llmeff.storage import StorageError

        self.current_run = run
        problems = []

        def where(p: Path) -> Path:
            return p if p.is_absolute() else Path(rootdir) / p

        store = self.storage(run.machine.model_dump())
        for name in [self.options.save] if self.options.save else []:
            try:
                self.outputs.append(f"stored as {store.save(run, name)}")
            except (StorageError, OSError) as exc:
                problems.append(f"could not store the run: {exc}")
        if self.options.autosave:
            try:
                self.outputs.append(f"stored as {store.save(run, store.autosave_name(run))}")
            except (StorageError, OSError) as exc:
                problems.append(f"could not store the run: {exc}")
        writers = []
        if self.options.markdown is not None:
            writers.append(("markdown", self.options.markdown, self._write_markdown))
        if self.options.csv is not None:
            writers.append(("CSV", self.options.csv, self._write_csv))
        if self.options.benchmark_json is not None:
            writers.append(("pytest-benchmark JSON", self.options.benchmark_json, self._write_benchmark_json))
        for label, path, writer in writers:
            try:
                writer(run, where(path))
                self.outputs.append(f"{label} written to {where(path)}")
            except Exception as exc:  # one report failing must not lose the others
                problems.append(f"could not write the {label} report {where(path)}: {type(exc).__name__}: {exc}")
        return problems

    def _write_markdown(self, run, path: Path) -> None:
        from pytest_llmeff.report.markdown import append_github_step_summary, render_markdown
        from pytest_llmeff.results import atomic_write_text

        text = render_markdown(run.benchmarks, verdicts=_verdicts(run), warnings=self.comparison_lines())
        atomic_write_text(path, text)
        summary = append_github_step_summary(text)
        if summary is not None:
            self.outputs.append(f"markdown appended to {summary}")

    def _write_csv(self, run, path: Path) -> None:
        from pytest_llmeff.report.csv_table import write_csv

        write_csv(path, run.benchmarks, verdicts=_verdicts(run))

    def _write_benchmark_json(self, run, path: Path) -> None:
        from pytest_llmeff.report.benchmark_json import write_pytest_benchmark_json

        write_pytest_benchmark_json(path, run)

    def comparison_lines(self) -> list[str]:
        """What the comparison with the baseline found beyond the verdicts: renamed/new/missing benchmarks and
        machine or library mismatches."""
        lines = []
        if self.turnstile is not None:
            t = self.turnstile
            alone = f"; went on alone: {t.alone_reason}" if t.alone_reason else ""
            lines.append(f"interleaved as the {t.role} with {t.directory}: {t.turns} turns passed{alone}")
        if self.baseline_note:
            lines.append(self.baseline_note)
        if self.baseline is None or self.current_run is None:
            return lines
        from pytest_llmeff.storage import match_benchmarks, mismatch_warnings

        lines.append(f"compared with {self.baseline_name}")
        matching = match_benchmarks(self.baseline, self.current_run)
        for old, new in matching.renamed:
            lines.append(f"renamed: {old.nodeid} -> {new.nodeid} (not compared: give it its old name back, or "
                         "store a new baseline)")
        for rec in matching.new:
            lines.append(f"new (no baseline): {rec.nodeid}")
        for rec in matching.missing:
            lines.append(f"missing (in the baseline only): {rec.nodeid}")
        lines.extend(f"WARNING {w}" for w in mismatch_warnings(self.baseline, self.current_run))
        return lines

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

