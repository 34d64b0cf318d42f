"""Quality drift against a reference variant, measured outside the timed rounds.

- ``token_agreement``: the fraction of greedy output positions equal to the reference's, on the same prompts
  (all prompts in one batch, fixed length ``max_new_tokens``; positions after a first divergence are compared
  too, so a variant that drifts early scores low).
- ``ppl``: perplexity of the variant on ``data/corpus.txt`` (a short English text written for this project and
  dedicated to the public domain), teacher-forced, one sequence, no padding.
- ``ppl_ratio``: ``ppl`` / the reference's ``ppl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
PPL_MAX_TOKENS = 512


@dataclass(frozen=True)
class QualityData:
    """What a variant produced on the quality probe: greedy tokens per prompt, and its perplexity."""

    tokens: tuple[tuple[int, ...], ...]
    ppl: float


def perplexity(loaded, text: str, max_tokens: int = PPL_MAX_TOKENS) -> float:
    """exp(mean next-token cross-entropy) of ``text`` (first ``max_tokens`` tokens) under the model."""
    import torch

    ids = loaded.tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens].to(loaded.device)
    if ids.shape[1] < 2:
        raise ValueError("the perplexity text has fewer than 2 tokens")
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return float(math.exp(loss.item()))


def probe(loaded, prompts: Sequence[str], max_new_tokens: int) -> QualityData:
    """Greedy fixed-length tokens for ``prompts`` (one batch) and the corpus perplexity."""
    gen = loaded.generate(list(prompts), max_new_tokens, fixed_length=True)
    tokens = tuple(tuple(int(t) for t in row) for row in gen.new_ids.tolist())
    return QualityData(tokens=tokens, ppl=perplexity(loaded, CORPUS.read_text(encoding="utf-8")))


def agreement(data: QualityData, reference: QualityData) -> float:
    """Fraction of positions whose greedy token equals the reference's (same prompts, same length)."""
    total = same = 0
    for row, ref in zip(data.tokens, reference.tokens):
        n = min(len(row), len(ref))
        total += max(len(row), len(ref))
        same += sum(1 for a, b in zip(row[:n], ref[:n]) if a == b)
    if total == 0:
        raise ValueError("no generated positions to compare")
    return same / total


def drift_metrics(data: QualityData, reference: QualityData) -> dict[str, list[float]]:
    """The three quality metrics, one sample each."""
    return {"token_agreement": [agreement(data, reference)], "ppl": [data.ppl],
            "ppl_ratio": [data.ppl / reference.ppl]}
