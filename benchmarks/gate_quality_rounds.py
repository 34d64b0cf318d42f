"""How good is the regression gate on this machine? False alarms (A/A) and detection (A/B), measured.

A "session" is one ``pytest_llmeff.bench.runner.run(...)`` of a small real workload with the plugin's default rounds
and warm-up (``config.DEFAULT_ROUNDS`` / ``DEFAULT_WARMUP``; no energy meter, no FLOPs pass), exactly what one
benchmark test does. A comparison is two sessions, baseline first, scored by ``gate.compare`` on
``throughput_tok_s`` and ``ttft_s`` with relative thresholds and alpha:

- A/A: both sessions run the same code. Any "regressed" verdict is a false alarm.
- A/B: the second session is 10% slower. "regressed" on throughput is a detection.

The slowdown is a transformers LogitsProcessor that runs first at every generation step and busy-waits
(spins on ``perf_counter``, holding the CPU like compute would, not sleeping) for ``--slowdown`` percent of the
time that step took since the previous step ended (for the first step: since ``generate`` was entered). So
prefill and every decode step are slowed by the same fraction, TTFT included, and the injected work is inside
the timed ``generate`` call: latency grows by ~10% (throughput drops by ~9.1%).

A/A and A/B comparisons are interleaved in time (their order alternates), so that drift of the machine (other
processes, frequency, caches) hits both kinds alike. The same data are also scored by a plain rule, "median worse
by more than the threshold", without the significance test, for comparison.

Workload (default ``--model small``): a random Llama built here (hidden 256, 4 layers, 8 heads / 4 KV heads,
3.6 M parameters with the tiny model's 1024-token BPE tokenizer; seed 1234), float32 on CPU, batch 1, 8 new
tokens, fixed length; one generate takes ~45 ms on the idle 2-core development machine (about 6 ms per step, of
which ~3.5 ms is transformers' per-step overhead, as the 186 k parameter tiny model shows), so that the model's
compute, not only Python overhead, is timed. ``--model tiny`` uses the built-in 186 k parameter
``tiny-random-llama`` instead. Everything is built in a temporary directory; nothing is downloaded.

    python benchmarks/gate_quality.py [--comparisons 100] [--rounds 5] [--threshold 5] [--alpha 0.01]

Exit status 0 when both targets are met (A/A false alarms <= 1% on either gated metric, A/B detection on
throughput >= 95%), 1 otherwise. Rates are printed with 95% Wilson intervals: with 100 comparisons, 0 false
alarms only bounds the true rate below ~3.7%.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pytest_llmeff.config.options import DEFAULT_INTERLEAVED_ROUNDS, DEFAULT_ROUNDS, DEFAULT_WARMUP  # noqa: E402

GATED = ("throughput_tok_s", "ttft_s")
PROMPT = "the ferryman counted the boats on the pier before the river town woke"
SEED = 1234
SMALL_LLAMA = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False)


# --- the workload ----------------------------------------------------------------------------------------
def build_model(kind: str, cache_dir: Path):
    """A LoadedModel: the built-in tiny model, or the small random Llama (tiny model's tokenizer), float32 CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pytest_llmeff.engines.sources.builtin import build_tiny_llama
    from pytest_llmeff.engines.transformers.load import LoadedModel, _eos_ids, load
    from pytest_llmeff.session.marker import expand

    build_tiny_llama(cache_dir)
    variant = expand({"model": "tiny-random-llama", "device": "cpu"})[0]
    tiny = load(variant, cache_dir)
    if kind == "tiny":
        return tiny
    tok = tiny.tokenizer
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **SMALL_LLAMA)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config).eval()
    loaded = LoadedModel(model=model, tokenizer=tok, variant=variant, device="cpu", path=None, load_s=0.0)
    loaded.eos_ids = _eos_ids(model, tok)
    return loaded


def make_slowdown_processor(fraction: float):
    """A LogitsProcessor that busy-waits ``fraction`` of each step's duration (``start()`` before generate)."""
    from transformers import LogitsProcessor

    class BusyWaitSlowdown(LogitsProcessor):
        def __init__(self):
            self.step_started_s = time.perf_counter()

        def start(self) -> None:
            self.step_started_s = time.perf_counter()

        def __call__(self, input_ids, scores):
            now_s = time.perf_counter()
            deadline_s = now_s + fraction * (now_s - self.step_started_s)
            while time.perf_counter() < deadline_s:  # spin: hold the CPU like compute, do not sleep
                pass
            self.step_started_s = time.perf_counter()
            return scores

    return BusyWaitSlowdown()


class SlowedModel:
    """``loaded`` with every ``generate_ids`` call slowed by ``fraction`` (busy-wait per step, inside generate)."""

    def __init__(self, loaded, fraction: float):
        self._loaded = loaded
        self._fraction = fraction

    def __getattr__(self, name):
        return getattr(self._loaded, name)

    def generate_ids(self, inputs, max_new_tokens, *, fixed_length=False, logits_processor=None):
        slow = make_slowdown_processor(self._fraction)
        slow.start()
        # first in the list, so the runner's timestamp processor stamps after the injected work
        return self._loaded.generate_ids(inputs, max_new_tokens, fixed_length=fixed_length,
                                         logits_processor=[slow] + list(logits_processor or []))


def session(model, args, after_round=None) -> dict[str, list[float]]:
    """One benchmark session: the runner's protocol with the given rounds and warm-up; raw samples by metric."""
    from pytest_llmeff.bench import runner

    spec = runner.RunSpec((PROMPT,), batch_size=args.batch_size, max_new_tokens=args.new_tokens, rounds=args.rounds,
                          warmup=args.warmup, count_flops=False)
    measured = runner.run(model, spec, None, hooks=runner.RoundHooks(after_round=after_round))
    return measured.samples


def plan(comparisons: int) -> list[str]:
    """The kinds of the comparisons in order: A/A and A/B alternate (pairs in alternating order)."""
    kinds: list[str] = []
    for i in range(comparisons):
        kinds += ["A/A", "A/B"] if i % 2 == 0 else ["A/B", "A/A"]
    return kinds


def worker(args) -> int:
    """One side of the lockstep pair (``--worker baseline|candidate``): every session of the plan, taking turns
    with the other worker round by round through ``pytest_llmeff.lockstep.turnstile.Turnstile`` (what
    ``--llmeff-interleave`` does in a pytest run). The candidate runs the slowed model in A/B comparisons.
    Takes turns in ``<dir>/pair`` (which holds the turnstile's files only) and writes one JSON line of samples per
    session to ``<dir>/<role>.jsonl``."""
    import json

    from pytest_llmeff.lockstep.turnstile import Turnstile

    directory = Path(args.dir)
    with tempfile.TemporaryDirectory(prefix=f"llmeff-gate-{args.worker}-") as tmp:
        model = build_model(args.model, Path(tmp))
        slowed = SlowedModel(model, args.slowdown / 100.0)
        turnstile = Turnstile(directory / "pair", args.worker, start_timeout_s=300)
        turnstile.start()
        with open(directory / f"{args.worker}.jsonl", "w", encoding="utf-8") as out:
            for kind in plan(args.comparisons):
                use = slowed if (kind == "A/B" and args.worker == "candidate") else model
                # fixed rounds on both sides: pass the turn after each round and keep the rule's reason
                samples = session(use, args, after_round=lambda _s, _n, _e, reason: (turnstile.step(), reason)[1])
                out.write(json.dumps({"kind": kind, "alone": turnstile.alone,
                                      "samples": {m: samples[m] for m in GATED + ("latency_s",)}}) + "\n")
        turnstile.finish()
    return 0


def run_interleaved(args, collected_rounds: int) -> tuple[list["Comparison"], list[float], bool]:
    """Start the two lockstep workers, wait, and read their sessions back as comparisons (paired)."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory(prefix="llmeff-gate-lockstep-") as tmp:
        common = [sys.executable, __file__, "--dir", tmp, "--comparisons", str(args.comparisons),
                  "--rounds", str(collected_rounds), "--warmup", str(args.warmup), "--slowdown", str(args.slowdown),
                  "--model", args.model, "--batch-size", str(args.batch_size), "--new-tokens", str(args.new_tokens)]
        procs = [subprocess.Popen(common + ["--worker", role]) for role in ("baseline", "candidate")]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            raise SystemExit(f"a lockstep worker failed (exit codes {codes})")
        sides = [[json.loads(line) for line in (Path(tmp) / f"{role}.jsonl").read_text().splitlines()]
                 for role in ("baseline", "candidate")]
    comparisons, latencies, alone = [], [], False
    for base, cur in zip(*sides):
        comparisons.append(Comparison(base["kind"], {m: base["samples"][m] for m in GATED},
                                      {m: cur["samples"][m] for m in GATED}, paired=True))
        latencies += base["samples"]["latency_s"][:args.rounds]
        alone = alone or base["alone"] or cur["alone"]
    return comparisons, latencies, alone


# --- scoring ---------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """One comparison's raw per-round samples of the gated metrics, baseline and current session."""

    kind: str  # "A/A" or "A/B"
    baseline: dict[str, list[float]]
    current: dict[str, list[float]]
    paired: bool = False  # rounds ran in lockstep: scored by gate.compare_paired


@dataclass
class Tally:
    """Outcomes of one kind of comparison (A/A or A/B) for one metric."""

    gate: dict[str, int] = field(default_factory=dict)  # verdict status -> count
    plain_worse: int = 0  # plain rule: median worse by more than the threshold
    ratios: list[float] = field(default_factory=list)  # current median / baseline median
    n: int = 0

    def add(self, verdict, threshold_fraction: float) -> None:
        self.n += 1
        self.gate[verdict.status] = self.gate.get(verdict.status, 0) + 1
        if verdict.worse_by is not None and verdict.worse_by > threshold_fraction:
            self.plain_worse += 1
        if verdict.baseline_median:
            self.ratios.append(verdict.current_median / verdict.baseline_median)

    def count(self, status: str) -> int:
        return self.gate.get(status, 0)


@dataclass
class Score:
    """All comparisons scored with one (rounds, threshold) setting."""

    rounds: int
    threshold_pct: float
    tallies: dict[tuple[str, str], Tally]
    either_regressed: dict[str, int]  # kind -> comparisons with a "regressed" verdict on any gated metric
    n_per_kind: dict[str, int]


def score(comparisons: list[Comparison], rounds: int, threshold_pct: float, alpha: float) -> Score:
    """Score every comparison on the first ``rounds`` samples of each session with ``gate.compare``."""
    from pytest_llmeff.gate.thresholds import parse_thresholds
    from pytest_llmeff.gate.two_sample import compare, compare_paired

    thresholds = parse_thresholds(",".join(f"{m}:{threshold_pct:g}%" for m in GATED))
    tallies = {(kind, m): Tally() for kind in ("A/A", "A/B") for m in GATED}
    either = {"A/A": 0, "A/B": 0}
    n_per_kind = {"A/A": 0, "A/B": 0}
    for c in comparisons:
        n_per_kind[c.kind] += 1
        flagged = False
        for metric in GATED:
            judge = compare_paired if c.paired else compare
            verdict = judge(metric, c.baseline[metric][:rounds], c.current[metric][:rounds], thresholds[metric],
                            alpha=alpha)
            tallies[(c.kind, metric)].add(verdict, threshold_pct / 100.0)
            flagged = flagged or verdict.status == "regressed"
        either[c.kind] += flagged
    return Score(rounds, threshold_pct, tallies, either, n_per_kind)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _pct(count: int, n: int) -> str:
    lo, hi = wilson_interval(count, n)
    return f"{100 * count / n:5.1f}% [{100 * lo:.1f}-{100 * hi:.1f}]" if n else "n/a"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def targets_met(result: Score) -> tuple[bool, bool]:
    """(A/A false alarms on either gated metric <= 1%, A/B detection on throughput >= 95%)."""
    n_aa, n_ab = result.n_per_kind["A/A"], result.n_per_kind["A/B"]
    false_alarm = result.either_regressed["A/A"] / n_aa
    detection = result.tallies[("A/B", "throughput_tok_s")].count("regressed") / n_ab
    return false_alarm <= 0.01, detection >= 0.95


def print_score(result: Score) -> None:
    n = result.n_per_kind["A/A"]
    header = (f"{'metric':<18} {'scoring':<22} {'A/A regressed':>22} {'A/A near-miss':>22} "
              f"{'A/B regressed':>22} {'A/B near-miss':>22}")
    print(f"rates with 95% Wilson intervals ({result.rounds} rounds, threshold {result.threshold_pct:g}%)")
    print(header)
    print("-" * len(header))
    for metric in GATED:
        aa, ab = result.tallies[("A/A", metric)], result.tallies[("A/B", metric)]
        print(f"{metric:<18} {'gate (test + threshold)':<22} {_pct(aa.count('regressed'), aa.n):>22} "
              f"{_pct(aa.count('near-miss'), aa.n):>22} {_pct(ab.count('regressed'), ab.n):>22} "
              f"{_pct(ab.count('near-miss'), ab.n):>22}")
        plain = f"plain median >{result.threshold_pct:g}%"
        print(f"{'':<18} {plain:<22} {_pct(aa.plain_worse, aa.n):>22} {'':>22} {_pct(ab.plain_worse, ab.n):>22}")
    print(f"{'either metric':<18} {'gate (test + threshold)':<22} {_pct(result.either_regressed['A/A'], n):>22} "
          f"{'':>22} {_pct(result.either_regressed['A/B'], n):>22}")
    print()
    print("all verdicts (counts):")
    for (kind, metric), tally in result.tallies.items():
        counts = ", ".join(f"{s} {tally.count(s)}" for s in ("ok", "near-miss", "regressed", "improved",
                                                              "inconclusive"))
        print(f"  {kind} {metric:<17} {counts}")
    print()
    print("median ratio current/baseline (1.0 = equal; for throughput < 1 is worse, for ttft > 1 is worse):")
    for (kind, metric), tally in result.tallies.items():
        r = tally.ratios
        print(f"  {kind} {metric:<17} median {statistics.median(r):.3f}, p1 {_quantile(r, 0.01):.3f}, "
              f"p5 {_quantile(r, 0.05):.3f}, p95 {_quantile(r, 0.95):.3f}, p99 {_quantile(r, 0.99):.3f}")


def print_sweep(comparisons: list[Comparison], rounds_list: list[int], thresholds_pct: list[float],
                alpha: float) -> list[tuple[int, float]]:
    """The gate's rates for each (rounds, threshold); returns the settings that meet both targets."""
    meeting = []
    print(f"{'rounds':>6} {'threshold':>9} {'A/A false alarms (either)':>27} {'A/A tps':>7} {'A/A ttft':>8} "
          f"{'A/B detect tps':>22} {'A/B detect ttft':>15}  targets")
    for rounds in rounds_list:
        for threshold_pct in thresholds_pct:
            result = score(comparisons, rounds, threshold_pct, alpha)
            n_aa, n_ab = result.n_per_kind["A/A"], result.n_per_kind["A/B"]
            t = result.tallies
            ok_fa, ok_det = targets_met(result)
            if ok_fa and ok_det:
                meeting.append((rounds, threshold_pct))
            print(f"{rounds:>6} {threshold_pct:>8g}% {_pct(result.either_regressed['A/A'], n_aa):>27} "
                  f"{100 * t[('A/A', 'throughput_tok_s')].count('regressed') / n_aa:>6.1f}% "
                  f"{100 * t[('A/A', 'ttft_s')].count('regressed') / n_aa:>7.1f}% "
                  f"{_pct(t[('A/B', 'throughput_tok_s')].count('regressed'), n_ab):>22} "
                  f"{100 * t[('A/B', 'ttft_s')].count('regressed') / n_ab:>14.1f}%  "
                  f"{'met' if ok_fa and ok_det else 'not met'}")
    return meeting


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def run_sequential(args, collected_rounds: int) -> tuple[list[Comparison], list[float]]:
    """Comparisons of two sessions run one after the other in this process (the stored-baseline gate)."""
    session_args = argparse.Namespace(**{**vars(args), "rounds": collected_rounds})
    comparisons: list[Comparison] = []
    latencies_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llmeff-gate-quality-") as tmp:
        model = build_model(args.model, Path(tmp))
        slowed = SlowedModel(model, args.slowdown / 100.0)
        for i, kind in enumerate(plan(args.comparisons)):
            base = session(model, session_args)
            current = session(slowed if kind == "A/B" else model, session_args)
            latencies_s += base["latency_s"][:collected_rounds]
            comparisons.append(Comparison(kind, {m: base[m] for m in GATED}, {m: current[m] for m in GATED}))
            if (i + 1) % max(1, 2 * args.comparisons // 10) == 0:
                print(f"  sequential: {i + 1}/{2 * args.comparisons} comparisons", file=sys.stderr, flush=True)
    return comparisons, latencies_s


def report(title: str, comparisons: list[Comparison], latencies_s: list[float], rounds: int, collected: int,
           args, sweep_rounds: Optional[list[int]], sweep_thresholds: Optional[list[float]]) -> bool:
    """Print one mode's scores; True when both targets are met with ``rounds`` and ``--threshold``."""
    from pytest_llmeff.gate.two_sample import min_exact_p, min_exact_p_paired

    paired = comparisons[0].paired
    n = args.comparisons
    result = score(comparisons, rounds, args.threshold, args.alpha)
    test = ("one-sided Wilcoxon signed-rank on paired rounds (gate.compare_paired)" if paired
            else "one-sided Mann-Whitney U (gate.compare)")
    smallest = min_exact_p_paired(rounds) if paired else min_exact_p(rounds, rounds)
    print(f"== {title}: {n} A/A + {n} A/B comparisons, {rounds} rounds per side ==")
    print(f"gate: {test}, alpha {args.alpha:g}, threshold {args.threshold:g}% on {', '.join(GATED)}; "
          f"smallest p = {smallest:.4g}")
    if collected != rounds:
        print(f"sessions ran {collected} rounds; scored on the first {rounds}")
    print(f"generate latency median {statistics.median(latencies_s) * 1e3:.1f} ms (baseline side, p10 "
          f"{_quantile(latencies_s, 0.1) * 1e3:.1f}, p90 {_quantile(latencies_s, 0.9) * 1e3:.1f})")
    print()
    print_score(result)
    print()
    aa_tps = result.tallies[("A/A", "throughput_tok_s")]
    ab_tps = result.tallies[("A/B", "throughput_tok_s")]
    ok_fa, ok_det = targets_met(result)
    print(f"targets ({title}): A/A false alarms <= 1% (either gated metric): "
          f"{100 * result.either_regressed['A/A'] / n:.1f}% (throughput alone "
          f"{100 * aa_tps.count('regressed') / n:.1f}%) -> {'met' if ok_fa else 'NOT met'}; "
          f"A/B detection on throughput >= 95%: {100 * ab_tps.count('regressed') / n:.1f}% -> "
          f"{'met' if ok_det else 'NOT met'}")
    if sweep_rounds or sweep_thresholds:
        print()
        print(f"sweep ({title}, alpha {args.alpha:g}; the same sessions scored on their first k rounds):")
        meeting = print_sweep(comparisons, sorted(set(sweep_rounds or [rounds])),
                              sorted(set(sweep_thresholds or [args.threshold])), args.alpha)
        print("settings meeting both targets: " + (", ".join(f"rounds {r}, threshold {t:g}%" for r, t in meeting)
                                                  or "none"))
    print()
    return ok_fa and ok_det


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("both", "sequential", "interleaved"), default="both",
                        help="sequential: baseline session, then current session (a stored baseline); "
                             "interleaved: two processes in lockstep (--llmeff-interleave); default both")
    parser.add_argument("--comparisons", type=int, default=100, help="A/A comparisons, and as many A/B (default 100)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"timed rounds per session (default: the plugin's, config.DEFAULT_ROUNDS = "
                             f"{DEFAULT_ROUNDS} sequential, config.DEFAULT_INTERLEAVED_ROUNDS = "
                             f"{DEFAULT_INTERLEAVED_ROUNDS} interleaved)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help=f"warm-up rounds per session (default config.DEFAULT_WARMUP = {DEFAULT_WARMUP})")
    parser.add_argument("--threshold", type=float, default=5.0, help="relative threshold in percent (default 5)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    parser.add_argument("--slowdown", type=float, default=10.0, help="injected slowdown in percent (default 10)")
    parser.add_argument("--model", choices=("small", "tiny"), default="small", help="workload model (default small)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=8, help="new tokens per sequence (default 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the run (default: torch's own choice, as in the plugin)")
    parser.add_argument("--sweep-rounds", type=_int_list, default=None, metavar="N,N,...",
                        help="also score with these rounds: sessions then run the largest count, and a k-round "
                             "session is scored on the first k rounds of each session")
    parser.add_argument("--sweep-thresholds", type=_float_list, default=None, metavar="P,P,...",
                        help="also score with these thresholds in percent (from the same sessions)")
    parser.add_argument("--worker", choices=("baseline", "candidate"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.comparisons < 1 or (args.rounds is not None and args.rounds < 1) or args.warmup < 0:
        parser.error("--comparisons and --rounds must be >= 1, --warmup >= 0")
    if args.sweep_rounds and min(args.sweep_rounds) < 1:
        parser.error("--sweep-rounds values must be >= 1")

    import platform

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args)

    started_s = time.perf_counter()
    load_before = os.getloadavg()
    modes = ("sequential", "interleaved") if args.mode == "both" else (args.mode,)
    met = {}
    print(f"gate quality on {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads")
    print(f"workload: {args.model} random Llama, float32 CPU, batch {args.batch_size}, {args.new_tokens} new tokens; "
          f"A/B slowdown {args.slowdown:g}% busy-wait per generation step (LogitsProcessor, inside generate)")
    print()
    for mode in modes:
        rounds = args.rounds or (DEFAULT_INTERLEAVED_ROUNDS if mode == "interleaved" else DEFAULT_ROUNDS)
        collected = max([rounds] + (args.sweep_rounds or []))
        mode_started_s = time.perf_counter()
        if mode == "sequential":
            comparisons, latencies = run_sequential(args, collected)
            title = "sequential (stored baseline, then this run)"
        else:
            comparisons, latencies, alone = run_interleaved(args, collected)
            title = "interleaved (two processes in lockstep)"
            if alone:
                print("WARNING: a worker went on alone at some point: some rounds were not interleaved")
        met[mode] = report(title, comparisons, latencies, rounds, collected, args, args.sweep_rounds,
                           args.sweep_thresholds)
        print(f"time ({mode}): {time.perf_counter() - mode_started_s:.1f} s for {4 * args.comparisons} sessions of "
              f"{collected} rounds")
        print()
    load_after = os.getloadavg()
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"total {time.perf_counter() - started_s:.1f} s")
    print("targets met: " + ", ".join(f"{mode} {'yes' if ok else 'no'}" for mode, ok in met.items()))
    return 0 if met.get("interleaved", met.get("sequential")) else 1


if __name__ == "__main__":
    sys.exit(main())
