"""examples/slurm on a real single-node Slurm: an array job runs the shards, a merge job that depends on it
(afterok) merges them and prints the table. Skips when sbatch is missing or no cluster answers, except in CI
(CI=true), where .ci/run starts one (.ci/slurm-up.sh) and a skip would hide a broken example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_shard import SHARDED

SUBMIT = Path(__file__).resolve().parents[1] / "examples" / "slurm" / "submit.sh"


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not installed (.ci/slurm-up.sh installs and starts a single-node Slurm)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"no Slurm cluster answers (sinfo: {(proc.stderr or proc.stdout).strip()[:200]})"
    return None


@pytest.mark.slow
def test_the_slurm_example_runs_shards_as_an_array_job_and_merges_them_after(pytester, tiny_cache):
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Slurm example: {problem}")
        pytest.skip(problem)
    pytester.makepyfile(test_sharded=SHARDED)
    env = dict(os.environ, LLMEFF_CACHE_DIR=str(tiny_cache), HF_HUB_OFFLINE="1", LLMEFF_SLURM_WAIT="1",
               PYTEST_ADDOPTS="--llmeff-max-time=0.5",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.run(["bash", str(SUBMIT), "2", "test_sharded.py", "-p", "no:cacheprovider"],
                          cwd=pytester.path, env=env, capture_output=True, text=True, timeout=600)
    outs = {p.name: p.read_text() for p in pytester.path.glob("llmeff-*.out")}
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n".join(f"{k}:\n{v[-2000:]}" for k, v in outs.items())
    array_job = proc.stdout.split()[2].rstrip(":")
    assert f"array job {array_job}: 2 shard(s)" in proc.stdout
    shard_logs = sorted(k for k in outs if k.startswith("llmeff-shard-"))
    assert shard_logs == [f"llmeff-shard-{array_job}_0.out", f"llmeff-shard-{array_job}_1.out"]
    merge_log = next(v for k, v in outs.items() if k.startswith("llmeff-merge-"))
    assert "merged 2 run(s) (shard(s) 0, 1 of 2): 6 benchmark(s)" in merge_log
    assert merge_log.count("test_gen") == 6  # the merged table: every variant once
    merged = json.loads((pytester.path / ".llmeff" / "shards" / array_job / "merged.json").read_text())
    assert len(merged["benchmarks"]) == 6 and merged["complete"]
    assert sorted(s["index"] for s in merged["merged"]["shards"]) == [0, 1]
    for shard in merged["merged"]["shards"]:
        assert shard["benchmarks"] >= 2  # 3 variants x 2 batch sizes over 2 shards: none empty
