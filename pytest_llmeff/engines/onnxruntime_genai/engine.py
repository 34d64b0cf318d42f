"""The ONNX Runtime GenAI engine (``engine="onnxruntime-genai"``, extra ``onnx``).

Source: any Hugging Face directory the transformers engine can read, converted once by the package's own model
builder (``python -m onnxruntime_genai.models.builder -i <dir> -o <out> -p fp32|int4 -e cpu``, in a subprocess;
it needs ``onnx_ir``) into the conversion cache (key: source hash, package version, builder precision).

| marker | builder precision |
|---|---|
| ``float32`` | ``fp32`` |
| ``float32`` + ``quantization="int4"`` | ``int4`` (MatMulNBits 4-bit weights, float32 elsewhere) |

Other precisions and quantizations are a skip with the reason (the CPU provider is measured here; fp16 is a
GPU format for the builder). Generation: ``og.Generator``, greedy (``do_sample=False``), fixed length with
``min_length = max_length``; one ``generate_next_token()`` per step, stamped when it returns. Prompts are padded
on the RIGHT with the model's pad id: the builder's attention (GroupQueryAttention) takes each sequence's length
from the mask and assumes right padding; left-padded batches were measured to diverge from unpadded runs after
the first token. Logits for the quality probe: the exported ``model.onnx`` run by onnxruntime on the whole
window with an empty KV cache (every position's logits). Footprint: the ONNX weights on disk (``model.onnx`` and
its ``.data``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.engines.sources import convert_cache
from pytest_llmeff.engines.hf_source import eos_ids_of, hf_config, hf_tokenizer, source_dir
from pytest_llmeff.engines.native import ConfigHolder, EngineLoaded
from pytest_llmeff.errors import ModelSourceError, VariantUnsupported
from pytest_llmeff.config.engine_catalog import spec

SPEC = spec("onnxruntime-genai")

#: the quality probe's onnxruntime session per converted model, held only between the probe's windows: generation
#: drops it, so no timed round's peak memory carries a second copy of the weights
_probe_sessions: dict[str, tuple] = {}


def plan(variant) -> str:
    """The builder precision for ``variant``; VariantUnsupported otherwise."""
    q = variant.quantization
    if variant.device not in ("auto", "cpu"):
        raise VariantUnsupported(f"engine='onnxruntime-genai' is built for the CPU provider here "
                                 f"(device={variant.device!r})")
    if SPEC.runs_precision(variant.precision) and q is None:
        return "fp32"
    if SPEC.runs_precision(variant.precision) and q is not None and q.label in SPEC.quantizations:
        return q.label
    what = f"precision={variant.precision!r}" + (f", quantization={q.label!r}" if q is not None else "")
    raise VariantUnsupported(f"engine='onnxruntime-genai' runs precision='float32' with quantization=None or "
                             f"'int4' on the CPU; got {what}")


def convert(source: Path, cache_root: Path, precision: str, progress=None) -> tuple[Path, Optional[float]]:
    import importlib.util

    import onnxruntime_genai as og

    if importlib.util.find_spec("onnx_ir") is None:
        raise VariantUnsupported("engine='onnxruntime-genai' converts with its model builder, which needs the "
                                 "package onnx_ir: pip install 'pytest-llmeff[onnx]'")

    def build(tmp: Path) -> None:
        work = tmp.parent / (tmp.name + ".work")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(tmp),
               "-p", precision, "-e", "cpu", "-c", str(work)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:]) or f"exit {done.returncode}"
            raise ModelSourceError(f"{source}: the onnxruntime-genai model builder failed ({tail[:300]})")

    return convert_cache.converted(source, cache_root, "ortgenai", {"onnxruntime_genai": og.__version__,
                                                                    "precision": precision},
                                   build, ("model.onnx", "genai_config.json"), progress,
                                   what="ONNX Runtime GenAI")


@dataclass
class OrtLoaded(EngineLoaded):
    """A variant loaded in ONNX Runtime GenAI (``model.engine``: the ``og.Model``)."""

    pad_id: int = 0

    @classmethod
    def load(cls, variant, cache_root: Path, progress, threads: int, tensor_parallel: bool = False) -> "OrtLoaded":
        return load(variant, cache_root, progress, threads)

    def _generate_rows(self, rows, max_new_tokens: int, suppress: tuple, on_step: Callable[[], None]):
        import numpy as np
        import onnxruntime_genai as og

        _probe_sessions.pop(str(self.path), None)
        width = max(len(r) for r in rows)
        ids = np.array([r + [self.pad_id] * (width - len(r)) for r in rows], dtype=np.int32)
        params = og.GeneratorParams(self.model.engine)
        total = width + max_new_tokens
        params.set_search_options(max_length=total, min_length=total if suppress else 0, do_sample=False,
                                  batch_size=len(rows))
        generator = og.Generator(self.model.engine, params)
        generator.append_tokens(ids)
        steps = 0
        while not generator.is_done() and steps < max_new_tokens:
            generator.generate_next_token()
            steps += 1
            on_step()
        out = []
        for i in range(len(rows)):
            row = [int(t) for t in generator.get_sequence(i)[width:]]
            out.append(row[:max_new_tokens])
        del generator
        return out

    def _logits(self, ids):
        import numpy as np

        session, kv_inputs, kv_heads, head = self._probe_session()
        n = len(ids)
        feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64)}
        for name in kv_inputs:
            feed[name] = np.zeros((1, kv_heads, 0, head), dtype=np.float32)
        return session.run(["logits"], feed)[0][0].astype(np.float32)

    def _probe_session(self):
        key = str(self.path)
        if key not in _probe_sessions:
            import onnxruntime as ort

            cfg = json.loads((Path(self.path) / "genai_config.json").read_text())["model"]["decoder"]
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(Path(self.path) / cfg["filename"]), opts,
                                           providers=["CPUExecutionProvider"])
            kv_inputs = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values")]
            _probe_sessions[key] = (session, kv_inputs, cfg["num_key_value_heads"], cfg["head_size"])
        return _probe_sessions[key]

    @property
    def model_bytes(self) -> int:
        return int(sum(p.stat().st_size for p in Path(self.path).iterdir() if p.name.startswith("model.onnx")))

    def close(self) -> None:
        _probe_sessions.pop(str(self.path), None)
        self.model.engine = None


def load(variant, cache_root: Path, progress, threads: int) -> OrtLoaded:
    import onnxruntime_genai as og

    precision = plan(variant)
    source, _ = source_dir(variant, cache_root, progress)
    target, converted_s = convert(source, cache_root, precision, progress)
    tokenizer = hf_tokenizer(source, variant.trust_remote_code)
    config = hf_config(source, variant.trust_remote_code)
    overlay = json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                    "inter_op_num_threads": 1}}}})
    def open_model(path: Path):
        og_config = og.Config(str(path))
        og_config.overlay(overlay)
        return og.Model(og_config)

    model, target, load_s, converted_s = convert_cache.open_converted(
        target, converted_s, cache_root, "ONNX Runtime GenAI", open_model,
        lambda: convert(source, cache_root, precision, progress), progress)
    genai = json.loads((target / "genai_config.json").read_text())["model"]
    pad = genai.get("pad_token_id")
    pad = pad[0] if isinstance(pad, list) else pad
    return OrtLoaded(model=ConfigHolder(config=config, engine=model), tokenizer=tokenizer, variant=variant,
                     device="cpu", path=target, load_s=load_s, converted_s=converted_s,
                     eos_ids=eos_ids_of(source, config, tokenizer), threads=threads, engine_type=precision,
                     pad_id=int(pad if pad is not None else (tokenizer.pad_token_id or 0)))
