"""The engine catalog: every inference engine the marker's ``engine=`` accepts, one ``EngineSpec`` line each.

A leaf (imports nothing from pytest_llmeff): the marker, the variant ids and the reports read their facts about an
engine here, and never compare engine names as strings. The engine itself lives in ``engines/<folder>/`` and is
found through ``EngineSpec.module`` / ``EngineSpec.loaded_class`` (imported by ``engines.base.load`` only when a
variant of that engine loads). Adding an engine is one line in ``ENGINES`` below plus its folder.

The static facts are what callers need BEFORE anything loads (collection, ids, reports): the precisions and
quantization methods an engine accepts at all, whether it can be split over ranks (``--llmeff-parallel=tensor``)
and whether a run is named by the weights' own type. What a loaded model can measure (per-token stamps, FLOP
counting, quality logits, threads) is declared by the loaded model itself: ``engines.base.Capabilities``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

@dataclass(frozen=True)
class EngineSpec:
    """One engine.

    name: the marker's value (``engine="llama.cpp"``), as stored in records (``variant.engine``).
    short: its form in test ids (``smollm2-135m-llamacpp-q4_1-b1``); empty for the default engine, whose ids
        name no engine.
    module: the dotted path of the module holding its loaded-model class (imported only to load).
    loaded_class: the class in ``module`` that implements ``engines.base.LoadedEngine``; its ``load`` classmethod
        loads a variant.
    import_name / distribution: the Python package it needs (import name, and the name pip installs); None when
        the plugin's own dependencies cover it.
    extra: the pytest-llmeff extra that installs the package (``pip install 'pytest-llmeff[<extra>]'``).
    precisions: the marker precisions it can run at all (None: every one ``config/precision.py`` names); its
        loader may still refuse one on some device, with the reason.
    quantizations: the quantization methods (``config/quantization.METHODS``) it can run at all.
    tensor_parallel: it can split one model over the ranks of a launch (``--llmeff-parallel=tensor``).
    named_by_weight_type: a run in its default precision is named by the weights' own type, read from the model
        file at collection (a GGUF's ``q4_1``): in the id and in the reports' precision cell.
    """

    name: str
    short: str
    module: str
    loaded_class: str
    import_name: Optional[str]
    distribution: Optional[str]
    extra: Optional[str]
    precisions: Optional[tuple[str, ...]]
    quantizations: tuple[str, ...]
    tensor_parallel: bool = False
    named_by_weight_type: bool = False

    @property
    def is_default(self) -> bool:
        """True for the engine a marker without ``engine=`` runs (its ids and tables name no engine)."""
        return self.name == DEFAULT_ENGINE

    def runs_precision(self, precision: str) -> bool:
        """True when the engine can run ``precision`` at all (see ``precisions``)."""
        return self.precisions is None or precision in self.precisions


_E = "pytest_llmeff.engines"

ENGINES: dict[str, EngineSpec] = {s.name: s for s in (
    EngineSpec("transformers", "", f"{_E}.transformers.load", "LoadedModel", "transformers", "transformers", None,
               None, ("int8", "nf4", "fp4", "dynamic-int8"), tensor_parallel=True),
    EngineSpec("llama.cpp", "llamacpp", f"{_E}.llamacpp.engine", "LlamaLoaded", "llama_cpp", "llama-cpp-python",
               "llamacpp", ("float32",), (), named_by_weight_type=True),
    EngineSpec("ctranslate2", "ct2", f"{_E}.ctranslate2.engine", "Ct2Loaded", "ctranslate2", "ctranslate2", "ct2",
               ("float32", "bfloat16", "float16"), ("int8",)),
    EngineSpec("onnxruntime-genai", "ortgenai", f"{_E}.onnxruntime_genai.engine", "OrtLoaded", "onnxruntime_genai",
               "onnxruntime-genai", "onnx", ("float32",), ("int4",)),
)}
DEFAULT_ENGINE = "transformers"


def spec(engine: str) -> EngineSpec:
    """The engine's spec; ValueError naming the value and the engines allowed."""
    try:
        return ENGINES[engine]
    except (KeyError, TypeError):
        raise ValueError(f"engine={engine!r} is not allowed; allowed: {', '.join(ENGINES)}") from None


def is_default(engine: Optional[str]) -> bool:
    """True when ``engine`` is the default engine, or not given (records written before the engine axis)."""
    return engine is None or engine == DEFAULT_ENGINE


def named_by_weight_type(engine: Optional[str]) -> bool:
    """True when a run of ``engine`` in its default precision is named by the weights' own type (see
    ``EngineSpec.named_by_weight_type``); False for an engine this version does not know (an old record)."""
    s = ENGINES.get(engine) if isinstance(engine, str) else None
    return s is not None and s.named_by_weight_type


def id_part(engine: str) -> str:
    """The engine's part of a test id: its short form (empty for the default engine; the name itself for an
    engine this version does not know, so an old record's id still says which engine ran it)."""
    s = ENGINES.get(engine)
    return s.short if s is not None else engine
