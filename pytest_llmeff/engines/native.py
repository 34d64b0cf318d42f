"""The shared part of the engines outside torch (llama.cpp, CTranslate2, ONNX Runtime GenAI): ``EngineLoaded``
implements the interface's tokenization, padding and per-step hooks once, over two methods each engine writes.

Import-light: torch is imported inside the calls that build tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pytest_llmeff.engines.base import Capabilities, LoadedEngine


@dataclass
class ConfigHolder:
    """Stands where a transformers model would be (``loaded.model``): ``config`` is the source's Hugging Face
    config (context length for the warnings and the probe window, architecture for the analytic FLOPs);
    ``engine`` is the engine's own model object."""

    config: Any
    engine: Any = None


#: what every engine outside torch can measure: per-token stamps, quality logits and threads, no FLOP counting
NATIVE_CAPABILITIES = Capabilities(per_token_timing=True, counts_flops=False, quality_logits=True, threads=True)


@dataclass
class EngineLoaded(LoadedEngine):
    """Tokenization, padding, decoding and step hooks for an engine outside torch.

    A subclass implements ``load`` (the interface's classmethod), ``_generate_rows(rows, max_new_tokens,
    suppress, on_step)`` -> the new token ids per sequence (``rows``: unpadded prompt ids; ``suppress``: ids whose
    logits are masked, for fixed length; ``on_step()``: call once per step right after the step's logits exist),
    ``_logits(ids)`` -> (len, vocab) float32 numpy logits, ``model_bytes`` and ``close()``.
    """

    model: ConfigHolder
    tokenizer: Any
    variant: Any
    device: str
    path: Optional[Path]
    load_s: float
    converted_s: Optional[float] = None
    eos_ids: list = field(default_factory=list)
    threads: int = 1
    engine_type: Optional[str] = None  # the weights' real type as the engine runs them, e.g. "q4_1", "int8_float32"
    timing_note: Optional[str] = None  # what this engine's per-step stamps mean, when it differs from per token

    @property
    def capabilities(self) -> Capabilities:
        return NATIVE_CAPABILITIES

    def encode(self, prompts: Sequence[str]) -> dict:
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def generate_ids(self, inputs, max_new_tokens: int, *, fixed_length: bool = False,
                     logits_processor: Optional[list] = None):
        import torch

        rows = prompt_rows(inputs)
        hooks = list(logits_processor or [])

        def on_step() -> None:
            for hook in hooks:
                hook(None, None)

        suppress = tuple(self.eos_ids) if fixed_length else ()
        new = self._generate_rows(rows, max_new_tokens, suppress, on_step)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in new)
        filler = self.eos_ids[0] if self.eos_ids else pad
        new_t = torch.tensor([list(r) + [filler] * (width - len(r)) for r in new], dtype=torch.long)
        return torch.cat([inputs["input_ids"].to(torch.long), new_t], dim=1)

    def window_logits(self, ids: Sequence[int]):
        """(len(ids), vocab) float32 torch logits of ``ids`` read causally in one sequence."""
        import torch

        return torch.from_numpy(self._logits([int(i) for i in ids]))

    def _generate_rows(self, rows: list[list[int]], max_new_tokens: int, suppress: tuple,
                       on_step: Callable[[], None]) -> list[list[int]]:
        raise NotImplementedError(f"{type(self).__name__} must implement _generate_rows")

    def _logits(self, ids: list[int]):
        raise NotImplementedError(f"{type(self).__name__} must implement _logits")


def prompt_rows(inputs) -> list[list[int]]:
    """The unpadded prompt ids of each sequence of an ``encode()`` batch (padding is where the mask is 0)."""
    rows = []
    for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
        rows.append([int(t) for t, m in zip(ids, mask) if m])
    return rows
