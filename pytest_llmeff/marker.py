"""The schema of ``@pytest.mark.llm_efficiency`` arguments (pydantic), imported only when a marker is expanded."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pytest_llmeff import quantization as quant
from pytest_llmeff.variants import DEVICES_HELP, PRECISIONS, as_list, describe_model_source

Precision = Literal["float32", "float16", "bfloat16", "fp8"]


class MarkerArgs(BaseModel):
    """The validated arguments of ``@pytest.mark.llm_efficiency``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: Union[str, list[str]]
    precision: Union[Precision, list[Precision]] = "float32"
    quantization: Any = None
    batch_size: Union[int, list[int]] = 1
    prompts: Optional[list[str]] = None
    max_new_tokens: int = 32
    rounds: Optional[int] = None
    warmup: Optional[int] = None
    group: Optional[str] = None
    device: str = "auto"
    revision: Optional[str] = None
    trust_remote_code: bool = False
    reference: Optional[dict] = None
    quality: bool = True
    device_map: Optional[str] = None
    thresholds: Optional[dict[str, str]] = None
    limits: Optional[dict[str, str]] = None

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value):
        if value:
            from pytest_llmeff.gate import GateConfigError, parse_thresholds

            try:
                parse_thresholds(",".join(f"{k}:{v}" for k, v in value.items()))
            except GateConfigError as exc:
                raise ValueError(f"thresholds={value!r}: {exc}") from None
        return value

    @field_validator("limits")
    @classmethod
    def _limits(cls, value):
        if value:
            from pytest_llmeff.gate import GateConfigError, parse_limits

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

    @field_validator("max_new_tokens", "rounds", "warmup")
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
        elif field_name in ("batch_size", "max_new_tokens", "rounds", "warmup"):
            lines.append(f"{field_name}={bad!r} is not allowed; it must be an integer")
        else:
            lines.append(f"{loc}={bad!r}: {msg}")
    # pydantic reports each union branch; keep each distinct line once
    return "; ".join(dict.fromkeys(lines))
