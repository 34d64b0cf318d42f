"""The session's event stream: what happens, as it happens, for ``--llmeff-log-json`` and the live terminal lines.

The rooms that do the work call ``emit(kind, **fields)`` where it happens (the model cache on a load, the runner
after each timed round and on its stop decision, the fixture on a record's warnings and verdicts, the outputs
when a file is written). ``emit`` does nothing until a session ``install``s an ``EventLog``; the log stamps each
event with the time, the process, and the test running now (``in_test()``, set by the plugin around each test),
then hands it to its listeners: a ``JsonLines`` file and the terminal's progress lines (``report/progress.py``).

An event is a flat dict: ``event`` (its kind, one of ``KINDS``), ``ts`` (ISO 8601 UTC), ``t_s`` (seconds since
the log was opened, monotonic), ``pid``, ``worker`` (the pytest-xdist worker id or None), ``nodeid`` and
``variant`` (the test and variant id, None outside a test), then the kind's own fields (units in their names).

Floor 0: standard library only, so the plugin can open it at configure time without loading anything heavy.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

# every kind an EventLog emits, in the order a session meets them
KINDS = ("session_start", "convert", "load", "benchmark_start", "round", "stop", "record", "warning", "verdict",
         "limit", "output", "error", "session_end")

Listener = Callable[[dict], None]


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: NaN and infinities become None, tuples lists, paths and the rest strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


class JsonLines:
    """A listener that appends each event as one JSON line to ``path``: one ``write`` per line on a file opened
    with ``O_APPEND``, so a reader (``tail -f``) sees whole lines and pytest-xdist workers writing the same file do
    not overwrite each other. ``fresh``: empty the file first (the session's first process; workers append).

    A write that fails (disk full, file removed with its folder) stops the log instead of the benchmarks:
    ``problem`` then says why, once."""

    def __init__(self, path: Path, fresh: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if fresh else 0)
        self._fd: Optional[int] = os.open(self.path, flags, 0o666)
        self.problem: Optional[str] = None

    def __call__(self, event: dict) -> None:
        if self._fd is None:
            return
        line = (json.dumps(_plain(event), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        try:
            os.write(self._fd, line)
        except OSError as exc:
            self.problem = f"the event log {self.path} could not be written ({exc.strerror or exc}); logging stopped"
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class EventLog:
    """Stamps events and hands them to its ``listeners`` (callables taking the event dict).

    A listener that raises is dropped, so a broken log or terminal never fails a benchmark; a ``RuntimeWarning``
    (in pytest's warnings summary) names it and its error."""

    def __init__(self, listeners: Optional[list[Listener]] = None):
        self.listeners: list[Listener] = list(listeners or [])
        self.nodeid: Optional[str] = None
        self.variant: Optional[str] = None
        self._t0 = time.monotonic()
        self._worker = os.environ.get("PYTEST_XDIST_WORKER")

    def emit(self, kind: str, **fields: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        event = {"event": kind, "ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
                 "t_s": round(time.monotonic() - self._t0, 6), "pid": os.getpid(), "worker": self._worker,
                 "nodeid": self.nodeid, "variant": self.variant}
        event.update(fields)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a listener must never fail the work that emits; it is
                self.listeners.remove(listener)  # dropped, and the user told why (pytest's warnings summary)
                warnings.warn(f"llmeff: event listener {getattr(listener, '__name__', type(listener).__name__)} "
                              f"failed on a {kind!r} event and was removed: {type(exc).__name__}: {exc}",
                              RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        for listener in self.listeners:
            close = getattr(listener, "close", None)
            if close is not None:
                close()
        self.listeners = []


_current: Optional[EventLog] = None


def install(log: Optional[EventLog]) -> None:
    """Make ``log`` the process's event log (None: events go nowhere again)."""
    global _current
    _current = log


def active() -> bool:
    """True when events go somewhere (to skip work that only feeds them, such as a round's interval)."""
    return _current is not None and bool(_current.listeners)


def emit(kind: str, **fields: Any) -> None:
    """Send one event of ``kind`` (see ``KINDS``) to the installed log; nothing without one."""
    if _current is not None:
        _current.emit(kind, **fields)


@contextlib.contextmanager
def in_test(nodeid: str, variant: Optional[str]) -> Iterator[None]:
    """Events emitted inside the block name this test and variant."""
    log = _current
    if log is None:
        yield
        return
    before = (log.nodeid, log.variant)
    log.nodeid, log.variant = nodeid, variant
    try:
        yield
    finally:
        log.nodeid, log.variant = before
