"""The engine axis: which inference engine runs a variant, and the one interface every engine's loaded model has.

Import-light (no torch, no engine package at module level): ``variants.py`` reads the engine table from here in
every pytest run. One file per engine beside this one (``llamacpp.py``, ``ct2.py``, ``ortgenai.py``); the
transformers engine is ``hf.py`` (its ``LoadedModel`` has this interface already).

**The interface** (what ``runner.py``, ``quality.py`` and the fixtures call; ``EngineModel`` below):

- ``encode(prompts) -> inputs``: a dict of torch tensors, ``input_ids`` (batch, padded length) and
  ``attention_mask`` (1 on real tokens), left padded, tokenized once by the model's Hugging Face tokenizer, so
  every engine reads the same token ids. An engine strips the padding before its own call.
- ``generate_ids(inputs, max_new_tokens, fixed_length=, logits_processor=) -> ids``: greedy batched generation;
  returns (batch, padded length + steps) ids, the prompt as given and then the new tokens. With ``fixed_length``
  EOS is suppressed so every sequence makes exactly ``max_new_tokens`` tokens. Each callable in
  ``logits_processor`` is called once per generation step, right after that step's logits exist for the whole
  batch (the transformers ``LogitsProcessor`` contract; engines call it with ``(None, None)``): the runner's
  timestamp processor takes the per-step stamps there, so TTFT and ITL mean the same for every engine.
- ``decode(inputs, ids) -> Generation``: real-token counts (up to and including the first EOS) and texts.
- ``window_logits(ids) -> (len(ids), vocab) float tensor``: the logits of a token sequence in one causal pass
  (teacher-forced quality probe); ``None`` where an engine cannot give them.
- ``model_bytes``: the weights footprint in bytes, ``load_s`` / ``converted_s`` in seconds, ``threads``.
- ``counts_flops``: False for engines outside torch: their FLOPs come from the analytic count only.
- ``model.config``: the Hugging Face config of the source (context length, analytic FLOPs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from pytest_llmeff.engines.generation import TextGeneration


@dataclass(frozen=True)
class EngineSpec:
    """One engine: its marker name, the short form in test ids, the Python package it needs (import name and
    distribution), the pytest-llmeff extra that installs it, and the module holding its loader."""

    name: str
    short: str
    module: str
    import_name: Optional[str]
    distribution: Optional[str]
    extra: Optional[str]


ENGINES: dict[str, EngineSpec] = {
    "transformers": EngineSpec("transformers", "", "transformers.load", "transformers", "transformers", None),
    "llama.cpp": EngineSpec("llama.cpp", "llamacpp", "llamacpp.engine", "llama_cpp", "llama-cpp-python", "llamacpp"),
    "ctranslate2": EngineSpec("ctranslate2", "ct2", "ctranslate2.engine", "ctranslate2", "ctranslate2", "ct2"),
    "onnxruntime-genai": EngineSpec("onnxruntime-genai", "ortgenai", "onnxruntime_genai.engine", "onnxruntime_genai",
                                    "onnxruntime-genai", "onnx"),
}
DEFAULT_ENGINE = "transformers"


def spec(engine: str) -> EngineSpec:
    """The engine's spec; ValueError naming the value and the engines allowed."""
    try:
        return ENGINES[engine]
    except (KeyError, TypeError):
        raise ValueError(f"engine={engine!r} is not allowed; allowed: {', '.join(ENGINES)}") from None


def require_package(engine: str) -> None:
    """VariantUnsupported naming the extra when the engine's Python package is not installed (a skip)."""
    import importlib.util

    from pytest_llmeff.errors import VariantUnsupported

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


class EngineModel(Protocol):
    """What a loaded variant offers whatever its engine (see the module docstring for units and meaning)."""

    variant: Any
    device: str
    path: Optional[Path]
    load_s: float
    converted_s: Optional[float]
    tokenizer: Any
    model: Any
    eos_ids: list

    def encode(self, prompts: Sequence[str]) -> dict: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, fixed_length: bool = False,
                 logits_processor: Optional[list] = None): ...

    def generate_ids(self, inputs, max_new_tokens: int, *, fixed_length: bool = False,
                     logits_processor: Optional[list] = None): ...

    def decode(self, inputs, out): ...

    @property
    def model_bytes(self) -> int: ...


@dataclass
class ConfigHolder:
    """Stands where a transformers model would be (``loaded.model``): ``config`` is the source's Hugging Face
    config (context length for the warnings and the probe window, architecture for the analytic FLOPs);
    ``engine`` is the engine's own model object."""

    config: Any
    engine: Any = None


@dataclass
class EngineLoaded(TextGeneration):
    """Shared part of the non-transformers engines: tokenization, padding, decoding, step hooks.

    A subclass implements ``_generate_rows(rows, max_new_tokens, suppress, on_step)`` -> the new token ids per
    sequence (``rows``: unpadded prompt ids; ``suppress``: ids whose logits are masked, for fixed length;
    ``on_step()``: call once per step right after the step's logits exist), ``_logits(ids)`` -> (len, vocab)
    float32 numpy logits or None, ``model_bytes`` and ``close()``.
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
    counts_flops: bool = False

    # -- the interface ------------------------------------------------------------------------------------------
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
        """(len(ids), vocab) float32 torch logits of ``ids`` read causally in one sequence, or None."""
        import torch

        logits = self._logits([int(i) for i in ids])
        return None if logits is None else torch.from_numpy(logits)

    @property
    def model_bytes(self) -> int:
        raise NotImplementedError

    # -- for the subclasses -------------------------------------------------------------------------------------
    def _generate_rows(self, rows: list[list[int]], max_new_tokens: int, suppress: tuple,
                       on_step: Callable[[], None]) -> list[list[int]]:
        raise NotImplementedError

    def _logits(self, ids: list[int]):
        return None

    def close(self) -> None:
        """Free the engine's native memory now (the cache calls it when it switches variants)."""


def prompt_rows(inputs) -> list[list[int]]:
    """The unpadded prompt ids of each sequence of an ``encode()`` batch (padding is where the mask is 0)."""
    rows = []
    for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
        rows.append([int(t) for t, m in zip(ids, mask) if m])
    return rows


def stop_after_eos(row: list[int], eos_ids: Sequence[int]) -> bool:
    """True when ``row`` (new tokens so far) ends with an EOS id."""
    return bool(row) and row[-1] in eos_ids


def hf_tokenizer(path: Path, trust_remote_code: bool = False):
    """The source's Hugging Face tokenizer, left padding, a pad token set (the EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def hf_config(path: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def eos_ids_of(path: Path, config, tokenizer) -> list[int]:
    """EOS ids as transformers' generate would use them: generation_config.json, else the config, else the
    tokenizer."""
    ids = None
    gen = Path(path) / "generation_config.json"
    if gen.is_file():
        import json

        try:
            ids = json.loads(gen.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            ids = None
    if ids is None:
        ids = getattr(config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def load(variant, cache_root: Path, progress=None, threads: Optional[int] = None, tensor_parallel: bool = False):
    """Load ``variant`` with its engine: transformers through ``hf.load``, the others through their module's
    ``load(variant, cache_root, progress, threads)``. The engine's package missing is a skip naming the extra.
    ``tensor_parallel``: split the model over the launch's ranks (transformers only; another engine is a skip)."""
    import importlib

    from pytest_llmeff.errors import VariantUnsupported

    engine = getattr(variant, "engine", DEFAULT_ENGINE)
    if tensor_parallel and engine != DEFAULT_ENGINE:
        raise VariantUnsupported(f"engine={engine!r} has no tensor parallelism here; --llmeff-parallel=tensor "
                                 f"loads transformers models only (engine={DEFAULT_ENGINE!r})")
    s = spec(engine)
    require_package(engine)
    n = resolve_threads(threads)
    if engine == DEFAULT_ENGINE:
        from pytest_llmeff.engines.transformers import load as hf

        if threads:
            import torch

            torch.set_num_threads(n)
        loaded = hf.load(variant, cache_root, progress, tensor_parallel=tensor_parallel)
        loaded.threads = n
        return loaded
    module = importlib.import_module(f"pytest_llmeff.engines.{s.module}")
    return module.load(variant, Path(cache_root), progress, n)


def source_dir(variant, cache_root: Path, progress=None) -> tuple[Path, Optional[float]]:
    """The Hugging Face directory (config, tokenizer, safetensors) of the variant's model: an alias or GGUF goes
    through the same conversion cache as transformers; a hub id must be in the local cache."""
    from pytest_llmeff.engines.transformers.load import resolve_path

    path, converted_s = resolve_path(variant, cache_root, progress)
    if not (Path(path) / "config.json").is_file():
        from pytest_llmeff.errors import ModelSourceError

        raise ModelSourceError(f"{variant.model}: {path} has no config.json")
    return Path(path), converted_s


def env_threads_note() -> Optional[str]:
    """OMP_NUM_THREADS when set (it changes what torch uses by default)."""
    value = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={value}" if value else None
