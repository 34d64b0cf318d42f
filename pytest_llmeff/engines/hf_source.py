"""The Hugging Face side that every engine reads, whatever runs the weights: the source directory of a variant,
its tokenizer (left padding), its config and its EOS ids. So every engine tokenizes the same ids and stops at the
same tokens as transformers would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pytest_llmeff.engines.transformers.load import resolve_path
from pytest_llmeff.errors import ModelSourceError


def hf_tokenizer(path: Path, trust_remote_code: bool = False):
    """The source's Hugging Face tokenizer, left padding, a pad token set (the EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def hf_config(path: Path, trust_remote_code: bool = False):
    """The source's Hugging Face config (``config.json``), read locally."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def eos_ids_of(path: Path, config, tokenizer) -> list[int]:
    """EOS ids as transformers' generate would use them: generation_config.json, else the config, else the
    tokenizer."""
    ids = None
    gen = Path(path) / "generation_config.json"
    if gen.is_file():
        import json

        try:
            ids = json.loads(gen.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            ids = None
    if ids is None:
        ids = getattr(config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def source_dir(variant, cache_root: Path, progress=None) -> tuple[Path, Optional[float]]:
    """The Hugging Face directory (config, tokenizer, safetensors) of the variant's model: an alias or GGUF goes
    through the same conversion cache as transformers; a hub id must be in the local cache."""
    path, converted_s = resolve_path(variant, cache_root, progress)
    if not (Path(path) / "config.json").is_file():
        raise ModelSourceError(f"{variant.model}: {path} has no config.json")
    return Path(path), converted_s
