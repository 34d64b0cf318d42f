"""Baseline storage: run files kept per machine, found by name, loaded with clear errors, and matched.

Layout: ``<root>/<machine fingerprint>/<name>.json``, each file a ``pytest-llmeff/1`` run written atomically
(``results.write_run``). Autosaved names are ``<counter>_<commit8>_<UTC stamp>`` so that they sort by age.
Pure logic, no pytest hooks.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from pytest_llmeff.errors import StorageError  # noqa: F401  (its old home; defined in errors.py)
from pytest_llmeff.results.runfile import read_run, shown_path, write_run
from pytest_llmeff.results.schema import BenchmarkRecord, Run
from pytest_llmeff.config.variants import sanitize_id

# Versions whose change can move the numbers by itself; a baseline from other versions gets a warning.
COMPARED_VERSIONS: tuple[str, ...] = ("python", "torch", "transformers", "bitsandbytes", "accelerate")

_NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")
_COUNTER = re.compile(r"^(\d{4,})_")
_RESERVATION = re.compile(r"^\.(\d{4,})\.reserved$")
_LISTED = 10  # how many names an error message lists before "... and N more"




def _machine_dict(machine: Any) -> Mapping[str, Any]:
    if hasattr(machine, "model_dump"):
        return machine.model_dump()
    return machine


def machine_fingerprint(machine: Any) -> str:
    """A short, stable, folder-safe id of the machine a run was measured on.

    ``machine``: the run's machine dict (or ``results.MachineInfo``). Inputs: cpu name, logical cores, RAM rounded
    to whole GiB, GPU names (sorted), OS family (first token of ``os``, e.g. ``Linux``), Python major.minor.
    Hostname and extra fields are ignored. Form: ``linux-16c-125gib-1gpu-py3.11-1a2b3c4d`` (8 hex of a SHA-256).
    A machine whose GPUs could not be read (``gpu_unreadable`` in its info) is marked ``gpu-unreadable`` instead
    of a GPU count, so it is never taken for a GPU-less machine (nor for itself when NVML works).
    """
    m = _machine_dict(machine)
    ram = m.get("ram_bytes")
    ram_gib = round(ram / 2**30) if isinstance(ram, (int, float)) else None
    os_family = re.split(r"[-\s_]", str(m.get("os") or "unknown").strip(), maxsplit=1)[0] or "unknown"
    py = re.match(r"^(\d+)\.(\d+)", str(m.get("python") or ""))
    py_mm = f"{py.group(1)}.{py.group(2)}" if py else "unknown"
    gpu_names = sorted(str(g.get("name", "?")) if isinstance(g, Mapping) else str(g) for g in m.get("gpus") or [])
    cores = m.get("cores_logical")
    unreadable = bool(m.get("gpu_unreadable"))
    identity = {"cpu": str(m.get("cpu") or ""), "cores_logical": cores, "ram_gib": ram_gib,
                "gpus": "unreadable" if unreadable else gpu_names,
                "os": os_family.lower(), "python": py_mm}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    parts = [os_family.lower(), f"{cores if cores is not None else 'x'}c",
             f"{ram_gib if ram_gib is not None else 'x'}gib"]
    if unreadable:
        parts.append("gpu-unreadable")
    elif gpu_names:
        parts.append(f"{len(gpu_names)}gpu")
    parts += [f"py{py_mm}", digest]
    return sanitize_id("-".join(parts))


def check_name(name: str) -> str:
    """``name`` without a trailing ``.json`` when it is a safe file stem; StorageError otherwise."""
    stem = name[:-5] if isinstance(name, str) and name.endswith(".json") else name
    if (not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem or ".." in stem
            or stem.startswith(".") or not _NAME_OK.match(stem)):
        raise StorageError(f"run name {name!r} is not allowed: use only the characters [A-Za-z0-9._-], "
                           "no '..', no leading '.', no path separators")
    return stem


def _counter(path: Path) -> Optional[int]:
    match = _COUNTER.match(path.name)
    return int(match.group(1)) if match else None


def _age_key(path: Path) -> tuple[int, int, str]:
    """Newest sorts last: by counter (named runs without one rank before numbered ones), then mtime, then name."""
    counter = _counter(path)
    return (counter if counter is not None else -1, path.stat().st_mtime_ns, path.name)


def _stamp(started_at: str) -> str:
    try:
        when = _dt.datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        when = _dt.datetime.now(_dt.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def json_files(folder: Path) -> list[Path]:
    """The run files directly in ``folder`` (hidden names, such as temp files and reservations, skipped)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith(".")]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


class Storage:
    """Run files under ``root``, one folder per machine fingerprint.

    ``fingerprint``: the current machine's (``machine_fingerprint(machine_info())``); it is searched first by
    ``resolve`` and is the default of ``latest``. None means "no current machine": search every folder.
    """

    def __init__(self, root: Union[str, Path], fingerprint: Optional[str] = None) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint

    def folder(self, fingerprint: str) -> Path:
        return self.root / sanitize_id(fingerprint)

    def runs(self, fingerprint: Optional[str] = None) -> list[Path]:
        """Stored run files of one fingerprint (every fingerprint when None), oldest first."""
        folders = [self.folder(fingerprint)] if fingerprint else self.folders()
        return sorted((p for d in folders for p in json_files(d)), key=_age_key)

    def folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))

    def save(self, run: Run, name: str) -> Path:
        """Write ``run`` atomically as ``<root>/<fingerprint of run.machine>/<name>.json`` (replacing one of that name).

        StorageError (one line) for a bad name or a file that cannot be written."""
        stem = check_name(name)
        return self._write(run, self.folder(machine_fingerprint(run.machine)) / f"{stem}.json")

    @staticmethod
    def _write(run: Run, path: Path) -> Path:
        try:
            return write_run(run, path)
        except OSError as exc:
            raise StorageError(f"{shown_path(path)}: cannot be written ({exc.strerror or exc})") from None

    def _next_counter(self, folder: Path) -> int:
        """One more than the highest counter among the runs stored in ``folder`` and the counters reserved there."""
        used = [c for c in (_counter(p) for p in json_files(folder)) if c is not None]
        try:
            used += [int(m.group(1)) for m in (_RESERVATION.match(e.name) for e in os.scandir(folder)) if m]
        except FileNotFoundError:
            pass
        return max(used, default=0) + 1

    def _autosave_stem(self, run: Run, counter: int) -> str:
        commit = sanitize_id(run.commit.id[:8]) if run.commit.id else "nocommit"
        return f"{counter:04d}_{commit}_{_stamp(run.started_at)}"

    def autosave_name(self, run: Run) -> str:
        """``<counter>_<commit8 or nocommit>_<YYYYmmddTHHMMSSZ>``: counter is the next 4-digit number among the
        runs stored (and counters reserved) for ``run``'s fingerprint; the stamp is ``run.started_at`` in UTC.

        Only a name: two sessions that ask at once get the same one. ``autosave`` reserves the counter too."""
        folder = self.folder(machine_fingerprint(run.machine))
        return self._autosave_stem(run, self._next_counter(folder))

    def autosave(self, run: Run) -> Path:
        """Store ``run`` under the next autosave name (see ``autosave_name``), unique among concurrent sessions.

        The counter is reserved by creating ``.<counter>.reserved`` in the fingerprint folder exclusively
        (``O_CREAT | O_EXCL``; a session that loses the race takes the next number), the run is written atomically,
        then the reservation is removed. A reservation left by a crashed session only skips its number."""
        folder = self.folder(machine_fingerprint(run.machine))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{shown_path(folder)}: cannot be created ({exc.strerror or exc})") from None
        counter = self._next_counter(folder)
        while True:
            reservation = folder / f".{counter:04d}.reserved"
            try:
                os.close(os.open(reservation, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                counter += 1
                continue
            except OSError as exc:
                raise StorageError(f"{shown_path(reservation)}: cannot be created ({exc.strerror or exc})") from None
            try:
                # a session that listed before us may have finished and dropped its reservation of this very
                # number since: its run file is visible now, so look again
                if any(_counter(p) == counter for p in json_files(folder)):
                    counter = self._next_counter(folder)
                    continue
                return self._write(run, folder / f"{self._autosave_stem(run, counter)}.json")
            finally:
                try:
                    reservation.unlink()
                except FileNotFoundError:
                    pass

    def latest(self, fingerprint: Optional[str] = None) -> Optional[Path]:
        """The newest stored run (highest counter prefix, then mtime) of ``fingerprint`` (default: the current
        one; every folder when there is none); None when nothing is stored."""
        files = self.runs(fingerprint or self.fingerprint)
        return files[-1] if files else None

    def resolve(self, name_or_path: Union[str, Path]) -> Path:
        """An existing file path as is; else a stored name (``.json`` optional, or a bare counter such as ``3`` or
        ``0003``) in the current fingerprint's folder, else in any folder. StorageError listing what exists."""
        text = str(name_or_path)
        as_path = Path(text).expanduser()
        if as_path.is_file():
            return as_path
        if isinstance(name_or_path, Path) or "/" in text or "\\" in text:
            raise StorageError(f"{text}: no such results file")
        stem = text[:-5] if text.endswith(".json") else text

        def matches(candidates: list[Path]) -> list[Path]:
            exact = [p for p in candidates if p.stem == stem]
            if exact or not stem.isdigit():
                return exact
            return [p for p in candidates if _counter(p) == int(stem)]

        if self.fingerprint:
            found = matches(self.runs(self.fingerprint))
            if len(found) == 1:
                return found[0]
        found = matches(self.runs())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            where = [f"{p.parent.name}/{p.stem}" for p in found]
            raise StorageError(f"run name {text!r} is ambiguous under {self.root}: {_listing(where)}; "
                               "give the file path")
        available = [f"{p.parent.name}/{p.stem}" for p in reversed(self.runs())]
        if not available:
            raise StorageError(f"no stored run {text!r}: nothing is stored under {self.root} yet")
        raise StorageError(f"no stored run {text!r} under {self.root}; available (newest first): "
                           f"{_listing(available)}")

    def history(self, path: Path, count: int) -> tuple[list[Run], list[str]]:
        """The stored runs a stored-baseline comparison learns the spread between sessions from: ``path`` (the
        baseline) and the runs stored before it in the same fingerprint folder under this root, at most
        ``count`` in all, newest first, the baseline first. A baseline outside the storage root has no history
        (just itself). Returns (runs, skipped): unreadable history files are skipped, one line each saying why;
        the baseline itself must read (StorageError)."""
        baseline = load_run(path)
        runs, skipped = [baseline], []
        try:
            folder = path.resolve().parent
            inside = folder.parent == self.root.resolve()
        except OSError:
            inside = False
        if not inside or count <= 1:
            return runs, skipped
        ordered = sorted(json_files(folder), key=_age_key)
        own = [p for p in ordered if p.resolve() == path.resolve()]
        earlier = ordered[:ordered.index(own[0])] if own else []
        for older in reversed(earlier):
            if len(runs) >= count:
                break
            try:
                runs.append(load_run(older))
            except StorageError as exc:
                skipped.append(str(getattr(exc, "problem", exc)))
        return runs, skipped

    def load(self, name_or_path: Union[str, Path]) -> Run:
        """``resolve`` then read the run; any unreadable file becomes a one-line StorageError."""
        return load_run(self.resolve(name_or_path))


def load_run(path: Path) -> Run:
    """Read a run file: ``results.read_run`` (the one reader; StorageError with one line for anything that is not
    a readable run). Kept under this name for the code that imports it from here."""
    return read_run(path)


def _function_stem(nodeid: str) -> str:
    """``dir/test_a.py::Cls::test_gen[v]`` -> ``test_gen``."""
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


def _key(record: BenchmarkRecord) -> tuple[str, str]:
    return (record.nodeid, record.name)


@dataclass
class Matching:
    """Benchmarks of a baseline run paired with those of a current run.

    pairs: (baseline, current) with the same nodeid (and the same benchmark name, so that several
    ``llm_benchmark(name=...)`` calls in one test pair one by one). new: only in current. missing: only in the
    baseline. renamed: (baseline, current) likely the same benchmark moved to another file or class: same test
    function name, same benchmark name and same variant id, different nodeid, and the only such candidate on both
    sides. Renamed records are not repeated in new or missing.
    """

    pairs: list[tuple[BenchmarkRecord, BenchmarkRecord]] = field(default_factory=list)
    new: list[BenchmarkRecord] = field(default_factory=list)
    missing: list[BenchmarkRecord] = field(default_factory=list)
    renamed: list[tuple[BenchmarkRecord, BenchmarkRecord]] = field(default_factory=list)


def match_benchmarks(baseline: Run, current: Run) -> Matching:
    """Pair the benchmarks of ``baseline`` and ``current`` by nodeid (the variant id is part of it)."""
    base_by_key = {_key(r): r for r in baseline.benchmarks}
    cur_keys = {_key(r) for r in current.benchmarks}
    result = Matching()
    new: list[BenchmarkRecord] = []
    for record in current.benchmarks:
        partner = base_by_key.get(_key(record))
        if partner is not None:
            result.pairs.append((partner, record))
        else:
            new.append(record)
    missing = [r for r in baseline.benchmarks if _key(r) not in cur_keys]

    def rename_key(record: BenchmarkRecord) -> tuple[str, str, str]:
        return (_function_stem(record.nodeid), record.name, record.variant.id)

    renamed_ids: set[int] = set()
    for old in missing:
        candidates_new = [r for r in new if rename_key(r) == rename_key(old)]
        candidates_old = [r for r in missing if rename_key(r) == rename_key(old)]
        if len(candidates_new) == 1 and len(candidates_old) == 1:
            result.renamed.append((old, candidates_new[0]))
            renamed_ids.update((id(old), id(candidates_new[0])))
    result.new = [r for r in new if id(r) not in renamed_ids]
    result.missing = [r for r in missing if id(r) not in renamed_ids]
    return result


def mismatch_warnings(baseline: Run, current: Run) -> list[str]:
    """One line per reason the two runs may not be comparable: another machine, or other versions of
    python, torch, transformers, bitsandbytes or accelerate (a version unrecorded on either side is not compared)."""
    warnings = []
    old_fp, new_fp = machine_fingerprint(baseline.machine), machine_fingerprint(current.machine)
    if old_fp != new_fp:
        warnings.append(f"baseline was measured on another machine ({old_fp}; this run: {new_fp}); "
                        "timings may not be comparable")
    for dist in COMPARED_VERSIONS:
        if dist not in baseline.versions or dist not in current.versions:
            continue
        old, new = baseline.versions[dist], current.versions[dist]
        if old != new:
            warnings.append(f"{dist} differs from the baseline: {old or 'not installed'} -> "
                            f"{new or 'not installed'}")
    return warnings
