"""Integrity of the model cache entries the plugin builds itself (``<cache>/models/tiny-random-llama-v1``,
``<cache>/models/gguf-<sha>-v1``).

A truncated or altered file in such an entry (a full disk, a killed copy, an editor) would otherwise fail every
test of every later session with an unrelated-looking error. So each entry gets a manifest when it is built (in
its temp dir, before the rename): every file's size, SHA-256 and modification time. On use:

- sizes are always compared, and every ``*.safetensors`` file's header must account for the file's exact size
  (this also covers entries built before manifests existed);
- SHA-256 is recomputed when it is cheap: for a small entry (<= ``HASH_ALWAYS_MAX_BYTES`` in all), or for a file
  whose modification time differs from the build's (it was written since); ``full=True`` hashes everything
  (used after a load of the entry failed).

A damaged entry is rebuilt ONCE per process (``llmeff: the cached model <dir> is damaged (<what>); rebuilding it``);
damaged again after that is a ``ModelSourceError``. Only directories the plugin itself names under
``<cache>/models/`` are ever removed (``is_plugin_entry``): never a user's model directory or the hub cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from pytest_llmeff.errors import ModelSourceError
from pytest_llmeff.files import atomic_write_text, sha256_file

MANIFEST_FILE = "llmeff-manifest.json"
MANIFEST_FORMAT = 1
HASH_ALWAYS_MAX_BYTES = 64 * 2**20
_ENTRY_NAME = re.compile(r"^(tiny-random-llama|(gguf|ct2|ortgenai)-[0-9a-f]{24})-v[0-9]+$")  # engines: convert_cache.py
_MAX_HEADER = 100 * 2**20  # safetensors refuses headers above 100 MB too

# entries rebuilt in this process (resolved paths): a second damage is an error, not a second rebuild
_rebuilt: set[str] = set()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(directory: Path) -> None:
    """Record size, SHA-256 and mtime of every file of a freshly built entry (call it before the rename)."""
    directory = Path(directory)
    files = {}
    for path in _files(directory):
        st = path.stat()
        files[path.relative_to(directory).as_posix()] = {"size": st.st_size, "sha256": sha256_file(path),
                                                         "mtime_ns": st.st_mtime_ns}
    (directory / MANIFEST_FILE).write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1))


def _read_manifest(directory: Path) -> Optional[dict]:
    try:
        data = json.loads((directory / MANIFEST_FILE).read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
        return files
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable, not JSON, or not {"files": {...}}
        return {}  # said as damage below: "<manifest> is unreadable"


def safetensors_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a whole safetensors file (its header must describe exactly its size), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes, too short for a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                return f"{path.name} is {size} bytes, its header claims {n} bytes of metadata"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name} has an unreadable safetensors header ({type(exc).__name__})"
    end = 0
    try:
        for name, info in header.items():
            if name != "__metadata__":
                end = max(end, int(info["data_offsets"][1]))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return f"{path.name} has a malformed safetensors header"
    expected = 8 + n + end
    if size != expected:
        return f"{path.name} is {size} bytes, its header says {expected}"
    return None


def damage(directory: Path, full: bool = False) -> Optional[str]:
    """What is wrong with the entry ``directory`` (one short phrase), or None when it looks whole.

    Cheap by default (sizes, safetensors headers, hashes only for small entries or files modified since the
    build); ``full`` hashes every file."""
    directory = Path(directory)
    if not directory.is_dir():
        return "it is missing"
    manifest = _read_manifest(directory)
    if manifest == {}:
        return f"{MANIFEST_FILE} is unreadable"
    if manifest is not None:
        present = {p.relative_to(directory).as_posix(): p for p in _files(directory)}
        for rel, info in manifest.items():
            if rel not in present:
                return f"{rel} is missing"
            if present[rel].stat().st_size != info.get("size"):
                return f"{rel} is {present[rel].stat().st_size} bytes, {info.get('size')} when it was built"
    for path in sorted(directory.rglob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return problem
    if manifest is None:
        return None
    small = sum(int(info.get("size", 0)) for info in manifest.values()) <= HASH_ALWAYS_MAX_BYTES
    touched = False
    for rel, info in manifest.items():
        path = directory / rel
        mtime = path.stat().st_mtime_ns
        if full or small or mtime != info.get("mtime_ns"):
            if sha256_file(path) != info.get("sha256"):
                return f"{rel} has another SHA-256 than when it was built"
            if mtime != info.get("mtime_ns"):
                info["mtime_ns"], touched = mtime, True
    if touched:  # same bytes, new times (a copied cache): remember, so later sessions do not hash them again
        _restamp(directory, manifest)
    return None


def _restamp(directory: Path, files: dict) -> None:
    try:
        atomic_write_text(directory / MANIFEST_FILE, json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1))
    except OSError:
        pass


def has_manifest(directory: Path) -> bool:
    return (Path(directory) / MANIFEST_FILE).is_file()


def is_plugin_entry(directory: Path, cache_root: Path) -> bool:
    """True only for a directory the plugin built and names: ``<cache_root>/models/<our entry name>``."""
    directory = Path(directory)
    try:
        parent = directory.parent.resolve()
        models = (Path(cache_root) / "models").resolve()
    except OSError:
        return False
    return parent == models and bool(_ENTRY_NAME.match(directory.name)) and not directory.is_symlink()


def _say(progress: Optional[Callable[[str], None]], line: str) -> None:
    if progress is not None:
        progress(line)
    else:
        sys.stderr.write(f"llmeff: {line}\n")


@contextlib.contextmanager
def _lock(directory: Path) -> Iterator[None]:
    """An exclusive lock next to the entry (pytest-xdist workers finding the same damage discard it once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = directory.parent / f".lock-{directory.name}"  # left in place: removing a lock races
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def discard(directory: Path, cache_root: Path) -> None:
    """Remove a plugin-built entry (renamed aside first, so no reader sees it half deleted)."""
    directory = Path(directory)
    if not is_plugin_entry(directory, cache_root):  # a guard, never expected: only our own entries go
        raise ModelSourceError(f"refusing to delete {directory}: not a model cache entry built by pytest-llmeff")
    aside = Path(tempfile.mkdtemp(prefix=f".damaged-{directory.name}-", dir=directory.parent))
    try:
        os.replace(directory, aside / "entry")
    except FileNotFoundError:
        pass  # another worker discarded it already
    shutil.rmtree(aside, ignore_errors=True)


def ensure_usable(directory: Path, cache_root: Path, progress: Optional[Callable[[str], None]] = None,
                  problem: Optional[str] = None, required: tuple[str, ...] = ()) -> bool:
    """Check the existing entry ``directory``; True when it can be used as it is. False when it does not exist,
    or when it is damaged (a file in ``required`` missing, ``damage()``, or ``problem``: a load of it failed):
    then it says so and removes it, and the caller rebuilds it. A second damage of the same entry in this
    process raises ModelSourceError instead of rebuilding again."""
    directory = Path(directory)
    if not directory.exists():
        return False
    missing = [name for name in required if not (directory / name).is_file()]
    if missing and problem is None:
        problem = f"{missing[0]} is missing"
    what = problem or damage(directory)
    if what is None:
        return True
    if not is_plugin_entry(directory, cache_root):
        raise ModelSourceError(f"{directory} is damaged ({what}); it is not an entry pytest-llmeff built, so it "
                               "is left alone: repair or replace it")
    key = str(directory.resolve())
    if key in _rebuilt:
        raise ModelSourceError(f"the cached model {directory} is damaged again after it was rebuilt in this session "
                               f"({what}); check the disk (space, errors) or choose another cache with "
                               "--llmeff-cache-dir or LLMEFF_CACHE_DIR")
    with _lock(directory):
        if not directory.exists():
            return False  # another worker discarded it meanwhile (and is rebuilding it)
        if problem is None:
            what = damage(directory)  # another worker may have rebuilt it meanwhile
            if what is None:
                return True
        _rebuilt.add(key)
        _say(progress, f"the cached model {directory} is damaged ({what}); rebuilding it")
        discard(directory, cache_root)
    return False


def rebuilt_in_this_process(directory: Path) -> bool:
    return str(Path(directory).resolve()) in _rebuilt


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
