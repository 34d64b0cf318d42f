"""What the plugin costs every pytest run: ``pytest --version`` with and without ``-p no:llmeff``.

The two commands are alternated in one run so machine noise hits both; prints the medians and their ratio.

    python benchmarks/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True)
    if proc.returncode not in (0, 5):  # 5: no tests collected, expected for the collection-only probe
        raise SystemExit(f"pytest {' '.join(args)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for base in (["--version"], ["--collect-only", "-q", "-p", "no:cacheprovider", __file__]):
        with_plugin, without = [], []
        _time(base)  # warm the file cache
        for i in range(args.runs):
            pair = [(with_plugin, base), (without, [*base, "-p", "no:llmeff"])]
            for bucket, cmd in (pair if i % 2 == 0 else reversed(pair)):
                bucket.append(_time(cmd))
        a, b = statistics.median(with_plugin), statistics.median(without)
        label = "pytest " + " ".join(base[:2])
        print(f"{label:<28} median {a * 1e3:.0f} ms with the plugin, {b * 1e3:.0f} ms with -p no:llmeff "
              f"({args.runs} runs each, alternated): ratio {a / b:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
