"""The CTranslate2 engine (``engine="ctranslate2"``, extra ``ct2``).

Source: any Hugging Face directory the transformers engine can read (an alias, a GGUF through its safetensors
cache, a local directory, a cached hub id), converted once with ``ctranslate2.converters.TransformersConverter``
into the conversion cache (key: source hash, engine version, stored weight type). Precisions and quantizations:

| marker | stored weights | ``compute_type`` |
|---|---|---|
| ``float32`` | float32 | float32 |
| ``bfloat16`` / ``float16`` | float32 | bfloat16 / float16, where ``ctranslate2.get_supported_compute_types`` has it |
| ``float32`` + ``quantization="int8"`` | int8 | int8_float32 (CTranslate2's int8 matmuls, not bitsandbytes) |

Everything else is a skip with the reason. Generation: ``generate_batch`` (greedy: ``sampling_topk=1``; fixed
length: ``min_length = max_length = max_new_tokens``; prompts unpadded: CTranslate2 batches unequal lengths
itself: its decoding loop starts at the end of the SHORTEST prompt and feeds the longer prompts' remaining tokens
step by step). Per-step stamps: its per-token ``callback``; token k is stamped when the LAST sequence of the
batch has its k-th token (sequences with shorter prompts run ahead while longer prompts are still being read),
so the stamps mean what they mean for transformers: the whole batch has k tokens. Logits: ``forward_batch``.
Footprint: the size of the converted ``model.bin`` (CTranslate2 holds the weights as stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.engines.sources import convert_cache
from pytest_llmeff.engines.hf_source import eos_ids_of, hf_config, hf_tokenizer, source_dir
from pytest_llmeff.engines.native import ConfigHolder, EngineLoaded
from pytest_llmeff.errors import VariantUnsupported
from pytest_llmeff.config.engine_catalog import spec

SPEC = spec("ctranslate2")
#: CTranslate2's compute_type of each precision the catalog lists for it (its own names are the marker's)
COMPUTE = {precision: precision for precision in SPEC.precisions}


def plan(variant, device: str) -> tuple[str, str]:
    """(stored weight type for the converter, compute_type) for ``variant``; VariantUnsupported otherwise."""
    import ctranslate2

    q = variant.quantization
    if q is not None:
        if q.method not in SPEC.quantizations or q.label != q.method or variant.precision != "float32":
            raise VariantUnsupported(f"engine='ctranslate2' runs quantization=None or 'int8' (its own int8 weights) "
                                     f"with precision='float32'; got precision={variant.precision!r}, "
                                     f"quantization={q.label!r}")
        stored, compute = "int8", "int8_float32"
    elif variant.precision in COMPUTE:
        stored, compute = "float32", COMPUTE[variant.precision]
    else:
        raise VariantUnsupported(f"engine='ctranslate2' has no precision={variant.precision!r}; it runs "
                                 f"{', '.join(COMPUTE)} (and quantization='int8')")
    supported = ctranslate2.get_supported_compute_types(device)
    if compute not in supported:
        raise VariantUnsupported(f"engine='ctranslate2' cannot compute in {compute} on this {device} "
                                 f"(supported here: {', '.join(sorted(supported))})")
    return stored, compute


def _device(variant) -> str:
    import ctranslate2

    device = variant.device
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device.startswith("cuda") and ctranslate2.get_cuda_device_count() == 0:
        raise VariantUnsupported(f"engine='ctranslate2' has no CUDA device here (device={device!r})")
    return device


def convert(source: Path, cache_root: Path, stored: str, progress=None) -> tuple[Path, Optional[float]]:
    """The converted CTranslate2 model for ``source`` with ``stored`` weights (cached)."""
    import ctranslate2

    def build(tmp: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        copy = [name for name in ("tokenizer.json",) if (source / name).is_file()]
        TransformersConverter(str(source), copy_files=copy, low_cpu_mem_usage=True).convert(
            str(tmp), quantization=stored, force=True)

    return convert_cache.converted(source, cache_root, "ct2", {"ctranslate2": ctranslate2.__version__,
                                                               "quantization": stored},
                                   build, ("model.bin", "config.json"), progress, what="CTranslate2")


@dataclass
class Ct2Loaded(EngineLoaded):
    """A variant loaded in CTranslate2 (``model.engine``: the ``ctranslate2.Generator``)."""

    @classmethod
    def load(cls, variant, cache_root: Path, progress, threads: int, tensor_parallel: bool = False) -> "Ct2Loaded":
        return load(variant, cache_root, progress, threads)

    def _generate_rows(self, rows, max_new_tokens: int, suppress: tuple, on_step: Callable[[], None]):
        generator = self.model.engine
        tokens = [self.tokenizer.convert_ids_to_tokens(r) for r in rows]
        batch = len(rows)
        made = [0] * batch  # tokens each sequence has so far (its callbacks; step.step is the loop's step)
        have = [0] * (max_new_tokens + 1)  # sequences that have their k-th token

        def callback(step) -> bool:
            k = made[step.batch_id]
            made[step.batch_id] += 1
            if k < len(have):
                have[k] += 1
                if have[k] == batch:
                    on_step()
            return False

        kwargs = dict(max_length=max_new_tokens, sampling_topk=1, beam_size=1, include_prompt_in_result=False,
                      callback=callback)
        if suppress:
            kwargs["min_length"] = max_new_tokens
        else:
            end = [self.tokenizer.convert_ids_to_tokens(i) for i in self.eos_ids]
            if end:
                kwargs["end_token"] = end
        results = generator.generate_batch(tokens, **kwargs)
        return [list(r.sequences_ids[0]) for r in results]

    def _logits(self, ids):
        import numpy as np

        out = self.model.engine.forward_batch([ids])
        return np.array(out, dtype=np.float32)[0]

    @property
    def model_bytes(self) -> int:
        return int((Path(self.path) / "model.bin").stat().st_size)

    def close(self) -> None:
        self.model.engine = None


def load(variant, cache_root: Path, progress, threads: int) -> Ct2Loaded:
    import ctranslate2

    device = _device(variant)
    stored, compute = plan(variant, device)
    source, _ = source_dir(variant, cache_root, progress)
    target, converted_s = convert(source, cache_root, stored, progress)
    tokenizer = hf_tokenizer(source, variant.trust_remote_code)
    config = hf_config(source, variant.trust_remote_code)
    generator, target, load_s, converted_s = convert_cache.open_converted(
        target, converted_s, cache_root, "CTranslate2",
        lambda path: ctranslate2.Generator(str(path), device=device, compute_type=compute, intra_threads=threads,
                                           inter_threads=1),
        lambda: convert(source, cache_root, stored, progress), progress)
    return Ct2Loaded(model=ConfigHolder(config=config, engine=generator), tokenizer=tokenizer, variant=variant,
                     device=device, path=target, load_s=load_s, converted_s=converted_s,
                     eos_ids=eos_ids_of(source, config, tokenizer), threads=threads, engine_type=compute)
