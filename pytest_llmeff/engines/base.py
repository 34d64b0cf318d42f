"""The one interface every engine's loaded model implements (``LoadedEngine``), what it declares it can measure
(``Capabilities``), and the generic ``load`` that finds an engine through the catalog.

Import-light (no torch, no engine package at module level). Which engines exist, and their static facts, is the
leaf catalog ``config/engine_catalog.py``; each engine lives in its own folder beside this file and is imported only
when one of its variants loads (``importlib``, by the module path the catalog names).

**The interface** (what ``bench/runner.py``, ``measure/quality.py``, ``bench/record.py`` and the fixtures call):

- ``load(variant, cache_root, progress, threads, tensor_parallel)`` (classmethod): the loaded model.
- ``encode(prompts) -> inputs``: a dict of torch tensors, ``input_ids`` (batch, padded length) and
  ``attention_mask`` (1 on real tokens), left padded, tokenized once by the model's Hugging Face tokenizer, so
  every engine reads the same token ids. An engine strips the padding before its own call.
- ``generate_ids(inputs, max_new_tokens, fixed_length=, logits_processor=) -> ids``: greedy batched generation;
  returns (batch, padded length + steps) ids, the prompt as given and then the new tokens. With ``fixed_length``
  EOS is suppressed so every sequence makes exactly ``max_new_tokens`` tokens. Each callable in
  ``logits_processor`` is called once per generation step, right after that step's logits exist for the whole
  batch (the transformers ``LogitsProcessor`` contract; engines outside transformers call it with
  ``(None, None)``): the runner's timestamp processor takes the per-step stamps there, so TTFT and ITL mean the
  same for every engine.
- ``decode(inputs, ids) -> Generation``: real-token counts (up to and including the first EOS) and texts;
  ``generate(prompts, ...)`` is encode + generate_ids + decode (both from ``generation.TextGeneration``).
- ``window_logits(ids) -> (len(ids), vocab) float tensor``: the logits of a token sequence in one causal pass
  (the teacher-forced quality probe), on ``device``.
- ``model_bytes``: the weights footprint in bytes; ``load_s`` / ``converted_s``: load and one-time conversion
  seconds; ``threads``: the CPU threads it runs with; ``config``: the source's Hugging Face config (context
  length, analytic FLOPs); ``close()``: free native memory now.
- ``capabilities``: what this loaded model can measure (``Capabilities``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pytest_llmeff.engines.generation import TextGeneration
from pytest_llmeff.errors import VariantUnsupported
from pytest_llmeff.config.engine_catalog import ENGINES, spec


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can measure; callers read these instead of asking which engine it is.

    per_token_timing: its per-step stamps (the logits-processor contract) mark one new token per sequence, so
        TTFT and ITL are per token; False: they mark something coarser, said in the record's ``timing_note``.
    counts_flops: torch's FlopCounterMode sees its matmuls, so FLOPs are counted; False: the analytic count only
        (an engine outside torch, or a tensor-parallel model whose collectives the counter cannot run).
    quality_logits: ``window_logits`` gives the logits the teacher-forced quality probe reads; False: the quality
        drift is not measured for it (a warning says so).
    threads: it runs with the thread count it was given (``--llmeff-threads``), recorded as ``threads``.
    """

    per_token_timing: bool = True
    counts_flops: bool = False
    quality_logits: bool = True
    threads: bool = True


class LoadedEngine(TextGeneration, ABC):
    """A variant loaded by its engine: the interface every engine implements (module docstring for units).

    Attributes every implementation sets: ``variant`` (the ``config.variants.Variant``), ``device`` (``"cpu"``,
    ``"cuda:0"``), ``path`` (the directory or file loaded, or None), ``load_s`` (seconds), ``converted_s``
    (seconds of a one-time conversion, None when none ran), ``tokenizer`` (Hugging Face, left padding),
    ``model`` (an object with ``.config``: the transformers model, or ``native.ConfigHolder``), ``eos_ids``,
    ``threads``. Defaults below: ``devices`` (a device_map model's GPUs), ``engine_type`` (the weights' real type
    as the engine runs them, e.g. ``q4_1``), ``timing_note`` (what the stamps mean when not per token).
    """

    variant: Any
    device: str
    path: Optional[Path]
    load_s: float
    converted_s: Optional[float]
    tokenizer: Any
    model: Any
    eos_ids: list
    threads: Optional[int]
    devices: tuple = ()
    engine_type: Optional[str] = None
    timing_note: Optional[str] = None

    @classmethod
    @abstractmethod
    def load(cls, variant, cache_root: Path, progress: Optional[Callable[[str], None]], threads: int,
             tensor_parallel: bool = False) -> "LoadedEngine":
        """Load ``variant`` (weights resolved and converted once into ``cache_root``), running with ``threads``
        CPU threads; ``tensor_parallel``: split over the launch's ranks (only where the catalog says so)."""

    @abstractmethod
    def encode(self, prompts: Sequence[str]) -> dict:
        """Tokenize ``prompts`` into a left-padded batch: ``input_ids`` and ``attention_mask`` tensors."""

    @abstractmethod
    def generate_ids(self, inputs, max_new_tokens: int, *, fixed_length: bool = False,
                     logits_processor: Optional[list] = None):
        """Greedy generation on an ``encode`` batch: (batch, padded length + steps) ids; ``logits_processor``
        callables once per step (see the module docstring)."""

    @abstractmethod
    def window_logits(self, ids: Sequence[int]):
        """(len(ids), vocab) float logits of ``ids`` read causally as one sequence, on ``device``."""

    @property
    @abstractmethod
    def model_bytes(self) -> int:
        """The weights footprint as loaded, in bytes."""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this loaded model can measure."""

    @property
    def config(self):
        """The source's Hugging Face config (context length, architecture for the analytic FLOPs)."""
        return self.model.config

    def close(self) -> None:
        """Free the engine's native memory now (the model cache calls it when it switches variants)."""


def require_package(engine: str) -> None:
    """VariantUnsupported naming the extra when the engine's Python package is not installed (a skip)."""
    import importlib.util

    s = spec(engine)
    if s.import_name and importlib.util.find_spec(s.import_name) is None:
        raise VariantUnsupported(f"engine={engine!r} needs the package {s.distribution}, which is not installed: "
                                 f"pip install 'pytest-llmeff[{s.extra}]'")


def resolve_threads(threads: Optional[int]) -> int:
    """The thread count every engine runs with: ``--llmeff-threads`` when given, else what torch uses now
    (``torch.get_num_threads()``, itself the cores available unless OMP_NUM_THREADS says otherwise)."""
    if threads:
        return int(threads)
    import torch

    return int(torch.get_num_threads())


def engine_class(engine: str) -> type:
    """The engine's ``LoadedEngine`` class, imported from the module the catalog names (the engine's own package
    is not imported by this: each engine imports it inside ``load``)."""
    import importlib

    s = spec(engine)
    return getattr(importlib.import_module(s.module), s.loaded_class)


def load(variant, cache_root: Path, progress=None, threads: Optional[int] = None,
         tensor_parallel: bool = False) -> LoadedEngine:
    """Load ``variant`` with the engine its ``engine`` names, through that engine's ``LoadedEngine.load``.
    The engine's package missing is a skip naming the extra; ``tensor_parallel`` on an engine the catalog does
    not mark tensor-parallel is a skip too."""
    s = spec(variant.engine)
    if tensor_parallel and not s.tensor_parallel:
        able = ", ".join(repr(name) for name, e in ENGINES.items() if e.tensor_parallel)
        raise VariantUnsupported(f"engine={s.name!r} has no tensor parallelism here; --llmeff-parallel=tensor "
                                 f"loads models of engine={able} only")
    require_package(s.name)
    return engine_class(s.name).load(variant, Path(cache_root), progress, resolve_threads(threads),
                                     tensor_parallel=tensor_parallel)

