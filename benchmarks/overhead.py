"""Measurement overhead of llm_benchmark vs a bare, perf_counter-timed ``model.generate``.

Same model, same process, same encoded batch; the two are alternated so drift and noise hit both alike.
Prints each pair and the ratio of median throughputs (target >= 0.97).

    python benchmarks/overhead.py [--model smollm2-135m] [--precision bfloat16] [--batch 4] [--pairs 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per llm_benchmark call")
    args = parser.parse_args()

    import torch

    from pytest_llmeff.bench import runner
    from pytest_llmeff.engines.cache import ModelCache
    from pytest_llmeff.config.options import default_cache_dir
    from pytest_llmeff.session.fixtures import default_prompts
    from pytest_llmeff.measure.energy import CodeCarbonMeter
    from pytest_llmeff.session.marker import expand

    variant = expand({"model": args.model, "precision": args.precision, "batch_size": args.batch,
                      "max_new_tokens": args.new_tokens})[0]
    cache_root = Path(os.environ.get("LLMEFF_CACHE_DIR") or default_cache_dir())
    loaded = ModelCache(cache_root, print).get(variant)
    meter = CodeCarbonMeter("USA")
    batch = runner.make_batch(default_prompts(), args.batch)
    inputs = loaded.encode(batch)

    def bare() -> float:
        total = 0
        seconds = 0.0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, max_new_tokens=args.new_tokens,
                                            min_new_tokens=args.new_tokens, do_sample=False,
                                            pad_token_id=loaded.tokenizer.pad_token_id)
            seconds += time.perf_counter() - t0
            total += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        return total / seconds

    def plugin() -> float:
        spec = runner.RunSpec(batch, batch_size=args.batch, max_new_tokens=args.new_tokens, rounds=args.rounds,
                              warmup=0, count_flops=False)
        measured = runner.run(loaded, spec, meter)
        lat = measured.samples["latency_s"]
        return measured.tokens_generated * len(lat) / sum(lat)

    bare()  # warm-up both paths
    plugin()
    bare_tps, plugin_tps = [], []
    for i in range(args.pairs):
        order = (bare, plugin) if i % 2 == 0 else (plugin, bare)
        for fn in order:
            (bare_tps if fn is bare else plugin_tps).append(fn())
        print(f"pair {i}: bare {bare_tps[-1]:.2f} tok/s   llm_benchmark {plugin_tps[-1]:.2f} tok/s")
    meter.close()
    ratio = statistics.median(plugin_tps) / statistics.median(bare_tps)
    print(f"model={args.model} precision={args.precision} batch={args.batch} new_tokens={args.new_tokens}")
    print(f"median bare {statistics.median(bare_tps):.2f} tok/s, median llm_benchmark "
          f"{statistics.median(plugin_tps):.2f} tok/s")
    print(f"overhead ratio (llm_benchmark / bare) = {ratio:.3f}  (target >= 0.97)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
