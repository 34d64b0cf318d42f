"""Marker kwargs -> validated ``Variant`` list -> readable parameter ids.

Pure Python and pydantic; no torch. Invalid marker arguments become an ``InvalidMarker`` carrying one
clear message that names the test, the bad value and what is allowed.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

from pytest_llmeff.backends.aliases import ALIASES
from pytest_llmeff.quantization import QuantSpec

MARKER_NAME = "llm_efficiency"

PRECISIONS: tuple[str, ...] = ("float32", "float16", "bfloat16", "fp8")
PRECISION_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp8": "fp8"}
DEVICES_HELP = "auto, cpu, cuda, cuda:N"

MARKER_HELP = (
    f"{MARKER_NAME}(model, precision='float32', quantization=None, batch_size=1, prompts=None, "
    "max_new_tokens=32, rounds=None, warmup=None, group=None, device='auto', device_map=None, revision=None, "
    "trust_remote_code=False, reference=None, quality=True, thresholds=None, limits=None): benchmark an LLM; list-valued arguments expand into one test per variant "
    "(model x precision x quantization x batch_size)."
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
    id: str = field(default="", compare=False)

    @property
    def quant_label(self) -> Optional[str]:
        return self.quantization.label if self.quantization is not None else None

    @property
    def load_key(self) -> str:
        """Variants with the same load key share one loaded model (batch size does not change the weights)."""
        parts = [self.model, self.revision or "", self.precision, self.quant_label or "none",
                 self.device_map or self.device, "trc" if self.trust_remote_code else ""]
        return "|".join(parts)

    def reference(self) -> "Variant":
        """The variant this one's quality is compared against (same model and device; its id has no batch size,
        since the quality probe does not depend on it)."""
        return replace(self, precision=self.reference_precision, quantization=self.reference_quantization,
                       id=load_id(self.model, self.reference_precision, self.reference_quantization))

    @property
    def is_reference(self) -> bool:
        return self.precision == self.reference_precision and self.quantization == self.reference_quantization

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


def load_id(model: str, precision: str, quantization: Optional[QuantSpec]) -> str:
    """Readable id of what is loaded: ``smollm2-135m-bf16-nf4``."""
    parts = [_short_model_name(model), PRECISION_SHORT.get(precision, precision)]
    if quantization is not None:
        parts.append(quantization.label)
    return sanitize_id("-".join(parts))


def variant_id(model: str, precision: str, quantization: Optional[QuantSpec], batch_size: int) -> str:
    """Readable test id: ``smollm2-135m-bf16-nf4-b4``."""
    return f"{load_id(model, precision, quantization)}-b{batch_size}"


def expand(kwargs: dict[str, Any], args: tuple = ()) -> Union[list[Variant], InvalidMarker]:
    """Validate marker arguments and expand them into the cartesian product of their list arguments."""
    from pydantic import ValidationError

    from pytest_llmeff.marker import MarkerArgs, format_validation_error

    allowed = list(MarkerArgs.model_fields)
    if args:
        return InvalidMarker(f"positional arguments {args!r} are not accepted; use keywords: {', '.join(allowed)}")
    unknown = [k for k in kwargs if k not in MarkerArgs.model_fields]
    if unknown:
        return InvalidMarker(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    if "model" not in kwargs:
        return InvalidMarker("model= is required (an alias such as 'smollm2-135m', a directory, a .gguf file "
                             "or a cached hub id)")
    normalized = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    try:
        args_ = MarkerArgs(**normalized)
    except ValidationError as exc:
        return InvalidMarker(format_validation_error(exc))

    from pytest_llmeff import quantization as quant

    prompts = tuple(args_.prompts) if args_.prompts is not None else None
    quants = args_.quantization if isinstance(args_.quantization, (list, tuple)) else [args_.quantization]
    ref = args_.reference or {}
    ref_precision = ref.get("precision", "float32")
    ref_quant = quant.parse(ref.get("quantization"))
    variants = []
    for model, precision, q, batch in itertools.product(
        as_list(args_.model), as_list(args_.precision), quants, as_list(args_.batch_size)
    ):
        spec = quant.parse(q)
        if precision == "fp8" and spec is not None:
            return InvalidMarker(f"precision='fp8' is itself a quantization and cannot be combined with "
                                 f"quantization={q!r}; use quantization=None with fp8")
        variants.append(Variant(
            model=model, precision=precision, quantization=spec, batch_size=batch,
            max_new_tokens=args_.max_new_tokens, prompts=prompts, rounds=args_.rounds, warmup=args_.warmup,
            group=args_.group, device=args_.device, revision=args_.revision,
            trust_remote_code=args_.trust_remote_code, device_map=args_.device_map,
            reference_precision=ref_precision, reference_quantization=ref_quant, quality=args_.quality,
            thresholds=tuple((args_.thresholds or {}).items()), limits=tuple((args_.limits or {}).items()),
            id=variant_id(model, precision, spec, batch),
        ))
    ids = [v.id for v in variants]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        return InvalidMarker(f"the expansion repeats variant ids {', '.join(dupes)}; remove duplicate list entries")
    return variants
