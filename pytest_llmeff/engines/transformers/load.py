"""Load a variant with transformers and generate with it (greedy, left padding, inference mode).

``LoadedModel`` is what the ``llm_model`` fixture gives a test.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pytest_llmeff.engines.base import Capabilities, LoadedEngine
from pytest_llmeff.engines.generation import Generation, count_real_tokens  # noqa: F401
from pytest_llmeff.engines.sources import builtin, integrity, memory_fit
from pytest_llmeff.engines.sources.gguf import ModelSourceError, convert
from pytest_llmeff.engines.transformers.footprint import weights_bytes
from pytest_llmeff.engines.transformers.quant import (
    VariantUnsupported,
    after_load,
    check_supported,
    from_pretrained_kwargs,
    quiet_generation,
    torch_dtype_name,
)
from pytest_llmeff.measure.device_set import model_devices
from pytest_llmeff.measure.oom import translate_oom
from pytest_llmeff.config.variants import Variant, load_id


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return list(ids) if isinstance(ids, (list, tuple)) else [ids]


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel(LoadedEngine):
    """A variant loaded by transformers (the default engine): ``.model`` (a transformers causal LM in eval mode),
    ``.tokenizer`` (left padding) and ``.variant``. ``load_s`` is the load time in seconds, ``converted_s`` the
    one-time conversion time. ``tensor_parallel``: split over the launch's ranks (FLOPs then analytic only)."""

    model: Any
    tokenizer: Any
    variant: Variant
    device: str
    path: Optional[Path]
    load_s: float
    converted_s: Optional[float] = None
    eos_ids: list[int] = field(default_factory=list)
    threads: Optional[int] = None  # torch's thread count when it was loaded (LoadedModel.load sets it)
    devices: tuple[str, ...] = ()  # a device_map model's GPUs (several: metered and peak-counted together)
    tensor_parallel: bool = False  # split over the launch's ranks (--llmeff-parallel=tensor)

    @classmethod
    def load(cls, variant, cache_root: Path, progress, threads: int, tensor_parallel: bool = False) -> "LoadedModel":
        """``load`` below, with torch running ``threads`` CPU threads."""
        import torch

        torch.set_num_threads(threads)
        loaded = load(variant, cache_root, progress, tensor_parallel=tensor_parallel)
        loaded.threads = threads
        return loaded

    @property
    def capabilities(self) -> Capabilities:
        # torch's FlopCounterMode aborts the process inside DTensor's collectives (torch 2.13): no counting then
        return Capabilities(per_token_timing=True, counts_flops=not self.tensor_parallel, quality_logits=True,
                            threads=True)

    def encode(self, prompts: Sequence[str]):
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in batch.items()}

    def generate_ids(self, inputs, max_new_tokens: int, *, fixed_length: bool = False,
                     logits_processor: Optional[list] = None):
        """``model.generate`` on already encoded inputs, greedy, under ``torch.inference_mode``; returns the raw
        output ids (prompt + new). This is the call the benchmark times."""
        import torch
        from transformers import LogitsProcessorList

        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=self.tokenizer.pad_token_id)
        if fixed_length:
            kwargs["min_new_tokens"] = max_new_tokens
        if logits_processor:
            kwargs["logits_processor"] = LogitsProcessorList(logits_processor)
        with torch.inference_mode(), quiet_generation(self.variant):
            return self.model.generate(**inputs, **kwargs)

    def window_logits(self, ids: Sequence[int]):
        """(len(ids), vocab) logits of ``ids`` in one forward pass, on ``device``."""
        import torch

        with torch.inference_mode():
            window = torch.tensor([list(ids)], device=self.device)
            return self.model(input_ids=window).logits[0]

    @property
    def model_bytes(self) -> int:
        """Weights footprint as loaded, in bytes: parameters, buffers and quantization side tensors
        (shared tensors counted once); see ``transformers/footprint.py``."""
        return weights_bytes(self.model)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                     os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"


def local_hub_snapshot(repo_id: str, revision: Optional[str]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, cache_dir=cache))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise ModelSourceError(
            f"model {repo_id + ('@' + revision if revision else '')!r} is not in the local Hugging Face cache "
            f"({cache}); this plugin never downloads at run time: fetch it beforehand with `hf download` "
            "or use a local directory"
        ) from None


def resolve_path(variant: Variant, cache_root: Path, progress=None) -> tuple[Path, Optional[float]]:
    source = variant.model_source
    if source == "alias":
        return builtin.resolve_alias(variant.model, cache_root, progress)
    if source == "gguf":
        return convert(Path(os.path.expanduser(variant.model)), cache_root, progress)
    if source == "directory":
        path = Path(os.path.expanduser(variant.model))
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path}: not a model directory (no config.json)")
        return path, None
    return local_hub_snapshot(variant.model, variant.revision), None


def _attempt(variant: Variant, cache_root: Path, device: str, progress, tensor_parallel: bool = False) -> tuple:
    """Resolve, check the memory fit and load once: (path, the LoadedModel or None, the failure's one line)."""
    path, converted_s = resolve_path(variant, cache_root, progress)
    memory_fit.check_fits(variant, path, device)
    try:
        return path, _load_from(path, variant, device, converted_s, tensor_parallel), None
    except (ModelSourceError, VariantUnsupported):
        raise
    except Exception as exc:
        return path, None, f"{type(exc).__name__}: {integrity.one_line(exc)}"


def load(variant: Variant, cache_root: Path, progress: Optional[Callable[[str], None]] = None,
         tensor_parallel: bool = False) -> LoadedModel:
    """Load ``variant``: resolve its weights (converting once if needed), then load model and tokenizer.

    On CPU the weights are first estimated against the memory available (VariantTooLarge, a skip, instead of
    the kernel's OOM killer). Out of memory while loading is LoadOutOfMemory (one line, memory freed). A cache
    entry the plugin built that fails to load and is damaged (or has no manifest to tell) is rebuilt once.
    ``tensor_parallel``: split over every rank of the launch (``DistributedConfig(tp_plan="auto")``); a
    ``device_map`` or a quantized variant is a skip then (every rank must load alike, or the others wait)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(variant.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VariantUnsupported(f"device={variant.device!r} needs CUDA, which is not available here")
    check_supported(variant, device)
    if tensor_parallel:
        _check_tensor_parallel(variant)
    path, loaded, failure = _attempt(variant, cache_root, device, progress, tensor_parallel)
    if loaded is not None:
        return loaded
    # outside the except block: the failed load's frames (and any half-loaded weights) are released
    owned = variant.model_source in ("alias", "gguf") and integrity.is_plugin_entry(path, cache_root)
    if owned:
        what = integrity.damage(path, full=True)
        if what is None and not integrity.has_manifest(path):
            what = f"loading it failed: {failure}"  # built before manifests: nothing to tell damage from a bug
        owned = what is not None
    if not owned:
        raise ModelSourceError(f"{variant.model}: cannot load from {path} ({failure})")
    integrity.ensure_usable(path, cache_root, progress, problem=what)  # discards it, or raises if rebuilt before
    path, loaded, failure = _attempt(variant, cache_root, device, progress, tensor_parallel)
    if loaded is not None:
        return loaded
    raise ModelSourceError(f"{variant.model}: cannot load from {path} even after rebuilding it ({failure})")


def _check_tensor_parallel(variant: Variant) -> None:
    if variant.device_map:
        raise VariantUnsupported(f"device_map={variant.device_map!r} cannot be combined with "
                                 "--llmeff-parallel=tensor: the model is split over the ranks instead")
    if variant.quantization is not None:
        raise VariantUnsupported(f"quantization={variant.quant_label!r} is not tensor-parallel here; "
                                 "--llmeff-parallel=tensor loads unquantized precisions only")


def _load_from(path: Path, variant: Variant, device: str, converted_s: Optional[float],
               tensor_parallel: bool = False) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    trc = variant.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trc)
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trc)
    try:  # import the modeling code now, so load_s measures loading weights, not a one-time Python import
        AutoModelForCausalLM._model_mapping[type(config)]
    except (KeyError, ImportError, AttributeError):
        pass  # a config transformers does not map (remote code) or cannot import: from_pretrained says why below
    extra = from_pretrained_kwargs(variant)
    placement: dict = {"device_map": variant.device_map or device}
    if tensor_parallel:  # transformers places each rank's shard itself (cuda:<local rank>, or the CPU)
        from transformers.distributed import DistributedConfig

        placement = {"distributed_config": DistributedConfig(tp_plan="auto")}
    name = load_id(variant.model, variant.precision, variant.quantization)
    with translate_oom(name, device, phase="loading"):
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=getattr(torch, torch_dtype_name(variant)), local_files_only=True,
            trust_remote_code=trc, **placement, **extra,
        )
        model = after_load(model, variant)
        if variant.device_map or tensor_parallel:
            device = str(next(model.parameters()).device)
        model.eval()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        load_s = time.perf_counter() - start
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(model=model, tokenizer=tokenizer, variant=variant, device=device, path=path, load_s=load_s,
                         converted_s=converted_s)
    loaded.eos_ids = _eos_ids(model, tokenizer)
    loaded.tensor_parallel = tensor_parallel
    if variant.device_map:
        loaded.devices = model_devices(model)
    return loaded
