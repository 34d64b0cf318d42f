"""torchrun / accelerate launch: every rank runs the benchmarks as a data-parallel replica, rank 0 gathers the
records over torch.distributed (gloo) and alone prints and writes, and energy is read once per physical device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_llmeff.errors import UsageProblem
from pytest_llmeff.scale.launcher import Launch, detect, owns_device

TWO_VARIANTS = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], max_new_tokens=3,
                            rounds=3, warmup=0, quality=False)
def test_gen(llm_benchmark):
    llm_benchmark()
"""

# a fake meter: 1 J per window, and each window's start appended to calls-<RANK>.txt with its device, so the
# test sees which rank read which device's meter
COUNTING_METER = """
import os
import pytest

class CountingMeter:
    method = "fake:counting"
    estimated = False
    resolution_s = 0.0
    fallback_notes = []

    def __init__(self, device):
        self.device = device

    def begin(self):
        with open(f"calls-{os.environ.get('RANK', 'x')}.txt", "a") as fh:
            fh.write(self.device + "\\n")
        import time
        return time.perf_counter()

    def end(self, start):
        import time
        from pytest_llmeff.measure.meter import Measurement
        return Measurement(energy_j=1.0, duration_s=time.perf_counter() - start, method=self.method,
                           estimated=False)

    def gpu_processes(self):
        return []

    def close(self):
        pass

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from pytest_llmeff.measure import meter_set
    meter_set.make_meter = lambda kind, device, *args, **kwargs: CountingMeter(device)
"""


def test_the_launch_comes_from_the_launchers_environment():
    torchrun = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                "TORCHELASTIC_RUN_ID": "x"}
    assert detect(torchrun) == Launch(3, 4, 1, 2, "torchrun")
    assert detect({"WORLD_SIZE": "2", "RANK": "0", "ACCELERATE_MIXED_PRECISION": "no"}).launcher == \
        "accelerate launch"
    assert detect({}) is None and detect({"WORLD_SIZE": "1", "RANK": "0"}) is None
    with pytest.raises(UsageProblem, match="RANK is not set although WORLD_SIZE=2"):
        detect({"WORLD_SIZE": "2"})
    with pytest.raises(UsageProblem, match="RANK=5 is not in 0..1"):
        detect({"WORLD_SIZE": "2", "RANK": "5"})


def test_energy_is_read_once_per_physical_device():
    rank0, rank1 = Launch(0, 2, 0, 2, "torchrun"), Launch(1, 2, 1, 2, "torchrun")
    assert owns_device(rank0, "cpu", []) and not owns_device(rank1, "cpu", [])
    assert owns_device(rank1, "cuda", ["0", "1"])  # each local rank has its own GPU
    assert not owns_device(rank1, "cuda", ["0"])  # two ranks on one GPU: local rank 0 reads it


@pytest.mark.slow
def test_two_ranks_on_cpu_give_one_run_file_with_both_ranks_and_energy_counted_once(llmeff_pytester):
    llmeff_pytester.makepyfile(test_two=TWO_VARIANTS)
    llmeff_pytester.makeconftest(COUNTING_METER)
    out = llmeff_pytester.path / "ranks.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--llmeff-json={out}"],
                          cwd=llmeff_pytester.path, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert text.count("llmeff: results written to") == 1  # rank 0 alone prints and writes
    header = next(line for line in text.splitlines() if line.lstrip().startswith("test ") and "precision" in line)
    assert " rank " in header  # which rank measured each row
    runs = [p for p in llmeff_pytester.path.rglob("*.json") if p.name != "ranks.json"]
    assert runs == []
    data = json.loads(out.read_text())
    by_node: dict = {}
    for b in data["benchmarks"]:
        by_node.setdefault(b["nodeid"], []).append(b)
    assert len(by_node) == 2 and all(sorted(r["rank"] for r in recs) == [0, 1] for recs in by_node.values())
    for recs in by_node.values():
        with_energy = [r["rank"] for r in recs if "energy_j" in r["metrics"]]
        assert with_energy == [0]  # the CPU is read once, by local rank 0
        other = next(r for r in recs if r["rank"] == 1)
        assert other["energy"]["method"].startswith("counted once per device: local rank 0")
    calls = {rank: (llmeff_pytester.path / f"calls-{rank}.txt") for rank in ("0", "1")}
    assert calls["0"].read_text().split() and set(calls["0"].read_text().split()) == {"cpu"}
    assert not calls["1"].exists()  # rank 1 never read a meter: not doubled
    dist = data["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["launcher"] == "torchrun"
    for agg in dist["aggregate"]:
        recs = by_node[agg["nodeid"]]
        assert agg["ranks"] == [0, 1] and agg["energy_ranks"] == 1
        assert agg["throughput_tok_s_sum"] == pytest.approx(
            sum(r["metrics"]["throughput_tok_s"]["median"] for r in recs))
        assert agg["latency_s_slowest"] == max(r["metrics"]["latency_s"]["median"] for r in recs)
    assert sorted(e["worker"] for e in data["loads"]) == ["rank0", "rank0", "rank1", "rank1"]


def test_a_launch_with_xdist_is_one_usage_line(llmeff_pytester, monkeypatch):
    pytest.importorskip("xdist")
    llmeff_pytester.makepyfile(test_two=TWO_VARIANTS)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if "pytest-llmeff:" in line]
    assert len(errors) == 1 and "run it without pytest-xdist's -n" in errors[0]


TENSOR_PARALLEL = """
import json, os
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=4, warmup=1, quality=False)
def test_tp(llm_benchmark, llm_model):
    llm_benchmark()
    inputs = llm_model.encode(["hello world"])
    out = llm_model.generate_ids(inputs, 6, fixed_length=True)
    with open(f"tokens-{os.environ['RANK']}.json", "w") as fh:
        json.dump(out.tolist(), fh)
"""


@pytest.mark.slow
def test_tensor_parallel_on_two_cpu_ranks_generates_the_single_process_tokens_with_rounds_agreed(
        llmeff_pytester, tiny_model):
    """--llmeff-parallel=tensor: transformers splits the model over 2 gloo ranks (its parameters are DTensors);
    greedy tokens equal one process's; the stop rule runs (no fixed rounds) and rank 0's decisions are broadcast,
    so both ranks time the same rounds (without the agreement a rank that stops first leaves the other blocked
    in a collective: this test would time out); one run file, a rank column in the table."""
    llmeff_pytester.makepyfile(test_tp=TENSOR_PARALLEL)
    llmeff_pytester.makeconftest(COUNTING_METER)
    out = llmeff_pytester.path / "tp.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--llmeff-json={out}",
                           "--llmeff-parallel=tensor", "--llmeff-max-time=1", "--llmeff-target-ci=10"],
                          cwd=llmeff_pytester.path, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    data = json.loads(out.read_text())
    recs = sorted(data["benchmarks"], key=lambda b: b["rank"])
    assert [r["rank"] for r in recs] == [0, 1]
    rounds = [len(r["metrics"]["latency_s"]["samples"]) for r in recs]
    assert rounds[0] == rounds[1] >= 6, rounds
    assert recs[0]["stop"]["reason"] == recs[1]["stop"]["reason"]
    dist = data["distributed"]
    assert dist["parallel"] == "tensor" and dist["world_size"] == 2 and dist["backend"] == "gloo"
    (agg,) = dist["aggregate"]
    assert agg["throughput_tok_s_sum"] is None  # one model split over the ranks, not two replicas
    assert agg["throughput_tok_s_group"] == min(r["metrics"]["throughput_tok_s"]["median"] for r in recs)
    assert agg["energy_ranks"] == 1  # the CPU read once, by local rank 0
    tokens = [json.loads((llmeff_pytester.path / f"tokens-{rank}.json").read_text()) for rank in (0, 1)]
    single = tiny_model.generate_ids(tiny_model.encode(["hello world"]), 6, fixed_length=True).tolist()
    assert tokens[0] == tokens[1] == single
    header = next(line for line in text.splitlines() if line.lstrip().startswith("test ") and " rank " in line)
    assert "precision" in header


def test_tensor_parallel_without_a_launch_is_one_usage_line(llmeff_pytester):
    llmeff_pytester.makepyfile(test_two=TWO_VARIANTS)
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-parallel=tensor")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if "pytest-llmeff:" in line]
    assert len(errors) == 1 and "is a single process" in errors[0] and "torchrun" in errors[0]
    result = llmeff_pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmeff-parallel=pipeline")
    errors = [line for line in result.stderr.lines if "pytest-llmeff:" in line]
    assert result.ret == 4 and len(errors) == 1 and "'pipeline' is not allowed; allowed: replicas, tensor" in errors[0]
