"""GGUF -> safetensors cache, converted once and keyed by the file's content hash.

transformers dequantizes a GGUF on every load (about 17 s for SmolLM2-135M, mostly parsing), and refuses to
``save_pretrained`` a GGUF-loaded model. We load it once, copy the weights into a plain model built from the same
config, and save that with its tokenizer. Later sessions load the safetensors copy in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff import events
from pytest_llmeff.engines.sources import integrity, memory_fit
from pytest_llmeff.errors import ModelSourceError  # noqa: F401  (its old home; defined in errors.py)
from pytest_llmeff.files import sha256_file

CACHE_FORMAT = 1
_MARKER_FILE = "llmeff-source.json"




def ensure_writable_dir(directory: Path) -> None:
    """Create ``directory`` if needed; ModelSourceError naming it when it cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelSourceError(f"cannot create the model cache {directory}: {exc.strerror or exc}; choose another "
                               "with --llmeff-cache-dir or LLMEFF_CACHE_DIR") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ModelSourceError(f"the model cache {directory} is not writable; choose another with "
                               "--llmeff-cache-dir or LLMEFF_CACHE_DIR")


def cache_dir_for(gguf_path: Path, cache_root: Path) -> Path:
    return Path(cache_root) / "models" / f"gguf-{sha256_file(gguf_path)[:24]}-v{CACHE_FORMAT}"


def is_complete(directory: Path) -> bool:
    return (directory / _MARKER_FILE).is_file() and (directory / "config.json").is_file()


def convert(gguf_path: Path, cache_root: Path, progress: Optional[Callable[[str], None]] = None) -> tuple[Path, Optional[float]]:
    """Return the safetensors directory for ``gguf_path``, converting it first if it is not cached.

    Returns (directory, conversion seconds or None when the cache was hit).
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelSourceError(f"{gguf_path}: no such .gguf file")
    target = cache_dir_for(gguf_path, cache_root)
    if integrity.ensure_usable(target, cache_root, progress, required=(_MARKER_FILE, "config.json")):
        return target, None
    ensure_writable_dir(target.parent)

    memory_fit.check_conversion_fits(gguf_path)
    rebuilding = integrity.rebuilt_in_this_process(target)
    try:
        return _convert(gguf_path, target, progress)
    except ModelSourceError:
        raise
    except Exception as exc:
        doing = "rebuilding the damaged cache entry" if rebuilding else "converting it into"
        raise ModelSourceError(f"{gguf_path}: {doing} {target} failed ({type(exc).__name__}: "
                               f"{integrity.one_line(exc)})") from None


def _convert(gguf_path: Path, target: Path, progress) -> tuple[Path, float]:
    events.emit("convert", source=str(gguf_path), target=str(target), done=False)
    if progress:
        progress(f"converting {gguf_path.name} to a safetensors cache (one-time, ~20 s for 135M params)...")
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # a corrupt or unsupported GGUF: say which file and why
        raise ModelSourceError(f"{gguf_path}: cannot read this GGUF file ({type(exc).__name__}: "
                               f"{integrity.one_line(exc)})") from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # tied lm_head weights legitimately appear as "missing" when the config ties embeddings
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise ModelSourceError(f"{gguf_path}: weights do not match the architecture "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER_FILE).write_text(json.dumps({
            "source": str(gguf_path.resolve()), "sha256": sha256_file(gguf_path), "format": CACHE_FORMAT,
        }, indent=2))
        integrity.write_manifest(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # a concurrent worker did not finish it either: report our failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    del quantized, plain
    seconds = time.perf_counter() - start
    events.emit("convert", source=str(gguf_path), target=str(target), done=True, seconds=seconds)
    if progress:
        progress(f"converted {gguf_path.name} in {seconds:.1f} s -> {target}")
    return target, seconds
