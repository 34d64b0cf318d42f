"""``@pytest.mark.llm_efficiency``: its schema (pydantic) and its expansion into ``Variant`` objects.

Imported only when a marked test is collected (pydantic costs every pytest run ~60 ms otherwise). Invalid
arguments become an ``InvalidMarker`` carrying one clear message that names the bad value and what is allowed.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pytest_llmeff.defaults import DEFAULT_MAX_NEW_TOKENS
from pytest_llmeff.errors import GateConfigError
from pytest_llmeff.gate.thresholds import parse_limits, parse_thresholds
from pytest_llmeff.config import engine_catalog
from pytest_llmeff.config import quantization as quant
from pytest_llmeff.config.options import UsageProblem, metric_names
from pytest_llmeff.config.precision import PRECISIONS
from pytest_llmeff.config.variants import (
    DEVICES_HELP,
    MARKER_NAME,
    InvalidMarker,
    Variant,
    as_list,
    describe_model_source,
    variant_id,
)

Precision = Literal[PRECISIONS]  # type: ignore[valid-type]  (the one list of names, in precision.py)


class MarkerArgs(BaseModel):
    """The validated arguments of ``@pytest.mark.llm_efficiency``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: Union[str, list[str]]
    precision: Union[Precision, list[Precision]] = "float32"
    quantization: Any = None
    batch_size: Union[int, list[int]] = 1
    prompts: Optional[list[str]] = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    rounds: Optional[int] = None
    warmup: Optional[int] = None
    target_ci_pct: Optional[float] = None
    max_time_s: Optional[float] = None
    min_rounds: Optional[int] = None
    max_rounds: Optional[int] = None
    precision_metrics: Optional[list[str]] = None
    group: Optional[str] = None
    device: str = "auto"
    revision: Optional[str] = None
    trust_remote_code: bool = False
    reference: Optional[dict] = None
    quality: bool = True
    device_map: Optional[str] = None
    thresholds: Optional[dict[str, str]] = None
    limits: Optional[dict[str, str]] = None
    engine: Union[str, list[str]] = engine_catalog.DEFAULT_ENGINE

    @field_validator("engine")
    @classmethod
    def _engines(cls, value):
        values = as_list(value)
        if not values:
            raise ValueError("engine=[] is empty; give at least one engine")
        for v in values:
            engine_catalog.spec(v)  # raises ValueError naming the value and the engines allowed
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value):
        if value:
            try:
                parse_thresholds(",".join(f"{k}:{v}" for k, v in value.items()))
            except GateConfigError as exc:
                raise ValueError(f"thresholds={value!r}: {exc}") from None
        return value

    @field_validator("limits")
    @classmethod
    def _limits(cls, value):
        if value:
            try:
                parse_limits(value)
            except GateConfigError as exc:
                raise ValueError(f"limits={value!r}: {exc}") from None
        return value

    @field_validator("quantization")
    @classmethod
    def _quantizations(cls, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ValueError("quantization=[] is empty; give None, a method name or a dict")
        for v in values:
            quant.parse(v)  # raises ValueError naming the value and what is allowed
        return value

    @field_validator("reference")
    @classmethod
    def _reference(cls, value):
        if value is None:
            return value
        unknown = [k for k in value if k not in ("precision", "quantization")]
        if unknown:
            raise ValueError(f"reference={value!r}: unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(k) for k in unknown)}; allowed: precision, quantization")
        if value.get("precision", "float32") not in PRECISIONS:
            raise ValueError(f"reference={value!r}: precision={value.get('precision')!r} is not allowed; "
                             f"allowed: {', '.join(PRECISIONS)}")
        quant.parse(value.get("quantization"))
        return value

    @field_validator("device_map")
    @classmethod
    def _device_map(cls, value):
        if value is not None and value != "auto":
            raise ValueError(f"device_map={value!r} is not allowed; allowed: None or 'auto' (accelerate places "
                             "the layers on the available devices); use device= for one device")
        return value

    @field_validator("model")
    @classmethod
    def _models(cls, value):
        values = as_list(value)
        if not values:
            raise ValueError("model=[] is empty; give at least one model")
        for v in values:
            describe_model_source(v)  # raises ValueError with the reason
        return value

    @field_validator("precision")
    @classmethod
    def _precisions(cls, value):
        if not as_list(value):
            raise ValueError("precision=[] is empty; allowed: " + ", ".join(PRECISIONS))
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value):
        values = as_list(value)
        if not values:
            raise ValueError("batch_size=[] is empty; give positive integers")
        for v in values:
            if v < 1:
                raise ValueError(f"batch_size={v!r} is not allowed; batch sizes are integers >= 1")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value):
        if value is not None:
            if not value:
                raise ValueError("prompts=[] is empty; give at least one non-empty prompt or leave the default")
            for i, p in enumerate(value):
                if not p.strip():
                    raise ValueError(f"prompts[{i}]={p!r} is blank; prompts must contain text")
        return value

    @field_validator("target_ci_pct")
    @classmethod
    def _target(cls, value):
        if value is not None and not 0 < value < 100:
            raise ValueError(f"target_ci_pct={value:g} is not allowed; give a percentage between 0 and 100 "
                             "(exclusive), e.g. 5")
        return value

    @field_validator("max_time_s")
    @classmethod
    def _max_time(cls, value):
        if value is not None and not value > 0:
            raise ValueError(f"max_time_s={value:g} is not allowed; give seconds > 0")
        return value

    @field_validator("precision_metrics")
    @classmethod
    def _precision_metrics(cls, value):
        if value is not None:
            if not value:
                raise ValueError("precision_metrics=[] is empty; give per-round metric names or leave it out")
            try:
                metric_names("precision_metrics", ",".join(value), sampled_only=True)
            except UsageProblem as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("max_new_tokens", "rounds", "warmup", "min_rounds", "max_rounds")
    @classmethod
    def _counts(cls, value, info):
        minimum = 0 if info.field_name == "warmup" else 1
        if value is not None and value < minimum:
            raise ValueError(f"{info.field_name}={value!r} is not allowed; it must be an integer >= {minimum}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device={value!r} is not allowed; allowed: {DEVICES_HELP}")
        return value


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the argument, the bad value and what is allowed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            lines.append(msg[len("Value error, "):])
            continue
        field_name = str(err["loc"][0]) if err["loc"] else "?"
        bad = err.get("input")
        if field_name == "precision":
            lines.append(f"precision={bad!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
        elif field_name in ("batch_size", "max_new_tokens", "rounds", "warmup", "min_rounds", "max_rounds"):
            lines.append(f"{field_name}={bad!r} is not allowed; it must be an integer")
        else:
            lines.append(f"{loc}={bad!r}: {msg}")
    # pydantic reports each union branch; keep each distinct line once
    return "; ".join(dict.fromkeys(lines))


def expand(kwargs: dict[str, Any], args: tuple = ()) -> Union[list[Variant], InvalidMarker]:
    """Validate marker arguments and expand them into the cartesian product of their list arguments."""
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

    prompts = tuple(args_.prompts) if args_.prompts is not None else None
    if args_.min_rounds is not None and args_.max_rounds is not None and args_.min_rounds > args_.max_rounds:
        return InvalidMarker(f"min_rounds={args_.min_rounds} is above max_rounds={args_.max_rounds}; give min <= max")
    stop = tuple((key, value) for key, value in (
        ("target_ci_rel", args_.target_ci_pct / 100 if args_.target_ci_pct is not None else None),
        ("max_time_s", args_.max_time_s), ("min_rounds", args_.min_rounds), ("max_rounds", args_.max_rounds),
        ("metrics", tuple(args_.precision_metrics) if args_.precision_metrics else None)) if value is not None)
    quants = args_.quantization if isinstance(args_.quantization, (list, tuple)) else [args_.quantization]
    ref = args_.reference or {}
    ref_precision = ref.get("precision", "float32")
    ref_quant = quant.parse(ref.get("quantization"))
    variants = []
    for model, engine, precision, q, batch in itertools.product(
        as_list(args_.model), as_list(args_.engine), as_list(args_.precision), quants, as_list(args_.batch_size)
    ):
        spec = quant.parse(q)
        engine_type = weight_type_for_id(engine, model)
        if precision == "fp8" and spec is not None:
            return InvalidMarker(f"precision='fp8' is itself a quantization and cannot be combined with "
                                 f"quantization={q!r}; use quantization=None with fp8")
        variants.append(Variant(
            model=model, precision=precision, quantization=spec, batch_size=batch,
            max_new_tokens=args_.max_new_tokens, prompts=prompts, rounds=args_.rounds, warmup=args_.warmup, stop=stop,
            group=args_.group, device=args_.device, revision=args_.revision,
            trust_remote_code=args_.trust_remote_code, device_map=args_.device_map,
            reference_precision=ref_precision, reference_quantization=ref_quant, quality=args_.quality,
            thresholds=tuple((args_.thresholds or {}).items()), limits=tuple((args_.limits or {}).items()),
            engine=engine, engine_type=engine_type,
            id=variant_id(model, precision, spec, batch, engine, engine_type),
        ))
    ids = [v.id for v in variants]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        return InvalidMarker(f"the expansion repeats variant ids {', '.join(dupes)}; remove duplicate list entries")
    return variants


def weight_type_for_id(engine: str, model: str) -> Optional[str]:
    """The weights' own type that names a variant of ``engine`` (a GGUF's ``q4_1``), for an engine the catalog
    marks ``named_by_weight_type``: read by that engine module's ``weight_type_for_id(model)`` (which reads the
    model file's header, never the engine's package); None for every other engine or an unreadable file."""
    spec = engine_catalog.spec(engine)
    if not spec.named_by_weight_type:
        return None
    import importlib

    return importlib.import_module(spec.module).weight_type_for_id(model)


def expand_markers(marks: list[tuple[tuple, dict]]) -> list[Union[Variant, InvalidMarker]]:
    """The variants of a test from its ``llm_efficiency`` markers, given as (args, kwargs), closest first.

    More than one marker (e.g. on the function and on its class or module) is an error, never a silent pick:
    the user is asked to merge them into one marker, whose list arguments already expand.
    """
    if len(marks) > 1:
        return [InvalidMarker(f"{len(marks)} @pytest.mark.{MARKER_NAME} markers apply to this test (on the function,"
                              " its class or its module); give one marker and list the values to expand, e.g. "
                              "precision=['float32', 'bfloat16']")]
    args, kwargs = marks[0]
    variants = expand(kwargs, args)
    return [variants] if isinstance(variants, InvalidMarker) else variants
