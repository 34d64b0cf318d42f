"""How good is the regression gate on this machine? False alarms (A/A) and detection (A/B), measured.

A "session" is one ``pytest_llmeff.runner.run(...)`` of a small real workload with the plugin's default rounds
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
3.6 M parameters with the tiny model's 1024-token BPE tokenizer; seed 1234), float32 on CPU, batch 1, 16 new
tokens, fixed length; one generate takes ~20-50 ms on an idle 2-core machine, so that the model's compute, not
only Python overhead, is timed. ``--model tiny`` uses the built-in 186 k parameter ``tiny-random-llama`` instead.
Everything is built in a temporary directory; nothing is downloaded.

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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pytest_llmeff.config import DEFAULT_ROUNDS, DEFAULT_WARMUP  # noqa: E402

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

    from pytest_llmeff.backends.builtin import build_tiny_llama
    from pytest_llmeff.backends.hf import LoadedModel, _eos_ids, load
    from pytest_llmeff.variants import expand

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


def session(model, args) -> dict[str, list[float]]:
    """One benchmark session: the runner's protocol with the given rounds and warm-up; raw samples by metric."""
    from pytest_llmeff import runner

    measured = runner.run(model, [PROMPT], batch_size=args.batch_size, max_new_tokens=args.new_tokens,
                          rounds=args.rounds, warmup=args.warmup, meter=None, count_flops=False)
    return measured.samples


# --- scoring ---------------------------------------------------------------------------------------------
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

    def rate(self, status: str) -> float:
        return self.gate.get(status, 0) / self.n if self.n else float("nan")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=100, help="A/A comparisons, and as many A/B (default 100)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"timed rounds per session (default config.DEFAULT_ROUNDS = {DEFAULT_ROUNDS})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help=f"warm-up rounds per session (default config.DEFAULT_WARMUP = {DEFAULT_WARMUP})")
    parser.add_argument("--threshold", type=float, default=5.0, help="relative threshold in percent (default 5)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    parser.add_argument("--slowdown", type=float, default=10.0, help="injected slowdown in percent (default 10)")
    parser.add_argument("--model", choices=("small", "tiny"), default="small", help="workload model (default small)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=16, help="new tokens per sequence (default 16)")
    args = parser.parse_args(argv)
    if args.comparisons < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--comparisons and --rounds must be >= 1, --warmup >= 0")

    import platform

    import torch

    from pytest_llmeff.gate import compare, min_exact_p, parse_thresholds

    started_s = time.perf_counter()
    load_before = os.getloadavg()
    thresholds = parse_thresholds(",".join(f"{m}:{args.threshold:g}%" for m in GATED))
    fraction = args.threshold / 100.0
    with tempfile.TemporaryDirectory(prefix="llmeff-gate-quality-") as tmp:
        model = build_model(args.model, Path(tmp))
        slowed = SlowedModel(model, args.slowdown / 100.0)
        n_params = sum(p.numel() for p in model.model.parameters())
        setup_s = time.perf_counter() - started_s

        tallies = {(kind, m): Tally() for kind in ("A/A", "A/B") for m in GATED}
        any_regressed = {"A/A": 0, "A/B": 0}
        latencies_s: list[float] = []
        timed_s = time.perf_counter()
        for i in range(args.comparisons):
            kinds = ("A/A", "A/B") if i % 2 == 0 else ("A/B", "A/A")
            for kind in kinds:
                base = session(model, args)
                current = session(slowed if kind == "A/B" else model, args)
                latencies_s += base["latency_s"]
                flagged = False
                for metric in GATED:
                    verdict = compare(metric, base[metric], current[metric], thresholds[metric], alpha=args.alpha)
                    tallies[(kind, metric)].add(verdict, fraction)
                    flagged = flagged or verdict.status == "regressed"
                any_regressed[kind] += flagged
            if (i + 1) % max(1, args.comparisons // 10) == 0:
                print(f"  {i + 1}/{args.comparisons} comparison pairs, {time.perf_counter() - started_s:.0f} s",
                      file=sys.stderr, flush=True)
        sessions = 4 * args.comparisons
        loop_s = time.perf_counter() - timed_s
    elapsed_s = time.perf_counter() - started_s
    load_after = os.getloadavg()

    n = args.comparisons
    print(f"gate quality: {n} A/A + {n} A/B comparisons ({sessions} sessions), interleaved")
    print(f"gate: one-sided Mann-Whitney U, alpha {args.alpha:g}, threshold {args.threshold:g}% on "
          f"{', '.join(GATED)}; {args.rounds} vs {args.rounds} samples, smallest p = "
          f"{min_exact_p(args.rounds, args.rounds):.4f}")
    print(f"session: runner.run, {args.rounds} timed rounds, {args.warmup} warm-up, meter=None, count_flops=False")
    print(f"workload: {args.model} random Llama, {n_params / 1e6:.2f} M params, float32 CPU, batch {args.batch_size}, "
          f"{args.new_tokens} new tokens; generate latency median {statistics.median(latencies_s) * 1e3:.1f} ms "
          f"(A sessions, p10 {_quantile(latencies_s, 0.1) * 1e3:.1f}, p90 {_quantile(latencies_s, 0.9) * 1e3:.1f})")
    print(f"A/B slowdown: {args.slowdown:g}% busy-wait per generation step (LogitsProcessor, inside generate)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads; load average (1 min) "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print()
    header = f"{'metric':<18} {'scoring':<22} {'A/A regressed':>22} {'A/A near-miss':>22} " \
             f"{'A/B regressed':>22} {'A/B near-miss':>22}"
    print("rates with 95% Wilson intervals")
    print(header)
    print("-" * len(header))
    for metric in GATED:
        aa, ab = tallies[("A/A", metric)], tallies[("A/B", metric)]
        print(f"{metric:<18} {'gate (MWU + threshold)':<22} {_pct(aa.gate.get('regressed', 0), aa.n):>22} "
              f"{_pct(aa.gate.get('near-miss', 0), aa.n):>22} {_pct(ab.gate.get('regressed', 0), ab.n):>22} "
              f"{_pct(ab.gate.get('near-miss', 0), ab.n):>22}")
        print(f"{'':<18} {f'plain median >{args.threshold:g}%':<22} {_pct(aa.plain_worse, aa.n):>22} {'':>22} "
              f"{_pct(ab.plain_worse, ab.n):>22} {'':>22}")
    print(f"{'either metric':<18} {'gate (MWU + threshold)':<22} {_pct(any_regressed['A/A'], n):>22} {'':>22} "
          f"{_pct(any_regressed['A/B'], n):>22}")
    print()
    print("all verdicts (counts):")
    for (kind, metric), tally in tallies.items():
        counts = ", ".join(f"{s} {tally.gate.get(s, 0)}" for s in ("ok", "near-miss", "regressed", "improved",
                                                                  "inconclusive"))
        print(f"  {kind} {metric:<17} {counts}")
    print()
    print("median ratio current/baseline (1.0 = equal; for throughput < 1 is worse, for ttft > 1 is worse):")
    for (kind, metric), tally in tallies.items():
        r = tally.ratios
        print(f"  {kind} {metric:<17} median {statistics.median(r):.3f}, p1 {_quantile(r, 0.01):.3f}, "
              f"p5 {_quantile(r, 0.05):.3f}, p95 {_quantile(r, 0.95):.3f}, p99 {_quantile(r, 0.99):.3f}")
    print()
    aa_tps, ab_tps = tallies[("A/A", "throughput_tok_s")], tallies[("A/B", "throughput_tok_s")]
    false_alarm = aa_tps.rate("regressed")
    false_alarm_any = any_regressed["A/A"] / n
    detection = ab_tps.rate("regressed")
    ok_fa = false_alarm_any <= 0.01
    ok_det = detection >= 0.95
    print(f"targets: A/A false alarms <= 1% (either gated metric): {100 * false_alarm_any:.1f}% "
          f"(throughput alone {100 * false_alarm:.1f}%) -> {'met' if ok_fa else 'NOT met'}; "
          f"A/B detection on throughput >= 95%: {100 * detection:.1f}% -> {'met' if ok_det else 'NOT met'}")
    print(f"time: {elapsed_s:.1f} s total ({setup_s:.1f} s building the model, {loop_s:.1f} s for {sessions} "
          f"sessions, {loop_s / sessions * 1e3:.0f} ms per session)")
    return 0 if ok_fa and ok_det else 1


if __name__ == "__main__":
    sys.exit(main())
