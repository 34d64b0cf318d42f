"""Conversion caches for the engines that need their own format (CTranslate2, ONNX Runtime GenAI).

An entry is ``<cache>/models/<engine short>-<key[:24]>-v<CONVERT_FORMAT>``, the key the SHA-256 of the source's
content hash, the engine, the engine package's version and the conversion settings (JSON). It is built in a temp
dir beside it, gets a manifest (``integrity.write_manifest``) and is renamed into place, like the GGUF cache. A
damaged entry (truncated, altered, a file missing) is rebuilt once per process (``integrity.ensure_usable``).

The source's content hash: for an entry the plugin built (a manifest with every file's SHA-256), the hash of
that manifest's hashes (the integrity check already vouches for them); for any other directory, every file's
SHA-256, remembered per process by (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pytest_llmeff.engines.sources import integrity
from pytest_llmeff.engines.sources.gguf import ensure_writable_dir
from pytest_llmeff.errors import ModelSourceError
from pytest_llmeff.files import sha256_file

CONVERT_FORMAT = 1
SOURCE_FILE = "llmeff-source.json"
_hashes: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = sha256_file(path)
    return _hashes[key]


def source_hash(directory: Path) -> str:
    """SHA-256 over the model files of ``directory`` (names and contents; the plugin's own bookkeeping files
    and hidden files left out)."""
    directory = Path(directory)
    manifest = directory / integrity.MANIFEST_FILE
    digest = hashlib.sha256()
    if manifest.is_file() and integrity.damage(directory) is None:
        files = json.loads(manifest.read_text())["files"]
        for rel in sorted(files):
            if rel != SOURCE_FILE:
                digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
        return digest.hexdigest()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in (integrity.MANIFEST_FILE, SOURCE_FILE) or any(part.startswith(".") for part in Path(rel).parts):
            continue
        digest.update(f"{rel}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def entry_for(source: Path, cache_root: Path, short: str, settings: dict) -> Path:
    """The cache entry's directory for converting ``source`` with ``settings`` (the engine's version in them)."""
    key = hashlib.sha256(json.dumps({"source": source_hash(source), "engine": short, **settings},
                                    sort_keys=True).encode()).hexdigest()
    return Path(cache_root) / "models" / f"{short}-{key[:24]}-v{CONVERT_FORMAT}"


def converted(source: Path, cache_root: Path, short: str, settings: dict, build: Callable[[Path], None],
              required: tuple[str, ...], progress: Optional[Callable[[str], None]] = None,
              what: str = "") -> tuple[Path, Optional[float]]:
    """The converted entry for ``source``: (directory, conversion seconds, or None when the cache was hit).

    ``build(tmp_dir)`` writes the converted model into ``tmp_dir``; ``required`` are files a usable entry has.
    A failing conversion is a ModelSourceError naming the source, the engine and why."""
    target = entry_for(source, cache_root, short, settings)
    if integrity.ensure_usable(target, cache_root, progress, required=required):
        return target, None

    ensure_writable_dir(target.parent)
    if progress:
        progress(f"converting {source} for {what or short} (one-time) ...")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{short}-", dir=target.parent))
    try:
        try:
            build(tmp)
        except ModelSourceError:
            raise
        except Exception as exc:
            raise ModelSourceError(f"{source}: converting it for {what or short} failed ({type(exc).__name__}: "
                                   f"{integrity.one_line(exc)})") from None
        missing = [name for name in required if not (tmp / name).is_file()]
        if missing:
            raise ModelSourceError(f"{source}: converting it for {what or short} wrote no {missing[0]}")
        (tmp / SOURCE_FILE).write_text(json.dumps({"source": str(Path(source).resolve()), "engine": short,
                                                   "format": CONVERT_FORMAT, **settings}, indent=2))
        integrity.write_manifest(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not all((target / name).is_file() for name in required):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    if progress:
        progress(f"converted {Path(source).name} for {what or short} in {seconds:.1f} s -> {target}")
    return target, seconds


def rebuild_after_failed_load(target: Path, cache_root: Path, failure: str, progress=None) -> None:
    """A converted entry the engine could not load: discarded when damaged (the caller converts again, once);
    a ModelSourceError when it looks whole (the engine, not the cache, is the problem) or was rebuilt before."""
    what = integrity.damage(target, full=True)
    if what is None:
        raise ModelSourceError(f"{target}: the engine cannot load this converted model ({failure})")
    integrity.ensure_usable(target, cache_root, progress, problem=what)


def open_converted(target: Path, converted_s: Optional[float], cache_root: Path, engine_name: str,
                   open_engine: Callable[[Path], Any], convert_again: Callable[[], tuple[Path, Optional[float]]],
                   progress=None) -> tuple[Any, Path, float, Optional[float]]:
    """Open a converted model with its engine (``open_engine(target)``), timing it; a conversion the engine
    cannot open is checked and, when damaged, rebuilt once (``convert_again()`` -> (target, seconds)).
    Returns (the engine's object, the target, load seconds, conversion seconds including a rebuild)."""
    for attempt in (1, 2):
        try:
            start = time.perf_counter()
            opened = open_engine(target)
            return opened, target, time.perf_counter() - start, converted_s
        except Exception as exc:  # a damaged conversion: rebuilt once
            if attempt == 2:
                raise ModelSourceError(f"{target}: {engine_name} cannot load it even after rebuilding it "
                                       f"({type(exc).__name__}: {exc})") from None
            rebuild_after_failed_load(target, cache_root, f"{type(exc).__name__}: {exc}", progress)
            target, again = convert_again()
            converted_s = (converted_s or 0.0) + (again or 0.0)
    raise AssertionError("unreachable")  # the loop returns or raises
