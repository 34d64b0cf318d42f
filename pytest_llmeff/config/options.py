"""Options and ini twins, resolved into one validated object.

Every ``--llmeff-*`` option has an ini twin (``llmeff_*``). CLI defaults are None so that the ini takes effect;
precedence is CLI > ini > default. For rounds/warmup the order is CLI > marker > ini > default.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pytest_llmeff.defaults import (  # noqa: F401
    DEFAULT_ALPHA,
    DEFAULT_COUNTRY_ISO3,
    DEFAULT_POWERCAP_ROOT,
    DEFAULT_RESULTS_DIR,
    DEFAULT_STORAGE,
    LLMEFF_DIR,
)
from pytest_llmeff.errors import UsageProblem  # noqa: F401  (its old home; defined in errors.py)
from pytest_llmeff.metrics import BUILTIN_METRICS
from pytest_llmeff.config.objectives import parse_objectives, parse_weights
from pytest_llmeff.config.shard_spec import ShardSpec, parse_shard
from pytest_llmeff.stats.stop_rule import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MAX_TIME_S,
    DEFAULT_MIN_ROUNDS,
    DEFAULT_PRECISION_METRICS,
    DEFAULT_TARGET_CI_PCT,
    StopRule,
)

DEFAULT_ROUNDS = 5  # rounds of tools that time a fixed count (benchmarks/overhead.py, gate_quality.py)
DEFAULT_WARMUP = 1
DEFAULT_INTERLEAVED_ROUNDS = 20  # lockstep A/B: the fewest pairs (then as many as paired_stop.py asks for)
DEFAULT_COMPARE_HISTORY = 10  # stored runs the stored-baseline gate learns the spread between sessions from
CACHE_ENV = "LLMEFF_CACHE_DIR"
INCONCLUSIVE_POLICIES = ("fail", "warn")  # --llmeff-inconclusive
PARALLEL_MODES = ("replicas", "tensor")  # --llmeff-parallel: how the ranks of a launch share a benchmark
INTERLEAVE_TIMEOUT_ENV = "LLMEFF_INTERLEAVE_TIMEOUT_S"  # seconds to wait for a lockstep partner to start

# (option, ini name, ini type, help, argparse extras)
_OPTIONS: tuple[tuple[str, str, str, str, dict], ...] = (
    ("--llmeff-report", "llmeff_report", "bool",
     "print the comparison table and write the JSON results file", {"action": "store_true"}),
    ("--llmeff-json", "llmeff_json", "string",
     f"path of the JSON results file (default when reporting: {DEFAULT_RESULTS_DIR}/<UTC stamp>_<pid>_<id>.json)",
     {"metavar": "PATH"}),
    ("--llmeff-rounds", "llmeff_rounds", "string",
     "exactly N timed rounds per benchmark, no stop rule (default: the stop rule); overrides the marker",
     {"metavar": "N"}),
    ("--llmeff-target-ci", "llmeff_target_ci", "string",
     f"stop rule: time rounds until the 95% interval of each precision metric's median is within PCT percent "
     f"of it (default {DEFAULT_TARGET_CI_PCT:g}; '%' optional; 0 < PCT < 100)", {"metavar": "PCT"}),
    ("--llmeff-max-time", "llmeff_max_time", "string",
     f"stop rule: budget of one benchmark's timed rounds in seconds (default {DEFAULT_MAX_TIME_S:g})",
     {"metavar": "SECONDS"}),
    ("--llmeff-min-rounds", "llmeff_min_rounds", "string",
     f"stop rule: fewest timed rounds (default {DEFAULT_MIN_ROUNDS}, the fewest with a 95% interval)",
     {"metavar": "N"}),
    ("--llmeff-max-rounds", "llmeff_max_rounds", "string",
     f"stop rule: most timed rounds (default {DEFAULT_MAX_ROUNDS})", {"metavar": "N"}),
    ("--llmeff-precision-metrics", "llmeff_precision_metrics", "string",
     f"stop rule: the metrics whose intervals must meet the target, comma separated (default "
     f"{','.join(DEFAULT_PRECISION_METRICS)}); per-round or per-token metrics only", {"metavar": "METRICS"}),
    ("--llmeff-columns", "llmeff_columns", "string",
     "metric columns of the terminal table, comma separated, in order (default: a set that fits 160 columns; "
     "JSON, markdown and CSV always hold every metric)", {"metavar": "METRICS"}),
    ("--llmeff-warmup", "llmeff_warmup", "string",
     f"untimed warm-up rounds per benchmark (default {DEFAULT_WARMUP}); overrides the marker", {"metavar": "N"}),
    ("--llmeff-skip", "llmeff_skip", "bool", "skip the benchmark tests", {"action": "store_true"}),
    ("--llmeff-only", "llmeff_only", "bool", "run only the benchmark tests (deselect the others)",
     {"action": "store_true"}),
    ("--llmeff-cache-dir", "llmeff_cache_dir", "string",
     f"where converted models and the tiny model are cached (env {CACHE_ENV}; default ~/.cache/pytest-llmeff)",
     {"metavar": "DIR"}),
    ("--llmeff-no-reorder", "llmeff_no_reorder", "bool",
     "keep pytest's test order instead of grouping each variant's tests together", {"action": "store_true"}),
    ("--llmeff-threads", "llmeff_threads", "string",
     "threads every engine computes with (torch, llama.cpp, CTranslate2, ONNX Runtime GenAI), recorded in the "
     "run (default: what torch uses, i.e. the cores available unless OMP_NUM_THREADS says otherwise)",
     {"metavar": "N"}),
    ("--llmeff-trust-remote-code", "llmeff_trust_remote_code", "bool",
     "allow models to run their own Python code (transformers trust_remote_code) for every variant; "
     "off by default, also settable per test with trust_remote_code=True on the marker", {"action": "store_true"}),
    ("--llmeff-energy", "llmeff_energy", "string",
     "energy backend: auto (real meters first: NVML for CUDA, RAPL for CPU, else the CodeCarbon estimate), "
     "nvml, rapl, codecarbon or off", {"metavar": "BACKEND"}),
    ("--llmeff-idle-s", "llmeff_idle_s", "string",
     "measure idle power for this many seconds before the benchmarks and report energy_net_j (real meters only)",
     {"metavar": "SECONDS"}),
    ("--llmeff-peak-tflops", "llmeff_peak_tflops", "string",
     "peak TFLOP/s of the device for the variant's dtype, for mfu (default: a table of known GPUs)",
     {"metavar": "TFLOPS"}),
    ("--llmeff-powercap-root", "llmeff_powercap_root", "string",
     "root of the powercap sysfs for RAPL (default /sys/class/powercap)", {"metavar": "DIR"}),
    ("--llmeff-storage", "llmeff_storage", "string",
     f"where runs are stored, grouped by machine fingerprint (default {DEFAULT_STORAGE}/)", {"metavar": "DIR"}),
    ("--llmeff-save", "llmeff_save", "string", "store this run as the named baseline NAME ([A-Za-z0-9._-])",
     {"metavar": "NAME"}),
    ("--llmeff-autosave", "llmeff_autosave", "bool", "store this run as <counter>_<commit>_<date>",
     {"action": "store_true"}),
    ("--llmeff-compare", "llmeff_compare", "string",
     "compare with a stored run: NAME, a PATH, or nothing for the latest run of this machine",
     {"metavar": "NAME|PATH", "nargs": "?", "const": "latest"}),
    ("--llmeff-compare-fail", "llmeff_compare_fail", "string",
     "fail a test whose metric regressed: METRIC:N% or METRIC:N<unit>, comma separated, e.g. "
     "throughput_tok_s:5%,ttft_s:10%,peak_mem_bytes:64MB", {"metavar": "SPEC"}),
    ("--llmeff-compare-history", "llmeff_compare_history", "string",
     f"stored-baseline gate: judge against the medians of the last N stored runs of this machine (the baseline "
     f"and the N-1 stored before it), so the spread between sessions is known (default "
     f"{DEFAULT_COMPARE_HISTORY}; 1: the baseline alone, which can only be inconclusive about a change)",
     {"metavar": "N"}),
    ("--llmeff-alpha", "llmeff_alpha", "string",
     "the chance of any false 'regressed' in the whole run, split over its tested comparisons (Bonferroni) "
     f"(default {DEFAULT_ALPHA:g})", {"metavar": "P"}),
    ("--llmeff-inconclusive", "llmeff_inconclusive", "string",
     "what a gated comparison that cannot resolve its threshold does: fail the test (default under --llmeff-ab "
     "and --llmeff-interleave, where more pairs were possible) or warn (default with a stored baseline)",
     {"metavar": "fail|warn"}),
    ("--llmeff-interleave", "llmeff_interleave", "string",
     "lockstep A/B: take turns round by round with another pytest run given the same DIR (one --llmeff-role="
     "baseline, one candidate); the candidate is judged against the baseline pair by pair", {"metavar": "DIR"}),
    ("--llmeff-role", "llmeff_role", "string",
     "this run's side under --llmeff-interleave: baseline or candidate", {"metavar": "ROLE"}),
    ("--llmeff-ab", "llmeff_ab", "string",
     "lockstep A/B in one command: check out GITREF into a temporary git worktree, run the same tests there as "
     "the baseline, take turns with it round by round and judge this run as the candidate", {"metavar": "GITREF"}),
    ("--llmeff-ab-python", "llmeff_ab_python", "string",
     "the Python interpreter of the --llmeff-ab baseline (default: this one), e.g. a venv with other "
     "dependency versions", {"metavar": "PATH"}),
    ("--llmeff-shard", "llmeff_shard", "string",
     "run the K-th of N disjoint shards of the benchmarks (K from 0): whole variants per shard, balanced by "
     "estimated cost; 'auto' or 'auto/N' reads K (and N) from the environment: LLMEFF_SHARD_INDEX/COUNT, "
     "SLURM_ARRAY_TASK_ID/COUNT, JOB_COMPLETION_INDEX, CI_NODE_INDEX/TOTAL", {"metavar": "K/N"}),
    ("--llmeff-shard-costs", "llmeff_shard_costs", "string",
     "balance the shards by the measured times of a previous run (a run file, e.g. the last merged run, or a "
     "stored baseline NAME) instead of parameters x batch x tokens; every shard must be given the same one",
     {"metavar": "PATH|NAME"}),
    ("--llmeff-parallel", "llmeff_parallel", "string",
     "under torchrun / accelerate launch: 'replicas' (default: every rank loads its own copy and runs its own "
     "batch, data parallel) or 'tensor' (the ranks load each model once, split by transformers' tensor-parallel "
     "plan, tp_plan='auto', and generate together)", {"metavar": "MODE"}),
    ("--llmeff-markdown", "llmeff_markdown", "string",
     "write the report as markdown to PATH (also appended to $GITHUB_STEP_SUMMARY when set)", {"metavar": "PATH"}),
    ("--llmeff-csv", "llmeff_csv", "string", "write one CSV row per benchmark and metric to PATH",
     {"metavar": "PATH"}),
    ("--llmeff-benchmark-json", "llmeff_benchmark_json", "string",
     "write the run in pytest-benchmark's JSON format to PATH (github-action-benchmark, Bencher)",
     {"metavar": "PATH"}),
    ("--llmeff-log-json", "llmeff_log_json", "string",
     "write every event (model load, round, stop decision, warning, verdict, output written) as one JSON object "
     "per line to PATH, while it happens", {"metavar": "PATH"}),
    ("--llmeff-country", "llmeff_country", "string",
     "ISO 3166 alpha-3 country whose grid carbon intensity gives co2_g (default USA)", {"metavar": "ISO3"}),
    ("--llmeff-html", "llmeff_html", "string",
     "write the HTML report (one self-contained file, plots included; needs the 'report' extra) to PATH",
     {"metavar": "PATH"}),
    ("--llmeff-pareto", "llmeff_pareto", "string",
     "the Pareto front's objectives in the HTML report, two or more metrics with a direction, comma separated "
     "(default throughput_tok_s,ppl_ratio; kld_mean_nat or peak_mem_bytes when the run lacks ppl_ratio)",
     {"metavar": "METRICS"}),
    ("--llmeff-score-weights", "llmeff_score_weights", "string",
     "weights of the efficiency score in the HTML report, METRIC:W comma separated (default "
     "throughput_tok_s:1,peak_mem_bytes:1,energy_j_per_tok:1,ppl_ratio:1)", {"metavar": "SPEC"}),
)


def add_options(parser) -> None:
    group = parser.getgroup("llmeff", "LLM inference efficiency (pytest-llmeff)")
    for opt, ini, ini_type, help_, extra in _OPTIONS:
        kwargs = dict(extra)
        kwargs.setdefault("default", None)
        if kwargs.get("action") == "store_true":
            kwargs["default"] = None
        # argparse %-formats help texts (a bare "N% or" crashed `pytest --help`); the ini help is printed as is
        group.addoption(opt, dest=ini, help=help_.replace("%", "%%"), **kwargs)
        parser.addini(ini, help=help_, type=ini_type, default=None)




@dataclass(frozen=True)
class LlmeffConfig:
    """The resolved options of one session (validated in ``resolve``).

    A plain dataclass rather than a pydantic model on purpose: the plugin resolves its options in EVERY pytest
    run of the environment, and importing pydantic there would cost every run ~60 ms. pydantic validates
    the marker arguments and the result schema, which load only when a benchmark is collected or recorded.
    """

    cache_dir: Path
    report: bool = False
    json_path: Optional[Path] = None
    rounds: Optional[int] = None  # None: marker, else ini, else DEFAULT_ROUNDS
    warmup: Optional[int] = None
    ini_rounds: Optional[int] = None
    ini_warmup: Optional[int] = None
    skip: bool = False
    only: bool = False
    reorder: bool = True
    trust_remote_code: bool = False
    country_iso_code: str = DEFAULT_COUNTRY_ISO3
    country_explicit: bool = False
    energy: str = "auto"
    idle_s: float = 0.0
    peak_tflops: Optional[float] = None
    powercap_root: str = DEFAULT_POWERCAP_ROOT
    storage: Path = Path(DEFAULT_STORAGE)
    save: Optional[str] = None
    autosave: bool = False
    compare: Optional[str] = None
    compare_fail: Optional[str] = None
    compare_history: int = DEFAULT_COMPARE_HISTORY  # stored runs judged against (drift.py); 1: the baseline only
    alpha: float = DEFAULT_ALPHA
    inconclusive: Optional[str] = None  # fail | warn; None: fail under a lockstep pair, warn with a stored baseline
    markdown: Optional[Path] = None
    csv: Optional[Path] = None
    benchmark_json: Optional[Path] = None
    interleave: Optional[Path] = None
    role: Optional[str] = None
    interleave_timeout_s: float = 600.0
    # the stop rule's settings given on the command line and in the ini file, as (StopRule field, value) pairs
    stop_cli: tuple[tuple[str, Any], ...] = ()
    stop_ini: tuple[tuple[str, Any], ...] = ()
    columns: Optional[tuple[str, ...]] = None  # terminal table metric columns; None: the default set
    ab: Optional[str] = None  # --llmeff-ab: the git ref the baseline side runs
    ab_python: Optional[str] = None  # its interpreter (None: this one)
    html: Optional[Path] = None  # --llmeff-html: the HTML report
    pareto: Optional[tuple[str, ...]] = None  # its Pareto objectives (None: analysis.default_objectives)
    score_weights: Optional[tuple[tuple[str, float], ...]] = None  # its score weights (None: the defaults)
    shard: Optional[ShardSpec] = None  # --llmeff-shard: this session runs one shard of the collection
    shard_costs: Optional[str] = None  # --llmeff-shard-costs: the run whose times balance the shards
    log_json: Optional[Path] = None  # --llmeff-log-json: the event log, one JSON object per line
    threads: Optional[int] = None  # --llmeff-threads: every engine's thread count (None: what torch uses)
    parallel: str = "replicas"  # --llmeff-parallel under a launcher: replicas (data parallel) or tensor

    @property
    def target_ci_pct(self) -> float:
        """The session's precision target in percent (CLI, else ini, else the default), for the report."""
        for pairs in (self.stop_cli, self.stop_ini):
            value = dict(pairs).get("target_ci_rel")
            if value is not None:
                return value * 100
        return DEFAULT_TARGET_CI_PCT

    def fixed_rounds_for(self, marker_rounds: Optional[int]) -> Optional[int]:
        """Exactly this many timed rounds (an explicit rounds=), or None for the stop rule (in lockstep A/B: the
        pair's rule, ``paired_stop.py``, decided by the candidate)."""
        for v in (self.rounds, marker_rounds, self.ini_rounds):
            if v is not None:
                return v
        return None

    def stop_rule_for(self, variant) -> StopRule:
        """The stop rule of ``variant``'s benchmarks: CLI > marker > ini > defaults, per setting. Raises
        UsageProblem when the merged minimum exceeds the maximum."""
        merged = dict(self.stop_ini)
        merged.update(variant.stop)
        merged.update(self.stop_cli)
        rule = StopRule(fixed_rounds=self.fixed_rounds_for(variant.rounds), **merged)
        if rule.min_rounds > rule.max_rounds:
            raise UsageProblem(f"min_rounds={rule.min_rounds} is above max_rounds={rule.max_rounds} (from the "
                               "command line, the marker and the ini file together); give min_rounds <= max_rounds")
        return rule

    def warmup_for(self, marker_warmup: Optional[int]) -> int:
        for v in (self.warmup, marker_warmup, self.ini_warmup):
            if v is not None:
                return v
        return DEFAULT_WARMUP


def _int_value(name: str, raw: Any, minimum: int) -> Optional[int]:
    if raw is None or raw == "":
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise UsageProblem(f"{name}={raw!r} is not an integer; give an integer >= {minimum}") from None
    if value < minimum:
        raise UsageProblem(f"{name}={value} is not allowed; give an integer >= {minimum}")
    return value


def _float_value(name: str, raw: Any, minimum: float, strict: bool = False) -> Optional[float]:
    if raw is None or raw == "":
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise UsageProblem(f"{name}={raw!r} is not a number; give a number {'>' if strict else '>='} {minimum:g}") \
            from None
    if value < minimum or (strict and value == minimum) or value != value:
        raise UsageProblem(f"{name}={raw} is not allowed; give a number {'>' if strict else '>='} {minimum:g}")
    return value


def _pct_value(name: str, raw: Any) -> Optional[float]:
    """A percentage strictly between 0 and 100 ('5', '5%', '2.5 %') as a fraction (0.05)."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip().removesuffix("%").strip()
    try:
        value = float(text)
    except ValueError:
        raise UsageProblem(f"{name}={raw!r} is not a number; give a percentage between 0 and 100, e.g. 5 or 5%") \
            from None
    if not 0 < value < 100:
        raise UsageProblem(f"{name}={raw} is not allowed; give a percentage between 0 and 100 (exclusive), e.g. 5")
    return value / 100


def metric_names(name: str, raw: Any, sampled_only: bool) -> Optional[tuple[str, ...]]:
    """A comma-separated list of built-in metric names (``sampled_only``: per-round or per-token metrics)."""
    if raw is None or raw == "":
        return None

    allowed = [m.name for m in BUILTIN_METRICS if not sampled_only or m.sampling != "once"]
    names = tuple(n.strip() for n in str(raw).split(","))
    for n in names:
        if n not in allowed:
            what = "a per-round or per-token metric" if sampled_only else "a metric"
            raise UsageProblem(f"{name}: {n!r} is not {what}; allowed: {', '.join(allowed)}")
    return names


def _stop_settings(where: str, get) -> tuple[tuple[str, Any], ...]:
    """The stop-rule settings found by ``get(ini_name)`` (the CLI or the ini), validated, as StopRule pairs."""
    def label(opt: str) -> str:
        return f"--llmeff-{opt}" if where == "cli" else f"llmeff_{opt.replace('-', '_')} (ini)"

    pairs = {
        "target_ci_rel": _pct_value(label("target-ci"), get("llmeff_target_ci")),
        "max_time_s": _float_value(label("max-time"), get("llmeff_max_time"), minimum=0.0, strict=True),
        "min_rounds": _int_value(label("min-rounds"), get("llmeff_min_rounds"), 1),
        "max_rounds": _int_value(label("max-rounds"), get("llmeff_max_rounds"), 1),
        "metrics": metric_names(label("precision-metrics"), get("llmeff_precision_metrics"), sampled_only=True),
    }
    low, high = pairs["min_rounds"], pairs["max_rounds"]
    if low is not None and high is not None and low > high:
        raise UsageProblem(f"{label('min-rounds')}={low} is above {label('max-rounds')}={high}; "
                           "give min <= max")
    return tuple((k, v) for k, v in pairs.items() if v is not None)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-llmeff"


class _Raw:
    """The raw value of each option as the user gave it: the command line, then the ini file. An option given
    but empty (a CI variable that expanded to nothing) is a UsageProblem, never a silent default."""

    def __init__(self, pytest_config) -> None:
        self._config = pytest_config
        self._flags = {ini_name: opt for opt, ini_name, *_ in _OPTIONS}

    def cli(self, ini_name: str):
        value = self._config.getoption(ini_name, None)
        if isinstance(value, str) and not value.strip():
            # a CI variable that expanded to nothing must not silently store or compare nothing
            raise UsageProblem(f"{self._flags[ini_name]}={value!r} is empty; give a value or leave the option out")
        return value

    def ini(self, ini_name: str):
        try:
            value = self._config.getini(ini_name)
        except ValueError:  # not a registered ini name: no ini value
            return None
        if isinstance(value, str) and not value.strip():
            raise UsageProblem(f"{ini_name} (ini) is set but empty; give a value or remove the line")
        return value

    def flag(self, ini_name: str) -> bool:
        value = self.cli(ini_name)
        if value is None:
            value = self.ini(ini_name)
        return bool(value)

    def text(self, ini_name: str) -> Optional[str]:
        value = self.cli(ini_name)
        if value is None:
            value = self.ini(ini_name)
        return value or None


def _user_path(raw: Optional[str]) -> Optional[Path]:
    """``raw`` as a path with ``~`` expanded; None when not given."""
    return Path(os.path.expanduser(raw)) if raw else None


def _selection(raw: _Raw) -> dict[str, Any]:
    """Which benchmarks run and how they load: --llmeff-skip / --llmeff-only (exclusive), the reordering, remote
    code."""
    if raw.flag("llmeff_skip") and raw.flag("llmeff_only"):
        raise UsageProblem("--llmeff-skip and --llmeff-only exclude each other; give one")
    return {"skip": raw.flag("llmeff_skip"), "only": raw.flag("llmeff_only"),
            "reorder": not raw.flag("llmeff_no_reorder"), "trust_remote_code": raw.flag("llmeff_trust_remote_code")}


def _rounds(raw: _Raw) -> dict[str, Any]:
    """The round counts and the stop rule's settings, the command line's and the ini file's kept apart (the
    marker goes between them)."""
    return {"rounds": _int_value("--llmeff-rounds", raw.cli("llmeff_rounds"), 1),
            "warmup": _int_value("--llmeff-warmup", raw.cli("llmeff_warmup"), 0),
            "ini_rounds": _int_value("llmeff_rounds (ini)", raw.ini("llmeff_rounds"), 1),
            "ini_warmup": _int_value("llmeff_warmup (ini)", raw.ini("llmeff_warmup"), 0),
            "stop_cli": _stop_settings("cli", raw.cli), "stop_ini": _stop_settings("ini", raw.ini)}


def _hardware(raw: _Raw) -> dict[str, Any]:
    """The energy meter and what the figures are scaled by: the grid's country, the idle time, the peak TFLOP/s
    for MFU, the RAPL root."""
    country = (raw.text("llmeff_country") or DEFAULT_COUNTRY_ISO3).strip()
    if len(country) != 3 or not country.isalpha():
        raise UsageProblem(f"country {country!r} is not an ISO 3166 alpha-3 code such as USA, FRA, DEU")
    energy = (raw.text("llmeff_energy") or "auto").strip()
    backends = ("auto", "nvml", "rapl", "codecarbon", "off")
    if energy not in backends:
        raise UsageProblem(f"--llmeff-energy={energy!r} is not allowed; allowed: {', '.join(backends)}")
    return {"country_iso_code": country.upper(), "country_explicit": bool(raw.text("llmeff_country")),
            "energy": energy,
            "idle_s": _float_value("--llmeff-idle-s", raw.text("llmeff_idle_s"), minimum=0.0) or 0.0,
            "peak_tflops": _float_value("--llmeff-peak-tflops", raw.text("llmeff_peak_tflops"), minimum=0.0,
                                        strict=True),
            "powercap_root": raw.text("llmeff_powercap_root") or DEFAULT_POWERCAP_ROOT}


def _gate(raw: _Raw) -> dict[str, Any]:
    """The stored-baseline comparison: which run, the failure thresholds, the history learnt from, the alpha."""
    alpha = _float_value("--llmeff-alpha", raw.text("llmeff_alpha"), minimum=0.0, strict=True)
    if alpha is not None and alpha >= 1:
        raise UsageProblem(f"--llmeff-alpha={alpha:g} is not allowed; give a probability between 0 and 1 (e.g. 0.01)")
    compare, compare_fail = raw.text("llmeff_compare"), raw.text("llmeff_compare_fail")
    history = _int_value("--llmeff-compare-history", raw.text("llmeff_compare_history"), minimum=1)
    inconclusive = raw.text("llmeff_inconclusive")
    if inconclusive is not None and inconclusive.strip() not in INCONCLUSIVE_POLICIES:
        raise UsageProblem(f"--llmeff-inconclusive={inconclusive!r} is not allowed; allowed: "
                           f"{', '.join(INCONCLUSIVE_POLICIES)}")
    return {"compare": compare, "compare_fail": compare_fail,
            "inconclusive": inconclusive.strip() if inconclusive is not None else None,
            "compare_history": history if history is not None else DEFAULT_COMPARE_HISTORY,
            "alpha": alpha if alpha is not None else DEFAULT_ALPHA}


def _lockstep(raw: _Raw, gate: dict[str, Any]) -> dict[str, Any]:
    """The lockstep pair (--llmeff-interleave + --llmeff-role, or --llmeff-ab running its own), checked against
    the gate's options: a candidate's or an A/B run's baseline is its partner."""
    interleave, role = raw.text("llmeff_interleave"), raw.text("llmeff_role")
    compare, compare_fail = gate["compare"], gate["compare_fail"]
    roles = ("baseline", "candidate")
    if role is not None and role not in roles:
        raise UsageProblem(f"--llmeff-role={role!r} is not allowed; allowed: {', '.join(roles)}")
    if interleave and role is None:
        raise UsageProblem(f"--llmeff-interleave={interleave!r} needs --llmeff-role: baseline (the reference "
                           "checkout) or candidate (the one judged)")
    if role is not None and not interleave:
        raise UsageProblem(f"--llmeff-role={role} needs --llmeff-interleave=DIR, a directory shared with the "
                           "other side")
    timeout_s = _float_value(INTERLEAVE_TIMEOUT_ENV, os.environ.get(INTERLEAVE_TIMEOUT_ENV), minimum=0.0,
                             strict=True)
    ab, ab_python = raw.text("llmeff_ab"), raw.text("llmeff_ab_python")
    if ab and (interleave or role):
        raise UsageProblem(f"--llmeff-ab={ab} runs its own lockstep pair; leave out --llmeff-interleave and "
                           "--llmeff-role")
    if ab and compare:
        raise UsageProblem(f"--llmeff-ab={ab} judges this run against {ab}; leave out --llmeff-compare")
    if ab_python and not ab:
        raise UsageProblem(f"--llmeff-ab-python={ab_python} needs --llmeff-ab=GITREF")
    if ab_python:
        found = shutil.which(os.path.expanduser(ab_python))
        if found is None or not os.path.isfile(found):
            raise UsageProblem(f"--llmeff-ab-python={ab_python} is not an executable file; give the path of a "
                               "Python interpreter, e.g. ../base-venv/bin/python")
        ab_python = found
    if role == "candidate" and compare:
        raise UsageProblem("--llmeff-compare cannot be combined with --llmeff-role=candidate: the candidate's "
                           "baseline is its interleave partner")
    if compare_fail and not compare and role != "candidate" and not ab:
        raise UsageProblem(f"--llmeff-compare-fail={compare_fail!r} needs a baseline to compare with; add "
                           "--llmeff-compare (latest stored run) or --llmeff-compare=NAME, or run as "
                           "--llmeff-role=candidate under --llmeff-interleave")
    return {"interleave": _user_path(interleave), "role": role,
            "interleave_timeout_s": timeout_s if timeout_s is not None else 600.0, "ab": ab, "ab_python": ab_python}


def _scale(raw: _Raw, lockstep: dict[str, Any]) -> dict[str, Any]:
    """Sharding (not under a lockstep pair, which runs the same benchmarks on both sides), its cost source, and
    how the ranks of a launch share a benchmark."""
    shard = parse_shard("--llmeff-shard", raw.text("llmeff_shard"), os.environ)
    shard_costs = raw.text("llmeff_shard_costs")
    if shard is not None and (lockstep["ab"] or lockstep["interleave"]):
        what = (f"--llmeff-ab={lockstep['ab']}" if lockstep["ab"]
                else f"--llmeff-interleave={raw.text('llmeff_interleave')}")
        raise UsageProblem(f"--llmeff-shard={shard.label} cannot be combined with {what}: a lockstep pair runs the "
                           "same benchmarks on both sides; shard the baseline and candidate runs separately")
    if shard_costs and shard is None:
        raise UsageProblem(f"--llmeff-shard-costs={shard_costs} needs --llmeff-shard=K/N (or auto)")
    parallel = raw.text("llmeff_parallel") or "replicas"
    if parallel not in PARALLEL_MODES:
        raise UsageProblem(f"--llmeff-parallel={parallel!r} is not allowed; allowed: {', '.join(PARALLEL_MODES)}")
    return {"shard": shard, "shard_costs": shard_costs, "parallel": parallel}


def _engines(raw: _Raw) -> dict[str, Any]:
    """Every engine's thread count (None: what the engine uses by default)."""
    return {"threads": _int_value("--llmeff-threads", raw.text("llmeff_threads"), 1)}


def _table(raw: _Raw) -> dict[str, Any]:
    """The terminal table's metric columns (None: the default set)."""
    return {"columns": metric_names("--llmeff-columns", raw.text("llmeff_columns"), sampled_only=False)}


def _outputs(raw: _Raw) -> dict[str, Any]:
    """Where results go: the storage root, the named save, the report files (JSON, Markdown, CSV, HTML with its
    Pareto objectives and score weights), the event log; and where models are cached."""
    cache = raw.text("llmeff_cache_dir") or os.environ.get(CACHE_ENV) or str(default_cache_dir())
    paths = {name: raw.text(name) for name in ("llmeff_json", "llmeff_markdown", "llmeff_csv",
                                               "llmeff_benchmark_json", "llmeff_html")}
    pareto, weights = raw.text("llmeff_pareto"), raw.text("llmeff_score_weights")
    if pareto or weights:
        pareto = parse_objectives(pareto) if pareto else None
        weights = tuple(parse_weights(weights).items()) if weights else None
    html = paths["llmeff_html"]
    if html:
        import importlib.util

        if importlib.util.find_spec("plotly") is None:
            raise UsageProblem(f"--llmeff-html={html} needs Plotly, which is not installed: "
                               'pip install "pytest-llmeff[report]"')
    return {"cache_dir": Path(os.path.expanduser(cache)),
            "storage": Path(os.path.expanduser(raw.text("llmeff_storage") or DEFAULT_STORAGE)),
            "save": raw.text("llmeff_save"), "autosave": raw.flag("llmeff_autosave"),
            "json_path": Path(paths["llmeff_json"]) if paths["llmeff_json"] else None,
            "markdown": Path(paths["llmeff_markdown"]) if paths["llmeff_markdown"] else None,
            "csv": Path(paths["llmeff_csv"]) if paths["llmeff_csv"] else None,
            "benchmark_json": Path(paths["llmeff_benchmark_json"]) if paths["llmeff_benchmark_json"] else None,
            "html": Path(html) if html else None, "pareto": pareto, "score_weights": weights,
            "log_json": _user_path(raw.text("llmeff_log_json"))}


def resolve(pytest_config) -> LlmeffConfig:
    """Build the session's options from the CLI, the ini file and the environment. Raises UsageProblem.

    Each option group is read and checked by its own function, in this order (the first problem found is the
    one reported); the report is on when anything asks for results to be kept or compared."""
    raw = _Raw(pytest_config)
    selection, rounds, table = _selection(raw), _rounds(raw), _table(raw)
    hardware, gate = _hardware(raw), _gate(raw)
    lockstep = _lockstep(raw, gate)
    scale = _scale(raw, lockstep)
    outputs, engines = _outputs(raw), _engines(raw)
    report = (raw.flag("llmeff_report") or outputs["save"] is not None or outputs["autosave"]
              or any(outputs[k] is not None for k in ("json_path", "markdown", "csv", "benchmark_json", "html"))
              or gate["compare"] is not None or lockstep["interleave"] is not None or lockstep["ab"] is not None)
    return LlmeffConfig(report=report, **selection, **rounds, **table, **hardware, **gate, **lockstep, **scale,
                        **outputs, **engines)
