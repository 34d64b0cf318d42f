"""What one benchmark test measures (``Variant``), its readable id, and the model-source check.

Pure Python, no pydantic, no torch: the plugin imports this in every pytest run. The marker's schema and its
expansion into variants live one floor up, in ``marker.py``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from pytest_llmeff.config.aliases import ALIASES
from pytest_llmeff.config.engine_catalog import DEFAULT_ENGINE, id_part, is_default
from pytest_llmeff.config.precision import PRECISION_SHORT, PRECISIONS  # noqa: F401  (PRECISIONS: re-exported)
from pytest_llmeff.config.quantization import QuantSpec

MARKER_NAME = "llm_efficiency"

DEVICES_HELP = "auto, cpu, cuda, cuda:N"

MARKER_HELP = (
    f"{MARKER_NAME}(model, precision='float32', quantization=None, batch_size=1, prompts=None, "
    "max_new_tokens=32, rounds=None, warmup=None, target_ci_pct=None, max_time_s=None, min_rounds=None, "
    "max_rounds=None, precision_metrics=None, group=None, device='auto', device_map=None, revision=None, "
    f"trust_remote_code=False, reference=None, quality=True, thresholds=None, limits=None, engine={DEFAULT_ENGINE!r}): "
    "benchmark an LLM; list-valued arguments expand into one test per variant "
    "(model x engine x precision x quantization x batch_size)."
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class Variant:
    """One point of the expansion: what to load and how to generate.

    batch_size: sequences per generate() call. max_new_tokens: generated tokens per sequence
    (fixed length: EOS is suppressed during benchmark rounds). rounds/warmup: None means "from options".
    stop: the marker's stop-rule settings as (``stop_rule.StopRule`` field, value) pairs.
    """

    model: str
    precision: str
    quantization: Optional[QuantSpec]
    batch_size: int
    max_new_tokens: int
    prompts: Optional[tuple[str, ...]]
    rounds: Optional[int]
    warmup: Optional[int]
    group: Optional[str]
    device: str
    revision: Optional[str]
    trust_remote_code: bool
    device_map: Optional[str] = None
    reference_precision: str = "float32"
    reference_quantization: Optional[QuantSpec] = None
    quality: bool = True
    thresholds: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()
    stop: tuple[tuple[str, Any], ...] = ()
    engine: str = DEFAULT_ENGINE
    engine_type: Optional[str] = None  # the weights' own type (a GGUF's q4_1), read at collection for an engine
    # the catalog marks named_by_weight_type
    id: str = field(default="", compare=False)

    @property
    def quant_label(self) -> Optional[str]:
        return self.quantization.label if self.quantization is not None else None

    @property
    def load_key(self) -> str:
        """Variants with the same load key share one loaded model (batch size does not change the weights)."""
        parts = [self.model, self.revision or "", self.precision, self.quant_label or "none",
                 self.device_map or self.device, "trc" if self.trust_remote_code else ""]
        if not is_default(self.engine):
            parts.append(self.engine)
        return "|".join(parts)

    def reference(self) -> "Variant":
        """The variant this one's quality is compared against (same model and device; its id has no batch size,
        since the quality probe does not depend on it)."""
        return replace(self, precision=self.reference_precision, quantization=self.reference_quantization,
                       engine=DEFAULT_ENGINE, engine_type=None, id=load_id(self.model, self.reference_precision, self.reference_quantization))

    @property
    def is_reference(self) -> bool:
        return (self.precision == self.reference_precision and self.quantization == self.reference_quantization
                and is_default(self.engine))

    @property
    def model_source(self) -> str:
        return describe_model_source(self.model)


@dataclass(frozen=True)
class InvalidMarker:
    """Stands in for the variants of a test whose marker is invalid; its setup fails with ``message``."""

    message: str
    id: str = "llmeff-invalid"


def describe_model_source(model: str) -> str:
    """Classify ``model`` as alias, directory, gguf or hub; ValueError naming the value when it is none of them."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model={model!r} is empty; give an alias ({', '.join(ALIASES)}), a directory, "
                         "a .gguf file or a cached hub id")
    if model in ALIASES:
        return "alias"
    expanded = Path(os.path.expanduser(model))
    if model.endswith(".gguf"):
        if expanded.is_file():
            return "gguf"
        raise ValueError(f"model={model!r}: no such .gguf file")
    if expanded.is_dir():
        return "directory"
    looks_like_path = model.startswith((".", "/", "~")) or os.sep + os.sep in model or expanded.exists()
    if not looks_like_path and _HUB_ID.match(model):
        return "hub"
    if looks_like_path:
        raise ValueError(f"model={model!r}: no such directory")
    raise ValueError(
        f"model={model!r} is not a built-in alias ({', '.join(ALIASES)}), an existing directory, "
        "a .gguf file, or a hub id of the form 'org/name'"
    )


def _short_model_name(model: str) -> str:
    if model in ALIASES:
        return model
    name = Path(model.rstrip("/")).name
    if name.endswith(".gguf"):
        name = name[: -len(".gguf")]
    return name.lower()


def sanitize_id(text: str) -> str:
    """Make ``text`` safe as a test id and as part of a file name: [A-Za-z0-9._-] only, no leading dots."""
    cleaned = _ID_UNSAFE.sub("-", text)
    cleaned = re.sub(r"\.{2,}", "-", cleaned)
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-.")
    return cleaned or "x"


def load_id(model: str, precision: str, quantization: Optional[QuantSpec], engine: str = DEFAULT_ENGINE,
            engine_type: Optional[str] = None) -> str:
    """Readable id of what is loaded: ``smollm2-135m-bf16-nf4``; another engine than transformers is named after
    the model (``smollm2-135m-ct2-fp32-int8``), and a GGUF run in its own type by that type
    (``smollm2-135m-llamacpp-q4_1``)."""
    parts = [_short_model_name(model)]
    if not is_default(engine):
        parts.append(id_part(engine))
    if engine_type and precision == "float32" and quantization is None:
        parts.append(engine_type)
    else:
        parts.append(PRECISION_SHORT.get(precision, precision))
        if quantization is not None:
            parts.append(quantization.label)
    return sanitize_id("-".join(parts))


def variant_id(model: str, precision: str, quantization: Optional[QuantSpec], batch_size: int,
               engine: str = DEFAULT_ENGINE, engine_type: Optional[str] = None) -> str:
    """Readable test id: ``smollm2-135m-bf16-nf4-b4``, ``smollm2-135m-llamacpp-q4_1-b4``."""
    return f"{load_id(model, precision, quantization, engine, engine_type)}-b{batch_size}"
