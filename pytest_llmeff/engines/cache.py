"""Keeps at most ONE variant loaded per process, so each variant is loaded exactly once when its tests run
together (the plugin orders them so). Switching to another variant frees the previous one first, and gives its
memory back to the system (``release_memory``: gc, CUDA cache, glibc malloc_trim), so the next variant's process
peak does not carry the freed model's pages.
A variant that failed to load is remembered, so its other tests fail at once with the same message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff import events
from pytest_llmeff.engines.base import load
from pytest_llmeff.engines.sources.gguf import ModelSourceError
from pytest_llmeff.engines.transformers.quant import VariantUnsupported
from pytest_llmeff.measure.memory import release_memory
from pytest_llmeff.results.schema import LoadEvent
from pytest_llmeff.config.engine_catalog import is_default
from pytest_llmeff.config.variants import Variant


class ModelCache:
    def __init__(self, cache_root: Path, progress: Optional[Callable[[str], None]] = None,
                 threads: Optional[int] = None, tensor_parallel: bool = False):
        self.cache_root = Path(cache_root)
        self.progress = progress
        self.threads = threads  # --llmeff-threads (None: what torch uses)
        self.tensor_parallel = tensor_parallel  # --llmeff-parallel=tensor: one model split over the launch's ranks
        self._key: Optional[str] = None
        self._loaded = None
        self._failed: dict[str, str] = {}
        self._unsupported: dict[str, str] = {}
        self._error_class: dict[str, type] = {}  # load key -> the class of its remembered failure
        self.loads: list[LoadEvent] = []

    def get(self, variant: Variant):
        """The loaded model for ``variant`` (loading it if it is not the current one).

        A failure is remembered per load key and raised again, same class and message, for the variant's later
        tests: ModelSourceError (LoadOutOfMemory included: out of memory while loading) and VariantUnsupported
        (VariantTooLarge included: weights estimated larger than the free RAM, checked before loading on CPU)."""
        key = variant.load_key
        if key in self._failed:
            raise self._error_class.get(key, ModelSourceError)(self._failed[key])
        if key in self._unsupported:
            raise self._error_class.get(key, VariantUnsupported)(self._unsupported[key])
        if self._key == key and self._loaded is not None:
            return self._loaded
        self.release()

        try:
            loaded = load(variant, self.cache_root, self.progress, self.threads, tensor_parallel=self.tensor_parallel)
        except VariantUnsupported as exc:
            self._unsupported[key] = str(exc)
            self._error_class[key] = type(exc)
            raise
        except ModelSourceError as exc:
            self._failed[key] = str(exc)
            self._error_class[key] = type(exc)
            self.loads.append(LoadEvent(key=key, load_s=0.0, ok=False, error=str(exc),
                                        worker=os.environ.get("PYTEST_XDIST_WORKER")))
            events.emit("load", key=key, model=variant.model, ok=False, error=str(exc))
            raise
        self._key, self._loaded = key, loaded
        self.loads.append(LoadEvent(key=key, load_s=loaded.load_s, converted_s=loaded.converted_s,
                                    worker=os.environ.get("PYTEST_XDIST_WORKER"),
                                    threads=loaded.threads if loaded.capabilities.threads else None))
        events.emit("load", key=key, model=variant.model, ok=True, device=loaded.device, load_s=loaded.load_s,
                    converted_s=loaded.converted_s, model_bytes=loaded.model_bytes)
        if self.progress:
            what = variant.precision + (f" {variant.quant_label}" if variant.quantization else "")
            if not is_default(variant.engine):
                what = f"with {variant.engine} ({loaded.engine_type or what})"
            self.progress(f"loaded {variant.model} {what} on {loaded.device} in {loaded.load_s:.2f} s")
        return loaded

    def release(self) -> None:
        """Free the current variant and give its memory back (host pages and the CUDA cache).

        Only this cache's reference is dropped: a caller still holding the LoadedModel keeps it alive."""
        if self._loaded is None:
            return
        self._loaded.close()  # an engine's native model: freed now, not at gc
        self._loaded = None
        self._key = None
        release_memory()
