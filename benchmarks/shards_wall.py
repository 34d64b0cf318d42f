"""Wall time of one collection run unsharded against the same collection as 2 shards run side by side (then
merged), on this machine. Prints each repetition and the median ratio; alternates the order to share drift.

    python benchmarks/shards_wall.py [REPEATS]      (default 3; uses the tiny model: 3 variants x 2 batches)

Both sides run fixed rounds (rounds=4), so they do the same measured work; on a machine with fewer cores than
shards x torch threads the shards compete for the CPU, which this figure includes (it is the point of it).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16", "float16"],
                            batch_size=[1, 4], max_new_tokens=16, rounds=4, warmup=1, quality=False)
def test_gen(llm_benchmark):
    llm_benchmark()
"""


def _pytest(root: Path, out: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py",
                             f"--llmeff-json={out}", *extra], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def unsharded(root: Path) -> float:
    t0 = time.perf_counter()
    assert _pytest(root, "all.json").wait() == 0
    return time.perf_counter() - t0


def sharded(root: Path) -> float:
    t0 = time.perf_counter()
    procs = [_pytest(root, f"s{k}.json", f"--llmeff-shard={k}/2") for k in range(2)]
    assert all(p.wait() == 0 for p in procs)
    subprocess.run([sys.executable, "-m", "pytest_llmeff.cli", "merge", "s0.json", "s1.json", "-o", "m.json"],
                   cwd=root, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = Path(tempfile.mkdtemp(prefix="llmeff-shards-wall-"))
    (root / "test_tiny.py").write_text(TESTS)
    unsharded(root)  # warm: the tiny model is built and cached once
    ratios = []
    for i in range(repeats):
        order = (unsharded, sharded) if i % 2 == 0 else (sharded, unsharded)
        times = {f.__name__: f(root) for f in order}
        ratios.append(times["sharded"] / times["unsharded"])
        print(f"repeat {i + 1}: unsharded {times['unsharded']:.1f} s, 2 shards side by side + merge "
              f"{times['sharded']:.1f} s, ratio {ratios[-1]:.2f}")
    print(f"median ratio sharded/unsharded over {repeats} repeats: {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}) on {os.cpu_count()} logical CPUs")


if __name__ == "__main__":
    main()
