"""How good is each gate mode on this machine, measured with real pytest sessions of the plugin.

Every session here is an ordinary ``python -m pytest`` run of a generated suite, in its own process, exactly as a
user's CI runs it: one test on a small random Llama saved as a local model directory (``--model small``, 3.6 M
parameters; ``--model tiny``: the built-in 186 k one), expanded over ``batch_size=[1, 2]`` (two benchmarks), gated on ``throughput_tok_s`` and ``ttft_s`` with a relative threshold, so a run makes 4 tested comparisons and
``--llmeff-alpha`` is split over them (Bonferroni). A slowdown is injected by a logits processor that runs first
at every generation step and busy-waits F x the time since the previous step (compute-like, inside the timed
call): latency grows by F, throughput drops by F/(1+F) (10% -> 9.1%, 30% -> 23%), prefill and decode alike.
Detection is scored on throughput, false alarms on every gated metric; the measured change of the slowed
comparisons is printed, since an injection is only as good as its measured size. (The first version busy-waited
once after each generate: measured in lockstep, 10% of injected time slowed the rounds by 20-23%, twice the
nominal size, probably the torch worker threads falling asleep during the long wait; per step it is +10-13%.)

Modes (``--modes``, comma separated):

- ``stored``: the stored-baseline gate with 1, 3 and 10 stored runs of history (``--histories``). A pool of
  unchanged (A) and slowed (B) sessions is run first, each writing its run file; then each A session in turn is
  the current run and K other A sessions, drawn at random, the stored history (A/A), and each B session is the
  current run against K A sessions (A/B). The verdicts are made by the plugin's own ``judge.verdicts`` with
  the run's Bonferroni level, i.e. what ``--llmeff-compare`` does with ``--llmeff-compare-history=K``. The
  comparisons are resampled from a finite pool, so they are not independent; the pool size is printed.
- ``lockstep``: two processes by hand, ``--llmeff-interleave=DIR`` with ``--llmeff-role=baseline`` and
  ``candidate`` (20 paired rounds), the candidate's own verdicts read from its run file.
- ``ab``: one command, ``pytest --llmeff-ab=HEAD`` in a git repository whose working tree holds the slowdown
  (HEAD holds none); the candidate's verdicts read from its run file.

Scores, each with a 95% Wilson interval: false alarms per run (any ``regressed`` among its 4 comparisons) and
per comparison (A/A), detection of a 10% and a 30% slowdown (``regressed`` on throughput, per comparison), and
whether the reported minimum detectable effect is honest: among comparisons whose injected slowdown (as a drop
in throughput) is at least the MDE the verdict reported, the share caught (target >= 90%).

    python benchmarks/gate_quality.py [--modes stored,lockstep,ab] [--pool-a 30] [--pool-b 12]
                                      [--runs-aa 30] [--runs-ab 15] [--threshold 5] [--alpha 0.01]

Targets (issue 11): ``--llmeff-ab`` and lockstep: false alarms per run <= 1/100, detection of 10% >= 95/100.
Stored baseline: false alarms per comparison <= 2/100 with any history; the MDE honest. The exit status is 0.
Fewer runs than 100 cannot show "<= 1/100" with 95% confidence; the intervals say how far each figure goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUITE = '''
import os, pathlib, time, pytest

SLOWDOWN = float(pathlib.Path(__file__).with_name("slowdown.txt").read_text().strip() or 0)


class Spin:
    """First logits processor of each generation step: busy-waits SLOWDOWN x the time since the previous step
    ended (the first step: since the call began), so prefill and every decode step are slowed alike, inside the
    timed generate, with the CPU held as compute would hold it."""

    def __init__(self):
        self.last = time.perf_counter()

    def __call__(self, input_ids, scores):
        now = time.perf_counter()
        end = now + (now - self.last) * SLOWDOWN
        while time.perf_counter() < end:
            pass
        self.last = time.perf_counter()
        return scores


@pytest.mark.llm_efficiency(model=os.environ["GQ_MODEL"], max_new_tokens=8, warmup=1, quality=False,
                            batch_size=[1, 2])
def test_speed(llm_benchmark, llm_model):
    if SLOWDOWN:
        original = llm_model.generate_ids

        def slowed(*args, **kwargs):
            kwargs["logits_processor"] = [Spin()] + list(kwargs.get("logits_processor") or [])
            return original(*args, **kwargs)

        llm_model.generate_ids = slowed
    llm_benchmark()
'''
GATED = ("throughput_tok_s", "ttft_s")
SPREAD_LINES: list[str] = []  # the spread of the stored pool's session medians, printed with the results
DETECTED_ON = "throughput_tok_s"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (scipy has it on a result object: use that)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def rate(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{k}/{n} = {100 * k / n if n else 0:.1f}% (95% {100 * low:.1f}-{100 * high:.1f}%)"


@dataclass
class Tally:
    """Counts of one mode (and history size)."""

    runs_aa: int = 0
    runs_aa_alarm: int = 0
    comps_aa: int = 0
    comps_aa_alarm: int = 0
    detect: dict = field(default_factory=dict)  # slowdown -> [caught, comparisons]
    honest: list = field(default_factory=lambda: [0, 0])  # caught, comparisons with slowdown >= reported MDE
    mdes: list = field(default_factory=list)
    changes: dict = field(default_factory=dict)  # slowdown -> measured throughput changes of its comparisons
    pairs: list = field(default_factory=list)  # paired rounds per comparison (lockstep modes)
    seconds: list = field(default_factory=list)  # wall time of one run of this mode

    def add_aa(self, verdicts: list[dict]) -> None:
        tested = [v for v in verdicts if v.get("p_value") is not None or v["status"] == "inconclusive"]
        self.pairs.extend(v["_rounds"] for v in verdicts
                          if (v.get("test") or "").endswith("paired rounds") and v.get("_rounds"))
        self.runs_aa += 1
        self.runs_aa_alarm += any(v["status"] == "regressed" for v in verdicts)
        self.comps_aa += len(tested)
        self.comps_aa_alarm += sum(v["status"] == "regressed" for v in tested)

    def add_ab(self, slowdown: float, verdicts: list[dict]) -> None:
        drop = slowdown / (1 + slowdown)  # the throughput drop the busy-wait causes
        for v in verdicts:
            if v["metric"] != DETECTED_ON:
                continue
            caught = v["status"] == "regressed"
            if v.get("change") is not None:
                self.changes.setdefault(slowdown, []).append(v["change"])
            got = self.detect.setdefault(slowdown, [0, 0])
            got[0] += caught
            got[1] += 1
            if v.get("mde") is not None:
                self.mdes.append(v["mde"])
                if drop >= v["mde"]:
                    self.honest[0] += caught
                    self.honest[1] += 1

    def lines(self, title: str) -> list[str]:
        out = [f"## {title}",
               f"false alarms per run (any of {self.comps_aa // max(self.runs_aa, 1)} comparisons): "
               f"{rate(self.runs_aa_alarm, self.runs_aa)}",
               f"false alarms per comparison: {rate(self.comps_aa_alarm, self.comps_aa)}"]
        for slowdown, (caught, n) in sorted(self.detect.items()):
            out.append(f"detection of a {slowdown * 100:.0f}% slowdown (throughput -{100 * slowdown / (1 + slowdown):.1f}%)"
                       f": {rate(caught, n)}")
            got = sorted(self.changes.get(slowdown, []))
            if got:
                out.append(f"  measured throughput change of those comparisons: median {100 * got[len(got) // 2]:+.1f}%, "
                           f"p10 {100 * got[len(got) // 10]:+.1f}%, p90 {100 * got[(9 * len(got)) // 10]:+.1f}%")
        if self.pairs:
            pr = sorted(self.pairs)
            out.append(f"pairs per A/A comparison: median {pr[len(pr) // 2]}, range {pr[0]}-{pr[-1]}")
        if self.mdes:
            s = sorted(self.mdes)
            out.append(f"reported MDE (throughput): median {100 * s[len(s) // 2]:.1f}%, range "
                       f"{100 * s[0]:.1f}-{100 * s[-1]:.1f}%")
            caught, n = self.honest
            out.append(f"MDE honesty (caught when the drop >= reported MDE): "
                       f"{rate(caught, n) if n else 'no comparison had a drop >= its MDE'}")
        else:
            out.append("reported MDE (throughput): none (unknown)")
        if self.seconds:
            out.append(f"wall time per run: median {sorted(self.seconds)[len(self.seconds) // 2]:.1f} s")
        return out


# --- sessions ---------------------------------------------------------------------------------------------------
def make_suite(folder: Path, slowdown: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_gq.py").write_text(SUITE)
    (folder / "slowdown.txt").write_text(f"{slowdown}\n")
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder


SMALL_LLAMA = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False)


def build_small(cache: Path, folder: Path) -> Path:
    """A random Llama (hidden 256, 4 layers, 3.6 M parameters, the tiny model's tokenizer, seed 1234) saved as a
    local model directory: one generate of 8 tokens takes ~45 ms on the idle VM, so the model's compute, not only
    transformers' per-step overhead, is timed."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(next((cache / "models").glob("tiny-random-llama*")))
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **SMALL_LLAMA)
    torch.manual_seed(1234)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def env_for(cache: Path, model: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LLMEFF_CACHE_DIR=str(cache),
               GQ_MODEL=model)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--llmeff-energy=off", *args]


def verdicts_of(run_file: Path) -> list[dict]:
    data = json.loads(run_file.read_text())
    return [dict(v, _rounds=b.get("rounds")) for b in data["benchmarks"] for v in b.get("verdicts", [])]


def run_session(folder: Path, out: Path, env: dict, args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(pytest_cmd(f"--llmeff-json={out}", *args), cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)
    if not out.exists():
        raise RuntimeError(f"session in {folder} wrote no run file (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    return time.perf_counter() - t0


# --- stored baseline ------------------------------------------------------------------------------------------
def stored_mode(args, work: Path, env: dict) -> dict[int, Tally]:
    from pytest_llmeff.gate.judge import verdicts
    from pytest_llmeff.gate.family import FamilyBudget
    from pytest_llmeff.gate.thresholds import parse_thresholds
    from pytest_llmeff.results.runfile import read_run

    thresholds = parse_thresholds(",".join(f"{m}:{args.threshold:g}%" for m in GATED))
    kinds = ["a"] * args.pool_a + [s for s in args.slowdowns for _ in range(args.pool_b)]
    order = kinds[:]
    random.Random(1).shuffle(order)  # A and B sessions interleaved in time: drift hits both alike
    pool: dict[object, list] = {}
    seconds = []
    folders = {k: make_suite(work / f"stored-{k}", 0.0 if k == "a" else k) for k in set(kinds)}
    for i, kind in enumerate(order):
        out = work / "pool" / f"{i:03d}_{kind}.json"
        seconds.append(run_session(folders[kind], out, env, ["--llmeff-max-time=3"]))
        pool.setdefault(kind, []).append(read_run(out))
        print(f"stored pool: {i + 1}/{len(order)} sessions", file=sys.stderr, flush=True)
    a_runs = pool["a"]
    for kind, runs in sorted(pool.items(), key=lambda kv: str(kv[0])):
        for name in sorted({r.name for run in runs for r in run.benchmarks}):
            medians = sorted(r.metrics[DETECTED_ON].median for run in runs for r in run.benchmarks
                             if r.name == name and DETECTED_ON in r.metrics)
            if len(medians) >= 2:
                import statistics

                sd = statistics.stdev(math.log(m) for m in medians if m > 0)
                label = "unchanged" if kind == "a" else f"slowed {kind * 100:.0f}%"
                SPREAD_LINES.append(f"{label} {name}: {len(medians)} session medians of {DETECTED_ON} "
                                    f"{medians[0]:.4g} .. {medians[len(medians) // 2]:.4g} .. {medians[-1]:.4g} "
                                    f"(sd of logs {sd:.3f}, spread {100 * math.expm1(sd):.1f}%)")
    rng = random.Random(2)
    tallies = {}
    for k in args.histories:
        tally = Tally(seconds=seconds)
        if len(a_runs) < k + 1:
            continue

        def judge(current, history) -> list[dict]:
            m = len(current.benchmarks) * len(GATED)
            level = FamilyBudget(args.alpha, m).level
            found = []
            index = {}
            for run in history:
                for r in run.benchmarks:
                    index.setdefault((r.nodeid, r.name), []).append(r)
            for rec in current.benchmarks:
                sessions = index.get((rec.nodeid, rec.name))
                if not sessions:
                    continue
                for v in verdicts(sessions[0], rec, thresholds, level, False, sessions):
                    found.append({"metric": v.metric, "status": v.status, "p_value": v.p_value, "mde": v.mde})
            return found

        for _ in range(args.resample):
            for i, current in enumerate(a_runs):
                others = a_runs[:i] + a_runs[i + 1:]
                tally.add_aa(judge(current, rng.sample(others, k)))
            for slowdown in args.slowdowns:
                for current in pool.get(slowdown, []):
                    tally.add_ab(slowdown, judge(current, rng.sample(a_runs, k)))
        tallies[k] = tally
    return tallies


# --- lockstep by hand -------------------------------------------------------------------------------------------
def lockstep_run(work: Path, env: dict, slowdown: float, i: int, gate: list[str]) -> tuple[list[dict], float]:
    base = make_suite(work / f"ls-{i}" / "base", 0.0)
    cand = make_suite(work / f"ls-{i}" / "cand", slowdown)
    shared = work / f"ls-{i}" / "turns"
    out = work / f"ls-{i}" / "cand.json"
    t0 = time.perf_counter()
    partner = subprocess.Popen(pytest_cmd(f"--llmeff-interleave={shared}", "--llmeff-role=baseline",
                                          f"--llmeff-json={work / f'ls-{i}' / 'base.json'}"),
                               cwd=base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(pytest_cmd(f"--llmeff-interleave={shared}", "--llmeff-role=candidate", f"--llmeff-json={out}",
                                  *gate), cwd=cand, env=env, capture_output=True, timeout=900)
    finally:
        partner.wait(timeout=900)
    return verdicts_of(out), time.perf_counter() - t0


# --- one command ------------------------------------------------------------------------------------------------
def ab_repo(work: Path) -> Path:
    repo = make_suite(work / "ab-repo", 0.0)
    (repo / ".gitignore").write_text(".llmeff/\n__pycache__/\n*.json\n")
    for cmd in (["init", "-q"], ["config", "user.email", "gq@example.com"], ["config", "user.name", "gq"],
                ["add", "."], ["commit", "-q", "-m", "no slowdown"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, capture_output=True)
    return repo


def ab_run(repo: Path, env: dict, slowdown: float, i: int, gate: list[str]) -> tuple[list[dict], float]:
    (repo / "slowdown.txt").write_text(f"{slowdown}\n")  # the candidate's working tree; HEAD holds 0
    out = repo / f"cand-{i}.json"
    t0 = time.perf_counter()
    proc = subprocess.run(pytest_cmd("--llmeff-ab=HEAD", f"--llmeff-json={out}", *gate), cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)
    if not out.exists():
        raise RuntimeError(f"--llmeff-ab run wrote no run file (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    return verdicts_of(out), time.perf_counter() - t0


def paired_mode(args, work: Path, env: dict, mode: str) -> Tally:
    gate = [f"--llmeff-compare-fail={','.join(f'{m}:{args.threshold:g}%' for m in GATED)}",
            f"--llmeff-alpha={args.alpha:g}"]
    plan = [0.0] * args.runs_aa + [s for s in args.slowdowns for _ in range(args.runs_ab)]
    random.Random(3).shuffle(plan)
    tally = Tally()
    repo = ab_repo(work) if mode == "ab" else None
    for i, slowdown in enumerate(plan):
        if mode == "ab":
            found, seconds = ab_run(repo, env, slowdown, i, gate)
        else:
            found, seconds = lockstep_run(work, env, slowdown, i, gate)
        tally.seconds.append(seconds)
        if slowdown == 0.0:
            tally.add_aa(found)
        else:
            tally.add_ab(slowdown, found)
        print(f"{mode}: {i + 1}/{len(plan)} runs", file=sys.stderr, flush=True)
    return tally


def _floats(text: str) -> list[float]:
    return [float(x) / 100.0 for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="stored,lockstep,ab")
    parser.add_argument("--pool-a", type=int, default=30, help="unchanged sessions in the stored pool (default 30)")
    parser.add_argument("--pool-b", type=int, default=12, help="slowed sessions per slowdown in the pool (default 12)")
    parser.add_argument("--histories", default="1,3,10", help="stored runs of history to score (default 1,3,10)")
    parser.add_argument("--resample", type=int, default=3, help="histories drawn per current session (default 3)")
    parser.add_argument("--runs-aa", type=int, default=30, help="A/A runs per paired mode (default 30)")
    parser.add_argument("--runs-ab", type=int, default=15, help="A/B runs per slowdown per paired mode (default 15)")
    parser.add_argument("--slowdowns", type=_floats, default=[0.1, 0.3], metavar="P,P",
                        help="injected slowdowns in percent (default 10,30)")
    parser.add_argument("--threshold", type=float, default=5.0, help="relative threshold in percent (default 5)")
    parser.add_argument("--alpha", type=float, default=0.01, help="the run's false-alarm budget (default 0.01)")
    parser.add_argument("--model", choices=("small", "tiny"), default="small",
                        help="small: a 3.6 M parameter random Llama saved as a local directory (default); tiny: the "
                             "built-in 186 k parameter model, whose rounds are mostly per-step overhead")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every session (default: unset, torch's own choice)")
    args = parser.parse_args(argv)
    args.histories = [int(x) for x in args.histories.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmeff-gq-") as tmp:
        work = Path(tmp)
        from pytest_llmeff.engines.sources.builtin import build_tiny_llama

        cache = work / "cache"
        build_tiny_llama(cache)
        model = "tiny-random-llama" if args.model == "tiny" else str(build_small(cache, work / "small-model"))
        env = env_for(cache, model)
        lines = [f"# model {args.model}; gate quality: threshold {args.threshold:g}% on {', '.join(GATED)}, alpha {args.alpha:g} per run "
                 f"(Bonferroni over {2 * len(GATED)} comparisons), slowdowns "
                 f"{', '.join(f'{s * 100:.0f}%' for s in args.slowdowns)}"]
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
            lines.append(f"sessions run with OMP_NUM_THREADS={args.threads}")
        if "stored" in modes:
            tallies = stored_mode(args, work, env)
            lines += ["", "## the stored pool: spread of the session medians"] + SPREAD_LINES
            for k, tally in tallies.items():
                lines += [""] + tally.lines(f"stored baseline, {k} stored run{'s' if k != 1 else ''} of history "
                                            f"(pool: {args.pool_a} A + {args.pool_b} per slowdown sessions; "
                                            f"{args.resample} histories drawn per current session)")
        for mode in ("lockstep", "ab"):
            if mode in modes:
                title = ("lockstep by hand (--llmeff-interleave, pairs decided by the candidate)" if mode == "lockstep"
                         else "one command (--llmeff-ab=HEAD, pairs decided by the candidate)")
                lines += [""] + paired_mode(args, work, env, mode).lines(title)
    lines.append(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
