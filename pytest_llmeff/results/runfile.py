"""Run files on disk: the one reader (``read_run``), the writer (``write_run``) and the shipped JSON Schema.

``read_run`` turns anything that is not a readable ``pytest-llmeff/1`` or ``1.1`` run into one
``errors.StorageError`` line naming the file and the problem; ``write_run`` writes atomically
(``files.atomic_write_text``). ``SCHEMA_FILE`` is the JSON Schema shipped with the package, generated from
``results.schema.Run`` (``schema_text``; ``llmeff schema --write`` regenerates it).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pydantic import ValidationError

from pytest_llmeff.errors import StorageError
from pytest_llmeff.files import atomic_write_text
from pytest_llmeff.results.schema import READABLE_SCHEMAS, SCHEMA_ID, Run


def schema_dict() -> dict:
    """The JSON Schema of a run file, as shipped."""
    return Run.model_json_schema(by_alias=True, mode="serialization")


def write_run(run: Run, path: Path) -> Path:
    """Write ``run`` as indented JSON to ``path`` atomically (readers never see a partial file); returns the path."""
    atomic_write_text(Path(path), run.to_json() + "\n")
    return Path(path)


_SCHEMA_VERSION = re.compile(r"^pytest-llmeff/(\d+)(?:\.(\d+))?$")


def shown_path(path) -> str:
    """``path`` as text for a one-line message: as is, or quoted with escapes when it holds a newline, another
    control character or bytes that are not valid in the file system encoding."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _unreadable(path: Path, problem: str) -> StorageError:
    """The one error of ``read_run``: ``"<path>: <problem>"``; ``.path`` and ``.problem`` keep the parts."""
    problem = " ".join(problem.split())  # one line, whatever went into it
    exc = StorageError(f"{shown_path(path)}: {problem}")
    exc.path, exc.problem = path, problem
    return exc


def _not_a_number(text: str):
    raise ValueError(f"it contains {text}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a float")
    return value


def _validation_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, on one line: ``<where>: <what> (and N more)``."""
    problems = exc.errors()
    first = problems[0] if problems else {}
    loc = ".".join(str(part) for part in first.get("loc", ())) or "(top level)"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"not a valid {SCHEMA_ID} run: {loc}: {first.get('msg', 'invalid')}{more}"


def _utf16_json(raw: bytes) -> bool:
    """Whether ``raw`` is JSON-looking UTF-16 text with a byte order mark (what a Windows shell redirect writes)."""
    try:
        return raw.decode("utf-16").lstrip().startswith(("{", "["))
    except UnicodeDecodeError:
        return False


def read_run(path: Path) -> Run:
    """Load a run file: THE reader of ``pytest-llmeff/1`` run files (``storage.load_run`` is this function).

    Anything that is not a readable run raises ``errors.StorageError`` with one line, ``"<path>: <problem>"``:
    missing, a directory, unreadable, empty, binary (not UTF-8), truncated JSON, malformed JSON, JSON that is not
    an object, no or another schema, a newer schema, or content the schema refuses (its first problem, with
    where it is). A UTF-8 byte order mark is accepted.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _unreadable(path, "no such results file") from None
    except OSError as exc:
        if path.is_dir():  # IsADirectoryError on POSIX, PermissionError on Windows
            raise _unreadable(path, "is a directory, not a results file") from None
        raise _unreadable(path, f"cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise _unreadable(path, f"the file is empty ({len(raw)} bytes); not a results file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) and _utf16_json(raw):
        raise _unreadable(path, "UTF-16 text, not UTF-8; not a results file (re-save it as UTF-8)")
    if b"\x00" in raw:
        raise _unreadable(path, "binary content (NUL bytes); not a results file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"binary content (not UTF-8 text at byte {exc.start}); not a results file") from None
    try:
        data = json.loads(text, parse_constant=_not_a_number, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        body = text.strip()
        unclosed = body.startswith(("{", "[")) and not body.endswith(("}", "]"))
        if exc.pos >= len(text.rstrip()) or unclosed or exc.msg.startswith("Unterminated string"):
            raise _unreadable(path, f"the JSON ends early at line {exc.lineno} (truncated file?)") from None
        raise _unreadable(path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise _unreadable(path, "not a results file: the JSON is nested too deeply") from None
    except ValueError as exc:  # NaN, Infinity, or a number beyond a float
        raise _unreadable(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
                type(None): "null"}.get(type(data), type(data).__name__)
        raise _unreadable(path, f"the JSON is {kind}, not an object; not a {SCHEMA_ID} run file")
    if "schema" not in data:
        raise _unreadable(path, f'no "schema" field; not a {SCHEMA_ID} run file')
    schema = data["schema"]
    if schema not in READABLE_SCHEMAS:
        version = _SCHEMA_VERSION.match(schema) if isinstance(schema, str) else None
        ours = _SCHEMA_VERSION.match(SCHEMA_ID)
        supported = (int(ours.group(1)), int(ours.group(2) or 0))  # type: ignore[union-attr]
        if version and (int(version.group(1)), int(version.group(2) or 0)) > supported:
            raise _unreadable(path, f"schema {schema!r} is newer than this pytest-llmeff reads ({SCHEMA_ID!r}); "
                                    "upgrade pytest-llmeff to read it")
        raise _unreadable(path, f"schema {str(schema)[:60]!r} is not supported; this version reads {SCHEMA_ID!r}")
    try:
        return Run.model_validate(data)
    except ValidationError as exc:
        raise _unreadable(path, _validation_problem(exc)) from None


SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema" / "run-1.schema.json"


def schema_text() -> str:
    """The JSON Schema text as it must be shipped in ``SCHEMA_FILE`` (regenerate with ``llmeff schema --write``)."""
    return json.dumps(schema_dict(), indent=2, sort_keys=True) + "\n"
