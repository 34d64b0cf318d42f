"""Files on disk: atomic writes that follow the umask, sha256 of a file.

The one atomic writer (``atomic_write_text``) and the one file hash (``sha256_file``) of the package; every
room that writes a file readers may see half-written (run files, reports, the lockstep pair's turn and records,
a model cache's manifest) or hashes a file (model cache keys and manifests) calls these. A leaf: it imports
only the standard library.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: bytes read at a time when hashing a file (1 MiB: large model files hash without holding them in memory)
HASH_CHUNK_BYTES = 1 << 20


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status`` on Linux); elsewhere it is set and
    set back at once (``os.umask`` has no read-only form; another thread creating a file in that instant
    would get the probe value, 0o022)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS, Windows) or an unexpected line: the set-and-restore probe below answers
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers never see a partial file (temp file + rename).

    The temp file is ``.<name>.<random>.tmp`` in the same folder (``tempfile.mkstemp``); the folder is created
    when missing. The file gets the mode a plain ``open(path, "w")`` would give it (0o666 less the umask: 0644
    under the usual umask 022), not mkstemp's private 0600, so that CI artifacts and shared baselines stay
    readable. ``durable``: fsync the data before the rename, so the file survives a power loss whole (False for
    the lockstep pair's turn files, written every round and worthless after the session). On any failure the
    temp file is removed and the error raised; ``path`` is then unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            mode = 0o666 & ~current_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            else:  # Windows: only the read-only bit exists
                os.chmod(tmp, mode)
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path`` as 64 lowercase hex digits, read in ``HASH_CHUNK_BYTES`` blocks.
    Raises ``OSError`` when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
