"""The llama.cpp engine (``engine="llama.cpp"``, extra ``llamacpp``: llama-cpp-python).

Source: a GGUF file (a ``.gguf`` path, or an alias that ships one: ``smollm2-135m``), run in its own weight
type under the default ``precision="float32"`` (the id and the record name the real type, e.g. ``q4_1``). Any
other precision or a quantization is a skip (re-quantizing a GGUF is not built); a directory or hub id without a
GGUF is an error naming what llama.cpp reads.

Tokenization is the Hugging Face tokenizer of the same GGUF (so every engine reads the same ids; llama.cpp's own
agrees with it without BOS). Generation uses the low-level batch API of llama-cpp-python: one context whose KV
cache is shared by the batch's sequences (``n_seq_max`` = batch, ``kv_unified``), the prompts decoded together
without padding (each sequence its own positions), then one ``llama_decode`` per step with one token per
sequence; greedy is the argmax of each sequence's logits (EOS masked for fixed length). A step is stamped right
after its ``llama_decode`` returns. Logits for the quality probe: the window decoded in chunks with every
position's logits kept. Footprint: ``llama_model_size`` (the weights as loaded, in their GGUF type).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pytest_llmeff.engines.hf_source import eos_ids_of, hf_config, hf_tokenizer
from pytest_llmeff.engines.native import ConfigHolder, EngineLoaded
from pytest_llmeff.engines.sources import gguf as gguf_cache
from pytest_llmeff.engines.sources import integrity
from pytest_llmeff.engines.sources.builtin import smollm2_gguf
from pytest_llmeff.engines.sources.gguf_header import file_type
from pytest_llmeff.errors import ModelSourceError, VariantUnsupported
from pytest_llmeff.config.engine_catalog import spec

SPEC = spec("llama.cpp")

#: positions whose logits are read from one llama_decode of the quality probe (bounds the logits buffer)
LOGITS_CHUNK = 256
_log_callback = None  # kept alive: llama.cpp holds the pointer


def _quiet(lib) -> None:
    global _log_callback
    if _log_callback is None:
        _log_callback = lib.llama_log_callback(lambda level, text, data: None)
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))


def gguf_path(variant) -> Path:
    """The GGUF file llama.cpp reads for ``variant``; ModelSourceError when its source has none."""
    import os

    source = variant.model_source
    if source == "gguf":
        return Path(os.path.expanduser(variant.model))
    if source == "alias" and variant.model == "smollm2-135m":
        return smollm2_gguf()
    raise ModelSourceError(f"engine='llama.cpp' reads GGUF files; model={variant.model!r} ({source}) has none: give "
                           "a .gguf file or an alias that ships one (smollm2-135m)")


def check(variant) -> None:
    if variant.quantization is not None or not SPEC.runs_precision(variant.precision):
        what = variant.quant_label if variant.quantization is not None else variant.precision
        raise VariantUnsupported(f"engine='llama.cpp' runs a GGUF in its own weight type (precision='float32', "
                                 f"quantization=None, the default); {what!r} would need a GGUF of that type")
    if variant.device not in ("auto", "cpu"):
        raise VariantUnsupported(f"engine='llama.cpp' is measured on the CPU here (device={variant.device!r})")


def tokenizer_and_config(gguf: Path, cache_root: Path, trust_remote_code: bool):
    """The Hugging Face tokenizer and config of ``gguf``: from its safetensors cache entry when one exists (the
    transformers engine's), else read from the GGUF by transformers."""
    entry = gguf_cache.cache_dir_for(gguf, cache_root)
    if gguf_cache.is_complete(entry) and integrity.damage(entry) is None:
        return hf_tokenizer(entry, trust_remote_code), hf_config(entry, trust_remote_code), entry
    from transformers import AutoConfig, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise ModelSourceError(f"{gguf}: cannot read this GGUF file's tokenizer ({type(exc).__name__}: {exc})") \
            from None
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, config, None


@dataclass
class LlamaLoaded(EngineLoaded):
    """A GGUF loaded in llama.cpp (``model.engine``: the ``_Native`` handles)."""

    @classmethod
    def load(cls, variant, cache_root: Path, progress, threads: int, tensor_parallel: bool = False) -> "LlamaLoaded":
        return load(variant, cache_root, progress, threads)

    def _generate_rows(self, rows, max_new_tokens: int, suppress: tuple, on_step: Callable[[], None]):
        import numpy as np

        native: _Native = self.model.engine
        lib = native.lib
        batch = len(rows)
        native.context(sum(len(r) for r in rows) + batch * max_new_tokens, batch)
        native.clear()
        b = native.batch
        n = 0
        last = []
        for seq, row in enumerate(rows):
            for pos, tok in enumerate(row):
                native.put(n, tok, pos, seq, pos == len(row) - 1)
                if pos == len(row) - 1:
                    last.append(n)
                n += 1
        b.n_tokens = n
        new: list[list[int]] = [[] for _ in rows]
        done = [False] * batch
        positions = [len(r) for r in rows]
        for step in range(max_new_tokens):
            if lib.llama_decode(native.ctx, b) != 0:
                raise RuntimeError(f"llama_decode failed at step {step}")
            on_step()
            nv = native.n_vocab
            next_tokens = []
            for seq in range(batch):
                ptr = lib.llama_get_logits_ith(native.ctx, last[seq])
                logits = np.ctypeslib.as_array(ptr, shape=(nv,))
                if suppress:
                    logits = logits.copy()
                    logits[list(suppress)] = -np.inf
                next_tokens.append(int(logits.argmax()))
            for seq, tok in enumerate(next_tokens):
                if not done[seq]:
                    new[seq].append(tok)
                    if not suppress and tok in self.eos_ids:
                        done[seq] = True
            if step == max_new_tokens - 1 or all(done):
                break
            n = 0
            last = []
            for seq in range(batch):
                native.put(n, new[seq][-1] if new[seq] else 0, positions[seq], seq, True)
                positions[seq] += 1
                last.append(n)
                n += 1
            b.n_tokens = n
        return new

    def _logits(self, ids):
        import numpy as np

        native: _Native = self.model.engine
        lib = native.lib
        native.context(len(ids), 1)
        native.clear()
        out = np.empty((len(ids), native.n_vocab), dtype=np.float32)
        for start in range(0, len(ids), LOGITS_CHUNK):
            chunk = ids[start:start + LOGITS_CHUNK]
            for i, tok in enumerate(chunk):
                native.put(i, tok, start + i, 0, True)
            native.batch.n_tokens = len(chunk)
            if lib.llama_decode(native.ctx, native.batch) != 0:
                raise RuntimeError("llama_decode failed on the quality text")
            ptr = lib.llama_get_logits(native.ctx)
            out[start:start + len(chunk)] = np.ctypeslib.as_array(ptr, shape=(len(chunk), native.n_vocab))
        native.drop_context()  # its logits buffer grew for the window: generation sizes its own again
        return out

    @property
    def model_bytes(self) -> int:
        native: _Native = self.model.engine
        return int(native.lib.llama_model_size(native.model))

    def close(self) -> None:
        native = self.model.engine
        if native is not None:
            native.free()
        self.model.engine = None


class _Native:
    """The llama.cpp model, a context sized on demand (recreated larger when a batch needs more cells) and one
    reusable ``llama_batch``."""

    def __init__(self, lib, path: Path, threads: int):
        self.lib = lib
        self.threads = threads
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise ModelSourceError(f"{path}: llama.cpp cannot load this GGUF file")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.ctx = None
        self.batch = None
        self.cells = 0
        self.seqs = 0

    def context(self, cells: int, seqs: int) -> None:
        cells = max(cells, LOGITS_CHUNK)
        if self.ctx is not None and cells <= self.cells and seqs <= self.seqs:
            return
        self._free_context()
        lib = self.lib
        cells = ((cells + 255) // 256) * 256
        params = lib.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = cells
        params.n_ubatch = min(cells, 512)
        params.n_seq_max = max(seqs, 1)
        params.kv_unified = True
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {cells} cells for {seqs} sequences")
        self.batch = lib.llama_batch_init(cells, 0, max(seqs, 1))
        self.cells, self.seqs = cells, max(seqs, 1)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def drop_context(self) -> None:
        self._free_context()
        self.cells = self.seqs = 0

    def _free_context(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.ctx = None

    def free(self) -> None:
        self._free_context()
        if self.model is not None:
            self.lib.llama_model_free(self.model)
            self.model = None


def load(variant, cache_root: Path, progress, threads: int) -> LlamaLoaded:
    check(variant)
    path = gguf_path(variant)
    if not path.is_file():
        raise ModelSourceError(f"{path}: no such .gguf file")

    ftype = file_type(path)
    if ftype is None:
        raise ModelSourceError(f"{path}: not a readable GGUF file (no GGUF header with general.file_type)")
    tokenizer, config, entry = tokenizer_and_config(path, cache_root, variant.trust_remote_code)
    import llama_cpp as lib

    _quiet(lib)
    lib.llama_backend_init()
    start = time.perf_counter()
    native = _Native(lib, path, threads)
    load_s = time.perf_counter() - start

    eos = eos_ids_of(entry if entry is not None else path.with_suffix(".no-dir"), config, tokenizer)
    return LlamaLoaded(model=ConfigHolder(config=config, engine=native), tokenizer=tokenizer, variant=variant,
                       device="cpu", path=path, load_s=load_s, converted_s=None, eos_ids=eos, threads=threads,
                       engine_type=ftype)


def weight_type_for_id(model: str) -> Optional[str]:
    """The GGUF weight type of a marker's ``model`` for the test id (None when it has no readable GGUF)."""
    import os

    if model.endswith(".gguf"):
        return file_type(Path(os.path.expanduser(model)))
    if model == "smollm2-135m":
        try:
            return file_type(smollm2_gguf())
        except ModelSourceError:
            return None
    return None
