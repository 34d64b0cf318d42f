"""What one batched generate gives back, for every engine: the ``Generation`` record, the count of real tokens,
and the two steps every loaded model shares around its own ``generate_ids`` (``TextGeneration``): text in, and
ids split into new tokens, counts and texts. Every engine's loaded model inherits it through the interface
(``base.LoadedEngine``: transformers' ``LoadedModel``, and ``native.EngineLoaded`` for the others), so the counting that throughput depends on is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass
class Generation:
    """The output of one batched ``generate``.

    new_ids: (batch, steps) tensor of generated ids, padding included after EOS.
    tokens_per_seq: real generated tokens per sequence: up to and including the first EOS, nothing after.
    prompt_tokens_per_seq: prompt tokens per sequence, padding excluded.
    texts: decoded real tokens per sequence (special tokens skipped).
    steps: generation steps taken (= new_ids.shape[1]).
    padded_prompt_len: the prompt length after left padding (tokens).
    """

    new_ids: Any
    tokens_per_seq: list[int]
    prompt_tokens_per_seq: list[int]
    texts: list[str]
    steps: int
    padded_prompt_len: int

    @property
    def tokens_total(self) -> int:
        return sum(self.tokens_per_seq)

    @property
    def prompt_tokens_total(self) -> int:
        return sum(self.prompt_tokens_per_seq)


def count_real_tokens(new_ids, eos_ids: Sequence[int]) -> list[int]:
    """Per sequence: generated tokens up to and including the first EOS (everything after is padding)."""
    counts = []
    eos = set(int(e) for e in eos_ids)
    for row in new_ids.tolist():
        n = len(row)
        for i, tok in enumerate(row):
            if tok in eos:
                n = i + 1
                break
        counts.append(n)
    return counts


class TextGeneration:
    """``generate`` (text in) and ``decode`` (ids out) over a subclass's ``encode(prompts)``,
    ``generate_ids(inputs, max_new_tokens, fixed_length=, logits_processor=)``, ``tokenizer`` and ``eos_ids``."""

    tokenizer: Any
    eos_ids: list

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, fixed_length: bool = False,
                 logits_processor: Optional[list] = None) -> Generation:
        """Greedy batched generation. With ``fixed_length`` EOS is suppressed so every sequence produces
        exactly ``max_new_tokens`` tokens (the benchmark protocol); otherwise generation stops at EOS."""
        if isinstance(prompts, str):
            prompts = [prompts]
        inputs = self.encode(prompts)  # type: ignore[attr-defined]
        out = self.generate_ids(inputs, max_new_tokens, fixed_length=fixed_length,  # type: ignore[attr-defined]
                                logits_processor=logits_processor)
        return self.decode(inputs, out)

    def decode(self, inputs, out) -> Generation:
        """Split ``out`` into new tokens and count the real ones (no padding, nothing after EOS)."""
        padded = inputs["input_ids"].shape[1]
        new_ids = out[:, padded:]
        counts = count_real_tokens(new_ids, self.eos_ids)
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new_ids.tolist(), counts)]
        prompt_counts = [int(x) for x in inputs["attention_mask"].sum(dim=1).tolist()]
        return Generation(new_ids=new_ids, tokens_per_seq=counts, prompt_tokens_per_seq=prompt_counts, texts=texts,
                          steps=int(new_ids.shape[1]), padded_prompt_len=int(padded))
