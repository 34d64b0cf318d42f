"""What per-step timing costs on CUDA: CUDA events (what the runner uses) vs a synchronize in every step vs no
per-step timing at all, measured side by side, rounds interleaved, on a SmolLM2-135M-shaped random Llama.

    python benchmarks/cuda_step_timing.py [--rounds 30] [--tokens 64] [--batch 1]

Prints the median latency of each mode, its ratio to "none", and how well TTFT + sum(ITL) closes on the
round's wall latency with events. Needs a CUDA GPU (exits 0 with a line without one).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("cuda_step_timing: no CUDA device; nothing to measure")
        return 0
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

    from pytest_llmeff.measure.timing import make_timestamp_processor

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, config.vocab_size, (args.batch, 32), device="cuda")

    class SyncEveryStep(LogitsProcessor):
        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores):
            torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())
            return scores

    def generate(processors):
        kwargs = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, pad_token_id=0)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)

    for _ in range(3):
        generate(None)
    latency = {"none": [], "events": [], "sync": []}
    closure = []
    for _ in range(args.rounds):
        for mode in ("none", "events", "sync"):
            proc = (make_timestamp_processor("cuda:0") if mode == "events" else
                    SyncEveryStep() if mode == "sync" else None)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            if mode == "events":
                proc.start()
            generate([proc] if proc else None)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            latency[mode].append(t1 - t0)
            if mode == "events":
                ttft, _tpot, decode = proc.step_times(t0, t1)
                closure.append((ttft + sum(decode)) / (t1 - t0))
    base = statistics.median(latency["none"])
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; batch {args.batch}, "
          f"{args.tokens} new tokens, {args.rounds} interleaved rounds")
    for mode, values in latency.items():
        med = statistics.median(values)
        print(f"  {mode:6s} median latency {med * 1e3:8.2f} ms   ratio to none {med / base:.3f}")
    print(f"  events: (TTFT + sum ITL) / latency median {statistics.median(closure):.4f}, "
          f"min {min(closure):.4f}, max {max(closure):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
